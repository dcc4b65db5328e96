// Config decoder for envoy.filters.http.fault (envoy.extensions.filters.http.fault.v3.HTTPFault),
// both as the HCM filter's typed_config and as per-route config (Istio puts an empty HTTPFault in
// the filter list and the VirtualService's fault on each route). Decodes into plain domain types;
// it must not compile matchers or touch runtime state (src/filters/fault.ts does that once).

import type { Reader } from '../decode';
import type { FractionalPercent, HeaderMatcherConfig } from '../types';
import type { HttpFilterDecoder } from '../http-filters';
import { decodeFractionalPercent, headerMatchers } from '../bootstrap';

export const FAULT_TYPE = 'envoy.extensions.filters.http.fault.v3.HTTPFault';

/** An unset percentage is 0% in Envoy (the proto default), so a fault without one never fires. */
const ZERO: FractionalPercent = { numerator: 0, denominator: 100 };

export type FaultDelayConfig =
  | { readonly kind: 'fixed'; readonly fixedDelayMs: number; readonly percentage: FractionalPercent }
  /** x-envoy-fault-delay-request (ms) and x-envoy-fault-delay-request-percentage */
  | { readonly kind: 'header'; readonly percentage: FractionalPercent };

export type FaultAbortConfig =
  | { readonly kind: 'http'; readonly httpStatus: number; readonly percentage: FractionalPercent }
  | { readonly kind: 'grpc'; readonly grpcStatus: number; readonly percentage: FractionalPercent }
  /** x-envoy-fault-abort-request / x-envoy-fault-abort-grpc-request and -percentage */
  | { readonly kind: 'header'; readonly percentage: FractionalPercent };

export type FaultRateLimitConfig =
  | { readonly kind: 'fixed'; readonly limitKbps: number; readonly percentage: FractionalPercent }
  /** x-envoy-fault-throughput-response (KiB/s) and x-envoy-fault-throughput-response-percentage */
  | { readonly kind: 'header'; readonly percentage: FractionalPercent };

/** Runtime keys that override the configured values (Envoy's defaults unless the config names others). */
export interface FaultRuntimeKeys {
  readonly delayPercent: string;
  readonly abortPercent: string;
  readonly delayDuration: string;
  readonly abortHttpStatus: string;
  readonly abortGrpcStatus: string;
  readonly maxActiveFaults: string;
  readonly responseRateLimitPercent: string;
}

/** Envoy's default runtime keys (for code that builds a FaultConfig directly, e.g. from Istio YAML). */
export const DEFAULT_FAULT_RUNTIME_KEYS: FaultRuntimeKeys = {
  delayPercent: 'fault.http.delay.fixed_delay_percent',
  abortPercent: 'fault.http.abort.abort_percent',
  delayDuration: 'fault.http.delay.fixed_duration_ms',
  abortHttpStatus: 'fault.http.abort.http_status',
  abortGrpcStatus: 'fault.http.abort.grpc_status',
  maxActiveFaults: 'fault.http.max_active_faults',
  responseRateLimitPercent: 'fault.http.rate_limit.response_percent',
};

export interface FaultConfig {
  readonly delay?: FaultDelayConfig;
  readonly abort?: FaultAbortConfig;
  /** throttle the response body */
  readonly responseRateLimit?: FaultRateLimitConfig;
  /** only requests routed to this cluster ('' = any) */
  readonly upstreamCluster: string;
  /** every matcher must match the request */
  readonly headers: readonly HeaderMatcherConfig[];
  /** x-envoy-downstream-service-node must be one of these (empty = any) */
  readonly downstreamNodes: readonly string[];
  /** undefined = unlimited */
  readonly maxActiveFaults?: number;
  readonly runtime: FaultRuntimeKeys;
  /** no fault.<downstream cluster>.* stats for requests carrying x-envoy-downstream-service-cluster */
  readonly disableDownstreamClusterStats: boolean;
}

function percentage(r: Reader): FractionalPercent {
  return r.sub('percentage', 'FractionalPercent', decodeFractionalPercent) ?? ZERO;
}

function decodeDelay(r: Reader): FaultDelayConfig | undefined {
  if (r.has('type')) r.problem("'type' was removed from FaultDelay (use fixed_delay)", 'type');
  const kind = r.oneof(['fixed_delay', 'header_delay'], true);
  const pct = percentage(r);
  if (kind === 'fixed_delay') {
    const ms = r.optDuration('fixed_delay', { positive: true });
    return ms === undefined ? undefined : { kind: 'fixed', fixedDelayMs: ms, percentage: pct };
  }
  if (kind === 'header_delay') {
    r.sub('header_delay', 'HeaderDelay', () => undefined);
    return { kind: 'header', percentage: pct };
  }
  return undefined;
}

function decodeAbort(r: Reader): FaultAbortConfig | undefined {
  if (r.has('percent')) r.problem("'percent' was removed from FaultAbort (use percentage)", 'percent');
  const kind = r.oneof(['http_status', 'grpc_status', 'header_abort'], true);
  const pct = percentage(r);
  switch (kind) {
    case 'http_status': {
      const s = r.optUint32('http_status', { min: 200, max: 599 });
      return s === undefined ? undefined : { kind: 'http', httpStatus: s, percentage: pct };
    }
    case 'grpc_status': {
      const g = r.optUint32('grpc_status');
      return g === undefined ? undefined : { kind: 'grpc', grpcStatus: g, percentage: pct };
    }
    case 'header_abort':
      r.sub('header_abort', 'HeaderAbort', () => undefined);
      return { kind: 'header', percentage: pct };
    default:
      return undefined;
  }
}

function decodeRateLimit(r: Reader): FaultRateLimitConfig | undefined {
  const kind = r.oneof(['fixed_limit', 'header_limit'], true);
  const pct = percentage(r);
  if (kind === 'fixed_limit') {
    const kbps = r.sub('fixed_limit', 'FixedLimit', (f) => {
      if (!f.has('limit_kbps')) f.problem('limit_kbps is required', 'limit_kbps');
      return f.optInt64('limit_kbps', { min: 1 });
    });
    return kbps === undefined ? undefined : { kind: 'fixed', limitKbps: kbps, percentage: pct };
  }
  if (kind === 'header_limit') {
    r.sub('header_limit', 'HeaderLimit', () => undefined);
    return { kind: 'header', percentage: pct };
  }
  return undefined;
}

function runtimeKey(r: Reader, field: string, def: string): string {
  const v = r.str(field);
  return v === '' ? def : v;
}

export function decodeFault(r: Reader): FaultConfig | undefined {
  const before = r.diag.problems.length;
  const delay = r.sub('delay', 'FaultDelay', decodeDelay);
  const abort = r.sub('abort', 'FaultAbort', decodeAbort);
  const upstreamCluster = r.str('upstream_cluster');
  const headers = headerMatchers(r, 'headers');
  const downstreamNodes = r.strList('downstream_nodes');
  const maxActiveFaults = r.optUint32('max_active_faults');
  const responseRateLimit = r.sub('response_rate_limit', 'FaultRateLimit', decodeRateLimit);
  const disableDownstreamClusterStats = r.bool('disable_downstream_cluster_stats', false);
  if (r.has('filter_metadata')) {
    r.struct('filter_metadata');
    r.warn('ignored: keel does not emit dynamic metadata for injected faults', 'filter_metadata');
  }
  const d = DEFAULT_FAULT_RUNTIME_KEYS;
  const runtime: FaultRuntimeKeys = {
    delayPercent: runtimeKey(r, 'delay_percent_runtime', d.delayPercent),
    abortPercent: runtimeKey(r, 'abort_percent_runtime', d.abortPercent),
    delayDuration: runtimeKey(r, 'delay_duration_runtime', d.delayDuration),
    abortHttpStatus: runtimeKey(r, 'abort_http_status_runtime', d.abortHttpStatus),
    abortGrpcStatus: runtimeKey(r, 'abort_grpc_status_runtime', d.abortGrpcStatus),
    maxActiveFaults: runtimeKey(r, 'max_active_faults_runtime', d.maxActiveFaults),
    responseRateLimitPercent: runtimeKey(r, 'response_rate_limit_percent_runtime', d.responseRateLimitPercent),
  };
  if (r.diag.problems.length > before) return undefined;
  return {
    ...(delay !== undefined ? { delay } : {}),
    ...(abort !== undefined ? { abort } : {}),
    ...(responseRateLimit !== undefined ? { responseRateLimit } : {}),
    upstreamCluster,
    headers,
    downstreamNodes,
    ...(maxActiveFaults !== undefined ? { maxActiveFaults } : {}),
    runtime,
    disableDownstreamClusterStats,
  };
}

export const faultDecoder: HttpFilterDecoder = {
  typeName: FAULT_TYPE,
  decode: decodeFault,
  decodePerRoute: decodeFault,
};
