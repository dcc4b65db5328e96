// Istio workload facts: node metadata with Istio's label fallbacks, the metadata exchange header
// (base64 protobuf Struct) both ways, garbage headers, and the bounded peer cache.
import t from 'tap';
import { decodePeerMetadata, encodePeerMetadata, exchangedMetadata, PeerCache, UNKNOWN_WORKLOAD, workloadFromMetadata, workloadFromPrincipal } from '../../../src/stats/peer-metadata';

t.test('node metadata to workload labels', async (t) => {
  t.same(workloadFromMetadata({ NAME: 'reviews-v1-abc', NAMESPACE: 'bookinfo', WORKLOAD_NAME: 'reviews-v1', CLUSTER_ID: 'c1', LABELS: { app: 'reviews', version: 'v1' } }), {
    workload: 'reviews-v1',
    namespace: 'bookinfo',
    app: 'reviews',
    version: 'v1',
    canonicalService: 'reviews',
    canonicalRevision: 'v1',
    cluster: 'c1',
    principal: 'unknown',
  });
  const canon = workloadFromMetadata({ NAME: 'p', LABELS: { 'service.istio.io/canonical-name': 'svc', 'service.istio.io/canonical-revision': 'r9', app: 'a' } });
  t.equal(canon.canonicalService, 'svc');
  t.equal(canon.canonicalRevision, 'r9');
  t.equal(canon.workload, 'p', 'NAME when WORKLOAD_NAME is missing');
  const bare = workloadFromMetadata({ WORKLOAD_NAME: 'w' });
  t.equal(bare.canonicalService, 'w', 'workload name when there is no app label');
  t.equal(bare.canonicalRevision, 'latest');
  t.equal(bare.namespace, 'unknown');
  t.equal(workloadFromMetadata({ NAMESPACE: 'x', SERVICE_ACCOUNT: 'sa' }).principal, 'unknown', 'no principal without TLS');
  t.equal(workloadFromMetadata({}, 'spiffe://td/ns/x/sa/y').principal, 'spiffe://td/ns/x/sa/y');
  t.match(workloadFromPrincipal('spiffe://cluster.local/ns/prod/sa/web'), { namespace: 'prod', principal: 'spiffe://cluster.local/ns/prod/sa/web', workload: 'unknown' });
});

t.test('exchange header round trip', async (t) => {
  const md = { NAME: 'n', NAMESPACE: 'ns', LABELS: { app: 'a', version: 'v' }, PORTS: [80, 443], ON: true, PROXY_CONFIG: { x: 1 } };
  const ex = exchangedMetadata(md);
  t.same(Object.keys(ex).sort(), ['LABELS', 'NAME', 'NAMESPACE'], 'only the identifying keys are sent');
  const b64 = encodePeerMetadata(md);
  t.match(b64, /^[A-Za-z0-9+/]+=*$/);
  t.same(decodePeerMetadata(b64), md, 'Struct values of every kind survive');
  t.equal(decodePeerMetadata(''), undefined);
  t.equal(decodePeerMetadata('!!!not base64!!!'), undefined);
  t.equal(decodePeerMetadata(Buffer.from([0xff, 0xff, 0xff, 0x0f]).toString('base64')), undefined, 'bad protobuf never throws');
});

t.test('peer cache decodes once and is bounded', async (t) => {
  const c = new PeerCache(2);
  const h = encodePeerMetadata({ WORKLOAD_NAME: 'w', NAMESPACE: 'n' });
  const a = c.get(h, undefined);
  t.equal(a.workload, 'w');
  t.equal(c.get(h, undefined), a, 'same object from the cache');
  t.equal(c.get('garbage', undefined), UNKNOWN_WORKLOAD);
  t.equal(c.get('', 'spiffe://td/ns/q/sa/s').namespace, 'q', 'TLS identity alone');
  for (let i = 0; i < 10; i++) c.get(encodePeerMetadata({ WORKLOAD_NAME: `w${i}` }), undefined);
  t.not(c.get(h, undefined), a, 'evicted under pressure (max 2)');
});
