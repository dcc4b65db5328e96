// Tests for src/native: one suite run against each implementation (the addon when it is built and
// not disabled by KEEL_NATIVE=0, the TypeScript twin always), plus loading/status behaviour and,
// as root with iptables and netns support, a real REDIRECT inside a network namespace the test
// creates and deletes. Must not: bind anything but port 0 on loopback, sleep for fixed times, or
// leave a namespace behind (teardown deletes it; the test is skipped where it can't run).

import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFile, spawnSync } from 'node:child_process';
import {
  activeImpl,
  findPackageRoot,
  loadNative,
  localAddress,
  native,
  nativeStatusLine,
  socketFd,
  twin,
  type CaptureImpl,
} from '../../../src/native/index';

interface Pair {
  server: net.Server;
  client: net.Socket;
  accepted: net.Socket;
}

/** A TCP connection over loopback: a server on port 0 of `host`, a client connected to it. */
async function loopbackPair(t: Test, host: string, connectHost: string = host): Promise<Pair> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  const acceptedP = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect(port, connectHost);
  client.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
  });
  const accepted = await acceptedP;
  accepted.on('error', () => {});
  t.teardown(async () => {
    client.destroy();
    accepted.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { server, client, accepted };
}

/** Whether `host` can be bound on this machine (IPv6 may be disabled). */
async function canListen(host: string): Promise<boolean> {
  const s = net.createServer();
  return new Promise((resolve) => {
    s.once('error', () => resolve(false));
    s.listen(0, host, () => s.close(() => resolve(true)));
  });
}

function hasNetAdmin(): boolean {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m !== null && (BigInt(`0x${m[1]}`) & (1n << 12n)) !== 0n; // CAP_NET_ADMIN = 12
}

const load = loadNative();
const impls: CaptureImpl[] = [twin];
if (load.available) impls.unshift(load.impl);
else t.comment(`native implementation not tested: ${load.reason}`);

for (const impl of impls) {
  t.test(`${impl.kind} implementation`, async (t) => {
    const noV6 = (await canListen('::1')) ? false : 'IPv6 loopback is not available here';
    const noMapped = (await canListen('::ffff:127.0.0.1')) ? false : 'IPv4-mapped IPv6 sockets are not available here';
    t.test('localAddress of both ends of an IPv4 loopback connection', async (t) => {
      const { server, client, accepted } = await loopbackPair(t, '127.0.0.1');
      const { port } = server.address() as net.AddressInfo;
      t.same(impl.localAddress(accepted), { address: '127.0.0.1', port, family: 4 });
      t.same(impl.localAddress(client), { address: '127.0.0.1', port: client.localPort, family: 4 });
    });

    t.test('localAddress of an IPv6 loopback connection', { skip: noV6 }, async (t) => {
      const { server, accepted } = await loopbackPair(t, '::1');
      const { port } = server.address() as net.AddressInfo;
      t.same(impl.localAddress(accepted), { address: '::1', port, family: 6 });
    });

    t.test('localAddress reports an IPv4-mapped IPv6 address as IPv4', { skip: noMapped }, async (t) => {
      const { server, accepted } = await loopbackPair(t, '::ffff:127.0.0.1', '127.0.0.1');
      const { port } = server.address() as net.AddressInfo;
      t.equal((server.address() as net.AddressInfo).family, 'IPv6');
      t.same(impl.localAddress(accepted), { address: '127.0.0.1', port, family: 4 });
    });

    t.test('localAddress of a socket with no fd throws EBADF', async (t) => {
      const s = new net.Socket();
      t.teardown(() => s.destroy());
      t.throws(() => impl.localAddress(s), { code: 'EBADF' });
    });

    t.test('originalDst of a connection that was not redirected', async (t) => {
      const { accepted } = await loopbackPair(t, '127.0.0.1');
      if (impl.kind === 'native') {
        // No NAT rule touched this connection, so the kernel has no original destination for it.
        t.throws(() => impl.originalDst(accepted), {
          code: 'ENOENT',
          errno: -os.constants.errno.ENOENT,
          syscall: 'getsockopt(SO_ORIGINAL_DST)',
          message: /no NAT entry/,
        });
      } else {
        t.throws(() => impl.originalDst(accepted), {
          name: 'KeelError',
          code: 'KEEL_NATIVE_UNAVAILABLE',
          message: /originalDst needs the keel native addon.*capture mode/,
        });
      }
    });

    t.test('originalDst of an IPv6 connection that was not redirected', { skip: noV6 }, async (t) => {
      const { accepted } = await loopbackPair(t, '::1');
      const expected =
        impl.kind === 'native'
          ? { code: 'ENOENT', syscall: 'getsockopt(IP6T_SO_ORIGINAL_DST)' }
          : { code: 'KEEL_NATIVE_UNAVAILABLE' };
      t.throws(() => impl.originalDst(accepted), expected);
    });

    t.test('setTransparent on a loopback listener', async (t) => {
      const { server } = await loopbackPair(t, '127.0.0.1');
      if (impl.kind === 'twin') {
        t.throws(() => impl.setTransparent(server, 4), {
          code: 'KEEL_NATIVE_UNAVAILABLE',
          message: /setTransparent needs the keel native addon \(setsockopt IP_TRANSPARENT\)/,
        });
      } else if (hasNetAdmin()) {
        t.doesNotThrow(() => impl.setTransparent(server, 4));
      } else {
        t.throws(() => impl.setTransparent(server, 4), { code: 'EPERM', message: /CAP_NET_ADMIN/ });
      }
    });

    t.test('setTransparent rejects a family other than 4 or 6', async (t) => {
      const { accepted } = await loopbackPair(t, '127.0.0.1');
      t.throws(() => impl.setTransparent(accepted, 5 as 4), TypeError);
    });

    if (impl.kind === 'native') {
      t.test('native: a raw fd that is not a socket gives ENOTSOCK', async (t) => {
        const fd = fs.openSync(__filename, 'r');
        t.teardown(() => fs.closeSync(fd));
        t.throws(() => impl.originalDst(fd), { code: 'ENOTSOCK', syscall: 'getsockname' });
        t.throws(() => impl.setTransparent(fd, 6), { code: 'ENOTSOCK' });
      });

      const noSetpriv =
        process.getuid?.() !== 0
          ? 'needs root to start a child without CAP_NET_ADMIN'
          : !ok('setpriv', ['--version'])
            ? 'setpriv (util-linux) is not installed'
            : false;
      t.test('native: setTransparent without CAP_NET_ADMIN is EPERM, named clearly', { skip: noSetpriv }, async (t) => {
        const script = `
          const addon = require(process.argv[1]);
          const s = require('node:net').createServer().listen(0, '127.0.0.1', () => {
            let out;
            try { addon.setTransparent(s._handle.fd, 4); out = { ok: true }; }
            catch (e) { out = { code: e.code, message: e.message }; }
            console.log(JSON.stringify(out));
            s.close();
          });`;
        const { stdout } = await run(
          'setpriv',
          ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', process.execPath, '-e', script, load.available ? load.path : ''],
        );
        const out = JSON.parse(stdout) as { code?: string; message?: string };
        t.equal(out.code, 'EPERM');
        t.match(out.message, /setsockopt\(IP_TRANSPARENT\) EPERM: .*CAP_NET_ADMIN/);
      });
    }
  });
}

t.test('dispatch: module-level functions use the active implementation', async (t) => {
  t.equal(activeImpl().kind, native.available ? 'native' : 'twin');
  t.equal(native.available, load.available);
  t.equal(native.reason, load.available ? undefined : load.reason);
  const { accepted, server } = await loopbackPair(t, '127.0.0.1');
  t.equal(localAddress(accepted).port, (server.address() as net.AddressInfo).port);
  t.type(socketFd(accepted), 'number');
  t.equal(socketFd(7), 7);
});

t.test('nativeStatusLine is one line saying whether the addon is in use', async (t) => {
  const line = nativeStatusLine();
  t.notMatch(line, /\n/);
  if (native.available) t.match(line, /^keel: native addon in use \(.*keel_native\.node\)$/);
  else t.match(line, /^keel: native addon not in use \(.+\); running on the TypeScript twins/);
});

t.test('KEEL_NATIVE=0 forces the twins', async (t) => {
  const off = loadNative({ KEEL_NATIVE: '0' });
  t.same(off, { available: false, reason: 'disabled by KEEL_NATIVE=0' });

  // A fresh copy of the module, loaded while KEEL_NATIVE=0 is set, must not load the addon.
  const saved = process.env['KEEL_NATIVE'];
  process.env['KEEL_NATIVE'] = '0';
  t.teardown(() => {
    if (saved === undefined) delete process.env['KEEL_NATIVE'];
    else process.env['KEEL_NATIVE'] = saved;
  });
  const fresh = t.mockRequire<typeof import('../../../src/native/index')>('../../../src/native/index');
  t.equal(fresh.native.available, false);
  t.equal(fresh.native.reason, 'disabled by KEEL_NATIVE=0');
  t.equal(fresh.activeImpl().kind, 'twin');
  t.equal(
    fresh.nativeStatusLine(),
    'keel: native addon not in use (disabled by KEEL_NATIVE=0); running on the TypeScript twins, capture modes unavailable',
  );
  const { accepted, server } = await loopbackPair(t, '127.0.0.1');
  t.throws(() => fresh.originalDst(accepted), { code: 'KEEL_NATIVE_UNAVAILABLE', message: /KEEL_NATIVE=0/ });
  t.throws(() => fresh.setTransparent(server, 6), { code: 'KEEL_NATIVE_UNAVAILABLE' });
  t.same(fresh.localAddress(accepted), { address: '127.0.0.1', port: (server.address() as net.AddressInfo).port, family: 4 });
});

t.test('the addon is found from the package root, wherever the module runs from', async (t) => {
  const root = findPackageRoot(__dirname);
  t.ok(root);
  t.equal(JSON.parse(fs.readFileSync(path.join(root!, 'package.json'), 'utf8')).name, 'keel');
  t.equal(findPackageRoot(path.join(root!, 'dist', 'src', 'native')), root);
  t.equal(findPackageRoot(os.tmpdir()), null);
  const nowhere = loadNative({}, os.tmpdir());
  t.equal(nowhere.available, false);
  if (!nowhere.available && process.platform === 'linux') t.match(nowhere.reason, /no keel package\.json found/);
  const empty = t.testdir({ 'package.json': JSON.stringify({ name: 'keel' }) });
  const unbuilt = loadNative({}, empty);
  t.equal(unbuilt.available, false);
  if (!unbuilt.available && process.platform === 'linux') t.match(unbuilt.reason, /^not built: native\/build\/Release\/keel_native\.node is missing/);
});

// ---- the real thing: iptables REDIRECT inside a throwaway network namespace ----

function run(cmd: string, args: string[], timeoutMs = 20_000): Promise<{ stdout: string; stderr: string }> {
  const env = { ...process.env };
  delete env['NODE_OPTIONS']; // children run plain node, without tap's loaders
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env, timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(err, { stdout, stderr }));
      else resolve({ stdout, stderr });
    });
  });
}

function ok(cmd: string, args: string[]): boolean {
  return spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
}

// Runs inside the namespace: listen on port 0 of `listen`, REDIRECT `dest`:`origPort` to it, connect
// to `dest`:`origPort`, and print what the addon says about the accepted socket.
const NETNS_CHILD = `
  const { execFileSync } = require('node:child_process');
  const net = require('node:net');
  const [addonPath, iptables, listenHost, dest, origPortArg] = process.argv.slice(1);
  const addon = require(addonPath);
  const server = net.createServer((sock) => {
    let out;
    try {
      out = { originalDst: addon.originalDst(sock._handle.fd), localAddress: addon.localAddress(sock._handle.fd), origPort };
    } catch (e) {
      out = { error: e.code, message: e.message };
    }
    console.log(JSON.stringify(out));
    sock.destroy();
    server.close();
  });
  let origPort = Number(origPortArg);
  server.listen(0, listenHost, () => {
    const port = server.address().port;
    if (port === origPort) origPort += 1000;
    execFileSync(iptables, ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', dest, '--dport', String(origPort),
      '-j', 'REDIRECT', '--to-ports', String(port)]);
    net.connect(origPort, dest).on('error', (e) => { console.log(JSON.stringify({ error: e.code, message: e.message })); process.exit(1); });
  });`;

function netnsSkipReason(): string | false {
  if (!load.available) return `native addon not in use: ${load.reason}`;
  if (process.getuid?.() !== 0) return 'needs root to create a network namespace';
  if (!ok('ip', ['-V'])) return 'iproute2 (ip) is not installed';
  if (!ok('iptables', ['--version'])) return 'iptables is not installed';
  return false;
}

t.test('native originalDst after an iptables REDIRECT in a network namespace', { skip: netnsSkipReason() }, async (t) => {
  if (!load.available) throw new Error('unreachable: skipped when the addon is not in use');
  const ns = `keel-test-${randomBytes(4).toString('hex')}`;
  if (!ok('ip', ['netns', 'add', ns])) return t.plan(0, 'cannot create a network namespace here');
  t.teardown(() => {
    spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  });
  t.ok(ok('ip', ['-n', ns, 'link', 'set', 'lo', 'up']), 'loopback up in the namespace');

  const cases = [
    { name: 'IPv4', iptables: 'iptables', listen: '127.0.0.1', dest: '127.0.0.1', family: 4, origPort: 20001 },
    { name: 'IPv4 on a dual-stack (v4-mapped) socket', iptables: 'iptables', listen: '::ffff:127.0.0.1', dest: '127.0.0.1', family: 4, origPort: 20002 },
    { name: 'IPv6', iptables: 'ip6tables', listen: '::1', dest: '::1', family: 6, origPort: 20003 },
  ];
  for (const c of cases) {
    const noNat = ok('ip', ['netns', 'exec', ns, c.iptables, '-t', 'nat', '-L', 'OUTPUT', '-n'])
      ? false
      : `${c.iptables} has no nat table here`;
    await t.test(c.name, { skip: noNat }, async (t) => {
      const { stdout } = await run('ip', ['netns', 'exec', ns, process.execPath, '-e', NETNS_CHILD, load.path, c.iptables, c.listen, c.dest, String(c.origPort)]);
      const out = JSON.parse(stdout) as { originalDst?: unknown; localAddress?: { port: number; family: number }; origPort?: number; error?: string; message?: string };
      t.notOk(out.error, out.message ?? 'no error');
      t.same(out.originalDst, { address: c.dest, port: out.origPort, family: c.family });
      t.equal(out.localAddress?.family, c.family);
      t.not(out.localAddress?.port, out.origPort, 'the socket itself is on the redirect port');
    });
  }
});
