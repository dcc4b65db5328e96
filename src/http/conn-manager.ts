// The HTTP connection manager's shared, compiled state for one filter chain: its config, its route
// table, the cluster manager it routes into, and the cheap per-request helpers they need (request
// ids, dates). Built once per config; streams hold a reference and never rebuild any of it.

import { randomUUID } from 'node:crypto';
import * as net from 'node:net';
import type { HttpConnectionManagerConfig, RuntimeValues } from '../config/types';
import { RouteTable, Runtime } from '../router/route-table';
import { onSweep } from '../common/clock';
import { IntrusiveList } from '../common/intrusive-list';
import type { ActiveStream } from './stream';
import type { ClusterManager } from '../upstream/cluster-manager';
import type { HttpFilterFactory } from './filter';
import type { HeaderMap } from './headers';

/** Counters Envoy keeps per HCM stat prefix (http.<prefix>.*). */
export interface HcmStats {
  downstreamRqTotal: number;
  downstreamRq1xx: number;
  downstreamRq2xx: number;
  downstreamRq3xx: number;
  downstreamRq4xx: number;
  downstreamRq5xx: number;
  downstreamRqActive: number;
  downstreamCxActive: number;
  downstreamCxTotal: number;
  noRoute: number;
  noCluster: number;
  rqRedirect: number;
  rqDirectResponse: number;
}

/** Sees a stream's request headers once routed (before they go upstream) and its upstream response headers. */
export interface StreamHeaderObserver {
  onRequestHeaders(s: ActiveStream, headers: HeaderMap): void;
  onResponseHeaders(s: ActiveStream, headers: HeaderMap): void;
}

/** Source of the route table in use; RDS swaps it without rebuilding the connection manager. */
export interface RouteTableProvider {
  current(): RouteTable | undefined;
}

/** An inline route_config's table; replaced whole when a listener update changes only its routes. */
export class StaticRouteProvider implements RouteTableProvider {
  constructor(private table: RouteTable) {}
  current(): RouteTable {
    return this.table;
  }
  /** Later requests match `table`; requests in flight keep the route they matched. */
  replace(table: RouteTable): void {
    this.table = table;
  }
}

export class ConnectionManager {
  readonly stats: HcmStats = {
    downstreamRqTotal: 0,
    downstreamRq1xx: 0,
    downstreamRq2xx: 0,
    downstreamRq3xx: 0,
    downstreamRq4xx: 0,
    downstreamRq5xx: 0,
    downstreamRqActive: 0,
    downstreamCxActive: 0,
    downstreamCxTotal: 0,
    noRoute: 0,
    noCluster: 0,
    rqRedirect: 0,
    rqDirectResponse: 0,
  };
  readonly maxHeaderBytes: number;
  readonly upgradeTypes: ReadonlySet<string>;
  readonly runtime: Runtime;
  private readonly internalCidrs: net.BlockList | undefined;
  /** streams in flight, for the stream_idle_timeout sweep (a list through the streams, not a Set: see IntrusiveList) */
  private readonly active = new IntrusiveList<ActiveStream>();
  /** Called with each stream when it is over (access logs, metrics), in order. */
  readonly completionHooks: Array<(s: ActiveStream) => void> = [];
  /** Header-time observers (Istio metadata exchange, tracing), installed once per HCM; empty costs nothing. */
  readonly headerObservers: StreamHeaderObserver[] = [];

  constructor(
    readonly config: HttpConnectionManagerConfig,
    readonly routes: RouteTableProvider,
    readonly clusters: ClusterManager,
    runtime: RuntimeValues = {},
    /** the HTTP filters before the router, built from config.httpFilters (src/filters/) */
    readonly filters: readonly HttpFilterFactory[] = [],
  ) {
    this.maxHeaderBytes = config.maxRequestHeadersKb * 1024;
    this.upgradeTypes = new Set(config.upgradeConfigs.filter((u) => u.enabled).map((u) => u.upgradeType.toLowerCase()));
    this.runtime = new Runtime(runtime);
    if (config.streamIdleTimeoutMs > 0) onSweep(this.sweepIdle);
    if (config.internalAddressCidrs.length > 0) {
      const bl = new net.BlockList();
      for (const c of config.internalAddressCidrs) {
        const [addr, len] = c.split('/');
        bl.addSubnet(addr, Number(len), net.isIPv6(addr) ? 'ipv6' : 'ipv4');
      }
      this.internalCidrs = bl;
    }
  }

  track(s: ActiveStream): void {
    this.active.add(s);
  }

  untrack(s: ActiveStream): void {
    this.active.remove(s);
  }

  /** stream_idle_timeout, checked once a second against each stream's coarse last-activity time. */
  private readonly sweepIdle = (now: number): void => {
    const idle = this.config.streamIdleTimeoutMs;
    this.active.forEach((s) => {
      if (now - s.lastActivity >= idle) s.onStreamIdle();
    });
  };

  newRequestId(): string {
    return randomUUID();
  }

  /** Envoy's default: RFC 1918, loopback, and their IPv6 counterparts are internal. */
  isInternalAddress(addr: string): boolean {
    if (this.internalCidrs) return this.internalCidrs.check(addr, net.isIPv6(addr) ? 'ipv6' : 'ipv4');
    return isDefaultInternal(addr);
  }
}

export function isDefaultInternal(addr: string): boolean {
  if (addr.startsWith('::ffff:')) addr = addr.slice(7);
  if (addr === '::1') return true;
  if (addr.startsWith('fd') || addr.startsWith('fc')) return true; // unique local
  if (addr.startsWith('127.') || addr.startsWith('10.') || addr.startsWith('192.168.')) return true;
  if (addr.startsWith('172.')) {
    const second = Number(addr.split('.')[1]);
    return second >= 16 && second <= 31;
  }
  return false;
}

let cachedDate = '';
let cachedDateAt = 0;
/** IMF-fixdate, recomputed at most once a second. */
export function httpDate(): string {
  const now = Date.now();
  if (now - cachedDateAt >= 1000 || cachedDate === '') {
    cachedDateAt = now - (now % 1000);
    cachedDate = new Date(cachedDateAt).toUTCString();
  }
  return cachedDate;
}
