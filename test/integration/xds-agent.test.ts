// The agent role end to end: keel starts from the injected environment alone (token, root cert, pod
// labels in a temp dir; PROXY_CONFIG pointing at the fake istiod), gets its workload certificate
// from the CA, connects over TLS with the bearer token, ClusterID and XDS_HEADER_* metadata, sends
// the node pilot-agent would, receives the Bookinfo config over delta ADS, ACKs, becomes ready
// (also through `keel wait`) and routes traffic; `keel request` reaches the admin.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { request } from 'undici';
import { Logger } from '../../src/common/logger';
import { startAgent } from '../../src/agent/proxy';
import { agentConfigFromEnv, parseAgentFlags } from '../../src/agent/env';
import { execFile, spawn } from 'node:child_process';
import { deadPort, startUpstream } from '../helpers/keel';
import { bookinfoProductpage, startFakeIstiod, TYPE, REVIEWS_V1 } from '../helpers/fake-istiod';
import { waitUntil } from '../helpers/wait';

// Loading Envoy's protos and (for the CLI) spawning TypeScript processes is slow on a loaded 2-core box.
t.setTimeout(240_000);

const until = (what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> => waitUntil(cond, what, timeoutMs);

function podEnv(dir: string, istiodPort: number, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    POD_NAME: 'productpage-v1-6b746f74dc-9stvs',
    POD_NAMESPACE: 'default',
    INSTANCE_IP: '10.244.0.12',
    SERVICE_ACCOUNT: 'bookinfo-productpage',
    HOST_IP: '172.18.0.2',
    PILOT_CERT_PROVIDER: 'istiod',
    CA_ADDR: `127.0.0.1:${istiodPort}`,
    ISTIOD_SAN: 'istiod.istio-system.svc',
    PROXY_CONFIG: JSON.stringify({ discoveryAddress: `127.0.0.1:${istiodPort}`, proxyMetadata: {}, holdApplicationUntilProxyStarts: false }),
    TRUST_DOMAIN: 'cluster.local',
    ISTIO_META_POD_PORTS: '[{"containerPort":9080,"protocol":"TCP"}]',
    ISTIO_META_APP_CONTAINERS: 'productpage',
    ISTIO_META_CLUSTER_ID: 'Kubernetes',
    ISTIO_META_INTERCEPTION_MODE: 'REDIRECT',
    ISTIO_META_WORKLOAD_NAME: 'productpage-v1',
    ISTIO_META_OWNER: 'kubernetes://apis/apps/v1/namespaces/default/deployments/productpage-v1',
    ISTIO_META_MESH_ID: 'cluster.local',
    ISTIO_METAJSON_LABELS: '{"extra":"from-env"}',
    XDS_HEADER_X_TEST_HEADER: 'hello',
    KEEL_TOKEN_PATH: path.join(dir, 'istio-token'),
    KEEL_ROOT_CERT_PATH: path.join(dir, 'root-cert.pem'),
    KEEL_POD_INFO_DIR: dir,
    KEEL_PROXY_DIR: dir,
    KEEL_ADMIN_PORT: '0',
    ...extra,
  };
}

t.test('flags: pilot-agent command lines are accepted, unknown flags tolerated', async (t) => {
  const p = parseAgentFlags(['sidecar', '--domain', 'default.svc.cluster.local', '--proxyLogLevel=warning', '--proxyComponentLogLevel=misc:error', '--log_output_level=default:info', '--concurrency', '2']);
  t.equal(p.type, 'sidecar');
  t.equal(p.flags.domain, 'default.svc.cluster.local');
  t.same(p.ignored, ['--proxyLogLevel', '--proxyComponentLogLevel', '--log_output_level', '--concurrency']);
  t.equal(parseAgentFlags(['router']).type, 'router');
  const cfg = agentConfigFromEnv({ POD_NAME: 'gw-1', POD_NAMESPACE: 'istio-system', INSTANCE_IP: '10.0.0.9' }, ['router']);
  t.equal(cfg.nodeId, 'router~10.0.0.9~gw-1.istio-system~istio-system.svc.cluster.local');
  t.equal(cfg.discoveryAddress, 'istiod.istio-system.svc:15012', 'the default discovery address');
  t.equal(cfg.istiodSan, 'istiod.istio-system.svc');
  t.ok(cfg.tls && cfg.delta);
  t.equal(agentConfigFromEnv({ PROXY_CONFIG: '{"discoveryAddress":"istiod:15010"}' }).tls, false, 'port 15010 is plaintext');
  t.equal(agentConfigFromEnv({ ISTIO_DELTA_XDS: 'false' }).delta, false);
  t.throws(() => agentConfigFromEnv({ ISTIO_METAJSON_LABELS: '{bad' }), /ISTIO_METAJSON_LABELS/);
});

t.test('keel proxy sidecar: env only + fake istiod -> certificate, delta ADS, ready, traffic', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-agent-'));
  const istiod = await startFakeIstiod({ token: 'projected-jwt' });
  const reviews = await startUpstream('reviews-v1');
  const app = await startUpstream('productpage');
  let stopAgent: (() => Promise<void>) | undefined;
  t.teardown(async () => {
    await stopAgent?.();
    await istiod.stop();
    await reviews.close();
    await app.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  fs.writeFileSync(path.join(dir, 'istio-token'), 'projected-jwt\n');
  fs.writeFileSync(path.join(dir, 'root-cert.pem'), istiod.rootCert);
  fs.writeFileSync(path.join(dir, 'labels'), 'app="productpage"\nversion="v1"\nsecurity.istio.io/tlsMode="istio"\n');
  fs.writeFileSync(path.join(dir, 'annotations'), 'sidecar.istio.io/status="{\\"initContainers\\":[\\"istio-init\\"]}"\n');
  istiod.load(bookinfoProductpage({ reviewsPort: reviews.port, appPort: app.port }));
  const agent = await startAgent(podEnv(dir, istiod.port), ['sidecar', '--domain', 'default.svc.cluster.local', '--proxyLogLevel=warning', '--unknown-flag', 'x'], {
    log: new Logger(process.env.KEEL_TEST_LOG === '1' ? 'info' : 'off'),
    status: false,
  });
  stopAgent = () => agent.stop();
  await until('ready', () => agent.server.ready);

  // The stream: TLS with ISTIOD_SAN, token, ClusterID, XDS_HEADER_*, and the node
  const first = istiod.requests[0];
  t.equal(first.mode, 'delta', 'delta ADS by default');
  t.equal(first.metadata.authorization, 'Bearer projected-jwt');
  t.equal(first.metadata.clusterid, 'Kubernetes');
  t.equal(first.metadata['x-test-header'] ?? first.metadata.x_test_header, 'hello', 'XDS_HEADER_* travel as stream metadata');
  const node = first.node!;
  t.equal(node.id, 'sidecar~10.244.0.12~productpage-v1-6b746f74dc-9stvs.default~default.svc.cluster.local');
  const md = node.metadata as Record<string, unknown>;
  t.equal(md.NAMESPACE, 'default');
  t.equal(md.NAME, 'productpage-v1-6b746f74dc-9stvs');
  t.equal(md.SERVICE_ACCOUNT, 'bookinfo-productpage');
  t.equal(md.CLUSTER_ID, 'Kubernetes');
  t.equal(md.INSTANCE_IPS, '10.244.0.12');
  t.equal(md.WORKLOAD_NAME, 'productpage-v1');
  t.equal(md.POD_PORTS, '[{"containerPort":9080,"protocol":"TCP"}]');
  t.same(md.LABELS, { app: 'productpage', version: 'v1', 'security.istio.io/tlsMode': 'istio', extra: 'from-env' }, 'labels from the downward API file, ISTIO_METAJSON_LABELS merged');
  t.match(md.ANNOTATIONS, { 'sidecar.istio.io/status': '{"initContainers":["istio-init"]}' });
  t.match(md.PROXY_CONFIG, { discoveryAddress: `127.0.0.1:${istiod.port}` });
  t.same(md.PILOT_SAN, ['istiod.istio-system.svc']);
  t.equal(node.user_agent_name, 'keel');

  // every type ACKed, no NACK
  for (const type of [TYPE.cluster, TYPE.endpoint, TYPE.listener, TYPE.route]) {
    await istiod.waitFor((r) => r.typeUrl === type && r.nonce !== '' && r.errorDetail === undefined);
  }
  t.notOk(istiod.requests.some((r) => r.errorDetail), 'no NACK');

  // the workload certificate from the CA (same token, SPIFFE SAN)
  await until('workload certificate', () => agent.secrets.get('default') !== undefined && agent.secrets.get('ROOTCA') !== undefined);
  t.ok(istiod.caRecord!.calls.length >= 1, 'CreateCertificate was called');
  t.same(istiod.caRecord!.calls[0].uris, ['spiffe://cluster.local/ns/default/sa/bookinfo-productpage']);
  t.equal(istiod.caRecord!.calls[0].metadata.authorization, 'Bearer projected-jwt');

  // traffic through the outbound listener to reviews v1
  const port = agent.server.listeners.find((l) => l.name === '0.0.0.0_9080')!.port;
  const r = await request(`http://127.0.0.1:${port}/reviews/0`, { headers: { host: 'reviews:9080' } });
  t.equal(r.statusCode, 200);
  t.equal(JSON.parse(await r.body.text()).upstream, 'reviews-v1');
  t.ok(agent.server.clusters.get(REVIEWS_V1));
});

t.test('mTLS config (transport_socket_matches with SDS default/ROOTCA) is ACKed', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-agent-'));
  const istiod = await startFakeIstiod({ token: 'jwt' });
  let stopAgent: (() => Promise<void>) | undefined;
  t.teardown(async () => {
    await stopAgent?.();
    await istiod.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  fs.writeFileSync(path.join(dir, 'istio-token'), 'jwt');
  fs.writeFileSync(path.join(dir, 'root-cert.pem'), istiod.rootCert);
  istiod.load(bookinfoProductpage({ reviewsPort: 1, appPort: 1, mtls: true }));
  const agent = await startAgent(podEnv(dir, istiod.port, { ISTIO_DELTA_XDS: 'false' }), ['sidecar'], { log: new Logger('off'), status: false });
  stopAgent = () => agent.stop();
  await until('ready', () => agent.server.ready);
  t.equal(istiod.requests[0].mode, 'sotw', 'ISTIO_DELTA_XDS=false: state of the world');
  t.notOk(istiod.requests.some((r) => r.errorDetail), 'no NACK');
  t.equal(agent.server.clusters.get(REVIEWS_V1)?.config.transportSocketMatches.length, 2);
});

const MAIN = path.join(__dirname, '../../src/cli/main.ts');

function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...process.execArgv, MAIN, ...args], { env, timeout: 150_000 }, (e, stdout, stderr) => {
      resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

t.test('CLI: keel proxy sidecar (process), keel wait, keel request, SIGTERM', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-agent-cli-'));
  const istiod = await startFakeIstiod({ token: 'jwt' });
  const reviews = await startUpstream('reviews-v1');
  t.teardown(async () => {
    await istiod.stop();
    await reviews.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  fs.writeFileSync(path.join(dir, 'istio-token'), 'jwt');
  fs.writeFileSync(path.join(dir, 'root-cert.pem'), istiod.rootCert);
  istiod.load(bookinfoProductpage({ reviewsPort: reviews.port, appPort: reviews.port }));
  const env = {
    ...process.env,
    ...podEnv(dir, istiod.port, {
      KEEL_ADMIN_PORT: String(await deadPort()),
      KEEL_READINESS_PORT: String(await deadPort()),
      KEEL_STATUS_PORT: String(await deadPort()),
      KEEL_PROMETHEUS_PORT: String(await deadPort()),
      MINIMUM_DRAIN_DURATION: '0s',
      TERMINATION_DRAIN_DURATION_SECONDS: '0',
    }),
  };
  const proxy = spawn(process.execPath, [...process.execArgv, MAIN, 'proxy', 'sidecar', '--domain', 'default.svc.cluster.local', '--proxyLogLevel=warning', '--proxyComponentLogLevel=misc:error', '--log_output_level=default:info'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proxy.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => proxy.on('close', (code) => resolve(code)));
  t.teardown(() => {
    if (proxy.exitCode === null) proxy.kill('SIGKILL');
  });
  const wait = await runCli(['wait', '--timeoutSeconds', '120', '--periodMillis', '100'], env);
  t.equal(wait.code, 0, `keel wait: ready (${wait.stderr}${err})`);
  const ready = await runCli(['request', 'GET', '/ready'], env);
  t.equal(ready.code, 0, 'keel request GET /ready');
  t.match(ready.stdout, /LIVE/);
  t.ok(istiod.requests.some((r) => r.node?.id === 'sidecar~10.244.0.12~productpage-v1-6b746f74dc-9stvs.default~default.svc.cluster.local'), 'the process sent the node');
  proxy.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM: drained and exited 0');
});
