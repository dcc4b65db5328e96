// Retry policy compilation, merging with the x-envoy-retry-* headers, decisions, the max_retries
// circuit breaker and back-off bounds (src/router/retry.ts).
import t from 'tap';
import type { RetryPolicyConfig } from '../../../src/config/types';
import { HeaderMap } from '../../../src/http/headers';
import {
  compiledRetryPolicy,
  CompiledRetryPolicy,
  HEADER_ONLY_POLICY,
  jitteredBackoffMs,
  parseRetryOn,
  resetHeaderBackoffMs,
  RETRY_5XX,
  RETRY_CONNECT_FAILURE,
  RETRY_GRPC_UNAVAILABLE,
  RetryState,
  RetryStatus,
} from '../../../src/router/retry';
import { ResourceManager } from '../../../src/upstream/resource-manager';

function cfg(over: Partial<RetryPolicyConfig> = {}): RetryPolicyConfig {
  return {
    retryOn: [],
    numRetries: 1,
    perTryTimeoutMs: 0,
    perTryIdleTimeoutMs: 0,
    retriableStatusCodes: [],
    hostSelectionRetryMaxAttempts: 1,
    retryHostPredicates: [],
    retriableHeaders: [],
    retriableRequestHeaders: [],
    ...over,
  };
}
const stats = () => ({ upstreamRqRetry: 0, upstreamRqRetrySuccess: 0, upstreamRqRetryOverflow: 0, upstreamRqRetryLimitExceeded: 0 });
const H = (...kv: string[]) => new HeaderMap(kv);

t.test('parseRetryOn: http and grpc names, unknown ignored, header kinds kept apart', async (t) => {
  t.equal(parseRetryOn('5xx, connect-failure,bogus', 'http'), RETRY_5XX | RETRY_CONNECT_FAILURE);
  t.equal(parseRetryOn('unavailable', 'http'), 0, 'x-envoy-retry-on does not take gRPC names');
  t.equal(parseRetryOn('unavailable,5xx', 'grpc'), RETRY_GRPC_UNAVAILABLE, 'x-envoy-retry-grpc-on takes only gRPC names');
  t.equal(parseRetryOn(['5xx', 'unavailable'], 'both'), RETRY_5XX | RETRY_GRPC_UNAVAILABLE, 'retry_on in config takes both');
});

t.test('compiled once per policy object; defaults', async (t) => {
  const c = cfg({ retryOn: ['5xx'] });
  t.equal(compiledRetryPolicy(c), compiledRetryPolicy(c), 'cached');
  t.not(compiledRetryPolicy(c), compiledRetryPolicy(cfg({ retryOn: ['5xx'] })));
  t.equal(compiledRetryPolicy(undefined), HEADER_ONLY_POLICY);
  t.equal(HEADER_ONLY_POLICY.numRetries, 1, 'header-only retries default to one');
  const p = new CompiledRetryPolicy(c);
  t.equal(p.baseIntervalMs, 25);
  t.equal(p.maxIntervalMs, 250);
  t.equal(p.previousHosts, false);
  t.equal(new CompiledRetryPolicy(cfg({ retryHostPredicates: ['envoy.retry_host_predicates.previous_hosts'] })).previousHosts, true);
  t.equal(new CompiledRetryPolicy(cfg({ retryHostPredicates: ['envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate'] })).previousHosts, true);
});

t.test('merging with request headers', async (t) => {
  const none = compiledRetryPolicy(cfg());
  t.equal(RetryState.create(none, H()), undefined, 'empty retry_on, no header: no retry state');
  t.equal(RetryState.create(HEADER_ONLY_POLICY, H('x-envoy-max-retries', '3')), undefined, 'max-retries alone enables nothing');
  const viaHeader = RetryState.create(none, H('x-envoy-retry-on', 'gateway-error', 'x-envoy-max-retries', '4'))!;
  t.ok(viaHeader);
  t.equal(viaHeader.retriesRemaining, 4, 'x-envoy-max-retries wins over num_retries');
  t.ok(viaHeader.wouldRetryHeaders(503, H()));
  t.notOk(viaHeader.wouldRetryHeaders(500, H()), 'gateway-error: 502/503/504 only');

  const merged = RetryState.create(compiledRetryPolicy(cfg({ retryOn: ['retriable-4xx'], numRetries: 2 })), H('x-envoy-retry-on', '5xx', 'x-envoy-retry-grpc-on', 'unavailable'))!;
  t.equal(merged.retriesRemaining, 2);
  t.ok(merged.wouldRetryHeaders(409, H()), 'policy bits kept');
  t.ok(merged.wouldRetryHeaders(500, H()), 'header bits added');
  t.ok(merged.wouldRetryHeaders(200, H('grpc-status', '14')), 'grpc header bits added');
  t.notOk(merged.wouldRetryHeaders(200, H('grpc-status', '13')));

  const codes = RetryState.create(compiledRetryPolicy(cfg({ retryOn: ['retriable-status-codes'], retriableStatusCodes: [418] })), H('x-envoy-retriable-status-codes', '429, x,404'))!;
  t.ok(codes.wouldRetryHeaders(418, H()));
  t.ok(codes.wouldRetryHeaders(429, H()));
  t.ok(codes.wouldRetryHeaders(404, H()));
  t.notOk(codes.wouldRetryHeaders(500, H()));

  const hdrs = RetryState.create(
    compiledRetryPolicy(cfg({ retryOn: ['retriable-headers'], retriableHeaders: [{ name: 'x-retry-me', invert: false, treatMissingAsEmpty: false, kind: 'string', match: { kind: 'exact', value: 'yes', ignoreCase: false } }] })),
    H('x-envoy-retriable-header-names', 'X-Other'),
  )!;
  t.ok(hdrs.wouldRetryHeaders(200, H('x-retry-me', 'yes')));
  t.notOk(hdrs.wouldRetryHeaders(200, H('x-retry-me', 'no')));
  t.ok(hdrs.wouldRetryHeaders(200, H('x-other', '1')), 'x-envoy-retriable-header-names adds presence matchers');

  const onlyPost = compiledRetryPolicy(cfg({ retryOn: ['5xx'], retriableRequestHeaders: [{ name: ':method', invert: false, treatMissingAsEmpty: false, kind: 'string', match: { kind: 'exact', value: 'POST', ignoreCase: false } }] }));
  t.equal(RetryState.create(onlyPost, H(':method', 'GET')), undefined, 'retriable_request_headers must match');
  t.ok(RetryState.create(onlyPost, H(':method', 'POST')));
});

t.test('decisions on responses and resets', async (t) => {
  const s = (on: string[]) => RetryState.create(compiledRetryPolicy(cfg({ retryOn: on })), H())!;
  t.ok(s(['5xx']).wouldRetryHeaders(500, H()));
  t.notOk(s(['5xx']).wouldRetryHeaders(503, H('x-envoy-overloaded', 'true')), 'x-envoy-overloaded is never retried');
  t.notOk(s(['5xx']).wouldRetryHeaders(429, H('x-envoy-ratelimited', 'true')));
  t.ok(s(['envoy-ratelimited']).wouldRetryHeaders(429, H('x-envoy-ratelimited', 'true')));
  t.ok(s(['5xx']).wouldRetryReset('timeout', true), '5xx retries per-try timeouts');
  t.ok(s(['5xx']).wouldRetryReset('connect_failure', false));
  t.notOk(s(['5xx']).wouldRetryReset('overflow', false), 'overflow never');
  t.ok(s(['connect-failure']).wouldRetryReset('connect_failure', false));
  t.notOk(s(['connect-failure']).wouldRetryReset('reset', true));
  t.notOk(s(['connect-failure']).wouldRetryReset('timeout', true));
  t.ok(s(['reset-before-request']).wouldRetryReset('connect_failure', false));
  t.notOk(s(['reset-before-request']).wouldRetryReset('reset', true));
  t.ok(s(['refused-stream']).wouldRetryReset('refused_stream', true));
  t.notOk(s(['refused-stream']).wouldRetryReset('reset', true));
  t.notOk(s(['unavailable']).wouldRetryReset('reset', true), 'gRPC policies do not retry resets');
  t.notOk(s(['5xx']).wouldRetryHeaders(200, H('grpc-status', '14')));
});

t.test('retry budget, max_retries circuit breaker and success counting', async (t) => {
  const rm = new ResourceManager({ priority: 'DEFAULT', maxConnections: 1, maxPendingRequests: 1, maxRequests: 1, maxRetries: 1, trackRemaining: false });
  const st = stats();
  const a = RetryState.create(compiledRetryPolicy(cfg({ retryOn: ['5xx'], numRetries: 2 })), H())!;
  const b = RetryState.create(compiledRetryPolicy(cfg({ retryOn: ['5xx'], numRetries: 2 })), H())!;
  t.equal(a.shouldRetry(true, rm, st), RetryStatus.Yes);
  t.equal(rm.retries.count, 1, 'the granted retry holds a slot');
  t.equal(b.shouldRetry(true, rm, st), RetryStatus.Overflow, 'second concurrent retry overflows');
  t.equal(st.upstreamRqRetryOverflow, 1);
  t.equal(a.shouldRetry(true, rm, st), RetryStatus.Yes, 'slot released and taken again by the next retry');
  t.equal(a.shouldRetry(true, rm, st), RetryStatus.LimitExceeded);
  t.equal(rm.retries.count, 0);
  t.equal(st.upstreamRqRetry, 2);
  t.equal(st.upstreamRqRetryLimitExceeded, 1);
  const c = RetryState.create(compiledRetryPolicy(cfg({ retryOn: ['5xx'] })), H())!;
  t.equal(c.shouldRetry(true, rm, st), RetryStatus.Yes);
  t.equal(c.shouldRetry(false, rm, st), RetryStatus.No);
  t.equal(st.upstreamRqRetrySuccess, 1, 'a retry followed by a non-retriable outcome is a success');
  t.equal(rm.retries.count, 0);
  const d = RetryState.create(compiledRetryPolicy(cfg({ retryOn: ['5xx'] })), H())!;
  d.shouldRetry(true, rm, st);
  d.release(rm);
  t.equal(rm.retries.count, 0, 'release on request end');
});

t.test('back-off: fully jittered, [0, (2^N - 1) * base), capped at max', async (t) => {
  const max32 = 0xffffffff;
  for (let n = 1; n <= 8; n++) {
    let hi = 0;
    let bad = 0;
    for (let i = 0; i < 2000; i++) {
      const d = jitteredBackoffMs(n, 25, 250, (i * 2654435761) >>> 0);
      if (!(d >= 0 && d < (2 ** n - 1) * 25 && d <= 250)) bad++;
      hi = Math.max(hi, d);
    }
    t.equal(bad, 0, `retry ${n}: every back-off within [0, min((2^N - 1) * 25, 250)]`);
    t.ok(hi >= Math.min((2 ** n - 1) * 25, 250) * 0.8, `retry ${n} spreads over its range (max seen ${hi})`);
  }
  t.equal(jitteredBackoffMs(1, 25, 250, 0), 0);
  t.equal(jitteredBackoffMs(1, 25, 250, 24), 24);
  t.equal(jitteredBackoffMs(1, 25, 250, 25), 0);
  t.equal(jitteredBackoffMs(50, 25, 250, max32), 250, 'large retry numbers stay capped');
  const st = RetryState.create(compiledRetryPolicy(cfg({ retryOn: ['5xx'], numRetries: 3, retryBackOff: { baseIntervalMs: 10, maxIntervalMs: 15 } })), H())!;
  const rm = new ResourceManager();
  st.shouldRetry(true, rm, stats());
  t.ok(st.backoffMs(9) === 9 && st.backoffMs(10) === 0, 'first retry within [0, base)');
  st.shouldRetry(true, rm, stats());
  t.equal(st.backoffMs(29), 15, 'second retry capped at max_interval');
});

t.test('rate_limited_retry_back_off: reset headers parsed (seconds, unix timestamp), bounded by max_interval', async (t) => {
  t.equal(resetHeaderBackoffMs('2', false, 300_000, 0), 2000, 'SECONDS');
  t.equal(resetHeaderBackoffMs(' 0.5 ', false, 300_000, 0), 500, 'fractional seconds');
  t.equal(resetHeaderBackoffMs('1000', true, 300_000, 998_000), 2000, 'UNIX_TIMESTAMP minus now');
  t.equal(resetHeaderBackoffMs('900', true, 300_000, 998_000), undefined, 'a reset in the past is not used');
  t.equal(resetHeaderBackoffMs('400', false, 300_000, 0), undefined, 'above max_interval: not used');
  t.equal(resetHeaderBackoffMs('soon', false, 300_000, 0), undefined, 'unparsable');
  t.equal(resetHeaderBackoffMs(undefined, false, 300_000, 0), undefined, 'absent');

  const policy = new CompiledRetryPolicy(
    cfg({
      retryOn: ['retriable-status-codes'],
      retriableStatusCodes: [429],
      numRetries: 3,
      rateLimitedRetryBackOff: {
        resetHeaders: [
          { name: 'Retry-After', format: 'SECONDS' },
          { name: 'X-RateLimit-Reset', format: 'UNIX_TIMESTAMP' },
        ],
        maxIntervalMs: 10_000,
      },
    }),
  );
  const rm = new ResourceManager();
  const st = RetryState.create(policy, H())!;
  t.ok(st.wouldRetryHeaders(429, H('retry-after', '3')));
  t.equal(st.shouldRetry(true, rm, stats()), RetryStatus.Yes);
  const b = st.backoffMs(0);
  t.equal(b, 3000, 'the header interval, jitter 0');
  t.ok(st.backoffMs(0xffffffff) >= 3000 && st.backoffMs(0xffffffff) <= 4500, 'jitter adds at most 50%');
  const reset = String(Math.floor(Date.now() / 1000) + 5);
  t.ok(st.wouldRetryHeaders(429, H('retry-after', '999', 'x-ratelimit-reset', reset)), 'first header too large: the next one is used');
  t.equal(st.shouldRetry(true, rm, stats()), RetryStatus.Yes);
  const b2 = st.backoffMs(0);
  t.ok(b2 > 3000 && b2 <= 5000, `from X-RateLimit-Reset: ${b2}`);
  t.ok(st.wouldRetryHeaders(429, H()), 'no reset header');
  t.equal(st.shouldRetry(true, rm, stats()), RetryStatus.Yes);
  t.ok(st.backoffMs(12345) < 1000, 'falls back to the exponential back-off');
});

t.test('retry budget limits concurrent retries through shouldRetry (UO over budget)', async (t) => {
  const rm = new ResourceManager({ priority: 'DEFAULT', maxConnections: 1, maxPendingRequests: 1, maxRequests: 100, maxRetries: 100, retryBudget: { budgetPercent: 50, minRetryConcurrency: 1 }, trackRemaining: false });
  rm.requests.inc();
  rm.requests.inc();
  const policy = new CompiledRetryPolicy(cfg({ retryOn: ['5xx'], numRetries: 5 }));
  const a = RetryState.create(policy, H())!;
  const b = RetryState.create(policy, H())!;
  const s = stats();
  t.equal(a.shouldRetry(true, rm, s), RetryStatus.Yes, '50% of 2 active = 1 retry');
  t.equal(b.shouldRetry(true, rm, s), RetryStatus.Overflow, 'a second concurrent retry is over budget');
  t.equal(s.upstreamRqRetryOverflow, 1);
  a.release(rm);
  t.equal(rm.retries.count, 0);
});
