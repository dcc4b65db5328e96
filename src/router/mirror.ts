// Request mirroring (route request_mirror_policies): a fire-and-forget copy of a forwarded request
// to a shadow cluster, with :authority suffixed "-shadow" (before the port). The copy starts when
// the main request goes upstream and streams its body, up to SHADOW_BODY_LIMIT bytes (past it the
// shadow is reset); the shadow's response is read and thrown away. Nothing here may delay, alter or
// fail the main request: every shadow problem ends the shadow alone, counted in MIRROR_STATS and in
// the shadow cluster's own upstream stats.

import { random32 } from '../common/random';
import type { ErrorCode } from '../common/errors';
import { ownChunk } from '../common/read-buffer';
import type { RequestMirrorPolicyConfig } from '../config/types';
import { HeaderMap } from '../http/headers';
import type { Cluster } from '../upstream/cluster';
import type { ClusterManager } from '../upstream/cluster-manager';
import type { Host } from '../upstream/host';
import type { PoolCallbacks, UpstreamStream } from '../upstream/types';
import type { Runtime } from './route-table';

/** Request body a shadow copies at most (Envoy's default per-connection buffer limit). */
export const SHADOW_BODY_LIMIT = 1 << 20;

/** Shadow outcomes, per shadow cluster. */
export interface MirrorStats {
  /** shadows sent to a host */
  started: number;
  /** a whole response came back (any status) */
  completed: number;
  /** connect failure, reset or timeout */
  failed: number;
  /** the request body went past SHADOW_BODY_LIMIT */
  tooLarge: number;
  /** the main request ended before its body was all copied */
  abandoned: number;
  /** not sent: the cluster (or a host in it) was missing, or its circuit breaker was open */
  skipped: number;
}

/** Shadow outcomes by shadow cluster name (for the admin's /stats). */
export const MIRROR_STATS = new Map<string, MirrorStats>();

/** Where shadows to clusters that do not exist are counted (a cluster_header value may be anything). */
export const UNKNOWN_MIRROR_CLUSTER = '(unknown)';

function statsFor(cluster: string): MirrorStats {
  let s = MIRROR_STATS.get(cluster);
  if (s === undefined) {
    s = { started: 0, completed: 0, failed: 0, tooLarge: 0, abandoned: 0, skipped: 0 };
    MIRROR_STATS.set(cluster, s);
  }
  return s;
}

/** Envoy stat names for MIRROR_STATS (cluster.<name>.keel_shadow.<outcome>). */
export function mirrorStatEntries(): Record<string, number> {
  // (unknown) has no cluster scope in Envoy terms; it is reported as cluster.(unknown).keel_shadow.*
  const out: Record<string, number> = {};
  for (const [name, s] of MIRROR_STATS) {
    for (const k of Object.keys(s) as (keyof MirrorStats)[]) out[`cluster.${name}.keel_shadow.${k}`] = s[k];
  }
  return out;
}

/** "host:port" -> "host-shadow:port"; IPv6 literals keep their brackets. */
export function shadowAuthority(authority: string): string {
  const close = authority.lastIndexOf(']');
  const colon = authority.lastIndexOf(':');
  const hasPort = colon > close && (close >= 0 || authority.indexOf(':') === colon);
  return hasPort ? `${authority.slice(0, colon)}-shadow${authority.slice(colon)}` : `${authority}-shadow`;
}

/** What a shadow needs from the main stream when it starts. */
export interface MirrorSource {
  readonly clusters: ClusterManager;
  readonly runtime: Runtime;
  /** the request as it goes upstream (after route mutations); copied, never modified */
  readonly headers: HeaderMap;
  /** body received so far (kept while a filter held the request) */
  readonly body: readonly Buffer[] | undefined;
  readonly trailers: HeaderMap | undefined;
  /** the whole request (headers, body, trailers) has been received */
  readonly complete: boolean;
  /** route timeout (0 = none): a shadow lives at most this long */
  readonly timeoutMs: number;
  /** the main request came in over HTTP/2 (a USE_DOWNSTREAM cluster sends it on over HTTP/2 too) */
  readonly downstreamHttp2: boolean;
}

/** One shadow request; the main stream feeds it body and tells it when it is gone. */
export class ShadowRequest implements PoolCallbacks {
  private upstream: UpstreamStream | undefined;
  private waiting = false;
  private pending: Buffer[] | undefined;
  private pendingTrailers: HeaderMap | undefined;
  private bodyBytes = 0;
  /** the whole request has been handed to the shadow (end of body or trailers) */
  private requestEnded = false;
  private done = false;
  private timer: NodeJS.Timeout | undefined;
  /** the pool's protocol */
  private readonly http2: boolean;

  constructor(
    private readonly cluster: Cluster,
    private readonly host: Host,
    private readonly headers: HeaderMap,
    private readonly stats: MirrorStats,
    timeoutMs: number,
    downstreamHttp2: boolean,
  ) {
    this.http2 = cluster.upstreamHttp2(downstreamHttp2);
    cluster.resources.requests.inc();
    cluster.stats.upstreamRqTotal++;
    host.activeRequests++;
    stats.started++;
    if (timeoutMs > 0) {
      this.timer = setTimeout(onShadowTimeout, timeoutMs, this);
      this.timer.unref();
    }
  }

  start(): void {
    if (this.done) return;
    this.waiting = true;
    this.host.pool(this.http2).newStream(this);
  }

  /** More request body from the main stream. */
  data(chunk: Buffer, endStream: boolean): void {
    if (this.done || this.requestEnded) return;
    this.bodyBytes += chunk.length;
    if (this.bodyBytes > SHADOW_BODY_LIMIT) {
      this.stats.tooLarge++;
      this.end(false);
      return;
    }
    if (endStream) this.requestEnded = true;
    if (this.upstream !== undefined) this.upstream.sendData(chunk, endStream);
    else (this.pending ??= []).push(ownChunk(chunk));
  }

  trailers(trailers: HeaderMap): void {
    if (this.done || this.requestEnded) return;
    this.requestEnded = true;
    if (this.upstream !== undefined) this.upstream.sendTrailers(trailers);
    else this.pendingTrailers = trailers;
  }

  /** The main stream is over: a shadow whose request is still incomplete cannot be finished. */
  mainDone(): void {
    if (this.done || this.requestEnded) return;
    this.stats.abandoned++;
    this.end(false);
  }

  /** Mark the request complete without more body (it had none). */
  markEnded(): void {
    this.requestEnded = true;
  }

  onPoolReady(up: UpstreamStream): void {
    if (this.done || !this.waiting) {
      up.reset();
      return;
    }
    this.waiting = false;
    this.upstream = up;
    const chunks = this.pending;
    const tr = this.pendingTrailers;
    this.pending = undefined;
    this.pendingTrailers = undefined;
    const n = chunks?.length ?? 0;
    const ends = this.requestEnded && tr === undefined;
    up.sendHeaders(this.headers, ends && n === 0);
    for (let i = 0; i < n; i++) up.sendData(chunks![i], ends && i === n - 1);
    if (tr !== undefined) up.sendTrailers(tr);
  }

  onPoolFailure(_code: ErrorCode, _detail: string): void {
    this.waiting = false;
    if (this.done) return;
    this.cluster.recordOutcome(this.host, { kind: 'local', reason: 'connect_failure' });
    this.stats.failed++;
    this.end(false);
  }

  onUpstreamInterim(): void {}

  onUpstreamHeaders(status: number, _headers: HeaderMap, endStream: boolean): void {
    if (this.done) return;
    const st = this.cluster.stats;
    if (status >= 500) st.upstreamRq5xx++;
    else if (status >= 400) st.upstreamRq4xx++;
    else if (status >= 300) st.upstreamRq3xx++;
    else if (status >= 200) st.upstreamRq2xx++;
    this.cluster.recordOutcome(this.host, { kind: 'status', status });
    if (endStream) this.responseEnd();
  }

  onUpstreamData(_chunk: Buffer, endStream: boolean): void {
    if (endStream) this.responseEnd();
  }

  onUpstreamTrailers(): void {
    this.responseEnd();
  }

  onUpstreamReset(_code: ErrorCode, _detail: string): void {
    if (this.done) return;
    this.upstream = undefined;
    this.stats.failed++;
    this.end(false);
  }

  onUpstreamWritable(): void {}

  onUpstreamUpgrade(_status: number, _headers: HeaderMap, socket: import('node:net').Socket): void {
    socket.destroy();
    if (!this.done) {
      this.upstream = undefined;
      this.stats.failed++;
      this.end(false);
    }
  }

  onTimeout(): void {
    this.timer = undefined;
    if (this.done) return;
    this.cluster.stats.upstreamRqTimeout++;
    this.stats.failed++;
    this.end(false);
  }

  private responseEnd(): void {
    if (this.done) return;
    this.stats.completed++;
    // An upstream that answered before the whole request was sent cannot reuse the connection.
    this.end(this.requestEnded);
  }

  /** Release counters; `clean`: the exchange finished, leave the connection to the pool. */
  private end(clean: boolean): void {
    if (this.done) return;
    this.done = true;
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.waiting) {
      this.waiting = false;
      this.host.pool(this.http2).cancel(this);
    }
    const up = this.upstream;
    this.upstream = undefined;
    if (up !== undefined && !clean) up.reset();
    this.pending = undefined;
    this.cluster.resources.requests.dec();
    this.host.activeRequests--;
  }
}

function onShadowTimeout(s: ShadowRequest): void {
  s.onTimeout();
}

/**
 * Start the shadows the policies ask for this request; undefined when none started. Each one that
 * cannot start (no such cluster, no host, circuit breaker open) is skipped and counted.
 */
export function startShadows(policies: readonly RequestMirrorPolicyConfig[], src: MirrorSource): ShadowRequest[] | undefined {
  let out: ShadowRequest[] | undefined;
  for (let i = 0; i < policies.length; i++) {
    const p = policies[i];
    const rf = p.runtimeFraction;
    if (rf !== undefined && !src.runtime.fractionEnabled(rf.runtimeKey, rf.defaultValue.numerator, rf.defaultValue.denominator, random32())) continue;
    const name = p.clusterHeader !== undefined ? src.headers.first(p.clusterHeader) : p.cluster;
    if (name === undefined || name === '') continue;
    const cluster = src.clusters.get(name);
    const stats = statsFor(cluster === undefined ? UNKNOWN_MIRROR_CLUSTER : name);
    const host = cluster === undefined || cluster.config.type === 'ORIGINAL_DST' ? undefined : cluster.pickHost();
    if (cluster === undefined || host === undefined || !cluster.resources.requests.canCreate()) {
      stats.skipped++;
      continue;
    }
    const headers = new HeaderMap(src.headers.raw.slice());
    if (!p.disableShadowHostSuffixAppend) headers.set(':authority', shadowAuthority(headers.first(':authority') ?? ''));
    const s = new ShadowRequest(cluster, host, headers, stats, src.timeoutMs, src.downstreamHttp2);
    const body = src.body;
    const tr = src.trailers;
    if (body !== undefined) {
      for (let j = 0; j < body.length; j++) s.data(body[j], src.complete && tr === undefined && j === body.length - 1);
    }
    if (tr !== undefined) s.trailers(tr);
    else if (src.complete && (body === undefined || body.length === 0)) s.markEnded();
    s.start();
    (out ??= []).push(s);
  }
  return out;
}
