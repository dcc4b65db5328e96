// Istio durations (`1s`, `0.5s`, `100ms`, `1m30s`, `3m`: Go's syntax, which Istio's CRDs accept) to
// milliseconds, and milliseconds back to the protobuf JSON form Envoy config uses (`1.5s`).
// Pure functions; no I/O.

import { parseGoDuration } from '../common/go-duration';

/** Milliseconds, or an error message. */
export function parseIstioDuration(v: unknown): number | string {
  const ms = typeof v === 'string' ? parseGoDuration(v.trim()) : undefined;
  return ms ?? `expected a duration such as "1s" or "500ms", got ${JSON.stringify(v)}`;
}

/** 1500 -> "1.5s"; 0 -> "0s". */
export function envoyDuration(ms: number): string {
  const nanos = Math.round(ms * 1e6);
  const seconds = Math.floor(nanos / 1e9);
  const frac = nanos % 1e9;
  if (frac === 0) return `${seconds}s`;
  return `${seconds}.${String(frac).padStart(9, '0').replace(/0+$/, '')}s`;
}
