// The set of clusters by name. Built from config; a new config swaps clusters in, keeping the ones
// whose config did not change (so their pools and connections survive), draining the others.

import type { ClusterConfig } from '../config/types';
import { Cluster } from './cluster';
import type { SecretSource } from '../security/secret-manager';

export class ClusterManager {
  private readonly clusters = new Map<string, Cluster>();

  /** SDS secrets for the clusters' TLS (the agent's secret manager); passed to every cluster built here or by xDS. */
  readonly secrets?: SecretSource;

  constructor(configs: readonly ClusterConfig[] = [], opts: { secrets?: SecretSource } = {}) {
    if (opts.secrets) this.secrets = opts.secrets;
    this.update(configs);
  }

  get(name: string): Cluster | undefined {
    return this.clusters.get(name);
  }

  has(name: string): boolean {
    return this.clusters.has(name);
  }

  all(): IterableIterator<Cluster> {
    return this.clusters.values();
  }

  update(configs: readonly ClusterConfig[]): void {
    const seen = new Set<string>();
    for (const c of configs) {
      seen.add(c.name);
      const old = this.clusters.get(c.name);
      if (old && JSON.stringify(old.config) === JSON.stringify(c)) continue;
      this.clusters.set(c.name, new Cluster(c, this.secrets ? { secrets: this.secrets } : {}));
      old?.drain();
    }
    for (const [name, c] of this.clusters) {
      if (!seen.has(name)) {
        this.clusters.delete(name);
        c.drain();
      }
    }
  }

  /** xDS: adds or replaces one cluster; the replaced one drains (in-flight requests finish on its hosts). */
  set(cluster: Cluster): void {
    const old = this.clusters.get(cluster.name);
    this.clusters.set(cluster.name, cluster);
    if (old && old !== cluster) old.drain();
  }

  /** xDS: removes one cluster, draining it. */
  remove(name: string): boolean {
    const old = this.clusters.get(name);
    if (!old) return false;
    this.clusters.delete(name);
    old.drain();
    return true;
  }

  /** Resolves when every cluster knows its hosts (DNS clusters after their first resolution). */
  async initialized(): Promise<void> {
    await Promise.all([...this.clusters.values()].map((c) => c.initialized));
  }

  destroy(): void {
    for (const c of this.clusters.values()) c.destroy();
    this.clusters.clear();
  }
}
