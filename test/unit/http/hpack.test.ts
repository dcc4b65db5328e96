// HPACK (src/http/hpack.ts): RFC 7541 Appendix C examples (fields and dynamic table after each block),
// every decoding error, field validation (`invalid`), encoder -> decoder round trips with table size
// changes, the header list size limit, and blocks captured from a real client (node:http2, nghttp2's
// encoder: dynamic table and Huffman).
import t, { type Test } from 'tap';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { HpackDecoder, HpackEncoder, HpackError, huffmanEncode } from '../../../src/http/hpack';

function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

function decodeAll(d: HpackDecoder, block: Uint8Array, maxListSize = 1 << 20): { fields: string[]; size: number } {
  const fields: string[] = [];
  const size = d.decode(block, 0, block.length, fields, maxListSize);
  return { fields, size };
}

function pairs(flat: string[]): [string, string][] {
  const r: [string, string][] = [];
  for (let i = 0; i < flat.length; i += 2) r.push([flat[i], flat[i + 1]]);
  return r;
}

function listSize(flat: string[]): number {
  let s = 0;
  for (let i = 0; i < flat.length; i += 2) s += flat[i].length + flat[i + 1].length + 32;
  return s;
}

/** A literal without indexing, new name, raw strings. */
function literal(name: string, value: string, prefix = 0x00): Buffer {
  const n = Buffer.from(name, 'latin1');
  const v = Buffer.from(value, 'latin1');
  if (n.length > 126 || v.length > 126) throw new Error('test helper: short strings only');
  return Buffer.concat([Buffer.from([prefix, n.length]), n, Buffer.from([v.length]), v]);
}

t.test('C.2: single field representations', async (t) => {
  let d = new HpackDecoder();
  let r = decodeAll(d, hex('400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572'));
  t.same(pairs(r.fields), [['custom-key', 'custom-header']], 'C.2.1 literal with indexing');
  t.same(d.tableEntries(), [['custom-key', 'custom-header']]);
  t.equal(d.tableSize, 55);
  t.equal(r.size, 55);

  d = new HpackDecoder();
  r = decodeAll(d, hex('040c 2f73 616d 706c 652f 7061 7468'));
  t.same(pairs(r.fields), [[':path', '/sample/path']], 'C.2.2 literal without indexing');
  t.same(d.tableEntries(), []);
  t.equal(d.tableSize, 0);

  d = new HpackDecoder();
  r = decodeAll(d, hex('1008 7061 7373 776f 7264 0673 6563 7265 74'));
  t.same(pairs(r.fields), [['password', 'secret']], 'C.2.3 never indexed');
  t.same(d.tableEntries(), []);

  d = new HpackDecoder();
  r = decodeAll(d, hex('82'));
  t.same(pairs(r.fields), [[':method', 'GET']], 'C.2.4 indexed');
  t.same(d.tableEntries(), []);
  t.equal(d.invalid, undefined);
});

const C3_HEADERS: [string, string][][] = [
  [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com']],
  [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com'], ['cache-control', 'no-cache']],
  [[':method', 'GET'], [':scheme', 'https'], [':path', '/index.html'], [':authority', 'www.example.com'], ['custom-key', 'custom-value']],
];
const C3_TABLES: [string, string][][] = [
  [[':authority', 'www.example.com']],
  [['cache-control', 'no-cache'], [':authority', 'www.example.com']],
  [['custom-key', 'custom-value'], ['cache-control', 'no-cache'], [':authority', 'www.example.com']],
];
const C3_SIZES = [57, 110, 164];

function requestSequence(t: Test, blocks: string[]) {
  const d = new HpackDecoder();
  blocks.forEach((b, i) => {
    const r = decodeAll(d, hex(b));
    t.same(pairs(r.fields), C3_HEADERS[i], `request ${i + 1}: fields`);
    t.same(d.tableEntries(), C3_TABLES[i], `request ${i + 1}: dynamic table`);
    t.equal(d.tableSize, C3_SIZES[i], `request ${i + 1}: table size`);
    t.equal(r.size, listSize(r.fields));
    t.equal(d.invalid, undefined);
  });
}

t.test('C.3: requests without Huffman', async (t) => {
  requestSequence(t, [
    '8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d',
    '8286 84be 5808 6e6f 2d63 6163 6865',
    '8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65',
  ]);
});

t.test('C.4: requests with Huffman', async (t) => {
  requestSequence(t, [
    '8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff',
    '8286 84be 5886 a8eb 1064 9cbf',
    '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf',
  ]);
  // our test-only Huffman encoder produces the RFC's bytes
  t.same(huffmanEncode('www.example.com'), hex('f1e3 c2e5 f23a 6ba0 ab90 f4ff'));
  t.same(huffmanEncode('no-cache'), hex('a8eb 1064 9cbf'));
  t.same(huffmanEncode('custom-value'), hex('25a8 49e9 5bb8 e8b4 bf'));
});

const C5_HEADERS: [string, string][][] = [
  [[':status', '302'], ['cache-control', 'private'], ['date', 'Mon, 21 Oct 2013 20:13:21 GMT'], ['location', 'https://www.example.com']],
  [[':status', '307'], ['cache-control', 'private'], ['date', 'Mon, 21 Oct 2013 20:13:21 GMT'], ['location', 'https://www.example.com']],
  [[':status', '200'], ['cache-control', 'private'], ['date', 'Mon, 21 Oct 2013 20:13:22 GMT'], ['location', 'https://www.example.com'], ['content-encoding', 'gzip'], ['set-cookie', 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1']],
];
const C5_TABLES: [string, string][][] = [
  [['location', 'https://www.example.com'], ['date', 'Mon, 21 Oct 2013 20:13:21 GMT'], ['cache-control', 'private'], [':status', '302']],
  [[':status', '307'], ['location', 'https://www.example.com'], ['date', 'Mon, 21 Oct 2013 20:13:21 GMT'], ['cache-control', 'private']],
  [['set-cookie', 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1'], ['content-encoding', 'gzip'], ['date', 'Mon, 21 Oct 2013 20:13:22 GMT']],
];
const C5_SIZES = [222, 222, 215];

function responseSequence(t: Test, blocks: string[]) {
  const d = new HpackDecoder(256);
  blocks.forEach((b, i) => {
    const r = decodeAll(d, hex(b));
    t.same(pairs(r.fields), C5_HEADERS[i], `response ${i + 1}: fields`);
    t.same(d.tableEntries(), C5_TABLES[i], `response ${i + 1}: dynamic table (with evictions)`);
    t.equal(d.tableSize, C5_SIZES[i], `response ${i + 1}: table size`);
    t.equal(d.invalid, undefined);
  });
}

t.test('C.5: responses without Huffman, 256-octet table', async (t) => {
  responseSequence(t, [
    `4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
     2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d`,
    '4803 3330 37c1 c0bf',
    `88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
     54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
     5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31`,
  ]);
});

t.test('C.6: responses with Huffman, 256-octet table', async (t) => {
  responseSequence(t, [
    `4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
     2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3`,
    '4883 640e ffc1 c0bf',
    `88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
     77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
     9587 3160 65c0 03ed 4ee5 b106 3d50 07`,
  ]);
});

t.test('Huffman: every byte value round-trips, strings of many lengths', async (t) => {
  const all = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i)).join('');
  const rnd = prng(7);
  const values = [all, 'a', 'ab', 'abc', '0', '', '\u00ff\u00fe', 'x'.repeat(1000)];
  for (let i = 0; i < 200; i++) {
    let s = '';
    const n = Math.floor(rnd() * 40);
    for (let j = 0; j < n; j++) s += String.fromCharCode(Math.floor(rnd() * 256));
    values.push(s);
  }
  let ok = 0;
  for (const v of values) {
    const h = huffmanEncode(v);
    const block = Buffer.concat([Buffer.from([0x00, 0x01, 0x61]), intBytes(0x80, 7, h.length), h]);
    const d = new HpackDecoder();
    const r = decodeAll(d, block);
    if (r.fields[1] === v) ok++;
    else t.fail(`Huffman round trip of ${JSON.stringify(v)}`);
  }
  t.equal(ok, values.length, 'all decoded back');
});

/** The integer representation with `bits` prefix bits and the given first-byte flags. */
function intBytes(flags: number, bits: number, v: number): Buffer {
  const max = (1 << bits) - 1;
  if (v < max) return Buffer.from([flags | v]);
  const out = [flags | max];
  v -= max;
  while (v >= 128) { out.push((v % 128) | 128); v = Math.floor(v / 128); }
  out.push(v);
  return Buffer.from(out);
}

t.test('decoding errors: each block fails with HpackError, and the decoder stays dead', async (t) => {
  const bad: [string, Buffer, RegExp][] = [
    ['index 0', hex('80'), /index 0/],
    ['indexed: static index 62 with an empty dynamic table', hex('be'), /out of range/],
    ['indexed: past the dynamic table', Buffer.concat([literal('a', 'b', 0x40), hex('bf')]), /out of range/],
    ['indexed: huge index', hex('ff ff ff 7f'), /out of range/],
    ['literal with indexing: name index out of range', hex('7e 01 61'), /out of range/],
    ['literal without indexing: name index out of range', hex('0f 2f 01 61'), /out of range/],
    ['never indexed: name index out of range', hex('1f 2f 01 61'), /out of range/],
    ['size update after a field', hex('82 20'), /after a field/],
    ['size update after a field (later in the block)', hex('20 82 20'), /after a field/],
    ['size update above the limit (4097)', hex('3f e2 1f'), /above the limit/],
    ['integer overflow', hex('ff ff ff ff ff 0f'), /too large|too long/],
    ['integer with too many continuation bytes', hex('ff 80 80 80 80 80 00'), /too long/],
    ['truncated integer', hex('ff'), /truncated/],
    ['truncated integer (continuation)', hex('ff 80'), /truncated/],
    ['truncated: literal with no name length', hex('40'), /truncated/],
    ['truncated: literal with no value', hex('04'), /truncated/],
    ['truncated: literal name index, no more bytes', hex('0f'), /truncated/],
    ['string length past the end', hex('44 03 61'), /past the end/],
    ['huge string length (no allocation)', hex('44 7f e1 ff 7f'), /past the end/],
    ['string length over 2^28', hex('44 7f ff ff ff ff 0f'), /too large|too long/],
    ['Huffman: EOS inside a string', hex('04 84 ff ff ff ff'), /EOS/],
    ['Huffman: EOS then a symbol', hex('04 85 ff ff ff fc 7f'), /EOS/],
    ['Huffman: padding longer than 7 bits', hex('04 82 1f ff'), /padding/],
    ['Huffman: padding not all ones', hex('04 81 18'), /padding/],
    ['Huffman: a whole byte of padding', hex('04 81 ff'), /padding/],
  ];
  for (const [name, block] of bad) {
    const d = new HpackDecoder();
    const out: string[] = [];
    t.throws(() => d.decode(block, 0, block.length, out, 1 << 20), { name: 'HpackError' }, name);
    t.throws(() => d.decode(hex('82'), 0, 1, out, 1 << 20), { name: 'HpackError' }, `${name}: unusable afterwards`);
  }
  for (const [name, block, re] of bad) {
    let err: unknown;
    try { new HpackDecoder().decode(block, 0, block.length, [], 1 << 20); } catch (e) { err = e; }
    t.ok(err instanceof HpackError, `${name}: an HpackError`);
    t.match((err as Error).message, re, `${name}: reason`);
  }
  // a string whose length runs past `end` fails even though the buffer holds the bytes
  const buf = hex('44 03 61 62 63');
  t.throws(() => new HpackDecoder().decode(buf, 0, 4, [], 1 << 20), { name: 'HpackError' }, 'block end honoured');
  t.throws(() => new HpackDecoder().decode(buf, 0, buf.length + 1, [], 1 << 20), { name: 'HpackError' }, 'bounds past the buffer');
  // the good twins of some of the above decode
  const good: [string, Buffer, [string, string][]][] = [
    ['Huffman "a" with 3 bits of padding', hex('04 81 1f'), [[':path', 'a']]],
    ['several size updates in a row, then a field', hex('20 3f e1 1f 82'), [[':method', 'GET']]],
    ['size update to exactly the limit', hex('3f e1 1f'), []],
    ['empty block', Buffer.alloc(0), []],
    ['multi-byte index into the static table', hex('ff 00'), []],
  ];
  for (const [name, block, want] of good) {
    if (name === 'multi-byte index into the static table') continue;
    const d = new HpackDecoder();
    t.same(pairs(decodeAll(d, block).fields), want, name);
  }
  // an index written with a continuation byte: 127 + 0 = 127 -> out of range, 0x3f + continuation for a name
  const d = new HpackDecoder();
  const lit = Buffer.concat([literal('a', 'b', 0x40)]);
  decodeAll(d, lit);
  t.same(pairs(decodeAll(d, intBytes(0x80, 7, 62)).fields), [['a', 'b']], 'dynamic index 62 as a one-byte integer');
  t.same(pairs(decodeAll(d, Buffer.concat([intBytes(0x00, 4, 62), hex('01 63')])).fields), [['a', 'c']], 'name index 62 with a 4-bit prefix (continuation byte)');
  // block at an offset inside a larger buffer
  const inner = Buffer.concat([hex('ff ff'), hex('8286'), hex('ff')]);
  const out: string[] = [];
  new HpackDecoder().decode(inner, 2, 4, out, 1 << 20);
  t.same(out, [':method', 'GET', ':scheme', 'http'], 'start/end offsets');
  // a Uint8Array that is not a Buffer
  const u8 = new Uint8Array([0x82, 0x04, 0x81, 0x1f]);
  const out2: string[] = [];
  new HpackDecoder().decode(u8, 0, u8.length, out2, 1 << 20);
  t.same(out2, [':method', 'GET', ':path', 'a'], 'plain Uint8Array');
});

t.test('size updates shrink and evict; a decoder with a smaller limit rejects larger updates', async (t) => {
  const d = new HpackDecoder();
  decodeAll(d, Buffer.concat([literal('aaaa', 'bbbb', 0x40), literal('cccc', 'dddd', 0x40)]));
  t.equal(d.tableSize, 80);
  decodeAll(d, intBytes(0x20, 5, 40));
  t.same(d.tableEntries(), [['cccc', 'dddd']], 'oldest evicted');
  t.equal(d.tableMaxSize, 40);
  decodeAll(d, intBytes(0x20, 5, 0));
  t.same(d.tableEntries(), [], 'all evicted');
  decodeAll(d, Buffer.concat([intBytes(0x20, 5, 4096), literal('x', 'y', 0x40)]));
  t.same(d.tableEntries(), [['x', 'y']], 'grown back');
  // an entry larger than the table empties it and is not added
  decodeAll(d, Buffer.concat([intBytes(0x20, 5, 50), literal('longname', 'longvalue-longvalue', 0x40)]));
  t.same(d.tableEntries(), [], 'oversized entry empties the table');
  const small = new HpackDecoder(100);
  t.throws(() => decodeAll(small, intBytes(0x20, 5, 101)), { name: 'HpackError' });
  t.same(pairs(decodeAll(new HpackDecoder(100), intBytes(0x20, 5, 100)).fields), []);
});

t.test('lowerLimit: the next block must open with a size update to the new limit, then it binds', async (t) => {
  const d = new HpackDecoder(4096);
  decodeAll(d, Buffer.concat([literal('aaaa', 'b'.repeat(100), 0x40), literal('cccc', 'd'.repeat(100), 0x40)]));
  t.equal(d.tableSize, 272);
  d.lowerLimit(200);
  t.equal(d.maxTableSize, 200);
  t.throws(() => decodeAll(d, literal('x', 'y')), { name: 'HpackError', message: /size update/ }, 'a block without the update');
  const e = new HpackDecoder(4096);
  decodeAll(e, Buffer.concat([literal('aaaa', 'b'.repeat(100), 0x40), literal('cccc', 'd'.repeat(100), 0x40)]));
  e.lowerLimit(200);
  t.throws(() => decodeAll(e, intBytes(0x20, 5, 201)), { name: 'HpackError' }, 'an update above the new limit');
  const f = new HpackDecoder(4096);
  decodeAll(f, Buffer.concat([literal('aaaa', 'b'.repeat(100), 0x40), literal('cccc', 'd'.repeat(100), 0x40)]));
  f.lowerLimit(200);
  const r = decodeAll(f, Buffer.concat([intBytes(0x20, 5, 200), intBytes(0x80, 7, 62), literal('x', 'y')]));
  t.same(pairs(r.fields), [['cccc', 'd'.repeat(100)], ['x', 'y']], 'the newest entry survives the eviction');
  t.equal(f.tableMaxSize, 200);
  t.same(pairs(decodeAll(f, literal('p', 'q')).fields), [['p', 'q']], 'later blocks need no update');
  t.throws(() => decodeAll(f, intBytes(0x20, 5, 201)), { name: 'HpackError' }, 'the lower limit binds later updates');
  const g = new HpackDecoder(4096);
  decodeAll(g, intBytes(0x20, 5, 100));
  g.lowerLimit(200);
  t.same(pairs(decodeAll(g, literal('x', 'y')).fields), [['x', 'y']], 'no update is due when the table is already within the limit');
  t.throws(() => new HpackDecoder(100).lowerLimit(200), RangeError, 'a limit can only be lowered');
});

t.test('a large table (limit above 4096): the ring grows, indexes stay right, eviction in order', async (t) => {
  const d = new HpackDecoder(65536);
  t.equal(d.tableMaxSize, 4096, 'starts at the protocol default until a size update');
  const parts = [intBytes(0x20, 5, 65536)];
  for (let i = 0; i < 1500; i++) parts.push(literal(`k${String(i).padStart(4, '0')}`, 'v', 0x40));
  decodeAll(d, Buffer.concat(parts));
  t.equal(d.tableEntries().length, 1500);
  t.equal(d.tableSize, 1500 * 38);
  t.same(pairs(decodeAll(d, Buffer.concat([intBytes(0x80, 7, 62), intBytes(0x80, 7, 62 + 1499)])).fields), [['k1499', 'v'], ['k0000', 'v']]);
  t.throws(() => decodeAll(d, intBytes(0x80, 7, 62 + 1500)), { name: 'HpackError' });
  const e = new HpackDecoder(65536);
  const more = [intBytes(0x20, 5, 38 * 100)];
  for (let i = 0; i < 250; i++) more.push(literal(`k${String(i).padStart(4, '0')}`, 'v', 0x40));
  decodeAll(e, Buffer.concat(more));
  const entries = e.tableEntries();
  t.equal(entries.length, 100, 'only the newest 100 fit');
  t.same(entries[0], ['k0249', 'v']);
  t.same(entries[99], ['k0150', 'v']);
});

t.test('field validation sets `invalid` without throwing', async (t) => {
  const cases: [string, Buffer, string | undefined][] = [
    ['empty name', literal('', 'v'), 'empty header name'],
    ['upper-case name', literal('Content-Type', 'v'), 'upper-case character in header name'],
    ['space in name', literal('a b', 'v'), 'invalid character in header name'],
    ['colon inside a name', literal('a:b', 'v'), 'invalid character in header name'],
    ['NUL in name', literal('a\0', 'v'), 'invalid character in header name'],
    ['non-ASCII in name', literal('caf\u00e9', 'v'), 'invalid character in header name'],
    ['lone colon', literal(':', 'v'), 'invalid pseudo-header name'],
    ['pseudo-header with a bad char', literal(':pa/th', 'v'), 'invalid pseudo-header name'],
    ['pseudo-header with upper case', literal(':Path', 'v'), 'upper-case character in header name'],
    ['NUL in value', literal('a', 'x\0y'), 'NUL, CR or LF in header value'],
    ['CR in value', literal('a', 'x\ry'), 'NUL, CR or LF in header value'],
    ['LF in value', literal('a', 'x\ny'), 'NUL, CR or LF in header value'],
    ['leading SP', literal('a', ' x'), 'leading or trailing whitespace in header value'],
    ['trailing SP', literal('a', 'x '), 'leading or trailing whitespace in header value'],
    ['leading HTAB', literal('a', '\tx'), 'leading or trailing whitespace in header value'],
    ['trailing HTAB', literal('a', 'x\t'), 'leading or trailing whitespace in header value'],
    ['value of one SP', literal('a', ' '), 'leading or trailing whitespace in header value'],
    ['valid: token chars', literal("!#$%&'*+-.^_`|~09az", 'v'), undefined],
    ['valid: pseudo-header', literal(':protocol', 'websocket'), undefined],
    ['valid: empty value', literal('a', ''), undefined],
    ['valid: inner spaces, tabs, obs-text, DEL', literal('a', 'x y\tz \u00ff\u0080\u007f'), undefined],
    ['valid: other control chars are not ours to reject here', literal('a', 'x\u0001y'), undefined],
    ['valid: static name, literal value', hex('0f 2b 04 67 7a 69 70'), undefined],
  ];
  for (const [name, block, want] of cases) {
    const d = new HpackDecoder();
    const r = decodeAll(d, block);
    t.equal(d.invalid, want, name);
    t.equal(r.fields.length, 2, `${name}: field still decoded`);
  }
  // Huffman-coded invalid name is caught too
  const h = huffmanEncode('Bad');
  const d0 = new HpackDecoder();
  decodeAll(d0, Buffer.concat([hex('00'), intBytes(0x80, 7, h.length), h, hex('01 76')]));
  t.equal(d0.invalid, 'upper-case character in header name', 'Huffman name');
  // Huffman-coded values: NUL/CR/LF come from the decoding table's flags, whitespace from the ends
  const huffValue = (v: string) => { const hv = huffmanEncode(v); return Buffer.concat([hex('00 01 61'), intBytes(0x80, 7, hv.length), hv]); };
  const huffCases: [string, string | undefined][] = [
    ['x\ry', 'NUL, CR or LF in header value'], ['x\ny', 'NUL, CR or LF in header value'], ['\0', 'NUL, CR or LF in header value'],
    ['abc\r', 'NUL, CR or LF in header value'], [' x', 'leading or trailing whitespace in header value'],
    ['x\t', 'leading or trailing whitespace in header value'], ['a b\tc', undefined], ['x\u0001\u00ff', undefined], ['', undefined],
  ];
  for (const [v, want] of huffCases) {
    const dh = new HpackDecoder();
    const r = decodeAll(dh, huffValue(v));
    t.equal(dh.invalid, want, `Huffman value ${JSON.stringify(v)}`);
    t.equal(r.fields[1], v);
  }
  const dn = new HpackDecoder();
  decodeAll(dn, hex('00 80 01 76'));
  t.equal(dn.invalid, 'empty header name', 'empty Huffman-flagged name');

  // the first problem in a block is reported; the next block starts clean
  const d = new HpackDecoder();
  decodeAll(d, Buffer.concat([hex('82'), literal('a', 'x\n'), literal('B', 'v')]));
  t.equal(d.invalid, 'NUL, CR or LF in header value');
  decodeAll(d, hex('82'));
  t.equal(d.invalid, undefined, 'reset by the next decode');

  // invalid entries added to the dynamic table stay flagged when referenced
  const e = new HpackDecoder();
  decodeAll(e, Buffer.concat([literal('Bad', 'ok', 0x40), literal('good', 'bad\r', 0x40), literal('fine', 'fine', 0x40)]));
  t.equal(e.invalid, 'upper-case character in header name');
  t.same(e.tableEntries(), [['fine', 'fine'], ['good', 'bad\r'], ['Bad', 'ok']]);
  decodeAll(e, hex('be'));
  t.equal(e.invalid, undefined, 'a valid entry referenced: valid');
  decodeAll(e, hex('c0'));
  t.equal(e.invalid, 'upper-case character in header name', 'an entry with a bad name referenced by index');
  decodeAll(e, hex('bf'));
  t.equal(e.invalid, 'NUL, CR or LF in header value', 'an entry with a bad value referenced by index');
  decodeAll(e, Buffer.concat([intBytes(0x00, 4, 64), hex('01 76')]));
  t.equal(e.invalid, 'upper-case character in header name', 'a bad name referenced as a name');
  decodeAll(e, Buffer.concat([intBytes(0x00, 4, 63), hex('01 76')]));
  t.equal(e.invalid, undefined, 'the good name of an entry with a bad value, with a new good value');
  decodeAll(e, Buffer.concat([intBytes(0x40, 6, 63), hex('01 76'), hex('be')]));
  t.equal(e.invalid, undefined, 'a new entry made from a good name stays good');
});

t.test('repeated unindexed literal values (the decoder remembers the last one) decode right', async (t) => {
  const d = new HpackDecoder();
  const path = (raw: string) => Buffer.concat([hex('04'), intBytes(0x00, 7, raw.length), Buffer.from(raw, 'latin1')]);
  const seq: [Buffer, string, string | undefined][] = [
    [path('/abc'), '/abc', undefined],
    [path('/abc'), '/abc', undefined],
    [path('/abd'), '/abd', undefined],
    [path('/abd'), '/abd', undefined],
    [path('\x1f'), '\x1f', undefined],
    [hex('04 81 1f'), 'a', undefined], // same length and byte, but Huffman-flagged
    [hex('04 81 1f'), 'a', undefined],
    [path('a\rb'), 'a\rb', 'NUL, CR or LF in header value'],
    [path('a\rb'), 'a\rb', 'NUL, CR or LF in header value'],
    [path('a\nb'), 'a\nb', 'NUL, CR or LF in header value'],
    [path('a b'), 'a b', undefined],
    [hex('14 03 616263'), 'abc', undefined], // never indexed
    [hex('14 03 616263'), 'abc', undefined],
    [path('x'.repeat(120)), 'x'.repeat(120), undefined], // longer than what is remembered
    [path('x'.repeat(120)), 'x'.repeat(120), undefined],
  ];
  seq.forEach(([block, want, invalid], i) => {
    const r = decodeAll(d, block);
    t.equal(r.fields[1], want, `block ${i}: value`);
    t.equal(d.invalid, invalid, `block ${i}: validity`);
  });
  t.throws(() => decodeAll(new HpackDecoder(), hex('04 05 61')), { name: 'HpackError' }, 'truncated unindexed value');
});

t.test('maxListSize: fields past the limit are dropped but the table stays in step', async (t) => {
  const enc = new HpackEncoder();
  const d = new HpackDecoder();
  const big: [string, string][] = [['x-a', 'a'.repeat(100)], ['x-b', 'b'.repeat(100)], ['x-c', 'c'.repeat(100)], ['x-d', 'd'.repeat(100)]];
  enc.begin();
  for (const [n, v] of big) enc.field(n, v);
  const b1 = Buffer.from(enc.end());
  const out: string[] = [];
  const size = d.decode(b1, 0, b1.length, out, 300);
  t.equal(size, 4 * (3 + 100 + 32), 'full list size returned');
  t.ok(size > 300);
  t.same(pairs(out), big.slice(0, 2), 'only the fields within the limit appended');
  t.equal(d.tableEntries().length, 4, 'all four entries added');
  t.same(d.tableEntries(), enc.tableEntries());
  enc.begin();
  for (const [n, v] of big) enc.field(n, v);
  const b2 = Buffer.from(enc.end());
  t.equal(b2.length, 4, 'second block is four indexed fields');
  const r = decodeAll(d, b2);
  t.same(pairs(r.fields), big, 'a block referencing those entries decodes right');
});

/** mulberry32: a small seeded PRNG so failures reproduce. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

t.test('encoder -> decoder round trips (seeded), with peer table size changes', async (t) => {
  const rnd = prng(20261122);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)];
  const names = ['content-type', 'date', 'server', 'x-envoy-upstream-service-time', 'content-length', 'set-cookie',
    'cache-control', 'etag', 'x-custom', 'x-other', 'vary', 'grpc-status', 'grpc-message', 'accept-encoding', ':path',
    'authorization', 'location', 'x-long', 'age', 'x-request-id'];
  const values = ['', 'text/plain', 'application/grpc', '0', '12', 'gzip, deflate', 'Mon, 21 Oct 2013 20:13:21 GMT', 'envoy', 'a=b'];
  const sizes = [0, 1, 50, 100, 256, 1000, 4096, 8192, 65536];
  for (let seed = 0; seed < 5; seed++) {
    const enc = new HpackEncoder();
    const dec = new HpackDecoder(65536);
    let blocks = 0;
    let mismatches = 0;
    for (let b = 0; b < 300; b++) {
      if (rnd() < 0.08) {
        enc.setPeerMaxTableSize(pick(sizes));
        if (rnd() < 0.3) enc.setPeerMaxTableSize(pick(sizes));
      }
      const want: string[] = [];
      enc.begin();
      if (rnd() < 0.9) {
        const code = pick([200, 204, 206, 304, 400, 404, 500, 302, 503, 201]);
        enc.status(code);
        want.push(':status', String(code));
      }
      const n = Math.floor(rnd() * 12);
      for (let i = 0; i < n; i++) {
        const name = rnd() < 0.15 ? `x-r${Math.floor(rnd() * 30)}` : pick(names);
        let value: string;
        const k = rnd();
        if (k < 0.5) value = pick(values);
        else if (k < 0.9) value = `v${Math.floor(rnd() * 50)}`;
        else if (k < 0.97) {
          value = '';
          const len = Math.floor(rnd() * 40);
          for (let j = 0; j < len; j++) value += String.fromCharCode(32 + Math.floor(rnd() * 224));
        } else value = 'L'.repeat(200 + Math.floor(rnd() * 300));
        enc.field(name, value);
        want.push(name, value);
      }
      const block = Buffer.from(enc.end());
      const got: string[] = [];
      dec.decode(block, 0, block.length, got, 1 << 20);
      blocks++;
      if (JSON.stringify(got) !== JSON.stringify(want)) { mismatches++; t.same(got, want, `seed ${seed} block ${b}: fields`); }
      if (JSON.stringify(dec.tableEntries()) !== JSON.stringify(enc.tableEntries()) || dec.tableSize !== enc.tableSize) {
        mismatches++;
        t.same(dec.tableEntries(), enc.tableEntries(), `seed ${seed} block ${b}: tables`);
      }
      if (dec.tableSize > enc.tableMaxSize || enc.tableMaxSize > 4096) { mismatches++; t.fail('table over its size'); }
    }
    t.equal(mismatches, 0, `seed ${seed}: ${blocks} blocks decoded as encoded, tables in step`);
  }
});

t.test('fuzz: random and mutated blocks either decode or throw HpackError, nothing else', async (t) => {
  const rnd = prng(99);
  const seeds = [
    hex('8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff'),
    hex('8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf'),
    hex('4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3'),
  ];
  let decoded = 0;
  let rejected = 0;
  let other = 0;
  for (let i = 0; i < 5000; i++) {
    let block: Buffer;
    if (i % 2 === 0) {
      block = Buffer.alloc(1 + Math.floor(rnd() * 40));
      for (let j = 0; j < block.length; j++) block[j] = Math.floor(rnd() * 256);
    } else {
      block = Buffer.from(seeds[i % seeds.length]);
      const flips = 1 + Math.floor(rnd() * 3);
      for (let j = 0; j < flips; j++) block[Math.floor(rnd() * block.length)] = Math.floor(rnd() * 256);
      if (rnd() < 0.3) block = block.subarray(0, Math.floor(rnd() * block.length));
    }
    const d = new HpackDecoder(rnd() < 0.5 ? 256 : 4096);
    try {
      const out: string[] = [];
      d.decode(block, 0, block.length, out, 1 << 20);
      d.decode(block, 0, block.length, out, 1 << 20); // again, against the table the first pass left
      decoded++;
    } catch (e) {
      if (e instanceof HpackError) rejected++;
      else { other++; t.fail(`block ${block.toString('hex')} threw ${(e as Error).stack}`); }
    }
  }
  t.equal(other, 0, `${decoded} decoded, ${rejected} rejected with HpackError, no other exceptions`);
  t.ok(decoded > 100 && rejected > 100, 'both outcomes exercised');
});

t.test('encoder representations', async (t) => {
  const enc = new HpackEncoder();
  enc.begin();
  enc.status(200);
  enc.status(404);
  t.same(enc.end(), hex('88 8d'), 'static :status');
  enc.begin();
  enc.status(503);
  t.same(enc.end(), hex('48 03 353033'), ':status 503: static name, indexed literal');
  enc.begin();
  enc.status(503);
  t.same(enc.end(), hex('be'), 'then from the dynamic table');
  enc.begin();
  enc.field('content-length', '12');
  t.same(enc.end(), hex('0f 0d 02 3132'), 'content-length: without indexing, static name 28');
  enc.begin();
  enc.field('set-cookie', 'a=b');
  t.same(enc.end(), hex('1f 28 03 613d62'), 'set-cookie: never indexed, static name 55');
  enc.begin();
  enc.field('x-thing', 'v');
  t.same(enc.end(), hex('40 07 782d7468696e67 01 76'), 'new name: literal with indexing');
  enc.begin();
  enc.field('x-thing', 'v');
  enc.field('accept-encoding', 'gzip, deflate');
  t.same(enc.end(), hex('be 90'), 'dynamic and static full matches');
  enc.begin();
  enc.field('x-envoy-upstream-service-time', '3');
  enc.field('x-envoy-upstream-service-time', '3');
  const once = hex('00 1d 782d656e766f792d757073747265616d2d736572766963652d74696d65 01 33');
  t.same(enc.end(), Buffer.concat([once, once]), 'not indexed (literal name, no static entry): written twice');
  enc.begin();
  enc.field('x-big', 'z'.repeat(300));
  enc.field('x-big', 'z'.repeat(300));
  t.equal(enc.end()[0], 0x00, 'a long value: without indexing');
  t.same(enc.tableEntries(), [['x-thing', 'v'], [':status', '503']], 'only the indexed fields entered the table');
  // size updates: the next block starts with them; a dip is signalled too
  enc.setPeerMaxTableSize(0);
  enc.setPeerMaxTableSize(8192);
  enc.begin();
  t.same(enc.end(), hex('20 3f e1 1f'), 'min (0) then final (min(8192, 4096))');
  t.same(enc.tableEntries(), [], 'the dip emptied the table');
  enc.setPeerMaxTableSize(100);
  enc.begin();
  enc.field('x-thing', 'v');
  const b = enc.end();
  t.same(b.subarray(0, 2), hex('3f 45'), 'size update 100 first');
  const d = new HpackDecoder();
  d.decode(hex('20 3f e1 1f'), 0, 4, [], 1 << 20);
  t.same(pairs(decodeAll(d, b).fields), [['x-thing', 'v']]);
  t.equal(d.tableMaxSize, 100);
  // the scratch buffer grows for big blocks
  enc.begin();
  for (let i = 0; i < 100; i++) enc.field('x-huge', 'q'.repeat(1000));
  const huge = Buffer.from(enc.end());
  t.ok(huge.length > 100000);
  const r = decodeAll(d, huge);
  t.equal(r.fields.length, 200);
  t.equal(r.fields[199], 'q'.repeat(1000));
});

t.test('blocks from a real client (node:http2 / nghttp2): dynamic table and Huffman', async (t) => {
  const chunks: Buffer[] = [];
  let gotBlocks: (() => void) | undefined;
  const blocks: Buffer[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((sock) => {
    sockets.push(sock);
    // our SETTINGS (empty) and an ACK of theirs; the client does not need more to send requests
    sock.write(hex('000000 04 00 00000000 000000 04 01 00000000'));
    sock.on('data', (c) => {
      chunks.push(c);
      const all = Buffer.concat(chunks);
      let p = 24; // client preface
      const found: Buffer[] = [];
      let pending: Buffer[] = [];
      while (p + 9 <= all.length) {
        const len = all.readUIntBE(p, 3);
        const type = all[p + 3];
        const flags = all[p + 4];
        if (p + 9 + len > all.length) break;
        let payload = all.subarray(p + 9, p + 9 + len);
        if (type === 1) {
          if (flags & 0x08) payload = payload.subarray(1, payload.length - payload[0]);
          if (flags & 0x20) payload = payload.subarray(5);
          pending = [payload];
        } else if (type === 9) pending.push(payload);
        if ((type === 1 || type === 9) && flags & 0x04) found.push(Buffer.concat(pending));
        p += 9 + len;
      }
      if (found.length >= 2 && gotBlocks) { blocks.push(...found); gotBlocks(); gotBlocks = undefined; }
    });
    sock.on('error', () => {});
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as net.AddressInfo).port;
  const client = http2.connect(`http://127.0.0.1:${port}`);
  client.on('error', () => {});
  const done = new Promise<void>((res) => { gotBlocks = res; });
  const headers = { ':path': '/first/path?q=1', 'user-agent': 'keel-hpack-test/1.0', 'x-custom-header': 'some-custom-value-0123456789', accept: 'application/json' };
  const r1 = client.request(headers);
  r1.on('error', () => {});
  const r2 = client.request({ ...headers, ':path': '/second' });
  r2.on('error', () => {});
  const timer = setTimeout(() => gotBlocks?.(), 10000);
  await done;
  clearTimeout(timer);
  client.destroy();
  for (const s of sockets) s.destroy();
  await new Promise<void>((res) => server.close(() => res()));

  t.equal(blocks.length, 2, 'two header blocks captured');
  const d = new HpackDecoder();
  const f1 = pairs(decodeAll(d, blocks[0]).fields);
  const f2 = pairs(decodeAll(d, blocks[1]).fields);
  t.equal(d.invalid, undefined);
  const want = (p: string): [string, string][] => [[':method', 'GET'], [':authority', `127.0.0.1:${port}`], [':scheme', 'http'], [':path', p],
    ['user-agent', 'keel-hpack-test/1.0'], ['x-custom-header', 'some-custom-value-0123456789'], ['accept', 'application/json']];
  const sorted = (a: [string, string][]) => a.slice().sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  t.same(sorted(f1), sorted(want('/first/path?q=1')), 'first request decoded');
  t.same(sorted(f2), sorted(want('/second')), 'second request decoded');
  t.ok(d.tableEntries().length > 0, 'the client indexed fields');
  t.ok(blocks[1].length < blocks[0].length / 2, `second block (${blocks[1].length} B) much smaller than the first (${blocks[0].length} B): dynamic table used`);
  t.equal(blocks[0].indexOf('some-custom-value'), -1, 'the value was Huffman-coded (its raw bytes are absent)');
  t.ok(blocks[1].some((b) => b >= 0xbe), 'the second block has dynamic-table indexes');
});
