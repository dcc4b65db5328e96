// Circuit breaking for one cluster and priority: counters for connections, pending requests,
// requests and retries against their thresholds (Envoy's ResourceManager). Counting only; callers
// decide what an overflow means.

import type { CircuitBreakerThresholds } from '../config/types';

export class Resource {
  count = 0;
  constructor(public max: number) {}
  canCreate(): boolean {
    return this.count < this.max;
  }
  inc(): void {
    this.count++;
  }
  dec(): void {
    this.count--;
  }
  get remaining(): number {
    return Math.max(0, this.max - this.count);
  }
}

export class ResourceManager {
  readonly connections: Resource;
  readonly pendingRequests: Resource;
  readonly requests: Resource;
  readonly retries: Resource;
  constructor(t?: CircuitBreakerThresholds) {
    this.connections = new Resource(t?.maxConnections ?? 1024);
    this.pendingRequests = new Resource(t?.maxPendingRequests ?? 1024);
    this.requests = new Resource(t?.maxRequests ?? 1024);
    this.retries = new Resource(t?.maxRetries ?? 3);
  }
}
