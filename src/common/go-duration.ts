// Go's duration syntax ("1h30m", "90s", "250ms", "1.5s"), which Istio's flags, environment
// variables and CRDs use, in milliseconds. One parser for every place keel reads one.

const UNIT_MS: Readonly<Record<string, number>> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Go's time.ParseDuration (unsigned), in ms; undefined when `v` is not one. */
export function parseGoDuration(v: string): number | undefined {
  if (v === '0') return 0;
  if (v === '') return undefined;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/y;
  let total = 0;
  let i = 0;
  while (i < v.length) {
    re.lastIndex = i;
    const m = re.exec(v);
    if (!m) return undefined;
    total += Number(m[1]) * UNIT_MS[m[2]];
    i = re.lastIndex;
  }
  return total;
}

/** As Istio's environment variables are read: a Go duration, or a plain number of seconds. */
export function parseGoDurationOrSeconds(v: string): number | undefined {
  const t = v.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Number(t) * 1000;
  return parseGoDuration(t);
}
