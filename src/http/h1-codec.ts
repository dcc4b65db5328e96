// HTTP/1.1 message parsing and framing on raw Buffers, for both sides of the proxy: downstream
// requests and upstream responses. One parser per connection, reused for every message on it. The
// parser only frames bytes and reports events to its handler; it never writes to sockets, never
// buffers a body, and never throws on input: malformed input becomes an `onParseError` call.

import { HeaderMap } from './headers';
import { scanHead } from '../native';

declare global {
  interface Buffer {
    /** Node's fast latin1 decoder (what buf.toString('latin1', s, e) calls after its checks). */
    latin1Slice(start?: number, end?: number): string;
    /** Node's latin1 encoder without buf.write's argument juggling. */
    latin1Write(s: string, offset?: number, length?: number): number;
  }
}

export const enum ParseErrorKind {
  BadRequest = 400,
  HeadersTooLarge = 431,
  BadVersion = 505,
  NotImplemented = 501,
}

export interface ParseErrorInfo {
  readonly kind: ParseErrorKind;
  /** Envoy-style response code details, e.g. `http1.codec_error` */
  readonly details: string;
}

export interface H1Handler {
  /** Request heads carry pseudo-headers (:method, :path, :authority, :scheme) first. */
  onHead(msg: H1Head): void;
  onBody(chunk: Buffer): void;
  onTrailers(trailers: HeaderMap): void;
  onMessageComplete(): void;
  onParseError(err: ParseErrorInfo): void;
}

export interface H1Head {
  readonly headers: HeaderMap;
  readonly versionMinor: number;
  /** responses only */
  readonly status: number;
  /** requests only */
  readonly method: string;
  readonly path: string;
  readonly authority: string;
  readonly keepAlive: boolean;
  readonly upgrade: boolean;
  readonly expectContinue: boolean;
  /** -1 when the body length is not given by content-length */
  readonly contentLength: number;
  readonly chunked: boolean;
  /** the message has no body at all (no CL/TE on a request; HEAD/1xx/204/304 responses) */
  readonly noBody: boolean;
  /** response body runs until the connection closes */
  readonly untilClose: boolean;
}

const enum State {
  Head,
  BodyLength,
  ChunkSize,
  ChunkData,
  ChunkDataEnd,
  Trailers,
  BodyUntilClose,
  Done,
  Upgraded,
  Failed,
}

// RFC 9110 tchar
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 48; c <= 57; c++) TCHAR[c] = 1;
for (let c = 65; c <= 90; c++) TCHAR[c] = 1;
for (let c = 97; c <= 122; c++) TCHAR[c] = 1;

function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 127 || TCHAR[c] === 0) return false;
  }
  return true;
}

// Control characters other than HTAB, CR and LF are never valid in a head; CR and LF only as CRLF.
const BAD_HEAD_CHARS = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/;

/** A CR or LF inside text[from, eol) (a line must end at its CRLF, nowhere else). */
function bareCrLf(text: string, from: number, eol: number): boolean {
  const n = text.indexOf('\n', from);
  if (n >= 0 && n < eol) return true;
  const r = text.indexOf('\r', from);
  return r >= 0 && r < eol;
}

const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');

const err = (kind: ParseErrorKind, details: string): ParseErrorInfo => ({ kind, details });
const E_BAD = err(ParseErrorKind.BadRequest, 'http1.codec_error');
const E_TOO_LARGE = err(ParseErrorKind.HeadersTooLarge, 'http1.headers_too_large');
const E_TOO_MANY = err(ParseErrorKind.HeadersTooLarge, 'http1.too_many_headers');
const E_VERSION = err(ParseErrorKind.BadVersion, 'http1.codec_error');
const E_TE = err(ParseErrorKind.NotImplemented, 'http1.invalid_transfer_encoding');
const E_CL = err(ParseErrorKind.BadRequest, 'http1.content_length_not_allowed');
const E_HOST = err(ParseErrorKind.BadRequest, 'http1.missing_host_header');
const E_UNDERSCORE = err(ParseErrorKind.BadRequest, 'http1.unexpected_underscore');
const E_CHUNK = err(ParseErrorKind.BadRequest, 'http1.invalid_chunk');

export interface H1ParserOptions {
  readonly isResponse: boolean;
  readonly maxHeaderBytes: number;
  readonly maxHeaders: number;
  /** Only for requests: reject (true) or drop (false) headers with underscores; undefined allows. */
  readonly rejectUnderscores?: boolean;
  readonly dropUnderscores?: boolean;
  readonly scheme?: string;
  readonly defaultHostForHttp10?: string;
  readonly acceptHttp10?: boolean;
}

export class H1Parser {
  private state = State.Head;
  private pending: Buffer | undefined;
  private remaining = 0;
  private trailerBuf = '';
  /** Set by the connection for a response to a HEAD request (or a CONNECT). */
  expectNoBody = false;
  /** Parsing stops after a message completes until resume() (requests: one at a time). */
  paused = false;
  private leftover: Buffer | undefined;

  constructor(private readonly handler: H1Handler, private readonly opts: H1ParserOptions) {}

  get idle(): boolean {
    return this.state === State.Head && this.pending === undefined;
  }
  get inBody(): boolean {
    return this.state !== State.Head && this.state !== State.Done && this.state !== State.Failed && this.state !== State.Upgraded;
  }
  get untilClose(): boolean {
    return this.state === State.BodyUntilClose;
  }

  /** Bytes after an Upgrade (101) or held back while paused. */
  takeLeftover(): Buffer | undefined {
    const l = this.leftover;
    this.leftover = undefined;
    return l;
  }

  /** After a completed message: ready for the next one, then process anything held back. */
  resume(): void {
    this.paused = false;
    if (this.state === State.Done) this.state = State.Head;
    const l = this.leftover;
    if (l !== undefined) {
      this.leftover = undefined;
      this.execute(l);
    }
  }

  /** The connection ended: completes a body that runs until close; true when that was clean. */
  finish(): boolean {
    if (this.state === State.BodyUntilClose) {
      this.state = State.Done;
      this.handler.onMessageComplete();
      return true;
    }
    return this.state === State.Head && this.pending === undefined;
  }

  markUpgraded(): void {
    this.state = State.Upgraded;
  }

  execute(data: Buffer): void {
    let buf = data;
    let pos = 0;
    while (pos < buf.length) {
      if (this.paused || this.state === State.Done) {
        this.hold(buf, pos);
        return;
      }
      switch (this.state) {
        case State.Head: {
          if (this.pending !== undefined) {
            // Resume the search a little before the old end, in case CRLFCRLF straddles chunks.
            const prevLen = this.pending.length;
            buf = Buffer.concat([this.pending, pos === 0 ? buf : buf.subarray(pos)]);
            this.pending = undefined;
            pos = 0;
            const from = prevLen > 3 ? prevLen - 3 : 0;
            const end = buf.indexOf(CRLFCRLF, from);
            if (end < 0) {
              if (buf.length > this.opts.maxHeaderBytes) return this.fail(E_TOO_LARGE);
              this.pending = buf;
              return;
            }
            if (end + 4 > this.opts.maxHeaderBytes) return this.fail(E_TOO_LARGE);
            if (!this.parseHead(buf, 0, end)) return;
            pos = end + 4;
            break;
          }
          // Skip the empty lines a client may send between messages (RFC 9112 2.2).
          while (pos + 1 < buf.length && buf[pos] === 13 && buf[pos + 1] === 10) pos += 2;
          if (pos >= buf.length) return;
          const end = buf.indexOf(CRLFCRLF, pos);
          if (end < 0) {
            if (buf.length - pos > this.opts.maxHeaderBytes) return this.fail(E_TOO_LARGE);
            this.pending = Buffer.from(buf.subarray(pos)); // a copy: buf may be a reused read buffer
            return;
          }
          if (end + 4 - pos > this.opts.maxHeaderBytes) return this.fail(E_TOO_LARGE);
          if (!this.parseHead(buf, pos, end)) return;
          pos = end + 4;
          break;
        }
        case State.BodyLength: {
          const avail = buf.length - pos;
          if (avail < this.remaining) {
            this.remaining -= avail;
            this.handler.onBody(pos === 0 ? buf : buf.subarray(pos));
            return;
          }
          const n = this.remaining;
          this.remaining = 0;
          if (n > 0) this.handler.onBody(buf.subarray(pos, pos + n));
          pos += n;
          this.complete();
          break;
        }
        case State.ChunkSize: {
          const nl = buf.indexOf(10, pos);
          if (nl < 0) {
            if (buf.length - pos > 4096) return this.fail(E_CHUNK);
            this.hold(buf, pos, true);
            return;
          }
          let line = buf.latin1Slice(pos, nl);
          pos = nl + 1;
          if (this.trailerBuf) {
            line = this.trailerBuf + line;
            this.trailerBuf = '';
          }
          if (line.length === 0 || line.charCodeAt(line.length - 1) !== 13) return this.fail(E_CHUNK);
          line = line.slice(0, -1);
          const semi = line.indexOf(';');
          const hex = (semi < 0 ? line : line.slice(0, semi)).trimEnd();
          if (!/^[0-9a-fA-F]{1,15}$/.test(hex)) return this.fail(E_CHUNK);
          const size = parseInt(hex, 16);
          if (size === 0) {
            this.state = State.Trailers;
            this.trailerBuf = '';
          } else {
            this.remaining = size;
            this.state = State.ChunkData;
          }
          break;
        }
        case State.ChunkData: {
          const avail = buf.length - pos;
          if (avail <= this.remaining) {
            this.remaining -= avail;
            if (avail > 0) this.handler.onBody(pos === 0 ? buf : buf.subarray(pos));
            if (this.remaining === 0) this.state = State.ChunkDataEnd;
            return;
          }
          const n = this.remaining;
          this.remaining = 0;
          this.handler.onBody(buf.subarray(pos, pos + n));
          pos += n;
          this.state = State.ChunkDataEnd;
          break;
        }
        case State.ChunkDataEnd: {
          // expect CRLF (may arrive split)
          if (this.trailerBuf === '') {
            if (buf[pos] !== 13) return this.fail(E_CHUNK);
            pos++;
            if (pos >= buf.length) {
              this.trailerBuf = '\r';
              return;
            }
          }
          this.trailerBuf = '';
          if (buf[pos] !== 10) return this.fail(E_CHUNK);
          pos++;
          this.state = State.ChunkSize;
          break;
        }
        case State.Trailers: {
          // Trailer section: lines until an empty line.
          const text = this.trailerBuf + buf.latin1Slice(pos, buf.length);
          let end: number;
          let skip: number;
          if (text.startsWith('\r\n')) {
            end = 0;
            skip = 2;
          } else {
            end = text.indexOf('\r\n\r\n');
            skip = 4;
          }
          if (end < 0) {
            if (text.length > this.opts.maxHeaderBytes) return this.fail(E_TOO_LARGE);
            this.trailerBuf = text;
            return;
          }
          const consumedFromBuf = end + skip - this.trailerBuf.length;
          const block = text.slice(0, end);
          this.trailerBuf = '';
          pos += consumedFromBuf;
          if (block.length > 0) {
            const trailers = new HeaderMap();
            if (BAD_HEAD_CHARS.test(block)) return this.fail(E_BAD);
            if (!this.parseFields(block, 0, trailers.raw, true)) return;
            this.handler.onTrailers(trailers);
          }
          this.complete();
          break;
        }
        case State.BodyUntilClose:
          this.handler.onBody(pos === 0 ? buf : buf.subarray(pos));
          return;
        case State.Upgraded:
          this.hold(buf, pos);
          return;
        case State.Failed:
          return;
      }
    }
  }

  private hold(buf: Buffer, pos: number, partialLine = false): void {
    const rest = pos === 0 ? buf : buf.subarray(pos);
    if (partialLine) {
      this.trailerBuf += rest.latin1Slice(0, rest.length);
      return;
    }
    this.leftover = this.leftover === undefined ? Buffer.from(rest) : Buffer.concat([this.leftover, rest]);
  }

  private complete(): void {
    this.state = State.Done;
    this.handler.onMessageComplete();
    // The handler may have called resume() synchronously (responses) — then state is Head again.
  }

  private fail(e: ParseErrorInfo): void {
    this.state = State.Failed;
    this.pending = undefined;
    this.handler.onParseError(e);
  }

  /** Parses buf[start, end) (the head without its final CRLFCRLF). */
  private parseHead(buf: Buffer, start: number, end: number): boolean {
    // One pass over the raw bytes: control characters, and CR or LF outside a CRLF, are refused.
    if (scanHead(buf, start, end) >= 0) {
      this.fail(E_BAD);
      return false;
    }
    const head = buf.latin1Slice(start, end);
    let lineEnd = head.indexOf('\r\n');
    if (lineEnd < 0) lineEnd = head.length;
    const opts = this.opts;
    const raw: string[] = [];
    let method = '';
    let path = '';
    let status = 0;
    let versionMinor: number;
    if (opts.isResponse) {
      // HTTP/1.x SP 3DIGIT SP reason
      if (!head.startsWith('HTTP/1.') || head.charCodeAt(8) !== 32) {
        this.fail(E_BAD);
        return false;
      }
      const v = head.charCodeAt(7) - 48;
      if (v !== 0 && v !== 1) {
        this.fail(E_BAD);
        return false;
      }
      versionMinor = v;
      const code = head.slice(9, 12);
      if (!/^\d{3}$/.test(code) || (lineEnd > 12 && head.charCodeAt(12) !== 32)) {
        this.fail(E_BAD);
        return false;
      }
      status = Number(code);
      if (status < 100) {
        this.fail(E_BAD);
        return false;
      }
    } else {
      const sp1 = head.indexOf(' ');
      const sp2 = sp1 < 0 ? -1 : head.indexOf(' ', sp1 + 1);
      if (sp1 <= 0 || sp2 < 0 || sp2 > lineEnd || sp2 === sp1 + 1) {
        this.fail(E_BAD);
        return false;
      }
      method = head.slice(0, sp1);
      path = head.slice(sp1 + 1, sp2);
      const ver = head.slice(sp2 + 1, lineEnd);
      if (ver === 'HTTP/1.1') versionMinor = 1;
      else if (ver === 'HTTP/1.0') versionMinor = 0;
      else {
        this.fail(/^HTTP\/\d\.\d$/.test(ver) ? E_VERSION : E_BAD);
        return false;
      }
      if (!isToken(method)) {
        this.fail(E_BAD);
        return false;
      }
      if (versionMinor === 0 && opts.acceptHttp10 === false) {
        this.fail(err(ParseErrorKind.BadVersion, 'http1.http10_not_supported'));
        return false;
      }
      raw.push(':method', method, ':path', path, ':authority', '', ':scheme', opts.scheme ?? 'http');
    }
    if (!this.parseFields(head, lineEnd + 2, raw, false)) return false;
    return this.finishHead(raw, versionMinor, method, path, status);
  }

  /** Header field lines of `text` from `from`; lower-cased names into `raw`. */
  private parseFields(text: string, from: number, raw: string[], trailers: boolean): boolean {
    const opts = this.opts;
    let pos = from;
    let count = 0;
    const len = text.length;
    while (pos < len) {
      let eol = text.indexOf('\r\n', pos);
      if (eol < 0) eol = len;
      const c0 = text.charCodeAt(pos);
      if (c0 === 32 || c0 === 9 || (trailers && bareCrLf(text, pos, eol))) {
        // obsolete line folding
        this.fail(E_BAD);
        return false;
      }
      const colon = text.indexOf(':', pos);
      if (colon < 0 || colon > eol) {
        this.fail(E_BAD);
        return false;
      }
      const name = text.slice(pos, colon).toLowerCase();
      if (!isToken(name)) {
        this.fail(E_BAD);
        return false;
      }
      let vs = colon + 1;
      let ve = eol;
      while (vs < ve && (text.charCodeAt(vs) === 32 || text.charCodeAt(vs) === 9)) vs++;
      while (ve > vs && (text.charCodeAt(ve - 1) === 32 || text.charCodeAt(ve - 1) === 9)) ve--;
      pos = eol + 2;
      if (++count > opts.maxHeaders) {
        this.fail(E_TOO_MANY);
        return false;
      }
      if (!trailers && !opts.isResponse && name.includes('_')) {
        if (opts.rejectUnderscores) {
          this.fail(E_UNDERSCORE);
          return false;
        }
        if (opts.dropUnderscores) continue;
      }
      raw.push(name, text.slice(vs, ve));
    }
    return true;
  }

  private finishHead(raw: string[], versionMinor: number, method: string, path: string, status: number): boolean {
    const isResponse = this.opts.isResponse;
    let contentLength = -1;
    let chunked = false;
    let hasTe = false;
    let connClose = false;
    let connKeepAlive = false;
    let connUpgrade = false;
    let upgradeHeader = false;
    let expectContinue = false;
    let authority = '';
    let hostCount = 0;
    let w = isResponse ? 0 : 8;
    for (let i = w; i < raw.length; i += 2) {
      const name = raw[i];
      const value = raw[i + 1];
      let keep = true;
      switch (name) {
        case 'content-length': {
          // RFC 9110: a list of identical values is the same as one
          let v = value;
          if (v.includes(',')) {
            const parts = v.split(',').map((s) => s.trim());
            if (!parts.every((p) => p === parts[0])) {
              this.fail(E_BAD);
              return false;
            }
            v = parts[0];
          }
          if (!/^\d{1,15}$/.test(v)) {
            this.fail(E_BAD);
            return false;
          }
          const n = Number(v);
          if (contentLength >= 0 && contentLength !== n) {
            this.fail(E_BAD);
            return false;
          }
          if (contentLength >= 0) keep = false; // an identical repeat
          contentLength = n;
          raw[i + 1] = v;
          break;
        }
        case 'transfer-encoding': {
          hasTe = true;
          const codings = value.toLowerCase().split(',').map((s) => s.trim()).filter((s) => s !== '');
          // chunked must be last, and only once; other codings are not something a proxy decodes
          if (codings.length === 0 || codings[codings.length - 1] !== 'chunked' || codings.indexOf('chunked') !== codings.length - 1) {
            if (isResponse) {
              chunked = false; // a response without chunked last is read until close
            } else {
              this.fail(E_TE);
              return false;
            }
          } else if (chunked) {
            this.fail(E_BAD);
            return false;
          } else chunked = true;
          keep = false;
          break;
        }
        case 'host':
          if (!isResponse) {
            hostCount++;
            authority = value;
            keep = false;
          }
          break;
        case 'connection': {
          const tokens = value.toLowerCase();
          if (tokens.includes('close')) connClose = true;
          if (tokens.includes('keep-alive')) connKeepAlive = true;
          if (tokens.includes('upgrade')) connUpgrade = true;
          keep = false;
          break;
        }
        case 'upgrade':
          upgradeHeader = true;
          break;
        case 'expect':
          if (!isResponse && value.toLowerCase() === '100-continue') {
            expectContinue = true;
            keep = false;
          }
          break;
        case 'keep-alive':
        case 'proxy-connection':
          keep = false;
          break;
      }
      if (keep) {
        if (w !== i) {
          raw[w] = name;
          raw[w + 1] = value;
        }
        w += 2;
      }
    }
    raw.length = w;
    if (hasTe && contentLength >= 0) {
      if (!isResponse) {
        this.fail(E_CL);
        return false;
      }
      contentLength = -1; // transfer-encoding wins (RFC 9112 6.3)
      for (let i = 0; i < raw.length; i += 2) if (raw[i] === 'content-length') raw.splice(i, 2), (i -= 2);
    }
    const keepAlive = versionMinor === 1 ? !connClose : connKeepAlive && !connClose;
    const upgrade = connUpgrade && upgradeHeader;
    if (!upgrade) {
      for (let i = isResponse ? 0 : 8; i < raw.length; i += 2) {
        if (raw[i] === 'upgrade') {
          raw.splice(i, 2);
          break;
        }
      }
    }

    let noBody: boolean;
    let untilClose = false;
    if (isResponse) {
      // content-length: 0 is complete with the head (no body bytes will come to finish it)
      noBody = this.expectNoBody || (status >= 100 && status < 200) || status === 204 || status === 304 || (contentLength === 0 && !chunked);
      if (!noBody && !chunked && contentLength < 0) untilClose = true;
      if (noBody) {
        chunked = false;
      }
    } else {
      if (hostCount > 1) {
        this.fail(E_BAD);
        return false;
      }
      // absolute-form request target: take the authority from it
      if (path.charCodeAt(0) !== 47 /* / */ && path !== '*' && method !== 'CONNECT') {
        const m = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/([^/?#]*)([^#]*)/.exec(path);
        if (!m) {
          this.fail(E_BAD);
          return false;
        }
        authority = m[1];
        path = m[2] === '' ? '/' : m[2].charCodeAt(0) === 47 ? m[2] : '/' + m[2];
        raw[3] = path;
      }
      if (method === 'CONNECT') {
        authority = path;
      }
      if (hostCount === 0 && authority === '') {
        if (versionMinor === 1) {
          this.fail(E_HOST);
          return false;
        }
        authority = this.opts.defaultHostForHttp10 ?? '';
      }
      raw[5] = authority;
      noBody = !chunked && contentLength <= 0;
    }
    const head: H1Head = {
      headers: new HeaderMap(raw),
      versionMinor,
      status,
      method,
      path,
      authority,
      keepAlive,
      upgrade,
      expectContinue,
      contentLength,
      chunked,
      noBody,
      untilClose,
    };
    if (noBody && !(isResponse && status >= 100 && status < 200 && status !== 101)) {
      // Head then completion; an upgrade request with no body continues as raw bytes.
      this.state = State.Done;
      this.handler.onHead(head);
      if ((this.state as State) === State.Done) this.handler.onMessageComplete();
      return (this.state as State) !== State.Failed;
    }
    if (isResponse && status >= 100 && status < 200 && status !== 101) {
      // interim response: report it and keep reading for the final one
      this.state = State.Head;
      this.handler.onHead(head);
      return (this.state as State) !== State.Failed;
    }
    if (chunked) this.state = State.ChunkSize;
    else if (contentLength >= 0) {
      this.state = State.BodyLength;
      this.remaining = contentLength;
    } else this.state = State.BodyUntilClose;
    this.handler.onHead(head);
    return (this.state as State) !== State.Failed;
  }
}

// ---------------------------------------------------------------------------------------------
// Serialisation

import { STATUS_CODES } from 'node:http';

const STATUS_LINES: string[] = [];
for (let s = 100; s < 600; s++) STATUS_LINES[s] = `HTTP/1.1 ${s} ${STATUS_CODES[s] ?? 'Unknown'}\r\n`;

export function statusLine(status: number): string {
  return STATUS_LINES[status] ?? `HTTP/1.1 ${status} Unknown\r\n`;
}

/** Serialises non-pseudo headers as `name: value\r\n` lines. */
export function serializeFields(raw: readonly string[], from = 0): string {
  let out = '';
  for (let i = from; i < raw.length; i += 2) {
    const n = raw[i];
    if (n.charCodeAt(0) === 58 /* : */) continue;
    out += n + ': ' + raw[i + 1] + '\r\n';
  }
  return out;
}

export function chunkHeader(len: number): string {
  return len.toString(16) + '\r\n';
}
