// istio.alpn: the ALPN list keel's upstream TLS connections offer follows the protocol each request
// goes upstream with (istio-http/1.1, istio-h2, ...), so that a peer sidecar's inbound filter chains
// can tell mTLS HTTP from mTLS TCP. The upstream is a TLS server that records the offered list and
// answers with the protocol it chose; connections with different lists are never shared.
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { parseBootstrapText } from '../../src/config/bootstrap';
import { bootstrap, cluster, h2Get, httpProtocolOptions, selfSignedCert, startKeel, upstreamTls, type RunningKeel } from '../helpers/keel';

interface Offer {
  offered: string[];
  chosen: string;
}

/** TLS that picks istio-h2 or h2 for HTTP/2, else http/1.1, else (like an Istio inbound) the offer's first other than istio-peer-exchange; serves HTTP/2 or HTTP/1.1 accordingly. */
async function recordingUpstream(crt: string, key: string): Promise<{ port: number; offers: Offer[]; close: () => Promise<void> }> {
  const offers: Offer[] = [];
  const h1 = http.createServer((req, res) => res.end(`h1 ${(req.socket as tls.TLSSocket).alpnProtocol}`));
  const h2 = http2.createServer();
  h2.on('stream', (s) => {
    s.respond({ ':status': 200 });
    s.end(`h2 ${(s.session?.socket as tls.TLSSocket).alpnProtocol}`);
  });
  const sockets = new Set<net.Socket>();
  const server = tls.createServer({
    cert: readFileSync(crt),
    key: readFileSync(key),
    ALPNCallback: ({ protocols }) => {
      const chosen = ['istio-h2', 'h2', 'http/1.1'].find((p) => protocols.includes(p)) ?? protocols.find((p) => p !== 'istio-peer-exchange') ?? protocols[0];
      offers.push({ offered: protocols, chosen });
      return chosen;
    },
  });
  server.on('secureConnection', (s: tls.TLSSocket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    if (s.alpnProtocol === 'istio-h2' || s.alpnProtocol === 'h2') h2.emit('connection', s);
    else h1.emit('connection', s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    offers,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const ALPN_FILTER = `
          - name: istio.alpn
            typed_config:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig
              value:
                alpn_override:
                - { upstream_protocol: HTTP10, alpn_override: [istio-http/1.0, istio, http/1.0] }
                - { upstream_protocol: HTTP11, alpn_override: [istio-http/1.1, istio, http/1.1] }
                - { upstream_protocol: HTTP2, alpn_override: [istio-h2, istio, h2] }`;

function withAlpnFilter(yaml: string): string {
  return yaml.replace('          http_filters:\n', `          http_filters:${ALPN_FILTER}\n`);
}

/** The cluster under test: per-request protocol, TLS with Istio's in-mesh ALPN list. */
const MESH_CLUSTER_TLS = (crt: string): string => httpProtocolOptions('use_downstream_protocol_config: {}') + upstreamTls(crt, ['istio-peer-exchange', 'istio']);

const ROUTES = `            - name: a
              domains: ["*"]
              routes:
              - { match: { prefix: /plain/ }, route: { cluster: p } }
              - { match: { prefix: / }, route: { cluster: u } }`;

/** keel in front of a recording upstream (cluster u) and `plainPort` (cluster p); all closed in teardown. */
async function setup(t: Test, alpnFilter: boolean, plainPort = 1): Promise<{ keel: RunningKeel; up: Awaited<ReturnType<typeof recordingUpstream>>; client: http2.ClientHttp2Session }> {
  const { crt, key } = await selfSignedCert();
  const up = await recordingUpstream(crt, key);
  const yaml = bootstrap(ROUTES, cluster('u', up.port, MESH_CLUSTER_TLS(crt)) + cluster('p', plainPort));
  const keel = await startKeel(alpnFilter ? withAlpnFilter(yaml) : yaml);
  const client = http2.connect(`http://127.0.0.1:${keel.port}`);
  t.teardown(async () => {
    client.close();
    await keel.stop();
    await up.close();
  });
  return { keel, up, client };
}

t.test('istio.alpn: the offered ALPN follows each request\'s upstream protocol', async (t) => {
  const plain = http.createServer((_req, res) => res.end('plain'));
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => plain.close(() => r())));
  const { keel, up, client } = await setup(t, true, (plain.address() as net.AddressInfo).port);

  const a = await get(keel.port, '/one');
  t.equal(a.status, 200);
  t.equal(a.body, 'h1 http/1.1');
  t.same(up.offers.at(-1)?.offered, ['istio-http/1.1', 'istio', 'http/1.1'], 'HTTP/1.1 upstream: istio-http/1.1 first, not the cluster\'s list');

  t.equal(await h2Get(client, '/two'), 'h2 istio-h2', 'HTTP/2 upstream over a connection where the server chose istio-h2');
  t.same(up.offers.at(-1)?.offered, ['istio-h2', 'istio', 'h2']);
  const connections = up.offers.length;

  // more requests of both kinds reuse their own connections
  t.equal((await get(keel.port, '/three')).body, 'h1 http/1.1');
  t.equal(await h2Get(client, '/four'), 'h2 istio-h2');
  t.equal(up.offers.length, connections, 'no new connection: each protocol kept its pool');

  // a plaintext cluster behind the same connection manager is untouched
  t.equal((await get(keel.port, '/plain/x')).body, 'plain');
});

t.test('without istio.alpn the cluster\'s alpn_protocols are offered; HTTP/2 clusters offer h2', async (t) => {
  const { keel, up, client } = await setup(t, false);
  t.equal((await get(keel.port, '/one')).body, 'h1 istio');
  t.same(up.offers.at(-1)?.offered, ['istio-peer-exchange', 'istio']);
  t.equal(await h2Get(client, '/two'), 'h2 h2');
  t.same(up.offers.at(-1)?.offered, ['h2']);
});

t.test('istio.alpn config is checked', async (t) => {
  const bad = withAlpnFilter(bootstrap(ROUTES, cluster('u', 1) + cluster('p', 1))).replace('[istio-h2, istio, h2]', '[istio-h2, ""]').replace('upstream_protocol: HTTP10', 'upstream_protocol: HTTP11');
  let err: Error | undefined;
  try {
    parseBootstrapText(bad, 'test');
  } catch (e) {
    err = e as Error;
  }
  t.match(err?.message, /alpn_override.*1 to 255 bytes/s, 'an empty protocol name');
  t.match(err?.message, /HTTP11 is overridden twice/, 'the same protocol twice');
});
