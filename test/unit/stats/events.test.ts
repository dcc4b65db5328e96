// Upstream event lines: an outlier ejection and return, a circuit breaker opening and closing,
// each logged once per change (compared against the previous sweep), nothing when nothing changed.
import t from 'tap';
import { UpstreamEvents } from '../../../src/observability/events';
import type { ClusterManager } from '../../../src/upstream/cluster-manager';
import type { Logger } from '../../../src/common/logger';

t.test('logs changes only', async (t) => {
  const lines: string[] = [];
  const log = { info: (m: string) => lines.push(`info ${m}`), warn: (m: string) => lines.push(`warn ${m}`) } as unknown as Logger;
  let pendingOpen = false;
  const stats = { ejections_enforced_total: 0, ejections_active: 0 };
  const ejected = new Set<string>();
  const host = { addressString: '10.0.0.1:80' };
  const gauge = (open: () => boolean) => ({ canCreate: () => !open() });
  const cluster = {
    name: 'web',
    hosts: [host],
    resources: { connections: gauge(() => false), pendingRequests: gauge(() => pendingOpen), requests: gauge(() => false), retries: gauge(() => false) },
    outlier: { stats, isEjected: (h: { addressString: string }) => ejected.has(h.addressString) },
  };
  const cm = { all: () => [cluster] } as unknown as ClusterManager;
  const ev = new UpstreamEvents(cm, log);
  t.teardown(() => ev.stop());
  ev.check();
  ev.check();
  t.same(lines, [], 'a first look and no change: nothing');
  stats.ejections_enforced_total = 1;
  stats.ejections_active = 1;
  ejected.add('10.0.0.1:80');
  pendingOpen = true;
  ev.check();
  t.same(lines, ['info event=outlier_ejection cluster=web ejections_active=1 new_ejections=1 ejected_hosts=10.0.0.1:80', 'warn event=circuit_breaker_open cluster=web breaker=rq_pending priority=default']);
  lines.length = 0;
  ev.check();
  t.same(lines, []);
  stats.ejections_active = 0;
  ejected.clear();
  pendingOpen = false;
  ev.check();
  t.same(lines, ['info event=outlier_return cluster=web ejections_active=0 new_ejections=0 ejected_hosts=-', 'warn event=circuit_breaker_closed cluster=web breaker=rq_pending priority=default']);
});
