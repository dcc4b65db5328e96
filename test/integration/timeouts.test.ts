// The connection manager's own timeouts: stream_idle_timeout (408 SI), request_timeout (408 when
// the request body never completes) and max_stream_duration (408 DT).
import t from 'tap';
import { request } from 'undici';
import { bootstrap, cluster, rawExchange, startKeel, startUpstream } from '../helpers/keel';

const routes = `            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u, timeout: 0s } }] }`;

t.test('stream_idle_timeout: an upstream that never answers gets 408 stream timeout', async (t) => {
  const up = await startUpstream('silent', () => undefined);
  const keel = await startKeel(bootstrap(routes, cluster('u', up.port), '          stream_idle_timeout: 1s'));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/idle`);
  t.equal(r.statusCode, 408);
  t.equal(await r.body.text(), 'stream timeout');
});

t.test('request_timeout: a request body that never completes gets 408', async (t) => {
  const up = await startUpstream('u');
  const keel = await startKeel(bootstrap(routes, cluster('u', up.port), '          request_timeout: 0.3s'));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const text = await rawExchange(keel.port, 'POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc', (s) => s.includes('\r\n\r\n'));
  t.match(text, /^HTTP\/1\.1 408 /);
  t.match(text, /connection: close/);
});

t.test('max_stream_duration: a stream that lives too long gets 408 downstream duration timeout', async (t) => {
  const up = await startUpstream('silent', () => undefined);
  const keel = await startKeel(bootstrap(routes, cluster('u', up.port), '          common_http_protocol_options: { max_stream_duration: 0.3s }'));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/long`);
  t.equal(r.statusCode, 408);
  t.equal(await r.body.text(), 'downstream duration timeout');
});
