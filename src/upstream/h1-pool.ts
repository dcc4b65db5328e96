// HTTP/1.1 upstream connections and their per-host pool: one request at a time per connection,
// idle connections reused most-recent-first, requests queued (bounded by the cluster's
// max_pending_requests) while max_connections are busy. Request heads are written with a single
// socket write; response bytes are framed by the shared H1 parser and handed to the stream.

import { isCertVerifyError } from '../security/tls-context';
import * as net from 'node:net';
import { coarseNow, onSweep } from '../common/clock';
import { ownChunk, UPSTREAM_READ_BUFFER } from '../common/read-buffer';
import type { ErrorCode } from '../common/errors';
import { H1Handler, H1Head, H1Parser, ParseErrorInfo, chunkHeader, serializeFields } from '../http/h1-codec';
import { HeaderMap } from '../http/headers';
import type { Host } from './host';
import type { ConnPool, PoolCallbacks, UpstreamStream } from './types';

const CRLF = '\r\n';
const LAST_CHUNK = '0\r\n\r\n';

const enum ConnState {
  Connecting,
  Idle,
  Busy,
  Closed,
}

export class H1Connection implements UpstreamStream, H1Handler {
  readonly protocol = 'HTTP/1.1' as const;
  readonly socket: net.Socket;
  private readonly parser: H1Parser;
  private state = ConnState.Connecting;
  cb: PoolCallbacks | undefined;
  private chunkedRequest = false;
  private requestDone = false;
  private responseKeepAlive = true;
  private requestKeepAlive = true;
  private gotResponseHead = false;
  private upgradeRequested = false;
  private connectTimer: NodeJS.Timeout | undefined;
  /** the cluster's max_connection_duration: when it fires the connection takes no more requests */
  private durationTimer: NodeJS.Timeout | undefined;
  private expired = false;
  /** coarse time this connection became idle (for the pool's idle sweep) */
  idleSince = 0;
  requestsServed = 0;

  constructor(readonly host: Host, private readonly pool: H1Pool) {
    const c = host.cluster.config;
    const opts: net.NetConnectOpts = { host: host.address, port: host.port, noDelay: true };
    if (c.upstreamBindSource) (opts as net.TcpNetConnectOpts).localAddress = c.upstreamBindSource.address;
    const tlsOpts = host.cluster.tlsOptionsFor(host);
    if (tlsOpts) {
      this.socket = host.connectTls(opts, tlsOpts, 'h1', pool.alpn);
      this.socket.on('data', this.onData);
    } else {
      // Plain TCP reads land in one shared buffer (no Readable machinery, no allocation per
      // read); whatever outlives the callback is copied (see isSharedReadBuffer).
      this.socket = net.connect({ ...opts, onread: { buffer: UPSTREAM_READ_BUFFER, callback: this.onRead } } as net.NetConnectOpts);
    }
    this.parser = new H1Parser(this, { isResponse: true, maxHeaderBytes: 96 * 1024, maxHeaders: 200 });
    const s = this.socket;
    s.on(tlsOpts ? 'secureConnect' : 'connect', this.onConnect);
    s.on('error', this.onError);
    s.on('close', this.onClose);
    s.on('drain', this.onDrain);
    s.on('end', this.onEnd);
    if (c.connectTimeoutMs > 0) this.connectTimer = setTimeout(this.onConnectTimeout, c.connectTimeoutMs);
    if (c.maxConnectionDurationMs > 0) {
      this.durationTimer = setTimeout(this.onMaxDuration, c.maxConnectionDurationMs);
      this.durationTimer.unref();
    }
  }

  /** max_connection_duration reached: an idle connection closes now, a busy one after its response. */
  private readonly onMaxDuration = (): void => {
    this.durationTimer = undefined;
    this.expired = true;
    if (this.state === ConnState.Idle) this.close();
  };

  get busy(): boolean {
    return this.state === ConnState.Busy;
  }

  private readonly onConnect = (): void => {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.state = ConnState.Idle;
    this.pool.onConnectionReady(this);
  };

  private readonly onConnectTimeout = (): void => {
    this.connectTimer = undefined;
    if (this.state !== ConnState.Connecting) return;
    this.fail('KEEL_UPSTREAM_CONNECT_TIMEOUT', 'connection timeout');
  };

  /** After an accepted upgrade, reads are re-emitted as 'data' so the socket can be piped. */
  private raw = false;

  private readonly onRead = (nread: number, buf: Buffer): boolean => {
    const data = buf.subarray(0, nread);
    if (this.raw) {
      this.socket.emit('data', Buffer.from(data));
      return true;
    }
    this.onData(data);
    return true;
  };

  private readonly onData = (data: Buffer): void => {
    if (this.state === ConnState.Busy) this.parser.execute(data);
    else if (this.state === ConnState.Idle) {
      // Bytes from an idle upstream are a protocol violation: the connection cannot be reused.
      this.close();
    }
  };

  private readonly onDrain = (): void => {
    if (this.state === ConnState.Busy && this.cb) this.cb.onUpstreamWritable();
  };

  private readonly onEnd = (): void => {
    // Half-close from upstream: a close-delimited body is complete.
    if (this.state === ConnState.Busy && this.parser.untilClose) this.parser.finish();
  };

  private readonly onError = (e: NodeJS.ErrnoException): void => {
    if (this.state === ConnState.Connecting) {
      this.fail(isCertVerifyError(e) ? 'KEEL_UPSTREAM_TLS_VERIFY_FAILED' : 'KEEL_UPSTREAM_CONNECT_FAILURE', e.code ?? e.message);
      return;
    }
    const code: ErrorCode = e.code === 'ECONNRESET' || e.code === 'EPIPE' ? 'KEEL_UPSTREAM_RESET' : 'KEEL_UPSTREAM_CONNECTION_TERMINATION';
    this.fail(code, e.code ?? e.message);
  };

  private readonly onClose = (): void => {
    if (this.state === ConnState.Busy && this.parser.untilClose) this.parser.finish();
    if (this.state === ConnState.Connecting) this.fail('KEEL_UPSTREAM_CONNECT_FAILURE', 'connection closed');
    else if (this.state === ConnState.Busy) this.fail('KEEL_UPSTREAM_CONNECTION_TERMINATION', 'connection termination');
    else this.teardown();
  };

  private fail(code: ErrorCode, detail: string): void {
    const wasConnecting = this.state === ConnState.Connecting;
    const cb = this.cb;
    this.teardown();
    if (wasConnecting) this.pool.onConnectFailure(this, code, detail);
    else if (cb) cb.onUpstreamReset(code, detail);
  }

  private teardown(): void {
    if (this.state === ConnState.Closed) return;
    this.state = ConnState.Closed;
    this.cb = undefined;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    if (this.durationTimer) clearTimeout(this.durationTimer);
    this.durationTimer = undefined;
    this.socket.destroy();
    this.pool.onConnectionClosed(this);
  }

  close(): void {
    this.teardown();
  }

  /** Pool hands this connection to a request. */
  assign(cb: PoolCallbacks): void {
    this.state = ConnState.Busy;
    this.cb = cb;
    this.requestDone = false;
    this.gotResponseHead = false;
    this.responseKeepAlive = true;
    this.requestKeepAlive = true;
    this.upgradeRequested = false;
    this.requestsServed++;
  }

  setIdle(): void {
    this.state = ConnState.Idle;
    this.cb = undefined;
    this.idleSince = coarseNow();
  }

  get idle(): boolean {
    return this.state === ConnState.Idle;
  }

  // --- UpstreamStream

  sendHeaders(headers: HeaderMap, endStream: boolean): void {
    const raw = headers.raw;
    let method = 'GET';
    let path = '/';
    let authority = '';
    for (let i = 0; i < raw.length && raw[i].charCodeAt(0) === 58; i += 2) {
      const n = raw[i];
      if (n === ':method') method = raw[i + 1];
      else if (n === ':path') path = raw[i + 1];
      else if (n === ':authority') authority = raw[i + 1];
    }
    // pseudo-headers are usually first, but a filter may have appended one
    if (authority === '') authority = headers.first(':authority') ?? '';
    let head = method + ' ' + path + ' HTTP/1.1\r\nhost: ' + authority + CRLF + serializeFields(raw);
    this.chunkedRequest = false;
    if (this.upgradeRequested || headers.has('upgrade')) {
      this.upgradeRequested = true;
      head += 'connection: upgrade\r\n';
    } else if (!endStream && !headers.has('content-length')) {
      head += 'transfer-encoding: chunked\r\n';
      this.chunkedRequest = true;
    } else if (endStream && (method === 'POST' || method === 'PUT') && !headers.has('content-length')) {
      head += 'content-length: 0\r\n';
    }
    if (method === 'HEAD') this.parser.expectNoBody = true;
    else this.parser.expectNoBody = false;
    head += CRLF;
    this.socket.write(head, 'latin1');
    if (endStream) this.requestDone = true;
  }

  sendData(chunk: Buffer, endStream: boolean): boolean {
    const s = this.socket;
    if (this.state !== ConnState.Busy) return true;
    let ok = true;
    if (this.chunkedRequest) {
      if (chunk.length > 0) {
        s.cork();
        s.write(chunkHeader(chunk.length), 'latin1');
        s.write(ownChunk(chunk));
        ok = s.write(endStream ? CRLF + LAST_CHUNK : CRLF, 'latin1');
        process.nextTick(uncork, s);
      } else if (endStream) ok = s.write(LAST_CHUNK, 'latin1');
    } else if (chunk.length > 0) ok = s.write(ownChunk(chunk));
    if (endStream) this.onRequestComplete();
    return ok;
  }

  sendTrailers(trailers: HeaderMap): void {
    if (this.state !== ConnState.Busy) return;
    if (this.chunkedRequest) this.socket.write('0\r\n' + serializeFields(trailers.raw) + CRLF, 'latin1');
    this.onRequestComplete();
  }

  private onRequestComplete(): void {
    this.requestDone = true;
  }

  pauseResponse(): void {
    this.socket.pause();
  }
  resumeResponse(): void {
    this.socket.resume();
  }

  reset(): void {
    if (this.state === ConnState.Closed) return;
    this.cb = undefined;
    this.teardown();
  }

  // --- H1Handler (response side)

  onHead(msg: H1Head): void {
    const cb = this.cb;
    if (!cb) return;
    if (msg.status >= 100 && msg.status < 200 && msg.status !== 101) {
      cb.onUpstreamInterim(msg.status, msg.headers);
      return;
    }
    this.gotResponseHead = true;
    this.responseKeepAlive = msg.keepAlive;
    if (msg.status === 101 && this.upgradeRequested) {
      // Hand the socket over as a raw pipe.
      this.parser.markUpgraded();
      const s = this.socket;
      s.removeListener('data', this.onData);
      this.raw = true;
      s.removeListener('error', this.onError);
      s.removeListener('close', this.onClose);
      s.removeListener('drain', this.onDrain);
      s.removeListener('end', this.onEnd);
      this.state = ConnState.Closed;
      this.cb = undefined;
      this.pool.onConnectionClosed(this, true);
      cb.onUpstreamUpgrade(msg.status, msg.headers, s, this.parser.takeLeftover());
      return;
    }
    cb.onUpstreamHeaders(msg.status, msg.headers, msg.noBody, msg.chunked);
  }

  onBody(chunk: Buffer): void {
    this.cb?.onUpstreamData(chunk, false);
  }

  onTrailers(trailers: HeaderMap): void {
    this.cb?.onUpstreamTrailers(trailers);
  }

  onMessageComplete(): void {
    if (!this.gotResponseHead) return; // an interim response ended; keep reading
    const cb = this.cb;
    if (this.requestDone) {
      // Back to the pool first (it may go straight to a queued request), then end the stream.
      this.finishExchange();
    } else {
      // A complete response ends the exchange; the unsent rest of the request body means the
      // connection cannot be reused (as Envoy does).
      this.cb = undefined;
      this.teardown();
    }
    cb?.onUpstreamData(EMPTY, true);
  }

  onParseError(e: ParseErrorInfo): void {
    const cb = this.cb;
    this.teardown();
    cb?.onUpstreamReset('KEEL_UPSTREAM_PROTOCOL_ERROR', e.details);
  }

  private finishExchange(): void {
    if (this.state !== ConnState.Busy) return;
    const max = this.host.cluster.config.maxRequestsPerConnection;
    const reusable = this.responseKeepAlive && this.requestKeepAlive && (max === 0 || this.requestsServed < max) && !this.parser.untilClose && !this.expired;
    this.parser.resume();
    if (!reusable) {
      // Let the stream finish first; the close happens after the current call stack.
      this.cb = undefined;
      this.state = ConnState.Idle;
      process.nextTick(closeConn, this);
      return;
    }
    // A response the downstream paused may have ended while paused: the next exchange reads again.
    if (this.socket.isPaused()) this.socket.resume();
    this.pool.onConnectionFree(this);
  }
}

const EMPTY = Buffer.alloc(0);
function uncork(s: net.Socket): void {
  s.uncork();
}
function closeConn(c: H1Connection): void {
  c.close();
}

export class H1Pool implements ConnPool {
  private readonly idle: H1Connection[] = [];
  private readonly all = new Set<H1Connection>();
  private connecting = 0;
  private readonly pending: PoolCallbacks[] = [];
  private draining = false;

  private stopSweep: (() => void) | undefined;

  constructor(
    private readonly host: Host,
    /** the ALPN list this pool's TLS connections offer (istio.alpn), instead of the cluster's */
    readonly alpn?: readonly string[],
  ) {}

  get activeConnections(): number {
    return this.all.size;
  }

  /** Closes connections idle for longer than the cluster's idle_timeout (checked once a second). */
  private armSweep(): void {
    const timeout = this.host.cluster.config.idleTimeoutMs;
    if (timeout <= 0 || this.stopSweep !== undefined) return;
    this.stopSweep = onSweep((now) => {
      for (const c of [...this.idle]) if (now - c.idleSince >= timeout) c.close();
      if (this.all.size === 0 && this.stopSweep) {
        this.stopSweep();
        this.stopSweep = undefined;
      }
    });
  }

  newStream(cb: PoolCallbacks): void {
    const idle = this.idle;
    while (idle.length > 0) {
      const c = idle.pop()!;
      if (c.socket.destroyed || !c.socket.writable) {
        c.close();
        continue;
      }
      c.assign(cb);
      cb.onPoolReady(c);
      return;
    }
    const cluster = this.host.cluster;
    const rm = cluster.resources;
    // A new connection per waiting request, up to max_connections; otherwise queue.
    if (this.pending.length >= this.connecting && rm.connections.canCreate()) {
      this.pending.push(cb);
      rm.pendingRequests.inc();
      this.connect();
      return;
    }
    if (!rm.pendingRequests.canCreate()) {
      cluster.stats.upstreamRqPendingOverflow++;
      cb.onPoolFailure('KEEL_UPSTREAM_OVERFLOW', 'overflow');
      return;
    }
    rm.pendingRequests.inc();
    this.pending.push(cb);
  }

  private connect(): void {
    const cluster = this.host.cluster;
    cluster.resources.connections.inc();
    cluster.stats.upstreamCxTotal++;
    this.connecting++;
    const c = new H1Connection(this.host, this);
    this.all.add(c);
  }

  cancel(cb: PoolCallbacks): void {
    const i = this.pending.indexOf(cb);
    if (i >= 0) {
      this.pending.splice(i, 1);
      this.host.cluster.resources.pendingRequests.dec();
    }
  }

  onConnectionReady(c: H1Connection): void {
    this.connecting--;
    this.onConnectionFree(c);
  }

  onConnectionFree(c: H1Connection): void {
    const next = this.pending.shift();
    if (next) {
      this.host.cluster.resources.pendingRequests.dec();
      c.assign(next);
      next.onPoolReady(c);
      return;
    }
    if (this.draining) {
      c.close();
      return;
    }
    c.setIdle();
    this.idle.push(c);
    this.armSweep();
  }

  onConnectFailure(c: H1Connection, code: ErrorCode, detail: string): void {
    void c;
    this.host.cluster.stats.upstreamCxConnectFail++;
    this.connecting = Math.max(0, this.connecting - 1);
    const next = this.pending.shift();
    if (next) {
      this.host.cluster.resources.pendingRequests.dec();
      next.onPoolFailure(code, detail);
    }
  }

  onConnectionClosed(c: H1Connection, _upgraded = false): void {
    if (!this.all.delete(c)) return;
    this.host.cluster.resources.connections.dec();
    const i = this.idle.indexOf(c);
    if (i >= 0) this.idle.splice(i, 1);
    // Requests still queued get a connection of their own if one is allowed now.
    if (this.pending.length > this.connecting && this.host.cluster.resources.connections.canCreate() && !this.draining) this.connect();
  }

  drain(): void {
    this.draining = true;
    for (const c of this.idle.splice(0)) c.close();
  }

  destroy(): void {
    this.draining = true;
    for (const c of [...this.all]) c.close();
    for (const p of this.pending.splice(0)) {
      this.host.cluster.resources.pendingRequests.dec();
      p.onPoolFailure('KEEL_UPSTREAM_CONNECTION_TERMINATION', 'pool destroyed');
    }
  }
}
