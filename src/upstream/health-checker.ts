// Active health checking of a cluster's hosts (Envoy's HealthCheck with http_health_check or a
// connect-only tcp_health_check): each host is probed on its own timer; a host fails after
// unhealthy_threshold failed probes in a row (at once for an HTTP status outside expected_statuses
// and retriable_statuses) and recovers after healthy_threshold passing ones (a single one for a host
// not checked yet). New hosts count as failing until their first probe passes. Verdicts go to
// `host.activeHcFailed`; the cluster is told (`onChange`) so it rebuilds its load balancers.
// Never on the request path; probes use their own sockets, never the cluster's pools.

import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import type { HealthCheckConfig } from '../config/types';
import type { Host } from './host';

export interface HealthCheckStats {
  attempt: number;
  success: number;
  failure: number;
  network_failure: number;
  healthy: number;
}

export interface HealthCheckerOptions {
  readonly random?: () => number;
  /** called after any host's verdict changed */
  readonly onChange: () => void;
  /** whether the cluster has carried any request (no_traffic_interval applies until it has) */
  readonly hasTraffic: () => boolean;
  /** TLS options for probes of a TLS cluster */
  readonly tls?: (host: Host) => import('node:tls').ConnectionOptions | undefined;
  /** Host header when http_health_check.host is empty: the cluster name */
  readonly clusterName: string;
}

interface HostState {
  readonly host: Host;
  timer: NodeJS.Timeout | undefined;
  /** consecutive results of the current kind */
  successes: number;
  failures: number;
  /** no probe has completed yet */
  first: boolean;
  /** the verdict just changed (for the edge intervals) */
  edge: boolean;
  inFlight: http.ClientRequest | net.Socket | undefined;
}

type Result = 'pass' | 'fail' | 'fail_now' | 'network';

export class HealthChecker {
  readonly stats: HealthCheckStats = { attempt: 0, success: 0, failure: 0, network_failure: 0, healthy: 0 };
  private readonly states = new Map<Host, HostState>();
  private readonly random: () => number;
  private readonly agent: http.Agent | undefined;
  private stopped = false;
  private firstRoundWaiters: (() => void)[] = [];

  constructor(
    readonly config: HealthCheckConfig,
    private readonly opts: HealthCheckerOptions,
  ) {
    this.random = opts.random ?? Math.random;
    // reuse_connection (default): one kept-alive connection per host
    if (config.http && config.reuseConnection) this.agent = new (opts.tls ? https.Agent : http.Agent)({ keepAlive: true, maxSockets: 1 });
  }

  /** The cluster's host set changed: start checking new hosts (failing until checked), stop removed ones. */
  setHosts(hosts: readonly Host[]): void {
    if (this.stopped) return;
    const keep = new Set(hosts);
    for (const [h, st] of this.states) {
      if (!keep.has(h)) {
        this.cancel(st);
        this.states.delete(h);
      }
    }
    for (const h of hosts) {
      if (this.states.has(h)) continue;
      h.activeHcFailed = true;
      const st: HostState = { host: h, timer: undefined, successes: 0, failures: 0, first: true, edge: false, inFlight: undefined };
      this.states.set(h, st);
      const jitter = this.config.initialJitterMs > 0 ? Math.floor(this.random() * this.config.initialJitterMs) : 0;
      st.timer = setTimeout(() => this.probe(st), jitter);
      st.timer.unref();
    }
    this.countHealthy();
  }

  /** Resolves when every current host has had its first probe (cluster warming), or after `capMs`. */
  firstRound(capMs: number): Promise<void> {
    if (this.pendingFirst() === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, capMs);
      t.unref();
      this.firstRoundWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  stop(): void {
    this.stopped = true;
    for (const st of this.states.values()) this.cancel(st);
    this.states.clear();
    this.agent?.destroy();
    for (const w of this.firstRoundWaiters.splice(0)) w();
  }

  private pendingFirst(): number {
    let n = 0;
    for (const st of this.states.values()) if (st.first) n++;
    return n;
  }

  private cancel(st: HostState): void {
    if (st.timer !== undefined) clearTimeout(st.timer);
    st.timer = undefined;
    const f = st.inFlight;
    st.inFlight = undefined;
    f?.destroy();
  }

  private probe(st: HostState): void {
    st.timer = undefined;
    if (this.stopped || this.states.get(st.host) !== st) return;
    this.stats.attempt++;
    let done = false;
    const finish = (r: Result): void => {
      if (done) return;
      done = true;
      clearTimeout(timeout);
      st.inFlight = undefined;
      if (this.stopped || this.states.get(st.host) !== st) return;
      this.record(st, r);
      this.schedule(st);
    };
    const timeout = setTimeout(() => {
      const f = st.inFlight;
      finish('network');
      f?.destroy();
    }, this.config.timeoutMs);
    timeout.unref();
    const host = st.host;
    const port = this.config.altPort ?? host.port;
    const hc = this.config.http;
    if (hc === undefined) {
      const sock = net.connect({ host: host.address, port });
      st.inFlight = sock;
      sock.once('connect', () => {
        sock.destroy();
        finish('pass');
      });
      sock.once('error', () => finish('network'));
      return;
    }
    const headers: Record<string, string> = { host: hc.host !== '' ? hc.host : this.opts.clusterName, 'user-agent': 'Envoy/HC' };
    for (const h of hc.requestHeadersToAdd) {
      const prev = headers[h.key];
      headers[h.key] = prev !== undefined && h.appendAction === 'APPEND_IF_EXISTS_OR_ADD' ? `${prev},${h.value}` : h.value;
    }
    for (const n of hc.requestHeadersToRemove) if (n !== 'host') delete headers[n];
    if (!this.agent) headers.connection = 'close';
    const tlsOpts = this.opts.tls?.(host);
    const reqOpts: https.RequestOptions = { host: host.address, port, path: hc.path, method: hc.method, headers, agent: this.agent ?? false };
    const req = tlsOpts ? https.request({ ...reqOpts, ...(tlsOpts as https.RequestOptions) }) : http.request(reqOpts);
    st.inFlight = req;
    req.once('response', (res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      const verdict: Result = inRanges(status, hc.expectedStatuses) ? 'pass' : inRanges(status, hc.retriableStatuses) ? 'fail' : 'fail_now';
      res.once('end', () => finish(verdict));
      res.once('error', () => finish('network'));
    });
    req.once('error', () => finish('network'));
    req.end();
  }

  private record(st: HostState, r: Result): void {
    const host = st.host;
    const wasFailed = host.activeHcFailed;
    const first = st.first;
    st.first = false;
    if (r === 'pass') {
      this.stats.success++;
      st.failures = 0;
      st.successes++;
      // a host never checked before needs one pass; a failed one healthy_threshold passes in a row
      if (wasFailed && (first || st.successes >= this.config.healthyThreshold)) this.setFailed(st, false);
    } else {
      if (r === 'network') this.stats.network_failure++;
      else this.stats.failure++;
      st.successes = 0;
      st.failures++;
      if (!wasFailed && (r === 'fail_now' || st.failures >= this.config.unhealthyThreshold)) this.setFailed(st, true);
    }
    if (first && this.pendingFirst() === 0) for (const w of this.firstRoundWaiters.splice(0)) w();
  }

  private setFailed(st: HostState, failed: boolean): void {
    st.host.activeHcFailed = failed;
    st.edge = true;
    this.countHealthy();
    this.opts.onChange();
  }

  private countHealthy(): void {
    let n = 0;
    for (const st of this.states.values()) if (!st.host.activeHcFailed) n++;
    this.stats.healthy = n;
  }

  /** Envoy's interval choice: no-traffic, edge, unhealthy or the plain interval, plus jitter. */
  private schedule(st: HostState): void {
    const c = this.config;
    const failed = st.host.activeHcFailed;
    let ms: number;
    if (!this.opts.hasTraffic()) {
      ms = !failed && c.noTrafficHealthyIntervalMs !== undefined ? c.noTrafficHealthyIntervalMs : c.noTrafficIntervalMs;
    } else if (st.edge && failed && c.unhealthyEdgeIntervalMs !== undefined) ms = c.unhealthyEdgeIntervalMs;
    else if (st.edge && !failed && c.healthyEdgeIntervalMs !== undefined) ms = c.healthyEdgeIntervalMs;
    else if (failed && c.unhealthyIntervalMs !== undefined) ms = c.unhealthyIntervalMs;
    else ms = c.intervalMs;
    st.edge = false;
    let jitter = 0;
    if (c.intervalJitterPercent > 0) jitter += Math.floor(this.random() * ((ms * c.intervalJitterPercent) / 100));
    if (c.intervalJitterMs > 0) jitter += Math.floor(this.random() * c.intervalJitterMs);
    st.timer = setTimeout(() => this.probe(st), ms + jitter);
    st.timer.unref();
  }
}

function inRanges(status: number, ranges: readonly (readonly [number, number])[]): boolean {
  for (const [a, b] of ranges) if (status >= a && status < b) return true;
  return false;
}
