// A coarse clock and a one-second sweep, for the timeouts that are checked, not armed: connection
// idle timeouts on both sides. Arming a Node timer per request (or refreshing one per read, as
// socket.setTimeout does) costs more than the request's routing; a timestamp store plus one sweep a
// second does the same job with Envoy's granularity for these timeouts (seconds).

let now = Date.now();
const sweepers = new Set<(now: number) => void>();
let timer: NodeJS.Timeout | undefined;
let ticker: NodeJS.Timeout | undefined;

function ensureTicking(): void {
  if (ticker !== undefined) return;
  ticker = setInterval(() => {
    now = Date.now();
  }, 100);
  ticker.unref();
}

/** Milliseconds, at most ~100 ms stale. */
export function coarseNow(): number {
  ensureTicking();
  return now;
}

/** Calls `fn` about once a second until the returned function is called. */
export function onSweep(fn: (now: number) => void): () => void {
  ensureTicking();
  sweepers.add(fn);
  if (timer === undefined) {
    timer = setInterval(() => {
      now = Date.now();
      for (const s of sweepers) s(now);
    }, 1000);
    timer.unref();
  }
  return () => {
    sweepers.delete(fn);
    if (sweepers.size === 0 && timer !== undefined) {
      clearInterval(timer);
      timer = undefined;
    }
  };
}
