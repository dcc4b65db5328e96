// Scrape cost of /stats/prometheus: how long one scrape takes and how much memory the series hold,
// for growing numbers of Istio label sets (distinct source/destination workloads × response codes)
// and clusters. Everything runs in one process through keel's own code: IstioMetrics.recordHttp on
// stand-in streams fills the prom-client registry, a KeelServer built from a generated static
// bootstrap holds the clusters, and prometheusText(localScrape(...)) renders what the admin and
// :15090 serve. It also times the request-path cost of recordHttp for a known label set.
//
//   TS_NODE_TRANSPILE_ONLY=1 node --expose-gc --import=./node_modules/@tapjs/typescript/dist/esm/import.mjs bench/scrape/run.ts [maxSeries] [clusters]
//
// Defaults: series 100, 1,000, 10,000 (up to maxSeries, default 10,000) and 1,000 clusters.
// Single process, CPU bound: run it on a quiet machine, never beside load tests.

import { performance } from 'node:perf_hooks';
import { Registry } from 'prom-client';
import { IstioMetrics } from '../../src/stats/istio-metrics';
import { encodePeerMetadata } from '../../src/stats/peer-metadata';
import { HeaderMap } from '../../src/http/headers';
import type { ActiveStream } from '../../src/http/stream';
import { KeelServer } from '../../src/server/server';
import { Logger } from '../../src/common/logger';
import { parseBootstrapText } from '../../src/config/bootstrap';
import { localScrape, prometheusText } from '../../src/stats/scrape';

const MAX_SERIES = Number(process.argv[2] ?? 10_000);
const CLUSTERS = Number(process.argv[3] ?? 1_000);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) process.stderr.write('run with node --expose-gc for meaningful memory figures\n');

function heapMb(): number {
  for (let i = 0; i < 3; i++) gc?.();
  return process.memoryUsage().heapUsed / 1048576;
}

function stream(peer: string, code: number): ActiveStream {
  return {
    connection: { remoteAddress: '10.0.0.1', remotePort: 1, localAddress: '10.0.0.2', localPort: 80, secure: false },
    headers: new HeaderMap([':method', 'GET', ':path', '/', ':authority', 'web.shop.svc.cluster.local']),
    responseHeaders: new HeaderMap(['content-type', 'text/plain', 'content-length', '5']),
    peerMetadata: peer,
    responseCode: code,
    responseFlags: '',
    bytesReceived: 0,
    bytesSent: 5,
    startTime: Date.now() - 3,
    grpc: false,
    authority: 'web.shop.svc.cluster.local',
    cluster: { name: 'inbound|80||', config: { metadata: {} } },
  } as unknown as ActiveStream;
}

function bootstrapYaml(n: number): string {
  let clusters = '';
  for (let i = 0; i < n; i++) {
    clusters += `
  - name: "outbound|80||svc-${i}.ns.svc.cluster.local"
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: c${i}, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 10.1.${i >> 8}.${i & 255}, port_value: 80 } } } }] }] }`;
  }
  return `
node: { id: bench, cluster: bench, metadata: { WORKLOAD_NAME: web, NAMESPACE: shop } }
static_resources:
  clusters:${clusters}
`;
}

async function timeScrape(keel: KeelServer, rounds = 5): Promise<{ ms: number; bytes: number }> {
  let bytes = 0;
  const t0 = performance.now();
  for (let i = 0; i < rounds; i++) bytes = (await prometheusText(await localScrape(keel))).length;
  return { ms: (performance.now() - t0) / rounds, bytes };
}

async function main(): Promise<void> {
  const { bootstrap } = parseBootstrapText(bootstrapYaml(CLUSTERS), 'bench');
  const rows: string[] = ['| label sets | clusters | scrape (ms) | body (KiB) | heap for series (MiB) |', '|---:|---:|---:|---:|---:|'];
  for (const target of [100, 1_000, 10_000, 100_000].filter((n) => n <= MAX_SERIES)) {
    const keel = new KeelServer(bootstrap, { log: new Logger('error'), admin: false });
    const before = heapMb();
    const reg = new Registry();
    const metrics = new IstioMetrics(reg, { WORKLOAD_NAME: 'web', NAMESPACE: 'shop' }, target);
    // the keel's own registry is replaced by this one for the scrape
    (keel as unknown as { metrics: Registry }).metrics = reg;
    const peers: string[] = [];
    for (let i = 0; i < Math.ceil(target / 2); i++) peers.push(encodePeerMetadata({ WORKLOAD_NAME: `client-${i}`, NAMESPACE: 'ns', LABELS: { app: `client-${i}`, version: 'v1' } }));
    let n = 0;
    for (const p of peers) for (const code of [200, 503]) if (n++ < target) metrics.recordHttp('destination', stream(p, code));
    const heap = heapMb() - before;
    const s = await timeScrape(keel);
    rows.push(`| ${target} | ${CLUSTERS} | ${s.ms.toFixed(1)} | ${(s.bytes / 1024).toFixed(0)} | ${heap.toFixed(1)} |`);
    keel.clusters.destroy();
  }
  // request-path cost of one recordHttp on an existing label set
  const reg = new Registry();
  const m = new IstioMetrics(reg, { WORKLOAD_NAME: 'web', NAMESPACE: 'shop' });
  const s = stream(encodePeerMetadata({ WORKLOAD_NAME: 'client', NAMESPACE: 'ns' }), 200);
  for (let i = 0; i < 10_000; i++) m.recordHttp('destination', s);
  const N = 200_000;
  const t0 = performance.now();
  for (let i = 0; i < N; i++) m.recordHttp('destination', s);
  const perCall = ((performance.now() - t0) * 1e6) / N;
  process.stdout.write(rows.join('\n') + `\n\nrecordHttp on a known label set: ${perCall.toFixed(0)} ns per request\n`);
}

void main();
