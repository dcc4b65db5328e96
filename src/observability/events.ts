// Structured log lines for what operators look for when something degrades: outlier ejections and
// returns, and circuit breakers opening and closing, per cluster. Read once a second from the
// clusters' own counters and gauges (the request path is not touched and logs nothing); written
// through the `upstream` component logger, whose level /logging changes.
// Format: `event=<name> cluster=<name> key=value ...`.

import type { Logger } from '../common/logger';
import { onSweep } from '../common/clock';
import type { ClusterManager } from '../upstream/cluster-manager';

interface Seen {
  ejections: number;
  active: number;
  open: Record<string, boolean>;
}

export class UpstreamEvents {
  private readonly seen = new WeakMap<object, Seen>();
  private readonly stopSweep: () => void;

  constructor(private readonly clusters: ClusterManager, private readonly log: Logger) {
    this.stopSweep = onSweep(() => this.check());
  }

  stop(): void {
    this.stopSweep();
  }

  /** Compares every cluster with what was seen last time and logs the changes. */
  check(): void {
    for (const c of this.clusters.all()) {
      const r = c.resources;
      const open = {
        cx: !r.connections.canCreate(),
        rq_pending: !r.pendingRequests.canCreate(),
        rq: !r.requests.canCreate(),
        rq_retry: !r.retries.canCreate(),
      };
      const o = c.outlier?.stats as Record<string, number> | undefined;
      const now: Seen = { ejections: o?.ejections_enforced_total ?? 0, active: o?.ejections_active ?? 0, open };
      const prev = this.seen.get(c);
      this.seen.set(c, now);
      if (!prev) continue;
      if (now.ejections > prev.ejections || now.active !== prev.active) {
        const ejected = c.hosts.filter((h) => c.outlier?.isEjected(h)).map((h) => h.addressString);
        const what = now.ejections > prev.ejections ? 'outlier_ejection' : 'outlier_return';
        this.log.info(`event=${what} cluster=${c.name} ejections_active=${now.active} new_ejections=${now.ejections - prev.ejections} ejected_hosts=${ejected.join(',') || '-'}`);
      }
      for (const k of Object.keys(open) as Array<keyof typeof open>) {
        if (open[k] !== prev.open[k]) this.log.warn(`event=circuit_breaker_${open[k] ? 'open' : 'closed'} cluster=${c.name} breaker=${k} priority=default`);
      }
    }
  }
}
