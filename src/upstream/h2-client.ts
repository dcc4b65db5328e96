// keel's own HTTP/2 client connection to an upstream host (RFC 9113, client side), on the session
// machinery shared with the server (src/http/h2-session.ts): h2c by prior knowledge or TLS with
// ALPN h2, request streams opened with odd ids, each an UpstreamStream for an ActiveStream.
// Responses are validated (a :status, no connection-specific fields, content-length against the
// DATA received); a malformed one resets its stream as a protocol error. Streams past a GOAWAY's
// last stream id were never processed and fail as refused (retriable with retry_on refused-stream).
// What it must not do: hold a view of the shared read buffer past the read callback.

import * as net from 'node:net';
import * as tls from 'node:tls';
import type { ErrorCode } from '../common/errors';
import { UPSTREAM_READ_BUFFER } from '../common/read-buffer';
import { CLIENT_PREFACE, H2_CANCEL, H2_PROTOCOL_ERROR, H2_REFUSED_STREAM, SETTINGS_ENABLE_PUSH, SETTINGS_HEADER_TABLE_SIZE, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_MAX_HEADER_LIST_SIZE } from '../http/h2-frames';
import { EMPTY, encodeFields, H2Limits, H2Session, limitsFrom, H2StreamState, isConnectionSpecific, parseContentLength, SessionState, settingsPreface } from '../http/h2-session';
import { HeaderMap } from '../http/headers';
import { isCertVerifyError } from '../security/tls-context';
import type { Host } from './host';
import type { PoolCallbacks, UpstreamStream } from './types';

/** the largest response header block taken (as the HTTP/1 pool's) */
const MAX_RESPONSE_HEADERS = 96 * 1024;

function openSocket(host: Host, scheme: 'http' | 'https', alpn: readonly string[] | undefined, onRead: (n: number, b: Buffer) => boolean): net.Socket {
  const c = host.cluster.config;
  const opts: net.NetConnectOpts = { host: host.address, port: host.port, noDelay: true };
  if (c.upstreamBindSource) (opts as net.TcpNetConnectOpts).localAddress = c.upstreamBindSource.address;
  if (scheme === 'https') return host.connectTls(opts, host.cluster.tlsOptionsFor(host)!, 'h2', alpn);
  // plain TCP reads land in the shared upstream read buffer (partial frames are copied)
  return net.connect({ ...opts, onread: { buffer: UPSTREAM_READ_BUFFER, callback: onRead } } as net.NetConnectOpts);
}

/** A cluster's HTTP/2 client settings, compiled once per cluster. */
export class H2ClientSettings {
  readonly limits: H2Limits;
  /** the client preface, our SETTINGS and the connection WINDOW_UPDATE */
  readonly preface: Buffer;

  constructor(host: Host) {
    const limits = limitsFrom(host.cluster.config.http2, host.cluster.http2Stats, MAX_RESPONSE_HEADERS);
    this.limits = limits;
    const settings: [number, number][] = [
      [SETTINGS_ENABLE_PUSH, 0],
      [SETTINGS_INITIAL_WINDOW_SIZE, limits.initialStreamWindow],
      [SETTINGS_MAX_HEADER_LIST_SIZE, limits.maxHeaderListSize],
    ];
    if (limits.hpackTableSize !== 4096) settings.push([SETTINGS_HEADER_TABLE_SIZE, limits.hpackTableSize]);
    this.preface = Buffer.concat([CLIENT_PREFACE, settingsPreface(settings, limits.initialConnectionWindow)]);
  }
}

/** What the pool learns from a connection. */
export interface H2ClientEvents {
  onReady(c: H2ClientConnection): void;
  onConnectFailure(c: H2ClientConnection, code: ErrorCode, detail: string): void;
  /** a stream slot freed up (a stream closed, or the server raised its limit) */
  onStreamSlot(c: H2ClientConnection): void;
  onClosed(c: H2ClientConnection): void;
}

export class H2ClientConnection extends H2Session<H2ClientStream> {
  ready = false;
  /** streams at once: the cluster's max_concurrent_streams, or the server's SETTINGS_MAX_CONCURRENT_STREAMS if lower */
  maxStreams: number;
  /** streams promised to callers but not opened yet (their headers not sent) */
  reserved = 0;
  private nextStreamId = 1;
  private connectTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private durationTimer: NodeJS.Timeout | undefined;
  private failed = false;
  /** the server went away (GOAWAY or close): streams that end now end with connection termination */
  closedByPeer = false;

  constructor(
    readonly host: Host,
    settings: H2ClientSettings,
    readonly scheme: 'http' | 'https',
    private readonly events: H2ClientEvents,
    alpn?: readonly string[],
  ) {
    const self: { c?: H2ClientConnection } = {};
    super(openSocket(host, scheme, alpn, (n, b) => self.c!.onRead(n, b)), settings.limits);
    self.c = this;
    this.maxStreams = host.cluster.config.http2.maxConcurrentStreams;
    const socket = this.socket;
    if (scheme === 'https') socket.on('data', this.onData);
    this.state = SessionState.Open;
    socket.on(scheme === 'https' ? 'secureConnect' : 'connect', this.onConnect);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
    socket.on('drain', this.onDrain);
    socket.on('end', this.onEnd);
    this.writeRaw(settings.preface);
    const ms = host.cluster.config.connectTimeoutMs;
    if (ms > 0) this.connectTimer = setTimeout(this.onConnectTimeout, ms);
    const max = host.cluster.config.maxConnectionDurationMs;
    if (max > 0) {
      // max_connection_duration: then no new streams, and the connection closes once its streams end
      this.durationTimer = setTimeout(() => this.drain(), max);
      this.durationTimer.unref();
    }
  }

  /** Free for another stream now. */
  get available(): boolean {
    return this.ready && !this.goingAway && this.state === SessionState.Open && this.active + this.reserved < this.maxStreams;
  }

  readonly onRead = (nread: number, buf: Buffer): boolean => {
    this.receive(buf.subarray(0, nread), false);
    return true;
  };

  private readonly onData = (chunk: Buffer): void => {
    this.receive(chunk, true);
  };

  private readonly onConnect = (): void => {
    const alpn = (this.socket as tls.TLSSocket).alpnProtocol;
    if (this.scheme === 'https' && (alpn === 'http/1.1' || alpn === 'http/1.0')) {
      // the server picked HTTP/1: it will not speak HTTP/2 on this connection (any other answer,
      // such as an istio.alpn override's istio-h2 or istio, leaves the cluster's protocol in charge)
      this.fail('KEEL_UPSTREAM_PROTOCOL_ERROR', `ALPN ${String(alpn)}`);
      return;
    }
    this.connected = true;
    if (this.settingsReceived) this.becomeReady();
  };

  // Ready for streams once connected and the server's SETTINGS are in: its stream limit is known
  // before any stream is opened (one round trip on a new connection, no refused streams).
  private connected = false;
  private settingsReceived = false;

  protected override onPeerSettings(): void {
    if (this.settingsReceived) return;
    this.settingsReceived = true;
    if (this.connected) this.becomeReady();
  }

  private becomeReady(): void {
    if (this.ready || this.failed) return;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.ready = true;
    this.armIdle();
    this.startKeepalive();
    this.events.onReady(this);
  }

  private readonly onConnectTimeout = (): void => {
    this.connectTimer = undefined;
    if (!this.ready) this.fail('KEEL_UPSTREAM_CONNECT_TIMEOUT', 'connection timeout');
  };

  private readonly onError = (e: NodeJS.ErrnoException): void => {
    if (!this.ready) this.fail(isCertVerifyError(e) ? 'KEEL_UPSTREAM_TLS_VERIFY_FAILED' : 'KEEL_UPSTREAM_CONNECT_FAILURE', e.code ?? e.message);
  };

  private fail(code: ErrorCode, detail: string): void {
    if (this.failed) return;
    this.failed = true;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.socket.destroy();
    this.events.onConnectFailure(this, code, detail);
  }

  private readonly onDrain = (): void => {
    this.wakeDrainWaiters();
  };

  private readonly onEnd = (): void => {
    this.closedByPeer = true;
    this.socket.end();
  };

  private readonly onClose = (): void => {
    if (this.state === SessionState.Closed) return;
    this.closedByPeer = true;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    if (this.durationTimer) clearTimeout(this.durationTimer);
    if (!this.ready && !this.failed) {
      this.failed = true;
      this.events.onConnectFailure(this, 'KEEL_UPSTREAM_CONNECT_FAILURE', 'connection closed');
    }
    this.socketClosed();
    this.events.onClosed(this);
  };

  protected preface(): number {
    return 0;
  }

  protected override onPeerSetting(id: number, value: number): void {
    if (id !== SETTINGS_MAX_CONCURRENT_STREAMS) return;
    const limit = Math.min(value, this.host.cluster.config.http2.maxConcurrentStreams);
    const more = limit > this.maxStreams;
    this.maxStreams = limit;
    if (more) this.events.onStreamSlot(this);
  }

  protected onPeerGoaway(lastStreamId: number): void {
    this.closedByPeer = true;
    // streams the server never processed: refused (another connection may take them)
    for (const s of [...this.streams.values()]) {
      if (s.id <= lastStreamId) continue;
      this.closeStream(s);
      s.fail('KEEL_UPSTREAM_RESET', 'refused stream');
    }
    // requests waiting for a slot here get another connection
    this.events.onStreamSlot(this);
  }

  protected override onStreamClosed(): void {
    if (this.active === 0) this.armIdle();
    if (!this.goingAway) this.events.onStreamSlot(this);
  }

  /** Opens a stream for `cb` (its headers go out with sendHeaders). */
  newStream(cb: PoolCallbacks): H2ClientStream {
    const s = new H2ClientStream(this, cb, this.limits.initialStreamWindow, this.peerInitialWindow);
    this.reserved++;
    return s;
  }

  /** Registers a stream and sends its request headers. */
  open(s: H2ClientStream, headers: HeaderMap, endStream: boolean): void {
    this.reserved--;
    if (this.state !== SessionState.Open || this.goingAway) {
      // never on the wire: nothing may be sent for it
      s.closed = true;
      s.fail('KEEL_UPSTREAM_RESET', 'refused stream');
      return;
    }
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    // stream ids run out at 2^31: this connection takes no more, the pool opens another
    if (this.nextStreamId > 0x7fffffff) this.goingAway = true;
    this.lastStreamId = id;
    s.bind(id, this.peerInitialWindow);
    this.streams.set(id, s);
    this.active++;
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
    }
    const enc = this.encoder;
    enc.begin();
    const method = headers.first(':method') ?? 'GET';
    enc.field(':method', method);
    if (method !== 'CONNECT') {
      enc.field(':scheme', this.scheme);
      enc.field(':path', headers.first(':path') ?? '/');
    }
    enc.field(':authority', headers.first(':authority') ?? '');
    encodeFields(enc, headers.raw);
    this.headerFrames(id, enc.end(), endStream);
    if (endStream) {
      s.endQueued = true;
      this.localEnd(s);
    }
  }

  protected headerBlock(sid: number, buf: Buffer, start: number, end: number, endStream: boolean): void {
    const s = this.streams.get(sid);
    if (s === undefined) {
      // a response to a stream we reset is decoded (HPACK state) and dropped; anything else is wrong
      if ((sid & 1) === 1 && sid <= this.lastStreamId) this.decodeBlock(buf, start, end);
      else this.connectionError(H2_PROTOCOL_ERROR);
      return;
    }
    const size = this.decodeBlock(buf, start, end);
    if (size < 0) return;
    if (s.remoteEnded) return this.malformed(s);
    if (size > this.limits.maxHeaderListSize || this.decoder.invalid !== undefined) return this.malformed(s);
    const fields = this.fields;
    if (s.gotHeaders) {
      // trailers: END_STREAM and no pseudo-headers
      if (!endStream) return this.malformed(s);
      for (let i = 0; i < fields.length; i += 2) if (fields[i].charCodeAt(0) === 58) return this.malformed(s);
      if (s.expectedLength >= 0 && s.received !== s.expectedLength) return this.malformed(s);
      s.remoteEnded = true;
      s.trailers(new HeaderMap(fields.slice()));
      this.maybeClose(s);
      return;
    }
    let status = -1;
    let regular = false;
    const raw: string[] = [];
    let contentLength = -1;
    for (let i = 0; i < fields.length; i += 2) {
      const n = fields[i];
      const v = fields[i + 1];
      if (n.charCodeAt(0) === 58) {
        if (regular || n !== ':status' || status >= 0 || v.length !== 3) return this.malformed(s);
        status = Number(v);
        if (!(status >= 100 && status <= 999)) return this.malformed(s);
        continue;
      }
      regular = true;
      if (isConnectionSpecific(n) && n !== 'host') return this.malformed(s);
      if (n.length === 14 && n === 'content-length') {
        const len = parseContentLength(v);
        if (len < 0 || (contentLength >= 0 && len !== contentLength)) return this.malformed(s);
        contentLength = len;
      }
      raw.push(n, v);
    }
    if (status < 0) return this.malformed(s);
    if (status < 200) {
      // interim: more headers follow (101 has no place in HTTP/2)
      if (endStream || status === 101) return this.malformed(s);
      s.interim(status, new HeaderMap(raw));
      return;
    }
    s.gotHeaders = true;
    // HEAD and 204/304 carry no body whatever their content-length says
    s.expectedLength = s.isHead || status === 204 || status === 304 ? 0 : contentLength;
    if (endStream) {
      if (s.expectedLength > 0) return this.malformed(s);
      s.remoteEnded = true;
    }
    s.headers(status, new HeaderMap(raw), endStream);
    if (endStream) this.maybeClose(s);
  }

  /** A frame the stream's state does not allow (DATA before the response headers). */
  streamProtocolError(s: H2ClientStream): void {
    this.malformed(s);
  }

  protected override maybeClose(s: H2ClientStream): void {
    if (s.localEnded && s.remoteEnded) this.closeStream(s);
    else if (s.remoteEnded && !s.closed) {
      // the server answered in full before our request ended: stop sending it (as Envoy resets)
      this.sendRst(s.id, H2_CANCEL);
      this.closeStream(s);
    }
  }

  /** A reserved stream was given back unopened. */
  onSlotReturned(): void {
    this.events.onStreamSlot(this);
  }

  /** Our reset of a stream (its owner abandoned it). */
  cancel(s: H2ClientStream): void {
    if (s.closed) return;
    this.sendRst(s.id, H2_CANCEL);
    this.closeStream(s);
  }

  /** No new streams; the connection closes once its streams finish. */
  drain(): void {
    if (this.goingAway) return;
    this.goingAway = true;
    if (this.active === 0) this.close();
  }

  close(): void {
    if (this.state >= SessionState.Closing) return;
    this.writeGoaway(0);
    this.closeSocket();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** The cluster's idle_timeout: a connection without streams that long is closed. */
  private armIdle(): void {
    const idle = this.host.cluster.config.idleTimeoutMs;
    if (this.goingAway) {
      this.close();
      return;
    }
    if (idle <= 0 || this.idleTimer !== undefined) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.active === 0 && this.reserved === 0) this.close();
    }, idle);
    this.idleTimer.unref();
  }
}

/** One request on an upstream HTTP/2 connection. */
export class H2ClientStream extends H2StreamState implements UpstreamStream {
  readonly protocol = 'HTTP/2' as const;
  readonly host: Host;
  gotHeaders = false;
  isHead = false;
  private opened = false;

  constructor(
    private readonly conn: H2ClientConnection,
    private cb: PoolCallbacks | undefined,
    recvWindow: number,
    sendWindow: number,
  ) {
    super(conn, 0, recvWindow, sendWindow);
    this.host = conn.host;
  }

  /** The stream id and the peer's current initial window, known once the stream is opened. */
  bind(id: number, sendWindow: number): void {
    this.id = id;
    this.sendWindow = sendWindow;
  }

  // --- UpstreamStream

  sendHeaders(headers: HeaderMap, endStream: boolean): void {
    if (this.opened) return;
    this.opened = true;
    this.isHead = headers.first(':method') === 'HEAD';
    this.conn.open(this, headers, endStream);
  }

  sendData(chunk: Buffer, endStream: boolean): boolean {
    if (this.closed || this.endQueued || !this.opened) return true;
    if (endStream) this.endQueued = true;
    return this.conn.sendData(this, chunk, endStream);
  }

  sendTrailers(trailers: HeaderMap): void {
    if (this.closed || this.endQueued || !this.opened) return;
    this.endQueued = true;
    this.conn.sendTrailers(this, trailers);
  }

  pauseResponse(): void {
    this.holdWindow();
  }

  resumeResponse(): void {
    this.releaseWindow();
  }

  reset(): void {
    this.cb = undefined;
    if (!this.opened) {
      // reserved, never opened: give the slot back
      this.opened = true;
      this.conn.reserved--;
      this.conn.onSlotReturned();
      return;
    }
    this.conn.cancel(this);
  }

  // --- from the connection

  interim(status: number, headers: HeaderMap): void {
    this.cb?.onUpstreamInterim(status, headers);
  }

  headers(status: number, headers: HeaderMap, endStream: boolean): void {
    const cb = this.cb;
    if (cb === undefined) return;
    if (endStream) this.finish();
    cb.onUpstreamHeaders(status, headers, endStream, true);
  }

  deliver(chunk: Buffer, endStream: boolean): void {
    const cb = this.cb;
    if (cb === undefined) return;
    if (!this.gotHeaders) {
      // DATA before the response's HEADERS
      this.conn.streamProtocolError(this);
      return;
    }
    if (endStream) this.finish();
    if (chunk.length > 0 || endStream) cb.onUpstreamData(chunk.length > 0 ? chunk : EMPTY, endStream);
  }

  trailers(t: HeaderMap): void {
    const cb = this.cb;
    if (cb === undefined) return;
    this.finish();
    cb.onUpstreamTrailers(t);
  }

  writable(): void {
    this.cb?.onUpstreamWritable();
  }

  aborted(code: number, byPeer: boolean): void {
    if (byPeer) this.fail('KEEL_UPSTREAM_RESET', code === H2_REFUSED_STREAM ? 'refused stream' : `remote reset (${code})`);
    else if (code >= 0) this.fail('KEEL_UPSTREAM_PROTOCOL_ERROR', 'protocol error');
    else this.fail(this.conn.closedByPeer ? 'KEEL_UPSTREAM_CONNECTION_TERMINATION' : 'KEEL_UPSTREAM_RESET', 'connection termination');
  }

  /** The stream is over without a complete response. */
  fail(code: ErrorCode, detail: string): void {
    const cb = this.cb;
    this.finish();
    cb?.onUpstreamReset(code, detail);
  }

  private finish(): void {
    this.cb = undefined;
  }
}
