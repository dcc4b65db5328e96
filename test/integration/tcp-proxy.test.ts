// envoy.filters.network.tcp_proxy end to end on 127.0.0.1: bytes intact both ways, half-close in
// each direction, weighted_clusters, max_connect_attempts over a dead host, idle_timeout, and the
// tcp.<stat_prefix>.* counters (connections, bytes).
import t from 'tap';
import * as net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { startKeel, deadPort, type RunningKeel } from '../helpers/keel';

interface TcpUpstream {
  port: number;
  accepted: number;
  close(): Promise<void>;
}

/** Reads everything the client sends until it half-closes, then answers "<name> <bytes> <sha256>" and ends. */
async function digestServer(name: string): Promise<TcpUpstream> {
  const sockets = new Set<net.Socket>();
  const u: TcpUpstream = { port: 0, accepted: 0, close: async (): Promise<void> => undefined };
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    u.accepted++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    const h = createHash('sha256');
    let n = 0;
    s.on('data', (d: Buffer) => {
      n += d.length;
      h.update(d);
    });
    s.on('end', () => s.end(`${name} ${n} ${h.digest('hex')}`));
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  u.port = (server.address() as net.AddressInfo).port;
  u.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return u;
}

/** Sends `data`, half-closes, and resolves with all the proxy sends back until it closes. */
function exchange(port: number, data: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const chunks: Buffer[] = [];
    c.on('data', (d: Buffer) => chunks.push(d));
    c.on('end', () => {
      c.end();
      resolve(Buffer.concat(chunks).toString());
    });
    c.on('error', reject);
    c.end(data);
  });
}

function tcpListener(name: string, proxy: string): string {
  return `
  - name: ${name}
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: ${name}
${proxy}`;
}

function staticCluster(name: string, ports: number[], extra = ''): string {
  return `
  - name: ${name}
    type: STATIC
    connect_timeout: 1s
${extra}
    load_assignment:
      cluster_name: ${name}
      endpoints:
      - lb_endpoints:
${ports.map((p) => `        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${p} } } }`).join('\n')}`;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

t.test('bytes intact both ways, half-close, counters', async (t) => {
  const up = await digestServer('a');
  const keel: RunningKeel = await startKeel(`
static_resources:
  listeners:${tcpListener('plain', '          cluster: a')}
  clusters:${staticCluster('a', [up.port])}
`);
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const big = randomBytes(3 * 1024 * 1024 + 17);
  t.equal(await exchange(keel.port, big), `a ${big.length} ${sha(big)}`, 'the client half-closes; the upstream still answers after it');
  const small = Buffer.from('hello\n');
  t.equal(await exchange(keel.port, small), `a 6 ${sha(small)}`);

  // upstream half-closes first: the client still sends afterwards
  const early = net.createServer({ allowHalfOpen: true }, (s) => {
    s.end('bye-first');
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.on('end', () => early.emit('got', Buffer.concat(got).toString()));
  });
  await new Promise<void>((r) => early.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => early.close(() => r())));
  const keel2 = await startKeel(`
static_resources:
  listeners:${tcpListener('early', '          cluster: e')}
  clusters:${staticCluster('e', [(early.address() as net.AddressInfo).port])}
`);
  t.teardown(() => keel2.stop());
  const received = new Promise<string>((r) => early.once('got', r));
  const reply = await new Promise<string>((resolve, reject) => {
    const c = net.connect({ port: keel2.port, host: '127.0.0.1', allowHalfOpen: true });
    let out = '';
    c.on('data', (d: Buffer) => (out += d.toString()));
    c.on('end', () => {
      // the upstream's FIN arrived; our side is still open for writing
      c.end('after-fin');
      resolve(out);
    });
    c.on('error', reject);
  });
  t.equal(reply, 'bye-first');
  t.equal(await received, 'after-fin', 'the client wrote after the upstream half-closed, and it arrived');

  const l = keel.server.listeners.find((x) => x.name === 'plain')!;
  // the downstream connections have closed by now, so their bytes are in the totals
  const stats = l.networkFilterStats();
  t.equal(stats['tcp.plain.downstream_cx_total'], 2);
  t.equal(stats['tcp.plain.downstream_cx_rx_bytes_total'], big.length + small.length);
  t.ok(stats['tcp.plain.downstream_cx_tx_bytes_total']! > 2 * 64, 'reply bytes counted');
});

t.test('weighted_clusters spread connections (both picked in 40 tries: failure odds 2^-39)', async (t) => {
  const a = await digestServer('a');
  const b = await digestServer('b');
  const keel = await startKeel(`
static_resources:
  listeners:${tcpListener(
    'weighted',
    `          weighted_clusters:
            clusters: [{ name: a, weight: 1 }, { name: b, weight: 1 }]`,
  )}
  clusters:${staticCluster('a', [a.port])}${staticCluster('b', [b.port])}
`);
  t.teardown(async () => {
    await keel.stop();
    await a.close();
    await b.close();
  });
  const seen = new Set<string>();
  for (let i = 0; i < 40; i++) seen.add((await exchange(keel.port, Buffer.from('x'))).split(' ')[0]!);
  t.same([...seen].sort(), ['a', 'b']);
});

t.test('max_connect_attempts tries another host after a refused connect', async (t) => {
  const live = await digestServer('live');
  const dead = await deadPort();
  const yaml = (attempts: number): string => `
static_resources:
  listeners:${tcpListener('retry', `          cluster: c\n          max_connect_attempts: ${attempts}`)}
  clusters:${staticCluster('c', [dead, live.port], '    lb_policy: ROUND_ROBIN')}
`;
  const keel = await startKeel(yaml(2));
  t.teardown(async () => {
    await keel.stop();
    await live.close();
  });
  for (let i = 0; i < 6; i++) t.match(await exchange(keel.port, Buffer.from('y')), /^live 1 /, `connection ${i} reached the live host`);
  const c = keel.server.clusters.get('c')!;
  t.equal(c.stats.upstreamCxConnectFail, 6, 'round robin alternates dead, live: each first attempt hit the dead host, each second the live one');

  const once = await startKeel(yaml(1));
  t.teardown(() => once.stop());
  const results = [];
  for (let i = 0; i < 4; i++) results.push(await exchange(once.port, Buffer.from('y')).catch(() => ''));
  t.equal(results.filter((r) => r === '').length, 2, 'with one attempt, the connections picked onto the dead host are closed');
});

t.test('idle_timeout closes a quiet connection and is counted', async (t) => {
  const up = await digestServer('a');
  const keel = await startKeel(`
static_resources:
  listeners:${tcpListener('idle', '          cluster: a\n          idle_timeout: 0.2s')}
  clusters:${staticCluster('a', [up.port])}
`);
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const c = net.connect(keel.port, '127.0.0.1');
  c.on('error', () => undefined);
  await new Promise<void>((r) => c.once('close', () => r()));
  const l = keel.server.listeners.find((x) => x.name === 'idle')!;
  t.equal(l.networkFilterStats()['tcp.idle.idle_timeout'], 1);
});
