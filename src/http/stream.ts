// One downstream request's life in the HTTP connection manager: header sanitising, routing, the
// router filter's work (cluster and host choice, upstream request, timeouts) and the response path,
// codec-agnostic. The downstream codec drives it through decode*(); the upstream pool drives it
// through the UpstreamCallbacks. Local replies (404 NR, 503 UH/UF/UO, 504 UT, ...) are made here,
// gRPC-aware. Per-request state only: everything compiled lives in ConnectionManager/RouteTable.

import type * as net from 'node:net';
import { ErrorCode, grpcStatusForHttp, LOCAL_REPLIES } from '../common/errors';
import { ownChunk } from '../common/read-buffer';
import { finalizeRequestHeaders, finalizeResponseHeaders, routeReply, sslRedirectLocation, stripInternalOnlyHeaders } from '../router/apply';
import type { FormatContext } from '../common/header-format';
import { ClusterPick, CompiledRoute, isGrpcContentType, RouteInput, stripHostPort } from '../router/route-table';
import type { Cluster } from '../upstream/cluster';
import type { Host } from '../upstream/host';
import type { PoolCallbacks, UpstreamStream } from '../upstream/types';
import { ConnectionManager, httpDate } from './conn-manager';
import { HeaderMap } from './headers';

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
}

const EMPTY = Buffer.alloc(0);

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

// uint32 xorshift: the route random value (weighted clusters, runtime fractions) needs speed, not secrecy.
let seed = (Date.now() ^ (process.pid << 16)) >>> 0 || 1;
function random32(): number {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed;
}

export class ActiveStream implements PoolCallbacks, RouteInput, FormatContext {
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
  readonly startTime = Date.now();

  headers!: HeaderMap;
  get requestHeaders(): HeaderMap {
    return this.headers;
  }

  route: CompiledRoute | undefined;
  private pick: ClusterPick | undefined;
  cluster: Cluster | undefined;
  host: Host | undefined;
  private upstream: UpstreamStream | undefined;
  private waitingForPool = false;
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
  private grpc = false;
  private isHead = false;
  private timer: NodeJS.Timeout | undefined;
  private upstreamStart = 0;
  private countedRequest = false;
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
    this.remoteAddress = conn.remoteAddress;
    this.remotePort = conn.remotePort;
    this.localAddress = conn.localAddress;
    this.localPort = conn.localPort;
    this.protocol = downstream.protocol;
    this.randomValue = random32();
    this.runtime = hcm.runtime;
    hcm.stats.downstreamRqTotal++;
    hcm.stats.downstreamRqActive++;
  }

  // ------------------------------------------------------------------------------------------
  // Downstream -> upstream

  /** Request headers with pseudo-headers :method, :path, :authority, :scheme. */
  decodeHeaders(headers: HeaderMap, endStream: boolean, expectContinue = false): void {
    this.headers = headers;
    this.requestComplete = endStream;
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
    this.route = route;
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
    const host = cluster.pickHost();
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
    cluster.stats.upstreamRqTotal++;
    host.activeRequests++;
    this.upstreamAddress = host.address;
    this.upstreamPort = host.port;
    this.upstreamMetadata = host.metadata;
    this.prepareUpstreamHeaders(headers, route, pick, host);
    if (endStream) this.startTimer();
    this.waitingForPool = true;
    this.upstreamStart = Date.now();
    host.pool(cluster.http2).newStream(this);
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
    const timeout = this.routeTimeoutMs();
    if (!cfg.suppressEnvoyHeaders) {
      if (timeout > 0) headers.set('x-envoy-expected-rq-timeout-ms', String(timeout));
      headers.remove('x-envoy-upstream-rq-timeout-ms');
    }
  }

  /** The route timeout, overridden by x-envoy-upstream-rq-timeout-ms and bounded by grpc-timeout. */
  private routeTimeoutMs(): number {
    let t = this.route?.forward?.timeoutMs ?? 0;
    const hdr = this.headers.first('x-envoy-upstream-rq-timeout-ms');
    if (hdr !== undefined && /^\d+$/.test(hdr)) t = Number(hdr);
    return t;
  }

  private startTimer(): void {
    const t = this.routeTimeoutMs();
    if (t > 0 && this.timer === undefined) this.timer = setTimeout(onRouteTimeout, t, this);
  }

  /** The route timeout fired. */
  onTimeout(): void {
    this.timer = undefined;
    if (this.done) return;
    this.cluster && this.cluster.stats.upstreamRqTimeout++;
    this.abandonUpstream();
    if (!this.responseStarted) {
      this.failWith('KEEL_UPSTREAM_TIMEOUT');
    } else {
      this.responseFlags = 'UT';
      this.resetDownstream();
    }
  }

  decodeData(chunk: Buffer, endStream: boolean): void {
    if (this.done) return;
    this.bytesReceived += chunk.length;
    if (endStream) {
      this.requestComplete = true;
      this.startTimer();
    }
    const up = this.upstream;
    if (up !== undefined) {
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

  decodeTrailers(trailers: HeaderMap): void {
    if (this.done) return;
    this.requestComplete = true;
    this.startTimer();
    if (this.upstream) this.upstream.sendTrailers(trailers);
    else if (this.waitingForPool) this.bufferedTrailers = trailers;
  }

  /** The downstream went away (client closed or reset). */
  onDownstreamReset(): void {
    if (this.done) return;
    this.responseFlags ||= 'DC';
    this.abandonUpstream();
    this.finish();
  }

  onDownstreamWritable(): void {
    this.upstream?.resumeResponse();
  }

  private abandonUpstream(): void {
    if (this.waitingForPool) {
      this.waitingForPool = false;
      this.host?.pool(this.cluster!.http2).cancel(this);
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
    this.failWith(code);
  }

  /** The local reply Envoy sends for a request-path failure (errors.ts has the table). */
  private failWith(code: ErrorCode): void {
    if (this.done) return;
    const r = LOCAL_REPLIES[code] ?? LOCAL_REPLIES.KEEL_UPSTREAM_CONNECT_FAILURE;
    const extra = code === 'KEEL_UPSTREAM_OVERFLOW' ? new HeaderMap(['x-envoy-overloaded', 'true']) : undefined;
    this.sendLocalReply(r.status, r.body, r.details, r.flag, extra);
  }

  // ------------------------------------------------------------------------------------------
  // Upstream -> downstream

  onUpstreamInterim(status: number, headers: HeaderMap): void {
    // 100 Continue was already answered by keel itself (Envoy's default); forward other 1xx.
    if (status === 100) return;
    this.downstream.writeInterim(status, headers);
  }

  onUpstreamHeaders(status: number, headers: HeaderMap, endStream: boolean, trailers: boolean): void {
    if (this.done) return;
    this.responseStarted = true;
    this.responseCode = status;
    this.responseCodeDetails = 'via_upstream';
    const cluster = this.cluster!;
    countStatus(cluster.stats, status);
    this.responseHeaders = headers;
    const cfg = this.hcm.config;
    if (!cfg.suppressEnvoyHeaders) headers.set('x-envoy-upstream-service-time', String(Date.now() - this.upstreamStart));
    this.applyServerHeader(headers);
    const route = this.route!;
    finalizeResponseHeaders(route, this.pick, headers, this);
    if (cfg.alwaysSetRequestIdInResponse) {
      const id = this.headers.first('x-request-id');
      if (id !== undefined) headers.set('x-request-id', id);
    }
    if (endStream) this.responseComplete = true;
    this.countResponse(status);
    this.downstream.writeHeaders(status, headers, endStream, trailers);
    if (endStream) this.onResponseEnd();
  }

  onUpstreamData(chunk: Buffer, endStream: boolean): void {
    if (this.done) return;
    this.bytesSent += chunk.length;
    if (endStream) this.responseComplete = true;
    const ok = this.downstream.writeData(chunk, endStream);
    if (endStream) this.onResponseEnd();
    else if (!ok) this.upstream?.pauseResponse();
  }

  onUpstreamTrailers(trailers: HeaderMap): void {
    if (this.done) return;
    this.responseComplete = true;
    this.downstream.writeTrailers(trailers);
    this.onResponseEnd();
  }

  onUpstreamReset(code: ErrorCode, _detail: string): void {
    this.upstream = undefined;
    if (this.done) return;
    if (!this.responseStarted) {
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
    this.clearTimer();
    this.hcm.stats.downstreamRqActive--;
    if (this.countedRequest) {
      this.countedRequest = false;
      this.cluster!.resources.requests.dec();
      this.host!.activeRequests--;
    }
    this.downstream.onStreamComplete();
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
  sendLocalReply(status: number, body: string, details: string, flag: string, extra?: HeaderMap, forceBodyType = false): void {
    if (this.done) return;
    if (this.responseStarted) {
      this.resetDownstream();
      return;
    }
    this.abandonUpstream();
    this.responseStarted = true;
    this.responseCode = status;
    this.responseCodeDetails = details;
    if (flag) this.responseFlags = flag;
    const cfg = this.hcm.config;
    const headers = extra ?? new HeaderMap();
    if (this.grpc && status >= 200) {
      headers.set('content-type', 'application/grpc');
      headers.set('grpc-status', String(grpcStatusForHttp(status)));
      if (body) headers.set('grpc-message', encodeURIComponent(body));
      headers.set('server', cfg.serverName);
      headers.set('date', httpDate());
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
    this.countResponse(status);
    this.responseComplete = true;
    const noBody = payload.length === 0 || this.isHead;
    this.downstream.writeHeaders(status, headers, noBody);
    if (!noBody) {
      this.bytesSent += payload.length;
      this.downstream.writeData(payload, true);
    }
    this.finish();
  }
}

function onRouteTimeout(s: ActiveStream): void {
  s.onTimeout();
}

function countStatus(st: Cluster['stats'], status: number): void {
  if (status >= 500) st.upstreamRq5xx++;
  else if (status >= 400) st.upstreamRq4xx++;
  else if (status >= 300) st.upstreamRq3xx++;
  else if (status >= 200) st.upstreamRq2xx++;
}
