// The admin API against a running keel: /config_dump checked field by field against Envoy's admin
// protos (loaded by @grpc/proto-loader from @grpc/grpc-js-xds's copies), its include_eds, resource,
// mask and name_regex parameters, key material redacted; /clusters and /listeners in text and JSON
// (JSON checked against the protos too); /stats and its filters; /server_info, /ready,
// /healthcheck/fail|ok, /logging, /runtime(_modify), /memory, /drain_listeners, /quitquitquit;
// loopback-only binding.
import t from 'tap';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { startKeel, startUpstream, selfSignedCert } from '../helpers/keel';
import { checkProtoJson, envoyRoot } from '../helpers/proto-json';
import * as os from 'node:os';
import { LOGGERS, Logger } from '../../src/common/logger';
import { parseBootstrapText } from '../../src/config/bootstrap';
import { KeelServer } from '../../src/server/server';
import { SecretManager } from '../../src/security/secret-manager';

function req(port: number, path: string, method = 'GET', headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const r = http.request({ host: '127.0.0.1', port, path, method, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    r.on('error', reject);
    r.end();
  });
}

async function config(appPort: number): Promise<string> {
  const { crt, key } = await selfSignedCert();
  const keyPem = fs.readFileSync(key, 'utf8');
  return `
node:
  id: sidecar~10.0.0.9~app.default~default.svc.cluster.local
  cluster: app.default
  metadata: { NAMESPACE: default, LABELS: { app: app } }
admin:
  address: { socket_address: { address: 0.0.0.0, port_value: 0 } }
layered_runtime:
  layers:
  - name: static
    static_layer: { "upstream.healthy_panic_threshold": 40 }
static_resources:
  listeners:
  - name: http
    traffic_direction: OUTBOUND
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          statPrefix: outbound_http
          route_config:
            name: local_route
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: "outbound|80||app.default.svc.cluster.local", timeout: 5s }
                decorator: { operation: "app.default.svc.cluster.local:80/*" }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  - name: tls
    traffic_direction: INBOUND
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: { filename: ${crt} }
              private_key: { inline_string: ${JSON.stringify(keyPem)} }
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tls
          cluster: "inbound|443||"
  clusters:
  - name: "outbound|80||app.default.svc.cluster.local"
    type: STATIC
    connect_timeout: 1s
    metadata: { filter_metadata: { istio: { services: [{ host: app.default.svc.cluster.local, name: app, namespace: default }] } } }
    circuit_breakers: { thresholds: [{ max_connections: 100, max_pending_requests: 10 }] }
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${appPort} } } }
  - name: "inbound|443||"
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: "inbound|443||"
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${appPort} } } }
`;
}

t.test('admin API', async (t) => {
  const app = await startUpstream('app');
  t.teardown(() => app.close());
  const keel = await startKeel(await config(app.port));
  t.teardown(() => keel.stop());
  const admin = keel.server.admin!.port;
  const proxyPort = keel.ports.get('http')!;
  for (let i = 0; i < 3; i++) t.equal((await req(proxyPort, '/x')).status, 200);
  const root = envoyRoot();

  t.test('bound to loopback only', async (t) => {
    const addr = (keel.server.admin as unknown as { server: http.Server }).server.address();
    t.match(addr, { address: '127.0.0.1' }, 'a 0.0.0.0 admin address is narrowed to loopback');
  });

  t.test('/config_dump conforms to envoy.admin.v3.ConfigDump', async (t) => {
    const r = await req(admin, '/config_dump');
    t.equal(r.status, 200);
    t.match(r.headers['content-type'], /application\/json/);
    const dump = JSON.parse(r.body) as { configs: Array<Record<string, unknown>> };
    t.same(checkProtoJson(root, 'envoy.admin.v3.ConfigDump', dump), [], 'every field is known to the protos and well typed');
    const broken = { configs: [{ '@type': 'type.googleapis.com/envoy.admin.v3.ClustersConfigDump', static_clusters: [{ cluster: { '@type': 'type.googleapis.com/envoy.config.cluster.v3.Cluster', name: 1, conect_timeout: '1s' } }] }] };
    t.same(checkProtoJson(root, 'envoy.admin.v3.ConfigDump', broken), ['configs[0].static_clusters[0].cluster.name: not a string', 'configs[0].static_clusters[0].cluster.conect_timeout: unknown field of envoy.config.cluster.v3.Cluster'], 'the check can fail');
    t.same(
      dump.configs.map((c) => c['@type']),
      ['BootstrapConfigDump', 'ClustersConfigDump', 'ListenersConfigDump', 'RoutesConfigDump', 'SecretsConfigDump'].map((x) => `type.googleapis.com/envoy.admin.v3.${x}`),
    );
    const [boot, clusters, listeners, routes] = dump.configs as Array<Record<string, any>>;
    t.equal(boot.bootstrap.node.id, 'sidecar~10.0.0.9~app.default~default.svc.cluster.local');
    t.same(boot.bootstrap.node.metadata, { NAMESPACE: 'default', LABELS: { app: 'app' } }, 'Struct contents are kept as written');
    t.same(clusters.static_clusters.map((c: any) => c.cluster.name), ['outbound|80||app.default.svc.cluster.local', 'inbound|443||']);
    t.equal(clusters.static_clusters[0].cluster['@type'], 'type.googleapis.com/envoy.config.cluster.v3.Cluster');
    t.equal(clusters.static_clusters[0].cluster.connect_timeout, '1s');
    t.same(listeners.static_listeners.map((l: any) => l.listener.name), ['http', 'tls']);
    const hcm = listeners.static_listeners[0].listener.filter_chains[0].filters[0].typed_config;
    t.equal(hcm.stat_prefix, 'outbound_http', 'lowerCamel input is printed with proto field names');
    t.equal(routes.static_route_configs[0].route_config.name, 'local_route');
    t.notMatch(r.body, /PRIVATE KEY/, 'no key material in the dump');
    t.match(r.body, /\[redacted\]/);
  });

  t.test('/config_dump?include_eds, resource, mask, name_regex', async (t) => {
    const eds = JSON.parse((await req(admin, '/config_dump?include_eds')).body);
    t.same(checkProtoJson(root, 'envoy.admin.v3.ConfigDump', eds), []);
    const ep = eds.configs.find((c: any) => c['@type'].endsWith('EndpointsConfigDump'));
    t.ok(ep, 'EndpointsConfigDump with include_eds');
    const cla = ep.static_endpoint_configs.find((e: any) => e.endpoint_config.cluster_name === 'outbound|80||app.default.svc.cluster.local').endpoint_config;
    t.same(cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address, { address: '127.0.0.1', port_value: app.port });
    t.notOk(JSON.parse((await req(admin, '/config_dump')).body).configs.some((c: any) => c['@type'].endsWith('EndpointsConfigDump')));

    const res = JSON.parse((await req(admin, '/config_dump?resource=static_clusters')).body);
    t.same(checkProtoJson(root, 'envoy.admin.v3.ConfigDump', res), []);
    t.equal(res.configs.length, 2);
    t.equal(res.configs[0]['@type'], 'type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster');

    const masked = JSON.parse((await req(admin, '/config_dump?resource=static_clusters&mask=cluster.name')).body);
    t.same(masked.configs[0], { '@type': 'type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster', cluster: { '@type': 'type.googleapis.com/envoy.config.cluster.v3.Cluster', name: 'outbound|80||app.default.svc.cluster.local' } });

    const named = JSON.parse((await req(admin, '/config_dump?resource=static_listeners&name_regex=^tls$')).body);
    t.same(named.configs.map((c: any) => c.listener.name), ['tls']);

    const bad = await req(admin, '/config_dump?resource=nope');
    t.equal(bad.status, 404);
  });

  t.test('/clusters and /listeners', async (t) => {
    const text = (await req(admin, '/clusters')).body;
    t.match(text, `outbound|80||app.default.svc.cluster.local::127.0.0.1:${app.port}::health_flags::healthy`);
    t.match(text, 'outbound|80||app.default.svc.cluster.local::default_priority::max_connections::100');
    t.match(text, 'outbound|80||app.default.svc.cluster.local::added_via_api::false');
    const json = JSON.parse((await req(admin, '/clusters?format=json')).body);
    t.same(checkProtoJson(root, 'envoy.admin.v3.Clusters', json), []);
    const c = json.cluster_statuses.find((x: any) => x.name === 'outbound|80||app.default.svc.cluster.local');
    t.same(c.host_statuses[0].address.socket_address, { address: '127.0.0.1', port_value: app.port });
    t.equal(c.host_statuses[0].health_status.eds_health_status, 'UNKNOWN');
    t.equal(c.circuit_breakers.thresholds[0].max_connections, 100);
    const lt = (await req(admin, '/listeners')).body;
    t.match(lt, `http::127.0.0.1:${proxyPort}`);
    const lj = JSON.parse((await req(admin, '/listeners?format=json')).body);
    t.same(checkProtoJson(root, 'envoy.admin.v3.Listeners', lj), []);
    t.same(lj.listener_statuses.map((l: any) => l.name), ['http', 'tls']);
  });

  t.test('/stats forms', async (t) => {
    const text = (await req(admin, '/stats')).body;
    t.match(text, 'cluster.outbound|80||app.default.svc.cluster.local.upstream_rq_total: 3\n');
    t.match(text, 'http.outbound_http.downstream_rq_2xx: 3\n');
    t.match(text, 'server.state: 0\n');
    const lines = text.trim().split('\n');
    t.same(lines, [...lines].sort(), 'sorted by name');
    const filtered = (await req(admin, '/stats?filter=upstream_rq_2xx')).body.trim().split('\n');
    t.ok(filtered.length >= 1 && filtered.every((l) => l.includes('upstream_rq_2xx')));
    const used = (await req(admin, '/stats?usedonly&filter=^cluster\\.inbound')).body;
    t.notMatch(used, 'upstream_rq_total', 'unused counters are left out with usedonly');
    const json = JSON.parse((await req(admin, '/stats?format=json&filter=downstream_rq_total')).body);
    t.same(json.stats, [{ name: 'http.outbound_http.downstream_rq_total', value: 3 }]);
    t.equal((await req(admin, '/stats?filter=(')).status, 400);
    const prom = (await req(admin, '/stats?format=prometheus')).body;
    t.match(prom, '# TYPE envoy_cluster_upstream_rq_total counter');
  });

  t.test('/server_info, /ready, /healthcheck', async (t) => {
    const info = JSON.parse((await req(admin, '/server_info')).body);
    t.same(checkProtoJson(root, 'envoy.admin.v3.ServerInfo', info), []);
    t.equal(info.state, 'LIVE');
    t.equal(info.node.id, 'sidecar~10.0.0.9~app.default~default.svc.cluster.local');
    t.same(await req(admin, '/ready').then((r) => [r.status, r.body]), [200, 'LIVE\n']);
    t.equal((await req(admin, '/healthcheck/fail')).status, 405, 'POST only');
    t.equal((await req(admin, '/healthcheck/fail', 'POST')).status, 200);
    t.equal((await req(admin, '/ready')).status, 503);
    t.equal((await req(admin, '/healthcheck/ok', 'POST')).status, 200);
    t.equal((await req(admin, '/ready')).status, 200);
  });

  t.test('/logging', async (t) => {
    const list = (await req(admin, '/logging')).body;
    t.match(list, /active loggers:/);
    const name = [...LOGGERS.keys()][0];
    t.equal((await req(admin, `/logging?${name}=debug`, 'POST')).status, 200);
    t.equal(LOGGERS.get(name)!.level, 'debug');
    t.equal((await req(admin, '/logging?level=warn', 'POST')).status, 200);
    t.ok([...LOGGERS.values()].every((l) => l.level === 'warn'));
    t.equal((await req(admin, '/logging?level=loud', 'POST')).status, 404);
    t.equal((await req(admin, '/logging?no_such_logger=info', 'POST')).status, 404);
    for (const l of LOGGERS.values()) l.setLevel('error');
  });

  t.test('/runtime, /runtime_modify, /memory', async (t) => {
    const rt = JSON.parse((await req(admin, '/runtime')).body);
    t.equal(rt.entries['upstream.healthy_panic_threshold'].final_value, '40');
    t.equal((await req(admin, '/runtime_modify?foo.bar=7', 'POST')).status, 200);
    t.equal(JSON.parse((await req(admin, '/runtime')).body).entries['foo.bar'].final_value, '7');
    const mem = JSON.parse((await req(admin, '/memory')).body);
    t.same(checkProtoJson(root, 'envoy.admin.v3.Memory', mem), []);
    t.ok(Number(mem.allocated) > 0);
  });

  t.test('/drain_listeners?inboundonly leaves outbound listeners serving', async (t) => {
    t.equal((await req(admin, '/drain_listeners?inboundonly', 'POST')).status, 200);
    t.equal((await req(proxyPort, '/still-outbound')).status, 200);
    t.equal((await req(admin, '/ready')).status, 503, 'draining is not ready');
  });

  t.test('/quitquitquit stops the server', async (t) => {
    const quit = new Promise<void>((r) => (keel.server.onQuit = r));
    t.equal((await req(admin, '/quitquitquit', 'POST')).status, 200);
    await quit;
    await t.rejects(req(proxyPort, '/'), 'the proxy is gone');
  });
});

t.test('dynamic resources (path_config_source): config_dump dynamic sections and xDS counters', async (t) => {
  const app = await startUpstream('app');
  t.teardown(() => app.close());
  const dir = fs.mkdtempSync(`${os.tmpdir()}/keel-admin-xds-`);
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cds = `${dir}/cds.yaml`;
  const lds = `${dir}/lds.yaml`;
  fs.writeFileSync(
    cds,
    `version_info: "7"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: dyn
  connect_timeout: 1s
  load_assignment: { cluster_name: dyn, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${app.port} } } } }] }] }
`,
  );
  fs.writeFileSync(
    lds,
    `version_info: "8"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: dynl
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: dynl
        route_config: { virtual_hosts: [{ name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: dyn } }] }] }
        http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
`,
  );
  const { bootstrap } = parseBootstrapText(
    `
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }
dynamic_resources:
  cds_config: { path_config_source: { path: ${cds} }, resource_api_version: V3 }
  lds_config: { path_config_source: { path: ${lds} }, resource_api_version: V3 }
`,
    't',
  );
  const keel = new KeelServer(bootstrap, { log: new Logger('error'), listenerDrainTimeMs: 100 });
  t.teardown(() => keel.stop(50));
  await keel.start();
  const end = Date.now() + 5000;
  while (!keel.ready && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  t.ok(keel.ready);
  const admin = keel.admin!.port;
  const dump = JSON.parse((await req(admin, '/config_dump')).body);
  t.same(checkProtoJson(envoyRoot(), 'envoy.admin.v3.ConfigDump', dump), []);
  const clusters = dump.configs.find((c: any) => c['@type'].endsWith('ClustersConfigDump'));
  t.same(clusters.dynamic_active_clusters.map((c: any) => [c.cluster.name, c.version_info]), [['dyn', '7']]);
  t.equal(clusters.version_info, '7');
  const listeners = dump.configs.find((c: any) => c['@type'].endsWith('ListenersConfigDump'));
  t.equal(listeners.dynamic_listeners[0].name, 'dynl');
  t.equal(listeners.dynamic_listeners[0].active_state.version_info, '8');
  t.equal(listeners.dynamic_listeners[0].active_state.listener.name, 'dynl');
  const text = (await req(admin, '/stats?filter=update_')).body;
  t.match(text, 'cluster_manager.cds.update_success: 1\n');
  t.match(text, 'listener_manager.lds.update_success: 1\n');
  t.match(text, 'cluster_manager.cds.update_rejected: 0\n');
  t.match((await req(admin, '/stats/prometheus')).body, /\nenvoy_listener_manager_lds_update_success 1\n/);
  t.match((await req(admin, '/clusters')).body, 'dyn::added_via_api::true');
});

t.test('SDS secrets in /config_dump: certificate chain shown, private key never', async (t) => {
  const { crt, key } = await selfSignedCert();
  const chain = fs.readFileSync(crt, 'utf8');
  const secrets = new SecretManager();
  secrets.set('default', { kind: 'tls_certificate', certChain: chain, privateKey: fs.readFileSync(key, 'utf8') });
  secrets.set('ROOTCA', { kind: 'validation_context', trustedCa: chain });
  const { bootstrap } = parseBootstrapText(`admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }`, 't');
  const keel = new KeelServer(bootstrap, { log: new Logger('error'), secrets });
  t.teardown(() => keel.stop(10));
  await keel.start();
  const r = await req(keel.admin!.port, '/config_dump?resource=dynamic_active_secrets');
  const dump = JSON.parse(r.body);
  t.same(checkProtoJson(envoyRoot(), 'envoy.admin.v3.ConfigDump', dump), []);
  const byName = new Map(dump.configs.map((c: any) => [c.name, c]));
  const def = byName.get('default') as any;
  t.equal(def['@type'], 'type.googleapis.com/envoy.admin.v3.SecretsConfigDump.DynamicSecret');
  t.equal(Buffer.from(def.secret.tls_certificate.certificate_chain.inline_bytes, 'base64').toString(), chain, 'the chain istioctl decodes');
  t.equal(def.secret.tls_certificate.private_key.inline_string, '[redacted]');
  t.ok((byName.get('ROOTCA') as any).secret.validation_context.trusted_ca.inline_bytes);
  t.notMatch(r.body, /PRIVATE KEY/);
  t.notMatch(Buffer.from(r.body).toString(), new RegExp(Buffer.from(fs.readFileSync(key, 'utf8')).toString('base64').slice(0, 40).replace(/[+/]/g, '.')), 'nor the key in base64');
});
