// The fault and CORS HTTP filters and request mirroring, as istiod emits them (empty filter config
// in the HCM, the real config per route), through keel to real upstreams on loopback: delays that
// hold the request (and its body) then forward it, aborts at 100% and at a percentage (checked
// statistically), header-controlled faults, max_active_faults overflow, gRPC aborts as trailers-only
// responses, CORS preflight and actual requests, and shadow copies that never touch the main request.
import t from 'tap';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type * as http from 'node:http';
import { performance } from 'node:perf_hooks';
import { Pool, request } from 'undici';
import { ActiveStream } from '../../src/http/stream';
import { MIRROR_STATS, type MirrorStats } from '../../src/router/mirror';
import { cluster, deadPort, startKeel, startUpstream, type RunningKeel } from '../helpers/keel';
import { waitUntil } from '../helpers/wait';

// Every finished stream's status and Envoy response flags (not visible on the wire).
const finished: { path: string; code: number; flags: string; details: string }[] = [];
const proto = ActiveStream.prototype as unknown as { finish(this: ActiveStream): void };
const origFinish = proto.finish;
proto.finish = function (this: ActiveStream) {
  finished.push({ path: this.path, code: this.responseCode, flags: this.responseFlags, details: this.responseCodeDetails });
  origFinish.call(this);
};
t.teardown(() => {
  proto.finish = origFinish;
});
const flagsOf = (path: string): string[] => finished.filter((f) => f.path === path).map((f) => f.flags);

const FAULT = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault';
const CORS = 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors';
const CORS_POLICY = 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy';

/** Istio's filter list: fault and cors with empty config (unless `faultConfig` is given), then the router. */
function keelYaml(routes: string, clusters: string, faultConfig = '{}', vhExtra = ''): string {
  return `
static_resources:
  listeners:
  - name: test
    address:
      socket_address: { address: 127.0.0.1, port_value: 0 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
          route_config:
            name: test
            virtual_hosts:
            - name: a
              domains: ["*"]
${vhExtra}
              routes:
${routes}
          http_filters:
          - name: envoy.filters.http.fault
            typed_config: { "@type": "${FAULT}", ${faultConfig.slice(1, -1)} }
          - name: envoy.filters.http.cors
            typed_config: { "@type": "${CORS}" }
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
${clusters}
`;
}

/** A route on `prefix` to cluster u with a per-route fault config (YAML flow map), Istio style. */
function faultRoute(prefix: string, fault: string, cluster = 'u'): string {
  return `              - match: { prefix: ${prefix} }
                route: { cluster: ${cluster}, timeout: 30s }
                typed_per_filter_config:
                  envoy.filters.http.fault: { "@type": "${FAULT}", ${fault.slice(1, -1)} }`;
}

const MILLION = (pct: number) => `{ numerator: ${pct * 10_000}, denominator: MILLION }`;

function faultStats(keel: RunningKeel): Record<string, number> {
  return keel.server.listeners[0].httpFilterStats();
}

const until = (cond: () => boolean, what: string, ms = 5000): Promise<void> => waitUntil(cond, what, ms);

t.test('fault delay: held for at least the delay (body too), then forwarded; DI; stats', async (t) => {
  const up = await startUpstream('u');
  const dead = await deadPort();
  const keel = await startKeel(
    keelYaml(
      [
        faultRoute('/delayed', `{ delay: { fixed_delay: 0.3s, percentage: ${MILLION(100)} } }`),
        faultRoute('/to-dead', `{ delay: { fixed_delay: 0.01s, percentage: ${MILLION(100)} } }`, 'dead'),
        faultRoute('/', '{}'),
      ].join('\n'),
      cluster('u', up.port) + cluster('dead', dead),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const t0 = performance.now();
  const r = await request(`${keel.url}/delayed/x`, { method: 'POST', body: 'payload during the delay' });
  const elapsed = performance.now() - t0;
  t.equal(r.statusCode, 200);
  const body = JSON.parse(await r.body.text());
  t.equal(body.body, 'payload during the delay', 'the body held during the delay reaches the upstream');
  t.ok(elapsed >= 295, `took at least the 300 ms delay (${elapsed.toFixed(0)} ms)`);
  t.ok(elapsed < 10_000, 'and not forever');
  t.same(flagsOf('/delayed/x'), ['DI']);
  const st = faultStats(keel);
  t.equal(st['http.inbound.fault.delays_injected'], 1);
  t.equal(st['http.inbound.fault.aborts_injected'], 0);
  t.equal(st['http.inbound.fault.active_faults'], 0, 'the active fault is released once the request goes on');

  // a route whose per-route HTTPFault has neither delay nor abort: nothing happens
  const plain = await request(`${keel.url}/plain`);
  t.equal(plain.statusCode, 200);
  await plain.body.text();
  t.same(flagsOf('/plain'), ['']);
  t.equal(up.requests.length, 2);

  const failed = await request(`${keel.url}/to-dead`);
  t.equal(failed.statusCode, 503, 'a delayed request whose upstream refuses');
  await failed.body.text();
  t.same(flagsOf('/to-dead'), ['UF,DI'], 'keeps DI next to the failure flag, in Envoy order');
});

t.test('fault delay then exhausted retries: the response keeps DI beside URX', async (t) => {
  const up = await startUpstream('u', (_req, res) => {
    res.writeHead(503, { 'content-type': 'text/plain' });
    res.end('busy');
  });
  const route = `              - match: { prefix: /retried }
                route: { cluster: u, timeout: 30s, retry_policy: { retry_on: 5xx, num_retries: 1, retry_back_off: { base_interval: 0.001s } } }
                typed_per_filter_config:
                  envoy.filters.http.fault: { "@type": "${FAULT}", delay: { fixed_delay: 0.01s, percentage: ${MILLION(100)} } }`;
  const keel = await startKeel(keelYaml(route, cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/retried`);
  t.equal(r.statusCode, 503, "the last attempt's 503 is the answer");
  await r.body.text();
  t.equal(up.requests.length, 2, 'the first attempt and one retry reached the upstream');
  t.same(flagsOf('/retried'), ['DI,URX'], 'DI from the fault filter survives the retry decision');
});

t.test('fault delay on HTTP/2: the body sent during the delay is forwarded whole', async (t) => {
  const up = await startUpstream('u');
  const keel = await startKeel(keelYaml(faultRoute('/', `{ delay: { fixed_delay: 0.2s, percentage: { numerator: 100 } } }`), cluster('u', up.port)));
  const client = http2.connect(keel.url);
  t.teardown(async () => {
    client.close();
    await keel.stop();
    await up.close();
  });
  const body = Buffer.alloc(200_000, 'q');
  const t0 = performance.now();
  const res = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const s = client.request({ ':method': 'PUT', ':path': '/h2' });
    let status = 0;
    let text = '';
    s.on('response', (h) => (status = Number(h[':status'])));
    s.setEncoding('utf8');
    s.on('data', (d: string) => (text += d));
    s.on('end', () => resolve({ status, text }));
    s.on('error', reject);
    s.write(body.subarray(0, 100_000));
    setImmediate(() => s.end(body.subarray(100_000)));
  });
  const ms = performance.now() - t0;
  t.equal(res.status, 200);
  t.equal(JSON.parse(res.text).body.length, body.length, 'all of the body reached the upstream');
  t.ok(ms >= 195, `held for the 200 ms delay (${ms.toFixed(0)} ms)`);
  t.same(flagsOf('/h2'), ['DI']);
});

t.test('fault abort at 100%: 503 "fault filter abort", FI, upstream never reached', async (t) => {
  const up = await startUpstream('u');
  const keel = await startKeel(keelYaml(faultRoute('/', `{ abort: { http_status: 503, percentage: ${MILLION(100)} } }`), cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  for (let i = 0; i < 3; i++) {
    const r = await request(`${keel.url}/abort`);
    t.equal(r.statusCode, 503);
    t.equal(await r.body.text(), 'fault filter abort');
    t.equal(r.headers['content-type'], 'text/plain');
  }
  t.equal(up.requests.length, 0);
  t.same(flagsOf('/abort'), ['FI', 'FI', 'FI']);
  t.equal(faultStats(keel)['http.inbound.fault.aborts_injected'], 3);
  t.equal(faultStats(keel)['http.inbound.fault.active_faults'], 0);
});

t.test('fault abort at 25% over 1000 requests, and delay + abort together', async (t) => {
  const up = await startUpstream('u');
  const keel = await startKeel(
    keelYaml(
      [
        faultRoute('/quarter', `{ abort: { http_status: 500, percentage: ${MILLION(25)} } }`),
        faultRoute('/both', `{ delay: { fixed_delay: 0.05s, percentage: { numerator: 100 } }, abort: { http_status: 429, percentage: { numerator: 100 } } }`),
      ].join('\n'),
      cluster('u', up.port),
    ),
  );
  const pool = new Pool(keel.url, { connections: 8 });
  t.teardown(async () => {
    await pool.close();
    await keel.stop();
    await up.close();
  });
  const N = 1000;
  let aborted = 0;
  let passed = 0;
  for (let batch = 0; batch < N / 50; batch++) {
    const rs = await Promise.all(
      Array.from({ length: 50 }, async () => {
        const r = await pool.request({ path: '/quarter', method: 'GET' });
        await r.body.text();
        return r.statusCode;
      }),
    );
    for (const s of rs) {
      if (s === 500) aborted++;
      else if (s === 200) passed++;
    }
  }
  t.equal(aborted + passed, N, 'every answer is the abort or the upstream');
  // Binomial(1000, 0.25): mean 250, sd 13.7; 250 +- 70 is more than 5 sd.
  t.ok(aborted >= 180 && aborted <= 320, `${aborted} of ${N} aborted (expected 250 +- 70)`);
  t.equal(up.requests.length, passed, 'only the requests not aborted reach the upstream');

  const r = await request(`${keel.url}/both`);
  t.equal(r.statusCode, 429, 'a delay followed by an abort');
  t.equal(await r.body.text(), 'fault filter abort');
  t.same(flagsOf('/both'), ['DI,FI']);
});

t.test('header-controlled faults, only where the config enables them; per-route config replaces the filter-level one', async (t) => {
  const up = await startUpstream('u');
  const filterLevel = `{ delay: { header_delay: {}, percentage: { numerator: 100 } }, abort: { header_abort: {}, percentage: { numerator: 100 } } }`;
  const keel = await startKeel(
    keelYaml(
      [
        faultRoute('/fixed', `{ abort: { http_status: 502, percentage: { numerator: 0 } } }`),
        `              - match: { prefix: /off }
                route: { cluster: u }
                typed_per_filter_config:
                  envoy.filters.http.fault: { "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true }`,
        `              - match: { prefix: / }
                route: { cluster: u }`,
      ].join('\n'),
      cluster('u', up.port),
      filterLevel,
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const get = async (path: string, headers: Record<string, string> = {}) => {
    const t0 = performance.now();
    const r = await request(`${keel.url}${path}`, { headers });
    const text = await r.body.text();
    return { status: r.statusCode, text, ms: performance.now() - t0 };
  };
  let r = await get('/h', { 'x-envoy-fault-abort-request': '418' });
  t.equal(r.status, 418, 'x-envoy-fault-abort-request');
  t.equal(r.text, 'fault filter abort');
  r = await get('/h', { 'x-envoy-fault-abort-request': '418', 'x-envoy-fault-abort-request-percentage': '0' });
  t.equal(r.status, 200, 'the -percentage header (0) turns the abort off');
  r = await get('/h', { 'x-envoy-fault-abort-request': '99' });
  t.equal(r.status, 200, 'an out-of-range status is no abort');
  r = await get('/h', { 'x-envoy-fault-delay-request': '200' });
  t.equal(r.status, 200);
  t.ok(r.ms >= 195, `x-envoy-fault-delay-request: 200 held the request ${r.ms.toFixed(0)} ms`);
  r = await get('/h');
  t.equal(r.status, 200, 'no fault headers, no fault');
  r = await get('/fixed', { 'x-envoy-fault-abort-request': '418' });
  t.equal(r.status, 200, 'per-route config (fixed abort at 0%) replaces the header faults');
  r = await get('/off', { 'x-envoy-fault-abort-request': '418' });
  t.equal(r.status, 200, 'FilterConfig disabled: no faults on this route');
  const st = faultStats(keel);
  t.equal(st['http.inbound.fault.aborts_injected'], 1);
  t.equal(st['http.inbound.fault.delays_injected'], 1);
});

t.test('fault conditions: headers matchers, upstream_cluster', async (t) => {
  const up = await startUpstream('u');
  const keel = await startKeel(
    keelYaml(
      [
        faultRoute('/jason', `{ abort: { http_status: 500, percentage: { numerator: 100 } }, headers: [{ name: end-user, string_match: { exact: jason } }] }`),
        faultRoute('/other-cluster', `{ abort: { http_status: 500, percentage: { numerator: 100 } }, upstream_cluster: nope }`),
        faultRoute('/this-cluster', `{ abort: { http_status: 500, percentage: { numerator: 100 } }, upstream_cluster: u }`),
      ].join('\n'),
      cluster('u', up.port),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const status = async (path: string, headers: Record<string, string> = {}) => {
    const r = await request(`${keel.url}${path}`, { headers });
    await r.body.text();
    return r.statusCode;
  };
  t.equal(await status('/jason', { 'end-user': 'jason' }), 500, 'matching header: aborted');
  t.equal(await status('/jason', { 'end-user': 'bob' }), 200, 'other user: not aborted');
  t.equal(await status('/jason'), 200, 'no header: not aborted');
  t.equal(await status('/other-cluster'), 200, 'upstream_cluster names another cluster');
  t.equal(await status('/this-cluster'), 500, 'upstream_cluster names this route’s cluster');
});

t.test('max_active_faults: over the limit the request is not faulted (faults_overflow)', async (t) => {
  const up = await startUpstream('u');
  const keel = await startKeel(keelYaml(faultRoute('/', `{ delay: { fixed_delay: 30s, percentage: { numerator: 100 } }, max_active_faults: 1 }`), cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  // the first request on a raw socket, so the test can drop the connection while it is held
  const sock = net.connect(keel.port, '127.0.0.1');
  let firstAnswered = false;
  sock.on('data', () => (firstAnswered = true));
  sock.on('error', () => {});
  sock.write('GET /held HTTP/1.1\r\nhost: x\r\n\r\n');
  await until(() => faultStats(keel)['http.inbound.fault.active_faults'] === 1, 'the first request to hold the active fault');
  const second = await request(`${keel.url}/free`);
  t.equal(second.statusCode, 200, 'the second request is not delayed: it goes straight upstream');
  await second.body.text();
  t.notOk(firstAnswered, 'while the first is still held by its 30 s delay');
  let st = faultStats(keel);
  t.equal(st['http.inbound.fault.faults_overflow'], 1);
  t.equal(st['http.inbound.fault.delays_injected'], 1);
  sock.resetAndDestroy(); // RST: a half-close (FIN) lets keel finish the response first
  await until(() => faultStats(keel)['http.inbound.fault.active_faults'] === 0, 'the cancelled request to release its fault (timer cancelled in onDestroy)');
  st = faultStats(keel);
  t.equal(st['http.inbound.fault.active_faults'], 0);
  t.equal(up.requests.length, 1, 'the cancelled delayed request never went upstream');
});

t.test('response_rate_limit: the body arrives whole, no faster than the limit; header-controlled too', async (t) => {
  const big = 'r'.repeat(40 * 1024);
  const up = await startUpstream('u', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(big);
  });
  const keel = await startKeel(
    keelYaml(
      [
        faultRoute('/slow', `{ response_rate_limit: { fixed_limit: { limit_kbps: 64 }, percentage: { numerator: 100 } } }`),
        `              - match: { prefix: / }
                route: { cluster: u }`,
      ].join('\n'),
      cluster('u', up.port),
      `{ response_rate_limit: { header_limit: {}, percentage: { numerator: 100 } } }`,
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  let t0 = performance.now();
  let r = await request(`${keel.url}/slow`);
  let text = await r.body.text();
  let ms = performance.now() - t0;
  t.equal(r.statusCode, 200);
  t.equal(text, big, 'the whole body');
  // 64 KiB/s in 4 KiB slices every 62.5 ms, the first at once: 40 KiB take at least 9 * 62.5 ms
  t.ok(ms >= 550, `40 KiB at 64 KiB/s took ${ms.toFixed(0)} ms (at least 562 expected)`);
  let st = faultStats(keel);
  t.equal(st['http.inbound.fault.response_rl_injected'], 1);
  await until(() => faultStats(keel)['http.inbound.fault.active_faults'] === 0, 'the throttled stream to release its fault');

  // per-route config replaces the filter-level header limit: /slow ignores the header; other routes honour it
  t0 = performance.now();
  r = await request(`${keel.url}/other`, { headers: { 'x-envoy-fault-throughput-response': '80' } });
  text = await r.body.text();
  ms = performance.now() - t0;
  t.equal(text, big);
  t.ok(ms >= 400, `x-envoy-fault-throughput-response: 80 (5 KiB slices, 8 of them) took ${ms.toFixed(0)} ms (at least 437 expected)`);
  r = await request(`${keel.url}/other`);
  t.equal(await r.body.text(), big, 'no header: not throttled');
  st = faultStats(keel);
  t.equal(st['http.inbound.fault.response_rl_injected'], 2);
  t.same(flagsOf('/slow'), [''], 'no response flag for a throttled response');
});

t.test('gRPC abort: a trailers-only response with the configured grpc-status', async (t) => {
  const up = await startUpstream('u');
  const keel = await startKeel(
    keelYaml(
      [faultRoute('/pkg.Svc/Grpc', `{ abort: { grpc_status: 14, percentage: ${MILLION(100)} } }`), faultRoute('/pkg.Svc/Http', `{ abort: { http_status: 503, percentage: ${MILLION(100)} } }`)].join('\n'),
      cluster('u', up.port),
    ),
  );
  const client = http2.connect(keel.url);
  t.teardown(async () => {
    client.close();
    await keel.stop();
    await up.close();
  });
  const call = (path: string) =>
    new Promise<{ headers: http2.IncomingHttpHeaders; ended: boolean; data: number }>((resolve, reject) => {
      const s = client.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
      let headers: http2.IncomingHttpHeaders = {};
      let data = 0;
      s.on('response', (h) => (headers = h));
      s.on('data', (d: Buffer) => (data += d.length));
      s.on('end', () => resolve({ headers, ended: true, data }));
      s.on('error', reject);
      s.end(Buffer.from([0, 0, 0, 0, 0]));
    });
  const g = await call('/pkg.Svc/Grpc');
  t.equal(g.headers[':status'], 200);
  t.equal(g.headers['grpc-status'], '14', 'the configured gRPC status');
  t.equal(decodeURIComponent(String(g.headers['grpc-message'])), 'fault filter abort');
  t.equal(g.data, 0, 'no body: trailers-only');
  const h = await call('/pkg.Svc/Http');
  t.equal(h.headers[':status'], 200);
  t.equal(h.headers['grpc-status'], '14', 'an HTTP 503 abort of a gRPC call maps to UNAVAILABLE');
  t.equal(up.requests.length, 0);
});

t.test('CORS: preflight answered locally, actual responses decorated, other origins untouched', async (t) => {
  const up = await startUpstream('u');
  const policy = (extra: string) => `{ "@type": "${CORS_POLICY}", ${extra} }`;
  const keel = await startKeel(
    keelYaml(
      [
        `              - match: { prefix: /api }
                route: { cluster: u }
                typed_per_filter_config:
                  envoy.filters.http.cors: ${policy(`allow_origin_string_match: [{ exact: "https://a.example" }, { safe_regex: { regex: "https://[a-z]+\\\\.b\\\\.example" } }], allow_headers: "x-a,content-type", expose_headers: "x-upstream", max_age: "600", allow_credentials: true`)}`,
        `              - match: { prefix: /off }
                route: { cluster: u }
                typed_per_filter_config:
                  envoy.filters.http.cors: ${policy(`allow_origin_string_match: [{ exact: "https://a.example" }], filter_enabled: { default_value: { numerator: 0 } }`)}`,
        `              - match: { prefix: /strict }
                route: { cluster: u }
                typed_per_filter_config:
                  envoy.filters.http.cors: ${policy(`allow_origin_string_match: [{ exact: "https://a.example" }], forward_not_matching_preflights: false`)}`,
        `              - match: { prefix: /pna }
                route: { cluster: u }
                typed_per_filter_config:
                  envoy.filters.http.cors: ${policy(`allow_origin_string_match: [{ exact: "https://a.example" }], allow_private_network_access: true`)}`,
        `              - match: { prefix: /legacy }
                route: { cluster: u, cors: { allow_origin_string_match: [{ exact: "https://old.example" }], allow_methods: DELETE } }`,
        `              - match: { prefix: /any }
                route: { cluster: u }
                typed_per_filter_config:
                  envoy.filters.http.cors: ${policy(`allow_origin_string_match: [{ safe_regex: { regex: ".*" } }]`)}`,
        `              - match: { prefix: / }
                route: { cluster: u }`,
      ].join('\n'),
      cluster('u', up.port),
      '{}',
      `              typed_per_filter_config:
                envoy.filters.http.cors: ${policy(`allow_methods: "GET,POST,PUT"`)}`,
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const send = async (method: string, path: string, headers: Record<string, string>) => {
    const r = await request(`${keel.url}${path}`, { method, headers });
    const text = await r.body.text();
    return { status: r.statusCode, headers: r.headers, text };
  };
  const preflight = { origin: 'https://a.example', 'access-control-request-method': 'PUT' };

  let r = await send('OPTIONS', '/api/x', preflight);
  t.equal(r.status, 200, 'preflight answered');
  t.equal(r.headers['access-control-allow-origin'], 'https://a.example');
  t.equal(r.headers['access-control-allow-methods'], 'GET,POST,PUT', 'allow_methods from the virtual host level (merged)');
  t.equal(r.headers['access-control-allow-headers'], 'x-a,content-type');
  t.equal(r.headers['access-control-max-age'], '600');
  t.equal(r.headers['access-control-allow-credentials'], 'true');
  t.equal(r.headers['access-control-expose-headers'], undefined, 'expose headers only on actual responses');
  t.equal(r.text, '');
  t.equal(up.requests.length, 0, 'the preflight never reached the upstream');

  r = await send('OPTIONS', '/api/x', { ...preflight, origin: 'https://x.b.example' });
  t.equal(r.headers['access-control-allow-origin'], 'https://x.b.example', 'regex origin');

  r = await send('GET', '/api/x', { origin: 'https://a.example' });
  t.equal(r.status, 200);
  t.equal(JSON.parse(r.text).upstream, 'u', 'the actual request went upstream');
  t.equal(r.headers['access-control-allow-origin'], 'https://a.example');
  t.equal(r.headers['access-control-allow-credentials'], 'true');
  t.equal(r.headers['access-control-expose-headers'], 'x-upstream');

  r = await send('GET', '/api/x', { origin: 'https://evil.example' });
  t.equal(r.status, 200, 'another origin: the request passes');
  t.equal(r.headers['access-control-allow-origin'], undefined, 'with no CORS headers');
  t.equal(r.headers['access-control-allow-credentials'], undefined);

  const before = up.requests.length;
  r = await send('OPTIONS', '/api/x', { ...preflight, origin: 'https://evil.example' });
  t.equal(up.requests.length, before + 1, 'a preflight from another origin is forwarded (forward_not_matching_preflights default)');
  t.equal(r.headers['access-control-allow-origin'], undefined);

  r = await send('OPTIONS', '/strict/x', { ...preflight, origin: 'https://evil.example' });
  t.equal(r.status, 200);
  t.equal(up.requests.length, before + 1, 'forward_not_matching_preflights: false answers it locally');
  t.equal(r.headers['access-control-allow-origin'], undefined);

  r = await send('GET', '/off/x', { origin: 'https://a.example' });
  t.equal(r.headers['access-control-allow-origin'], undefined, 'filter_enabled 0%: no CORS');

  r = await send('GET', '/any/x', { origin: 'https://whoever.example' });
  t.equal(r.headers['access-control-allow-origin'], 'https://whoever.example', 'a matcher that matches * allows every origin');

  r = await send('OPTIONS', '/pna/x', { ...preflight, 'access-control-request-private-network': 'true' });
  t.equal(r.headers['access-control-allow-private-network'], 'true', 'allow_private_network_access on a preflight that asks');
  r = await send('OPTIONS', '/api/x', { ...preflight, 'access-control-request-private-network': 'true' });
  t.equal(r.headers['access-control-allow-private-network'], undefined, 'not where the policy does not allow it');

  r = await send('GET', '/nocors', { origin: 'https://a.example' });
  t.equal(r.headers['access-control-allow-origin'], undefined, 'a route without a policy gets the virtual host one, which lists no origins');

  r = await send('OPTIONS', '/legacy/x', { ...preflight, origin: 'https://old.example' });
  t.equal(r.headers['access-control-allow-origin'], undefined, 'a typed policy (here the virtual host one) takes precedence over the deprecated route cors field');

  const st = keel.server.listeners[0].httpFilterStats();
  t.ok(st['http.inbound.cors.origin_valid'] >= 4);
  t.ok(st['http.inbound.cors.origin_invalid'] >= 3);
});

t.test('CORS from the deprecated route and virtual host cors fields', async (t) => {
  const up = await startUpstream('u');
  const keel = await startKeel(
    keelYaml(
      `              - match: { prefix: / }
                route: { cluster: u, cors: { allow_methods: DELETE, expose_headers: x-upstream } }`,
      cluster('u', up.port),
      '{}',
      `              cors: { allow_origin_string_match: [{ exact: "https://old.example" }], allow_methods: GET }`,
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  let r = await request(`${keel.url}/x`, { method: 'OPTIONS', headers: { origin: 'https://old.example', 'access-control-request-method': 'DELETE' } });
  await r.body.text();
  t.equal(r.statusCode, 200);
  t.equal(r.headers['access-control-allow-origin'], 'https://old.example', 'origins from the virtual host');
  t.equal(r.headers['access-control-allow-methods'], 'DELETE', 'methods from the route, over the virtual host');
  t.equal(up.requests.length, 0);
  r = await request(`${keel.url}/x`, { headers: { origin: 'https://old.example' } });
  await r.body.text();
  t.equal(r.headers['access-control-allow-origin'], 'https://old.example');
  t.equal(r.headers['access-control-expose-headers'], 'x-upstream');
});

// ---------------------------------------------------------------------------------------------
// request mirroring

const mirrorStats = (name: string): MirrorStats => MIRROR_STATS.get(name) ?? { started: 0, completed: 0, failed: 0, tooLarge: 0, abandoned: 0, skipped: 0 };

function mirrorRoute(policies: string, prefix = '/'): string {
  return `              - match: { prefix: ${prefix} }
                route:
                  cluster: main
                  request_mirror_policies: ${policies}`;
}

t.test('mirror: the shadow gets the request with -shadow host and body; the main response is unaffected', async (t) => {
  const main = await startUpstream('main');
  const held: http.ServerResponse[] = [];
  const shadow = await startUpstream('shadow', (_req, res) => held.push(res));
  const keel = await startKeel(keelYaml(mirrorRoute(`[{ cluster: shadow_a, runtime_fraction: { default_value: ${MILLION(100)} } }]`), cluster('main', main.port) + cluster('shadow_a', shadow.port)));
  t.teardown(async () => {
    for (const res of held) res.end();
    await keel.stop();
    await main.close();
    await shadow.close();
  });
  const r = await request(`${keel.url}/reviews/1`, { method: 'POST', body: 'the request body', headers: { host: 'reviews:9080', 'x-user': 'jason' } });
  t.equal(r.statusCode, 200);
  const body = JSON.parse(await r.body.text());
  t.equal(body.upstream, 'main', 'the answer is the main upstream’s');
  t.equal(body.body, 'the request body');
  await until(() => shadow.requests.length === 1, 'the shadow request');
  t.equal(held.length, 1, 'the main response came back while the shadow has not answered');
  const s = shadow.requests[0];
  t.equal(s.headers.host, 'reviews-shadow:9080', '-shadow before the port');
  t.equal(s.method, 'POST');
  t.equal(s.url, '/reviews/1');
  t.equal(s.body, 'the request body', 'the body is copied');
  t.equal(s.headers['x-user'], 'jason');
  t.equal(main.requests[0].headers.host, 'reviews:9080', 'the main request keeps its host');
  held[0].end('late');
  await until(() => mirrorStats('shadow_a').completed === 1, 'the shadow response to be read');
  t.equal(keel.server.clusters.get('shadow_a')!.stats.upstreamRq2xx, 1, 'the shadow counts in its cluster’s stats');
  t.equal(keel.server.clusters.get('shadow_a')!.resources.requests.count, 0, 'and releases its request slot');
});

t.test('mirror: dead shadow cluster, runtime fraction 0, cluster_header, no suffix, oversized body', async (t) => {
  const main = await startUpstream('main');
  const shadow = await startUpstream('shadow');
  const dead = await deadPort();
  const keel = await startKeel(
    keelYaml(
      [
        mirrorRoute(`[{ cluster: shadow_dead }]`, '/dead'),
        mirrorRoute(`[{ cluster: shadow_b, runtime_fraction: { default_value: { numerator: 0 } } }]`, '/never'),
        mirrorRoute(`[{ cluster_header: x-mirror-to, disable_shadow_host_suffix_append: true }]`, '/header'),
        mirrorRoute(`[{ cluster: shadow_c }]`, '/big'),
      ].join('\n'),
      cluster('main', main.port) + cluster('shadow_dead', dead) + cluster('shadow_b', shadow.port) + cluster('shadow_c', shadow.port) + cluster('shadow_d', shadow.port),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await main.close();
    await shadow.close();
  });
  let r = await request(`${keel.url}/dead`, { method: 'POST', body: 'x' });
  t.equal(r.statusCode, 200, 'a dead mirror cluster does not fail the main request');
  await r.body.text();
  await until(() => mirrorStats('shadow_dead').failed === 1, 'the shadow connect failure to be counted');
  t.same(flagsOf('/dead'), [''], 'and leaves no flag on it');

  for (let i = 0; i < 20; i++) {
    r = await request(`${keel.url}/never`);
    await r.body.text();
  }
  t.equal(mirrorStats('shadow_b').started, 0, 'runtime_fraction 0%: never mirrored');

  r = await request(`${keel.url}/header`, { headers: { host: 'svc', 'x-mirror-to': 'shadow_d' } });
  await r.body.text();
  r = await request(`${keel.url}/header`, { headers: { host: 'svc', 'x-mirror-to': 'no-such-cluster' } });
  t.equal(r.statusCode, 200, 'an unknown cluster in the header: no shadow, main unaffected');
  await r.body.text();
  await until(() => shadow.requests.length === 1, 'the cluster_header shadow');
  t.equal(shadow.requests[0].headers.host, 'svc', 'disable_shadow_host_suffix_append');
  t.equal(mirrorStats('(unknown)').skipped, 1, 'counted once under (unknown), not per header value');
  t.equal(MIRROR_STATS.has('no-such-cluster'), false);

  const big = Buffer.alloc((1 << 20) + 4096, 'b');
  r = await request(`${keel.url}/big`, { method: 'POST', body: big });
  t.equal(r.statusCode, 200, 'a body past the shadow bound still reaches the main upstream');
  t.equal(JSON.parse(await r.body.text()).body.length, big.length);
  await until(() => mirrorStats('shadow_c').tooLarge === 1, 'the oversized shadow to be cancelled');
  t.equal(mirrorStats('shadow_c').completed, 0);
  await until(() => keel.server.clusters.get('shadow_c')!.resources.requests.count === 0, 'the cancelled shadow to release its slot');
});

t.test('mirror: gRPC calls are mirrored to an HTTP/2 shadow cluster; gRPC fault abort through grpc-js', async (t) => {
  const def = protoLoader.loadSync(path.join(__dirname, '../fixtures/echo.proto'), { keepCase: true });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const pkg = grpc.loadPackageDefinition(def).keeltest as any;
  const H2 = `
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }`;
  const start = async (name: string, seen: { host: string; text: string }[]) => {
    const server = new grpc.Server();
    server.addService(pkg.Echo.service, {
      Unary: (call: grpc.ServerUnaryCall<{ text: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        seen.push({ host: call.getHost(), text: call.request.text });
        cb(null, { text: `${name}:${call.request.text}`, seq: 1 });
      },
    });
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    return { port, server };
  };
  const mainSeen: { host: string; text: string }[] = [];
  const shadowSeen: { host: string; text: string }[] = [];
  const main = await start('main', mainSeen);
  const shadow = await start('shadow', shadowSeen);
  const keel = await startKeel(
    keelYaml(
      [
        faultRoute('/keeltest.Echo/ServerStream', `{ abort: { grpc_status: 8, percentage: { numerator: 100 } } }`, 'gmain'),
        `              - match: { prefix: /keeltest.Echo/ }
                route:
                  cluster: gmain
                  request_mirror_policies: [{ cluster: gshadow }]`,
      ].join('\n'),
      cluster('gmain', main.port, H2) + cluster('gshadow', shadow.port, H2),
    ),
  );
  const client = new pkg.Echo(`127.0.0.1:${keel.port}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'echo.test:50051' });
  t.teardown(async () => {
    client.close();
    await keel.stop();
    main.server.forceShutdown();
    shadow.server.forceShutdown();
  });
  const res = await new Promise<{ text: string }>((resolve, reject) => client.Unary({ text: 'hi', seq: 0 }, (e: Error | null, r: { text: string }) => (e ? reject(e) : resolve(r))));
  t.equal(res.text, 'main:hi', 'the answer is the main cluster’s');
  await until(() => shadowSeen.length === 1, 'the gRPC shadow call');
  t.same(shadowSeen, [{ host: 'echo.test-shadow:50051', text: 'hi' }], 'the shadow got the call, with -shadow authority and the message');
  t.same(mainSeen, [{ host: 'echo.test:50051', text: 'hi' }]);
  await until(() => mirrorStats('gshadow').completed === 1, 'the shadow response (trailers) to be read');

  const err = await new Promise<grpc.ServiceError>((resolve) => {
    const call = client.ServerStream({ text: 'x', seq: 0 });
    call.on('error', resolve);
    call.on('data', () => {});
  });
  t.equal(err.code, grpc.status.RESOURCE_EXHAUSTED, 'grpc_status 8 abort as grpc-js sees it');
  t.match(err.details, /fault filter abort/);
});
