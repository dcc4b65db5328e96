// The pool/LB bookkeeping functions and the header-block probe (src/native/lb-pool.ts): one suite
// run against the TypeScript twins and, when the addon is built and not disabled by KEEL_NATIVE=0,
// against the addon; both must also pick exactly what the request path's object-field load
// balancers (src/upstream/load-balancer.ts) pick for the same random numbers and counts.
// Must not: depend on timing; statistical checks state their tolerance.
import t from 'tap';
import { loadNative } from '../../../src/native';
import { edfInit, lbPoolDefault, lbPoolTwin, type LbPoolImpl } from '../../../src/native/lb-pool';
import { LeastRequestLoadBalancer, WeightedLeastRequestLoadBalancer, seededRandom } from '../../../src/upstream/load-balancer';
import type { Host } from '../../../src/upstream/host';

const loaded = loadNative();
const impls: LbPoolImpl[] = [lbPoolTwin];
if (loaded.available) impls.push(loaded.lbPool);
else t.comment(`native addon not loaded (${loaded.reason}): twins only`);

const seq = (n: number): Int32Array => Int32Array.from({ length: n }, (_, i) => i);
const f64 = (...xs: number[]): Float64Array => Float64Array.from(xs);
const i32 = (...xs: number[]): Int32Array => Int32Array.from(xs);

/** Fake hosts for the object-field balancers: only `weight` and `activeRequests` are read. */
function fieldHosts(weights: number[]): Host[] {
  return weights.map((weight) => ({ weight, activeRequests: 0 }) as unknown as Host);
}

interface EdfArrays {
  counts: Int32Array;
  slots: Int32Array;
  weights: Float64Array;
  deadlines: Float64Array;
  heap: Int32Array;
  bias: number;
}

/** An EDF set over the given weights, its arrays prepared by edfInit. */
function edfSet(weights: number[], bias: number, counts: Int32Array = new Int32Array(weights.length)): EdfArrays {
  const n = weights.length;
  const s: EdfArrays = { counts, slots: seq(n), weights: Float64Array.from(weights), deadlines: new Float64Array(n + 1), heap: new Int32Array(n), bias };
  edfInit(s.counts, s.slots, s.weights, s.deadlines, s.heap, bias);
  return s;
}

function edfPicks(impl: LbPoolImpl, weights: number[], bias: number, picks: number, counts?: Int32Array): number[] {
  const s = edfSet(weights, bias, counts);
  const out: number[] = [];
  for (let i = 0; i < picks; i++) out.push(impl.edfPick(s.counts, s.slots, s.weights, s.deadlines, s.heap, s.bias));
  return out;
}

function tally(picks: number[], n: number): number[] {
  const c = new Array<number>(n).fill(0);
  for (const p of picks) c[p]++;
  return c;
}

t.equal(lbPoolDefault, 'twin', 'the request path keeps the TypeScript code (bench/micro/run.js measures why)');

for (const impl of impls) {
  t.test(`${impl.kind}: leastRequestPick`, async (t) => {
    t.equal(impl.leastRequestPick(new Int32Array(0), new Int32Array(0), new Float64Array(0), 2), -1, 'zero hosts: -1');
    t.equal(impl.leastRequestPick(i32(9), seq(1), f64(0.7, 0.2), 2), 0, 'one host');
    t.equal(impl.leastRequestPick(i32(5, 1, 3), seq(3), f64(0.0, 0.4), 2), 1, 'the fewer active requests of the two drawn');
    t.equal(impl.leastRequestPick(i32(5, 1, 3), seq(3), f64(0.0, 0.9), 2), 2, 'only drawn hosts compete');
    t.equal(impl.leastRequestPick(i32(4, 4, 4, 4), seq(4), f64(0.9, 0.1), 2), 3, 'all counts equal: the first drawn');
    t.equal(impl.leastRequestPick(i32(0, 7), seq(2), f64(0.99, 0.0), 1), 1, 'choice_count 1: the draw, whatever the counts');
    t.equal(impl.leastRequestPick(i32(3, 1), seq(2), f64(0, 0, 0, 0, 0.99), 5), 1, 'choice_count > N: draws repeat, the best drawn wins');
    t.equal(impl.leastRequestPick(i32(3, 1), seq(2), f64(0, 0, 0, 0, 0), 5), 0, 'choice_count > N, one host drawn every time');
    t.equal(impl.leastRequestPick(i32(2, 9, 0, 9, 1), i32(4, 2), f64(0.1, 0.6), 2), 1, 'counts read through slots');
    t.equal(impl.leastRequestPick(i32(0, 0, 0), seq(3), f64(1), 1), 2, 'a random number of 1 is clamped to the last host');
    t.equal(impl.leastRequestPick(i32(0, 0, 0), seq(3), f64(-0.5), 1), 0, 'a negative random number gives the first host');
    t.equal(impl.leastRequestPick(i32(0, 0, 0), seq(3), f64(NaN), 1), 0, 'NaN gives the first host');
    t.equal(impl.leastRequestPick(i32(1, 0), seq(2), f64(0.1, 0.9, 123), 2), 1, 'extra random numbers are ignored');

    for (const bad of [0, -1, 1.5, NaN, Infinity]) {
      t.throws(() => impl.leastRequestPick(i32(0, 0), seq(2), f64(0.1, 0.2), bad), RangeError, `choiceCount ${bad}`);
    }
    t.throws(() => impl.leastRequestPick(i32(0, 0), seq(2), f64(0.1), 2), RangeError, 'fewer random numbers than choices');
    t.throws(() => impl.leastRequestPick(i32(0, 0), i32(0, 2), f64(0.9), 1), RangeError, 'a slot past counts');
    t.throws(() => impl.leastRequestPick(i32(0, 0), i32(-1, 0), f64(0), 1), RangeError, 'a negative slot');
  });

  t.test(`${impl.kind}: leastRequestPick picks what LeastRequestLoadBalancer picks`, async (t) => {
    for (const [n, choiceCount] of [[2, 2], [5, 2], [8, 3], [3, 7]] as const) {
      const hosts = fieldHosts(new Array<number>(n).fill(1));
      const counts = new Int32Array(n);
      const slots = seq(n);
      const randoms = new Float64Array(choiceCount);
      const lb = new LeastRequestLoadBalancer(hosts, seededRandom(42), choiceCount);
      const ours = seededRandom(42);
      const load = seededRandom(7);
      let same = 0;
      const rounds = 2000;
      for (let i = 0; i < rounds; i++) {
        for (let h = 0; h < n; h++) counts[h] = hosts[h]!.activeRequests = Math.floor(load() * 4);
        for (let k = 0; k < choiceCount; k++) randoms[k] = ours();
        if (impl.leastRequestPick(counts, slots, randoms, choiceCount) === hosts.indexOf(lb.pick()!)) same++;
      }
      t.equal(same, rounds, `${n} hosts, choice_count ${choiceCount}: every pick the same`);
    }
  });

  t.test(`${impl.kind}: edfPick`, async (t) => {
    t.equal(impl.edfPick(new Int32Array(0), new Int32Array(0), new Float64Array(0), new Float64Array(1), new Int32Array(0), 1), -1, 'zero hosts: -1');
    t.same(edfPicks(impl, [5], 1, 3), [0, 0, 0], 'one host');
    t.same(edfPicks(impl, [1, 1, 1], 1, 6), [0, 1, 2, 0, 1, 2], 'equal weights and counts: rotation by position');
    t.same(tally(edfPicks(impl, [1, 2, 3], 1, 600), 3), [100, 200, 300], 'idle hosts: exactly in proportion to weight');
    t.same(tally(edfPicks(impl, [0, 1, 1], 1, 1000), 3), [0, 500, 500], 'weight 0 counts as 1e-9: never picked while others exist');
    t.same(edfPicks(impl, [0, 0, 0], 1, 6), [0, 1, 2, 0, 1, 2], 'all weights 0: rotation');
    // a loaded host gets less: weight 1 / (3 + 1) against weight 1 / (0 + 1)
    t.same(tally(edfPicks(impl, [1, 1], 1, 500, i32(3, 0)), 2), [100, 400], 'bias 1: weight / (active + 1)');
    t.same(tally(edfPicks(impl, [1, 1], 2, 340, i32(3, 0)), 2), [20, 320], 'bias 2: weight / (active + 1)^2');
    t.same(tally(edfPicks(impl, [1, 1], 0, 500, i32(3, 0)), 2), [250, 250], 'bias 0: the counts do not matter');
    t.same(tally(edfPicks(impl, [1, 1], 0.5, 300, i32(3, 0)), 2), [100, 200], 'bias 0.5: weight / sqrt(active + 1)');

    // counts read through slots: positions 0 and 1 look at counts[2] and counts[0]
    const s = { counts: i32(0, 99, 3), slots: i32(2, 0), weights: f64(1, 1), deadlines: new Float64Array(3), heap: new Int32Array(2) };
    edfInit(s.counts, s.slots, s.weights, s.deadlines, s.heap, 1);
    const picks: number[] = [];
    for (let i = 0; i < 500; i++) picks.push(impl.edfPick(s.counts, s.slots, s.weights, s.deadlines, s.heap, 1));
    t.same(tally(picks, 2), [100, 400], 'counts read through slots');
    t.equal(s.deadlines[2], s.deadlines[picks[499]!]! - 1 / (picks[499] === 0 ? 0.25 : 1), 'deadlines[n] holds the current time');

    const ok = edfSet([1, 2], 1);
    const call = (o: Partial<EdfArrays>): number => {
      const a = { ...ok, ...o };
      return impl.edfPick(a.counts, a.slots, a.weights, a.deadlines, a.heap, a.bias);
    };
    for (const bias of [-1, NaN, Infinity]) t.throws(() => call({ bias }), RangeError, `bias ${bias}`);
    t.throws(() => call({ deadlines: new Float64Array(2) }), RangeError, 'deadlines without the current-time slot');
    t.throws(() => call({ weights: f64(1) }), RangeError, 'weights shorter than the set');
    t.throws(() => call({ slots: i32(0) }), RangeError, 'slots shorter than the set');
    t.throws(() => call({ heap: i32(2, 0) }), RangeError, 'a heap entry outside the set (top)');
    t.throws(() => call({ heap: i32(0, 5), deadlines: f64(0, 0, 0) }), RangeError, 'a heap entry outside the set (child)');
    t.throws(() => call({ slots: i32(0, 9) , heap: i32(1, 0) }), RangeError, 'a slot past counts');
  });

  t.test(`${impl.kind}: edfPick picks what WeightedLeastRequestLoadBalancer picks`, async (t) => {
    // Biases whose powers are exact in any pow: 1, 0, 2, and 0.5 over perfect squares.
    const cases: [number, (r: () => number) => number][] = [
      [1, (r) => Math.floor(r() * 5)],
      [0, (r) => Math.floor(r() * 5)],
      [2, (r) => Math.floor(r() * 5)],
      [0.5, (r) => [0, 3, 8, 15][Math.floor(r() * 4)]!],
    ];
    for (const [bias, count] of cases) {
      const weights = [1, 2, 3, 1, 5, 0.5];
      const hosts = fieldHosts(weights);
      const counts = new Int32Array(weights.length);
      const lb = new WeightedLeastRequestLoadBalancer(hosts, Math.random, bias);
      const s = edfSet(weights, bias, counts);
      const load = seededRandom(11);
      let same = 0;
      const rounds = 3000;
      for (let i = 0; i < rounds; i++) {
        // new counts only every few picks, so the schedule state matters too
        if (i % 3 === 0) for (let h = 0; h < weights.length; h++) counts[h] = hosts[h]!.activeRequests = count(load);
        if (impl.edfPick(s.counts, s.slots, s.weights, s.deadlines, s.heap, bias) === hosts.indexOf(lb.pick()!)) same++;
      }
      t.equal(same, rounds, `bias ${bias}: every pick the same`);
    }
  });

  t.test(`${impl.kind}: poolTake / poolPut`, async (t) => {
    const pool = new Int32Array(3 + 2);
    pool[2] = 2; // per-host limit
    t.equal(impl.poolTake(pool), -1, 'nothing ready, under the limit: open one');
    t.equal(pool[1], 1, 'the new connection is counted');
    t.equal(impl.poolTake(pool), -1);
    t.equal(impl.poolTake(pool), -2, 'nothing ready, at the limit: queue');
    t.equal(pool[1], 2, 'a refused take counts nothing');
    impl.poolPut(pool, 5);
    impl.poolPut(pool, 7);
    t.equal(pool[0], 2);
    t.throws(() => impl.poolPut(pool, 9), RangeError, 'the ready list is full');
    t.equal(impl.poolTake(pool), 7, 'most recently idle first');
    t.equal(impl.poolTake(pool), 5);
    t.equal(impl.poolTake(pool), -2);
    t.same(Array.from(pool.subarray(0, 3)), [0, 2, 2], 'taking a ready connection leaves the open count alone');

    const none = i32(0, 0, 0);
    t.equal(impl.poolTake(none), -2, 'limit 0, no ready list: always queue');
    t.throws(() => impl.poolPut(none, 1), RangeError, 'no room for a ready list');
    t.throws(() => impl.poolTake(i32(0, 0)), RangeError, 'shorter than its header');
    t.throws(() => impl.poolTake(i32(3, 0, 5, 1)), RangeError, 'a ready count past the list');
    t.throws(() => impl.poolTake(i32(-1, 0, 5, 1)), RangeError, 'a negative ready count');
    for (const id of [-1, 1.5, NaN]) t.throws(() => impl.poolPut(i32(0, 0, 1, 0), id), RangeError, `id ${id}`);
  });

  t.test(`${impl.kind}: readHeaderBlock`, async (t) => {
    const raw = [':method', 'GET', ':path', '/productpage', ':authority', 'reviews:9080', 'user-agent', 'wrk'];
    t.equal(impl.readHeaderBlock(raw), raw.join('').length, 'a header block: all its characters');
    t.equal(impl.readHeaderBlock(raw.join('\n')), raw.join('\n').length, 'one string');
    t.equal(impl.readHeaderBlock([]), 0);
    t.equal(impl.readHeaderBlock(''), 0);
    t.equal(impl.readHeaderBlock(['x-name', 'caf\u00e9']), 10, 'Latin-1 characters count one each');
    const big = ['cookie', 'c'.repeat(40_000), 'x', 'y'.repeat(20_000)];
    t.equal(impl.readHeaderBlock(big), 60_007, 'a block larger than the native scratch buffer');
    t.equal(impl.readHeaderBlock(raw), raw.join('').length, 'and a normal one after it');
    t.equal(impl.readHeaderBlock(...(raw as [string, ...string[]])), raw.join('').length, 'strings as arguments');
    t.equal(impl.readHeaderBlock('/productpage', 'reviews:9080'), 24, ':path and :authority');
    const many = Array.from({ length: 100 }, (_, i) => `h${i}`);
    t.equal(impl.readHeaderBlock(...(many as [string, ...string[]])), many.join('').length, 'more arguments than the addon keeps on its stack');
    t.throws(() => impl.readHeaderBlock(raw, 'x'), TypeError, 'an array and more arguments');
  });

  if (impl.kind === 'native') {
    t.test('native: arguments of the wrong type are TypeErrors, never a crash', async (t) => {
      const bad = impl as unknown as Record<string, (...a: unknown[]) => unknown>;
      t.throws(() => bad['leastRequestPick']!(new Float64Array(2), seq(2), f64(0, 0), 2), TypeError);
      t.throws(() => bad['leastRequestPick']!(i32(0, 0), [0, 1], f64(0, 0), 2), TypeError);
      t.throws(() => bad['leastRequestPick']!(i32(0, 0), seq(2), [0, 0], 2), TypeError);
      t.throws(() => bad['leastRequestPick']!(i32(0, 0), seq(2), f64(0, 0)), TypeError);
      t.throws(() => bad['edfPick']!(i32(0), seq(1), i32(1), f64(0, 0), seq(1), 1), TypeError);
      t.throws(() => bad['edfPick']!(i32(0), seq(1), f64(1), f64(0, 0), seq(1), '1'), TypeError);
      t.throws(() => bad['poolTake']!(new Uint32Array(4)), TypeError);
      t.throws(() => bad['poolTake']!(), TypeError);
      t.throws(() => bad['poolPut']!(i32(0, 0, 1, 0), '1'), TypeError);
      t.throws(() => bad['readHeaderBlock']!([':path', 1]), TypeError);
      t.throws(() => bad['readHeaderBlock']!(5), TypeError);
      t.throws(() => bad['readHeaderBlock']!('a', 5), TypeError);
      t.throws(() => bad['readHeaderBlock']!(), TypeError);
    });
  }
}

if (loaded.available) {
  const native = loaded.lbPool;
  t.test('native and twin agree on random inputs', async (t) => {
    const r = seededRandom(2026);
    let lrSame = 0;
    for (let i = 0; i < 2000; i++) {
      const n = 1 + Math.floor(r() * 12);
      const k = 1 + Math.floor(r() * 4);
      const counts = Int32Array.from({ length: n + 2 }, () => Math.floor(r() * 6));
      const slots = Int32Array.from({ length: n }, () => Math.floor(r() * (n + 2)));
      const randoms = Float64Array.from({ length: k }, () => r());
      if (native.leastRequestPick(counts, slots, randoms, k) === lbPoolTwin.leastRequestPick(counts, slots, randoms, k)) lrSame++;
    }
    t.equal(lrSame, 2000, 'leastRequestPick: every answer the same');

    // Integer biases: exactly the same sequence. A non-integer bias may round pow's last bit
    // differently (V8's Math.pow vs the C library's), which can reorder two tied deadlines; the
    // pick shares must still agree to within 1 percentage point per host over 20,000 picks.
    const weights = [1, 2, 3, 0, 4, 1.5, 2.5];
    for (const bias of [1, 3]) {
      const counts = Int32Array.from(weights, () => Math.floor(r() * 7));
      t.same(edfPicks(native, weights, bias, 3000, counts.slice()), edfPicks(lbPoolTwin, weights, bias, 3000, counts.slice()), `bias ${bias}: the same sequence`);
    }
    const counts = Int32Array.from(weights, () => Math.floor(r() * 7));
    const a = tally(edfPicks(native, weights, 0.3, 20_000, counts.slice()), weights.length);
    const b = tally(edfPicks(lbPoolTwin, weights, 0.3, 20_000, counts.slice()), weights.length);
    for (let h = 0; h < weights.length; h++) t.ok(Math.abs(a[h]! - b[h]!) / 20_000 <= 0.01, `bias 0.3, host ${h}: ${a[h]} vs ${b[h]} picks`);
  });
}

t.test('KEEL_NATIVE=0: no addon functions, the twins only', async (t) => {
  const off = loadNative({ KEEL_NATIVE: '0' });
  t.equal(off.available, false);
  t.equal('lbPool' in off, false);
});
