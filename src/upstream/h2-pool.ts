// HTTP/2 upstream: one multiplexed node:http2 session per host (a new one when the current session
// is at its peer's max concurrent streams or going away), h2c by prior knowledge or TLS with ALPN h2.
// Each request is a ClientHttp2Stream wrapped as an UpstreamStream.

import { isCertVerifyError } from '../security/tls-context';
import type * as http2 from 'node:http2';
import type { ErrorCode } from '../common/errors';
import { ownChunk } from '../common/read-buffer';
import { HeaderMap } from '../http/headers';
import type { Host } from './host';
import type { ConnPool, PoolCallbacks, UpstreamStream } from './types';

// RFC 9113 error codes and flags keel uses, as node:http2's constants carry them, for both sides:
// node:http2 itself is loaded with the first HTTP/2 connection, so an HTTP/1-only proxy never holds it.
export const NGHTTP2_FLAG_END_STREAM = 0x1;
export const NGHTTP2_INTERNAL_ERROR = 0x2;
const NGHTTP2_REFUSED_STREAM = 0x7;
const NGHTTP2_CANCEL = 0x8;
let http2Module: typeof http2 | undefined;
/** node:http2, loaded on first use. */
export function loadHttp2(): typeof http2 {
  return (http2Module ??= require('node:http2') as typeof http2);
}

/** Connection-specific headers that HTTP/2 forbids (RFC 9113 8.2.2). */
const H2_FORBIDDEN = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host']);

export function toH2Headers(h: HeaderMap): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  const raw = h.raw;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i];
    if (H2_FORBIDDEN.has(k)) continue;
    const v = raw[i + 1];
    if (k === 'te' && v.toLowerCase() !== 'trailers') continue;
    const prev = out[k];
    if (prev === undefined) out[k] = v;
    else if (Array.isArray(prev)) prev.push(v);
    else out[k] = [String(prev), v];
  }
  return out;
}

/** node:http2 header object -> HeaderMap (pseudo-headers dropped unless keepPseudo). */
export function fromH2Headers(h: http2.IncomingHttpHeaders, keepPseudo = false): HeaderMap {
  const raw: string[] = [];
  for (const k in h) {
    if (!keepPseudo && k.charCodeAt(0) === 58) continue;
    const v = h[k];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) raw.push(k, x);
    else raw.push(k, String(v));
  }
  return new HeaderMap(raw);
}

class H2UpstreamStream implements UpstreamStream {
  readonly protocol = 'HTTP/2' as const;
  private req: http2.ClientHttp2Stream | undefined;
  private done = false;
  private gotHeaders = false;

  constructor(readonly host: Host, private readonly session: Session, private cb: PoolCallbacks | undefined) {}

  sendHeaders(headers: HeaderMap, endStream: boolean): void {
    const h = toH2Headers(headers);
    h[':scheme'] = this.session.scheme;
    let req: http2.ClientHttp2Stream;
    try {
      req = this.session.s.request(h, { endStream, waitForTrailers: !endStream });
    } catch (e) {
      this.finish();
      const cb = this.cb;
      this.cb = undefined;
      cb?.onUpstreamReset('KEEL_UPSTREAM_PROTOCOL_ERROR', (e as Error).message);
      return;
    }
    this.req = req;
    this.session.active++;
    req.on('response', this.onResponse);
    req.on('headers', this.onInterim);
    req.on('data', this.onData);
    req.on('trailers', this.onTrailers);
    req.on('end', this.onEnd);
    req.on('close', this.onClose);
    req.on('error', noop);
    req.on('drain', this.onDrain);
    req.on('wantTrailers', this.onWantTrailers);
  }

  private pendingTrailers: HeaderMap | undefined;
  private readonly onWantTrailers = (): void => {
    const t = this.pendingTrailers;
    this.req?.sendTrailers(t ? toH2Headers(t) : {});
  };

  sendData(chunk: Buffer, endStream: boolean): boolean {
    const req = this.req;
    if (!req || req.destroyed) return true;
    if (endStream) {
      // wantTrailers then sends an empty trailer set, which node turns into END_STREAM on DATA
      if (chunk.length > 0) req.end(ownChunk(chunk));
      else req.end();
      return true;
    }
    return req.write(ownChunk(chunk));
  }

  sendTrailers(trailers: HeaderMap): void {
    const req = this.req;
    if (!req || req.destroyed) return;
    this.pendingTrailers = trailers;
    req.end();
  }

  pauseResponse(): void {
    this.req?.pause();
  }
  resumeResponse(): void {
    this.req?.resume();
  }

  reset(): void {
    this.cb = undefined;
    if (this.req && !this.req.destroyed) this.req.close(NGHTTP2_CANCEL);
    this.finish();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    if (this.req) this.session.onStreamDone();
  }

  private readonly onInterim = (headers: http2.IncomingHttpHeaders): void => {
    const status = Number(headers[':status']);
    if (status >= 100 && status < 200) this.cb?.onUpstreamInterim(status, fromH2Headers(headers));
  };

  private readonly onResponse = (headers: http2.IncomingHttpHeaders, flags: number): void => {
    this.gotHeaders = true;
    const status = Number(headers[':status']);
    const endStream = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
    this.cb?.onUpstreamHeaders(status, fromH2Headers(headers), endStream, true);
    if (endStream) this.complete();
  };

  private readonly onData = (chunk: Buffer): void => {
    this.cb?.onUpstreamData(chunk, false);
  };

  private readonly onTrailers = (trailers: http2.IncomingHttpHeaders): void => {
    this.cb?.onUpstreamTrailers(fromH2Headers(trailers));
  };

  private readonly onEnd = (): void => {
    if (this.gotHeaders) this.complete();
  };

  private completed = false;
  private complete(): void {
    if (this.completed) return;
    this.completed = true;
    const cb = this.cb;
    this.cb = undefined;
    this.finish();
    cb?.onUpstreamData(EMPTY, true);
  }

  private readonly onDrain = (): void => {
    this.cb?.onUpstreamWritable();
  };

  private readonly onClose = (): void => {
    const cb = this.cb;
    this.finish();
    if (!cb || this.completed) return;
    this.cb = undefined;
    const req = this.req!;
    const code: ErrorCode = req.rstCode === NGHTTP2_REFUSED_STREAM ? 'KEEL_UPSTREAM_RESET' : this.session.closedByPeer ? 'KEEL_UPSTREAM_CONNECTION_TERMINATION' : 'KEEL_UPSTREAM_RESET';
    cb.onUpstreamReset(code, req.rstCode === NGHTTP2_REFUSED_STREAM ? 'refused stream' : `remote reset (${req.rstCode})`);
  };
}

const EMPTY = Buffer.alloc(0);
function noop(): void {}

class Session {
  readonly s: http2.ClientHttp2Session;
  ready = false;
  active = 0;
  closedByPeer = false;
  goingAway = false;
  maxStreams = 100;
  private connectTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(readonly pool: H2Pool, readonly host: Host, readonly scheme: 'http' | 'https') {
    const cfg = host.cluster.config;
    const tlsOpts = host.cluster.tlsOptionsFor(host);
    const authority = `${scheme}://${host.addressString}`;
    const settings: http2.Settings = {};
    if (cfg.http2.initialStreamWindowSize > 0) settings.initialWindowSize = cfg.http2.initialStreamWindowSize;
    const opts: http2.SecureClientSessionOptions = { settings, peerMaxConcurrentStreams: 100 };
    if (tlsOpts) Object.assign(opts, tlsOpts, { ALPNProtocols: ['h2'] });
    if (cfg.upstreamBindSource) (opts as { localAddress?: string }).localAddress = cfg.upstreamBindSource.address;
    this.s = loadHttp2().connect(authority, opts);
    this.s.on('connect', this.onConnect);
    this.s.on('error', this.onError);
    this.s.on('close', this.onClose);
    this.s.on('goaway', this.onGoaway);
    this.s.on('remoteSettings', (st: http2.Settings) => {
      if (st.maxConcurrentStreams !== undefined) this.maxStreams = st.maxConcurrentStreams;
    });
    if (cfg.connectTimeoutMs > 0) this.connectTimer = setTimeout(this.onConnectTimeout, cfg.connectTimeoutMs);
  }

  get available(): boolean {
    return this.ready && !this.goingAway && !this.s.destroyed && !this.s.closed && this.active < this.maxStreams;
  }

  private readonly onConnect = (): void => {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.ready = true;
    this.pool.onSessionReady(this);
  };

  private readonly onConnectTimeout = (): void => {
    this.connectTimer = undefined;
    if (this.ready) return;
    this.s.destroy();
    this.pool.onSessionFailed(this, 'KEEL_UPSTREAM_CONNECT_TIMEOUT', 'connection timeout');
  };

  private failed = false;
  private readonly onError = (e: NodeJS.ErrnoException): void => {
    if (!this.ready && !this.failed) {
      this.failed = true;
      if (this.connectTimer) clearTimeout(this.connectTimer);
      this.pool.onSessionFailed(this, isCertVerifyError(e) ? 'KEEL_UPSTREAM_TLS_VERIFY_FAILED' : 'KEEL_UPSTREAM_CONNECT_FAILURE', e.code ?? e.message);
    }
  };

  private readonly onGoaway = (): void => {
    this.goingAway = true;
    this.closedByPeer = true;
  };

  private readonly onClose = (): void => {
    this.closedByPeer = true;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    if (!this.ready && !this.failed) {
      this.failed = true;
      this.pool.onSessionFailed(this, 'KEEL_UPSTREAM_CONNECT_FAILURE', 'connection closed');
    }
    this.pool.onSessionClosed(this);
  };

  onStreamDone(): void {
    this.active--;
    if (this.active === 0) {
      const idle = this.host.cluster.config.idleTimeoutMs;
      if (this.goingAway) this.s.close();
      else if (idle > 0) {
        if (this.idleTimer) clearTimeout(this.idleTimer);
        this.idleTimer = setTimeout(() => {
          if (this.active === 0) this.s.close();
        }, idle);
        this.idleTimer.unref();
      }
    }
    this.pool.onStreamSlot(this);
  }
}

export class H2Pool implements ConnPool {
  private readonly sessions: Session[] = [];
  private readonly pending: PoolCallbacks[] = [];
  private connecting = false;
  private draining = false;

  constructor(private readonly host: Host) {}

  get activeConnections(): number {
    return this.sessions.length;
  }

  newStream(cb: PoolCallbacks): void {
    const s = this.available();
    if (s) {
      this.attach(s, cb);
      return;
    }
    const rm = this.host.cluster.resources;
    if (!rm.pendingRequests.canCreate()) {
      this.host.cluster.stats.upstreamRqPendingOverflow++;
      cb.onPoolFailure('KEEL_UPSTREAM_OVERFLOW', 'overflow');
      return;
    }
    rm.pendingRequests.inc();
    this.pending.push(cb);
    if (!this.connecting && rm.connections.canCreate()) this.connect();
  }

  private available(): Session | undefined {
    for (const s of this.sessions) if (s.available) return s;
    return undefined;
  }

  private attach(s: Session, cb: PoolCallbacks): void {
    s.active++; // reserved until the stream's headers are sent
    const st = new H2UpstreamStream(this.host, s, cb);
    s.active--;
    cb.onPoolReady(st);
  }

  private connect(): void {
    const cluster = this.host.cluster;
    this.connecting = true;
    cluster.resources.connections.inc();
    cluster.stats.upstreamCxTotal++;
    const scheme = cluster.tlsOptionsFor(this.host) ? 'https' : 'http';
    this.sessions.push(new Session(this, this.host, scheme));
  }

  onSessionReady(s: Session): void {
    this.connecting = false;
    this.onStreamSlot(s);
  }

  onStreamSlot(s: Session): void {
    while (this.pending.length > 0 && s.available) {
      const cb = this.pending.shift()!;
      this.host.cluster.resources.pendingRequests.dec();
      this.attach(s, cb);
      // attach does not open the stream until the owner sends headers; count it now
      if (s.active >= s.maxStreams) break;
    }
    if (this.pending.length > 0 && !this.connecting && !this.available() && this.host.cluster.resources.connections.canCreate() && !this.draining) this.connect();
  }

  onSessionFailed(s: Session, code: ErrorCode, detail: string): void {
    void s;
    this.connecting = false;
    this.host.cluster.stats.upstreamCxConnectFail++;
    // Every request waiting for this session fails (Envoy fails pending requests on connect failure).
    for (const cb of this.pending.splice(0)) {
      this.host.cluster.resources.pendingRequests.dec();
      cb.onPoolFailure(code, detail);
    }
  }

  onSessionClosed(s: Session): void {
    const i = this.sessions.indexOf(s);
    if (i < 0) return;
    this.sessions.splice(i, 1);
    this.host.cluster.resources.connections.dec();
  }

  cancel(cb: PoolCallbacks): void {
    const i = this.pending.indexOf(cb);
    if (i >= 0) {
      this.pending.splice(i, 1);
      this.host.cluster.resources.pendingRequests.dec();
    }
  }

  drain(): void {
    this.draining = true;
    for (const s of this.sessions) {
      s.goingAway = true;
      if (s.active === 0) s.s.close();
    }
  }

  destroy(): void {
    this.drain();
    for (const s of [...this.sessions]) s.s.destroy();
    for (const cb of this.pending.splice(0)) {
      this.host.cluster.resources.pendingRequests.dec();
      cb.onPoolFailure('KEEL_UPSTREAM_CONNECTION_TERMINATION', 'pool destroyed');
    }
  }
}
