// The router's retry policy (Envoy's RetryPolicy + RetryStateImpl semantics): the route's or virtual
// host's retry_policy compiled once per policy object, merged per request with the x-envoy-retry-*
// request headers into a RetryState that decides, attempt by attempt, whether to try again, holds the
// cluster's max_retries circuit-breaker slot (or retry budget) while a retry is outstanding, and
// computes the back-off: fully jittered exponential, or taken from a rate-limit reset header of the
// response (rate_limited_retry_back_off). A request without a policy and without retry headers never
// gets here.

import type { HeaderMatcherConfig, RetryPolicyConfig } from '../config/types';
import type { HeaderMap } from '../http/headers';
import type { ResourceManager } from '../upstream/resource-manager';
import { compileHeaderMatcher, HeaderPredicate } from './matchers';

// retry_on bits
export const RETRY_5XX = 1 << 0;
export const RETRY_GATEWAY_ERROR = 1 << 1;
export const RETRY_RESET = 1 << 2;
export const RETRY_CONNECT_FAILURE = 1 << 3;
export const RETRY_ENVOY_RATE_LIMITED = 1 << 4;
export const RETRY_RETRIABLE_4XX = 1 << 5;
export const RETRY_REFUSED_STREAM = 1 << 6;
export const RETRY_RETRIABLE_STATUS_CODES = 1 << 7;
export const RETRY_RETRIABLE_HEADERS = 1 << 8;
export const RETRY_RESET_BEFORE_REQUEST = 1 << 9;
export const RETRY_HTTP3_POST_CONNECT_FAILURE = 1 << 10;
export const RETRY_GRPC_CANCELLED = 1 << 11;
export const RETRY_GRPC_DEADLINE_EXCEEDED = 1 << 12;
export const RETRY_GRPC_RESOURCE_EXHAUSTED = 1 << 13;
export const RETRY_GRPC_UNAVAILABLE = 1 << 14;
export const RETRY_GRPC_INTERNAL = 1 << 15;
const RETRY_GRPC_ANY = RETRY_GRPC_CANCELLED | RETRY_GRPC_DEADLINE_EXCEEDED | RETRY_GRPC_RESOURCE_EXHAUSTED | RETRY_GRPC_UNAVAILABLE | RETRY_GRPC_INTERNAL;

const HTTP_RETRY_ON: Readonly<Record<string, number>> = {
  '5xx': RETRY_5XX,
  'gateway-error': RETRY_GATEWAY_ERROR,
  reset: RETRY_RESET,
  'reset-before-request': RETRY_RESET_BEFORE_REQUEST,
  'connect-failure': RETRY_CONNECT_FAILURE,
  'envoy-ratelimited': RETRY_ENVOY_RATE_LIMITED,
  'retriable-4xx': RETRY_RETRIABLE_4XX,
  'refused-stream': RETRY_REFUSED_STREAM,
  'retriable-status-codes': RETRY_RETRIABLE_STATUS_CODES,
  'retriable-headers': RETRY_RETRIABLE_HEADERS,
  'http3-post-connect-failure': RETRY_HTTP3_POST_CONNECT_FAILURE,
};
const GRPC_RETRY_ON: Readonly<Record<string, number>> = {
  cancelled: RETRY_GRPC_CANCELLED,
  'deadline-exceeded': RETRY_GRPC_DEADLINE_EXCEEDED,
  internal: RETRY_GRPC_INTERNAL,
  'resource-exhausted': RETRY_GRPC_RESOURCE_EXHAUSTED,
  unavailable: RETRY_GRPC_UNAVAILABLE,
};

/** Envoy's parseRetryOn / parseRetryGrpcOn: comma-separated, unknown names ignored. */
export function parseRetryOn(value: string | readonly string[], which: 'http' | 'grpc' | 'both'): number {
  const list = typeof value === 'string' ? value.split(',') : value;
  let bits = 0;
  for (const raw of list) {
    const v = raw.trim();
    if (which !== 'grpc' && Object.hasOwn(HTTP_RETRY_ON, v)) bits |= HTTP_RETRY_ON[v];
    if (which !== 'http' && Object.hasOwn(GRPC_RETRY_ON, v)) bits |= GRPC_RETRY_ON[v];
  }
  return bits;
}

/** Envoy's default retry back-off base interval (runtime upstream.base_retry_backoff_ms). */
export const DEFAULT_BASE_INTERVAL_MS = 25;

/**
 * Fully jittered exponential back-off: for retry N (1-based) a uniform value in
 * [0, (2^N - 1) * base), never above max (default 10 * base). `random` is a uint32.
 */
export function jitteredBackoffMs(retry: number, baseMs: number, maxMs: number, random: number): number {
  const n = Math.min(Math.max(retry, 1), 30);
  const span = ((1 << n) >>> 0) - 1;
  const range = Math.min(baseMs * span, Number.MAX_SAFE_INTEGER);
  const v = range > 0 ? random % range : 0;
  return Math.min(v, maxMs);
}

/**
 * The back-off a rate-limit reset header asks for: its value in ms (SECONDS: a number of seconds,
 * fractions allowed; UNIX_TIMESTAMP: seconds since the epoch, minus `nowMs`), or undefined when the
 * value is missing, unparsable, not in the future or above `maxMs` (Envoy then tries the next header,
 * and falls back to the exponential back-off).
 */
export function resetHeaderBackoffMs(value: string | undefined, unixTimestamp: boolean, maxMs: number, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (!/^\d+(\.\d+)?$/.test(v)) return undefined;
  const secs = Number(v);
  const ms = unixTimestamp ? Math.round(secs * 1000 - nowMs) : Math.round(secs * 1000);
  if (!(ms > 0) || ms > maxMs) return undefined;
  return ms;
}

/** A retry policy compiled once (per RetryPolicyConfig object, i.e. per route or virtual host). */
export class CompiledRetryPolicy {
  readonly retryOn: number;
  readonly numRetries: number;
  readonly perTryTimeoutMs: number;
  readonly retriableStatusCodes: readonly number[];
  readonly retriableHeaders: readonly HeaderPredicate[];
  /** retriable_request_headers: retry only requests matching one of these */
  readonly retriableRequestHeaders: readonly HeaderPredicate[];
  readonly baseIntervalMs: number;
  readonly maxIntervalMs: number;
  /** retry_host_predicate previous_hosts */
  readonly previousHosts: boolean;
  readonly hostSelectionRetryMaxAttempts: number;
  /** per_try_idle_timeout: an attempt whose response goes quiet this long is abandoned; 0 = none */
  readonly perTryIdleTimeoutMs: number;
  /** rate_limited_retry_back_off reset headers (lower-case names), empty when not configured */
  readonly resetHeaders: readonly { readonly name: string; readonly unixTimestamp: boolean }[];
  readonly rateLimitedMaxIntervalMs: number;

  constructor(cfg: RetryPolicyConfig | undefined) {
    this.retryOn = cfg ? parseRetryOn(cfg.retryOn, 'both') : 0;
    // Envoy defaults num_retries to 1 whether or not a policy is configured.
    this.numRetries = cfg ? cfg.numRetries : 1;
    this.perTryTimeoutMs = cfg?.perTryTimeoutMs ?? 0;
    this.retriableStatusCodes = cfg?.retriableStatusCodes ?? [];
    this.retriableHeaders = (cfg?.retriableHeaders ?? []).map(compileHeaderMatcher);
    this.retriableRequestHeaders = (cfg?.retriableRequestHeaders ?? []).map(compileHeaderMatcher);
    this.baseIntervalMs = cfg?.retryBackOff?.baseIntervalMs ?? DEFAULT_BASE_INTERVAL_MS;
    this.maxIntervalMs = cfg?.retryBackOff?.maxIntervalMs ?? this.baseIntervalMs * 10;
    this.previousHosts = (cfg?.retryHostPredicates ?? []).some((p) => /previous_hosts|PreviousHostsPredicate/.test(p));
    this.hostSelectionRetryMaxAttempts = Math.max(0, cfg?.hostSelectionRetryMaxAttempts ?? 1);
    this.perTryIdleTimeoutMs = cfg?.perTryIdleTimeoutMs ?? 0;
    const rl = cfg?.rateLimitedRetryBackOff;
    this.resetHeaders = rl ? rl.resetHeaders.map((h) => ({ name: h.name.toLowerCase(), unixTimestamp: h.format === 'UNIX_TIMESTAMP' })) : [];
    this.rateLimitedMaxIntervalMs = rl?.maxIntervalMs ?? 300_000;
  }
}

const compiled = new WeakMap<RetryPolicyConfig, CompiledRetryPolicy>();
/** The policy for requests with retry headers on a route without any retry_policy. */
export const HEADER_ONLY_POLICY = new CompiledRetryPolicy(undefined);

/** The compiled form of a route's (else its virtual host's) policy, built on first use and kept. */
export function compiledRetryPolicy(cfg: RetryPolicyConfig | undefined): CompiledRetryPolicy {
  if (cfg === undefined) return HEADER_ONLY_POLICY;
  let p = compiled.get(cfg);
  if (p === undefined) compiled.set(cfg, (p = new CompiledRetryPolicy(cfg)));
  return p;
}

/** Why an attempt ended without a response. */
export type ResetKind = 'connect_failure' | 'reset' | 'refused_stream' | 'timeout' | 'overflow';

/** Envoy's RetryStatus. */
export const enum RetryStatus {
  No = 0,
  Yes = 1,
  /** num_retries used up: the URX flag */
  LimitExceeded = 2,
  /** max_retries circuit breaker open: the UO flag */
  Overflow = 3,
}

export interface RetryStats {
  upstreamRqRetry: number;
  upstreamRqRetrySuccess: number;
  upstreamRqRetryOverflow: number;
  upstreamRqRetryLimitExceeded: number;
}

function presentMatcher(name: string): HeaderMatcherConfig {
  return { name, invert: false, treatMissingAsEmpty: false, kind: 'present', present: true };
}

/** One request's retry bookkeeping, created only when its merged retry_on is non-empty. */
export class RetryState {
  retriesRemaining: number;
  private retriesDone = 0;
  /** a retry was granted and still holds a max_retries slot (Envoy: a backoff callback armed) */
  private holding = false;
  /** request body kept for re-sending, bounded by the retry buffer limit */
  readonly body: Buffer[] = [];
  bodyBytes = 0;
  trailers: HeaderMap | undefined;
  /** hosts already attempted (previous_hosts predicate) */
  previous: unknown[] | undefined;
  /** back-off asked for by the last retried response's rate-limit reset header (ms), else 0 */
  private rateLimitedBackoffMs = 0;

  private constructor(
    readonly policy: CompiledRetryPolicy,
    readonly retryOn: number,
    numRetries: number,
    private readonly extraStatusCodes: readonly number[] | undefined,
    private readonly extraHeaders: readonly HeaderPredicate[] | undefined,
  ) {
    this.retriesRemaining = numRetries;
  }

  /**
   * Merge the policy with the request's x-envoy-retry-on, x-envoy-retry-grpc-on,
   * x-envoy-max-retries, x-envoy-retriable-status-codes and x-envoy-retriable-header-names
   * (present only when trusted: the connection manager strips them from external requests).
   * undefined when nothing is retriable for this request.
   */
  static create(policy: CompiledRetryPolicy, headers: HeaderMap): RetryState | undefined {
    let retryOn = policy.retryOn;
    const on = headers.get('x-envoy-retry-on');
    if (on !== undefined) retryOn |= parseRetryOn(on, 'http');
    const grpcOn = headers.get('x-envoy-retry-grpc-on');
    if (grpcOn !== undefined) retryOn |= parseRetryOn(grpcOn, 'grpc');
    if (retryOn === 0) return undefined;
    const rrh = policy.retriableRequestHeaders;
    if (rrh.length > 0 && !rrh.some((m) => m(headers))) return undefined;
    let num = policy.numRetries;
    const max = headers.first('x-envoy-max-retries');
    if (max !== undefined && /^\d{1,9}$/.test(max.trim())) num = Number(max.trim());
    let codes: number[] | undefined;
    const codesHdr = headers.get('x-envoy-retriable-status-codes');
    if (codesHdr !== undefined) {
      for (const c of codesHdr.split(',')) {
        const s = c.trim();
        if (/^\d{3}$/.test(s)) (codes ??= []).push(Number(s));
      }
    }
    let hdrs: HeaderPredicate[] | undefined;
    const namesHdr = headers.get('x-envoy-retriable-header-names');
    if (namesHdr !== undefined) {
      for (const n of namesHdr.split(',')) {
        const s = n.trim().toLowerCase();
        if (s !== '') (hdrs ??= []).push(compileHeaderMatcher(presentMatcher(s)));
      }
    }
    return new RetryState(policy, retryOn, num, codes, hdrs);
  }

  /**
   * Envoy's wouldRetryFromHeaders. When the answer is yes and the policy has
   * rate_limited_retry_back_off, the first usable reset header sets the back-off for that retry.
   */
  wouldRetryHeaders(status: number, headers: HeaderMap): boolean {
    const would = this.wouldRetryHeadersInner(status, headers);
    this.rateLimitedBackoffMs = 0;
    if (would && this.policy.resetHeaders.length > 0) {
      const now = Date.now();
      for (const h of this.policy.resetHeaders) {
        const ms = resetHeaderBackoffMs(headers.first(h.name), h.unixTimestamp, this.policy.rateLimitedMaxIntervalMs, now);
        if (ms !== undefined) {
          this.rateLimitedBackoffMs = ms;
          break;
        }
      }
    }
    return would;
  }

  private wouldRetryHeadersInner(status: number, headers: HeaderMap): boolean {
    const on = this.retryOn;
    // A response from an upstream Envoy's rate limiter is retried only under envoy-ratelimited.
    if (headers.has('x-envoy-ratelimited')) return (on & RETRY_ENVOY_RATE_LIMITED) !== 0;
    // x-envoy-overloaded: never retried.
    if (headers.has('x-envoy-overloaded')) return false;
    if (on & RETRY_5XX && status >= 500 && status < 600) return true;
    if (on & RETRY_GATEWAY_ERROR && status >= 502 && status <= 504) return true;
    if (on & RETRY_RETRIABLE_4XX && status === 409) return true;
    if (on & RETRY_RETRIABLE_STATUS_CODES) {
      if (this.policy.retriableStatusCodes.includes(status)) return true;
      if (this.extraStatusCodes?.includes(status)) return true;
    }
    if (on & RETRY_RETRIABLE_HEADERS) {
      for (const m of this.policy.retriableHeaders) if (m(headers)) return true;
      if (this.extraHeaders) for (const m of this.extraHeaders) if (m(headers)) return true;
    }
    if (on & RETRY_GRPC_ANY) {
      const gs = headers.first('grpc-status');
      if (gs !== undefined) {
        switch (gs.trim()) {
          case '1':
            return (on & RETRY_GRPC_CANCELLED) !== 0;
          case '4':
            return (on & RETRY_GRPC_DEADLINE_EXCEEDED) !== 0;
          case '8':
            return (on & RETRY_GRPC_RESOURCE_EXHAUSTED) !== 0;
          case '13':
            return (on & RETRY_GRPC_INTERNAL) !== 0;
          case '14':
            return (on & RETRY_GRPC_UNAVAILABLE) !== 0;
        }
      }
    }
    return false;
  }

  /** Envoy's wouldRetryFromReset. `requestSent`: the request headers went upstream. */
  wouldRetryReset(kind: ResetKind, requestSent: boolean): boolean {
    this.rateLimitedBackoffMs = 0;
    if (kind === 'overflow') return false;
    const on = this.retryOn;
    if (kind === 'connect_failure' && on & RETRY_CONNECT_FAILURE) return true;
    if (on & (RETRY_5XX | RETRY_GATEWAY_ERROR | RETRY_RESET)) return true;
    if (on & RETRY_RESET_BEFORE_REQUEST && !requestSent) return true;
    if (kind === 'refused_stream' && on & RETRY_REFUSED_STREAM) return true;
    return false;
  }

  /**
   * Envoy's RetryStateImpl::shouldRetry: a retry needs a retry left and a free max_retries slot,
   * which it holds until its own outcome is known (or the request ends: release()).
   */
  shouldRetry(would: boolean, rm: ResourceManager, stats: RetryStats): RetryStatus {
    if (this.holding && !would) stats.upstreamRqRetrySuccess++;
    this.release(rm);
    if (!would) return RetryStatus.No;
    if (this.retriesRemaining <= 0) {
      stats.upstreamRqRetryLimitExceeded++;
      return RetryStatus.LimitExceeded;
    }
    this.retriesRemaining--;
    if (!rm.retries.canCreate()) {
      stats.upstreamRqRetryOverflow++;
      return RetryStatus.Overflow;
    }
    rm.retries.inc();
    this.holding = true;
    this.retriesDone++;
    stats.upstreamRqRetry++;
    return RetryStatus.Yes;
  }

  /**
   * The back-off before the retry just granted: a rate-limit reset header's interval with up to 50%
   * jitter added on top (never below what the upstream asked for), else the exponential back-off.
   */
  backoffMs(random: number): number {
    const rl = this.rateLimitedBackoffMs;
    if (rl > 0) return rl + (random % (Math.floor(rl / 2) + 1));
    return jitteredBackoffMs(this.retriesDone, this.policy.baseIntervalMs, this.policy.maxIntervalMs, random);
  }

  release(rm: ResourceManager): void {
    if (this.holding) {
      this.holding = false;
      rm.retries.dec();
    }
  }
}
