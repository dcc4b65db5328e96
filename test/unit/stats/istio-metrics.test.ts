// IstioMetrics on stand-in streams: labels per reporter, service from the cluster name / istio
// metadata / authority, gRPC status, mTLS policy, one child set per label set, and the bound on
// label sets (a flood of distinct peers collapses into the overflow set).
import t from 'tap';
import { Registry } from 'prom-client';
import { HeaderMap } from '../../../src/http/headers';
import { IstioMetrics, serviceFromCluster, serviceFromHost } from '../../../src/stats/istio-metrics';
import { encodePeerMetadata } from '../../../src/stats/peer-metadata';
import type { ActiveStream } from '../../../src/http/stream';

function stream(o: Partial<Record<string, unknown>> = {}): ActiveStream {
  return {
    connection: { remoteAddress: '10.0.0.1', remotePort: 1, localAddress: '10.0.0.2', localPort: 2, secure: false },
    headers: new HeaderMap([':method', 'GET', ':path', '/']),
    responseHeaders: new HeaderMap(['content-type', 'text/plain']),
    responseCode: 200,
    responseFlags: '',
    bytesReceived: 0,
    bytesSent: 5,
    startTime: Date.now(),
    grpc: false,
    authority: 'web.shop.svc.cluster.local:8080',
    cluster: { name: 'inbound|8080||', config: { metadata: {} } },
    ...o,
  } as unknown as ActiveStream;
}

const md = { WORKLOAD_NAME: 'web', NAMESPACE: 'shop', LABELS: { app: 'web', version: 'v3' }, CLUSTER_ID: 'k' };

async function series(reg: Registry, name: string): Promise<Array<{ labels: Record<string, string | number>; value: number }>> {
  const m = (await reg.getMetricsAsJSON()).find((x) => x.name === name);
  return (m?.values ?? []) as Array<{ labels: Record<string, string | number>; value: number }>;
}

t.test('services', async (t) => {
  t.same(serviceFromHost('reviews.default.svc.cluster.local'), { host: 'reviews.default.svc.cluster.local', name: 'reviews', namespace: 'default' });
  t.same(serviceFromHost('example.com'), { host: 'example.com', name: 'example.com', namespace: 'unknown' });
  t.same(serviceFromCluster('outbound|9080|v1|reviews.default.svc.cluster.local', {}), { host: 'reviews.default.svc.cluster.local', name: 'reviews', namespace: 'default' });
  t.same(serviceFromCluster('inbound|80||', { istio: { services: [{ host: 'a.b.svc.cluster.local', name: 'a', namespace: 'b' }] } }), { host: 'a.b.svc.cluster.local', name: 'a', namespace: 'b' });
  t.equal(serviceFromCluster('plain', {}), undefined);
});

t.test('destination reporter with mTLS and a gRPC status', async (t) => {
  const reg = new Registry();
  const m = new IstioMetrics(reg, md);
  const peer = encodePeerMetadata({ WORKLOAD_NAME: 'cart', NAMESPACE: 'shop', LABELS: { app: 'cart' } });
  const s = stream({
    connection: { remoteAddress: 'a', remotePort: 1, localAddress: 'b', localPort: 2, secure: true, peerPrincipal: 'spiffe://cluster.local/ns/shop/sa/cart', localPrincipal: 'spiffe://cluster.local/ns/shop/sa/web' },
    peerMetadata: peer,
    grpc: true,
    responseTrailers: new HeaderMap(['grpc-status', '14']),
    responseFlags: 'URX',
  });
  m.recordHttp('destination', s);
  m.recordHttp('destination', s);
  const v = await series(reg, 'istio_requests_total');
  t.equal(v.length, 1, 'one series for two identical requests');
  t.equal(v[0].value, 2);
  t.match(v[0].labels, {
    reporter: 'destination',
    source_workload: 'cart',
    source_principal: 'spiffe://cluster.local/ns/shop/sa/cart',
    destination_workload: 'web',
    destination_principal: 'spiffe://cluster.local/ns/shop/sa/web',
    destination_service: 'web.shop.svc.cluster.local',
    destination_service_name: 'web',
    request_protocol: 'grpc',
    grpc_response_status: '14',
    response_flags: 'URX',
    connection_security_policy: 'mutual_tls',
  });
});

t.test('label sets are bounded', async (t) => {
  const reg = new Registry();
  const m = new IstioMetrics(reg, md, 10);
  for (let i = 0; i < 50; i++) m.recordHttp('destination', stream({ peerMetadata: encodePeerMetadata({ WORKLOAD_NAME: `attacker-${i}` }) }));
  const v = await series(reg, 'istio_requests_total');
  t.equal(v.length, 11, '10 label sets, then one overflow set');
  const over = v.find((x) => x.labels.source_workload === 'unknown' && x.labels.destination_service === 'unknown');
  t.equal(over?.value, 40);
  t.equal(m.overflowed, 40);
  t.equal(v.reduce((a, x) => a + x.value, 0), 50, 'nothing is lost, only collapsed');
});

t.test('source reporter reads the peer from the response', async (t) => {
  const reg = new Registry();
  const m = new IstioMetrics(reg, md);
  m.recordHttp('source', stream({ cluster: { name: 'outbound|80||api.prod.svc.cluster.local', config: { metadata: {} } }, peerMetadata: encodePeerMetadata({ WORKLOAD_NAME: 'api', NAMESPACE: 'prod' }) }));
  m.recordHttp('source', stream({ cluster: undefined, authority: 'x.example.com', responseCode: 503, responseFlags: 'UH' }));
  const v = await series(reg, 'istio_requests_total');
  t.match(v.find((x) => x.labels.response_code === 200)?.labels ?? v.find((x) => x.labels.response_code === '200')?.labels, { reporter: 'source', source_workload: 'web', destination_workload: 'api', destination_service: 'api.prod.svc.cluster.local', connection_security_policy: 'unknown' });
  const failed = v.find((x) => String(x.labels.response_code) === '503');
  t.match(failed?.labels, { destination_workload: 'unknown', destination_service: 'x.example.com', response_flags: 'UH' });
  const bytes = await series(reg, 'istio_response_bytes');
  t.ok(bytes.length > 0);
});
