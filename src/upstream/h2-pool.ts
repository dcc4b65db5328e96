// HTTP/2 upstream pool: multiplexed connections per host on keel's own HTTP/2 client
// (h2-client.ts), h2c by prior knowledge or TLS with ALPN h2. A request takes a stream on the first
// connection with a free slot (under the server's SETTINGS_MAX_CONCURRENT_STREAMS and not going
// away); when none has one, it waits while a new connection is made (within the cluster's
// max_connections and max_pending_requests circuit breakers).

import type { ErrorCode } from '../common/errors';
import { H2ClientConnection, H2ClientEvents, H2ClientSettings } from './h2-client';
import type { Host } from './host';
import type { ConnPool, PoolCallbacks } from './types';

export class H2Pool implements ConnPool, H2ClientEvents {
  private readonly connections: H2ClientConnection[] = [];
  private readonly pending: PoolCallbacks[] = [];
  private connecting = false;
  private draining = false;
  private settingsCache: H2ClientSettings | undefined;

  constructor(
    private readonly host: Host,
    /** the ALPN list this pool's TLS connections offer (istio.alpn), instead of h2 */
    private readonly alpn?: readonly string[],
  ) {}

  get activeConnections(): number {
    return this.connections.length;
  }

  newStream(cb: PoolCallbacks): void {
    const c = this.available();
    if (c !== undefined) {
      cb.onPoolReady(c.newStream(cb));
      return;
    }
    const rm = this.host.cluster.resources;
    if (!rm.pendingRequests.canCreate()) {
      this.host.cluster.stats.upstreamRqPendingOverflow++;
      cb.onPoolFailure('KEEL_UPSTREAM_OVERFLOW', 'overflow');
      return;
    }
    rm.pendingRequests.inc();
    this.pending.push(cb);
    if (!this.connecting && rm.connections.canCreate() && !this.draining) this.connect();
  }

  private available(): H2ClientConnection | undefined {
    const list = this.connections;
    for (let i = 0; i < list.length; i++) if (list[i].available) return list[i];
    return undefined;
  }

  private connect(): void {
    const cluster = this.host.cluster;
    this.connecting = true;
    cluster.resources.connections.inc();
    cluster.stats.upstreamCxTotal++;
    const scheme = cluster.tlsOptionsFor(this.host) ? 'https' : 'http';
    const settings = (this.settingsCache ??= new H2ClientSettings(this.host));
    this.connections.push(new H2ClientConnection(this.host, settings, scheme, this, this.alpn));
  }

  onReady(c: H2ClientConnection): void {
    this.connecting = false;
    this.onStreamSlot(c);
  }

  /** Waiting requests take the free slots of `c`; past them, another connection is made. */
  onStreamSlot(c: H2ClientConnection): void {
    while (this.pending.length > 0 && c.available) {
      const cb = this.pending.shift()!;
      this.host.cluster.resources.pendingRequests.dec();
      cb.onPoolReady(c.newStream(cb));
    }
    if (this.pending.length > 0 && !this.connecting && !this.draining && this.available() === undefined && this.host.cluster.resources.connections.canCreate()) this.connect();
  }

  onConnectFailure(_c: H2ClientConnection, code: ErrorCode, detail: string): void {
    this.connecting = false;
    this.host.cluster.stats.upstreamCxConnectFail++;
    // Every request waiting for this connection fails (Envoy fails pending requests on connect failure).
    for (const cb of this.pending.splice(0)) {
      this.host.cluster.resources.pendingRequests.dec();
      cb.onPoolFailure(code, detail);
    }
  }

  onClosed(c: H2ClientConnection): void {
    const i = this.connections.indexOf(c);
    if (i < 0) return;
    this.connections.splice(i, 1);
    this.host.cluster.resources.connections.dec();
    // requests still waiting (this connection went away before taking them) get another one
    if (this.pending.length > 0 && !this.connecting && !this.draining && this.available() === undefined && this.host.cluster.resources.connections.canCreate()) this.connect();
  }

  cancel(cb: PoolCallbacks): void {
    const i = this.pending.indexOf(cb);
    if (i >= 0) {
      this.pending.splice(i, 1);
      this.host.cluster.resources.pendingRequests.dec();
    }
  }

  drain(): void {
    this.draining = true;
    for (const c of this.connections) c.drain();
  }

  destroy(): void {
    this.drain();
    for (const c of [...this.connections]) c.destroy();
    for (const cb of this.pending.splice(0)) {
      this.host.cluster.resources.pendingRequests.dec();
      cb.onPoolFailure('KEEL_UPSTREAM_CONNECTION_TERMINATION', 'pool destroyed');
    }
  }
}
