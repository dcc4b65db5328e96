// HTTP/2 and gRPC through keel: curl with h2c prior knowledge and h2 over TLS (ALPN), and
// @grpc/grpc-js clients and servers for unary and streaming calls, trailers, and errors.
import t from 'tap';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { bootstrap, cluster, deadPort, downstreamTls, mixedListenerYaml, selfSignedCert, startKeel, startUpstream } from '../helpers/keel';

const exec = promisify(execFile);
const H2_OPTS = `
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }`;

const def = protoLoader.loadSync(path.join(__dirname, '../fixtures/echo.proto'), { keepCase: true });
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const pkg = grpc.loadPackageDefinition(def).keeltest as any;

interface Msg {
  text: string;
  seq: number;
}

async function startGrpc(): Promise<{ port: number; server: grpc.Server }> {
  const server = new grpc.Server();
  server.addService(pkg.Echo.service, {
    Unary: (call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) => {
      if (call.request.text === 'fail') {
        cb({ code: grpc.status.PERMISSION_DENIED, details: 'no you do not' });
        return;
      }
      const md = new grpc.Metadata();
      md.set('x-trailer-echo', call.metadata.get('x-in')[0]?.toString() ?? 'none');
      cb(null, { text: `echo:${call.request.text}`, seq: call.request.seq + 1 }, md);
    },
    ServerStream: (call: grpc.ServerWritableStream<Msg, Msg>) => {
      for (let i = 0; i < call.request.seq; i++) call.write({ text: call.request.text, seq: i });
      call.end();
    },
    ClientStream: (call: grpc.ServerReadableStream<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) => {
      let n = 0;
      let text = '';
      call.on('data', (m: Msg) => {
        n++;
        text += m.text;
      });
      call.on('end', () => cb(null, { text, seq: n }));
    },
    Bidi: (call: grpc.ServerDuplexStream<Msg, Msg>) => {
      call.on('data', (m: Msg) => call.write({ text: m.text.toUpperCase(), seq: m.seq }));
      call.on('end', () => call.end());
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return { port, server };
}

t.test('gRPC unary, server, client and bidi streaming through keel', async (t) => {
  const g = await startGrpc();
  const keel = await startKeel(
    bootstrap(
      `            - name: grpc
              domains: ["*"]
              routes:
              - { match: { prefix: /keeltest.Echo/, grpc: {} }, route: { cluster: grpc } }`,
      cluster('grpc', g.port, H2_OPTS),
    ),
  );
  const client = new pkg.Echo(`127.0.0.1:${keel.port}`, grpc.credentials.createInsecure());
  t.teardown(async () => {
    client.close();
    await keel.stop();
    g.server.forceShutdown();
  });

  const unary = (text: string, md = new grpc.Metadata()) =>
    new Promise<{ err: grpc.ServiceError | null; res?: Msg; trailers?: grpc.Metadata }>((resolve) => {
      let trailers: grpc.Metadata | undefined;
      const call = client.Unary({ text, seq: 1 }, md, (err: grpc.ServiceError | null, res: Msg) => setImmediate(() => resolve({ err, res, trailers })));
      call.on('status', (s: grpc.StatusObject) => (trailers = s.metadata));
    });
  const md = new grpc.Metadata();
  md.set('x-in', 'hello-md');
  const ok = await unary('hi', md);
  t.equal(ok.err, null);
  t.same(ok.res, { text: 'echo:hi', seq: 2 });
  t.equal(ok.trailers?.get('x-trailer-echo')[0], 'hello-md', 'trailers cross keel');

  const bad = await unary('fail');
  t.equal(bad.err?.code, grpc.status.PERMISSION_DENIED);
  t.equal(bad.err?.details, 'no you do not');

  const streamed = await new Promise<Msg[]>((resolve, reject) => {
    const out: Msg[] = [];
    const call = client.ServerStream({ text: 's', seq: 50 });
    call.on('data', (m: Msg) => out.push(m));
    call.on('end', () => resolve(out));
    call.on('error', reject);
  });
  t.equal(streamed.length, 50);
  t.equal(streamed[49].seq, 49);

  const cs = await new Promise<Msg>((resolve, reject) => {
    const call = client.ClientStream((e: Error | null, r: Msg) => (e ? reject(e) : resolve(r)));
    for (let i = 0; i < 20; i++) call.write({ text: 'x', seq: i });
    call.end();
  });
  t.same(cs, { text: 'x'.repeat(20), seq: 20 });

  const bidi = await new Promise<string[]>((resolve, reject) => {
    const call = client.Bidi();
    const got: string[] = [];
    call.on('data', (m: Msg) => {
      got.push(m.text);
      if (got.length < 5) call.write({ text: `m${got.length}`, seq: got.length });
      else call.end();
    });
    call.on('end', () => resolve(got));
    call.on('error', reject);
    call.write({ text: 'm0', seq: 0 });
  });
  t.same(bidi, ['M0', 'M1', 'M2', 'M3', 'M4'], 'each message answered before the next is sent');
});

t.test('gRPC errors from keel itself carry grpc-status', async (t) => {
  const dead = await deadPort();
  const keel = await startKeel(
    bootstrap(
      `            - name: grpc
              domains: ["*"]
              routes:
              - { match: { prefix: /keeltest.Echo/Unary }, route: { cluster: dead } }`,
      cluster('dead', dead, H2_OPTS),
    ),
  );
  const client = new pkg.Echo(`127.0.0.1:${keel.port}`, grpc.credentials.createInsecure());
  t.teardown(async () => {
    client.close();
    await keel.stop();
  });
  const err = await new Promise<grpc.ServiceError>((resolve) => client.Unary({ text: 'a', seq: 0 }, (e: grpc.ServiceError) => resolve(e)));
  t.equal(err.code, grpc.status.UNAVAILABLE, 'upstream connect failure -> UNAVAILABLE');
  t.match(err.details, /upstream connect error/);
  const nr = await new Promise<grpc.ServiceError>((resolve) => client.ServerStream({ text: 'a', seq: 1 }).on('error', (e: grpc.ServiceError) => resolve(e)));
  t.equal(nr.code, grpc.status.UNIMPLEMENTED, 'no route -> 404 -> UNIMPLEMENTED');
});

t.test('curl: HTTP/1.1, h2c prior knowledge, and h2 over TLS with ALPN', async (t) => {
  const up = await startUpstream('u');
  const { crt, key } = await selfSignedCert();
  const routes = `            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u } }] }`;
  const plain = await startKeel(bootstrap(routes, cluster('u', up.port)));
  const tlsYaml = bootstrap(routes, cluster('u', up.port)).replace('    filter_chains:\n    - filters:', `    filter_chains:\n    - name: tls\n${downstreamTls(crt, key)}\n      filters:`);
  const secure = await startKeel(tlsYaml);
  t.teardown(async () => {
    await plain.stop();
    await secure.stop();
    await up.close();
  });
  const curl = async (...args: string[]) => (await exec('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', ...args])).stdout;
  t.equal(await curl(`http://127.0.0.1:${plain.port}/a`), '1.1 200');
  t.equal(await curl('--http2-prior-knowledge', `http://127.0.0.1:${plain.port}/b`), '2 200');
  t.equal(await curl('-k', '--http2', `https://localhost:${secure.port}/c`), '2 200');
  t.equal(await curl('-k', '--http1.1', `https://localhost:${secure.port}/d`), '1.1 200');
  t.same(
    up.requests.map((r) => [r.url, r.headers['x-forwarded-proto']]),
    [
      ['/a', 'http'],
      ['/b', 'http'],
      ['/c', 'https'],
      ['/d', 'https'],
    ],
  );
});

t.test('one listener, TLS and plaintext chains: h1, h2c and h2 over TLS on the same port', async (t) => {
  const up = await startUpstream('u');
  const { crt, key } = await selfSignedCert();
  const keel = await startKeel(mixedListenerYaml(up.port, crt, key));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const curl = async (...args: string[]) => (await exec('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', ...args])).stdout;
  t.equal(await curl(`http://127.0.0.1:${keel.port}/plain`), '1.1 200');
  t.equal(await curl('--http2-prior-knowledge', `http://127.0.0.1:${keel.port}/h2c`), '2 200');
  t.equal(await curl('-k', '--http2', `https://localhost:${keel.port}/tls`), '2 200');
  t.same(
    up.requests.map((r) => [r.url, r.headers['x-forwarded-proto']]),
    [
      ['/plain', 'http'],
      ['/h2c', 'http'],
      ['/tls', 'https'],
    ],
  );
});
