// The composition root: turns a validated Bootstrap into running objects (cluster manager,
// listeners, admin) and owns their lifecycle: start, graceful drain on SIGTERM, stop.

import type { Bootstrap } from '../config/types';
import { Listener } from '../listener/listener';
import { checkOriginalDstSupport, ListenerIndex } from '../listener/original-dst';
import { ClusterManager } from '../upstream/cluster-manager';
import { AdminServer } from '../admin/admin';
import { Logger } from '../common/logger';

export interface ServerOptions {
  readonly log?: Logger;
  /** How long in-flight requests may take to finish after SIGTERM (Envoy's --drain-time-s). */
  readonly drainTimeMs?: number;
  /** Serve the bootstrap's admin address (default true; only one worker does). */
  readonly admin?: boolean;
}

export class KeelServer {
  readonly clusters: ClusterManager;
  readonly listeners: Listener[];
  readonly admin?: AdminServer;
  readonly log: Logger;
  private started = false;
  private stopping: Promise<void> | undefined;
  ready = false;

  constructor(readonly bootstrap: Bootstrap, private readonly opts: ServerOptions = {}) {
    this.log = opts.log ?? new Logger('info');
    this.clusters = new ClusterManager(bootstrap.clusters);
    // Every listener is built; only bind_to_port ones listen. The others serve connections that a
    // use_original_dst listener hands them by original destination (istiod's 0.0.0.0_9080 etc.).
    let index: ListenerIndex<Listener> | undefined;
    const deps = { clusters: this.clusters, runtime: bootstrap.runtime, findListener: (address: string, port: number) => index?.find(address, port) };
    this.listeners = bootstrap.listeners.map((l) => new Listener(l, deps));
    index = new ListenerIndex(this.listeners);
    if (bootstrap.admin && opts.admin !== false) this.admin = new AdminServer(bootstrap.admin, this);
  }

  /** Binds every listener once the clusters know their hosts; resolves with the bound ports by listener name. */
  async start(): Promise<Map<string, number>> {
    if (this.started) throw new Error('already started');
    this.started = true;
    checkOriginalDstSupport(this.bootstrap.listeners);
    await this.clusters.initialized();
    const ports = new Map<string, number>();
    for (const l of this.listeners) if (l.config.bindToPort) ports.set(l.name, await l.listen());
    if (this.admin) await this.admin.listen();
    this.ready = true;
    return ports;
  }

  /**
   * Graceful stop: stop accepting, let in-flight requests finish for up to drainTimeMs, then close
   * what is left and release upstream connections.
   */
  stop(drainTimeMs = this.opts.drainTimeMs ?? 5000): Promise<void> {
    this.stopping ??= (async () => {
      this.ready = false;
      for (const l of this.listeners) l.stopAccepting();
      const idle = Promise.all(this.listeners.map((l) => l.waitIdle()));
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((r) => (timer = setTimeout(r, drainTimeMs)));
      await Promise.race([idle, timeout]);
      if (timer) clearTimeout(timer);
      for (const l of this.listeners) l.closeConnections();
      this.clusters.destroy();
      await this.admin?.close();
    })();
    return this.stopping;
  }
}
