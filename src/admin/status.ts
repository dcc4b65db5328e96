// pilot-agent's status ports, served by keel itself: :15021 /healthz/ready (the sidecar's startup and
// readiness probe), :15020 (/healthz/ready, /stats/prometheus merged with the application's own
// metrics from ISTIO_PROMETHEUS_ANNOTATIONS, /app-health/<container>/livez|readyz|startupz from
// ISTIO_KUBE_APP_PROBERS, POST /quitquitquit, POST /drain) and :15090 /stats/prometheus. Ports are
// options so tests bind port 0; a port set to -1 is not served. Nothing here is on the request path.

import * as http from 'node:http';
import * as net from 'node:net';
import type * as Grpc from '@grpc/grpc-js';
import type { KeelServer } from '../server/server';
import { prometheusText } from '../stats/scrape';

/** One Kubernetes probe as the injector rewrites it into ISTIO_KUBE_APP_PROBERS. */
export interface AppProber {
  readonly httpGet?: { readonly path?: string; readonly port: number | string; readonly host?: string; readonly scheme?: string; readonly httpHeaders?: { name: string; value: string }[] };
  readonly tcpSocket?: { readonly port: number | string; readonly host?: string };
  readonly grpc?: { readonly port: number; readonly service?: string };
  readonly timeoutSeconds?: number;
}

/** The pod's prometheus.io annotations (ISTIO_PROMETHEUS_ANNOTATIONS). */
export interface AppScrape {
  readonly scrape?: string;
  readonly path?: string;
  readonly port?: string;
  readonly scheme?: string;
}

export interface StatusOptions {
  /** :15021 (readiness only); -1 = off */
  readonly readinessPort?: number;
  /** :15020 (agent status); -1 = off */
  readonly statusPort?: number;
  /** :15090 (Envoy's Prometheus port); -1 = off */
  readonly prometheusPort?: number;
  /** address to bind (istio-proxy binds all addresses: kubelet and Prometheus reach the pod IP) */
  readonly host?: string;
  /** where the application runs (default 127.0.0.1) */
  readonly appHost?: string;
  readonly appProbers?: Readonly<Record<string, AppProber>>;
  readonly appScrape?: AppScrape;
  /** POST /drain: start draining (the CLI passes the termination drain) */
  readonly onDrain?: () => void;
}

/** Options from the environment variables pilot-agent reads. Throws on malformed JSON. */
export function statusOptionsFromEnv(env: NodeJS.ProcessEnv): Pick<StatusOptions, 'appProbers' | 'appScrape'> {
  const out: { appProbers?: Record<string, AppProber>; appScrape?: AppScrape } = {};
  if (env.ISTIO_KUBE_APP_PROBERS) {
    try {
      out.appProbers = JSON.parse(env.ISTIO_KUBE_APP_PROBERS) as Record<string, AppProber>;
    } catch (e) {
      throw new Error(`ISTIO_KUBE_APP_PROBERS is not JSON: ${(e as Error).message}`);
    }
  }
  if (env.ISTIO_PROMETHEUS_ANNOTATIONS) {
    try {
      out.appScrape = JSON.parse(env.ISTIO_PROMETHEUS_ANNOTATIONS) as AppScrape;
    } catch (e) {
      throw new Error(`ISTIO_PROMETHEUS_ANNOTATIONS is not JSON: ${(e as Error).message}`);
    }
  }
  return out;
}

/**
 * grpc.health.v1.Health/Check. The two messages are one field each (request: string service = 1;
 * response: enum status = 1, SERVING = 1), encoded here by hand rather than loading a proto.
 */
function grpcHealth(host: string, port: number, service: string, timeoutMs: number): Promise<string> {
  const encode = (svc: string): Buffer => {
    // always written, even empty: some stacks do not deliver a zero-length message
    const b = Buffer.from(svc, 'utf8');
    const len: number[] = [];
    for (let n = b.length; ; n >>>= 7) {
      if (n < 0x80) {
        len.push(n);
        break;
      }
      len.push((n & 0x7f) | 0x80);
    }
    return Buffer.concat([Buffer.from([0x0a, ...len]), b]);
  };
  const decode = (b: Buffer): number => {
    // field 1, varint; anything else is skipped as UNKNOWN
    let status = 0;
    for (let i = 0; i < b.length; ) {
      const tag = b[i++];
      let v = 0;
      let shift = 0;
      while (i < b.length) {
        const x = b[i++];
        v |= (x & 0x7f) << shift;
        shift += 7;
        if ((x & 0x80) === 0) break;
      }
      if (tag === 0x08) status = v;
      else if ((tag & 7) !== 0) break;
    }
    return status;
  };
  const NAMES = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];
  // grpc-js is loaded on the first gRPC probe only: it adds ~12 MB of RSS to every process.
  const grpc = require('@grpc/grpc-js') as typeof Grpc;
  return new Promise((resolve) => {
    const client = new grpc.Client(`${host.includes(':') ? `[${host}]` : host}:${port}`, grpc.credentials.createInsecure());
    client.makeUnaryRequest('/grpc.health.v1.Health/Check', encode, decode, service, { deadline: Date.now() + timeoutMs }, (err, status) => {
      client.close();
      resolve(err ? `error: ${err.message}` : (NAMES[status ?? 0] ?? `status ${status}`));
    });
  });
}

export class StatusServers {
  private readonly servers: http.Server[] = [];
  /** bound ports by role */
  readonly ports: { readiness?: number; status?: number; prometheus?: number } = {};

  constructor(private readonly keel: KeelServer, private readonly opts: StatusOptions = {}) {}

  async listen(): Promise<void> {
    const o = this.opts;
    const host = o.host ?? '0.0.0.0';
    const bind = async (port: number, handler: http.RequestListener): Promise<number> => {
      const s = http.createServer((req, res) => {
        Promise.resolve(handler(req, res)).catch((e: Error) => {
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`${e.message}\n`);
        });
      });
      this.servers.push(s);
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen(port, host, () => resolve());
      });
      const a = s.address();
      return typeof a === 'object' && a ? a.port : 0;
    };
    if ((o.readinessPort ?? 15021) >= 0) this.ports.readiness = await bind(o.readinessPort ?? 15021, (req, res) => this.readiness(req, res));
    if ((o.statusPort ?? 15020) >= 0) this.ports.status = await bind(o.statusPort ?? 15020, (req, res) => this.status(req, res));
    if ((o.prometheusPort ?? 15090) >= 0) this.ports.prometheus = await bind(o.prometheusPort ?? 15090, (req, res) => this.prometheus(req, res, false));
  }

  close(): Promise<void> {
    return Promise.all(
      this.servers.map(
        (s) =>
          new Promise<void>((r) => {
            s.close(() => r());
            s.closeAllConnections();
          }),
      ),
    ).then(() => undefined);
  }

  private get isReady(): boolean {
    return this.keel.ready && !this.keel.healthCheckFailed;
  }

  private readiness(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/healthz/ready') {
      res.writeHead(404).end();
      return;
    }
    this.ready(res);
  }

  private ready(res: http.ServerResponse): void {
    if (this.isReady) res.writeHead(200, { 'content-type': 'text/plain' }).end();
    else res.writeHead(503, { 'content-type': 'text/plain' }).end(this.keel.ready ? 'server is draining or failing health checks\n' : 'config not yet received from the control plane (or listeners not serving)\n');
  }

  private async status(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz/ready') return this.ready(res);
    if (path === '/stats/prometheus') return this.prometheus(req, res, true);
    if (path === '/quitquitquit' || path === '/drain') {
      if (req.method !== 'POST') {
        res.writeHead(405, { 'content-type': 'text/plain' }).end('POST required\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain' }).end('OK\n');
      if (path === '/drain') {
        if (this.opts.onDrain) this.opts.onDrain();
        else this.keel.drainListeners({ inboundOnly: true, graceful: true });
      } else void this.keel.stop(0).then(() => this.keel.onQuit?.());
      return;
    }
    if (path.startsWith('/app-health/')) return this.appHealth(path, res);
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  }

  private async prometheus(req: http.IncomingMessage, res: http.ServerResponse, merged: boolean): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/stats/prometheus') {
      res.writeHead(404).end();
      return;
    }
    let body = await prometheusText(await this.keel.scrape());
    if (merged) {
      const app = this.opts.appScrape;
      if (app && app.scrape !== 'false' && app.port) {
        const text = await this.fetchApp(Number(app.port), app.path ?? '/metrics', app.scheme === 'https');
        if (text !== undefined) body += (body.endsWith('\n') || body === '' ? '' : '\n') + text;
        else this.keel.log.warn(`status: failed scraping application metrics on port ${app.port}`);
      }
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(body);
  }

  private fetchApp(port: number, path: string, https: boolean): Promise<string | undefined> {
    if (https) return Promise.resolve(undefined); // istio-agent scrapes https apps with the workload cert; not done here
    return new Promise((resolve) => {
      const req = http.get({ host: this.opts.appHost ?? '127.0.0.1', port, path, timeout: 5000, headers: { accept: 'text/plain' } }, (r) => {
        let t = '';
        r.setEncoding('utf8');
        r.on('data', (c: string) => (t += c));
        r.on('end', () => resolve((r.statusCode ?? 500) < 300 ? t : undefined));
        r.on('error', () => resolve(undefined));
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(undefined));
    });
  }

  /** /app-health/<container>/<livez|readyz|startupz>: the app's own probe, run from the proxy. */
  private async appHealth(path: string, res: http.ServerResponse): Promise<void> {
    const p = this.opts.appProbers?.[path];
    if (!p) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`no probe configured for ${path}\n`);
      return;
    }
    const timeoutMs = (p.timeoutSeconds ?? 1) * 1000;
    const host = p.httpGet?.host ?? p.tcpSocket?.host ?? this.opts.appHost ?? '127.0.0.1';
    let ok: boolean;
    let detail = '';
    if (p.httpGet) {
      const g = p.httpGet;
      const r = await new Promise<number>((resolve) => {
        const headers: Record<string, string> = { 'user-agent': 'kube-probe/1.0' };
        for (const h of g.httpHeaders ?? []) headers[h.name.toLowerCase()] = h.value;
        const req = http.get({ host, port: Number(g.port), path: g.path ?? '/', timeout: timeoutMs, headers }, (rr) => {
          rr.resume();
          resolve(rr.statusCode ?? 500);
        });
        req.on('timeout', () => req.destroy(new Error('timeout')));
        req.on('error', () => resolve(0));
      });
      ok = r >= 200 && r < 400;
      detail = r === 0 ? 'no response' : `status ${r}`;
    } else if (p.tcpSocket) {
      ok = await new Promise<boolean>((resolve) => {
        const s = net.connect({ host, port: Number(p.tcpSocket!.port) });
        const t = setTimeout(() => {
          s.destroy();
          resolve(false);
        }, timeoutMs);
        s.once('connect', () => {
          clearTimeout(t);
          s.destroy();
          resolve(true);
        });
        s.once('error', () => {
          clearTimeout(t);
          resolve(false);
        });
      });
      detail = ok ? 'connected' : 'connection failed';
    } else if (p.grpc) {
      const r = await grpcHealth(host, p.grpc.port, p.grpc.service ?? '', timeoutMs);
      ok = r === 'SERVING';
      detail = r;
    } else {
      res.writeHead(501, { 'content-type': 'text/plain' }).end('the probe has no httpGet, tcpSocket or grpc action\n');
      return;
    }
    res.writeHead(ok ? 200 : 500, { 'content-type': 'text/plain' }).end(ok ? '' : `probe failed: ${detail}\n`);
  }
}
