// The set of clusters by name. Built from config; a new config swaps clusters in, keeping the ones
// whose config did not change (so their pools and connections survive), draining the others.

import type { ClusterConfig } from '../config/types';
import { Cluster } from './cluster';

export class ClusterManager {
  private readonly clusters = new Map<string, Cluster>();

  constructor(configs: readonly ClusterConfig[] = []) {
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
      this.clusters.set(c.name, new Cluster(c));
      old?.drain();
    }
    for (const [name, c] of this.clusters) {
      if (!seen.has(name)) {
        this.clusters.delete(name);
        c.drain();
      }
    }
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
