// Mesh-sized config through keel's real xDS apply path, without the network: 10,000 clusters
// (EDS, shaped like istiod's outbound clusters), 100,000 endpoints (10 per cluster), 1,000
// listeners (per-port, bind_to_port false as istiod sends them) and 1,000 route configurations.
// Each resource is protobuf-encoded first (as it arrives from istiod), then timed through the same
// code an ADS response takes: Any -> proto3 JSON (src/xds/proto.ts) -> per-resource decoder
// (src/config/bootstrap.ts) -> KeelServer.dynamic (src/xds/apply.ts). Reports time per phase and
// heap / RSS growth per cluster and per host, beside Envoy's published figures.
//
//   TS_NODE_TRANSPILE_ONLY=1 node --expose-gc --max-old-space-size=4096 --import=./node_modules/@tapjs/typescript/dist/esm/import.mjs bench/mesh-config/run.ts [clusters] [endpointsPerCluster] [listeners]
//
// Single process, CPU bound: run it on a quiet machine.

import { performance } from 'node:perf_hooks';
import { KeelServer } from '../../src/server/server';
import { Logger } from '../../src/common/logger';
import { XdsApplier } from '../../src/xds/apply';
import { TYPE } from '../../src/xds/ads-service';
import { anyToJson, jsonToAny, xdsRoot, type AnyMessage } from '../../src/xds/proto';
import type { XdsResource } from '../../src/xds/client';

const CLUSTERS = Number(process.argv[2] ?? 10_000);
const EPS_PER_CLUSTER = Number(process.argv[3] ?? 10);
const LISTENERS = Number(process.argv[4] ?? 1_000);

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  process.stderr.write('run with node --expose-gc for meaningful memory figures\n');
}
function settle(): { heap: number; rss: number } {
  for (let i = 0; i < 3; i++) gc?.();
  const m = process.memoryUsage();
  return { heap: m.heapUsed + m.external + m.arrayBuffers, rss: m.rss };
}

const svc = (i: number): string => `svc-${i}.ns-${i % 100}.svc.cluster.local`;
const clusterName = (i: number): string => `outbound|${8000 + (i % LISTENERS)}||${svc(i)}`;

function cluster(i: number): Record<string, unknown> {
  const name = clusterName(i);
  return {
    name,
    type: 'EDS',
    eds_cluster_config: { eds_config: { ads: {}, initial_fetch_timeout: '0s', resource_api_version: 'V3' }, service_name: name },
    connect_timeout: '10s',
    lb_policy: 'LEAST_REQUEST',
    circuit_breakers: { thresholds: [{ max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295, track_remaining: true }] },
    common_lb_config: {},
    metadata: { filter_metadata: { istio: { services: [{ host: svc(i), name: `svc-${i}`, namespace: `ns-${i % 100}` }] } } },
    typed_extension_protocol_options: {
      'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
        '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
        use_downstream_protocol_config: { http_protocol_options: {}, http2_protocol_options: {} },
      },
    },
  };
}

function endpoints(i: number): Record<string, unknown> {
  const lb = [];
  for (let e = 0; e < EPS_PER_CLUSTER; e++) {
    const n = i * EPS_PER_CLUSTER + e;
    lb.push({
      endpoint: { address: { socket_address: { address: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, port_value: 8080 } } },
      health_status: 'HEALTHY',
      metadata: { filter_metadata: { 'envoy.transport_socket_match': { tlsMode: 'istio' }, istio: { workload: `svc-${i}-v1;ns-${i % 100};svc-${i};v1;Kubernetes` } } },
      load_balancing_weight: 1,
    });
  }
  return { cluster_name: clusterName(i), endpoints: [{ locality: { region: 'r1', zone: 'z1' }, lb_endpoints: lb, load_balancing_weight: EPS_PER_CLUSTER }] };
}

function listener(p: number): Record<string, unknown> {
  const port = 8000 + p;
  return {
    name: `0.0.0.0_${port}`,
    address: { socket_address: { address: '0.0.0.0', port_value: port } },
    bind_to_port: false,
    traffic_direction: 'OUTBOUND',
    filter_chains: [
      {
        filters: [
          {
            name: 'envoy.filters.network.http_connection_manager',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
              stat_prefix: `outbound_0.0.0.0_${port}`,
              rds: { config_source: { ads: {}, initial_fetch_timeout: '0s', resource_api_version: 'V3' }, route_config_name: String(port) },
              http_filters: [
                { name: 'envoy.filters.http.fault', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault' } },
                { name: 'envoy.filters.http.cors', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors' } },
                { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } },
              ],
              normalize_path: true,
            },
          },
        ],
      },
    ],
  };
}

function route(p: number): Record<string, unknown> {
  const port = 8000 + p;
  const vhosts = [];
  for (let i = p; i < CLUSTERS; i += LISTENERS) {
    vhosts.push({
      name: `${svc(i)}:${port}`,
      domains: [svc(i), `svc-${i}`, `svc-${i}.ns-${i % 100}`],
      routes: [
        {
          name: 'default',
          match: { prefix: '/' },
          route: {
            cluster: clusterName(i),
            timeout: '0s',
            retry_policy: { retry_on: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes', num_retries: 2, retry_host_predicate: [{ name: 'envoy.retry_host_predicates.previous_hosts', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate' } }], host_selection_retry_max_attempts: '5' },
          },
        },
      ],
    });
  }
  return { name: String(port), virtual_hosts: vhosts, validate_clusters: false };
}

function encode(typeUrl: string, items: Record<string, unknown>[]): { name: string; any: AnyMessage }[] {
  return items.map((r) => ({ name: String(typeUrl === TYPE.endpoint ? r.cluster_name : r.name), any: jsonToAny({ '@type': typeUrl, ...r }) }));
}

function main(): void {
  xdsRoot();
  const gen0 = performance.now();
  const cds = encode(TYPE.cluster, Array.from({ length: CLUSTERS }, (_, i) => cluster(i)));
  const eds = encode(TYPE.endpoint, Array.from({ length: CLUSTERS }, (_, i) => endpoints(i)));
  const lds = encode(TYPE.listener, Array.from({ length: LISTENERS }, (_, p) => listener(p)));
  const rds = encode(TYPE.route, Array.from({ length: LISTENERS }, (_, p) => route(p)));
  const bytes = [cds, eds, lds, rds].reduce((n, l) => n + l.reduce((m, r) => m + r.any.value.length, 0), 0);
  process.stdout.write(`generated and encoded in ${((performance.now() - gen0) / 1000).toFixed(1)} s: ${CLUSTERS} clusters, ${CLUSTERS * EPS_PER_CLUSTER} endpoints, ${LISTENERS} listeners, ${LISTENERS} route configs; ${(bytes / 1048576).toFixed(1)} MiB of protobuf\n`);

  const server = new KeelServer({ node: { id: 'bench', cluster: 'bench', metadata: {} }, listeners: [], clusters: [], runtime: {} }, { log: new Logger('error'), admin: false });
  server.dynamic.initialFetchTimeoutMs = 0;
  const applier = new XdsApplier(server);
  const apply = (typeUrl: string, list: { name: string; any: AnyMessage }[]): { ms: number; errors: number } => {
    const t0 = performance.now();
    const added: XdsResource[] = list.map((r) => ({ name: r.name, version: 'v1', json: anyToJson(r.any) }));
    const errors = applier.apply({ typeUrl, version: 'v1', added, removed: [], errors: [] });
    if (errors.length > 0) process.stderr.write(`${errors.length} errors, first: ${errors[0]}\n`);
    return { ms: performance.now() - t0, errors: errors.length };
  };

  const m0 = settle();
  const tC = apply(TYPE.cluster, cds);
  const m1 = settle();
  const tE = apply(TYPE.endpoint, eds);
  const m2 = settle();
  const tL = apply(TYPE.listener, lds);
  const tR = apply(TYPE.route, rds);
  const m3 = settle();
  // A second EDS push with every endpoint changed for 10% of the clusters (a rolling deployment).
  const changed = eds.slice(0, Math.ceil(CLUSTERS / 10)).map((r, i) => {
    const j = endpoints(i) as { endpoints: { lb_endpoints: { endpoint: { address: { socket_address: { port_value: number } } } }[] }[] };
    for (const e of j.endpoints[0].lb_endpoints) e.endpoint.address.socket_address.port_value = 9090;
    return { name: r.name, any: jsonToAny({ '@type': TYPE.endpoint, ...j }) };
  });
  const tE2 = apply(TYPE.endpoint, changed);

  const active = [...server.clusters.all()].length;
  const hosts = [...server.clusters.all()].reduce((n, c) => n + c.hosts.length, 0);
  const kb = (b: number): string => (b / 1024).toFixed(1);
  const rows = [
    ['CDS', `${CLUSTERS} clusters`, tC.ms, tC.errors],
    ['EDS', `${CLUSTERS * EPS_PER_CLUSTER} endpoints`, tE.ms, tE.errors],
    ['LDS', `${LISTENERS} listeners`, tL.ms, tL.errors],
    ['RDS', `${LISTENERS} route configs`, tR.ms, tR.errors],
    ['EDS update', `${changed.length} clusters' endpoints changed`, tE2.ms, tE2.errors],
  ] as const;
  process.stdout.write(`\n| push | resources | time to apply | per resource | errors |\n|---|---|---|---|---|\n`);
  for (const [what, n, ms, errs] of rows) {
    const count = Number(n.split(' ')[0]);
    process.stdout.write(`| ${what} | ${n} | ${(ms / 1000).toFixed(2)} s | ${((ms * 1000) / count).toFixed(0)} µs | ${errs} |\n`);
  }
  process.stdout.write(`\nactive clusters ${active}, hosts ${hosts}\n`);
  process.stdout.write(`\n| memory | keel (heap+external) | keel (RSS) | Envoy (published) |\n|---|---|---|---|\n`);
  process.stdout.write(`| per cluster (CDS, no hosts) | ${kb((m1.heap - m0.heap) / CLUSTERS)} KiB | ${kb((m1.rss - m0.rss) / CLUSTERS)} KiB | ~42 KB (stats test, with stats) |\n`);
  process.stdout.write(`| per host (EDS) | ${kb((m2.heap - m1.heap) / (CLUSTERS * EPS_PER_CLUSTER))} KiB | ${kb((m2.rss - m1.rss) / (CLUSTERS * EPS_PER_CLUSTER))} KiB | ~1.4 KB |\n`);
  process.stdout.write(`| per listener + route config (LDS+RDS) | ${kb((m3.heap - m2.heap) / LISTENERS)} KiB | ${kb((m3.rss - m2.rss) / LISTENERS)} KiB | — |\n`);
  process.stdout.write(`| total after all pushes | ${(m3.heap / 1048576).toFixed(0)} MiB | ${(m3.rss / 1048576).toFixed(0)} MiB | — |\n`);
  // What a keel process holding only the clusters and endpoints would have: its idle RSS (measure
  // it with the proxy itself, e.g. bench/run's RSS column; this harness's own start-up differs)
  // plus what CDS and EDS added here.
  const mib = (b: number): string => (b / 1048576).toFixed(0);
  process.stdout.write(`\nCDS + EDS added ${mib(m2.rss - m0.rss)} MiB of RSS (${mib(m2.heap - m0.heap)} MiB heap+external) for ${CLUSTERS} clusters and ${CLUSTERS * EPS_PER_CLUSTER} endpoints; the harness started at ${mib(m0.rss)} MiB RSS with the encoded pushes in memory\n`);
  void server.stop(0);
}

main();
