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
  /** pools whose TLS connections offer an istio.alpn override, by protocol and ALPN list */
  private alpnPools?: Map<string, H1Pool | H2Pool>;
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
   * ALPN: `alpn` when given (istio.alpn's override), else h2 only for `h2`, else the cluster's list.
   */
  connectTls(opts: net.NetConnectOpts, tlsOpts: tls.ConnectionOptions, protocol: 'h1' | 'h2', alpn?: readonly string[]): tls.TLSSocket {
    const last = this.tlsSessions[protocol];
    const session = last !== undefined && last.options === tlsOpts ? last.session : undefined;
    const protocols = alpn !== undefined ? { ALPNProtocols: [...alpn] } : protocol === 'h2' ? { ALPNProtocols: ['h2'] } : {};
    const socket = tls.connect({ ...opts, ...tlsOpts, ...protocols, ...(session ? { session } : {}) });
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

  /** for admin: open upstream connections of every pool */
  get activeConnections(): number {
    let n = (this.h1?.activeConnections ?? 0) + (this.h2?.activeConnections ?? 0);
    if (this.alpnPools !== undefined) for (const p of this.alpnPools.values()) n += p.activeConnections;
    return n;
  }

  get addressString(): string {
    return this.address.includes(':') ? `[${this.address}]:${this.port}` : `${this.address}:${this.port}`;
  }

  /**
   * The pool for a request: by protocol and, over TLS, by the ALPN list its connections offer when
   * istio.alpn overrides the cluster's (Envoy keys its pools by transport socket options the same way).
   */
  pool(http2: boolean, alpn?: readonly string[]): ConnPool {
    if (alpn !== undefined && this.cluster.tlsOptionsFor(this) !== undefined) return this.alpnPool(http2, alpn);
    if (http2) return (this.h2 ??= new H2Pool(this));
    return (this.h1 ??= new H1Pool(this));
  }

  private alpnPool(http2: boolean, alpn: readonly string[]): H1Pool | H2Pool {
    const key = alpnKey(http2, alpn);
    const pools = (this.alpnPools ??= new Map());
    let p = pools.get(key);
    if (p === undefined) pools.set(key, (p = http2 ? new H2Pool(this, alpn) : new H1Pool(this, alpn)));
    return p;
  }

  drain(): void {
    this.h1?.drain();
    this.h2?.drain();
    if (this.alpnPools !== undefined) for (const p of this.alpnPools.values()) p.drain();
  }

  destroy(): void {
    this.h1?.destroy();
    this.h2?.destroy();
    if (this.alpnPools !== undefined) for (const p of this.alpnPools.values()) p.destroy();
  }
}

const alpnKeys = new WeakMap<readonly string[], { h1: string; h2: string }>();

/** A pool's key for an ALPN list (lists are compiled once with the config, so the keys are cached). */
function alpnKey(http2: boolean, alpn: readonly string[]): string {
  let k = alpnKeys.get(alpn);
  if (k === undefined) {
    const joined = alpn.join('\0');
    alpnKeys.set(alpn, (k = { h1: `h1\0${joined}`, h2: `h2\0${joined}` }));
  }
  return http2 ? k.h2 : k.h1;
}
