// envoy.filters.network.tcp_proxy: connect each downstream connection to a host of the cluster
// (or of a weighted pick) and pipe bytes both ways with half-close and an idle timeout.

import * as net from 'node:net';
import type { TcpProxyConfig } from '../config/types';
import type { ClusterManager } from '../upstream/cluster-manager';

export class TcpProxy {
  private readonly total: number;
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

  /**
   * Proxies one downstream connection. `originalDst` is its restored original destination (a
   * connection redirected to a use_original_dst listener): an ORIGINAL_DST cluster connects there,
   * and without one it has no host (the connection is closed).
   */
  handle(down: net.Socket, initial: Buffer | undefined, originalDst?: { readonly address: string; readonly port: number }): void {
    const name = this.pickCluster();
    const cluster = name !== undefined ? this.clusters.get(name) : undefined;
    const host =
      cluster?.config.type === 'ORIGINAL_DST'
        ? originalDst
          ? cluster.originalDstHost(originalDst.address, originalDst.port)
          : undefined
        : cluster?.pickHost();
    if (!cluster || !host) {
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
    const up = net.connect(opts);
    let released = false;
    const release = (): void => {
      if (!released) {
        released = true;
        rm.dec();
      }
    };
    const ct = cluster.config.connectTimeoutMs;
    const connectTimer = ct > 0 ? setTimeout(() => up.destroy(), ct) : undefined;
    if (initial && initial.length > 0) up.write(initial);
    up.once('connect', () => {
      if (connectTimer) clearTimeout(connectTimer);
    });
    down.pipe(up);
    up.pipe(down);
    const idle = this.config.idleTimeoutMs;
    if (idle > 0) {
      down.setTimeout(idle, () => {
        down.destroy();
        up.destroy();
      });
      up.setTimeout(idle, () => {
        down.destroy();
        up.destroy();
      });
    }
    up.on('error', () => {
      if (connectTimer) clearTimeout(connectTimer);
      down.destroy();
    });
    up.on('close', () => {
      release();
      down.destroy();
    });
    down.on('close', () => up.destroy());
    down.on('error', () => up.destroy());
    down.resume();
  }
}
