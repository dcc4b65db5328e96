// The admin API on the bootstrap's admin address (Envoy's :15000), bound to loopback only:
// /ready, /server_info, /stats (text, ?format=json|prometheus, ?filter=, ?usedonly),
// /stats/prometheus, /clusters (text, ?format=json), /listeners (text, ?format=json),
// /config_dump (?include_eds, ?resource=, ?mask=, ?name_regex=), /logging, /drain_listeners
// (?inboundonly, ?graceful), /healthcheck/fail|ok, /runtime, /runtime_modify, /memory,
// /quitquitquit. Everything is read when asked; nothing here is on the request path.

import * as http from 'node:http';
import * as net from 'node:net';
import type { AdminConfig } from '../config/types';
import type { KeelServer } from '../server/server';
import { isLevel, LOGGERS } from '../common/logger';
import { selectStats, statsJson, statsText } from '../stats/envoy-stats';
import { prometheusText } from '../stats/scrape';
import { buildConfigDump, DumpError } from './config-dump';

const STATE_NAMES = ['LIVE', 'DRAINING', 'PRE_INITIALIZING', 'INITIALIZING'];

/** Endpoints that change state: Envoy requires POST for them. */
const MUTATING = new Set(['/quitquitquit', '/logging', '/drain_listeners', '/healthcheck/fail', '/healthcheck/ok', '/runtime_modify', '/reset_counters']);

function isLoopback(addr: string): boolean {
  return addr === 'localhost' || addr === '::1' || addr.startsWith('127.') || addr === '::ffff:127.0.0.1';
}

export class AdminServer {
  private readonly server: http.Server;
  /** runtime overrides set through /runtime_modify (on top of the bootstrap's static layer) */
  private readonly runtimeOverrides = new Map<string, string>();
  private readonly bindAddress: string;

  constructor(private readonly config: AdminConfig, private readonly keel: KeelServer) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e: Error) => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`admin error: ${e.message}\n`);
      });
    });
    const a = config.address.address;
    // The admin API can stop and reconfigure the proxy: it listens on loopback only (as istio-proxy's :15000).
    this.bindAddress = isLoopback(a) ? a : net.isIPv6(a) ? '::1' : '127.0.0.1';
    if (this.bindAddress !== a) keel.log.warn(`admin: ${a} is not a loopback address; the admin API listens on ${this.bindAddress} only`);
  }

  listen(): Promise<number> {
    const a = this.config.address;
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      const opts: net.ListenOptions = a.pipe !== undefined ? { path: a.pipe } : { port: a.port, host: this.bindAddress };
      this.server.listen(opts, () => {
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

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const q = url.searchParams;
    const send = (code: number, body: string, type = 'text/plain; charset=UTF-8'): void => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-cache, max-age=0', 'x-content-type-options': 'nosniff' });
      res.end(body);
    };
    const json = (v: unknown, code = 200): void => send(code, JSON.stringify(v, null, 2) + '\n', 'application/json');
    if (MUTATING.has(url.pathname) && req.method !== 'POST') {
      // GET /logging lists the levels; every other mutating endpoint needs POST
      if (!(url.pathname === '/logging' && [...q.keys()].length === 0)) return send(405, 'This endpoint requires POST\n');
    }
    const keel = this.keel;
    switch (url.pathname) {
      case '/':
        return send(200, ADMIN_HELP);
      case '/ready': {
        const state = keel.healthCheckFailed ? 'DRAINING' : (STATE_NAMES[keel.state] ?? 'PRE_INITIALIZING');
        return send(keel.ready && !keel.healthCheckFailed ? 200 : 503, state + '\n');
      }
      case '/server_info':
        return json(this.serverInfo());
      case '/stats':
        return this.stats(q, send);
      case '/stats/prometheus':
        return send(200, await prometheusText(await keel.scrape()), 'text/plain; version=0.0.4; charset=utf-8');
      case '/clusters':
        return q.get('format') === 'json' ? json(this.clustersJson()) : send(200, this.clustersText());
      case '/listeners':
        return q.get('format') === 'json' ? json(this.listenersJson()) : send(200, this.listenersText());
      case '/config_dump': {
        let nameRegex: RegExp | undefined;
        const nr = q.get('name_regex');
        if (nr) {
          try {
            nameRegex = new RegExp(nr);
          } catch {
            return send(400, `bad name_regex '${nr}'\n`);
          }
        }
        const mask = q.get('mask');
        try {
          const dump = buildConfigDump(keel.configSnapshot(), keel.clusters, {
            includeEds: q.has('include_eds') && q.get('include_eds') !== 'false',
            ...(q.get('resource') ? { resource: q.get('resource')! } : {}),
            ...(mask ? { mask: mask.split(',').map((m) => m.trim()).filter((m) => m !== '') } : {}),
            ...(nameRegex ? { nameRegex } : {}),
            secretOf: (name) => keel.publicSecret(name),
          });
          return json(dump);
        } catch (e) {
          if (e instanceof DumpError) return send(404, e.message + '\n');
          throw e;
        }
      }
      case '/logging':
        return this.logging(q, req.method === 'POST', send);
      case '/drain_listeners': {
        const n = keel.drainListeners({ inboundOnly: q.has('inboundonly'), graceful: q.has('graceful') });
        keel.log.info(`admin: draining ${n} listener(s)${q.has('inboundonly') ? ' (inbound only)' : ''}${q.has('graceful') ? ', gracefully' : ''}`);
        return send(200, 'OK\n');
      }
      case '/healthcheck/fail':
        keel.healthCheckFailed = true;
        return send(200, 'OK\n');
      case '/healthcheck/ok':
        keel.healthCheckFailed = false;
        return send(200, 'OK\n');
      case '/runtime':
        return json(this.runtimeJson());
      case '/runtime_modify': {
        for (const [k, v] of q) this.runtimeOverrides.set(k, v);
        // Body form (application/x-www-form-urlencoded) is accepted too, as Envoy does.
        const body = await readBody(req);
        if (body) for (const [k, v] of new URLSearchParams(body)) this.runtimeOverrides.set(k, v);
        return send(200, 'OK\n');
      }
      case '/memory': {
        const m = process.memoryUsage();
        return json({
          allocated: String(m.heapUsed + m.external),
          heap_size: String(m.heapTotal),
          pageheap_unmapped: '0',
          pageheap_free: String(Math.max(0, m.heapTotal - m.heapUsed)),
          total_thread_cache: '0',
          total_physical_bytes: String(m.rss),
        });
      }
      case '/quitquitquit':
        send(200, 'OK\n');
        keel.log.info('admin: /quitquitquit, shutting down');
        void keel.stop(0).then(() => keel.onQuit?.());
        return;
      default:
        return send(404, `invalid path. admin commands are:\n${ADMIN_HELP}`);
    }
  }

  private serverInfo(): Record<string, unknown> {
    const keel = this.keel;
    const uptime = `${Math.floor(process.uptime())}s`;
    return {
      version: `keel/${keel.version}/Clean/RELEASE/BoringSSL`,
      state: STATE_NAMES[keel.state] ?? 'PRE_INITIALIZING',
      hot_restart_version: 'disabled',
      command_line_options: keel.commandLine ?? {},
      node: { id: keel.bootstrap.node.id, cluster: keel.bootstrap.node.cluster, metadata: keel.bootstrap.node.metadata },
      uptime_current_epoch: uptime,
      uptime_all_epochs: uptime,
    };
  }

  private async stats(q: URLSearchParams, send: (code: number, body: string, type?: string) => void): Promise<void> {
    let filter: RegExp | undefined;
    const f = q.get('filter');
    if (f) {
      try {
        filter = new RegExp(f);
      } catch {
        return send(400, `Invalid re2 regex '${f}'\n`);
      }
    }
    const scrape = await this.keel.scrape();
    const format = q.get('format');
    if (format === 'prometheus') return send(200, await prometheusText(scrape), 'text/plain; version=0.0.4; charset=utf-8');
    const stats = selectStats(scrape.envoy, { ...(filter ? { filter } : {}), usedOnly: q.has('usedonly') });
    if (format === 'json') return send(200, statsJson(stats) + '\n', 'application/json');
    if (format !== null && format !== 'text') return send(400, `unknown format '${format}'\n`);
    send(200, statsText(stats));
  }

  /** Envoy's /clusters text: `<cluster>::<field>::<value>` lines, then per host. */
  private clustersText(): string {
    let out = '';
    for (const c of this.keel.clusters.all()) {
      const n = c.name;
      const t = c.config.circuitBreakers.find((x) => x.priority === 'DEFAULT');
      out += `${n}::observability_name::${n}\n`;
      if (t) {
        out += `${n}::default_priority::max_connections::${t.maxConnections}\n${n}::default_priority::max_pending_requests::${t.maxPendingRequests}\n`;
        out += `${n}::default_priority::max_requests::${t.maxRequests}\n${n}::default_priority::max_retries::${t.maxRetries}\n`;
      }
      out += `${n}::added_via_api::${this.addedViaApi(n)}\n`;
      for (const h of c.hosts) {
        const p = `${n}::${h.addressString}`;
        out += `${p}::rq_active::${h.activeRequests}\n`;
        out += `${p}::health_flags::${healthFlags(h, c.outlier?.isEjected(h) ?? false)}\n`;
        out += `${p}::weight::${h.weight}\n`;
        out += `${p}::hostname::${h.hostname}\n`;
      }
    }
    return out;
  }

  private addedViaApi(name: string): boolean {
    const m = this.keel.dynamic.meta.get('cluster')?.get(name);
    return m !== undefined && m.version !== 'static';
  }

  /** envoy.admin.v3.Clusters JSON (istioctl proxy-config endpoints reads it). */
  private clustersJson(): Record<string, unknown> {
    const statuses = [...this.keel.clusters.all()].map((c) => {
      const t = c.config.circuitBreakers;
      return {
        name: c.name,
        observability_name: c.name,
        ...(this.addedViaApi(c.name) ? { added_via_api: true } : {}),
        ...(t.length > 0
          ? {
              circuit_breakers: {
                thresholds: t.map((x) => ({
                  ...(x.priority === 'HIGH' ? { priority: 'HIGH' } : {}),
                  max_connections: x.maxConnections,
                  max_pending_requests: x.maxPendingRequests,
                  max_requests: x.maxRequests,
                  max_retries: x.maxRetries,
                })),
              },
            }
          : {}),
        host_statuses: c.hosts.map((h) => ({
          address: { socket_address: { address: h.address, port_value: h.port } },
          stats: [
            { name: 'rq_active', type: 'GAUGE', value: String(h.activeRequests) },
          ],
          health_status: {
            eds_health_status: h.health,
            ...(c.outlier?.isEjected(h) ? { failed_outlier_check: true } : {}),
            ...(h.activeHcFailed ? { failed_active_health_check: true } : {}),
          },
          weight: h.weight,
          ...(h.hostname ? { hostname: h.hostname } : {}),
          locality: {},
        })),
      };
    });
    return { cluster_statuses: statuses };
  }

  private listenersText(): string {
    return this.keel.listeners.map((l) => `${l.name}::${l.config.address.pipe ?? `${l.config.address.address}:${l.port || l.config.address.port}`}`).join('\n') + '\n';
  }

  private listenersJson(): Record<string, unknown> {
    return {
      listener_statuses: this.keel.listeners.map((l) => ({
        name: l.name,
        local_address: l.config.address.pipe !== undefined ? { pipe: { path: l.config.address.pipe } } : { socket_address: { address: l.config.address.address, port_value: l.port || l.config.address.port } },
      })),
    };
  }

  private logging(q: URLSearchParams, post: boolean, send: (code: number, body: string) => void): void {
    const list = (): string => 'active loggers:\n' + [...LOGGERS.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([n, l]) => `  ${n}: ${l.level}\n`).join('');
    if (!post || [...q.keys()].length === 0) return send(200, list());
    const set = (name: string, level: string): string | undefined => {
      if (!isLevel(level)) return `error: unknown log level '${level}'`;
      const l = LOGGERS.get(name);
      if (!l) return `error: unknown logger name '${name}'`;
      l.setLevel(level);
      return undefined;
    };
    for (const [k, v] of q) {
      let err: string | undefined;
      if (k === 'level') {
        if (!isLevel(v)) err = `error: unknown log level '${v}'`;
        else for (const l of LOGGERS.values()) l.setLevel(v);
      } else if (k === 'paths') {
        for (const pair of v.split(',')) {
          const [name, level] = pair.split(':');
          err ??= set(name?.trim() ?? '', level?.trim() ?? '');
        }
      } else err = set(k, v);
      if (err) return send(404, `${err}\n${list()}`);
    }
    send(200, list());
  }

  private runtimeJson(): Record<string, unknown> {
    const entries: Record<string, unknown> = {};
    const base = this.keel.bootstrap.runtime;
    for (const [k, v] of Object.entries(base)) entries[k] = { final_value: String(v), layer_values: [String(v), this.runtimeOverrides.get(k) ?? ''] };
    for (const [k, v] of this.runtimeOverrides) entries[k] = { final_value: v, layer_values: [base[k] !== undefined ? String(base[k]) : '', v] };
    return { layers: ['static_layer', 'admin'], entries };
  }

  /** /runtime_modify values, for components that read runtime keys. */
  runtimeOverride(key: string): string | undefined {
    return this.runtimeOverrides.get(key);
  }
}

function healthFlags(h: { health: string; activeHcFailed: boolean }, ejected: boolean): string {
  const flags: string[] = [];
  if (h.activeHcFailed) flags.push('/failed_active_hc');
  if (ejected) flags.push('/failed_outlier_check');
  if (h.health === 'UNHEALTHY' || h.health === 'TIMEOUT') flags.push('/failed_eds_health');
  if (h.health === 'DEGRADED') flags.push('/degraded_eds_health');
  if (h.health === 'DRAINING') flags.push('/pending_dynamic_removal');
  return flags.length === 0 ? 'healthy' : flags.join('');
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      if (body.length < 65536) body += c;
    });
    req.on('end', () => resolve(body));
    req.on('error', () => resolve(body));
  });
}

const ADMIN_HELP = `admin commands are:
  /: help text
  /clusters: upstream cluster status (?format=json)
  /config_dump: current configuration (?include_eds, ?resource=, ?mask=, ?name_regex=)
  /drain_listeners (POST): drain listeners (?inboundonly, ?graceful)
  /healthcheck/fail (POST): cause the server to fail health checks
  /healthcheck/ok (POST): cause the server to pass health checks
  /listeners: listener addresses (?format=json)
  /logging: list logger levels; POST ?level=, ?<logger>=<level>, ?paths=<logger>:<level>,...
  /memory: memory usage
  /quitquitquit (POST): exit the server
  /ready: LIVE (200) or not (503)
  /runtime: runtime values; /runtime_modify (POST): set runtime values
  /server_info: server version, state, node and command line
  /stats: statistics (?format=json|prometheus, ?filter=<regex>, ?usedonly)
  /stats/prometheus: statistics in Prometheus text format
`;
