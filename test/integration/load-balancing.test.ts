// Load balancing through keel to real upstreams on loopback: consistent hashing on a header
// (sticky per user), a generated hash cookie (Set-Cookie with Max-Age and Path, then sticky), source
// IP hashing, a 90/10 weighted-cluster split over HTTP (statistical, tolerance stated), and the
// upstream connection policy: max_requests_per_connection and the upstream idle_timeout.
import t from 'tap';
import type * as net from 'node:net';
import { request } from 'undici';
import { bootstrap, startKeel, startUpstream, type Upstream } from '../helpers/keel';
import { waitUntil } from '../helpers/wait';

const until = (cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> => waitUntil(cond, what, ms);

function vhost(routeExtra: string): string {
  return `
            - name: a
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route:
${routeExtra}`;
}

function hostsCluster(name: string, ports: number[], extra: string): string {
  return `
  - name: ${name}
    type: STATIC
    connect_timeout: 1s
${extra}
    load_assignment:
      cluster_name: ${name}
      endpoints:
      - lb_endpoints:
${ports.map((p) => `        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${p} } } }`).join('\n')}`;
}

async function three(): Promise<Upstream[]> {
  return Promise.all(['u1', 'u2', 'u3'].map((n) => startUpstream(n)));
}

async function who(url: string, headers: Record<string, string> = {}): Promise<{ upstream: string; setCookie: string | string[] | undefined }> {
  const r = await request(url, { headers });
  await r.body.text();
  return { upstream: r.headers['x-upstream'] as string, setCookie: r.headers['set-cookie'] };
}

t.test('MAGLEV on a header: each user sticks to one host; users spread', async (t) => {
  const ups = await three();
  const keel = await startKeel(
    bootstrap(
      vhost(`                  cluster: u
                  hash_policy: [{ header: { header_name: x-user } }]`),
      hostsCluster('u', ups.map((u) => u.port), '    lb_policy: MAGLEV'),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    for (const u of ups) await u.close();
  });
  const byUser = new Map<string, Set<string>>();
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 30; i++) {
      const u = `user-${i}`;
      const { upstream } = await who(`${keel.url}/p`, { 'x-user': u });
      if (!byUser.has(u)) byUser.set(u, new Set());
      byUser.get(u)!.add(upstream);
    }
  }
  t.ok([...byUser.values()].every((s) => s.size === 1), 'every user always reached the same host (3 requests each)');
  const used = new Set([...byUser.values()].map((s) => [...s][0]));
  t.equal(used.size, 3, '30 users spread over all 3 hosts');
});

t.test('RING_HASH with a generated cookie: Set-Cookie (Max-Age, Path, HttpOnly) once, then sticky', async (t) => {
  const ups = await three();
  const keel = await startKeel(
    bootstrap(
      vhost(`                  cluster: u
                  hash_policy: [{ cookie: { name: sticky, ttl: 60s, path: /app } }]`),
      hostsCluster('u', ups.map((u) => u.port), '    lb_policy: RING_HASH'),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    for (const u of ups) await u.close();
  });
  const first = await who(`${keel.url}/app/x`);
  t.type(first.setCookie, 'string');
  const m = /^sticky="([0-9a-f]{16})"; Max-Age=60; Path=\/app; HttpOnly$/.exec(String(first.setCookie));
  t.ok(m, `Set-Cookie: ${first.setCookie}`);
  const value = m![1];
  for (let i = 0; i < 10; i++) {
    const r = await who(`${keel.url}/app/y${i}`, { cookie: `other=1; sticky=${value}` });
    t.equal(r.upstream, first.upstream, `request ${i} with the cookie: same host`);
    t.equal(r.setCookie, undefined, 'no new cookie when the request has one');
  }
  const again = await who(`${keel.url}/app/z`);
  t.equal(again.upstream, first.upstream, 'a cookieless request from the same client hashes the same');
  const spread = new Set<string>();
  for (let i = 0; i < 30; i++) spread.add((await who(`${keel.url}/app/s`, { cookie: `sticky=v${i}` })).upstream);
  t.ok(spread.size >= 2, `different cookies reach different hosts (${spread.size})`);
});

t.test('connection source_ip hashing keeps a client on one host', async (t) => {
  const ups = await three();
  const keel = await startKeel(
    bootstrap(
      vhost(`                  cluster: u
                  hash_policy: [{ connection_properties: { source_ip: true } }]`),
      hostsCluster('u', ups.map((u) => u.port), '    lb_policy: RING_HASH'),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    for (const u of ups) await u.close();
  });
  const seen = new Set<string>();
  for (let i = 0; i < 12; i++) seen.add((await who(`${keel.url}/s${i}`)).upstream);
  t.equal(seen.size, 1, 'every request from 127.0.0.1 reached the same host');
});

t.test('weighted clusters 90/10 over 2,000 HTTP requests: within 3 points (about 4.5 standard deviations)', async (t) => {
  const big = await startUpstream('big');
  const small = await startUpstream('small');
  const keel = await startKeel(
    bootstrap(
      vhost(`                  weighted_clusters: { clusters: [{ name: big, weight: 90 }, { name: small, weight: 10 }] }`),
      hostsCluster('big', [big.port], '') + hostsCluster('small', [small.port], ''),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await big.close();
    await small.close();
  });
  const n = 2_000;
  for (let i = 0; i < n; i += 20) await Promise.all(Array.from({ length: 20 }, (_, j) => who(`${keel.url}/w${i + j}`)));
  t.equal(big.requests.length + small.requests.length, n);
  const pct = (big.requests.length / n) * 100;
  t.ok(Math.abs(pct - 90) <= 3, `big got ${pct.toFixed(2)}% (90 ± 3)`);
});

t.test('max_requests_per_connection and the upstream idle_timeout', async (t) => {
  const conns: net.Socket[] = [];
  const closed: Promise<void>[] = [];
  const up = await startUpstream('u');
  up.server.on('connection', (s: net.Socket) => {
    conns.push(s);
    closed.push(new Promise((r) => s.once('close', () => r())));
  });
  const keel = await startKeel(
    bootstrap(
      vhost(`                  cluster: u`),
      hostsCluster(
        'u',
        [up.port],
        `    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: { max_requests_per_connection: 2, idle_timeout: 0.3s }
        explicit_http_config: { http_protocol_options: {} }`,
      ),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  for (let i = 0; i < 5; i++) await who(`${keel.url}/m${i}`);
  t.equal(up.requests.length, 5);
  t.equal(conns.length, 3, '5 sequential requests at 2 per connection: 3 connections');
  // the last connection is idle now; keel closes it after idle_timeout
  await closed[2];
  t.pass('the idle upstream connection was closed by keel');
  await until(() => conns.every((s) => s.destroyed), 3000, 'all upstream connections closed');
});
