// use_original_dst and ORIGINAL_DST clusters for real, inside a throwaway network namespace: an
// iptables nat OUTPUT rule REDIRECTs every TCP connection of a non-root uid to keel's
// virtualOutbound-like listener on 127.0.0.1:15001 (keel itself runs as root and is not
// redirected). A connection to 127.0.0.2:<p2> is handed to the bind_to_port: false listener
// 0.0.0.0_<p2> (an HCM), one to 127.0.0.3:<p2> to the more specific 127.0.0.3_<p2>; one to a port
// only a filter chain of 15001 names is matched on its ORIGINAL port; anything else passes through
// a tcp_proxy to an ORIGINAL_DST cluster to where it was going. Needs root, iproute2, iptables,
// setpriv and keel's native addon (SO_ORIGINAL_DST); skipped otherwise.
import t from 'tap';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../../src/native';
import { createNetns, netnsSkipReason } from '../helpers/netns';
import { decodeBootstrap } from '../../src/config/bootstrap';
import { Cluster } from '../../src/upstream/cluster';
import { ListenerIndex } from '../../src/listener/original-dst';

const MAIN = path.join(__dirname, '../../src/cli/main.ts');
const NOBODY = 65534;
const P_UPSTREAM = 18080; // the upstream's own port: reached through PassthroughCluster
const P_SERVICE = 19080; // 0.0.0.0_19080 and 127.0.0.3_19080, bind_to_port: false
const P_CHAIN = 19443; // matched by a filter chain of the 15001 listener itself
const P_NOTHING = 18999; // nothing listens there: passthrough, then connection refused

function missing(): string | undefined {
  const why = netnsSkipReason(['ip', 'iptables', 'setpriv'], 'iptables iproute2 util-linux');
  if (why !== undefined) return why;
  if (!native.available) return `keel's native addon is not in use (${native.reason}); use_original_dst needs it`;
  return undefined;
}

let why = missing();
const netns = why === undefined ? createNetns('keel-od') : undefined;
if (netns instanceof Error) why = netns.message;
const ns = netns !== undefined && !(netns instanceof Error) ? netns.name : '';
if (why === undefined) {
  const rule = spawnSync(
    'ip',
    ['netns', 'exec', ns, 'iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-m', 'owner', '!', '--uid-owner', '0', '-j', 'REDIRECT', '--to-ports', '15001'],
    { encoding: 'utf8' },
  );
  if (rule.status !== 0) why = `iptables in the namespace failed: ${rule.stderr.trim()}`;
}

const children: ChildProcess[] = [];
const dir = mkdtempSync(path.join(os.tmpdir(), 'keel-od-'));
const cleanUp = (): void => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (netns !== undefined && !(netns instanceof Error)) netns.remove(); // also kills what is left inside
  rmSync(dir, { recursive: true, force: true });
};
t.teardown(cleanUp);
process.once('exit', cleanUp); // also when the run is cut short

// keel starts node with tap's TypeScript loader (several seconds).
t.setTimeout(120_000);

/** Starts a process in the namespace; resolves once a line of its output matches `ready`. */
function startInNs(argv: string[], ready: RegExp, name: string): Promise<ChildProcess> {
  const p = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(p);
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (ready.test(out)) resolve(p);
    };
    p.stdout!.on('data', onData);
    p.stderr!.on('data', onData);
    p.once('exit', (code) => reject(new Error(`${name} exited (${code}) before it was ready:\n${out}`)));
  });
}

const UPSTREAM = `
const http = require('node:http');
http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ upstream: true, path: req.url, listener: req.headers['x-keel-listener'] ?? null }));
}).listen(${P_UPSTREAM}, '127.0.0.1', () => console.log('upstream ready'));
`;

/** An HTTP GET from uid 65534 (redirected), printing {status, body} or {error}. */
const CLIENT = `
const http = require('node:http');
const [host, port] = process.argv.slice(-2);
const req = http.get({ host, port: Number(port), path: '/hello', agent: false, timeout: 10000 }, (res) => {
  let body = '';
  res.setEncoding('utf8');
  res.on('data', (d) => (body += d));
  res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, body })));
});
req.on('timeout', () => req.destroy(new Error('timeout')));
req.on('error', (e) => console.log(JSON.stringify({ error: e.code ?? e.message })));
`;

interface Reply {
  status?: number;
  body?: string;
  error?: string;
}

function get(host: string, port: number, uid = NOBODY): Promise<Reply> {
  const pre = uid === 0 ? [] : ['setpriv', '--reuid', String(uid), '--regid', String(uid), '--clear-groups'];
  return new Promise((resolve, reject) => {
    execFile('ip', ['netns', 'exec', ns, ...pre, process.execPath, '-e', CLIENT, host, String(port)], { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`client failed: ${err.message} ${stderr}`));
      else resolve(JSON.parse(stdout.trim()) as Reply);
    });
  });
}

const sock = (address: string, port: number): object => ({ socket_address: { address, port_value: port } });
const hcm = (listener: string): object => ({
  name: 'envoy.filters.network.http_connection_manager',
  typed_config: {
    '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
    stat_prefix: listener,
    route_config: {
      name: listener,
      virtual_hosts: [
        {
          name: 'all',
          domains: ['*'],
          routes: [{ match: { prefix: '/' }, route: { cluster: 'upstream' }, request_headers_to_add: [{ header: { key: 'x-keel-listener', value: listener } }] }],
        },
      ],
    },
    http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } }],
  },
});
const tcpProxy = (cluster: string): object => ({
  name: 'envoy.filters.network.tcp_proxy',
  typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: cluster, cluster },
});

const bootstrap = {
  admin: { address: sock('127.0.0.1', 15000) },
  static_resources: {
    listeners: [
      {
        name: 'virtualOutbound',
        address: sock('127.0.0.1', 15001),
        use_original_dst: true,
        filter_chains: [
          { name: 'by-port', filter_chain_match: { destination_port: P_CHAIN }, filters: [tcpProxy('upstream')] },
          { name: 'PassthroughFilterChain', filters: [tcpProxy('PassthroughCluster')] },
        ],
      },
      { name: `0.0.0.0_${P_SERVICE}`, address: sock('0.0.0.0', P_SERVICE), bind_to_port: false, filter_chains: [{ filters: [hcm(`0.0.0.0_${P_SERVICE}`)] }] },
      { name: `127.0.0.3_${P_SERVICE}`, address: sock('127.0.0.3', P_SERVICE), bind_to_port: false, filter_chains: [{ filters: [hcm(`127.0.0.3_${P_SERVICE}`)] }] },
    ],
    clusters: [
      {
        name: 'upstream',
        type: 'STATIC',
        connect_timeout: '1s',
        load_assignment: { cluster_name: 'upstream', endpoints: [{ lb_endpoints: [{ endpoint: { address: sock('127.0.0.1', P_UPSTREAM) } }] }] },
      },
      { name: 'PassthroughCluster', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '1s' },
    ],
  },
};

t.test('use_original_dst hand-off and ORIGINAL_DST passthrough', { skip: why ?? false }, async (t) => {
  const file = path.join(dir, 'bootstrap.json');
  writeFileSync(file, JSON.stringify(bootstrap));
  await startInNs([process.execPath, '-e', UPSTREAM], /upstream ready/, 'upstream');
  await startInNs([process.execPath, ...process.execArgv, MAIN, '-c', file], /listener 'virtualOutbound' serving on port 15001/, 'keel');

  // Root is not redirected: the upstream answers directly, without the HCM's header.
  const direct = await get('127.0.0.1', P_UPSTREAM, 0);
  t.same(JSON.parse(direct.body ?? '{}'), { upstream: true, path: '/hello', listener: null }, 'root reaches the upstream directly');

  // Redirected to 15001, handed to the bind_to_port: false wildcard listener for port P_SERVICE.
  const wild = await get('127.0.0.2', P_SERVICE);
  t.equal(wild.status, 200, JSON.stringify(wild));
  t.same(JSON.parse(wild.body ?? '{}'), { upstream: true, path: '/hello', listener: `0.0.0.0_${P_SERVICE}` }, 'served by 0.0.0.0_<port>');

  // The exact IP:port listener wins over the wildcard one.
  const exact = await get('127.0.0.3', P_SERVICE);
  t.same(JSON.parse(exact.body ?? '{}'), { upstream: true, path: '/hello', listener: `127.0.0.3_${P_SERVICE}` }, 'served by 127.0.0.3_<port>');

  // No listener for P_CHAIN: the 15001 listener serves it, its chain matched on the ORIGINAL port.
  const chained = await get('127.0.0.9', P_CHAIN);
  t.same(JSON.parse(chained.body ?? '{}'), { upstream: true, path: '/hello', listener: null }, 'destination_port chain saw the original port');

  // No listener and no chain: PassthroughCluster (ORIGINAL_DST) connects to where it was going.
  const pass = await get('127.0.0.1', P_UPSTREAM);
  t.same(JSON.parse(pass.body ?? '{}'), { upstream: true, path: '/hello', listener: null }, 'passthrough to the original destination');
  const refused = await get('127.0.0.1', P_NOTHING);
  t.ok(refused.error !== undefined, `nothing at the original destination: the connection closes (${JSON.stringify(refused)})`);

  // The passthrough really went through keel: PassthroughCluster counted its upstream connections.
  const stats = await new Promise<string>((resolve, reject) => {
    const script = `require('node:http').get('http://127.0.0.1:15000/stats', (r) => { let b = ''; r.on('data', (d) => (b += d)); r.on('end', () => console.log(b)); }).on('error', (e) => { console.error(e.message); process.exit(1); });`;
    execFile('ip', ['netns', 'exec', ns, process.execPath, '-e', script], { encoding: 'utf8' }, (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout)));
  });
  t.match(stats, /^cluster\.PassthroughCluster\.upstream_cx_total: 2$/m, 'two passthrough upstream connections');
  t.match(stats, /^cluster\.upstream\.upstream_cx_total: [1-9]/m, 'the HCM and by-port chain used the upstream cluster');
});

// The parts that need no namespace.

t.test('ORIGINAL_DST hosts are made on demand and dropped after an idle cleanup interval', async (t) => {
  const cfg = decodeBootstrap(bootstrap).bootstrap.clusters.find((c) => c.name === 'PassthroughCluster')!;
  const c = new Cluster(cfg, { originalDstCleanupMs: 3_600_000 });
  t.teardown(() => c.destroy());
  t.equal(c.pickHost(), undefined, 'no balanced hosts');
  const a = c.originalDstHost('10.0.0.1', 80)!;
  t.equal(a.addressString, '10.0.0.1:80');
  t.equal(c.originalDstHost('::ffff:10.0.0.1', 80), a, 'same destination, same host (v4-mapped too)');
  t.equal(c.originalDstHost('fd00::1', 80)!.addressString, '[fd00::1]:80');
  t.equal(c.originalDstHostCount, 2);
  c.cleanupOriginalDst(); // both used since the last pass: kept
  t.equal(c.originalDstHostCount, 2);
  t.equal(c.originalDstHost('10.0.0.1', 80), a, 'used again');
  c.cleanupOriginalDst(); // fd00::1 idle for a whole interval: dropped
  t.equal(c.originalDstHostCount, 1);
  c.cleanupOriginalDst();
  t.equal(c.originalDstHostCount, 0, 'all idle hosts dropped');
  t.not(c.originalDstHost('10.0.0.1', 80), a, 'a new host after the drop');
});

t.test('hand-off lookup: exact IP:port, then the wildcard of the family, then the other family', async (t) => {
  const l = (name: string, address: string, port: number) => ({ name, config: { address: { address, port } } }) as never as { name: string; config: never };
  const idx = new ListenerIndex([l('v4', '0.0.0.0', 80), l('exact', '10.0.0.5', 80), l('v6', '::', 80), l('v6only', '::', 81), l('any0', '0.0.0.0', 0)]);
  t.equal(idx.find('10.0.0.5', 80)?.name, 'exact');
  t.equal(idx.find('::ffff:10.0.0.5', 80)?.name, 'exact');
  t.equal(idx.find('10.0.0.6', 80)?.name, 'v4');
  t.equal(idx.find('fd00::1', 80)?.name, 'v6');
  t.equal(idx.find('10.0.0.6', 81)?.name, 'v6only');
  t.equal(idx.find('10.0.0.6', 82), undefined);
  t.equal(idx.find('10.0.0.6', 0), undefined, 'port-0 listeners take no hand-offs');
});

t.test('without the native addon keel refuses to start a use_original_dst listener', async (t) => {
  const file = path.join(dir, 'refuse.json');
  const b = structuredClone(bootstrap) as typeof bootstrap;
  // ports 0 so nothing could clash if it did start
  (b.admin.address as { socket_address: { port_value: number } }).socket_address.port_value = 0;
  for (const l of b.static_resources.listeners) (l.address as { socket_address: { port_value: number } }).socket_address.port_value = 0;
  writeFileSync(file, JSON.stringify(b));
  const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const p = spawn(process.execPath, [...process.execArgv, MAIN, '-c', file], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, KEEL_NATIVE: '0' } });
    children.push(p);
    let stderr = '';
    p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code, stderr }));
  });
  t.not(r.code, 0, 'exits non-zero');
  t.match(r.stderr, /virtualOutbound/);
  t.match(r.stderr, /SO_ORIGINAL_DST/);
  t.match(r.stderr, /KEEL_NATIVE=0/);
});
