// mTLS end to end with SDS secrets from the fake Istio CA: an outbound cluster presents `default` to
// a TLS upstream that requires and checks the client SAN, validates the upstream against ROOTCA and
// its SAN matcher (mismatch = 503 UF with Envoy's CERTIFICATE_VERIFY_FAILED details), picks mTLS or
// plaintext per endpoint by transport_socket_matches (tlsMode: istio); an inbound TLS listener that
// requires client certificates refuses clients without one (or from another CA), exposes the peer
// identity in x-forwarded-client-cert (APPEND_FORWARD + Subject/URI/DNS), resumes TLS sessions, and
// answers Istio's ALPN. The plaintext listener strips a client-sent x-forwarded-client-cert (SANITIZE).
import t from 'tap';
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import * as http2 from 'node:http2';
import * as tls from 'node:tls';
import { IstioCaClient } from '../../src/security/ca-client';
import { SecretManager } from '../../src/security/secret-manager';
import { Logger } from '../../src/common/logger';
import { createTestCa, mintCert, mintWorkloadCert, startFakeCa, type IssuedCert, type TestCa } from '../helpers/fake-ca';
import { startKeel } from '../helpers/keel';

const TD = 'cluster.local';
const ME = `spiffe://${TD}/ns/default/sa/productpage`;
const REVIEWS = `spiffe://${TD}/ns/default/sa/reviews`;

interface Seen {
  peer?: string;
  serial?: string;
  sni?: string | false;
  alpn?: string | false;
  reused?: boolean;
}

/** A "reviews" pod: HTTPS that requires a client certificate from the mesh root and reports what it saw. */
async function startMeshUpstream(ca: TestCa, cert: IssuedCert, seen: Seen[]): Promise<{ port: number; close: () => Promise<void> }> {
  const server = https.createServer({ cert: cert.certChain, key: cert.privateKey, ca: ca.rootCert, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['http/1.1'] }, (req, res) => {
    const s = req.socket as tls.TLSSocket;
    const pc = s.getPeerCertificate();
    const entry: Seen = { peer: /URI:([^,]+)/.exec(pc.subjectaltname ?? '')?.[1], serial: pc.serialNumber, sni: s.servername, alpn: s.alpnProtocol, reused: s.isSessionReused() };
    seen.push(entry);
    // every request on a new upstream connection, so rotation is visible
    res.writeHead(200, { 'content-type': 'application/json', connection: 'close' });
    res.end(JSON.stringify(entry));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** An HTTP/2 "reviews" pod over TLS that requires a client certificate from the mesh root. */
async function startMeshH2(ca: TestCa, cert: IssuedCert): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http2.createSecureServer({ cert: cert.certChain, key: cert.privateKey, ca: ca.rootCert, requestCert: true, rejectUnauthorized: true });
  server.on('stream', (stream) => {
    const s = stream.session!.socket as tls.TLSSocket;
    const pc = s.getPeerCertificate();
    stream.respond({ ':status': 200 });
    stream.end(JSON.stringify({ peer: /URI:([^,]+)/.exec(pc.subjectaltname ?? '')?.[1], alpn: s.alpnProtocol, h2: true }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (x) => sessions.add(x));
  return {
    port: (server.address() as { port: number }).port,
    close: () =>
      new Promise<void>((r) => {
        for (const x of sessions) x.destroy();
        server.close(() => r());
      }),
  };
}

/** A plain HTTP upstream echoing the request headers. */
async function startEcho(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ headers: req.headers, plain: true }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

const SDS = `{ ads: {}, resource_api_version: V3 }`;

function upstreamMtls(san: string, indent: string): string {
  return `transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    sni: outbound_.9080_._.reviews.default.svc.cluster.local
    common_tls_context:
      alpn_protocols: [istio-peer-exchange, istio, http/1.1]
      tls_certificate_sds_secret_configs:
      - name: default
        sds_config: ${SDS}
      combined_validation_context:
        default_validation_context:
          match_subject_alt_names:
          - exact: ${san}
        validation_context_sds_secret_config:
          name: ROOTCA
          sds_config: ${SDS}`
    .split('\n')
    .map((l) => indent + l)
    .join('\n');
}

function endpoint(port: number, tlsMode?: string): string {
  return `        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: ${port} }
${tlsMode ? `          metadata:\n            filter_metadata:\n              envoy.transport_socket_match: { tlsMode: ${tlsMode} }` : ''}`;
}

const H2_OPTS = `    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }`;

function config(meshPort: number, echoPort: number, h2Port = 1): string {
  const route = (prefix: string, cluster: string): string => `              - match: { prefix: "${prefix}" }\n                route: { cluster: ${cluster} }`;
  const hcm = (name: string, routes: string, extra = ''): string => `      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ${name}
${extra}
          route_config:
            name: ${name}
            virtual_hosts:
            - name: ${name}
              domains: ["*"]
              routes:
${routes}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }`;
  const tsm = `    transport_socket_matches:
    - name: tlsMode-istio
      match: { tlsMode: istio }
${upstreamMtls(REVIEWS, '      ')}
    - name: tlsMode-disabled
      match: {}
      transport_socket:
        name: envoy.transport_sockets.raw_buffer
        typed_config: { "@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer }`;
  const cl = (name: string, body: string, eps: string): string => `  - name: ${name}
    type: STATIC
    connect_timeout: 2s
${body}
    load_assignment:
      cluster_name: ${name}
      endpoints:
      - lb_endpoints:
${eps}`;
  return `
static_resources:
  listeners:
  - name: outbound
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
${hcm('outbound', [route('/ok', 'reviews'), route('/bad', 'wrong-san'), route('/auto-tls', 'auto-tls'), route('/auto-plain', 'auto-plain'), route('/echo', 'echo'), route('/h2', 'reviews-h2')].join('\n'))}
  - name: inbound
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificate_sds_secret_configs:
            - name: default
              sds_config: ${SDS}
            combined_validation_context:
              default_validation_context:
                match_subject_alt_names:
                - prefix: spiffe://${TD}/
              validation_context_sds_secret_config:
                name: ROOTCA
                sds_config: ${SDS}
      filters:
${hcm('inbound', route('/', 'echo'), '          forward_client_cert_details: APPEND_FORWARD\n          set_current_client_cert_details: { subject: true, uri: true, dns: true }')}
  clusters:
${cl('reviews', upstreamMtls(REVIEWS, '    '), endpoint(meshPort))}
${cl('wrong-san', upstreamMtls(`spiffe://${TD}/ns/default/sa/ratings`, '    '), endpoint(meshPort))}
${cl('auto-tls', tsm, endpoint(meshPort, 'istio'))}
${cl('auto-plain', tsm, endpoint(echoPort))}
${cl('echo', '', endpoint(echoPort))}
${cl('reviews-h2', `${upstreamMtls(REVIEWS, '    ')}\n${H2_OPTS}`, endpoint(h2Port))}
`;
}

function get(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
  });
}

/** One HTTPS request on a fresh TLS connection with a client certificate; resolves with status, body and the server's certificate. */
function tlsGet(
  port: number,
  opts: { cert?: IssuedCert; ca: string; session?: Buffer; alpn?: string[] },
  path = '/',
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; serverCert: tls.PeerCertificate; reused: boolean; session?: Buffer; alpn: string | false }> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({
      host: '127.0.0.1',
      port,
      ca: opts.ca,
      servername: 'localhost',
      checkServerIdentity: () => undefined,
      ...(opts.cert ? { cert: opts.cert.certChain, key: opts.cert.privateKey } : {}),
      ...(opts.session ? { session: opts.session } : {}),
      ALPNProtocols: opts.alpn ?? ['http/1.1'],
    });
    let session: Buffer | undefined;
    sock.on('session', (s: Buffer) => (session = s));
    sock.on('error', reject);
    sock.once('secureConnect', () => {
      const serverCert = sock.getPeerCertificate();
      const reused = sock.isSessionReused();
      const alpn = sock.alpnProtocol;
      const req = http.request({ createConnection: () => sock, path, headers: { host: 'x', connection: 'close', ...headers } }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, serverCert, reused, ...(session ? { session } : {}), alpn }));
      });
      req.on('error', reject);
      req.end();
    });
  });
}

t.test('mTLS with secrets from the CA', async (t) => {
  const fake = await startFakeCa({ token: 'jwt' });
  t.teardown(() => fake.close());
  const ca = fake.ca;
  const secrets = new SecretManager({
    ca: new IstioCaClient({ address: `127.0.0.1:${fake.port}`, rootCert: ca.rootCert, serverName: 'localhost', token: () => 'jwt', clusterId: 'Kubernetes' }),
    identity: { trustDomain: TD, namespace: 'default', serviceAccount: 'productpage' },
    ttlSeconds: 3600,
    log: new Logger('off'),
  });
  t.teardown(() => secrets.stop());
  await secrets.start();

  const seen: Seen[] = [];
  const mesh = await startMeshUpstream(ca, mintWorkloadCert(ca, 'default', 'reviews'), seen);
  t.teardown(() => mesh.close());
  const echo = await startEcho();
  t.teardown(() => echo.close());
  const meshH2 = await startMeshH2(ca, mintWorkloadCert(ca, 'default', 'reviews'));
  t.teardown(() => meshH2.close());
  const keel = await startKeel(config(mesh.port, echo.port, meshH2.port), { secrets });
  t.teardown(() => keel.stop());
  const out = keel.ports.get('outbound')!;
  const inb = keel.ports.get('inbound')!;

  t.test('upstream mTLS: our SPIFFE certificate, SNI and Istio ALPN', async (t) => {
    const r = await get(out, '/ok');
    t.equal(r.status, 200, r.body);
    const s = JSON.parse(r.body) as Seen;
    t.equal(s.peer, ME, 'the upstream saw our workload identity');
    t.equal(s.sni, 'outbound_.9080_._.reviews.default.svc.cluster.local');
    t.equal(s.alpn, 'http/1.1');
  });

  t.test('upstream TLS sessions are resumed on new connections', async (t) => {
    const a = JSON.parse((await get(out, '/ok')).body) as Seen;
    const b = JSON.parse((await get(out, '/ok')).body) as Seen;
    t.equal(a.peer, ME);
    t.equal(b.reused, true, 'the second connection resumed the session (the upstream closes after each response)');
    t.equal(b.peer, ME, 'with the same client identity');
  });

  t.test('HTTP/2 upstream over mTLS', async (t) => {
    const r = await get(out, '/h2');
    t.equal(r.status, 200, r.body);
    t.same(JSON.parse(r.body), { peer: ME, alpn: 'h2', h2: true });
  });

  t.test('SAN mismatch: 503 UF with the TLS details', async (t) => {
    const r = await get(out, '/bad');
    t.equal(r.status, 503);
    t.equal(r.body, 'upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end');
  });

  t.test('transport_socket_matches: tlsMode istio -> mTLS, no metadata -> plaintext', async (t) => {
    const a = await get(out, '/auto-tls');
    t.equal(a.status, 200, a.body);
    t.equal((JSON.parse(a.body) as Seen).peer, ME);
    const b = await get(out, '/auto-plain');
    t.equal(b.status, 200, b.body);
    t.equal((JSON.parse(b.body) as { plain: boolean }).plain, true);
  });

  t.test('SANITIZE on the plaintext listener removes a client-sent x-forwarded-client-cert', async (t) => {
    const r = await get(out, '/echo', { 'x-forwarded-client-cert': 'By=spiffe://evil;URI=spiffe://forged' });
    t.equal(r.status, 200);
    t.equal((JSON.parse(r.body) as { headers: Record<string, string> }).headers['x-forwarded-client-cert'], undefined);
  });

  t.test('inbound: client certificate required, peer identity in x-forwarded-client-cert', async (t) => {
    const client = mintWorkloadCert(ca, 'default', 'client', { dns: ['client.default.svc'] });
    const r = await tlsGet(inb, { cert: client, ca: ca.rootCert }, '/', { 'x-forwarded-client-cert': 'By=spiffe://a;URI=spiffe://b' });
    t.equal(r.status, 200, r.body);
    const xfcc = (JSON.parse(r.body) as { headers: Record<string, string> }).headers['x-forwarded-client-cert'];
    const der = new crypto.X509Certificate(client.cert).raw;
    const hash = crypto.createHash('sha256').update(der).digest('hex');
    t.equal(xfcc, `By=spiffe://a;URI=spiffe://b,By=${ME};Hash=${hash};Subject="";URI=spiffe://${TD}/ns/default/sa/client;DNS=client.default.svc`, 'APPEND_FORWARD');
    t.match(r.serverCert.subjectaltname, ME, 'the listener presents `default`');

    await t.rejects(tlsGet(inb, { ca: ca.rootCert }), 'no client certificate: refused');
    await t.rejects(get(inb, '/'), 'plaintext on a TLS-only (STRICT) listener: refused');
    const other = createTestCa();
    await t.rejects(tlsGet(inb, { cert: mintWorkloadCert(other, 'default', 'client'), ca: ca.rootCert }), 'a certificate from another root: refused');
    const foreignSan = mintCert(ca, { uris: ['spiffe://evil.org/ns/default/sa/x'] });
    await t.rejects(tlsGet(inb, { cert: foreignSan, ca: ca.rootCert }), 'a SAN the chain does not match: refused');
    const ssl = keel.server.listeners.find((l) => l.name === 'inbound')!.sslStats();
    t.ok(ssl.handshake >= 1, 'ssl.handshake');
    t.ok(ssl.fail_verify_no_cert >= 1, 'ssl.fail_verify_no_cert');
    t.equal(ssl.fail_verify_san, 1, 'ssl.fail_verify_san');
    t.ok(ssl.connection_error >= 2, 'ssl.connection_error');
  });

  t.test('inbound: session resumption and ALPN as Istio clients expect', async (t) => {
    const client = mintWorkloadCert(ca, 'default', 'client');
    const first = await tlsGet(inb, { cert: client, ca: ca.rootCert });
    t.equal(first.status, 200);
    t.ok(first.session, 'a session ticket was issued');
    const again = await tlsGet(inb, { cert: client, ca: ca.rootCert, session: first.session! });
    t.equal(again.status, 200);
    t.equal(again.reused, true, 'the session was resumed');
    t.ok(keel.server.listeners.find((l) => l.name === 'inbound')!.sslStats().session_reused >= 1, 'ssl.session_reused');
    const istio = await tlsGet(inb, { cert: client, ca: ca.rootCert, alpn: ['istio-peer-exchange', 'istio', 'http/1.1'] });
    t.equal(istio.alpn, 'http/1.1', 'server preference among what the client offers');
    const override = await tlsGet(inb, { cert: client, ca: ca.rootCert, alpn: ['istio-http/1.1'] });
    t.equal(override.status, 200, 'an istio.alpn override (no overlap) still connects');
    t.equal(override.alpn, 'istio-http/1.1');
  });
});

t.test('a TLS chain whose SDS secret is missing refuses connections', async (t) => {
  const echo = await startEcho();
  t.teardown(() => echo.close());
  const secrets = new SecretManager({ log: new Logger('off') });
  const keel = await startKeel(config(1, echo.port), { secrets });
  t.teardown(() => keel.stop());
  const ca = createTestCa();
  await t.rejects(tlsGet(keel.ports.get('inbound')!, { cert: mintWorkloadCert(ca, 'default', 'c'), ca: ca.rootCert }), 'no certificate yet: closed');
  const r = await get(keel.ports.get('outbound')!, '/ok');
  t.equal(r.status, 503, 'an upstream needing a missing secret fails');
  // the secrets arrive (as SDS would push them): both sides start working
  const mine = mintWorkloadCert(ca, 'default', 'productpage');
  secrets.set('default', { kind: 'tls_certificate', certChain: mine.certChain, privateKey: mine.privateKey });
  secrets.set('ROOTCA', { kind: 'validation_context', trustedCa: ca.rootCert });
  const ok = await tlsGet(keel.ports.get('inbound')!, { cert: mintWorkloadCert(ca, 'default', 'c'), ca: ca.rootCert });
  t.equal(ok.status, 200);
  t.match(ok.serverCert.subjectaltname, ME);
});
