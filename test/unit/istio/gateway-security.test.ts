// Gateway servers -> listeners (TLS SIMPLE/MUTUAL by SNI, PASSTHROUGH to tcp_proxy, httpsRedirect,
// plain HTTP virtual hosts from bound VirtualServices), AuthorizationPolicy -> the RBAC filters
// istiod emits, PeerAuthentication -> the listener's mTLS chains.
import t from 'tap';
import { selfSignedCert } from '../../helpers/keel';
import { EP, envoy, hcmOf, warnings, type J } from './helpers';

t.test('gateway: HTTP with httpsRedirect, HTTPS SIMPLE and MUTUAL per SNI, PASSTHROUGH, VirtualService binding', async (t) => {
  const { crt, key } = await selfSignedCert();
  const e = envoy(
    EP('productpage', 9080) +
      `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: bookinfo-gateway }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: 80, name: http, protocol: HTTP }
    hosts: [bookinfo.com]
    tls: { httpsRedirect: true }
  - port: { number: 8080, name: http-alt, protocol: HTTP }
    hosts: ["*"]
  - port: { number: 443, name: https, protocol: HTTPS }
    hosts: [bookinfo.com]
    tls: { mode: SIMPLE, serverCertificate: ${crt}, privateKey: ${key}, minProtocolVersion: TLSV1_2 }
  - port: { number: 443, name: https-mtls, protocol: HTTPS }
    hosts: [secure.bookinfo.com]
    tls: { mode: MUTUAL, serverCertificate: ${crt}, privateKey: ${key}, caCertificates: ${crt} }
  - port: { number: 443, name: tls-pass, protocol: TLS }
    hosts: [db.bookinfo.com]
    tls: { mode: PASSTHROUGH }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: bookinfo }
spec:
  hosts: ["bookinfo.com", "secure.bookinfo.com"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{ uri: { exact: /productpage } }]
    route: [{ destination: { host: productpage, port: { number: 9080 } } }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: db }
spec:
  hosts: ["db.bookinfo.com"]
  gateways: [default/bookinfo-gateway]
  tls:
  - match: [{ port: 443, sniHosts: [db.bookinfo.com] }]
    route: [{ destination: { host: productpage, port: { number: 9080 } } }]
`,
    { mode: 'gateway', gatewayAddress: '0.0.0.0' },
  );
  const listeners = e.static_resources.listeners as J[];
  t.same(listeners.map((l) => l.name), ['0.0.0.0_80', '0.0.0.0_8080', '0.0.0.0_443']);
  t.same(listeners.map((l) => l.address.socket_address.port_value), [80, 8080, 443]);
  const http80 = hcmOf(e, 0);
  t.equal(http80.route_config.name, 'http.80');
  t.same(http80.route_config.virtual_hosts[0].domains, ['bookinfo.com', 'bookinfo.com:*']);
  t.equal(http80.route_config.virtual_hosts[0].require_tls, 'ALL', 'httpsRedirect');
  t.equal(http80.use_remote_address, true, 'a gateway is the edge');
  const http8080 = hcmOf(e, 1);
  t.same(
    http8080.route_config.virtual_hosts.map((v: J) => v.domains),
    [
      ['bookinfo.com', 'bookinfo.com:*'],
      ['secure.bookinfo.com', 'secure.bookinfo.com:*'],
    ],
    'a * server takes the VirtualService hosts',
  );
  const l443 = listeners[2];
  t.same(l443.listener_filters.map((f: J) => f.name), ['envoy.filters.listener.tls_inspector']);
  const [simple, mutual, pass] = l443.filter_chains as J[];
  t.same(simple.filter_chain_match, { transport_protocol: 'tls', server_names: ['bookinfo.com'] });
  t.same(simple.transport_socket.typed_config.common_tls_context.tls_params, { tls_minimum_protocol_version: 'TLSv1_2' });
  t.equal(simple.transport_socket.typed_config.require_client_certificate, undefined);
  t.equal(simple.filters[0].typed_config.route_config.name, 'https.443.https.bookinfo-gateway.default');
  t.same(simple.filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route.cluster, 'outbound|9080||productpage.default.svc.cluster.local');
  t.same(mutual.filter_chain_match.server_names, ['secure.bookinfo.com']);
  t.equal(mutual.transport_socket.typed_config.require_client_certificate, true);
  t.same(mutual.transport_socket.typed_config.common_tls_context.validation_context, { trusted_ca: { filename: crt } });
  t.same(pass.filter_chain_match, { transport_protocol: 'tls', server_names: ['db.bookinfo.com'] });
  t.equal(pass.filters[0].name, 'envoy.filters.network.tcp_proxy');
  t.equal(pass.filters[0].typed_config.cluster, 'outbound|9080||productpage.default.svc.cluster.local');
  t.equal(pass.transport_socket, undefined, 'passthrough does not terminate TLS');
});

t.test('gateway: a TLS server in SIMPLE mode terminates TLS and proxies TCP to the tcp route; TCP servers too', async (t) => {
  const { crt, key } = await selfSignedCert();
  const e = envoy(
    EP('mongo', 27017) +
      `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw }
spec:
  servers:
  - port: { number: 27018, name: tls-mongo, protocol: TLS }
    hosts: [mongo.example.com]
    tls: { mode: SIMPLE, serverCertificate: ${crt}, privateKey: ${key} }
  - port: { number: 27017, name: mongo, protocol: TCP }
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: mongo }
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - route: [{ destination: { host: mongo, port: { number: 27017 } } }]
`,
    { mode: 'gateway' },
  );
  const [tlsL, tcpL] = e.static_resources.listeners as J[];
  t.equal(tlsL.filter_chains[0].transport_socket.name, 'envoy.transport_sockets.tls');
  t.equal(tlsL.filter_chains[0].filters[0].typed_config.cluster, 'outbound|27017||mongo.default.svc.cluster.local');
  t.equal(tcpL.filter_chains[0].filters[0].name, 'envoy.filters.network.tcp_proxy');
  t.equal(tcpL.filter_chains[0].transport_socket, undefined);
});

t.test('authorization policies -> RBAC filters (DENY then ALLOW), selected by namespace and labels', async (t) => {
  const e = envoy(
    EP('httpbin', 8000) +
      `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-get, namespace: default }
spec:
  action: ALLOW
  rules:
  - from:
    - source: { principals: ["cluster.local/ns/default/sa/sleep"] }
    - source: { namespaces: [test] }
    to:
    - operation: { methods: [GET], paths: ["/headers*"] }
    when:
    - { key: "request.headers[X-Token]", values: [secret] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: istio-system }
spec:
  action: DENY
  rules:
  - to: [{ operation: { paths: [/admin], notMethods: [OPTIONS] } }]
    from: [{ source: { ipBlocks: [10.0.0.0/8] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: other-ns, namespace: elsewhere }
spec: { action: DENY, rules: [{}] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: other-workload }
spec:
  selector: { matchLabels: { app: ratings } }
  action: DENY
  rules: [{}]
`,
  );
  const filters = hcmOf(e).http_filters as J[];
  t.same(filters.map((f) => f.name), ['envoy.filters.http.rbac', 'envoy.filters.http.rbac', 'envoy.filters.http.router']);
  const deny = filters[0].typed_config.rules;
  const allow = filters[1].typed_config.rules;
  t.equal(deny.action, 'DENY');
  t.same(Object.keys(deny.policies), ['ns[istio-system]-policy[deny-admin]-rule[0]'], 'policies of other namespaces and workloads do not apply');
  t.same(deny.policies['ns[istio-system]-policy[deny-admin]-rule[0]'], {
    permissions: [
      {
        and_rules: {
          rules: [
            { not_rule: { or_rules: { rules: [{ header: { name: ':method', string_match: { exact: 'OPTIONS' } } }] } } },
            { or_rules: { rules: [{ url_path: { path: { exact: '/admin' } } }] } },
          ],
        },
      },
    ],
    principals: [{ and_ids: { ids: [{ or_ids: { ids: [{ direct_remote_ip: { address_prefix: '10.0.0.0', prefix_len: 8 } }] } }] } }],
  });
  t.equal(allow.action, 'ALLOW');
  const p = allow.policies['ns[default]-policy[allow-get]-rule[0]'];
  t.same(p.principals, [
    {
      or_ids: {
        ids: [
          { and_ids: { ids: [{ or_ids: { ids: [{ authenticated: { principal_name: { exact: 'spiffe://cluster.local/ns/default/sa/sleep' } } }] } }] } },
          { and_ids: { ids: [{ or_ids: { ids: [{ authenticated: { principal_name: { safe_regex: { regex: '.*/ns/test/.*' } } } }] } }] } },
        ],
      },
    },
  ]);
  t.same(p.permissions, [
    {
      and_rules: {
        rules: [
          {
            and_rules: {
              rules: [
                { or_rules: { rules: [{ header: { name: ':method', string_match: { exact: 'GET' } } }] } },
                { or_rules: { rules: [{ url_path: { path: { prefix: '/headers' } } }] } },
              ],
            },
          },
          { or_rules: { rules: [{ header: { name: 'x-token', string_match: { exact: 'secret' } } }] } },
        ],
      },
    },
  ]);
});

t.test('an ALLOW policy with no rules denies everything; CUSTOM is skipped with a warning', async (t) => {
  const yaml =
    EP('httpbin', 8000) +
    `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-nothing }
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ext }
spec: { action: CUSTOM, provider: { name: opa }, rules: [{}] }
`;
  const filters = hcmOf(envoy(yaml)).http_filters as J[];
  t.same(filters[0].typed_config.rules, { action: 'ALLOW', policies: {} });
  t.match(warnings(yaml).join('\n'), /CUSTOM is not enforced/);
});

t.test('PeerAuthentication: STRICT with mesh certificates -> TLS-only chain requiring client certs; PERMISSIVE adds plaintext; without certs a warning', async (t) => {
  const { crt, key } = await selfSignedCert();
  const pa = (mode: string, ns = 'istio-system'): string => `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: ${ns} }
spec: { mtls: { mode: ${mode} } }
---`;
  const certs = { meshCerts: { certChain: crt, key, rootCert: crt } };
  let l = envoy(EP() + pa('STRICT'), certs).static_resources.listeners[0];
  t.equal(l.filter_chains.length, 1);
  t.same(l.filter_chains[0].filter_chain_match, { transport_protocol: 'tls' });
  t.equal(l.filter_chains[0].transport_socket.typed_config.require_client_certificate, true);
  l = envoy(EP() + pa('STRICT') + pa('PERMISSIVE', 'default'), certs).static_resources.listeners[0];
  t.equal(l.filter_chains.length, 2, 'the namespace policy beats the mesh-wide one: TLS and plaintext chains');
  l = envoy(EP() + pa('DISABLE', 'default'), certs).static_resources.listeners[0];
  t.equal(l.filter_chains.length, 1);
  t.equal(l.filter_chains[0].transport_socket, undefined);
  t.match(warnings(EP() + pa('STRICT')).join('\n'), /STRICT mTLS is not enforced/);
});

t.test('gateway: only Gateways whose selector matches this proxy (--labels; default istio=ingressgateway) are served', async (t) => {
  const yaml =
    EP('httpbin', 8000) +
    `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: egress }
spec:
  selector: { istio: egressgateway }
  servers: [{ port: { number: 80, name: http, protocol: HTTP }, hosts: ["*"] }]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: ingress }
spec:
  selector: { istio: ingressgateway }
  servers: [{ port: { number: 8080, name: http, protocol: HTTP }, hosts: ["*"] }]
`;
  t.same((envoy(yaml, { mode: 'gateway' }).static_resources.listeners as J[]).map((l) => l.name), ['0.0.0.0_8080']);
  t.match(warnings(yaml, { mode: 'gateway' }).join('\n'), /Gateway egress: spec\.selector .* does not select this gateway/);
  t.same((envoy(yaml, { mode: 'gateway', proxyLabels: { istio: 'egressgateway' } }).static_resources.listeners as J[]).map((l) => l.name), ['0.0.0.0_80']);
});
