// The connection manager's normalize_path and merge_slashes (Istio sets normalize_path on every
// sidecar): routing and the upstream see the normalized :path, so a dot segment, an escaped dot or
// a doubled slash cannot walk a request around a route or rule on /admin. Requests go out raw
// (rawExchange), so the client changes nothing.
import t, { type Test } from 'tap';
import * as http from 'node:http';
import * as net from 'node:net';
import { bootstrap, cluster, rawExchange, startKeel } from '../helpers/keel';

const ROUTES = `            - name: a
              domains: ["*"]
              routes:
              - { match: { prefix: /admin }, direct_response: { status: 403, body: { inline_string: admin-is-closed } } }
              - { match: { prefix: / }, route: { cluster: u } }`;

async function setup(t: Test, hcmExtra: string): Promise<number> {
  const up = http.createServer((req, res) => res.end(`path=${req.url}`));
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  const keel = await startKeel(bootstrap(ROUTES, cluster('u', (up.address() as net.AddressInfo).port), hcmExtra));
  t.teardown(async () => {
    await keel.stop();
    await new Promise<void>((r) => up.close(() => r()));
  });
  return keel.port;
}

function get(port: number, path: string): Promise<string> {
  return rawExchange(port, `GET ${path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n`);
}

t.test('normalize_path: the route and the upstream see the normalized path', async (t) => {
  const port = await setup(t, '          normalize_path: true\n');
  for (const p of ['/public/../admin', '/public/%2e%2e/admin', '/public/.%2E/admin/x', '/public\\..\\admin']) {
    const r = await get(port, p);
    t.match(r, /^HTTP\/1\.1 403/, `${p} is routed as /admin`);
    t.match(r, /admin-is-closed/);
  }
  const ok = await get(port, '/a/./b/../c%7e?q=/../x');
  t.match(ok, /^HTTP\/1\.1 200/);
  t.match(ok, /path=\/a\/c~\?q=\/\.\.\/x/, 'the upstream gets the normalized path and the query as sent');
  t.match(await get(port, '//admin'), /^HTTP\/1\.1 200/, 'without merge_slashes //admin is another path');
});

t.test('merge_slashes with normalize_path', async (t) => {
  const port = await setup(t, '          normalize_path: true\n          merge_slashes: true\n');
  t.match(await get(port, '//admin'), /^HTTP\/1\.1 403/);
  // Envoy's order: dot segments first (".." takes back the empty segment), then slashes merged
  t.match(await get(port, '/x//..//admin'), /path=\/x\/admin/);
  t.match(await get(port, '/x/..//admin'), /^HTTP\/1\.1 403/);
  t.match(await get(port, '/a//b'), /path=\/a\/b/);
});

t.test('without normalize_path the path goes through as sent', async (t) => {
  const port = await setup(t, '');
  t.match(await get(port, '/public/../admin'), /path=\/public\/\.\.\/admin/);
});
