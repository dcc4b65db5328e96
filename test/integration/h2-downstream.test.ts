// Downstream HTTP/2 (h2c prior knowledge) details the lean h2-server path must keep: request header
// blocks (cookie crumbs, repeated headers, host vs :authority), response headers (connection-specific
// ones dropped, repeated set-cookie kept), write back-pressure on a large response, and the HCM
// idle_timeout (a connection with no active stream closes; one with a stream in flight does not).
import t from 'tap';
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import type * as net from 'node:net';
import { connectH2, encodeHeaders, FRAME, headersFrame, parseGoaway } from '../helpers/h2-wire';
import { bootstrap, cluster, startKeel } from '../helpers/keel';
import { waitUntil } from '../helpers/wait';

const ROUTES = `            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u } }] }`;

interface Seen {
  rawHeaders: string[];
  url: string;
}

async function upstream(handler: (req: http.IncomingMessage, res: http.ServerResponse) => void): Promise<{ port: number; seen: Seen[]; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ rawHeaders: req.rawHeaders, url: req.url ?? '' });
    req.resume();
    req.on('end', () => handler(req, res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    seen,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

function request(client: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders): Promise<{ headers: http2.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = client.request(headers);
    let head: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on('response', (h) => (head = h));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve({ headers: head, body: Buffer.concat(chunks) }));
    req.on('error', reject);
    req.end();
  });
}

/** keel in front of an upstream answering every request 200 "ok" (both closed at teardown). */
async function okKeel(t: { teardown(fn: () => Promise<void>): void }): Promise<{ up: Awaited<ReturnType<typeof upstream>>; keel: Awaited<ReturnType<typeof startKeel>> }> {
  const up = await upstream((_req, res) => {
    res.writeHead(200, { 'content-length': 2 });
    res.end('ok');
  });
  const keel = await startKeel(bootstrap(ROUTES, cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  return { up, keel };
}

/** name -> values, in order, from a raw header list */
function valuesOf(raw: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === name) out.push(raw[i + 1]);
  return out;
}

t.test('request headers: cookie crumbs joined, repeated headers kept apart, :authority as host', async (t) => {
  const up = await upstream((_req, res) => {
    res.writeHead(200, [
      ['content-type', 'text/plain'],
      ['set-cookie', 'x=1'],
      ['set-cookie', 'y=2'],
      ['keep-alive', 'timeout=5'],
      ['x-multi', 'one'],
      ['x-multi', 'two'],
    ]);
    res.end('ok');
  });
  const keel = await startKeel(bootstrap(ROUTES, cluster('u', up.port)));
  const client = http2.connect(keel.url);
  t.teardown(async () => {
    client.close();
    await keel.stop();
    await up.close();
  });
  // node sends each array element as its own field: two cookie crumbs and two x-rep lines
  const res = await request(client, { ':path': '/h?q=1', ':authority': 'svc.example:8080', cookie: ['a=1', 'b=2'], 'x-rep': ['first', 'second'], 'x-one': 'v' });
  t.equal(res.headers[':status'], 200);
  t.equal(res.body.toString(), 'ok');
  t.same(res.headers['set-cookie'], ['x=1', 'y=2'], 'repeated set-cookie reaches the HTTP/2 client as two fields');
  t.equal(res.headers['x-multi'], 'one, two', 'repeated response headers are all forwarded');
  t.equal(res.headers['keep-alive'], undefined, 'connection-specific response headers are dropped');
  t.equal(up.seen.length, 1);
  const raw = up.seen[0].rawHeaders;
  t.equal(up.seen[0].url, '/h?q=1');
  t.same(valuesOf(raw, 'host'), ['svc.example:8080'], ':authority becomes the one host header');
  t.same(valuesOf(raw, 'cookie'), ['a=1; b=2'], 'cookie crumbs joined with "; " (RFC 9113 8.2.3)');
  t.same(valuesOf(raw, 'x-rep'), ['first', 'second'], 'repeated request headers forwarded as separate fields');
  t.same(valuesOf(raw, 'x-one'), ['v']);
  t.same(valuesOf(raw, 'x-forwarded-proto'), ['http']);
});

t.test('request headers on the wire: host stands in for a missing :authority, :authority wins over host', async (t) => {
  const { up, keel } = await okKeel(t);
  const w = await connectH2(keel.port, t);
  // no :authority: the host header carries the authority (RFC 9113 8.3.1)
  w.send(headersFrame(1, encodeHeaders([':method', 'GET', ':scheme', 'http', ':path', '/a', 'host', 'only-host.example', 'x-k', 'v']), { endStream: true }));
  const r1 = await w.response(1);
  t.equal(r1.status, '200');
  // both: :authority is the one that counts, and one host header goes upstream
  w.send(headersFrame(3, encodeHeaders([':method', 'GET', ':scheme', 'http', ':authority', 'auth.example', ':path', '/b', 'host', 'other.example']), { endStream: true }));
  const r2 = await w.response(3);
  t.equal(r2.status, '200');
  t.equal(up.seen.length, 2);
  t.same(valuesOf(up.seen[0].rawHeaders, 'host'), ['only-host.example']);
  t.same(valuesOf(up.seen[0].rawHeaders, 'x-k'), ['v']);
  t.same(valuesOf(up.seen[1].rawHeaders, 'host'), ['auth.example']);
});

t.test('a large response to an HTTP/2 client arrives whole through stream flow control', async (t) => {
  const body = Buffer.alloc(3 * 1024 * 1024 + 7);
  for (let i = 0; i < body.length; i++) body[i] = (i * 31 + (i >> 10)) & 0xff;
  const up = await upstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    // in pieces, so keel writes many chunks into a 64 KiB stream window
    let off = 0;
    const more = (): void => {
      while (off < body.length) {
        const piece = body.subarray(off, off + 50_000);
        off += piece.length;
        if (!res.write(piece)) return void res.once('drain', more);
      }
      res.end();
    };
    more();
  });
  const keel = await startKeel(bootstrap(ROUTES, cluster('u', up.port)));
  // the client's default stream window (64 KiB) makes keel's writes wait for WINDOW_UPDATEs
  const client = http2.connect(keel.url);
  t.teardown(async () => {
    client.close();
    await keel.stop();
    await up.close();
  });
  const [a, b] = await Promise.all([request(client, { ':path': '/big/1' }), request(client, { ':path': '/big/2' })]);
  const want = createHash('sha256').update(body).digest('hex');
  for (const r of [a, b]) {
    t.equal(r.headers[':status'], 200);
    t.equal(r.body.length, body.length);
    t.equal(createHash('sha256').update(r.body).digest('hex'), want, 'same bytes');
  }
});

t.test('idle_timeout closes an HTTP/2 connection with no active stream, not one with a stream in flight', async (t) => {
  let release: (() => void) | undefined;
  const up = await upstream((req, res) => {
    const send = (): void => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(req.url);
    };
    if (req.url === '/held') release = send;
    else send();
  });
  const keel = await startKeel(bootstrap(ROUTES, cluster('u', up.port), '          common_http_protocol_options: { idle_timeout: 0.3s }'));
  const busy = http2.connect(keel.url);
  const quiet = http2.connect(keel.url);
  let busyGoaway = false;
  let quietGoaway = false;
  busy.on('goaway', () => (busyGoaway = true));
  quiet.on('goaway', () => (quietGoaway = true));
  busy.on('error', () => undefined);
  quiet.on('error', () => undefined);
  t.teardown(async () => {
    busy.destroy();
    quiet.destroy();
    await keel.stop();
    await up.close();
  });
  // the busy connection's stream starts first and stays open at the upstream
  const held = request(busy, { ':path': '/held' });
  await waitUntil(() => release !== undefined, 'the held request at the upstream');
  const r = await request(quiet, { ':path': '/quick' });
  t.equal(r.body.toString(), '/quick');
  // the quiet connection closes after idle_timeout (checked by the one-second sweep) ...
  await waitUntil(() => quietGoaway || quiet.closed || quiet.destroyed, 'the idle connection to be closed');
  t.ok(quietGoaway, 'GOAWAY on the idle connection');
  // ... while the busy one, idle for as long but with a stream in flight, stays open
  t.notOk(busyGoaway, 'no GOAWAY while a stream is active');
  release!();
  const h = await held;
  t.equal(h.headers[':status'], 200);
  t.equal(h.body.toString(), '/held');
  // and once its stream is done, it is idle too
  await waitUntil(() => busyGoaway || busy.closed || busy.destroyed, 'the busy connection to be closed once idle');
  t.ok(busyGoaway);
});

t.test('an upstream connection whose response ended while the downstream window held it back serves the next request', async (t) => {
  // One upstream connection (max_connections: 1), reused by the second request: the first response
  // fills a 100-byte stream window, so keel pauses the upstream read; the response's end arrives
  // in the same read. The connection goes back to the pool and must read again.
  const up = await upstream((req, res) => {
    const body = 'y'.repeat(req.url === '/first' ? 5000 : 10);
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
  });
  const keel = await startKeel(bootstrap(ROUTES, cluster('u', up.port, '    circuit_breakers: { thresholds: [{ max_connections: 1 }] }')));
  const small = http2.connect(keel.url, { settings: { initialWindowSize: 100 } });
  t.teardown(async () => {
    small.close();
    await keel.stop();
    await up.close();
  });
  const first = await request(small, { ':path': '/first' });
  t.equal(first.body.length, 5000, 'the first response arrives whole through a 100-byte window');
  const second = await new Promise<{ headers: http2.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the second request got no response in 5 s')), 5000);
    request(small, { ':path': '/second' }).then(
      (r) => {
        clearTimeout(timer);
        resolve(r);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
  t.equal(second.headers[':status'], 200);
  t.equal(second.body.toString(), 'y'.repeat(10));
  t.equal(up.seen.length, 2);
});

t.test('a connection opened while the listener drains is served once, then told to go (GOAWAY)', async (t) => {
  const { keel } = await okKeel(t);
  keel.server.drainListeners({ graceful: true });
  const w = await connectH2(keel.port, t);
  w.send(headersFrame(1, encodeHeaders([':method', 'GET', ':scheme', 'http', ':authority', 'a', ':path', '/x']), { endStream: true }));
  const r = await w.response(1);
  t.equal(r.status, '200', 'the first stream is served');
  const goaway = parseGoaway(await w.waitFor((f) => f.type === FRAME.GOAWAY, 'a GOAWAY after the first stream'));
  t.equal(goaway.lastStreamId, 1, 'naming that stream as the last');
  t.equal(goaway.code, 0, 'NO_ERROR');
  await w.expectClose('the connection to close once the stream is done');
});
