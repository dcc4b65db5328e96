// Tracing for an HCM with `tracing` set: the sampling decision (x-envoy-force-trace,
// x-client-trace-id, random and overall sampling, the route's overrides, an incoming sampled flag),
// B3 (x-b3-* and single `b3`) and W3C (traceparent/tracestate) extraction and propagation,
// x-envoy-decorator-operation, and export of finished spans as Zipkin v2 JSON to the provider's
// collector cluster in small batches. HCMs without `tracing` have no tracer and pay nothing; the
// request path only reads headers and writes a few; JSON is built when a sampled stream finishes.

import * as http from 'node:http';
import { randomBytes } from 'node:crypto';
import type { HcmTracingConfig, ZipkinConfig } from '../config/types';
import type { StreamHeaderObserver } from '../http/conn-manager';
import type { ActiveStream } from '../http/stream';
import type { HeaderMap } from '../http/headers';
import type { ClusterManager } from '../upstream/cluster-manager';

export interface Span {
  readonly traceId: string;
  readonly id: string;
  readonly parentId?: string;
  readonly sampled: boolean;
  operation: string;
  readonly startUs: number;
}

export interface ZipkinSpan {
  traceId: string;
  id: string;
  parentId?: string;
  name: string;
  kind: 'SERVER' | 'CLIENT';
  timestamp: number;
  duration: number;
  localEndpoint: { serviceName: string; ipv4?: string; ipv6?: string; port?: number };
  remoteEndpoint?: { ipv4?: string; ipv6?: string; port?: number };
  tags: Record<string, string>;
  shared?: boolean;
}

function hex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

const HEX = /^[0-9a-f]+$/;

interface Incoming {
  traceId: string;
  spanId: string;
  sampled?: boolean;
}

/** B3 multi-header, single `b3`, then W3C traceparent. */
export function extractContext(h: HeaderMap): Incoming | undefined {
  const tid = h.first('x-b3-traceid');
  const sid = h.first('x-b3-spanid');
  const sampledHdr = h.first('x-b3-sampled');
  const flags = h.first('x-b3-flags');
  const sampled = flags === '1' ? true : sampledHdr === '1' || sampledHdr === 'true' ? true : sampledHdr === '0' || sampledHdr === 'false' ? false : undefined;
  if (tid && sid && (tid.length === 16 || tid.length === 32) && sid.length === 16 && HEX.test(tid) && HEX.test(sid)) {
    return { traceId: tid, spanId: sid, ...(sampled !== undefined ? { sampled } : {}) };
  }
  const single = h.first('b3');
  if (single) {
    const [t, s, f] = single.split('-');
    if (t && s && (t.length === 16 || t.length === 32) && s.length === 16 && HEX.test(t) && HEX.test(s)) {
      return { traceId: t, spanId: s, ...(f === '1' || f === 'd' ? { sampled: true } : f === '0' ? { sampled: false } : {}) };
    }
  }
  const tp = h.first('traceparent');
  if (tp) {
    const m = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(tp);
    if (m && m[1] !== 'ff' && !/^0+$/.test(m[2]) && !/^0+$/.test(m[3])) {
      return { traceId: m[2], spanId: m[3], sampled: (parseInt(m[4], 16) & 1) === 1 };
    }
  }
  return undefined;
}

export type Direction = 'inbound' | 'outbound';

/** Zipkin spans waiting to go to the collector, posted in batches. */
export class ZipkinReporter {
  private pending: ZipkinSpan[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** spans posted, and batches the collector failed to take */
  sent = 0;
  failed = 0;

  constructor(
    private readonly config: ZipkinConfig,
    private readonly clusters: ClusterManager,
    private readonly batchSize = 5,
    private readonly flushMs = 1000,
  ) {}

  report(span: ZipkinSpan): void {
    this.pending.push(span);
    if (this.pending.length >= this.batchSize) this.flush();
    else if (this.timer === undefined) {
      this.timer = setTimeout(() => this.flush(), this.flushMs);
      this.timer.unref();
    }
  }

  flush(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.pending.length === 0) return;
    const spans = this.pending;
    this.pending = [];
    const host = this.clusters.get(this.config.collectorCluster)?.pickHost();
    if (!host) {
      this.failed++;
      return;
    }
    const body = JSON.stringify(spans);
    const req = http.request({
      host: host.address,
      port: host.port,
      method: 'POST',
      path: this.config.collectorEndpoint,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), host: this.config.collectorHostname ?? this.config.collectorCluster },
    });
    req.on('response', (res) => {
      if ((res.statusCode ?? 500) >= 300) this.failed++;
      else this.sent += spans.length;
      res.resume();
    });
    req.on('error', () => this.failed++);
    req.end(body);
  }
}

/** One HCM's tracer: a header observer and a completion hook. */
export class Tracer implements StreamHeaderObserver {
  constructor(
    private readonly config: HcmTracingConfig,
    private readonly direction: Direction,
    private readonly serviceName: string,
    private readonly reporter: ZipkinReporter | undefined,
    private readonly random: () => number = Math.random,
  ) {}

  private sample(s: ActiveStream, h: HeaderMap, incoming: Incoming | undefined): boolean {
    const rt = s.route?.config.tracing;
    const overall = rt?.overallSamplingPct ?? this.config.overallSamplingPct;
    let decided: boolean;
    if (h.has('x-envoy-force-trace') && s.internal) decided = true;
    else if (h.has('x-client-trace-id') && this.random() * 100 < (rt?.clientSamplingPct ?? this.config.clientSamplingPct)) decided = true;
    else if (incoming?.sampled !== undefined) return incoming.sampled;
    else decided = this.random() * 100 < (rt?.randomSamplingPct ?? this.config.randomSamplingPct);
    return decided && (overall >= 100 || this.random() * 100 < overall);
  }

  onRequestHeaders(s: ActiveStream, h: HeaderMap): void {
    const incoming = extractContext(h);
    const sampled = this.sample(s, h, incoming);
    const traceId = incoming?.traceId ?? (this.config.provider?.traceId128bit ? hex(16) : hex(8));
    const id = hex(8);
    const decorator = s.route?.config.decorator;
    const override = h.first('x-envoy-decorator-operation');
    // Inbound: a caller's x-envoy-decorator-operation names our span; outbound: the route's decorator.
    const operation = (this.direction === 'inbound' ? override : undefined) ?? decorator?.operation ?? (this.direction === 'inbound' ? 'ingress' : 'egress');
    s.span = { traceId, id, ...(incoming ? { parentId: incoming.spanId } : {}), sampled, operation, startUs: Date.now() * 1000 };
    // Propagate: B3 headers and traceparent name our span as the parent of the next hop.
    h.set('x-b3-traceid', traceId);
    h.set('x-b3-spanid', id);
    if (incoming) h.set('x-b3-parentspanid', incoming.spanId);
    else h.remove('x-b3-parentspanid');
    h.set('x-b3-sampled', sampled ? '1' : '0');
    h.remove('b3');
    h.set('traceparent', `00-${traceId.padStart(32, '0')}-${id}-${sampled ? '01' : '00'}`);
    if (this.direction === 'outbound' && decorator && decorator.propagate) h.set('x-envoy-decorator-operation', decorator.operation);
    else if (this.direction === 'inbound') h.remove('x-envoy-decorator-operation');
  }

  onResponseHeaders(s: ActiveStream, h: HeaderMap): void {
    // Inbound: tell the caller the operation name the route gave our span.
    const decorator = s.route?.config.decorator;
    if (this.direction === 'inbound' && decorator && decorator.propagate && s.span) h.set('x-envoy-decorator-operation', decorator.operation);
  }

  /** Completion hook: a sampled span goes to the collector. */
  readonly complete = (s: ActiveStream): void => {
    const span = s.span;
    if (!span || !span.sampled || !this.reporter) return;
    const nowUs = Date.now() * 1000;
    const tags: Record<string, string> = {
      'http.method': s.method,
      'http.url': `${s.secure ? 'https' : 'http'}://${s.authority}${s.path}`,
      'http.protocol': s.protocol,
      'http.status_code': String(s.responseCode),
      'response_flags': s.responseFlags === '' ? '-' : s.responseFlags,
      'request_size': String(s.bytesReceived),
      'response_size': String(s.bytesSent),
      component: 'proxy',
    };
    const rid = s.headers?.first('x-request-id');
    if (rid) tags.guid = rid;
    const ua = s.headers?.first('user-agent');
    if (ua) tags.user_agent = ua;
    if (s.cluster) tags.upstream_cluster = s.cluster.name;
    if (s.upstreamAddress) tags['upstream_address'] = `${s.upstreamAddress}:${s.upstreamPort ?? ''}`;
    if (s.responseCode >= 500 || s.responseCode === 0) tags.error = 'true';
    const z: ZipkinSpan = {
      traceId: span.traceId,
      id: span.id,
      ...(span.parentId ? { parentId: span.parentId } : {}),
      name: span.operation,
      kind: this.direction === 'inbound' ? 'SERVER' : 'CLIENT',
      timestamp: span.startUs,
      duration: Math.max(1, nowUs - span.startUs),
      localEndpoint: { serviceName: this.serviceName, ...endpoint(s.localAddress, s.localPort) },
      remoteEndpoint: endpoint(s.remoteAddress, s.remotePort),
      tags,
    };
    this.reporter.report(z);
  };
}

function endpoint(addr: string, port: number): { ipv4?: string; ipv6?: string; port?: number } {
  if (addr.startsWith('::ffff:')) addr = addr.slice(7);
  return addr.includes(':') ? { ipv6: addr, port } : { ipv4: addr, port };
}
