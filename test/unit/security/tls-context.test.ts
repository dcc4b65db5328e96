// TLS context pieces: SAN matchers (URI/DNS/any, wildcard DNS), transport_socket_match on endpoint
// metadata, server ALPN selection, the upstream options following SDS rotation, x-forwarded-client-cert
// formatting per mode, the HCM config decoding, and the env-built workload secret manager.
import t from 'tap';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as tls from 'node:tls';
import { alpnSelector, compileSanMatchers, peerSans, transportSocketMatches, UpstreamTls, DownstreamTls, isCertVerifyError } from '../../../src/security/tls-context';
import { applyXfcc } from '../../../src/security/xfcc';
import { SecretManager } from '../../../src/security/secret-manager';
import { workloadSecretManager } from '../../../src/security/workload';
import { HeaderMap } from '../../../src/http/headers';
import { parseBootstrapText } from '../../../src/config/bootstrap';
import type { ConnectionInfo } from '../../../src/http/stream';
import type { UpstreamTlsConfig } from '../../../src/config/types';
import { createTestCa, mintWorkloadCert, startFakeCa } from '../../helpers/fake-ca';

t.test('peer SANs from Node\'s subjectaltname', async (t) => {
  t.same(peerSans('URI:spiffe://td/ns/a/sa/b, DNS:a.example.com, IP Address:10.0.0.1, email:x@y'), { uri: ['spiffe://td/ns/a/sa/b'], dns: ['a.example.com'], email: ['x@y'], ip: ['10.0.0.1'] });
  t.same(peerSans('DNS:"a, b.example.com", URI:x'), { uri: ['x'], dns: ['a, b.example.com'], email: [], ip: [] }, 'quoted entries');
  t.same(peerSans(undefined), { uri: [], dns: [], email: [], ip: [] });
});

t.test('SAN matchers', async (t) => {
  t.equal(compileSanMatchers([]), undefined, 'none: no check');
  const exact = compileSanMatchers([{ kind: 'any', match: { kind: 'exact', value: 'spiffe://td/ns/a/sa/b', ignoreCase: false } }])!;
  t.ok(exact(peerSans('URI:spiffe://td/ns/a/sa/b')));
  t.notOk(exact(peerSans('URI:spiffe://td/ns/a/sa/c')));
  t.notOk(exact(peerSans('')));
  const uriOnly = compileSanMatchers([{ kind: 'uri', match: { kind: 'prefix', value: 'spiffe://td/', ignoreCase: false } }])!;
  t.ok(uriOnly(peerSans('URI:spiffe://td/ns/x/sa/y')));
  t.notOk(uriOnly(peerSans('DNS:spiffe://td/ns/x')), 'a DNS SAN does not satisfy a URI matcher');
  const dns = compileSanMatchers([{ kind: 'dns', match: { kind: 'exact', value: 'api.example.com', ignoreCase: false } }])!;
  t.ok(dns(peerSans('DNS:*.example.com')), 'wildcard certificate covers one label');
  t.notOk(dns(peerSans('DNS:*.com')));
  t.notOk(dns(peerSans('DNS:*.other.com')));
  const two = compileSanMatchers([
    { kind: 'uri', match: { kind: 'exact', value: 'spiffe://td/ns/a/sa/one', ignoreCase: false } },
    { kind: 'uri', match: { kind: 'exact', value: 'spiffe://td/ns/a/sa/two', ignoreCase: false } },
  ])!;
  t.ok(two(peerSans('URI:spiffe://td/ns/a/sa/two')), 'any matcher suffices');
});

t.test('transport_socket_match on endpoint metadata', async (t) => {
  const istio = { 'envoy.transport_socket_match': { tlsMode: 'istio' } };
  t.ok(transportSocketMatches({ tlsMode: 'istio' }, istio));
  t.notOk(transportSocketMatches({ tlsMode: 'istio' }, {}));
  t.notOk(transportSocketMatches({ tlsMode: 'istio' }, { 'envoy.transport_socket_match': { tlsMode: 'disabled' } }));
  t.ok(transportSocketMatches({}, {}), 'empty match: every endpoint');
  t.ok(transportSocketMatches({}, istio));
});

t.test('server ALPN selection', async (t) => {
  const sel = alpnSelector(['h2', 'http/1.1']);
  t.equal(sel({ servername: '', protocols: ['http/1.1', 'h2'] }), 'h2', 'server preference');
  t.equal(sel({ servername: '', protocols: ['istio-peer-exchange', 'istio', 'http/1.1'] }), 'http/1.1');
  t.equal(sel({ servername: '', protocols: ['istio-peer-exchange', 'istio'] }), 'istio', 'no overlap: not istio-peer-exchange');
  t.equal(sel({ servername: '', protocols: ['istio-http/1.1'] }), 'istio-http/1.1');
});

t.test('verification error classification', async (t) => {
  t.ok(isCertVerifyError(Object.assign(new Error('x'), { code: 'ERR_KEEL_TLS_SAN_MISMATCH' })));
  t.ok(isCertVerifyError(Object.assign(new Error('x'), { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' })));
  t.notOk(isCertVerifyError(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })));
});

const upstreamCfg = (over: Partial<UpstreamTlsConfig> = {}): UpstreamTlsConfig => ({
  certificates: [],
  sdsCertificateNames: ['default'],
  sdsValidationName: 'ROOTCA',
  validation: { matchSubjectAltNames: [{ kind: 'uri', match: { kind: 'exact', value: 'spiffe://cluster.local/ns/default/sa/reviews', ignoreCase: false } }] },
  alpnProtocols: ['istio-peer-exchange', 'istio'],
  allowRenegotiation: false,
  sni: 'outbound_.9080_._.reviews.default.svc.cluster.local',
  ...over,
});

t.test('upstream options follow SDS rotation; missing secrets fail closed', async (t) => {
  const ca = createTestCa();
  const sm = new SecretManager();
  const up = new UpstreamTls(upstreamCfg(), sm, false);
  t.teardown(() => up.close());
  const before = up.options();
  t.equal(before.cert, undefined, 'no certificate yet');
  t.equal(before.rejectUnauthorized, true);
  const err = before.checkServerIdentity!('h', {} as tls.PeerCertificate) as NodeJS.ErrnoException;
  t.equal(err.code, 'ERR_KEEL_TLS_SECRET_NOT_READY');
  t.match(err.message, /'default', 'ROOTCA'/);
  const c1 = mintWorkloadCert(ca, 'default', 'productpage');
  sm.set('default', { kind: 'tls_certificate', certChain: c1.certChain, privateKey: c1.privateKey });
  sm.set('ROOTCA', { kind: 'validation_context', trustedCa: ca.rootCert });
  const o1 = up.options();
  t.equal(o1.cert, c1.certChain);
  t.equal(o1.ca, ca.rootCert);
  t.equal(o1.servername, 'outbound_.9080_._.reviews.default.svc.cluster.local');
  t.same(o1.ALPNProtocols, ['istio-peer-exchange', 'istio']);
  t.equal(o1.checkServerIdentity!('h', { subjectaltname: 'URI:spiffe://cluster.local/ns/default/sa/reviews' } as tls.PeerCertificate), undefined);
  t.equal((o1.checkServerIdentity!('h', { subjectaltname: 'URI:spiffe://cluster.local/ns/default/sa/other' } as tls.PeerCertificate) as NodeJS.ErrnoException).code, 'ERR_KEEL_TLS_SAN_MISMATCH');
  const c2 = mintWorkloadCert(ca, 'default', 'productpage');
  sm.set('default', { kind: 'tls_certificate', certChain: c2.certChain, privateKey: c2.privateKey });
  t.equal(up.options().cert, c2.certChain, 'rotated');
  t.equal(o1.cert, c1.certChain, 'options already handed out are not mutated');
  up.close();
  const c3 = mintWorkloadCert(ca, 'default', 'productpage');
  sm.set('default', { kind: 'tls_certificate', certChain: c3.certChain, privateKey: c3.privateKey });
  t.equal(up.options().cert, c2.certChain, 'closed: no more updates');
});

t.test('downstream context: not ready until its secrets arrive', async (t) => {
  const ca = createTestCa();
  const sm = new SecretManager();
  const d = new DownstreamTls({ certificates: [], sdsCertificateNames: ['default'], sdsValidationName: 'ROOTCA', requireClientCertificate: true, alpnProtocols: [] }, sm, ['http/1.1']);
  t.teardown(() => d.close());
  t.equal(d.ready, false);
  t.same(d.missingSecrets(), ['default', 'ROOTCA']);
  const c = mintWorkloadCert(ca, 'default', 'productpage');
  sm.set('default', { kind: 'tls_certificate', certChain: c.certChain, privateKey: c.privateKey });
  t.equal(d.ready, false, 'still waiting for ROOTCA');
  sm.set('ROOTCA', { kind: 'validation_context', trustedCa: ca.rootCert });
  t.equal(d.ready, true);
  t.equal(d.localPrincipal, 'spiffe://cluster.local/ns/default/sa/productpage');
});

function info(over: Partial<ConnectionInfo> = {}): ConnectionInfo {
  return { remoteAddress: '1.2.3.4', remotePort: 1, localAddress: '5.6.7.8', localPort: 2, secure: false, ...over };
}

t.test('x-forwarded-client-cert per forward_client_cert_details', async (t) => {
  const ca = createTestCa();
  const c = mintWorkloadCert(ca, 'ns1', 'client', { dns: ['client.ns1.svc'], commonName: 'Client, Inc' });
  const x = new crypto.X509Certificate(c.cert);
  const raw = x.raw;
  const hash = crypto.createHash('sha256').update(raw).digest('hex');
  const peerCertificate = { raw, subjectaltname: x.subjectAltName, issuerCertificate: undefined } as unknown as tls.PeerCertificate;
  const mtls = (): ConnectionInfo => info({ secure: true, peerCertificate, localPrincipal: 'spiffe://cluster.local/ns/default/sa/me', peerPrincipal: 'spiffe://cluster.local/ns/ns1/sa/client' });
  const run = (mode: Parameters<typeof applyXfcc>[1], conn: ConnectionInfo, prev?: string, details: Parameters<typeof applyXfcc>[2] = ['Subject', 'URI', 'DNS']): string | undefined => {
    const h = new HeaderMap(prev !== undefined ? ['x-forwarded-client-cert', prev] : []);
    applyXfcc(h, mode, details, conn);
    return h.get('x-forwarded-client-cert');
  };
  const element = `By=spiffe://cluster.local/ns/default/sa/me;Hash=${hash};Subject="CN=Client\\, Inc";URI=spiffe://cluster.local/ns/ns1/sa/client;DNS=client.ns1.svc`;
  t.equal(run(undefined, mtls(), 'x'), undefined, 'default SANITIZE');
  t.equal(run('SANITIZE', mtls(), 'x'), undefined);
  t.equal(run('FORWARD_ONLY', mtls(), 'x'), 'x', 'FORWARD_ONLY over mTLS keeps it');
  t.equal(run('FORWARD_ONLY', info(), 'x'), undefined, 'FORWARD_ONLY without mTLS removes it');
  t.equal(run('ALWAYS_FORWARD_ONLY', info(), 'x'), 'x', 'ALWAYS_FORWARD_ONLY keeps it on plaintext');
  t.equal(run('APPEND_FORWARD', mtls(), 'x'), `x,${element}`);
  t.equal(run('APPEND_FORWARD', mtls()), element);
  t.equal(run('APPEND_FORWARD', info(), 'x'), undefined, 'APPEND_FORWARD without mTLS sanitizes');
  t.equal(run('SANITIZE_SET', mtls(), 'x'), element);
  const withCert = run('SANITIZE_SET', mtls(), undefined, ['Cert', 'Chain', 'URI'])!;
  t.match(withCert, /^By=[^;]+;Hash=[0-9a-f]{64};Cert="-----BEGIN%20CERTIFICATE-----%0A[^"]+";Chain="-----BEGIN%20CERTIFICATE-----%0A[^"]+";URI=spiffe/);
  t.equal(decodeURIComponent(/Cert="([^"]+)"/.exec(withCert)![1]), c.cert, 'Cert is the URL-encoded PEM');
  const conn = mtls();
  t.equal(run('SANITIZE_SET', conn), run('SANITIZE_SET', conn), 'cached per connection');
});

t.test('HCM config: forward_client_cert_details and set_current_client_cert_details', async (t) => {
  const y = (extra: string): string => `
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
${extra}
          route_config: { virtual_hosts: [{ name: v, domains: ["*"], routes: [{ match: { prefix: "/" }, direct_response: { status: 200 } }] }] }
          http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
`;
  const hcm = (extra: string) => {
    const { bootstrap } = parseBootstrapText(y(extra), 't');
    const f = bootstrap.listeners[0].filterChains[0].filter;
    return f.kind === 'http_connection_manager' ? f : undefined;
  };
  const a = hcm('          forward_client_cert_details: APPEND_FORWARD\n          set_current_client_cert_details: { dns: true, uri: true, subject: true, cert: true, chain: true }');
  t.equal(a?.forwardClientCertDetails, 'APPEND_FORWARD');
  t.same(a?.setCurrentClientCertDetails, ['Cert', 'Chain', 'Subject', 'URI', 'DNS'], "Envoy's order");
  const b = hcm('');
  t.equal(b?.forwardClientCertDetails, undefined, 'SANITIZE by default');
  t.throws(() => hcm('          forward_client_cert_details: SOMETIMES'), /forward_client_cert_details/);
  t.throws(() => hcm('          set_current_client_cert_details: { colour: true }'), /colour/);
  const { warnings } = parseBootstrapText(y('          set_current_client_cert_details: { uri: true }'), 't');
  t.match(warnings.join('\n'), /no effect/);
});

t.test('workloadSecretManager: CA from the environment, or mounted files', async (t) => {
  const fake = await startFakeCa({ token: 'projected-jwt' });
  t.teardown(() => fake.close());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-agent-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'istio-token'), 'projected-jwt\n');
  fs.writeFileSync(path.join(dir, 'root-cert.pem'), fake.ca.rootCert);
  const none = { certChain: path.join(dir, 'no-chain'), key: path.join(dir, 'no-key'), rootCert: path.join(dir, 'no-root') };
  const sm = workloadSecretManager(
    { CA_ADDR: `127.0.0.1:${fake.port}`, POD_NAMESPACE: 'bookinfo', SERVICE_ACCOUNT: 'bookinfo-productpage', ISTIO_META_CLUSTER_ID: 'c1', CA_HEADER_X_TENANT: 't1', ECC_SIGNATURE_ALGORITHM: 'ECDSA' },
    { files: none, tokenPath: path.join(dir, 'istio-token'), caRootPath: path.join(dir, 'root-cert.pem') },
  );
  t.teardown(() => sm.stop());
  await sm.start();
  const d = sm.get('default');
  t.same(d?.kind === 'tls_certificate' && d.uris, ['spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage']);
  const call = fake.record.calls[0];
  t.equal(call.metadata.authorization, 'Bearer projected-jwt');
  t.equal(call.metadata.clusterid, 'c1');
  t.equal(call.metadata.x_tenant, 't1');
  t.equal(call.keyType, 'ec');
  t.equal(call.validityDuration, 86_400, 'SECRET_TTL default 24h');

  t.throws(() => workloadSecretManager({}, { files: none, caRootPath: path.join(dir, 'missing.pem') }), /cannot read the CA root certificate/);

  const ca = createTestCa();
  const c = mintWorkloadCert(ca, 'default', 'filed');
  const files = { certChain: path.join(dir, 'cert-chain.pem'), key: path.join(dir, 'key.pem'), rootCert: path.join(dir, 'root.pem') };
  fs.writeFileSync(files.certChain, c.certChain);
  fs.writeFileSync(files.key, c.privateKey);
  fs.writeFileSync(files.rootCert, ca.rootCert);
  const fsm = workloadSecretManager({}, { files });
  t.teardown(() => fsm.stop());
  await fsm.start();
  const fd = fsm.get('default');
  t.same(fd?.kind === 'tls_certificate' && fd.uris, ['spiffe://cluster.local/ns/default/sa/filed']);
});

t.test('an unusable secret version is refused; the previous one keeps serving', async (t) => {
  const ca = createTestCa();
  const sm = new SecretManager();
  const good = mintWorkloadCert(ca, 'default', 'productpage');
  const other = mintWorkloadCert(ca, 'default', 'other');
  sm.set('default', { kind: 'tls_certificate', certChain: good.certChain, privateKey: good.privateKey });
  sm.set('ROOTCA', { kind: 'validation_context', trustedCa: ca.rootCert });
  const d = new DownstreamTls({ certificates: [], sdsCertificateNames: ['default'], sdsValidationName: 'ROOTCA', requireClientCertificate: true, alpnProtocols: [] }, sm, ['http/1.1']);
  const up = new UpstreamTls(upstreamCfg(), sm, false);
  t.teardown(() => {
    d.close();
    up.close();
  });
  t.equal(d.ready, true);
  const before = up.options();
  t.ok(before.secureContext, 'a prebuilt secure context');
  // a key that does not belong to the certificate
  sm.set('default', { kind: 'tls_certificate', certChain: good.certChain, privateKey: other.privateKey });
  t.equal(d.ready, true, 'still serving');
  t.equal(d.rejectedSecrets, 1);
  t.equal(up.options(), before, 'upstream keeps the previous options');
  const fresh = new DownstreamTls({ certificates: [], sdsCertificateNames: ['default'], sdsValidationName: 'ROOTCA', requireClientCertificate: true, alpnProtocols: [] }, sm, ['http/1.1']);
  t.teardown(() => fresh.close());
  t.equal(fresh.ready, false, 'a new chain with only the bad secret does not serve');
  const freshUp = new UpstreamTls(upstreamCfg(), sm, false);
  t.teardown(() => freshUp.close());
  t.equal((freshUp.options().checkServerIdentity!('h', {} as tls.PeerCertificate) as NodeJS.ErrnoException).code, 'ERR_KEEL_TLS_SECRET_NOT_READY', 'and a new upstream fails closed');
});
