// Shared read buffers for plaintext HTTP/1 sockets: reads land in one preallocated buffer per side
// instead of a fresh ArrayBuffer per read pushed through Readable's machinery. A read callback runs
// to completion before the next read, so one buffer per side is enough; anything that outlives the
// callback (a queued write, a buffered body chunk) must be copied: `isSharedReadBuffer` tells.

import * as net from 'node:net';
import * as tls from 'node:tls';

export const UPSTREAM_READ_BUFFER = Buffer.allocUnsafe(64 * 1024);
export const DOWNSTREAM_READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** True when `chunk` is a view of a shared read buffer: copy it before keeping it past the call. */
export function isSharedReadBuffer(chunk: Buffer): boolean {
  const b = chunk.buffer;
  return b === UPSTREAM_READ_BUFFER.buffer || b === DOWNSTREAM_READ_BUFFER.buffer;
}

/** The copy to keep, when `chunk` may be a view of a shared read buffer. */
export function ownChunk(chunk: Buffer): Buffer {
  return isSharedReadBuffer(chunk) ? Buffer.from(chunk) : chunk;
}

// net.Socket's `onread` option (user-supplied read buffer) exists for sockets we create, not for the
// ones a server accepts. The same mechanism is reachable on an accepted socket through the socket's
// own kBuffer/kBufferCb slots and its handle's useUserBuffer(); found once here by description, and
// if this Node does not have them, accepted sockets simply keep 'data' events.
interface UserBufferSlots {
  readonly kBuffer: symbol;
  readonly kBufferCb: symbol;
}
const SLOTS: UserBufferSlots | undefined = (() => {
  const probe = new net.Socket();
  const syms = Object.getOwnPropertySymbols(probe);
  probe.destroy();
  const kBuffer = syms.find((s) => s.description === 'kBuffer');
  const kBufferCb = syms.find((s) => s.description === 'kBufferCb');
  return kBuffer && kBufferCb ? { kBuffer, kBufferCb } : undefined;
})();

/**
 * Makes an accepted, not yet reading socket read into DOWNSTREAM_READ_BUFFER and call `onRead`
 * instead of emitting 'data'. Returns false (nothing changed) when this Node cannot.
 */
export function readIntoSharedBuffer(socket: net.Socket, onRead: (nread: number, buf: Buffer) => boolean): boolean {
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (b: Uint8Array) => void } })._handle;
  if (SLOTS === undefined || socket instanceof tls.TLSSocket || typeof handle?.useUserBuffer !== 'function' || socket.readableFlowing === true) return false;
  const s = socket as unknown as Record<symbol, unknown>;
  s[SLOTS.kBuffer] = DOWNSTREAM_READ_BUFFER;
  s[SLOTS.kBufferCb] = onRead;
  handle.useUserBuffer(DOWNSTREAM_READ_BUFFER);
  return true;
}
