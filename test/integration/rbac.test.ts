// envoy.filters.http.rbac and envoy.filters.network.rbac as Istio's AuthorizationPolicy emits them:
// principals from the peer certificate (mTLS with certificates minted here), source IPs, methods,
// paths, headers; ALLOW and DENY filters in Istio's order; shadow rules counted, not enforced;
// RBACPerRoute disabling the filter; 403 `RBAC: access denied`; a denied connection is closed.
import t from 'tap';
import * as https from 'node:https';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { startKeel, startUpstream, type RunningKeel } from '../helpers/keel';
import { createTestCa, mintWorkloadCert, type IssuedCert } from '../helpers/fake-ca';
import { parseBootstrapText } from '../../src/config/bootstrap';
import { RbacEngine, RbacStats, clientAddress, enforce, rbacFilterType } from '../../src/filters/rbac';
import type { RbacConfig } from '../../src/config/filters/rbac';
import type { ConnectionInfo } from '../../src/http/stream';
import { HeaderMap } from '../../src/http/headers';
import type { FilterCallbacks } from '../../src/http/filter';

const ca = createTestCa();
const server = mintWorkloadCert(ca, 'default', 'httpbin');
const sleep = mintWorkloadCert(ca, 'default', 'sleep');
const other = mintWorkloadCert(ca, 'other', 'client');
const q = (s: string): string => JSON.stringify(s);

const tlsContext = `
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates: [{ certificate_chain: { inline_string: ${q(server.certChain)} }, private_key: { inline_string: ${q(server.privateKey)} } }]
            validation_context: { trusted_ca: { inline_string: ${q(ca.rootCert)} } }`;

const RBAC = '"@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
const httpYaml = (upPort: number): string => `
static_resources:
  listeners:
  - name: inbound
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - ${tlsContext.trim()}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound_8080
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: /public }
                route: { cluster: app }
                typed_per_filter_config:
                  envoy.filters.http.rbac:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
              - match: { prefix: / }
                route: { cluster: app }
          http_filters:
          - name: envoy.filters.http.rbac.deny
            typed_config:
              ${RBAC}
              rules:
                action: DENY
                policies:
                  ns[default]-policy[deny-admin]-rule[0]:
                    permissions: [{ and_rules: { rules: [{ or_rules: { rules: [{ url_path: { path: { prefix: /admin } } }] } }] } }]
                    principals: [{ and_ids: { ids: [{ any: true }] } }]
          - name: envoy.filters.http.rbac
            typed_config:
              ${RBAC}
              rules:
                action: ALLOW
                policies:
                  ns[default]-policy[allow-sleep]-rule[0]:
                    permissions:
                    - and_rules:
                        rules:
                        - or_rules: { rules: [{ header: { name: ":method", string_match: { exact: GET } } }] }
                        - or_rules: { rules: [{ url_path: { path: { prefix: /api } } }, { url_path: { path: { exact: /admin } } }] }
                    principals:
                    - and_ids:
                        ids:
                        - or_ids: { ids: [{ authenticated: { principal_name: { exact: "spiffe://cluster.local/ns/default/sa/sleep" } } }] }
                  ns[default]-policy[allow-header]-rule[0]:
                    permissions: [{ any: true }]
                    principals: [{ header: { name: x-token, string_match: { exact: open-sesame } } }]
              shadow_rules:
                action: DENY
                policies:
                  shadow-loopback:
                    permissions: [{ any: true }]
                    principals: [{ remote_ip: { address_prefix: 127.0.0.0, prefix_len: 8 } }]
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${upPort} } } } }] }]
`;

function request(port: number, cert: IssuedCert, method: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, method, path, headers, cert: cert.certChain, key: cert.privateKey, ca: ca.rootCert, rejectUnauthorized: false, agent: false },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        // the test upstream answers JSON naming itself: keep just its name
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: /^\{"upstream":"([^"]+)"/.exec(body)?.[1] ?? body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

t.test('HTTP RBAC over mTLS: principals, methods, paths, headers, DENY before ALLOW, shadow, per-route', async (t) => {
  const up = await startUpstream('app');
  const keel: RunningKeel = await startKeel(httpYaml(up.port));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const p = keel.port;
  t.same(await request(p, sleep, 'GET', '/api/items?x=1'), { status: 200, body: 'app' }, 'sleep may GET /api');
  t.same(await request(p, sleep, 'POST', '/api/items'), { status: 403, body: 'RBAC: access denied' }, 'not POST');
  t.same(await request(p, other, 'GET', '/api/items'), { status: 403, body: 'RBAC: access denied' }, 'another identity');
  t.same(await request(p, other, 'GET', '/api/items', { 'x-token': 'open-sesame' }), { status: 200, body: 'app' }, 'the header principal');
  t.same(await request(p, sleep, 'GET', '/admin'), { status: 403, body: 'RBAC: access denied' }, 'DENY wins although ALLOW would allow');
  t.same(await request(p, other, 'GET', '/public/x'), { status: 200, body: 'app' }, 'RBACPerRoute without rbac disables the filter on the route');
  t.equal(up.requests.length, 3, 'denied requests never reached the app');

  const hcm = keel.server.listeners[0]!.connectionManagers[0]!;
  const stats: Record<string, number> = {};
  for (const f of hcm.filters) Object.assign(stats, f.stats?.() ?? {});
  // both RBAC filters share the HCM's prefix: Envoy sums them into one scope; here each factory reports its own
  const allow = hcm.filters.find((f) => f.name === 'envoy.filters.http.rbac')!.stats!();
  t.same(allow, {
    'http.inbound_8080.rbac.allowed': 2,
    'http.inbound_8080.rbac.denied': 2,
    'http.inbound_8080.rbac.shadow_allowed': 0,
    'http.inbound_8080.rbac.shadow_denied': 4,
  });
  const deny = hcm.filters.find((f) => f.name === 'envoy.filters.http.rbac.deny')!.stats!();
  t.equal(deny['http.inbound_8080.rbac.denied'], 1);
  t.equal(deny['http.inbound_8080.rbac.allowed'], 5, 'per-route config is keyed by filter name: the deny filter still ran on /public');
  t.ok(Object.keys(stats).length > 0);
});

t.test('the local reply: 403, body, details naming the policy (or none)', async (t) => {
  const cfg: RbacConfig = {
    rules: {
      action: 'DENY',
      policies: [{ name: 'deny-post', permissions: [{ kind: 'header', header: { name: ':method', invert: false, treatMissingAsEmpty: false, kind: 'string', match: { kind: 'exact', value: 'POST', ignoreCase: false } } }], principals: [{ kind: 'any' }] }],
    },
    rulesStatPrefix: '',
    shadowRulesStatPrefix: '',
  };
  const replies: string[] = [];
  const factory = rbacFilterType.createFactory({ name: 'rbac', typeName: rbacFilterType.typeName, config: cfg, isOptional: false, disabled: false }, { statPrefix: 'x' });
  const stream = (method: string): FilterCallbacks =>
    ({
      path: '/p',
      connection: { remoteAddress: '10.0.0.1', remotePort: 1, localAddress: '10.0.0.2', localPort: 80, secure: false },
      perFilterConfig: () => undefined,
      sendLocalReply: (status: number, body: string, details: string, flag: string) => replies.push(`${status}|${body}|${details}|${flag}`),
      method,
    }) as unknown as FilterCallbacks;
  const f = factory.create(stream('POST'))!;
  f.decodeHeaders!(new HeaderMap([':method', 'POST', ':path', '/p']), true);
  factory.create(stream('GET'))!.decodeHeaders!(new HeaderMap([':method', 'GET', ':path', '/p']), true);
  t.same(replies, ['403|RBAC: access denied|rbac_access_denied_matched_policy[deny-post]|']);

  const allow = new RbacEngine({ rules: { action: 'ALLOW', policies: [] }, rulesStatPrefix: 'p.', shadowRulesStatPrefix: '' });
  const st = new RbacStats('x.rbac.');
  t.equal(enforce(allow, { connection: { remoteAddress: '1.2.3.4', remotePort: 1, localAddress: '', localPort: 0, secure: false } }, st), 'none', 'ALLOW with no policy denies: [none]');
  t.equal(st.get('p.denied'), 1, 'rules_stat_prefix');
  const log = new RbacEngine({ rules: { action: 'LOG', policies: [{ name: 'l', permissions: [{ kind: 'any' }], principals: [{ kind: 'any' }] }] }, rulesStatPrefix: '', shadowRulesStatPrefix: '' });
  t.equal(enforce(log, { connection: { remoteAddress: '1.2.3.4', remotePort: 1, localAddress: '', localPort: 0, secure: false } }, st), undefined, 'LOG never denies');
  t.equal(st.get('logged'), 1);
});

t.test('principal and permission kinds', async (t) => {
  const conn = (o: Partial<ConnectionInfo>): ConnectionInfo => ({ remoteAddress: '10.1.2.3', remotePort: 5, localAddress: '10.0.0.9', localPort: 8080, secure: true, ...o });
  const allowIf = (perm: unknown, principal: unknown): RbacEngine =>
    new RbacEngine({ rules: { action: 'ALLOW', policies: [{ name: 'p', permissions: [perm as never], principals: [principal as never] }] }, rulesStatPrefix: '', shadowRulesStatPrefix: '' });
  const st = new RbacStats('');
  const ok = (e: RbacEngine, c: ConnectionInfo, headers?: HeaderMap, path?: string): boolean =>
    enforce(e, { connection: c, ...(headers ? { headers } : {}), ...(path !== undefined ? { path } : {}) }, st) === undefined;
  const any = { kind: 'any' };
  const exact = (value: string) => ({ kind: 'exact', value, ignoreCase: false });

  t.ok(ok(allowIf({ kind: 'destination_port', port: 8080 }, any), conn({})));
  t.notOk(ok(allowIf({ kind: 'destination_port', port: 9090 }, any), conn({})));
  t.ok(ok(allowIf({ kind: 'destination_port_range', start: 8000, end: 8081 }, any), conn({})));
  t.ok(ok(allowIf({ kind: 'destination_ip', cidr: { addressPrefix: '10.0.0.0', prefixLen: 24 } }, any), conn({})));
  t.notOk(ok(allowIf({ kind: 'not', rule: { kind: 'destination_ip', cidr: { addressPrefix: '10.0.0.0', prefixLen: 24 } } }, any), conn({})));
  t.ok(ok(allowIf({ kind: 'requested_server_name', match: { kind: 'suffix', value: '.svc.cluster.local', ignoreCase: false } }, any), conn({ sni: 'outbound_.80_._.a.svc.cluster.local' })));
  t.notOk(ok(allowIf({ kind: 'requested_server_name', match: exact('x') }, any), conn({})));
  t.ok(ok(allowIf(any, { kind: 'direct_remote_ip', cidr: { addressPrefix: '10.1.0.0', prefixLen: 16 } }), conn({})));
  t.notOk(ok(allowIf(any, { kind: 'remote_ip', cidr: { addressPrefix: '192.168.0.0', prefixLen: 16 } }), conn({})));
  t.ok(ok(allowIf(any, { kind: 'not', id: { kind: 'remote_ip', cidr: { addressPrefix: '192.168.0.0', prefixLen: 16 } } }), conn({})));
  const spiffe = 'spiffe://cluster.local/ns/a/sa/b';
  t.ok(ok(allowIf(any, { kind: 'authenticated', principalName: exact(spiffe) }), conn({ peerPrincipal: spiffe })));
  t.ok(ok(allowIf(any, { kind: 'authenticated', principalName: exact(spiffe) }), conn({ peerCertificate: { subjectaltname: `DNS:x, URI:${spiffe}` } as never })), 'from the certificate SANs');
  t.notOk(ok(allowIf(any, { kind: 'authenticated', principalName: exact(spiffe) }), conn({})), 'no peer certificate');
  t.ok(ok(allowIf(any, { kind: 'authenticated' }), conn({ peerPrincipal: spiffe })), 'any authenticated peer');
  t.ok(ok(allowIf(any, { kind: 'peer_principal', match: { kind: 'prefix', value: 'spiffe://cluster.local/ns/a/', ignoreCase: false } }), conn({ peerPrincipal: spiffe })));
  t.ok(ok(allowIf({ kind: 'url_path', path: exact('/x') }, any), conn({}), new HeaderMap(), '/x'));
  t.notOk(ok(allowIf({ kind: 'url_path', path: exact('/x') }, any), conn({})), 'no path on a connection');
  t.ok(ok(allowIf({ kind: 'header', header: { name: ':authority', invert: false, treatMissingAsEmpty: false, kind: 'string', match: { kind: 'prefix', value: 'api.', ignoreCase: false } } }, any), conn({}), new HeaderMap([':authority', 'api.example.com'])));
  t.ok(ok(allowIf({ kind: 'or', rules: [{ kind: 'destination_port', port: 1 }, { kind: 'destination_port', port: 8080 }] }, { kind: 'and', ids: [any, any] }), conn({})));
  t.notOk(ok(allowIf({ kind: 'and', rules: [{ kind: 'destination_port', port: 1 }, { kind: 'destination_port', port: 8080 }] }, any), conn({})));
});

t.test('config: decoded with paths; unevaluated matchers fail closed; CEL refused', async (t) => {
  const base = (filter: string): string => `
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
${filter}
      - name: envoy.filters.network.tcp_proxy
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: c }
  clusters:
  - { name: c, type: STATIC, connect_timeout: 1s, load_assignment: { cluster_name: c, endpoints: [] } }
`;
  const good = parseBootstrapText(
    base(`      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: tcp.
          rules: { policies: { p: { permissions: [{ destination_port: 80 }], principals: [{ source_ip: { address_prefix: 10.0.0.0, prefix_len: 8 } }] } } }`),
    'test',
  );
  const chain = good.bootstrap.listeners[0]!.filterChains[0]!;
  t.equal(chain.networkFilters?.length, 1);
  t.match(chain.networkFilters![0]!.config, { statPrefix: 'tcp.', rules: { action: 'ALLOW', policies: [{ name: 'p', principals: [{ kind: 'direct_remote_ip' }] }] } });
  // Istio's TCP telemetry filters around it are accepted and skipped
  const istio = parseBootstrapText(
    base(`      - name: istio.metadata_exchange
        typed_config: { "@type": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange, value: { protocol: istio-peer-exchange } }
      - name: envoy.filters.network.rbac
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC, stat_prefix: tcp., rules: { policies: {} } }
      - name: istio.stats
        typed_config: { "@type": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/stats.PluginConfig, value: {} }`),
    'test',
  );
  t.equal(istio.bootstrap.listeners[0]!.filterChains[0]!.networkFilters?.length, 1, 'only RBAC is kept');
  t.equal(istio.warnings.filter((w) => /is accepted and skipped/.test(w)).length, 2);
  // matchers keel does not evaluate are accepted with a warning and fail closed
  const unevaluated = parseBootstrapText(
    base(`      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: tcp.
          rules: { action: DENY, policies: { p: { permissions: [{ metadata: { filter: x, path: [{ key: y }], value: { present_match: true } } }], principals: [{ not_id: { metadata: { filter: istio_authn, path: [{ key: request.auth.principal }], value: { present_match: true } } } }] } } }`),
    'test',
  );
  t.match(unevaluated.warnings.join('\n'), /rules\.policies\["p"\]\.permissions\[0\]\.metadata: permission 'metadata' is not evaluated by keel: it fails closed/);
  t.match(unevaluated.warnings.join('\n'), /principals\[0\]\.not_id\.metadata: principal 'metadata' is not evaluated/);
  const conn: ConnectionInfo = { remoteAddress: '10.0.0.1', remotePort: 1, localAddress: '10.0.0.2', localPort: 80, secure: false };
  const st = new RbacStats('');
  const cfg = unevaluated.bootstrap.listeners[0]!.filterChains[0]!.networkFilters![0]!.config as RbacConfig;
  t.equal(enforce(new RbacEngine(cfg), { connection: conn }, st), 'p', 'DENY: an unevaluated matcher matches (also under not_id): denied');
  const asAllow = new RbacEngine({ ...cfg, rules: { ...cfg.rules!, action: 'ALLOW' } });
  t.equal(enforce(asAllow, { connection: conn }, st), 'none', 'ALLOW: an unevaluated matcher never matches: denied');
  t.throws(
    () =>
      parseBootstrapText(
        base(`      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: tcp.
          rules: { action: DENY, policies: { p: { permissions: [{ any: true }], principals: [{ any: true }], condition: { const_expr: { bool_value: true } } } } }`),
        'test',
      ),
    /rules\.policies\["p"\]\.condition: condition \(CEL\) is not supported/,
  );
});

t.test('network RBAC before tcp_proxy: denied connections are closed, allowed ones pass; mTLS principal', async (t) => {
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => echo.close(() => r())));
  const echoPort = (echo.address() as net.AddressInfo).port;
  const listener = (name: string, rules: string, tlsBlock = ''): string => `
  - name: ${name}
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - ${tlsBlock ? tlsBlock.trim() + '\n      ' : ''}filters:
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: ${name}.
          rules: ${rules}
      - name: envoy.filters.network.tcp_proxy
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: ${name}, cluster: echo }`;
  const keel = await startKeel(`
static_resources:
  listeners:
${listener('deny', '{ action: ALLOW, policies: { p: { permissions: [{ any: true }], principals: [{ remote_ip: { address_prefix: 10.0.0.0, prefix_len: 8 } }] } } }')}
${listener('allow', '{ action: DENY, policies: { p: { permissions: [{ destination_port: 1 }], principals: [{ any: true }] } } }')}
${listener('mtls', '{ action: ALLOW, policies: { p: { permissions: [{ any: true }], principals: [{ authenticated: { principal_name: { exact: "spiffe://cluster.local/ns/default/sa/sleep" } } }] } } }', tlsContext)}
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: echo, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${echoPort} } } } }] }] }
`);
  t.teardown(() => keel.stop());
  const roundTrip = (s: net.Socket | tls.TLSSocket): Promise<string> =>
    new Promise((resolve) => {
      let out = '';
      s.on('data', (d: Buffer) => {
        out += d.toString();
        if (out === 'ping') s.end();
      });
      s.on('error', () => undefined);
      s.on('close', () => resolve(out));
      s.write('ping');
    });
  t.equal(await roundTrip(net.connect(keel.ports.get('deny')!, '127.0.0.1')), '', 'closed without a byte through');
  t.equal(await roundTrip(net.connect(keel.ports.get('allow')!, '127.0.0.1')), 'ping');
  const mtls = (cert: IssuedCert): Promise<string> =>
    new Promise((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port: keel.ports.get('mtls')!, cert: cert.certChain, key: cert.privateKey, ca: ca.rootCert, rejectUnauthorized: false });
      s.once('secureConnect', () => void roundTrip(s).then(resolve));
      s.on('error', () => resolve(''));
    });
  t.equal(await mtls(sleep), 'ping', 'the allowed SPIFFE identity');
  t.equal(await mtls(other), '', 'another identity is closed after the handshake');
  const byName = (n: string): Record<string, number> => keel.server.listeners.find((l) => l.name === n)!.networkFilterStats();
  t.equal(byName('deny')['deny.rbac.denied'], 1);
  t.equal(byName('allow')['allow.rbac.allowed'], 1);
  t.equal(byName('mtls')['mtls.rbac.allowed'], 1);
  t.equal(byName('mtls')['mtls.rbac.denied'], 1);
});

t.test('remote_ip is the client address the HCM derives from x-forwarded-for; direct_remote_ip the peer', async (t) => {
  const h = (xff?: string): HeaderMap => new HeaderMap(xff === undefined ? [] : ['x-forwarded-for', xff]);
  t.equal(clientAddress(h('1.1.1.1,10.0.0.9'), '10.0.0.9', { useRemoteAddress: true, xffNumTrustedHops: 0 }), '10.0.0.9', 'use_remote_address: the peer');
  t.equal(clientAddress(h('1.1.1.1,10.0.0.9'), '10.0.0.9', { useRemoteAddress: true, xffNumTrustedHops: 1 }), '1.1.1.1', 'one trusted hop');
  t.equal(clientAddress(h('1.1.1.1, 2.2.2.2'), '10.0.0.9', { useRemoteAddress: false, xffNumTrustedHops: 0 }), '2.2.2.2', 'without use_remote_address: the last XFF entry');
  t.equal(clientAddress(h(), '10.0.0.9', { useRemoteAddress: false, xffNumTrustedHops: 0 }), '10.0.0.9', 'no XFF: the peer');
  t.equal(clientAddress(h('junk'), '10.0.0.9', { useRemoteAddress: false, xffNumTrustedHops: 0 }), '10.0.0.9', 'not an IP: the peer');
  const cfg = (kind: 'remote_ip' | 'direct_remote_ip'): RbacConfig => ({
    rules: { action: 'ALLOW', policies: [{ name: 'p', permissions: [{ kind: 'any' }], principals: [{ kind, cidr: { addressPrefix: '1.1.1.0', prefixLen: 24 } }] }] },
    rulesStatPrefix: '',
    shadowRulesStatPrefix: '',
  });
  const denied: string[] = [];
  const stream = {
    path: '/',
    connection: { remoteAddress: '10.0.0.9', remotePort: 1, localAddress: '10.0.0.2', localPort: 80, secure: false },
    perFilterConfig: () => undefined,
    sendLocalReply: (_s: number, _b: string, details: string) => denied.push(details),
  } as unknown as FilterCallbacks;
  const run = (kind: 'remote_ip' | 'direct_remote_ip'): void => {
    const f = rbacFilterType.createFactory({ name: 'r', typeName: rbacFilterType.typeName, config: cfg(kind), isOptional: false, disabled: false }, { statPrefix: 's', xff: { useRemoteAddress: false, xffNumTrustedHops: 0 } });
    f.create(stream)!.decodeHeaders!(new HeaderMap([':method', 'GET', ':path', '/', 'x-forwarded-for', '1.1.1.7']), true);
  };
  run('remote_ip');
  t.same(denied, [], 'remote_ip matched the XFF client');
  run('direct_remote_ip');
  t.same(denied, ['rbac_access_denied_matched_policy[none]'], 'direct_remote_ip is the physical peer');
});
