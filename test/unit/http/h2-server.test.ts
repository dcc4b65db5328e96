// The header conversions of the downstream HTTP/2 path: node's request block -> HeaderMap (pseudo-
// headers first, cookie crumbs joined, host standing in for :authority) and HeaderMap -> the
// response header object (no connection-specific fields, repeated fields as arrays).
import t from 'tap';
import type * as http2 from 'node:http2';
import { requestHeaders, responseHeaders } from '../../../src/http/h2-server';
import { HeaderMap } from '../../../src/http/headers';

/** node's header object for a flat block, as node builds it (enough for these cases) */
function objectOf(block: string[]): http2.IncomingHttpHeaders {
  const o: Record<string, string> = {};
  for (let i = 0; i < block.length; i += 2) o[block[i]] = o[block[i]] === undefined ? block[i + 1] : `${o[block[i]]}, ${block[i + 1]}`;
  return o;
}

t.test('request block: pseudo-headers first, cookies joined, repeats kept, host dropped', async (t) => {
  const block = [':scheme', 'http', ':method', 'POST', ':authority', 'a.example', ':path', '/p', 'cookie', 'a=1', 'x-r', '1', 'host', 'ignored', 'cookie', 'b=2', 'x-r', '2', 'cookie', 'c=3'];
  const m = requestHeaders(objectOf(block), block, false);
  t.same(m.raw, [':method', 'POST', ':path', '/p', ':authority', 'a.example', ':scheme', 'http', 'cookie', 'a=1; b=2; c=3', 'x-r', '1', 'x-r', '2']);
});

t.test('request block: host stands in for a missing :authority; :scheme defaults by transport', async (t) => {
  const block = [':method', 'GET', ':path', '/', 'host', 'h.example:81'];
  t.same(requestHeaders(objectOf(block), block, true).raw, [':method', 'GET', ':path', '/', ':authority', 'h.example:81', ':scheme', 'https']);
  t.same(requestHeaders(objectOf(block), block, false).raw.slice(6, 8), [':scheme', 'http']);
});

t.test('request without the flat block (older node): the header object is used', async (t) => {
  const h = { ':method': 'GET', ':path': '/x', ':authority': 'a', ':scheme': 'http', 'set-thing': ['1', '2'], host: 'a', cookie: 'k=v' } as unknown as http2.IncomingHttpHeaders;
  t.same(requestHeaders(h, undefined, false).raw, [':method', 'GET', ':path', '/x', ':authority', 'a', ':scheme', 'http', 'set-thing', '1', 'set-thing', '2', 'cookie', 'k=v']);
});

t.test('response headers: :status, no connection-specific fields, repeated ones as arrays', async (t) => {
  const m = new HeaderMap([
    ':status', '599',
    'content-type', 'text/plain',
    'connection', 'keep-alive',
    'keep-alive', 'timeout=5',
    'transfer-encoding', 'chunked',
    'upgrade', 'h2c',
    'proxy-connection', 'x',
    'host', 'h',
    'te', 'gzip',
    'set-cookie', 'a=1',
    'set-cookie', 'b=2',
    'set-cookie', 'c=3',
    'x-upgrade-ish', 'kept',
  ]);
  t.same({ ...responseHeaders(201, m) }, { ':status': 201, 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2', 'c=3'], 'x-upgrade-ish': 'kept' });
  t.same({ ...responseHeaders(200, new HeaderMap(['te', 'Trailers'])) }, { ':status': 200, te: 'Trailers' }, 'te: trailers is the one te allowed');
});
