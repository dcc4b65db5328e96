// The HTTP filter contract: what a filter may do to a stream, and what the stream offers it. The
// connection manager holds one HttpFilterFactory per configured filter (built once from config);
// each stream asks each factory for a StreamFilter, and a factory returns undefined when it has
// nothing to do for that stream (no per-route config, filter disabled), so a stream only pays for
// the filters that act on it. Filters run in config order on the request, after the route is
// chosen and before the router forwards it; on the response, every created filter sees the
// headers, whether they came from upstream or from a local reply.

import type { ConnectionInfo } from './stream';
import type { CompiledRoute, Runtime } from '../router/route-table';
import type { HeaderMap } from './headers';

export const enum FilterHeadersStatus {
  /** go on to the next filter (and the router) */
  Continue = 0,
  /** stop here; the filter later calls continueDecoding() or sendLocalReply() */
  StopIteration = 1,
}

/** The stream, as a filter sees it. */
export interface FilterCallbacks {
  /** the route chosen for the request (undefined: no route matched; the router will answer 404) */
  readonly route: CompiledRoute | undefined;
  readonly requestHeaders: HeaderMap;
  readonly method: string;
  readonly path: string;
  readonly authority: string;
  /** the request is gRPC (local replies become trailers-only gRPC responses) */
  readonly grpc: boolean;
  readonly connection: ConnectionInfo;
  /**
   * The per-route config for the filter named `filterName` (route over virtual host), compiled by
   * the filter's compilePerRoute; undefined when there is none. `null`: disabled for this route.
   */
  perFilterConfig(filterName: string): unknown;
  /**
   * Answer the request locally (filters after this one, and the router, do not run). `grpcStatus`:
   * for a gRPC request, the grpc-status of the trailers-only reply (default: mapped from `status`).
   */
  sendLocalReply(status: number, body: string, details: string, flag: string, extra?: HeaderMap, forceBodyType?: boolean, grpcStatus?: number): void;
  /** the cluster the router will send this request to (route's cluster, weighted pick, cluster header) */
  upstreamClusterName(): string | undefined;
  /** the server's runtime (static layer) for runtime-overridable fractions and values */
  readonly runtime: Runtime;
  /**
   * From now on the upstream response body and trailers go to `interceptor` instead of downstream;
   * it hands them on with writeResponseData / writeResponseTrailers (the stream ends with the last
   * of them). One interceptor per stream (the fault filter's response rate limit).
   */
  interceptResponseData(interceptor: ResponseDataInterceptor): void;
  writeResponseData(chunk: Buffer, endStream: boolean): void;
  writeResponseTrailers(trailers: HeaderMap): void;
  /** Stop / restart reading the upstream response (an interceptor holding too much body). */
  pauseUpstreamResponse(): void;
  resumeUpstreamResponse(): void;
  /** Resume a stream this filter stopped (StopIteration): the next filter, then the router. */
  continueDecoding(): void;
  /** Add an Envoy response flag (DI, FI, ...) to the stream's flags. */
  addResponseFlag(flag: string): void;
  /** the stream is over (reset, or answered): a stopped filter must not continue it */
  readonly ended: boolean;
}

/** Takes the response body and trailers of a stream in place of the downstream (see interceptResponseData). */
export interface ResponseDataInterceptor {
  data(chunk: Buffer, endStream: boolean): void;
  trailers(trailers: HeaderMap): void;
}

export interface StreamFilter {
  /** Request headers (pseudo-headers included); mutations are seen by later filters and upstream. */
  decodeHeaders?(headers: HeaderMap, endStream: boolean): FilterHeadersStatus;
  /** Response headers, from upstream or a local reply, before they go downstream. */
  encodeHeaders?(status: number, headers: HeaderMap, endStream: boolean): void;
  /** The stream is over: cancel timers, release counters. Called once. */
  onDestroy?(): void;
}

export interface HttpFilterFactory {
  /** the HttpFilter's name from config (the key of typed_per_filter_config entries) */
  readonly name: string;
  /** A filter for this stream, or undefined when the filter has nothing to do for it. */
  create(stream: FilterCallbacks): StreamFilter | undefined;
  /** The filter's counters and gauges by Envoy stat name (e.g. http.<stat_prefix>.fault.aborts_injected). */
  stats?(): Record<string, number>;
}
