// Random and mutated HTTP/2 input against a running keel (seeded, so a failure can be replayed):
// whatever a client sends after the preface, keel answers with frames or closes that connection,
// and goes on serving everyone else. Mutations start from valid traffic (a request with a body,
// SETTINGS, PING, WINDOW_UPDATE) and flip bytes, cut frames short and splice frames together.
import t from 'tap';
import * as net from 'node:net';
import { connectH2, dataFrame, headersFrame, pingFrame, PREFACE, requestBlock, serverPreface, settingsFrame, SETTING, startConformanceKeel, windowUpdateFrame } from '../helpers/h2-wire';

/** xorshift32: a small seeded generator */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

function validTraffic(sid: number): Buffer {
  return Buffer.concat([
    settingsFrame([[SETTING.INITIAL_WINDOW_SIZE, 100_000]]),
    headersFrame(sid, requestBlock('/up/echo', ['x-k', 'v'], 'POST')),
    dataFrame(sid, 'hello'),
    windowUpdateFrame(0, 1000),
    pingFrame(Buffer.alloc(8, 7)),
    dataFrame(sid, ' world', { endStream: true }),
    headersFrame(sid + 2, requestBlock('/'), { endStream: true }),
  ]);
}

function mutate(r: () => number, b: Buffer): Buffer {
  const out = Buffer.from(b);
  const kind = Math.floor(r() * 4);
  if (kind === 0) {
    // flip a few bytes anywhere (lengths, types, flags, stream ids, HPACK)
    for (let i = 0, n = 1 + Math.floor(r() * 6); i < n; i++) out[Math.floor(r() * out.length)] = Math.floor(r() * 256);
    return out;
  }
  if (kind === 1) return out.subarray(0, Math.floor(r() * out.length)); // cut short
  if (kind === 2) {
    // random bytes spliced in
    const at = Math.floor(r() * out.length);
    const junk = Buffer.alloc(1 + Math.floor(r() * 40));
    for (let i = 0; i < junk.length; i++) junk[i] = Math.floor(r() * 256);
    return Buffer.concat([out.subarray(0, at), junk, out.subarray(at)]);
  }
  // pure noise
  const junk = Buffer.alloc(1 + Math.floor(r() * 200));
  for (let i = 0; i < junk.length; i++) junk[i] = Math.floor(r() * 256);
  return junk;
}

/** Sends preface + bytes on a fresh socket; resolves when keel closes it or after it has answered a PING. */
function throwAt(port: number, bytes: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let settled = false;
    const done = (): void => {
      if (settled) return;
      settled = true;
      s.destroy();
      resolve();
    };
    s.on('error', done);
    s.on('close', done);
    s.on('connect', () => {
      s.write(Buffer.concat([PREFACE, settingsFrame(), bytes]));
      // a connection keel keeps open is left after a short while (keel is not expected to close it)
      setTimeout(done, 200).unref();
    });
    s.on('data', () => undefined);
  });
}

t.test('mutated and random HTTP/2 input: keel stays up and keeps serving', async (t) => {
  const { keel } = await startConformanceKeel(t);
  const seed = Number(process.env.KEEL_FUZZ_SEED ?? 20261122);
  const r = rng(seed);
  const rounds = 300;
  for (let i = 0; i < rounds; i += 10) {
    // ten at a time, each on its own connection
    const batch: Promise<void>[] = [];
    for (let j = 0; j < 10; j++) batch.push(throwAt(keel.port, mutate(r, validTraffic(1 + 2 * Math.floor(r() * 5)))));
    await Promise.all(batch);
  }
  // keel is alive and serves a well-formed client
  const w = await connectH2(keel.port, t);
  await serverPreface(w);
  w.request(1, '/up/echo', { body: 'still here' });
  const res = await w.response(1);
  t.equal(res.status, '200', `after ${rounds} mutated connections (seed ${seed})`);
  t.equal(res.body.toString(), 'still here');
});
