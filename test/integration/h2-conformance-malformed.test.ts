// HTTP/2 wire conformance, part 2: malformed requests (RFC 9113 8.1.1, 8.2, 8.3) on keel's
// downstream h2c. Envoy's default (stream_error_on_invalid_http_message unset/false) ends the whole
// connection with GOAWAY PROTOCOL_ERROR; with the HCM's stream_error_on_invalid_http_message: true,
// or http2_protocol_options.override_stream_error_on_invalid_http_message: true (which takes
// precedence over the HCM field either way), only the stream is reset (RST_STREAM PROTOCOL_ERROR)
// and the connection goes on serving. Raw frames through test/helpers/h2-wire.ts.
import t, { type Test } from 'tap';
import {
  connectH2, dataFrame, describeFrame, DIRECT_BODY, encodeHeaders, ERR, FRAME, h2Options, headersFrame, requestBlock, serverPreface,
  startConformanceKeel, startConformanceUpstream, type H2Wire,
} from '../helpers/h2-wire';

t.jobs = 4;
t.setTimeout(240_000);

/** What a case sends on stream `id` (a fresh connection, past the preface). `key` names its held upstream request. */
type Send = (w: H2Wire, id: number, key: string) => void;

const AUTH = 'conformance.test';
const hdrs = (id: number, fields: (string | Buffer)[], endStream = true): Buffer => headersFrame(id, encodeHeaders(fields), { endStream });

const CASES: [string, Send][] = [
  ['an upper-case header name', (w, id) => w.send(headersFrame(id, requestBlock('/', ['X-Upper', 'v']), { endStream: true }))],
  ['a connection header', (w, id) => w.send(headersFrame(id, requestBlock('/', ['connection', 'keep-alive']), { endStream: true }))],
  ['a transfer-encoding header', (w, id) => w.send(headersFrame(id, requestBlock('/', ['transfer-encoding', 'chunked']), { endStream: true }))],
  ['a keep-alive header', (w, id) => w.send(headersFrame(id, requestBlock('/', ['keep-alive', 'timeout=5']), { endStream: true }))],
  ['an upgrade header', (w, id) => w.send(headersFrame(id, requestBlock('/', ['upgrade', 'h2c']), { endStream: true }))],
  ['a proxy-connection header', (w, id) => w.send(headersFrame(id, requestBlock('/', ['proxy-connection', 'keep-alive']), { endStream: true }))],
  ['te: gzip', (w, id) => w.send(headersFrame(id, requestBlock('/', ['te', 'gzip']), { endStream: true }))],
  ['no :method', (w, id) => w.send(hdrs(id, [':scheme', 'http', ':path', '/', ':authority', AUTH]))],
  ['no :path on a GET', (w, id) => w.send(hdrs(id, [':method', 'GET', ':scheme', 'http', ':authority', AUTH]))],
  ['no :scheme', (w, id) => w.send(hdrs(id, [':method', 'GET', ':path', '/', ':authority', AUTH]))],
  ['an empty :path', (w, id) => w.send(hdrs(id, [':method', 'GET', ':scheme', 'http', ':path', '', ':authority', AUTH]))],
  ['an unknown pseudo-header :foo', (w, id) => w.send(headersFrame(id, requestBlock('/', [':foo', 'bar']), { endStream: true }))],
  ['a pseudo-header after a regular header', (w, id) => w.send(hdrs(id, [':method', 'GET', ':scheme', 'http', 'x-regular', '1', ':path', '/', ':authority', AUTH]))],
  ['a duplicated :path', (w, id) => w.send(hdrs(id, [':method', 'GET', ':scheme', 'http', ':path', '/', ':path', '/', ':authority', AUTH]))],
  [':status in a request', (w, id) => w.send(headersFrame(id, requestBlock('/', [':status', '200']), { endStream: true }))],
  ['a header value with a NUL', (w, id) => w.send(headersFrame(id, requestBlock('/', ['x-nul', Buffer.from('a\0b', 'latin1')]), { endStream: true }))],
  [
    'trailers carrying a pseudo-header',
    (w, id, key) => w.send(headersFrame(id, requestBlock(`/up/hold/${key}`, [], 'POST')), dataFrame(id, 'body'), hdrs(id, [':path', '/trailer', 'x-trailer', '1'])),
  ],
  [
    'trailers without END_STREAM',
    (w, id, key) => w.send(headersFrame(id, requestBlock(`/up/hold/${key}`, [], 'POST')), dataFrame(id, 'body'), hdrs(id, ['x-trailer', '1'], false)),
  ],
  [
    'content-length: 10 with 5 bytes of DATA',
    (w, id, key) => w.send(headersFrame(id, requestBlock(`/up/hold/${key}`, ['content-length', '10'], 'POST')), dataFrame(id, '12345', { endStream: true })),
  ],
  [
    'content-length: 2 with 5 bytes of DATA',
    (w, id, key) => w.send(headersFrame(id, requestBlock(`/up/hold/${key}`, ['content-length', '2'], 'POST')), dataFrame(id, '12345', { endStream: true })),
  ],
];

async function main(): Promise<void> {
  const up = await startConformanceUpstream();
  t.teardown(() => up.close());
  const HCM_STREAM = '          stream_error_on_invalid_http_message: true\n';
  const configs: { name: string; extra: string; streamError: boolean }[] = [
    { name: 'default', extra: '', streamError: false },
    { name: 'HCM stream_error_on_invalid_http_message: true', extra: HCM_STREAM, streamError: true },
    { name: 'override_stream_error_on_invalid_http_message: true', extra: h2Options({ override_stream_error_on_invalid_http_message: true }), streamError: true },
    {
      name: 'override false beats HCM true',
      extra: HCM_STREAM + h2Options({ override_stream_error_on_invalid_http_message: false }),
      streamError: false,
    },
  ];
  let keyN = 0;
  // every keel is up before the first test is queued (tap ends a root whose queue runs dry)
  const keels = [];
  for (const cfg of configs) keels.push((await startConformanceKeel(t, cfg.extra, up)).keel);
  for (const [i, cfg] of configs.entries()) {
    const keel = keels[i];
    const open = async (tt: Test): Promise<H2Wire> => {
      const w = await connectH2(keel.port, tt);
      await serverPreface(w);
      return w;
    };
    const works = async (tt: Test, w: H2Wire, id: number, extra: string[] = []): Promise<void> => {
      w.send(headersFrame(id, requestBlock('/', extra), { endStream: true }));
      const res = await w.response(id);
      tt.equal(res.status, '200', `stream ${id} answered 200`);
      tt.equal(res.body.toString(), DIRECT_BODY);
    };

    t.test(`[${cfg.name}] te: trailers is fine`, async (tt) => {
      const w = await open(tt);
      await works(tt, w, 1, ['te', 'trailers']);
    });

    for (const [name, send] of CASES) {
      const expect = cfg.streamError ? 'RST_STREAM PROTOCOL_ERROR, then the connection serves on' : 'GOAWAY PROTOCOL_ERROR';
      t.test(`[${cfg.name}] ${name} -> ${expect}`, async (tt) => {
        const w = await open(tt);
        send(w, 1, `malformed-${++keyN}`);
        if (cfg.streamError) {
          await w.expectRst(1, ERR.PROTOCOL_ERROR);
          await works(tt, w, 3);
        } else {
          await w.expectGoaway(ERR.PROTOCOL_ERROR);
          const served = w.frames.filter((f) => f.type === FRAME.HEADERS && f.streamId === 1);
          tt.same(served.map(describeFrame), [], 'no response on the malformed stream');
        }
      });
    }
  }
}
void main();
