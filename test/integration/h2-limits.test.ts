// The HTTP/2 codec's limits beyond the conformance suite: max_request_headers_kb (431, the
// connection goes on), max_consecutive_inbound_frames_with_empty_payload (Envoy's default 1, and
// configured), and max_outbound_control_frames against a client that makes keel queue PING ACKs
// while it reads nothing.
import t from 'tap';
import { collectEnvoyStats } from '../../src/stats/envoy-stats';
import type { RunningKeel } from '../helpers/keel';
import { waitUntil } from '../helpers/wait';
import { connectH2, continuationFrame, dataFrame, encodeHeaders, ERR, FRAME, h2Options, headersFrame, pingFrame, requestBlock, serverPreface, settingsFrame, SETTING, startConformanceKeel, startConformanceUpstream, windowUpdateFrame } from '../helpers/h2-wire';

/** A counter of keel's /stats by its Envoy name. */
function stat(keel: RunningKeel, name: string): number {
  return collectEnvoyStats(keel.server).find((x) => x.name === name)?.value ?? -1;
}

t.test('a header block over max_request_headers_kb gets 431 and the connection serves on', async (t) => {
  const { keel } = await startConformanceKeel(t, '          max_request_headers_kb: 8\n');
  const w = await connectH2(keel.port, t);
  await serverPreface(w);
  // 20 KB of header value: HEADERS + CONTINUATION, well past the 8 KB limit
  const block = encodeHeaders([':method', 'GET', ':scheme', 'http', ':authority', 'a', ':path', '/', 'x-big', 'v'.repeat(20_000)]);
  w.send(headersFrame(1, block.subarray(0, 16_000), { endStream: true, endHeaders: false }), continuationFrame(1, block.subarray(16_000)));
  const r = await w.response(1);
  t.equal(r.status, '431');
  t.ok(stat(keel, 'http2.header_overflow') >= 1, 'http2.header_overflow counts it');
  w.request(3, '/fine');
  t.equal((await w.response(3)).status, '200', 'the next request on the connection is served');
});

t.test('consecutive empty DATA frames: past Envoy default of 1 the connection ends', async (t) => {
  const { keel } = await startConformanceKeel(t);
  const w = await connectH2(keel.port, t);
  await serverPreface(w);
  const before = stat(keel, 'http2.inbound_empty_frames_flood');
  w.send(headersFrame(1, requestBlock('/up/echo', [], 'POST')), dataFrame(1, ''), dataFrame(1, ''));
  await w.expectGoaway(ERR.PROTOCOL_ERROR);
  t.equal(stat(keel, 'http2.inbound_empty_frames_flood'), before + 1, 'http2.inbound_empty_frames_flood counts it');
});

t.test('consecutive empty DATA frames: within a configured limit of 3 the request completes', async (t) => {
  const { keel } = await startConformanceKeel(t, h2Options({ max_consecutive_inbound_frames_with_empty_payload: 3 }));
  const w = await connectH2(keel.port, t);
  await serverPreface(w);
  w.send(headersFrame(1, requestBlock('/up/echo', [], 'POST')), dataFrame(1, ''), dataFrame(1, ''), dataFrame(1, ''), dataFrame(1, 'body', { endStream: true }));
  const r = await w.response(1);
  t.equal(r.status, '200');
  t.equal(r.body.toString(), 'body');
});

t.test('a client that reads nothing and keeps sending PINGs is cut off (max_outbound_control_frames)', async (t) => {
  const up = await startConformanceUpstream();
  t.teardown(() => up.close());
  const { keel } = await startConformanceKeel(t, h2Options({ max_outbound_control_frames: 20 }), up);
  // Wide windows and a large response fill keel's socket buffers while the client reads nothing;
  // every PING after that is an ACK keel has to queue.
  const w = await connectH2(keel.port, t, { settings: [[SETTING.INITIAL_WINDOW_SIZE, 2 ** 31 - 1]] });
  await serverPreface(w);
  w.send(windowUpdateFrame(0, 2 ** 31 - 1 - 65_535));
  w.request(1, '/up/big/50000000');
  await w.waitFor((f) => f.type === FRAME.DATA && f.streamId === 1, 'the first DATA of the large response');
  w.socket.pause();
  let sent = 0;
  // a deadline only as a safety net: the loop ends when keel closes the connection
  const deadline = Date.now() + 20_000;
  while (!w.socket.destroyed && !w.isClosed && Date.now() < deadline) {
    const ok = w.socket.write(pingFrame(Buffer.alloc(8, sent & 0xff)));
    sent++;
    if (!ok) await new Promise<void>((r) => setImmediate(r));
    if (sent % 100 === 0) await new Promise<void>((r) => setImmediate(r));
  }
  t.ok(w.socket.destroyed || w.isClosed, `keel closed the connection (after ${sent} PINGs)`);
  t.ok(stat(keel, 'http2.outbound_control_flood') >= 1, 'http2.outbound_control_flood counts it');
  t.ok(Date.now() < deadline, 'before the safety deadline');
});

t.test('connection_keepalive: PINGs at the interval; a client that answers stays, one that does not is closed', async (t) => {
  const ka = `          http2_protocol_options:\n            connection_keepalive: { interval: 0.05s, timeout: 0.3s, interval_jitter: { value: 0 } }\n`;
  const { keel } = await startConformanceKeel(t, ka);
  // answers every PING (in the background, for the whole test): still open after several
  const good = await connectH2(keel.port, t);
  await serverPreface(good);
  let answered = 0;
  void (async () => {
    while (!good.isClosed) {
      const ping = await good.waitFor((f) => f.type === FRAME.PING && (f.flags & 1) === 0, "keel's keepalive PING");
      good.send(pingFrame(ping.payload, true));
      answered++;
    }
  })().catch(() => undefined);
  await waitUntil(() => answered >= 3, 'three keepalive PINGs answered', 5000);
  good.request(1, '/fine');
  t.equal((await good.response(1)).status, '200', 'the answering connection serves on');
  // never answers: closed once the timeout passes
  const before = stat(keel, 'http2.keepalive_timeout');
  const silent = await connectH2(keel.port, t);
  await serverPreface(silent);
  await silent.waitFor((f) => f.type === FRAME.PING && (f.flags & 1) === 0, "keel's keepalive PING");
  await silent.expectClose('keel to close the silent connection');
  t.equal(stat(keel, 'http2.keepalive_timeout'), before + 1, 'http2.keepalive_timeout counts it');
  t.notOk(good.isClosed, 'the answering connection is still open');
});

/** HPACK literal with incremental indexing: a static name index (1..15) or a new name. */
function indexedLiteral(name: string | number, value: string): Buffer {
  const v = Buffer.from(value, 'latin1');
  if (typeof name === 'number') return Buffer.concat([Buffer.from([0x40 | name, v.length]), v]);
  const n = Buffer.from(name, 'latin1');
  return Buffer.concat([Buffer.from([0x40, n.length]), n, Buffer.from([v.length]), v]);
}

t.test('hpack_table_size below 4096: in force from the client\'s SETTINGS ACK, not before', async (t) => {
  const { keel } = await startConformanceKeel(t, h2Options({ hpack_table_size: 256 }));
  // Before it has seen keel's SETTINGS a client may fill the table as if it held 4096 octets: a
  // :path entry, then 480 octets of fillers, and the next request names the :path by its index.
  const w = await connectH2(keel.port, t, { autoAck: false });
  const fillers: Buffer[] = [];
  for (let i = 0; i < 6; i++) fillers.push(indexedLiteral(`x-fill-${i}`, String(i).repeat(40)));
  const pseudo = encodeHeaders([':method', 'GET', ':scheme', 'http', ':authority', 'conformance.test']);
  w.send(headersFrame(1, Buffer.concat([pseudo, indexedLiteral(4, '/up/big/77'), ...fillers]), { endStream: true }));
  // dynamic index 62 is the newest entry; the :path went in 7th from last, so it is 62 + 6
  w.send(headersFrame(3, Buffer.concat([pseudo, Buffer.from([0x80 | 68])]), { endStream: true }));
  const first = await w.response(1);
  const second = await w.response(3);
  t.equal(first.status, '200');
  t.equal(first.body.length, 77, 'the first request is /up/big/77');
  t.equal(second.status, '200');
  t.equal(second.body.length, 77, "the second request's indexed :path resolved against a 4096-octet table");
  t.equal(w.serverSettings.get(SETTING.HEADER_TABLE_SIZE), 256, 'keel advertised the smaller table');

  // After the ACK the client's next block must shrink the table first (RFC 7541 4.2).
  w.send(settingsFrame([], true));
  w.request(5, '/');
  await w.expectGoaway(ERR.COMPRESSION_ERROR);

  const v = await connectH2(keel.port, t, { autoAck: false });
  v.send(headersFrame(1, Buffer.concat([pseudo, indexedLiteral(4, '/up/big/5'), ...fillers]), { endStream: true }));
  t.equal((await v.response(1)).body.length, 5);
  v.send(settingsFrame([], true));
  // size update to 256 (0x3f, then 256 - 31 = 225 as 0xe1 0x01): the three newest fillers (80
  // octets each) stay, at indexes 62 to 64, and the rest is evicted
  v.send(headersFrame(3, Buffer.concat([Buffer.from([0x3f, 0xe1, 0x01]), pseudo, encodeHeaders([':path', '/up/big/9'])]), { endStream: true }));
  t.equal((await v.response(3)).body.length, 9, 'a block that opens with the size update is served');
  v.send(headersFrame(5, Buffer.concat([pseudo, encodeHeaders([':path', '/up/big/3']), Buffer.from([0x80 | 62])]), { endStream: true }));
  const r5 = await v.response(5);
  t.equal(r5.status, '200', 'the newest filler is still in the shrunk table');
  t.equal(r5.body.length, 3);
  v.send(headersFrame(7, Buffer.concat([pseudo, encodeHeaders([':path', '/up/big/3']), Buffer.from([0x80 | 65])]), { endStream: true }));
  await v.expectGoaway(ERR.COMPRESSION_ERROR);
});
