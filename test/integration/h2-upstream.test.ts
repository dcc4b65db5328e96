// keel's own HTTP/2 client towards upstreams (src/upstream/h2-client.ts, h2-pool.ts): flow control
// both ways with large bodies, the server's SETTINGS_MAX_CONCURRENT_STREAMS (more connections,
// never more streams per connection), GOAWAY with a stream in flight, a refused stream retried,
// a malformed response as a protocol error, and the cluster's idle_timeout.
// Upstreams are node:http2 servers (port 0), except for the malformed response: a raw socket
// speaking just enough HTTP/2, with keel's own HPACK encoder for its header block.
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { HpackEncoder } from '../../src/http/hpack';
import { collectEnvoyStats } from '../../src/stats/envoy-stats';
import { bootstrap, cluster, downstreamTls, h2Get, httpProtocolOptions, selfSignedCert, startKeel, upstreamTls } from '../helpers/keel';
import { waitUntil } from '../helpers/wait';

const H2 = httpProtocolOptions('explicit_http_config: { http2_protocol_options: {} }');
const ROUTES = `            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u, retry_policy: { retry_on: refused-stream, num_retries: 2 } } }] }`;

interface H2Upstream {
  port: number;
  server: http2.Http2Server;
  sessions: Set<http2.ServerHttp2Session>;
  close(): Promise<void>;
}

async function h2Upstream(handler: (s: http2.ServerHttp2Stream, h: http2.IncomingHttpHeaders) => void, settings: http2.Settings = {}): Promise<H2Upstream> {
  const server = http2.createServer({ settings });
  const sessions = new Set<http2.ServerHttp2Session>();
  const u: H2Upstream = {
    port: 0,
    server,
    sessions,
    close: () =>
      new Promise((r) => {
        for (const s of sessions) s.destroy();
        server.close(() => r());
      }),
  };
  server.on('session', (s) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  server.on('stream', (s, h) => {
    s.on('error', () => undefined); // a stream closed with an error code (refused) reports it here
    handler(s, h);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  u.port = (server.address() as net.AddressInfo).port;
  return u;
}

function get(port: number, path: string, body?: Buffer): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: body ? 'POST' : 'GET', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

t.test('large bodies both ways through HTTP/2 flow control, with trailers', async (t) => {
  const up = await h2Upstream((s, h) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => {
      const got = Buffer.concat(chunks);
      const size = Number(String(h[':path']).slice(1)) || 0;
      s.respond({ ':status': 200, 'x-got': String(got.length) }, { waitForTrailers: true });
      s.on('wantTrailers', () => s.sendTrailers({ 'x-done': 'yes' }));
      s.end(Buffer.alloc(size, 'z'));
    });
  });
  // small windows on keel's side make both directions wait for WINDOW_UPDATEs
  const small = H2.replace('http2_protocol_options: {}', 'http2_protocol_options: { initial_stream_window_size: 65535, initial_connection_window_size: 65535 }');
  const keel = await startKeel(bootstrap(ROUTES, cluster('u', up.port, small)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const body = Buffer.alloc(1_000_000, 'q');
  const r = await get(keel.port, '/2000000', body);
  t.equal(r.status, 200);
  t.equal(r.headers['x-got'], String(body.length), 'the 1 MB request body reached the upstream whole');
  t.equal(r.body.length, 2_000_000, 'the 2 MB response arrived whole');
  t.ok(r.body.every((b) => b === 0x7a), 'and intact');
});

/** Five requests in one burst against a limit of 2 streams per connection (the server's or the cluster's). */
async function burstOfFive(t: Test, serverSettings: http2.Settings, h2Opts: string): Promise<void> {
  const held: http2.ServerHttp2Stream[] = [];
  let release: () => void = () => undefined;
  const allHeld = new Promise<void>((r) => (release = r));
  const up = await h2Upstream((s) => {
    held.push(s);
    if (held.length === 5) release();
  }, serverSettings);
  // no retries here: a stream over the server's limit would be refused and fail the request
  const noRetry = `            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u } }] }`;
  const keel = await startKeel(bootstrap(noRetry, cluster('u', up.port, H2.replace('http2_protocol_options: {}', `http2_protocol_options: ${h2Opts}`))));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  // five requests in one burst (one HTTP/2 client write): all wait for the first upstream connection
  const client = http2.connect(`http://127.0.0.1:${keel.port}`);
  t.teardown(() => client.close());
  const all = Promise.all(
    [1, 2, 3, 4, 5].map(
      (i) =>
        new Promise<{ status: number }>((resolve, reject) => {
          const req = client.request({ ':path': `/r${i}` });
          req.on('response', (h) => resolve({ status: Number(h[':status']) }));
          req.on('error', reject);
          req.resume();
          req.end();
        }),
    ),
  );
  await allHeld;
  // the five streams are all open now: count them per session
  const perSession = [...new Set(held.map((s) => s.session))].map((sess) => held.filter((s) => s.session === sess).length);
  t.ok(
    perSession.every((n) => n <= 2),
    `at most 2 open streams on a session (saw ${perSession.join(', ')})`,
  );
  t.ok(up.sessions.size >= 3, `5 streams need at least 3 connections (saw ${up.sessions.size})`);
  for (const s of held) s.respond({ ':status': 204 }, { endStream: true });
  const res = await all;
  t.same(
    res.map((r) => r.status),
    [204, 204, 204, 204, 204],
  );
}

t.test("the server's SETTINGS_MAX_CONCURRENT_STREAMS: more connections, never more streams on one", (t) => burstOfFive(t, { maxConcurrentStreams: 2 }, '{}'));

t.test("the cluster's max_concurrent_streams caps streams per connection below the server's", (t) => burstOfFive(t, {}, '{ max_concurrent_streams: 2 }'));

t.test('GOAWAY from the upstream: the stream in flight completes, the next request gets a new connection', async (t) => {
  let inFlight: http2.ServerHttp2Stream | undefined;
  const up = await h2Upstream((s, h) => {
    if (h[':path'] === '/slow') inFlight = s;
    else s.respond({ ':status': 200, 'x-session': String([...up.sessions].indexOf(s.session!)) }, { endStream: true });
  });
  const keel = await startKeel(bootstrap(ROUTES, cluster('u', up.port, H2)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const slow = get(keel.port, '/slow');
  await waitUntil(() => inFlight !== undefined, 'the slow stream at the upstream', 5000);
  const first = inFlight!.session!;
  first.goaway(0, 1); // NO_ERROR, last stream id 1: the slow stream is processed
  inFlight!.respond({ ':status': 200 });
  inFlight!.end('finished');
  const r = await slow;
  t.equal(r.status, 200);
  t.equal(r.body.toString(), 'finished', 'the stream in flight at the GOAWAY completed');
  const next = await get(keel.port, '/next');
  t.equal(next.status, 200);
  await waitUntil(() => up.sessions.size >= 1 && ![...up.sessions].every((s) => s === first), 'a new upstream connection', 5000);
});

t.test('a refused stream is retried (retry_on: refused-stream)', async (t) => {
  let n = 0;
  const up = await h2Upstream((s) => {
    if (++n === 1) s.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    else s.respond({ ':status': 200 }, { endStream: true });
  });
  const keel = await startKeel(bootstrap(ROUTES, cluster('u', up.port, H2)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await get(keel.port, '/x');
  t.equal(r.status, 200, 'the second attempt answered');
  t.equal(n, 2, 'two attempts reached the upstream');
});

/** A raw HTTP/2 server: SETTINGS, then for each HEADERS frame the given response header block (after a DATA frame, with `dataFirst`). */
async function rawH2Upstream(fields: [string, string][], dataFirst = false): Promise<{ port: number; open(): number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    const enc = new HpackEncoder();
    let buf = Buffer.alloc(0);
    let preface = false;
    sock.write(frame(4, 0, 0, Buffer.alloc(0)));
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!preface) {
        if (buf.length < 24) return;
        buf = buf.subarray(24);
        preface = true;
      }
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) return;
        const type = buf[3];
        const flags = buf[4];
        const sid = buf.readUInt32BE(5) & 0x7fffffff;
        buf = buf.subarray(9 + len);
        if (type === 4 && !(flags & 1)) sock.write(frame(4, 1, 0, Buffer.alloc(0)));
        if (type === 1) {
          if (dataFirst) sock.write(frame(0, 0, sid, Buffer.from('early')));
          enc.begin();
          for (const [k, v] of fields) enc.field(k, v);
          sock.write(frame(1, 0x4 | 0x1, sid, Buffer.from(enc.end())));
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    open: () => sockets.size,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

function frame(type: number, flags: number, sid: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(sid, 5);
  return Buffer.concat([h, payload]);
}

t.test('malformed upstream responses are protocol errors (502, UPE), and a good one passes', async (t) => {
  const bad = await rawH2Upstream([
    [':status', '200'],
    ['connection', 'close'],
  ]);
  const early = await rawH2Upstream(
    [
      [':status', '200'],
      ['x-raw', 'late'],
    ],
    true,
  );
  const good = await rawH2Upstream([
    [':status', '200'],
    ['x-raw', 'ok'],
  ]);
  const routes = `            - { name: a, domains: ["*"], routes: [{ match: { prefix: /bad }, route: { cluster: bad } }, { match: { prefix: /early }, route: { cluster: early } }, { match: { prefix: / }, route: { cluster: good } }] }`;
  const keel = await startKeel(bootstrap(routes, cluster('bad', bad.port, H2) + cluster('early', early.port, H2) + cluster('good', good.port, H2)));
  t.teardown(async () => {
    await keel.stop();
    await bad.close();
    await early.close();
    await good.close();
  });
  const r = await get(keel.port, '/bad');
  t.equal(r.status, 502, 'a connection-specific header in the response');
  t.match(r.body.toString(), /protocol error/);
  const e = await get(keel.port, '/early');
  t.equal(e.status, 502, 'DATA before the response headers');
  t.match(e.body.toString(), /protocol error/);
  const stats = collectEnvoyStats(keel.server);
  t.equal(stats.find((x) => x.name === 'cluster.bad.http2.rx_messaging_error')?.value, 1, 'counted on the cluster: cluster.bad.http2.rx_messaging_error');
  t.equal(stats.find((x) => x.name === 'cluster.early.http2.rx_messaging_error')?.value, 1);
  t.equal(stats.find((x) => x.name === 'cluster.bad.http2.tx_reset')?.value, 1, 'and the stream reset it sent');
  const ok = await get(keel.port, '/fine');
  t.equal(ok.status, 200, 'a response written with keel HPACK by a raw server is read back');
  t.equal(ok.headers['x-raw'], 'ok');
});

t.test("the cluster's idle_timeout closes an idle upstream HTTP/2 connection", async (t) => {
  const up = await h2Upstream((s) => s.respond({ ':status': 200 }, { endStream: true }));
  const idle = H2.replace(
    'explicit_http_config: { http2_protocol_options: {} }',
    'explicit_http_config: { http2_protocol_options: {} }\n        common_http_protocol_options: { idle_timeout: 0.2s }',
  );
  const keel = await startKeel(bootstrap(ROUTES, cluster('u', up.port, idle)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  t.equal((await get(keel.port, '/a')).status, 200);
  t.equal(up.sessions.size, 1);
  await waitUntil(() => up.sessions.size === 0, 'the idle upstream connection to close', 5000);
  t.equal((await get(keel.port, '/b')).status, 200, 'and a new one serves the next request');
});

t.test('HTTP/2 over TLS at both ends: large bodies, trailers and many streams through keel', async (t) => {
  // TLS reads arrive as 'data' chunks (TLS records), not through the shared read buffer: frames
  // split across records, partial frames kept between reads, both directions.
  const { crt, key } = await selfSignedCert();
  const server = http2.createSecureServer({ cert: readFileSync(crt), key: readFileSync(key) });
  const reused: boolean[] = [];
  const upSessions = new Set<http2.ServerHttp2Session>();
  server.on('secureConnection', (sock: import('node:tls').TLSSocket) => reused.push(sock.isSessionReused()));
  server.on('session', (sess) => {
    upSessions.add(sess);
    sess.on('close', () => upSessions.delete(sess));
  });
  server.on('stream', (s, h) => {
    s.on('error', () => undefined);
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => {
      const size = Number(String(h[':path']).split('/')[1]) || 0;
      s.respond({ ':status': 200, 'x-got': String(Buffer.concat(chunks).length) }, { waitForTrailers: true });
      s.on('wantTrailers', () => s.sendTrailers({ 'x-done': 'yes' }));
      s.end(Buffer.alloc(size, 'k'));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const upPort = (server.address() as net.AddressInfo).port;
  const yaml = bootstrap(ROUTES, cluster('u', upPort, H2 + upstreamTls(crt))).replace('    filter_chains:\n    - filters:', `    filter_chains:\n    - name: tls\n${downstreamTls(crt, key)}\n      filters:`);
  const keel = await startKeel(yaml);
  const client = http2.connect(`https://localhost:${keel.port}`, { ca: readFileSync(crt) });
  t.teardown(async () => {
    client.close();
    await keel.stop();
    await new Promise<void>((r) => server.close(() => r()));
  });
  const one = (i: number, up: number, down: number): Promise<{ status: number; got: string; len: number; trailer: string | undefined }> =>
    new Promise((resolve, reject) => {
      const req = client.request({ ':method': 'POST', ':path': `/${down}/${i}` });
      let status = 0;
      let got = '';
      let len = 0;
      let trailer: string | undefined;
      req.on('response', (h) => {
        status = Number(h[':status']);
        got = String(h['x-got']);
      });
      req.on('trailers', (h) => (trailer = String(h['x-done'])));
      req.on('data', (c: Buffer) => (len += c.length));
      req.on('end', () => resolve({ status, got, len, trailer }));
      req.on('error', reject);
      req.end(Buffer.alloc(up, 'u'));
    });
  const big = await one(0, 700_000, 1_500_000);
  t.same(big, { status: 200, got: '700000', len: 1_500_000, trailer: 'yes' }, 'large both ways, trailers through');
  // the upstream sends GOAWAY: keel's next connection to it resumes the TLS session
  for (const sess of upSessions) sess.close();
  await waitUntil(() => upSessions.size === 0, 'the first upstream connection to close', 5000);
  const many = await Promise.all(Array.from({ length: 40 }, (_, i) => one(i + 1, 1000 + i, 2000 + i)));
  t.ok(
    many.every((r, i) => r.status === 200 && r.got === String(1000 + i) && r.len === 2000 + i && r.trailer === 'yes'),
    '40 concurrent streams, each with its own body sizes and trailers',
  );
  t.same(reused.slice(0, 2), [false, true], 'the second upstream connection resumed the first one\'s TLS session');
});

t.test('connection_keepalive upstream: a server that never answers PING loses the connection; one that does keeps it', async (t) => {
  // the raw server never answers PINGs; node:http2 does
  const silent = await rawH2Upstream([[':status', '200']]);
  const answering = await h2Upstream((s) => s.respond({ ':status': 200 }, { endStream: true }));
  const ka = H2.replace('http2_protocol_options: {}', 'http2_protocol_options: { connection_keepalive: { interval: 0.05s, timeout: 0.2s } }');
  const routes = `            - { name: a, domains: ["*"], routes: [{ match: { prefix: /s }, route: { cluster: silent } }, { match: { prefix: / }, route: { cluster: answering } }] }`;
  const keel = await startKeel(bootstrap(routes, cluster('silent', silent.port, ka) + cluster('answering', answering.port, ka)));
  t.teardown(async () => {
    await keel.stop();
    await silent.close();
    await answering.close();
  });
  t.equal((await get(keel.port, '/s')).status, 200);
  t.equal((await get(keel.port, '/a')).status, 200);
  t.equal(silent.open(), 1);
  await waitUntil(() => silent.open() === 0, 'keel to drop the connection whose PINGs go unanswered', 5000);
  const stats = collectEnvoyStats(keel.server);
  t.equal(stats.find((x) => x.name === 'cluster.silent.http2.keepalive_timeout')?.value, 1, 'cluster.silent.http2.keepalive_timeout');
  t.equal(stats.find((x) => x.name === 'cluster.answering.http2.keepalive_timeout')?.value, 0);
  t.equal(answering.sessions.size, 1, 'the answering upstream keeps its connection');
});

t.test('use_downstream_protocol_config: HTTP/1.1 requests go up over HTTP/1.1, HTTP/2 ones over HTTP/2 (ALPN over TLS)', async (t) => {
  // Istio's clusters for ports whose protocol is sniffed: a gRPC client must reach its server over HTTP/2.
  const { crt, key } = await selfSignedCert();
  const server = http2.createSecureServer({ cert: readFileSync(crt), key: readFileSync(key), allowHTTP1: true });
  server.on('request', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    const alpn = (req.socket as unknown as import('node:tls').TLSSocket).alpnProtocol;
    res.end(`${req.httpVersion} ${String(alpn)}`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const upPort = (server.address() as net.AddressInfo).port;
  const keel = await startKeel(bootstrap(ROUTES, cluster('u', upPort, httpProtocolOptions('use_downstream_protocol_config: {}') + upstreamTls(crt))));
  const client = http2.connect(`http://127.0.0.1:${keel.port}`);
  t.teardown(async () => {
    client.close();
    await keel.stop();
    await new Promise<void>((r) => server.close(() => r()));
  });
  const h1 = await get(keel.port, '/one');
  t.equal(h1.status, 200);
  t.equal(h1.body.toString(), '1.1 http/1.1', 'an HTTP/1.1 request goes up over HTTP/1.1, ALPN http/1.1');
  t.equal(await h2Get(client, '/two'), '2.0 h2', 'an HTTP/2 request goes up over HTTP/2, ALPN h2');
  t.equal((await get(keel.port, '/three')).body.toString(), '1.1 http/1.1', 'and HTTP/1.1 again after it');
});
