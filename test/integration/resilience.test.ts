// Resilience through keel against misbehaving upstreams on loopback, with counts asserted:
// outlier detection ejecting a 503-ing host and taking it back after base_ejection_time (a flapping
// host ejected twice stays out longer), circuit breakers (max_requests, HTTP/1.1 pending queue up to
// max_pending_requests, then 503 UO with x-envoy-overloaded), retries against a resetting upstream,
// the rate-limited retry back-off honouring Retry-After, and the retry budget.
import t from 'tap';
import type * as http from 'node:http';
import { request } from 'undici';
import { ActiveStream } from '../../src/http/stream';
import { bootstrap, startKeel, startUpstream, type Upstream } from '../helpers/keel';
import { waitUntil } from '../helpers/wait';

const finished: { code: number; flags: string }[] = [];
const proto = ActiveStream.prototype as unknown as { finish(this: ActiveStream): void };
const origFinish = proto.finish;
proto.finish = function (this: ActiveStream) {
  finished.push({ code: this.responseCode, flags: this.responseFlags });
  origFinish.call(this);
};
t.teardown(() => {
  proto.finish = origFinish;
});

/** Poll `cond` every 10 ms until it holds, failing after `ms`. */
const until = (cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> => waitUntil(cond, what, ms);

function vhost(routeExtra = ''): string {
  return `
            - name: a
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route:
                  cluster: u
                  timeout: 5s
${routeExtra}`;
}

function multiHost(ports: number[], extra: string): string {
  return `
  - name: u
    type: STATIC
    connect_timeout: 1s
${extra}
    load_assignment:
      cluster_name: u
      endpoints:
      - lb_endpoints:
${ports.map((p) => `        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${p} } } }`).join('\n')}`;
}

async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; upstream: string | undefined; body: string }> {
  const r = await request(url, { headers });
  const body = await r.body.text();
  return { status: r.statusCode, upstream: r.headers['x-upstream'] as string | undefined, body };
}

t.test('outlier detection: a 503-ing host is ejected after consecutive_5xx, gets no traffic, and returns', async (t) => {
  let badFails = true;
  const good = await startUpstream('good');
  const bad = await startUpstream('bad', (_req, res) => {
    if (badFails) {
      res.writeHead(503, { 'x-upstream': 'bad' });
      res.end('down');
    } else {
      res.writeHead(200, { 'x-upstream': 'bad' });
      res.end('back');
    }
  });
  const keel = await startKeel(
    bootstrap(
      vhost(),
      multiHost(
        [good.port, bad.port],
        `    outlier_detection: { consecutive_5xx: 3, interval: 0.05s, base_ejection_time: 0.4s, max_ejection_percent: 100 }`,
      ),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await good.close();
    await bad.close();
  });
  const c = keel.server.clusters.get('u')!;
  const badHost = c.hosts.find((h) => h.port === bad.port)!;
  // round robin alternates: 6 requests give the bad host its 3 consecutive 503s
  for (let i = 0; i < 6; i++) await get(`${keel.url}/r${i}`);
  t.equal(bad.requests.length, 3, 'the bad host saw 3 requests');
  t.ok(c.outlier!.isEjected(badHost), 'ejected after 3 consecutive 5xx');
  t.equal(c.outlier!.stats.ejections_enforced_consecutive_5xx, 1);
  const ejectedAt = Date.now();
  const goodBefore = good.requests.length;
  for (let i = 0; i < 10; i++) t.equal((await get(`${keel.url}/e${i}`)).upstream, 'good');
  t.equal(bad.requests.length, 3, 'no request reached the ejected host');
  t.equal(good.requests.length, goodBefore + 10);

  badFails = false;
  await until(() => !c.outlier!.isEjected(badHost), 5000, 'the host to return');
  t.ok(Date.now() - ejectedAt >= 350, 'not back before base_ejection_time');
  const seen = new Set<string | undefined>();
  for (let i = 0; i < 4; i++) seen.add((await get(`${keel.url}/b${i}`)).upstream);
  t.ok(seen.has('bad'), 'the returned host gets traffic again');

  // flapping: failing again ejects it a second time, now for 2 × base_ejection_time
  badFails = true;
  const before = bad.requests.length;
  while (!c.outlier!.isEjected(badHost)) await get(`${keel.url}/f`);
  t.ok(bad.requests.length - before >= 3, 'three more 503s to eject again');
  t.equal(c.outlier!.stateOf(badHost)!.ejections, 2, 'ejected twice');
  // the multiplier decays by one per interval spent back in service, so read it rather than assume 2
  const m = c.outlier!.stateOf(badHost)!.multiplier;
  t.ok(m >= 1, `ejection multiplier ${m}`);
  const second = Date.now();
  badFails = false;
  await until(() => !c.outlier!.isEjected(badHost), 5000, 'the second return');
  t.ok(Date.now() - second >= 400 * m - 50, `the second ejection lasted ${Date.now() - second} ms (>= ${m} × base_ejection_time)`);
});

t.test('outlier detection: connect failures (local origin) eject a refusing host', async (t) => {
  const good = await startUpstream('good');
  const dead = await startUpstream('dead');
  const deadPort = dead.port;
  await dead.close(); // now refusing
  const keel = await startKeel(
    bootstrap(
      vhost(`                  retry_policy: { retry_on: connect-failure, num_retries: 2, retry_back_off: { base_interval: 0.001s } }`),
      multiHost([good.port, deadPort], `    outlier_detection: { consecutive_5xx: 2, consecutive_gateway_failure: 2, enforcing_consecutive_gateway_failure: 100, interval: 1s, base_ejection_time: 30s, max_ejection_percent: 100 }`),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await good.close();
  });
  const c = keel.server.clusters.get('u')!;
  const deadHost = c.hosts.find((h) => h.port === deadPort)!;
  for (let i = 0; i < 6; i++) t.equal((await get(`${keel.url}/x${i}`)).status, 200, 'retried onto the good host');
  t.ok(c.outlier!.isEjected(deadHost), 'the refusing host is ejected');
  t.equal(good.requests.length, 6);
});

t.test('circuit breaker max_requests: the request over the limit gets 503 UO x-envoy-overloaded', async (t) => {
  const held: http.ServerResponse[] = [];
  const up: Upstream = await startUpstream('slow', (_req, res) => {
    held.push(res);
  });
  const keel = await startKeel(bootstrap(vhost(), multiHost([up.port], `    circuit_breakers: { thresholds: [{ max_requests: 2, track_remaining: true }] }`)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const c = keel.server.clusters.get('u')!;
  const a = request(`${keel.url}/1`);
  const b = request(`${keel.url}/2`);
  await until(() => held.length === 2, 5000, 'two requests upstream');
  t.notOk(c.resources.requests.canCreate(), 'rq_open');
  t.equal(c.resources.requests.remaining, 0, 'remaining_rq 0');
  const r = await request(`${keel.url}/3`);
  t.equal(r.statusCode, 503);
  t.equal(r.headers['x-envoy-overloaded'], 'true');
  await r.body.text();
  t.equal(finished.at(-1)!.flags, 'UO');
  for (const res of held) res.end('done');
  t.equal((await a).statusCode, 200);
  t.equal((await b).statusCode, 200);
  t.equal(up.requests.length, 2, 'the rejected request never reached the upstream');
  await until(() => c.resources.requests.count === 0, 2000, 'requests to finish');
  t.ok(c.resources.requests.canCreate(), 'closed again');
});

t.test('HTTP/1.1 pending queue: requests wait for a free connection up to max_pending_requests', async (t) => {
  const held: http.ServerResponse[] = [];
  const conns = new Set<unknown>();
  const up = await startUpstream('one', (req, res) => {
    conns.add(req.socket);
    held.push(res);
  });
  const keel = await startKeel(bootstrap(vhost(), multiHost([up.port], `    circuit_breakers: { thresholds: [{ max_connections: 1, max_pending_requests: 1 }] }`)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const c = keel.server.clusters.get('u')!;
  const first = request(`${keel.url}/1`);
  await until(() => held.length === 1, 5000, 'the first request upstream');
  const second = request(`${keel.url}/2`);
  await until(() => c.resources.pendingRequests.count === 1, 5000, 'the second request queued');
  const third = await request(`${keel.url}/3`);
  t.equal(third.statusCode, 503, 'over max_pending_requests');
  t.equal(third.headers['x-envoy-overloaded'], 'true');
  await third.body.text();
  t.equal(c.stats.upstreamRqPendingOverflow, 1);
  held[0].end('one');
  await until(() => held.length === 2, 5000, 'the queued request to get the connection');
  held[1].end('two');
  t.equal(await (await first).body.text(), 'one');
  t.equal(await (await second).body.text(), 'two');
  t.equal(conns.size, 1, 'both served over the single allowed connection');
});

t.test('a resetting upstream: retried under reset, counts per attempt', async (t) => {
  let n = 0;
  const up = await startUpstream('reset', (req, res) => {
    n++;
    if (n <= 2) {
      req.socket.destroy();
      return;
    }
    res.end('third time');
  });
  const keel = await startKeel(bootstrap(vhost(`                  retry_policy: { retry_on: reset, num_retries: 3, retry_back_off: { base_interval: 0.001s } }`), multiHost([up.port], '')));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await get(`${keel.url}/r`);
  t.equal(r.status, 200);
  t.equal(r.body, 'third time');
  t.equal(up.requests.length, 3, 'three attempts reached the upstream');
  t.equal(keel.server.clusters.get('u')!.stats.upstreamRqRetry, 2);
});

t.test('rate_limited_retry_back_off: the retry waits for Retry-After', async (t) => {
  const times: number[] = [];
  const up = await startUpstream('limited', (_req, res) => {
    times.push(Date.now());
    if (times.length === 1) {
      res.writeHead(429, { 'retry-after': '1' });
      res.end('slow down');
    } else res.end('ok');
  });
  const keel = await startKeel(
    bootstrap(
      vhost(`                  retry_policy:
                    retry_on: retriable-status-codes
                    retriable_status_codes: [429]
                    num_retries: 1
                    retry_back_off: { base_interval: 0.001s }
                    rate_limited_retry_back_off:
                      reset_headers: [{ name: retry-after }, { name: x-ratelimit-reset, format: UNIX_TIMESTAMP }]
                      max_interval: 5s`),
      multiHost([up.port], ''),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await get(`${keel.url}/x`);
  t.equal(r.status, 200);
  t.equal(times.length, 2);
  t.ok(times[1] - times[0] >= 990, `the retry came ${times[1] - times[0]} ms later (Retry-After: 1)`);
  t.ok(times[1] - times[0] < 4000, 'and within the jitter bound (1.5 s) plus slack');
});

t.test('retry budget: concurrent retries beyond budget_percent of active requests are refused (UO)', async (t) => {
  const held: http.ServerResponse[] = [];
  const up = await startUpstream('budget', (req, res) => {
    if (req.url!.startsWith('/hold')) {
      held.push(res);
      return;
    }
    res.writeHead(503);
    res.end('no');
  });
  const keel = await startKeel(
    bootstrap(
      vhost(`                  retry_policy: { retry_on: 5xx, num_retries: 1, retry_back_off: { base_interval: 1s, max_interval: 1s } }`),
      multiHost([up.port], `    circuit_breakers: { thresholds: [{ max_retries: 100, retry_budget: { budget_percent: { value: 25 }, min_retry_concurrency: 1 } }] }`),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const c = keel.server.clusters.get('u')!;
  // 2 held requests + 2 failing ones = 4 active: 25% = 1 retry at a time
  const holds = [request(`${keel.url}/hold1`), request(`${keel.url}/hold2`)];
  await until(() => held.length === 2, 5000, 'held requests');
  const f1 = request(`${keel.url}/fail1`);
  const f2 = request(`${keel.url}/fail2`);
  const results = await Promise.all([f1, f2]);
  for (const r of results) await r.body.text();
  t.equal(c.stats.upstreamRqRetry, 1, 'one retry granted');
  t.equal(c.stats.upstreamRqRetryOverflow, 1, 'one refused by the budget');
  t.ok(finished.some((f) => f.code === 503 && f.flags === 'UO'), 'the refused one answers with the upstream 503 and flag UO');
  for (const res of held) res.end('ok');
  for (const h of holds) await (await h).body.text();
});
