// Istio's classic traffic-management tasks, run through keel from Istio's own YAML on loopback with
// small upstreams labelled v1/v2/v3 (reviews) and the outcomes Istio's docs describe: request
// routing, traffic shifting (applied live), fault injection, request timeouts, circuit breaking,
// mirroring, and an ingress gateway terminating TLS for one host.
import t from 'tap';
import * as https from 'node:https';
import * as tls from 'node:tls';
import { mkdtempSync, mkdirSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { request } from 'undici';
import { selfSignedCert, startUpstream, type Upstream } from '../helpers/keel';
import { endpointsYaml, REVIEWS_DR, startIstioKeel } from '../helpers/istio';

// real sockets and a few deliberate delays (0.7s fault, 2s slow upstream): more than tap's default on a busy box
t.setTimeout(180_000);

interface Reviews {
  ups: Upstream[];
  endpoints: string;
  close(): Promise<void>;
}

async function reviews(): Promise<Reviews> {
  const ups = [await startUpstream('v1'), await startUpstream('v2'), await startUpstream('v3')];
  return {
    ups,
    endpoints: endpointsYaml('reviews', 9080, ups.map((u, i) => [u.port, `v${i + 1}`] as const)),
    close: async () => {
      for (const u of ups) await u.close();
    },
  };
}

async function get(port: number, host: string, headers: Record<string, string> = {}, urlPath = '/reviews/0'): Promise<{ status: number; upstream: string; headers: Record<string, string | string[] | undefined>; body: string }> {
  // a new connection each time: a live config change drains the old listener's keep-alive connections
  const r = await request(`http://127.0.0.1:${port}${urlPath}`, { headers: { host, ...headers }, reset: true });
  const body = await r.body.text();
  return { status: r.statusCode, upstream: String(r.headers['x-upstream'] ?? ''), headers: r.headers, body };
}

const VS_ALL_V1 = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: { host: reviews, subset: v1 }
`;

const VS_JASON_V2 = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: { exact: jason }
    route:
    - destination: { host: reviews, subset: v2 }
  - route:
    - destination: { host: reviews, subset: v1 }
`;

t.test('request routing: all traffic to v1, then end-user jason to v2', async (t) => {
  const r = await reviews();
  const keel = await startIstioKeel(r.endpoints + REVIEWS_DR + VS_ALL_V1);
  t.teardown(async () => {
    await keel.stop();
    await r.close();
  });
  for (let i = 0; i < 10; i++) t.equal((await get(keel.port, 'reviews:9080')).upstream, 'v1', 'every request reaches v1');
  t.equal((await get(keel.port, 'reviews:9080', { 'end-user': 'jason' })).upstream, 'v1', 'jason too');
  // every short form of the name routes (the sidecar's domains), the FQDN as well
  for (const host of ['reviews', 'reviews.default', 'reviews.default.svc', 'reviews.default.svc.cluster.local:9080']) {
    t.equal((await get(keel.port, host)).upstream, 'v1', `Host ${host}`);
  }
  t.equal((await get(keel.port, 'ratings:9080')).status, 404, 'an unknown host has no route');

  keel.apply(r.endpoints + REVIEWS_DR + VS_JASON_V2);
  t.equal((await get(keel.port, 'reviews:9080', { 'end-user': 'jason' })).upstream, 'v2', 'jason sees v2 (black stars)');
  t.equal((await get(keel.port, 'reviews:9080', { 'end-user': 'jason' }, '/reviews/1')).upstream, 'v2');
  t.equal((await get(keel.port, 'reviews:9080', { 'end-user': 'someone' })).upstream, 'v1', 'another user sees v1 (no stars)');
  t.equal((await get(keel.port, 'reviews:9080')).upstream, 'v1', 'no user: v1');
});

t.test('traffic shifting: 50/50 between v1 and v3, then 100% to v3 (applied live)', async (t) => {
  const r = await reviews();
  const half = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - route:
    - { destination: { host: reviews, subset: v1 }, weight: 50 }
    - { destination: { host: reviews, subset: v3 }, weight: 50 }
`;
  const keel = await startIstioKeel(r.endpoints + REVIEWS_DR + half);
  t.teardown(async () => {
    await keel.stop();
    await r.close();
  });
  const N = 400;
  const counts: Record<string, number> = { v1: 0, v2: 0, v3: 0 };
  for (let i = 0; i < N; i++) counts[(await get(keel.port, 'reviews:9080')).upstream]++;
  // Binomial(400, 0.5): sd = 10 requests (2.5 points); the tolerance is 4 sd = 10 points.
  t.equal(counts.v2, 0, 'v2 gets nothing');
  t.ok(Math.abs(counts.v3 / N - 0.5) <= 0.1, `v3 share ${counts.v3}/${N} within 50% ± 10 points`);
  t.equal(counts.v1 + counts.v3, N);

  keel.apply(r.endpoints + REVIEWS_DR + half.replace('weight: 50 }\n    - { destination: { host: reviews, subset: v3 }, weight: 50 }', 'weight: 0 }\n    - { destination: { host: reviews, subset: v3 }, weight: 100 }'));
  for (let i = 0; i < 20; i++) t.equal((await get(keel.port, 'reviews:9080')).upstream, 'v3', 'after the shift every request reaches v3');
});

t.test('fault injection: a delay for jason, then an HTTP abort for jason', async (t) => {
  const r = await reviews();
  const ratings = await startUpstream('ratings-v1');
  const ratingsEp = endpointsYaml('ratings', 9080, [[ratings.port, 'v1']]);
  const delay = (ms: number): string => `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ratings }
spec:
  hosts: [ratings]
  http:
  - match:
    - headers: { end-user: { exact: jason } }
    fault:
      delay:
        percentage: { value: 100.0 }
        fixedDelay: ${ms}ms
    route:
    - destination: { host: ratings }
  - route:
    - destination: { host: ratings }
`;
  const keel = await startIstioKeel(r.endpoints + ratingsEp + delay(700));
  t.teardown(async () => {
    await keel.stop();
    await r.close();
    await ratings.close();
  });
  let start = Date.now();
  const delayed = await get(keel.port, 'ratings:9080', { 'end-user': 'jason' });
  const took = Date.now() - start;
  t.equal(delayed.status, 200, 'the delayed request still succeeds');
  t.ok(took >= 690, `jason waited at least the 700ms delay (${took}ms)`);
  start = Date.now();
  t.equal((await get(keel.port, 'ratings:9080', { 'end-user': 'other' })).status, 200);

  keel.apply(
    r.endpoints +
      ratingsEp +
      `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ratings }
spec:
  hosts: [ratings]
  http:
  - match:
    - headers: { end-user: { exact: jason } }
    fault:
      abort:
        percentage: { value: 100.0 }
        httpStatus: 500
    route:
    - destination: { host: ratings }
  - route:
    - destination: { host: ratings }
`,
  );
  const before = ratings.requests.length;
  const aborted = await get(keel.port, 'ratings:9080', { 'end-user': 'jason' });
  t.equal(aborted.status, 500, 'jason gets the injected 500');
  t.equal(aborted.body, 'fault filter abort', "Envoy's abort body");
  t.equal(ratings.requests.length, before, 'an aborted request never reaches ratings');
  t.equal((await get(keel.port, 'ratings:9080', { 'end-user': 'other' })).status, 200, 'others are not affected');
});

t.test('request timeouts: a 0.5s route timeout against a 2s-slow upstream gives 504', async (t) => {
  const timers = new Set<NodeJS.Timeout>();
  const slow = await startUpstream('ratings-slow', (_req, res) => {
    const tm = setTimeout(() => {
      timers.delete(tm);
      if (!res.destroyed) res.end('late');
    }, 2000);
    timers.add(tm);
  });
  const ep = endpointsYaml('ratings', 9080, [[slow.port, 'v1']]);
  const vs = (timeout: string): string => `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ratings }
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: { host: ratings }
${timeout}
`;
  const keel = await startIstioKeel(ep + vs('    timeout: 0.5s'));
  t.teardown(async () => {
    for (const tm of timers) clearTimeout(tm);
    await keel.stop();
    await slow.close();
  });
  const start = Date.now();
  const res = await get(keel.port, 'ratings:9080');
  const took = Date.now() - start;
  t.equal(res.status, 504, 'gateway timeout');
  t.equal(res.body, 'upstream request timeout');
  t.ok(took >= 490, `answered after the 0.5s timeout (${took}ms), not when the upstream finished`);

  keel.apply(ep + vs(''));
  const ok = await get(keel.port, 'ratings:9080');
  t.equal(ok.status, 200, 'without a timeout (Istio default: none) the 2s answer arrives');
  t.equal(ok.body, 'late');
});

t.test('circuit breaking: maxConnections 1, http1MaxPendingRequests 1 overflow with 503 UO', async (t) => {
  const pending = new Set<() => void>();
  const up = await startUpstream('httpbin', (_req, res) => {
    // answers only when released, so the overflow is decided by the limits, not by timing
    pending.add(() => res.end('ok'));
  });
  const ep = endpointsYaml('httpbin', 8000, [[up.port, 'v1']]);
  const dr = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: httpbin }
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp: { maxConnections: 1 }
      http: { http1MaxPendingRequests: 1, maxRequestsPerConnection: 1 }
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
---`;
  const keel = await startIstioKeel(ep + dr);
  t.teardown(async () => {
    for (const p of pending) p();
    await keel.stop();
    await up.close();
  });
  const N = 8;
  let finished = 0;
  const results = Array.from({ length: N }, () => get(keel.port, 'httpbin:8000', {}, '/get').finally(() => finished++));
  // The upstream holds the one request it has: one more may wait (pending), the others overflow at
  // once. Wait for those N-2 answers (deadline 10s), then release the upstream.
  const deadline = Date.now() + 10_000;
  while ((pending.size === 0 || finished < N - 2) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  const overflowed: number[] = [];
  const all = Promise.all(results);
  const releaser = setInterval(() => {
    for (const p of pending) {
      pending.delete(p);
      p();
    }
  }, 50);
  const done = await all;
  clearInterval(releaser);
  for (const d of done) if (d.status === 503) overflowed.push(d.status);
  const ok = done.filter((d) => d.status === 200).length;
  t.ok(ok >= 1, `some requests went through (${ok})`);
  t.equal(overflowed.length, N - 2, `all but the active and the pending one were refused (${overflowed.length} of ${N})`);
  t.ok(
    done.filter((d) => d.status === 503).every((d) => d.headers['x-envoy-overloaded'] === 'true'),
    'every 503 carries x-envoy-overloaded: true (flag UO)',
  );
  t.ok(up.requests.length <= ok, 'the refused ones never reached the upstream');
});

t.test('mirroring: all traffic to v1, a copy of each request to v2', async (t) => {
  const r = await reviews();
  const keel = await startIstioKeel(
    r.endpoints +
      REVIEWS_DR +
      `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: { host: reviews, subset: v1 }
      weight: 100
    mirror: { host: reviews, subset: v2 }
    mirrorPercentage: { value: 100.0 }
`,
  );
  t.teardown(async () => {
    await keel.stop();
    await r.close();
  });
  for (let i = 0; i < 5; i++) t.equal((await get(keel.port, 'reviews:9080', {}, `/m/${i}`)).upstream, 'v1', 'the client is answered by v1');
  const v2 = r.ups[1];
  const deadline = Date.now() + 5000;
  while (v2.requests.length < 5 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
  t.equal(v2.requests.length, 5, 'v2 received a copy of every request');
  t.same(v2.requests.map((q) => q.url).sort(), ['/m/0', '/m/1', '/m/2', '/m/3', '/m/4']);
  t.ok(v2.requests.every((q) => String(q.headers.host).includes('-shadow')), `mirrored requests carry the -shadow host (${v2.requests[0]?.headers.host})`);
  t.equal(r.ups[2].requests.length, 0, 'v3 sees nothing');
});

t.test('ingress gateway: TLS (SIMPLE, credentialName -> files) for one host, SNI and Host routing', async (t) => {
  const { crt, key } = await selfSignedCert();
  const creds = mkdtempSync(path.join(tmpdir(), 'keel-creds-'));
  mkdirSync(path.join(creds, 'httpbin-credential'));
  copyFileSync(crt, path.join(creds, 'httpbin-credential', 'tls.crt'));
  copyFileSync(key, path.join(creds, 'httpbin-credential', 'tls.key'));
  const up = await startUpstream('httpbin');
  const yaml =
    endpointsYaml('httpbin', 8000, [[up.port, 'v1']]) +
    `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: mygateway }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: 443, name: https, protocol: HTTPS }
    tls: { mode: SIMPLE, credentialName: httpbin-credential }
    hosts: [httpbin.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: httpbin }
spec:
  hosts: [httpbin.example.com]
  gateways: [mygateway]
  http:
  - match:
    - uri: { prefix: /status }
    - uri: { prefix: /delay }
    route:
    - destination: { host: httpbin, port: { number: 8000 } }
`;
  const keel = await startIstioKeel(yaml, { mode: 'gateway', credentialsDir: creds });
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  t.same([...keel.ports.keys()], ['127.0.0.1_443'], 'one listener for the server port');
  const port = keel.ports.get('127.0.0.1_443')!;
  const fetch = (servername: string, host: string, p: string): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port, path: p, servername, headers: { host }, ca: [require('node:fs').readFileSync(crt)], checkServerIdentity: () => undefined }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
  const ok = await fetch('httpbin.example.com', 'httpbin.example.com', '/status/418');
  t.equal(ok.status, 200, 'routed to httpbin over TLS');
  t.match(JSON.parse(ok.body), { upstream: 'httpbin', url: '/status/418' });
  t.equal(up.requests[0].headers['x-forwarded-proto'], 'https', 'the upstream learns the request came over TLS');
  t.equal((await fetch('httpbin.example.com', 'httpbin.example.com', '/headers')).status, 404, 'a path the VirtualService does not match: 404');
  t.equal((await fetch('httpbin.example.com', 'other.example.com', '/status/200')).status, 404, 'another Host: no virtual host, 404');
  // An SNI the gateway does not serve finds no filter chain: the handshake fails.
  await t.rejects(
    new Promise((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername: 'other.example.com', rejectUnauthorized: false }, () => resolve(s));
      s.on('error', reject);
      s.on('close', () => reject(new Error('closed')));
    }),
    'no TLS for other.example.com',
  );
});

t.test('authorization: DENY and ALLOW AuthorizationPolicies through the RBAC filter (403 RBAC: access denied)', async (t) => {
  const up = await startUpstream('httpbin');
  const keel = await startIstioKeel(
    endpointsYaml('httpbin', 8000, [[up.port, 'v1']]) +
      `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin }
spec:
  action: DENY
  rules:
  - to: [{ operation: { paths: ["/admin*"] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-reads }
spec:
  action: ALLOW
  rules:
  - to: [{ operation: { methods: [GET, HEAD] } }]
  - when: [{ key: "request.headers[x-token]", values: [letmein] }]
`,
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const call = async (method: string, p: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> => {
    const r = await request(`http://127.0.0.1:${keel.port}${p}`, { method, headers: { host: 'httpbin:8000', ...headers }, reset: true });
    return { status: r.statusCode, body: await r.body.text() };
  };
  t.equal((await call('GET', '/get')).status, 200, 'GET is allowed');
  const denied = await call('GET', '/admin/users');
  t.equal(denied.status, 403, 'the DENY policy wins over ALLOW');
  t.equal(denied.body, 'RBAC: access denied');
  t.equal((await call('POST', '/post')).status, 403, 'POST matches no ALLOW rule');
  t.equal((await call('POST', '/post', { 'x-token': 'letmein' })).status, 200, 'the when condition allows it');
  t.same(up.requests.map((r) => `${r.method} ${r.url}`), ['GET /get', 'POST /post'], 'denied requests never reach the upstream');
});

t.test('ingress gateway: TLS PASSTHROUGH by SNI to a TLS upstream (the gateway never decrypts)', async (t) => {
  const fs = await import('node:fs');
  const { crt, key } = await selfSignedCert();
  const backend = https.createServer({ cert: fs.readFileSync(crt), key: fs.readFileSync(key) }, (_req, res) => res.end('hello from the TLS backend'));
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
  const backendPort = (backend.address() as import('node:net').AddressInfo).port;
  const keel = await startIstioKeel(
    endpointsYaml('my-nginx', 443, [[backendPort, 'v1']]).replace('port: 443', 'ports: [{ number: 443, name: https, protocol: HTTPS }]') +
      `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: mygateway }
spec:
  servers:
  - port: { number: 443, name: https, protocol: HTTPS }
    tls: { mode: PASSTHROUGH }
    hosts: [nginx.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: nginx }
spec:
  hosts: [nginx.example.com]
  gateways: [mygateway]
  tls:
  - match:
    - port: 443
      sniHosts: [nginx.example.com]
    route:
    - destination: { host: my-nginx, port: { number: 443 } }
`,
    { mode: 'gateway' },
  );
  t.teardown(async () => {
    await keel.stop();
    backend.closeAllConnections();
    await new Promise<void>((r) => backend.close(() => r()));
  });
  const port = [...keel.ports.values()][0];
  const body = await new Promise<string>((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path: '/', servername: 'nginx.example.com', ca: [fs.readFileSync(crt)], checkServerIdentity: () => undefined }, (res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve(b));
    });
    req.on('error', reject);
    req.end();
  });
  t.equal(body, 'hello from the TLS backend', "the backend's own TLS reached the client through the gateway");
});
