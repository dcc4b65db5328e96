// scanHead: the addon's and the twin's answers agree on every case (the same suite runs on both).
import t from 'tap';
import { loadNative, scanHeadTwin } from '../../../src/native';

const loaded = loadNative();
const impls: [string, (b: Buffer, s: number, e: number) => number][] = [['twin', scanHeadTwin]];
if (loaded.available) impls.push(['native', loaded.scanHead]);
else t.comment(`native addon not loaded (${loaded.reason}): twin only`);

const cases: [string, number][] = [
  ['GET / HTTP/1.1\r\nHost: a\r\nX: y\tz', -1],
  ['GET / HTTP/1.1\r\nHost: a\nX: y', 23],
  ['GET / HTTP/1.1\rHost: a', 14],
  ['GET / HTTP/1.1\r\nX: \x00', 19],
  ['GET / HTTP/1.1\r\nX: \x7f', 19],
  ['GET / HTTP/1.1\r\nX: \x1b[31m', 19],
  ['X: a\r', 4],
  ['\nX', 0],
  ['', -1],
  ['caf\xe9: ok', -1],
];

for (const [name, fn] of impls) {
  t.test(name, async (t) => {
    for (const [text, want] of cases) t.equal(fn(Buffer.from(text, 'latin1'), 0, text.length), want, JSON.stringify(text));
    const b = Buffer.from('\x01GET / HTTP/1.1\r\nHost: a\r\n\x02', 'latin1');
    t.equal(fn(b, 1, b.length - 1), -1, 'only the given range is scanned');
    t.equal(fn(b, 0, b.length), 0);
  });
}
if (loaded.available) {
  t.test('native refuses a range outside the buffer', async (t) => {
    t.throws(() => loaded.scanHead(Buffer.alloc(4), 0, 10), /range outside/);
  });
}
