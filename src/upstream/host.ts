// One upstream endpoint of a cluster: its address, metadata, health, and its connection pools
// (created on first use, one per protocol).

import type { EndpointConfig, HealthStatus } from '../config/types';
import type { Cluster } from './cluster';
import { H1Pool } from './h1-pool';
import { H2Pool } from './h2-pool';
import type { ConnPool } from './types';

export class Host {
  private h1?: H1Pool;
  private h2?: H2Pool;
  activeRequests = 0;
  health: HealthStatus;
  readonly weight: number;

  constructor(
    readonly cluster: Cluster,
    readonly address: string,
    readonly port: number,
    /** DNS name the host came from (auto_host_rewrite), or '' */
    readonly hostname: string,
    readonly endpoint: EndpointConfig | undefined,
  ) {
    this.health = endpoint?.healthStatus ?? 'UNKNOWN';
    this.weight = endpoint?.loadBalancingWeight || 1;
  }

  get metadata(): Readonly<Record<string, unknown>> {
    return this.endpoint?.metadata ?? {};
  }

  get healthy(): boolean {
    return this.health === 'HEALTHY' || this.health === 'UNKNOWN';
  }

  get addressString(): string {
    return this.address.includes(':') ? `[${this.address}]:${this.port}` : `${this.address}:${this.port}`;
  }

  pool(http2: boolean): ConnPool {
    if (http2) return (this.h2 ??= new H2Pool(this));
    return (this.h1 ??= new H1Pool(this));
  }

  drain(): void {
    this.h1?.drain();
    this.h2?.drain();
  }

  destroy(): void {
    this.h1?.destroy();
    this.h2?.destroy();
  }
}
