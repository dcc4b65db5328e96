// Run-time config changes with xDS semantics: warming (a listener waits for its routes, a cluster
// for its endpoints; initial_fetch_timeout), a listener changed at the same address takes over the
// socket while the old one drains its connection, a changed cluster lets the request in flight
// finish on the old host, path_config_source files watched on disk, KeelServer.applyBootstrap.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as http from 'node:http';
import * as https from 'node:https';
import { SecretManager } from '../../src/security/secret-manager';
import { mintServerCert } from '../helpers/fake-ca';
import { request } from 'undici';
import { KeelServer } from '../../src/server/server';
import { parseBootstrapText } from '../../src/config/bootstrap';
import { Logger } from '../../src/common/logger';
import { startUpstream, type Upstream } from '../helpers/keel';
import { adsBootstrap, bookinfoProductpage, reviewsEndpoints, reviewsRoute, startFakeIstiod, REVIEWS_V1, TYPE, type FakeIstiod } from '../helpers/fake-istiod';
import { waitUntil } from '../helpers/wait';

// Loading Envoy's protos and (for the CLI) spawning TypeScript processes is slow on a loaded 2-core box.
t.setTimeout(240_000);

const until = (what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> => waitUntil(cond, what, timeoutMs);

const log = (): Logger => new Logger(process.env.KEEL_TEST_LOG === '1' ? 'info' : 'off');

/** `rdsTimeout`: the outbound listener's rds.config_source.initial_fetch_timeout (bookinfo's: 0s, forever). */
async function withIstiod(t: Tap, timeout = '0s', rdsTimeout?: string): Promise<{ istiod: FakeIstiod; keel: KeelServer; reviews: Upstream }> {
  const reviews = await startUpstream('reviews-v1');
  const istiod = await startFakeIstiod();
  let keel: KeelServer | undefined;
  t.teardown(async () => {
    await keel?.stop(50);
    await istiod.stop();
    await reviews.close();
  });
  const cfg = bookinfoProductpage({ reviewsPort: reviews.port, appPort: reviews.port });
  if (rdsTimeout !== undefined) {
    const l = cfg.listeners.find((x) => x.name === '0.0.0.0_9080')!;
    const hcm = ((l.filter_chains as Record<string, unknown>[])[0].filters as Record<string, unknown>[])[0].typed_config as { rds: { config_source: Record<string, unknown> } };
    hcm.rds.config_source.initial_fetch_timeout = rdsTimeout;
  }
  istiod.set(TYPE.cluster, cfg.clusters);
  istiod.set(TYPE.endpoint, cfg.endpoints);
  istiod.set(TYPE.listener, cfg.listeners);
  keel = new KeelServer(parseBootstrapText(adsBootstrap(istiod, { initialFetchTimeout: timeout }), 't').bootstrap, { log: log(), listenerDrainTimeMs: 5000 });
  await keel.start();
  return { istiod, keel, reviews };
}

type Tap = Parameters<Parameters<typeof t.test>[1]>[0];

t.test('warming: a listener waits for its routes (initial_fetch_timeout 0 = forever), then serves', async (t) => {
  const { istiod, keel } = await withIstiod(t);
  await istiod.waitFor((r) => r.typeUrl === TYPE.route && r.subscribe.includes('9080'));
  await until('LDS applied', () => keel.configSnapshot().listeners.some((l) => l.name === '0.0.0.0_9080'));
  const l = keel.configSnapshot().listeners.find((x) => x.name === '0.0.0.0_9080')!;
  t.equal(l.state, 'warming', 'the listener warms until route 9080 arrives');
  t.notOk(keel.listeners.some((x) => x.name === '0.0.0.0_9080'), 'not serving yet');
  t.notOk(keel.ready, 'not ready while the listener warms');
  istiod.set(TYPE.route, [reviewsRoute('9080', REVIEWS_V1)]);
  await until('ready', () => keel.ready);
  t.equal(keel.configSnapshot().listeners.find((x) => x.name === '0.0.0.0_9080')!.state, 'active');
  const port = keel.listeners.find((x) => x.name === '0.0.0.0_9080')!.port;
  const r = await request(`http://127.0.0.1:${port}/`, { headers: { host: 'reviews' } });
  t.equal(r.statusCode, 200);
  await r.body.dump();
  // A new EDS cluster without endpoints warms; the server stays ready meanwhile.
  istiod.set(TYPE.cluster, [{ name: 'outbound|9080|v9|reviews.default.svc.cluster.local', type: 'EDS', eds_cluster_config: { eds_config: { ads: {}, initial_fetch_timeout: '0s' } }, connect_timeout: '1s' }]);
  await until('the new cluster is known', () => keel.configSnapshot().clusters.some((c) => c.name.includes('|v9|')));
  t.equal(keel.configSnapshot().clusters.find((c) => c.name.includes('|v9|'))!.state, 'warming', 'an EDS cluster warms until its endpoints arrive');
  t.equal(keel.clusters.get('outbound|9080|v9|reviews.default.svc.cluster.local'), undefined, 'and is not used meanwhile');
  t.ok(keel.ready, 'readiness is about the initial config only');
});

t.test('warming: the RDS initial_fetch_timeout expires -> the listener serves without its routes', async (t) => {
  const { keel } = await withIstiod(t, '0s', '0.3s');
  await until('ready after the fetch timeout', () => keel.ready);
  const l = keel.listeners.find((x) => x.name === '0.0.0.0_9080')!;
  t.ok(l, 'active');
  const r = await request(`http://127.0.0.1:${l.port}/`, { headers: { host: 'reviews' } });
  t.equal(r.statusCode, 404, 'no route table: 404 (NR)');
  await r.body.dump();
});

t.test('warming: an EDS cluster whose endpoints never come is used (empty) after its eds_config initial_fetch_timeout', async (t) => {
  const { istiod, keel } = await withIstiod(t);
  istiod.set(TYPE.route, [reviewsRoute('9080', REVIEWS_V1)]);
  await until('ready', () => keel.ready);
  const name = 'outbound|9080|v9|reviews.default.svc.cluster.local';
  istiod.set(TYPE.cluster, [{ name, type: 'EDS', eds_cluster_config: { eds_config: { ads: {}, initial_fetch_timeout: '0.3s' } }, connect_timeout: '1s' }]);
  await until('the cluster is active after the fetch timeout', () => keel.clusters.get(name) !== undefined);
  t.equal(keel.clusters.get(name)!.hosts.length, 0, 'with no hosts');
  t.equal(keel.configSnapshot().clusters.find((c) => c.name === name)!.state, 'active');
});

t.test('a listener changed at the same address: the socket is taken over, the open connection drains', async (t) => {
  let release: () => void = () => undefined;
  const slow = await startUpstream('slow', (req, res) => {
    if (req.url === '/slow') release = () => res.end('slow done');
    else res.end('fast');
  });
  t.teardown(() => slow.close());
  const { istiod, keel } = await withIstiod(t);
  istiod.set(TYPE.endpoint, [reviewsEndpoints(REVIEWS_V1, [slow.port])]);
  istiod.set(TYPE.route, [reviewsRoute('9080', REVIEWS_V1)]);
  await until('ready', () => keel.ready);
  await until('slow endpoint', () => keel.clusters.get(REVIEWS_V1)?.hosts[0]?.port === slow.port);
  const old = keel.listeners.find((x) => x.name === '0.0.0.0_9080')!;
  const port = old.port;
  // a keep-alive connection on the old listener, with a request in flight
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const get = (p: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> =>
    new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: p, agent, headers: { host: 'reviews' } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      }).on('error', reject);
    });
  const inflight = get('/slow');
  await until('the upstream has the request', () => slow.requests.length === 1);
  t.equal(old.activeConnections, 1, 'one open connection on the old listener');
  // change the listener: another stat prefix (a different config at the same address)
  const cfg = bookinfoProductpage({ reviewsPort: 1, appPort: 1 }).listeners.find((l) => l.name === '0.0.0.0_9080')!;
  const chain = (cfg.filter_chains as Record<string, unknown>[])[0];
  const hcm = ((chain.filters as Record<string, unknown>[])[0].typed_config as Record<string, unknown>);
  hcm.stat_prefix = 'changed';
  istiod.set(TYPE.listener, [cfg]);
  await until('the new listener', () => keel.listeners.find((x) => x.name === '0.0.0.0_9080') !== old);
  const now = keel.listeners.find((x) => x.name === '0.0.0.0_9080')!;
  t.equal(now.port, port, 'same port: the bound socket was taken over');
  // the request in flight on the old listener completes, with `connection: close`
  release();
  const r2 = await inflight;
  t.equal(r2.status, 200, 'the request in flight on the draining listener completes');
  t.equal(r2.body, 'slow done');
  t.equal(r2.headers.connection, 'close', 'and the draining connection is closed after it');
  await until('old listener idle', () => old.activeConnections === 0);
  // a new connection lands on the new listener
  const r3 = await request(`http://127.0.0.1:${port}/three`, { headers: { host: 'reviews' } });
  t.equal(r3.statusCode, 200);
  await r3.body.dump();
  t.ok(now.activeConnections >= 0);
});

t.test('a changed cluster: the request in flight finishes on the old host, new ones go to the new', async (t) => {
  let release: () => void = () => undefined;
  const slow = await startUpstream('old-host', (_req, res) => {
    release = () => res.end('old host done');
  });
  const fresh = await startUpstream('new-host');
  t.teardown(async () => {
    await slow.close();
    await fresh.close();
  });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-apply-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const yaml = (port: number, timeout: string): string => `
static_resources:
  listeners:
  - name: main
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          route_config: { virtual_hosts: [{ name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u, timeout: 0s } }] }] }
          http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
  clusters:
  - name: u
    connect_timeout: ${timeout}
    load_assignment: { cluster_name: u, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${port} } } } }] }] }
`;
  const keel = new KeelServer(parseBootstrapText(yaml(slow.port, '1s'), 't').bootstrap, { log: log() });
  t.teardown(() => keel.stop(50));
  const ports = await keel.start();
  const port = ports.get('main')!;
  const oldCluster = keel.clusters.get('u')!;
  const inflight = request(`http://127.0.0.1:${port}/long`).then(async (r) => ({ status: r.statusCode, body: await r.body.text() }));
  await until('the old host has the request', () => slow.requests.length === 1);
  keel.applyBootstrap(parseBootstrapText(yaml(fresh.port, '2s'), 't').bootstrap);
  t.not(keel.clusters.get('u'), oldCluster, 'the cluster was replaced');
  const r = await request(`http://127.0.0.1:${port}/next`);
  t.equal(JSON.parse(await r.body.text()).upstream, 'new-host', 'new requests use the new cluster');
  release();
  t.same(await inflight, { status: 200, body: 'old host done' }, 'the request in flight finished on the old host');
  t.equal(keel.listeners[0].port, port, 'the unchanged listener kept serving');
});

t.test('a listener whose only change is its inline routes keeps its connections; the routes swap in place', async (t) => {
  const yaml = (body: string): string => `
static_resources:
  listeners:
  - name: main
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          route_config: { virtual_hosts: [{ name: a, domains: ["*"], routes: [{ match: { prefix: / }, direct_response: { status: 200, body: { inline_string: ${body} } } }] }] }
          http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
`;
  const keel = new KeelServer(parseBootstrapText(yaml('one'), 't').bootstrap, { log: log() });
  t.teardown(() => keel.stop(50));
  const port = (await keel.start()).get('main')!;
  const listener = keel.listeners[0];
  // one keep-alive connection, reused for every request
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const sockets = new Set<unknown>();
  const get = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        sockets.add(res.socket);
        let body = '';
        res.on('data', (c: Buffer) => (body += c));
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
    });
  t.equal(await get(), 'one');
  keel.applyBootstrap(parseBootstrapText(yaml('two'), 't').bootstrap);
  t.equal(keel.listeners[0], listener, 'the listener was kept, not replaced');
  t.equal(await get(), 'two', 'the next request on the same connection sees the new routes');
  t.equal(sockets.size, 1, 'both requests used one connection: nothing was drained');
});

t.test('path_config_source: CDS and LDS from files, watched; a bad file changes nothing', async (t) => {
  const a = await startUpstream('a');
  const b = await startUpstream('b');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-pathcfg-'));
  t.teardown(async () => {
    await a.close();
    await b.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const cds = path.join(dir, 'cds.yaml');
  const lds = path.join(dir, 'lds.yaml');
  const writeAtomic = (file: string, text: string): void => {
    fs.writeFileSync(`${file}.tmp`, text);
    fs.renameSync(`${file}.tmp`, file);
  };
  const clusters = (version: string): string => `
version_info: "${version}"
resources:
${['a', 'b']
  .map(
    (n) => `- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: ${n}
  connect_timeout: 1s
  load_assignment: { cluster_name: ${n}, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${n === 'a' ? a.port : b.port} } } } }] }] }`,
  )
  .join('\n')}
`;
  const listeners = (cluster: string, version: string): string => `
version_info: "${version}"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: main
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: main
        route_config: { virtual_hosts: [{ name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: ${cluster} } }] }] }
        http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
`;
  writeAtomic(cds, clusters('1'));
  writeAtomic(lds, listeners('a', '1'));
  const { bootstrap } = parseBootstrapText(
    `
dynamic_resources:
  cds_config: { path_config_source: { path: ${cds} }, resource_api_version: V3 }
  lds_config: { path_config_source: { path: ${lds} }, resource_api_version: V3 }
`,
    't',
  );
  const keel = new KeelServer(bootstrap, { log: log(), listenerDrainTimeMs: 1000 });
  t.teardown(() => keel.stop(50));
  await keel.start();
  await until('ready', () => keel.ready);
  const port = keel.listeners.find((l) => l.name === 'main')!.port;
  const upstreamOf = async (): Promise<string> => {
    const r = await request(`http://127.0.0.1:${port}/`);
    return (JSON.parse(await r.body.text()) as { upstream: string }).upstream;
  };
  t.equal(await upstreamOf(), 'a');
  writeAtomic(lds, listeners('b', '2'));
  await until('the file change applied', () => keel.configSnapshot().xds?.types[TYPE.listener]?.version === '2');
  t.equal(await upstreamOf(), 'b', 'the rewritten file took effect (same port: socket taken over)');
  writeAtomic(lds, listeners('nope', '3').replace('stat_prefix: main', 'stat_prefix: main\n        bogus_field: 1'));
  await until('the bad file rejected', () => keel.configSnapshot().xds?.types[TYPE.listener]?.lastNack?.version === '3');
  t.match(keel.configSnapshot().xds?.types[TYPE.listener]?.lastNack?.error, /bogus_field/);
  t.equal(await upstreamOf(), 'b', 'the last good config keeps serving');
});

t.test('SDS over ADS: a listener names a secret; keel subscribes, receives it, serves TLS with it', async (t) => {
  const reviews = await startUpstream('reviews-v1');
  const istiod = await startFakeIstiod();
  let keel: KeelServer | undefined;
  t.teardown(async () => {
    await keel?.stop(50);
    await istiod.stop();
    await reviews.close();
  });
  const cert = mintServerCert(istiod.ca, { dns: ['bookinfo.example.com'] });
  const cfg = bookinfoProductpage({ reviewsPort: reviews.port, appPort: reviews.port });
  const l = cfg.listeners.find((x) => x.name === '0.0.0.0_9080')!;
  (l.filter_chains as Record<string, unknown>[])[0].transport_socket = {
    name: 'envoy.transport_sockets.tls',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
      common_tls_context: { tls_certificate_sds_secret_configs: [{ name: 'kubernetes://bookinfo-credential', sds_config: { ads: {}, resource_api_version: 'V3' } }] },
    },
  };
  istiod.load(cfg);
  keel = new KeelServer(parseBootstrapText(adsBootstrap(istiod), 't').bootstrap, { log: log(), secrets: new SecretManager() });
  await keel.start();
  const sub = await istiod.waitFor((r) => r.typeUrl === TYPE.secret && r.subscribe.includes('kubernetes://bookinfo-credential'));
  t.same(sub.subscribe, ['kubernetes://bookinfo-credential'], 'SDS subscribes the names the config uses (not default/ROOTCA)');
  istiod.set(TYPE.secret, [{ name: 'kubernetes://bookinfo-credential', tls_certificate: { certificate_chain: { inline_string: cert.certChain }, private_key: { inline_string: cert.privateKey } } }]);
  await istiod.waitFor((r) => r.typeUrl === TYPE.secret && r.nonce !== '' && r.errorDetail === undefined);
  await until('ready', () => keel!.ready);
  await until('the secret is in the store', () => keel!.secretManager?.get('kubernetes://bookinfo-credential') !== undefined);
  const port = keel.listeners.find((x) => x.name === '0.0.0.0_9080')!.port;
  const body = await new Promise<string>((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path: '/', servername: 'bookinfo.example.com', ca: istiod.rootCert, headers: { host: 'reviews' } }, (res) => {
      let b = '';
      res.on('data', (c: Buffer) => (b += c.toString()));
      res.on('end', () => resolve(b));
    });
    req.on('error', reject);
    req.end();
  });
  t.equal(JSON.parse(body).upstream, 'reviews-v1', 'TLS with the SDS certificate (verified against the test root), routed');
  // a bad secret is NACKed
  const from = istiod.requests.length;
  istiod.set(TYPE.secret, [{ name: 'kubernetes://bookinfo-credential', tls_certificate: { certificate_chain: { inline_string: cert.certChain } } }]);
  const nack = await istiod.waitFor((r) => r.typeUrl === TYPE.secret && r.errorDetail !== undefined, 10_000, from);
  t.match(nack.errorDetail, /secret 'kubernetes:\/\/bookinfo-credential'.*private_key is required/);
});
