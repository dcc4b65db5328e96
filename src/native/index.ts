// keel's bridge to the optional N-API addon (native/, built by scripts/build-native.js) for the
// socket calls Node has no API for: the original destination of an iptables-redirected connection
// (SO_ORIGINAL_DST), IP_TRANSPARENT for TPROXY, getsockname as TPROXY's original destination, and
// peek: the first bytes of an accepted connection read with MSG_PEEK, left in the kernel for the
// consumer that later reads the fd from C++ (tls) — Envoy's listener filters.
// The addon is loaded lazily, on first use, from <package root>/native/build/Release/, where the
// package root is the nearest directory above this file whose package.json is named "keel" (so the
// same code works from dist/src/native/ and from src/native/ under tap's TypeScript loader).
// KEEL_NATIVE=0 forces the pure-TypeScript twins. Every function has a twin: localAddress's twin is
// exact (net.Socket#address()); originalDst's and setTransparent's cannot make the syscall and
// throw KeelError KEEL_NATIVE_UNAVAILABLE; peek's cannot peek, so it reads the bytes in JS and says
// so (CaptureImpl.peekMode 'read': the caller owns them and must replay them, see ReplaySocket in
// src/listener/peek.ts). The addon's measured-but-unused functions are handed out by loadNative()
// only: scanHead (twin: scanHeadTwin) and the pool/LB bookkeeping (`lbPool`, twins and contract in
// ./lb-pool.ts); the request path uses the faster TypeScript code for both.
//
// Sockets are passed as net.Socket / net.Server; the fd is read from the libuv handle
// (`socket._handle.fd`, Unix only). A raw fd number is also accepted where only the addon can act.
//
// Errors: a failed syscall is THROWN as an Error shaped like Node's system errors:
// `{ code: 'ENOENT', errno: -2, syscall: 'getsockopt(SO_ORIGINAL_DST)' }` (errno negative, as Node
// does). ENOENT from originalDst means the connection has no NAT entry (it was not redirected);
// EPERM from setTransparent means the process lacks CAP_NET_ADMIN. A socket without an fd (not
// connected yet, or closed) throws code EBADF before any syscall.
//
// Must not: load the addon at import time, close or own the caller's fd (the addon's peek polls a
// private dup of it, closed when the peek ends), make a syscall in a twin, retry/swallow syscall
// errors (callers decide what a missing NAT entry means), or call a peek callback more than once
// or after cancel().

import * as fs from 'node:fs';
import type * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { KeelError } from '../common/errors';
import type { LbPoolImpl } from './lb-pool';

/** An IP endpoint. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are reported as IPv4, family 4. */
export interface SockAddr {
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
}

export type IpFamily = 4 | 6;

/** Something that owns a socket fd: a connection, a listening server, or a raw fd number. */
export type FdSource = net.Socket | net.Server | number;

/**
 * Called once by CaptureImpl.peek: `data` is null exactly when `err` is set. `eof`: the peer has
 * shut down its sending side, so `data` (possibly empty) is all it sent (peekMode 'peek') or all
 * that was left (peekMode 'read').
 */
export type PeekCallback = (err: NodeJS.ErrnoException | null, data: Buffer | null, eof: boolean) => void;

export interface PeekOptions {
  /**
   * Call back only once at least this many bytes are queued (or on FIN/error). The addon sets
   * SO_RCVLOWAT for the wait (capped at 16 KiB, restored afterwards); where the kernel ignores
   * it, the callback may come with fewer bytes. Must be 1..maxBytes; default 1. The twin ignores it.
   */
  readonly minBytes?: number;
}

/** A pending peek. */
export interface PeekHandle {
  /** True until the callback has run or cancel() was called. */
  readonly active: boolean;
  /** Stops waiting; no callback after this. Idempotent; a no-op once the callback ran. */
  cancel(): void;
}

/** Largest maxBytes peek accepts (the addon's kMaxPeekBytes). */
export const MAX_PEEK_BYTES = 1 << 20;

/** One implementation of the capture syscalls: the addon, or the pure-TypeScript twin. */
export interface CaptureImpl {
  readonly kind: 'native' | 'twin';
  /**
   * How peek sees a connection's bytes:
   * - 'peek' (addon): recv(MSG_PEEK). Nothing is consumed: each callback gives ALL bytes queued from
   *   the connection's first byte, and the socket can afterwards be resumed or handed to a C++
   *   consumer (http2, tls) that will read them again.
   * - 'read' (twin): the bytes are read off the socket in JS. Each callback gives only NEW bytes,
   *   possibly more than maxBytes (a read chunk is never split), and the caller owns them: a
   *   consumer of the socket will not see them unless they are replayed (ReplaySocket).
   */
  readonly peekMode: 'peek' | 'read';
  /**
   * Waits until `socket` is readable and calls back once with its first bytes (see peekMode),
   * leaving the socket paused (in the stream sense) and, for 'peek', not read by libuv at all.
   * The socket must not be reading: accept it with `pauseOnConnect: true` (the addon's peek throws
   * EEXIST otherwise), and do not start reading it while the peek is pending: a resume()/read()
   * then cancels the peek and the callback gets ERR_PEEK_INTERRUPTED (a consumer that starts the
   * handle from C++, like tls.TLSSocket, is not caught: hand the socket on only after the callback
   * or cancel()). If the socket is destroyed meanwhile, the callback gets ERR_SOCKET_CLOSED.
   * Throws EBADF for a socket without an fd (addon) or already destroyed, TypeError for bad sizes.
   */
  peek(socket: net.Socket, maxBytes: number, callback: PeekCallback, options?: PeekOptions): PeekHandle;
  /** Original destination of a REDIRECT/DNAT-ed connection (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST). */
  originalDst(socket: net.Socket | number): SockAddr;
  /** IP_TRANSPARENT (4) / IPV6_TRANSPARENT (6) on a socket or listener; needs CAP_NET_ADMIN. */
  setTransparent(target: FdSource, family: IpFamily): void;
  /** The socket's local address (getsockname): the original destination in TPROXY mode. */
  localAddress(socket: net.Socket): SockAddr;
}

/** What loading the addon gave: an implementation, or why there is none. */
export type NativeLoad =
  | {
      readonly available: true;
      readonly impl: CaptureImpl;
      readonly path: string;
      readonly scanHead: (buf: Buffer, start: number, end: number) => number;
      /** The addon's pool/LB functions (the request path uses neither these nor their twins; see lb-pool.ts). */
      readonly lbPool: LbPoolImpl;
    }
  | { readonly available: false; readonly reason: string };

/** Bump together with kAbiVersion in native/src/addon.cc and EXPECTED_ABI in scripts/build-native.js. */
const ABI_VERSION = 4;
const ADDON_RELATIVE = path.join('native', 'build', 'Release', 'keel_native.node');

interface AddonExports {
  readonly abiVersion: unknown;
  originalDst(fd: number): SockAddr;
  setTransparent(fd: number, family: number): void;
  localAddress(fd: number): SockAddr;
  scanHead(buf: Buffer, start: number, end: number): number;
  leastRequestPick: LbPoolImpl['leastRequestPick'];
  edfPick: LbPoolImpl['edfPick'];
  poolTake: LbPoolImpl['poolTake'];
  poolPut: LbPoolImpl['poolPut'];
  readHeaderBlock: LbPoolImpl['readHeaderBlock'];
  peek(
    fd: number,
    maxBytes: number,
    callback: (err: Error | null, data: Buffer | null, eof: boolean) => void,
    minBytes?: number,
  ): PeekHandle;
}

function errnoError(code: string, syscall: string, message: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(message);
  err.code = code;
  const n = (os.constants.errno as Record<string, number | undefined>)[code];
  if (n !== undefined) err.errno = -n;
  err.syscall = syscall;
  return err;
}

/**
 * The fd behind a net.Socket or net.Server (its libuv handle's `fd`), or the number itself.
 * Throws code EBADF when there is none: not connected/listening yet, already closed, or Windows.
 */
export function socketFd(source: FdSource): number {
  if (typeof source === 'number') return source;
  const handle = (source as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) {
    throw errnoError('EBADF', 'socketFd', 'socketFd EBADF: socket has no file descriptor (not connected or listening yet, or already closed)');
  }
  return fd;
}

function checkFamily(family: unknown): asserts family is IpFamily {
  if (family !== 4 && family !== 6) throw new TypeError(`family must be 4 or 6, got ${String(family)}`);
}

/** Gives an addon error whose errno had no name in the addon's table ("E97") its proper code. */
function normalizeError(err: unknown): unknown {
  const e = err as NodeJS.ErrnoException;
  if (e instanceof Error && typeof e.code === 'string' && /^E\d+$/.test(e.code)) {
    const n = Number(e.code.slice(1));
    const name = Object.entries(os.constants.errno).find(([, v]) => v === n)?.[0];
    if (name !== undefined) {
      e.message = e.message.replace(e.code, name);
      e.code = name;
    }
  }
  return err;
}

function unmapped(address: string, family: 4 | 6): { address: string; family: 4 | 6 } {
  const m = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  return m ? { address: m[1]!, family: 4 } : { address, family };
}

function checkPeekArgs(maxBytes: number, options: PeekOptions | undefined): number {
  if (!Number.isInteger(maxBytes) || maxBytes < 1 || maxBytes > MAX_PEEK_BYTES) {
    throw new TypeError(`maxBytes must be an integer from 1 to ${MAX_PEEK_BYTES}, got ${String(maxBytes)}`);
  }
  const minBytes = options?.minBytes ?? 1;
  if (!Number.isInteger(minBytes) || minBytes < 1 || minBytes > maxBytes) {
    throw new TypeError(`minBytes must be an integer from 1 to maxBytes (${maxBytes}), got ${String(minBytes)}`);
  }
  return minBytes;
}

function socketClosedError(): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error('peek: the socket was destroyed while peeking');
  err.code = 'ERR_SOCKET_CLOSED';
  return err;
}

function peekInterruptedError(): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(
    'peek: the socket started reading while a peek was pending (resume/read only after the callback or cancel())',
  );
  err.code = 'ERR_PEEK_INTERRUPTED';
  return err;
}

/**
 * Runs `before` when `socket[method]` is next called, before the original. For a pending native
 * peek: '_destroy' runs before Node closes its fd, so the peek's dup is closed too and the
 * connection really closes (FIN) at once instead of when the peer next sends; '_read' runs before
 * libuv starts reading, whose reads would take the bytes from under the peek. Returns the function
 * that removes the hook; it also removes itself when it fires.
 */
function hookOnce(socket: net.Socket, method: '_destroy' | '_read', before: () => void): () => void {
  const s = socket as unknown as Record<string, (...args: unknown[]) => unknown>;
  const own = Object.prototype.hasOwnProperty.call(s, method);
  const previous = s[method]!;
  const remove = (): void => {
    if (s[method] !== hook) return;
    if (own) s[method] = previous;
    else delete s[method];
  };
  const hook = function (this: net.Socket, ...args: unknown[]): unknown {
    remove();
    before();
    return previous.apply(this, args);
  };
  s[method] = hook;
  return remove;
}

function nativePeek(addon: AddonExports): CaptureImpl['peek'] {
  return (socket, maxBytes, callback, options) => {
    const minBytes = checkPeekArgs(maxBytes, options);
    const fd = socketFd(socket);
    // MSG_PEEK is pointless on a socket that libuv reads (and a resume() may still be pending).
    const reading = (socket as unknown as { _handle?: { reading?: unknown } })._handle?.reading === true;
    if (reading || socket.readableFlowing === true) {
      throw errnoError(
        'EEXIST',
        'peek',
        'peek EEXIST: the socket is being read (flowing); accept with pauseOnConnect: true and do not resume it before peeking',
      );
    }
    let done = false;
    const unhooks: Array<() => void> = [];
    const unhook = (): void => unhooks.forEach((f) => f());
    let handle: PeekHandle;
    try {
      handle = addon.peek(
        fd,
        maxBytes,
        (err, data, eof) => {
          if (done) return;
          done = true;
          unhook();
          callback(err === null ? null : (normalizeError(err) as NodeJS.ErrnoException), data, eof);
        },
        minBytes,
      );
    } catch (err) {
      throw normalizeError(err);
    }
    // The addon never calls back synchronously, so hooking after the call is in time.
    const interrupt = (err: () => NodeJS.ErrnoException) => (): void => {
      if (done) return;
      done = true;
      handle.cancel();
      unhook();
      process.nextTick(callback, err(), null, false);
    };
    unhooks.push(hookOnce(socket, '_destroy', interrupt(socketClosedError)));
    unhooks.push(hookOnce(socket, '_read', interrupt(peekInterruptedError)));
    return {
      get active() {
        return !done;
      },
      cancel() {
        if (done) return;
        done = true;
        handle.cancel();
        unhook();
      },
    };
  };
}

function nativeImpl(addon: AddonExports): CaptureImpl {
  const call = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      throw normalizeError(err);
    }
  };
  return {
    kind: 'native',
    peekMode: 'peek',
    peek: nativePeek(addon),
    originalDst: (socket) => {
      const fd = socketFd(socket);
      return call(() => addon.originalDst(fd));
    },
    setTransparent: (target, family) => {
      checkFamily(family);
      const fd = socketFd(target);
      call(() => addon.setTransparent(fd, family));
    },
    localAddress: (socket) => {
      const fd = socketFd(socket);
      return call(() => addon.localAddress(fd));
    },
  };
}

function unavailable(fn: string, what: string): KeelError {
  const s = state();
  const why = s.available ? 'the TypeScript twin was called directly' : s.reason;
  return new KeelError(
    'KEEL_NATIVE_UNAVAILABLE',
    `${fn} needs the keel native addon (${what}); capture mode (iptables REDIRECT / TPROXY) cannot run on the TypeScript twin: ${why}`,
  );
}

/** The twin's peek: resume, take one 'data' chunk (or 'end'), pause. See CaptureImpl.peekMode. */
function twinPeek(socket: net.Socket, maxBytes: number, callback: PeekCallback, options?: PeekOptions): PeekHandle {
  checkPeekArgs(maxBytes, options);
  if (socket.destroyed) {
    throw errnoError('EBADF', 'peek', 'peek EBADF: the socket is already destroyed');
  }
  let done = false;
  const cleanup = (): void => {
    socket.off('data', onData);
    socket.off('end', onEnd);
    socket.off('error', onError);
    socket.off('close', onClose);
    socket.pause();
  };
  const finish = (err: NodeJS.ErrnoException | null, data: Buffer | null, eof: boolean): void => {
    if (done) return;
    done = true;
    cleanup();
    callback(err, data, eof);
  };
  const onData = (chunk: Buffer | string): void => finish(null, Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk), false);
  const onEnd = (): void => finish(null, Buffer.alloc(0), true);
  const onError = (err: Error): void => finish(err, null, false);
  const onClose = (): void => finish(socketClosedError(), null, false);
  if (socket.readableEnded) {
    process.nextTick(finish, null, Buffer.alloc(0), true);
  } else {
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('error', onError);
    socket.once('close', onClose);
    socket.resume();
  }
  return {
    get active() {
      return !done;
    },
    cancel() {
      if (done) return;
      done = true;
      cleanup();
    },
  };
}

/**
 * The pure-TypeScript implementation: exact for localAddress, KEEL_NATIVE_UNAVAILABLE for the
 * capture calls, and a peek that reads (peekMode 'read').
 */
export const twin: CaptureImpl = {
  kind: 'twin',
  peekMode: 'read',
  peek: twinPeek,
  originalDst: () => {
    throw unavailable('originalDst', 'getsockopt SO_ORIGINAL_DST');
  },
  setTransparent: (_target, family) => {
    checkFamily(family);
    throw unavailable('setTransparent', family === 4 ? 'setsockopt IP_TRANSPARENT' : 'setsockopt IPV6_TRANSPARENT');
  },
  localAddress: (socket) => {
    // Node 18.0-18.3 reported family as a number; 20 reports 'IPv4' / 'IPv6'.
    const info = socket.address() as { address?: unknown; port?: unknown; family?: unknown };
    if (typeof info.address !== 'string' || typeof info.port !== 'number') {
      throw errnoError('EBADF', 'getsockname', 'getsockname EBADF: socket has no local address (not connected yet, or already closed)');
    }
    const family: 4 | 6 = info.family === 'IPv6' || info.family === 6 ? 6 : 4;
    return { ...unmapped(info.address, family), port: info.port };
  },
};

/** The nearest directory at or above `start` whose package.json is keel's, or null. */
export function findPackageRoot(start: string = __dirname): string | null {
  let dir = path.resolve(start);
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    try {
      if ((JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'keel') return dir;
    } catch {
      // no package.json here, or not JSON: keep walking up
    }
    const parent = path.dirname(dir);
    if (parent === dir) return null;
    dir = parent;
  }
}

/**
 * Tries to load the addon, without caching (the module-level functions cache the first result).
 * `env` is consulted for KEEL_NATIVE=0; `start` is where the package-root search begins.
 */
export function loadNative(env: NodeJS.ProcessEnv = process.env, start: string = __dirname): NativeLoad {
  if (env['KEEL_NATIVE'] === '0') return { available: false, reason: 'disabled by KEEL_NATIVE=0' };
  if (process.platform !== 'linux') {
    return { available: false, reason: `platform ${process.platform}: transparent capture is Linux-only` };
  }
  const root = findPackageRoot(start);
  if (root === null) return { available: false, reason: `no keel package.json found above ${start}` };
  const file = path.join(root, ADDON_RELATIVE);
  if (!fs.existsSync(file)) {
    return { available: false, reason: `not built: ${ADDON_RELATIVE} is missing, npm run build makes it` };
  }
  let addon: AddonExports;
  try {
    addon = require(file) as AddonExports;
  } catch (err) {
    const msg = String(err instanceof Error ? err.message : err).split('\n')[0];
    return { available: false, reason: `${ADDON_RELATIVE} failed to load: ${msg}` };
  }
  if (addon.abiVersion !== ABI_VERSION) {
    return {
      available: false,
      reason: `${ADDON_RELATIVE} is stale (ABI ${String(addon.abiVersion)}, expected ${ABI_VERSION}; rebuild with npm run build)`,
    };
  }
  const lbPool: LbPoolImpl = {
    kind: 'native',
    leastRequestPick: addon.leastRequestPick,
    edfPick: addon.edfPick,
    poolTake: addon.poolTake,
    poolPut: addon.poolPut,
    readHeaderBlock: addon.readHeaderBlock,
  };
  return { available: true, impl: nativeImpl(addon), path: file, scanHead: addon.scanHead, lbPool };
}

let loaded: NativeLoad | undefined;

function state(): NativeLoad {
  loaded ??= loadNative();
  return loaded;
}

function impl(): CaptureImpl {
  const s = state();
  return s.available ? s.impl : twin;
}

/** Whether the addon is in use (loaded on first read) and, when it is not, why. */
export const native: { readonly available: boolean; readonly reason?: string } = {
  get available(): boolean {
    return state().available;
  },
  get reason(): string | undefined {
    const s = state();
    return s.available ? undefined : s.reason;
  },
};

/** The implementation the functions below dispatch to: the addon when available, else the twin. */
export function activeImpl(): CaptureImpl {
  return impl();
}

/**
 * The offset of the first byte in buf[start, end) that cannot stand in an HTTP/1 head (a control
 * character other than HTAB, or a CR or LF outside a CRLF), or -1. Both implementations exist; the
 * request path uses the twin because bench/micro measures it faster: the loop is ~200 ns for a
 * typical head once optimised, and the N-API call alone costs more than that (native ~280 ns).
 * The addon's version stays available (`loadNative().scanHead`) so the benchmark keeps checking.
 */
export function scanHead(buf: Buffer, start: number, end: number): number {
  return scanHeadTwin(buf, start, end);
}

export function scanHeadTwin(buf: Buffer, start: number, end: number): number {
  for (let i = start; i < end; i++) {
    const c = buf[i];
    if (c >= 0x20 && c !== 0x7f) continue;
    if (c === 9) continue;
    if (c === 13 && i + 1 < end && buf[i + 1] === 10) {
      i++;
      continue;
    }
    return i;
  }
  return -1;
}

/** See CaptureImpl.originalDst. Throws ENOENT (no NAT entry) etc., or KEEL_NATIVE_UNAVAILABLE. */
export function originalDst(socket: net.Socket | number): SockAddr {
  return impl().originalDst(socket);
}

/** See CaptureImpl.setTransparent. Throws EPERM without CAP_NET_ADMIN, or KEEL_NATIVE_UNAVAILABLE. */
export function setTransparent(target: FdSource, family: IpFamily): void {
  impl().setTransparent(target, family);
}

/** See CaptureImpl.localAddress. Works on both implementations. */
export function localAddress(socket: net.Socket): SockAddr {
  return impl().localAddress(socket);
}

/** See CaptureImpl.peek (and peekMode: whether the bytes were consumed) on the active implementation. */
export function peek(socket: net.Socket, maxBytes: number, callback: PeekCallback, options?: PeekOptions): PeekHandle {
  return impl().peek(socket, maxBytes, callback, options);
}

/** One line for logs and `keel --version`-style output: is the addon in use, and if not, why. */
export function nativeStatusLine(): string {
  const s = state();
  if (s.available) return `keel: native addon in use (${s.path})`;
  return `keel: native addon not in use (${s.reason}); running on the TypeScript twins, capture modes unavailable`;
}
