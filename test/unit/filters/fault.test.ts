// The fault filter's decisions against a fake stream: percentages (and their -percentage header
// caps), header faults, runtime overrides, conditions, max_active_faults and its stats, the delay
// timer and its cancellation.
import t from 'tap';
import type { FaultConfig } from '../../../src/config/filters/fault';
import { FilterCallbacks, FilterHeadersStatus, ResponseDataInterceptor, StreamFilter } from '../../../src/http/filter';
import { HeaderMap } from '../../../src/http/headers';
import { CompiledFault, FaultFilterFactory } from '../../../src/filters/fault';
import { buildHttpFilters } from '../../../src/filters';
import { Runtime } from '../../../src/router/route-table';

const KEYS: FaultConfig['runtime'] = {
  delayPercent: 'fault.http.delay.fixed_delay_percent',
  abortPercent: 'fault.http.abort.abort_percent',
  delayDuration: 'fault.http.delay.fixed_duration_ms',
  abortHttpStatus: 'fault.http.abort.http_status',
  abortGrpcStatus: 'fault.http.abort.grpc_status',
  maxActiveFaults: 'fault.http.max_active_faults',
  responseRateLimitPercent: 'fault.http.rate_limit.response_percent',
};
const ALL = { numerator: 100, denominator: 100 };

function fault(c: Partial<FaultConfig>): CompiledFault {
  return new CompiledFault({ upstreamCluster: '', headers: [], downstreamNodes: [], runtime: KEYS, disableDownstreamClusterStats: false, ...c });
}

interface Fake extends FilterCallbacks {
  replies: { status: number; body: string; flag: string; grpcStatus?: number }[];
  flags: string[];
  continued: number;
  done: boolean;
  interceptor?: ResponseDataInterceptor;
  written: [string, boolean][];
}

function stream(headers: string[] = [], opts: { runtime?: Record<string, number>; cluster?: string; perRoute?: unknown } = {}): Fake {
  const f: Fake = {
    route: undefined,
    requestHeaders: new HeaderMap([':method', 'GET', ':path', '/', ...headers]),
    method: 'GET',
    path: '/',
    authority: 'x',
    grpc: false,
    connection: { remoteAddress: '127.0.0.1', remotePort: 1, localAddress: '127.0.0.1', localPort: 2, secure: false },
    runtime: new Runtime(opts.runtime ?? {}),
    replies: [],
    flags: [],
    continued: 0,
    done: false,
    perFilterConfig: () => opts.perRoute,
    upstreamClusterName: () => opts.cluster ?? 'backend',
    sendLocalReply(status, body, _details, flag, _extra, _force, grpcStatus) {
      f.replies.push({ status, body, flag, ...(grpcStatus !== undefined ? { grpcStatus } : {}) });
      f.done = true;
    },
    continueDecoding() {
      f.continued++;
    },
    addResponseFlag(flag) {
      f.flags.push(flag);
    },
    get ended() {
      return f.done;
    },
    interceptResponseData(i) {
      f.interceptor = i;
    },
    writeResponseData(chunk, end) {
      f.written.push([chunk.toString(), end]);
      if (end) f.done = true;
    },
    writeResponseTrailers() {
      f.written.push(['<trailers>', true]);
      f.done = true;
    },
    pauseUpstreamResponse() {},
    resumeUpstreamResponse() {},
    written: [],
  };
  return f;
}

function run(factory: FaultFilterFactory, s: Fake): { filter: StreamFilter | undefined; status: FilterHeadersStatus | undefined } {
  const filter = factory.create(s);
  const status = filter?.decodeHeaders?.(s.requestHeaders, true);
  return { filter, status };
}

t.test('abort percentages: 0% never, 100% always, 30% about 30% (tolerance stated)', async (t) => {
  const never = new FaultFilterFactory('f', fault({ abort: { kind: 'http', httpStatus: 503, percentage: { numerator: 0, denominator: 100 } } }), 'in');
  const always = new FaultFilterFactory('f', fault({ abort: { kind: 'http', httpStatus: 503, percentage: ALL } }), 'in');
  const some = new FaultFilterFactory('f', fault({ abort: { kind: 'http', httpStatus: 503, percentage: { numerator: 300_000, denominator: 1_000_000 } } }), 'in');
  let n = 0;
  let neverHit = 0;
  for (let i = 0; i < 1000; i++) {
    const a = stream();
    if (run(never, a).status !== FilterHeadersStatus.Continue) neverHit++;
    const b = stream();
    if (run(always, b).status !== FilterHeadersStatus.StopIteration || b.replies[0].status !== 503) t.fail('100% must abort');
    const c = stream();
    if (run(some, c).status === FilterHeadersStatus.StopIteration) n++;
  }
  t.equal(neverHit, 0, '0% never aborts');
  // Binomial(1000, 0.3): sd 14.5; +- 75 is over 5 sd
  t.ok(n >= 225 && n <= 375, `${n} of 1000 aborted at 30%`);
  t.same(always.stats(), {
    'http.in.fault.delays_injected': 0,
    'http.in.fault.aborts_injected': 1000,
    'http.in.fault.active_faults': 1000,
    'http.in.fault.faults_overflow': 0,
    'http.in.fault.response_rl_injected': 0,
  });
});

t.test('no delay and no abort: no filter for the stream; per-route null disables', async (t) => {
  const f = new FaultFilterFactory('f', fault({}), 'in');
  t.equal(f.create(stream()), undefined);
  const g = new FaultFilterFactory('f', fault({ abort: { kind: 'http', httpStatus: 500, percentage: ALL } }), 'in');
  t.equal(g.create(stream([], { perRoute: null })), undefined, 'FilterConfig disabled');
  t.equal(g.create(stream([], { perRoute: fault({}) })), undefined, 'per-route config replaces the filter-level one');
  const s = stream([], { perRoute: fault({ abort: { kind: 'http', httpStatus: 404, percentage: ALL } }) });
  run(g, s);
  t.equal(s.replies[0].status, 404, 'the per-route abort');
});

t.test('header faults: status, gRPC status, percentage header capped by the config', async (t) => {
  const f = new FaultFilterFactory('f', fault({ abort: { kind: 'header', percentage: { numerator: 50, denominator: 100 } } }), 'in');
  // the -percentage header can only lower the configured 50%: 100 stays 50%, 0 is off
  let hits = 0;
  for (let i = 0; i < 400; i++) {
    const s = stream(['x-envoy-fault-abort-request', '429', 'x-envoy-fault-abort-request-percentage', '100']);
    run(f, s);
    if (s.replies.length > 0) hits++;
  }
  t.ok(hits > 130 && hits < 270, `${hits}/400 aborted: the header cannot raise the configured 50% (sd 10)`);
  for (let i = 0; i < 100; i++) {
    const s = stream(['x-envoy-fault-abort-request', '429', 'x-envoy-fault-abort-request-percentage', '0']);
    run(f, s);
    if (s.replies.length > 0) t.fail('percentage header 0 must not abort');
  }
  const all = new FaultFilterFactory('f', fault({ abort: { kind: 'header', percentage: ALL } }), 'in');
  let s = stream(['x-envoy-fault-abort-grpc-request', '7']);
  run(all, s);
  t.same(s.replies, [{ status: 200, body: 'fault filter abort', flag: 'FI', grpcStatus: 7 }], 'gRPC status: HTTP 200 with grpc-status');
  s = stream(['x-envoy-fault-abort-request', '503', 'x-envoy-fault-abort-grpc-request', '7']);
  run(all, s);
  t.same(s.replies, [{ status: 503, body: 'fault filter abort', flag: 'FI' }], 'an HTTP status wins over a gRPC one');
  s = stream(['x-envoy-fault-abort-request', 'abc']);
  t.equal(run(all, s).status, FilterHeadersStatus.Continue, 'a bad header is no fault');
  s = stream();
  t.equal(run(all, s).status, FilterHeadersStatus.Continue, 'no header, no fault');
});

t.test('runtime overrides the configured percentages, status and limit', async (t) => {
  const f = new FaultFilterFactory('f', fault({ abort: { kind: 'http', httpStatus: 503, percentage: ALL } }), 'in');
  let s = stream([], { runtime: { 'fault.http.abort.abort_percent': 0 } });
  t.equal(run(f, s).status, FilterHeadersStatus.Continue, 'abort_percent 0');
  s = stream([], { runtime: { 'fault.http.abort.http_status': 418 } });
  run(f, s);
  t.equal(s.replies[0].status, 418, 'http_status from runtime');
  const g = new FaultFilterFactory('f', fault({ abort: { kind: 'grpc', grpcStatus: 14, percentage: ALL } }), 'in');
  s = stream([], { runtime: { 'fault.http.abort.grpc_status': 8 } });
  run(g, s);
  t.equal(s.replies[0].grpcStatus, 8);
  const h = new FaultFilterFactory('f', fault({ abort: { kind: 'http', httpStatus: 503, percentage: ALL } }), 'in');
  s = stream([], { runtime: { 'fault.http.max_active_faults': 0 } });
  t.equal(run(h, s).status, FilterHeadersStatus.Continue, 'max_active_faults 0 from runtime');
  t.equal(h.counters.faultsOverflow, 1);
});

t.test('conditions: headers, upstream_cluster, downstream_nodes', async (t) => {
  const abort = { kind: 'http' as const, httpStatus: 500, percentage: ALL };
  const byHeader = new FaultFilterFactory('f', fault({ abort, headers: [{ name: 'end-user', invert: false, treatMissingAsEmpty: false, kind: 'string', match: { kind: 'exact', value: 'jason', ignoreCase: false } }] }), 'in');
  t.equal(run(byHeader, stream(['end-user', 'jason'])).status, FilterHeadersStatus.StopIteration);
  t.equal(run(byHeader, stream(['end-user', 'bob'])).status, FilterHeadersStatus.Continue);
  const byCluster = new FaultFilterFactory('f', fault({ abort, upstreamCluster: 'reviews' }), 'in');
  t.equal(run(byCluster, stream([], { cluster: 'reviews' })).status, FilterHeadersStatus.StopIteration);
  t.equal(run(byCluster, stream([], { cluster: 'ratings' })).status, FilterHeadersStatus.Continue);
  const byNode = new FaultFilterFactory('f', fault({ abort, downstreamNodes: ['n1'] }), 'in');
  t.equal(run(byNode, stream(['x-envoy-downstream-service-node', 'n1'])).status, FilterHeadersStatus.StopIteration);
  t.equal(run(byNode, stream(['x-envoy-downstream-service-node', 'n2'])).status, FilterHeadersStatus.Continue);
  t.equal(run(byNode, stream()).status, FilterHeadersStatus.Continue);
});

t.test('delay: the timer continues the stream; onDestroy cancels it; max_active_faults', async (t) => {
  const f = new FaultFilterFactory('f', fault({ delay: { kind: 'fixed', fixedDelayMs: 20, percentage: ALL }, maxActiveFaults: 1 }), 'in');
  const a = stream();
  const ra = run(f, a);
  t.equal(ra.status, FilterHeadersStatus.StopIteration);
  t.same(a.flags, ['DI']);
  t.equal(f.counters.activeFaults, 1);
  const b = stream();
  t.equal(run(f, b).status, FilterHeadersStatus.Continue, 'over max_active_faults: not delayed');
  t.equal(f.counters.faultsOverflow, 1);
  await new Promise<void>((resolve) => {
    const check = () => (a.continued > 0 ? resolve() : setTimeout(check, 5));
    check();
  });
  t.equal(a.continued, 1, 'continued after the delay');
  t.equal(f.counters.activeFaults, 0, 'the fault is no longer active');
  ra.filter!.onDestroy!();
  t.equal(f.counters.activeFaults, 0, 'onDestroy after release does not release twice');

  const g = new FaultFilterFactory('f', fault({ delay: { kind: 'fixed', fixedDelayMs: 30, percentage: ALL } }), 'in');
  const c = stream();
  const rc = run(g, c);
  rc.filter!.onDestroy!();
  t.equal(g.counters.activeFaults, 0, 'destroyed while delayed: released');
  await new Promise((r) => setTimeout(r, 60)); // past the delay: the cancelled timer must not fire
  t.equal(c.continued, 0, 'a destroyed stream is never continued');

  const h = new FaultFilterFactory('f', fault({ delay: { kind: 'header', percentage: ALL } }), 'in');
  t.equal(run(h, stream()).status, FilterHeadersStatus.Continue, 'header delay without the header');
  t.equal(run(h, stream(['x-envoy-fault-delay-request', '0'])).status, FilterHeadersStatus.Continue, 'a 0 ms delay is none');
  const d = stream(['x-envoy-fault-delay-request', '10']);
  const rd = run(h, d);
  t.equal(rd.status, FilterHeadersStatus.StopIteration);
  rd.filter!.onDestroy!();
  const rt = new FaultFilterFactory('f', fault({ delay: { kind: 'fixed', fixedDelayMs: 5000, percentage: ALL } }), 'in');
  const e = stream([], { runtime: { 'fault.http.delay.fixed_duration_ms': 0 } });
  t.equal(run(rt, e).status, FilterHeadersStatus.Continue, 'fixed_duration_ms 0 from runtime: no delay');
});

t.test('x-envoy-downstream-service-cluster: its runtime keys replace the generic ones; its own stats', async (t) => {
  const abort = { kind: 'http' as const, httpStatus: 503, percentage: ALL };
  const f = new FaultFilterFactory('f', fault({ abort }), 'in');
  let s = stream(['x-envoy-downstream-service-cluster', 'web'], { runtime: { 'fault.http.web.abort.abort_percent': 0, 'fault.http.abort.abort_percent': 100 } });
  t.equal(run(f, s).status, FilterHeadersStatus.Continue, 'fault.http.web.abort.abort_percent 0');
  s = stream(['x-envoy-downstream-service-cluster', 'web'], { runtime: { 'fault.http.abort.abort_percent': 0 } });
  t.equal(run(f, s).status, FilterHeadersStatus.StopIteration, 'the generic key does not apply to a downstream cluster');
  s = stream(['x-envoy-downstream-service-cluster', 'web'], { runtime: { 'fault.http.web.abort.http_status': 504, 'fault.http.abort.http_status': 502 } });
  run(f, s);
  t.equal(s.replies[0].status, 504);
  s = stream([], { runtime: { 'fault.http.abort.http_status': 1000 } });
  run(f, s);
  t.equal(s.replies[0].status, 503, 'an out-of-range runtime status keeps the configured one');
  t.equal(f.stats()['http.in.fault.web.aborts_injected'], 2);
  t.equal(f.stats()['http.in.fault.aborts_injected'], 3);
  const quiet = new FaultFilterFactory('f', fault({ abort, disableDownstreamClusterStats: true }), 'in');
  run(quiet, stream(['x-envoy-downstream-service-cluster', 'web']));
  t.equal(quiet.stats()['http.in.fault.web.aborts_injected'], undefined, 'disable_downstream_cluster_stats');
});

t.test('response_rate_limit: the body leaves in slices; the fault stays active until the stream ends', async (t) => {
  const f = new FaultFilterFactory('f', fault({ responseRateLimit: { kind: 'fixed', limitKbps: 1, percentage: ALL } }), 'in');
  const s = stream();
  const { filter, status } = run(f, s);
  t.equal(status, FilterHeadersStatus.Continue, 'the request goes on');
  t.ok(s.interceptor, 'the response body is intercepted');
  t.equal(f.counters.responseRlInjected, 1);
  t.equal(f.counters.activeFaults, 1);
  // 1 KiB/s: 64-byte slices every 62.5 ms
  s.interceptor!.data(Buffer.alloc(100, 'a'), false);
  s.interceptor!.data(Buffer.alloc(28, 'b'), true);
  await new Promise<void>((resolve) => {
    const check = () => (s.done ? resolve() : setTimeout(check, 5));
    check();
  });
  t.same(
    s.written.map(([c, e]) => [c.length, e]),
    [
      [64, false],
      [36, false],
      [28, true],
    ],
    'two 64-byte slices, the last one marks the end',
  );
  filter!.onDestroy!();
  t.equal(f.counters.activeFaults, 0);

  const h = new FaultFilterFactory('f', fault({ responseRateLimit: { kind: 'header', percentage: ALL } }), 'in');
  const none = stream();
  run(h, none);
  t.equal(none.interceptor, undefined, 'header limit without the header: nothing');
  const hs = stream(['x-envoy-fault-throughput-response', '2']);
  run(h, hs);
  t.ok(hs.interceptor);
  hs.interceptor!.data(Buffer.from('xy'), false);
  hs.interceptor!.trailers(new HeaderMap(['grpc-status', '0']));
  await new Promise<void>((resolve) => {
    const check = () => (hs.done ? resolve() : setTimeout(check, 5));
    check();
  });
  t.same(
    hs.written,
    [
      ['xy', false],
      ['<trailers>', true],
    ],
    'the trailers follow the body',
  );
});

t.test('a filter disabled in the HCM acts only where a route enables it (HttpFilter.disabled)', async (t) => {
  const cfg: FaultConfig = { abort: { kind: 'http', httpStatus: 500, percentage: ALL }, upstreamCluster: '', headers: [], downstreamNodes: [], runtime: KEYS, disableDownstreamClusterStats: false };
  const [f] = buildHttpFilters([{ name: 'envoy.filters.http.fault', typeName: 'envoy.extensions.filters.http.fault.v3.HTTPFault', config: cfg, isOptional: false, disabled: true }], { statPrefix: 'in' });
  t.equal(f.create(stream()), undefined, 'no per-route config: off');
  t.equal(f.create(stream([], { perRoute: null })), undefined, 'per-route disabled: off');
  const s = stream([], { perRoute: new CompiledFault({ ...cfg, abort: { kind: 'http', httpStatus: 418, percentage: ALL } }) });
  f.create(s)!.decodeHeaders!(s.requestHeaders, true);
  t.equal(s.replies[0].status, 418, 'enabled by the route');
  t.equal(f.stats!()['http.in.fault.aborts_injected'], 1, 'stats still reach the admin');
});
