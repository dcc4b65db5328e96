// Load-balancing policies, panic mode and priority load (src/upstream/load-balancer*.ts, cluster.ts).
// Random sources are seeded so every run sees the same sequence; bounds are still tolerant.

import t from 'tap';
import { createLoadBalancer, seededRandom } from '../../../src/upstream/load-balancer';
import { hashKey, MaglevLoadBalancer, RingHashLoadBalancer } from '../../../src/upstream/load-balancer-hash';
import { makeCluster, ports, tally } from './helpers';

t.test('round robin rotates over equal-weight hosts in order', async (t) => {
  const c = makeCluster('ROUND_ROBIN', ports(3));
  const seq = Array.from({ length: 7 }, () => c.pickHost()!.port);
  t.same(seq, [8001, 8002, 8003, 8001, 8002, 8003, 8001]);
});

t.test('weighted round robin (EDF) follows the weights and interleaves', async (t) => {
  const c = makeCluster('ROUND_ROBIN', [
    { port: 8001, weight: 1 },
    { port: 8002, weight: 2 },
    { port: 8003, weight: 3 },
  ]);
  const seq = Array.from({ length: 600 }, () => c.pickHost()!.port);
  const counts = new Map<number, number>();
  for (const p of seq) counts.set(p, (counts.get(p) ?? 0) + 1);
  t.ok(Math.abs(counts.get(8001)! - 100) <= 2, `weight 1: ${counts.get(8001)}`);
  t.ok(Math.abs(counts.get(8002)! - 200) <= 2, `weight 2: ${counts.get(8002)}`);
  t.ok(Math.abs(counts.get(8003)! - 300) <= 2, `weight 3: ${counts.get(8003)}`);
  // interleaved, not in blocks: runs of the heaviest host are short and every stretch of two
  // weight cycles (12 picks) visits every host
  const text = seq.map((p) => p - 8000).join('');
  t.notMatch(text, /333/, text.slice(0, 36));
  t.notMatch(text, /11/);
  let windowsOk = true;
  for (let i = 0; i + 12 <= seq.length; i++) if (new Set(seq.slice(i, i + 12)).size !== 3) windowsOk = false;
  t.ok(windowsOk, 'every 12-pick window has all hosts');
});

t.test('random spreads evenly (seeded)', async (t) => {
  const c = makeCluster('RANDOM', ports(4), {}, { random: seededRandom(42) });
  const counts = tally(() => c.pickHost(), 40_000);
  t.equal(counts.size, 4);
  for (const [port, n] of counts) t.ok(n > 9_300 && n < 10_700, `${port}: ${n}`);
});

t.test('least request (P2C) prefers idle hosts', async (t) => {
  const c = makeCluster('LEAST_REQUEST', ports(3), {}, { random: seededRandom(7) });
  const [a, b, d] = c.hosts;
  a.activeRequests = 10;
  b.activeRequests = 0;
  d.activeRequests = 10;
  const counts = tally(() => c.pickHost(), 9_000);
  // the idle host wins whenever it is one of the two choices: 1 - (2/3)^2 = 5/9
  t.ok(Math.abs(counts.get(8002)! / 9_000 - 5 / 9) < 0.03, `idle host share ${counts.get(8002)! / 9_000}`);
  // a busy host wins when neither choice is the idle one and it was drawn first (ties keep the
  // first choice): 2/9 each
  t.ok(Math.abs(counts.get(8001)! / 9_000 - 2 / 9) < 0.02, `busy host share ${counts.get(8001)! / 9_000}`);
});

t.test('least request with simulated load keeps active requests balanced', async (t) => {
  const c = makeCluster('LEAST_REQUEST', ports(5), {}, { random: seededRandom(3) });
  // host 8001 is slow: its requests never finish during the run
  const slow = c.hosts[0];
  const rnd = seededRandom(11);
  for (let i = 0; i < 2_000; i++) {
    const h = c.pickHost()!;
    h.activeRequests++;
    if (h !== slow) for (const o of c.hosts) if (o !== slow && o.activeRequests > 0 && rnd() < 0.5) o.activeRequests--;
  }
  // once it is the busiest, P2C only picks it when both choices are it: ~2000 / 25 = 80
  t.ok(slow.activeRequests < 120, `slow host accumulated ${slow.activeRequests} (round robin would give 400)`);
});

t.test('weighted least request divides weight by (active + 1)^bias', async (t) => {
  const c = makeCluster('LEAST_REQUEST', [
    { port: 8001, weight: 1 },
    { port: 8002, weight: 2 },
  ]);
  c.hosts[1].activeRequests = 3; // effective weight 2 / 4 = 0.5 against 1 / 1
  c.rebuild();
  const counts = tally(() => c.pickHost(), 3_000);
  t.ok(Math.abs(counts.get(8001)! / 3_000 - 2 / 3) < 0.02, `light host share ${counts.get(8001)! / 3_000}`);
  c.hosts[1].activeRequests = 0; // now 2 : 1 the other way
  c.rebuild();
  const again = tally(() => c.pickHost(), 3_000);
  t.ok(Math.abs(again.get(8002)! / 3_000 - 2 / 3) < 0.02, `weight-2 host share ${again.get(8002)! / 3_000}`);

  const unbiased = makeCluster('LEAST_REQUEST', [{ port: 8001, weight: 1 }, { port: 8002, weight: 2 }], {}, { lb: { activeRequestBias: 0 } });
  unbiased.hosts[1].activeRequests = 3;
  unbiased.rebuild();
  const plain = tally(() => unbiased.pickHost(), 3_000);
  t.ok(Math.abs(plain.get(8002)! / 3_000 - 2 / 3) < 0.02, `bias 0 is plain weighted: ${plain.get(8002)! / 3_000}`);
});

for (const policy of ['RING_HASH', 'MAGLEV'] as const) {
  t.test(`${policy}: same key, same host; keys spread; no key falls back to random`, async (t) => {
    const c = makeCluster(policy, ports(5), {}, { random: seededRandom(1) });
    const first = new Map<string, number>();
    for (let i = 0; i < 5_000; i++) first.set(`user-${i}`, c.pickHost(`user-${i}`)!.port);
    let same = 0;
    for (const [k, p] of first) if (c.pickHost(k)!.port === p) same++;
    t.equal(same, 5_000, 'stable');
    t.equal(c.pickHost(12345)!.port, c.pickHost(12345)!.port, 'numeric keys are stable too');
    const counts = new Map<number, number>();
    for (const p of first.values()) counts.set(p, (counts.get(p) ?? 0) + 1);
    t.equal(counts.size, 5);
    for (const [port, n] of counts) t.ok(n > 600 && n < 1_500, `${port}: ${n} of 5000 keys`);
    const random = tally(() => c.pickHost(), 5_000);
    t.equal(random.size, 5, 'keyless picks reach every host');
    for (const [port, n] of random) t.ok(n > 600 && n < 1_500, `keyless ${port}: ${n}`);
  });

  t.test(`${policy}: removing one of N hosts moves about 1/N of the keys`, async (t) => {
    const n = 10;
    const before = makeCluster(policy, ports(n));
    const after = makeCluster(policy, ports(n - 1)); // 8010 removed
    const keys = 20_000;
    let moved = 0;
    let movedFromSurvivors = 0;
    for (let i = 0; i < keys; i++) {
      const k = `session-${i}`;
      const p0 = before.pickHost(k)!.port;
      const p1 = after.pickHost(k)!.port;
      if (p0 !== p1) {
        moved++;
        if (p0 !== 8010) movedFromSurvivors++;
      }
    }
    t.ok(moved / keys < (1 / n) * 1.4, `moved ${moved / keys}`);
    t.ok(moved / keys > (1 / n) * 0.6, `moved ${moved / keys} (the removed host's keys must move)`);
    if (policy === 'RING_HASH') t.equal(movedFromSurvivors, 0, 'ring: keys on surviving hosts never move');
    else t.ok(movedFromSurvivors / keys < 0.02, `maglev: little extra disruption (${movedFromSurvivors / keys})`);
  });

  t.test(`${policy}: weights shift the share of keys`, async (t) => {
    const c = makeCluster(policy, [
      { port: 8001, weight: 1 },
      { port: 8002, weight: 3 },
    ]);
    let heavy = 0;
    for (let i = 0; i < 8_000; i++) if (c.pickHost(`k${i}`)!.port === 8002) heavy++;
    t.ok(Math.abs(heavy / 8_000 - 0.75) < 0.05, `weight-3 host has ${heavy / 8_000} of keys`);
  });
}

t.test('hash tables are sized as documented', async (t) => {
  const c = makeCluster('ROUND_ROBIN', ports(3));
  const ctx = { random: seededRandom(1), options: {} };
  const ring = createLoadBalancer('RING_HASH', c.hosts, ctx) as RingHashLoadBalancer;
  t.ok(ring.size >= 1024 && ring.size <= 2048, `ring ${ring.size}: 3 × 512 points`);
  const skewed = makeCluster('ROUND_ROBIN', [{ port: 8001, weight: 1 }, { port: 8002, weight: 100 }]);
  const big = createLoadBalancer('RING_HASH', skewed.hosts, ctx) as RingHashLoadBalancer;
  t.equal(big.size, 16 + 1600, `smallest host: ceil(1024 / 101) = 11 -> 16 points, the other 100×: ring ${big.size}`);
  const capped = createLoadBalancer('RING_HASH', skewed.hosts, { ...ctx, options: { maximumRingSize: 4096 } }) as RingHashLoadBalancer;
  t.ok(capped.size <= 4096, `capped at maximum_ring_size: ${capped.size}`);
  const maglev = createLoadBalancer('MAGLEV', c.hosts, ctx) as MaglevLoadBalancer;
  t.equal(maglev.tableSize, 65537);
  t.not(hashKey('a'), hashKey('b'));
});

t.test('panic threshold: below it, all hosts are used', async (t) => {
  const eps = [
    { port: 8001 },
    { port: 8002, health: 'UNHEALTHY' as const },
    { port: 8003, health: 'UNHEALTHY' as const },
    { port: 8004, health: 'UNHEALTHY' as const },
  ];
  const panic = makeCluster('ROUND_ROBIN', eps);
  t.same(new Set(tally(() => panic.pickHost(), 40).keys()), new Set([8001, 8002, 8003, 8004]), '25% healthy < 50%: panic');

  const half = makeCluster('ROUND_ROBIN', [{ port: 8001 }, { port: 8002 }, { port: 8003, health: 'UNHEALTHY' }, { port: 8004, health: 'TIMEOUT' }]);
  t.same(new Set(tally(() => half.pickHost(), 40).keys()), new Set([8001, 8002]), '50% healthy: no panic');

  const off = makeCluster('ROUND_ROBIN', [{ port: 8001, health: 'UNHEALTHY' }], { healthyPanicThreshold: 0 });
  t.equal(off.pickHost(), undefined, 'threshold 0 disables panic: no host');
  const none = makeCluster('ROUND_ROBIN', [{ port: 8001, health: 'UNHEALTHY' }]);
  t.equal(none.pickHost()!.port, 8001, 'nothing healthy: panic over all hosts');
  t.equal(makeCluster('ROUND_ROBIN', []).pickHost(), undefined, 'no hosts');
});

t.test('health changes apply after rebuild()', async (t) => {
  const c = makeCluster('ROUND_ROBIN', ports(3));
  c.hosts[0].health = 'UNHEALTHY';
  c.rebuild();
  t.notOk(new Set(tally(() => c.pickHost(), 30).keys()).has(8001));
});

t.test('priorities: P0 takes everything while healthy, spills by 1.4 × health', async (t) => {
  const all = makeCluster('ROUND_ROBIN', [{ port: 8001 }, { port: 8002 }, { port: 9001, priority: 1 }]);
  t.same([...tally(() => all.pickHost(), 100).keys()].sort(), [8001, 8002], 'healthy P0 takes all');

  // 3 of 4 healthy (75% × 1.4 > 100): still all on P0
  const mostly = makeCluster('ROUND_ROBIN', [{ port: 8001 }, { port: 8002 }, { port: 8003 }, { port: 8004, health: 'UNHEALTHY' }, { port: 9001, priority: 1 }]);
  t.notOk(tally(() => mostly.pickHost(), 300).has(9001), '75% healthy P0 keeps all traffic');

  // 1 of 2 healthy: P0 gets floor(50 × 1.4) = 70%, P1 30%
  const split = makeCluster(
    'ROUND_ROBIN',
    [{ port: 8001 }, { port: 8002, health: 'UNHEALTHY' }, { port: 9001, priority: 1 }, { port: 9002, priority: 1 }],
    {},
    { random: seededRandom(5) },
  );
  const counts = tally(() => split.pickHost(), 20_000);
  t.notOk(counts.has(8002), 'unhealthy P0 host unused');
  t.ok(Math.abs(counts.get(8001)! / 20_000 - 0.7) < 0.015, `P0 share ${counts.get(8001)! / 20_000}`);
  t.ok(Math.abs((counts.get(9001)! + counts.get(9002)!) / 20_000 - 0.3) < 0.015, 'P1 share');

  const failover = makeCluster('ROUND_ROBIN', [{ port: 8001, health: 'UNHEALTHY' }, { port: 9001, priority: 1 }]);
  t.same([...tally(() => failover.pickHost(), 20).keys()], [9001], 'P0 down: all to P1');

  const dead = makeCluster('ROUND_ROBIN', [{ port: 8001, health: 'UNHEALTHY' }, { port: 9001, priority: 1, health: 'UNHEALTHY' }]);
  t.same([...tally(() => dead.pickHost(), 20).keys()], [8001], 'nothing available: P0 in panic');
});

t.test('degraded hosts take only the load healthy hosts cannot', async (t) => {
  const c = makeCluster('ROUND_ROBIN', [{ port: 8001 }, { port: 8002, health: 'DEGRADED' }, { port: 8003, health: 'DEGRADED' }, { port: 8004, health: 'DEGRADED' }], {}, { random: seededRandom(9) });
  const counts = tally(() => c.pickHost(), 20_000);
  // healthy availability floor(25 × 1.4) = 35%, the rest to the degraded set
  t.ok(Math.abs(counts.get(8001)! / 20_000 - 0.35) < 0.015, `healthy share ${counts.get(8001)! / 20_000}`);
  const allHealthy = makeCluster('ROUND_ROBIN', [{ port: 8001 }, { port: 8002 }, { port: 8003 }, { port: 8004, health: 'DEGRADED' }]);
  t.notOk(tally(() => allHealthy.pickHost(), 100).has(8004), 'degraded unused while healthy suffice');
});

t.test('hash policies pick the priority from the hash (stable across calls)', async (t) => {
  const c = makeCluster('RING_HASH', [{ port: 8001 }, { port: 8002, health: 'UNHEALTHY' }, { port: 9001, priority: 1 }], {}, { random: seededRandom(2) });
  let p1 = 0;
  let unstable = 0;
  let unhealthy = 0;
  for (let i = 0; i < 2_000; i++) {
    const a = c.pickHost(`k${i}`)!.port;
    if (c.pickHost(`k${i}`)!.port !== a) unstable++;
    if (a === 9001) p1++;
    if (a === 8002) unhealthy++;
  }
  t.equal(unstable, 0, 'same key, same host');
  t.equal(unhealthy, 0, 'unhealthy host never picked');
  t.ok(Math.abs(p1 / 2_000 - 0.3) < 0.04, `P1 share ${p1 / 2_000}`);
});
