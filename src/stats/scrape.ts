// One read of every statistic: the Envoy-style stats and the prom-client registry's text. In a
// single process it reads this process; with --concurrency the worker serving admin replaces it
// with a read across all workers (src/server/workers.ts). Renderers for Prometheus live here.

import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { KeelServer } from '../server/server';
import { collectEnvoyStats, EnvoyStat, statsPrometheus } from './envoy-stats';

export interface Scrape {
  readonly envoy: readonly EnvoyStat[];
  /** prom-client metrics as JSON (istio_*), one array per process */
  readonly prom: ReadonlyArray<MetricObjectWithValues<MetricValue<string>>[]>;
  /** this process's registry already as text (single process: no aggregation needed) */
  readonly promText?: string;
}

export async function localScrape(keel: KeelServer): Promise<Scrape> {
  return { envoy: collectEnvoyStats(keel), prom: [], promText: keel.hasMetrics ? await keel.metrics.metrics() : '' };
}

/** What a worker sends for an aggregated read. */
export async function workerScrape(keel: KeelServer): Promise<{ envoy: EnvoyStat[]; prom: MetricObjectWithValues<MetricValue<string>>[] }> {
  return { envoy: collectEnvoyStats(keel), prom: keel.hasMetrics ? ((await keel.metrics.getMetricsAsJSON()) as MetricObjectWithValues<MetricValue<string>>[]) : [] };
}

const NOT_SUMMED = new Set(['server.state', 'server.live', 'server.uptime']);

/** Sums several processes' Envoy stats by name (counters and gauges alike, as Envoy's workers share one store). */
export function mergeEnvoyStats(parts: readonly (readonly EnvoyStat[])[]): EnvoyStat[] {
  const byName = new Map<string, EnvoyStat>();
  for (const list of parts) {
    for (const s of list) {
      const prev = byName.get(s.name);
      // server state, liveness and uptime describe the one server, not a sum of workers
      if (!prev) byName.set(s.name, s);
      else if (!NOT_SUMMED.has(s.name)) byName.set(s.name, { ...prev, value: prev.value + s.value });
    }
  }
  return [...byName.values()];
}

/** The whole /stats/prometheus body: Envoy-style families, then the istio_* ones. */
export async function prometheusText(s: Scrape): Promise<string> {
  let istio = s.promText ?? '';
  if (s.prom.length > 0) istio = await (require('prom-client') as typeof import('prom-client')).AggregatorRegistry.aggregate(s.prom as MetricObjectWithValues<MetricValue<string>>[][]).metrics();
  return statsPrometheus(s.envoy) + istio;
}
