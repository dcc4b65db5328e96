// Timeouts through keel to misbehaving upstreams on loopback: the connection manager's
// stream_idle_timeout, request_timeout and max_stream_duration (504 once the request is complete,
// 408 while it is still arriving, as Envoy's maybeRequestTimeoutCode), the route's idle_timeout and
// max_stream_duration (which replaces the route timeout), grpc-timeout with grpc_timeout_header_max /
// offset, x-envoy-upstream-rq-timeout-ms, per_try_idle_timeout, and an abandoned upstream connection
// being closed, never reused.
import t from 'tap';
import * as net from 'node:net';
import { request } from 'undici';
import { ActiveStream } from '../../src/http/stream';
import { bootstrap, cluster, rawExchange, startKeel, startUpstream } from '../helpers/keel';

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

const routes = `            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u, timeout: 0s } }] }`;

function route(action: string): string {
  return `            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u, ${action} } }] }`;
}

t.test('stream_idle_timeout: a silent upstream gets 504 stream timeout (request complete), a stalled body 408', async (t) => {
  const up = await startUpstream('silent', () => undefined);
  const keel = await startKeel(bootstrap(routes, cluster('u', up.port), '          stream_idle_timeout: 1s'));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/idle`);
  t.equal(r.statusCode, 504);
  t.equal(await r.body.text(), 'stream timeout');
  t.same(finished.at(-1), { code: 504, flags: 'SI', details: 'stream_idle_timeout', attempts: 1 });
  const text = await rawExchange(keel.port, 'POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc', (s) => s.includes('stream timeout'));
  t.match(text, /^HTTP\/1\.1 408 /, 'request body never finished: 408');
});

t.test('stream_idle_timeout: silent streams interleaved with finished ones all time out; the finished ones are untouched', async (t) => {
  // The streams in flight are a linked list: finished streams leave from its middle, its head and
  // its tail, and the sweep must still reach every silent one.
  const up = await startUpstream('mixed', (req, res) => {
    if (req.url?.startsWith('/silent')) return;
    res.end('ok');
  });
  const keel = await startKeel(bootstrap(routes, cluster('u', up.port), '          stream_idle_timeout: 1s'));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const silent: Promise<{ status: number; body: string }>[] = [];
  const quick = async (): Promise<void> => {
    for (let i = 0; i < 3; i++) {
      const r = await request(`${keel.url}/fast/${i}`);
      t.equal(r.statusCode, 200);
      await r.body.text();
    }
  };
  const slow = (n: number): Promise<{ status: number; body: string }> =>
    request(`${keel.url}/silent/${n}`).then(async (r) => ({ status: r.statusCode, body: await r.body.text() }));
  await quick();
  for (let n = 0; n < 3; n++) {
    silent.push(slow(n));
    await quick();
  }
  const results = await Promise.all(silent);
  t.same(results, [0, 1, 2].map(() => ({ status: 504, body: 'stream timeout' })));
  t.equal(finished.filter((f) => f.details === 'stream_idle_timeout').length >= 3, true);
  const r = await request(`${keel.url}/fast/after`);
  t.equal(r.statusCode, 200, 'the connection manager still serves after the sweep');
  await r.body.text();
});

t.test('request_timeout: a request body that never completes gets 408', async (t) => {
  const up = await startUpstream('u');
  const keel = await startKeel(bootstrap(routes, cluster('u', up.port), '          request_timeout: 0.3s'));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const text = await rawExchange(keel.port, 'POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc', (s) => s.includes('\r\n\r\n'));
  t.match(text, /^HTTP\/1\.1 408 /);
  t.match(text, /connection: close/);
});

t.test('max_stream_duration (HCM): a complete request that lives too long gets 504 downstream duration timeout (DT)', async (t) => {
  const up = await startUpstream('silent', () => undefined);
  const keel = await startKeel(bootstrap(routes, cluster('u', up.port), '          common_http_protocol_options: { max_stream_duration: 0.3s }'));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/long`);
  t.equal(r.statusCode, 504);
  t.equal(await r.body.text(), 'downstream duration timeout');
  t.same(finished.at(-1), { code: 504, flags: 'DT', details: 'duration_timeout', attempts: 1 });
});

t.test('route idle_timeout replaces stream_idle_timeout for its route', async (t) => {
  const up = await startUpstream('silent', () => undefined);
  // the HCM default (5 min) would hang the test; the route's 0.3 s answers
  const keel = await startKeel(bootstrap(route('timeout: 0s, idle_timeout: 0.3s'), cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/quiet`);
  t.equal(r.statusCode, 504);
  t.equal(await r.body.text(), 'stream timeout');
  t.equal(finished.at(-1)!.flags, 'SI');
});

t.test('route max_stream_duration: bounds the stream and replaces the route timeout', async (t) => {
  const up = await startUpstream('slowish', (req, res) => {
    if (req.url === '/hang') return;
    setTimeout(() => res.end('late but fine'), 300);
  });
  const keel = await startKeel(bootstrap(route('timeout: 0.05s, max_stream_duration: { max_stream_duration: 0.8s }'), cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const ok = await request(`${keel.url}/slow`);
  t.equal(ok.statusCode, 200, 'the 50 ms route timeout does not apply when the route has max_stream_duration');
  t.equal(await ok.body.text(), 'late but fine');
  const r = await request(`${keel.url}/hang`);
  t.equal(r.statusCode, 504);
  t.equal(await r.body.text(), 'downstream duration timeout');
  t.equal(finished.at(-1)!.flags, 'DT');
});

t.test('grpc-timeout sets the stream duration with grpc_timeout_header_max (capped; 0 = uncapped) and offset', async (t) => {
  const up = await startUpstream('silent', () => undefined);
  const capped = route('timeout: 0s, max_stream_duration: { grpc_timeout_header_max: 0.3s }');
  const keel = await startKeel(bootstrap(capped, cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  // 100 s asked for, capped at 0.3 s
  const r = await request(`${keel.url}/capped`, { headers: { 'grpc-timeout': '100S' } });
  t.equal(r.statusCode, 504);
  t.equal(await r.body.text(), 'downstream duration timeout');
  // 200 ms asked for, under the cap
  const r2 = await request(`${keel.url}/asked`, { headers: { 'grpc-timeout': '200m' } });
  t.equal(r2.statusCode, 504);
  await r2.body.text();

  const keel2 = await startKeel(bootstrap(route('timeout: 0s, max_stream_duration: { grpc_timeout_header_max: 0s, grpc_timeout_header_offset: 0.1s }'), cluster('u', up.port)));
  t.teardown(() => keel2.stop());
  const t0 = Date.now();
  const r3 = await request(`${keel2.url}/offset`, { headers: { 'grpc-timeout': '400000u' } });
  t.equal(r3.statusCode, 504, 'uncapped 400 ms less the 100 ms offset');
  await r3.body.text();
  t.ok(Date.now() - t0 >= 250, 'not before the deadline less the offset');
});

t.test('x-envoy-upstream-rq-timeout-ms from an internal client overrides the route timeout', async (t) => {
  const up = await startUpstream('silent', () => undefined);
  const keel = await startKeel(bootstrap(routes, cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/t`, { headers: { 'x-envoy-upstream-rq-timeout-ms': '200' } });
  t.equal(r.statusCode, 504);
  t.equal(await r.body.text(), 'upstream request timeout');
  t.same(finished.at(-1), { code: 504, flags: 'UT', details: 'upstream_response_timeout', attempts: 1 });
  t.equal(up.requests.length, 1);
  t.equal(up.requests[0].headers['x-envoy-upstream-rq-timeout-ms'], undefined, 'not forwarded');
  t.equal(up.requests[0].headers['x-envoy-expected-rq-timeout-ms'], '200');
});

t.test('a timed-out upstream request is cancelled: its connection is closed, the next request opens another', async (t) => {
  const sockets: net.Socket[] = [];
  const closed: Promise<void>[] = [];
  const up = await startUpstream('silent', (req, res) => {
    if (req.url === '/hang') return;
    res.end('fresh');
  });
  up.server.on('connection', (s: net.Socket) => {
    sockets.push(s);
    closed.push(new Promise((r) => s.once('close', () => r())));
  });
  const keel = await startKeel(bootstrap(route('timeout: 0.2s'), cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/hang`);
  t.equal(r.statusCode, 504);
  await r.body.text();
  await closed[0];
  t.pass('the upstream connection of the abandoned request was closed');
  const r2 = await request(`${keel.url}/next`);
  t.equal(await r2.body.text(), 'fresh');
  t.equal(sockets.length, 2, 'the next request used a new connection');
});

t.test('per_try_idle_timeout: a quiet attempt is retried; one that goes quiet mid-response is reset', async (t) => {
  let n = 0;
  const up = await startUpstream('quiet', (req, res) => {
    n++;
    if (req.url === '/stall') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('partial');
      return;
    }
    if (n === 1) return;
    res.end('second try');
  });
  const keel = await startKeel(
    bootstrap(
      route('timeout: 0s, retry_policy: { retry_on: 5xx, num_retries: 1, per_try_idle_timeout: 0.3s, retry_back_off: { base_interval: 0.001s } }'),
      cluster('u', up.port),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/once`);
  t.equal(r.statusCode, 200);
  t.equal(await r.body.text(), 'second try');
  t.equal(up.requests.length, 2, 'two attempts reached the upstream');
  const st = keel.server.clusters.get('u')!.stats;
  t.equal(st.upstreamRqPerTryIdleTimeout, 1);
  t.equal(st.upstreamRqRetry, 1);

  const r2 = await request(`${keel.url}/stall`);
  t.equal(r2.statusCode, 200);
  await t.rejects(r2.body.text(), 'the downstream response is cut off');
  t.equal(finished.at(-1)!.flags, 'UT');
  t.equal(st.upstreamRqPerTryIdleTimeout, 2);
});

t.test('request_headers_timeout (HTTP/1): a head that never completes closes the connection without a response', async (t) => {
  const up = await startUpstream('u');
  const keel = await startKeel(bootstrap(routes, cluster('u', up.port), '          request_headers_timeout: 0.3s'));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const t0 = Date.now();
  const text = await rawExchange(keel.port, 'GET /partial HTTP/1.1\r\nHost: a\r\n');
  t.equal(text, '', 'closed with nothing written');
  t.ok(Date.now() - t0 >= 250, 'not before the timeout');
  t.equal(up.requests.length, 0);
  const r = await request(`${keel.url}/whole`);
  t.equal(r.statusCode, 200, 'complete heads are unaffected');
  await r.body.text();
});
