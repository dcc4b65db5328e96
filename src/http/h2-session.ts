// What both ends of keel's HTTP/2 have in common (RFC 9113): frames parsed straight off the
// socket's reads, HPACK state, SETTINGS/PING/WINDOW_UPDATE/RST_STREAM/GOAWAY handling, flow
// control both ways, and output written into one buffer and handed to the socket once per turn of
// the event loop. The server (src/http/h2-connection.ts) and the client (src/upstream/h2-client.ts)
// add what differs: who opens streams, what a header block means, and what a stream is attached to.
//
// Flow control: what we send is bounded by the peer's windows, and what does not fit is queued on
// its stream (an owned copy) until a WINDOW_UPDATE; what the peer sends is bounded by our windows,
// the connection's replenished as bytes arrive and a stream's as its owner takes them, withheld
// while the owner is paused.
// What it must not do: allocate per frame beyond the request's own objects, or keep a view of a
// shared read buffer past the read callback (a partial frame is copied).

import type * as net from 'node:net';
import { LOGGERS } from '../common/logger';
import type { Http2Options } from '../config/types';
import type { HeaderMap } from './headers';
import {
  DEFAULT_MAX_FRAME_SIZE,
  DEFAULT_WINDOW_SIZE,
  FLAG_ACK,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FLAG_PADDED,
  FLAG_PRIORITY,
  FRAME_CONTINUATION,
  FRAME_DATA,
  FRAME_GOAWAY,
  FRAME_HEADERS,
  FRAME_PING,
  FRAME_PRIORITY,
  FRAME_PUSH_PROMISE,
  FRAME_RST_STREAM,
  FRAME_SETTINGS,
  FRAME_WINDOW_UPDATE,
  H2_COMPRESSION_ERROR,
  H2_ENHANCE_YOUR_CALM,
  H2_FLOW_CONTROL_ERROR,
  H2_FRAME_SIZE_ERROR,
  H2_INTERNAL_ERROR,
  H2_NO_ERROR,
  H2_PROTOCOL_ERROR,
  H2_STREAM_CLOSED,
  MAX_FRAME_SIZE_LIMIT,
  MAX_WINDOW_SIZE,
  SETTINGS_ENABLE_CONNECT_PROTOCOL,
  SETTINGS_ENABLE_PUSH,
  SETTINGS_HEADER_TABLE_SIZE,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_FRAME_SIZE,
} from './h2-frames';
import { HpackDecoder, HpackEncoder, HpackError } from './hpack';

/** how many locally reset stream ids are remembered, so frames the peer had in flight are ignored */
const RECENT_RESETS = 64;
/** output buffer block: frames are written into it and handed to the socket as slices */
const OUT_BLOCK = 16 * 1024;
export const EMPTY = Buffer.alloc(0);

/** Envoy's HTTP/2 codec counters (http2.* downstream, cluster.<name>.http2.* upstream). */
export interface H2CodecStats {
  rx_reset: number;
  tx_reset: number;
  header_overflow: number;
  rx_messaging_error: number;
  outbound_flood: number;
  outbound_control_flood: number;
  inbound_empty_frames_flood: number;
  keepalive_timeout: number;
}

export function newH2CodecStats(): H2CodecStats {
  return { rx_reset: 0, tx_reset: 0, header_overflow: 0, rx_messaging_error: 0, outbound_flood: 0, outbound_control_flood: 0, inbound_empty_frames_flood: 0, keepalive_timeout: 0 };
}

/** The limits one end of a connection enforces (Envoy's Http2ProtocolOptions, compiled once). */
export interface H2Limits {
  readonly stats: H2CodecStats;
  readonly initialStreamWindow: number;
  readonly initialConnectionWindow: number;
  readonly maxHeaderListSize: number;
  readonly maxOutboundFrames: number;
  readonly maxOutboundControlFrames: number;
  readonly maxConsecutiveEmptyFrames: number;
  readonly hpackTableSize: number;
  /** connection_keepalive: PING every interval (± jitter %), closed without an ACK within timeout */
  readonly keepalive?: { readonly intervalMs: number; readonly timeoutMs: number; readonly jitterPercent: number };
}

/** The limits of one end, from Envoy's Http2ProtocolOptions (compiled once per HCM or cluster). */
export function limitsFrom(h2: Http2Options, stats: H2CodecStats, maxHeaderListSize: number): H2Limits {
  return {
    stats,
    initialStreamWindow: h2.initialStreamWindowSize,
    initialConnectionWindow: h2.initialConnectionWindowSize,
    maxHeaderListSize,
    maxOutboundFrames: h2.maxOutboundFrames,
    maxOutboundControlFrames: h2.maxOutboundControlFrames,
    maxConsecutiveEmptyFrames: h2.maxConsecutiveInboundFramesWithEmptyPayload,
    hpackTableSize: h2.hpackTableSize,
    ...(h2.keepalive !== undefined ? { keepalive: h2.keepalive } : {}),
  };
}

function writeFrameHead(b: Buffer, p: number, len: number, type: number, flags: number, sid: number): void {
  b[p] = len >>> 16;
  b[p + 1] = (len >>> 8) & 0xff;
  b[p + 2] = len & 0xff;
  b[p + 3] = type;
  b[p + 4] = flags;
  b[p + 5] = (sid >>> 24) & 0x7f;
  b[p + 6] = (sid >>> 16) & 0xff;
  b[p + 7] = (sid >>> 8) & 0xff;
  b[p + 8] = sid & 0xff;
}

/** A SETTINGS frame (and, when the connection window is to be larger, a WINDOW_UPDATE), as bytes. */
export function settingsPreface(settings: readonly (readonly [number, number])[], connectionWindow: number): Buffer {
  const grow = connectionWindow - DEFAULT_WINDOW_SIZE;
  const out = Buffer.alloc(9 + settings.length * 6 + (grow > 0 ? 13 : 0));
  writeFrameHead(out, 0, settings.length * 6, FRAME_SETTINGS, 0, 0);
  let p = 9;
  for (const [id, v] of settings) {
    out.writeUInt16BE(id, p);
    out.writeUInt32BE(v, p + 2);
    p += 6;
  }
  if (grow > 0) {
    writeFrameHead(out, p, 4, FRAME_WINDOW_UPDATE, 0, 0);
    out.writeUInt32BE(grow, p + 9);
  }
  return out;
}

// Connections with frames waiting: written together once the current poll phase is done, so the
// frames of every read of one loop turn leave in one write per connection.
const dirty: H2Session<H2StreamState>[] = [];
let flushScheduled = false;
function flushDirty(): void {
  flushScheduled = false;
  for (let i = 0; i < dirty.length; i++) dirty[i].flush();
  dirty.length = 0;
}

/** A header block waiting for its CONTINUATION frames. */
interface PendingBlock {
  readonly sid: number;
  readonly endStream: boolean;
  readonly selfDependent: boolean;
  readonly parts: Buffer[];
  size: number;
}

export const enum SessionState {
  /** server: waiting for the client's preface; client: for the server's SETTINGS */
  Preface,
  Open,
  /** a GOAWAY for an error went out, or the socket is ending: input is ignored */
  Closing,
  Closed,
}

/** Per-stream state both ends keep: windows, ends, and DATA queued behind a window. */
export abstract class H2StreamState {
  /** what the peer may still send us on this stream */
  recvWindow: number;
  recvUnacked = 0;
  /** DATA bytes taken off the connection window and not credited back yet (the stream is paused) */
  connectionOwed = 0;
  /** what we may still send */
  sendWindow: number;
  /** DATA bytes received, for content-length checks */
  received = 0;
  expectedLength = -1;
  remoteEnded = false;
  localEnded = false;
  /** END_STREAM written or queued */
  endQueued = false;
  closed = false;
  paused = false;
  waitingDrain = false;
  /** DATA waiting for a window (owned copies), then END_STREAM or trailers */
  queue: Buffer[] | undefined = undefined;
  queueOff = 0;
  queueEnd = false;
  queueTrailers: HeaderMap | undefined = undefined;

  constructor(
    /** the session the stream belongs to */
    protected readonly session: { replenish(s: H2StreamState): void },
    /** the stream id (a client stream gets its own when it is opened) */
    public id: number,
    recvWindow: number,
    sendWindow: number,
  ) {
    this.recvWindow = recvWindow;
    this.sendWindow = sendWindow;
  }

  /** The owner can take no more body: the peer's window is not credited back meanwhile. */
  holdWindow(): void {
    this.paused = true;
  }

  /** The owner takes body again: what it took while holding is credited back. */
  releaseWindow(): void {
    if (!this.paused) return;
    this.paused = false;
    this.session.replenish(this);
  }

  /** Body bytes for the stream's owner (a view of the read buffer: copy to keep). */
  abstract deliver(chunk: Buffer, endStream: boolean): void;
  /** The stream may send again (a window opened or the socket drained). */
  abstract writable(): void;
  /** The stream is over unfinished: the peer reset it (`code`, byPeer), we did (`code`), or the connection ended (-1). */
  abstract aborted(code: number, byPeer: boolean): void;
}

export abstract class H2Session<S extends H2StreamState> {
  protected state = SessionState.Preface;
  /** the unparsed tail of the last read (an owned copy) */
  private partial: Buffer | undefined;
  private continuation: PendingBlock | undefined;
  protected readonly decoder: HpackDecoder;
  readonly encoder = new HpackEncoder();
  /** decoded header fields of the block at hand (reused) */
  protected readonly fields: string[] = [];

  protected readonly streams = new Map<number, S>();
  /** streams open (request or response not finished) */
  active = 0;
  /** server: the highest stream id taken; client: the highest opened */
  protected lastStreamId = 0;
  private readonly recentResets = new Int32Array(RECENT_RESETS);
  private recentResetAt = 0;
  private emptyFrames = 0;
  /** GOAWAY sent (drain or error) or received: no new streams */
  goingAway = false;

  // flow control: what we may send, what the peer may send
  private sendWindow = DEFAULT_WINDOW_SIZE;
  protected peerInitialWindow = DEFAULT_WINDOW_SIZE;
  private peerMaxFrame = DEFAULT_MAX_FRAME_SIZE;
  private readonly connectionWindow: number;
  private recvWindow: number;
  private recvUnacked = 0;
  /** streams with DATA queued behind a window */
  private blocked: S[] = [];
  /** streams told to wait for the socket to drain */
  private drainWaiters: S[] = [];

  // output
  private wbuf: Buffer | undefined;
  private wstart = 0;
  private wpos = 0;
  private queued = false;
  /** frames (and control frames) written while the socket was not draining, for the flood limits */
  private outFrames = 0;
  private outControlFrames = 0;

  constructor(
    readonly socket: net.Socket,
    protected readonly limits: H2Limits,
  ) {
    // Until the peer acknowledges our SETTINGS it may encode for the protocol's initial 4096 octets
    // (RFC 9113 6.5.3); a smaller hpack_table_size binds it from that ACK on (onSettings).
    this.decoder = new HpackDecoder(Math.max(limits.hpackTableSize, 4096));
    this.connectionWindow = Math.max(limits.initialConnectionWindow, DEFAULT_WINDOW_SIZE);
    this.recvWindow = this.connectionWindow;
  }

  // --- what the two ends define

  /** A complete header block for stream `sid` (HEADERS with END_HEADERS, or its last CONTINUATION). */
  protected abstract headerBlock(sid: number, buf: Buffer, start: number, end: number, endStream: boolean, selfDependent: boolean): void;
  /** The bytes before the first frame: the client's preface (server) or nothing (client). */
  protected abstract preface(buf: Buffer, end: number): number;
  /** A SETTINGS value the common code does not handle (e.g. MAX_CONCURRENT_STREAMS). */
  protected onPeerSetting(_id: number, _value: number): void {}
  /** The peer's SETTINGS frame has been applied (and ACKed). */
  protected onPeerSettings(): void {}
  /** The peer reset `s` (already closed). */
  protected onPeerReset(_s: S, _code: number): void {}
  /** The peer sent GOAWAY. */
  protected abstract onPeerGoaway(lastStreamId: number, code: number): void;
  /** The last stream closed on a connection that is going away. */
  protected onIdleGoingAway(): void {
    this.closeSocket();
  }
  /** A stream closed (both ends done, or reset). */
  protected onStreamClosed(_s: S): void {}

  // ------------------------------------------------------------------------------------------
  // Input

  protected receive(data: Buffer, owned: boolean): void {
    if (this.state >= SessionState.Closing) return;
    let buf = data;
    const partial = this.partial;
    if (partial !== undefined) {
      this.partial = undefined;
      buf = Buffer.concat([partial, data]);
      owned = true;
    }
    const end = buf.length;
    let pos = 0;
    if (this.state === SessionState.Preface) {
      pos = this.preface(buf, end);
      if (pos < 0 || (this.state as SessionState) !== SessionState.Open) return;
    }
    try {
      while (end - pos >= 9) {
        const len = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2];
        // we never announce a SETTINGS_MAX_FRAME_SIZE above the default
        if (len > DEFAULT_MAX_FRAME_SIZE) {
          this.connectionError(H2_FRAME_SIZE_ERROR);
          return;
        }
        const start = pos + 9;
        if (end - start < len) break;
        const type = buf[pos + 3];
        const flags = buf[pos + 4];
        const sid = ((buf[pos + 5] & 0x7f) << 24) | (buf[pos + 6] << 16) | (buf[pos + 7] << 8) | buf[pos + 8];
        pos = start + len;
        this.frame(buf, type, flags, sid, start, pos);
        if (this.state >= SessionState.Closing) return;
      }
    } catch (e) {
      // A bug of ours, or of what a frame was handed to (the peer's bad input ends in a protocol
      // error, not here): this connection ends, the process goes on.
      LOGGERS.get('keel')?.error(`http2: internal error, connection closed: ${(e as Error).stack ?? String(e)}`);
      this.connectionError(H2_INTERNAL_ERROR);
      return;
    }
    if (pos < end) this.partial = owned ? buf.subarray(pos, end) : Buffer.from(buf.subarray(pos, end));
  }

  /** The first frame must be a SETTINGS (RFC 9113 3.4); false: the connection was failed. */
  private settingsSeen = false;

  private frame(buf: Buffer, type: number, flags: number, sid: number, start: number, end: number): void {
    if (!this.settingsSeen) {
      if (type !== FRAME_SETTINGS || (flags & FLAG_ACK) !== 0) {
        this.connectionError(H2_PROTOCOL_ERROR);
        return;
      }
      this.settingsSeen = true;
    }
    if (this.continuation !== undefined && type !== FRAME_CONTINUATION) {
      this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    switch (type) {
      case FRAME_DATA:
        this.onDataFrame(buf, flags, sid, start, end);
        return;
      case FRAME_HEADERS:
        this.onHeadersFrame(buf, flags, sid, start, end);
        return;
      case FRAME_PRIORITY:
        this.onPriority(buf, sid, start, end);
        return;
      case FRAME_RST_STREAM:
        this.onRstStream(buf, sid, start, end);
        return;
      case FRAME_SETTINGS:
        this.onSettings(buf, flags, sid, start, end);
        return;
      case FRAME_PUSH_PROMISE:
        // a client never gets one (we announce ENABLE_PUSH 0 or are the server)
        this.connectionError(H2_PROTOCOL_ERROR);
        return;
      case FRAME_PING:
        this.onPing(buf, flags, sid, start, end);
        return;
      case FRAME_GOAWAY:
        this.onGoaway(buf, sid, start, end);
        return;
      case FRAME_WINDOW_UPDATE:
        this.onWindowUpdate(buf, sid, start, end);
        return;
      case FRAME_CONTINUATION:
        this.onContinuation(buf, flags, sid, start, end);
        return;
      default:
      // unknown frame types are ignored (RFC 9113 4.1)
    }
  }

  private onDataFrame(buf: Buffer, flags: number, sid: number, start: number, end: number): void {
    if (sid === 0) {
      this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    const len = end - start;
    if (len > this.recvWindow) {
      this.connectionError(H2_FLOW_CONTROL_ERROR);
      return;
    }
    this.recvWindow -= len;
    let p = start;
    let pad = 0;
    const padded = (flags & FLAG_PADDED) !== 0;
    if (padded) {
      if (len < 1) {
        this.connectionError(H2_FRAME_SIZE_ERROR);
        return;
      }
      pad = buf[p++];
      if (pad >= len) {
        this.connectionError(H2_PROTOCOL_ERROR);
        return;
      }
    }
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    const dataLen = end - pad - p;
    if (dataLen === 0 && !endStream) {
      if (++this.emptyFrames > this.limits.maxConsecutiveEmptyFrames) {
        this.limits.stats.inbound_empty_frames_flood++;
        this.connectionError(H2_PROTOCOL_ERROR);
        return;
      }
    } else this.emptyFrames = 0;
    const s = this.streams.get(sid);
    if (s === undefined) {
      // frames the peer sent before it saw our reset are dropped; a stream never opened is an error
      this.consumed(len);
      if (this.recentlyReset(sid)) return;
      if (sid > this.lastStreamId) this.connectionError(H2_PROTOCOL_ERROR);
      else this.sendRst(sid, H2_STREAM_CLOSED);
      return;
    }
    if (s.remoteEnded || len > s.recvWindow) {
      this.consumed(len);
      this.resetStream(s, s.remoteEnded ? H2_STREAM_CLOSED : H2_FLOW_CONTROL_ERROR);
      return;
    }
    s.recvWindow -= len;
    s.received += dataLen;
    if (s.expectedLength >= 0 && (s.received > s.expectedLength || (endStream && s.received !== s.expectedLength))) {
      this.consumed(len);
      this.malformed(s);
      return;
    }
    // Padding is consumed at once; the data as the stream's owner takes it: both windows are
    // credited back then (not while the owner is paused), as Envoy acknowledges consumed bytes.
    if (padded) this.consumed(pad + 1);
    s.recvUnacked += len;
    s.connectionOwed += dataLen;
    if (endStream) s.remoteEnded = true;
    this.replenish(s);
    s.deliver(dataLen === 0 ? EMPTY : buf.subarray(p, p + dataLen), endStream);
    if (endStream) this.maybeClose(s);
  }

  /** A malformed message on `s` (RFC 9113 8.1.1): by default a stream error. */
  protected malformed(s: S): void {
    this.limits.stats.rx_messaging_error++;
    this.resetStream(s, H2_PROTOCOL_ERROR);
  }

  /** Connection-level flow control: bytes taken off the peer's connection window. */
  private consumed(n: number): void {
    if (this.state >= SessionState.Closing) return;
    this.recvUnacked += n;
    if (this.recvUnacked >= this.connectionWindow >>> 1) {
      this.writeWindowUpdate(0, this.recvUnacked);
      this.recvWindow += this.recvUnacked;
      this.recvUnacked = 0;
    }
  }

  /** Credits what a stream's owner has taken: to the connection at once, to the stream once half its window (not while paused). */
  replenish(s: S): void {
    if (s.paused) return;
    const owed = s.connectionOwed;
    if (owed > 0) {
      s.connectionOwed = 0;
      this.consumed(owed);
    }
    if (s.remoteEnded || s.closed) return;
    const u = s.recvUnacked;
    if (u === 0 || u < this.limits.initialStreamWindow >>> 1) return;
    s.recvUnacked = 0;
    s.recvWindow += u;
    this.writeWindowUpdate(s.id, u);
  }

  private onHeadersFrame(buf: Buffer, flags: number, sid: number, start: number, end: number): void {
    if (sid === 0) {
      this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    let p = start;
    let pad = 0;
    if ((flags & FLAG_PADDED) !== 0) {
      if (end - p < 1) {
        this.connectionError(H2_FRAME_SIZE_ERROR);
        return;
      }
      pad = buf[p++];
    }
    let selfDependent = false;
    if ((flags & FLAG_PRIORITY) !== 0) {
      if (end - p < 5) {
        this.connectionError(H2_FRAME_SIZE_ERROR);
        return;
      }
      const dep = ((buf[p] & 0x7f) << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3];
      selfDependent = dep === sid;
      p += 5;
    }
    if (pad > end - p) {
      this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    const blockEnd = end - pad;
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    if ((flags & FLAG_END_HEADERS) !== 0) {
      this.emptyFrames = 0;
      this.headerBlock(sid, buf, p, blockEnd, endStream, selfDependent);
      return;
    }
    const part = Buffer.from(buf.subarray(p, blockEnd));
    this.continuation = { sid, endStream, selfDependent, parts: [part], size: part.length };
  }

  private onContinuation(buf: Buffer, flags: number, sid: number, start: number, end: number): void {
    const c = this.continuation;
    if (c === undefined || c.sid !== sid) {
      this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    const len = end - start;
    if (len === 0 && (flags & FLAG_END_HEADERS) === 0 && ++this.emptyFrames > this.limits.maxConsecutiveEmptyFrames) {
      this.limits.stats.inbound_empty_frames_flood++;
      this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    c.size += len;
    // a header block this large is not one any limit lets through: a CONTINUATION flood
    if (c.size > this.limits.maxHeaderListSize * 2 + 65_536) {
      this.connectionError(H2_ENHANCE_YOUR_CALM);
      return;
    }
    c.parts.push(Buffer.from(buf.subarray(start, end)));
    if ((flags & FLAG_END_HEADERS) === 0) return;
    this.continuation = undefined;
    this.emptyFrames = 0;
    const block = Buffer.concat(c.parts, c.size);
    this.headerBlock(c.sid, block, 0, block.length, c.endStream, c.selfDependent);
  }

  /** Decodes a complete header block into this.fields: its header list size, or -1 (the connection is gone). */
  protected decodeBlock(buf: Buffer, start: number, end: number): number {
    const fields = this.fields;
    fields.length = 0;
    try {
      return this.decoder.decode(buf, start, end, fields, this.limits.maxHeaderListSize);
    } catch (e) {
      if (!(e instanceof HpackError)) throw e;
      this.connectionError(H2_COMPRESSION_ERROR);
      return -1;
    }
  }

  private onPriority(buf: Buffer, sid: number, start: number, end: number): void {
    if (sid === 0) {
      this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    if (end - start !== 5) {
      this.sendRst(sid, H2_FRAME_SIZE_ERROR);
      return;
    }
    const dep = ((buf[start] & 0x7f) << 24) | (buf[start + 1] << 16) | (buf[start + 2] << 8) | buf[start + 3];
    if (dep === sid) {
      const s = this.streams.get(sid);
      if (s !== undefined) this.resetStream(s, H2_PROTOCOL_ERROR);
      else this.sendRst(sid, H2_PROTOCOL_ERROR);
    }
    // priorities themselves are not acted on (RFC 9113 5.3: deprecated)
  }

  private onRstStream(buf: Buffer, sid: number, start: number, end: number): void {
    if (sid === 0) {
      this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    if (end - start !== 4) {
      this.connectionError(H2_FRAME_SIZE_ERROR);
      return;
    }
    const s = this.streams.get(sid);
    if (s === undefined) {
      if (sid > this.lastStreamId) this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    const code = buf.readUInt32BE(start);
    this.limits.stats.rx_reset++;
    this.closeStream(s);
    s.aborted(code, true);
    this.onPeerReset(s, code);
  }

  private onSettings(buf: Buffer, flags: number, sid: number, start: number, end: number): void {
    if (sid !== 0) {
      this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    const len = end - start;
    if ((flags & FLAG_ACK) !== 0) {
      if (len !== 0) this.connectionError(H2_FRAME_SIZE_ERROR);
      // Our only SETTINGS is the first one, so this ACK puts its HEADER_TABLE_SIZE in force.
      else if (this.limits.hpackTableSize < this.decoder.maxTableSize) this.decoder.lowerLimit(this.limits.hpackTableSize);
      return;
    }
    if (len % 6 !== 0) {
      this.connectionError(H2_FRAME_SIZE_ERROR);
      return;
    }
    for (let p = start; p < end; p += 6) {
      const id = (buf[p] << 8) | buf[p + 1];
      const v = buf.readUInt32BE(p + 2);
      switch (id) {
        case SETTINGS_HEADER_TABLE_SIZE:
          this.encoder.setPeerMaxTableSize(v);
          break;
        case SETTINGS_ENABLE_PUSH:
        case SETTINGS_ENABLE_CONNECT_PROTOCOL:
          if (v > 1) return this.connectionError(H2_PROTOCOL_ERROR);
          break;
        case SETTINGS_INITIAL_WINDOW_SIZE: {
          if (v > MAX_WINDOW_SIZE) return this.connectionError(H2_FLOW_CONTROL_ERROR);
          const delta = v - this.peerInitialWindow;
          this.peerInitialWindow = v;
          if (delta !== 0) {
            for (const s of this.streams.values()) {
              if (s.sendWindow + delta > MAX_WINDOW_SIZE) return this.connectionError(H2_FLOW_CONTROL_ERROR);
              s.sendWindow += delta;
            }
            if (delta > 0) this.unblock();
          }
          break;
        }
        case SETTINGS_MAX_FRAME_SIZE:
          if (v < DEFAULT_MAX_FRAME_SIZE || v > MAX_FRAME_SIZE_LIMIT) return this.connectionError(H2_PROTOCOL_ERROR);
          this.peerMaxFrame = v;
          break;
        default:
          this.onPeerSetting(id, v);
      }
    }
    if (!this.writeControl(9)) return;
    this.head(0, FRAME_SETTINGS, FLAG_ACK, 0);
    this.onPeerSettings();
  }

  private onPing(buf: Buffer, flags: number, sid: number, start: number, end: number): void {
    if (sid !== 0) {
      this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    if (end - start !== 8) {
      this.connectionError(H2_FRAME_SIZE_ERROR);
      return;
    }
    if ((flags & FLAG_ACK) !== 0) {
      if (this.keepaliveAck !== undefined && buf.readUInt32BE(start + 4) === this.keepaliveSeq) this.keepaliveAnswered();
      return;
    }
    if (!this.writeControl(17)) return;
    this.head(8, FRAME_PING, FLAG_ACK, 0);
    this.copyIn(buf, start, 8);
  }

  // --- connection_keepalive: a PING every interval; its ACK must come within the timeout

  private keepaliveTimer: NodeJS.Timeout | undefined;
  private keepaliveAck: NodeJS.Timeout | undefined;
  private keepaliveSeq = 0;

  /** Starts the keepalive PINGs, when configured (the connection is established). */
  protected startKeepalive(): void {
    const ka = this.limits.keepalive;
    if (ka === undefined || this.keepaliveTimer !== undefined || this.state >= SessionState.Closing) return;
    // jitter: up to jitterPercent of the interval, added (as Envoy spreads its PINGs)
    const delay = ka.intervalMs + Math.floor((Math.random() * ka.intervalMs * ka.jitterPercent) / 100);
    this.keepaliveTimer = setTimeout(this.sendKeepalive, delay);
    this.keepaliveTimer.unref();
  }

  private readonly sendKeepalive = (): void => {
    this.keepaliveTimer = undefined;
    const ka = this.limits.keepalive;
    if (ka === undefined || this.state >= SessionState.Closing) return;
    if (!this.writeControl(17)) return;
    this.head(8, FRAME_PING, 0, 0);
    const b = this.wbuf!;
    const p = this.wpos;
    b.writeUInt32BE(0x6b65656c, p); // "keel"
    b.writeUInt32BE(++this.keepaliveSeq >>> 0, p + 4);
    this.wpos = p + 8;
    this.keepaliveAck = setTimeout(this.keepaliveTimedOut, ka.timeoutMs);
    this.keepaliveAck.unref();
  };

  private keepaliveAnswered(): void {
    clearTimeout(this.keepaliveAck);
    this.keepaliveAck = undefined;
    this.startKeepalive();
  }

  private readonly keepaliveTimedOut = (): void => {
    this.keepaliveAck = undefined;
    if (this.state >= SessionState.Closing) return;
    // the peer is gone or stuck: the connection ends now (its streams fail)
    this.limits.stats.keepalive_timeout++;
    this.writeGoaway(H2_NO_ERROR);
    this.flush();
    this.state = SessionState.Closing;
    this.socket.destroy();
  };

  private stopKeepalive(): void {
    if (this.keepaliveTimer !== undefined) clearTimeout(this.keepaliveTimer);
    if (this.keepaliveAck !== undefined) clearTimeout(this.keepaliveAck);
    this.keepaliveTimer = this.keepaliveAck = undefined;
  }

  private onGoaway(buf: Buffer, sid: number, start: number, end: number): void {
    if (sid !== 0) {
      this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    if (end - start < 8) {
      this.connectionError(H2_FRAME_SIZE_ERROR);
      return;
    }
    this.goingAway = true;
    this.onPeerGoaway(buf.readUInt32BE(start) & 0x7fffffff, buf.readUInt32BE(start + 4));
    if (this.active === 0 && this.state < SessionState.Closing) this.onIdleGoingAway();
  }

  private onWindowUpdate(buf: Buffer, sid: number, start: number, end: number): void {
    if (end - start !== 4) {
      this.connectionError(H2_FRAME_SIZE_ERROR);
      return;
    }
    const inc = buf.readUInt32BE(start) & 0x7fffffff;
    if (sid === 0) {
      if (inc === 0) return this.connectionError(H2_PROTOCOL_ERROR);
      if (this.sendWindow + inc > MAX_WINDOW_SIZE) return this.connectionError(H2_FLOW_CONTROL_ERROR);
      this.sendWindow += inc;
      this.unblock();
      return;
    }
    const s = this.streams.get(sid);
    if (s === undefined) {
      if (sid > this.lastStreamId) this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    if (inc === 0) return this.resetStream(s, H2_PROTOCOL_ERROR);
    if (s.sendWindow + inc > MAX_WINDOW_SIZE) return this.resetStream(s, H2_FLOW_CONTROL_ERROR);
    s.sendWindow += inc;
    if (s.queue !== undefined && this.sendWindow > 0) this.pump(s);
  }

  // ------------------------------------------------------------------------------------------
  // Stream and connection ends

  /** Our reset of an open stream: RST_STREAM, and its owner learns it is over. */
  protected resetStream(s: S, code: number): void {
    if (s.closed) return;
    this.sendRst(s.id, code);
    this.closeStream(s);
    s.aborted(code, false);
  }

  /** A connection error (RFC 9113 5.4.1): GOAWAY with the code, then the socket closes. */
  connectionError(code: number): void {
    if (this.state >= SessionState.Closing) return;
    this.writeGoaway(code);
    this.closeSocket();
    // streams in flight are over: the connection will not carry them
    this.abortAll();
  }

  /** Every open stream learns the connection is gone. */
  protected abortAll(): void {
    this.partial = undefined;
    this.continuation = undefined;
    const open = [...this.streams.values()];
    this.streams.clear();
    this.active = 0;
    this.blocked.length = 0;
    this.drainWaiters.length = 0;
    for (const s of open) {
      s.closed = true;
      s.queue = undefined;
      s.aborted(-1, false);
    }
  }

  protected writeGoaway(code: number): void {
    this.writeRawFrame(8, FRAME_GOAWAY, 0, 0);
    const b = this.wbuf!;
    const p = this.wpos;
    b.writeUInt32BE(this.lastStreamId, p);
    b.writeUInt32BE(code, p + 4);
    this.wpos = p + 8;
  }

  sendRst(sid: number, code: number): void {
    if (this.state >= SessionState.Closing) return;
    if (!this.writeControl(13)) return;
    this.limits.stats.tx_reset++;
    this.head(4, FRAME_RST_STREAM, 0, sid);
    const b = this.wbuf!;
    b.writeUInt32BE(code, this.wpos);
    this.wpos += 4;
    this.recentResets[this.recentResetAt] = sid;
    this.recentResetAt = (this.recentResetAt + 1) % RECENT_RESETS;
  }

  protected recentlyReset(sid: number): boolean {
    const r = this.recentResets;
    for (let i = 0; i < RECENT_RESETS; i++) if (r[i] === sid) return true;
    return false;
  }

  closeStream(s: S): void {
    if (s.closed) return;
    s.closed = true;
    s.queue = undefined;
    // what the stream never gave back is the connection's again
    if (s.connectionOwed > 0) {
      this.consumed(s.connectionOwed);
      s.connectionOwed = 0;
    }
    this.streams.delete(s.id);
    this.active--;
    this.onStreamClosed(s);
    if (this.active === 0 && this.goingAway && this.state < SessionState.Closing) this.onIdleGoingAway();
  }

  /** Both sides done: the stream is closed. */
  protected maybeClose(s: S): void {
    if (s.localEnded && s.remoteEnded) this.closeStream(s);
  }

  /** Our END_STREAM went out on `s`. */
  protected localEnd(s: S): void {
    s.localEnded = true;
    if (s.remoteEnded) this.closeStream(s);
  }

  /** Flushes and ends the socket; a peer that does not close its side in time loses it anyway. */
  protected closeSocket(): void {
    if (this.state >= SessionState.Closing) return;
    this.state = SessionState.Closing;
    this.flush();
    this.socket.end();
    this.socket.setTimeout(5000, () => this.socket.destroy());
  }

  /** The socket closed: every open stream is aborted, buffers dropped. */
  protected socketClosed(): void {
    this.state = SessionState.Closed;
    this.stopKeepalive();
    this.abortAll();
    this.wbuf = undefined;
    this.wstart = this.wpos = 0;
  }

  // ------------------------------------------------------------------------------------------
  // Output

  /** Room for `n` more bytes in the output block (what is in the current one goes out first). */
  private reserve(n: number): void {
    const b = this.wbuf;
    if (b !== undefined && this.wpos + n <= b.length) return;
    if (this.wpos > this.wstart) this.writeOut();
    this.lastDataSid = 0;
    this.wbuf = Buffer.allocUnsafe(Math.max(OUT_BLOCK, n));
    this.wstart = 0;
    this.wpos = 0;
  }

  private head(len: number, type: number, flags: number, sid: number): void {
    const p = this.wpos;
    writeFrameHead(this.wbuf!, p, len, type, flags, sid);
    this.wpos = p + 9;
    this.outFrames++;
    this.schedule();
  }

  private copyIn(src: Uint8Array, start: number, n: number): void {
    const b = this.wbuf!;
    const p = this.wpos;
    if (n < 64) for (let i = 0; i < n; i++) b[p + i] = src[start + i];
    else b.set(src.subarray(start, start + n), p);
    this.wpos = p + n;
  }

  protected writeRaw(bytes: Buffer): void {
    this.reserve(bytes.length);
    this.copyIn(bytes, 0, bytes.length);
    this.schedule();
  }

  private writeRawFrame(len: number, type: number, flags: number, sid: number): void {
    this.reserve(9 + len);
    this.head(len, type, flags, sid);
  }

  /**
   * Room for a control frame, within the flood limit on control frames the peer makes us queue
   * while it does not read (Envoy's max_outbound_control_frames); false: the connection was closed.
   */
  private writeControl(n: number): boolean {
    if (this.socket.writableNeedDrain && ++this.outControlFrames > this.limits.maxOutboundControlFrames) {
      this.limits.stats.outbound_control_flood++;
      this.floodClose();
      return false;
    }
    this.reserve(n);
    return true;
  }

  private floodClose(): void {
    this.state = SessionState.Closing;
    this.socket.destroy();
  }

  private writeWindowUpdate(sid: number, inc: number): void {
    this.reserve(13);
    this.head(4, FRAME_WINDOW_UPDATE, 0, sid);
    const b = this.wbuf!;
    b.writeUInt32BE(inc, this.wpos);
    this.wpos += 4;
  }

  /** A header block as HEADERS (+ CONTINUATION when it exceeds the peer's frame size). */
  headerFrames(sid: number, block: Buffer, endStream: boolean): void {
    const max = this.peerMaxFrame;
    const es = endStream ? FLAG_END_STREAM : 0;
    if (block.length <= max) {
      this.reserve(9 + block.length);
      this.head(block.length, FRAME_HEADERS, FLAG_END_HEADERS | es, sid);
      this.copyIn(block, 0, block.length);
      return;
    }
    let off = 0;
    let type = FRAME_HEADERS;
    let flags = es;
    while (off < block.length) {
      const n = Math.min(max, block.length - off);
      const last = off + n === block.length;
      this.reserve(9 + n);
      this.head(n, type, flags | (last ? FLAG_END_HEADERS : 0), sid);
      this.copyIn(block, off, n);
      off += n;
      type = FRAME_CONTINUATION;
      flags = 0;
    }
  }

  /** DATA frames for `n` bytes of `chunk` from `off`, within the peer's frame size (windows already checked). */
  private dataFrames(sid: number, chunk: Buffer, off: number, n: number, endStream: boolean): void {
    const max = this.peerMaxFrame;
    do {
      const m = Math.min(max, n);
      n -= m;
      this.reserve(9 + m);
      const flagsAt = this.wpos + 4;
      this.head(m, FRAME_DATA, endStream && n === 0 ? FLAG_END_STREAM : 0, sid);
      this.copyIn(chunk, off, m);
      off += m;
      if (!endStream) {
        this.lastDataSid = sid;
        this.lastDataFlagsAt = flagsAt;
        this.lastDataEnd = this.wpos;
      }
    } while (n > 0);
  }

  // The last DATA frame written, while it is still the last thing in the output buffer: an end of
  // stream that follows at once (an HTTP/1 upstream's body, then its end) rides on it instead of
  // costing an empty DATA frame of its own.
  private lastDataSid = 0;
  private lastDataFlagsAt = -1;
  private lastDataEnd = -1;

  /** Sets END_STREAM on `sid`'s last DATA frame if it is still unsent and last; true when it did. */
  private endOnLastData(sid: number): boolean {
    if (this.lastDataSid !== sid || this.lastDataEnd !== this.wpos || this.lastDataFlagsAt < this.wstart || this.wbuf === undefined) return false;
    this.wbuf[this.lastDataFlagsAt] |= FLAG_END_STREAM;
    this.lastDataSid = 0;
    return true;
  }

  /** true: the socket can take more now (no stream needs to wait for 'drain'). */
  private get writable(): boolean {
    return !this.socket.writableNeedDrain && this.wpos - this.wstart < 65_536;
  }

  /**
   * A stream's body: sent as far as the windows allow, the rest queued on the stream. false: the
   * stream should wait (window or socket) for its writable().
   */
  sendData(s: S, chunk: Buffer, endStream: boolean): boolean {
    if (s.queue !== undefined) {
      s.queue.push(chunk.length > 0 ? Buffer.from(chunk) : EMPTY);
      if (endStream) s.queueEnd = true;
      return false;
    }
    const len = chunk.length;
    const avail = Math.min(s.sendWindow, this.sendWindow);
    if (len <= avail) {
      if (len > 0 || (endStream && !this.endOnLastData(s.id))) this.dataFrames(s.id, chunk, 0, len, endStream);
      s.sendWindow -= len;
      this.sendWindow -= len;
      if (endStream) this.localEnd(s);
      if (this.outFrames > this.limits.maxOutboundFrames && this.socket.writableNeedDrain) {
        this.limits.stats.outbound_flood++;
        this.floodClose();
        return true;
      }
      if (this.writable) return true;
      if (!s.waitingDrain) {
        s.waitingDrain = true;
        this.drainWaiters.push(s);
      }
      return false;
    }
    let sent = 0;
    if (avail > 0) {
      this.dataFrames(s.id, chunk, 0, avail, false);
      s.sendWindow -= avail;
      this.sendWindow -= avail;
      sent = avail;
    }
    s.queue = [Buffer.from(chunk.subarray(sent))];
    s.queueEnd = endStream;
    this.blocked.push(s);
    return false;
  }

  /** Trailers after the body (queued behind DATA that is waiting for a window). */
  sendTrailers(s: S, trailers: HeaderMap): void {
    if (s.queue !== undefined) {
      s.queueTrailers = trailers;
      s.queueEnd = true;
      return;
    }
    this.trailerFrames(s, trailers);
  }

  private trailerFrames(s: S, trailers: HeaderMap): void {
    const enc = this.encoder;
    enc.begin();
    const any = encodeFields(enc, trailers.raw) > 0;
    const block = enc.end();
    // an empty trailer section: END_STREAM on an empty DATA frame instead
    if (any) this.headerFrames(s.id, block, true);
    else this.dataFrames(s.id, EMPTY, 0, 0, true);
    this.localEnd(s);
  }

  /** Sends what a stream has queued as far as the windows allow; true when its queue emptied. */
  private pump(s: S): boolean {
    const q = s.queue;
    if (q === undefined || s.closed) return true;
    while (q.length > 0) {
      const c = q[0];
      const rem = c.length - s.queueOff;
      const isLast = q.length === 1 && s.queueEnd && s.queueTrailers === undefined;
      if (rem === 0) {
        if (isLast) this.dataFrames(s.id, EMPTY, 0, 0, true);
        q.shift();
        s.queueOff = 0;
        continue;
      }
      const avail = Math.min(s.sendWindow, this.sendWindow);
      if (avail <= 0) return false;
      const n = Math.min(rem, avail);
      this.dataFrames(s.id, c, s.queueOff, n, isLast && n === rem);
      s.sendWindow -= n;
      this.sendWindow -= n;
      if (n === rem) {
        q.shift();
        s.queueOff = 0;
      } else s.queueOff += n;
    }
    s.queue = undefined;
    const t = s.queueTrailers;
    s.queueTrailers = undefined;
    if (t !== undefined) this.trailerFrames(s, t);
    else if (s.queueEnd) this.localEnd(s);
    else if (!s.closed) s.writable();
    return true;
  }

  /** A window opened (the connection's, or every stream's by SETTINGS): queued DATA goes on, oldest first. */
  private unblock(): void {
    const list = this.blocked;
    if (list.length === 0) return;
    this.blocked = [];
    for (let i = 0; i < list.length; i++) {
      const s = list[i];
      if (s.closed || s.queue === undefined) continue;
      if (this.sendWindow <= 0 || !this.pump(s)) this.blocked.push(s);
    }
  }

  protected wakeDrainWaiters(): void {
    this.outFrames = 0;
    this.outControlFrames = 0;
    const list = this.drainWaiters;
    if (list.length === 0) return;
    this.drainWaiters = [];
    for (let i = 0; i < list.length; i++) {
      const s = list[i];
      s.waitingDrain = false;
      if (!s.closed) s.writable();
    }
  }

  private schedule(): void {
    if (this.queued) return;
    this.queued = true;
    dirty.push(this as unknown as H2Session<H2StreamState>);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flushDirty);
    }
  }

  /** Hands the frames written since the last flush to the socket as one write. */
  flush(): void {
    this.queued = false;
    if (this.wpos > this.wstart) this.writeOut();
    if (this.drainWaiters.length > 0 && this.writable) this.wakeDrainWaiters();
  }

  private writeOut(): void {
    const b = this.wbuf!;
    const chunk = b.subarray(this.wstart, this.wpos);
    this.wstart = this.wpos;
    this.lastDataSid = 0;
    if (this.state === SessionState.Closed || this.socket.destroyed) return;
    if (b.length - this.wpos < 256) {
      this.wbuf = undefined;
      this.wstart = this.wpos = 0;
    }
    if (this.socket.write(chunk)) {
      this.outFrames = 0;
      this.outControlFrames = 0;
    }
  }
}

/**
 * Encodes the fields of `raw` an HTTP/2 message may carry into `enc` (names are lower-case
 * already: HeaderMap's invariant): no pseudo-headers (the caller writes its own), no
 * connection-specific fields, `te` only as "trailers" (RFC 9113 8.2.2). Returns how many went in.
 */
export function encodeFields(enc: HpackEncoder, raw: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i];
    if (k.charCodeAt(0) === 58 || isConnectionSpecific(k)) continue;
    const v = raw[i + 1];
    if (k.length === 2 && k === 'te' && v.toLowerCase() !== 'trailers') continue;
    enc.field(k, v);
    n++;
  }
  return n;
}

/** Fields HTTP/2 forbids (RFC 9113 8.2.2); `host` gives way to :authority. */
export function isConnectionSpecific(k: string): boolean {
  switch (k.length) {
    case 4:
      return k === 'host';
    case 7:
      return k === 'upgrade';
    case 10:
      return k === 'connection' || k === 'keep-alive';
    case 16:
      return k === 'proxy-connection';
    case 17:
      return k === 'transfer-encoding';
    default:
      return false;
  }
}

/** content-length as a number, or -1 when it is not one (digits only; no list). */
export function parseContentLength(v: string): number {
  const n = v.length;
  if (n === 0 || n > 15) return -1;
  let x = 0;
  for (let i = 0; i < n; i++) {
    const c = v.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    x = x * 10 + c;
  }
  return x;
}
