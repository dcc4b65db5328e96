// A raw-frame HTTP/2 client for wire-level tests (h2c by prior knowledge over a plain socket):
// builders for every frame type (flags, padding, priority fields, and arbitrary raw bytes for bad
// frames), a test-only HPACK encoder (literal without indexing, new name, no Huffman: names and
// values exactly as given), and a frame reader tests await (next / waitFor / expectGoaway /
// expectRst / ping / response; response header blocks are decoded with src/http/hpack.ts). Also the
// keel fixture the h2-conformance-*.test.ts files share (keel + an HTTP/1 upstream, a blackhole
// that never reads, and a gRPC-like h2c upstream).
// It must not be clever: it never corrects what a test sends, never answers frames on its own
// except an ACK to the server's SETTINGS (unless told not to), and its deadlines are a safety net
// only, never the thing a test waits for. Everything it opens is closed in t.teardown.

import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { bootstrap, cluster, startKeel, type RunningKeel } from './keel';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const FRAME = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

export const FLAG = {
  END_STREAM: 0x1,
  ACK: 0x1,
  END_HEADERS: 0x4,
  PADDED: 0x8,
  PRIORITY: 0x20,
} as const;

export const ERR = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;

export const SETTING = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
} as const;

const TYPE_NAMES = Object.fromEntries(Object.entries(FRAME).map(([k, v]) => [v, k])) as Record<number, string>;
const ERR_NAMES = Object.fromEntries(Object.entries(ERR).map(([k, v]) => [v, k])) as Record<number, string>;

export function errName(code: number): string {
  return ERR_NAMES[code] ?? `0x${code.toString(16)}`;
}

export interface Frame {
  length: number;
  type: number;
  flags: number;
  /** with the reserved bit masked off */
  streamId: number;
  payload: Buffer;
  /** HEADERS / PUSH_PROMISE only: the decoded field list [name, value, ...], set once the block is complete (END_HEADERS seen) */
  headers?: string[];
}

// ---------------------------------------------------------------------------------------------
// Frame builders

/** A frame with its length taken from the payload; `streamId` goes on the wire as given (reserved bit included). */
export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return rawFrame(payload.length, type, flags, streamId, payload);
}

/** A frame whose length field says `length`, whatever the payload really is (for bad frames). */
export function rawFrame(length: number, type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(length & 0xffffff, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId >>> 0, 5);
  return Buffer.concat([h, payload]);
}

export interface Priority {
  dependency: number;
  /** 1..256 as in the RFC (the wire carries weight - 1) */
  weight?: number;
  exclusive?: boolean;
}

function priorityBytes(p: Priority): Buffer {
  const b = Buffer.alloc(5);
  b.writeUInt32BE(((p.exclusive ? 0x80000000 : 0) | (p.dependency & 0x7fffffff)) >>> 0, 0);
  b[4] = (p.weight ?? 16) - 1;
  return b;
}

/** `padLength` set -> PADDED flag, a pad-length byte and that many zero bytes. */
function padded(body: Buffer, padLength: number | undefined): Buffer {
  if (padLength === undefined) return body;
  return Buffer.concat([Buffer.from([padLength]), body, Buffer.alloc(padLength)]);
}

export interface DataOptions {
  endStream?: boolean;
  padLength?: number;
  /** extra flag bits OR-ed in as given */
  flags?: number;
}

export function dataFrame(streamId: number, data: Buffer | string, o: DataOptions = {}): Buffer {
  let flags = o.flags ?? 0;
  if (o.endStream) flags |= FLAG.END_STREAM;
  if (o.padLength !== undefined) flags |= FLAG.PADDED;
  return frame(FRAME.DATA, flags, streamId, padded(Buffer.from(data), o.padLength));
}

export interface HeadersOptions {
  endStream?: boolean;
  /** default true */
  endHeaders?: boolean;
  padLength?: number;
  priority?: Priority;
  flags?: number;
}

export function headersFrame(streamId: number, block: Buffer, o: HeadersOptions = {}): Buffer {
  let flags = o.flags ?? 0;
  if (o.endStream) flags |= FLAG.END_STREAM;
  if (o.endHeaders !== false) flags |= FLAG.END_HEADERS;
  if (o.padLength !== undefined) flags |= FLAG.PADDED;
  let body = block;
  if (o.priority) {
    flags |= FLAG.PRIORITY;
    body = Buffer.concat([priorityBytes(o.priority), block]);
  }
  return frame(FRAME.HEADERS, flags, streamId, padded(body, o.padLength));
}

export function priorityFrame(streamId: number, p: Priority): Buffer {
  return frame(FRAME.PRIORITY, 0, streamId, priorityBytes(p));
}

export function rstStreamFrame(streamId: number, code: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(code >>> 0, 0);
  return frame(FRAME.RST_STREAM, 0, streamId, b);
}

export function settingsFrame(settings: readonly (readonly [number, number])[] = [], ack = false): Buffer {
  const b = Buffer.alloc(settings.length * 6);
  settings.forEach(([id, value], i) => {
    b.writeUInt16BE(id, i * 6);
    b.writeUInt32BE(value >>> 0, i * 6 + 2);
  });
  return frame(FRAME.SETTINGS, ack ? FLAG.ACK : 0, 0, b);
}

export function pushPromiseFrame(streamId: number, promisedId: number, block: Buffer, o: { endHeaders?: boolean; padLength?: number } = {}): Buffer {
  let flags = 0;
  if (o.endHeaders !== false) flags |= FLAG.END_HEADERS;
  if (o.padLength !== undefined) flags |= FLAG.PADDED;
  const id = Buffer.alloc(4);
  id.writeUInt32BE(promisedId >>> 0, 0);
  return frame(FRAME.PUSH_PROMISE, flags, streamId, padded(Buffer.concat([id, block]), o.padLength));
}

export function pingFrame(data: Buffer = Buffer.alloc(8), ack = false): Buffer {
  return frame(FRAME.PING, ack ? FLAG.ACK : 0, 0, data);
}

export function goawayFrame(lastStreamId: number, code: number, debug = ''): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(lastStreamId >>> 0, 0);
  b.writeUInt32BE(code >>> 0, 4);
  return frame(FRAME.GOAWAY, 0, 0, Buffer.concat([b, Buffer.from(debug)]));
}

export function windowUpdateFrame(streamId: number, increment: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(increment >>> 0, 0);
  return frame(FRAME.WINDOW_UPDATE, 0, streamId, b);
}

export function continuationFrame(streamId: number, block: Buffer, endHeaders = true): Buffer {
  return frame(FRAME.CONTINUATION, endHeaders ? FLAG.END_HEADERS : 0, streamId, block);
}

// ---------------------------------------------------------------------------------------------
// Header blocks

function hpackInt(value: number, prefixBits: number, firstByte: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [firstByte | value];
  const out = [firstByte | max];
  value -= max;
  while (value >= 128) {
    out.push((value & 0x7f) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return out;
}

function hpackString(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'latin1') : s;
  return Buffer.concat([Buffer.from(hpackInt(b.length, 7, 0)), b]);
}

/**
 * A header block of "literal header field without indexing, new name" fields (0x00, lengths with a
 * 7-bit prefix, no Huffman), which every HPACK decoder must accept. `fields` is a flat
 * [name, value, ...] list or a list of pairs; names and values go out exactly as given (latin1;
 * a Buffer value goes out byte for byte, e.g. to carry a NUL).
 */
export function encodeHeaders(fields: readonly (string | Buffer)[] | readonly (readonly [string, string | Buffer])[]): Buffer {
  const flat: (string | Buffer)[] = [];
  for (const f of fields as readonly unknown[]) {
    if (Array.isArray(f)) flat.push(f[0] as string, f[1] as string | Buffer);
    else flat.push(f as string | Buffer);
  }
  const parts: Buffer[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) parts.push(Buffer.from([0x00]), hpackString(flat[i]), hpackString(flat[i + 1]));
  return Buffer.concat(parts);
}

/** The four pseudo-headers of a plain request, then `extra` ([name, value, ...]). */
export function requestBlock(path: string, extra: readonly (string | Buffer)[] = [], method = 'GET'): Buffer {
  return encodeHeaders([':method', method, ':scheme', 'http', ':path', path, ':authority', 'conformance.test', ...extra]);
}

// Response header blocks are decoded with keel's own HPACK decoder (src/http/hpack.ts) when it is
// there; without it only a status sent as a static-table index (0x88..0x8e) is understood.
interface Decoder {
  decode(buf: Buffer, start: number, end: number, out: string[], maxListSize: number): number;
}
type DecoderCtor = new (...args: number[]) => Decoder;
let decoderCtor: DecoderCtor | null | undefined;
function loadDecoder(): DecoderCtor | null {
  if (decoderCtor !== undefined) return decoderCtor;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require('../../src/http/hpack') as { HpackDecoder?: DecoderCtor };
    decoderCtor = mod.HpackDecoder ?? null;
  } catch {
    decoderCtor = null;
  }
  return decoderCtor;
}
const STATIC_STATUS: Record<number, string> = { 0x88: '200', 0x89: '204', 0x8a: '206', 0x8b: '304', 0x8c: '400', 0x8d: '404', 0x8e: '500' };

export function headerValue(list: readonly string[] | undefined, name: string): string | undefined {
  if (!list) return undefined;
  for (let i = 0; i < list.length; i += 2) if (list[i] === name) return list[i + 1];
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The connection

export interface ConnectOptions {
  /** the client's first SETTINGS (default: an empty SETTINGS frame); `false` sends none */
  settings?: readonly (readonly [number, number])[] | false;
  /** the preface to send (default the real one) */
  preface?: Buffer;
  /** ACK the server's SETTINGS frames as they come (default true) */
  autoAck?: boolean;
  /** deadline for each wait, a safety net only (default 5 s) */
  timeoutMs?: number;
  /** the dynamic table size the response decoder allows (default 4096): set it with the SETTINGS_HEADER_TABLE_SIZE sent */
  decoderTableSize?: number;
}

export interface Goaway {
  lastStreamId: number;
  code: number;
  debug: string;
}

export interface Response {
  status: string | undefined;
  headers: string[];
  trailers: string[] | undefined;
  body: Buffer;
  frames: Frame[];
}

export class H2Wire {
  /** every frame received, in order */
  readonly frames: Frame[] = [];
  /** frames before this index have been consumed by next()/waitFor() */
  cursor = 0;
  isClosed = false;
  readonly closed: Promise<void>;
  /** the server's SETTINGS values, as received (non-ACK SETTINGS frames, in order) */
  readonly serverSettings = new Map<number, number>();
  readonly timeoutMs: number;
  private buf = Buffer.alloc(0);
  private waiters = new Set<() => void>();
  private pingSeq = 0;
  private decoder: Decoder | null;
  private pendingBlock: { first: Frame; parts: Buffer[] } | undefined;
  private readonly autoAck: boolean;
  /** an error the socket reported (ECONNRESET etc.): a close all the same */
  socketError: Error | undefined;

  constructor(
    readonly socket: net.Socket,
    o: ConnectOptions,
  ) {
    this.timeoutMs = o.timeoutMs ?? 5000;
    this.autoAck = o.autoAck !== false;
    const Ctor = loadDecoder();
    this.decoder = Ctor ? new Ctor(o.decoderTableSize ?? 4096) : null;
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (e) => (this.socketError = e));
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.isClosed = true;
        this.notify();
        resolve();
      }),
    );
  }

  send(...bufs: Buffer[]): void {
    if (this.socket.destroyed || this.socket.writableEnded) return;
    this.socket.write(bufs.length === 1 ? bufs[0] : Buffer.concat(bufs));
  }

  /** Sends a request's HEADERS (END_HEADERS; END_STREAM unless `body` follows) and its body as one DATA frame. */
  request(streamId: number, path: string, o: { method?: string; extra?: readonly (string | Buffer)[]; body?: Buffer | string } = {}): void {
    const block = requestBlock(path, o.extra ?? [], o.method ?? (o.body !== undefined ? 'POST' : 'GET'));
    if (o.body === undefined) this.send(headersFrame(streamId, block, { endStream: true }));
    else this.send(headersFrame(streamId, block), dataFrame(streamId, o.body, { endStream: true }));
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    let off = 0;
    while (this.buf.length - off >= 9) {
      const length = this.buf.readUIntBE(off, 3);
      if (this.buf.length - off < 9 + length) break;
      const f: Frame = {
        length,
        type: this.buf[off + 3],
        flags: this.buf[off + 4],
        streamId: this.buf.readUInt32BE(off + 5) & 0x7fffffff,
        payload: Buffer.from(this.buf.subarray(off + 9, off + 9 + length)),
      };
      off += 9 + length;
      this.onFrame(f);
    }
    this.buf = this.buf.subarray(off);
    this.notify();
  }

  private onFrame(f: Frame): void {
    if (f.type === FRAME.SETTINGS && !(f.flags & FLAG.ACK)) {
      for (let i = 0; i + 6 <= f.payload.length; i += 6) this.serverSettings.set(f.payload.readUInt16BE(i), f.payload.readUInt32BE(i + 2));
      if (this.autoAck) this.send(settingsFrame([], true));
    }
    if (f.type === FRAME.HEADERS || f.type === FRAME.PUSH_PROMISE) {
      this.pendingBlock = { first: f, parts: [blockFragment(f)] };
    } else if (f.type === FRAME.CONTINUATION && this.pendingBlock) {
      this.pendingBlock.parts.push(f.payload);
    }
    if ((f.type === FRAME.HEADERS || f.type === FRAME.PUSH_PROMISE || f.type === FRAME.CONTINUATION) && f.flags & FLAG.END_HEADERS && this.pendingBlock) {
      const { first, parts } = this.pendingBlock;
      this.pendingBlock = undefined;
      first.headers = this.decodeBlock(Buffer.concat(parts));
    }
    this.frames.push(f);
  }

  private decodeBlock(block: Buffer): string[] {
    const out: string[] = [];
    if (this.decoder) {
      try {
        this.decoder.decode(block, 0, block.length, out, 1 << 20);
      } catch (e) {
        // keel sent a block our decoder rejects: visible to the test, never a crash of the reader
        this.decoder = null;
        return [':decode-error', String(e)];
      }
      return out;
    }
    const status = STATIC_STATUS[block[0]];
    return status !== undefined ? [':status', status] : [];
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** What was received, for failure messages. */
  describe(from = 0): string {
    const all = this.frames.slice(from);
    const fs = all.slice(-40).map(describeFrame);
    const skipped = all.length > 40 ? `${all.length - 40} frames, then ` : '';
    return `${skipped}[${fs.join(', ')}]${this.isClosed ? ' then closed' : ''}`;
  }

  /** The next unconsumed frame. */
  next(what = 'the next frame'): Promise<Frame> {
    return this.waitFor(() => true, what);
  }

  /** The first unconsumed frame for which `pred` holds (the ones before it are consumed too). */
  async waitFor(pred: (f: Frame) => boolean, what: string, timeoutMs = this.timeoutMs): Promise<Frame> {
    const start = this.cursor;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.cursor < this.frames.length) {
        const f = this.frames[this.cursor++];
        if (pred(f)) return f;
      }
      if (this.isClosed) throw new Error(`waiting for ${what}: the connection closed; frames seen: ${this.describe(start)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`waiting for ${what}: nothing after ${timeoutMs} ms; frames seen: ${this.describe(start)}`);
      await this.nextEvent(left);
    }
  }

  /** Resolves on the next frame or close, or after `ms`. */
  private nextEvent(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  /** Waits (without consuming frames) until `cond` holds; re-checked on every frame. Fails on close or deadline. */
  async until(cond: () => boolean, what: string, timeoutMs = this.timeoutMs): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (cond()) return;
      if (this.isClosed) throw new Error(`waiting for ${what}: the connection closed; frames: ${this.describe()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`waiting for ${what}: not after ${timeoutMs} ms; frames: ${this.describe()}`);
      await this.nextEvent(left);
    }
  }

  /** A GOAWAY with `code` (any other GOAWAY fails), then the server closes the socket. */
  async expectGoaway(code: number, what = `GOAWAY ${errName(code)}`): Promise<Goaway> {
    const f = await this.waitFor((x) => x.type === FRAME.GOAWAY, what);
    const g = parseGoaway(f);
    if (g.code !== code) throw new Error(`expected ${what}, got GOAWAY ${errName(g.code)} (last stream ${g.lastStreamId}, debug '${g.debug}'); frames: ${this.describe()}`);
    await this.expectClose(`the socket to close after ${what}`);
    return g;
  }

  /** The socket closes (frames before the close are consumed). */
  async expectClose(what = 'the connection to close'): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_r, reject) => {
      timer = setTimeout(() => reject(new Error(`waiting for ${what}: still open after ${this.timeoutMs} ms; frames: ${this.describe()}`)), this.timeoutMs);
    });
    try {
      await Promise.race([this.closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
    this.cursor = this.frames.length;
  }

  /** RST_STREAM on `streamId` with `code` (an RST_STREAM with another code, or a GOAWAY, fails). */
  async expectRst(streamId: number, code: number): Promise<Frame> {
    const what = `RST_STREAM ${errName(code)} on stream ${streamId}`;
    const f = await this.waitFor((x) => (x.type === FRAME.RST_STREAM && x.streamId === streamId) || x.type === FRAME.GOAWAY, what);
    if (f.type === FRAME.GOAWAY) {
      const g = parseGoaway(f);
      throw new Error(`expected ${what}, got GOAWAY ${errName(g.code)} (last stream ${g.lastStreamId}); frames: ${this.describe()}`);
    }
    const got = f.payload.length >= 4 ? f.payload.readUInt32BE(0) : -1;
    if (got !== code) throw new Error(`expected ${what}, got RST_STREAM ${errName(got)}; frames: ${this.describe()}`);
    return f;
  }

  /**
   * Sends a PING and waits for its ACK: the frames consumed up to it are returned. Whatever the
   * server had ready before it read the PING comes before the ACK, so this is how a test waits for
   * "nothing more happens".
   */
  async ping(): Promise<Frame[]> {
    const data = Buffer.alloc(8);
    data.writeUInt32BE(0x6b65656c, 0);
    data.writeUInt32BE(++this.pingSeq, 4);
    const from = this.cursor;
    this.send(pingFrame(data));
    await this.waitFor((f) => f.type === FRAME.PING && (f.flags & FLAG.ACK) !== 0 && f.payload.equals(data), `the ACK of PING ${this.pingSeq}`);
    return this.frames.slice(from, this.cursor - 1);
  }

  /**
   * Reads one response on `streamId` to its END_STREAM (headers, body, trailers), from every frame
   * received on that stream (other streams' frames are left alone, the cursor does not move). Fails
   * on RST_STREAM for it, on a GOAWAY with an error code or one that leaves it out, or on close.
   */
  async response(streamId: number): Promise<Response> {
    const mine = (): Frame[] => this.frames.filter((f) => f.streamId === streamId && f.type !== FRAME.PRIORITY && f.type !== FRAME.WINDOW_UPDATE);
    const complete = (fs: Frame[]): boolean => {
      let ended = false;
      let open = false; // inside a header block
      for (const f of fs) {
        if (f.type === FRAME.HEADERS) open = !(f.flags & FLAG.END_HEADERS);
        if (f.type === FRAME.CONTINUATION && f.flags & FLAG.END_HEADERS) open = false;
        if ((f.type === FRAME.HEADERS || f.type === FRAME.DATA) && f.flags & FLAG.END_STREAM) ended = true;
      }
      return ended && !open;
    };
    const failure = (): string | undefined => {
      const rst = this.frames.find((f) => f.type === FRAME.RST_STREAM && f.streamId === streamId);
      if (rst) return `RST_STREAM ${errName(rst.payload.readUInt32BE(0))} on stream ${streamId}`;
      for (const f of this.frames) {
        if (f.type !== FRAME.GOAWAY) continue;
        const g = parseGoaway(f);
        if (g.code !== ERR.NO_ERROR || g.lastStreamId < streamId) return `GOAWAY ${errName(g.code)} (last stream ${g.lastStreamId}) while reading stream ${streamId}`;
      }
      return undefined;
    };
    await this.until(() => {
      if (complete(mine())) return true;
      const bad = failure();
      if (bad) throw new Error(`${bad}; frames: ${this.describe()}`);
      return false;
    }, `the response on stream ${streamId}`);
    const frames = mine();
    let headers: string[] | undefined;
    let trailers: string[] | undefined;
    const body: Buffer[] = [];
    for (const f of frames) {
      if (f.type === FRAME.DATA) body.push(dataPayload(f));
      if (f.type !== FRAME.HEADERS) continue;
      const list = f.headers ?? [];
      const status = headerValue(list, ':status');
      if (headers === undefined && status !== undefined && status.startsWith('1')) continue; // interim
      if (headers === undefined) headers = list;
      else trailers = list;
    }
    return { status: headerValue(headers, ':status'), headers: headers ?? [], trailers, body: Buffer.concat(body), frames };
  }
}

/** A DATA frame's payload without its padding. */
export function dataPayload(f: Frame): Buffer {
  if (!(f.flags & FLAG.PADDED)) return f.payload;
  const pad = f.payload[0];
  return f.payload.subarray(1, f.payload.length - pad);
}

function blockFragment(f: Frame): Buffer {
  let p = f.payload;
  let pad = 0;
  if (f.flags & FLAG.PADDED) {
    pad = p[0];
    p = p.subarray(1);
  }
  if (f.type === FRAME.HEADERS && f.flags & FLAG.PRIORITY) p = p.subarray(5);
  if (f.type === FRAME.PUSH_PROMISE) p = p.subarray(4);
  return p.subarray(0, Math.max(0, p.length - pad));
}

export function parseGoaway(f: Frame): Goaway {
  return { lastStreamId: f.payload.readUInt32BE(0) & 0x7fffffff, code: f.payload.readUInt32BE(4), debug: f.payload.subarray(8).toString('latin1') };
}

export function describeFrame(f: Frame): string {
  const name = TYPE_NAMES[f.type] ?? `type 0x${f.type.toString(16)}`;
  let extra = '';
  if (f.type === FRAME.GOAWAY && f.payload.length >= 8) {
    const g = parseGoaway(f);
    extra = ` ${errName(g.code)} last=${g.lastStreamId}${g.debug ? ` '${g.debug.slice(0, 60)}'` : ''}`;
  } else if (f.type === FRAME.RST_STREAM && f.payload.length >= 4) extra = ` ${errName(f.payload.readUInt32BE(0))}`;
  else if (f.type === FRAME.WINDOW_UPDATE && f.payload.length >= 4) extra = ` +${f.payload.readUInt32BE(0) & 0x7fffffff}`;
  else if (f.type === FRAME.HEADERS && f.headers) extra = ` ${headerValue(f.headers, ':status') ?? ''}`;
  return `${name}(s${f.streamId} f0x${f.flags.toString(16)} len${f.length}${extra})`;
}

/** An h2c prior-knowledge connection to 127.0.0.1:`port`: preface and SETTINGS sent, closed in t.teardown. */
export async function connectH2(port: number, t: { teardown(fn: () => void | Promise<void>): void }, o: ConnectOptions = {}): Promise<H2Wire> {
  const socket = net.connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const w = new H2Wire(socket, o);
  t.teardown(() => w.close());
  w.send(o.preface ?? PREFACE);
  if (o.settings !== false) w.send(settingsFrame(o.settings ?? []));
  return w;
}

/** The server's opening SETTINGS (its first frame; fails if the first frame is anything else). */
export async function serverPreface(w: H2Wire): Promise<Frame> {
  const f = await w.next("the server's SETTINGS");
  if (f.type !== FRAME.SETTINGS || f.flags & FLAG.ACK) throw new Error(`the server's first frame is ${describeFrame(f)}, not SETTINGS`);
  return f;
}

// ---------------------------------------------------------------------------------------------
// The keel the conformance suite talks to

/**
 * The upstream behind /up/: /up/echo (the request body back), /up/big/<n> (n bytes of 'x'),
 * /up/bighdr/<n> (a response header of n bytes), /up/hold/<key> (answers only when released),
 * /up/trailers (a chunked body with a trailer, for a request with `te: trailers`).
 */
export interface ConformanceUpstream {
  port: number;
  /** a TCP server that accepts and never reads (cluster `bh`, routes /bh/): keel's writes to it back up */
  blackholePort: number;
  /** an h2c server answering like gRPC (cluster `g`, routes /grpc/): headers, the request body back, trailers
   *  (grpc-status 0, and x-request-trailer-seen: the request's x-request-trailer trailer) */
  h2Port: number;
  /** resolves once a request for /up/hold/<key> has arrived; release(key) answers it */
  held(key: string): Promise<void>;
  release(key: string, body?: string): void;
  /** resolves when the upstream request for /up/hold/<key> is closed before it was answered */
  aborted(key: string): Promise<void>;
  close(): Promise<void>;
}

export async function startConformanceUpstream(): Promise<ConformanceUpstream> {
  const holds = new Map<string, { arrived: Promise<void>; arrive: () => void; res?: http.ServerResponse; aborted: Promise<void>; abort: () => void }>();
  const hold = (key: string) => {
    let h = holds.get(key);
    if (!h) {
      let arrive!: () => void;
      let abort!: () => void;
      const arrived = new Promise<void>((r) => (arrive = r));
      const aborted = new Promise<void>((r) => (abort = r));
      h = { arrived, arrive, aborted, abort };
      holds.set(key, h);
    }
    return h;
  };
  const server = http.createServer((req, res) => {
    const url = req.url ?? '';
    if (url.startsWith('/up/hold/')) {
      const h = hold(url.slice('/up/hold/'.length));
      h.res = res;
      res.on('close', () => {
        if (!res.writableFinished) h.abort();
      });
      req.resume();
      h.arrive();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      let m: RegExpMatchArray | null;
      if (url === '/up/echo') {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
        res.end(body);
      } else if ((m = /^\/up\/big\/(\d+)$/.exec(url))) {
        const n = Number(m[1]);
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
        res.end(Buffer.alloc(n, 'x'));
      } else if ((m = /^\/up\/bighdr\/(\d+)$/.exec(url))) {
        // '#' has a 12-bit Huffman code: an encoder sends it raw, so the block really is that big
        res.writeHead(200, { 'x-big': '#'.repeat(Number(m[1])), 'content-length': 2 });
        res.end('ok');
      } else if (url === '/up/trailers') {
        res.writeHead(200, { 'content-type': 'application/grpc', trailer: 'grpc-status' });
        res.write('body');
        res.addTrailers({ 'grpc-status': '0' });
        res.end();
      } else {
        res.writeHead(404);
        res.end();
      }
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const bhSockets = new Set<net.Socket>();
  const blackhole = net.createServer({ pauseOnConnect: true }, (s) => {
    bhSockets.add(s);
    s.on('close', () => bhSockets.delete(s));
    s.on('error', () => {});
  });
  await new Promise<void>((r) => blackhole.listen(0, '127.0.0.1', r));
  const grpcLike = http2.createServer();
  grpcLike.on('stream', (st, headers) => {
    const chunks: Buffer[] = [];
    let requestTrailer = 'none';
    st.on('data', (c: Buffer) => chunks.push(c));
    st.on('trailers', (h: http2.IncomingHttpHeaders) => (requestTrailer = String(h['x-request-trailer'] ?? 'none')));
    st.on('end', () => {
      st.respond({ ':status': 200, 'content-type': 'application/grpc', 'x-path': String(headers[':path']) }, { waitForTrailers: true });
      st.on('wantTrailers', () => st.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'fine', 'x-request-trailer-seen': requestTrailer }));
      st.end(Buffer.concat(chunks));
    });
    st.on('error', () => {});
  });
  await new Promise<void>((r) => grpcLike.listen(0, '127.0.0.1', r));
  const h2Sessions = new Set<http2.ServerHttp2Session>();
  grpcLike.on('session', (ss) => {
    h2Sessions.add(ss);
    ss.on('close', () => h2Sessions.delete(ss));
  });
  return {
    h2Port: (grpcLike.address() as net.AddressInfo).port,
    port: (server.address() as net.AddressInfo).port,
    blackholePort: (blackhole.address() as net.AddressInfo).port,
    held: (key) => hold(key).arrived,
    release: (key, body = 'released') => {
      const res = hold(key).res;
      if (!res) throw new Error(`no request held under ${key}`);
      res.writeHead(200, { 'content-length': Buffer.byteLength(body) });
      res.end(body);
    },
    aborted: (key) => hold(key).aborted,
    close: async () => {
      for (const ss of h2Sessions) ss.destroy();
      await new Promise<void>((r) => grpcLike.close(() => r()));
      for (const s of bhSockets) s.destroy();
      await new Promise<void>((r) => blackhole.close(() => r()));
      await new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      });
    },
  };
}

const H2_CLUSTER = `
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }`;

/** The body of the direct_response route (every path but /up/...). */
export const DIRECT_BODY = 'direct-ok';

/**
 * keel with one listener (HCM `codec_type: AUTO`): /up/ goes to `up`, /bh/ to its blackhole, /grpc/ to
 * its h2c server, anything else is a
 * direct_response 200 with DIRECT_BODY. `hcmExtra` is YAML at the HCM's indentation (10 spaces),
 * e.g. `stream_error_on_invalid_http_message: true` or an `http2_protocol_options:` block.
 */
export async function startConformanceKeel(t: { teardown(fn: () => void | Promise<void>): void }, hcmExtra = '', upstream?: ConformanceUpstream): Promise<{ keel: RunningKeel; up: ConformanceUpstream }> {
  const up = upstream ?? (await startConformanceUpstream());
  const routes = `            - name: all
              domains: ["*"]
              routes:
              - { match: { prefix: /up/ }, route: { cluster: u, timeout: 30s } }
              - { match: { prefix: /bh/ }, route: { cluster: bh, timeout: 30s } }
              - { match: { prefix: /grpc/ }, route: { cluster: g, timeout: 30s } }
              - { match: { prefix: / }, direct_response: { status: 200, body: { inline_string: ${DIRECT_BODY} } } }`;
  const keel = await startKeel(bootstrap(routes, cluster('u', up.port) + cluster('bh', up.blackholePort) + cluster('g', up.h2Port, H2_CLUSTER), `          codec_type: AUTO\n${hcmExtra}`));
  t.teardown(async () => {
    await keel.stop();
    if (!upstream) await up.close();
  });
  return { keel, up };
}

/** `http2_protocol_options` for startConformanceKeel's hcmExtra, from a flat object. */
export function h2Options(o: Record<string, number | boolean>): string {
  return `          http2_protocol_options:\n${Object.entries(o)
    .map(([k, v]) => `            ${k}: ${v}`)
    .join('\n')}\n`;
}
