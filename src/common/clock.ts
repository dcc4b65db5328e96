// A coarse clock and a one-second sweep, for the timeouts that are checked, not armed: connection
// idle timeouts on both sides. Arming a Node timer per request (or refreshing one per read, as
// socket.setTimeout does) costs more than the request's routing; a timestamp store plus one sweep a
// second does the same job with Envoy's granularity for these timeouts (seconds).

let now = Date.now();
const sweepers = new Set<(now: number) => void>();
let timer: NodeJS.Timeout | undefined;
let ticker: NodeJS.Timeout | undefined;
/** coarseNow() was called since the last tick */
let used = false;

// The 100 ms ticker runs only while the clock is read: a tick that finds it unread stops it, and
// the next read restarts it with a fresh Date.now(). An idle proxy then wakes for the sweep alone
// (a sidecar idles most of its life, and every wake-up costs CPU on every pod).
function tick(): void {
  if (!used) {
    clearInterval(ticker);
    ticker = undefined;
    return;
  }
  used = false;
  now = Date.now();
}

/** Milliseconds, at most ~100 ms stale. */
export function coarseNow(): number {
  if (ticker === undefined) {
    now = Date.now();
    ticker = setInterval(tick, 100);
    ticker.unref();
  }
  used = true;
  return now;
}

/** Calls `fn` about once a second until the returned function is called. */
export function onSweep(fn: (now: number) => void): () => void {
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

/** Whether the coarse clock's ticker is running (it stops once the clock goes unread). */
export function coarseClockTicking(): boolean {
  return ticker !== undefined;
}
