// Downstream HTTP/2 (h2c by prior knowledge, or h2 over TLS with ALPN) on node:http2's session
// machinery: each ServerHttp2Stream becomes an ActiveStream, with trailers (gRPC) both ways and
// flow control through pause/resume. Sockets are handed in by the listener; this owns no port.
// Per stream it allocates the H2Downstream and the two header blocks only: stream events go to
// shared module-level handlers (the downstream hangs off the stream under a symbol), and the
// 'drain' and 'wantTrailers' listeners are added only when a write blocks or trailers may follow.
// The HCM idle_timeout (no active streams for that long) is checked by the shared one-second sweep:
// node's session.setTimeout would re-arm a timer on every frame.

import type * as http2 from 'node:http2';
import type * as net from 'node:net';
import { fromH2Headers, loadHttp2, NGHTTP2_FLAG_END_STREAM, NGHTTP2_INTERNAL_ERROR, toH2Headers } from '../upstream/h2-pool';
import { coarseNow, onSweep } from '../common/clock';
import { ownChunk } from '../common/read-buffer';
import { ConnectionManager } from './conn-manager';
import { HeaderMap } from './headers';
import { ActiveStream, ConnectionInfo, Downstream } from './stream';

const EMPTY = Buffer.alloc(0);
const CONN_INFO = Symbol('keel.connectionInfo');
const DOWNSTREAM = Symbol('keel.h2Downstream');
const SESSION = Symbol('keel.h2Session');
const NO_INFO: ConnectionInfo = { remoteAddress: '', remotePort: 0, localAddress: '', localPort: 0, secure: false };
// respond() copies its options: shared read-only objects instead of one literal per response
const RESPOND_END: http2.ServerStreamResponseOptions = Object.freeze({ endStream: true });
const RESPOND_OPEN: http2.ServerStreamResponseOptions = Object.freeze({ endStream: false });
const RESPOND_TRAILERS: http2.ServerStreamResponseOptions = Object.freeze({ endStream: false, waitForTrailers: true });

type KeelH2Stream = http2.ServerHttp2Stream & { [DOWNSTREAM]: H2Downstream };

/** What keel keeps per downstream HTTP/2 connection (hung off the session under a symbol). */
class SessionState {
  /** streams handed to ActiveStream and not closed yet */
  active = 0;
  /** coarse time the last stream closed (or the session started), for idle_timeout */
  idleSince = coarseNow();
  constructor(readonly info: ConnectionInfo) {}
}
type KeelH2Session = http2.ServerHttp2Session & { [SESSION]: SessionState };

// Stream event handlers, shared by every stream (`this` is the stream that emitted).
function onStreamData(this: KeelH2Stream, chunk: Buffer): void {
  this[DOWNSTREAM].stream.decodeData(chunk, false);
}
function onStreamTrailers(this: KeelH2Stream, h: http2.IncomingHttpHeaders): void {
  const d = this[DOWNSTREAM];
  d.requestEnded = true;
  d.stream.decodeTrailers(fromH2Headers(h));
}
function onStreamEnd(this: KeelH2Stream): void {
  const d = this[DOWNSTREAM];
  if (d.requestEnded) return;
  d.requestEnded = true;
  d.stream.decodeData(EMPTY, true);
}
function onStreamDrain(this: KeelH2Stream): void {
  this[DOWNSTREAM].stream.onDownstreamWritable();
}
function onStreamClose(this: KeelH2Stream): void {
  const d = this[DOWNSTREAM];
  const state = d.session;
  if (--state.active === 0) state.idleSince = coarseNow();
  if (!d.finished) d.stream.onDownstreamReset();
  // Close is a stream's last event: let go of keel's side of it. node:http2 keeps its streams in a
  // Map whose rehashed-away tables V8 keeps (dead, in old space) until a full GC, so a closed
  // Http2Stream often outlives scavenges; unlinked, it no longer drags the ActiveStream, its
  // header blocks and its upstream state into old space with it.
  (this as { [DOWNSTREAM]?: H2Downstream })[DOWNSTREAM] = undefined;
}
function onStreamWantTrailers(this: KeelH2Stream): void {
  const d = this[DOWNSTREAM];
  const t = d.trailers;
  d.trailers = undefined;
  this.sendTrailers(t ? toH2Headers(t) : {});
}
function noop(): void {}

class H2Downstream implements Downstream {
  readonly protocol = 'HTTP/2' as const;
  stream!: ActiveStream;
  trailers: HeaderMap | undefined = undefined;
  requestEnded = false;
  finished = false;
  private drainListening = false;

  constructor(
    private readonly s: KeelH2Stream,
    readonly session: SessionState,
  ) {}

  attach(stream: ActiveStream, endStream: boolean): void {
    this.stream = stream;
    this.requestEnded = endStream;
    const s = this.s;
    s[DOWNSTREAM] = this;
    this.session.active++;
    if (!endStream) {
      s.on('data', onStreamData);
      s.on('trailers', onStreamTrailers);
      s.on('end', onStreamEnd);
    }
    // (An ended request's readable side is left unconsumed on purpose: consuming it lets node
    // destroy the stream before its last write completes, which then builds an error per stream.)
    s.on('close', onStreamClose);
    s.on('error', noop);
  }

  writeInterim(status: number, headers: HeaderMap): void {
    if (this.s.destroyed || this.s.headersSent) return;
    const h = responseHeaders(status, headers);
    this.s.additionalHeaders(h);
  }

  writeHeaders(status: number, headers: HeaderMap, endStream: boolean, trailers = false): void {
    const s = this.s;
    if (s.destroyed || s.closed) return;
    const h = responseHeaders(status, headers);
    // Waiting for trailers costs an event and an extra frame per stream: only when they can come.
    let options = RESPOND_OPEN;
    if (endStream) options = RESPOND_END;
    else if (trailers) {
      options = RESPOND_TRAILERS;
      s.on('wantTrailers', onStreamWantTrailers);
    }
    try {
      s.respond(h, options);
    } catch {
      s.close(NGHTTP2_INTERNAL_ERROR);
    }
  }

  writeData(data: Buffer, endStream: boolean): boolean {
    const s = this.s;
    if (s.destroyed || s.closed) return true;
    // http2 keeps the buffer until the peer's window lets it go: never a view of a reused buffer
    const chunk = ownChunk(data);
    if (endStream) {
      if (chunk.length > 0) s.end(chunk);
      else s.end();
      return true;
    }
    if (s.write(chunk)) return true;
    if (!this.drainListening) {
      this.drainListening = true;
      s.on('drain', onStreamDrain);
    }
    return false;
  }

  writeTrailers(trailers: HeaderMap): void {
    const s = this.s;
    if (s.destroyed || s.closed) return;
    this.trailers = trailers;
    s.end();
  }

  reset(): void {
    if (!this.s.destroyed) this.s.close(NGHTTP2_INTERNAL_ERROR);
  }

  pauseRequest(): void {
    this.s.pause();
  }

  resumeRequest(): void {
    this.s.resume();
  }

  onStreamComplete(): void {
    this.finished = true;
    // The rest of the request body, if any, is not wanted any more.
    if (!this.requestEnded && !this.s.destroyed) {
      this.s.removeListener('data', onStreamData);
      this.s.resume();
    }
  }
}

/** One http2 "server" per connection manager; it never listens, the listener feeds it sockets. */
export class H2Server {
  /** node's session machinery, made (and node:http2 loaded) with the first HTTP/2 connection */
  private server: http2.Http2Server | undefined;
  private readonly sessions = new Set<KeelH2Session>();
  /** the ConnectionInfo of the socket being handed to node (its 'session' event is synchronous) */
  private handing: ConnectionInfo | undefined;
  private stopSweep: (() => void) | undefined;

  constructor(private readonly hcm: ConnectionManager) {}

  private makeServer(): http2.Http2Server {
    const hcm = this.hcm;
    const h2 = hcm.config.http2;
    const settings: http2.Settings = { enableConnectProtocol: false };
    if (h2.maxConcurrentStreams > 0) settings.maxConcurrentStreams = Math.min(h2.maxConcurrentStreams, 2 ** 31 - 1);
    if (h2.initialStreamWindowSize > 0) settings.initialWindowSize = h2.initialStreamWindowSize;
    const server = loadHttp2().createServer({
      settings,
      maxSessionMemory: 64,
      maxHeaderListPairs: hcm.config.maxHeadersCount * 2,
      maxSendHeaderBlockLength: hcm.maxHeaderBytes * 4,
    });
    server.on('session', this.onSession);
    return server;
  }

  private readonly onSession = (session: http2.ServerHttp2Session): void => {
    const hcm = this.hcm;
    const h2 = hcm.config.http2;
    const ks = session as KeelH2Session;
    // node announces the session while handle() runs; the socket's tag is the fallback
    const info = this.handing ?? (session.socket as unknown as Record<symbol, ConnectionInfo | undefined>)[CONN_INFO] ?? NO_INFO;
    ks[SESSION] = new SessionState(info);
    hcm.stats.downstreamCxTotal++;
    hcm.stats.downstreamCxActive++;
    this.sessions.add(ks);
    session.on('close', () => {
      hcm.stats.downstreamCxActive--;
      this.sessions.delete(ks);
      if (this.sessions.size === 0 && this.stopSweep !== undefined) {
        this.stopSweep();
        this.stopSweep = undefined;
      }
    });
    session.on('error', noop);
    // Streams straight from the session: the server's own re-emitting listener is one hop more.
    session.removeAllListeners('stream');
    session.on('stream', this.onStream);
    if (h2.initialConnectionWindowSize > 65535) {
      const widen = (): void => {
        if (!session.destroyed) session.setLocalWindowSize(h2.initialConnectionWindowSize);
      };
      // Over TLS the session is set up once the socket is ready.
      if (session.connecting) session.once('connect', widen);
      else widen();
    }
    if (hcm.config.idleTimeoutMs > 0 && this.stopSweep === undefined) this.stopSweep = onSweep(this.sweepIdle);
  };

  /** HCM idle_timeout: a connection with no active stream for that long is closed (GOAWAY). */
  private readonly sweepIdle = (now: number): void => {
    const idle = this.hcm.config.idleTimeoutMs;
    for (const ks of this.sessions) {
      const st = ks[SESSION];
      if (st.active === 0 && now - st.idleSince >= idle && !ks.closed) ks.close();
    }
  };

  /** Serves an HTTP/2 connection; `info` carries the TCP addresses (a TLS or replay wrapper may not). */
  handle(socket: net.Socket, info: ConnectionInfo): void {
    (socket as unknown as Record<symbol, ConnectionInfo>)[CONN_INFO] = info;
    this.handing = info;
    try {
      (this.server ??= this.makeServer()).emit('connection', socket);
    } finally {
      this.handing = undefined;
    }
  }

  private readonly onStream = (s: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders?: string[]): void => {
    const state = (s.session as KeelH2Session | undefined)?.[SESSION];
    if (state === undefined) return;
    const map = requestHeaders(headers, rawHeaders, state.info.secure);
    const endStream = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
    const d = new H2Downstream(s as KeelH2Stream, state);
    const stream = new ActiveStream(this.hcm, d, state.info);
    d.attach(stream, endStream);
    stream.decodeHeaders(map, endStream);
  };

  /** Graceful drain: GOAWAY on every session; streams in flight finish. */
  drain(): void {
    for (const s of this.sessions) if (!s.closed) s.close();
  }
}

/**
 * Pseudo-headers first, as the HTTP/1 codec produces them; a `host` header stands in for :authority.
 * From node's flat [name, value, ...] block (wire order, repeated headers kept apart as the HTTP/1
 * codec keeps them), with `cookie` crumbs joined by "; " (RFC 9113 8.2.3) for an HTTP/1 upstream.
 */
export function requestHeaders(h: http2.IncomingHttpHeaders, block: readonly string[] | undefined, secure: boolean): HeaderMap {
  const raw: string[] = [':method', String(h[':method'] ?? 'GET'), ':path', String(h[':path'] ?? ''), ':authority', String(h[':authority'] ?? h.host ?? ''), ':scheme', String(h[':scheme'] ?? (secure ? 'https' : 'http'))];
  if (block === undefined) {
    for (const k in h) {
      if (k.charCodeAt(0) === 58 || k === 'host') continue;
      const v = h[k];
      if (v === undefined) continue;
      if (Array.isArray(v)) for (const x of v) raw.push(k, x);
      else raw.push(k, String(v));
    }
    return new HeaderMap(raw);
  }
  let cookieAt = -1;
  for (let i = 0; i < block.length; i += 2) {
    const k = block[i];
    if (k.charCodeAt(0) === 58) continue;
    if (k.length === 4 && k === 'host') continue;
    if (k.length === 6 && k === 'cookie') {
      if (cookieAt >= 0) {
        raw[cookieAt] += '; ' + block[i + 1];
        continue;
      }
      cookieAt = raw.length + 1;
    }
    raw.push(k, block[i + 1]);
  }
  return new HeaderMap(raw);
}

/** Response headers as node:http2 takes them, without the connection-specific ones (RFC 9113 8.2.2). */
export function responseHeaders(status: number, h: HeaderMap): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = { ':status': status };
  const raw = h.raw;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i];
    if (isConnectionSpecific(k)) continue;
    const v = raw[i + 1];
    if (k.length === 7 && k === ':status') continue;
    if (k.length === 2 && k === 'te' && v.toLowerCase() !== 'trailers') continue;
    const prev = out[k];
    if (prev === undefined) out[k] = v;
    else if (Array.isArray(prev)) prev.push(v);
    else out[k] = [String(prev), v];
  }
  return out;
}

function isConnectionSpecific(k: string): boolean {
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
