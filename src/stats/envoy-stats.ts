// Envoy-style statistics read from the running objects (clusters, listeners, connection managers,
// the server's StatStore) at scrape time: `/stats` text and JSON, and the Prometheus form with the
// tags Istio's bootstrap extracts (cluster_name, http_conn_manager_prefix, listener_address,
// response_code_class). Reading is done only when an admin or Prometheus request asks; nothing here
// runs on the request path.

import { DOWNSTREAM_H2_STATS } from '../http/h2-connection';
import { mirrorStatEntries } from '../router/mirror';
import type { KeelServer } from '../server/server';

export interface EnvoyStat {
  /** Envoy's dotted name, e.g. cluster.backend.upstream_rq_2xx */
  readonly name: string;
  readonly value: number;
  readonly kind: 'counter' | 'gauge';
  /** Prometheus metric name, e.g. envoy_cluster_upstream_rq */
  readonly prom: string;
  /** extracted tags, e.g. [['response_code_class', '2xx'], ['cluster_name', 'backend']] */
  readonly labels: ReadonlyArray<readonly [string, string]>;
}

/** Envoy's server.state values. */
export const SERVER_STATE = { LIVE: 0, DRAINING: 1, PRE_INITIALIZING: 2, INITIALIZING: 3 } as const;

class Collector {
  readonly out: EnvoyStat[] = [];
  add(kind: 'counter' | 'gauge', scope: 'cluster' | 'http' | 'listener' | '', tagName: string, tagValue: string, stat: string, value: number): void {
    const name = scope === '' ? stat : `${scope}.${tagValue}.${stat}`;
    const labels: Array<readonly [string, string]> = [];
    let base = stat;
    const m = /^(.*_rq)_(\dxx)$/.exec(stat);
    if (m) {
      base = m[1];
      labels.push(['response_code_class', m[2]]);
    }
    if (scope !== '') labels.push([tagName, tagValue]);
    const prom = 'envoy_' + (scope === '' ? '' : scope + '_') + base.replace(/[^a-zA-Z0-9_]/g, '_');
    this.out.push({ name, value, kind, prom, labels });
  }
}

/** The listener stat scope Envoy uses: its address (`0.0.0.0_15006`), or the pipe path. */
export function listenerStatName(address: { address: string; port: number; pipe?: string }): string {
  return address.pipe !== undefined ? address.pipe : `${address.address}_${address.port}`;
}

/** Every Envoy-style stat keel keeps, read now. */
export function collectEnvoyStats(keel: KeelServer): EnvoyStat[] {
  const c = new Collector();
  const mem = process.memoryUsage();
  c.add('gauge', '', '', '', 'server.state', keel.state);
  c.add('gauge', '', '', '', 'server.live', keel.ready ? 1 : 0);
  c.add('gauge', '', '', '', 'server.uptime', Math.floor(process.uptime()));
  c.add('gauge', '', '', '', 'server.memory_allocated', mem.heapUsed + mem.external);
  c.add('gauge', '', '', '', 'server.memory_heap_size', mem.heapTotal);
  c.add('gauge', '', '', '', 'server.total_connections', keel.activeDownstreamConnections());
  for (const e of keel.stats.entries()) c.add(e.kind, '', '', '', e.name, e.value);
  for (const cl of keel.clusters.all()) {
    const s = cl.stats;
    const n = cl.name;
    const counter = (stat: string, v: number): void => c.add('counter', 'cluster', 'cluster_name', n, stat, v);
    const gauge = (stat: string, v: number): void => c.add('gauge', 'cluster', 'cluster_name', n, stat, v);
    counter('upstream_rq_total', s.upstreamRqTotal);
    counter('upstream_rq_2xx', s.upstreamRq2xx);
    counter('upstream_rq_3xx', s.upstreamRq3xx);
    counter('upstream_rq_4xx', s.upstreamRq4xx);
    counter('upstream_rq_5xx', s.upstreamRq5xx);
    counter('upstream_cx_total', s.upstreamCxTotal);
    counter('upstream_cx_connect_fail', s.upstreamCxConnectFail);
    counter('upstream_rq_pending_overflow', s.upstreamRqPendingOverflow);
    counter('upstream_rq_timeout', s.upstreamRqTimeout);
    counter('upstream_rq_per_try_timeout', s.upstreamRqPerTryTimeout);
    counter('upstream_rq_retry', s.upstreamRqRetry);
    counter('upstream_rq_retry_success', s.upstreamRqRetrySuccess);
    counter('upstream_rq_retry_overflow', s.upstreamRqRetryOverflow);
    counter('upstream_rq_retry_limit_exceeded', s.upstreamRqRetryLimitExceeded);
    gauge('upstream_cx_active', cl.resources.connections.count);
    gauge('upstream_rq_active', cl.resources.requests.count);
    gauge('upstream_rq_pending_active', cl.resources.pendingRequests.count);
    gauge('membership_total', cl.hosts.length);
    gauge('membership_healthy', cl.hosts.filter((h) => h.healthy).length);
    gauge('circuit_breakers.default.cx_open', cl.resources.connections.canCreate() ? 0 : 1);
    gauge('circuit_breakers.default.rq_pending_open', cl.resources.pendingRequests.canCreate() ? 0 : 1);
    gauge('circuit_breakers.default.rq_open', cl.resources.requests.canCreate() ? 0 : 1);
    gauge('circuit_breakers.default.rq_retry_open', cl.resources.retries.canCreate() ? 0 : 1);
    counter('upstream_rq_per_try_idle_timeout', s.upstreamRqPerTryIdleTimeout);
    if (cl.http2) for (const [k, v] of Object.entries(cl.http2Stats)) counter(`http2.${k}`, v);
    if (cl.config.circuitBreakers.find((t) => t.priority === 'DEFAULT')?.trackRemaining) {
      gauge('circuit_breakers.default.remaining_cx', cl.resources.connections.remaining);
      gauge('circuit_breakers.default.remaining_pending', cl.resources.pendingRequests.remaining);
      gauge('circuit_breakers.default.remaining_rq', cl.resources.requests.remaining);
      gauge('circuit_breakers.default.remaining_retries', cl.resources.retries.remaining);
    }
    if (cl.healthChecker) for (const [k, v] of Object.entries(cl.healthChecker.stats)) counter(`health_check.${k}`, v as number);
    if (cl.outlier) {
      for (const [k, v] of Object.entries(cl.outlier.stats)) {
        c.add(k === 'ejections_active' ? 'gauge' : 'counter', 'cluster', 'cluster_name', n, `outlier_detection.${k}`, v as number);
      }
    }
  }
  const seenPrefix = new Map<string, number[]>();
  const filterStats = new Map<string, number>();
  for (const l of keel.listeners) {
    const ln = listenerStatName(l.config.address);
    c.add('gauge', 'listener', 'listener_address', ln, 'downstream_cx_active', l.activeConnections);
    c.add('counter', 'listener', 'listener_address', ln, 'no_filter_chain_match', l.noFilterChainMatch);
    for (const [k, v] of Object.entries(l.sslStats())) c.add('counter', 'listener', 'listener_address', ln, `ssl.${k}`, v);
    // network filters' own counters (tcp.<prefix>.*, <stat_prefix>rbac.*), summed across listeners
    for (const [k, v] of Object.entries(l.networkFilterStats())) filterStats.set(k, (filterStats.get(k) ?? 0) + v);
    for (const hcm of l.connectionManagers) {
      // HTTP filters' own counters (http.<prefix>.rbac.allowed ...), summed across chains sharing a prefix
      for (const f of hcm.filters) for (const [k, v] of Object.entries(f.stats?.() ?? {})) filterStats.set(k, (filterStats.get(k) ?? 0) + v);
      const s = hcm.stats;
      // Several chains may share a stat prefix: Envoy sums them into one scope.
      const vals = [
        s.downstreamRqTotal, s.downstreamRq1xx, s.downstreamRq2xx, s.downstreamRq3xx, s.downstreamRq4xx, s.downstreamRq5xx,
        s.downstreamRqActive, s.downstreamCxActive, s.downstreamCxTotal, s.noRoute, s.noCluster, s.rqRedirect, s.rqDirectResponse,
      ];
      const prev = seenPrefix.get(hcm.config.statPrefix);
      if (prev) for (let i = 0; i < vals.length; i++) prev[i] += vals[i];
      else seenPrefix.set(hcm.config.statPrefix, vals);
    }
  }
  const names: Array<[string, 'counter' | 'gauge']> = [
    ['downstream_rq_total', 'counter'], ['downstream_rq_1xx', 'counter'], ['downstream_rq_2xx', 'counter'], ['downstream_rq_3xx', 'counter'],
    ['downstream_rq_4xx', 'counter'], ['downstream_rq_5xx', 'counter'], ['downstream_rq_active', 'gauge'], ['downstream_cx_active', 'gauge'],
    ['downstream_cx_total', 'counter'], ['no_route', 'counter'], ['no_cluster', 'counter'], ['rq_redirect', 'counter'], ['rq_direct_response', 'counter'],
  ];
  for (const [k, v] of filterStats) c.add('counter', '', '', '', k, v);
  // the downstream HTTP/2 codec's counters (Envoy keeps them in the listener scope: http2.*)
  if (keel.listeners.some((l) => l.connectionManagers.some((h) => h.config.codecType !== 'HTTP1'))) {
    for (const [k, v] of Object.entries(DOWNSTREAM_H2_STATS)) c.add('counter', '', '', '', `http2.${k}`, v);
  }
  // request mirroring: shadow outcomes per mirror cluster (src/router/mirror.ts)
  for (const [k, v] of Object.entries(mirrorStatEntries())) c.add('counter', '', '', '', k, v);
  for (const [prefix, vals] of seenPrefix) {
    for (let i = 0; i < names.length; i++) c.add(names[i][1], 'http', 'http_conn_manager_prefix', prefix, names[i][0], vals[i]);
  }
  return c.out;
}

export interface StatsQuery {
  /** ?filter= : an RE2-style regular expression the name must match (searched, not anchored) */
  readonly filter?: RegExp;
  /** ?usedonly : counters that have moved and gauges that are set */
  readonly usedOnly?: boolean;
}

export function selectStats(stats: readonly EnvoyStat[], q: StatsQuery): EnvoyStat[] {
  return stats.filter((s) => (!q.filter || q.filter.test(s.name)) && (!q.usedOnly || s.kind === 'gauge' || s.value !== 0));
}

/** Envoy's /stats text: `name: value`, sorted by name. */
export function statsText(stats: readonly EnvoyStat[]): string {
  return stats.map((s) => `${s.name}: ${s.value}`).sort().join('\n') + (stats.length > 0 ? '\n' : '');
}

/** Envoy's /stats?format=json. */
export function statsJson(stats: readonly EnvoyStat[]): string {
  const sorted = [...stats].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return JSON.stringify({ stats: sorted.map((s) => ({ name: s.name, value: s.value })) }, null, 2);
}

export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

/** Prometheus text exposition (version 0.0.4) of the Envoy-style stats, one TYPE line per family. */
export function statsPrometheus(stats: readonly EnvoyStat[]): string {
  const families = new Map<string, EnvoyStat[]>();
  for (const s of stats) {
    let f = families.get(s.prom);
    if (!f) families.set(s.prom, (f = []));
    f.push(s);
  }
  let out = '';
  for (const name of [...families.keys()].sort()) {
    const f = families.get(name)!;
    out += `# TYPE ${name} ${f[0].kind}\n`;
    for (const s of f) {
      const labels = s.labels.length === 0 ? '' : '{' + s.labels.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',') + '}';
      out += `${name}${labels} ${s.value}\n`;
    }
  }
  return out;
}
