// The load-balancer and connection-pool bookkeeping functions that exist both in the native addon
// (native/src/pool.cc) and here as pure-TypeScript twins, over typed arrays so that a native call
// marshals no objects: least-request choice (Envoy's P2C / choice_count), the weighted
// least-request EDF step (weight / (active + 1)^bias), a pool's ready-list pop with a per-host
// connection limit and its push; and readHeaderBlock, the least a native route matcher would have
// to do per request (read the request's header block into native memory), kept as a measured
// argument. This file states the contract both implementations follow; test/unit/native/
// lb-pool.test.ts runs one suite against both. The request path uses neither: bench/micro/run.js
// measures them against the object-field code in src/upstream/ (load-balancer.ts, h1-pool.ts),
// which is faster end to end (see `lbPoolDefault` and the README's "Performance").
//
// Must not: allocate on the pick/take/put paths, or differ from the addon in any answer or error
// for arguments of the declared types (RangeError for any index, size or count outside its
// range; the addon alone also throws TypeError for arguments of the wrong type, which TypeScript
// rules out here). The one admitted difference: with a non-integer bias, Math.pow and the C
// library's pow may round the last bit differently, which can reorder two exactly tied deadlines.

/** One implementation of the functions below (the addon's, or the twins). */
export interface LbPoolImpl {
  readonly kind: 'native' | 'twin';
  /**
   * LEAST_REQUEST with equal weights, as Envoy: `choiceCount` candidates drawn WITH replacement
   * from the set (candidate i is position floor(randoms[i] * n), clamped to [0, n - 1]; a NaN or
   * negative number gives 0), the one with the fewest active requests wins, the first of equals.
   * The set is `slots` (n = slots.length): set position p's active count is counts[slots[p]], so
   * one counts array can be shared by every host set of a cluster. Returns the set position, or
   * -1 for an empty set (nothing drawn). choiceCount > n is allowed (draws repeat).
   * RangeError: choiceCount not an integer >= 1, randoms.length < choiceCount, or a drawn slot
   * outside counts.
   */
  leastRequestPick(counts: Int32Array, slots: Int32Array, randoms: Float64Array, choiceCount: number): number;
  /**
   * One step of LEAST_REQUEST with unequal weights (Envoy: an EDF schedule over
   * weight / (active + 1)^bias, the weight read at pick time). The set has n = heap.length hosts;
   * heap is a binary min-heap of set positions ordered by (deadlines[p], p); deadlines[n] holds
   * the schedule's current time. Picks heap[0], sets the current time to its deadline, gives it
   * the next deadline current + 1 / w where w = weights[p] / (counts[slots[p]] + 1)^bias (bias 1:
   * a plain division; bias 0: the weight alone; a w that is not positive and finite counts as
   * 1e-9), sifts it down and returns p; -1 for an empty set. `edfInit` prepares the arrays.
   * RangeError: bias not finite and >= 0, slots/weights shorter than n or deadlines shorter than
   * n + 1, a heap entry outside [0, n), or a slot outside counts.
   */
  edfPick(counts: Int32Array, slots: Int32Array, weights: Float64Array, deadlines: Float64Array, heap: Int32Array, bias: number): number;
  /**
   * A pool's ready-list pop with its per-host connection limit. pool = [ready, open, limit,
   * id...]: `ready` ids of idle connections are stacked at pool[3..3 + ready) (the last pushed is
   * taken first, as H1Pool reuses the most recent), `open` counts connections against `limit`.
   * Returns the id of a ready connection (removed from the list); -1 when none is ready and
   * open < limit (open is incremented: the caller opens one); -2 when none is ready and the
   * limit is reached (the caller queues). RangeError: pool shorter than 3, or ready outside
   * [0, pool.length - 3].
   */
  poolTake(pool: Int32Array): number;
  /** Pushes a now-idle connection's id on the ready list. RangeError: id not an integer >= 0, or the list is full. */
  poolPut(pool: Int32Array, id: number): void;
  /**
   * Reads every string of a header block into the implementation's memory, as a native matcher
   * must before it can match anything, and returns the number of characters read (Latin-1). The
   * block is one array (HeaderMap.raw), or strings passed as arguments (one joined string, the
   * strings spread, or just :path and :authority): the addon reads an array element by element
   * (an N-API call each) and arguments all at once, and the benchmark measures both ways. The
   * twin has nothing to copy: the strings are already where a TypeScript matcher reads them; it
   * sums their lengths. TypeError (both): an array followed by more arguments.
   */
  readHeaderBlock(block: readonly string[] | string, ...more: string[]): number;
}

/**
 * Which implementation keel would use for these functions by default: the twins, because the
 * request path keeps the object-field code of src/upstream/ (faster than either over typed
 * arrays, see bench/micro/run.js), and among the two the twin is the faster (the N-API call
 * costs more than the work).
 */
export const lbPoolDefault = 'twin' as const;

function rangeError(message: string): RangeError {
  return new RangeError(message);
}

function effectiveWeight(counts: Int32Array, slots: Int32Array, weights: Float64Array, bias: number, p: number): number {
  const s = slots[p];
  if (!(s >= 0 && s < counts.length)) throw rangeError('a slot is outside counts');
  let w = weights[p];
  if (bias === 1) w = w / (counts[s] + 1);
  else if (bias !== 0) w = w / Math.pow(counts[s] + 1, bias);
  return w > 0 && w !== Infinity ? w : 1e-9;
}

export const lbPoolTwin: LbPoolImpl = {
  kind: 'twin',

  leastRequestPick(counts, slots, randoms, choiceCount) {
    if (!(choiceCount >= 1) || Math.floor(choiceCount) !== choiceCount || choiceCount > 2147483647) {
      throw rangeError('choiceCount must be an integer >= 1');
    }
    const n = slots.length;
    if (n === 0) return -1;
    if (randoms.length < choiceCount) throw rangeError('randoms has fewer than choiceCount numbers');
    let best = 0;
    let bestCount = 0;
    for (let i = 0; i < choiceCount; i++) {
      const f = Math.floor(randoms[i] * n);
      const p = !(f >= 0) ? 0 : f >= n ? n - 1 : f;
      const s = slots[p];
      if (!(s >= 0 && s < counts.length)) throw rangeError('a slot is outside counts');
      const c = counts[s];
      if (i === 0 || c < bestCount) {
        best = p;
        bestCount = c;
      }
    }
    return best;
  },

  edfPick(counts, slots, weights, deadlines, heap, bias) {
    if (!(bias >= 0) || bias === Infinity) throw rangeError('bias must be a finite number >= 0');
    const n = heap.length;
    if (n === 0) return -1;
    if (slots.length < n || weights.length < n || deadlines.length < n + 1) {
      throw rangeError('slots, weights and deadlines must cover the heap (deadlines: one more)');
    }
    const top = heap[0];
    if (!(top >= 0 && top < n)) throw rangeError('a heap entry is outside the set');
    const w = effectiveWeight(counts, slots, weights, bias, top);
    const current = deadlines[top];
    deadlines[n] = current;
    deadlines[top] = current + 1 / w;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const hl = heap[l];
      const hi = heap[i];
      if (!(hl >= 0 && hl < n)) throw rangeError('a heap entry is outside the set');
      let m = l;
      let hm = hl;
      if (r < n) {
        const hr = heap[r];
        if (!(hr >= 0 && hr < n)) throw rangeError('a heap entry is outside the set');
        if (deadlines[hr] < deadlines[hl] || (deadlines[hr] === deadlines[hl] && hr < hl)) {
          m = r;
          hm = hr;
        }
      }
      if (!(deadlines[hm] < deadlines[hi] || (deadlines[hm] === deadlines[hi] && hm < hi))) break;
      heap[m] = hi;
      heap[i] = hm;
      i = m;
    }
    return top;
  },

  poolTake(pool) {
    if (pool.length < 3) throw rangeError('pool must have room for its header (3 slots)');
    const ready = pool[0];
    if (!(ready >= 0 && ready <= pool.length - 3)) throw rangeError('pool ready count is outside the pool');
    if (ready > 0) {
      pool[0] = ready - 1;
      return pool[3 + ready - 1];
    }
    if (pool[1] < pool[2]) {
      pool[1]++;
      return -1;
    }
    return -2;
  },

  poolPut(pool, id) {
    if (!(id >= 0) || Math.floor(id) !== id || id > 2147483647) throw rangeError('id must be an integer >= 0');
    if (pool.length < 3) throw rangeError('pool must have room for its header (3 slots)');
    const ready = pool[0];
    if (!(ready >= 0 && ready < pool.length - 3)) throw rangeError('pool ready list is full');
    pool[3 + ready] = id;
    pool[0] = ready + 1;
  },

  readHeaderBlock(block, ...more) {
    if (typeof block === 'string') {
      let chars = block.length;
      for (let i = 0; i < more.length; i++) chars += more[i].length;
      return chars;
    }
    if (more.length > 0) throw new TypeError('block must be one array of strings, or strings');
    let total = 0;
    for (let i = 0; i < block.length; i++) total += block[i].length;
    return total;
  },
};

/**
 * Fills deadlines and heap for edfPick over a set of n = heap.length hosts: each host's first
 * deadline is 1 / its effective weight (as EdfLoadBalancer starts), the current time 0, and the
 * heap ordered. Not a per-request function: TypeScript only, shared by both implementations.
 */
export function edfInit(counts: Int32Array, slots: Int32Array, weights: Float64Array, deadlines: Float64Array, heap: Int32Array, bias: number): void {
  if (!(bias >= 0) || bias === Infinity) throw rangeError('bias must be a finite number >= 0');
  const n = heap.length;
  if (slots.length < n || weights.length < n || deadlines.length < n + 1) {
    throw rangeError('slots, weights and deadlines must cover the heap (deadlines: one more)');
  }
  for (let p = 0; p < n; p++) {
    deadlines[p] = 1 / effectiveWeight(counts, slots, weights, bias, p);
    heap[p] = p;
  }
  deadlines[n] = 0;
  const less = (a: number, b: number): boolean => deadlines[a] < deadlines[b] || (deadlines[a] === deadlines[b] && a < b);
  for (let start = (n >> 1) - 1; start >= 0; start--) {
    let i = start;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const m = r < n && less(heap[r], heap[l]) ? r : l;
      if (!less(heap[m], heap[i])) break;
      const t = heap[m];
      heap[m] = heap[i];
      heap[i] = t;
      i = m;
    }
  }
}
