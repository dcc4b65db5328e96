// Listener filters' view of a new connection (Envoy's tls_inspector and http_inspector): its first
// bytes, looked at WITHOUT consuming them when the native addon is in use, so the socket can then be
// handed to a consumer that reads its fd from C++ (tls.TLSSocket attaches to `socket._handle`; bytes
// read in JS and unshift()ed would be lost to it). keel's HTTP codecs take the consumed bytes directly.
//
// - sniffConnection(socket, { timeoutMs, want }): peeks until `want` says 'done', the peer closes,
//   maxBytes is reached or the timeout fires. With the addon the bytes stay in the kernel
//   (consumed: false); with the TypeScript twin they are read in JS (consumed: true) and must be
//   replayed to the next consumer with ReplaySocket.
// - ReplaySocket: a Duplex that yields the consumed bytes, then the socket's data, and otherwise
//   passes through to the socket; http2 and tls accept it where they take a socket.
// - parseClientHello / detectProtocol: pure parsing of the bytes seen (TLS ClientHello SNI and ALPN;
//   TLS vs HTTP/2 prior knowledge vs HTTP/1.x).
//
// The server must be created with `pauseOnConnect: true`: the addon's peek requires that libuv is
// not reading the socket. Every path leaves the socket paused; the caller resumes it or hands it on.
// Handing on (verified in test/unit/native/peek.test.ts): `new tls.TLSSocket(s, { isServer: true })`
// starts reading by itself; after `http2Server.emit('connection', s)` or
// `httpServer.emit('connection', s)` call `s.resume()` (they consume the handle but do not start
// a paused socket). A ReplaySocket is read on demand by whatever wraps it.
//
// Waiting for more bytes (want() === 'more'): readiness is level-triggered, so polling again with
// bytes already queued would fire at once. The native peek is therefore asked for at least one
// byte more than already seen (minBytes, which the addon implements with SO_RCVLOWAT): Linux then
// reports the socket readable only when new bytes (or FIN/error) arrive, with no timer and no
// busy loop. If a peek comes back without growth anyway (a kernel or socket type that ignores
// SO_RCVLOWAT, or more than the addon's 16 KiB SO_RCVLOWAT cap already queued), the next peek
// waits on a timer first: 1 ms, doubling to 64 ms, reset after growth; all bounded by timeoutMs.
//
// Must not: resume or read the socket on the native path, leave a timer or peek running after the
// promise settles, or lose a byte on the twin path (everything read is in `bytes`).

import * as net from 'node:net';
import { Duplex } from 'node:stream';
import { activeImpl, type CaptureImpl, type PeekHandle } from '../native/index';

/** The HTTP/2 connection preface a prior-knowledge (h2c) client sends first (RFC 9113 §3.4). */
export const H2_PREFACE: Buffer = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** sniffConnection's default byte cap (Envoy's tls_inspector max_client_hello_size default). */
export const DEFAULT_SNIFF_MAX_BYTES = 64 * 1024;

const BACKOFF_FIRST_MS = 1;
const BACKOFF_MAX_MS = 64;

export interface SniffOptions {
  /** Give up after this long and resolve with timedOut: true (Envoy's listener_filters_timeout). 0 = never. */
  readonly timeoutMs: number;
  /** Called with all bytes seen so far (from the first byte) after each read: stop, or wait for more. */
  readonly want: (bytes: Buffer) => 'more' | 'done';
  /** Stop once this many bytes have been seen, whatever `want` says. Default 64 KiB. */
  readonly maxBytes?: number;
  /** The implementation to use (tests); default the active one (the addon when it is loaded). */
  readonly impl?: CaptureImpl;
}

export interface SniffResult {
  /** Every byte seen, from the connection's first byte (on the twin path possibly beyond maxBytes). */
  readonly bytes: Buffer;
  /**
   * false: peeked, the bytes are still queued on the socket (resume it or hand it on as is).
   * true: read off the socket in JS; hand on `new ReplaySocket(socket, bytes)` instead.
   */
  readonly consumed: boolean;
  /** The timeout fired before `want` said 'done'. */
  readonly timedOut: boolean;
  /** The peer shut down its sending side: `bytes` (possibly empty) is all it sent. */
  readonly eof: boolean;
}

/**
 * Looks at the first bytes of `socket` (accepted with pauseOnConnect: true) until `want` returns
 * 'done', the peer closes, maxBytes is reached or timeoutMs passes, and resolves with what was seen.
 * Rejects when the peek fails (ECONNRESET...; EEXIST when the socket is already being read), when
 * the socket is destroyed meanwhile (ERR_SOCKET_CLOSED), or when `want` throws. The socket is left
 * paused in every case; on rejection with consumed bytes, those are lost (the caller closes it).
 */
export function sniffConnection(socket: net.Socket, opts: SniffOptions): Promise<SniffResult> {
  const impl = opts.impl ?? activeImpl();
  const consumed = impl.peekMode === 'read';
  const maxBytes = opts.maxBytes ?? DEFAULT_SNIFF_MAX_BYTES;
  const { timeoutMs, want } = opts;
  if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
    throw new TypeError(`timeoutMs must be a non-negative number, got ${String(timeoutMs)}`);
  }
  return new Promise<SniffResult>((resolve, reject) => {
    let bytes: Buffer = Buffer.alloc(0);
    let handle: PeekHandle | undefined;
    let backoffTimer: NodeJS.Timeout | undefined;
    let backoffMs = BACKOFF_FIRST_MS;
    let settled = false;

    const stop = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(deadline);
      clearTimeout(backoffTimer);
      handle?.cancel();
      handle = undefined;
      return true;
    };
    const done = (timedOut: boolean, eof: boolean): void => {
      if (stop()) resolve({ bytes, consumed, timedOut, eof });
    };
    const fail = (err: unknown): void => {
      if (stop()) reject(err);
    };

    const next = (): void => {
      backoffTimer = undefined;
      try {
        // Peek mode: wait for at least one byte more than seen (see the header). Read mode: any chunk.
        const minBytes = consumed ? 1 : Math.min(bytes.length + 1, maxBytes);
        handle = impl.peek(socket, maxBytes, onPeek, { minBytes });
      } catch (err) {
        fail(err);
      }
    };

    const onPeek = (err: NodeJS.ErrnoException | null, data: Buffer | null, eof: boolean): void => {
      handle = undefined;
      if (settled) return;
      if (err !== null || data === null) {
        fail(err ?? new Error('peek: no data and no error'));
        return;
      }
      const before = bytes.length;
      if (consumed) {
        if (data.length > 0) bytes = before === 0 ? data : Buffer.concat([bytes, data]);
      } else {
        bytes = data;
      }
      if (eof) {
        done(false, true);
        return;
      }
      let verdict: 'more' | 'done';
      try {
        verdict = want(bytes);
      } catch (e) {
        fail(e);
        return;
      }
      if (verdict === 'done' || bytes.length >= maxBytes) {
        done(false, false);
      } else if (bytes.length > before) {
        backoffMs = BACKOFF_FIRST_MS;
        next();
      } else {
        backoffTimer = setTimeout(next, backoffMs);
        backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
      }
    };

    const deadline = timeoutMs > 0 ? setTimeout(() => done(true, false), timeoutMs) : undefined;
    next();
  });
}

type WriteCallback = (error?: Error | null) => void;

/**
 * A socket whose first bytes were consumed in JS (SniffResult.consumed), made whole again for the
 * next consumer: reads yield `consumed`, then the socket's data (pausing the socket while this
 * stream's buffer is full); writes, end() and destroy() go to the socket; the address getters and
 * setNoDelay/setKeepAlive/setTimeout/ref/unref/address() delegate to it (`encrypted` is undefined).
 * Used for TLS: `new tls.TLSSocket(replay, { isServer: true, ... })` wraps it in its JS stream
 * adapter; the HTTP codecs are handed the consumed bytes instead.
 */
export class ReplaySocket extends Duplex {
  readonly socket: net.Socket;
  private sawEnd = false;

  constructor(socket: net.Socket, consumed: Buffer) {
    super({ allowHalfOpen: socket.allowHalfOpen });
    this.socket = socket;
    if (consumed.length > 0) this.push(consumed);

    socket.on('data', (chunk: Buffer | string) => {
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => {
      this.sawEnd = true;
      this.push(null);
    });
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => {
      if (this.destroyed) return;
      // A clean close after 'end': let the reader drain what is buffered here first.
      if (this.sawEnd && !this.readableEnded) this.once('end', () => this.destroy());
      else this.destroy();
    });
    socket.on('timeout', () => this.emit('timeout'));
    if (socket.readableEnded) {
      this.sawEnd = true;
      this.push(null);
    }
    if (socket.destroyed) process.nextTick(() => this.destroy());
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, encoding: BufferEncoding, callback: WriteCallback): void {
    this.socket.write(chunk, encoding, callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>, callback: WriteCallback): void {
    this.socket.cork();
    chunks.forEach(({ chunk, encoding }, i) => {
      this.socket.write(chunk, encoding, i === chunks.length - 1 ? callback : undefined);
    });
    this.socket.uncork();
  }

  override _final(callback: WriteCallback): void {
    this.socket.end(() => callback());
  }

  override _destroy(err: Error | null, callback: (error: Error | null) => void): void {
    // The error (if any) is reported on this stream; the socket is just closed.
    this.socket.destroy();
    callback(err);
  }

  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }
  get remotePort(): number | undefined {
    return this.socket.remotePort;
  }
  get remoteFamily(): string | undefined {
    return this.socket.remoteFamily;
  }
  get localAddress(): string | undefined {
    return this.socket.localAddress;
  }
  get localPort(): number | undefined {
    return this.socket.localPort;
  }
  get bytesWritten(): number {
    return this.socket.bytesWritten;
  }
  get connecting(): boolean {
    return this.socket.connecting;
  }
  get readyState(): net.SocketReadyState {
    return this.socket.readyState;
  }
  get timeout(): number | undefined {
    return this.socket.timeout;
  }
  address(): net.AddressInfo | Record<string, never> {
    return this.socket.address() as net.AddressInfo | Record<string, never>;
  }
  setNoDelay(noDelay?: boolean): this {
    this.socket.setNoDelay(noDelay);
    return this;
  }
  setKeepAlive(enable?: boolean, initialDelay?: number): this {
    this.socket.setKeepAlive(enable, initialDelay);
    return this;
  }
  /** Like net.Socket#setTimeout: the socket's idle timer; 'timeout' is re-emitted here. */
  setTimeout(ms: number, callback?: () => void): this {
    this.socket.setTimeout(ms);
    if (callback) {
      if (ms === 0) this.off('timeout', callback);
      else this.once('timeout', callback);
    }
    return this;
  }
  ref(): this {
    this.socket.ref();
    return this;
  }
  unref(): this {
    this.socket.unref();
    return this;
  }
}

/** What a TLS ClientHello says about the connection (Envoy's tls_inspector). */
export interface ClientHelloInfo {
  /** false: a ClientHello so far, but more bytes are needed to see all of it. */
  readonly complete: boolean;
  /** server_name (extension 0), host_name entry, as sent. */
  readonly sni?: string;
  /** application_layer_protocol_negotiation (extension 16), in the client's order. */
  readonly alpn?: string[];
}

const TLS_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const MAX_RECORD_LENGTH = 16384 + 2048; // TLSCiphertext bound (RFC 8446 §5.2); plaintext is lower

/**
 * Parses the TLS ClientHello at the start of `bytes`: record type 22, handshake type 1, possibly
 * fragmented over several records. Returns undefined when the bytes are not (the start of) a
 * well-formed ClientHello, { complete: false } while more bytes are needed, and once the whole
 * message is there { complete: true, sni?, alpn? }. Pure parsing; trailing bytes are ignored.
 */
export function parseClientHello(bytes: Buffer): ClientHelloInfo | undefined {
  // Reassemble the handshake layer from as many records (and part-records) as there are.
  const fragments: Buffer[] = [];
  let off = 0;
  let need: number | undefined;
  let have = 0;
  while (off < bytes.length) {
    if (bytes[off] !== TLS_HANDSHAKE) return undefined;
    if (off + 1 < bytes.length && bytes[off + 1] !== 3) return undefined; // legacy_record_version 3.x
    if (off + 5 > bytes.length) break;
    const len = bytes.readUInt16BE(off + 3);
    if (len === 0 || len > MAX_RECORD_LENGTH) return undefined;
    const fragment = bytes.subarray(off + 5, Math.min(off + 5 + len, bytes.length));
    fragments.push(fragment);
    have += fragment.length;
    off += 5 + len;
    const hs = fragments.length === 1 ? fragments[0]! : Buffer.concat(fragments);
    if (hs.length >= 1 && hs[0] !== HANDSHAKE_CLIENT_HELLO) return undefined;
    if (hs.length >= 4) need = 4 + hs.readUIntBE(1, 3);
    if (need !== undefined && have >= need) return parseClientHelloBody(hs.subarray(4, need));
  }
  return { complete: false };
}

/** The ClientHello body (after the 4-byte handshake header); undefined if malformed. */
function parseClientHelloBody(body: Buffer): ClientHelloInfo | undefined {
  let p = 2 + 32; // legacy_version, random
  if (p + 1 > body.length) return undefined;
  p += 1 + body[p]!; // legacy_session_id
  if (p + 2 > body.length) return undefined;
  p += 2 + body.readUInt16BE(p); // cipher_suites
  if (p + 1 > body.length) return undefined;
  p += 1 + body[p]!; // legacy_compression_methods
  if (p > body.length) return undefined;
  if (p === body.length) return { complete: true }; // no extensions at all (old clients)
  if (p + 2 > body.length) return undefined;
  const end = p + 2 + body.readUInt16BE(p);
  if (end > body.length) return undefined;
  p += 2;
  let sni: string | undefined;
  let alpn: string[] | undefined;
  while (p < end) {
    if (p + 4 > end) return undefined;
    const type = body.readUInt16BE(p);
    const len = body.readUInt16BE(p + 2);
    const data = body.subarray(p + 4, p + 4 + len);
    if (p + 4 + len > end) return undefined;
    p += 4 + len;
    if (type === EXT_SERVER_NAME) {
      if (data.length < 2 || 2 + data.readUInt16BE(0) !== data.length) return undefined;
      for (let q = 2; q < data.length; ) {
        if (q + 3 > data.length) return undefined;
        const nameType = data[q]!;
        const nameLen = data.readUInt16BE(q + 1);
        if (q + 3 + nameLen > data.length) return undefined;
        if (nameType === 0 && sni === undefined) sni = data.toString('latin1', q + 3, q + 3 + nameLen);
        q += 3 + nameLen;
      }
    } else if (type === EXT_ALPN) {
      if (data.length < 2 || 2 + data.readUInt16BE(0) !== data.length) return undefined;
      const protocols: string[] = [];
      for (let q = 2; q < data.length; ) {
        const n = data[q]!;
        if (n === 0 || q + 1 + n > data.length) return undefined;
        protocols.push(data.toString('latin1', q + 1, q + 1 + n));
        q += 1 + n;
      }
      alpn = protocols;
    }
  }
  return { complete: true, ...(sni !== undefined ? { sni } : {}), ...(alpn !== undefined ? { alpn } : {}) };
}

/** What detectProtocol concluded from a connection's first bytes. */
export type Detection =
  | { readonly status: 'more' }
  | { readonly status: 'done'; readonly protocol: 'tls'; readonly sni?: string; readonly alpn?: string[] }
  | { readonly status: 'done'; readonly protocol: 'h2c' | 'http/1.1' | 'http/1.0' | 'unknown' };

const MAX_REQUEST_LINE = 8192;
const REQUEST_LINE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ [\x21-\x7e]+ HTTP\/1\.([01])$/;

/**
 * Envoy's listener-filter decisions on the bytes seen so far: a TLS ClientHello (first byte 0x16;
 * 'more' until it is complete, then its SNI and ALPN), the HTTP/2 prior-knowledge preface, an
 * HTTP/1.0 or 1.1 request line, or 'unknown'. `sniffConnection`'s `want` can be
 * `(b) => detectProtocol(b).status`.
 */
export function detectProtocol(bytes: Buffer): Detection {
  if (bytes.length === 0) return { status: 'more' };
  if (bytes[0] === TLS_HANDSHAKE) {
    const hello = parseClientHello(bytes);
    if (hello === undefined) return { status: 'done', protocol: 'unknown' };
    if (!hello.complete) return { status: 'more' };
    return {
      status: 'done',
      protocol: 'tls',
      ...(hello.sni !== undefined ? { sni: hello.sni } : {}),
      ...(hello.alpn !== undefined ? { alpn: hello.alpn } : {}),
    };
  }
  const n = Math.min(bytes.length, H2_PREFACE.length);
  if (bytes.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) {
    return n === H2_PREFACE.length ? { status: 'done', protocol: 'h2c' } : { status: 'more' };
  }
  const eol = bytes.indexOf('\r\n', 0, 'latin1');
  if (eol === -1) {
    if (bytes.length >= MAX_REQUEST_LINE) return { status: 'done', protocol: 'unknown' };
    // Still plausible as a request line: printable ASCII and spaces, ending maybe in a lone CR.
    for (let i = 0; i < bytes.length; i++) {
      const c = bytes[i]!;
      if ((c < 0x20 || c > 0x7e) && !(c === 0x0d && i === bytes.length - 1)) return { status: 'done', protocol: 'unknown' };
    }
    return { status: 'more' };
  }
  const m = REQUEST_LINE.exec(bytes.toString('latin1', 0, eol));
  if (m === null) return { status: 'done', protocol: 'unknown' };
  return { status: 'done', protocol: m[1] === '1' ? 'http/1.1' : 'http/1.0' };
}
