// Traffic policy checked statistically on the compiled pickers (no sockets): weighted cluster splits,
// weighted round robin, consistent hashing when a host is added, locality-weighted balancing,
// overprovisioning factor, DRAINING endpoints, slow start, and the retry budget. Tolerances are
// stated in each assertion; random sources are seeded so a run is reproducible.

import t from 'tap';
import { parseRouteConfigurationText } from '../../../src/config/bootstrap';
import type { EndpointConfig, LocalityEndpointsConfig } from '../../../src/config/types';
import { HeaderMap } from '../../../src/http/headers';
import { RouteTable, type RouteInput } from '../../../src/router/route-table';
import { seededRandom, slowStartFactor } from '../../../src/upstream/load-balancer';
import { ResourceManager } from '../../../src/upstream/resource-manager';
import { ManualClock, makeCluster, ports, tally } from './helpers';

function ep(port: number, over: Partial<EndpointConfig> = {}): EndpointConfig {
  return { address: { address: '10.0.0.1', port }, hostname: '', healthStatus: 'HEALTHY', loadBalancingWeight: 1, metadata: {}, ...over };
}

function locality(zone: string, weight: number, endpoints: EndpointConfig[], priority = 0): LocalityEndpointsConfig {
  return { locality: { region: 'r', zone, subZone: '' }, priority, loadBalancingWeight: weight, endpoints };
}

t.test('weighted clusters 90/10 over 10,000 requests: within 1.5 points', async (t) => {
  const rt = new RouteTable(
    parseRouteConfigurationText(
      `
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: { prefix: / }
    route: { weighted_clusters: { clusters: [{ name: a, weight: 90 }, { name: b, weight: 10 }] } }
`,
      'test',
    ).routes,
  );
  const rnd = seededRandom(42);
  let a = 0;
  const n = 10_000;
  for (let i = 0; i < n; i++) {
    const input: RouteInput = {
      authority: 'x',
      path: '/',
      method: 'GET',
      headers: new HeaderMap([':authority', 'x', ':path', '/', ':method', 'GET']),
      secure: false,
      internal: false,
      randomValue: Math.floor(rnd() * 4294967296),
    };
    const r = rt.route(input);
    if (r.kind === 'route' && r.route.pickCluster(input)?.name === 'a') a++;
  }
  t.ok(Math.abs((a / n) * 100 - 90) <= 1.5, `a got ${(a / n) * 100}% (90 ± 1.5)`);
});

t.test('weighted round robin 90/10 over 10,000 picks: within 1.5 points (EDF is exact up to rounding)', async (t) => {
  const c = makeCluster('ROUND_ROBIN', [
    { port: 8001, weight: 90 },
    { port: 8002, weight: 10 },
  ]);
  const counts = tally(() => c.pickHost(), 10_000);
  t.ok(Math.abs(counts.get(8001)! / 100 - 90) <= 1.5, `8001: ${counts.get(8001)! / 100}%`);
  // smooth: the light host never waits more than ~10 picks
  let gap = 0;
  let maxGap = 0;
  for (let i = 0; i < 1000; i++) {
    if (c.pickHost()!.port === 8002) gap = 0;
    else maxGap = Math.max(maxGap, ++gap);
  }
  t.ok(maxGap <= 10, `longest run without the light host: ${maxGap}`);
});

t.test('random and least request spread evenly over 4 hosts: each 25% ± 1.5 points over 20,000', async (t) => {
  for (const policy of ['RANDOM', 'LEAST_REQUEST'] as const) {
    const c = makeCluster(policy, ports(4), {}, { random: seededRandom(7) });
    const counts = tally(() => c.pickHost(), 20_000);
    for (const [port, k] of counts) t.ok(Math.abs((k / 20_000) * 100 - 25) <= 1.5, `${policy} ${port}: ${(k / 200).toFixed(2)}%`);
  }
});

for (const policy of ['RING_HASH', 'MAGLEV'] as const) {
  t.test(`${policy}: sticky keys; adding an 11th host moves about 1/11 of the keys, only to the new host`, async (t) => {
    const before = makeCluster(policy, ports(10));
    const after = makeCluster(policy, ports(11)); // 8011 added
    const keys = 20_000;
    let moved = 0;
    let movedElsewhere = 0;
    let unstable = 0;
    for (let i = 0; i < keys; i++) {
      const k = `user-${i}`;
      const p0 = before.pickHost(k)!.port;
      if (before.pickHost(k)!.port !== p0) unstable++;
      const p1 = after.pickHost(k)!.port;
      if (p0 !== p1) {
        moved++;
        if (p1 !== 8011) movedElsewhere++;
      }
    }
    t.equal(unstable, 0, 'the same key always lands on the same host');
    const share = moved / keys;
    // ideal 1/11 = 9.1%; tolerance ±40% of that
    t.ok(share > (1 / 11) * 0.6 && share < (1 / 11) * 1.4, `moved ${(share * 100).toFixed(2)}% of keys (ideal 9.09%)`);
    if (policy === 'RING_HASH') t.equal(movedElsewhere, 0, 'ring: every moved key went to the new host');
    else t.ok(movedElsewhere / keys < 0.02, `maglev: ${((movedElsewhere / keys) * 100).toFixed(2)}% moved between old hosts (< 2%)`);
  });
}

t.test('locality-weighted: localities share by weight × availability', async (t) => {
  const eps = [locality('a', 3, [ep(8001), ep(8002)]), locality('b', 1, [ep(9001), ep(9002)])];
  const c = makeCluster('ROUND_ROBIN', [], { endpoints: eps, localityWeighted: true });
  const n = 10_000;
  const counts = tally(() => c.pickHost(), n);
  const a = (counts.get(8001)! + counts.get(8002)!) / n;
  t.ok(Math.abs(a * 100 - 75) <= 1.5, `zone a (weight 3 of 4): ${(a * 100).toFixed(2)}% (75 ± 1.5)`);

  // zone a with 1 of 4 hosts healthy: effective weight 3 × min(1, 1.4 × 1/4) = 1.05 vs 1
  const eps2 = [locality('a', 3, [ep(8001), ep(8002, { healthStatus: 'UNHEALTHY' }), ep(8003, { healthStatus: 'UNHEALTHY' }), ep(8004, { healthStatus: 'UNHEALTHY' })]), locality('b', 1, [ep(9001)])];
  const c2 = makeCluster('ROUND_ROBIN', [], { endpoints: eps2, localityWeighted: true, healthyPanicThreshold: 0 });
  const counts2 = tally(() => c2.pickHost(), n);
  const a2 = (counts2.get(8001) ?? 0) / n;
  t.ok(Math.abs(a2 - 1.05 / 2.05) <= 0.015, `degraded zone a: ${(a2 * 100).toFixed(2)}% (51.2 ± 1.5)`);
  t.notOk(counts2.has(8002), 'unhealthy host unused');

  const off = makeCluster('ROUND_ROBIN', [], { endpoints: eps });
  const c3 = tally(() => off.pickHost(), 4_000);
  t.equal(c3.get(8001), 1_000, 'without locality_weighted_lb_config, locality weights are ignored');
});

t.test('overprovisioning_factor changes when a priority spills over', async (t) => {
  const eps = [locality('a', 1, [ep(8001), ep(8002, { healthStatus: 'UNHEALTHY' })]), locality('b', 1, [ep(9001)], 1)];
  const def = makeCluster('ROUND_ROBIN', [], { endpoints: eps }, { random: seededRandom(3) });
  const d = tally(() => def.pickHost(), 10_000);
  t.ok(Math.abs(d.get(8001)! / 10_000 - 0.7) <= 0.015, `factor 140: P0 ${d.get(8001)! / 100}% (70 ± 1.5)`);
  const big = makeCluster('ROUND_ROBIN', [], { endpoints: eps, overprovisioningFactor: 200 }, { random: seededRandom(3) });
  t.same([...tally(() => big.pickHost(), 1_000).keys()], [8001], 'factor 200: 50% healthy is enough for all traffic');
});

t.test('UNHEALTHY and DRAINING endpoints get no traffic; DEGRADED only when healthy are short', async (t) => {
  // 8 of 10 healthy: 80% × 1.4 covers all traffic
  const c = makeCluster('ROUND_ROBIN', [...ports(8), { port: 9001, health: 'DRAINING' }, { port: 9002, health: 'DEGRADED' }]);
  const counts = tally(() => c.pickHost(), 800);
  t.same([...counts.keys()].sort(), [8001, 8002, 8003, 8004, 8005, 8006, 8007, 8008]);
  // 1 of 4 healthy: the degraded host takes what the healthy one cannot; DRAINING still nothing
  const short = makeCluster('ROUND_ROBIN', [{ port: 8001 }, { port: 8002, health: 'UNHEALTHY' }, { port: 9001, health: 'DRAINING' }, { port: 9002, health: 'DEGRADED' }]);
  const s = tally(() => short.pickHost(), 1_000);
  t.ok(s.has(9002), 'degraded host used when healthy are short');
  t.notOk(s.has(9001), 'draining host unused');
});

t.test('slow start: a new host ramps from min_weight_percent to its full weight over the window', async (t) => {
  const cfg = { windowMs: 10_000, aggression: 1, minWeightPercent: 10 };
  t.equal(slowStartFactor(cfg, 0, 500), 0.1, 'below min_weight_percent: the minimum');
  t.equal(slowStartFactor(cfg, 0, 5_000), 0.5, 'half-way: half (aggression 1)');
  t.equal(slowStartFactor(cfg, 0, 10_000), 1, 'window over');
  t.ok(Math.abs(slowStartFactor({ ...cfg, aggression: 2 }, 0, 2_500) - 0.5) < 1e-9, 'aggression 2: sqrt(0.25)');

  const clock = new ManualClock();
  const c = makeCluster('ROUND_ROBIN', ports(2), { slowStart: cfg, type: 'EDS' }, { now: clock.now });
  // initial hosts are not slow-started
  const first = tally(() => c.pickHost(), 1_000);
  t.equal(first.get(8001), 500);
  // EDS adds a third host now: (clock time is the host's addedAt in real time; use the real clock offset)
  const eps = [locality('', 0, [ep(8001), ep(8002), ep(8003)])];
  c.updateEndpoints(eps);
  const added = c.hosts.find((h) => h.port === 8003)!;
  clock.t = added.addedAt + 2_500; // 25% into the window
  const early = tally(() => c.pickHost(), 9_000);
  const share = early.get(8003)! / 9_000;
  // weights 1 : 1 : 0.25 -> 0.25 / 2.25 = 11.1%
  t.ok(Math.abs(share - 0.25 / 2.25) <= 0.015, `new host at 25% of the window: ${(share * 100).toFixed(2)}% (11.1 ± 1.5)`);
  clock.t = added.addedAt + 20_000;
  const later = tally(() => c.pickHost(), 9_000);
  t.ok(Math.abs(later.get(8003)! / 9_000 - 1 / 3) <= 0.015, `after the window: ${(later.get(8003)! / 90).toFixed(2)}%`);
});

t.test('retry budget: budget_percent of active + pending requests, at least min_retry_concurrency', async (t) => {
  const rm = new ResourceManager({ priority: 'DEFAULT', maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3, retryBudget: { budgetPercent: 20, minRetryConcurrency: 2 }, trackRemaining: false });
  t.equal(rm.retries.max, 2, 'idle: min_retry_concurrency');
  for (let i = 0; i < 30; i++) rm.requests.inc();
  for (let i = 0; i < 10; i++) rm.pendingRequests.inc();
  t.equal(rm.retries.max, 8, '20% of 40');
  for (let i = 0; i < 8; i++) rm.retries.inc();
  t.notOk(rm.retries.canCreate(), 'the 9th concurrent retry is over budget');
  t.equal(rm.retries.remaining, 0);
  const plain = new ResourceManager({ priority: 'DEFAULT', maxConnections: 1, maxPendingRequests: 1, maxRequests: 1, maxRetries: 5, trackRemaining: false });
  t.equal(plain.retries.max, 5, 'without a budget, max_retries');
});
