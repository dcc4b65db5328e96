// Outlier detection (src/upstream/outlier-detection.ts) through Cluster.recordOutcome / pickHost,
// with a manual clock and no interval timer: tests call `outlier.tick()` where the timer would fire.

import t from 'tap';
import type { OutlierDetectionConfig } from '../../../src/config/types';
import type { Cluster } from '../../../src/upstream/cluster';
import type { Host } from '../../../src/upstream/host';
import { seededRandom } from '../../../src/upstream/load-balancer';
import { OutlierDetector } from '../../../src/upstream/outlier-detection';
import { makeCluster, ManualClock, outlierConfig, ports, tally } from './helpers';

function setup(n: number, od: Partial<OutlierDetectionConfig> = {}, random = seededRandom(1)): { c: Cluster; clock: ManualClock } {
  const clock = new ManualClock();
  const c = makeCluster('ROUND_ROBIN', ports(n), { outlierDetection: outlierConfig(od), healthyPanicThreshold: 0 }, { now: clock.now, random });
  return { c, clock };
}

const status = (s: number) => ({ kind: 'status', status: s }) as const;
const local = (reason: 'connect_failure' | 'timeout' | 'reset' | 'protocol_error') => ({ kind: 'local', reason }) as const;

function fail(c: Cluster, h: Host, times: number, code = 503): void {
  for (let i = 0; i < times; i++) c.recordOutcome(h, status(code));
}

function used(c: Cluster): Set<number> {
  return new Set(tally(() => c.pickHost(), 50).keys());
}

t.test('5 consecutive 5xx eject the host; a success in between resets the run', async (t) => {
  const { c } = setup(4);
  const [a, b] = c.hosts;
  fail(c, b, 4);
  c.recordOutcome(b, status(200));
  fail(c, b, 4);
  t.notOk(c.outlier!.isEjected(b), '4 + 4 with a 200 between: not ejected');
  fail(c, a, 4, 500);
  t.notOk(c.outlier!.isEjected(a));
  t.ok(used(c).has(8001));
  c.recordOutcome(a, status(500));
  t.ok(c.outlier!.isEjected(a), 'fifth 5xx ejects');
  t.notOk(used(c).has(8001), 'ejected host is out of the load-balancing set');
  const st = c.outlier!.stats;
  t.equal(st.ejections_active, 1);
  t.equal(st.ejections_total, 1);
  t.equal(st.ejections_enforced_total, 1);
  t.equal(st.ejections_consecutive_5xx, 1);
  t.equal(st.ejections_detected_consecutive_5xx, 1);
  t.equal(st.ejections_enforced_consecutive_5xx, 1);
});

t.test('ejection lasts base_ejection_time × times ejected, capped by max_ejection_time', async (t) => {
  const { c, clock } = setup(2, { baseEjectionTimeMs: 10_000, maxEjectionTimeMs: 25_000, maxEjectionPercent: 50 });
  const a = c.hosts[0];
  const expectEjectedFor = (ms: number, label: string): void => {
    fail(c, a, 5);
    t.ok(c.outlier!.isEjected(a), `${label}: ejected`);
    clock.advance(ms - 1);
    c.outlier!.tick();
    t.ok(c.outlier!.isEjected(a), `${label}: still ejected at ${ms - 1} ms`);
    clock.advance(1);
    c.outlier!.tick();
    t.notOk(c.outlier!.isEjected(a), `${label}: back at ${ms} ms`);
    t.ok(used(c).has(8001), `${label}: back in the set`);
  };
  expectEjectedFor(10_000, 'first');
  expectEjectedFor(20_000, 'second');
  expectEjectedFor(25_000, 'third (capped)');
  expectEjectedFor(25_000, 'fourth (capped)');
  t.equal(c.outlier!.stats.ejections_active, 0);
  t.equal(c.outlier!.stats.ejections_total, 4);
  // healthy intervals decay the multiplier: after enough of them the base time applies again
  for (let i = 0; i < 5; i++) c.outlier!.tick();
  expectEjectedFor(10_000, 'after decay');
});

t.test('max_ejection_percent: checked before each ejection, so at least one host goes', async (t) => {
  const { c } = setup(10, { maxEjectionPercent: 20 });
  for (const h of c.hosts.slice(0, 4)) fail(c, h, 5);
  const ejected = c.hosts.filter((h) => c.outlier!.isEjected(h)).length;
  t.equal(ejected, 2, '0% and 10% < 20% allow two; at 20% the third is refused');
  t.equal(c.outlier!.stats.ejections_overflow, 2);
  t.equal(c.outlier!.stats.ejections_detected_consecutive_5xx, 4);

  const small = setup(3, { maxEjectionPercent: 10 }).c;
  fail(small, small.hosts[0], 5);
  fail(small, small.hosts[1], 5);
  t.ok(small.outlier!.isEjected(small.hosts[0]), 'one of three ejected although 33% > 10%');
  t.notOk(small.outlier!.isEjected(small.hosts[1]));

  const none = setup(3, { maxEjectionPercent: 0 }).c;
  fail(none, none.hosts[0], 5);
  t.notOk(none.outlier!.isEjected(none.hosts[0]), 'max_ejection_percent 0 ejects nothing');
});

t.test('enforcing percentages are rolled; detection is counted regardless', async (t) => {
  const off = setup(4, { enforcingConsecutive5xx: 0 }).c;
  fail(off, off.hosts[0], 5);
  t.notOk(off.outlier!.isEjected(off.hosts[0]));
  t.equal(off.outlier!.stats.ejections_detected_consecutive_5xx, 1);
  t.equal(off.outlier!.stats.ejections_enforced_consecutive_5xx, 0);

  let roll = 0.7;
  const half = setup(4, { enforcingConsecutive5xx: 50 }, () => roll).c;
  fail(half, half.hosts[0], 5);
  t.notOk(half.outlier!.isEjected(half.hosts[0]), 'roll 70 >= 50: not enforced');
  roll = 0.3;
  fail(half, half.hosts[0], 5);
  t.ok(half.outlier!.isEjected(half.hosts[0]), 'roll 30 < 50: enforced');
  t.equal(half.outlier!.stats.ejections_detected_consecutive_5xx, 2);
});

t.test('consecutive gateway failures count 502/503/504 only', async (t) => {
  const { c } = setup(4, { consecutiveGatewayFailure: 3, enforcingConsecutiveGatewayFailure: 100, consecutive5xx: 100 });
  const a = c.hosts[0];
  fail(c, a, 2, 502);
  fail(c, a, 1, 500); // a 5xx that is not a gateway error ends the run
  fail(c, a, 2, 504);
  t.notOk(c.outlier!.isEjected(a));
  c.recordOutcome(a, local('timeout')); // mapped to 504 without split
  t.ok(c.outlier!.isEjected(a));
  t.equal(c.outlier!.stats.ejections_enforced_consecutive_gateway_failure, 1);
  t.equal(c.outlier!.stats.ejections_enforced_consecutive_5xx, 0);
});

t.test('local-origin failures: 5xx without split, their own counter with split', async (t) => {
  const merged = setup(4).c;
  for (let i = 0; i < 5; i++) merged.recordOutcome(merged.hosts[0], local('connect_failure'));
  t.ok(merged.outlier!.isEjected(merged.hosts[0]), 'connect failures count as 503s');
  t.equal(merged.outlier!.stats.ejections_enforced_consecutive_5xx, 1);

  const split = setup(4, { splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailure: 3 }).c;
  const [a, b] = split.hosts;
  for (let i = 0; i < 2; i++) split.recordOutcome(a, local('reset'));
  split.recordOutcome(a, status(503)); // a response: the connection worked, the local run ends
  for (let i = 0; i < 2; i++) split.recordOutcome(a, local('connect_failure'));
  t.notOk(split.outlier!.isEjected(a));
  split.recordOutcome(a, local('timeout'));
  t.ok(split.outlier!.isEjected(a), 'three local failures in a row');
  t.equal(split.outlier!.stats.ejections_enforced_consecutive_local_origin_failure, 1);
  for (let i = 0; i < 10; i++) split.recordOutcome(b, local('connect_failure'));
  fail(split, b, 4);
  t.equal(split.outlier!.stats.ejections_detected_consecutive_5xx, 0, 'with split, local failures are not 5xx');
});

t.test('success-rate ejection at the interval (synthetic data)', async (t) => {
  const feed = (c: Cluster, volumes: number[], successes: number[]): void => {
    c.hosts.forEach((h, i) => {
      for (let k = 0; k < volumes[i]; k++) c.recordOutcome(h, status(k < successes[i] ? 200 : 500));
    });
  };
  const { c } = setup(5, { consecutive5xx: 0 });
  // mean 90, population stdev 20, threshold 90 - 1.9 × 20 = 52: 50% is an outlier
  feed(c, [100, 100, 100, 100, 100], [100, 100, 100, 100, 50]);
  t.notOk(c.outlier!.isEjected(c.hosts[4]), 'nothing before the interval');
  c.outlier!.tick();
  t.ok(c.outlier!.isEjected(c.hosts[4]));
  t.equal(c.outlier!.stats.ejections_enforced_success_rate, 1);
  t.equal(c.hosts.filter((h) => c.outlier!.isEjected(h)).length, 1);

  const mild = setup(5, { consecutive5xx: 0 }).c;
  // mean 80, stdev √200 ≈ 14.1, threshold ≈ 53.1: the 60% host stays
  feed(mild, [100, 100, 100, 100, 100], [100, 90, 80, 70, 60]);
  mild.outlier!.tick();
  t.equal(mild.outlier!.stats.ejections_detected_success_rate, 0, 'within the stdev band');

  const fewHosts = setup(5, { consecutive5xx: 0 }).c;
  feed(fewHosts, [100, 100, 100, 100, 99], [100, 100, 100, 100, 0]); // only 4 hosts have volume
  fewHosts.outlier!.tick();
  t.equal(fewHosts.outlier!.stats.ejections_detected_success_rate, 0, 'success_rate_minimum_hosts not met');

  const reset = setup(5, { consecutive5xx: 0 }).c;
  feed(reset, [60, 60, 60, 60, 60], [60, 60, 60, 60, 0]);
  reset.outlier!.tick(); // below request volume: nothing, and the counts start over
  feed(reset, [60, 60, 60, 60, 60], [60, 60, 60, 60, 0]);
  reset.outlier!.tick();
  t.equal(reset.outlier!.stats.ejections_detected_success_rate, 0, 'volume is per interval');
});

t.test('failure-percentage ejection at the interval', async (t) => {
  const { c } = setup(5, { consecutive5xx: 0, enforcingSuccessRate: 0, enforcingFailurePercentage: 100 });
  c.hosts.forEach((h, i) => {
    const failures = i === 2 ? 45 : i === 3 ? 42 : 0; // 90% and 84% of 50
    for (let k = 0; k < 50; k++) c.recordOutcome(h, status(k < failures ? 503 : 204));
  });
  c.outlier!.tick();
  t.ok(c.outlier!.isEjected(c.hosts[2]), '90% >= 85%');
  t.notOk(c.outlier!.isEjected(c.hosts[3]), '84% < 85%');
  t.equal(c.outlier!.stats.ejections_enforced_failure_percentage, 1);
});

t.test('everything ejected: panic uses all hosts; host removal keeps counters right', async (t) => {
  const clock = new ManualClock();
  const c = makeCluster('ROUND_ROBIN', ports(1), { outlierDetection: outlierConfig() }, { now: clock.now });
  fail(c, c.hosts[0], 5);
  t.ok(c.outlier!.isEjected(c.hosts[0]));
  t.equal(c.pickHost()!.port, 8001, 'panic threshold 50: the only host is still used');
  c.outlier!.setHosts([]);
  t.equal(c.outlier!.stats.ejections_active, 0);
});

t.test('the interval timer is unref-d and stopped by drain', async (t) => {
  const d = new OutlierDetector(outlierConfig({ intervalMs: 1 }));
  const timer = (d as unknown as { timer: NodeJS.Timeout }).timer;
  t.ok(timer, 'timer started');
  t.equal(timer.hasRef(), false, 'does not keep the process alive');
  d.stop();
  const c = makeCluster('ROUND_ROBIN', ports(1), { outlierDetection: outlierConfig() }, { outlierTimer: true });
  const ct = (c.outlier as unknown as { timer: NodeJS.Timeout | undefined }).timer;
  t.ok(ct);
  c.drain();
  t.equal((c.outlier as unknown as { timer: NodeJS.Timeout | undefined }).timer, undefined);
});
