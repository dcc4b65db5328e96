// The HTTP/2 session's last line of defence: an exception from what a frame is handed to (a bug,
// never the peer's input, which ends in a protocol error) closes that connection with GOAWAY
// INTERNAL_ERROR and leaves the process and other connections alone.
import t from 'tap';
import * as net from 'node:net';
import { H2_INTERNAL_ERROR } from '../../../src/http/h2-frames';
import { H2Limits, H2Session, H2StreamState, newH2CodecStats, SessionState, settingsPreface } from '../../../src/http/h2-session';
import { connectH2, encodeHeaders, headersFrame } from '../../helpers/h2-wire';

const LIMITS: H2Limits = {
  stats: newH2CodecStats(),
  initialStreamWindow: 65535,
  initialConnectionWindow: 65535,
  maxHeaderListSize: 65536,
  maxOutboundFrames: 10000,
  maxOutboundControlFrames: 1000,
  maxConsecutiveEmptyFrames: 1,
  hpackTableSize: 4096,
};

/** A server session whose header handling throws, as a bug downstream of the codec would. */
class Throwing extends H2Session<H2StreamState> {
  blocks = 0;
  constructor(socket: net.Socket) {
    super(socket, LIMITS);
    this.writeRaw(settingsPreface([], LIMITS.initialConnectionWindow));
    socket.on('data', (d: Buffer) => this.receive(d, true));
    socket.on('error', () => undefined);
  }
  protected preface(_buf: Buffer, end: number): number {
    if (end < 24) return -1;
    this.state = SessionState.Open;
    return 24;
  }
  protected headerBlock(): void {
    this.blocks++;
    throw new Error('a bug behind the codec');
  }
  protected onPeerGoaway(): void {}
}

t.test('an exception behind a frame ends that connection with GOAWAY INTERNAL_ERROR, not the process', async (t) => {
  const sessions: Throwing[] = [];
  const server = net.createServer((s) => sessions.push(new Throwing(s)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as net.AddressInfo).port;
  const a = await connectH2(port, t);
  const b = await connectH2(port, t);
  a.send(headersFrame(1, encodeHeaders([':method', 'GET', ':scheme', 'http', ':path', '/']), { endStream: true }));
  const g = await a.expectGoaway(H2_INTERNAL_ERROR);
  t.equal(g.code, H2_INTERNAL_ERROR);
  t.equal(sessions[0].blocks, 1, 'the block reached the throwing handler');
  // the other connection is untouched: it still answers a PING (ping() fails without the ACK)
  await b.ping();
  t.notOk(b.isClosed, 'the second connection is open and answering');
});
