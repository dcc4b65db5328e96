// keel as an Istio sidecar, end to end in network namespaces. Two "pods" and a client:
//
//   client (10.77.0.1) --veth-- pod A (10.77.0.2 | 10.77.1.1) --veth-- pod B (10.77.1.2)
//
// Each pod runs an app (HTTP on 8080 that reports who called it, a TCP echo) and keel as uid/gid
// 1337 behind the rules `keel istio-iptables` installs. Pod A's keel: virtualOutbound 15001
// (use_original_dst, hand-off to the bind_to_port: false listener 0.0.0.0_8080 whose cluster speaks
// mTLS to pod B with pod A's SPIFFE certificate; anything else through PassthroughCluster) and a
// PERMISSIVE virtualInbound 15006 (tls_inspector + http_inspector; the plaintext HTTP chain for port
// 8080, the default chain to InboundPassthroughCluster), inbound upstream connections bound to
// 127.0.0.6. Pod B's keel: a STRICT virtualInbound (only an mTLS chain, with an RBAC rule that lets
// pod A's identity in). Pod B also has a plain TCP listener on 8443 (not captured) that records the
// first byte it gets. Certificates are minted here (test/helpers/fake-ca.ts); configs are static.
//
// Shown: inbound and outbound requests pass through keel (its admin /stats counts them); the app
// sees inbound calls from 127.0.0.6; pod A's own call to pod B leaves as mTLS (pod B's plaintext
// listener sees a TLS ClientHello, pod B's keel sees pod A's SPIFFE identity) and a plaintext
// client is refused by STRICT pod B; keel's own upstream connections are not captured again (one
// request = one pass); opaque TCP passes both ways byte for byte; --cleanup-only removes the rules,
// and the namespaces and processes are gone at the end. Needs root, iproute2, iptables, setpriv
// and keel's native addon (SO_ORIGINAL_DST); skipped with the reason otherwise.
import t from 'tap';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../../src/native';
import { createNetns, netnsSkipReason, type Netns } from '../helpers/netns';
import { createTestCa, mintWorkloadCert, type IssuedCert } from '../helpers/fake-ca';

const MAIN = path.join(__dirname, '../../src/cli/main.ts');
const PROXY_UID = 1337;
const APP_UID = 1000;
const A_CLIENT = '10.77.0.1';
const A_IP = '10.77.0.2';
const AB_A = '10.77.1.1';
const B_IP = '10.77.1.2';
/** node with tap's TypeScript loader, without tap's process-info hook (it writes under the repo) */
const NODE_TS = [process.execPath, ...process.execArgv.filter((a) => !a.includes('processinfo'))];

function missing(): string | undefined {
  const why = netnsSkipReason(['ip', 'iptables', 'iptables-restore', 'iptables-save', 'setpriv'], 'iptables iproute2 util-linux');
  if (why !== undefined) return why;
  if (!native.available) return `keel's native addon is not in use (${native.reason}); the sidecar needs SO_ORIGINAL_DST`;
  return undefined;
}

let why = missing();
const spaces: Netns[] = [];
const children: ChildProcess[] = [];
const dir = mkdtempSync(path.join(os.tmpdir(), 'keel-e2e-'));
chmodSync(dir, 0o755); // keel runs as uid 1337 and reads its config here
const cleanUp = (): void => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const n of spaces) n.remove(); // also kills whatever is left inside
  rmSync(dir, { recursive: true, force: true });
};
t.teardown(cleanUp);
process.once('exit', cleanUp);
// Each keel (and each istio-iptables run) starts node with tap's TypeScript loader: slow on a busy box.
t.setTimeout(420_000);

function sh(args: string[]): string | undefined {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8' });
  return r.status === 0 ? undefined : `${args.join(' ')}: ${r.stderr.trim()}`;
}

let client = '';
let podA = '';
let podB = '';
if (why === undefined) {
  for (const prefix of ['keel-cl', 'keel-pa', 'keel-pb']) {
    const n = createNetns(prefix);
    if (n instanceof Error) {
      why = n.message;
      break;
    }
    spaces.push(n);
  }
}
if (why === undefined) {
  [client, podA, podB] = spaces.map((s) => s.name) as [string, string, string];
  const tag = randomBytes(3).toString('hex');
  const [c0, a0, a1, b1] = [`kc${tag}`, `ka${tag}`, `kx${tag}`, `kb${tag}`];
  why =
    sh(['ip', 'link', 'add', c0, 'netns', client, 'type', 'veth', 'peer', 'name', a0, 'netns', podA]) ??
    sh(['ip', 'link', 'add', a1, 'netns', podA, 'type', 'veth', 'peer', 'name', b1, 'netns', podB]) ??
    sh(['ip', '-n', client, 'addr', 'add', `${A_CLIENT}/24`, 'dev', c0]) ??
    sh(['ip', '-n', podA, 'addr', 'add', `${A_IP}/24`, 'dev', a0]) ??
    sh(['ip', '-n', podA, 'addr', 'add', `${AB_A}/24`, 'dev', a1]) ??
    sh(['ip', '-n', podB, 'addr', 'add', `${B_IP}/24`, 'dev', b1]) ??
    sh(['ip', '-n', client, 'link', 'set', c0, 'up']) ??
    sh(['ip', '-n', podA, 'link', 'set', a0, 'up']) ??
    sh(['ip', '-n', podA, 'link', 'set', a1, 'up']) ??
    sh(['ip', '-n', podB, 'link', 'set', b1, 'up']);
}

// ---------------------------------------------------------------------------------------------
// Processes

/** HTTP on 8080 answering {app, path, remote, n}; a TCP echo on ECHO_PORT. */
const APP = `
const http = require('node:http'), net = require('node:net');
let n = 0;
http.createServer((req, res) => {
  n++;
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ app: process.env.APP_NAME, path: req.url, remote: req.socket.remoteAddress, n }));
}).listen(8080, '0.0.0.0', () => net.createServer((s) => s.pipe(s)).listen(Number(process.env.ECHO_PORT), '0.0.0.0', () => console.log('app ready')));
`;

/** Pod B's plain listener on 8443: prints the first byte of each connection. */
const SNIFFER = `
require('node:net').createServer((s) => s.once('data', (d) => { console.log('first-byte ' + d[0].toString(16)); s.destroy(); })).listen(8443, '0.0.0.0', () => console.log('sniffer ready'));
`;

/** One call, printed as JSON: `http host port path` -> {status, body} | {error}; `tcp host port n` -> {sent, got, same} | {error}. */
const CALLER = `
const [mode, host, port, arg] = process.argv.slice(-4);
const out = (v) => { console.log(JSON.stringify(v)); process.exit(0); };
setTimeout(() => out({ error: 'timeout' }), 15000).unref();
if (mode === 'http') {
  require('node:http').get({ host, port: Number(port), path: arg, agent: false }, (res) => {
    let body = ''; res.setEncoding('utf8'); res.on('data', (d) => (body += d)); res.on('end', () => out({ status: res.statusCode, body }));
  }).on('error', (e) => out({ error: e.code || e.message }));
} else {
  const data = require('node:crypto').randomBytes(Number(arg));
  const chunks = [];
  const s = require('node:net').connect({ host, port: Number(port), allowHalfOpen: true }, () => s.end(data));
  s.on('data', (d) => chunks.push(d));
  s.on('end', () => { const got = Buffer.concat(chunks); out({ sent: data.length, got: got.length, same: got.equals(data) }); });
  s.on('error', (e) => out({ error: e.code || e.message }));
}
`;

function asUser(uid: number): string[] {
  return ['setpriv', '--reuid', String(uid), '--regid', String(uid), '--clear-groups'];
}

/** Starts a long-running process in `ns`; resolves once its output satisfies `ready`. */
function startInNs(ns: string, argv: string[], ready: (out: string) => boolean, name: string, env: Record<string, string> = {}): Promise<{ proc: ChildProcess; output: () => string }> {
  const p = spawn('ip', ['netns', 'exec', ns, 'env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(p);
  let out = '';
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (ready(out)) resolve({ proc: p, output: () => out });
    };
    p.stdout!.on('data', onData);
    p.stderr!.on('data', onData);
    p.once('exit', (code) => reject(new Error(`${name} exited (${code}) before it was ready:\n${out}`)));
  });
}

function run(ns: string, argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', maxBuffer: 1 << 24 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

interface CallResult {
  status?: number;
  body?: string;
  error?: string;
  sent?: number;
  got?: number;
  same?: boolean;
}

async function call(ns: string, uid: number, mode: 'http' | 'tcp', host: string, port: number, arg: string): Promise<CallResult> {
  const r = await run(ns, [...asUser(uid), process.execPath, '-e', CALLER, mode, host, String(port), arg]);
  if (r.code !== 0) throw new Error(`caller failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim()) as CallResult;
}

/** keel's admin /stats in `ns`, as name -> value. */
async function adminStats(ns: string): Promise<Map<string, number>> {
  const script = `require('node:http').get('http://127.0.0.1:15000/stats', (r) => { let b = ''; r.on('data', (d) => (b += d)); r.on('end', () => console.log(b)); }).on('error', (e) => { console.error(e.message); process.exit(1); });`;
  const r = await run(ns, [process.execPath, '-e', script]);
  if (r.code !== 0) throw new Error(`admin /stats failed: ${r.stderr}`);
  const m = new Map<string, number>();
  for (const line of r.stdout.split('\n')) {
    const i = line.lastIndexOf(': ');
    if (i > 0 && /^-?\d+(\.\d+)?$/.test(line.slice(i + 2))) m.set(line.slice(0, i), Number(line.slice(i + 2)));
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// Configs (Envoy v3 JSON, shaped like what istiod sends)

const ca = createTestCa();
const certA = mintWorkloadCert(ca, 'default', 'pod-a');
const certB = mintWorkloadCert(ca, 'default', 'pod-b');
const SPIFFE_A = `spiffe://${ca.trustDomain}/ns/default/sa/pod-a`;
const SPIFFE_B = `spiffe://${ca.trustDomain}/ns/default/sa/pod-b`;

const sock = (address: string, port: number): object => ({ socket_address: { address, port_value: port } });
const TYPE = (t: string): string => `type.googleapis.com/${t}`;
const router = { name: 'envoy.filters.http.router', typed_config: { '@type': TYPE('envoy.extensions.filters.http.router.v3.Router') } };
const listenerFilter = (n: string, ty: string): object => ({ name: `envoy.filters.listener.${n}`, typed_config: { '@type': TYPE(`envoy.extensions.filters.listener.${n}.v3.${ty}`) } });
const commonTls = (c: IssuedCert, alpn: string[], sans?: string[]): object => ({
  alpn_protocols: alpn,
  tls_certificates: [{ certificate_chain: { inline_string: c.certChain }, private_key: { inline_string: c.privateKey } }],
  validation_context: { trusted_ca: { inline_string: ca.rootCert }, ...(sans ? { match_subject_alt_names: sans.map((exact) => ({ exact })) } : {}) },
});
const hcm = (statPrefix: string, cluster: string, filters: object[] = []): object => ({
  name: 'envoy.filters.network.http_connection_manager',
  typed_config: {
    '@type': TYPE('envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager'),
    stat_prefix: statPrefix,
    route_config: { name: statPrefix, virtual_hosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster } }] }] },
    http_filters: [...filters, router],
  },
});
const tcpProxy = (statPrefix: string, cluster: string): object => ({
  name: 'envoy.filters.network.tcp_proxy',
  typed_config: { '@type': TYPE('envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy'), stat_prefix: statPrefix, cluster },
});
const staticCluster = (name: string, address: string, port: number, extra: object = {}): object => ({
  name,
  type: 'STATIC',
  connect_timeout: '2s',
  load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address: sock(address, port) } }] }] },
  ...extra,
});
const BIND_127_0_0_6 = { upstream_bind_config: { source_address: { address: '127.0.0.6', port_value: 0 } } };
const upstreamMtls = (sni: string, san: string): object => ({
  transport_socket: {
    name: 'envoy.transport_sockets.tls',
    typed_config: { '@type': TYPE('envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext'), sni, common_tls_context: commonTls(certA, ['istio-http/1.1'], [san]) },
  },
});

const bootstrapA = {
  admin: { address: sock('127.0.0.1', 15000) },
  static_resources: {
    listeners: [
      {
        name: 'virtualOutbound',
        address: sock('0.0.0.0', 15001),
        use_original_dst: true,
        traffic_direction: 'OUTBOUND',
        filter_chains: [{ name: 'PassthroughFilterChain', filters: [tcpProxy('PassthroughCluster', 'PassthroughCluster')] }],
      },
      { name: '0.0.0.0_8080', address: sock('0.0.0.0', 8080), bind_to_port: false, traffic_direction: 'OUTBOUND', filter_chains: [{ filters: [hcm('outbound_0.0.0.0_8080', 'outbound|8080||pod-b.default.svc.cluster.local')] }] },
      { name: '0.0.0.0_8443', address: sock('0.0.0.0', 8443), bind_to_port: false, traffic_direction: 'OUTBOUND', filter_chains: [{ filters: [hcm('outbound_0.0.0.0_8443', 'outbound|8443||sniffer.default.svc.cluster.local')] }] },
      {
        name: 'virtualInbound',
        address: sock('0.0.0.0', 15006),
        traffic_direction: 'INBOUND',
        listener_filters: [listenerFilter('original_dst', 'OriginalDst'), listenerFilter('tls_inspector', 'TlsInspector'), listenerFilter('http_inspector', 'HttpInspector')],
        listener_filters_timeout: '0s',
        continue_on_listener_filters_timeout: true,
        filter_chains: [
          {
            name: '0.0.0.0_8080',
            filter_chain_match: { destination_port: 8080, transport_protocol: 'raw_buffer', application_protocols: ['http/1.1', 'http/1.0', 'h2c'] },
            filters: [hcm('inbound_0.0.0.0_8080', 'inbound|8080||')],
          },
        ],
        default_filter_chain: { name: 'PassthroughFilterChain', filters: [tcpProxy('InboundPassthroughClusterIpv4', 'InboundPassthroughClusterIpv4')] },
      },
    ],
    clusters: [
      { name: 'PassthroughCluster', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '2s' },
      { name: 'InboundPassthroughClusterIpv4', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '2s', ...BIND_127_0_0_6 },
      staticCluster('inbound|8080||', '127.0.0.1', 8080, BIND_127_0_0_6),
      staticCluster('outbound|8080||pod-b.default.svc.cluster.local', B_IP, 8080, upstreamMtls('outbound_.8080_._.pod-b.default.svc.cluster.local', SPIFFE_B)),
      staticCluster('outbound|8443||sniffer.default.svc.cluster.local', B_IP, 8443, upstreamMtls('outbound_.8443_._.sniffer.default.svc.cluster.local', SPIFFE_B)),
    ],
  },
};

const rbacAllowA = {
  name: 'envoy.filters.http.rbac',
  typed_config: {
    '@type': TYPE('envoy.extensions.filters.http.rbac.v3.RBAC'),
    rules: {
      action: 'ALLOW',
      policies: { 'ns[default]-policy[allow-pod-a]-rule[0]': { permissions: [{ any: true }], principals: [{ authenticated: { principal_name: { exact: SPIFFE_A } } }] } },
    },
  },
};

const bootstrapB = {
  admin: { address: sock('127.0.0.1', 15000) },
  static_resources: {
    listeners: [
      {
        name: 'virtualInbound',
        address: sock('0.0.0.0', 15006),
        traffic_direction: 'INBOUND',
        listener_filters: [listenerFilter('original_dst', 'OriginalDst'), listenerFilter('tls_inspector', 'TlsInspector')],
        // STRICT: only the mTLS chain; plaintext matches nothing and is closed
        filter_chains: [
          {
            name: '0.0.0.0_8080_mtls',
            filter_chain_match: { destination_port: 8080, transport_protocol: 'tls' },
            transport_socket: {
              name: 'envoy.transport_sockets.tls',
              typed_config: {
                '@type': TYPE('envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext'),
                require_client_certificate: true,
                common_tls_context: commonTls(certB, ['istio-http/1.1', 'h2', 'http/1.1']),
              },
            },
            filters: [hcm('inbound_0.0.0.0_8080', 'inbound|8080||', [rbacAllowA])],
          },
        ],
      },
    ],
    clusters: [staticCluster('inbound|8080||', '127.0.0.1', 8080, BIND_127_0_0_6)],
  },
};

// ---------------------------------------------------------------------------------------------

t.test('keel as a sidecar: interception, mTLS, STRICT, passthrough, no loops, cleanup', { skip: why ?? false }, async (t) => {
  const fileA = path.join(dir, 'pod-a.json');
  const fileB = path.join(dir, 'pod-b.json');
  writeFileSync(fileA, JSON.stringify(bootstrapA), { mode: 0o644 });
  writeFileSync(fileB, JSON.stringify(bootstrapB), { mode: 0o644 });

  // The init container's job, as Istio's injector runs it (plus ports excluded on pod B).
  const iptables = (ns: string, excludeInbound: string): Promise<{ code: number; stdout: string; stderr: string }> =>
    run(ns, [...NODE_TS, MAIN, 'istio-iptables', '-p', '15001', '-z', '15006', '-u', String(PROXY_UID), '-m', 'REDIRECT', '-i', '*', '-x', '', '-b', '*', '-d', excludeInbound]);
  const keelReady = (out: string): boolean => /listener 'virtualInbound' serving on port 15006/.test(out) && /admin on port 15000/.test(out);
  const [ipA, ipB, , , keelA] = await Promise.all([
    iptables(podA, '15090,15021,15020'),
    iptables(podB, '15090,15021,15020,8443,9100'),
    startInNs(podA, [...asUser(APP_UID), process.execPath, '-e', APP], (o) => o.includes('app ready'), 'app A', { APP_NAME: 'app-a', ECHO_PORT: '9000' }),
    startInNs(podB, [...asUser(APP_UID), process.execPath, '-e', APP], (o) => o.includes('app ready'), 'app B', { APP_NAME: 'app-b', ECHO_PORT: '9100' }),
    startInNs(podA, [...asUser(PROXY_UID), ...NODE_TS, MAIN, '-c', fileA], keelReady, 'keel A'),
    startInNs(podB, [...asUser(PROXY_UID), ...NODE_TS, MAIN, '-c', fileB], keelReady, 'keel B'),
  ]);
  t.equal(ipA.code, 0, `istio-iptables in pod A: ${ipA.stderr}`);
  t.equal(ipB.code, 0, `istio-iptables in pod B: ${ipB.stderr}`);
  const sniffer = await startInNs(podB, [...asUser(APP_UID), process.execPath, '-e', SNIFFER], (o) => o.includes('sniffer ready'), 'sniffer');
  t.match(keelA.output(), /native addon in use/);

  // Inbound HTTP: client -> 10.77.0.2:8080 -> PREROUTING -> 15006 -> the raw_buffer HTTP chain -> app (from 127.0.0.6)
  const inbound = await call(client, 0, 'http', A_IP, 8080, '/inbound');
  t.equal(inbound.status, 200, JSON.stringify(inbound));
  t.same(JSON.parse(inbound.body ?? '{}'), { app: 'app-a', path: '/inbound', remote: '127.0.0.6', n: 1 }, 'served by app A, called from 127.0.0.6 (upstream_bind_config)');

  // Inbound opaque TCP: the default chain, InboundPassthroughCluster (ORIGINAL_DST, bound to 127.0.0.6)
  const inTcp = await call(client, 0, 'tcp', A_IP, 9000, String(256 * 1024));
  t.same(inTcp, { sent: 256 * 1024, got: 256 * 1024, same: true }, 'inbound TCP echoed byte for byte through keel');

  // Outbound HTTP from the app (uid 1000): 15001 -> hand-off to 0.0.0.0_8080 -> mTLS to pod B (STRICT, RBAC allows pod A)
  const outbound = await call(podA, APP_UID, 'http', B_IP, 8080, '/outbound');
  t.equal(outbound.status, 200, JSON.stringify(outbound));
  t.same(JSON.parse(outbound.body ?? '{}'), { app: 'app-b', path: '/outbound', remote: '127.0.0.6', n: 1 }, 'app B answered through both keels');

  // The same call leaves pod A encrypted: pod B's plain listener sees a TLS handshake record first.
  const toSniffer = await call(podA, APP_UID, 'http', B_IP, 8443, '/x');
  t.equal(toSniffer.status, 503, `the sniffer is no TLS server: upstream connect failure (${JSON.stringify(toSniffer)})`);
  t.match(sniffer.output(), /first-byte 16/, 'the far side got a TLS ClientHello (0x16), not plaintext HTTP');
  t.notMatch(sniffer.output(), /first-byte 47/, 'never a plaintext GET');

  // STRICT: a plaintext client (uid 1337 is not captured in pod A) is refused by pod B's keel.
  const plain = await call(podA, PROXY_UID, 'http', B_IP, 8080, '/plaintext');
  t.ok(plain.error !== undefined, `plaintext to STRICT pod B refused (${JSON.stringify(plain)})`);
  // ...and app B never saw it: the next mTLS call is its second request
  const again = await call(podA, APP_UID, 'http', B_IP, 8080, '/again');
  t.equal(JSON.parse(again.body ?? '{}').n, 2, 'app B served exactly the two mTLS requests');

  // Outbound opaque TCP to a port with no listener: PassthroughCluster, bytes intact.
  const outTcp = await call(podA, APP_UID, 'tcp', B_IP, 9100, String(256 * 1024));
  t.same(outTcp, { sent: 256 * 1024, got: 256 * 1024, same: true }, 'outbound TCP passed through byte for byte');

  // keel counted it all, once each: its own upstream connections were not captured again.
  const sa = await adminStats(podA);
  const sb = await adminStats(podB);
  t.equal(sa.get('http.inbound_0.0.0.0_8080.downstream_rq_total'), 1, 'pod A inbound HTTP: one request');
  t.equal(sa.get('http.outbound_0.0.0.0_8080.downstream_rq_total'), 2, 'pod A outbound HTTP to pod B: two requests, not looped');
  t.equal(sa.get('cluster.InboundPassthroughClusterIpv4.upstream_cx_total'), 1, 'inbound TCP passthrough: one upstream connection');
  t.equal(sa.get('cluster.PassthroughCluster.upstream_cx_total'), 1, 'outbound TCP passthrough: one upstream connection (no loop)');
  t.equal(sb.get('http.inbound_0.0.0.0_8080.downstream_rq_total'), 2, 'pod B inbound: the two mTLS requests');
  t.equal(sb.get('http.inbound_0.0.0.0_8080.rbac.allowed'), 2, "pod B's RBAC saw pod A's SPIFFE identity");
  t.equal(sb.get('listener.0.0.0.0_15006.no_filter_chain_match'), 1, 'the plaintext connection matched no chain (STRICT)');

  // Cleanup of the rules: --cleanup-only leaves no ISTIO_ chain behind.
  const clean = await run(podA, [...NODE_TS, MAIN, 'istio-iptables', '--cleanup-only']);
  t.equal(clean.code, 0, clean.stderr);
  const left = await run(podA, ['iptables-save', '-t', 'nat']);
  t.notMatch(left.stdout, /ISTIO_/, 'no ISTIO_ chain or rule left in pod A');
  const direct = await call(client, 0, 'http', A_IP, 8080, '/direct');
  t.same(JSON.parse(direct.body ?? '{}').remote, A_CLIENT, 'without the rules the app is reached directly');

  // Everything goes: processes, then namespaces.
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
  for (const n of spaces) n.remove();
  const list = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  for (const n of [client, podA, podB]) t.notMatch(list, new RegExp(`^${n}\\b`, 'm'), `namespace ${n} removed`);
});

t.test('TPROXY interception: a transparent virtualInbound serves the original destination', { skip: why ?? false }, async (t) => {
  const made: Netns[] = [];
  for (const prefix of ['keel-tc', 'keel-tp']) {
    const n = createNetns(prefix);
    if (n instanceof Error) throw n;
    made.push(n);
    spaces.push(n);
  }
  const [tc, tp] = made.map((n) => n.name) as [string, string];
  const tag = randomBytes(3).toString('hex');
  const err =
    sh(['ip', 'link', 'add', `tc${tag}`, 'netns', tc, 'type', 'veth', 'peer', 'name', `tp${tag}`, 'netns', tp]) ??
    sh(['ip', '-n', tc, 'addr', 'add', `${A_CLIENT}/24`, 'dev', `tc${tag}`]) ??
    sh(['ip', '-n', tp, 'addr', 'add', `${A_IP}/24`, 'dev', `tp${tag}`]) ??
    sh(['ip', '-n', tc, 'link', 'set', `tc${tag}`, 'up']) ??
    sh(['ip', '-n', tp, 'link', 'set', `tp${tag}`, 'up']);
  t.equal(err, undefined, 'network set up');
  const inbound = (bootstrapA.static_resources.listeners as Array<Record<string, unknown>>).find((l) => l.name === 'virtualInbound')!;
  const cfg = {
    admin: bootstrapA.admin,
    static_resources: {
      listeners: [{ ...inbound, transparent: true }],
      clusters: (bootstrapA.static_resources.clusters as Array<Record<string, unknown>>).filter((c) => String(c.name).startsWith('inbound') || String(c.name).startsWith('InboundPassthrough')),
    },
  };
  const file = path.join(dir, 'pod-tproxy.json');
  writeFileSync(file, JSON.stringify(cfg), { mode: 0o644 });
  const keelReady = (out: string): boolean => /listener 'virtualInbound' serving on port 15006/.test(out);
  const [ipt] = await Promise.all([
    run(tp, [...NODE_TS, MAIN, 'istio-iptables', '-p', '15001', '-z', '15006', '-u', String(PROXY_UID), '-m', 'TPROXY', '-i', '*', '-x', '', '-b', '8080', '-d', '15090,15021,15020']),
    startInNs(tp, [...asUser(APP_UID), process.execPath, '-e', APP], (o) => o.includes('app ready'), 'app', { APP_NAME: 'app-t', ECHO_PORT: '9000' }),
    // TPROXY needs CAP_NET_ADMIN for IP_TRANSPARENT (Istio grants it in this mode)
    startInNs(tp, [...asUser(PROXY_UID), '--inh-caps', '+net_admin', '--ambient-caps', '+net_admin', ...NODE_TS, MAIN, '-c', file], keelReady, 'keel (TPROXY)'),
  ]);
  t.equal(ipt.code, 0, `istio-iptables -m TPROXY: ${ipt.stderr}`);
  t.match((await run(tp, ['iptables-save', '-t', 'mangle'])).stdout, /-j TPROXY --on-port 15006/, 'the TPROXY rule is in place');
  const r = await call(tc, 0, 'http', A_IP, 8080, '/tproxy');
  t.equal(r.status, 200, JSON.stringify(r));
  t.same(JSON.parse(r.body ?? '{}'), { app: 'app-t', path: '/tproxy', remote: '127.0.0.6', n: 1 }, 'served through keel: the 8080 chain matched the original destination port');
  const s = await adminStats(tp);
  t.equal(s.get('http.inbound_0.0.0.0_8080.downstream_rq_total'), 1, 'counted by the transparent listener');
});

t.test('IPv6: the original destination of a redirected connection (IP6T_SO_ORIGINAL_DST)', { skip: why ?? (spawnSync('sh', ['-c', 'command -v ip6tables']).status !== 0 ? 'ip6tables not installed' : false) }, async (t) => {
  const n = createNetns('keel-v6');
  if (n instanceof Error) throw n;
  spaces.push(n);
  const ns = n.name;
  const V6 = 'fd00:77::1';
  t.equal(
    sh(['ip', '-n', ns, '-6', 'addr', 'add', `${V6}/128`, 'dev', 'lo', 'nodad']) ??
      sh(['ip', 'netns', 'exec', ns, 'ip6tables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-m', 'owner', '!', '--uid-owner', String(PROXY_UID), '-j', 'REDIRECT', '--to-ports', '15001']),
    undefined,
    'v6 address and ip6tables REDIRECT in place',
  );
  const UP6 = `
const http = require('node:http'), net = require('node:net');
http.createServer((req, res) => res.end(JSON.stringify({ app: 'v6', listener: req.headers['x-keel-listener'] ?? null, remote: req.socket.remoteAddress }))).listen(8080, '${V6}', () =>
  net.createServer((s) => s.pipe(s)).listen(9000, '${V6}', () => console.log('app ready')));
`;
  const hcmTagged = (prefix: string): object => {
    const h = hcm(prefix, 'v6app') as { typed_config: { route_config: { virtual_hosts: Array<{ routes: Array<Record<string, unknown>> }> } } };
    h.typed_config.route_config.virtual_hosts[0]!.routes[0]!.request_headers_to_add = [{ header: { key: 'x-keel-listener', value: prefix } }];
    return h;
  };
  const cfg = {
    admin: { address: sock('127.0.0.1', 15000) },
    static_resources: {
      listeners: [
        { name: 'virtualOutbound', address: sock('::', 15001), use_original_dst: true, filter_chains: [{ filters: [tcpProxy('PassthroughCluster', 'PassthroughCluster')] }] },
        { name: '[::]_8080', address: sock('::', 8080), bind_to_port: false, filter_chains: [{ filters: [hcmTagged('outbound_[::]_8080')] }] },
      ],
      clusters: [{ name: 'PassthroughCluster', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '2s' }, staticCluster('v6app', V6, 8080)],
    },
  };
  const file = path.join(dir, 'v6.json');
  writeFileSync(file, JSON.stringify(cfg), { mode: 0o644 });
  await Promise.all([
    startInNs(ns, [...asUser(APP_UID), process.execPath, '-e', UP6], (o) => o.includes('app ready'), 'v6 app'),
    startInNs(ns, [...asUser(PROXY_UID), ...NODE_TS, MAIN, '-c', file], (o) => /listener 'virtualOutbound' serving on port 15001/.test(o) && /admin on port 15000/.test(o), 'keel (v6)'),
  ]);
  const r = await call(ns, APP_UID, 'http', V6, 8080, '/v6');
  t.equal(r.status, 200, JSON.stringify(r));
  t.same(JSON.parse(r.body ?? '{}'), { app: 'v6', listener: 'outbound_[::]_8080', remote: V6 }, 'handed to [::]_8080 by its IPv6 original destination');
  const tcp = await call(ns, APP_UID, 'tcp', V6, 9000, String(64 * 1024));
  t.same(tcp, { sent: 64 * 1024, got: 64 * 1024, same: true }, 'IPv6 passthrough (ORIGINAL_DST) to [fd00:77::1]:9000, bytes intact');
  const s = await adminStats(ns);
  t.equal(s.get('cluster.PassthroughCluster.upstream_cx_total'), 1);
});
