// keel's own downstream HTTP/2 connection (RFC 9113, server side), on the shared session
// machinery of h2-session.ts: the client's preface, request header blocks validated and turned
// into HeaderMaps (pseudo-headers first, cookie crumbs joined, host standing in for :authority),
// each request stream an ActiveStream, responses encoded with keel's HPACK.
// Protections Envoy has by default: the concurrent stream limit (REFUSED_STREAM), premature-reset
// (rapid reset) detection, the outbound and empty-frame flood limits (in the session), header list
// size and count (431). Malformed requests (RFC 9113 8.1.1) end the connection (Envoy's default)
// or, with stream_error_on_invalid_http_message, only the stream.

import type * as net from 'node:net';
import { coarseNow } from '../common/clock';
import { readIntoSharedBuffer } from '../common/read-buffer';
import type { ConnectionManager } from './conn-manager';
import {
  CLIENT_PREFACE,
  H2_CANCEL,
  H2_ENHANCE_YOUR_CALM,
  H2_INTERNAL_ERROR,
  H2_NO_ERROR,
  H2_PROTOCOL_ERROR,
  H2_REFUSED_STREAM,
  H2_STREAM_CLOSED,
  SETTINGS_HEADER_TABLE_SIZE,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_CONCURRENT_STREAMS,
  SETTINGS_MAX_HEADER_LIST_SIZE,
} from './h2-frames';
import { EMPTY, encodeFields, H2CodecStats, H2Limits, H2Session, limitsFrom, newH2CodecStats, H2StreamState, isConnectionSpecific, parseContentLength, SessionState, settingsPreface } from './h2-session';
import { HeaderMap } from './headers';
import { ActiveStream, ConnectionInfo, Downstream } from './stream';

/** Envoy's http2.* counters of every downstream HTTP/2 connection (the listener scope: one set). */
export const DOWNSTREAM_H2_STATS: H2CodecStats = newH2CodecStats();

/** A client that resets this many of its streams before their responses, and at least half of all its streams, is cut off. */
const PREMATURE_RESET_MIN = 250;
/** a reset within this long of the stream's start counts as premature (Envoy: 1 s) */
const PREMATURE_RESET_LIFETIME_MS = 1000;

/** The HCM's HTTP/2 settings, compiled once per connection manager. */
export class H2ServerSettings {
  readonly limits: H2Limits;
  readonly maxConcurrentStreams: number;
  readonly maxHeadersCount: number;
  readonly streamErrorOnInvalid: boolean;
  readonly underscores: 'ALLOW' | 'REJECT_REQUEST' | 'DROP_HEADER';
  /** our SETTINGS frame and the connection WINDOW_UPDATE, as sent at the start of every connection */
  readonly preface: Buffer;

  constructor(hcm: ConnectionManager) {
    const cfg = hcm.config;
    const h2 = cfg.http2;
    const limits = limitsFrom(h2, DOWNSTREAM_H2_STATS, hcm.maxHeaderBytes);
    this.limits = limits;
    this.maxConcurrentStreams = h2.maxConcurrentStreams;
    this.maxHeadersCount = cfg.maxHeadersCount;
    this.streamErrorOnInvalid = h2.overrideStreamErrorOnInvalidHttpMessage ?? cfg.streamErrorOnInvalidHttpMessage ?? false;
    this.underscores = cfg.headersWithUnderscoresAction;
    const settings: [number, number][] = [
      [SETTINGS_MAX_CONCURRENT_STREAMS, this.maxConcurrentStreams],
      [SETTINGS_INITIAL_WINDOW_SIZE, limits.initialStreamWindow],
      [SETTINGS_MAX_HEADER_LIST_SIZE, limits.maxHeaderListSize],
    ];
    if (limits.hpackTableSize !== 4096) settings.push([SETTINGS_HEADER_TABLE_SIZE, limits.hpackTableSize]);
    this.preface = settingsPreface(settings, limits.initialConnectionWindow);
  }
}

export class H2ServerConnection extends H2Session<H2Stream> {
  private prefaceSeen = 0;
  /** coarse time the last stream closed (or the connection opened), for idle_timeout */
  idleSince = coarseNow();
  private streamsStarted = 0;
  private prematureResets = 0;
  /** the listener is draining: GOAWAY once the next stream is taken */
  drainAfterNextStream = false;

  constructor(
    socket: net.Socket,
    private readonly hcm: ConnectionManager,
    private readonly settings: H2ServerSettings,
    readonly info: ConnectionInfo,
    private readonly onClosed: (c: H2ServerConnection) => void,
  ) {
    super(socket, settings.limits);
    hcm.stats.downstreamCxTotal++;
    hcm.stats.downstreamCxActive++;
    this.writeRaw(settings.preface);
    if (!readIntoSharedBuffer(socket, this.onRead)) socket.on('data', this.onData);
    socket.on('error', noop);
    socket.on('close', this.onClose);
    socket.on('drain', this.onDrain);
    socket.on('end', this.onEnd);
    this.startKeepalive();
  }

  /** Bytes already read off the socket (protocol sniffing) are parsed first. */
  feed(data: Buffer): void {
    this.receive(data, true);
  }

  private readonly onRead = (nread: number, buf: Buffer): boolean => {
    this.receive(buf.subarray(0, nread), false);
    return true;
  };

  private readonly onData = (chunk: Buffer): void => {
    this.receive(chunk, true);
  };

  private readonly onEnd = (): void => {
    // The client sends nothing more: streams still waiting for request bytes cannot finish and are
    // reset; responses to complete requests still go out, then the connection closes.
    this.goingAway = true;
    for (const s of [...this.streams.values()]) if (!s.remoteEnded) this.resetStream(s, H2_CANCEL);
    if (this.active === 0) this.closeSocket();
  };

  private readonly onDrain = (): void => {
    this.wakeDrainWaiters();
  };

  private readonly onClose = (): void => {
    if (this.state === SessionState.Closed) return;
    this.hcm.stats.downstreamCxActive--;
    this.socketClosed();
    this.onClosed(this);
  };

  protected preface(buf: Buffer, end: number): number {
    const seen = this.prefaceSeen;
    const n = Math.min(CLIENT_PREFACE.length - seen, end);
    for (let i = 0; i < n; i++) {
      if (buf[i] !== CLIENT_PREFACE[seen + i]) {
        this.connectionError(H2_PROTOCOL_ERROR);
        return -1;
      }
    }
    this.prefaceSeen = seen + n;
    if (this.prefaceSeen === CLIENT_PREFACE.length) this.state = SessionState.Open;
    return n;
  }

  protected onPeerGoaway(): void {
    // The client opens no more streams; those in flight finish (the session closes when idle).
  }

  protected override onPeerReset(s: H2Stream): void {
    if (s.localEnded || coarseNow() - s.startedAt >= PREMATURE_RESET_LIFETIME_MS) return;
    // rapid reset (CVE-2023-44487): Envoy's premature-reset limit
    if (++this.prematureResets >= PREMATURE_RESET_MIN && this.prematureResets * 2 >= this.streamsStarted) this.connectionError(H2_ENHANCE_YOUR_CALM);
  }

  protected override onStreamClosed(): void {
    if (this.active === 0) this.idleSince = coarseNow();
  }

  protected headerBlock(sid: number, buf: Buffer, start: number, end: number, endStream: boolean, selfDependent: boolean): void {
    const existing = this.streams.get(sid);
    if (existing !== undefined) {
      this.trailerBlock(existing, buf, start, end, endStream);
      return;
    }
    if ((sid & 1) === 0) {
      this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    if (sid <= this.lastStreamId) {
      // Trailers the peer sent before it saw our reset are decoded (HPACK state) and dropped.
      if (this.recentlyReset(sid)) this.decodeBlock(buf, start, end);
      else this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    const listSize = this.decodeBlock(buf, start, end);
    if (listSize < 0) return;
    if (this.goingAway) {
      // after our GOAWAY: past its last stream id, not processed (the client retries elsewhere)
      this.sendRst(sid, H2_REFUSED_STREAM);
      return;
    }
    this.lastStreamId = sid;
    if (selfDependent) {
      this.sendRst(sid, H2_PROTOCOL_ERROR);
      return;
    }
    if (this.active >= this.settings.maxConcurrentStreams) {
      this.sendRst(sid, H2_REFUSED_STREAM);
      return;
    }
    const fields = this.fields;
    if (listSize > this.limits.maxHeaderListSize || fields.length > this.settings.maxHeadersCount * 2 + 8) {
      this.limits.stats.header_overflow++;
      this.hcm.stats.downstreamRq4xx++;
      this.localStatus(sid, 431, endStream);
      return;
    }
    if (this.decoder.invalid !== undefined) return this.malformedRequest(sid);
    // Pseudo-headers first, in the order the HTTP/1 codec produces them.
    const raw: string[] = [':method', '', ':path', '', ':authority', '', ':scheme', ''];
    let method: string | undefined;
    let path: string | undefined;
    let authority: string | undefined;
    let scheme: string | undefined;
    let host: string | undefined;
    let regular = false;
    let cookieAt = -1;
    let contentLength = -1;
    const underscores = this.settings.underscores;
    for (let i = 0; i < fields.length; i += 2) {
      const n = fields[i];
      const v = fields[i + 1];
      if (n.charCodeAt(0) === 58) {
        if (regular) return this.malformedRequest(sid);
        if (n === ':method') {
          if (method !== undefined) return this.malformedRequest(sid);
          method = v;
        } else if (n === ':path') {
          if (path !== undefined) return this.malformedRequest(sid);
          path = v;
        } else if (n === ':authority') {
          if (authority !== undefined) return this.malformedRequest(sid);
          authority = v;
        } else if (n === ':scheme') {
          if (scheme !== undefined) return this.malformedRequest(sid);
          scheme = v;
        } else return this.malformedRequest(sid);
        continue;
      }
      regular = true;
      switch (n.length) {
        case 2:
          if (n === 'te' && v !== 'trailers') return this.malformedRequest(sid);
          break;
        case 4:
          if (n === 'host') {
            host ??= v;
            continue;
          }
          break;
        case 6:
          if (n === 'cookie') {
            // crumbs joined with "; " for an HTTP/1 upstream (RFC 9113 8.2.3)
            if (cookieAt >= 0) {
              raw[cookieAt] += '; ' + v;
              continue;
            }
            cookieAt = raw.length + 1;
          }
          break;
        case 14:
          if (n === 'content-length') {
            const len = parseContentLength(v);
            if (len < 0 || (contentLength >= 0 && len !== contentLength)) return this.malformedRequest(sid);
            contentLength = len;
          }
          break;
        default:
          if (isConnectionSpecific(n)) return this.malformedRequest(sid);
      }
      if (underscores !== 'ALLOW' && n.indexOf('_') >= 0) {
        if (underscores === 'DROP_HEADER') continue;
        this.hcm.stats.downstreamRq4xx++;
        this.sendRst(sid, H2_PROTOCOL_ERROR);
        return;
      }
      raw.push(n, v);
    }
    if (method === undefined) return this.malformedRequest(sid);
    if (method === 'CONNECT') {
      if (scheme !== undefined || path !== undefined || authority === undefined) return this.malformedRequest(sid);
    } else if (scheme === undefined || path === undefined || path.length === 0) return this.malformedRequest(sid);
    if (endStream && contentLength > 0) return this.malformedRequest(sid);
    raw[1] = method;
    raw[3] = path ?? '';
    raw[5] = authority ?? host ?? '';
    raw[7] = scheme ?? (this.info.secure ? 'https' : 'http');

    const s = new H2Stream(this, sid, this.limits.initialStreamWindow, this.peerInitialWindow);
    s.expectedLength = contentLength;
    s.headOnly = method === 'HEAD';
    s.remoteEnded = endStream;
    s.startedAt = coarseNow();
    this.streams.set(sid, s);
    this.active++;
    this.streamsStarted++;
    const a = new ActiveStream(this.hcm, s, this.info);
    s.active = a;
    if (this.drainAfterNextStream) this.drain();
    a.decodeHeaders(new HeaderMap(raw), endStream);
  }

  private trailerBlock(s: H2Stream, buf: Buffer, start: number, end: number, endStream: boolean): void {
    const listSize = this.decodeBlock(buf, start, end);
    if (listSize < 0) return;
    if (s.remoteEnded) {
      this.resetStream(s, H2_STREAM_CLOSED);
      return;
    }
    if (!endStream || this.decoder.invalid !== undefined) return this.malformed(s);
    const fields = this.fields;
    for (let i = 0; i < fields.length; i += 2) if (fields[i].charCodeAt(0) === 58) return this.malformed(s);
    if (s.expectedLength >= 0 && s.received !== s.expectedLength) return this.malformed(s);
    s.remoteEnded = true;
    if (listSize > this.limits.maxHeaderListSize) {
      this.resetStream(s, H2_PROTOCOL_ERROR);
      return;
    }
    const a = s.active;
    if (a !== undefined) a.decodeTrailers(new HeaderMap(fields.slice()));
    this.maybeClose(s);
  }

  /** RFC 9113 8.1.1: Envoy ends the connection on a malformed request unless told to reset the stream only. */
  protected override malformed(s: H2Stream): void {
    this.limits.stats.rx_messaging_error++;
    this.hcm.stats.downstreamRq4xx++;
    if (this.settings.streamErrorOnInvalid) this.resetStream(s, H2_PROTOCOL_ERROR);
    else this.connectionError(H2_PROTOCOL_ERROR);
  }

  /** A malformed request whose stream was never opened. */
  private malformedRequest(sid: number): void {
    this.limits.stats.rx_messaging_error++;
    this.hcm.stats.downstreamRq4xx++;
    if (this.settings.streamErrorOnInvalid) this.sendRst(sid, H2_PROTOCOL_ERROR);
    else this.connectionError(H2_PROTOCOL_ERROR);
  }

  /** A response of ours, straight from the codec (431): HEADERS with END_STREAM. */
  private localStatus(sid: number, status: number, requestEnded: boolean): void {
    const enc = this.encoder;
    enc.begin();
    enc.status(status);
    enc.field('content-length', '0');
    enc.field('server', this.hcm.config.serverName);
    this.headerFrames(sid, enc.end(), true);
    if (!requestEnded) this.sendRst(sid, H2_NO_ERROR);
  }

  /** The response's END_STREAM went out; an unfinished request is not wanted any more (RST_STREAM NO_ERROR). */
  override localEnd(s: H2Stream): void {
    s.localEnded = true;
    if (s.remoteEnded) this.closeStream(s);
    else if (s.completed) this.dropRequest(s);
  }

  /** The response is out and its ActiveStream done: the rest of the request is not wanted (RFC 9113 8.1). */
  private dropRequest(s: H2Stream): void {
    this.sendRst(s.id, H2_NO_ERROR);
    this.closeStream(s);
  }

  /** ActiveStream's reset(): RST_STREAM INTERNAL_ERROR. */
  resetLocal(s: H2Stream): void {
    if (s.closed) return;
    this.sendRst(s.id, H2_INTERNAL_ERROR);
    this.closeStream(s);
  }

  /** ActiveStream is done with a stream whose request may still be coming. */
  streamComplete(s: H2Stream): void {
    if (s.closed) return;
    if (!s.endQueued) this.resetLocal(s); // finished without a complete response
    else if (s.localEnded && !s.remoteEnded) this.dropRequest(s);
  }

  /** Graceful drain: GOAWAY with the last stream taken; streams in flight finish, then the socket closes. */
  drain(): void {
    if (this.state >= SessionState.Closing || this.goingAway) return;
    this.goingAway = true;
    this.writeGoaway(H2_NO_ERROR);
    if (this.active === 0) this.closeSocket();
  }

  /** HCM idle_timeout: closes the connection when no stream has been active for `idleMs`. */
  closeIfIdle(now: number, idleMs: number): void {
    if (this.active === 0 && now - this.idleSince >= idleMs) this.drain();
  }
}

/** One request stream of a downstream HTTP/2 connection: the ActiveStream's Downstream. */
export class H2Stream extends H2StreamState implements Downstream {
  readonly protocol = 'HTTP/2' as const;
  active: ActiveStream | undefined = undefined;
  startedAt = 0;
  headOnly = false;
  headersSent = false;
  completed = false;

  constructor(
    private readonly conn: H2ServerConnection,
    id: number,
    recvWindow: number,
    sendWindow: number,
  ) {
    super(conn, id, recvWindow, sendWindow);
  }

  // (`active` is let go when the ActiveStream completes: nothing reaches a finished stream)
  deliver(chunk: Buffer, endStream: boolean): void {
    this.active?.decodeData(chunk, endStream);
  }

  writable(): void {
    this.active?.onDownstreamWritable();
  }

  aborted(): void {
    const a = this.active;
    this.active = undefined;
    a?.onDownstreamReset();
  }

  writeInterim(status: number, headers: HeaderMap): void {
    if (this.closed || this.headersSent || status === 101) return;
    this.conn.headerFrames(this.id, encodeResponse(this.conn, status, headers), false);
  }

  writeHeaders(status: number, headers: HeaderMap, endStream: boolean): void {
    if (this.closed || this.headersSent) return;
    this.headersSent = true;
    this.conn.headerFrames(this.id, encodeResponse(this.conn, status, headers), endStream);
    if (endStream) {
      this.endQueued = true;
      this.conn.localEnd(this);
    }
  }

  writeData(data: Buffer, endStream: boolean): boolean {
    if (this.closed || this.endQueued) return true;
    if (endStream) this.endQueued = true;
    // HEAD: the body is not sent, END_STREAM is
    return this.conn.sendData(this, this.headOnly ? EMPTY : data, endStream);
  }

  writeTrailers(trailers: HeaderMap): void {
    if (this.closed || this.endQueued) return;
    this.endQueued = true;
    this.conn.sendTrailers(this, trailers);
  }

  reset(): void {
    this.conn.resetLocal(this);
  }

  pauseRequest(): void {
    this.holdWindow();
  }

  resumeRequest(): void {
    this.releaseWindow();
  }

  onStreamComplete(): void {
    if (this.completed) return;
    this.completed = true;
    this.active = undefined;
    this.conn.streamComplete(this);
  }
}

/** The response header block: :status, then the fields an HTTP/2 response may carry (RFC 9113 8.2.2). */
function encodeResponse(conn: H2ServerConnection, status: number, h: HeaderMap): Buffer {
  const enc = conn.encoder;
  enc.begin();
  enc.status(status);
  encodeFields(enc, h.raw);
  return enc.end();
}

function noop(): void {}
