// The HTTP/1 parser never throws on input: seeded random mutations of valid requests and
// responses, split at random points, must end in events or a parse error, nothing else.
import t from 'tap';
import { H1Handler, H1Parser } from '../../../src/http/h1-codec';

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

const SEEDS = [
  'GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n',
  'POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello',
  'POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: v\r\n\r\n',
  'GET / HTTP/1.0\r\n\r\nGET /2 HTTP/1.1\r\nHost: y\r\nConnection: close\r\n\r\n',
];
const RESPONSES = ['HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc', 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n', 'HTTP/1.0 200 OK\r\n\r\nuntil close'];
const INTERESTING = [0, 9, 10, 13, 32, 58, 59, 127, 128, 255, 0x30, 0x46];

function mutate(src: Buffer, r: () => number): Buffer {
  const b = Buffer.from(src);
  const n = 1 + Math.floor(r() * 4);
  let out = b;
  for (let i = 0; i < n; i++) {
    const op = Math.floor(r() * 4);
    const at = Math.floor(r() * out.length);
    if (op === 0) out[at] = INTERESTING[Math.floor(r() * INTERESTING.length)];
    else if (op === 1) out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1)]);
    else if (op === 2) out = Buffer.concat([out.subarray(0, at), Buffer.from([Math.floor(r() * 256)]), out.subarray(at)]);
    else out = Buffer.concat([out.subarray(0, at), out.subarray(at, Math.min(out.length, at + 8)), out.subarray(at)]);
  }
  return out;
}

for (const isResponse of [false, true]) {
  t.test(`${isResponse ? 'responses' : 'requests'}: 20,000 mutated messages, none throws`, async (t) => {
    const r = rng(isResponse ? 7 : 42);
    const sources = (isResponse ? RESPONSES : SEEDS).map((s) => Buffer.from(s, 'latin1'));
    let errors = 0;
    let heads = 0;
    for (let i = 0; i < 20000; i++) {
      const msg = mutate(sources[i % sources.length], r);
      const handler: H1Handler = {
        onHead: () => void heads++,
        onBody: () => undefined,
        onTrailers: () => undefined,
        onMessageComplete: () => {
          if (!isResponse) parser.resume();
        },
        onParseError: () => void errors++,
      };
      const parser = new H1Parser(handler, { isResponse, maxHeaderBytes: 4096, maxHeaders: 50 });
      const cut = Math.floor(r() * msg.length);
      parser.execute(msg.subarray(0, cut));
      parser.execute(msg.subarray(cut));
      parser.finish();
    }
    t.ok(errors > 100, `mutations produced parse errors (${errors})`);
    t.ok(heads > 1000, `and valid heads (${heads})`);
  });
}
