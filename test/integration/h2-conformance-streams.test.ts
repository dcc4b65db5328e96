// HTTP/2 wire conformance, part 4: responses (framing of HEADERS/DATA/CONTINUATION/trailers, HEAD),
// client GOAWAY and RST_STREAM, rapid-reset protection (CVE-2023-44487, Envoy's premature-reset
// limits) and graceful drain (GOAWAY NO_ERROR, streams in flight finish) on keel's downstream h2c.
// Raw frames through test/helpers/h2-wire.ts; every test has its own connection.
import t, { type Test } from 'tap';
import {
  connectH2, dataFrame, describeFrame, encodeHeaders, DIRECT_BODY, ERR, errName, FLAG, FRAME, goawayFrame, headersFrame, headerValue, parseGoaway, requestBlock,
  rstStreamFrame, serverPreface, startConformanceKeel, startConformanceUpstream, type H2Wire,
} from '../helpers/h2-wire';

// one at a time: the rapid-reset loops keep this process busy
t.setTimeout(240_000);

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_r, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    }),
  ]);
}

async function main(): Promise<void> {
  const up = await startConformanceUpstream();
  t.teardown(() => up.close());
  const keel = (await startConformanceKeel(t, '', up)).keel;
  const drainKeel = (await startConformanceKeel(t, '', up)).keel;

  async function open(tt: Test, port = keel.port): Promise<H2Wire> {
    const w = await connectH2(port, tt);
    await serverPreface(w);
    return w;
  }

  // ---- 9. responses
  t.test('responses: HEADERS, then DATA with END_STREAM on the last frame only', async (tt) => {
    const w = await open(tt);
    w.request(1, '/up/big/40000');
    const res = await w.response(1);
    await w.ping();
    const frames = w.frames.filter((f) => f.streamId === 1);
    tt.equal(frames[0].type, FRAME.HEADERS, 'HEADERS first');
    tt.equal(frames[0].flags & FLAG.END_STREAM, 0, 'HEADERS without END_STREAM');
    tt.ok(frames.slice(1).every((f) => f.type === FRAME.DATA), `then only DATA: ${frames.map(describeFrame).join(', ')}`);
    tt.ok(frames.slice(0, -1).every((f) => !(f.flags & FLAG.END_STREAM)), 'END_STREAM only on the last');
    tt.equal(frames[frames.length - 1].flags & FLAG.END_STREAM, FLAG.END_STREAM, 'END_STREAM on the last DATA');
    tt.equal(res.body.length, 40000);
  });

  t.test('responses: an empty body is HEADERS with END_STREAM', async (tt) => {
    const w = await open(tt);
    w.request(1, '/up/big/0');
    const res = await w.response(1);
    tt.equal(res.status, '200');
    await w.ping();
    const frames = w.frames.filter((f) => f.streamId === 1);
    tt.same(frames.map((f) => f.type), [FRAME.HEADERS], `one HEADERS frame: ${frames.map(describeFrame).join(', ')}`);
    tt.equal(frames[0].flags & FLAG.END_STREAM, FLAG.END_STREAM, 'with END_STREAM');
  });

  for (const path of ['/', '/up/big/100']) {
    t.test(`responses: a HEAD request (${path}) gets no DATA`, async (tt) => {
      const w = await open(tt);
      w.request(1, path, { method: 'HEAD' });
      const res = await w.response(1);
      tt.equal(res.status, '200');
      await w.ping();
      const frames = w.frames.filter((f) => f.streamId === 1);
      tt.same(
        frames.filter((f) => f.type === FRAME.DATA && f.length > 0).map(describeFrame),
        [],
        'no DATA with a payload',
      );
      tt.equal(res.body.length, 0);
    });
  }

  t.test('responses: a header block over 16 KB arrives as HEADERS + CONTINUATION', async (tt) => {
    const w = await open(tt);
    w.request(1, '/up/bighdr/20000');
    const res = await w.response(1);
    tt.equal(res.status, '200');
    const block = res.frames.filter((f) => f.type === FRAME.HEADERS || f.type === FRAME.CONTINUATION);
    tt.equal(block[0].type, FRAME.HEADERS);
    tt.ok(block.length >= 2, `HEADERS + CONTINUATION: ${block.map(describeFrame).join(', ')}`);
    tt.ok(block.slice(1).every((f) => f.type === FRAME.CONTINUATION), 'then CONTINUATIONs');
    tt.ok(block.slice(0, -1).every((f) => !(f.flags & FLAG.END_HEADERS)), 'END_HEADERS only on the last');
    tt.equal(block[block.length - 1].flags & FLAG.END_HEADERS, FLAG.END_HEADERS);
    tt.ok(block.every((f) => f.length <= 16384), 'every frame within SETTINGS_MAX_FRAME_SIZE');
    if (res.headers.length > 2) tt.equal(headerValue(res.headers, 'x-big')?.length, 20000, 'the header survives whole');
    tt.equal(res.body.toString(), 'ok');
  });

  t.test('responses: upstream trailers arrive as a final HEADERS with END_STREAM', async (tt) => {
    const w = await open(tt);
    w.request(1, '/up/trailers', { extra: ['te', 'trailers'] });
    const res = await w.response(1);
    tt.equal(res.status, '200');
    tt.equal(res.body.toString(), 'body');
    const heads = res.frames.filter((f) => f.type === FRAME.HEADERS);
    tt.equal(heads.length, 2, `two HEADERS: ${res.frames.map(describeFrame).join(', ')}`);
    const last = res.frames[res.frames.length - 1];
    tt.equal(last.type, FRAME.HEADERS, 'the last frame is the trailers HEADERS');
    tt.equal(last.flags & FLAG.END_STREAM, FLAG.END_STREAM, 'with END_STREAM');
    tt.ok(res.frames.filter((f) => f.type === FRAME.DATA).every((f) => !(f.flags & FLAG.END_STREAM)), 'no DATA carries END_STREAM');
    if (res.trailers && res.trailers.length > 0) {
      tt.equal(headerValue(res.trailers, 'grpc-status'), '0', 'grpc-status in the trailers');
      tt.notOk(res.trailers.some((v, i) => i % 2 === 0 && v.startsWith(':')), 'no pseudo-header in the trailers');
    }
  });

  t.test('responses: trailers from a gRPC-like HTTP/2 upstream arrive as a final HEADERS with END_STREAM', async (tt) => {
    const w = await open(tt);
    w.send(
      headersFrame(1, requestBlock('/grpc/keeltest.Echo/Unary', ['content-type', 'application/grpc', 'te', 'trailers'], 'POST')),
      dataFrame(1, 'grpc-frame', { endStream: true }),
    );
    const res = await w.response(1);
    tt.equal(res.status, '200');
    tt.equal(res.body.toString(), 'grpc-frame', 'the body came back');
    const last = res.frames[res.frames.length - 1];
    tt.equal(last.type, FRAME.HEADERS, `the last frame is the trailers HEADERS: ${res.frames.map(describeFrame).join(', ')}`);
    tt.equal(last.flags & FLAG.END_STREAM, FLAG.END_STREAM, 'with END_STREAM');
    tt.ok(res.frames.filter((f) => f.type === FRAME.DATA).every((f) => !(f.flags & FLAG.END_STREAM)), 'no DATA carries END_STREAM');
    if (res.trailers && res.trailers.length > 0) {
      tt.equal(headerValue(res.trailers, 'grpc-status'), '0');
      tt.equal(headerValue(res.trailers, 'grpc-message'), 'fine');
    }
  });

  t.test('requests: trailers (a second HEADERS with END_STREAM) are accepted and forwarded', async (tt) => {
    const w = await open(tt);
    // twice: the first may wait for a new upstream connection, the second finds one ready
    for (const id of [1, 3]) {
      w.send(
        headersFrame(id, requestBlock('/grpc/with-trailers', ['content-type', 'application/grpc', 'te', 'trailers'], 'POST')),
        dataFrame(id, 'part-1,'),
        dataFrame(id, 'part-2'),
        headersFrame(id, encodeHeaders(['x-request-trailer', 'yes']), { endStream: true }),
      );
      const res = await w.response(id);
      tt.equal(res.status, '200', `stream ${id}: 200`);
      tt.equal(res.body.toString(), 'part-1,part-2', `stream ${id}: the whole body reached the upstream`);
      tt.ok(res.trailers, `stream ${id}: response trailers came`);
      if (res.trailers && res.trailers.length > 0) tt.equal(headerValue(res.trailers, 'x-request-trailer-seen'), 'yes', `stream ${id}: the upstream got the request trailer`);
    }
  });

  t.test('streams: two uploads with interleaved DATA frames are kept apart', async (tt) => {
    const w = await open(tt);
    w.send(headersFrame(1, requestBlock('/up/echo', [], 'POST')), headersFrame(3, requestBlock('/up/echo', [], 'POST')));
    for (let i = 0; i < 5; i++) w.send(dataFrame(1, `a${i};`), dataFrame(3, `b${i};`));
    w.send(dataFrame(3, 'end-b', { endStream: true }), dataFrame(1, 'end-a', { endStream: true }));
    const [a, b] = await Promise.all([w.response(1), w.response(3)]);
    tt.equal(a.body.toString(), 'a0;a1;a2;a3;a4;end-a');
    tt.equal(b.body.toString(), 'b0;b1;b2;b3;b4;end-b');
  });

  t.test('streams: 100 concurrent requests on one connection are all answered', async (tt) => {
    const w = await open(tt);
    const ids = Array.from({ length: 100 }, (_, i) => 1 + 2 * i);
    w.send(...ids.map((id) => headersFrame(id, requestBlock(id % 4 === 1 ? '/' : `/up/big/${id}`), { endStream: true })));
    const results = await Promise.all(ids.map((id) => w.response(id)));
    results.forEach((r, i) => {
      const id = ids[i];
      if (r.status !== '200') tt.fail(`stream ${id}: ${r.status}`);
      const want = id % 4 === 1 ? DIRECT_BODY.length : id;
      if (r.body.length !== want) tt.fail(`stream ${id}: ${r.body.length} bytes, wanted ${want}`);
    });
    tt.pass('all 100 answered with their own bodies');
  });

  // ---- 10. client GOAWAY and RST_STREAM
  t.test('client GOAWAY: a stream already in flight still completes', async (tt) => {
    const w = await open(tt);
    w.request(1, '/up/hold/client-goaway');
    await up.held('client-goaway');
    w.send(goawayFrame(1, ERR.NO_ERROR));
    await w.ping();
    up.release('client-goaway', 'after-goaway');
    const res = await w.response(1);
    tt.equal(res.status, '200');
    tt.equal(res.body.toString(), 'after-goaway');
  });

  t.test('client RST_STREAM: the upstream request is aborted, the connection serves on', async (tt) => {
    const w = await open(tt);
    w.request(1, '/up/hold/client-rst');
    await up.held('client-rst');
    w.send(rstStreamFrame(1, ERR.CANCEL));
    await within(up.aborted('client-rst'), 5000, 'the upstream to see its request closed');
    tt.pass('the upstream request was closed');
    w.request(3, '/');
    const res = await w.response(3);
    tt.equal(res.status, '200');
    tt.equal(res.body.toString(), DIRECT_BODY);
    tt.notOk(w.frames.some((f) => f.streamId === 1 && (f.type === FRAME.HEADERS || f.type === FRAME.DATA)), 'nothing sent on the reset stream');
  });

  // ---- 11. rapid reset (CVE-2023-44487)
  t.test('rapid reset: opening and cancelling streams in a loop gets the connection closed before 1,000', async (tt) => {
    const w = await open(tt);
    let id = 1;
    let opened = 0;
    const BATCH = 50;
    while (opened < 1000 && !w.isClosed && !w.frames.some((f) => f.type === FRAME.GOAWAY)) {
      const frames: Buffer[] = [];
      for (let i = 0; i < BATCH; i++, id += 2, opened++) frames.push(headersFrame(id, requestBlock(`/bh/rapid-${id}`), { endStream: true }), rstStreamFrame(id, ERR.CANCEL));
      w.send(...frames);
      try {
        await w.ping();
      } catch {
        break; // closed
      }
    }
    await w.expectClose(`the connection to close (after ${opened} cancelled streams)`);
    tt.comment(`closed after ${opened} cancelled streams were sent; ${w.frames.filter((f) => f.type === FRAME.GOAWAY).map(describeFrame).join(', ') || 'no GOAWAY'}`);
    const goaway = w.frames.find((f) => f.type === FRAME.GOAWAY);
    if (goaway) tt.equal(errName(parseGoaway(goaway).code), 'ENHANCE_YOUR_CALM', `the GOAWAY says ENHANCE_YOUR_CALM (${describeFrame(goaway)})`);
    const lastSeen = goaway ? parseGoaway(goaway).lastStreamId : id - 2;
    tt.ok(lastSeen < 1999, `closed before the 1,000th stream (last stream ${lastSeen}, ${opened} sent)`);
  });

  t.test('rapid reset: a few resets among many completed streams do not close the connection', async (tt) => {
    const w = await open(tt);
    let id = 1;
    let completed = 0;
    let resets = 0;
    for (let batch = 0; batch < 30; batch++) {
      const ids: number[] = [];
      const frames: Buffer[] = [];
      for (let i = 0; i < 20; i++, id += 2) {
        if (i === 7) {
          frames.push(headersFrame(id, requestBlock(`/bh/few-${id}`), { endStream: true }), rstStreamFrame(id, ERR.CANCEL));
          resets++;
        } else {
          frames.push(headersFrame(id, requestBlock('/'), { endStream: true }));
          ids.push(id);
        }
      }
      w.send(...frames);
      for (const s of ids) {
        const res = await w.response(s);
        if (res.status !== '200') tt.fail(`stream ${s}: ${res.status}`);
        completed++;
      }
    }
    await w.ping();
    tt.equal(completed, 570, `570 streams completed, ${resets} reset`);
    tt.notOk(w.frames.some((f) => f.type === FRAME.GOAWAY), 'no GOAWAY');
    tt.notOk(w.isClosed, 'still open');
  });

  // ---- 12. graceful drain (its own keel: draining is for the whole server)
  t.test('drain: GOAWAY NO_ERROR with the last stream id, the stream in flight completes', async (tt) => {
    const w = await open(tt, drainKeel.port);
    w.request(1, '/');
    await w.response(1);
    w.request(3, '/up/hold/drain');
    await up.held('drain');
    drainKeel.server.drainListeners({ graceful: true });
    const first = parseGoaway(await w.waitFor((f) => f.type === FRAME.GOAWAY, 'a GOAWAY once keel drains'));
    tt.equal(errName(first.code), 'NO_ERROR', 'GOAWAY NO_ERROR');
    up.release('drain', 'drained');
    const res = await w.response(3);
    tt.equal(res.status, '200');
    tt.equal(res.body.toString(), 'drained', 'the stream in flight completes');
    await w.expectClose('keel to close the drained connection');
    const goaways = w.frames.filter((f) => f.type === FRAME.GOAWAY).map(parseGoaway);
    tt.ok(goaways.every((g) => g.code === ERR.NO_ERROR), 'every GOAWAY says NO_ERROR');
    tt.equal(goaways[goaways.length - 1].lastStreamId, 3, 'the last GOAWAY names the last stream the client sent');
  });
}
void main();
