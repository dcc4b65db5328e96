// HTTP/2 wire conformance (RFC 9113), part 1: connection preface, SETTINGS, PING and the framing
// layer (frame sizes, stream ids, CONTINUATION, padding, priority, RST_STREAM, WINDOW_UPDATE,
// stream states, HPACK errors) of keel's downstream h2c (prior knowledge, codec_type AUTO).
// Raw frames through test/helpers/h2-wire.ts; every test has its own connection.
import t, { type Test } from 'tap';
import {
  connectH2, describeFrame, errName, parseGoaway, continuationFrame, dataFrame, DIRECT_BODY, encodeHeaders, ERR, FLAG, frame, FRAME, headersFrame, pingFrame, priorityFrame,
  pushPromiseFrame, rawFrame, requestBlock, rstStreamFrame, serverPreface, SETTING, settingsFrame, startConformanceKeel, windowUpdateFrame, type H2Wire,
} from '../helpers/h2-wire';

// independent connections: a few at a time (a failing wait costs its deadline, not the file's)
t.jobs = 4;
t.setTimeout(240_000);

async function main(): Promise<void> {
  const { keel, up } = await startConformanceKeel(t);
  const port = keel.port;

  /** A connection past the preface exchange (server SETTINGS read, its ACK of ours seen). */
  async function open(tt: Test, settings?: readonly (readonly [number, number])[]): Promise<H2Wire> {
    const w = await connectH2(port, tt, settings ? { settings } : {});
    await serverPreface(w);
    return w;
  }
  /** A GET on `id` answered 200 with the direct body: the connection still works. */
  async function works(tt: Test, w: H2Wire, id: number): Promise<void> {
    w.request(id, '/');
    const res = await w.response(id);
    tt.equal(res.status, '200', `stream ${id} answered 200`);
    tt.equal(res.body.toString(), DIRECT_BODY);
  }

  /** Opens stream `id` on /up/hold/<key> (HEADERS with END_STREAM) and waits until the upstream has it. */
  async function inFlight(w: H2Wire, id: number, key: string): Promise<void> {
    w.request(id, `/up/hold/${key}`);
    await up.held(key);
  }
  /** A stream error (RST_STREAM `code`) or, where the RFC allows either, a connection error with the same code. */
  async function streamOrConnectionError(tt: Test, w: H2Wire, id: number, code: number): Promise<void> {
    const f = await w.waitFor((x) => (x.type === FRAME.RST_STREAM && x.streamId === id) || x.type === FRAME.GOAWAY, `RST_STREAM or GOAWAY ${errName(code)}`);
    const got = f.type === FRAME.GOAWAY ? parseGoaway(f).code : f.payload.readUInt32BE(0);
    tt.equal(errName(got), errName(code), `${describeFrame(f)} carries ${errName(code)}`);
    if (f.type === FRAME.GOAWAY) await w.expectClose();
  }

  // ---- 1. preface
  t.test('preface: the server opens with SETTINGS and ACKs the client SETTINGS', async (tt) => {
    const w = await connectH2(port, tt);
    const first = await w.next();
    tt.equal(first.type, FRAME.SETTINGS, `first frame is SETTINGS: ${describeFrame(first)}`);
    tt.equal(first.flags & FLAG.ACK, 0, 'and not an ACK');
    tt.equal(first.streamId, 0);
    const ack = await w.waitFor((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) !== 0, 'the SETTINGS ACK');
    tt.equal(ack.length, 0, 'the ACK is empty');
    await works(tt, w, 1);
  });

  t.test('preface: a bad connection preface closes the connection', async (tt) => {
    const w = await connectH2(port, tt, { preface: Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r', 'latin1'), settings: false });
    w.send(settingsFrame());
    await w.expectClose();
    const goaway = w.frames.find((f) => f.type === FRAME.GOAWAY);
    if (goaway) tt.equal(errName(parseGoaway(goaway).code), 'PROTOCOL_ERROR', 'a GOAWAY before the close says PROTOCOL_ERROR');
    tt.notOk(w.frames.some((f) => f.type === FRAME.HEADERS), 'nothing was served');
  });

  t.test('preface: a first frame other than SETTINGS -> PROTOCOL_ERROR', async (tt) => {
    const w = await connectH2(port, tt, { settings: false });
    w.send(pingFrame());
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  // ---- 2. SETTINGS
  const settingsErrors: [string, () => Buffer, number][] = [
    ['SETTINGS ACK with a payload', () => frame(FRAME.SETTINGS, FLAG.ACK, 0, Buffer.alloc(6)), ERR.FRAME_SIZE_ERROR],
    ['SETTINGS of length 3 (not a multiple of 6)', () => frame(FRAME.SETTINGS, 0, 0, Buffer.from([0, 3, 0])), ERR.FRAME_SIZE_ERROR],
    ['SETTINGS of length 7', () => frame(FRAME.SETTINGS, 0, 0, Buffer.concat([settingsFrame([[SETTING.MAX_CONCURRENT_STREAMS, 100]]).subarray(9), Buffer.alloc(1)])), ERR.FRAME_SIZE_ERROR],
    ['SETTINGS on stream 1', () => rawFrame(6, FRAME.SETTINGS, 0, 1, settingsFrame([[SETTING.MAX_CONCURRENT_STREAMS, 100]]).subarray(9)), ERR.PROTOCOL_ERROR],
    ['SETTINGS_ENABLE_PUSH = 2', () => settingsFrame([[SETTING.ENABLE_PUSH, 2]]), ERR.PROTOCOL_ERROR],
    ['SETTINGS_INITIAL_WINDOW_SIZE = 2^31', () => settingsFrame([[SETTING.INITIAL_WINDOW_SIZE, 2 ** 31]]), ERR.FLOW_CONTROL_ERROR],
    ['SETTINGS_MAX_FRAME_SIZE = 16383', () => settingsFrame([[SETTING.MAX_FRAME_SIZE, 16383]]), ERR.PROTOCOL_ERROR],
    ['SETTINGS_MAX_FRAME_SIZE = 2^24', () => settingsFrame([[SETTING.MAX_FRAME_SIZE, 2 ** 24]]), ERR.PROTOCOL_ERROR],
  ];
  for (const [name, build, code] of settingsErrors) {
    t.test(`settings: ${name} -> ${errName(code)}`, async (tt) => {
      const w = await open(tt);
      w.send(build());
      await w.expectGoaway(code);
      tt.pass();
    });
  }

  t.test('settings: an unknown setting id is ignored', async (tt) => {
    const w = await open(tt);
    w.send(settingsFrame([[0xff, 1], [0x4242, 0xffffffff]]));
    const ack = await w.waitFor((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) !== 0 && w.frames.filter((x) => x.type === FRAME.SETTINGS && x.flags & FLAG.ACK).length === 2, 'the ACK of the second SETTINGS');
    tt.equal(ack.length, 0);
    await works(tt, w, 1);
  });

  t.test('settings: SETTINGS_HEADER_TABLE_SIZE = 0 -> response blocks never use the dynamic table', async (tt) => {
    const w = await connectH2(port, tt, { settings: [[SETTING.HEADER_TABLE_SIZE, 0]], decoderTableSize: 0 });
    await serverPreface(w);
    for (const id of [1, 3, 5]) {
      w.request(id, '/');
      const res = await w.response(id);
      tt.equal(res.status, '200', `stream ${id}: decoded with a table of 0 (${res.headers.join(' ').slice(0, 120)})`);
      tt.equal(res.body.toString(), DIRECT_BODY);
    }
  });

  // ---- 3. PING
  t.test('ping: answered with an ACK carrying the same 8 bytes', async (tt) => {
    const w = await open(tt);
    const data = Buffer.from('01234567');
    w.send(pingFrame(data));
    const ack = await w.waitFor((f) => f.type === FRAME.PING, 'the PING ACK');
    tt.equal(ack.flags & FLAG.ACK, FLAG.ACK, 'ACK flag');
    tt.equal(ack.streamId, 0);
    tt.same(ack.payload, data, 'same opaque data');
  });

  t.test('ping: length 7 -> FRAME_SIZE_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(frame(FRAME.PING, 0, 0, Buffer.alloc(7)));
    await w.expectGoaway(ERR.FRAME_SIZE_ERROR);
    tt.pass();
  });

  t.test('ping: length 9 -> FRAME_SIZE_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(frame(FRAME.PING, 0, 0, Buffer.alloc(9)));
    await w.expectGoaway(ERR.FRAME_SIZE_ERROR);
    tt.pass();
  });

  t.test('ping: on stream 1 -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(frame(FRAME.PING, 0, 1, Buffer.alloc(8)));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('ping: a PING with ACK from the client gets no reply', async (tt) => {
    const w = await open(tt);
    w.send(pingFrame(Buffer.from('unasked!'), true));
    const between = await w.ping();
    tt.notOk(
      between.some((f) => f.type === FRAME.PING),
      `no PING before the ACK of ours: ${between.map(describeFrame).join(', ')}`,
    );
    await works(tt, w, 1);
  });

  // ---- 4. frames
  t.test('frames: an unknown frame type is ignored', async (tt) => {
    const w = await open(tt);
    w.send(frame(0x20, 0xff, 0, Buffer.from('whatever')), frame(0xfa, 0, 1, Buffer.alloc(10)));
    await works(tt, w, 1);
  });

  t.test('frames: an unknown frame type between HEADERS and DATA is ignored', async (tt) => {
    const w = await open(tt);
    w.send(headersFrame(1, requestBlock('/up/echo', [], 'POST')), frame(0x20, 0, 1, Buffer.from('x')), dataFrame(1, 'hello', { endStream: true }));
    const res = await w.response(1);
    tt.equal(res.status, '200');
    tt.equal(res.body.toString(), 'hello');
  });

  t.test('frames: DATA on stream 0 -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(dataFrame(0, 'x'));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: a HEADERS frame longer than SETTINGS_MAX_FRAME_SIZE (16385) -> FRAME_SIZE_ERROR', async (tt) => {
    const w = await open(tt);
    const block = requestBlock('/', ['x-pad', 'p'.repeat(16385)]);
    tt.ok(block.length > 16384);
    w.send(headersFrame(1, block, { endStream: true }));
    await w.expectGoaway(ERR.FRAME_SIZE_ERROR);
    tt.pass();
  });

  t.test('frames: a DATA frame of 16385 bytes -> FRAME_SIZE_ERROR (stream or connection)', async (tt) => {
    const w = await open(tt);
    w.send(headersFrame(1, requestBlock('/up/echo', [], 'POST')), dataFrame(1, Buffer.alloc(16385, 'd'), { endStream: true }));
    await streamOrConnectionError(tt, w, 1, ERR.FRAME_SIZE_ERROR);
  });

  t.test('frames: a DATA frame of exactly 16384 bytes is fine', async (tt) => {
    const w = await open(tt);
    w.send(headersFrame(1, requestBlock('/up/echo', [], 'POST')), dataFrame(1, Buffer.alloc(16384, 'd'), { endStream: true }));
    const res = await w.response(1);
    tt.equal(res.status, '200');
    tt.equal(res.body.length, 16384);
  });

  t.test('frames: HEADERS on an even stream id -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(headersFrame(2, requestBlock('/'), { endStream: true }));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: a new stream id lower than a previous one -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    await works(tt, w, 5);
    w.send(headersFrame(3, requestBlock('/'), { endStream: true }));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: CONTINUATION without a preceding HEADERS -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(continuationFrame(1, requestBlock('/')));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: CONTINUATION after a complete header block -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(headersFrame(1, requestBlock('/up/echo', [], 'POST')), continuationFrame(1, encodeHeaders(['x-late', '1'])));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: HEADERS without END_HEADERS followed by a PING -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(headersFrame(1, requestBlock('/'), { endStream: true, endHeaders: false }), pingFrame());
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: HEADERS without END_HEADERS followed by CONTINUATION on another stream -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    const block = requestBlock('/');
    w.send(headersFrame(1, block.subarray(0, 5), { endStream: true, endHeaders: false }), continuationFrame(3, block.subarray(5)));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: a header block over HEADERS + two CONTINUATIONs', async (tt) => {
    const w = await open(tt);
    const block = requestBlock('/', ['x-one', 'a'.repeat(50)]);
    const a = 7;
    const b = 40;
    w.send(headersFrame(1, block.subarray(0, a), { endStream: true, endHeaders: false }), continuationFrame(1, block.subarray(a, b), false), continuationFrame(1, block.subarray(b), true));
    const res = await w.response(1);
    tt.equal(res.status, '200');
    tt.equal(res.body.toString(), DIRECT_BODY);
  });

  t.test('frames: padded HEADERS and padded DATA', async (tt) => {
    const w = await open(tt);
    w.send(headersFrame(1, requestBlock('/up/echo', [], 'POST'), { padLength: 17 }), dataFrame(1, 'padded-body', { padLength: 30 }), dataFrame(1, '!', { padLength: 0, endStream: true }));
    const res = await w.response(1);
    tt.equal(res.status, '200');
    tt.equal(res.body.toString(), 'padded-body!', 'the padding is not part of the body');
  });

  t.test('frames: HEADERS padding length >= the payload length -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    const block = requestBlock('/');
    const payload = Buffer.concat([Buffer.from([block.length + 1]), block]);
    w.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM | FLAG.PADDED, 1, payload));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: DATA padding length >= the payload length -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(headersFrame(1, requestBlock('/up/echo', [], 'POST')), frame(FRAME.DATA, FLAG.PADDED | FLAG.END_STREAM, 1, Buffer.from([5, 1, 2, 3, 4])));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: HEADERS with the PRIORITY flag', async (tt) => {
    const w = await open(tt);
    w.send(headersFrame(1, requestBlock('/'), { endStream: true, priority: { dependency: 0, weight: 256, exclusive: true } }));
    const res = await w.response(1);
    tt.equal(res.status, '200');
    tt.equal(res.body.toString(), DIRECT_BODY);
  });

  t.test('frames: PRIORITY of length 4 -> RST_STREAM FRAME_SIZE_ERROR, the connection goes on', async (tt) => {
    const w = await open(tt);
    await inFlight(w, 1, 'priority-len4');
    w.send(frame(FRAME.PRIORITY, 0, 1, Buffer.alloc(4)));
    await w.expectRst(1, ERR.FRAME_SIZE_ERROR);
    await works(tt, w, 3);
  });

  t.test('frames: PRIORITY on an idle stream is fine', async (tt) => {
    const w = await open(tt);
    w.send(priorityFrame(3, { dependency: 0, weight: 10 }));
    await works(tt, w, 5);
  });

  t.test('frames: HEADERS depending on its own stream -> RST_STREAM PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(headersFrame(1, requestBlock('/'), { endStream: true, priority: { dependency: 1 } }));
    await w.expectRst(1, ERR.PROTOCOL_ERROR);
    await works(tt, w, 3);
  });

  t.test('frames: PRIORITY making a stream depend on itself -> RST_STREAM PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    await inFlight(w, 1, 'priority-self');
    w.send(priorityFrame(1, { dependency: 1 }));
    await w.expectRst(1, ERR.PROTOCOL_ERROR);
    await works(tt, w, 3);
  });

  t.test('frames: PUSH_PROMISE from the client -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    await inFlight(w, 1, 'push-promise');
    w.send(pushPromiseFrame(1, 2, requestBlock('/')));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: DATA on an idle stream -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(dataFrame(1, 'x', { endStream: true }));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: RST_STREAM on an idle stream -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(rstStreamFrame(1, ERR.CANCEL));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: WINDOW_UPDATE on an idle stream -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(windowUpdateFrame(1, 100));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: RST_STREAM of length 3 -> FRAME_SIZE_ERROR', async (tt) => {
    const w = await open(tt);
    await inFlight(w, 1, 'rst-len3');
    w.send(frame(FRAME.RST_STREAM, 0, 1, Buffer.alloc(3)));
    await w.expectGoaway(ERR.FRAME_SIZE_ERROR);
    tt.pass();
  });

  t.test('frames: RST_STREAM on stream 0 -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(rstStreamFrame(0, ERR.CANCEL));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: WINDOW_UPDATE of length 3 -> FRAME_SIZE_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(frame(FRAME.WINDOW_UPDATE, 0, 0, Buffer.from([0, 0, 1])));
    await w.expectGoaway(ERR.FRAME_SIZE_ERROR);
    tt.pass();
  });

  t.test('frames: WINDOW_UPDATE with increment 0 on stream 0 -> PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(windowUpdateFrame(0, 0));
    await w.expectGoaway(ERR.PROTOCOL_ERROR);
    tt.pass();
  });

  t.test('frames: WINDOW_UPDATE with increment 0 on an open stream -> RST_STREAM PROTOCOL_ERROR', async (tt) => {
    const w = await open(tt);
    await inFlight(w, 1, 'wu-zero');
    w.send(windowUpdateFrame(1, 0));
    await w.expectRst(1, ERR.PROTOCOL_ERROR);
    await works(tt, w, 3);
  });

  t.test('frames: the connection window pushed past 2^31-1 -> FLOW_CONTROL_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(windowUpdateFrame(0, 2 ** 31 - 1));
    await w.expectGoaway(ERR.FLOW_CONTROL_ERROR);
    tt.pass();
  });

  t.test('frames: a stream window pushed past 2^31-1 -> RST_STREAM FLOW_CONTROL_ERROR', async (tt) => {
    const w = await open(tt);
    await inFlight(w, 1, 'wu-overflow');
    w.send(windowUpdateFrame(1, 2 ** 31 - 1));
    await w.expectRst(1, ERR.FLOW_CONTROL_ERROR);
    await works(tt, w, 3);
  });

  t.test('frames: DATA on a half-closed (remote) stream -> STREAM_CLOSED', async (tt) => {
    const w = await open(tt);
    await inFlight(w, 1, 'half-closed');
    w.send(dataFrame(1, 'late'));
    await streamOrConnectionError(tt, w, 1, ERR.STREAM_CLOSED);
  });

  /** A GOAWAY whose code is one of `codes`, then the close. */
  async function goawayOneOf(tt: Test, w: H2Wire, codes: number[]): Promise<void> {
    const f = await w.waitFor((x) => x.type === FRAME.GOAWAY, `GOAWAY ${codes.map(errName).join(' or ')}`);
    tt.ok(codes.includes(parseGoaway(f).code), `${describeFrame(f)} is ${codes.map(errName).join(' or ')}`);
    await w.expectClose();
  }

  t.test('frames: HEADERS reopening a closed stream -> PROTOCOL_ERROR or STREAM_CLOSED', async (tt) => {
    const w = await open(tt);
    await works(tt, w, 1);
    w.send(headersFrame(1, requestBlock('/'), { endStream: true }));
    await goawayOneOf(tt, w, [ERR.PROTOCOL_ERROR, ERR.STREAM_CLOSED]);
  });

  t.test('frames: DATA on a closed stream -> STREAM_CLOSED, or ignored (RFC 9113 5.1: MAY)', async (tt) => {
    const w = await open(tt);
    await works(tt, w, 1);
    await w.ping();
    w.send(dataFrame(1, 'late', { endStream: true }));
    await w.ping().catch(() => {}); // an error closes the connection before the ACK
    const err = w.frames.find((f) => f.type === FRAME.GOAWAY || (f.type === FRAME.RST_STREAM && f.streamId === 1));
    if (err) {
      const code = err.type === FRAME.GOAWAY ? parseGoaway(err).code : err.payload.readUInt32BE(0);
      tt.equal(errName(code), 'STREAM_CLOSED', `answered with ${describeFrame(err)}`);
      if (err.type === FRAME.GOAWAY) await w.expectClose();
      else await works(tt, w, 3); // a stream error: the connection serves on
    } else {
      await works(tt, w, 3); // ignored: the connection serves on
    }
  });

  t.test('frames: WINDOW_UPDATE, PRIORITY and RST_STREAM on a just-closed stream are ignored', async (tt) => {
    const w = await open(tt);
    await works(tt, w, 1);
    w.send(windowUpdateFrame(1, 1000), priorityFrame(1, { dependency: 0 }), rstStreamFrame(1, ERR.CANCEL));
    await works(tt, w, 3);
    tt.notOk(w.frames.some((f) => f.type === FRAME.GOAWAY), 'no GOAWAY');
  });

  t.test('frames: a header block with index 0 -> COMPRESSION_ERROR', async (tt) => {
    const w = await open(tt);
    w.send(headersFrame(1, Buffer.from([0x80]), { endStream: true }));
    await w.expectGoaway(ERR.COMPRESSION_ERROR);
    tt.pass();
  });

  t.test('frames: a header block with an index beyond both tables -> COMPRESSION_ERROR', async (tt) => {
    const w = await open(tt);
    // 0xbf = indexed field 63: past the 61 static entries, and the dynamic table is empty
    w.send(headersFrame(1, Buffer.concat([Buffer.from([0x82, 0x86, 0x84]), Buffer.from([0xbf])]), { endStream: true }));
    await w.expectGoaway(ERR.COMPRESSION_ERROR);
    tt.pass();
  });

  t.test('frames: a header block cut inside a string -> COMPRESSION_ERROR', async (tt) => {
    const w = await open(tt);
    const block = requestBlock('/');
    w.send(headersFrame(1, block.subarray(0, block.length - 3), { endStream: true }));
    await w.expectGoaway(ERR.COMPRESSION_ERROR);
    tt.pass();
  });
}
void main();
