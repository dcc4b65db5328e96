// How a running keel process is operated: the status ports (src/admin/status.ts), and termination
// the way pilot-agent does it: on SIGTERM/SIGINT (or POST /drain) drain inbound listeners
// gracefully for the drain duration, or with EXIT_ON_ZERO_ACTIVE_CONNECTIONS until no downstream
// connection is left (after MINIMUM_DRAIN_DURATION), then stop. Wiring only; the drain itself is
// KeelServer.terminate().

import { parseGoDurationOrSeconds } from '../common/go-duration';
import type { KeelServer } from './server';
import { StatusServers, statusOptionsFromEnv, type StatusOptions } from '../admin/status';

export interface LifecycleOptions {
  readonly drainMs: number;
  readonly exitOnZeroActive: boolean;
  readonly minDrainMs: number;
}

/** Istio duration strings ("5s", "1m30s", "250ms") or plain seconds. */
export const parseDurationMs = parseGoDurationOrSeconds;

/** EXIT_ON_ZERO_ACTIVE_CONNECTIONS, MINIMUM_DRAIN_DURATION (default 5s), TERMINATION_DRAIN_DURATION_SECONDS. */
export function lifecycleFromEnv(env: NodeJS.ProcessEnv, drainMsFlag: number | undefined): LifecycleOptions {
  const exitOnZeroActive = /^(1|true|yes)$/i.test(env.EXIT_ON_ZERO_ACTIVE_CONNECTIONS ?? '');
  const min = env.MINIMUM_DRAIN_DURATION !== undefined ? parseDurationMs(env.MINIMUM_DRAIN_DURATION) : undefined;
  const envDrain = env.TERMINATION_DRAIN_DURATION_SECONDS !== undefined ? parseDurationMs(env.TERMINATION_DRAIN_DURATION_SECONDS) : undefined;
  return { drainMs: drainMsFlag ?? envDrain ?? 5000, exitOnZeroActive, minDrainMs: min ?? 5000 };
}

/** `--concurrency` unset: ISTIO_CPU_LIMIT (cores, rounded up), else 1. */
export function concurrencyFromEnv(env: NodeJS.ProcessEnv): number | undefined {
  const v = env.ISTIO_CPU_LIMIT;
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? Math.ceil(n) : undefined;
}

/** Starts the status ports for `server` (merging env-provided probers and app scrape settings). */
export async function startStatus(server: KeelServer, opts: StatusOptions, env: NodeJS.ProcessEnv = process.env): Promise<StatusServers> {
  const status = new StatusServers(server, { ...statusOptionsFromEnv(env), ...opts });
  await status.listen();
  return status;
}

/**
 * Serves until SIGTERM/SIGINT (or `until` resolves), then runs the termination drain. Resolves once
 * the server has stopped.
 */
export function runUntilTerminated(server: KeelServer, life: LifecycleOptions, log: { info(m: string): void }, until?: Promise<void>): Promise<void> {
  return new Promise<void>((resolve) => {
    let done = false;
    const stop = (why: string): void => {
      if (done) return;
      done = true;
      log.info(`${why}: draining ${life.exitOnZeroActive ? 'until no connection is left, ' : ''}up to ${life.drainMs / 1000}s, then exiting`);
      void server.terminate(life).then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    server.onQuit = () => {
      done = true;
      resolve();
    };
    void until?.then(() => stop('shutdown'));
  });
}

/**
 * Whether this process is a worker forked by `--concurrency` (the primary marks its workers with
 * KEEL_WORKER_INDEX; node:cluster deletes its own NODE_UNIQUE_ID from a worker's environment).
 * Read from the environment so that a single process never loads node:cluster for it.
 */
export function isWorker(): boolean {
  return process.env.KEEL_WORKER_INDEX !== undefined;
}

/** This worker's index (1..N), 0 in a single process. */
export function workerIndex(): number {
  return Number(process.env.KEEL_WORKER_INDEX ?? '0');
}
