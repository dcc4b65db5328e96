// Awaiting a condition the test cannot get an event for: poll it every 10 ms until it holds, or
// fail with what was awaited once the deadline passes. Never a fixed sleep.

export async function waitUntil(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
