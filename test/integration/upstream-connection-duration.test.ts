// A cluster's common_http_protocol_options.max_connection_duration (DestinationRule
// connectionPool.tcp.maxConnectionDuration): an upstream connection takes no new requests once it
// is that old and closes when its last one ends; the next request gets a new connection. HTTP/1.1
// and HTTP/2 pools; the upstreams report which connection served each request.
import t from 'tap';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { bootstrap, cluster, getText, h2Get, httpProtocolOptions, startKeel } from '../helpers/keel';
import { waitUntil } from '../helpers/wait';

const ROUTES = `            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u } }] }`;
const duration = (protocol: string): string =>
  httpProtocolOptions(`${protocol}\n        common_http_protocol_options: { max_connection_duration: 1s, idle_timeout: 3600s }`);

t.test('HTTP/1.1: a connection past max_connection_duration is replaced', async (t) => {
  const closed = new Set<string>();
  const up = http.createServer((req, res) => res.end(String(req.socket.remotePort)));
  up.on('connection', (s: net.Socket) => {
    const id = String(s.remotePort);
    s.on('close', () => closed.add(id));
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  const keel = await startKeel(bootstrap(ROUTES, cluster('u', (up.address() as net.AddressInfo).port, duration('explicit_http_config: { http_protocol_options: {} }'))));
  t.teardown(async () => {
    await keel.stop();
    await new Promise<void>((r) => up.close(() => r()));
  });
  const first = await getText(keel.port);
  t.equal(await getText(keel.port), first, 'reused while young');
  await waitUntil(async () => (await getText(keel.port)) !== first, 'a request on a new connection once the first is 1 s old');
  await waitUntil(() => closed.has(first), 'the old connection closed');
  t.pass('replaced');
});

t.test('HTTP/2: a connection past max_connection_duration drains and the pool opens another', async (t) => {
  const sessions: http2.ServerHttp2Session[] = [];
  const up = http2.createServer();
  up.on('session', (s) => sessions.push(s));
  up.on('stream', (s) => {
    s.respond({ ':status': 200 });
    s.end(String(sessions.indexOf(s.session!)));
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  const keel = await startKeel(bootstrap(ROUTES, cluster('u', (up.address() as net.AddressInfo).port, duration('explicit_http_config: { http2_protocol_options: {} }'))));
  const client = http2.connect(`http://127.0.0.1:${keel.port}`);
  t.teardown(async () => {
    client.close();
    await keel.stop();
    for (const s of sessions) s.destroy();
    await new Promise<void>((r) => up.close(() => r()));
  });
  t.equal(await h2Get(client, '/'), '0');
  t.equal(await h2Get(client, '/'), '0', 'one upstream connection while young');
  await waitUntil(async () => (await h2Get(client, '/')) !== '0', 'a stream on a second upstream connection once the first is 1 s old');
  await waitUntil(() => sessions[0].closed || sessions[0].destroyed, 'the first upstream connection closed');
  t.pass('replaced');
});
