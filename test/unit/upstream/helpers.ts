// Builders for upstream unit tests: cluster configs with STATIC endpoints (no sockets are opened;
// hosts only connect when a pool is used), a seeded random source and a manual clock.

import type { ClusterConfig, EndpointConfig, HealthStatus, LbPolicy, OutlierDetectionConfig } from '../../../src/config/types';
import { Cluster, type ClusterOptions } from '../../../src/upstream/cluster';
import type { Host } from '../../../src/upstream/host';

export interface Ep {
  readonly port: number;
  readonly weight?: number;
  readonly health?: HealthStatus;
  readonly priority?: number;
}

export function clusterConfig(lbPolicy: LbPolicy, eps: readonly Ep[], over: Partial<ClusterConfig> = {}): ClusterConfig {
  const byPriority = new Map<number, EndpointConfig[]>();
  for (const e of eps) {
    const p = e.priority ?? 0;
    if (!byPriority.has(p)) byPriority.set(p, []);
    byPriority.get(p)!.push({
      address: { address: '10.0.0.1', port: e.port },
      hostname: '',
      healthStatus: e.health ?? 'HEALTHY',
      loadBalancingWeight: e.weight ?? 1,
      metadata: {},
    });
  }
  return {
    name: 'c',
    type: 'STATIC',
    connectTimeoutMs: 5000,
    lbPolicy,
    endpoints: [...byPriority].map(([priority, endpoints]) => ({
      locality: { region: '', zone: '', subZone: '' },
      priority,
      loadBalancingWeight: 0,
      endpoints,
    })),
    protocol: 'HTTP1',
    http2: {} as ClusterConfig['http2'],
    idleTimeoutMs: 3_600_000,
    maxRequestsPerConnection: 0,
    maxConnectionDurationMs: 0,
    circuitBreakers: [],
    healthyPanicThreshold: 50,
    transportSocketMatches: [],
    dnsRefreshRateMs: 5000,
    dnsLookupFamily: 'AUTO',
    respectDnsTtl: false,
    perConnectionBufferLimitBytes: 1 << 20,
    metadata: {},
    ...over,
  };
}

/** Envoy's outlier_detection defaults (as decoded by bootstrap.ts), overridable. */
export function outlierConfig(over: Partial<OutlierDetectionConfig> = {}): OutlierDetectionConfig {
  return {
    consecutive5xx: 5,
    consecutiveGatewayFailure: 5,
    consecutiveLocalOriginFailure: 5,
    intervalMs: 10_000,
    baseEjectionTimeMs: 30_000,
    maxEjectionTimeMs: 300_000,
    maxEjectionPercent: 10,
    enforcingConsecutive5xx: 100,
    enforcingConsecutiveGatewayFailure: 0,
    enforcingConsecutiveLocalOriginFailure: 100,
    enforcingSuccessRate: 100,
    successRateMinimumHosts: 5,
    successRateRequestVolume: 100,
    successRateStdevFactor: 1900,
    failurePercentageThreshold: 85,
    enforcingFailurePercentage: 0,
    failurePercentageMinimumHosts: 5,
    failurePercentageRequestVolume: 50,
    splitExternalLocalOriginErrors: false,
    ...over,
  };
}

export function makeCluster(lbPolicy: LbPolicy, eps: readonly Ep[], over: Partial<ClusterConfig> = {}, opts: ClusterOptions = {}): Cluster {
  return new Cluster(clusterConfig(lbPolicy, eps, over), { outlierTimer: false, ...opts });
}

export function ports(n: number, start = 8001): Ep[] {
  return Array.from({ length: n }, (_, i) => ({ port: start + i }));
}

/** Pick `n` times and count picks per host port. */
export function tally(pick: () => Host | undefined, n: number): Map<number, number> {
  const out = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const h = pick();
    const k = h === undefined ? -1 : h.port;
    out.set(k, (out.get(k) ?? 0) + 1);
  }
  return out;
}

export class ManualClock {
  t = 1_000_000;
  readonly now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}
