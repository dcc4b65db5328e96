// Retries and per-try timeouts through keel to real upstreams on loopback: 5xx, connect failure to
// another host (previous_hosts), per_try_timeout, exhausted retries and their flags, the max_retries
// circuit breaker, request bodies re-sent, header-driven policies, gRPC `unavailable`.
import t from 'tap';
import * as net from 'node:net';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { request } from 'undici';
import { ActiveStream } from '../../src/http/stream';
import { bootstrap, cluster, deadPort, startKeel, startUpstream } from '../helpers/keel';

// Every finished stream's status and Envoy response flags (not visible on the wire).
const finished: { code: number; flags: string; details: string; attempts: number }[] = [];
const proto = ActiveStream.prototype as unknown as { finish(this: ActiveStream): void };
const origFinish = proto.finish;
proto.finish = function (this: ActiveStream) {
  finished.push({ code: this.responseCode, flags: this.responseFlags, details: this.responseCodeDetails, attempts: this.attemptCount });
  origFinish.call(this);
};
t.teardown(() => {
  proto.finish = origFinish;
});

function vhost(routeExtra: string, vhExtra = ''): string {
  return `
            - name: a
              domains: ["*"]
${vhExtra}
              routes:
              - match: { prefix: / }
                route:
                  cluster: u
${routeExtra}`;
}

const fastBackoff = `retry_back_off: { base_interval: 0.001s, max_interval: 0.002s }`;

t.test('503 then 200: the client sees 200, the upstream saw 2 attempts; attempt counts', async (t) => {
  let n = 0;
  const up = await startUpstream('flaky', (_req, res) => {
    n++;
    if (n === 1) {
      res.writeHead(503, { 'content-type': 'text/plain' });
      res.end('try again');
    } else res.end('ok');
  });
  const keel = await startKeel(
    bootstrap(
      vhost(`                  retry_policy: { retry_on: 5xx, num_retries: 2, ${fastBackoff} }`, `              include_request_attempt_count: true\n              include_attempt_count_in_response: true`),
      cluster('u', up.port),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/x`);
  t.equal(r.statusCode, 200);
  t.equal(await r.body.text(), 'ok');
  t.equal(r.headers['x-envoy-attempt-count'], '2', 'attempt count in the response');
  t.equal(up.requests.length, 2);
  t.same(
    up.requests.map((q) => q.headers['x-envoy-attempt-count']),
    ['1', '2'],
    'attempt count on each upstream request',
  );
  const st = keel.server.clusters.get('u')!.stats;
  t.equal(st.upstreamRqRetry, 1);
  t.equal(st.upstreamRqRetrySuccess, 1);
  t.equal(st.upstreamRqTotal, 2);
  t.equal(keel.server.clusters.get('u')!.resources.retries.count, 0, 'the retry slot is released');
});

t.test('connect failure retried on another host (previous_hosts)', async (t) => {
  const dead = await deadPort();
  const live = await startUpstream('live');
  // The dead endpoint has 50x the weight: without previous_hosts the retry would go there again.
  const twoHosts = `
  - name: u
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: u
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${dead} } } }
          load_balancing_weight: 50
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${live.port} } } }
          load_balancing_weight: 1`;
  const keel = await startKeel(
    bootstrap(
      vhost(`                  retry_policy:
                    retry_on: connect-failure
                    num_retries: 1
                    ${fastBackoff}
                    retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts, typed_config: { "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate } }]
                    host_selection_retry_max_attempts: 200`),
      twoHosts,
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await live.close();
  });
  for (let i = 0; i < 5; i++) {
    const r = await request(`${keel.url}/c${i}`);
    t.equal(r.statusCode, 200, `request ${i} answered by the live host`);
    t.equal(r.headers['x-upstream'], 'live');
    await r.body.text();
  }
  t.equal(live.requests.length, 5);
  t.ok(keel.server.clusters.get('u')!.stats.upstreamRqRetry >= 1, 'at least one retry after a connect failure');
});

t.test('per_try_timeout: a hung attempt is retried; on the last try it is 504 UT', async (t) => {
  let n = 0;
  const up = await startUpstream('slow', (req, res) => {
    n++;
    if (req.url === '/always-slow' || n === 1) return; // never answers (closed at teardown)
    res.end('second');
  });
  const keel = await startKeel(
    bootstrap(
      vhost(`                  timeout: 10s
                  retry_policy: { retry_on: 5xx, num_retries: 1, per_try_timeout: 0.2s, ${fastBackoff} }`),
      cluster('u', up.port),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/once-slow`);
  t.equal(r.statusCode, 200);
  t.equal(await r.body.text(), 'second');
  t.equal(up.requests.length, 2);
  t.equal(up.requests[0].headers['x-envoy-expected-rq-timeout-ms'], '200', 'the per-try timeout is advertised');

  finished.length = 0;
  const t0 = Date.now();
  const r2 = await request(`${keel.url}/always-slow`);
  t.equal(r2.statusCode, 504);
  t.equal(await r2.body.text(), 'upstream request timeout');
  t.ok(Date.now() - t0 < 5000, 'answered by the per-try timeout, not the route timeout');
  t.same(finished.at(-1), { code: 504, flags: 'UT,URX', details: 'upstream_per_try_timeout', attempts: 2 });
  t.equal(keel.server.clusters.get('u')!.stats.upstreamRqPerTryTimeout, 3);
});

t.test('retries exhausted: the last upstream response (URX); connect failures: 503 UF,URX', async (t) => {
  const up = await startUpstream('down', (_req, res) => {
    res.writeHead(503, { 'x-last': 'yes' });
    res.end('still down');
  });
  const dead = await deadPort();
  const keel = await startKeel(
    bootstrap(
      `
            - name: a
              domains: ["*"]
              retry_policy: { retry_on: "5xx,connect-failure", num_retries: 2, ${fastBackoff} }
              routes:
              - { match: { prefix: /dead }, route: { cluster: dead } }
              - { match: { prefix: / }, route: { cluster: u } }`,
      cluster('u', up.port) + cluster('dead', dead),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  finished.length = 0;
  const r = await request(`${keel.url}/x`);
  t.equal(r.statusCode, 503);
  t.equal(r.headers['x-last'], 'yes');
  t.equal(await r.body.text(), 'still down', 'the upstream response is relayed');
  t.equal(up.requests.length, 3, 'virtual host policy: 1 + num_retries attempts');
  t.same(finished.at(-1), { code: 503, flags: 'URX', details: 'via_upstream', attempts: 3 });
  t.equal(keel.server.clusters.get('u')!.stats.upstreamRqRetryLimitExceeded, 1);

  const d = await request(`${keel.url}/dead`);
  t.equal(d.statusCode, 503);
  t.match(await d.body.text(), /reset reason: connection failure/);
  t.same(finished.at(-1), { code: 503, flags: 'UF,URX', details: 'upstream_reset_before_response_started{connection_failure}', attempts: 3 });
});

t.test('max_retries circuit breaker: no retry over it (UO, upstream_rq_retry_overflow)', async (t) => {
  const up = await startUpstream('down', (_req, res) => {
    res.writeHead(503);
    res.end('down');
  });
  const keel = await startKeel(
    bootstrap(
      vhost(`                  retry_policy: { retry_on: 5xx, num_retries: 3, ${fastBackoff} }`),
      cluster('u', up.port, `    circuit_breakers: { thresholds: [{ max_retries: 0 }] }`),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  finished.length = 0;
  const r = await request(`${keel.url}/x`);
  t.equal(r.statusCode, 503);
  t.equal(await r.body.text(), 'down');
  t.equal(up.requests.length, 1, 'not retried');
  t.equal(keel.server.clusters.get('u')!.stats.upstreamRqRetryOverflow, 1);
  t.equal(finished.at(-1)?.flags, 'UO');
});

t.test('a POST body is re-sent on retry; past the retry buffer limit there is no retry', async (t) => {
  let n = 0;
  const up = await startUpstream('echo', (_req, res, body) => {
    n++;
    if (n === 1 || body.length > 1 << 20) {
      res.writeHead(503);
      res.end();
      return;
    }
    res.end(`got ${body.length}`);
  });
  const keel = await startKeel(bootstrap(vhost(`                  retry_policy: { retry_on: 5xx, num_retries: 1, ${fastBackoff} }`), cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const body = Buffer.alloc(200_000, 'b').toString();
  const r = await request(`${keel.url}/post`, { method: 'POST', body });
  t.equal(r.statusCode, 200);
  t.equal(await r.body.text(), `got ${body.length}`);
  t.equal(up.requests.length, 2);
  t.equal(up.requests[0].body, body, 'first attempt got the whole body');
  t.equal(up.requests[1].body, body, 'the retry got the same body');

  const big = Buffer.alloc((1 << 20) + 1000, 'c').toString();
  const r2 = await request(`${keel.url}/big`, { method: 'POST', body: big });
  t.equal(r2.statusCode, 503);
  await r2.body.text();
  t.equal(up.requests.length, 3, 'a body over the retry buffer is not retried');
  t.equal(up.requests[2].body.length, big.length, 'but is still sent whole');
});

t.test('x-envoy-retry-on and x-envoy-max-retries from an internal client, without any policy', async (t) => {
  let n = 0;
  const up = await startUpstream('h', (_req, res) => {
    n++;
    res.writeHead(n <= 2 ? 502 : 200);
    res.end(String(n));
  });
  const keel = await startKeel(bootstrap(vhost(''), cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const plain = await request(`${keel.url}/p`);
  t.equal(plain.statusCode, 502, 'no policy, no header: no retry');
  await plain.body.text();
  const r = await request(`${keel.url}/h`, { headers: { 'x-envoy-retry-on': 'gateway-error', 'x-envoy-max-retries': '2' } });
  t.equal(r.statusCode, 200);
  t.equal(await r.body.text(), '3');
  t.equal(up.requests.length, 3);
});

t.test('gRPC retry_on unavailable: a call failing once with UNAVAILABLE succeeds', async (t) => {
  const def = protoLoader.loadSync(path.join(__dirname, '../fixtures/echo.proto'), { keepCase: true });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const pkg = grpc.loadPackageDefinition(def).keeltest as any;
  let calls = 0;
  const server = new grpc.Server();
  server.addService(pkg.Echo.service, {
    Unary: (call: grpc.ServerUnaryCall<{ text: string; seq: number }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      calls++;
      if (calls === 1) return cb({ code: grpc.status.UNAVAILABLE, details: 'warming up' });
      cb(null, { text: `echo:${call.request.text}`, seq: calls });
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  const h2 = `
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }`;
  const keel = await startKeel(bootstrap(vhost(`                  retry_policy: { retry_on: unavailable, num_retries: 1, ${fastBackoff} }`), cluster('u', port, h2)));
  const client = new pkg.Echo(`127.0.0.1:${keel.port}`, grpc.credentials.createInsecure());
  t.teardown(async () => {
    client.close();
    await keel.stop();
    server.forceShutdown();
  });
  const res = await new Promise<{ err: grpc.ServiceError | null; res?: { text: string; seq: number } }>((resolve) =>
    client.Unary({ text: 'hi', seq: 0 }, (err: grpc.ServiceError | null, res: { text: string; seq: number }) => resolve({ err, res })),
  );
  t.equal(res.err, null);
  t.same(res.res, { text: 'echo:hi', seq: 2 });
  t.equal(calls, 2);
});

t.test('a reset before the response is retried under `reset`', async (t) => {
  let n = 0;
  const srv = net.createServer((s) =>
    s.once('data', () => {
      n++;
      if (n === 1) s.destroy();
      else s.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok');
    }),
  );
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const keel = await startKeel(bootstrap(vhost(`                  retry_policy: { retry_on: reset, ${fastBackoff} }`), cluster('u', (srv.address() as net.AddressInfo).port)));
  t.teardown(async () => {
    await keel.stop();
    srv.close();
  });
  const r = await request(`${keel.url}/r`);
  t.equal(r.statusCode, 200);
  t.equal(await r.body.text(), 'ok');
  t.equal(n, 2);
});

t.test('x-envoy-retriable-status-codes and x-envoy-retriable-header-names from an internal client', async (t) => {
  let n = 0;
  const up = await startUpstream('h', (req, res) => {
    n++;
    if (req.url === '/codes') {
      res.writeHead(n % 2 === 1 ? 418 : 200);
      res.end(String(n));
    } else {
      res.writeHead(200, n % 2 === 1 ? { 'x-try-again': 'yes' } : {});
      res.end(String(n));
    }
  });
  const keel = await startKeel(bootstrap(vhost(''), cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/codes`, { headers: { 'x-envoy-retry-on': 'retriable-status-codes', 'x-envoy-retriable-status-codes': '500, 418' } });
  t.equal(r.statusCode, 200, '418 listed in the header: retried');
  t.equal(await r.body.text(), '2');
  const unlisted = await request(`${keel.url}/codes`, { headers: { 'x-envoy-retry-on': 'retriable-status-codes', 'x-envoy-retriable-status-codes': '500' } });
  t.equal(unlisted.statusCode, 418, 'not listed: not retried');
  await unlisted.body.text();
  n = 0;
  const h = await request(`${keel.url}/hdr`, { headers: { 'x-envoy-retry-on': 'retriable-headers', 'x-envoy-retriable-header-names': 'X-Try-Again' } });
  t.equal(await h.body.text(), '2', 'a response carrying the named header is retried');
  t.equal(h.headers['x-try-again'], undefined);
  t.equal(up.requests.length, 5, 'attempts: 2 + 1 + 2');
});

t.test('hedge_on_per_try_timeout: the timed-out attempt is kept; the first good answer wins, the other is reset', async (t) => {
  let n = 0;
  const closed: Promise<void>[] = [];
  const up = await startUpstream('hedge', (req, res) => {
    n++;
    const k = n;
    closed.push(new Promise((r) => res.once('close', () => r())));
    if (req.url === '/first-wins') {
      // the first attempt answers after 400 ms; the hedged second never does
      if (k === 1) setTimeout(() => res.end('first'), 400);
      return;
    }
    // /second-wins: the first attempt never answers; the second at once
    if (k % 2 === 0) res.end('second');
  });
  const hedged = `                  timeout: 10s
                  hedge_policy: { hedge_on_per_try_timeout: true }
                  retry_policy: { retry_on: 5xx, num_retries: 1, per_try_timeout: 0.15s, ${fastBackoff} }`;
  const keel = await startKeel(bootstrap(vhost(hedged), cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/first-wins`);
  t.equal(r.statusCode, 200);
  t.equal(await r.body.text(), 'first', 'the original attempt answered after its per-try timeout');
  t.equal(up.requests.length, 2, 'a hedged second attempt was sent');
  await closed[1];
  t.pass('the losing hedged attempt was reset');
  t.equal(keel.server.clusters.get('u')!.hosts[0].activeRequests, 0, 'host counters balanced');

  n = 0;
  const before = up.requests.length;
  const r2 = await request(`${keel.url}/second-wins`);
  t.equal(await r2.body.text(), 'second');
  t.equal(up.requests.length - before, 2);
  // first-wins: both of its attempts hit the per-try timeout before the original answered; second-wins: one
  t.equal(keel.server.clusters.get('u')!.stats.upstreamRqPerTryTimeout, 3);

  // without hedging, the first request's original attempt would have been reset at 150 ms
  const keel2 = await startKeel(bootstrap(vhost(hedged.replace('hedge_on_per_try_timeout: true', 'hedge_on_per_try_timeout: false')), cluster('u', up.port)));
  t.teardown(() => keel2.stop());
  n = 0;
  const r3 = await request(`${keel2.url}/first-wins`);
  t.equal(r3.statusCode, 504, 'no hedging: both attempts time out');
  t.equal(await r3.body.text(), 'upstream request timeout');
});

t.test('x-envoy-hedge-on-per-try-timeout: true turns hedging on for one request', async (t) => {
  let n = 0;
  const up = await startUpstream('hedge', (_req, res) => {
    n++;
    if (n === 1) setTimeout(() => res.end('original'), 400);
  });
  const keel = await startKeel(bootstrap(vhost(`                  retry_policy: { retry_on: 5xx, num_retries: 1, per_try_timeout: 0.15s, ${fastBackoff} }`), cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/h`, { headers: { 'x-envoy-hedge-on-per-try-timeout': 'true' } });
  t.equal(await r.body.text(), 'original');
  t.equal(up.requests.length, 2);
});
