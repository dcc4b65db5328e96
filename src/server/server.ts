// The composition root: turns a validated Bootstrap into running objects (cluster manager,
// listeners, admin) and owns their lifecycle: start, graceful drain on SIGTERM, stop.

import type { Bootstrap, ClusterConfig, ListenerConfig, LocalityEndpointsConfig, RouteTableConfig } from '../config/types';
import type { Listener } from '../listener/listener';
import { checkOriginalDstSupport } from '../listener/original-dst';
import { DynamicConfig } from './dynamic';
import { ClusterManager } from '../upstream/cluster-manager';
import { AdminServer } from '../admin/admin';
import { Logger } from '../common/logger';
import type { Registry } from 'prom-client';
import { StatStore } from '../stats/store';
import { Telemetry } from '../observability/telemetry';
import { UpstreamEvents } from '../observability/events';
import { SERVER_STATE } from '../stats/envoy-stats';
import { localScrape, type Scrape } from '../stats/scrape';
import type { SecretManager } from '../security/secret-manager';

export interface ServerOptions {
  readonly log?: Logger;
  /** How long in-flight requests may take to finish after SIGTERM (Envoy's --drain-time-s). */
  readonly drainTimeMs?: number;
  /** Serve the bootstrap's admin address (default true; only one worker does). */
  readonly admin?: boolean;
  /** How long a removed or replaced listener's connections may go on (Envoy's drain time, default 600 s). */
  readonly listenerDrainTimeMs?: number;
  /** SDS: the agent's secret manager (`default`, `ROOTCA`, file-cert:..., pushed secrets) for TLS contexts. */
  readonly secrets?: SecretManager;
}

/** What the xDS client exposes to the server (src/xds/). */
export interface XdsStatus {
  /** CDS and LDS each applied at least once. */
  initialized(): boolean;
  snapshot(): XdsSnapshot;
  stop(): void;
}

export interface XdsSnapshot {
  readonly connected: boolean;
  readonly mode: 'delta' | 'sotw' | 'file';
  /** per type URL: last accepted version (SotW) or system version, and the last NACK if any */
  readonly types: Readonly<Record<string, { readonly version: string; readonly lastNack?: { readonly version: string; readonly error: string; readonly at: string } }>>;
  /** per resource ("listener/virtualInbound"): what was accepted but skipped or ignored (e.g. Istio filters keel does not implement) */
  readonly warnings?: Readonly<Record<string, readonly string[]>>;
}

/** The config in use, for /config_dump. */
export interface ConfigSnapshot {
  readonly bootstrap: Bootstrap;
  readonly current: Bootstrap;
  readonly startedAt: string;
  readonly listeners: readonly { readonly name: string; readonly state: 'active' | 'warming'; readonly config: ListenerConfig; readonly version: string; readonly lastUpdated: string }[];
  readonly routeConfigs: readonly { readonly name: string; readonly config: RouteTableConfig; readonly version: string; readonly lastUpdated: string }[];
  readonly clusters: readonly { readonly name: string; readonly state: 'active' | 'warming'; readonly config: ClusterConfig; readonly version: string; readonly lastUpdated: string }[];
  readonly endpoints: readonly { readonly name: string; readonly endpoints: readonly LocalityEndpointsConfig[]; readonly version: string; readonly lastUpdated: string }[];
  /** names and metadata only, never key material */
  readonly secrets: readonly { readonly name: string; readonly version: string; readonly lastUpdated: string }[];
  readonly xds?: XdsSnapshot;
}

export class KeelServer {
  readonly clusters: ClusterManager;
  /** Active listeners; xDS and applyBootstrap change this list in place. */
  readonly listeners: Listener[] = [];
  /** Run-time config changes (xDS, applyBootstrap): warming, draining, RDS route tables. */
  readonly dynamic: DynamicConfig;
  /** The config in use (the initial bootstrap, or the last one applyBootstrap took). */
  private current: Bootstrap;
  private readonly startedAt = new Date();
  private lastApplied = new Date();
  /** Set by the xDS client (src/xds/): what it knows for /config_dump and readiness. */
  xds?: XdsStatus;
  /** The secret manager TLS contexts read (SDS over ADS puts secrets there). */
  get secretManager(): SecretManager | undefined {
    return this.opts.secrets;
  }
  /** Extra ADS stream metadata read at every (re)connect (the agent: the rotating bearer token). */
  xdsMetadata?: () => Readonly<Record<string, string>>;
  readonly admin?: AdminServer;
  readonly log: Logger;
  /** Envoy-style named stats (server.*, cluster_manager.*, listener_manager.*) */
  readonly stats = new StatStore();
  private registry: Registry | undefined;
  /**
   * prom-client registry with the istio_* metrics (served at /stats/prometheus with the Envoy
   * stats). Made on first use: a proxy without Istio metrics never loads prom-client (~4 MB RSS).
   */
  get metrics(): Registry {
    return (this.registry ??= new (require('prom-client') as typeof import('prom-client')).Registry());
  }
  /** whether anything registered metrics yet (a scrape skips the registry otherwise) */
  get hasMetrics(): boolean {
    return this.registry !== undefined;
  }
  /** metrics, access logs and tracing hooks installed on each listener's connection managers */
  readonly telemetry: Telemetry;
  /** logs outlier ejections and circuit breaker changes (upstream logger) */
  private readonly events: UpstreamEvents;
  /** Envoy's server.state: LIVE, DRAINING, PRE_INITIALIZING */
  state: number = SERVER_STATE.PRE_INITIALIZING;
  /** /healthcheck/fail: readiness reports failure while the proxy keeps serving */
  healthCheckFailed = false;
  /** keel's version, for /server_info */
  version = '0.0.0';
  /** the command line as Envoy's CommandLineOptions JSON, for /server_info (set by the CLI) */
  commandLine?: Record<string, unknown>;
  /** called after /quitquitquit has stopped the server (the CLI exits the process) */
  onQuit?: () => void;
  /** Reads every stat; with --concurrency the admin worker's reads all workers (src/server/workers.ts). */
  scrape: () => Promise<Scrape> = () => localScrape(this);
  private started = false;
  private stopping: Promise<void> | undefined;
  ready = false;

  constructor(readonly bootstrap: Bootstrap, private readonly opts: ServerOptions = {}) {
    this.log = opts.log ?? new Logger('info');
    this.current = bootstrap;
    this.clusters = new ClusterManager(bootstrap.clusters, opts.secrets ? { secrets: opts.secrets } : {});
    this.telemetry = new Telemetry(() => this.metrics, bootstrap.node, this.clusters, this.log);
    this.events = new UpstreamEvents(this.clusters, this.log.child('upstream'));
    if (bootstrap.dynamicResources) {
      // xDS counters dashboards and readiness checks read (bumped by src/xds/apply.ts)
      for (const n of ['cluster_manager.cds.update_success', 'cluster_manager.cds.update_rejected', 'listener_manager.lds.update_success', 'listener_manager.lds.update_rejected']) this.stats.declare(n);
    }
    // Every listener is built; only bind_to_port ones listen. The others serve connections that a
    // use_original_dst listener hands them by original destination (istiod's 0.0.0.0_9080 etc.).
    this.dynamic = new DynamicConfig({
      clusters: this.clusters,
      runtime: bootstrap.runtime,
      log: this.log,
      listeners: this.listeners,
      drainTimeMs: opts.listenerDrainTimeMs ?? 600_000,
      observe: this.telemetry,
    });
    for (const l of bootstrap.listeners) this.dynamic.setListener(l, 'static', false);
    this.dynamic.onChange = () => this.updateReady();
    if (bootstrap.admin && opts.admin !== false) this.admin = new AdminServer(bootstrap.admin, this);
  }

  /** Binds every listener once the clusters know their hosts; resolves with the bound ports by listener name. */
  async start(): Promise<Map<string, number>> {
    if (this.started) throw new Error('already started');
    this.started = true;
    checkOriginalDstSupport(this.bootstrap.listeners);
    await this.clusters.initialized();
    const ports = await this.dynamic.start();
    if (this.admin) await this.admin.listen();
    // dynamic_resources: CDS/LDS from ADS or files; ready once both have been applied
    // (src/xds and its protos load only when the bootstrap has dynamic_resources)
    if (this.bootstrap.dynamicResources) this.xds ??= (require('../xds') as typeof import('../xds')).startXds(this);
    this.updateReady();
    return ports;
  }

  /**
   * Ready (Envoy's LIVE): started, and with dynamic resources CDS and LDS each applied at least
   * once, nothing warming, and every listener bound. Stays ready afterwards (until stop).
   */
  updateReady(): void {
    if (this.stopping || this.state === SERVER_STATE.DRAINING) return;
    const xdsDone = this.xds === undefined || this.xds.initialized();
    // Like Envoy's init manager: once initialized, later warming (a new cluster waiting for its
    // endpoints, a listener for its routes) does not make the server unready again.
    this.ready = this.ready || (this.started && xdsDone && this.dynamic.serving);
    this.state = this.ready ? SERVER_STATE.LIVE : SERVER_STATE.PRE_INITIALIZING;
  }

  /**
   * Replaces listeners, clusters and routes with those of a new static config, with xDS update
   * semantics: unchanged ones stay, changed and removed listeners drain, a changed cluster lets its
   * in-flight requests finish on the old hosts. The admin, node and runtime of the first config stay.
   */
  applyBootstrap(b: Bootstrap): void {
    const clusters = new Set(b.clusters.map((c) => c.name));
    for (const c of [...this.clusters.all()]) if (!clusters.has(c.name)) this.dynamic.removeCluster(c.name);
    for (const c of b.clusters) this.dynamic.setCluster(c, 'static');
    const listeners = new Set(b.listeners.map((l) => l.name));
    for (const name of [...this.dynamic.listenerByName.keys()]) if (!listeners.has(name)) this.dynamic.removeListener(name);
    for (const l of b.listeners) this.dynamic.setListener(l, 'static');
    this.current = b;
    this.lastApplied = new Date();
    this.updateReady();
  }

  /**
   * The config in use, for /config_dump: the bootstrap, the active and warming listeners, route
   * tables and clusters with their version and last-updated time, endpoints, and what the xDS client
   * knows (versions per type, last NACK). Secrets appear by name only.
   */
  configSnapshot(): ConfigSnapshot {
    const meta = (kind: string, name: string): { version: string; lastUpdated: string } => {
      const m = this.dynamic.meta.get(kind)?.get(name);
      return { version: m?.version ?? 'static', lastUpdated: (m?.lastUpdated ?? this.lastApplied).toISOString() };
    };
    const d = this.dynamic;
    return {
      bootstrap: this.bootstrap,
      current: this.current,
      startedAt: this.startedAt.toISOString(),
      listeners: [
        ...[...d.listenerByName.values()].map((l) => ({ name: l.name, state: 'active' as const, config: l.config, ...meta('listener', l.name) })),
        ...[...d.warmingListeners.values()].map((w) => ({ name: w.listener.name, state: 'warming' as const, config: w.listener.config, ...meta('listener', w.listener.name) })),
      ],
      routeConfigs: [...d.routes.values()].filter((r) => r.config !== undefined).map((r) => ({ name: r.name, config: r.config!, ...meta('route', r.name) })),
      clusters: [
        ...[...this.clusters.all()].map((c) => ({ name: c.name, state: 'active' as const, config: c.config, ...meta('cluster', c.name) })),
        ...[...d.warmingClusters.entries()].map(([name, w]) => ({ name, state: 'warming' as const, config: w.config, ...meta('cluster', name) })),
      ],
      endpoints: [...d.endpoints.entries()].map(([name, endpoints]) => ({ name, endpoints, ...meta('endpoint', name) })),
      secrets: (this.opts.secrets?.describe() ?? []).map((x) => ({ name: x.name, version: String(x.version), lastUpdated: new Date(x.updatedAt).toISOString() })),
      ...(this.xds ? { xds: this.xds.snapshot() } : {}),
    };
  }

  /** A secret's public part (certificate chain, trusted CA), for /config_dump; never the key. */
  publicSecret(name: string): { certChain?: string; trustedCa?: string } | undefined {
    const sec = this.opts.secrets?.get(name);
    if (!sec) return undefined;
    return sec.kind === 'tls_certificate' ? { certChain: sec.certChain } : { trustedCa: sec.trustedCa };
  }

  /**
   * Envoy's /drain_listeners: `inboundOnly` drains only listeners with traffic_direction INBOUND
   * (virtualInbound); `graceful` keeps them accepting while every connection is told to close after
   * its current request (HTTP/1 `connection: close`, HTTP/2 GOAWAY), otherwise they stop accepting.
   */
  drainListeners(opts: { inboundOnly?: boolean; graceful?: boolean } = {}): number {
    let n = 0;
    for (const l of this.listeners) {
      if (opts.inboundOnly && l.config.trafficDirection !== 'INBOUND' && l.name !== 'virtualInbound') continue;
      if (opts.graceful) l.drainConnections();
      else l.stopAccepting();
      n++;
    }
    this.ready = false;
    this.state = SERVER_STATE.DRAINING;
    this.stats.inc('listener_manager.listener_stopped', opts.graceful ? 0 : n);
    return n;
  }

  /** Downstream connections open on every listener (for EXIT_ON_ZERO_ACTIVE_CONNECTIONS). */
  activeDownstreamConnections(): number {
    let n = 0;
    for (const l of this.listeners) n += l.activeConnections;
    return n;
  }

  /**
   * Istio's termination sequence (SIGTERM, POST /drain on the status port): drain inbound listeners
   * gracefully (all listeners when none is marked inbound, as for a standalone proxy), wait the drain
   * duration (or, with `exitOnZeroActive`, until no downstream connection is left, but at least
   * `minDrainMs`), then stop.
   */
  terminate(opts: { drainMs: number; exitOnZeroActive?: boolean; minDrainMs?: number }): Promise<void> {
    this.terminating ??= (async () => {
      const sidecar = this.listeners.some((l) => l.config.trafficDirection === 'INBOUND' || l.name === 'virtualInbound');
      if (!sidecar) {
        // A standalone proxy: stop accepting, let requests in flight finish (up to the drain time).
        this.telemetry.flush();
        return this.stop(opts.drainMs);
      }
      this.drainListeners({ inboundOnly: true, graceful: true });
      const started = Date.now();
      const deadline = started + opts.drainMs;
      if (opts.exitOnZeroActive) {
        const min = Math.min(opts.minDrainMs ?? 0, opts.drainMs);
        let closedIdle = false;
        while (Date.now() < deadline) {
          if (Date.now() - started >= min) {
            // After the minimum drain: stop accepting inbound and close idle connections, then wait for the rest.
            if (!closedIdle) {
              closedIdle = true;
              this.drainListeners({ inboundOnly: true, graceful: false });
            }
            if (this.activeDownstreamConnections() === 0) break;
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      } else if (opts.drainMs > 0) await new Promise((r) => setTimeout(r, opts.drainMs));
      this.telemetry.flush();
      await this.stop(Math.max(0, deadline - Date.now()));
    })();
    return this.terminating;
  }
  private terminating: Promise<void> | undefined;

  /**
   * Graceful stop: stop accepting, let in-flight requests finish for up to drainTimeMs, then close
   * what is left and release upstream connections.
   */
  stop(drainTimeMs = this.opts.drainTimeMs ?? 5000): Promise<void> {
    this.stopping ??= (async () => {
      this.ready = false;
      this.state = SERVER_STATE.DRAINING;
      for (const l of this.listeners) l.stopAccepting();
      const idle = Promise.all(this.listeners.map((l) => l.waitIdle()));
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((r) => (timer = setTimeout(r, drainTimeMs)));
      await Promise.race([idle, timeout]);
      if (timer) clearTimeout(timer);
      for (const l of this.listeners) l.closeConnections();
      this.dynamic.stop();
      this.events.stop();
      this.telemetry.stop();
      this.xds?.stop();
      this.clusters.destroy();
      await this.admin?.close();
    })();
    return this.stopping;
  }
}
