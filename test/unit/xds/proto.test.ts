// protobuf <-> proto3 JSON for xDS resources (src/xds/proto.ts) and the per-resource decoders the
// xDS client feeds (src/config/bootstrap.ts): Any, Duration, Struct, wrappers, enums, TypedStruct,
// unknown Any types; every problem of a bad resource reported with its path.
import t from 'tap';
import { anyToJson, jsonToAny } from '../../../src/xds/proto';
import { TYPE } from '../../../src/xds/ads-service';
import { decodeClusterLoadAssignment, decodeClusterResource, decodeListenerResource, decodeRouteConfigurationResource, parseBootstrapText } from '../../../src/config/bootstrap';
import { ConfigError } from '../../../src/config/errors';

// Loading Envoy's protos and (for the CLI) spawning TypeScript processes is slow on a loaded 2-core box.
t.setTimeout(240_000);

t.test('round trip: Any, Duration, Struct, wrappers, enums, TypedStruct', async (t) => {
  const cluster = {
    '@type': TYPE.cluster,
    name: 'c',
    type: 'EDS',
    eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' }, service_name: 'svc' },
    connect_timeout: '1.5s',
    lb_policy: 'LEAST_REQUEST',
    per_connection_buffer_limit_bytes: 32768,
    metadata: { filter_metadata: { istio: { n: 1, b: true, s: 'x', l: [1, 'two', null], o: { deep: {} } } } },
    common_lb_config: { healthy_panic_threshold: { value: 25 } },
    typed_extension_protocol_options: {
      'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
        '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
        explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 100 } },
      },
    },
  };
  const back = anyToJson(jsonToAny(cluster));
  t.same(back, cluster, 'the JSON form survives encode + decode');
  const d = decodeClusterResource(back);
  t.same(d.problems, []);
  t.equal(d.value?.connectTimeoutMs, 1500);
  t.equal(d.value?.protocol, 'HTTP2');
  t.equal(d.value?.healthyPanicThreshold, 25);
  const ts = anyToJson(jsonToAny({ '@type': 'type.googleapis.com/xds.type.v3.TypedStruct', type_url: 'type.googleapis.com/stats.PluginConfig', value: { a: 1 } }));
  t.same(ts, { '@type': 'type.googleapis.com/xds.type.v3.TypedStruct', type_url: 'type.googleapis.com/stats.PluginConfig', value: { a: 1 } });
  t.same(anyToJson({ type_url: 'type.googleapis.com/no.such.Type', value: Buffer.from([8, 1]) }), { '@type': 'type.googleapis.com/no.such.Type' }, 'an unknown type keeps its @type (decoders reject or skip it by name)');
  t.throws(() => anyToJson({ type_url: TYPE.cluster, value: Buffer.from([0xff, 0xff, 0xff]) }), 'bad bytes throw (the client NACKs)');
  t.equal(anyToJson(jsonToAny({ '@type': TYPE.cluster, name: 'n', connect_timeout: '0.000000001s' })).connect_timeout, '0.000000001s');
});

t.test('per-resource decoders: every problem with its path, no throw', async (t) => {
  const bad = decodeClusterResource({ name: 'c', connect_timeout: '-1s', lb_policy: 'BOGUS', surprise: 1 });
  t.equal(bad.value, undefined);
  t.ok(bad.problems.some((p) => p.path === 'connect_timeout'));
  t.ok(bad.problems.some((p) => p.path === 'lb_policy'));
  t.ok(bad.problems.some((p) => /unknown field 'surprise'/.test(p.message)));
  t.ok(decodeClusterResource({}).problems.some((p) => p.path === 'name'), 'a CDS cluster needs a name');
  const eds = decodeClusterResource({ name: 'e', type: 'EDS', eds_cluster_config: { eds_config: { ads: {}, initial_fetch_timeout: '2s' } } });
  t.equal(eds.value?.edsInitialFetchTimeoutMs, 2000, 'eds_config.initial_fetch_timeout per cluster');
  t.equal(decodeClusterResource({ name: 'e', type: 'EDS', eds_cluster_config: { eds_config: { ads: {} } } }).value?.edsInitialFetchTimeoutMs, 15000, "Envoy's default 15 s");
  t.match(decodeClusterResource({ name: 'e', type: 'EDS', eds_cluster_config: { eds_config: { path_config_source: { path: '/x' } } } }).problems[0], { path: 'eds_cluster_config', message: /path_config_source are not supported/ });
  t.ok(decodeListenerResource('x').problems.length === 1);
  const rc = decodeRouteConfigurationResource({ name: '9080', virtual_hosts: [{ name: 'v', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'not-known-yet' } }] }] });
  t.same(rc.problems, [], 'RDS: validate_clusters defaults to false');
  const cla = decodeClusterLoadAssignment({ cluster_name: 'c', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 'not-an-ip', port_value: 1 } } } }] }] });
  t.ok(cla.problems.length > 0, 'EDS endpoints must be IPs');
  const ok = decodeClusterLoadAssignment({ cluster_name: 'c', endpoints: [{ priority: 1, lb_endpoints: [{ endpoint: { address: { socket_address: { address: '10.0.0.1', port_value: 80 } } }, health_status: 'DRAINING' }] }] });
  t.equal(ok.value?.endpoints[0].priority, 1);
  t.equal(ok.value?.endpoints[0].endpoints[0].healthStatus, 'DRAINING');
});

t.test('EDS: endpoints with the same metadata share one decoded copy; different metadata stays apart', async (t) => {
  const md = (workload: string): unknown => ({ filter_metadata: { 'envoy.transport_socket_match': { tlsMode: 'istio' }, istio: { workload } } });
  const ep = (ip: string, metadata?: unknown): unknown => ({ endpoint: { address: { socket_address: { address: ip, port_value: 80 } } }, ...(metadata ? { metadata } : {}) });
  const cla = decodeClusterLoadAssignment({
    cluster_name: 'c',
    endpoints: [
      { locality: { zone: 'a' }, lb_endpoints: [ep('10.0.0.1', md('w1')), ep('10.0.0.2', md('w2')), ep('10.0.0.3')] },
      { locality: { zone: 'b' }, lb_endpoints: [ep('10.0.0.4', md('w1')), ep('10.0.0.5')] },
    ],
  });
  t.same(cla.problems, []);
  const [a, b] = cla.value!.endpoints;
  const [e1, e2, e3] = a.endpoints;
  const [e4, e5] = b.endpoints;
  t.same(e1.metadata, { 'envoy.transport_socket_match': { tlsMode: 'istio' }, istio: { workload: 'w1' } });
  t.same(e2.metadata, { 'envoy.transport_socket_match': { tlsMode: 'istio' }, istio: { workload: 'w2' } });
  t.same(e3.metadata, {});
  t.equal(e1.metadata, e4.metadata, 'w1 across localities: one object');
  t.not(e1.metadata, e2.metadata, 'w1 and w2 apart');
  t.equal(e3.metadata, e5.metadata, 'no metadata: one shared empty object');
  t.same([e1, e2, e3, e4, e5].map((e) => e.address.address), ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5']);
});

t.test('dynamic_resources in the bootstrap', async (t) => {
  const base = `
static_resources:
  clusters:
  - name: xds-grpc
    load_assignment: { cluster_name: xds-grpc, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 15012 } } } }] }] }
dynamic_resources:
`;
  const b = parseBootstrapText(
    base +
      `  ads_config: { api_type: DELTA_GRPC, transport_api_version: V3, set_node_on_first_message_only: true, grpc_services: [{ envoy_grpc: { cluster_name: xds-grpc }, initial_metadata: [{ key: ClusterID, value: Kubernetes }] }] }
  cds_config: { ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3 }
  lds_config: { path_config_source: { path: /tmp/lds.yaml } }
`,
    't',
  ).bootstrap;
  t.same(b.dynamicResources, {
    ads: { apiType: 'DELTA_GRPC', clusterName: 'xds-grpc', initialMetadata: [{ key: 'clusterid', value: 'Kubernetes' }], setNodeOnFirstMessageOnly: true },
    cds: { kind: 'ads', initialFetchTimeoutMs: 0 },
    lds: { kind: 'path', path: '/tmp/lds.yaml', initialFetchTimeoutMs: 15000 },
  });
  const err = (yaml: string): string => {
    try {
      parseBootstrapText(base + yaml, 't');
      return '';
    } catch (e) {
      return (e as ConfigError).format();
    }
  };
  t.match(err(`  ads_config: { api_type: REST, grpc_services: [{ envoy_grpc: { cluster_name: nope } }] }\n  cds_config: { ads: {} }\n`), /api_type[\s\S]*unknown cluster 'nope'/);
  t.match(err(`  cds_config: { api_config_source: { api_type: GRPC } }\n`), /api_config_source is not supported/);
  t.match(err(`  cds_config: { ads: {} }\n`), /no ads_config/);
  t.match(err(`  ads_config: { grpc_services: [{ google_grpc: { target_uri: x, stat_prefix: y } }] }\n`), /google_grpc is not supported/);
});

t.test('istio.alpn from istiod: a real Any (keel describes the message itself) becomes the HCM\'s override', async (t) => {
  const alpnAny = {
    '@type': 'type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig',
    alpn_override: [
      { upstream_protocol: 'HTTP10', alpn_override: ['istio-http/1.0', 'istio', 'http/1.0'] },
      { upstream_protocol: 'HTTP11', alpn_override: ['istio-http/1.1', 'istio', 'http/1.1'] },
      { upstream_protocol: 'HTTP2', alpn_override: ['istio-h2', 'istio', 'h2'] },
    ],
  };
  const back = anyToJson(jsonToAny(alpnAny));
  t.same(back, alpnAny, 'the filter config survives encode + decode');
  const listener = {
    '@type': TYPE.listener,
    name: 'l',
    address: { socket_address: { address: '0.0.0.0', port_value: 9080 } },
    filter_chains: [
      {
        filters: [
          {
            name: 'envoy.filters.network.http_connection_manager',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
              stat_prefix: 's',
              route_config: { name: 'r', virtual_hosts: [] },
              http_filters: [
                { name: 'istio.alpn', typed_config: alpnAny },
                { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } },
              ],
            },
          },
        ],
      },
    ],
  };
  const d = decodeListenerResource(anyToJson(jsonToAny(listener)));
  t.same(d.problems, []);
  const hcm = d.value?.filterChains[0].filter as { alpnOverride?: unknown };
  t.same(hcm.alpnOverride, { http10: ['istio-http/1.0', 'istio', 'http/1.0'], http11: ['istio-http/1.1', 'istio', 'http/1.1'], http2: ['istio-h2', 'istio', 'h2'] });
});
