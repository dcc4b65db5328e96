// envoy.filters.network.tcp_proxy: connect each downstream connection to a host of the cluster
// (or of a weighted pick; ORIGINAL_DST: where the connection was going), retrying the connect up to
// max_connect_attempts, and pipe bytes both ways with half-close and an idle timeout, counting
// connections and bytes (tcp.<stat_prefix>.*). Must not read the downstream before the upstream is
// connected (its bytes wait in the kernel), or drop bytes already written when a side closes.

import * as net from 'node:net';
import * as tls from 'node:tls';
import type { TcpProxyConfig } from '../config/types';
import type { ClusterManager } from '../upstream/cluster-manager';

/** Told of each proxied connection (istio_tcp_* metrics); set once by the telemetry, never per connection. */
export interface TcpObserver {
  /** the connection is being proxied to `cluster`; returns what to call when it closes */
  opened(down: net.Socket, cluster: { readonly name: string; readonly config: { readonly metadata: Readonly<Record<string, unknown>> } }): (received: number, sent: number) => void;
}

export class TcpProxy {
  observer?: TcpObserver;
  private readonly total: number;
  private readonly counts = { cxTotal: 0, noRoute: 0, rxBytes: 0, txBytes: 0, idleTimeout: 0 };
  /** proxied downstream connections still open (their bytes join the totals at close) */
  private readonly open = new Set<net.Socket>();
  constructor(private readonly config: TcpProxyConfig, private readonly clusters: ClusterManager) {
    this.total = (config.weightedClusters ?? []).reduce((a, c) => a + c.weight, 0);
  }

  private pickCluster(): string | undefined {
    const w = this.config.weightedClusters;
    if (!w || w.length === 0 || this.total <= 0) return this.config.cluster;
    let r = Math.floor(Math.random() * this.total);
    for (const c of w) {
      if (r < c.weight) return c.name;
      r -= c.weight;
    }
    return w[w.length - 1].name;
  }

  /** Counters by Envoy name (tcp.<stat_prefix>.*); byte totals include the open connections. */
  stats(): Record<string, number> {
    const p = `tcp.${this.config.statPrefix}.`;
    let rx = this.counts.rxBytes;
    let tx = this.counts.txBytes;
    for (const d of this.open) {
      rx += d.bytesRead;
      tx += d.bytesWritten;
    }
    return {
      [`${p}downstream_cx_total`]: this.counts.cxTotal,
      [`${p}downstream_cx_no_route`]: this.counts.noRoute,
      [`${p}downstream_cx_rx_bytes_total`]: rx,
      [`${p}downstream_cx_tx_bytes_total`]: tx,
      [`${p}idle_timeout`]: this.counts.idleTimeout,
      [`${p}upstream_flush_total`]: 0,
    };
  }

  /**
   * Proxies one downstream connection. `originalDst` is its restored original destination (a
   * connection redirected to a use_original_dst listener): an ORIGINAL_DST cluster connects there,
   * and without one it has no host (the connection is closed). A failed connect is tried again on
   * another pick, up to max_connect_attempts; the downstream stays paused (its bytes in the kernel)
   * until the upstream is connected. Half-close passes through both ways; when one side has closed
   * completely, the other is ended once its pending writes are flushed.
   */
  handle(down: net.Socket, initial: Buffer | undefined, originalDst?: { readonly address: string; readonly port: number }): void {
    this.counts.cxTotal++;
    const name = this.pickCluster();
    const cluster = name !== undefined ? this.clusters.get(name) : undefined;
    if (!cluster) {
      this.counts.noRoute++;
      down.destroy();
      return;
    }
    const maxAttempts = this.config.maxConnectAttempts ?? 1;
    let attempts = 0;
    let downClosed = false;
    down.on('error', () => undefined);
    down.once('close', () => {
      downClosed = true;
    });
    const attempt = (): void => {
      attempts++;
      const host =
        cluster.config.type === 'ORIGINAL_DST'
          ? originalDst
            ? cluster.originalDstHost(originalDst.address, originalDst.port)
            : undefined
          : cluster.pickHost();
      if (!host) {
        down.destroy();
        return;
      }
      const rm = cluster.resources.connections;
      if (!rm.canCreate()) {
        down.destroy();
        return;
      }
      rm.inc();
      cluster.stats.upstreamCxTotal++;
      const opts: net.TcpNetConnectOpts = { host: host.address, port: host.port, noDelay: true, allowHalfOpen: true };
      if (cluster.config.upstreamBindSource) opts.localAddress = cluster.config.upstreamBindSource.address;
      // the cluster's transport socket (Istio mTLS for tlsMode: istio endpoints), else plaintext
      const tlsOpts = cluster.tlsOptionsFor(host);
      const up: net.Socket = tlsOpts ? tls.connect({ ...opts, ...tlsOpts }) : net.connect(opts);
      let connected = false;
      const ct = cluster.config.connectTimeoutMs;
      const connectTimer = ct > 0 ? setTimeout(() => up.destroy(), ct) : undefined;
      up.on('error', () => undefined);
      up.once('close', (hadError) => {
        if (connectTimer) clearTimeout(connectTimer);
        rm.dec();
        if (connected) {
          if (hadError) down.destroy();
          else endWhenFlushed(down);
          return;
        }
        cluster.stats.upstreamCxConnectFail++;
        if (!downClosed && attempts < maxAttempts) attempt();
        else down.destroy();
      });
      const onDownGone = (): void => {
        if (!connected) up.destroy();
      };
      down.once('close', onDownGone);
      up.once(tlsOpts ? 'secureConnect' : 'connect', () => {
        if (connectTimer) clearTimeout(connectTimer);
        down.removeListener('close', onDownGone);
        if (downClosed) {
          up.destroy();
          return;
        }
        connected = true;
        this.splice(down, up, initial, cluster);
      });
    };
    attempt();
  }

  private splice(down: net.Socket, up: net.Socket, initial: Buffer | undefined, cluster: { readonly name: string; readonly config: { readonly metadata: Readonly<Record<string, unknown>> } }): void {
    this.open.add(down);
    down.once('close', () => {
      this.open.delete(down);
      this.counts.rxBytes += down.bytesRead;
      this.counts.txBytes += down.bytesWritten;
    });
    if (this.observer) {
      const closed = this.observer.opened(down, cluster);
      down.once('close', () => closed(down.bytesRead, down.bytesWritten));
    }
    if (initial && initial.length > 0) up.write(initial);
    down.pipe(up);
    up.pipe(down);
    const idle = this.config.idleTimeoutMs;
    if (idle > 0) {
      // a socket's timer sees its reads and its writes: activity either way keeps both alive
      const onIdle = (): void => {
        this.counts.idleTimeout++;
        down.destroy();
        up.destroy();
      };
      down.setTimeout(idle, onIdle);
      up.setTimeout(idle, onIdle);
    }
    down.once('close', (hadError) => {
      if (hadError) up.destroy();
      else endWhenFlushed(up);
    });
    down.resume();
  }
}

/** Ends a stream once what was written to it is flushed, then closes it (net.Socket#destroySoon). */
function endWhenFlushed(s: net.Socket): void {
  if (s.destroyed) return;
  const soon = (s as unknown as { destroySoon?: () => void }).destroySoon;
  if (typeof soon === 'function') soon.call(s);
  else {
    s.end();
    s.once('finish', () => s.destroy());
  }
}
