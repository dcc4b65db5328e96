// Tests for peeking at a connection's first bytes: the addon's peek (MSG_PEEK under a uv_poll) and
// the twin's (reads in JS), through src/listener/peek.ts's sniffConnection, ReplaySocket,
// parseClientHello and detectProtocol. One suite runs against each implementation: a loopback
// server with pauseOnConnect sniffs real http2 / tls / HTTP/1.1 clients and then hands the socket
// (native: the raw socket, whose bytes were never consumed; twin: a ReplaySocket) to node:http2,
// tls.TLSSocket and node:http, which must complete the exchange.
// Must not: bind anything but port 0 on loopback, sleep for fixed times to wait for something that
// can be awaited, or leave sockets, servers, sessions or temp files behind.

import t, { type Test } from 'tap';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { loadNative, twin, type CaptureImpl } from '../../../src/native/index';
import {
  H2_PREFACE,
  ReplaySocket,
  detectProtocol,
  parseClientHello,
  sniffConnection,
  type SniffResult,
} from '../../../src/listener/peek';

interface PausedServer {
  readonly port: number;
  /** The next accepted connection (paused: libuv is not reading it). */
  accept(): Promise<net.Socket>;
}

/** A loopback server on port 0 with pauseOnConnect; teardown destroys its sockets and closes it. */
async function pausedServer(t: Test): Promise<PausedServer> {
  const server = net.createServer({ pauseOnConnect: true });
  const sockets = new Set<net.Socket>();
  const ready: net.Socket[] = [];
  const waiting: Array<(s: net.Socket) => void> = [];
  server.on('connection', (s: net.Socket) => {
    s.on('error', () => {});
    sockets.add(s);
    const w = waiting.shift();
    if (w) w(s);
    else ready.push(s);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    accept: () => {
      const s = ready.shift();
      return s ? Promise.resolve(s) : new Promise((resolve) => waiting.push(resolve));
    },
  };
}

/** A plain TCP client connected to `port`, destroyed at teardown. */
async function rawClient(t: Test, port: number): Promise<net.Socket> {
  const c = net.connect(port, '127.0.0.1');
  c.on('error', () => {});
  t.teardown(() => c.destroy());
  await once(c, 'connect');
  return c;
}

/** Reads `stream` until `n` bytes arrived (then pauses it); rejects on error or an early end. */
function readBytes(stream: NodeJS.ReadableStream & NodeJS.EventEmitter, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let have = 0;
    const cleanup = (): void => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
    };
    const onData = (c: Buffer): void => {
      chunks.push(c);
      have += c.length;
      if (have >= n) {
        cleanup();
        stream.pause();
        resolve(Buffer.concat(chunks));
      }
    };
    const onEnd = (): void => {
      cleanup();
      reject(new Error(`ended after ${have} of ${n} bytes`));
    };
    const onError = (e: Error): void => {
      cleanup();
      reject(e);
    };
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', onError);
    stream.resume();
  });
}

/** Reads `stream` to its end. */
async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** The socket the next consumer should get: the raw one if nothing was consumed, else a replay. */
function handOff(socket: net.Socket, res: SniffResult): net.Socket | ReplaySocket {
  return res.consumed ? new ReplaySocket(socket, res.bytes) : socket;
}

const execFileP = promisify(execFile);

const want = (b: Buffer): 'more' | 'done' => detectProtocol(b).status;

/** Two setImmediate turns: the event loop has been through at least one poll phase. */
async function afterPollPhase(): Promise<void> {
  for (let i = 0; i < 2; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

// A self-signed P-256 certificate for foo.test, made once with the system openssl.
interface Cert {
  key: string;
  cert: string;
}
function makeCert(): Cert | string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-peek-'));
  try {
    const r = spawnSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
        '-days', '1', '-subj', '/CN=foo.test', '-addext', 'subjectAltName=DNS:foo.test',
      ],
      { encoding: 'utf8' },
    );
    if (r.error) return `openssl is not available: ${r.error.message}`;
    if (r.status !== 0) return `openssl req failed: ${r.stderr.trim().split('\n')[0]}`;
    return { key: fs.readFileSync(path.join(dir, 'key.pem'), 'utf8'), cert: fs.readFileSync(path.join(dir, 'cert.pem'), 'utf8') };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
const certOrReason = makeCert();
const noTls = typeof certOrReason === 'string' ? certOrReason : false;

const load = loadNative();
const impls: CaptureImpl[] = [twin];
if (load.available) impls.unshift(load.impl);
else t.comment(`native implementation not tested: ${load.reason}`);

for (const impl of impls) {
  const consumes = impl.peekMode === 'read';

  t.test(`${impl.kind} implementation (peekMode ${impl.peekMode})`, async (t) => {
    t.test('h2c prior knowledge from http2.connect: sniffed, then served by node:http2', async (t) => {
      const { port, accept } = await pausedServer(t);
      const client = http2.connect(`http://127.0.0.1:${port}`);
      client.on('error', () => {});
      t.teardown(() => client.destroy());
      const sock = await accept();

      const res = await sniffConnection(sock, { timeoutMs: 10_000, want, impl });
      t.equal(res.consumed, consumes);
      t.equal(res.timedOut, false);
      t.equal(res.eof, false);
      t.same(detectProtocol(res.bytes), { status: 'done', protocol: 'h2c' });
      t.ok(res.bytes.subarray(0, H2_PREFACE.length).equals(H2_PREFACE), 'starts with the preface');
      t.equal(sock.isPaused(), true, 'the socket is left paused');

      const h2 = http2.createServer((req, resp) => resp.end(`hello ${req.url}`));
      const sessions: http2.ServerHttp2Session[] = [];
      h2.on('session', (s) => sessions.push(s));
      t.teardown(() => sessions.forEach((s) => s.destroy()));
      h2.emit('connection', handOff(sock, res));
      // node:http2 consumes the handle but does not start a paused socket: the caller resumes it.
      if (!res.consumed) sock.resume();

      const req = client.request({ ':path': '/x' });
      const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
      t.equal(headers[':status'], 200);
      t.equal((await readAll(req)).toString(), 'hello /x');
      // A second request on the same connection: the session keeps reading the fd.
      const req2 = client.request({ ':path': '/y' });
      t.equal((await readAll(req2)).toString(), 'hello /y');
    });

    t.test("want 'more': a preface arriving in two parts", async (t) => {
      const { port, accept } = await pausedServer(t);
      const client = await rawClient(t, port);
      client.write(H2_PREFACE.subarray(0, 10));
      const sock = await accept();
      const seen: number[] = [];
      let sentRest = false;
      const res = await sniffConnection(sock, {
        timeoutMs: 10_000,
        impl,
        want: (b) => {
          seen.push(b.length);
          const verdict = want(b);
          if (verdict === 'more' && !sentRest) {
            sentRest = true;
            client.write(H2_PREFACE.subarray(10));
          }
          return verdict;
        },
      });
      t.ok(res.bytes.equals(H2_PREFACE), 'all 24 bytes, nothing more');
      t.equal(res.timedOut, false);
      t.equal(seen.at(-1), H2_PREFACE.length);
      if (impl.kind === 'native') {
        // SO_RCVLOWAT: the second peek woke only when new bytes were there.
        t.same(seen, [10, 24], 'one peek per arrival, no busy loop');
      } else {
        t.ok(seen.length <= H2_PREFACE.length, 'one read per chunk');
      }
      // Nothing lost: the next reader sees the preface, then what follows.
      client.write('after');
      const reader = handOff(sock, res);
      const all = await readBytes(reader, H2_PREFACE.length + 5);
      t.equal(all.toString('latin1'), `${H2_PREFACE.toString('latin1')}after`);
    });

    t.test('TLS: SNI and ALPN from the ClientHello, then a TLSSocket completes the handshake', { skip: noTls }, async (t) => {
      const { key, cert } = certOrReason as Cert;
      const { port, accept } = await pausedServer(t);
      const client = tls.connect({ host: '127.0.0.1', port, servername: 'foo.test', ALPNProtocols: ['h2', 'http/1.1'], ca: cert });
      client.on('error', () => {});
      t.teardown(() => client.destroy());
      const sock = await accept();

      const res = await sniffConnection(sock, { timeoutMs: 10_000, want, impl });
      t.equal(res.consumed, consumes);
      t.equal(res.timedOut, false);
      t.equal(res.bytes[0], 0x16);
      t.same(parseClientHello(res.bytes), { complete: true, sni: 'foo.test', alpn: ['h2', 'http/1.1'] });
      t.same(detectProtocol(res.bytes), { status: 'done', protocol: 'tls', sni: 'foo.test', alpn: ['h2', 'http/1.1'] });

      const server = new tls.TLSSocket(handOff(sock, res) as net.Socket, {
        isServer: true,
        secureContext: tls.createSecureContext({ key, cert }),
        ALPNProtocols: ['h2', 'http/1.1'],
      });
      server.on('error', () => {});
      t.teardown(() => server.destroy());
      await Promise.all([once(server, 'secure'), once(client, 'secureConnect')]);
      t.equal(client.authorized, true, 'the client verified the certificate for foo.test');
      t.equal(client.alpnProtocol, 'h2');
      t.equal(server.alpnProtocol, 'h2');
      t.equal((server as tls.TLSSocket & { servername?: string }).servername, 'foo.test');

      client.write('ping');
      t.equal((await readBytes(server, 4)).toString(), 'ping');
      server.write('pong');
      t.equal((await readBytes(client, 4)).toString(), 'pong');
    });

    const REQUEST = 'GET /p HTTP/1.1\r\nHost: foo.test\r\nConnection: close\r\n\r\n';

    t.test('HTTP/1.1: the request line is sniffed, the whole request is read afterwards', async (t) => {
      const { port, accept } = await pausedServer(t);
      const client = await rawClient(t, port);
      client.write(REQUEST);
      const sock = await accept();
      const res = await sniffConnection(sock, { timeoutMs: 10_000, want, impl });
      t.same(detectProtocol(res.bytes), { status: 'done', protocol: 'http/1.1' });
      t.equal(res.consumed, consumes);
      if (!res.consumed) {
        // Peeked, not read: socket.resume() gets every byte from the first one.
        t.equal((await readBytes(sock, REQUEST.length)).toString('latin1'), REQUEST);
      } else {
        t.equal((await readBytes(new ReplaySocket(sock, res.bytes), REQUEST.length)).toString('latin1'), REQUEST);
      }
    });

    t.test('HTTP/1.1: served by node:http after the sniff', async (t) => {
      const { port, accept } = await pausedServer(t);
      const client = await rawClient(t, port);
      client.write(REQUEST);
      const sock = await accept();
      const res = await sniffConnection(sock, { timeoutMs: 10_000, want, impl });
      const server = http.createServer((req, resp) => resp.end(`hi ${req.url}`));
      const conn = handOff(sock, res);
      server.emit('connection', conn);
      conn.resume(); // the caller resumes: node:http does not start a paused socket itself
      const response = (await readAll(client)).toString('latin1');
      t.match(response, /^HTTP\/1\.1 200 OK\r\n/);
      t.match(response, /\r\n\r\nhi \/p$/);
    });

    t.test('timeout: a partial preface and then silence', async (t) => {
      const { port, accept } = await pausedServer(t);
      const client = await rawClient(t, port);
      client.write('PRI * HT');
      const sock = await accept();
      let calls = 0;
      const started = Date.now();
      const res = await sniffConnection(sock, {
        timeoutMs: 150,
        impl,
        want: (b) => {
          calls++;
          return want(b);
        },
      });
      t.ok(Date.now() - started >= 140, 'waited for the timeout');
      t.equal(res.timedOut, true);
      t.equal(res.eof, false);
      t.equal(res.bytes.toString('latin1'), 'PRI * HT');
      t.equal(res.consumed, consumes);
      t.ok(calls <= 2, `no busy loop while waiting (${calls} want() calls)`);
      t.equal(sock.isPaused(), true);
      // The connection is intact: the rest arrives, and the next reader sees all of it.
      client.write(H2_PREFACE.subarray(8));
      t.ok((await readBytes(handOff(sock, res), H2_PREFACE.length)).equals(H2_PREFACE));
    });

    t.test('timeout: nothing sent at all', async (t) => {
      const { port, accept } = await pausedServer(t);
      await rawClient(t, port);
      const sock = await accept();
      let calls = 0;
      const res = await sniffConnection(sock, {
        timeoutMs: 50,
        impl,
        want: () => {
          calls++;
          return 'more';
        },
      });
      t.same({ ...res, bytes: res.bytes.length }, { bytes: 0, consumed: consumes, timedOut: true, eof: false });
      t.equal(calls, 0);
    });

    t.test('eof: the client connects and closes without sending', async (t) => {
      const { port, accept } = await pausedServer(t);
      const client = await rawClient(t, port);
      client.end();
      const sock = await accept();
      const res = await sniffConnection(sock, { timeoutMs: 10_000, want, impl });
      t.same({ ...res, bytes: res.bytes.length }, { bytes: 0, consumed: consumes, timedOut: false, eof: true });
    });

    t.test('eof: a few bytes, then the client closes', async (t) => {
      const { port, accept } = await pausedServer(t);
      const client = await rawClient(t, port);
      client.end('PRI');
      const sock = await accept();
      const res = await sniffConnection(sock, { timeoutMs: 10_000, want, impl });
      t.equal(res.bytes.toString(), 'PRI');
      t.equal(res.eof, true);
      t.equal(res.timedOut, false);
    });

    t.test('a reset before any byte rejects with ECONNRESET', async (t) => {
      const { port, accept } = await pausedServer(t);
      const client = await rawClient(t, port);
      const sock = await accept();
      client.resetAndDestroy();
      await t.rejects(sniffConnection(sock, { timeoutMs: 10_000, want, impl }), { code: 'ECONNRESET' });
    });

    t.test('destroying the socket during a sniff rejects with ERR_SOCKET_CLOSED', async (t) => {
      const { port, accept } = await pausedServer(t);
      const client = await rawClient(t, port);
      const sock = await accept();
      const p = sniffConnection(sock, { timeoutMs: 10_000, want, impl });
      sock.destroy();
      await t.rejects(p, { code: 'ERR_SOCKET_CLOSED' });
      client.resume();
      await once(client, 'end'); // the connection really closed (no poll kept it open)
      // The fd number is free again and may be reused at once: a new connection must work.
      const client2 = await rawClient(t, port);
      client2.write(H2_PREFACE);
      const sock2 = await accept();
      const res = await sniffConnection(sock2, { timeoutMs: 10_000, want, impl });
      t.same(detectProtocol(res.bytes), { status: 'done', protocol: 'h2c' });
    });

    t.test('want() throwing rejects the sniff', async (t) => {
      const { port, accept } = await pausedServer(t);
      const client = await rawClient(t, port);
      client.write('x');
      const sock = await accept();
      await t.rejects(
        sniffConnection(sock, {
          timeoutMs: 10_000,
          impl,
          want: () => {
            throw new Error('boom');
          },
        }),
        { message: 'boom' },
      );
    });

    t.test('maxBytes stops the sniff even when want() asks for more', async (t) => {
      const { port, accept } = await pausedServer(t);
      const client = await rawClient(t, port);
      client.write('ABCDEFGHIJ');
      const sock = await accept();
      const res = await sniffConnection(sock, { timeoutMs: 10_000, maxBytes: 4, impl, want: () => 'more' });
      t.equal(res.timedOut, false);
      if (impl.kind === 'native') t.equal(res.bytes.toString(), 'ABCD');
      else t.match(res.bytes.toString(), /^ABCD/); // a read chunk is never split
    });

    t.test('peek: cancel() means no callback, and the socket reads normally afterwards', async (t) => {
      const { port, accept } = await pausedServer(t);
      const client = await rawClient(t, port);
      const sock = await accept();
      const h = impl.peek(sock, 100, () => t.fail('called back after cancel()'));
      t.equal(h.active, true);
      h.cancel();
      t.equal(h.active, false);
      h.cancel(); // idempotent
      client.write('hello');
      t.equal((await readBytes(sock, 5)).toString(), 'hello');
    });

    t.test('peek: argument checks', async (t) => {
      const { port, accept } = await pausedServer(t);
      await rawClient(t, port);
      const sock = await accept();
      const noop = (): void => {};
      t.throws(() => impl.peek(sock, 0, noop), TypeError);
      t.throws(() => impl.peek(sock, 1.5, noop), TypeError);
      t.throws(() => impl.peek(sock, 10, noop, { minBytes: 11 }), TypeError);
      t.throws(() => impl.peek(sock, 10, noop, { minBytes: 0 }), TypeError);
      sock.destroy();
      await once(sock, 'close');
      t.throws(() => impl.peek(sock, 10, noop), { code: 'EBADF' });
    });

    if (impl.kind === 'native') {
      t.test('native peek: bytes stay queued; minBytes waits for more (SO_RCVLOWAT)', async (t) => {
        const { port, accept } = await pausedServer(t);
        const client = await rawClient(t, port);
        client.write('01234');
        const sock = await accept();
        const peekOnce = (minBytes: number): Promise<[Buffer, boolean]> =>
          new Promise((resolve, reject) => {
            impl.peek(sock, 100, (err, data, eof) => (err ? reject(err) : resolve([data!, eof])), { minBytes });
          });
        t.same(await peekOnce(1), [Buffer.from('01234'), false]);
        t.same(await peekOnce(1), [Buffer.from('01234'), false], 'peeking again sees the same bytes');
        let fired = false;
        const p = peekOnce(10).then((r) => {
          fired = true;
          return r;
        });
        await afterPollPhase();
        t.equal(fired, false, 'five queued bytes do not satisfy minBytes 10');
        client.write('56789');
        t.same(await p, [Buffer.from('0123456789'), false]);
        // SO_RCVLOWAT was restored: libuv's reader wakes for the bytes as they are.
        t.equal((await readBytes(sock, 10)).toString(), '0123456789');
      });

      t.test('sniff: without SO_RCVLOWAT the re-peeks back off instead of spinning', async (t) => {
        // An implementation whose peek ignores minBytes: level-triggered, it fires at once.
        const native = impl;
        const eager: CaptureImpl = { ...native, peek: (s, max, cb) => native.peek(s, max, cb) };
        const { port, accept } = await pausedServer(t);
        const client = await rawClient(t, port);
        client.write('PRI * HT');
        const sock = await accept();
        let calls = 0;
        const res = await sniffConnection(sock, {
          timeoutMs: 150,
          impl: eager,
          want: (b) => {
            calls++;
            return want(b);
          },
        });
        t.equal(res.timedOut, true);
        t.equal(res.bytes.toString('latin1'), 'PRI * HT');
        // Timers of 1, 2, 4, ... 64 ms within 150 ms: about eight peeks, not thousands.
        t.ok(calls >= 3 && calls <= 20, `backed off: ${calls} want() calls in 150 ms`);
        let sentRest = false;
        const res2 = await sniffConnection(sock, {
          timeoutMs: 10_000,
          impl: eager,
          want: (b) => {
            if (!sentRest) {
              sentRest = true;
              client.write(H2_PREFACE.subarray(8));
            }
            return want(b);
          },
        });
        t.ok(res2.bytes.equals(H2_PREFACE), 'and still sees the bytes once they grow');
      });

      t.test('native peek: EEXIST on a socket that is being read', async (t) => {
        const { port, accept } = await pausedServer(t);
        const client = await rawClient(t, port);
        const sock = await accept();
        sock.resume(); // flowing; libuv starts reading on the next tick
        t.throws(() => impl.peek(sock, 10, () => t.fail('no callback')), { code: 'EEXIST', message: /pauseOnConnect/ });
        await afterPollPhase();
        t.throws(() => impl.peek(sock, 10, () => t.fail('no callback')), { code: 'EEXIST' }, 'and once libuv reads it');
        client.write('still fine');
        t.equal((await readBytes(sock, 10)).toString(), 'still fine');
      });

      t.test('native peek: resuming the socket during a peek interrupts it cleanly', async (t) => {
        const { port, accept } = await pausedServer(t);
        const client = await rawClient(t, port);
        const sock = await accept();
        const result = new Promise<NodeJS.ErrnoException | null>((resolve) => {
          impl.peek(sock, 10, (err) => resolve(err));
        });
        sock.resume();
        t.match(await result, { code: 'ERR_PEEK_INTERRUPTED' });
        client.write('read by libuv');
        t.equal((await readBytes(sock, 13)).toString(), 'read by libuv');
      });

      t.test('native peek: a worker terminated mid-peek exits cleanly', async (t) => {
        // In a child process: a crash here must not take the test runner with it.
        const script = `
          const { Worker } = require('node:worker_threads');
          const code = \`
            const net = require('node:net');
            const { parentPort, workerData } = require('node:worker_threads');
            const addon = require(workerData);
            const srv = net.createServer({ pauseOnConnect: true }, (sock) => {
              addon.peek(sock._handle.fd, 100, () => {});           // waits: nothing is sent
              addon.peek(sock._handle.fd, 100, () => {}).cancel(); // a close still pending
              parentPort.postMessage('peeking');
            });
            srv.listen(0, '127.0.0.1', () => net.connect(srv.address().port, '127.0.0.1'));
          \`;
          const w = new Worker(code, { eval: true, workerData: process.argv[1] });
          w.once('message', () => w.terminate().then((c) => console.log(JSON.stringify({ exit: c }))));`;
        const env = { ...process.env };
        delete env['NODE_OPTIONS'];
        const child = execFileP(process.execPath, ['-e', script, load.available ? load.path : ''], { env, timeout: 30_000 });
        const { stdout } = await child;
        t.same(JSON.parse(stdout), { exit: 1 });
      });

      t.test('native peek: a throwing callback is reported as an uncaught exception', async (t) => {
        const { port, accept } = await pausedServer(t);
        const client = await rawClient(t, port);
        client.write('x');
        const sock = await accept();
        const listeners = process.listeners('uncaughtException');
        process.removeAllListeners('uncaughtException');
        t.teardown(() => {
          process.removeAllListeners('uncaughtException');
          for (const l of listeners) process.on('uncaughtException', l);
        });
        const caught = new Promise<Error>((resolve) => process.once('uncaughtException', resolve));
        impl.peek(sock, 10, () => {
          throw new Error('thrown from the peek callback');
        });
        t.match((await caught).message, 'thrown from the peek callback');
      });
    }
  });
}

t.test('ReplaySocket', async (t) => {
  t.test('replays, then passes data through both ways; exposes the socket properties', async (t) => {
    const { port, accept } = await pausedServer(t);
    const client = await rawClient(t, port);
    const sock = await accept();
    const replay = new ReplaySocket(sock, Buffer.from('early '));
    t.equal(replay.remoteAddress, '127.0.0.1');
    t.equal(replay.remotePort, client.localPort);
    t.equal(replay.remoteFamily, 'IPv4');
    t.equal(replay.localAddress, '127.0.0.1');
    t.equal(replay.localPort, port);
    t.same(replay.address(), sock.address());
    t.equal((replay as unknown as { encrypted?: unknown }).encrypted, undefined);
    t.equal(replay.setNoDelay(true), replay);
    t.equal(replay.setKeepAlive(true, 1000), replay);
    t.equal(replay.ref(), replay);
    t.equal(replay.unref(), replay);
    client.write('late');
    t.equal((await readBytes(replay, 10)).toString(), 'early late');
    replay.write('back');
    t.equal((await readBytes(client, 4)).toString(), 'back');
    replay.end();
    await once(client, 'end');
    client.end();
    replay.resume(); // the replay closes once its reader has drained it to the end
    await once(replay, 'close');
    t.equal(sock.destroyed, true);
  });

  t.test('setTimeout forwards to the socket and re-emits timeout', async (t) => {
    const { port, accept } = await pausedServer(t);
    await rawClient(t, port);
    const sock = await accept();
    const replay = new ReplaySocket(sock, Buffer.alloc(0));
    t.teardown(() => replay.destroy());
    const fired = new Promise<void>((resolve) => replay.setTimeout(20, resolve));
    t.equal(sock.timeout, 20);
    await fired;
    replay.setTimeout(0);
    t.equal(sock.timeout, 0);
  });

  t.test('backpressure: the socket is paused while the replay buffer is full', async (t) => {
    const { port, accept } = await pausedServer(t);
    const client = await rawClient(t, port);
    const sock = await accept();
    const replay = new ReplaySocket(sock, Buffer.alloc(0));
    t.teardown(() => replay.destroy());
    const big = Buffer.alloc(1 << 20, 0x61);
    client.write(big);
    replay.read(0); // start the flow without consuming
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (replay.readableLength >= replay.readableHighWaterMark) resolve();
        else sock.once('data', () => setImmediate(check));
      };
      check();
    });
    t.equal(sock.isPaused(), true, 'paused once push() returned false');
    t.ok((await readBytes(replay, big.length)).equals(big), 'and resumed on read: every byte arrives in order');
  });

  t.test('a socket error destroys the replay with it', async (t) => {
    const { port, accept } = await pausedServer(t);
    await rawClient(t, port);
    const sock = await accept();
    const replay = new ReplaySocket(sock, Buffer.alloc(0));
    const err = once(replay, 'error');
    sock.destroy(new Error('socket broke'));
    t.match(((await err) as [Error])[0].message, 'socket broke');
  });
});

// ---- parsing ----

/** A ClientHello as record bytes, built by hand: SNI and ALPN as given, plus an unknown extension. */
function clientHello(opts: { sni?: string; alpn?: string[]; noExtensions?: boolean }): Buffer {
  const ext = (type: number, data: Buffer): Buffer => {
    const h = Buffer.alloc(4);
    h.writeUInt16BE(type, 0);
    h.writeUInt16BE(data.length, 2);
    return Buffer.concat([h, data]);
  };
  const u16 = (n: number): Buffer => {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(n);
    return b;
  };
  const exts: Buffer[] = [ext(0xff01, Buffer.from([0]))];
  if (opts.sni !== undefined) {
    const name = Buffer.from(opts.sni, 'latin1');
    const entry = Buffer.concat([Buffer.from([0]), u16(name.length), name]);
    exts.push(ext(0, Buffer.concat([u16(entry.length), entry])));
  }
  if (opts.alpn !== undefined) {
    const list = Buffer.concat(opts.alpn.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p, 'latin1')])));
    exts.push(ext(16, Buffer.concat([u16(list.length), list])));
  }
  const extBlock = Buffer.concat(exts);
  const body = Buffer.concat([
    Buffer.from([3, 3]),
    Buffer.alloc(32, 7),
    Buffer.from([0]), // session id
    u16(2), Buffer.from([0x13, 0x01]), // cipher suites
    Buffer.from([1, 0]), // compression
    ...(opts.noExtensions ? [] : [u16(extBlock.length), extBlock]),
  ]);
  const hs = Buffer.concat([Buffer.from([1, 0, body.length >> 8, body.length & 0xff]), body]);
  return Buffer.concat([Buffer.from([22, 3, 1]), u16(hs.length), hs]);
}

/** Splits one handshake record into two records at `at` bytes into its fragment. */
function fragment(record: Buffer, at: number): Buffer {
  const frag = record.subarray(5);
  const rec = (f: Buffer): Buffer => {
    const h = Buffer.from([22, 3, 1, 0, 0]);
    h.writeUInt16BE(f.length, 3);
    return Buffer.concat([h, f]);
  };
  return Buffer.concat([rec(frag.subarray(0, at)), rec(frag.subarray(at))]);
}

t.test('parseClientHello', async (t) => {
  const full = clientHello({ sni: 'api.example.com', alpn: ['h2', 'http/1.1'] });
  t.same(parseClientHello(full), { complete: true, sni: 'api.example.com', alpn: ['h2', 'http/1.1'] });
  t.same(parseClientHello(Buffer.concat([full, Buffer.from('trailing')])), {
    complete: true,
    sni: 'api.example.com',
    alpn: ['h2', 'http/1.1'],
  });
  for (let n = 0; n < full.length; n++) {
    const r = parseClientHello(full.subarray(0, n));
    if (!r || r.complete) {
      t.fail(`a ${n}-byte prefix should need more, got ${JSON.stringify(r)}`);
      break;
    }
  }
  t.pass('every strict prefix is { complete: false }');
  t.same(parseClientHello(clientHello({})), { complete: true });
  t.same(parseClientHello(clientHello({ sni: 'only.sni' })), { complete: true, sni: 'only.sni' });
  t.same(parseClientHello(clientHello({ alpn: ['http/1.1'] })), { complete: true, alpn: ['http/1.1'] });
  t.same(parseClientHello(clientHello({ noExtensions: true })), { complete: true });

  const split = fragment(full, 20);
  t.same(parseClientHello(split), { complete: true, sni: 'api.example.com', alpn: ['h2', 'http/1.1'] }, 'reassembled over two records');
  t.same(parseClientHello(split.subarray(0, 30)), { complete: false });

  t.equal(parseClientHello(Buffer.from('GET / HTTP/1.1\r\n')), undefined, 'not TLS');
  t.equal(parseClientHello(H2_PREFACE), undefined);
  t.equal(parseClientHello(Buffer.from([22, 2])), undefined, 'record version not 3.x');
  const serverHello = Buffer.from(full);
  serverHello[5] = 2;
  t.equal(parseClientHello(serverHello), undefined, 'a handshake other than ClientHello');
  const alert = Buffer.from(full);
  alert[0] = 21;
  t.equal(parseClientHello(alert), undefined);
  const badExt = Buffer.from(full);
  badExt.writeUInt16BE(0xffff, full.length - 16); // the last (ALPN) extension's length: past the end
  t.equal(parseClientHello(badExt), undefined, 'malformed extension lengths');
});

t.test('detectProtocol', async (t) => {
  t.same(detectProtocol(Buffer.alloc(0)), { status: 'more' });
  t.same(detectProtocol(H2_PREFACE.subarray(0, 10)), { status: 'more' });
  t.same(detectProtocol(H2_PREFACE), { status: 'done', protocol: 'h2c' });
  t.same(detectProtocol(Buffer.from('GET /a HTT')), { status: 'more' });
  t.same(detectProtocol(Buffer.from('GET /a HTTP/1.1\r')), { status: 'more' });
  t.same(detectProtocol(Buffer.from('GET /a HTTP/1.1\r\nHost: x\r\n')), { status: 'done', protocol: 'http/1.1' });
  t.same(detectProtocol(Buffer.from('POST /a HTTP/1.0\r\n')), { status: 'done', protocol: 'http/1.0' });
  t.same(detectProtocol(Buffer.from('PRI * HTTP/1.1\r\n')), { status: 'done', protocol: 'http/1.1' });
  t.same(detectProtocol(Buffer.from('SSH-2.0-OpenSSH\r\n')), { status: 'done', protocol: 'unknown' });
  t.same(detectProtocol(Buffer.from([0, 1, 2])), { status: 'done', protocol: 'unknown' });
  const hello = clientHello({ sni: 'x.test', alpn: ['h2'] });
  t.same(detectProtocol(hello.subarray(0, 9)), { status: 'more' });
  t.same(detectProtocol(hello), { status: 'done', protocol: 'tls', sni: 'x.test', alpn: ['h2'] });
  t.same(detectProtocol(Buffer.from([22, 3, 1, 0, 5, 2, 0, 0, 1, 0])), { status: 'done', protocol: 'unknown' });
});
