// `--concurrency N`: N worker processes, each a whole keel (listeners, clusters, pools), sharing the
// listening sockets through node:cluster, which hands each accepted connection to a worker in turn.
// The primary only starts, watches and stops workers; it serves nothing itself. Admin and the
// status ports are served by worker 1 alone; its stat reads go through the primary to every worker
// and are summed (Envoy-style stats by name, istio_* with prom-client's AggregatorRegistry).

import cluster, { type Worker } from 'node:cluster';
import type { Logger } from '../common/logger';
import type { KeelServer } from './server';
import { mergeEnvoyStats, workerScrape, type Scrape } from '../stats/scrape';
import { workerIndex } from './lifecycle';

export interface WorkerMessage {
  readonly keel: 'ready' | 'failed';
  readonly detail?: string;
}

/** Stat-read messages between worker 1, the primary and all workers. */
type ScrapeMessage =
  | { readonly keel: 'scrape-request'; readonly id: number }
  | { readonly keel: 'scrape-collect'; readonly id: number }
  | { readonly keel: 'scrape-reply'; readonly id: number; readonly data: WorkerScrape }
  | { readonly keel: 'scrape-result'; readonly id: number; readonly parts: WorkerScrape[] };

type WorkerScrape = Awaited<ReturnType<typeof workerScrape>>;

/** How long the primary waits for every worker's stats before answering with what it has. */
const SCRAPE_TIMEOUT_MS = 2000;

/** In the primary: answers worker 1's stat reads by asking every worker. */
function relayScrapes(): void {
  const pending = new Map<string, { from: Worker; parts: WorkerScrape[]; waiting: number; timer: NodeJS.Timeout }>();
  const finish = (key: string): void => {
    const p = pending.get(key);
    if (!p) return;
    pending.delete(key);
    clearTimeout(p.timer);
    if (p.from.isConnected()) p.from.send({ keel: 'scrape-result', id: Number(key.split(':')[1]), parts: p.parts } satisfies ScrapeMessage);
  };
  cluster.on('message', (w: Worker, m: ScrapeMessage) => {
    if (m?.keel === 'scrape-request') {
      const workers = Object.values(cluster.workers ?? {}).filter((x): x is Worker => x !== undefined && x.isConnected());
      const key = `${w.id}:${m.id}`;
      pending.set(key, { from: w, parts: [], waiting: workers.length, timer: setTimeout(() => finish(key), SCRAPE_TIMEOUT_MS) });
      for (const x of workers) x.send({ keel: 'scrape-collect', id: m.id, from: w.id } as ScrapeMessage & { from: number });
    } else if (m?.keel === 'scrape-reply') {
      const from = (m as { from?: number }).from;
      const key = `${from}:${m.id}`;
      const p = pending.get(key);
      if (!p) return;
      p.parts.push(m.data);
      if (--p.waiting <= 0) finish(key);
    }
  });
}

/**
 * In every worker: answers the primary's stat collection; in worker 1, reads go across workers.
 * Returns what removes the listeners again: a 'message' listener keeps the IPC channel (and so the
 * worker) alive, so call it once the server has stopped.
 */
export function serveScrapes(server: KeelServer): () => void {
  if (!cluster.isWorker || !process.send) return () => undefined;
  const onCollect = (m: ScrapeMessage & { from?: number }): void => {
    if (m?.keel !== 'scrape-collect') return;
    void workerScrape(server).then((data) => process.send?.({ keel: 'scrape-reply', id: m.id, from: m.from, data }));
  };
  process.on('message', onCollect);
  if (workerIndex() !== 1) return () => void process.off('message', onCollect);
  let nextId = 1;
  const waiting = new Map<number, (parts: WorkerScrape[]) => void>();
  const onResult = (m: ScrapeMessage): void => {
    if (m?.keel !== 'scrape-result') return;
    waiting.get(m.id)?.(m.parts);
    waiting.delete(m.id);
  };
  process.on('message', onResult);
  server.scrape = () =>
    new Promise<Scrape>((resolve) => {
      const id = nextId++;
      waiting.set(id, (parts) => resolve({ envoy: mergeEnvoyStats(parts.map((p) => p.envoy)), prom: parts.map((p) => p.prom) }));
      process.send!({ keel: 'scrape-request', id } satisfies ScrapeMessage);
    });
  return () => {
    process.off('message', onCollect);
    process.off('message', onResult);
  };
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
    relayScrapes();
    for (let i = 1; i <= n; i++) fork(i);
  });
}

export function tellPrimary(m: WorkerMessage): void {
  if (cluster.isWorker && process.send) process.send(m);
}
