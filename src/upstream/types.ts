// Contracts between the HTTP connection manager (a stream) and the upstream side (pools and their
// streams). Codec-agnostic: an HTTP/1 connection and an HTTP/2 stream both implement UpstreamStream.

import type { ErrorCode } from '../common/errors';
import type { HeaderMap } from '../http/headers';
import type { Host } from './host';

/** Implemented by the downstream stream that owns an upstream request. */
export interface UpstreamCallbacks {
  /** Interim (1xx other than 101) response. */
  onUpstreamInterim(status: number, headers: HeaderMap): void;
  /** `trailers`: whether trailers may still follow (false for an HTTP/1 response that is not chunked). */
  onUpstreamHeaders(status: number, headers: HeaderMap, endStream: boolean, trailers: boolean): void;
  onUpstreamData(chunk: Buffer, endStream: boolean): void;
  onUpstreamTrailers(trailers: HeaderMap): void;
  /** Reset before or during the response; the stream is over. */
  onUpstreamReset(code: ErrorCode, detail: string): void;
  /** The upstream can take more request body after sendData returned false. */
  onUpstreamWritable(): void;
  /** An accepted upgrade (101): raw bytes flow both ways from now on. */
  onUpstreamUpgrade(status: number, headers: HeaderMap, socket: import('node:net').Socket, head: Buffer | undefined): void;
}

export interface UpstreamStream {
  readonly host: Host;
  readonly protocol: 'HTTP/1.1' | 'HTTP/2';
  /** Headers include :method, :path, :authority, :scheme. */
  sendHeaders(headers: HeaderMap, endStream: boolean): void;
  /** false: stop sending until onUpstreamWritable. */
  sendData(chunk: Buffer, endStream: boolean): boolean;
  sendTrailers(trailers: HeaderMap): void;
  /** Stop delivering response data (downstream is full) / start again. */
  pauseResponse(): void;
  resumeResponse(): void;
  /** Abandon the request; the connection is not reused mid-response. */
  reset(): void;
}

/** Implemented by whoever waits for a pool. */
export interface PoolCallbacks extends UpstreamCallbacks {
  onPoolReady(stream: UpstreamStream): void;
  onPoolFailure(code: ErrorCode, detail: string): void;
}

export interface ConnPool {
  /** Either calls onPoolReady/onPoolFailure (maybe synchronously) or queues the request. */
  newStream(cb: PoolCallbacks): void;
  /** Forget a queued request (the downstream went away). */
  cancel(cb: PoolCallbacks): void;
  /** Close idle connections; let busy ones finish; then no new streams. */
  drain(): void;
  destroy(): void;
  readonly activeConnections: number;
}
