// Load-balancing strategies. One instance is built per host set (a priority level's healthy,
// degraded or all-hosts list) whenever that set changes; `pick` runs on the request path and
// allocates nothing. The policies follow Envoy's documented behaviour:
//   ROUND_ROBIN   – plain rotation; EDF (earliest deadline first) schedule when weights differ.
//   LEAST_REQUEST – equal weights: N random choices (choice_count, default 2), fewest active
//                   requests wins; unequal weights: EDF with weight / (active + 1)^active_request_bias.
//   RANDOM        – uniform over the set.
//   RING_HASH     – consistent hash ring (see load-balancer-hash.ts).
//   MAGLEV        – Maglev lookup table (see load-balancer-hash.ts).
// Hash policies without a request hash fall back to a random pick, as Envoy's do.
// slow_start_config (ROUND_ROBIN, LEAST_REQUEST): a host added after the cluster started has its
// weight scaled by max(min_weight_percent, (time since added / window)^(1 / aggression)) until the
// window is over; a set with such a host uses the EDF schedule, which reads weights at pick time.

import type { LbPolicy, SlowStartConfig } from '../config/types';
import type { Host } from './host';
import { MaglevLoadBalancer, RingHashLoadBalancer } from './load-balancer-hash';

/** A source of uniform numbers in [0, 1) (Math.random, or a seeded generator in tests). */
export type RandomSource = () => number;

export interface LoadBalancer {
  /** A host from this set, or undefined when the set is empty. `hash` is the request's hash, if any. */
  pick(hash: number | undefined): Host | undefined;
}

export interface LbOptions {
  /** LEAST_REQUEST choice_count (Envoy default 2). */
  readonly choiceCount?: number;
  /** LEAST_REQUEST active_request_bias (Envoy default 1.0). */
  readonly activeRequestBias?: number;
  /** RING_HASH minimum_ring_size (Envoy default 1024). */
  readonly minimumRingSize?: number;
  /** RING_HASH maximum_ring_size (Envoy default 8M). */
  readonly maximumRingSize?: number;
  /** MAGLEV table_size, a prime (Envoy default 65537). */
  readonly maglevTableSize?: number;
}

export interface LbContext {
  readonly random: RandomSource;
  readonly options: LbOptions;
  readonly slowStart?: SlowStartConfig;
  /** hosts whose `seq` is above this (made after the cluster's first host set) are eligible for slow start */
  readonly slowStartAfter?: number;
  readonly now?: () => number;
}

/** The slow-start weight factor in (0, 1] for a host added at `addedAt` (1 once the window is over). */
export function slowStartFactor(cfg: SlowStartConfig, addedAt: number, now: number): number {
  const elapsed = now - addedAt;
  if (elapsed >= cfg.windowMs) return 1;
  const f = Math.pow(Math.max(elapsed, 1) / cfg.windowMs, 1 / cfg.aggression);
  return Math.max(cfg.minWeightPercent / 100, f);
}

function slowStartWeight(ctx: LbContext, hosts: readonly Host[], leastRequestBias: number | undefined): ((h: Host) => number) | undefined {
  const cfg = ctx.slowStart;
  if (cfg === undefined) return undefined;
  const now = ctx.now ?? Date.now;
  const after = ctx.slowStartAfter ?? 0;
  const t = now();
  if (!hosts.some((h) => h.seq > after && t - h.addedAt < cfg.windowMs)) return undefined;
  return (h) => {
    let w = h.weight;
    if (leastRequestBias !== undefined && leastRequestBias !== 0) w = w / Math.pow(h.activeRequests + 1, leastRequestBias);
    return h.seq > after ? w * slowStartFactor(cfg, h.addedAt, now()) : w;
  };
}

/** Builds the strategy for `policy` over `hosts` (the list is copied; callers may reuse theirs). */
export function createLoadBalancer(policy: LbPolicy, hosts: readonly Host[], ctx: LbContext): LoadBalancer {
  const list = hosts.slice();
  if (list.length === 0) return EMPTY;
  if (policy === 'ROUND_ROBIN' || policy === 'LEAST_REQUEST') {
    const slow = slowStartWeight(ctx, list, policy === 'LEAST_REQUEST' ? (ctx.options.activeRequestBias ?? 1) : undefined);
    if (slow !== undefined) return new EdfLoadBalancer(list, slow);
  }
  switch (policy) {
    case 'LEAST_REQUEST':
      return allWeightsEqual(list)
        ? new LeastRequestLoadBalancer(list, ctx.random, ctx.options.choiceCount ?? 2)
        : new WeightedLeastRequestLoadBalancer(list, ctx.random, ctx.options.activeRequestBias ?? 1);
    case 'RANDOM':
      return new RandomLoadBalancer(list, ctx.random);
    case 'RING_HASH':
      return new RingHashLoadBalancer(list, ctx.random, ctx.options.minimumRingSize ?? 1024, ctx.options.maximumRingSize ?? 8 * 1024 * 1024);
    case 'MAGLEV':
      return new MaglevLoadBalancer(list, ctx.random, ctx.options.maglevTableSize ?? 65537);
    case 'ROUND_ROBIN':
    case 'CLUSTER_PROVIDED':
    default:
      return allWeightsEqual(list) ? new RoundRobinLoadBalancer(list) : new EdfLoadBalancer(list, (h) => h.weight);
  }
}

const EMPTY: LoadBalancer = { pick: () => undefined };

function allWeightsEqual(hosts: readonly Host[]): boolean {
  for (let i = 1; i < hosts.length; i++) if (hosts[i].weight !== hosts[0].weight) return false;
  return true;
}

export class RoundRobinLoadBalancer implements LoadBalancer {
  private next = 0;
  constructor(private readonly hosts: readonly Host[]) {}

  pick(): Host | undefined {
    const hosts = this.hosts;
    const h = hosts[this.next];
    this.next = this.next + 1 === hosts.length ? 0 : this.next + 1;
    return h;
  }
}

export class RandomLoadBalancer implements LoadBalancer {
  constructor(
    private readonly hosts: readonly Host[],
    private readonly random: RandomSource,
  ) {}

  pick(): Host | undefined {
    const hosts = this.hosts;
    return hosts[Math.floor(this.random() * hosts.length)];
  }
}

export class LeastRequestLoadBalancer implements LoadBalancer {
  constructor(
    private readonly hosts: readonly Host[],
    private readonly random: RandomSource,
    private readonly choiceCount: number,
  ) {}

  pick(): Host | undefined {
    const hosts = this.hosts;
    const n = hosts.length;
    if (n === 1) return hosts[0];
    // choices are drawn with replacement, as Envoy does; the first of equals wins
    let best = hosts[Math.floor(this.random() * n)];
    for (let i = 1; i < this.choiceCount; i++) {
      const c = hosts[Math.floor(this.random() * n)];
      if (c.activeRequests < best.activeRequests) best = c;
    }
    return best;
  }
}

/**
 * Earliest-deadline-first scheduler: each host has a deadline; the pick is the host with the
 * earliest one (ties by position), whose next deadline is `current + 1 / weight(host)` with the
 * weight evaluated at that moment. Over time host i is picked in proportion to its weight.
 * A binary heap over preallocated typed arrays keeps `pick` O(log n) and allocation-free.
 */
export class EdfLoadBalancer implements LoadBalancer {
  private readonly deadline: Float64Array;
  private readonly heap: Int32Array;
  private current = 0;

  constructor(
    private readonly hosts: readonly Host[],
    private readonly weightOf: (h: Host) => number,
  ) {
    const n = hosts.length;
    this.deadline = new Float64Array(n);
    this.heap = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      this.deadline[i] = 1 / this.safeWeight(hosts[i]);
      this.heap[i] = i;
    }
    for (let i = (n >> 1) - 1; i >= 0; i--) this.siftDown(i);
  }

  pick(): Host | undefined {
    const heap = this.heap;
    const top = heap[0];
    const h = this.hosts[top];
    this.current = this.deadline[top];
    this.deadline[top] = this.current + 1 / this.safeWeight(h);
    this.siftDown(0);
    return h;
  }

  private safeWeight(h: Host): number {
    const w = this.weightOf(h);
    return w > 0 && Number.isFinite(w) ? w : 1e-9;
  }

  private less(a: number, b: number): boolean {
    const da = this.deadline[a];
    const db = this.deadline[b];
    return da < db || (da === db && a < b);
  }

  private siftDown(i: number): void {
    const heap = this.heap;
    const n = heap.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) return;
      const r = l + 1;
      const m = r < n && this.less(heap[r], heap[l]) ? r : l;
      if (!this.less(heap[m], heap[i])) return;
      const t = heap[m];
      heap[m] = heap[i];
      heap[i] = t;
      i = m;
    }
  }
}

/** LEAST_REQUEST with unequal weights: EDF on weight / (active_requests + 1)^bias. */
export class WeightedLeastRequestLoadBalancer extends EdfLoadBalancer {
  constructor(hosts: readonly Host[], _random: RandomSource, bias: number) {
    super(
      hosts,
      bias === 1
        ? (h) => h.weight / (h.activeRequests + 1)
        : bias === 0
          ? (h) => h.weight
          : (h) => h.weight / Math.pow(h.activeRequests + 1, bias),
    );
  }
}

/** A small seeded PRNG (mulberry32) for deterministic tests and reproducible runs. */
export function seededRandom(seed: number): RandomSource {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
