// Tracing on real traffic: B3 and W3C trace context generated or continued and sent upstream,
// sampling (random, x-envoy-force-trace, an incoming sampled flag), the route decorator naming the
// span and x-envoy-decorator-operation sent upstream on outbound, and Zipkin v2 JSON spans posted
// to a collector (a small HTTP server on port 0) through the provider's collector cluster.
import t from 'tap';
import * as http from 'node:http';
import type * as net from 'node:net';
import { startKeel, startUpstream } from '../helpers/keel';
import type { ZipkinSpan } from '../../src/observability/tracing';

function get(port: number, p: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: p, headers, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      })
      .on('error', reject);
  });
}

async function startCollector(): Promise<{ port: number; spans: ZipkinSpan[]; server: http.Server; waitFor(n: number): Promise<ZipkinSpan[]> }> {
  const spans: ZipkinSpan[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/api/v2/spans' && req.headers['content-type'] === 'application/json') spans.push(...(JSON.parse(body) as ZipkinSpan[]));
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    spans,
    server,
    async waitFor(n: number): Promise<ZipkinSpan[]> {
      const end = Date.now() + 5000;
      while (spans.length < n && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
      return spans;
    },
  };
}

function yaml(appPort: number, zipkinPort: number, direction: string, sampling: number): string {
  return `
node: { id: n1, cluster: front }
static_resources:
  listeners:
  - name: l
    traffic_direction: ${direction}
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: l
          tracing:
            random_sampling: { value: ${sampling} }
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON
                trace_id_128bit: true
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/decorated" }
                route: { cluster: app }
                decorator: { operation: "reviews.default.svc.cluster.local:9080/*" }
              - match: { prefix: "/" }
                route: { cluster: app }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: app, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${appPort} } } } }] }] }
  - name: zipkin
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: zipkin, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${zipkinPort} } } } }] }] }
`;
}

t.test('sampled requests: propagation and Zipkin export', async (t) => {
  const app = await startUpstream('app');
  t.teardown(() => app.close());
  const zipkin = await startCollector();
  t.teardown(() => zipkin.server.close());
  const keel = await startKeel(yaml(app.port, zipkin.port, 'INBOUND', 100));
  t.teardown(() => keel.stop());

  // 1. a new trace
  t.equal(await get(keel.port, '/a'), 200);
  const h1 = app.requests[0].headers;
  t.match(h1['x-b3-traceid'], /^[0-9a-f]{32}$/, '128-bit trace id');
  t.match(h1['x-b3-spanid'], /^[0-9a-f]{16}$/);
  t.equal(h1['x-b3-sampled'], '1');
  t.notOk(h1['x-b3-parentspanid']);
  t.equal(h1.traceparent, `00-${h1['x-b3-traceid']}-${h1['x-b3-spanid']}-01`, 'W3C traceparent carries the same context');
  t.match(h1['x-request-id'], /^[0-9a-f-]{36}$/);

  // 2. continuing a B3 trace
  const tid = '463ac35c9f6413ad48485a3953bb6124';
  t.equal(await get(keel.port, '/decorated', { 'x-b3-traceid': tid, 'x-b3-spanid': 'a2fb4a1d1a96d312', 'x-b3-sampled': '1' }), 200);
  const h2 = app.requests[1].headers;
  t.equal(h2['x-b3-traceid'], tid);
  t.equal(h2['x-b3-parentspanid'], 'a2fb4a1d1a96d312');
  t.not(h2['x-b3-spanid'], 'a2fb4a1d1a96d312', 'our span is a child');
  t.notOk(h2['x-envoy-decorator-operation'], 'inbound: the operation is not sent to the app');

  // 3. continuing a W3C trace
  const w3c = '0af7651916cd43dd8448eb211c80319c';
  t.equal(await get(keel.port, '/w', { traceparent: `00-${w3c}-b7ad6b7169203331-01`, tracestate: 'vendor=x' }), 200);
  const h3 = app.requests[2].headers;
  t.equal(h3['x-b3-traceid'], w3c);
  t.equal(h3['x-b3-parentspanid'], 'b7ad6b7169203331');
  t.equal(h3.tracestate, 'vendor=x', 'tracestate passes through');

  const spans = await zipkin.waitFor(3);
  t.equal(spans.length, 3, 'three spans reached the collector');
  const byTrace = new Map(spans.map((s) => [s.traceId, s]));
  const s1 = byTrace.get(h1['x-b3-traceid'] as string)!;
  t.match(s1, { id: h1['x-b3-spanid'], kind: 'SERVER', name: 'ingress', localEndpoint: { serviceName: 'front' } });
  t.match(s1.tags, { 'http.method': 'GET', 'http.status_code': '200', upstream_cluster: 'app', guid: h1['x-request-id'] });
  t.ok(s1.timestamp > 1e15 && s1.duration >= 1, 'microsecond timestamp and duration');
  const s2 = byTrace.get(tid)!;
  t.match(s2, { parentId: 'a2fb4a1d1a96d312', name: 'reviews.default.svc.cluster.local:9080/*' });
  t.equal(byTrace.get(w3c)?.parentId, 'b7ad6b7169203331');
});

t.test('sampling: 0% random, forced by x-envoy-force-trace, or by the caller', async (t) => {
  const app = await startUpstream('app');
  t.teardown(() => app.close());
  const zipkin = await startCollector();
  t.teardown(() => zipkin.server.close());
  const keel = await startKeel(yaml(app.port, zipkin.port, 'OUTBOUND', 0));
  t.teardown(() => keel.stop());

  t.equal(await get(keel.port, '/not-sampled'), 200);
  t.equal(app.requests[0].headers['x-b3-sampled'], '0', 'context still propagates, unsampled');
  t.equal(await get(keel.port, '/forced', { 'x-envoy-force-trace': '1' }), 200);
  t.equal(app.requests[1].headers['x-b3-sampled'], '1');
  t.equal(await get(keel.port, '/decorated', { 'x-b3-traceid': '80f198ee56343ba8', 'x-b3-spanid': 'e457b5a2e4d86bd1', 'x-b3-sampled': '1' }), 200);
  t.equal(app.requests[2].headers['x-b3-sampled'], '1', "the caller's decision is kept");
  t.equal(app.requests[2].headers['x-envoy-decorator-operation'], 'reviews.default.svc.cluster.local:9080/*', 'outbound: the decorator goes upstream');
  const spans = await zipkin.waitFor(2);
  t.equal(spans.length, 2);
  t.same(spans.map((s) => s.kind), ['CLIENT', 'CLIENT']);
  t.ok(spans.every((s) => s.tags['http.url'] !== '/not-sampled'), 'the unsampled request sent no span');
  // nothing more arrives for the unsampled request
  t.equal(spans.filter((s) => s.tags['http.url']?.endsWith('/not-sampled')).length, 0);
});
