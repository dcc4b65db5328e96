// envoy.filters.http.fault at request time: delay (then let the request go on to the router) and
// abort (HTTP status, or a gRPC status as a trailers-only reply) with their percentages,
// header-controlled faults when the config enables them, header / upstream cluster / downstream
// node conditions, and max_active_faults with Envoy's fault.* stats kept on the factory.
// Per-route config replaces the filter-level config (Envoy's semantics). Everything is compiled
// when the route table (or the HCM) is built; a stream whose route has no fault pays one map lookup.
// Requests carrying x-envoy-downstream-service-cluster use Envoy's per-downstream-cluster runtime
// keys (fault.http.<cluster>.*) and stats (fault.<cluster>.delays_injected / aborts_injected).
// response_rate_limit throttles the response body (slices of limit/16 every 1/16 s) through the
// stream's response interceptor; the stream ends when the last slice is written.
// Not here: filter_metadata (no dynamic metadata is emitted; the decoder warns).

import { random32 } from '../common/random';
import { FAULT_TYPE, type FaultConfig } from '../config/filters/fault';
import type { FractionalPercent, HttpFilterConfig } from '../config/types';
import { ownChunk } from '../common/read-buffer';
import { FilterCallbacks, FilterHeadersStatus, HttpFilterFactory, ResponseDataInterceptor, StreamFilter } from '../http/filter';
import type { HeaderMap } from '../http/headers';
import { compileHeaderMatchers, HeaderPredicate } from '../router/matchers';
import type { Runtime } from '../router/route-table';
import type { FilterContext, HttpFilterType } from './index';
import { performance } from 'node:perf_hooks';

export const HEADER_ABORT = 'x-envoy-fault-abort-request';
export const HEADER_ABORT_GRPC = 'x-envoy-fault-abort-grpc-request';
export const HEADER_ABORT_PERCENTAGE = 'x-envoy-fault-abort-request-percentage';
export const HEADER_DELAY = 'x-envoy-fault-delay-request';
export const HEADER_DELAY_PERCENTAGE = 'x-envoy-fault-delay-request-percentage';
export const HEADER_THROUGHPUT = 'x-envoy-fault-throughput-response';
export const HEADER_THROUGHPUT_PERCENTAGE = 'x-envoy-fault-throughput-response-percentage';

const DIGITS = /^\d{1,15}$/;
/** setTimeout's longest delay */
const MAX_TIMER_MS = 2_147_483_647;

/** A fault config, compiled: matchers built, node list as a set. */
export class CompiledFault {
  readonly headerMatch: HeaderPredicate | undefined;
  readonly downstreamNodes: ReadonlySet<string> | undefined;
  /** there is a delay or an abort to inject */
  readonly active: boolean;

  constructor(readonly config: FaultConfig) {
    this.headerMatch = compileHeaderMatchers(config.headers);
    this.downstreamNodes = config.downstreamNodes.length > 0 ? new Set(config.downstreamNodes) : undefined;
    this.active = config.delay !== undefined || config.abort !== undefined || config.responseRateLimit !== undefined;
  }
}

/** Envoy's fault filter stats (counters, and the active_faults gauge). */
export interface FaultStats {
  delaysInjected: number;
  abortsInjected: number;
  activeFaults: number;
  faultsOverflow: number;
  responseRlInjected: number;
}

function enabled(runtime: Runtime, key: string, p: FractionalPercent): boolean {
  return runtime.fractionEnabled(key, p.numerator, p.denominator, random32());
}

/** The configured percentage, or for header faults the -percentage header's numerator capped by it. */
function percentageOf(p: FractionalPercent, header: boolean, headers: HeaderMap, name: string): FractionalPercent {
  if (!header) return p;
  const v = headers.first(name);
  if (v === undefined || !DIGITS.test(v)) return p;
  const n = Number(v);
  return n >= p.numerator ? p : { numerator: n, denominator: p.denominator };
}

/** Distinct downstream clusters that get their own stats (the header comes from trusted peers only). */
const MAX_DOWNSTREAM_CLUSTER_STATS = 1000;

export class FaultFilterFactory implements HttpFilterFactory {
  readonly counters: FaultStats = { delaysInjected: 0, abortsInjected: 0, activeFaults: 0, faultsOverflow: 0, responseRlInjected: 0 };
  /** per x-envoy-downstream-service-cluster: [delays_injected, aborts_injected] */
  readonly downstreamCounters = new Map<string, [number, number]>();
  private readonly prefix: string;

  constructor(
    readonly name: string,
    private readonly settings: CompiledFault,
    statPrefix: string,
  ) {
    this.prefix = `http.${statPrefix}.fault.`;
  }

  create(stream: FilterCallbacks): StreamFilter | undefined {
    const per = stream.perFilterConfig(this.name);
    if (per === null) return undefined;
    const settings = per instanceof CompiledFault ? per : this.settings;
    return settings.active ? new FaultStreamFilter(this, settings, stream) : undefined;
  }

  /** Count an injected delay (0) or abort (1) for a downstream cluster. */
  countDownstream(cluster: string, which: 0 | 1): void {
    let e = this.downstreamCounters.get(cluster);
    if (e === undefined) {
      if (this.downstreamCounters.size >= MAX_DOWNSTREAM_CLUSTER_STATS) return;
      e = [0, 0];
      this.downstreamCounters.set(cluster, e);
    }
    e[which]++;
  }

  stats(): Record<string, number> {
    const c = this.counters;
    const p = this.prefix;
    const out: Record<string, number> = {
      [`${p}delays_injected`]: c.delaysInjected,
      [`${p}aborts_injected`]: c.abortsInjected,
      [`${p}active_faults`]: c.activeFaults,
      [`${p}faults_overflow`]: c.faultsOverflow,
      [`${p}response_rl_injected`]: c.responseRlInjected,
    };
    for (const [cluster, [delays, aborts]] of this.downstreamCounters) {
      out[`${p}${cluster}.delays_injected`] = delays;
      out[`${p}${cluster}.aborts_injected`] = aborts;
    }
    return out;
  }
}

class FaultStreamFilter implements StreamFilter {
  private timer: NodeJS.Timeout | undefined;
  /** this stream holds one of the factory's active faults */
  private faultActive = false;
  /** x-envoy-downstream-service-cluster, when the request has one */
  private downstreamCluster: string | undefined;
  /** response_rate_limit in force for this stream */
  private throttle: ResponseThrottle | undefined;

  constructor(
    private readonly factory: FaultFilterFactory,
    private readonly s: CompiledFault,
    private readonly cb: FilterCallbacks,
  ) {}

  decodeHeaders(headers: HeaderMap): FilterHeadersStatus {
    const s = this.s;
    const cfg = s.config;
    if (cfg.upstreamCluster !== '' && this.cb.upstreamClusterName() !== cfg.upstreamCluster) return FilterHeadersStatus.Continue;
    if (s.downstreamNodes !== undefined) {
      const node = headers.first('x-envoy-downstream-service-node');
      if (node === undefined || !s.downstreamNodes.has(node)) return FilterHeadersStatus.Continue;
    }
    if (s.headerMatch !== undefined && !s.headerMatch(headers)) return FilterHeadersStatus.Continue;
    const dc = headers.first('x-envoy-downstream-service-cluster');
    if (dc !== undefined && dc !== '') this.downstreamCluster = dc;
    if (cfg.responseRateLimit !== undefined) this.maybeThrottle(headers);
    const delay = this.delayMs(headers);
    if (delay !== undefined && this.tryActivate()) {
      this.timer = setTimeout(onDelayElapsed, delay, this);
      this.factory.counters.delaysInjected++;
      if (this.downstreamCluster !== undefined && !cfg.disableDownstreamClusterStats) this.factory.countDownstream(this.downstreamCluster, 0);
      this.cb.addResponseFlag('DI');
      return FilterHeadersStatus.StopIteration;
    }
    const abort = this.abortStatus(headers);
    if (abort !== undefined && this.tryActivate()) {
      this.abort(abort);
      return FilterHeadersStatus.StopIteration;
    }
    return FilterHeadersStatus.Continue;
  }

  /** The delay elapsed: a delay may be followed by an abort; otherwise on to the router. */
  onDelayElapsed(): void {
    this.timer = undefined;
    if (this.cb.ended) return;
    const abort = this.abortStatus(this.cb.requestHeaders);
    if (abort !== undefined) {
      this.abort(abort);
      return;
    }
    // a response rate limit keeps the fault active until the stream is over
    if (this.throttle === undefined) this.release();
    this.cb.continueDecoding();
  }

  onDestroy(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.throttle?.destroy();
    this.release();
  }

  /** response_rate_limit: when enabled for this request, the response body goes out at the limit. */
  private maybeThrottle(headers: HeaderMap): void {
    const rl = this.s.config.responseRateLimit!;
    const header = rl.kind === 'header';
    if (!enabled(this.cb.runtime, this.s.config.runtime.responseRateLimitPercent, percentageOf(rl.percentage, header, headers, HEADER_THROUGHPUT_PERCENTAGE))) return;
    let kbps: number;
    if (rl.kind === 'fixed') kbps = rl.limitKbps;
    else {
      const v = headers.first(HEADER_THROUGHPUT);
      if (v === undefined || !DIGITS.test(v) || Number(v) === 0) return;
      kbps = Number(v);
    }
    if (!this.tryActivate()) return;
    this.factory.counters.responseRlInjected++;
    this.throttle = new ResponseThrottle(kbps, this.cb);
    this.cb.interceptResponseData(this.throttle);
  }

  private release(): void {
    if (this.faultActive) {
      this.faultActive = false;
      this.factory.counters.activeFaults--;
    }
  }

  /** Count one active fault for this stream, unless max_active_faults is reached (faults_overflow). */
  private tryActivate(): boolean {
    if (this.faultActive) return true;
    const c = this.factory.counters;
    const max = this.s.config.maxActiveFaults;
    const limit = this.cb.runtime.getInteger(this.s.config.runtime.maxActiveFaults, max ?? Number.MAX_SAFE_INTEGER);
    if (c.activeFaults >= limit) {
      c.faultsOverflow++;
      return false;
    }
    c.activeFaults++;
    this.faultActive = true;
    return true;
  }

  private delayMs(headers: HeaderMap): number | undefined {
    const d = this.s.config.delay;
    if (d === undefined) return undefined;
    const keys = this.s.config.runtime;
    const runtime = this.cb.runtime;
    const header = d.kind === 'header';
    const dc = this.downstreamCluster;
    const pctKey = dc === undefined ? keys.delayPercent : `fault.http.${dc}.delay.fixed_delay_percent`;
    if (!enabled(runtime, pctKey, percentageOf(d.percentage, header, headers, HEADER_DELAY_PERCENTAGE))) return undefined;
    let ms: number;
    if (d.kind === 'fixed') ms = d.fixedDelayMs;
    else {
      const v = headers.first(HEADER_DELAY);
      if (v === undefined || !DIGITS.test(v)) return undefined;
      ms = Number(v);
    }
    ms = runtime.getInteger(keys.delayDuration, ms);
    if (dc !== undefined) ms = runtime.getInteger(`fault.http.${dc}.delay.fixed_duration_ms`, ms);
    return ms > 0 ? Math.min(ms, MAX_TIMER_MS) : undefined;
  }

  /** [http status, grpc status or -1], or undefined when no abort applies to this request. */
  private abortStatus(headers: HeaderMap): [number, number] | undefined {
    const a = this.s.config.abort;
    if (a === undefined) return undefined;
    const keys = this.s.config.runtime;
    const runtime = this.cb.runtime;
    const dc = this.downstreamCluster;
    const pctKey = dc === undefined ? keys.abortPercent : `fault.http.${dc}.abort.abort_percent`;
    if (!enabled(runtime, pctKey, percentageOf(a.percentage, a.kind === 'header', headers, HEADER_ABORT_PERCENTAGE))) return undefined;
    let http: number | undefined;
    let grpc: number | undefined;
    if (a.kind === 'http') http = a.httpStatus;
    else if (a.kind === 'grpc') grpc = a.grpcStatus;
    else {
      const h = headers.first(HEADER_ABORT);
      if (h !== undefined && DIGITS.test(h) && Number(h) >= 200 && Number(h) < 600) http = Number(h);
      else {
        const g = headers.first(HEADER_ABORT_GRPC);
        if (g !== undefined && DIGITS.test(g) && Number(g) <= 0x7fffffff) grpc = Number(g);
      }
    }
    // Envoy: an HTTP status wins; a gRPC status answers with HTTP 200. A downstream cluster's key
    // replaces the generic one (both default to the configured value).
    if (http !== undefined) {
      const st = dc === undefined ? runtime.getInteger(keys.abortHttpStatus, http) : runtime.getInteger(`fault.http.${dc}.abort.http_status`, http);
      return [st >= 200 && st < 600 ? st : http, -1];
    }
    if (grpc !== undefined) {
      const st = dc === undefined ? runtime.getInteger(keys.abortGrpcStatus, grpc) : runtime.getInteger(`fault.http.${dc}.abort.grpc_status`, grpc);
      return [200, st >= 0 && st <= 0x7fffffff ? st : grpc];
    }
    return undefined;
  }

  private abort([http, grpc]: [number, number]): void {
    this.factory.counters.abortsInjected++;
    if (this.downstreamCluster !== undefined && !this.s.config.disableDownstreamClusterStats) this.factory.countDownstream(this.downstreamCluster, 1);
    // after a delay the stream already carries DI: the reply's flags become DI,FI
    this.cb.sendLocalReply(http, 'fault filter abort', 'fault_filter_abort', 'FI', undefined, false, grpc >= 0 ? grpc : undefined);
  }
}

const SLICES_PER_SECOND = 16;
const SLICE_MS = 1000 / SLICES_PER_SECOND;
/** queued response body past which the upstream response is paused (resumed below half of it) */
const THROTTLE_HIGH_WATERMARK = 1 << 20;
const EMPTY = Buffer.alloc(0);

/**
 * The response body at `kbps` KiB/s: up to kbps*1024/16 bytes every 1/16 s (the first slice at
 * once), then the trailers; the upstream is paused while too much body is queued.
 */
export class ResponseThrottle implements ResponseDataInterceptor {
  private readonly sliceBytes: number;
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private heldTrailers: HeaderMap | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastTick = 0;
  private paused = false;
  private finished = false;

  constructor(
    kbps: number,
    private readonly cb: FilterCallbacks,
  ) {
    this.sliceBytes = Math.max(1, Math.ceil((kbps * 1024) / SLICES_PER_SECOND));
  }

  data(chunk: Buffer, endStream: boolean): void {
    if (this.finished) return;
    if (chunk.length > 0) {
      this.queue.push(ownChunk(chunk));
      this.queued += chunk.length;
    }
    if (endStream) this.ended = true;
    if (!this.paused && !this.ended && this.queued > THROTTLE_HIGH_WATERMARK) {
      this.paused = true;
      this.cb.pauseUpstreamResponse();
    }
    this.schedule();
  }

  trailers(trailers: HeaderMap): void {
    if (this.finished) return;
    this.heldTrailers = trailers;
    this.ended = true;
    this.schedule();
  }

  destroy(): void {
    this.finished = true;
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.queue.length = 0;
  }

  private schedule(): void {
    if (this.timer !== undefined || this.finished) return;
    const wait = this.lastTick === 0 ? 0 : Math.max(0, this.lastTick + SLICE_MS - performance.now());
    this.timer = setTimeout(onThrottleTick, wait, this);
  }

  /** One slice out; the end (or the trailers) once everything queued has gone. */
  tick(): void {
    this.timer = undefined;
    if (this.finished) return;
    this.lastTick = performance.now();
    let budget = this.sliceBytes;
    while (budget > 0 && this.queue.length > 0) {
      let c = this.queue[0];
      if (c.length > budget) {
        this.queue[0] = c.subarray(budget);
        c = c.subarray(0, budget);
      } else this.queue.shift();
      budget -= c.length;
      this.queued -= c.length;
      const last = this.queue.length === 0 && this.ended && this.heldTrailers === undefined;
      if (last) this.finished = true;
      this.cb.writeResponseData(c, last);
      if (last) return;
    }
    if (this.paused && this.queued < THROTTLE_HIGH_WATERMARK / 2) {
      this.paused = false;
      this.cb.resumeUpstreamResponse();
    }
    if (this.queue.length > 0) {
      this.schedule();
      return;
    }
    if (!this.ended) return;
    this.finished = true;
    if (this.heldTrailers !== undefined) this.cb.writeResponseTrailers(this.heldTrailers);
    else this.cb.writeResponseData(EMPTY, true);
  }
}

function onThrottleTick(t: ResponseThrottle): void {
  t.tick();
}

function onDelayElapsed(f: FaultStreamFilter): void {
  f.onDelayElapsed();
}

export const faultFilterType: HttpFilterType = {
  typeName: FAULT_TYPE,
  createFactory(cfg: HttpFilterConfig, ctx: FilterContext): HttpFilterFactory {
    return new FaultFilterFactory(cfg.name, new CompiledFault(cfg.config as FaultConfig), ctx.statPrefix);
  },
  perRoute: { [FAULT_TYPE]: (c) => new CompiledFault(c as FaultConfig) },
};
