// A cluster at run time: its hosts (static, or resolved by DNS and refreshed) grouped by priority,
// the load balancers that pick one per request (load-balancer*.ts), outlier detection
// (outlier-detection.ts), its circuit-breaker resources and counters. Built once per config;
// `pickHost` is on the request path and allocates nothing (except building a panic/degraded
// balancer the first time one is needed after a host-set change).

import { H2CodecStats, newH2CodecStats } from '../http/h2-session';
import * as dns from 'node:dns';
import * as net from 'node:net';
import type * as tls from 'node:tls';
import type { ClusterConfig, EndpointConfig, LbPolicy, LocalityEndpointsConfig } from '../config/types';
import { transportSocketMatches, UpstreamTls } from '../security/tls-context';
import type { SecretSource } from '../security/secret-manager';
import { Host } from './host';
import { createLoadBalancer, type LbContext, type LbOptions, type LoadBalancer, type RandomSource } from './load-balancer';
import { hashKey as hashKeyOf } from './load-balancer-hash';
import { HealthChecker } from './health-checker';
import { OutlierDetector } from './outlier-detection';
import { ResourceManager } from './resource-manager';

export interface ClusterStats {
  upstreamRqTotal: number;
  upstreamRq2xx: number;
  upstreamRq3xx: number;
  upstreamRq4xx: number;
  upstreamRq5xx: number;
  upstreamCxTotal: number;
  upstreamCxConnectFail: number;
  upstreamRqPendingOverflow: number;
  upstreamRqTimeout: number;
  upstreamRqPerTryTimeout: number;
  upstreamRqPerTryIdleTimeout: number;
  upstreamRqRetry: number;
  upstreamRqRetrySuccess: number;
  upstreamRqRetryOverflow: number;
  upstreamRqRetryLimitExceeded: number;
}

function newStats(): ClusterStats {
  return {
    upstreamRqTotal: 0,
    upstreamRq2xx: 0,
    upstreamRq3xx: 0,
    upstreamRq4xx: 0,
    upstreamRq5xx: 0,
    upstreamCxTotal: 0,
    upstreamCxConnectFail: 0,
    upstreamRqPendingOverflow: 0,
    upstreamRqTimeout: 0,
    upstreamRqPerTryTimeout: 0,
    upstreamRqPerTryIdleTimeout: 0,
    upstreamRqRetry: 0,
    upstreamRqRetrySuccess: 0,
    upstreamRqRetryOverflow: 0,
    upstreamRqRetryLimitExceeded: 0,
  };
}

/** What happened to one upstream attempt (see Cluster.recordOutcome). */
export type AttemptOutcome =
  | { readonly kind: 'status'; readonly status: number }
  | { readonly kind: 'local'; readonly reason: 'connect_failure' | 'timeout' | 'reset' | 'protocol_error' };

export interface ClusterOptions {
  /** uniform [0, 1) source for load balancing, priority choice and enforcement rolls */
  readonly random?: RandomSource;
  /** ms clock for outlier detection */
  readonly now?: () => number;
  /** false: no outlier-detection interval timer (tests call `outlier.tick()`) */
  readonly outlierTimer?: boolean;
  /** load-balancer tuning (ring sizes, choice count, ...); Envoy's defaults otherwise */
  readonly lb?: LbOptions;
  /** ORIGINAL_DST clusters: how often hosts unused since the last pass are dropped (Envoy's cleanup_interval, default 5 s). */
  readonly originalDstCleanupMs?: number;
  /** SDS: the secrets UpstreamTlsContexts name (`default`, `ROOTCA`, ...) */
  readonly secrets?: SecretSource;
}

/** Envoy's default cleanup_interval for ORIGINAL_DST clusters. */
const ORIGINAL_DST_CLEANUP_MS = 5000;

/** Envoy's default overprovisioning factor, in percent. */
const OVERPROVISIONING = 140;

type SetKind = 0 | 1 | 2; // healthy, degraded, all (panic)

/** One priority level: its hosts split by health, and a load balancer per split built on demand. */
class PriorityLevel {
  readonly hosts: Host[] = [];
  readonly healthy: Host[] = [];
  readonly degraded: Host[] = [];
  private readonly lbs: (LoadBalancer | undefined)[] = [undefined, undefined, undefined];

  constructor(
    readonly priority: number,
    private readonly policy: LbPolicy,
    private readonly ctx: LbContext,
  ) {}

  /** locality_weighted_lb_config: each host's locality (weight > 0 only), else undefined */
  localityOf: ((h: Host) => LocalityEndpointsConfig | undefined) | undefined;
  overprovisioning = OVERPROVISIONING;

  lb(kind: SetKind): LoadBalancer {
    const lb = this.lbs[kind];
    if (lb !== undefined) return lb;
    const list = kind === 0 ? this.healthy : kind === 1 ? this.degraded : this.hosts;
    return (this.lbs[kind] = this.localityOf ? this.localityWeighted(kind, list) : createLoadBalancer(this.policy, list, this.ctx));
  }

  /**
   * Envoy's locality-weighted balancing: a locality is chosen by its effective weight (its
   * load_balancing_weight × min(1, overprovisioning × its available share of hosts); all hosts count
   * in panic), then the lb_policy picks within it.
   */
  private localityWeighted(kind: SetKind, list: readonly Host[]): LoadBalancer {
    const localityOf = this.localityOf!;
    const all = new Map<LocalityEndpointsConfig, number>();
    for (const h of this.hosts) {
      const l = localityOf(h);
      if (l !== undefined) all.set(l, (all.get(l) ?? 0) + 1);
    }
    const members = new Map<LocalityEndpointsConfig, Host[]>();
    for (const h of list) {
      const l = localityOf(h);
      if (l === undefined) continue;
      let m = members.get(l);
      if (m === undefined) members.set(l, (m = []));
      m.push(h);
    }
    const lbs: LoadBalancer[] = [];
    const weights: number[] = [];
    for (const [l, hs] of members) {
      const avail = kind === 2 ? 1 : Math.min(1, ((this.overprovisioning / 100) * hs.length) / all.get(l)!);
      const w = l.loadBalancingWeight * avail;
      if (w <= 0) continue;
      lbs.push(createLoadBalancer(this.policy, hs, this.ctx));
      weights.push(w);
    }
    return lbs.length === 0 ? createLoadBalancer(this.policy, [], this.ctx) : new WeightedChoice(lbs, weights);
  }
}

/** Smooth weighted round robin over sub-balancers (localities); allocation-free picks. */
export class WeightedChoice implements LoadBalancer {
  private readonly current: Float64Array;
  private readonly total: number;
  constructor(
    private readonly lbs: readonly LoadBalancer[],
    private readonly weights: readonly number[],
  ) {
    this.current = new Float64Array(lbs.length);
    this.total = weights.reduce((a, b) => a + b, 0);
  }

  pick(hash: number | undefined): Host | undefined {
    const cur = this.current;
    let best = 0;
    for (let i = 0; i < cur.length; i++) {
      cur[i] += this.weights[i];
      if (cur[i] > cur[best]) best = i;
    }
    cur[best] -= this.total;
    return this.lbs[best].pick(hash);
  }
}

/** Where a share of the traffic goes: a level, which of its host sets, and the cumulative load. */
interface LoadSlice {
  readonly level: PriorityLevel;
  readonly kind: SetKind;
  readonly upTo: number; // cumulative percent, 1..100
}

export class Cluster {
  readonly name: string;
  hosts: Host[] = [];
  private hostPriority = new Map<Host, number>();
  /** endpoint config -> its locality (for locality-weighted balancing) */
  private readonly endpointLocality = new WeakMap<EndpointConfig, LocalityEndpointsConfig>();
  private levels: PriorityLevel[] = [];
  private slices: LoadSlice[] = [];
  private readonly random: RandomSource;
  private readonly lbContext: LbContext;
  /** Outlier detection, when the cluster configures it; its `stats` are the outlier_detection.* counters. */
  readonly outlier?: OutlierDetector;
  /** Active health checking, when the cluster configures health_checks; its `stats` are health_check.*. */
  readonly healthChecker?: HealthChecker;
  readonly resources: ResourceManager;
  readonly stats: ClusterStats = newStats();
  /** Envoy's cluster.<name>.http2.* codec counters, kept by the cluster's HTTP/2 connections */
  readonly http2Stats: H2CodecStats = newH2CodecStats();
  /** HTTP/2 upstream (explicit http2_protocol_options) */
  readonly http2: boolean;
  /** USE_DOWNSTREAM_PROTOCOL (use_downstream_protocol_config): each request's upstream protocol is its downstream one */
  readonly useDownstreamProtocol: boolean;
  private dnsTimer: NodeJS.Timeout | undefined;
  /** the cluster's transport_socket TLS (undefined = plaintext) */
  private readonly tlsDefault?: UpstreamTls;
  /** transport_socket_matches, in order: the first whose match the endpoint metadata satisfies */
  private readonly tlsMatches: readonly { readonly match: Readonly<Record<string, unknown>>; readonly tls?: UpstreamTls }[];
  private readonly hasTls: boolean;
  private destroyed = false;
  /** ORIGINAL_DST: hosts made on demand by `address:port`, and whether each was used since the last cleanup pass. */
  private readonly originalDstHosts = new Map<string, { host: Host; used: boolean }>();
  private originalDstTimer: NodeJS.Timeout | undefined;
  /** Resolves once the first host set is known (DNS clusters), for readiness. */
  readonly initialized: Promise<void>;

  constructor(
    readonly config: ClusterConfig,
    opts: ClusterOptions = {},
  ) {
    this.name = config.name;
    this.random = opts.random ?? Math.random;
    this.lbContext = {
      random: this.random,
      options: opts.lb ?? config.lbOptions ?? {},
      ...(config.slowStart !== undefined ? { slowStart: config.slowStart, slowStartAfter: Number.POSITIVE_INFINITY, ...(opts.now ? { now: opts.now } : {}) } : {}),
    };
    this.resources = new ResourceManager(config.circuitBreakers.find((t) => t.priority === 'DEFAULT'));
    this.http2 = config.protocol === 'HTTP2';
    this.useDownstreamProtocol = config.protocol === 'USE_DOWNSTREAM';
    if (config.tls) this.tlsDefault = new UpstreamTls(config.tls, opts.secrets, this.http2);
    this.tlsMatches = config.transportSocketMatches.map((m) => ({ match: m.match, ...(m.tls ? { tls: new UpstreamTls(m.tls, opts.secrets, this.http2) } : {}) }));
    this.hasTls = this.tlsDefault !== undefined || this.tlsMatches.some((m) => m.tls !== undefined);
    if (config.outlierDetection) {
      this.outlier = new OutlierDetector(config.outlierDetection, {
        random: this.random,
        ...(opts.now ? { now: opts.now } : {}),
        timer: opts.outlierTimer !== false,
        onChange: () => this.rebuild(),
      });
    }
    if (config.healthChecks !== undefined && config.healthChecks.length > 0 && config.type !== 'ORIGINAL_DST') {
      this.healthChecker = new HealthChecker(config.healthChecks[0], {
        random: this.random,
        onChange: () => this.rebuild(),
        hasTraffic: () => this.stats.upstreamRqTotal > 0,
        ...(this.hasTls ? { tls: (h: Host) => this.tlsOptionsFor(h) } : {}),
        clusterName: config.name,
      });
    }
    if (config.type === 'ORIGINAL_DST') {
      const every = opts.originalDstCleanupMs ?? ORIGINAL_DST_CLEANUP_MS;
      this.originalDstTimer = setInterval(() => this.cleanupOriginalDst(), every);
      this.originalDstTimer.unref();
    }
    this.noteLocalities(config.endpoints);
    const hc = this.healthChecker;
    if (config.type === 'STRICT_DNS' || config.type === 'LOGICAL_DNS') {
      // warming: with active health checks, until every host had its first probe (at most a timeout and a bit)
      this.initialized = hc ? this.resolve().then(() => hc.firstRound(hc.config.timeoutMs + 1000)) : this.resolve();
    } else {
      const eps = endpointsOf(config);
      this.setHosts(
        eps.map((p) => new Host(this, p.endpoint.address.address, p.endpoint.address.port, p.endpoint.hostname, p.endpoint)),
        eps.map((p) => p.priority),
      );
      this.initialized = hc ? hc.firstRound(hc.config.timeoutMs + 1000) : Promise.resolve();
    }
  }

  /** Remember which locality each endpoint config belongs to (locality-weighted balancing). */
  private noteLocalities(localities: readonly LocalityEndpointsConfig[]): void {
    if (!this.config.localityWeighted) return;
    for (const l of localities) for (const e of l.endpoints) this.endpointLocality.set(e, l);
  }

  private readonly localityOfHost = (h: Host): LocalityEndpointsConfig | undefined => {
    const l = h.endpoint === undefined ? undefined : this.endpointLocality.get(h.endpoint);
    return l !== undefined && l.loadBalancingWeight > 0 ? l : undefined;
  };

  /** Whether a request goes upstream over HTTP/2: as configured, or (USE_DOWNSTREAM) as it came in. */
  upstreamHttp2(downstreamHttp2: boolean): boolean {
    return this.useDownstreamProtocol ? downstreamHttp2 : this.http2;
  }

  /**
   * TLS options for a new connection to `host` (undefined = plaintext). The host's transport socket
   * is chosen once, by transport_socket_matches on its endpoint metadata (Istio's `tlsMode: istio`),
   * else the cluster's transport_socket; the options follow SDS rotation.
   */
  tlsOptionsFor(host: Host): tls.ConnectionOptions | undefined {
    if (!this.hasTls) return undefined;
    let t = host.transport;
    if (t === undefined) {
      const m = this.tlsMatches.find((x) => transportSocketMatches(x.match, host.metadata));
      t = host.transport = m ? (m.tls ?? null) : (this.tlsDefault ?? null);
    }
    return t === null ? undefined : t.options();
  }

  private setHosts(hosts: Host[], priorities: readonly number[]): void {
    const old = this.hosts;
    this.hosts = hosts;
    this.hostPriority = new Map(hosts.map((h, i) => [h, priorities[i] ?? 0]));
    this.outlier?.setHosts(hosts);
    this.healthChecker?.setHosts(hosts);
    // slow start applies to hosts added after the first host set
    if (this.lbContext.slowStartAfter === Number.POSITIVE_INFINITY) {
      (this.lbContext as { slowStartAfter: number }).slowStartAfter = hosts.reduce((m, h) => Math.max(m, h.seq), 0);
    }
    this.rebuild();
    for (const h of old) if (!this.hostPriority.has(h)) h.drain();
  }

  /**
   * EDS: replaces the host set in place. A host at an unchanged address with the same endpoint
   * config keeps its connections and state (its health status is updated); removed hosts drain.
   */
  updateEndpoints(localities: readonly LocalityEndpointsConfig[]): void {
    if (this.destroyed) return;
    this.noteLocalities(localities);
    const byKey = new Map<string, Host>();
    for (const h of this.hosts) byKey.set(`${h.address}|${h.port}|${h.hostname}`, h);
    const next: Host[] = [];
    const prio: number[] = [];
    for (const l of localities) {
      for (const e of l.endpoints) {
        const key = `${e.address.address}|${e.address.port}|${e.hostname}`;
        let h = byKey.get(key);
        if (h && h.weight === (e.loadBalancingWeight || 1) && JSON.stringify(h.metadata) === JSON.stringify(e.metadata)) {
          byKey.delete(key);
          h.health = e.healthStatus;
        } else h = new Host(this, e.address.address, e.address.port, e.hostname, e);
        next.push(h);
        prio.push(l.priority);
      }
    }
    this.setHosts(next, prio);
  }

  /** The priority level a host belongs to (0 when unknown). */
  priorityOf(host: Host): number {
    return this.hostPriority.get(host) ?? 0;
  }

  /**
   * Rebuild the per-priority host sets and load balancers and the priority load, after a host-set
   * change, a health change, or an outlier ejection / return. Call it after changing `host.health`.
   */
  rebuild(): void {
    const byPriority = new Map<number, PriorityLevel>();
    for (const h of this.hosts) {
      const p = this.hostPriority.get(h) ?? 0;
      let level = byPriority.get(p);
      if (level === undefined) {
        byPriority.set(p, (level = new PriorityLevel(p, this.config.lbPolicy, this.lbContext)));
        if (this.config.localityWeighted) level.localityOf = this.localityOfHost;
        if (this.config.overprovisioningFactor !== undefined) level.overprovisioning = this.config.overprovisioningFactor;
      }
      level.hosts.push(h);
      if (this.outlier?.isEjected(h)) continue;
      if (h.healthy) level.healthy.push(h);
      else if (h.degraded) level.degraded.push(h);
    }
    this.levels = [...byPriority.values()].sort((a, b) => a.priority - b.priority);
    this.slices = priorityLoad(this.levels, this.config.healthyPanicThreshold, this.config.overprovisioningFactor ?? OVERPROVISIONING);
  }

  /**
   * The host for one request attempt. Priority levels get traffic by Envoy's priority load
   * (overprovisioning factor 1.4, healthy before degraded, normalised when short); a level whose
   * available (healthy + degraded) share is below healthy_panic_threshold while the cluster as a
   * whole is short balances over all its hosts (panic). Within the level the cluster's lb_policy
   * picks. `hashKey` is the route hash_policy's value for RING_HASH / MAGLEV (ignored by the
   * others; without it they pick at random). undefined when there is no host to use.
   */
  pickHost(hashKey?: string | number): Host | undefined {
    const slices = this.slices;
    if (slices.length === 0) return undefined;
    const hash = hashKey === undefined ? undefined : hashKeyOf(hashKey);
    let slice = slices[0];
    if (slices.length > 1) {
      const roll = hash !== undefined ? hash % 100 : Math.floor(this.random() * 100);
      for (let i = 0; i < slices.length; i++) {
        if (roll < slices[i].upTo) {
          slice = slices[i];
          break;
        }
      }
    }
    return slice.level.lb(slice.kind).pick(hash);
  }

  /**
   * ORIGINAL_DST (lb_policy CLUSTER_PROVIDED): the host for a connection's original destination,
   * made on first use and kept while used; a host unused for a whole cleanup interval is dropped
   * (its idle pooled connections close). Not part of `hosts` or the priority levels: no balancing.
   */
  originalDstHost(address: string, port: number): Host | undefined {
    if (this.destroyed) return undefined;
    const ip = address.startsWith('::ffff:') && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
    const key = net.isIPv6(ip) ? `[${ip}]:${port}` : `${ip}:${port}`;
    let e = this.originalDstHosts.get(key);
    if (e === undefined) this.originalDstHosts.set(key, (e = { host: new Host(this, ip, port, '', undefined), used: true }));
    e.used = true;
    return e.host;
  }

  /** ORIGINAL_DST hosts currently known (for admin and tests). */
  get originalDstHostCount(): number {
    return this.originalDstHosts.size;
  }

  /** One cleanup pass: drop the hosts not used since the previous pass, mark the rest unused. */
  cleanupOriginalDst(): void {
    for (const [key, e] of this.originalDstHosts) {
      if (e.used) e.used = false;
      else {
        this.originalDstHosts.delete(key);
        e.host.drain();
      }
    }
  }

  private async resolve(): Promise<void> {
    if (this.destroyed) return;
    const cfg = this.config;
    const family = cfg.dnsLookupFamily === 'V4_ONLY' ? 4 : cfg.dnsLookupFamily === 'V6_ONLY' ? 6 : 0;
    const order: dns.LookupAllOptions['order'] = cfg.dnsLookupFamily === 'V4_PREFERRED' ? 'ipv4first' : 'verbatim';
    const next: Host[] = [];
    const prio: number[] = [];
    let minTtl = Number.POSITIVE_INFINITY;
    const eps = endpointsOf(cfg);
    const targets = cfg.type === 'LOGICAL_DNS' ? eps.slice(0, 1) : eps;
    for (const { endpoint: e, priority } of targets) {
      const name = e.address.address;
      if (net.isIP(name)) {
        next.push(this.reuse(name, e.address.port, name, e));
        prio.push(priority);
        continue;
      }
      try {
        let addrs: dns.LookupAddress[] | undefined;
        if (cfg.respectDnsTtl) {
          const r = await resolveWithTtl(name, cfg.dnsLookupFamily);
          if (r !== undefined) {
            addrs = r.addrs;
            minTtl = Math.min(minTtl, r.ttl);
          }
        }
        // the system resolver: /etc/hosts too, but no TTL
        addrs ??= await dns.promises.lookup(name, { all: true, family, order });
        const list = cfg.type === 'LOGICAL_DNS' || cfg.dnsLookupFamily === 'AUTO' ? pickFamily(addrs) : addrs;
        for (const a of cfg.type === 'LOGICAL_DNS' ? list.slice(0, 1) : list) {
          next.push(this.reuse(a.address, e.address.port, name, e));
          prio.push(priority);
        }
      } catch {
        // keep the previous hosts for this name (Envoy keeps the last good resolution)
        for (const h of this.hosts) {
          if (h.hostname === name) {
            next.push(h);
            prio.push(priority);
          }
        }
      }
    }
    if (this.destroyed) return;
    this.setHosts(next, prio);
    // respect_dns_ttl: the next resolution when the shortest TTL runs out (a zero TTL: the refresh rate)
    const rate = minTtl > 0 && minTtl !== Number.POSITIVE_INFINITY ? minTtl * 1000 : cfg.dnsRefreshRateMs > 0 ? cfg.dnsRefreshRateMs : 5000;
    this.dnsTimer = setTimeout(() => void this.resolve(), rate);
    this.dnsTimer.unref();
  }

  private reuse(address: string, port: number, hostname: string, e: EndpointConfig): Host {
    for (const h of this.hosts) if (h.address === address && h.port === port && h.hostname === hostname) return h;
    return new Host(this, address, port, hostname, e);
  }

  /**
   * The outcome of one upstream attempt on `host`, for outlier detection and load-balancer
   * bookkeeping: an HTTP status from the upstream, or a locally originated failure.
   */
  recordOutcome(host: Host, outcome: AttemptOutcome): void {
    this.outlier?.record(host, outcome);
  }

  /** Stop using this cluster: idle connections close, busy ones finish their requests. */
  drain(): void {
    this.destroyed = true;
    if (this.dnsTimer) clearTimeout(this.dnsTimer);
    if (this.originalDstTimer) clearInterval(this.originalDstTimer);
    this.outlier?.stop();
    this.healthChecker?.stop();
    // No more SDS updates (a replaced cluster's connections keep the options they have).
    this.tlsDefault?.close();
    for (const m of this.tlsMatches) m.tls?.close();
    for (const h of this.hosts) h.drain();
    for (const e of this.originalDstHosts.values()) e.host.drain();
  }

  destroy(): void {
    this.drain();
    for (const h of this.hosts) h.destroy();
    for (const e of this.originalDstHosts.values()) e.host.destroy();
    this.originalDstHosts.clear();
  }
}

/**
 * respect_dns_ttl: the name's addresses from DNS with the shortest TTL among them (seconds), in
 * the cluster's dns_lookup_family; undefined when DNS has no answer (a name only in /etc/hosts,
 * say), and the system resolver is asked instead.
 */
async function resolveWithTtl(name: string, lookupFamily: ClusterConfig['dnsLookupFamily']): Promise<{ addrs: dns.LookupAddress[]; ttl: number } | undefined> {
  const query = async (family: 4 | 6): Promise<{ address: string; family: number; ttl: number }[]> => {
    try {
      const rs = family === 4 ? await dns.promises.resolve4(name, { ttl: true }) : await dns.promises.resolve6(name, { ttl: true });
      return rs.map((r) => ({ address: r.address, family, ttl: r.ttl }));
    } catch {
      return [];
    }
  };
  let recs: { address: string; family: number; ttl: number }[];
  switch (lookupFamily) {
    case 'V4_ONLY':
      recs = await query(4);
      break;
    case 'V6_ONLY':
      recs = await query(6);
      break;
    case 'V4_PREFERRED':
      recs = await query(4);
      if (recs.length === 0) recs = await query(6);
      break;
    case 'ALL':
      recs = [...(await query(4)), ...(await query(6))];
      break;
    default: // AUTO: IPv6 if any, else IPv4
      recs = await query(6);
      if (recs.length === 0) recs = await query(4);
  }
  if (recs.length === 0) return undefined;
  let ttl = recs[0].ttl;
  for (const r of recs) if (r.ttl < ttl) ttl = r.ttl;
  return { addrs: recs.map((r) => ({ address: r.address, family: r.family })), ttl };
}

function pickFamily(addrs: dns.LookupAddress[]): dns.LookupAddress[] {
  // AUTO: IPv6 if any, else IPv4 (Envoy's AUTO prefers v6); keep one family per name
  const v6 = addrs.filter((a) => a.family === 6);
  return v6.length > 0 ? v6 : addrs;
}

function endpointsOf(cfg: ClusterConfig): { endpoint: EndpointConfig; priority: number }[] {
  const out: { endpoint: EndpointConfig; priority: number }[] = [];
  for (const l of cfg.endpoints) for (const endpoint of l.endpoints) out.push({ endpoint, priority: l.priority });
  return out;
}

/**
 * Envoy's priority load, from host counts (locality weights do not change a level's availability):
 * each level's healthy and degraded availability is min(100, overprovisioning (default 1.4) × share%); traffic fills levels in priority order,
 * healthy first, then degraded; when the total is short of 100 the loads are normalised, and a level
 * whose available share is below the panic threshold sends its load to all its hosts. With nothing
 * available anywhere, P0 takes everything in panic (or nothing when the threshold is 0).
 */
function priorityLoad(levels: readonly PriorityLevel[], panicThreshold: number, overprovisioning: number): LoadSlice[] {
  if (levels.length === 0) return [];
  const n = levels.length;
  const availH = levels.map((l) => Math.min(100, Math.floor((overprovisioning * l.healthy.length) / l.hosts.length)));
  const availD = levels.map((l) => Math.min(100, Math.floor((overprovisioning * l.degraded.length) / l.hosts.length)));
  let total = 0;
  for (let i = 0; i < n; i++) total += Math.min(100, availH[i] + availD[i]);
  total = Math.min(100, total);
  if (total === 0) return panicThreshold > 0 ? [{ level: levels[0], kind: 2, upTo: 100 }] : [];
  const loadH = new Array<number>(n).fill(0);
  const loadD = new Array<number>(n).fill(0);
  let left = 100;
  for (let i = 0; i < n; i++) left -= loadH[i] = Math.min(left, availH[i]);
  for (let i = 0; i < n; i++) left -= loadD[i] = Math.min(left, availD[i]);
  if (left > 0) {
    // normalise to 100, giving the rounding remainder to the first level with load
    let sum = 0;
    for (let i = 0; i < n; i++) {
      sum += loadH[i] = Math.floor((loadH[i] * 100) / (100 - left));
      sum += loadD[i] = Math.floor((loadD[i] * 100) / (100 - left));
    }
    const first = loadH.findIndex((v) => v > 0);
    if (first >= 0) loadH[first] += 100 - sum;
    else loadD[loadD.findIndex((v) => v > 0)] += 100 - sum;
  }
  const slices: LoadSlice[] = [];
  let upTo = 0;
  for (let i = 0; i < n; i++) {
    const l = levels[i];
    const panic = total < 100 && panicThreshold > 0 && ((l.healthy.length + l.degraded.length) * 100) / l.hosts.length < panicThreshold;
    if (panic) {
      if (loadH[i] + loadD[i] > 0) slices.push({ level: l, kind: 2, upTo: (upTo += loadH[i] + loadD[i]) });
      continue;
    }
    if (loadH[i] > 0) slices.push({ level: l, kind: 0, upTo: (upTo += loadH[i]) });
    if (loadD[i] > 0) slices.push({ level: l, kind: 1, upTo: (upTo += loadD[i]) });
  }
  return slices;
}
