// Certificates from the fake Istio CA (and from mounted files) serving a running keel, and their
// rotation: with a short TTL the workload certificate rotates at half life; a downstream connection
// opened before the rotation stays up and keeps working, new handshakes (downstream and upstream)
// present the new certificate. The same with /etc/certs-style files rewritten on disk.
import t from 'tap';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as tls from 'node:tls';
import { IstioCaClient } from '../../src/security/ca-client';
import { SecretManager } from '../../src/security/secret-manager';
import { Logger } from '../../src/common/logger';
import { createTestCa, mintWorkloadCert, startFakeCa, type TestCa } from '../helpers/fake-ca';
import { startKeel } from '../helpers/keel';
import { waitUntil } from '../helpers/wait';

const TD = 'cluster.local';
const SDS = `{ ads: {}, resource_api_version: V3 }`;

const until = (cond: () => boolean, ms: number, what: string): Promise<void> => waitUntil(cond, what, ms);

function yaml(upstreamPort: number, echoPort: number): string {
  return `
static_resources:
  listeners:
  - name: outbound
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: out
          route_config:
            virtual_hosts: [{ name: out, domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: mesh } }] }]
          http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
  - name: inbound
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs: [{ name: default, sds_config: ${SDS} }]
            validation_context_sds_secret_config: { name: ROOTCA, sds_config: ${SDS} }
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          forward_client_cert_details: SANITIZE_SET
          set_current_client_cert_details: { uri: true }
          route_config:
            virtual_hosts: [{ name: in, domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: echo } }] }]
          http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
  clusters:
  - name: mesh
    type: STATIC
    connect_timeout: 2s
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          alpn_protocols: [istio-peer-exchange, istio, http/1.1]
          tls_certificate_sds_secret_configs: [{ name: default, sds_config: ${SDS} }]
          combined_validation_context:
            default_validation_context:
              match_typed_subject_alt_names: [{ san_type: URI, matcher: { exact: "spiffe://${TD}/ns/default/sa/reviews" } }]
            validation_context_sds_secret_config: { name: ROOTCA, sds_config: ${SDS} }
    load_assignment:
      cluster_name: mesh
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${upstreamPort} } } } }] }]
  - name: echo
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: echo
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${echoPort} } } } }] }]
`;
}

/** The mesh upstream: requires a client cert from the root, answers with the client cert's serial, one request per connection. */
async function startUpstream(ca: TestCa): Promise<{ port: number; close: () => Promise<void> }> {
  const c = mintWorkloadCert(ca, 'default', 'reviews');
  const server = https.createServer({ cert: c.certChain, key: c.privateKey, ca: ca.rootCert, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    const pc = (req.socket as tls.TLSSocket).getPeerCertificate();
    res.writeHead(200, { connection: 'close' });
    res.end(pc.serialNumber);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

async function startEcho(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => res.end(String(req.headers['x-forwarded-client-cert'] ?? '')));
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

function plainGet(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/** A request through `agent` (keep-alive, one socket): status, body, the server's cert serial and whether the socket was reused. */
function agentGet(agent: https.Agent, port: number): Promise<{ status: number; body: string; serial: string; reused: boolean; socket: tls.TLSSocket }> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
      const socket = res.socket as tls.TLSSocket;
      const serial = socket.getPeerCertificate().serialNumber;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, serial, reused: req.reusedSocket, socket }));
    });
    req.on('error', reject);
  });
}

function clientAgent(ca: TestCa, sa: string): https.Agent {
  const c = mintWorkloadCert(ca, 'default', sa);
  return new https.Agent({ keepAlive: true, maxSockets: 1, ca: ca.rootCert, cert: c.certChain, key: c.privateKey, checkServerIdentity: () => undefined });
}

function currentSerial(sm: SecretManager): string | undefined {
  const d = sm.get('default');
  return d?.kind === 'tls_certificate' ? d.serialNumber : undefined;
}

t.test('a certificate from the CA rotates while a connection stays open', async (t) => {
  // 6 s lifetime: rotation at about 3 s (half life, ±1%)
  const fake = await startFakeCa({ token: 'jwt', ttlSeconds: 6 });
  t.teardown(() => fake.close());
  const ca = fake.ca;
  const secrets = new SecretManager({
    ca: new IstioCaClient({ address: `127.0.0.1:${fake.port}`, rootCert: ca.rootCert, serverName: 'localhost', token: () => 'jwt', clusterId: 'Kubernetes' }),
    identity: { trustDomain: TD, namespace: 'default', serviceAccount: 'productpage' },
    keyType: 'ECDSA',
    log: new Logger('off'),
  });
  t.teardown(() => secrets.stop());
  await secrets.start();
  const up = await startUpstream(ca);
  t.teardown(() => up.close());
  const echo = await startEcho();
  t.teardown(() => echo.close());
  const keel = await startKeel(yaml(up.port, echo.port), { secrets });
  t.teardown(() => keel.stop());
  const inb = keel.ports.get('inbound')!;
  const out = keel.ports.get('outbound')!;

  const agent = clientAgent(ca, 'client');
  t.teardown(() => agent.destroy());
  const a1 = await agentGet(agent, inb);
  t.equal(a1.status, 200);
  // The certificate this connection was handshaken with (the workload certificate of that moment:
  // with a 6 s lifetime it may already have rotated since start(), so it is read from the wire).
  const first = a1.serial;
  t.ok(first, 'the listener presents a CA-issued certificate');
  t.match(a1.body, /^By=spiffe:\/\/cluster\.local\/ns\/default\/sa\/productpage;Hash=[0-9a-f]{64};URI=spiffe:\/\/cluster\.local\/ns\/default\/sa\/client$/);
  const u1 = await plainGet(out);
  t.equal(u1.status, 200, 'the upstream accepts our CA-issued client certificate');

  await until(() => currentSerial(secrets) !== first, 20_000, 'the rotation');
  t.ok(fake.record.calls.length >= 2, 'the CA was asked again');

  const a2 = await agentGet(agent, inb);
  t.equal(a2.status, 200, 'the old connection still serves');
  t.equal(a2.reused, true, 'on the same socket');
  t.equal(a2.socket, a1.socket);
  t.equal(a2.serial, first, 'which keeps the certificate of its handshake');

  const fresh = clientAgent(ca, 'client2');
  t.teardown(() => fresh.destroy());
  const b = await agentGet(fresh, inb);
  t.equal(b.status, 200);
  t.not(b.serial, first, 'a new handshake gets the rotated certificate');

  const u2 = await plainGet(out);
  t.equal(u2.status, 200);
  t.not(u2.body, first, 'new upstream connections present the rotated client certificate');
});

t.test('mounted certificate files serve and reload', async (t) => {
  const ca = createTestCa();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-etc-certs-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const files = { certChain: path.join(dir, 'cert-chain.pem'), key: path.join(dir, 'key.pem'), rootCert: path.join(dir, 'root-cert.pem') };
  const c1 = mintWorkloadCert(ca, 'default', 'productpage');
  fs.writeFileSync(files.certChain, c1.certChain);
  fs.writeFileSync(files.key, c1.privateKey);
  fs.writeFileSync(files.rootCert, ca.rootCert);
  const secrets = new SecretManager({ files, filePollMs: 50, log: new Logger('off') });
  t.teardown(() => secrets.stop());
  await secrets.start();
  const up = await startUpstream(ca);
  t.teardown(() => up.close());
  const echo = await startEcho();
  t.teardown(() => echo.close());
  const keel = await startKeel(yaml(up.port, echo.port), { secrets });
  t.teardown(() => keel.stop());
  const inb = keel.ports.get('inbound')!;
  const first = currentSerial(secrets)!;
  const agent = clientAgent(ca, 'client');
  t.teardown(() => agent.destroy());
  const a1 = await agentGet(agent, inb);
  t.equal(a1.serial, first);
  t.equal((await plainGet(keel.ports.get('outbound')!)).body, first);

  const c2 = mintWorkloadCert(ca, 'default', 'productpage');
  fs.writeFileSync(files.key, c2.privateKey);
  fs.writeFileSync(files.certChain, c2.certChain);
  await until(() => currentSerial(secrets) !== first && (secrets.get('default') as { privateKey: string }).privateKey === c2.privateKey, 10_000, 'the reload');
  const fresh = clientAgent(ca, 'client2');
  t.teardown(() => fresh.destroy());
  const b = await agentGet(fresh, inb);
  t.equal(b.status, 200);
  t.equal(b.serial, currentSerial(secrets), 'new handshakes present the reloaded certificate');
  const a2 = await agentGet(agent, inb);
  t.equal(a2.reused, true, 'the open connection stayed up');
  t.equal(a2.serial, first);
});

t.test("Istio's file-cert:/file-root: SDS names, standalone (no CA)", async (t) => {
  const ca = createTestCa();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-file-sds-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const c = mintWorkloadCert(ca, 'default', 'productpage');
  const chain = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const root = path.join(dir, 'root.pem');
  fs.writeFileSync(chain, c.certChain);
  fs.writeFileSync(key, c.privateKey);
  fs.writeFileSync(root, ca.rootCert);
  const up = await startUpstream(ca);
  t.teardown(() => up.close());
  const echo = await startEcho();
  t.teardown(() => echo.close());
  const secrets = new SecretManager({ filePollMs: 50, log: new Logger('off') });
  t.teardown(() => secrets.stop());
  const y = yaml(up.port, echo.port).replace(/name: default, sds_config/g, `name: "file-cert:${chain}~${key}", sds_config`).replace(/name: ROOTCA, sds_config/g, `name: "file-root:${root}", sds_config`);
  t.match(y, 'file-cert:');
  const keel = await startKeel(y, { secrets });
  t.teardown(() => keel.stop());
  const r = await plainGet(keel.ports.get('outbound')!);
  t.equal(r.status, 200);
  t.equal(r.body, new (await import('node:crypto')).X509Certificate(c.cert).serialNumber, 'the file certificate is presented upstream');
  const agent = clientAgent(ca, 'client');
  t.teardown(() => agent.destroy());
  const a = await agentGet(agent, keel.ports.get('inbound')!);
  t.equal(a.status, 200);
  t.equal(a.serial, r.body, 'and downstream');
});
