// Istio durations (`1s`, `0.5s`, `100ms`, `1m30s`, `3m`: Go's syntax, which Istio's CRDs accept) to
// milliseconds, and milliseconds back to the protobuf JSON form Envoy config uses (`1.5s`).
// Pure functions; no I/O.

const UNIT_MS: Readonly<Record<string, number>> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, 'µs': 0.001, ns: 0.000001 };

/** Milliseconds, or an error message. */
export function parseIstioDuration(v: unknown): number | string {
  if (typeof v !== 'string' || v.trim() === '') return `expected a duration such as "1s" or "500ms", got ${JSON.stringify(v)}`;
  const s = v.trim();
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)/gy;
  let total = 0;
  let at = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * UNIT_MS[m[2]];
    at = re.lastIndex;
  }
  if (at !== s.length || at === 0) return `expected a duration such as "1s" or "500ms", got ${JSON.stringify(v)}`;
  return total;
}

/** 1500 -> "1.5s"; 0 -> "0s". */
export function envoyDuration(ms: number): string {
  const nanos = Math.round(ms * 1e6);
  const seconds = Math.floor(nanos / 1e9);
  const frac = nanos % 1e9;
  if (frac === 0) return `${seconds}s`;
  return `${seconds}.${String(frac).padStart(9, '0').replace(/0+$/, '')}s`;
}
