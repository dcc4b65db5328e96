// One upstream endpoint of a cluster: its address, metadata, health (the load assignment's status
// and the active health checker's verdict), and its connection pools (created on first use, one per
// protocol).

import type * as net from 'node:net';
import * as tls from 'node:tls';
import type { EndpointConfig, HealthStatus } from '../config/types';
import type { Cluster } from './cluster';
import { H1Pool } from './h1-pool';
import { H2Pool } from './h2-pool';
import type { ConnPool } from './types';
import type { UpstreamTls } from '../security/tls-context';

let hostSeq = 0;

interface TlsSessionEntry {
  readonly options: object;
  readonly session: Buffer;
}

export class Host {
  /** creation order across all hosts (slow start tells first-set hosts from later ones by it) */
  readonly seq = ++hostSeq;
  private h1?: H1Pool;
  private h2?: H2Pool;
  activeRequests = 0;
  health: HealthStatus;
  /** the active health checker says this host fails (set until its first check passes) */
  activeHcFailed = false;
  /** when the host joined the cluster (ms), for slow start */
  readonly addedAt = Date.now();
  readonly weight: number;
  /** Its transport socket, chosen once by the cluster (null = plaintext; undefined = not chosen yet). */
  transport: UpstreamTls | null | undefined = undefined;
  /** The last TLS session with this host per protocol, and the options it was negotiated with (resumption). */
  private tlsSessions: { h1?: TlsSessionEntry; h2?: TlsSessionEntry } = {};

  /**
   * A TLS connection to this host that resumes the host's last session of the same protocol, as
   * Envoy does upstream, while the options it was made with (secrets) are still the current ones.
   * `h2` offers ALPN h2 only.
   */
  connectTls(opts: net.NetConnectOpts, tlsOpts: tls.ConnectionOptions, protocol: 'h1' | 'h2'): tls.TLSSocket {
    const last = this.tlsSessions[protocol];
    const session = last !== undefined && last.options === tlsOpts ? last.session : undefined;
    const socket = tls.connect({ ...opts, ...tlsOpts, ...(protocol === 'h2' ? { ALPNProtocols: ['h2'] } : {}), ...(session ? { session } : {}) });
    socket.on('session', (sess: Buffer) => (this.tlsSessions[protocol] = { options: tlsOpts, session: sess }));
    return socket;
  }

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
    return (this.health === 'HEALTHY' || this.health === 'UNKNOWN') && !this.activeHcFailed;
  }

  /** DEGRADED in the load assignment and not failing active health checks. */
  get degraded(): boolean {
    return this.health === 'DEGRADED' && !this.activeHcFailed;
  }

  /** for admin: failing active health checks */
  get failedActiveHealthCheck(): boolean {
    return this.activeHcFailed;
  }

  /** for admin: ejected by outlier detection */
  get ejected(): boolean {
    return this.cluster.outlier?.isEjected(this) ?? false;
  }

  /** for admin: open upstream connections of both pools */
  get activeConnections(): number {
    return (this.h1?.activeConnections ?? 0) + (this.h2?.activeConnections ?? 0);
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
