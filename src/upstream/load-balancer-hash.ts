// Consistent-hashing load balancers (RING_HASH, MAGLEV) and the 32-bit hash they share.
// Hosts are keyed by "address:port". Request hashes come from the route's hash_policy (the caller
// hashes the key with `hashKey`); without one a random point is used, which keeps the weighted
// shares of the ring/table.

import type { Host } from './host';
import type { LoadBalancer, RandomSource } from './load-balancer';

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** 32-bit hash of a string (FNV-1a over UTF-16 code units, then a murmur3 finaliser). No allocation. */
export function hashString(s: string, seed = 0): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return fmix32(h ^ s.length);
}

/** The request hash for a hash-policy key: strings are hashed, numbers mixed to 32 bits. */
export function hashKey(key: string | number): number {
  if (typeof key === 'string') return hashString(key);
  // fold a possibly large integer (up to 2^53) into 32 bits, then mix
  const lo = key >>> 0;
  const hi = Math.floor(key / 4294967296) >>> 0;
  return fmix32(lo ^ Math.imul(hi, 0x9e3779b1));
}

/**
 * Ketama-style ring: each host owns points proportional to its weight; a request goes to the
 * first point clockwise from its hash.
 *
 * Sizing (keel's choice, close to Envoy's): the smallest-weight host gets
 * ceil(minNormalizedWeight × minimumRingSize) points rounded up to a power of two, and every other
 * host that count × its weight / the smallest weight, so the ring holds between 1× and 2×
 * minimumRingSize points (defaults 1024 / 8M as Envoy's). Envoy scales the ring to exactly the
 * minimum, which changes every host's point count whenever a host joins or leaves and moves about
 * twice the keys for small clusters; rounding to a power of two keeps per-host counts stable across
 * most membership changes, so removing one of N hosts moves only that host's ~1/N of the keys.
 * When the ring would exceed maximumRingSize the counts are scaled down (at least one point each).
 */
export class RingHashLoadBalancer implements LoadBalancer {
  private readonly points: Uint32Array;
  private readonly owners: Int32Array;

  constructor(
    private readonly hosts: readonly Host[],
    private readonly random: RandomSource,
    minimumRingSize: number,
    maximumRingSize: number,
  ) {
    let total = 0;
    let minW = Infinity;
    for (const h of hosts) {
      total += h.weight;
      minW = Math.min(minW, h.weight);
    }
    const base = 2 ** Math.ceil(Math.log2(Math.max(1, Math.ceil((minW / total) * minimumRingSize))));
    const counts = hosts.map((h) => Math.round((base * h.weight) / minW));
    let size = 0;
    for (const c of counts) size += c;
    if (size > maximumRingSize) {
      const f = maximumRingSize / size;
      for (let i = 0; i < counts.length; i++) counts[i] = Math.max(1, Math.floor(counts[i] * f));
    }
    // Pack (hash, host index) into one double so a numeric typed-array sort orders the ring.
    const packed: number[] = [];
    for (let i = 0; i < hosts.length; i++) {
      const key = hosts[i].addressString;
      for (let k = 0; k < counts[i]; k++) packed.push(hashString(`${key}_${k}`) * 2097152 + i); // hosts < 2^21
    }
    const sorted = Float64Array.from(packed).sort();
    this.points = new Uint32Array(sorted.length);
    this.owners = new Int32Array(sorted.length);
    for (let j = 0; j < sorted.length; j++) {
      const v = sorted[j];
      const hash = Math.floor(v / 2097152);
      this.points[j] = hash;
      this.owners[j] = v - hash * 2097152;
    }
  }

  get size(): number {
    return this.points.length;
  }

  pick(hash: number | undefined): Host | undefined {
    const points = this.points;
    const n = points.length;
    if (n === 0) return undefined;
    const h = hash === undefined ? Math.floor(this.random() * 4294967296) : hash >>> 0;
    // first point >= h, wrapping to 0
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid] < h) lo = mid + 1;
      else hi = mid;
    }
    return this.hosts[this.owners[lo === n ? 0 : lo]];
  }
}

/**
 * Maglev: a lookup table of `tableSize` (prime) slots filled from per-host permutations
 * (offset/skip from two hashes of the host key). Weighted: each round a host earns
 * weight / maxWeight credit and claims one slot per whole credit.
 */
export class MaglevLoadBalancer implements LoadBalancer {
  private readonly table: Int32Array;

  constructor(
    private readonly hosts: readonly Host[],
    private readonly random: RandomSource,
    readonly tableSize: number,
  ) {
    const m = tableSize;
    const n = hosts.length;
    const table = new Int32Array(m).fill(-1);
    const offset = new Float64Array(n);
    const skip = new Float64Array(n);
    const next = new Float64Array(n);
    const credit = new Float64Array(n);
    let maxW = 0;
    for (const h of hosts) maxW = Math.max(maxW, h.weight);
    for (let i = 0; i < n; i++) {
      const key = hosts[i].addressString;
      offset[i] = hashString(key, 0x5bd1e995) % m;
      skip[i] = (hashString(key, 0x27d4eb2f) % (m - 1)) + 1;
    }
    let filled = 0;
    while (filled < m) {
      for (let i = 0; i < n && filled < m; i++) {
        credit[i] += hosts[i].weight / maxW;
        while (credit[i] >= 1 && filled < m) {
          credit[i] -= 1;
          let c = (offset[i] + next[i] * skip[i]) % m;
          while (table[c] >= 0) {
            next[i]++;
            c = (offset[i] + next[i] * skip[i]) % m;
          }
          table[c] = i;
          next[i]++;
          filled++;
        }
      }
    }
    this.table = table;
  }

  pick(hash: number | undefined): Host | undefined {
    const m = this.table.length;
    const slot = hash === undefined ? Math.floor(this.random() * m) : (hash >>> 0) % m;
    return this.hosts[this.table[slot]];
  }
}
