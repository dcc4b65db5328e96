// Istio metrics between two keels acting as sidecars: a client-side keel (outbound listener,
// reporter=source) calls a server-side keel (inbound listener, reporter=destination) in front of an
// app. Real requests, then /stats/prometheus is scraped on both admins and on :15090/:15020
// (port 0): families, every standard label, the peer workload learned through the metadata
// exchange headers, counts per response code, histogram buckets, Envoy-style cluster stats, and
// istio_tcp_* for a TCP proxy.
import t from 'tap';
import * as http from 'node:http';
import * as net from 'node:net';
import { startKeel, startUpstream, type RunningKeel } from '../helpers/keel';
import { find, parseProm, sum } from '../helpers/prom';
import { HTTP_LABELS, TCP_LABELS, DURATION_BUCKETS_MS } from '../../src/stats/istio-metrics';
import { StatusServers } from '../../src/admin/status';

function get(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
  });
}

function node(id: string, md: string): string {
  return `
node:
  id: ${id}
  cluster: ${id}
  metadata: ${md}
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
`;
}

function hcmListener(name: string, direction: string, cluster: string, extra = ''): string {
  return `
  - name: ${name}
    traffic_direction: ${direction}
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ${name}
${extra}
          route_config:
            name: r
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: "${cluster}" }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }`;
}

function staticCluster(name: string, port: number): string {
  return `
  - name: "${name}"
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: "${name}"
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${port} } } }`;
}

const SERVER_MD = `{ NAME: server-7d4f-abcde, NAMESPACE: prod, WORKLOAD_NAME: server, CLUSTER_ID: Kubernetes, MESH_ID: cluster.local, SERVICE_ACCOUNT: server-sa, LABELS: { app: server, version: v2, "service.istio.io/canonical-name": server-svc, "service.istio.io/canonical-revision": r2 } }`;
const CLIENT_MD = `{ NAME: client-5c9-xyz, NAMESPACE: default, WORKLOAD_NAME: client, CLUSTER_ID: Kubernetes, LABELS: { app: client, version: v1 } }`;
const SVC = 'outbound|80||app.prod.svc.cluster.local';

t.test('istio_* metrics on both sides of a request, from real traffic', async (t) => {
  const app = await startUpstream('app', (req, res) => {
    res.writeHead(req.url === '/missing' ? 404 : 200, { 'content-type': 'text/plain' });
    res.end('hello from app');
  });
  t.teardown(() => app.close());
  const server: RunningKeel = await startKeel(`${node('sidecar~10.0.0.2~server.prod~prod.svc.cluster.local', SERVER_MD)}
static_resources:
  listeners:${hcmListener('virtualInbound', 'INBOUND', 'inbound|80||')}
  clusters:${staticCluster('inbound|80||', app.port)}
`);
  t.teardown(() => server.stop());
  const client: RunningKeel = await startKeel(`${node('sidecar~10.0.0.1~client.default~default.svc.cluster.local', CLIENT_MD)}
static_resources:
  listeners:${hcmListener('0.0.0.0_80', 'OUTBOUND', SVC)}
  clusters:${staticCluster(SVC, server.port)}
`);
  t.teardown(() => client.stop());

  for (let i = 0; i < 4; i++) {
    const r = await get(client.port, '/ok', { host: 'app.prod.svc.cluster.local' });
    t.equal(r.status, 200);
    t.equal(r.body, 'hello from app');
    t.notOk(r.headers['x-envoy-peer-metadata'], 'the peer metadata is taken off the response before the app sees it');
  }
  t.equal((await get(client.port, '/missing', { host: 'app.prod.svc.cluster.local' })).status, 404);
  t.equal(app.requests.length, 5);
  for (const r of app.requests) {
    t.notOk(r.headers['x-envoy-peer-metadata'], 'the inbound side strips the exchange headers');
    t.notOk(r.headers['x-envoy-peer-metadata-id']);
  }

  const scrapeC = parseProm((await get(client.server.admin!.port, '/stats/prometheus')).body);
  const scrapeS = parseProm((await get(server.server.admin!.port, '/stats/prometheus')).body);

  t.equal(scrapeC.types.get('istio_requests_total'), 'counter');
  t.equal(scrapeC.types.get('istio_request_duration_milliseconds'), 'histogram');
  t.equal(scrapeC.types.get('istio_request_bytes'), 'histogram');
  t.equal(scrapeC.types.get('istio_response_bytes'), 'histogram');

  // client side: reporter=source, destination learned from the server's response headers
  const src = find(scrapeC, 'istio_requests_total');
  t.equal(src.length, 2, 'one series per response code');
  for (const s of src) t.same(Object.keys(s.labels).sort(), [...HTTP_LABELS].sort(), 'every standard label is present');
  const ok = find(scrapeC, 'istio_requests_total', { response_code: '200' })[0];
  t.same(ok.labels, {
    reporter: 'source',
    source_workload: 'client',
    source_canonical_service: 'client',
    source_canonical_revision: 'v1',
    source_workload_namespace: 'default',
    source_principal: 'unknown',
    source_app: 'client',
    source_version: 'v1',
    source_cluster: 'Kubernetes',
    destination_workload: 'server',
    destination_workload_namespace: 'prod',
    destination_principal: 'unknown',
    destination_app: 'server',
    destination_version: 'v2',
    destination_service: 'app.prod.svc.cluster.local',
    destination_canonical_service: 'server-svc',
    destination_canonical_revision: 'r2',
    destination_service_name: 'app',
    destination_service_namespace: 'prod',
    destination_cluster: 'Kubernetes',
    request_protocol: 'http',
    response_code: '200',
    grpc_response_status: '',
    response_flags: '-',
    connection_security_policy: 'unknown',
  });
  t.equal(ok.value, 4);
  t.equal(find(scrapeC, 'istio_requests_total', { response_code: '404' })[0].value, 1);

  // server side: reporter=destination, source learned from the client's request headers
  const dst = find(scrapeS, 'istio_requests_total', { response_code: '200' })[0];
  t.equal(dst.value, 4);
  t.match(dst.labels, {
    reporter: 'destination',
    source_workload: 'client',
    source_workload_namespace: 'default',
    source_app: 'client',
    destination_workload: 'server',
    destination_app: 'server',
    destination_canonical_service: 'server-svc',
    connection_security_policy: 'none',
  });
  t.equal(sum(scrapeS, 'istio_requests_total'), 5);

  // histogram: Istio's buckets, counts match
  const buckets = find(scrapeC, 'istio_request_duration_milliseconds_bucket', { response_code: '200' }).map((s) => s.labels.le);
  t.same(buckets, [...DURATION_BUCKETS_MS.map(String), '+Inf']);
  t.equal(find(scrapeC, 'istio_request_duration_milliseconds_count', { response_code: '200' })[0].value, 4);
  t.equal(find(scrapeC, 'istio_request_duration_milliseconds_bucket', { response_code: '200', le: '+Inf' })[0].value, 4);
  const respBytes = find(scrapeC, 'istio_response_bytes_sum', { response_code: '200' })[0].value;
  t.ok(respBytes >= 4 * 'hello from app'.length, `response bytes include the bodies (${respBytes})`);
  t.ok(find(scrapeS, 'istio_request_bytes_count', { response_code: '200' })[0].value === 4);

  // Envoy-style stats with Istio's tag extraction
  t.equal(find(scrapeC, 'envoy_cluster_upstream_rq_total', { cluster_name: SVC })[0].value, 5);
  t.equal(find(scrapeC, 'envoy_cluster_upstream_rq', { cluster_name: SVC, response_code_class: '2xx' })[0].value, 4);
  t.equal(find(scrapeC, 'envoy_cluster_upstream_rq', { cluster_name: SVC, response_code_class: '4xx' })[0].value, 1);
  t.equal(find(scrapeS, 'envoy_http_downstream_rq_total', { http_conn_manager_prefix: 'virtualInbound' })[0].value, 5);
  t.equal(find(scrapeC, 'envoy_server_state')[0]?.value, 0, 'server.state LIVE');
  t.ok(find(scrapeC, 'envoy_listener_downstream_cx_active').length > 0);
  t.equal(scrapeC.types.get('envoy_cluster_upstream_rq_total'), 'counter');

  // the same series on :15090 and, merged with the app's metrics, on :15020
  const appMetrics = await startUpstream('metrics', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('# TYPE app_hits_total counter\napp_hits_total 42\n');
  });
  t.teardown(() => appMetrics.close());
  const status = new StatusServers(client.server, { host: '127.0.0.1', readinessPort: 0, statusPort: 0, prometheusPort: 0, appScrape: { scrape: 'true', port: String(appMetrics.port), path: '/metrics' } });
  await status.listen();
  t.teardown(() => status.close());
  const p15090 = parseProm((await get(status.ports.prometheus!, '/stats/prometheus')).body);
  t.equal(find(p15090, 'istio_requests_total', { response_code: '200' })[0].value, 4);
  const merged = parseProm((await get(status.ports.status!, '/stats/prometheus')).body);
  t.equal(find(merged, 'istio_requests_total', { response_code: '200' })[0].value, 4);
  t.equal(find(merged, 'app_hits_total')[0]?.value, 42, "the app's own metrics are merged in");
});

t.test('istio_tcp_* for an inbound TCP proxy', async (t) => {
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  t.teardown(() => echo.close());
  const port = (echo.address() as net.AddressInfo).port;
  const keel = await startKeel(`${node('sidecar~10.0.0.2~db.prod~prod.svc.cluster.local', SERVER_MD)}
static_resources:
  listeners:
  - name: virtualInbound
    traffic_direction: INBOUND
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: "inbound|5432||"
  clusters:${staticCluster('inbound|5432||', port)}
`);
  t.teardown(() => keel.stop());
  for (let i = 0; i < 2; i++) {
    await new Promise<void>((resolve, reject) => {
      const c = net.connect(keel.port, '127.0.0.1', () => c.write('ping-12345'));
      let got = '';
      c.on('data', (d) => {
        got += d.toString();
        if (got.length >= 10) c.end();
      });
      c.on('close', () => resolve());
      c.on('error', reject);
    });
  }
  // the close is counted when the proxy sees both sides gone
  const deadline = Date.now() + 3000;
  let p = parseProm((await get(keel.server.admin!.port, '/stats/prometheus')).body);
  while (sum(p, 'istio_tcp_connections_closed_total') < 2 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    p = parseProm((await get(keel.server.admin!.port, '/stats/prometheus')).body);
  }
  const opened = find(p, 'istio_tcp_connections_opened_total');
  t.equal(opened.length, 1);
  t.same(Object.keys(opened[0].labels).sort(), [...TCP_LABELS].sort(), 'TCP series lack response_code and grpc_response_status');
  t.match(opened[0].labels, { reporter: 'destination', request_protocol: 'tcp', destination_workload: 'server', connection_security_policy: 'none' });
  t.equal(opened[0].value, 2);
  t.equal(sum(p, 'istio_tcp_connections_closed_total'), 2);
  t.equal(sum(p, 'istio_tcp_received_bytes_total'), 20);
  t.equal(sum(p, 'istio_tcp_sent_bytes_total'), 20);

  // a long-lived connection reports its bytes periodically, not only at close
  const c = net.connect(keel.port, '127.0.0.1');
  await new Promise<void>((resolve) => c.once('connect', () => resolve()));
  c.write('0123456789abcdef');
  await new Promise<void>((resolve) => {
    let n = 0;
    c.on('data', (d) => {
      n += d.length;
      if (n >= 16) resolve();
    });
  });
  keel.server.telemetry.reportOpenTcp();
  p = parseProm((await get(keel.server.admin!.port, '/stats/prometheus')).body);
  t.equal(sum(p, 'istio_tcp_received_bytes_total'), 36, 'bytes of the open connection reported');
  t.equal(sum(p, 'istio_tcp_connections_closed_total'), 2, 'while it is still open');
  c.end();
  const end2 = Date.now() + 3000;
  while (sum(p, 'istio_tcp_connections_closed_total') < 3 && Date.now() < end2) {
    await new Promise((r) => setTimeout(r, 20));
    p = parseProm((await get(keel.server.admin!.port, '/stats/prometheus')).body);
  }
  t.equal(sum(p, 'istio_tcp_received_bytes_total'), 36, 'not counted twice at close');
  t.equal(sum(p, 'istio_tcp_sent_bytes_total'), 36);
});

t.test('no istio_* series for listeners without a traffic direction', async (t) => {
  const app = await startUpstream('app');
  t.teardown(() => app.close());
  const keel = await startKeel(`${node('plain', '{}')}
static_resources:
  listeners:${hcmListener('plain', 'UNSPECIFIED', 'app')}
  clusters:${staticCluster('app', app.port)}
`);
  t.teardown(() => keel.stop());
  t.equal((await get(keel.port, '/')).status, 200);
  const p = parseProm((await get(keel.server.admin!.port, '/stats/prometheus')).body);
  t.equal(find(p, 'istio_requests_total').length, 0);
  t.equal(find(p, 'envoy_cluster_upstream_rq_total', { cluster_name: 'app' })[0].value, 1);
  t.notOk(app.requests[0].headers['x-envoy-peer-metadata'], 'no metadata exchange without a direction');
});

t.test('a local reply on the inbound side still carries its identity to the caller', async (t) => {
  const server = await startKeel(`${node('sidecar~10.0.0.2~server.prod~prod.svc.cluster.local', SERVER_MD)}
static_resources:
  listeners:${hcmListener('virtualInbound', 'INBOUND', 'inbound|80||')}
  clusters:${staticCluster('inbound|80||', 1)}
`);
  t.teardown(() => server.stop());
  const client = await startKeel(`${node('sidecar~10.0.0.1~client.default~default.svc.cluster.local', CLIENT_MD)}
static_resources:
  listeners:${hcmListener('0.0.0.0_80', 'OUTBOUND', SVC)}
  clusters:${staticCluster(SVC, server.port)}
`);
  t.teardown(() => client.stop());
  t.equal((await get(client.port, '/')).status, 503);
  const pc = parseProm((await get(client.server.admin!.port, '/stats/prometheus')).body);
  t.match(find(pc, 'istio_requests_total', { response_code: '503' })[0]?.labels, { reporter: 'source', destination_workload: 'server', response_flags: '-' });
  const ps = parseProm((await get(server.server.admin!.port, '/stats/prometheus')).body);
  t.match(find(ps, 'istio_requests_total', { response_code: '503' })[0]?.labels, { reporter: 'destination', source_workload: 'client', response_flags: 'UF' });
});
