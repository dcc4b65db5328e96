// A cluster at run time: its hosts (static, or resolved by DNS and refreshed), the load balancer
// that picks one per request, its circuit-breaker resources and counters. Built once per config;
// `pickHost` is on the request path and allocates nothing.

import * as dns from 'node:dns';
import * as net from 'node:net';
import type * as tls from 'node:tls';
import type { ClusterConfig, EndpointConfig, UpstreamTlsConfig } from '../config/types';
import { Host } from './host';
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
  };
}

/** What happened to one upstream attempt (see Cluster.recordOutcome). */
export type AttemptOutcome =
  | { readonly kind: 'status'; readonly status: number }
  | { readonly kind: 'local'; readonly reason: 'connect_failure' | 'timeout' | 'reset' | 'protocol_error' };

export class Cluster {
  readonly name: string;
  hosts: Host[] = [];
  private healthyHosts: Host[] = [];
  private rr = 0;
  /** smooth weighted round robin state, when weights differ */
  private weighted = false;
  private current: number[] = [];
  readonly resources: ResourceManager;
  readonly stats: ClusterStats = newStats();
  readonly http2: boolean;
  private dnsTimer: NodeJS.Timeout | undefined;
  private readonly tlsOptions?: tls.ConnectionOptions;
  private destroyed = false;
  /** Resolves once the first host set is known (DNS clusters), for readiness. */
  readonly initialized: Promise<void>;

  constructor(readonly config: ClusterConfig) {
    this.name = config.name;
    this.resources = new ResourceManager(config.circuitBreakers.find((t) => t.priority === 'DEFAULT'));
    this.http2 = config.protocol === 'HTTP2';
    if (config.tls) this.tlsOptions = upstreamTlsOptions(config.tls, this.http2);
    if (config.type === 'STRICT_DNS' || config.type === 'LOGICAL_DNS') {
      this.initialized = this.resolve();
    } else {
      this.setHosts(endpointsOf(config).map((e) => new Host(this, e.address.address, e.address.port, e.hostname, e)));
      this.initialized = Promise.resolve();
    }
  }

  tlsOptionsFor(_host: Host): tls.ConnectionOptions | undefined {
    return this.tlsOptions;
  }

  private setHosts(hosts: Host[]): void {
    const old = this.hosts;
    this.hosts = hosts;
    this.healthyHosts = hosts.filter((h) => h.healthy);
    this.weighted = hosts.some((h) => h.weight !== hosts[0].weight);
    this.current = hosts.map(() => 0);
    for (const h of old) if (!hosts.includes(h)) h.drain();
  }

  /**
   * Round robin over healthy hosts; in panic (healthy below healthy_panic_threshold) over all
   * hosts, as Envoy does. undefined when the cluster has no hosts.
   */
  pickHost(): Host | undefined {
    const all = this.hosts;
    if (all.length === 0) return undefined;
    let set = this.healthyHosts;
    const threshold = this.config.healthyPanicThreshold;
    if (set.length === 0 || (threshold > 0 && (set.length * 100) / all.length < threshold)) set = all;
    if (set.length === 1) return set[0];
    if (!this.weighted) {
      const h = set[this.rr % set.length];
      this.rr = (this.rr + 1) >>> 0;
      return h;
    }
    // smooth weighted round robin
    let best = -1;
    let total = 0;
    const cur = this.current;
    for (let i = 0; i < all.length; i++) {
      const h = all[i];
      if (set !== all && !h.healthy) continue;
      cur[i] += h.weight;
      total += h.weight;
      if (best < 0 || cur[i] > cur[best]) best = i;
    }
    cur[best] -= total;
    return all[best];
  }

  private async resolve(): Promise<void> {
    if (this.destroyed) return;
    const cfg = this.config;
    const family = cfg.dnsLookupFamily === 'V4_ONLY' ? 4 : cfg.dnsLookupFamily === 'V6_ONLY' ? 6 : 0;
    const order: dns.LookupAllOptions['order'] = cfg.dnsLookupFamily === 'V4_PREFERRED' ? 'ipv4first' : 'verbatim';
    const next: Host[] = [];
    const eps = endpointsOf(cfg);
    const targets = cfg.type === 'LOGICAL_DNS' ? eps.slice(0, 1) : eps;
    for (const e of targets) {
      const name = e.address.address;
      if (net.isIP(name)) {
        next.push(this.reuse(name, e.address.port, name, e));
        continue;
      }
      try {
        const addrs = await dns.promises.lookup(name, { all: true, family, order });
        const list = cfg.type === 'LOGICAL_DNS' || cfg.dnsLookupFamily === 'AUTO' ? pickFamily(addrs) : addrs;
        for (const a of cfg.type === 'LOGICAL_DNS' ? list.slice(0, 1) : list) next.push(this.reuse(a.address, e.address.port, name, e));
      } catch {
        // keep the previous hosts for this name (Envoy keeps the last good resolution)
        for (const h of this.hosts) if (h.hostname === name) next.push(h);
      }
    }
    if (this.destroyed) return;
    this.setHosts(next);
    const rate = cfg.dnsRefreshRateMs > 0 ? cfg.dnsRefreshRateMs : 5000;
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
    void host;
    void outcome;
  }

  /** Stop using this cluster: idle connections close, busy ones finish their requests. */
  drain(): void {
    this.destroyed = true;
    if (this.dnsTimer) clearTimeout(this.dnsTimer);
    for (const h of this.hosts) h.drain();
  }

  destroy(): void {
    this.drain();
    for (const h of this.hosts) h.destroy();
  }
}

function pickFamily(addrs: dns.LookupAddress[]): dns.LookupAddress[] {
  // AUTO: IPv6 if any, else IPv4 (Envoy's AUTO prefers v6); keep one family per name
  const v6 = addrs.filter((a) => a.family === 6);
  return v6.length > 0 ? v6 : addrs;
}

function endpointsOf(cfg: ClusterConfig): EndpointConfig[] {
  const out: EndpointConfig[] = [];
  // Priority 0 only for now (failover across priorities is part of the resilience work).
  for (const l of cfg.endpoints) if (l.priority === 0) out.push(...l.endpoints);
  return out;
}

function upstreamTlsOptions(t: UpstreamTlsConfig, http2: boolean): tls.ConnectionOptions {
  const o: tls.ConnectionOptions = {
    ALPNProtocols: t.alpnProtocols.length > 0 ? [...t.alpnProtocols] : http2 ? ['h2'] : ['http/1.1'],
    rejectUnauthorized: t.validation?.trustedCa !== undefined,
  };
  if (t.sni) o.servername = t.sni;
  if (t.validation?.trustedCa) o.ca = t.validation.trustedCa;
  if (t.certificates.length > 0) {
    o.cert = t.certificates[0].certChain;
    o.key = t.certificates[0].privateKey;
  }
  if (t.validation?.trustedCa && t.validation.matchSubjectAltNames.length === 0 && !t.sni) {
    // No name to check against: Envoy only verifies the chain unless SANs are configured.
    o.checkServerIdentity = () => undefined;
  } else if (t.validation?.trustedCa) {
    o.checkServerIdentity = () => undefined; // SAN matching is done by the mTLS work; chain verified here
  }
  return o;
}
