// Filter-chain selection on a real listener with tls_inspector and http_inspector, the way Istio's
// virtualInbound uses them: SNI exact beats wildcard beats none, transport_protocol tls vs
// raw_buffer, ALPN (istio-http/1.1) and sniffed HTTP (http/1.1, h2c) vs opaque TCP; the TLS
// chains still terminate TLS after the inspection; listener_filters_timeout with and without
// continue_on_listener_filters_timeout.
import t from 'tap';
import * as net from 'node:net';
import * as tls from 'node:tls';
import * as http2 from 'node:http2';
import { startKeel } from '../helpers/keel';
import { createTestCa, mintCert } from '../helpers/fake-ca';
import { H2_PREFACE } from '../../src/listener/peek';
import { parseBootstrapText } from '../../src/config/bootstrap';

const ca = createTestCa();
const cert = mintCert(ca, { dns: ['api.example.com', '*.example.com', 'other.org'] });
const q = (s: string): string => JSON.stringify(s);
const tlsSocket = `
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [{ certificate_chain: { inline_string: ${q(cert.certChain)} }, private_key: { inline_string: ${q(cert.privateKey)} } }]`;

/** An HCM chain that answers every request with its own name. */
function hcmChain(name: string, match: string, secure = false): string {
  return `
    - name: ${name}
      filter_chain_match: ${match}${secure ? tlsSocket : ''}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ${name}
          route_config: { virtual_hosts: [{ name: v, domains: ["*"], routes: [{ match: { prefix: / }, direct_response: { status: 200, body: { inline_string: ${name} } } }] }] }
          http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]`;
}

function tcpChain(name: string, match: string, port: number): string {
  return `
    - name: ${name}
      filter_chain_match: ${match}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: ${name}, cluster: echo }`;
}

function yaml(echoPort: number, extra = ''): string {
  return `
static_resources:
  listeners:
  - name: inbound
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
${extra}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }
    - name: envoy.filters.listener.http_inspector
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector }
    filter_chains:${hcmChain('tls-api', '{ server_names: [api.example.com], transport_protocol: tls }', true)}${hcmChain(
    'tls-wild',
    '{ server_names: ["*.example.com"], transport_protocol: tls }',
    true,
  )}${hcmChain('tls-istio-http', '{ transport_protocol: tls, application_protocols: [istio-http/1.0, istio-http/1.1, istio-h2] }', true)}${hcmChain(
    'tls-any',
    '{ transport_protocol: tls }',
    true,
  )}${hcmChain('plain-http', '{ transport_protocol: raw_buffer, application_protocols: [http/1.1, http/1.0, h2c] }')}${tcpChain('plain-tcp', '{ transport_protocol: raw_buffer }', echoPort)}
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: echo, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${echoPort} } } } }] }] }
`;
}

/** GET / over TLS with this SNI and ALPN; the body names the chain. */
function tlsGet(port: number, servername: string | undefined, alpn: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ...(servername ? { servername } : {}), ALPNProtocols: alpn, ca: ca.rootCert, rejectUnauthorized: false });
    let out = '';
    s.on('secureConnect', () => s.write('GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'));
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('end', () => resolve(out.split('\r\n\r\n')[1] ?? ''));
    s.on('error', reject);
  });
}

function rawExchange(port: number, data: Buffer | string, until: (s: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let out = '';
    s.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      if (until(out)) {
        s.destroy();
        resolve(out);
      }
    });
    s.on('close', () => resolve(out));
    s.on('error', reject);
    s.write(data);
  });
}

t.test('SNI, transport protocol, ALPN and sniffed HTTP pick the chain', async (t) => {
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => echo.close(() => r())));
  const keel = await startKeel(yaml((echo.address() as net.AddressInfo).port));
  t.teardown(() => keel.stop());
  const p = keel.port;
  t.equal(await tlsGet(p, 'api.example.com', ['http/1.1']), 'tls-api', 'exact server name');
  t.equal(await tlsGet(p, 'www.example.com', ['http/1.1']), 'tls-wild', 'wildcard server name');
  t.equal(await tlsGet(p, 'a.b.example.com', ['http/1.1']), 'tls-wild', 'the wildcard covers deeper names');
  t.equal(await tlsGet(p, 'other.org', ['istio-peer-exchange', 'istio-http/1.1', 'http/1.1']), 'tls-istio-http', 'ALPN istio-http/1.1');
  t.equal(await tlsGet(p, 'other.org', ['http/1.1']), 'tls-any', 'TLS without a matching name or ALPN');
  t.equal(await tlsGet(p, undefined, ['http/1.1']), 'tls-any', 'TLS without SNI');
  const h1 = await rawExchange(p, 'GET / HTTP/1.1\r\nhost: x\r\n\r\n', (s) => s.includes('plain-http'));
  t.match(h1, /^HTTP\/1\.1 200[\s\S]*plain-http$/, 'http_inspector: http/1.1');
  const h10 = await rawExchange(p, 'GET / HTTP/1.0\r\n\r\n', (s) => s.includes('\r\n\r\n'));
  t.match(h10, /^HTTP\/1\.1 \d{3} /, 'http_inspector: http/1.0 goes to the HTTP chain (its HCM answers; the TCP chain would echo)');
  const h2 = http2.connect(`http://127.0.0.1:${p}`);
  t.teardown(() => h2.close());
  const body = await new Promise<string>((resolve, reject) => {
    const r = h2.request({ ':path': '/' });
    let b = '';
    r.on('data', (d: Buffer) => (b += d.toString()));
    r.on('end', () => resolve(b));
    r.on('error', reject);
  });
  t.equal(body, 'plain-http', 'http_inspector: h2c preface');
  const opaque = await rawExchange(p, '\x00\x01opaque-protocol', (s) => s.includes('opaque-protocol'));
  t.equal(opaque, '\x00\x01opaque-protocol', 'anything else: the raw_buffer TCP chain (echo)');
  t.equal(H2_PREFACE.length, 24);
  const st = keel.server.listeners[0]!.networkFilterStats();
  t.match(st, {
    'tls_inspector.tls_found': 6,
    'tls_inspector.sni_found': 5,
    'tls_inspector.sni_not_found': 1,
    'tls_inspector.alpn_found': 6,
    'http_inspector.http11_found': 1,
    'http_inspector.http10_found': 1,
    'http_inspector.http2_found': 1,
    'http_inspector.http_not_found': 1,
  }, 'listener filter counters');
  t.equal(st['tls_inspector.tls_not_found'], 4, 'the plaintext connections');
});

t.test('listener_filters_timeout: a silent client is closed, or served with continue_on_listener_filters_timeout', async (t) => {
  const echo = net.createServer((s) => {
    s.write('server-first\n');
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => echo.close(() => r())));
  const port = (echo.address() as net.AddressInfo).port;
  const strict = await startKeel(yaml(port, '    listener_filters_timeout: 0.2s'));
  t.teardown(() => strict.stop());
  const closed = await new Promise<string>((resolve) => {
    const s = net.connect(strict.port, '127.0.0.1');
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('error', () => undefined);
    s.on('close', () => resolve(out));
  });
  t.equal(closed, '', 'closed after the timeout without a chain');
  t.equal(strict.server.listeners[0]!.networkFilterStats()[`listener.127.0.0.1_${strict.port}.downstream_pre_cx_timeout`], undefined, 'counted under the configured address');
  t.equal(strict.server.listeners[0]!.networkFilterStats()['listener.127.0.0.1_0.downstream_pre_cx_timeout'], 1, 'listener_filters_timeout counted');
  const lenient = await startKeel(yaml(port, '    listener_filters_timeout: 0.2s\n    continue_on_listener_filters_timeout: true'));
  t.teardown(() => lenient.stop());
  const served = await new Promise<string>((resolve) => {
    const s = net.connect(lenient.port, '127.0.0.1');
    s.on('data', (d: Buffer) => {
      s.destroy();
      resolve(d.toString());
    });
    s.on('error', () => resolve('error'));
  });
  t.equal(served, 'server-first\n', 'a server-first protocol works: the raw_buffer chain took the connection after the timeout');
});

t.test('chains whose matches overlap are refused, with both paths', async (t) => {
  const chain = (names: string): string => `
    - filter_chain_match: { server_names: [${names}] }
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: echo }`;
  const yaml = (a: string, b: string): string => `
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:${chain(a)}${chain(b)}
  clusters:
  - { name: echo, type: STATIC, connect_timeout: 1s, load_assignment: { cluster_name: echo, endpoints: [] } }
`;
  t.doesNotThrow(() => parseBootstrapText(yaml('a.com', 'b.com'), 'test'));
  t.throws(
    () => parseBootstrapText(yaml('a.com, b.com', 'b.com, c.com'), 'test'),
    /static_resources\.listeners\[0\]\.filter_chains\[1\]\.filter_chain_match: multiple filter chains with the same matching rules \(overlaps static_resources\.listeners\[0\]\.filter_chains\[0\]\)/,
  );
});
