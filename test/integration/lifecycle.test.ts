// The process lifecycle as kubelet and Istio drive it: readiness on the status ports, SIGTERM
// draining inbound listeners while traffic keeps flowing (no request lost), outbound listeners still
// serving during the drain, EXIT_ON_ZERO_ACTIVE_CONNECTIONS, app probes rewritten by the injector
// (ISTIO_KUBE_APP_PROBERS), POST /drain and /quitquitquit on :15020, and --concurrency with stats
// summed across workers.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { startKeel, startUpstream } from '../helpers/keel';
import { find, parseProm, sum } from '../helpers/prom';
import { StatusServers } from '../../src/admin/status';
import * as grpc from '@grpc/grpc-js';

// spawned keels compile the TypeScript sources on start: slow on a loaded machine
t.setTimeout(240_000);

const MAIN = path.join(__dirname, '../../src/cli/main.ts');
const dir = mkdtempSync(path.join(tmpdir(), 'keel-life-'));

interface Proc {
  p: ChildProcess;
  log(): string;
  waitFor(re: RegExp): Promise<RegExpExecArray>;
  exited: Promise<number | null>;
}

function start(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const p = spawn(process.execPath, [...process.execArgv, MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let err = '';
  const waiters: Array<{ re: RegExp; resolve: (m: RegExpExecArray) => void }> = [];
  p.stderr!.on('data', (d) => {
    err += d;
    for (const w of waiters.splice(0)) {
      const m = w.re.exec(err);
      if (m) w.resolve(m);
      else waiters.push(w);
    }
  });
  p.stdout!.resume();
  const exited = new Promise<number | null>((r) => p.on('close', (code) => r(code)));
  return {
    p,
    log: () => err,
    exited,
    waitFor: (re) =>
      new Promise((resolve, reject) => {
        const m = re.exec(err);
        if (m) return resolve(m);
        waiters.push({ re, resolve });
        void exited.then(() => reject(new Error(`keel exited before ${re}: ${err}`)));
      }),
  };
}

function get(port: number, p: string, agent: http.Agent | false = false, method = 'GET'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const r = http.request({ host: '127.0.0.1', port, path: p, agent, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    r.on('error', reject);
    r.end();
  });
}

function listener(name: string, direction: string, cluster: string): string {
  return `
  - name: ${name}
    traffic_direction: ${direction}
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ${name}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: ${cluster} }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }`;
}

function sidecarConfig(appPort: number): string {
  const file = path.join(dir, `sidecar-${appPort}.yaml`);
  writeFileSync(
    file,
    `
node: { id: sidecar~10.0.0.3~app.default~default.svc.cluster.local, cluster: app, metadata: { NAMESPACE: default, WORKLOAD_NAME: app, LABELS: { app: app } } }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:${listener('virtualInbound', 'INBOUND', 'inbound')}${listener('outbound', 'OUTBOUND', 'inbound')}
  clusters:
  - name: inbound
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: inbound, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${appPort} } } } }] }] }
`,
  );
  return file;
}

const PORTS_RE = /listener 'virtualInbound' serving on port (\d+)[\s\S]*listener 'outbound' serving on port (\d+)[\s\S]*admin on port (\d+)[\s\S]*status ports: readiness (\d+), status (\d+), prometheus (\d+)/;

t.test('SIGTERM drains inbound gracefully: traffic during the drain loses no request', async (t) => {
  const app = await startUpstream('app', (_req, res) => {
    setTimeout(() => res.end('ok'), 20);
  });
  t.teardown(() => app.close());
  const k = start(['-c', sidecarConfig(app.port), '--drain-time-s', '2', '--status-port', '0', '--readiness-port', '0', '--prometheus-port', '0']);
  t.teardown(() => k.p.kill('SIGKILL'));
  const m = await k.waitFor(PORTS_RE);
  const [inbound, outbound, , readiness] = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])];
  t.equal((await get(readiness, '/healthz/ready')).status, 200, 'ready once listeners serve');

  let ok = 0;
  const failures: string[] = [];
  let sending = true;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  t.teardown(() => agent.destroy());
  const worker = async (): Promise<void> => {
    while (sending) {
      try {
        const r = await get(inbound, '/work', agent);
        if (r.status === 200 && r.body === 'ok') ok++;
        else failures.push(`status ${r.status}`);
      } catch (e) {
        failures.push((e as Error).message);
      }
    }
  };
  const workers = [worker(), worker(), worker(), worker()];
  while (ok < 20) await new Promise((r) => setTimeout(r, 10));
  const before = ok;
  const sigtermAt = Date.now();
  k.p.kill('SIGTERM');
  await k.waitFor(/SIGTERM: draining/);
  // keep sending well inside the 2 s drain window
  while (Date.now() - sigtermAt < 1000) await new Promise((r) => setTimeout(r, 20));
  t.equal((await get(readiness, '/healthz/ready')).status, 503, 'not ready while draining');
  t.equal((await get(outbound, '/outbound-still-works')).status, 200, 'outbound listeners keep serving during the drain');
  sending = false;
  await Promise.all(workers);
  t.same(failures, [], 'no request failed during the drain');
  t.ok(ok > before + 10, `requests kept succeeding after SIGTERM (${ok - before})`);
  t.equal(await k.exited, 0, 'exits cleanly after the drain');
});

t.test('EXIT_ON_ZERO_ACTIVE_CONNECTIONS exits once no connection is left', async (t) => {
  const app = await startUpstream('app');
  t.teardown(() => app.close());
  const k = start(['-c', sidecarConfig(app.port), '--drain-time-s', '30', '--status-port', '0', '--readiness-port', '0', '--prometheus-port', '0'], {
    EXIT_ON_ZERO_ACTIVE_CONNECTIONS: 'true',
    MINIMUM_DRAIN_DURATION: '100ms',
  });
  t.teardown(() => k.p.kill('SIGKILL'));
  const m = await k.waitFor(PORTS_RE);
  // an idle keep-alive connection is open when SIGTERM comes
  const agent = new http.Agent({ keepAlive: true });
  t.equal((await get(Number(m[1]), '/', agent)).status, 200);
  const at = Date.now();
  k.p.kill('SIGTERM');
  t.equal(await k.exited, 0);
  t.ok(Date.now() - at < 20_000, `exited long before the 30 s drain (${Date.now() - at} ms)`);
  agent.destroy();
});

t.test('status port: app probes, /drain, /quitquitquit', async (t) => {
  const app = await startUpstream('app', (req, res) => {
    res.writeHead(req.url === '/healthy' ? 200 : 500);
    res.end();
  });
  t.teardown(() => app.close());
  const closed = await new Promise<number>((r) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => r(p));
    });
  });
  const keel = await startKeel(`
static_resources:
  listeners:${listener('virtualInbound', 'INBOUND', 'app')}
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: app, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${app.port} } } } }] }] }
`);
  t.teardown(() => keel.stop());
  // a gRPC app with the standard health service: '' is SERVING, 'sick' NOT_SERVING
  const grpcApp = new grpc.Server();
  grpcApp.addService(
    {
      Check: {
        path: '/grpc.health.v1.Health/Check',
        requestStream: false,
        responseStream: false,
        requestSerialize: (v: { service: string }) => Buffer.from(v.service),
        requestDeserialize: (b: Buffer) => ({ service: b.length >= 2 ? b.subarray(2).toString() : '' }),
        responseSerialize: (v: number) => Buffer.from([0x08, v]),
        responseDeserialize: (b: Buffer) => b[1],
      },
    },
    { Check: (call: grpc.ServerUnaryCall<{ service: string }, number>, cb: grpc.sendUnaryData<number>) => cb(null, call.request.service === 'sick' ? 2 : 1) },
  );
  const grpcPort = await new Promise<number>((r, j) => grpcApp.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? j(e) : r(p))));
  t.teardown(() => grpcApp.forceShutdown());
  const probers = {
    '/app-health/grpc/livez': { grpc: { port: grpcPort } },
    '/app-health/grpc/readyz': { grpc: { port: grpcPort, service: 'sick' } },
    '/app-health/grpc/startupz': { grpc: { port: closed }, timeoutSeconds: 1 },
    '/app-health/web/livez': { httpGet: { path: '/healthy', port: app.port, scheme: 'HTTP' }, timeoutSeconds: 1 },
    '/app-health/web/readyz': { httpGet: { path: '/sick', port: app.port } },
    '/app-health/web/startupz': { tcpSocket: { port: app.port } },
    '/app-health/db/livez': { tcpSocket: { port: closed } },
  };
  const status = new StatusServers(keel.server, { host: '127.0.0.1', readinessPort: -1, statusPort: 0, prometheusPort: -1, appProbers: probers });
  await status.listen();
  t.teardown(() => status.close());
  const sp = status.ports.status!;
  t.equal(status.ports.readiness, undefined, '-1 turns a port off');
  t.equal((await get(sp, '/app-health/web/livez')).status, 200);
  t.equal((await get(sp, '/app-health/web/readyz')).status, 500, "the app's failure is reported");
  t.equal((await get(sp, '/app-health/web/startupz')).status, 200, 'tcpSocket probe');
  t.equal((await get(sp, '/app-health/db/livez')).status, 500);
  t.equal((await get(sp, '/app-health/none/livez')).status, 404);
  const live = await get(sp, '/app-health/grpc/livez');
  t.equal(live.status, 200, `gRPC health: SERVING ${live.body}`);
  const sick = await get(sp, '/app-health/grpc/readyz');
  t.same([sick.status, sick.body], [500, 'probe failed: NOT_SERVING\n']);
  t.equal((await get(sp, '/app-health/grpc/startupz')).status, 500, 'gRPC app down');
  t.equal(app.requests.find((r) => r.url === '/healthy')?.headers['user-agent'], 'kube-probe/1.0');
  t.equal((await get(sp, '/healthz/ready')).status, 200);
  t.equal((await get(sp, '/drain')).status, 405, 'POST only');
  t.equal((await get(sp, '/drain', false, 'POST')).status, 200);
  t.equal((await get(sp, '/healthz/ready')).status, 503, 'draining');
  t.equal((await get(keel.port, '/healthy')).status, 200, 'a graceful drain keeps serving');
  const quit = new Promise<void>((r) => (keel.server.onQuit = r));
  t.equal((await get(sp, '/quitquitquit', false, 'POST')).status, 200);
  await quit;
});

t.test('--concurrency 2: stats summed across workers', async (t) => {
  const app = await startUpstream('app');
  t.teardown(() => app.close());
  const k = start(['-c', sidecarConfig(app.port), '--concurrency', '2', '--drain-time-s', '1']);
  t.teardown(() => k.p.kill('SIGKILL'));
  await k.waitFor(/all 2 workers serving/);
  const m = await k.waitFor(/listener 'virtualInbound' serving on port (\d+)[\s\S]*admin on port (\d+)/);
  const port = Number(m[1]);
  const admin = Number(m[2]);
  for (let i = 0; i < 20; i++) t.equal((await get(port, `/${i}`)).status, 200);
  const p = parseProm((await get(admin, '/stats/prometheus')).body);
  t.equal(sum(p, 'istio_requests_total', { reporter: 'destination' }), 20, 'istio_requests_total counts every worker');
  t.equal(find(p, 'envoy_cluster_upstream_rq_total', { cluster_name: 'inbound' })[0].value, 20, 'Envoy stats too');
  t.equal(find(p, 'istio_request_duration_milliseconds_count', { reporter: 'destination' })[0].value, 20);
  const text = (await get(admin, '/stats?filter=^cluster\\.inbound\\.upstream_rq_total$')).body;
  t.equal(text, 'cluster.inbound.upstream_rq_total: 20\n');
  k.p.kill('SIGTERM');
  t.equal(await k.exited, 0);
});
