// Named counters and gauges in Envoy's dotted form (`cluster_manager.cds.update_success`,
// `server.state`) that are not owned by a cluster or a listener: server lifecycle and xDS updates.
// Other modules bump them by name; the admin and Prometheus views read them. It must stay a plain
// map: nothing here formats or registers anything per update.

export class StatStore {
  private readonly counters = new Map<string, number>();
  private readonly gauges = new Map<string, number>();

  inc(name: string, by = 1): void {
    this.counters.set(name, (this.counters.get(name) ?? 0) + by);
  }

  set(name: string, value: number): void {
    this.gauges.set(name, value);
  }

  /** Declares a counter at 0 so it is listed before it is first bumped. */
  declare(name: string): void {
    if (!this.counters.has(name)) this.counters.set(name, 0);
  }

  counter(name: string): number {
    return this.counters.get(name) ?? 0;
  }

  gauge(name: string): number | undefined {
    return this.gauges.get(name);
  }

  *entries(): IterableIterator<{ name: string; value: number; kind: 'counter' | 'gauge' }> {
    for (const [name, value] of this.counters) yield { name, value, kind: 'counter' };
    for (const [name, value] of this.gauges) yield { name, value, kind: 'gauge' };
  }
}
