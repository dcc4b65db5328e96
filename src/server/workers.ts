// `--concurrency N`: N worker processes, each a whole keel (listeners, clusters, pools), sharing the
// listening sockets through node:cluster, which hands each accepted connection to a worker in turn.
// The primary only starts, watches and stops workers; it serves nothing itself. Admin is served by
// worker 1 alone (its counters are that worker's until stats are aggregated across workers).

import cluster from 'node:cluster';
import type { Logger } from '../common/logger';

export interface WorkerMessage {
  readonly keel: 'ready' | 'failed';
  readonly detail?: string;
}

/** In the primary: forks `n` workers, restarts one that dies unexpectedly, forwards SIGTERM/SIGINT. */
export function runPrimary(n: number, log: Logger, drainTimeMs: number): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    let ready = 0;
    let failed = false;
    const fork = (index: number): void => {
      const w = cluster.fork({ KEEL_WORKER_INDEX: String(index) });
      w.on('message', (m: WorkerMessage) => {
        if (m?.keel === 'ready' && ++ready === n) log.info(`all ${n} workers serving`);
        if (m?.keel === 'failed') {
          failed = true;
          log.error(`worker ${index} failed to start: ${m.detail ?? ''}`);
          stop('worker failure');
        }
      });
      w.on('exit', (code, signal) => {
        if (stopping || failed) {
          if (Object.keys(cluster.workers ?? {}).length === 0) resolve(failed ? 1 : 0);
          return;
        }
        log.warn(`worker ${index} exited (${signal ?? code}); starting another`);
        fork(index);
      });
    };
    const stop = (why: string): void => {
      if (stopping) return;
      stopping = true;
      log.info(`${why}: draining workers (up to ${drainTimeMs / 1000}s)`);
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
      const hard = setTimeout(() => {
        for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
      }, drainTimeMs + 2000);
      hard.unref();
      if (Object.keys(cluster.workers ?? {}).length === 0) resolve(failed ? 1 : 0);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    for (let i = 1; i <= n; i++) fork(i);
  });
}

export function isWorker(): boolean {
  return cluster.isWorker;
}

export function workerIndex(): number {
  return Number(process.env.KEEL_WORKER_INDEX ?? '0');
}

export function tellPrimary(m: WorkerMessage): void {
  if (cluster.isWorker && process.send) process.send(m);
}
