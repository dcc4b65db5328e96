// DestinationRule -> clusters: names, subsets by labels, LEAST_REQUEST default and istiod's default
// circuit breakers, consistentHash (+ route hash_policy), connectionPool, outlierDetection, TLS
// modes, per-port and per-subset overrides; ServiceEntry / WorkloadEntry / Endpoints as sources.
import t from 'tap';
import { selfSignedCert } from '../../helpers/keel';
import { DR, EP, clusterOf, envoy, vhostOf, vs, warnings, type J } from './helpers';

const c = (subset: string, port = 9080): string => `outbound|${port}|${subset}|reviews.default.svc.cluster.local`;
const addrs = (cl: J): string[] => (cl.load_assignment.endpoints[0]?.lb_endpoints ?? []).map((e: J) => `${e.endpoint.address.socket_address.address}:${e.endpoint.address.socket_address.port_value}`);

t.test('clusters per port and subset; endpoints picked by labels; istiod defaults', async (t) => {
  const e = envoy(EP() + DR);
  t.same((e.static_resources.clusters as J[]).map((x) => x.name), [c(''), c('v1'), c('v2'), c('v3')]);
  t.same(addrs(clusterOf(e, c(''))), ['10.0.0.1:9080', '10.0.0.2:9080', '10.0.0.3:9080']);
  t.same(addrs(clusterOf(e, c('v2'))), ['10.0.0.2:9080']);
  const d = clusterOf(e, c('v1'));
  t.equal(d.lb_policy, 'LEAST_REQUEST');
  t.equal(d.connect_timeout, '10s');
  t.equal(d.type, 'STATIC');
  t.same(d.circuit_breakers, { thresholds: [{ max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295, track_remaining: true }] });
  t.equal(d.outlier_detection, undefined);
  t.equal(d.transport_socket, undefined);
});

t.test('loadBalancer simple and consistentHash (ring hash, maglev) with the route hash_policy', async (t) => {
  const rule = (lb: string): string => `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews }
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
${lb}
---`;
  t.equal(clusterOf(envoy(EP() + rule('      simple: ROUND_ROBIN')), c('')).lb_policy, 'ROUND_ROBIN');
  t.equal(clusterOf(envoy(EP() + rule('      simple: LEAST_CONN')), c('')).lb_policy, 'LEAST_REQUEST');
  t.equal(clusterOf(envoy(EP() + rule('      simple: RANDOM')), c('')).lb_policy, 'RANDOM');
  let e = envoy(EP() + rule('      consistentHash: { httpHeaderName: x-user }'));
  t.equal(clusterOf(e, c('')).lb_policy, 'RING_HASH');
  t.same(clusterOf(e, c('')).ring_hash_lb_config, { minimum_ring_size: 1024 });
  t.same((vhostOf(e, 'reviews.default.svc.cluster.local:9080').routes as J[])[0].route.hash_policy, [{ header: { header_name: 'x-user' } }]);
  e = envoy(EP() + rule('      consistentHash: { httpCookie: { name: user, ttl: 0s, path: / }, ringHash: { minimumRingSize: 64 } }') + vs('  - route: [{ destination: { host: reviews } }]'));
  t.same(clusterOf(e, c('')).ring_hash_lb_config, { minimum_ring_size: 64 });
  t.same((vhostOf(e, 'reviews.default.svc.cluster.local:9080').routes as J[])[0].route.hash_policy, [{ cookie: { name: 'user', path: '/', ttl: '0s' } }]);
  e = envoy(EP() + rule('      consistentHash: { useSourceIp: true, maglev: { tableSize: 65537 } }'));
  t.equal(clusterOf(e, c('')).lb_policy, 'MAGLEV');
  t.same(clusterOf(e, c('')).maglev_lb_config, { table_size: 65537 });
  t.same((vhostOf(e, 'reviews.default.svc.cluster.local:9080').routes as J[])[0].route.hash_policy, [{ connection_properties: { source_ip: true } }]);
  e = envoy(EP() + rule('      consistentHash: { httpQueryParameterName: u }'));
  t.same((vhostOf(e, 'reviews.default.svc.cluster.local:9080').routes as J[])[0].route.hash_policy, [{ query_parameter: { name: 'u' } }]);
});

t.test('connectionPool and outlierDetection', async (t) => {
  const e = envoy(
    EP() +
      `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews }
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: { maxConnections: 100, connectTimeout: 30ms }
      http: { http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRequestsPerConnection: 10, maxRetries: 3, idleTimeout: 90s }
    outlierDetection:
      consecutive5xxErrors: 7
      consecutiveGatewayErrors: 3
      interval: 5m
      baseEjectionTime: 15m
      maxEjectionPercent: 20
      minHealthPercent: 30
`,
  );
  const cl = clusterOf(e, c(''));
  t.same(cl.circuit_breakers.thresholds[0], { max_connections: 100, max_pending_requests: 10, max_requests: 1000, max_retries: 3, track_remaining: true });
  t.equal(cl.connect_timeout, '0.03s');
  t.same(cl.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'].common_http_protocol_options, { max_requests_per_connection: 10, idle_timeout: '90s' });
  t.same(cl.outlier_detection, {
    enforcing_success_rate: 0,
    consecutive_gateway_failure: 3,
    enforcing_consecutive_gateway_failure: 100,
    consecutive_5xx: 7,
    enforcing_consecutive_5xx: 100,
    interval: '300s',
    base_ejection_time: '900s',
    max_ejection_percent: 20,
  });
  t.same(cl.common_lb_config, { healthy_panic_threshold: { value: 30 } });
});

t.test('per-port and per-subset overrides (each setting taken whole from the most specific level)', async (t) => {
  const e = envoy(
    EP() +
      `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews }
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: { simple: RANDOM }
    connectionPool: { tcp: { maxConnections: 50 } }
    portLevelSettings:
    - port: { number: 9080 }
      loadBalancer: { simple: ROUND_ROBIN }
  subsets:
  - name: v1
    labels: { version: v1 }
  - name: v2
    labels: { version: v2 }
    trafficPolicy:
      connectionPool: { tcp: { maxConnections: 5 } }
`,
  );
  t.equal(clusterOf(e, c('')).lb_policy, 'ROUND_ROBIN', 'port level beats the rule');
  t.equal(clusterOf(e, c('')).circuit_breakers.thresholds[0].max_connections, 50);
  t.equal(clusterOf(e, c('v1')).circuit_breakers.thresholds[0].max_connections, 50);
  t.equal(clusterOf(e, c('v2')).circuit_breakers.thresholds[0].max_connections, 5, 'subset beats the rule');
  t.equal(clusterOf(e, c('v2')).lb_policy, 'ROUND_ROBIN');
});

t.test('tls: SIMPLE, MUTUAL with files, ISTIO_MUTUAL without and with mesh certificates, DISABLE', async (t) => {
  const { crt, key } = await selfSignedCert();
  const rule = (tls: string): string => `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews }
spec:
  host: reviews
  trafficPolicy:
    tls: ${tls}
---`;
  let cl = clusterOf(envoy(EP() + rule(`{ mode: SIMPLE, caCertificates: ${crt}, subjectAltNames: [reviews.example.com] }`)), c(''));
  t.same(cl.transport_socket.typed_config, {
    '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
    common_tls_context: { validation_context: { trusted_ca: { filename: crt }, match_subject_alt_names: [{ exact: 'reviews.example.com' }] } },
    sni: 'reviews.default.svc.cluster.local',
  });
  cl = clusterOf(envoy(EP() + rule(`{ mode: MUTUAL, caCertificates: ${crt}, clientCertificate: ${crt}, privateKey: ${key}, sni: r.example }`)), c(''));
  t.same(cl.transport_socket.typed_config.common_tls_context.tls_certificates, [{ certificate_chain: { filename: crt }, private_key: { filename: key } }]);
  t.equal(cl.transport_socket.typed_config.sni, 'r.example');
  const yaml = EP() + rule('{ mode: ISTIO_MUTUAL }');
  t.equal(clusterOf(envoy(yaml), c('')).transport_socket, undefined, 'ISTIO_MUTUAL without mesh certificates: plaintext...');
  t.match(warnings(yaml).join('\n'), /ISTIO_MUTUAL needs the mesh's certificates.*plaintext/, '...with a warning saying so');
  cl = clusterOf(envoy(yaml, { meshCerts: { certChain: crt, key, rootCert: crt } }), c(''));
  t.same(cl.transport_socket.typed_config.common_tls_context.alpn_protocols, ['istio-peer-exchange', 'istio']);
  t.equal(cl.transport_socket.typed_config.sni, 'outbound_.9080_._.reviews.default.svc.cluster.local');
  t.equal(clusterOf(envoy(EP() + rule('{ mode: DISABLE }')), c('')).transport_socket, undefined);
});

t.test('ServiceEntry: STATIC endpoints with labels and named ports, DNS, NONE; WorkloadEntry by selector', async (t) => {
  const e = envoy(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ext }
spec:
  hosts: [api.example.com]
  ports: [{ number: 443, name: http-api, protocol: HTTP }]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: db }
spec:
  hosts: [db.internal]
  ports: [{ number: 80, name: http, protocol: HTTP, targetPort: 8080 }]
  resolution: STATIC
  endpoints:
  - { address: 10.1.0.1, labels: { version: v1 } }
  - { address: 10.1.0.2, ports: { http: 9090 }, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: wl }
spec:
  hosts: [wl.internal]
  ports: [{ number: 80, name: http }]
  resolution: STATIC
  workloadSelector: { labels: { app: wl } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: vm1 }
spec: { address: 10.2.0.1, labels: { app: wl, version: v1 } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: vm2 }
spec: { address: 10.2.0.2, labels: { app: other } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: any }
spec:
  hosts: ["*.wild.com"]
  ports: [{ number: 80, name: http }]
  resolution: NONE
`);
  const ext = clusterOf(e, 'outbound|443||api.example.com');
  t.equal(ext.type, 'STRICT_DNS');
  t.same(addrs(ext), ['api.example.com:443']);
  t.same(addrs(clusterOf(e, 'outbound|80||db.internal')), ['10.1.0.1:8080', '10.1.0.2:9090'], 'targetPort, then per-endpoint named port');
  t.same(addrs(clusterOf(e, 'outbound|80||wl.internal')), ['10.2.0.1:80'], 'WorkloadEntries picked by the selector');
  const wild = clusterOf(e, 'outbound|80||*.wild.com');
  t.equal(wild.type, 'ORIGINAL_DST');
  t.equal(wild.lb_policy, 'CLUSTER_PROVIDED');
  t.equal(wild.load_assignment, undefined);
});
