// keel configured over ADS by the fake istiod: delta and state-of-the-world streams over TLS with a
// bearer token, the Bookinfo productpage config (CDS, EDS, LDS, RDS) ACKed, readiness, traffic to a
// real upstream; a bad update NACKed with every error while traffic goes on; the control plane
// restarting (reconnect and resync); a route change while a long request is in flight; EDS changes
// in place; listener removal and replacement.
import t from 'tap';
import { request } from 'undici';
import { KeelServer } from '../../src/server/server';
import { parseBootstrapText } from '../../src/config/bootstrap';
import { Logger } from '../../src/common/logger';
import { startUpstream } from '../helpers/keel';
import { adsBootstrap, bookinfoProductpage, reviewsEndpoints, reviewsRoute, startFakeIstiod, REVIEWS_ALL, REVIEWS_V1, TYPE } from '../helpers/fake-istiod';
import { waitUntil } from '../helpers/wait';

// Loading Envoy's protos and (for the CLI) spawning TypeScript processes is slow on a loaded 2-core box.
t.setTimeout(240_000);

const until = (what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> => waitUntil(cond, what, timeoutMs);

function listenerPort(keel: KeelServer, name: string): number {
  return keel.listeners.find((l) => l.name === name)?.port ?? 0;
}

async function get(port: number, path = '/', host = 'reviews:9080'): Promise<{ status: number; body: string }> {
  const r = await request(`http://127.0.0.1:${port}${path}`, { headers: { host } });
  return { status: r.statusCode, body: await r.body.text() };
}

async function setup(t: Tap.Test, apiType: 'DELTA_GRPC' | 'GRPC'): Promise<{ istiod: FakeIstiod; keel: KeelServer; reviews: Awaited<ReturnType<typeof startUpstream>> }> {
  const reviews = await startUpstream('reviews-v1');
  const app = await startUpstream('productpage');
  const istiod = await startFakeIstiod();
  let keel: KeelServer | undefined;
  t.teardown(async () => {
    await keel?.stop(100);
    await istiod.stop();
    await reviews.close();
    await app.close();
  });
  istiod.load(bookinfoProductpage({ reviewsPort: reviews.port, appPort: app.port }));
  const { bootstrap } = parseBootstrapText(adsBootstrap(istiod, { apiType }), 'test');
  keel = new KeelServer(bootstrap, { log: new Logger(process.env.KEEL_TEST_LOG === '1' ? 'info' : 'off'), drainTimeMs: 200, listenerDrainTimeMs: 2000 });
  await keel.start();
  return { istiod, keel, reviews };
}

declare namespace Tap {
  type Test = Parameters<Parameters<typeof t.test>[1]>[0];
}

for (const mode of ['DELTA_GRPC', 'GRPC'] as const) {
  const m = mode === 'DELTA_GRPC' ? 'delta' : 'sotw';
  t.test(`${m}: config from the fake istiod, ACKed, ready, traffic routed`, async (t) => {
    const { istiod, keel } = await setup(t, mode);
    await until('ready', () => keel.ready);
    const first = istiod.requests[0];
    t.equal(first.mode, m);
    t.equal(first.typeUrl, TYPE.cluster, 'CDS is requested first');
    t.equal(first.node?.id, 'sidecar~10.0.0.5~productpage-v1-abc.default~default.svc.cluster.local', 'the node goes with the first request');
    t.equal(first.metadata.authorization, 'Bearer test-token');
    t.equal(first.metadata.clusterid, 'Kubernetes');
    t.equal(istiod.requests[1].node, undefined, 'set_node_on_first_message_only');
    // every type was ACKed (a request with the response nonce and no error)
    for (const type of [TYPE.cluster, TYPE.endpoint, TYPE.listener, TYPE.route]) {
      const ack = await istiod.waitFor((r) => r.typeUrl === type && r.nonce !== '' && r.errorDetail === undefined);
      t.ok(ack, `${type.split('.').pop()} ACKed`);
    }
    t.notOk(istiod.requests.some((r) => r.errorDetail !== undefined), 'no NACK: the Istio filters keel does not implement are skipped');
    const order = istiod.requests.filter((r) => r.nonce === '' || r.subscribe.length > 0).map((r) => r.typeUrl.split('.').pop());
    t.ok(order.indexOf('Listener') > order.indexOf('Cluster'), 'LDS after CDS');
    const eds = istiod.requests.find((r) => r.typeUrl === TYPE.endpoint)!;
    t.same([...eds.subscribe].sort(), [REVIEWS_ALL, REVIEWS_V1].sort(), 'EDS subscribes the EDS clusters by name');
    const rds = istiod.requests.find((r) => r.typeUrl === TYPE.route)!;
    t.same(rds.subscribe, ['9080'], 'RDS subscribes the route names of the listeners');
    t.ok(keel.clusters.get(REVIEWS_V1), 'EDS cluster active');
    t.equal(keel.clusters.get(REVIEWS_V1)!.hosts.length, 1, 'with its endpoint');
    t.same(keel.clusters.get(REVIEWS_V1)!.hosts[0].metadata, { 'envoy.transport_socket_match': { tlsMode: 'istio' }, istio: { workload: 'reviews-v1;default;reviews;v1;Kubernetes' } }, 'endpoint metadata (tlsMode: istio)');
    const port = listenerPort(keel, '0.0.0.0_9080');
    t.ok(port > 0, 'the outbound listener is bound');
    const r = await get(port, '/reviews/1');
    t.equal(r.status, 200);
    t.equal(JSON.parse(r.body).upstream, 'reviews-v1');
    t.ok(listenerPort(keel, 'virtualInbound') > 0 && listenerPort(keel, 'virtualOutbound') > 0, 'virtualInbound and virtualOutbound bound');
    const snap = keel.configSnapshot();
    t.equal(snap.xds?.mode, m);
    t.ok(snap.clusters.find((c) => c.name === REVIEWS_V1)?.version.startsWith('v'), 'config_dump has versions');
    t.ok(snap.routeConfigs.find((c) => c.name === '9080'), 'config_dump has the RDS table');
    t.match(snap.xds?.warnings?.['listener/0.0.0.0_9080']?.join('\n'), /skipping HTTP filter 'istio.metadata_exchange'[\s\S]*'istio.stats'/, 'skipped Istio filters are listed per resource for the admin');
  });

  t.test(`${m}: a bad update is NACKed with every error; traffic continues on the old config`, async (t) => {
    const { istiod, keel } = await setup(t, mode);
    await until('ready', () => keel.ready);
    const port = listenerPort(keel, '0.0.0.0_9080');
    const from = istiod.requests.length;
    istiod.set(TYPE.cluster, [
      { name: REVIEWS_V1, type: 'EDS', eds_cluster_config: { eds_config: { ads: {} }, service_name: REVIEWS_V1 }, connect_timeout: '-1s', lb_policy: 'LOAD_BALANCING_POLICY_CONFIG' },
    ]);
    const nack = await istiod.waitFor((r) => r.typeUrl === TYPE.cluster && r.errorDetail !== undefined, 10_000, from);
    t.match(nack.errorDetail, /cluster 'outbound\|9080\|v1\|reviews.default.svc.cluster.local'/);
    t.match(nack.errorDetail, /connect_timeout/, 'the first error');
    t.match(nack.errorDetail, /lb_policy/, 'and the second');
    if (m === 'sotw') t.not(nack.versionInfo, '', 'the NACK carries the last accepted version');
    const r = await get(port, '/after-nack');
    t.equal(r.status, 200, 'traffic continues on the old config');
    t.equal(keel.configSnapshot().xds?.types[TYPE.cluster]?.lastNack !== undefined, true, 'the NACK is in config_dump');
    t.ok(keel.ready, 'still ready');
    // A listener update with an unsupported network filter is NACKed too; the old listener serves.
    const from2 = istiod.requests.length;
    istiod.set(TYPE.listener, [
      { name: 'bad', address: { socket_address: { address: '127.0.0.1', port_value: 0 } }, filter_chains: [{ filters: [{ name: 'envoy.filters.network.redis_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy', stat_prefix: 'r' } }] }] },
    ]);
    const nack2 = await istiod.waitFor((r) => r.typeUrl === TYPE.listener && r.errorDetail !== undefined, 10_000, from2);
    t.match(nack2.errorDetail, /listener 'bad'.*redis_proxy/);
    t.equal((await get(port, '/after-nack-2')).status, 200);
  });

  t.test(`${m}: istiod restarts; keel keeps serving, reconnects and resyncs`, async (t) => {
    const { istiod, keel, reviews } = await setup(t, mode);
    await until('ready', () => keel.ready);
    const port = listenerPort(keel, '0.0.0.0_9080');
    await istiod.stop();
    t.equal((await get(port, '/while-down')).status, 200, 'the last good config keeps serving while disconnected');
    // change the world while keel is away: a second reviews endpoint
    const reviews2 = await startUpstream('reviews-v1-b');
    t.teardown(() => reviews2.close());
    istiod.set(TYPE.endpoint, [reviewsEndpoints(REVIEWS_V1, [reviews2.port])]);
    const before = istiod.requests.length;
    await istiod.start(istiod.port);
    await istiod.waitFor((r) => r.typeUrl === TYPE.cluster && r.nonce === '', 15_000, before);
    const resub = istiod.requests.slice(before).find((r) => r.typeUrl === TYPE.cluster && r.nonce === '')!;
    if (m === 'delta') t.ok(Object.keys(resub.initialVersions).includes(REVIEWS_V1), 'delta: the resync says which versions keel has');
    t.ok(resub.node, 'the node is sent again on the new stream');
    await until('the new endpoint', () => keel.clusters.get(REVIEWS_V1)?.hosts[0]?.port === reviews2.port, 15_000);
    const r = await get(port, '/after-restart');
    t.equal(JSON.parse(r.body).upstream, 'reviews-v1-b', 'resynced: traffic goes to the endpoint set while keel was away');
    t.ok(reviews.requests.length >= 1);
  });

  t.test(`${m}: a route change applies while a long request is in flight, which completes`, async (t) => {
    let release: () => void = () => undefined;
    const slow = await startUpstream('slow', (_req, res) => {
      release = () => {
        res.writeHead(200, { 'x-upstream': 'slow' });
        res.end('slow done');
      };
    });
    t.teardown(() => slow.close());
    const { istiod, keel } = await setup(t, mode);
    await until('ready', () => keel.ready);
    istiod.set(TYPE.endpoint, [reviewsEndpoints(REVIEWS_ALL, [slow.port])]);
    istiod.set(TYPE.route, [reviewsRoute('9080', REVIEWS_ALL)]);
    await until('route to the slow cluster', () => keel.configSnapshot().routeConfigs.find((r) => r.name === '9080')?.config.virtualHosts[0]?.routes.some((x) => JSON.stringify(x).includes(REVIEWS_ALL)) === true);
    await until('slow endpoint', () => keel.clusters.get(REVIEWS_ALL)?.hosts[0]?.port === slow.port);
    const port = listenerPort(keel, '0.0.0.0_9080');
    const inflight = get(port, '/long');
    await until('the slow upstream got the request', () => slow.requests.length === 1);
    // swap the route back to v1 while the long request is open
    istiod.set(TYPE.route, [reviewsRoute('9080', REVIEWS_V1, { prefix: '/' })]);
    await until('the new route table', () => keel.configSnapshot().routeConfigs.find((r) => r.name === '9080')?.config.virtualHosts[0]?.routes.some((x) => JSON.stringify(x).includes(REVIEWS_V1)) === true);
    const next = await get(port, '/next');
    t.equal(JSON.parse(next.body).upstream, 'reviews-v1', 'new requests take the new route');
    release();
    const done = await inflight;
    t.equal(done.status, 200, 'the request in flight completed');
    t.equal(done.body, 'slow done');
  });
}

for (const mode of ['DELTA_GRPC', 'GRPC'] as const) {
  t.test(`${mode === 'GRPC' ? 'sotw' : 'delta'}: EDS updates hosts in place; listener and cluster removal`, async (t) => {
    const { istiod, keel } = await setup(t, mode);
    await until('ready', () => keel.ready);
    const cluster = keel.clusters.get(REVIEWS_V1)!;
    const b = await startUpstream('reviews-v1-b');
    t.teardown(() => b.close());
    const oldHost = cluster.hosts[0];
    istiod.set(TYPE.endpoint, [reviewsEndpoints(REVIEWS_V1, [oldHost.port, b.port])]);
    await until('two hosts', () => keel.clusters.get(REVIEWS_V1)!.hosts.length === 2);
    t.equal(keel.clusters.get(REVIEWS_V1), cluster, 'the same cluster object: EDS changes hosts in place');
    t.equal(cluster.hosts[0], oldHost, 'the unchanged host is kept (its connections too)');
    // remove the outbound listener: it stops accepting
    const port = listenerPort(keel, '0.0.0.0_9080');
    istiod.remove(TYPE.listener, ['0.0.0.0_9080']);
    await until('listener removed', () => !keel.listeners.some((l) => l.name === '0.0.0.0_9080'));
    await t.rejects(get(port, '/gone'), 'the removed listener no longer accepts');
    istiod.remove(TYPE.cluster, [REVIEWS_ALL]);
    await until('cluster removed', () => keel.clusters.get(REVIEWS_ALL) === undefined);
    t.pass('cluster removed');
  });
}

t.test('a wrong token: the stream is refused and keel stays unready', async (t) => {
  const istiod = await startFakeIstiod();
  const { bootstrap } = parseBootstrapText(adsBootstrap(istiod, { apiType: 'DELTA_GRPC', token: 'wrong' }), 'test');
  const keel = new KeelServer(bootstrap, { log: new Logger('off') });
  t.teardown(async () => {
    await keel.stop(50);
    await istiod.stop();
  });
  await keel.start();
  await until('two refused streams (a retry after back-off)', () => istiod.refused >= 2);
  t.notOk(keel.ready);
  t.equal(istiod.requests.length, 0, 'no request got through');
});
