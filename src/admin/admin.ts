// A minimal admin endpoint on the bootstrap's admin address: /ready, /server_info, /stats (text),
// /clusters (text), /quitquitquit. The full istioctl-facing admin API is the operations work.

import * as http from 'node:http';
import type { AdminConfig } from '../config/types';
import type { KeelServer } from '../server/server';

export class AdminServer {
  private readonly server: http.Server;
  constructor(private readonly config: AdminConfig, private readonly keel: KeelServer) {
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  listen(): Promise<number> {
    const a = this.config.address;
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(a.port, a.address, () => {
        const addr = this.server.address();
        resolve(typeof addr === 'object' && addr ? addr.port : 0);
      });
    });
  }

  get port(): number {
    const addr = this.server.address();
    return typeof addr === 'object' && addr ? addr.port : 0;
  }

  close(): Promise<void> {
    return new Promise((r) => {
      this.server.close(() => r());
      this.server.closeAllConnections();
    });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://admin');
    const text = (code: number, body: string): void => {
      res.writeHead(code, { 'content-type': 'text/plain' });
      res.end(body);
    };
    switch (url.pathname) {
      case '/ready':
        text(this.keel.ready ? 200 : 503, this.keel.ready ? 'LIVE\n' : 'PRE_INITIALIZING\n');
        return;
      case '/server_info':
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ version: 'keel', state: this.keel.ready ? 'LIVE' : 'PRE_INITIALIZING', node: this.keel.bootstrap.node }, null, 2));
        return;
      case '/stats':
        text(200, this.stats());
        return;
      case '/clusters': {
        let out = '';
        for (const c of this.keel.clusters.all()) {
          for (const h of c.hosts) {
            const p = `${c.name}::${h.addressString}`;
            out += `${p}::health_flags::${h.healthy ? 'healthy' : '/failed_eds_health'}\n${p}::rq_active::${h.activeRequests}\n`;
          }
        }
        text(200, out);
        return;
      }
      case '/quitquitquit':
        if (req.method !== 'POST') return text(405, 'POST required\n');
        text(200, 'OK\n');
        void this.keel.stop();
        return;
      default:
        text(404, 'not found\n');
    }
  }

  private stats(): string {
    const lines: string[] = [];
    for (const c of this.keel.clusters.all()) {
      const s = c.stats;
      const p = `cluster.${c.name}.`;
      lines.push(
        `${p}upstream_rq_total: ${s.upstreamRqTotal}`,
        `${p}upstream_rq_2xx: ${s.upstreamRq2xx}`,
        `${p}upstream_rq_4xx: ${s.upstreamRq4xx}`,
        `${p}upstream_rq_5xx: ${s.upstreamRq5xx}`,
        `${p}upstream_cx_total: ${s.upstreamCxTotal}`,
        `${p}upstream_cx_connect_fail: ${s.upstreamCxConnectFail}`,
        `${p}upstream_rq_pending_overflow: ${s.upstreamRqPendingOverflow}`,
        `${p}upstream_rq_timeout: ${s.upstreamRqTimeout}`,
        `${p}upstream_cx_active: ${c.resources.connections.count}`,
        `${p}upstream_rq_active: ${c.resources.requests.count}`,
        `${p}upstream_rq_per_try_timeout: ${s.upstreamRqPerTryTimeout}`,
        `${p}upstream_rq_retry: ${s.upstreamRqRetry}`,
        `${p}upstream_rq_retry_success: ${s.upstreamRqRetrySuccess}`,
        `${p}upstream_rq_retry_overflow: ${s.upstreamRqRetryOverflow}`,
        `${p}upstream_rq_retry_limit_exceeded: ${s.upstreamRqRetryLimitExceeded}`,
        `${p}circuit_breakers.default.cx_open: ${c.resources.connections.canCreate() ? 0 : 1}`,
        `${p}circuit_breakers.default.rq_pending_open: ${c.resources.pendingRequests.canCreate() ? 0 : 1}`,
        `${p}circuit_breakers.default.rq_open: ${c.resources.requests.canCreate() ? 0 : 1}`,
        `${p}circuit_breakers.default.rq_retry_open: ${c.resources.retries.canCreate() ? 0 : 1}`,
      );
      if (c.outlier) for (const [k, v] of Object.entries(c.outlier.stats)) lines.push(`${p}outlier_detection.${k}: ${v}`);
    }
    for (const l of this.keel.listeners) {
      for (const hcm of l.connectionManagers) {
        const s = hcm.stats;
        const p = `http.${hcm.config.statPrefix}.`;
        lines.push(
          `${p}downstream_rq_total: ${s.downstreamRqTotal}`,
          `${p}downstream_rq_2xx: ${s.downstreamRq2xx}`,
          `${p}downstream_rq_3xx: ${s.downstreamRq3xx}`,
          `${p}downstream_rq_4xx: ${s.downstreamRq4xx}`,
          `${p}downstream_rq_5xx: ${s.downstreamRq5xx}`,
          `${p}downstream_rq_active: ${s.downstreamRqActive}`,
          `${p}downstream_cx_active: ${s.downstreamCxActive}`,
          `${p}no_route: ${s.noRoute}`,
          `${p}no_cluster: ${s.noCluster}`,
        );
      }
      lines.push(`listener.${l.name}.downstream_cx_active: ${l.activeConnections}`);
    }
    return lines.sort().join('\n') + '\n';
  }
}
