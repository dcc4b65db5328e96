// HTTP/2 wire conformance, part 3: flow control (RFC 9113 5.2, 6.9) and max_concurrent_streams on
// keel's downstream h2c. Responses: keel never sends more DATA than the client's stream and
// connection windows allow, honours a SETTINGS_INITIAL_WINDOW_SIZE change mid-stream and the
// client's SETTINGS_MAX_FRAME_SIZE. Requests: keel advertises the configured windows
// (http2_protocol_options initial_stream_window_size / initial_connection_window_size), answers a
// client that overruns them with FLOW_CONTROL_ERROR, and replenishes them as it consumes a body.
// "Nothing more arrives" is checked with a PING round trip, never a sleep.
import t, { type Test } from 'tap';
import {
  connectH2, dataFrame, dataPayload, describeFrame, DIRECT_BODY, ERR, FLAG, FRAME, h2Options, headersFrame, requestBlock, serverPreface, SETTING,
  settingsFrame, startConformanceKeel, startConformanceUpstream, windowUpdateFrame, type Frame, type H2Wire,
} from '../helpers/h2-wire';

// one at a time: the overrun tests write megabytes from this process and would starve the others
t.setTimeout(120_000);

const MAX_WINDOW = 2 ** 31 - 1;

/** DATA bytes received on `id` so far (all frames, consumed or not) and whether END_STREAM came. */
function dataSoFar(w: H2Wire, id: number): { bytes: number; ended: boolean; frames: Frame[] } {
  let bytes = 0;
  let ended = false;
  const frames: Frame[] = [];
  for (const f of w.frames) {
    if (f.streamId !== id) continue;
    if (f.type === FRAME.DATA) {
      bytes += dataPayload(f).length;
      frames.push(f);
    }
    if ((f.type === FRAME.DATA || f.type === FRAME.HEADERS) && f.flags & FLAG.END_STREAM) ended = true;
  }
  return { bytes, ended, frames };
}

/** Fails if a RST_STREAM on `id` or a GOAWAY has arrived. */
function noErrors(w: H2Wire, id: number): void {
  const bad = w.frames.find((f) => f.type === FRAME.GOAWAY || (f.type === FRAME.RST_STREAM && f.streamId === id));
  if (bad) throw new Error(`unexpected ${describeFrame(bad)}; frames: ${w.describe()}`);
}

async function main(): Promise<void> {
  const up = await startConformanceUpstream();
  t.teardown(() => up.close());
  // all keels are up before the first test is queued
  const plain = (await startConformanceKeel(t, '', up)).keel;
  const small = (await startConformanceKeel(t, h2Options({ initial_stream_window_size: 65535, initial_connection_window_size: 65535 }), up)).keel;
  const smallStream = (await startConformanceKeel(t, h2Options({ initial_stream_window_size: 65535 }), up)).keel;
  const smallConn = (await startConformanceKeel(t, h2Options({ initial_connection_window_size: 65535 }), up)).keel;
  const oneStream = (await startConformanceKeel(t, h2Options({ max_concurrent_streams: 1 }), up)).keel;

  async function open(tt: Test, port: number, settings?: readonly (readonly [number, number])[]): Promise<H2Wire> {
    const w = await connectH2(port, tt, settings ? { settings } : {});
    await serverPreface(w);
    return w;
  }

  // ---- 6. flow control of responses
  t.test('responses: a stream window of 100 lets exactly 100 bytes through until a WINDOW_UPDATE', async (tt) => {
    const w = await open(tt, plain.port, [[SETTING.INITIAL_WINDOW_SIZE, 100]]);
    w.request(1, '/up/big/1000');
    await w.until(() => (noErrors(w, 1), dataSoFar(w, 1).bytes >= 100), '100 bytes of DATA');
    await w.ping();
    let got = dataSoFar(w, 1);
    tt.equal(got.bytes, 100, 'exactly the stream window, nothing more before the PING ACK');
    tt.notOk(got.ended, 'no END_STREAM yet');
    w.send(windowUpdateFrame(1, 900));
    await w.until(() => (noErrors(w, 1), dataSoFar(w, 1).ended), 'the rest of the body');
    got = dataSoFar(w, 1);
    tt.equal(got.bytes, 1000, 'the whole body, END_STREAM on the last frame');
  });

  t.test('responses: the connection window of 65,535 lets exactly 65,535 bytes through until a stream-0 WINDOW_UPDATE', async (tt) => {
    const w = await open(tt, plain.port, [[SETTING.INITIAL_WINDOW_SIZE, MAX_WINDOW]]);
    w.request(1, '/up/big/100000');
    await w.until(() => (noErrors(w, 1), dataSoFar(w, 1).bytes >= 65535), '65,535 bytes of DATA');
    await w.ping();
    let got = dataSoFar(w, 1);
    tt.equal(got.bytes, 65535, 'exactly the connection window');
    tt.notOk(got.ended, 'no END_STREAM yet');
    w.send(windowUpdateFrame(0, 100000 - 65535));
    await w.until(() => (noErrors(w, 1), dataSoFar(w, 1).ended), 'the rest of the body');
    got = dataSoFar(w, 1);
    tt.equal(got.bytes, 100000);
  });

  t.test('responses: after a response held back by flow control, the next request is served', async (tt) => {
    // the held response backs up keel's upstream connection; once done, that connection is reused
    const w = await open(tt, plain.port, [[SETTING.INITIAL_WINDOW_SIZE, MAX_WINDOW]]);
    w.request(1, '/up/big/100000');
    await w.until(() => (noErrors(w, 1), dataSoFar(w, 1).bytes >= 65535), '65,535 bytes of DATA');
    await w.ping();
    w.send(windowUpdateFrame(0, MAX_WINDOW - 65535));
    const first = await w.response(1);
    tt.equal(first.body.length, 100000, 'the held response completes');
    for (const id of [3, 5]) {
      w.request(id, '/up/big/10');
      const res = await w.response(id);
      tt.equal(res.status, '200', `stream ${id} served`);
      tt.equal(res.body.length, 10);
    }
  });

  t.test('responses: raising SETTINGS_INITIAL_WINDOW_SIZE mid-stream widens an open stream', async (tt) => {
    const w = await open(tt, plain.port, [[SETTING.INITIAL_WINDOW_SIZE, 100]]);
    w.request(1, '/up/big/1000');
    await w.until(() => (noErrors(w, 1), dataSoFar(w, 1).bytes >= 100), '100 bytes of DATA');
    await w.ping();
    tt.equal(dataSoFar(w, 1).bytes, 100, 'held at the initial window');
    w.send(settingsFrame([[SETTING.INITIAL_WINDOW_SIZE, 1000]]));
    await w.until(() => (noErrors(w, 1), dataSoFar(w, 1).ended), 'the rest of the body after the SETTINGS change');
    tt.equal(dataSoFar(w, 1).bytes, 1000, 'the window grew by 900: the rest came');
    tt.ok(
      w.frames.filter((f) => f.type === FRAME.SETTINGS && f.flags & FLAG.ACK).length >= 2,
      'the SETTINGS change was ACKed',
    );
  });

  t.test('responses: lowering SETTINGS_INITIAL_WINDOW_SIZE mid-stream can make the window negative', async (tt) => {
    const w = await open(tt, plain.port, [[SETTING.INITIAL_WINDOW_SIZE, 1000]]);
    w.request(1, '/up/big/3000');
    await w.until(() => (noErrors(w, 1), dataSoFar(w, 1).bytes >= 1000), '1,000 bytes of DATA');
    // window 1000 - 1000 sent = 0; new initial 500 -> 0 - 500 = -500
    w.send(settingsFrame([[SETTING.INITIAL_WINDOW_SIZE, 500]]));
    w.send(windowUpdateFrame(1, 400));
    await w.ping();
    tt.equal(dataSoFar(w, 1).bytes, 1000, 'a window of -500 + 400 sends nothing');
    w.send(windowUpdateFrame(1, 2100));
    await w.until(() => (noErrors(w, 1), dataSoFar(w, 1).ended), 'the rest of the body');
    tt.equal(dataSoFar(w, 1).bytes, 3000);
  });

  t.test('responses: DATA frames never exceed the client SETTINGS_MAX_FRAME_SIZE (16,384)', async (tt) => {
    const w = await open(tt, plain.port);
    w.request(1, '/up/big/50000');
    const res = await w.response(1);
    tt.equal(res.status, '200');
    tt.equal(res.body.length, 50000);
    const sizes = res.frames.filter((f) => f.type === FRAME.DATA).map((f) => f.length);
    tt.ok(sizes.every((n) => n <= 16384), `every DATA frame <= 16384: ${sizes.join(',')}`);
  });

  t.test('responses: DATA frames follow a larger client SETTINGS_MAX_FRAME_SIZE (32,768)', async (tt) => {
    const w = await open(tt, plain.port, [[SETTING.MAX_FRAME_SIZE, 32768]]);
    w.request(1, '/up/big/60000');
    const res = await w.response(1);
    tt.equal(res.body.length, 60000);
    const sizes = res.frames.filter((f) => f.type === FRAME.DATA).map((f) => f.length);
    tt.ok(sizes.every((n) => n <= 32768), `every DATA frame <= 32768: ${sizes.join(',')}`);
  });

  // ---- 7. flow control of requests
  t.test('requests: windows of 65,535 are advertised as such', async (tt) => {
    const w = await connectH2(small.port, tt);
    const settings = await serverPreface(w);
    const between = await w.ping();
    const initial = w.serverSettings.get(SETTING.INITIAL_WINDOW_SIZE);
    tt.ok(initial === undefined || initial === 65535, `SETTINGS_INITIAL_WINDOW_SIZE absent or 65535 (got ${initial}) in ${describeFrame(settings)}`);
    const wu = between.filter((f) => f.type === FRAME.WINDOW_UPDATE && f.streamId === 0);
    tt.same(wu.map(describeFrame), [], 'no connection WINDOW_UPDATE');
  });

  t.test('requests: the Envoy default windows (256 MiB) are advertised', async (tt) => {
    const w = await connectH2(plain.port, tt);
    await serverPreface(w);
    await w.ping();
    tt.equal(w.serverSettings.get(SETTING.INITIAL_WINDOW_SIZE), 268435456, 'SETTINGS_INITIAL_WINDOW_SIZE');
    const grown = w.frames.filter((f) => f.type === FRAME.WINDOW_UPDATE && f.streamId === 0).reduce((n, f) => n + (f.payload.readUInt32BE(0) & 0x7fffffff), 0);
    tt.equal(65535 + grown, 268435456, 'stream-0 WINDOW_UPDATEs bring the connection window to 268435456');
  });

  /**
   * Sends DATA on `id` without regard to any window until the server answers with an error (or a
   * cap far past any buffering keel may do). The upstream (blackhole) never reads, so keel's buffers
   * fill and it must stop granting window.
   */
  async function overrun(w: H2Wire, id: number, capBytes = 16 << 20): Promise<Frame> {
    const chunk = dataFrame(id, Buffer.alloc(16384, 'o'));
    let sent = 0;
    const failure = (): Frame | undefined => w.frames.find((f) => f.type === FRAME.GOAWAY || (f.type === FRAME.RST_STREAM && f.streamId === id));
    while (sent < capBytes && !failure() && !w.isClosed) {
      if (!w.socket.write(chunk)) {
        await Promise.race([new Promise((r) => w.socket.once('drain', r)), w.closed, w.until(() => failure() !== undefined, 'an error while writing', 30_000).catch(() => {})]);
      }
      sent += 16384;
      if (sent % (1 << 20) === 0) await new Promise((r) => setImmediate(r));
    }
    await w.until(() => failure() !== undefined, `an error after ${sent} bytes of DATA beyond the windows`);
    return failure()!;
  }

  t.test('requests: DATA beyond the stream window (65,535) -> RST_STREAM FLOW_CONTROL_ERROR', async (tt) => {
    const w = await open(tt, smallStream.port, [[SETTING.INITIAL_WINDOW_SIZE, MAX_WINDOW]]);
    w.send(headersFrame(1, requestBlock('/bh/upload', [], 'POST')));
    const f = await overrun(w, 1);
    tt.equal(describeFrame(f), `RST_STREAM(s1 f0x0 len4 FLOW_CONTROL_ERROR)`, 'a stream error');
    // the connection serves on (the overrun stream's DATA already in flight is discarded)
    w.send(windowUpdateFrame(0, MAX_WINDOW - 65535));
    w.request(3, '/');
    const res = await w.response(3);
    tt.equal(res.status, '200');
    tt.equal(res.body.toString(), DIRECT_BODY);
  });

  t.test('requests: DATA beyond the connection window (65,535) -> GOAWAY FLOW_CONTROL_ERROR', async (tt) => {
    const w = await open(tt, smallConn.port, [[SETTING.INITIAL_WINDOW_SIZE, MAX_WINDOW]]);
    w.send(headersFrame(1, requestBlock('/bh/upload', [], 'POST')));
    const f = await overrun(w, 1);
    tt.equal(f.type, FRAME.GOAWAY, `a connection error: ${describeFrame(f)}`);
    await w.expectGoaway(ERR.FLOW_CONTROL_ERROR);
  });

  t.test('requests: a 1 MB upload within the windows completes (keel replenishes them)', async (tt) => {
    const w = await open(tt, small.port, [[SETTING.INITIAL_WINDOW_SIZE, MAX_WINDOW]]);
    w.send(windowUpdateFrame(0, MAX_WINDOW - 65535));
    await w.ping(); // the server's SETTINGS are in
    const body = Buffer.alloc(1 << 20);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 0xff;
    w.send(headersFrame(1, requestBlock('/up/echo', ['content-length', String(body.length)], 'POST')));
    let streamWin = w.serverSettings.get(SETTING.INITIAL_WINDOW_SIZE) ?? 65535;
    let connWin = 65535;
    let scanned = 0;
    const scan = (): void => {
      for (; scanned < w.frames.length; scanned++) {
        const f = w.frames[scanned];
        if (f.type === FRAME.WINDOW_UPDATE && f.streamId === 0) connWin += f.payload.readUInt32BE(0) & 0x7fffffff;
        if (f.type === FRAME.WINDOW_UPDATE && f.streamId === 1) streamWin += f.payload.readUInt32BE(0) & 0x7fffffff;
      }
      noErrors(w, 1);
    };
    let off = 0;
    let waits = 0;
    while (off < body.length) {
      scan();
      const n = Math.min(16384, streamWin, connWin, body.length - off);
      if (n <= 0) {
        waits++;
        await w.until(() => (scan(), Math.min(streamWin, connWin) > 0), `window to send more (at ${off} of ${body.length})`);
        continue;
      }
      w.send(dataFrame(1, body.subarray(off, off + n), { endStream: off + n === body.length }));
      off += n;
      streamWin -= n;
      connWin -= n;
    }
    const res = await w.response(1);
    tt.equal(res.status, '200');
    tt.equal(res.body.length, body.length, 'the echo is complete');
    tt.ok(res.body.equals(body), 'byte for byte');
    tt.ok(waits > 0, `the client did wait for WINDOW_UPDATEs (${waits} times): the windows were 65,535`);
  });

  // ---- 8. max_concurrent_streams
  t.test('max_concurrent_streams: 1 -> advertised; a second stream in flight is REFUSED_STREAM', async (tt) => {
    const w = await connectH2(oneStream.port, tt);
    await serverPreface(w);
    tt.equal(w.serverSettings.get(SETTING.MAX_CONCURRENT_STREAMS), 1, 'SETTINGS_MAX_CONCURRENT_STREAMS = 1');
    w.request(1, '/up/hold/mcs-first');
    await up.held('mcs-first');
    w.request(3, '/');
    await w.expectRst(3, ERR.REFUSED_STREAM);
    up.release('mcs-first', 'first-done');
    const res = await w.response(1);
    tt.equal(res.status, '200');
    tt.equal(res.body.toString(), 'first-done', 'the first stream completes');
    w.request(5, '/');
    tt.equal((await w.response(5)).status, '200', 'a stream after it is served');
  });
}
void main();
