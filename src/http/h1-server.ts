// Downstream HTTP/1.x connection: parses requests off the socket one at a time (pipelined requests
// wait their turn), hands each to an ActiveStream, and writes its response with keep-alive, chunked
// or close-delimited framing. Also the raw pipe after an accepted Upgrade. Never buffers a body.

import type * as net from 'node:net';
import { coarseNow } from '../common/clock';
import { ownChunk, readIntoSharedBuffer } from '../common/read-buffer';
import { ConnectionManager, httpDate } from './conn-manager';
import { H1Handler, H1Head, H1Parser, ParseErrorInfo, chunkHeader, serializeFields, statusLine } from './h1-codec';
import { HeaderMap } from './headers';
import { ActiveStream, ConnectionInfo, Downstream } from './stream';

const CRLF = '\r\n';
const EMPTY = Buffer.alloc(0);

export class H1ServerConnection implements H1Handler, Downstream {
  readonly parser: H1Parser;
  private stream: ActiveStream | undefined;
  private versionMinor = 1;
  private requestHasBody = false;
  private requestDone = false;
  private chunked = false;
  private closeAfterResponse = false;
  private responseEnded = false;
  private headOnlyResponse = false;
  /** A response head not yet written: it goes out together with the first body bytes. */
  private pendingHead: string | undefined;
  private flushScheduled = false;
  private closed = false;
  private upgraded = false;
  private readonly info: ConnectionInfo;

  constructor(
    readonly socket: net.Socket,
    private readonly hcm: ConnectionManager,
    info: ConnectionInfo,
    private readonly onClosed?: (c: H1ServerConnection) => void,
  ) {
    this.info = info;
    const cfg = hcm.config;
    this.parser = new H1Parser(this, {
      isResponse: false,
      maxHeaderBytes: hcm.maxHeaderBytes,
      maxHeaders: cfg.maxHeadersCount,
      rejectUnderscores: cfg.headersWithUnderscoresAction === 'REJECT_REQUEST',
      dropUnderscores: cfg.headersWithUnderscoresAction === 'DROP_HEADER',
      scheme: info.secure ? 'https' : 'http',
      acceptHttp10: cfg.http1.acceptHttp10,
      defaultHostForHttp10: cfg.http1.defaultHostForHttp10,
    });
    hcm.stats.downstreamCxTotal++;
    hcm.stats.downstreamCxActive++;
    if (!readIntoSharedBuffer(socket, this.onRead)) socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
    socket.on('drain', this.onDrain);
    socket.on('end', this.onEnd);
    this.lastActive = coarseNow();
  }

  get idleTimeoutMs(): number {
    return this.hcm.config.idleTimeoutMs;
  }

  get protocol(): 'HTTP/1.0' | 'HTTP/1.1' {
    return this.versionMinor === 0 ? 'HTTP/1.0' : 'HTTP/1.1';
  }

  /** Bytes already read from the socket (protocol sniffing) go through the parser first. */
  feed(data: Buffer): void {
    if (this.stream === undefined && this.headersTimer === undefined && this.hcm.config.requestHeadersTimeoutMs > 0) this.armHeadersTimer();
    this.parser.execute(data);
  }

  /**
   * request_headers_timeout: armed by the first bytes of a request head, disarmed when the head is
   * complete; when it fires the connection is closed without a response (as Envoy does).
   */
  private headersTimer: NodeJS.Timeout | undefined;
  private armHeadersTimer(): void {
    this.headersTimer = setTimeout(() => {
      this.headersTimer = undefined;
      if (this.stream === undefined) this.socket.destroy();
    }, this.hcm.config.requestHeadersTimeoutMs);
  }

  /** coarse time of the last read, for the listener's idle sweep (HCM idle_timeout) */
  lastActive = 0;

  private readonly onData = (data: Buffer): void => {
    this.lastActive = coarseNow();
    if (this.stream === undefined && this.headersTimer === undefined && this.hcm.config.requestHeadersTimeoutMs > 0) this.armHeadersTimer();
    this.parser.execute(data);
  };

  /** Reads into the shared buffer; after an upgrade they are re-emitted as 'data' for the pipe. */
  private readonly onRead = (nread: number, buf: Buffer): boolean => {
    const data = buf.subarray(0, nread);
    if (this.upgraded) this.socket.emit('data', Buffer.from(data));
    else this.onData(data);
    return true;
  };

  private readonly onDrain = (): void => {
    this.stream?.onDownstreamWritable();
  };

  private readonly onEnd = (): void => {
    // Client half-closed: finish the response in flight, then close.
    if (this.stream === undefined) this.socket.end();
    else this.closeAfterResponse = true;
  };

  /** Called by the listener's sweep: closes the connection if it has been idle for `idleMs`. */
  closeIfIdle(now: number, idleMs: number): void {
    if (this.stream === undefined && !this.upgraded && now - this.lastActive >= idleMs) this.socket.destroy();
  }

  private readonly onError = (): void => {
    // 'close' follows
  };

  private readonly onClose = (): void => {
    if (this.closed) return;
    this.closed = true;
    if (this.headersTimer !== undefined) clearTimeout(this.headersTimer);
    this.hcm.stats.downstreamCxActive--;
    const s = this.stream;
    this.stream = undefined;
    s?.onDownstreamReset();
    this.onClosed?.(this);
  };

  // --- parser events

  onHead(msg: H1Head): void {
    if (this.headersTimer !== undefined) {
      clearTimeout(this.headersTimer);
      this.headersTimer = undefined;
    }
    this.versionMinor = msg.versionMinor;
    this.requestHasBody = !msg.noBody;
    this.requestDone = msg.noBody;
    this.responseEnded = false;
    this.chunked = false;
    this.headOnlyResponse = msg.method === 'HEAD';
    if (!msg.keepAlive) this.closeAfterResponse = true;
    const s = new ActiveStream(this.hcm, this, this.info);
    this.stream = s;
    s.decodeHeaders(msg.headers, msg.noBody, msg.expectContinue);
  }

  onBody(chunk: Buffer): void {
    this.stream?.decodeData(chunk, false);
  }

  onTrailers(trailers: HeaderMap): void {
    this.requestDone = true;
    this.stream?.decodeTrailers(trailers);
  }

  onMessageComplete(): void {
    const s = this.stream;
    if (this.requestHasBody && !this.requestDone) {
      this.requestDone = true;
      s?.decodeData(EMPTY, true);
    }
    this.requestDone = true;
    // One request at a time: the next pipelined request waits until this response is done.
    if (this.stream !== undefined) this.parser.paused = true;
    else if (this.upgraded || this.closeAfterResponse) this.parser.paused = true;
    else this.parser.resume();
  }

  onParseError(e: ParseErrorInfo): void {
    const s = this.stream;
    if (s !== undefined) {
      // Malformed body of a request already being proxied: reset it.
      this.stream = undefined;
      s.onDownstreamReset();
      this.socket.destroy();
      return;
    }
    this.hcm.stats.downstreamRq4xx++;
    const head = statusLine(e.kind) + 'content-length: 0\r\nconnection: close\r\ndate: ' + httpDate() + '\r\nserver: ' + this.hcm.config.serverName + '\r\n\r\n';
    this.socket.end(head, 'latin1');
  }

  // --- Downstream

  writeInterim(status: number, headers: HeaderMap): void {
    if (this.versionMinor === 0) return;
    this.socket.write(statusLine(status) + serializeFields(headers.raw) + CRLF, 'latin1');
  }

  writeHeaders(status: number, headers: HeaderMap, endStream: boolean): void {
    let head = statusLine(status);
    const raw = headers.raw;
    let hasLength = false;
    for (let i = 0; i < raw.length; i += 2) {
      const n = raw[i];
      if (n.charCodeAt(0) === 58) continue;
      if (n === 'content-length') hasLength = true;
      else if (n === 'connection' || n === 'transfer-encoding' || n === 'keep-alive' || n === 'upgrade' || n === 'proxy-connection') continue;
      head += n + ': ' + raw[i + 1] + CRLF;
    }
    const noBodyStatus = status === 204 || status === 304 || (status >= 100 && status < 200);
    if (!endStream && !hasLength && !noBodyStatus && !this.headOnlyResponse) {
      if (this.versionMinor === 1) {
        head += 'transfer-encoding: chunked\r\n';
        this.chunked = true;
      } else this.closeAfterResponse = true; // HTTP/1.0: the body runs until close
    } else if (endStream && !hasLength && !noBodyStatus && !this.headOnlyResponse) {
      head += 'content-length: 0\r\n';
    }
    if (!this.requestDone) this.closeAfterResponse = true; // we will not read the rest of the request
    if (this.closeAfterResponse) head += 'connection: close\r\n';
    else if (this.versionMinor === 0) head += 'connection: keep-alive\r\n';
    head += CRLF;
    if (endStream) {
      this.socket.write(head, 'latin1');
      this.endResponse();
      return;
    }
    // Head and the first body bytes usually arrive in the same upstream read: hold the head and
    // write both as one buffer (one syscall, no cork/writev machinery); flush it alone otherwise.
    this.pendingHead = head;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(flushHead, this);
    }
  }

  flushHead(): void {
    this.flushScheduled = false;
    const h = this.pendingHead;
    if (h !== undefined) {
      this.pendingHead = undefined;
      this.socket.write(h, 'latin1');
    }
  }

  /** prefix (the pending head, if any, then `prefix`), chunk and suffix as one buffer. */
  private frame(prefix: string, chunk: Buffer, suffix: string): Buffer {
    const h = this.pendingHead;
    if (h !== undefined) {
      this.pendingHead = undefined;
      prefix = h + prefix;
    }
    if (prefix.length === 0 && suffix.length === 0) return ownChunk(chunk);
    const pl = prefix.length;
    const out = Buffer.allocUnsafe(pl + chunk.length + suffix.length);
    if (pl > 0) out.latin1Write(prefix, 0, pl);
    chunk.copy(out, pl);
    if (suffix.length > 0) out.latin1Write(suffix, pl + chunk.length);
    return out;
  }

  writeData(chunk: Buffer, endStream: boolean): boolean {
    const s = this.socket;
    let ok = true;
    if (this.headOnlyResponse) {
      // HEAD: no body on the wire
      this.flushHead();
    } else if (this.chunked) {
      if (chunk.length > 0) {
        ok = s.write(this.frame(chunkHeader(chunk.length), chunk, endStream ? '\r\n0\r\n\r\n' : CRLF));
      } else if (endStream) {
        this.flushHead();
        ok = s.write('0\r\n\r\n', 'latin1');
      }
    } else if (chunk.length > 0) ok = s.write(this.frame('', chunk, ''));
    else this.flushHead();
    if (endStream) this.endResponse();
    return ok;
  }

  writeTrailers(trailers: HeaderMap): void {
    this.flushHead();
    if (this.chunked) this.socket.write('0\r\n' + serializeFields(trailers.raw) + CRLF, 'latin1');
    this.endResponse();
  }

  private endResponse(): void {
    if (this.responseEnded) return;
    this.responseEnded = true;
    this.flushHead();
    if (this.closeAfterResponse) this.socket.end();
  }

  reset(): void {
    this.socket.destroy();
  }

  pauseRequest(): void {
    this.socket.pause();
  }

  resumeRequest(): void {
    if (!this.upgraded) this.socket.resume();
  }

  upgrade(status: number, headers: HeaderMap, upstream: net.Socket, head: Buffer | undefined): void {
    this.upgraded = true;
    const s = this.socket;
    let out = statusLine(status);
    const raw = headers.raw;
    for (let i = 0; i < raw.length; i += 2) {
      const n = raw[i];
      if (n === 'connection' || n === 'transfer-encoding' || n === 'content-length') continue;
      out += n + ': ' + raw[i + 1] + CRLF;
    }
    out += 'connection: upgrade\r\n\r\n';
    s.write(out, 'latin1');
    if (head && head.length > 0) s.write(head);
    s.removeListener('data', this.onData);
    s.removeListener('drain', this.onDrain);
    s.removeListener('end', this.onEnd);
    const pending = this.parser.takeLeftover();
    if (pending && pending.length > 0) upstream.write(pending);
    s.pipe(upstream);
    upstream.pipe(s);
    upstream.on('error', () => s.destroy());
    upstream.on('close', () => s.destroy());
    s.on('close', () => upstream.destroy());
    s.resume();
  }

  /** Graceful drain: close now if idle, else after the response in flight (with connection: close). */
  /** Graceful drain without racing the client: the connection closes after its next response (`connection: close`). */
  closeAfterNextResponse(): void {
    this.closeAfterResponse = true;
  }

  drain(): void {
    if (this.upgraded) return;
    if (this.stream === undefined) this.socket.end();
    else this.closeAfterResponse = true;
  }

  onStreamComplete(): void {
    this.stream = undefined;
    if (this.upgraded) return;
    if (this.closeAfterResponse) {
      if (!this.responseEnded) this.socket.end();
      return;
    }
    if (this.requestDone) this.parser.resume();
  }
}

function flushHead(c: H1ServerConnection): void {
  c.flushHead();
}
