// One downstream request's life in the HTTP connection manager: header sanitising, routing, the
// router filter's work (cluster and host choice, upstream request, timeouts) and the response path,
// codec-agnostic. The downstream codec drives it through decode*(); the upstream pool drives it
// through the UpstreamCallbacks. Local replies (404 NR, 503 UH/UF/UO, 504 UT, ...) are made here,
// gRPC-aware. Per-request state only: everything compiled lives in ConnectionManager/RouteTable.

import { random32 } from '../common/random';
import type * as net from 'node:net';
import { ErrorCode, grpcStatusForHttp, LOCAL_REPLIES } from '../common/errors';
import { ownChunk } from '../common/read-buffer';
import { coarseNow } from '../common/clock';
import { requestHash } from '../router/hash-policy';
import { finalizeRequestHeaders, finalizeResponseHeaders, routeReply, sslRedirectLocation, stripInternalOnlyHeaders } from '../router/apply';
import type { FormatContext } from '../common/header-format';
import type { ForwardAction, RequestMirrorPolicyConfig } from '../config/types';
import { ShadowRequest, startShadows } from '../router/mirror';
import { normalizeRequestPath } from './path';
import { ClusterPick, CompiledRoute, isGrpcContentType, RouteInput, stripHostPort } from '../router/route-table';
import { compiledRetryPolicy, ResetKind, RetryState, RetryStatus } from '../router/retry';
import type { AttemptOutcome, Cluster } from '../upstream/cluster';
import type { Host } from '../upstream/host';
import type { PoolCallbacks, UpstreamStream } from '../upstream/types';
import { ConnectionManager, httpDate } from './conn-manager';
import { FilterCallbacks, FilterHeadersStatus, ResponseDataInterceptor, StreamFilter } from './filter';
import { HeaderMap } from './headers';
import { applyXfcc } from '../security/xfcc';
import type { RouteResult } from '../router/route-table';

/** What a downstream codec offers a stream for writing its response. */
export interface Downstream {
  readonly protocol: 'HTTP/1.0' | 'HTTP/1.1' | 'HTTP/2';
  writeInterim(status: number, headers: HeaderMap): void;
  /** `trailers`: trailers may follow the body (HTTP/2 then keeps the stream open for them). */
  writeHeaders(status: number, headers: HeaderMap, endStream: boolean, trailers?: boolean): void;
  /** false: stop until the stream's onDownstreamWritable */
  writeData(chunk: Buffer, endStream: boolean): boolean;
  writeTrailers(trailers: HeaderMap): void;
  /** Abort the response (HTTP/1: close the connection; HTTP/2: RST_STREAM). */
  reset(): void;
  pauseRequest(): void;
  resumeRequest(): void;
  /** HTTP/1 only: switch to a raw byte pipe with the upstream socket after a 101. */
  upgrade?(status: number, headers: HeaderMap, upstream: net.Socket, head: Buffer | undefined): void;
  /** Called once when the stream is done in both directions. */
  onStreamComplete(): void;
}

export interface ConnectionInfo {
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  readonly secure: boolean;
  /** TLS: the SNI the client sent */
  readonly sni?: string;
  /** TLS: the negotiated ALPN protocol */
  readonly alpn?: string;
  /** the peer certificate's first URI SAN (spiffe://<td>/ns/<ns>/sa/<sa>) */
  readonly peerPrincipal?: string;
  readonly peerCertificate?: import('node:tls').PeerCertificate;
  /** our own certificate's URI SAN */
  readonly localPrincipal?: string;
}

const EMPTY = Buffer.alloc(0);

/**
 * How much request body a retriable request keeps for re-sending: Envoy's listener
 * per_connection_buffer_limit_bytes default (route per_request_buffer_limit_bytes is not modelled).
 * Past it, the request is no longer retried.
 */
export const RETRY_BUFFER_LIMIT = 1 << 20;

// Attempt outcomes for Cluster.recordOutcome, preallocated so reporting one allocates nothing.
const STATUS_OUTCOMES: AttemptOutcome[] = [];
for (let s = 0; s < 600; s++) STATUS_OUTCOMES.push({ kind: 'status', status: s });
function statusOutcome(status: number): AttemptOutcome {
  return status >= 0 && status < 600 ? STATUS_OUTCOMES[status] : { kind: 'status', status };
}
const OUTCOME_CONNECT_FAILURE: AttemptOutcome = { kind: 'local', reason: 'connect_failure' };
const OUTCOME_TIMEOUT: AttemptOutcome = { kind: 'local', reason: 'timeout' };
const OUTCOME_RESET: AttemptOutcome = { kind: 'local', reason: 'reset' };
const OUTCOME_PROTOCOL_ERROR: AttemptOutcome = { kind: 'local', reason: 'protocol_error' };

/** Whether the request carries a header that can turn on retries or a per-try timeout (one pass). */
function hasRetryHeaders(headers: HeaderMap): boolean {
  const raw = headers.raw;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i];
    if (n.charCodeAt(0) === 120 /* x */ && (n === 'x-envoy-retry-on' || n === 'x-envoy-retry-grpc-on' || n === 'x-envoy-upstream-rq-per-try-timeout-ms')) return true;
  }
  return false;
}

/** Control headers Envoy only honours from internal (trusted) clients. */
const EXTERNAL_STRIPPED = new Set([
  'x-envoy-decorator-operation',
  'x-envoy-downstream-service-cluster',
  'x-envoy-downstream-service-node',
  'x-envoy-expected-rq-timeout-ms',
  'x-envoy-external-address',
  'x-envoy-force-trace',
  'x-envoy-hedge-on-per-try-timeout',
  'x-envoy-internal',
  'x-envoy-ip-tags',
  'x-envoy-max-retries',
  'x-envoy-original-path',
  'x-envoy-retriable-header-names',
  'x-envoy-retriable-status-codes',
  'x-envoy-retry-grpc-on',
  'x-envoy-retry-on',
  'x-envoy-upstream-alt-stat-name',
  'x-envoy-upstream-rq-per-try-timeout-ms',
  'x-envoy-upstream-rq-timeout-alt-response',
  'x-envoy-upstream-rq-timeout-ms',
  'x-envoy-upstream-stream-duration-ms',
]);

export class ActiveStream implements PoolCallbacks, RouteInput, FormatContext, FilterCallbacks {
  // RouteInput
  authority = '';
  path = '';
  method = '';
  readonly secure: boolean;
  internal = false;
  readonly randomValue: number;
  readonly runtime;
  // FormatContext
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  readonly protocol: string;
  upstreamAddress?: string;
  upstreamPort?: number;
  upstreamMetadata?: Readonly<Record<string, unknown>>;
  responseHeaders?: HeaderMap;
  /** upstream response trailers (grpc-status for metrics and logs) */
  responseTrailers?: HeaderMap;
  /** the peer's x-envoy-peer-metadata, taken off the request (inbound) or response (outbound) by the metadata exchange */
  peerMetadata?: string;
  /** the tracing span of this stream, when the HCM traces and the request is sampled */
  span?: import('../observability/tracing').Span;
  readonly startTime = Date.now();

  headers!: HeaderMap;
  get requestHeaders(): HeaderMap {
    return this.headers;
  }

  route: CompiledRoute | undefined;
  /** the route's hash_policy applied to this request (RING_HASH / MAGLEV), when it has one */
  private hash: number | undefined;
  private pick: ClusterPick | undefined;
  cluster: Cluster | undefined;
  host: Host | undefined;
  private upstream: UpstreamStream | undefined;
  private waitingForPool = false;
  /** the current attempt's pool protocol (cluster.upstreamHttp2 of this request) */
  private upstreamHttp2 = false;
  /** the current attempt's istio.alpn override (undefined: the cluster's ALPN) */
  private upstreamAlpn: readonly string[] | undefined = undefined;
  /** request body that arrived before the upstream was ready */
  private buffered: Buffer[] | undefined;
  private bufferedBytes = 0;
  private bufferedEnd = false;
  private bufferedTrailers: HeaderMap | undefined;
  private requestComplete = false;
  private responseStarted = false;
  /** the whole response has been handed to the downstream */
  responseComplete = false;
  private done = false;
  grpc = false;
  readonly connection: ConnectionInfo;
  /** the HTTP filters acting on this stream (those whose factory made one), in config order */
  private filters: StreamFilter[] | undefined;
  /** a filter that takes the response body (fault response rate limit); undefined for nearly every stream */
  private responseInterceptor: ResponseDataInterceptor | undefined;
  /** request_mirror_policies shadows fed with the request body; undefined when the route mirrors nothing */
  private shadows: ShadowRequest[] | undefined;
  /** index of the filter that stopped the request (StopIteration); -1 when none is stopped */
  private filterStoppedAt = -1;
  private routeResult: RouteResult | undefined;
  private isHead = false;
  private timer: NodeJS.Timeout | undefined;
  private upstreamStart = 0;
  private countedRequest = false;
  /** host.activeRequests was bumped for the current attempt */
  private countedAttempt = false;
  /** the current attempt's request headers went upstream (reset-before-request) */
  private requestSent = false;
  /** retries: set only when the merged policy retries something for this request */
  private retry: RetryState | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** per_try_timeout / x-envoy-upstream-rq-per-try-timeout-ms; 0 = none */
  private perTryMs = 0;
  private perTryTimer: NodeJS.Timeout | undefined;
  /** per_try_idle_timeout; 0 = none */
  private perTryIdleMs = 0;
  private perTryIdleTimer: NodeJS.Timeout | undefined;
  /** the route's idle_timeout, which replaces stream_idle_timeout for this stream; -1: the HCM's applies */
  private routeIdleMs = -1;
  private routeIdleTimer: NodeJS.Timeout | undefined;
  /** Set-Cookie for the cookie a hash policy generated (ttl set, no cookie in the request) */
  hashSetCookie: string | undefined;
  /** hedge_on_per_try_timeout applies to this request */
  private hedging = false;
  /** the pool callbacks of the current attempt: the stream itself, or a HedgeAttempt when hedging */
  attemptCb: PoolCallbacks = this;
  /** hedged attempts still in flight after their per-try timeout (hedging only) */
  private parked: HedgeAttempt[] | undefined;
  /** upstream attempts made so far (x-envoy-attempt-count) */
  attemptCount = 0;
  /** URX or UO from the retry decision, appended to the final response flags */
  private retryFlag = '';
  /** Envoy response flags (UH, UF, NR, ...), for logs and metrics */
  responseFlags = '';
  responseCode = 0;
  responseCodeDetails = '';
  bytesReceived = 0;
  bytesSent = 0;

  constructor(
    readonly hcm: ConnectionManager,
    readonly downstream: Downstream,
    conn: ConnectionInfo,
  ) {
    this.secure = conn.secure;
    this.connection = conn;
    this.remoteAddress = conn.remoteAddress;
    this.remotePort = conn.remotePort;
    this.localAddress = conn.localAddress;
    this.localPort = conn.localPort;
    this.protocol = downstream.protocol;
    this.randomValue = random32();
    this.runtime = hcm.runtime;
    hcm.stats.downstreamRqTotal++;
    hcm.stats.downstreamRqActive++;
    this.lastActivity = coarseNow();
    hcm.track(this);
    const cfg = hcm.config;
    if (cfg.requestTimeoutMs > 0) this.requestTimer = setTimeout(onRequestTimeout, cfg.requestTimeoutMs, this);
    if (cfg.maxStreamDurationMs > 0) this.durationTimer = setTimeout(onDurationTimeout, cfg.maxStreamDurationMs, this);
  }

  /** coarse time of the last bytes either way, for stream_idle_timeout (ConnectionManager sweeps) */
  lastActivity = 0;
  /** links of the connection manager's list of streams in flight */
  listPrev: ActiveStream | undefined = undefined;
  listNext: ActiveStream | undefined = undefined;
  private requestTimer: NodeJS.Timeout | undefined;
  private durationTimer: NodeJS.Timeout | undefined;

  /** stream_idle_timeout: nothing moved either way for the configured time. */
  onStreamIdle(): void {
    if (this.done || this.routeIdleMs >= 0) return;
    this.abandonUpstream();
    // Envoy: 504 once the whole request was received, 408 while it was still arriving
    if (!this.responseStarted) this.sendLocalReply(this.requestComplete ? 504 : 408, 'stream timeout', 'stream_idle_timeout', 'SI');
    else {
      this.responseFlags = 'SI';
      this.resetDownstream();
    }
  }

  /** request_timeout: the whole request was not received in time. */
  onRequestTimeout(): void {
    this.requestTimer = undefined;
    if (this.done || this.requestComplete) return;
    this.abandonUpstream();
    if (!this.responseStarted) this.sendLocalReply(408, 'request timeout', 'request_overall_timeout', '');
    else this.resetDownstream();
  }

  /** max_stream_duration (HCM): the stream lived too long. */
  onDurationTimeout(): void {
    this.durationTimer = undefined;
    if (this.done) return;
    this.abandonUpstream();
    // Envoy: 504 once the whole request was received, 408 while it was still arriving
    if (!this.responseStarted) this.sendLocalReply(this.requestComplete ? 504 : 408, 'downstream duration timeout', 'duration_timeout', 'DT');
    else {
      this.responseFlags = 'DT';
      this.resetDownstream();
    }
  }

  private requestDone(): void {
    if (this.requestTimer !== undefined) {
      clearTimeout(this.requestTimer);
      this.requestTimer = undefined;
    }
  }

  // ------------------------------------------------------------------------------------------
  // Downstream -> upstream

  /** Request headers with pseudo-headers :method, :path, :authority, :scheme. */
  decodeHeaders(headers: HeaderMap, endStream: boolean, expectContinue = false): void {
    this.headers = headers;
    this.requestComplete = endStream;
    if (endStream) this.requestDone();
    const hcm = this.hcm;
    const cfg = hcm.config;
    this.method = headers.first(':method') ?? 'GET';
    this.path = headers.first(':path') ?? '';
    this.authority = headers.first(':authority') ?? '';
    this.isHead = this.method === 'HEAD';
    const ct = headers.first('content-type');
    this.grpc = ct !== undefined && isGrpcContentType(ct);

    if (this.path === '' && this.method !== 'CONNECT') {
      this.sendLocalReply(400, '', 'missing_path', '');
      return;
    }
    this.sanitize(headers, cfg.useRemoteAddress);
    if ((cfg.normalizePath || cfg.mergeSlashes) && this.method !== 'CONNECT') {
      // before routing and filters: route matches, RBAC and the upstream see one spelling of the path
      const p = normalizeRequestPath(this.path, cfg.normalizePath, cfg.mergeSlashes);
      if (p === undefined) {
        this.sendLocalReply(400, '', 'path_normalization_failed', '');
        return;
      }
      if (p !== this.path) {
        headers.set(':path', p);
        this.path = p;
      }
    }
    if (cfg.stripAnyHostPort || cfg.stripMatchingHostPort) this.stripHostPort(headers);
    if (expectContinue) this.downstream.writeInterim(100, new HeaderMap());

    const table = hcm.routes.current();
    if (table === undefined) {
      hcm.stats.noRoute++;
      this.sendLocalReply(404, '', 'route_not_found', 'NR');
      return;
    }
    stripInternalOnlyHeaders(table, headers, this.internal);
    const result = table.route(this);
    this.routeResult = result;
    if (result.kind === 'route') this.route = result.route;
    const observers = hcm.headerObservers;
    for (let i = 0; i < observers.length; i++) observers[i].onRequestHeaders(this, headers);
    if (hcm.filters.length > 0) {
      this.createFilters();
      if (this.filters !== undefined && !this.runDecodeFilters(0)) return;
    }
    this.routeRequest(result, headers);
  }

  /** Ask each filter factory for a filter for this stream; keep those that made one. */
  private createFilters(): void {
    const factories = this.hcm.filters;
    for (let i = 0; i < factories.length; i++) {
      const f = factories[i].create(this);
      if (f !== undefined) (this.filters ??= []).push(f);
    }
  }

  /** Run the request filters from `from`; false when one stopped the request or answered it. */
  private runDecodeFilters(from: number): boolean {
    const filters = this.filters!;
    for (let i = from; i < filters.length; i++) {
      const f = filters[i];
      if (f.decodeHeaders === undefined) continue;
      const st = f.decodeHeaders(this.headers, this.requestComplete);
      if (this.done) return false;
      if (st === FilterHeadersStatus.StopIteration) {
        this.filterStoppedAt = i;
        return false;
      }
    }
    return true;
  }

  /** FilterCallbacks: resume after the filter that stopped the request. */
  continueDecoding(): void {
    const at = this.filterStoppedAt;
    if (this.done || at < 0) return;
    this.filterStoppedAt = -1;
    if (!this.runDecodeFilters(at + 1)) return;
    this.routeRequest(this.routeResult!, this.headers);
  }

  get ended(): boolean {
    return this.done;
  }

  interceptResponseData(interceptor: ResponseDataInterceptor): void {
    this.responseInterceptor = interceptor;
  }

  /** FilterCallbacks: response body an interceptor held goes downstream now. */
  writeResponseData(chunk: Buffer, endStream: boolean): void {
    if (this.done) return;
    this.lastActivity = coarseNow();
    if (endStream) this.responseComplete = true;
    this.downstream.writeData(chunk, endStream);
    if (endStream) this.onResponseEnd();
  }

  writeResponseTrailers(trailers: HeaderMap): void {
    if (this.done) return;
    this.responseComplete = true;
    this.downstream.writeTrailers(trailers);
    this.onResponseEnd();
  }

  pauseUpstreamResponse(): void {
    this.upstream?.pauseResponse();
  }

  resumeUpstreamResponse(): void {
    this.upstream?.resumeResponse();
  }

  /** The upstream response is all in (an interceptor still holds some of it): the route timeout no longer applies. */
  private upstreamResponseIn(): void {
    this.upstream = undefined;
    this.clearTimer();
  }

  upstreamClusterName(): string | undefined {
    return this.route?.pickCluster(this)?.name;
  }

  perFilterConfig(filterName: string): unknown {
    return this.route?.perFilter?.get(filterName);
  }

  addResponseFlag(flag: string): void {
    this.responseFlags = this.responseFlags === '' ? flag : `${this.responseFlags},${flag}`;
    this.filterFlags = this.filterFlags === '' ? flag : `${this.filterFlags},${flag}`;
  }

  /** flags filters added (DI): kept in front of a local reply's own flag */
  private filterFlags = '';

  /** The router filter: answer from the route (redirect, direct response) or forward upstream. */
  private routeRequest(result: RouteResult, headers: HeaderMap): void {
    const hcm = this.hcm;
    const endStream = this.requestComplete;
    if (result.kind === 'none') {
      hcm.stats.noRoute++;
      this.sendLocalReply(404, '', 'route_not_found', 'NR');
      return;
    }
    if (result.kind === 'require_tls') {
      const rh = new HeaderMap(['location', sslRedirectLocation(this.authority, this.path)]);
      this.sendLocalReply(301, '', 'via_upstream', '', rh);
      return;
    }
    const route = result.route;
    const action = route.config.action;
    switch (action.kind) {
      case 'direct_response':
      case 'redirect': {
        if (action.kind === 'redirect') hcm.stats.rqRedirect++;
        else hcm.stats.rqDirectResponse++;
        const r = routeReply(route, headers, this.secure, this)!;
        this.responseHeaders = r.headers;
        this.sendLocalReply(r.status, r.body, 'direct_response', '', r.headers);
        return;
      }
      case 'non_forwarding':
        this.sendLocalReply(404, '', 'route_not_found', 'NR');
        return;
      case 'route':
        break;
    }
    if (headers.has('upgrade')) {
      const type = (headers.first('upgrade') ?? '').toLowerCase();
      const routeUpgrade = action.upgradeConfigs.find((u) => u.upgradeType.toLowerCase() === type);
      const allowed = routeUpgrade ? routeUpgrade.enabled : hcm.upgradeTypes.has(type);
      if (!allowed || this.downstream.upgrade === undefined) {
        this.sendLocalReply(403, '', 'upgrade_failed', '');
        return;
      }
    }
    const pick = route.pickCluster(this);
    const cluster = pick ? hcm.clusters.get(pick.name) : undefined;
    if (pick === undefined || cluster === undefined) {
      hcm.stats.noCluster++;
      this.sendLocalReply(action.clusterNotFoundResponseCode, '', 'cluster_not_found', 'NC');
      return;
    }
    this.pick = pick;
    this.cluster = cluster;
    if (action.hashPolicy.length > 0) this.hash = requestHash(action.hashPolicy, headers, this.path, this.remoteAddress, this);
    if (action.idleTimeoutMs !== undefined || action.maxStreamDurationMs !== undefined || action.grpcTimeoutHeaderMaxMs !== undefined) {
      this.applyRouteStreamTimeouts(action, headers);
    }
    // ORIGINAL_DST: the host is where the connection was going (restored by the listener).
    const host = this.pickHost(cluster);
    if (host === undefined) {
      this.failWith('KEEL_NO_HEALTHY_UPSTREAM');
      return;
    }
    this.host = host;
    const rm = cluster.resources;
    if (!rm.requests.canCreate()) {
      this.failWith('KEEL_UPSTREAM_OVERFLOW');
      return;
    }
    rm.requests.inc();
    this.countedRequest = true;
    // Retries and per-try timeouts: only requests whose route (or virtual host) has a retry policy,
    // or that carry a trusted x-envoy-retry-* / per-try header, pay for them.
    const policyCfg = action.retryPolicy ?? route.virtualHost.config.retryPolicy;
    if (policyCfg !== undefined || hasRetryHeaders(headers)) this.setupRetry(policyCfg, headers);
    const r = this.retry;
    if (r !== undefined && this.buffered !== undefined) {
      // body that arrived while a filter held the request: kept for re-sending like the rest
      if (this.bufferedBytes <= RETRY_BUFFER_LIMIT) {
        for (let i = 0; i < this.buffered.length; i++) r.body.push(this.buffered[i]);
        r.bodyBytes = this.bufferedBytes;
        if (this.bufferedTrailers !== undefined) r.trailers = this.bufferedTrailers;
        this.buffered = undefined;
        this.bufferedBytes = 0;
        this.bufferedTrailers = undefined;
      } else this.dropRetry();
    }
    this.prepareUpstreamHeaders(headers, route, pick, host);
    const mirrors = action.requestMirrorPolicies ?? route.virtualHost.config.requestMirrorPolicies;
    if (mirrors !== undefined) this.startMirrors(mirrors);
    if (endStream) this.startTimer();
    this.startAttempt(host);
  }

  /** request_mirror_policies: shadow copies start with the main request (never for upgrades). */
  private startMirrors(policies: readonly RequestMirrorPolicyConfig[]): void {
    if (this.method === 'CONNECT' || this.headers.has('upgrade')) return;
    const r = this.retry;
    this.shadows = startShadows(policies, {
      clusters: this.hcm.clusters,
      runtime: this.runtime,
      headers: this.headers,
      body: r !== undefined ? r.body : this.buffered,
      trailers: r !== undefined ? r.trailers : this.bufferedTrailers,
      complete: this.requestComplete,
      timeoutMs: this.routeTimeoutMs(),
      downstreamHttp2: this.protocol === 'HTTP/2',
    });
  }

  /**
   * The route's idle_timeout (replaces stream_idle_timeout; 0 disables it) and max_stream_duration
   * (replaces the connection manager's, counted from the stream's start; with grpc_timeout_header_max
   * a grpc-timeout request header sets it, capped at that maximum when it is not 0, less
   * grpc_timeout_header_offset).
   */
  private applyRouteStreamTimeouts(action: ForwardAction, headers: HeaderMap): void {
    const idle = action.idleTimeoutMs;
    if (idle !== undefined) {
      this.routeIdleMs = idle;
      if (idle > 0) this.routeIdleTimer = setTimeout(onRouteIdle, idle, this);
    }
    let duration = action.maxStreamDurationMs;
    const grpcMax = action.grpcTimeoutHeaderMaxMs;
    if (grpcMax !== undefined) {
      const g = parseGrpcTimeoutMs(headers.first('grpc-timeout'));
      if (g !== undefined) {
        // a grpc-timeout of 0 means no deadline: only the cap applies
        let d = g === 0 ? grpcMax : grpcMax > 0 ? Math.min(g, grpcMax) : g;
        const offset = action.grpcTimeoutHeaderOffsetMs ?? 0;
        if (d > 0 && offset > 0) d = offset < d ? d - offset : 1;
        duration = d;
      }
    }
    if (duration === undefined) return;
    if (this.durationTimer !== undefined) {
      clearTimeout(this.durationTimer);
      this.durationTimer = undefined;
    }
    if (duration > 0) this.durationTimer = setTimeout(onDurationTimeout, Math.max(1, duration - (Date.now() - this.startTime)), this);
  }

  /** The route idle timer fired: idle for the whole period, or re-armed for the rest of it. */
  onRouteIdle(): void {
    this.routeIdleTimer = undefined;
    if (this.done) return;
    const left = this.routeIdleMs - (Date.now() - this.lastActivity);
    // lastActivity is coarse (~100 ms): within that, the stream counts as idle
    if (left > COARSE_SLACK_MS) {
      this.routeIdleTimer = setTimeout(onRouteIdle, left, this);
      return;
    }
    this.routeIdleMs = -1;
    this.onStreamIdle();
  }

  /** Merge the compiled policy with the request's headers: retry state and per-try timeout. */
  private setupRetry(cfg: ForwardAction['retryPolicy'], headers: HeaderMap): void {
    const policy = compiledRetryPolicy(cfg);
    let perTry = policy.perTryTimeoutMs;
    const hdr = headers.first('x-envoy-upstream-rq-per-try-timeout-ms');
    if (hdr !== undefined) {
      if (/^\d+$/.test(hdr)) perTry = Number(hdr);
      headers.remove('x-envoy-upstream-rq-per-try-timeout-ms');
    }
    // A per-try timeout not below the route timeout is ignored (Envoy's FilterUtility::finalTimeout).
    const global = this.routeTimeoutMs();
    if (global > 0 && perTry >= global) perTry = 0;
    this.perTryMs = perTry;
    this.perTryIdleMs = policy.perTryIdleTimeoutMs;
    // Upgrades hand the connection over; they are not retried.
    if (headers.has('upgrade') || this.method === 'CONNECT') return;
    this.retry = RetryState.create(policy, headers);
    if (this.retry !== undefined && perTry > 0) {
      // x-envoy-hedge-on-per-try-timeout overrides the route's (else the virtual host's) hedge_policy
      const hv = headers.first('x-envoy-hedge-on-per-try-timeout');
      const route = this.route!;
      this.hedging = hv !== undefined ? hv === 'true' : (route.forward?.hedgeOnPerTryTimeout ?? route.virtualHost.config.hedgeOnPerTryTimeout ?? false);
    }
  }

  /** One upstream attempt on `host`: circuit-breaker and host counters, then the pool. */
  private startAttempt(host: Host): void {
    const cluster = this.cluster!;
    this.host = host;
    this.attemptCount++;
    cluster.stats.upstreamRqTotal++;
    host.activeRequests++;
    this.countedAttempt = true;
    this.requestSent = false;
    this.upstreamAddress = host.address;
    this.upstreamPort = host.port;
    this.upstreamMetadata = host.metadata;
    if (this.route!.virtualHost.config.includeRequestAttemptCount) {
      this.headers.set('x-envoy-attempt-count', this.attemptCount === 1 ? '1' : String(this.attemptCount));
    }
    const r = this.retry;
    if (r !== undefined && r.policy.previousHosts) (r.previous ??= []).push(host);
    this.waitingForPool = true;
    this.upstreamStart = Date.now();
    const h2 = (this.upstreamHttp2 = cluster.upstreamHttp2(this.protocol === 'HTTP/2'));
    const ao = this.hcm.config.alpnOverride;
    this.upstreamAlpn = ao === undefined ? undefined : h2 ? ao.http2 : cluster.useDownstreamProtocol && this.protocol === 'HTTP/1.0' ? ao.http10 : ao.http11;
    host.pool(h2, this.upstreamAlpn).newStream(this.hedging ? (this.attemptCb = new HedgeAttempt(this)) : this);
  }

  /** The current attempt is over (its outcome is known): undo its per-attempt counters and timer. */
  private endAttempt(): void {
    this.clearPerTryTimer();
    if (this.perTryIdleTimer !== undefined) {
      clearTimeout(this.perTryIdleTimer);
      this.perTryIdleTimer = undefined;
    }
    if (this.countedAttempt) {
      this.countedAttempt = false;
      this.host!.activeRequests--;
    }
  }

  /**
   * Ask the retry state whether this failed attempt is retried; on yes, arm the back-off timer.
   * On no, remember URX/UO for the final answer and stop retrying.
   */
  private retryAfter(would: boolean): boolean {
    const r = this.retry!;
    const cluster = this.cluster!;
    const st = r.shouldRetry(would, cluster.resources, cluster.stats);
    if (st === RetryStatus.Yes) {
      this.retryTimer = setTimeout(onRetryTimer, r.backoffMs(random32()), this);
      return true;
    }
    if (st === RetryStatus.LimitExceeded) this.retryFlag = 'URX';
    else if (st === RetryStatus.Overflow) this.retryFlag = 'UO';
    this.dropRetry();
    return false;
  }

  private retryReset(kind: ResetKind): boolean {
    const r = this.retry;
    if (r === undefined) return false;
    return this.retryAfter(r.wouldRetryReset(kind, this.requestSent));
  }

  private dropRetry(): void {
    const r = this.retry;
    if (r === undefined) return;
    this.retry = undefined;
    r.release(this.cluster!.resources);
  }

  /** The back-off elapsed: pick a host (another one, with previous_hosts) and try again. */
  onRetryTimer(): void {
    this.retryTimer = undefined;
    if (this.done) return;
    const cluster = this.cluster!;
    const r = this.retry;
    let host = this.pickHost(cluster);
    if (r !== undefined && r.previous !== undefined && host !== undefined) {
      for (let i = 0; i < r.policy.hostSelectionRetryMaxAttempts && r.previous.includes(host); i++) {
        const next = this.pickHost(cluster);
        if (next === undefined) break;
        host = next;
      }
    }
    if (host === undefined) {
      this.failWith('KEEL_NO_HEALTHY_UPSTREAM');
      return;
    }
    this.startAttempt(host);
  }

  private startPerTryTimer(): void {
    if (this.perTryTimer === undefined) this.perTryTimer = setTimeout(onPerTryTimeout, this.perTryMs, this);
  }

  private clearPerTryTimer(): void {
    if (this.perTryTimer !== undefined) {
      clearTimeout(this.perTryTimer);
      this.perTryTimer = undefined;
    }
  }

  /**
   * per_try_idle_timeout: nothing moved on this attempt for the period. Before the response: the
   * attempt ends and may be retried (504 UT otherwise); after it started: the stream is reset.
   */
  onPerTryIdle(): void {
    this.perTryIdleTimer = undefined;
    if (this.done || this.upstream === undefined) return;
    const left = this.perTryIdleMs - (Date.now() - this.lastActivity);
    if (left > COARSE_SLACK_MS) {
      this.perTryIdleTimer = setTimeout(onPerTryIdle, left, this);
      return;
    }
    const cluster = this.cluster!;
    cluster.stats.upstreamRqPerTryIdleTimeout++;
    if (this.responseStarted) {
      this.abandonUpstream();
      this.responseFlags = 'UT';
      this.resetDownstream();
      return;
    }
    cluster.recordOutcome(this.host!, OUTCOME_TIMEOUT);
    this.abandonUpstream();
    this.endAttempt();
    if (this.retryReset('timeout')) return;
    this.sendLocalReply(504, 'upstream request timeout', 'upstream_per_try_idle_timeout', this.withRetryFlag('UT'));
  }

  /** The per-try timeout fired before the response started: end this attempt, maybe retry. */
  onPerTryTimeout(): void {
    this.perTryTimer = undefined;
    if (this.done || this.responseStarted) return;
    const cluster = this.cluster!;
    cluster.stats.upstreamRqPerTryTimeout++;
    cluster.recordOutcome(this.host!, OUTCOME_TIMEOUT);
    if (this.hedging && this.upstream !== undefined && this.retry !== undefined) {
      this.hedgeOnPerTryTimeout();
      return;
    }
    this.abandonUpstream();
    this.endAttempt();
    if (this.retryReset('timeout')) return;
    this.sendLocalReply(504, 'upstream request timeout', 'upstream_per_try_timeout', this.withRetryFlag('UT'));
  }

  /**
   * hedge_on_per_try_timeout: the timed-out attempt is not reset but parked, still able to answer;
   * a retry (with its back-off) starts next to it. The first response that is not retried wins and
   * every other attempt is reset. With no retry left, the attempt simply goes on.
   */
  private hedgeOnPerTryTimeout(): void {
    const a = this.attemptCb as HedgeAttempt;
    a.upstream = this.upstream;
    a.host = this.host;
    a.counted = this.countedAttempt;
    a.start = this.upstreamStart;
    this.upstream = undefined;
    this.countedAttempt = false;
    this.endAttempt();
    if (this.retryAfter(this.retry!.wouldRetryReset('timeout', true))) {
      (this.parked ??= []).push(a);
      this.attemptCb = this;
      return;
    }
    this.retryFlag = '';
    this.resume(a);
  }

  /** Make a parked attempt the current one again. */
  private resume(a: HedgeAttempt): void {
    this.upstream = a.upstream;
    this.host = a.host;
    this.countedAttempt = a.counted;
    this.upstreamStart = a.start;
    a.upstream = undefined;
    a.counted = false;
    this.attemptCb = a;
    const h = this.host!;
    this.upstreamAddress = h.address;
    this.upstreamPort = h.port;
    this.upstreamMetadata = h.metadata;
  }

  /** A parked attempt's response head: dropped if it would be retried while others are out; else it wins. */
  onParkedHeaders(a: HedgeAttempt, status: number, headers: HeaderMap, endStream: boolean, trailers: boolean): void {
    if (this.done || a.upstream === undefined || this.parked === undefined) return;
    const others = this.upstream !== undefined || this.waitingForPool || this.retryTimer !== undefined || this.parked.length > 1;
    const r = this.retry;
    if (others && r !== undefined && r.wouldRetryHeaders(status, headers)) {
      countStatus(this.cluster!.stats, status);
      this.cluster!.recordOutcome(a.host!, statusOutcome(status));
      this.dropParked(a, !endStream || !this.requestComplete);
      return;
    }
    this.abandonUpstream();
    this.endAttempt();
    if (this.retryTimer !== undefined) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    this.parked.splice(this.parked.indexOf(a), 1);
    this.resetParked();
    this.resume(a);
    this.retryFlag = '';
    this.onUpstreamHeaders(status, headers, endStream, trailers);
  }

  /** A parked attempt failed: it is dropped (the current attempt or a coming retry goes on). */
  onParkedReset(a: HedgeAttempt, code: ErrorCode): void {
    if (this.done || a.upstream === undefined) return;
    a.upstream = undefined;
    this.cluster!.recordOutcome(a.host!, code === 'KEEL_UPSTREAM_PROTOCOL_ERROR' ? OUTCOME_PROTOCOL_ERROR : OUTCOME_RESET);
    this.dropParked(a, false);
    const others = this.upstream !== undefined || this.waitingForPool || this.retryTimer !== undefined || (this.parked?.length ?? 0) > 0;
    if (!others && !this.responseStarted) this.failWith(code);
  }

  private dropParked(a: HedgeAttempt, reset: boolean): void {
    const list = this.parked;
    if (list !== undefined) {
      const i = list.indexOf(a);
      if (i >= 0) list.splice(i, 1);
    }
    const up = a.upstream;
    a.upstream = undefined;
    if (reset && up !== undefined) up.reset();
    if (a.counted) {
      a.counted = false;
      a.host!.activeRequests--;
    }
  }

  private resetParked(): void {
    const list = this.parked;
    if (list === undefined) return;
    this.parked = undefined;
    for (const a of list) {
      const up = a.upstream;
      a.upstream = undefined;
      up?.reset();
      if (a.counted) {
        a.counted = false;
        a.host!.activeRequests--;
      }
    }
  }

  private withRetryFlag(flag: string): string {
    return this.retryFlag === '' ? flag : `${flag},${this.retryFlag}`;
  }

  /** The cluster's load balancer's choice; for ORIGINAL_DST, where the connection was going. */
  private pickHost(cluster: Cluster): Host | undefined {
    return cluster.config.type === 'ORIGINAL_DST' ? cluster.originalDstHost(this.localAddress, this.localPort) : cluster.pickHost(this.hash);
  }

  /** strip_any_host_port / strip_matching_host_port: the port leaves :authority before routing. */
  private stripHostPort(headers: HeaderMap): void {
    const host = this.authority;
    const stripped = stripHostPort(host);
    if (stripped === host) return;
    const port = Number(host.slice(stripped.length + 1));
    if (this.hcm.config.stripAnyHostPort || port === this.localPort) {
      this.authority = stripped;
      headers.set(':authority', stripped);
    }
  }

  private sanitize(headers: HeaderMap, useRemoteAddress: boolean): void {
    const hcm = this.hcm;
    const cfg = hcm.config;
    // x-forwarded-for and internal-ness
    const xff = headers.get('x-forwarded-for');
    if (useRemoteAddress) {
      this.internal = hcm.isInternalAddress(this.remoteAddress);
      if (!cfg.skipXffAppend) headers.set('x-forwarded-for', xff ? `${xff},${this.remoteAddress}` : this.remoteAddress);
      headers.set('x-forwarded-proto', this.secure ? 'https' : 'http');
      if (this.internal) headers.set('x-envoy-internal', 'true');
      else headers.remove('x-envoy-internal');
    } else {
      // Without use_remote_address the request is internal when XFF names one internal address.
      this.internal = xff === undefined ? hcm.isInternalAddress(this.remoteAddress) : !xff.includes(',') && hcm.isInternalAddress(xff.trim());
      if (!headers.has('x-forwarded-proto')) headers.add('x-forwarded-proto', this.secure ? 'https' : 'http');
    }
    if (useRemoteAddress && !this.internal) {
      // At the edge, Envoy drops the x-envoy-* control headers an external client may not set.
      const raw = headers.raw;
      for (let i = 0; i < raw.length; i += 2) {
        if (raw[i].startsWith('x-envoy-') && EXTERNAL_STRIPPED.has(raw[i])) {
          headers.remove(raw[i]);
          i -= 2;
        }
      }
    }
    const te = headers.first('te');
    if (te !== undefined && te.toLowerCase() !== 'trailers') headers.remove('te');
    applyXfcc(headers, cfg.forwardClientCertDetails, cfg.setCurrentClientCertDetails, this.connection);
    if (cfg.generateRequestId) {
      const id = headers.first('x-request-id');
      if (id === undefined || id === '' || (!cfg.preserveExternalRequestId && !this.internal && useRemoteAddress)) headers.set('x-request-id', hcm.newRequestId());
    }
    if (cfg.via !== undefined) {
      const via = headers.get('via');
      headers.set('via', via ? `${via},${cfg.via}` : cfg.via);
    }
  }

  private prepareUpstreamHeaders(headers: HeaderMap, route: CompiledRoute, pick: ClusterPick, host: Host): void {
    const cfg = this.hcm.config;
    finalizeRequestHeaders(route, pick, headers, this, { keepOriginalPath: !cfg.suppressEnvoyHeaders, upstreamHostname: host.hostname });
    // Envoy advertises the per-try timeout when there is one, else the route timeout.
    const timeout = this.perTryMs > 0 ? this.perTryMs : this.routeTimeoutMs();
    if (!cfg.suppressEnvoyHeaders) {
      if (timeout > 0) headers.set('x-envoy-expected-rq-timeout-ms', String(timeout));
      headers.remove('x-envoy-upstream-rq-timeout-ms');
    }
  }

  /** The route timeout, overridden by x-envoy-upstream-rq-timeout-ms (grpc-timeout acts through max_stream_duration). */
  private routeTimeoutMs(): number {
    // computed once, before the header is removed from the upstream request
    if (this.routeTimeoutCache >= 0) return this.routeTimeoutCache;
    const fwd = this.route?.forward;
    // a route with max_stream_duration uses it instead of `timeout` (Envoy's "new timeouts")
    let t = fwd === undefined || fwd.usesMaxStreamDuration === true ? 0 : fwd.timeoutMs;
    const hdr = this.headers.first('x-envoy-upstream-rq-timeout-ms');
    if (hdr !== undefined && /^\d+$/.test(hdr)) t = Number(hdr);
    if (fwd !== undefined) this.routeTimeoutCache = t;
    return t;
  }
  private routeTimeoutCache = -1;

  private startTimer(): void {
    const t = this.routeTimeoutMs();
    if (t > 0 && this.timer === undefined) this.timer = setTimeout(onRouteTimeout, t, this);
  }

  /** The route timeout fired. */
  onTimeout(): void {
    this.timer = undefined;
    if (this.done) return;
    this.cluster && this.cluster.stats.upstreamRqTimeout++;
    if (!this.responseStarted && this.upstream !== undefined) this.cluster!.recordOutcome(this.host!, OUTCOME_TIMEOUT);
    this.abandonUpstream();
    if (!this.responseStarted) this.endAttempt();
    this.dropRetry();
    if (!this.responseStarted) {
      this.failWith('KEEL_UPSTREAM_TIMEOUT');
    } else {
      this.responseFlags = 'UT';
      this.resetDownstream();
    }
  }

  decodeData(chunk: Buffer, endStream: boolean): void {
    if (this.done) return;
    this.lastActivity = coarseNow();
    this.bytesReceived += chunk.length;
    if (endStream) {
      this.requestComplete = true;
      this.requestDone();
      if (this.route !== undefined && this.filterStoppedAt < 0) this.startTimer();
    }
    const shadows = this.shadows;
    if (shadows !== undefined) for (let i = 0; i < shadows.length; i++) shadows[i].data(chunk, endStream);
    if (this.filterStoppedAt >= 0) {
      // a filter holds the request (fault delay): keep the body for the router
      (this.buffered ??= []).push(ownChunk(chunk));
      this.bufferedBytes += chunk.length;
      if (endStream) this.bufferedEnd = true;
      if (this.bufferedBytes > RETRY_BUFFER_LIMIT) this.downstream.pauseRequest();
      return;
    }
    if (this.retry !== undefined) {
      this.decodeDataRetriable(this.retry, chunk, endStream);
      return;
    }
    const up = this.upstream;
    if (up !== undefined) {
      if (endStream && this.perTryMs > 0) this.startPerTryTimer();
      if (!up.sendData(chunk, endStream)) this.downstream.pauseRequest();
      return;
    }
    if (this.waitingForPool) {
      (this.buffered ??= []).push(ownChunk(chunk));
      this.bufferedBytes += chunk.length;
      if (endStream) this.bufferedEnd = true;
      if (this.bufferedBytes > (this.cluster?.config.perConnectionBufferLimitBytes ?? 1 << 20)) this.downstream.pauseRequest();
    }
  }

  /**
   * Request body of a request that may still be retried: kept (up to RETRY_BUFFER_LIMIT) for the
   * next attempt, and streamed to the current one. Past the limit the request is no longer retried;
   * if that happens between attempts, Envoy answers 507.
   */
  private decodeDataRetriable(r: RetryState, chunk: Buffer, endStream: boolean): void {
    const up = this.upstream;
    if (r.bodyBytes + chunk.length <= RETRY_BUFFER_LIMIT) {
      r.body.push(ownChunk(chunk));
      r.bodyBytes += chunk.length;
      if (up !== undefined) {
        if (endStream && this.perTryMs > 0) this.startPerTryTimer();
        if (!up.sendData(chunk, endStream)) this.downstream.pauseRequest();
      }
      // waiting for a pool or a back-off: the next onPoolReady sends the kept body
      return;
    }
    this.dropRetry();
    if (up !== undefined) {
      if (endStream && this.perTryMs > 0) this.startPerTryTimer();
      if (!up.sendData(chunk, endStream)) this.downstream.pauseRequest();
    } else if (this.waitingForPool) {
      this.buffered = r.body;
      this.buffered.push(ownChunk(chunk));
      this.bufferedBytes = r.bodyBytes + chunk.length;
      this.bufferedEnd = endStream;
      this.downstream.pauseRequest();
    } else {
      this.sendLocalReply(507, 'exceeded request buffer limit while retrying upstream', 'request_payload_exceeded_retry_buffer_limit', '');
    }
  }

  decodeTrailers(trailers: HeaderMap): void {
    if (this.done) return;
    this.requestDone();
    this.requestComplete = true;
    const shadows = this.shadows;
    if (shadows !== undefined) for (let i = 0; i < shadows.length; i++) shadows[i].trailers(trailers);
    if (this.filterStoppedAt >= 0) {
      this.bufferedTrailers = trailers;
      return;
    }
    this.startTimer();
    if (this.retry !== undefined) this.retry.trailers = trailers;
    if (this.upstream) {
      if (this.perTryMs > 0) this.startPerTryTimer();
      this.upstream.sendTrailers(trailers);
    } else if (this.waitingForPool && this.retry === undefined) this.bufferedTrailers = trailers;
  }

  /** The downstream went away (client closed or reset). */
  onDownstreamReset(): void {
    if (this.done) return;
    this.responseFlags ||= 'DC';
    this.abandonUpstream();
    this.endAttempt();
    this.finish();
  }

  onDownstreamWritable(): void {
    this.upstream?.resumeResponse();
  }

  private abandonUpstream(): void {
    if (this.waitingForPool) {
      this.waitingForPool = false;
      this.host?.pool(this.upstreamHttp2, this.upstreamAlpn).cancel(this.attemptCb);
    }
    const up = this.upstream;
    if (up) {
      this.upstream = undefined;
      up.reset();
    }
  }

  // ------------------------------------------------------------------------------------------
  // Pool callbacks

  onPoolReady(up: UpstreamStream): void {
    if (this.done || !this.waitingForPool) {
      up.reset();
      return;
    }
    this.waitingForPool = false;
    this.upstream = up;
    this.requestSent = true;
    if (this.perTryMs > 0 && this.requestComplete) this.startPerTryTimer();
    if (this.perTryIdleMs > 0) {
      this.lastActivity = coarseNow();
      this.perTryIdleTimer = setTimeout(onPerTryIdle, this.perTryIdleMs, this);
    }
    const r = this.retry;
    if (r !== undefined) {
      // (Re-)send everything kept so far; the rest streams through decodeData.
      const chunks = r.body;
      const n = chunks.length;
      const tr = r.trailers;
      const ends = this.requestComplete && tr === undefined;
      up.sendHeaders(this.headers, ends && n === 0);
      for (let i = 0; i < n; i++) up.sendData(chunks[i], ends && i === n - 1);
      if (tr !== undefined) up.sendTrailers(tr);
      if (!this.requestComplete) this.downstream.resumeRequest();
      return;
    }
    const hasBody = this.buffered !== undefined || this.bufferedTrailers !== undefined;
    up.sendHeaders(this.headers, this.requestComplete && !hasBody);
    if (this.buffered !== undefined) {
      const chunks = this.buffered;
      this.buffered = undefined;
      this.bufferedBytes = 0;
      for (let i = 0; i < chunks.length; i++) {
        const last = i === chunks.length - 1 && this.bufferedEnd && !this.bufferedTrailers;
        up.sendData(chunks[i], last);
      }
      this.downstream.resumeRequest();
    }
    if (this.bufferedTrailers) {
      up.sendTrailers(this.bufferedTrailers);
      this.bufferedTrailers = undefined;
    }
  }

  onPoolFailure(code: ErrorCode, _detail: string): void {
    this.waitingForPool = false;
    if (this.done) return;
    const overflow = code === 'KEEL_UPSTREAM_OVERFLOW';
    if (!overflow && this.host !== undefined) {
      this.cluster!.recordOutcome(this.host, code === 'KEEL_UPSTREAM_CONNECT_TIMEOUT' ? OUTCOME_TIMEOUT : OUTCOME_CONNECT_FAILURE);
    }
    this.endAttempt();
    if (this.retry !== undefined && this.retryReset(overflow ? 'overflow' : 'connect_failure')) return;
    this.failWith(code);
  }

  /** The local reply Envoy sends for a request-path failure (errors.ts has the table). */
  private failWith(code: ErrorCode): void {
    if (this.done) return;
    if (this.parked !== undefined && this.parked.length > 0 && !this.responseStarted && code !== 'KEEL_UPSTREAM_TIMEOUT') {
      // hedging: an earlier attempt is still out; it may yet answer
      this.retryFlag = '';
      this.resume(this.parked.pop()!);
      return;
    }
    const r = LOCAL_REPLIES[code] ?? LOCAL_REPLIES.KEEL_UPSTREAM_CONNECT_FAILURE;
    const extra = code === 'KEEL_UPSTREAM_OVERFLOW' ? new HeaderMap(['x-envoy-overloaded', 'true']) : undefined;
    this.sendLocalReply(r.status, r.body, r.details, this.retryFlag === '' ? r.flag : this.withRetryFlag(r.flag), extra);
  }

  // ------------------------------------------------------------------------------------------
  // Upstream -> downstream

  onUpstreamInterim(status: number, headers: HeaderMap): void {
    // 100 Continue was already answered by keel itself (Envoy's default); forward other 1xx.
    if (status === 100) return;
    this.downstream.writeInterim(status, headers);
  }

  onUpstreamHeaders(status: number, headers: HeaderMap, endStream: boolean, trailers: boolean): void {
    this.lastActivity = coarseNow();
    if (this.done || this.upstream === undefined) return;
    const cluster = this.cluster!;
    countStatus(cluster.stats, status);
    cluster.recordOutcome(this.host!, statusOutcome(status));
    if (this.retry !== undefined && this.retryHeaders(status, headers, endStream)) return;
    if (this.parked !== undefined) this.resetParked();
    this.clearPerTryTimer();
    this.responseStarted = true;
    this.responseCode = status;
    this.responseCodeDetails = 'via_upstream';
    // URX/UO from retries, kept beside the flags filters added (DI)
    if (this.retryFlag !== '') this.responseFlags = this.filterFlags === '' ? this.retryFlag : mergeFlags(this.filterFlags, this.retryFlag);
    this.responseHeaders = headers;
    const observers = this.hcm.headerObservers;
    for (let i = 0; i < observers.length; i++) observers[i].onResponseHeaders(this, headers);
    if (this.route!.virtualHost.config.includeAttemptCountInResponse) {
      headers.set('x-envoy-attempt-count', String(this.attemptCount));
    }
    const cfg = this.hcm.config;
    if (!cfg.suppressEnvoyHeaders) headers.set('x-envoy-upstream-service-time', String(Date.now() - this.upstreamStart));
    this.applyServerHeader(headers);
    const route = this.route!;
    finalizeResponseHeaders(route, this.pick, headers, this);
    if (this.hashSetCookie !== undefined) headers.add('set-cookie', this.hashSetCookie);
    if (cfg.alwaysSetRequestIdInResponse) {
      const id = this.headers.first('x-request-id');
      if (id !== undefined) headers.set('x-request-id', id);
    }
    if (endStream) this.responseComplete = true;
    if (this.filters !== undefined) this.encodeFilters(status, headers, endStream);
    this.countResponse(status);
    this.downstream.writeHeaders(status, headers, endStream, trailers);
    if (endStream) this.onResponseEnd();
  }

  /**
   * A response arrived while the request may still be retried: nothing of it has gone downstream.
   * true: it is retried (this attempt is dropped); false: it is the answer.
   */
  private retryHeaders(status: number, headers: HeaderMap, endStream: boolean): boolean {
    const would = this.retry!.wouldRetryHeaders(status, headers);
    if (!this.retryAfter(would)) {
      if (!would || this.parked === undefined || this.parked.length === 0) return false;
      // hedging: no retry left, but an earlier attempt is still out; wait for it instead
      const cur = this.upstream!;
      this.upstream = undefined;
      if (!endStream || !this.requestComplete) cur.reset();
      this.endAttempt();
      this.retryFlag = '';
      this.resume(this.parked.pop()!);
      return true;
    }
    const up = this.upstream!;
    this.upstream = undefined;
    // A finished exchange leaves the connection reusable; otherwise drop the rest of it.
    if (!endStream || !this.requestComplete) up.reset();
    this.endAttempt();
    return true;
  }

  onUpstreamData(chunk: Buffer, endStream: boolean): void {
    // upstream undefined: the tail of a response that was retried
    if (this.done || this.upstream === undefined) return;
    this.lastActivity = coarseNow();
    this.bytesSent += chunk.length;
    const ri = this.responseInterceptor;
    if (ri !== undefined) {
      if (endStream) this.upstreamResponseIn();
      ri.data(chunk, endStream);
      return;
    }
    if (endStream) this.responseComplete = true;
    const ok = this.downstream.writeData(chunk, endStream);
    if (endStream) this.onResponseEnd();
    else if (!ok) this.upstream?.pauseResponse();
  }

  onUpstreamTrailers(trailers: HeaderMap): void {
    if (this.done || this.upstream === undefined) return;
    const ri = this.responseInterceptor;
    if (ri !== undefined) {
      this.upstreamResponseIn();
      ri.trailers(trailers);
      return;
    }
    this.responseTrailers = trailers;
    this.responseComplete = true;
    this.downstream.writeTrailers(trailers);
    this.onResponseEnd();
  }

  onUpstreamReset(code: ErrorCode, detail: string): void {
    if (this.done || this.upstream === undefined) return;
    this.upstream = undefined;
    if (!this.responseStarted) {
      this.cluster!.recordOutcome(this.host!, code === 'KEEL_UPSTREAM_PROTOCOL_ERROR' ? OUTCOME_PROTOCOL_ERROR : OUTCOME_RESET);
      this.endAttempt();
      if (this.retry !== undefined && this.retryReset(detail === 'refused stream' ? 'refused_stream' : 'reset')) return;
      this.failWith(code);
    } else {
      this.responseFlags = (LOCAL_REPLIES[code] ?? LOCAL_REPLIES.KEEL_UPSTREAM_RESET).flag;
      this.resetDownstream();
    }
  }

  onUpstreamWritable(): void {
    this.downstream.resumeRequest();
  }

  onUpstreamUpgrade(status: number, headers: HeaderMap, socket: net.Socket, head: Buffer | undefined): void {
    if (this.done || this.downstream.upgrade === undefined) {
      socket.destroy();
      return;
    }
    this.upstream = undefined;
    this.responseStarted = true;
    this.responseCode = status;
    this.countResponse(status);
    this.applyServerHeader(headers);
    this.clearTimer();
    this.downstream.upgrade(status, headers, socket, head);
    this.responseComplete = true;
    this.requestComplete = true;
    this.finish();
  }

  private applyServerHeader(headers: HeaderMap): void {
    const cfg = this.hcm.config;
    switch (cfg.serverHeaderTransformation) {
      case 'OVERWRITE':
        headers.set('server', cfg.serverName);
        break;
      case 'APPEND_IF_ABSENT':
        if (!headers.has('server')) headers.add('server', cfg.serverName);
        break;
      case 'PASS_THROUGH':
        break;
    }
  }

  private onResponseEnd(): void {
    this.upstream = undefined;
    if (!this.requestComplete) {
      // Envoy ends the downstream request too: stop reading the rest of it.
      this.requestComplete = true;
    }
    this.finish();
  }

  private resetDownstream(): void {
    this.finish();
    this.downstream.reset();
  }

  private clearTimer(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    if (this.parked !== undefined) this.resetParked();
    this.hcm.untrack(this);
    this.requestDone();
    if (this.durationTimer !== undefined) {
      clearTimeout(this.durationTimer);
      this.durationTimer = undefined;
    }
    this.clearTimer();
    this.clearPerTryTimer();
    if (this.perTryIdleTimer !== undefined) {
      clearTimeout(this.perTryIdleTimer);
      this.perTryIdleTimer = undefined;
    }
    if (this.routeIdleTimer !== undefined) {
      clearTimeout(this.routeIdleTimer);
      this.routeIdleTimer = undefined;
    }
    if (this.retryTimer !== undefined) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    this.dropRetry();
    const shadows = this.shadows;
    if (shadows !== undefined) {
      this.shadows = undefined;
      for (let i = 0; i < shadows.length; i++) shadows[i].mainDone();
    }
    this.filterStoppedAt = -1;
    const filters = this.filters;
    if (filters !== undefined) for (let i = 0; i < filters.length; i++) filters[i].onDestroy?.();
    this.hcm.stats.downstreamRqActive--;
    if (this.countedRequest) {
      this.countedRequest = false;
      this.cluster!.resources.requests.dec();
    }
    if (this.countedAttempt) {
      this.countedAttempt = false;
      this.host!.activeRequests--;
    }
    const hooks = this.hcm.completionHooks;
    for (let i = 0; i < hooks.length; i++) hooks[i](this);
    this.downstream.onStreamComplete();
  }

  private encodeFilters(status: number, headers: HeaderMap, endStream: boolean): void {
    const filters = this.filters!;
    for (let i = 0; i < filters.length; i++) filters[i].encodeHeaders?.(status, headers, endStream);
  }

  private countResponse(status: number): void {
    const s = this.hcm.stats;
    if (status < 200) s.downstreamRq1xx++;
    else if (status < 300) s.downstreamRq2xx++;
    else if (status < 400) s.downstreamRq3xx++;
    else if (status < 500) s.downstreamRq4xx++;
    else s.downstreamRq5xx++;
  }

  // ------------------------------------------------------------------------------------------
  // Local replies

  /**
   * Envoy's local reply: text/plain body (or a gRPC trailers-only response for gRPC requests),
   * server and date headers. The request is over once it is sent.
   */
  sendLocalReply(status: number, body: string, details: string, flag: string, extra?: HeaderMap, forceBodyType = false, grpcStatus?: number): void {
    if (this.done) return;
    if (this.responseStarted) {
      this.resetDownstream();
      return;
    }
    this.abandonUpstream();
    this.responseStarted = true;
    this.responseCode = status;
    this.responseCodeDetails = details;
    if (flag) this.responseFlags = this.filterFlags === '' ? flag : mergeFlags(this.filterFlags, flag);
    const cfg = this.hcm.config;
    const headers = extra ?? new HeaderMap();
    this.responseHeaders = headers;
    const observers = this.hcm.headerObservers;
    for (let i = 0; i < observers.length; i++) observers[i].onResponseHeaders(this, headers);
    if (this.grpc && status >= 200) {
      headers.set('content-type', 'application/grpc');
      headers.set('grpc-status', String(grpcStatus ?? grpcStatusForHttp(status)));
      if (body) headers.set('grpc-message', encodeURIComponent(body));
      headers.set('server', cfg.serverName);
      headers.set('date', httpDate());
      if (this.filters !== undefined) this.encodeFilters(200, headers, true);
      this.countResponse(200);
      this.responseComplete = true;
      this.downstream.writeHeaders(200, headers, true);
      this.finish();
      return;
    }
    const payload = body === '' ? EMPTY : Buffer.from(body, 'utf8');
    if (payload.length > 0 || forceBodyType) {
      if (!headers.has('content-type')) headers.set('content-type', 'text/plain');
    }
    headers.set('content-length', String(payload.length));
    headers.set('date', httpDate());
    headers.set('server', cfg.serverName);
    if (cfg.alwaysSetRequestIdInResponse) {
      const id = this.headers?.first('x-request-id');
      if (id !== undefined) headers.set('x-request-id', id);
    }
    const noBody = payload.length === 0 || this.isHead;
    if (this.filters !== undefined) this.encodeFilters(status, headers, noBody);
    this.countResponse(status);
    this.responseComplete = true;
    this.downstream.writeHeaders(status, headers, noBody);
    if (!noBody) {
      this.bytesSent += payload.length;
      this.downstream.writeData(payload, true);
    }
    this.finish();
  }
}

/** Envoy's order of response flags in logs (ResponseFlagUtils), for merging a filter's DI with a reply's flag. */
const FLAG_ORDER = ['LH', 'UH', 'UT', 'LR', 'UR', 'UF', 'UC', 'UO', 'NR', 'DI', 'FI', 'RL', 'UAEX', 'RLSE', 'DC', 'URX', 'SI', 'IH', 'DPE', 'UMSDR', 'RFCF', 'NFCF', 'DT', 'UPE', 'NC', 'OM', 'DF', 'DO', 'DR'];

function mergeFlags(a: string, b: string): string {
  const all = [...new Set([...a.split(','), ...b.split(',')])];
  const rank = (f: string) => {
    const i = FLAG_ORDER.indexOf(f);
    return i < 0 ? FLAG_ORDER.length : i;
  };
  return all.sort((x, y) => rank(x) - rank(y)).join(',');
}

function onRequestTimeout(s: ActiveStream): void {
  s.onRequestTimeout();
}

function onDurationTimeout(s: ActiveStream): void {
  s.onDurationTimeout();
}

function onRouteTimeout(s: ActiveStream): void {
  s.onTimeout();
}

function onPerTryTimeout(s: ActiveStream): void {
  s.onPerTryTimeout();
}

/**
 * The pool callbacks of one attempt of a hedged request (made only when hedging applies): while it is
 * the stream's current attempt everything passes through; once parked after its per-try timeout,
 * only its response head (maybe the winner) and its reset matter.
 */
class HedgeAttempt implements PoolCallbacks {
  upstream: UpstreamStream | undefined;
  host: Host | undefined;
  counted = false;
  start = 0;
  constructor(private readonly s: ActiveStream) {}
  private get current(): boolean {
    return this.s.attemptCb === this;
  }
  onPoolReady(up: UpstreamStream): void {
    if (this.current) this.s.onPoolReady(up);
    else up.reset();
  }
  onPoolFailure(code: ErrorCode, detail: string): void {
    if (this.current) this.s.onPoolFailure(code, detail);
  }
  onUpstreamInterim(status: number, headers: HeaderMap): void {
    if (this.current) this.s.onUpstreamInterim(status, headers);
  }
  onUpstreamHeaders(status: number, headers: HeaderMap, endStream: boolean, trailers: boolean): void {
    if (this.current) this.s.onUpstreamHeaders(status, headers, endStream, trailers);
    else this.s.onParkedHeaders(this, status, headers, endStream, trailers);
  }
  onUpstreamData(chunk: Buffer, endStream: boolean): void {
    if (this.current) this.s.onUpstreamData(chunk, endStream);
  }
  onUpstreamTrailers(trailers: HeaderMap): void {
    if (this.current) this.s.onUpstreamTrailers(trailers);
  }
  onUpstreamReset(code: ErrorCode, detail: string): void {
    if (this.current) this.s.onUpstreamReset(code, detail);
    else this.s.onParkedReset(this, code);
  }
  onUpstreamWritable(): void {
    if (this.current) this.s.onUpstreamWritable();
  }
  onUpstreamUpgrade(status: number, headers: HeaderMap, socket: net.Socket, head: Buffer | undefined): void {
    if (this.current) this.s.onUpstreamUpgrade(status, headers, socket, head);
    else socket.destroy();
  }
}

function onRouteIdle(s: ActiveStream): void {
  s.onRouteIdle();
}

function onPerTryIdle(s: ActiveStream): void {
  s.onPerTryIdle();
}

/** Timers that check the coarse lastActivity accept this much staleness. */
const COARSE_SLACK_MS = 100;

/** A grpc-timeout header value (1-8 digits and a unit H M S m u n) in ms, rounded up; undefined when absent or malformed. */
export function parseGrpcTimeoutMs(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(v.trim());
  if (m === null) return undefined;
  const n = Number(m[1]);
  switch (m[2]) {
    case 'H':
      return n * 3_600_000;
    case 'M':
      return n * 60_000;
    case 'S':
      return n * 1000;
    case 'm':
      return n;
    case 'u':
      return Math.ceil(n / 1000);
    default:
      return Math.ceil(n / 1_000_000);
  }
}

function onRetryTimer(s: ActiveStream): void {
  s.onRetryTimer();
}

function countStatus(st: Cluster['stats'], status: number): void {
  if (status >= 500) st.upstreamRq5xx++;
  else if (status >= 400) st.upstreamRq4xx++;
  else if (status >= 300) st.upstreamRq3xx++;
  else if (status >= 200) st.upstreamRq2xx++;
}
