// Run-time configuration changes with Envoy's xDS semantics, for KeelServer: clusters, endpoints
// (EDS), listeners and route tables (RDS) added, updated and removed while traffic flows.
// - A changed cluster replaces the old one, which drains: in-flight requests finish on its hosts.
//   EDS updates the host set of the running cluster in place.
// - A changed listener at the same address takes over the bound socket (no refused connection);
//   removed and replaced listeners drain their connections; new ones bind.
// - RDS swaps the route table behind a RouteTableProvider: a request in flight keeps the route it
//   matched, the next one sees the new table.
// - Warming: an EDS cluster is not used until its endpoints arrive, a listener not until its route
//   tables arrive, each for at most initial_fetch_timeout.
// Decoding and validation happen before anything here is called (src/config/, src/xds/); nothing
// here parses config, and nothing here talks to a management server.

import type { ClusterConfig, ListenerConfig, LocalityEndpointsConfig, RouteTableConfig, RuntimeValues } from '../config/types';
import type { RouteTableProvider } from '../http/conn-manager';
import { Listener, sameButInlineRoutes } from '../listener/listener';
import { ListenerIndex } from '../listener/original-dst';
import { RouteTable } from '../router/route-table';
import { Cluster } from '../upstream/cluster';
import type { ClusterManager } from '../upstream/cluster-manager';
import type { Logger } from '../common/logger';

/** A route table that RDS replaces; connection managers hold the provider, streams read current(). */
export class RdsRouteProvider implements RouteTableProvider {
  private table: RouteTable | undefined;
  config: RouteTableConfig | undefined;
  constructor(readonly name: string) {}
  current(): RouteTable | undefined {
    return this.table;
  }
  set(config: RouteTableConfig | undefined): void {
    this.config = config;
    this.table = config ? new RouteTable(config) : undefined;
  }
}

/** Version and time of the last change of one resource (for /config_dump). */
export interface ResourceMeta {
  version: string;
  lastUpdated: Date;
}

export interface DynamicDeps {
  readonly clusters: ClusterManager;
  readonly runtime: RuntimeValues;
  readonly log: Logger;
  /** The server's listener list: kept in place (admin and stats iterate it). */
  readonly listeners: Listener[];
  /** How long a drained listener's connections may go on before they are closed (Envoy's drain time). */
  readonly drainTimeMs: number;
  /** Telemetry told of each listener's connection managers and TCP proxies (metrics, access logs, tracing). */
  readonly observe?: import('../listener/listener').ListenerObserver;
}

interface WarmingCluster {
  readonly config: ClusterConfig;
  readonly timer?: NodeJS.Timeout;
}

interface WarmingListener {
  readonly listener: Listener;
  readonly waiting: Set<string>;
  readonly timer?: NodeJS.Timeout;
}

export class DynamicConfig {
  /** Active listeners by name. */
  readonly listenerByName = new Map<string, Listener>();
  /** Route tables by RDS name (created when a listener refers to one; filled by RDS). */
  readonly routes = new Map<string, RdsRouteProvider>();
  /** Last ClusterLoadAssignment per EDS service name (a replaced cluster starts from it). */
  readonly endpoints = new Map<string, readonly LocalityEndpointsConfig[]>();
  readonly warmingClusters = new Map<string, WarmingCluster>();
  readonly warmingListeners = new Map<string, WarmingListener>();
  /** Per resource type ("cluster", "listener", "route", "endpoint"), per name: version and time. */
  readonly meta = new Map<string, Map<string, ResourceMeta>>();
  /** Listeners being drained after removal or replacement. */
  readonly draining = new Set<Listener>();
  private index: ListenerIndex<Listener> = new ListenerIndex<Listener>([]);
  /** EDS service name -> names of the clusters (active or warming) that take its endpoints; built on first use */
  private edsIndex: Map<string, Set<string>> | undefined;
  private started = false;
  /** Called when warming finishes or a listener starts serving (readiness may change). */
  onChange: () => void = () => undefined;
  initialFetchTimeoutMs = 15_000;

  constructor(private readonly deps: DynamicDeps) {}

  // --- listeners ------------------------------------------------------------------------------

  private build(config: ListenerConfig): Listener {
    return new Listener(config, {
      clusters: this.deps.clusters,
      runtime: this.deps.runtime,
      routeProvider: (name) => this.routeProvider(name),
      findListener: (address, port) => this.index.find(address, port),
      ...(this.deps.observe ? { observe: this.deps.observe } : {}),
      ...(this.deps.clusters.secrets ? { secrets: this.deps.clusters.secrets } : {}),
    });
  }

  routeProvider(name: string): RdsRouteProvider {
    let p = this.routes.get(name);
    if (!p) this.routes.set(name, (p = new RdsRouteProvider(name)));
    return p;
  }

  /** Route names a listener's HTTP connection managers take from RDS. */
  static rdsNames(config: ListenerConfig): string[] {
    const out = new Set<string>();
    for (const c of [...config.filterChains, ...(config.defaultFilterChain ? [config.defaultFilterChain] : [])]) {
      if (c.filter.kind === 'http_connection_manager' && c.filter.rdsName !== undefined) out.add(c.filter.rdsName);
    }
    return [...out];
  }

  /** A listener's warming limit: its RDS config sources' initial_fetch_timeout (the largest; 0 = forever), else `def`. */
  static rdsTimeout(config: ListenerConfig, def: number): number {
    let out: number | undefined;
    for (const c of [...config.filterChains, ...(config.defaultFilterChain ? [config.defaultFilterChain] : [])]) {
      if (c.filter.kind !== 'http_connection_manager' || c.filter.rdsName === undefined) continue;
      const t = c.filter.rdsInitialFetchTimeoutMs ?? def;
      out = out === undefined ? t : t === 0 || out === 0 ? 0 : Math.max(out, t);
    }
    return out ?? def;
  }

  /** Every RDS name referred to by active and warming listeners (the RDS subscription). */
  wantedRouteNames(): Set<string> {
    const out = new Set<string>();
    for (const l of this.listenerByName.values()) for (const n of DynamicConfig.rdsNames(l.config)) out.add(n);
    for (const w of this.warmingListeners.values()) for (const n of DynamicConfig.rdsNames(w.listener.config)) out.add(n);
    return out;
  }

  /** Adds or replaces a listener. Unchanged config: nothing happens. Returns false when unchanged. */
  setListener(config: ListenerConfig, version = '', warm = true): boolean {
    const active = this.listenerByName.get(config.name);
    const warming = this.warmingListeners.get(config.name);
    const same = (l: Listener | undefined): boolean => l !== undefined && JSON.stringify(l.config) === JSON.stringify(config);
    this.touch('listener', config.name, version);
    if (warming && same(warming.listener)) return false;
    if (!warming && same(active)) return false;
    if (!warming && active !== undefined && sameButInlineRoutes(active.config, config)) {
      // only inline routes changed (Istio YAML edits, a file source): swap them, drain nothing
      active.replaceInlineRoutes(config);
      this.onChange();
      return true;
    }
    if (warming) this.cancelWarming(warming);
    const listener = this.build(config);
    const waiting = new Set(warm ? DynamicConfig.rdsNames(config).filter((n) => this.routeProvider(n).config === undefined) : []);
    if (waiting.size === 0) {
      this.activate(listener);
      return true;
    }
    const timeout = DynamicConfig.rdsTimeout(config, this.initialFetchTimeoutMs);
    const timer = timeout > 0 ? setTimeout(() => this.finishWarming(config.name, 'timeout'), timeout) : undefined;
    timer?.unref();
    this.warmingListeners.set(config.name, { listener, waiting, ...(timer ? { timer } : {}) });
    return true;
  }

  private cancelWarming(w: WarmingListener): void {
    if (w.timer) clearTimeout(w.timer);
    this.warmingListeners.delete(w.listener.name);
    w.listener.stopAccepting();
  }

  private finishWarming(name: string, why: 'ready' | 'timeout'): void {
    const w = this.warmingListeners.get(name);
    if (!w) return;
    if (w.timer) clearTimeout(w.timer);
    this.warmingListeners.delete(name);
    if (why === 'timeout') this.deps.log.warn(`listener '${name}': initial fetch timeout waiting for routes ${[...w.waiting].join(', ')}`);
    this.activate(w.listener);
    this.onChange();
  }

  private activate(listener: Listener): void {
    const old = this.listenerByName.get(listener.name);
    this.listenerByName.set(listener.name, listener);
    const i = old ? this.deps.listeners.indexOf(old) : -1;
    if (i >= 0) this.deps.listeners[i] = listener;
    else this.deps.listeners.push(listener);
    this.rebuildIndex();
    if (old) {
      const a = old.config.address;
      const b = listener.config.address;
      const sameAddress = a.pipe === b.pipe && a.address === b.address && a.port === b.port && old.config.bindToPort && listener.config.bindToPort;
      if (sameAddress && this.started && old.port !== 0) listener.takeOver(old);
      this.drain(old);
    }
    if (this.started && listener.config.bindToPort && listener.port === 0) this.bind(listener);
  }

  private bind(listener: Listener): void {
    listener.listen().then(
      () => this.onChange(),
      (e: Error) => this.deps.log.error(`listener '${listener.name}': cannot bind ${fmtAddress(listener)}: ${e.message}`),
    );
  }

  /** Removes a listener: it stops accepting and drains its connections. */
  removeListener(name: string): boolean {
    const w = this.warmingListeners.get(name);
    if (w) this.cancelWarming(w);
    this.meta.get('listener')?.delete(name);
    const l = this.listenerByName.get(name);
    if (!l) return w !== undefined;
    this.listenerByName.delete(name);
    const i = this.deps.listeners.indexOf(l);
    if (i >= 0) this.deps.listeners.splice(i, 1);
    this.rebuildIndex();
    this.drain(l);
    return true;
  }

  private drain(l: Listener): void {
    this.draining.add(l);
    l.stopAccepting();
    const timer = setTimeout(() => l.closeConnections(), this.deps.drainTimeMs);
    timer.unref();
    void l.waitIdle().then(() => {
      clearTimeout(timer);
      this.draining.delete(l);
    });
  }

  private rebuildIndex(): void {
    this.index = new ListenerIndex([...this.listenerByName.values()]);
  }

  /** Binds every active bind_to_port listener (KeelServer.start); later ones bind when they become active. */
  async start(): Promise<Map<string, number>> {
    this.started = true;
    const ports = new Map<string, number>();
    for (const l of this.listenerByName.values()) if (l.config.bindToPort) ports.set(l.name, await l.listen());
    return ports;
  }

  /** Every active bind_to_port listener is bound and nothing is warming. */
  get serving(): boolean {
    if (this.warmingListeners.size > 0 || this.warmingClusters.size > 0) return false;
    for (const l of this.listenerByName.values()) if (l.config.bindToPort && l.port === 0 && l.config.address.pipe === undefined) return false;
    return true;
  }

  // --- routes ---------------------------------------------------------------------------------

  /** RDS: a route table arrived (or changed). Streams in flight keep the route they matched. */
  setRouteConfig(name: string, config: RouteTableConfig, version = ''): void {
    this.routeProvider(name).set(config);
    this.touch('route', name, version);
    for (const [lname, w] of [...this.warmingListeners]) {
      if (w.waiting.delete(name) && w.waiting.size === 0) this.finishWarming(lname, 'ready');
    }
  }

  /** RDS removal: listeners using the name answer 404 (no route) until it comes back. */
  removeRouteConfig(name: string): void {
    this.routes.get(name)?.set(undefined);
    this.meta.get('route')?.delete(name);
  }

  // --- clusters -------------------------------------------------------------------------------

  /** Every EDS service name of active and warming EDS clusters (the EDS subscription). */
  wantedEndpointNames(): Set<string> {
    return new Set(this.eds().keys());
  }

  private eds(): Map<string, Set<string>> {
    if (this.edsIndex) return this.edsIndex;
    this.edsIndex = new Map();
    for (const c of this.deps.clusters.all()) this.indexEds(c.config, true);
    for (const w of this.warmingClusters.values()) this.indexEds(w.config, true);
    return this.edsIndex;
  }

  private indexEds(config: ClusterConfig, add: boolean): void {
    const service = config.type === 'EDS' ? config.edsServiceName : undefined;
    if (service === undefined || !this.edsIndex) return;
    let names = this.edsIndex.get(service);
    if (add) {
      if (!names) this.edsIndex.set(service, (names = new Set()));
      names.add(config.name);
    } else if (names) {
      names.delete(config.name);
      if (names.size === 0) this.edsIndex.delete(service);
    }
  }

  /** Drops the index entry of whatever config `name` had (active or warming). */
  private unindex(name: string): void {
    const old = this.warmingClusters.get(name)?.config ?? this.deps.clusters.get(name)?.config;
    if (old) this.indexEds(old, false);
  }

  clusterNames(): Set<string> {
    const out = new Set<string>();
    for (const c of this.deps.clusters.all()) out.add(c.name);
    for (const n of this.warmingClusters.keys()) out.add(n);
    return out;
  }

  /** CDS: adds or replaces a cluster. An EDS cluster warms until its endpoints arrive. Returns false when unchanged. */
  setCluster(config: ClusterConfig, version = ''): boolean {
    this.touch('cluster', config.name, version);
    const warming = this.warmingClusters.get(config.name);
    const active = this.deps.clusters.get(config.name);
    const same = (c: ClusterConfig | undefined): boolean => c !== undefined && JSON.stringify(c) === JSON.stringify(config);
    if (warming && same(warming.config)) return false;
    if (!warming && same(active?.config)) return false;
    if (warming?.timer) clearTimeout(warming.timer);
    this.eds();
    this.unindex(config.name);
    this.indexEds(config, true);
    this.warmingClusters.delete(config.name);
    const service = config.edsServiceName;
    if (config.type !== 'EDS' || service === undefined || this.endpoints.has(service)) {
      this.activateCluster(config);
      return true;
    }
    // the cluster's own eds_config.initial_fetch_timeout, else the CDS/LDS one
    const timeout = config.edsInitialFetchTimeoutMs ?? this.initialFetchTimeoutMs;
    const timer = timeout > 0 ? setTimeout(() => this.finishClusterWarming(config.name, 'timeout'), timeout) : undefined;
    timer?.unref();
    this.warmingClusters.set(config.name, { config, ...(timer ? { timer } : {}) });
    return true;
  }

  private finishClusterWarming(name: string, why: 'ready' | 'timeout'): void {
    const w = this.warmingClusters.get(name);
    if (!w) return;
    if (w.timer) clearTimeout(w.timer);
    this.warmingClusters.delete(name);
    if (why === 'timeout') this.deps.log.warn(`cluster '${name}': initial fetch timeout waiting for endpoints`);
    this.activateCluster(w.config);
    this.onChange();
  }

  private activateCluster(config: ClusterConfig): void {
    const cluster = new Cluster(config, this.deps.clusters.secrets ? { secrets: this.deps.clusters.secrets } : {});
    const eps = config.edsServiceName !== undefined ? this.endpoints.get(config.edsServiceName) : undefined;
    if (eps) cluster.updateEndpoints(eps);
    this.deps.clusters.set(cluster);
  }

  /** CDS removal. */
  removeCluster(name: string): boolean {
    this.eds();
    this.unindex(name);
    const w = this.warmingClusters.get(name);
    if (w?.timer) clearTimeout(w.timer);
    this.warmingClusters.delete(name);
    this.meta.get('cluster')?.delete(name);
    return this.deps.clusters.remove(name) || w !== undefined;
  }

  /** EDS: endpoints for a service name; running clusters update their host set in place. */
  setEndpoints(service: string, endpoints: readonly LocalityEndpointsConfig[], version = ''): void {
    this.endpoints.set(service, endpoints);
    this.touch('endpoint', service, version);
    for (const name of [...(this.eds().get(service) ?? [])]) {
      if (this.warmingClusters.get(name)?.config.edsServiceName === service) this.finishClusterWarming(name, 'ready');
      else {
        const c = this.deps.clusters.get(name);
        if (c && c.config.type === 'EDS' && c.config.edsServiceName === service) c.updateEndpoints(endpoints);
      }
    }
  }

  /** EDS removal: the clusters keep no hosts. */
  removeEndpoints(service: string): void {
    this.endpoints.delete(service);
    this.meta.get('endpoint')?.delete(service);
    for (const name of this.eds().get(service) ?? []) {
      const c = this.deps.clusters.get(name);
      if (c && c.config.type === 'EDS' && c.config.edsServiceName === service) c.updateEndpoints([]);
    }
  }

  private touch(kind: string, name: string, version: string): void {
    let m = this.meta.get(kind);
    if (!m) this.meta.set(kind, (m = new Map()));
    m.set(name, { version, lastUpdated: new Date() });
  }

  /** Stops everything: warming timers, drains. */
  stop(): void {
    for (const w of this.warmingClusters.values()) if (w.timer) clearTimeout(w.timer);
    for (const w of this.warmingListeners.values()) this.cancelWarming(w);
    this.warmingClusters.clear();
    for (const l of this.draining) l.closeConnections();
  }
}

function fmtAddress(l: Listener): string {
  const a = l.config.address;
  return a.pipe ?? `${a.address}:${a.port}`;
}
