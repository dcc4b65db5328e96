// Downstream HTTP/2 (h2c by prior knowledge, or h2 over TLS with ALPN) on node:http2's session
// machinery: each ServerHttp2Stream becomes an ActiveStream, with trailers (gRPC) both ways and
// flow control through pause/resume. Sockets are handed in by the listener; this owns no port.

import * as http2 from 'node:http2';
import type * as net from 'node:net';
import { fromH2Headers, toH2Headers } from '../upstream/h2-pool';
import { ownChunk } from '../common/read-buffer';
import { ConnectionManager } from './conn-manager';
import { HeaderMap } from './headers';
import { ActiveStream, ConnectionInfo, Downstream } from './stream';

const EMPTY = Buffer.alloc(0);
const CONN_INFO = Symbol('keel.connectionInfo');
const NO_INFO: ConnectionInfo = { remoteAddress: '', remotePort: 0, localAddress: '', localPort: 0, secure: false };

class H2Downstream implements Downstream {
  readonly protocol = 'HTTP/2' as const;
  stream!: ActiveStream;
  private trailers: HeaderMap | undefined;
  private requestEnded = false;
  private finished = false;

  constructor(private readonly s: http2.ServerHttp2Stream) {
    s.on('wantTrailers', this.onWantTrailers);
  }

  attach(stream: ActiveStream, endStream: boolean): void {
    this.stream = stream;
    this.requestEnded = endStream;
    const s = this.s;
    if (!endStream) {
      s.on('data', this.onData);
      s.on('trailers', this.onTrailers);
      s.on('end', this.onEnd);
    }
    s.on('drain', this.onDrain);
    s.on('close', this.onClose);
    s.on('error', noop);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.stream.decodeData(chunk, false);
  };
  private readonly onTrailers = (h: http2.IncomingHttpHeaders): void => {
    this.requestEnded = true;
    this.stream.decodeTrailers(fromH2Headers(h));
  };
  private readonly onEnd = (): void => {
    if (this.requestEnded) return;
    this.requestEnded = true;
    this.stream.decodeData(EMPTY, true);
  };
  private readonly onDrain = (): void => {
    this.stream.onDownstreamWritable();
  };
  private readonly onClose = (): void => {
    if (!this.finished) this.stream.onDownstreamReset();
  };
  private readonly onWantTrailers = (): void => {
    const t = this.trailers;
    this.trailers = undefined;
    this.s.sendTrailers(t ? toH2Headers(t) : {});
  };

  writeInterim(status: number, headers: HeaderMap): void {
    if (this.s.destroyed || this.s.headersSent) return;
    const h = toH2Headers(headers);
    h[':status'] = status;
    this.s.additionalHeaders(h);
  }

  writeHeaders(status: number, headers: HeaderMap, endStream: boolean, trailers = false): void {
    const s = this.s;
    if (s.destroyed || s.closed) return;
    const h = toH2Headers(headers);
    h[':status'] = status;
    try {
      // Waiting for trailers costs an event and an extra frame per stream: only when they can come.
      s.respond(h, { endStream, waitForTrailers: !endStream && trailers });
    } catch {
      s.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
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
    return s.write(chunk);
  }

  writeTrailers(trailers: HeaderMap): void {
    const s = this.s;
    if (s.destroyed || s.closed) return;
    this.trailers = trailers;
    s.end();
  }

  reset(): void {
    if (!this.s.destroyed) this.s.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
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
      this.s.removeListener('data', this.onData);
      this.s.resume();
    }
  }
}

function noop(): void {}

/** One http2 "server" per connection manager; it never listens, the listener feeds it sockets. */
export class H2Server {
  private readonly server: http2.Http2Server;
  private readonly sessions = new Set<http2.ServerHttp2Session>();

  constructor(private readonly hcm: ConnectionManager) {
    const h2 = hcm.config.http2;
    const settings: http2.Settings = { enableConnectProtocol: false };
    if (h2.maxConcurrentStreams > 0) settings.maxConcurrentStreams = Math.min(h2.maxConcurrentStreams, 2 ** 31 - 1);
    if (h2.initialStreamWindowSize > 0) settings.initialWindowSize = h2.initialStreamWindowSize;
    this.server = http2.createServer({
      settings,
      maxSessionMemory: 64,
      maxHeaderListPairs: hcm.config.maxHeadersCount * 2,
      maxSendHeaderBlockLength: hcm.maxHeaderBytes * 4,
    });
    this.server.on('session', (session: http2.ServerHttp2Session) => {
      hcm.stats.downstreamCxTotal++;
      hcm.stats.downstreamCxActive++;
      this.sessions.add(session);
      session.on('close', () => {
        hcm.stats.downstreamCxActive--;
        this.sessions.delete(session);
      });
      session.on('error', noop);
      if (h2.initialConnectionWindowSize > 65535) {
        const widen = (): void => {
          if (!session.destroyed) session.setLocalWindowSize(h2.initialConnectionWindowSize);
        };
        // Over TLS the session is set up once the socket is ready.
        if (session.connecting) session.once('connect', widen);
        else widen();
      }
      const idle = hcm.config.idleTimeoutMs;
      if (idle > 0) session.setTimeout(idle, () => session.close());
    });
    this.server.on('stream', this.onStream);
  }

  /** Serves an HTTP/2 connection; `info` carries the TCP addresses (a TLS or replay wrapper may not). */
  handle(socket: net.Socket, info: ConnectionInfo): void {
    (socket as unknown as Record<symbol, ConnectionInfo>)[CONN_INFO] = info;
    this.server.emit('connection', socket);
  }

  private readonly onStream = (s: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number): void => {
    const sock = s.session?.socket as unknown as Record<symbol, ConnectionInfo> | undefined;
    const info: ConnectionInfo = sock?.[CONN_INFO] ?? NO_INFO;
    const map = requestHeaders(headers, info.secure);
    const endStream = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    const d = new H2Downstream(s);
    const stream = new ActiveStream(this.hcm, d, info);
    d.attach(stream, endStream);
    stream.decodeHeaders(map, endStream);
  };

  /** Graceful drain: GOAWAY on every session; streams in flight finish. */
  drain(): void {
    for (const s of this.sessions) if (!s.closed) s.close();
  }
}

/** Pseudo-headers first, as the HTTP/1 codec produces them; a `host` header stands in for :authority. */
function requestHeaders(h: http2.IncomingHttpHeaders, secure: boolean): HeaderMap {
  const raw: string[] = [':method', String(h[':method'] ?? 'GET'), ':path', String(h[':path'] ?? ''), ':authority', String(h[':authority'] ?? h.host ?? ''), ':scheme', String(h[':scheme'] ?? (secure ? 'https' : 'http'))];
  for (const k in h) {
    if (k.charCodeAt(0) === 58 || k === 'host') continue;
    const v = h[k];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) raw.push(k, x);
    else raw.push(k, String(v));
  }
  return new HeaderMap(raw);
}
