// Circuit breaking for one cluster and priority: counters for connections, pending requests,
// requests and retries against their thresholds (Envoy's ResourceManager), or retries against a
// retry budget. Counting only; callers decide what an overflow means.

import type { CircuitBreakerThresholds } from '../config/types';

export class Resource {
  count = 0;
  private limit: number;
  constructor(max: number) {
    this.limit = max;
  }
  get max(): number {
    return this.limit;
  }
  set max(v: number) {
    this.limit = v;
  }
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

/**
 * Concurrent retries under a retry budget (Envoy's retry_budget, which replaces max_retries): at
 * most budget_percent of the active plus pending requests, and never fewer than
 * min_retry_concurrency.
 */
export class RetryBudgetResource extends Resource {
  constructor(
    private readonly percent: number,
    private readonly minConcurrency: number,
    private readonly requests: Resource,
    private readonly pending: Resource,
  ) {
    super(minConcurrency);
  }
  override get max(): number {
    return Math.max(this.minConcurrency, Math.floor(((this.requests.count + this.pending.count) * this.percent) / 100));
  }
  override set max(_v: number) {
    // the budget is derived from the request counts
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
    const b = t?.retryBudget;
    this.retries = b ? new RetryBudgetResource(b.budgetPercent, b.minRetryConcurrency, this.requests, this.pendingRequests) : new Resource(t?.maxRetries ?? 3);
  }
}
