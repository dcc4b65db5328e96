#!/usr/bin/env node
// What traffic policy costs per request, as ratios to the plain route. Two parts:
//  1. micro (in-process, from dist/): ns per request for host choice under each lb_policy, for
//     creating and consulting a retry state, and for recording an outcome in outlier detection,
//     next to the plain round-robin pick;
//  2. macro (unless MICRO_ONLY=1): one keel process (dist/src/cli/main.js) with one route per policy
//     in front of one upstream, loaded in turn by wrk (as bench/run does), interleaved over ROUNDS;
//     prints req/s, p50/p99 latency and req/s relative to the plain route.
// Every process it starts is stopped on exit. It measures; it does not tune anything.
//
//   node bench/policy/run.js                    # DURATION=5 ROUNDS=3 CONNS=32 WARMUP=2
//   MICRO_ONLY=1 node bench/policy/run.js
//   DURATION=1 ROUNDS=1 node bench/policy/run.js  # smoke run
//   UPSTREAM_PORT=18080 node bench/policy/run.js  # use an upstream already listening (e.g. bench/run's nginx)
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const net = require('node:net');
const http = require('node:http');
const { spawn, execFileSync } = require('node:child_process');

const root = path.join(__dirname, '../..');
const dist = (p) => path.join(root, 'dist/src', p);
if (!fs.existsSync(dist('cli/main.js'))) {
  console.error('dist/ is missing: run `npx tsc -p tsconfig.json` (or `npm run build`) at the repo root first');
  process.exit(2);
}
const DURATION = Number(process.env.DURATION ?? 5);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const CONNS = Number(process.env.CONNS ?? 32);
const MICRO_ONLY = process.env.MICRO_ONLY === '1';
const WARMUP = Number(process.env.WARMUP ?? 2);

// ---------------------------------------------------------------------------------------------
// 1. micro

function bench(n, fn) {
  for (let i = 0; i < Math.min(n, 50_000); i++) fn(i); // warm up
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn(i);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / n);
  }
  return best; // the best of five: the stable figure on a shared machine
}

function micro() {
  const { Cluster } = require(dist('upstream/cluster'));
  const { compiledRetryPolicy, RetryState } = require(dist('router/retry'));
  const { HeaderMap } = require(dist('http/headers'));
  const { requestHash } = require(dist('router/hash-policy'));

  const endpoints = (n) => [
    {
      locality: { region: '', zone: '', subZone: '' },
      priority: 0,
      loadBalancingWeight: 0,
      endpoints: Array.from({ length: n }, (_, i) => ({
        address: { address: '10.0.0.1', port: 8000 + i },
        hostname: '',
        healthStatus: 'HEALTHY',
        loadBalancingWeight: 1,
        metadata: {},
      })),
    },
  ];
  const cfg = (lbPolicy, over = {}) => ({
    name: 'c', type: 'STATIC', connectTimeoutMs: 1000, lbPolicy, lbOptions: {}, endpoints: endpoints(8), protocol: 'HTTP1',
    http2: {}, idleTimeoutMs: 3_600_000, maxRequestsPerConnection: 0, circuitBreakers: [], healthyPanicThreshold: 50,
    transportSocketMatches: [], dnsRefreshRateMs: 5000, dnsLookupFamily: 'AUTO', respectDnsTtl: false,
    perConnectionBufferLimitBytes: 1 << 20, metadata: {}, ...over,
  });
  const N = 2_000_000;
  const rows = [];
  const plainCluster = new Cluster(cfg('ROUND_ROBIN'), { outlierTimer: false });
  const plain = bench(N, () => plainCluster.pickHost());
  rows.push(['pick: ROUND_ROBIN, 8 hosts (the plain route)', plain]);
  for (const p of ['LEAST_REQUEST', 'RANDOM']) {
    const c = new Cluster(cfg(p), { outlierTimer: false });
    rows.push([`pick: ${p}, 8 hosts`, bench(N, () => c.pickHost())]);
  }
  const weighted = cfg('ROUND_ROBIN');
  weighted.endpoints[0].endpoints.forEach((e, i) => (e.loadBalancingWeight = i + 1));
  const wc = new Cluster(weighted, { outlierTimer: false });
  rows.push(['pick: ROUND_ROBIN weighted (EDF), 8 hosts', bench(N, () => wc.pickHost())]);
  const policies = [{ kind: 'header', name: 'x-user', terminal: false }];
  const headers = new HeaderMap([':path', '/', 'x-user', 'user-1234']);
  for (const p of ['RING_HASH', 'MAGLEV']) {
    const c = new Cluster(cfg(p), { outlierTimer: false });
    rows.push([`pick: ${p} + header hash_policy, 8 hosts`, bench(N / 4, () => c.pickHost(requestHash(policies, headers, '/', '127.0.0.1')))]);
  }
  const od = { consecutive5xx: 5, consecutiveGatewayFailure: 5, consecutiveLocalOriginFailure: 5, intervalMs: 10_000, baseEjectionTimeMs: 30_000,
    maxEjectionTimeMs: 300_000, maxEjectionPercent: 10, enforcingConsecutive5xx: 100, enforcingConsecutiveGatewayFailure: 0,
    enforcingConsecutiveLocalOriginFailure: 100, enforcingSuccessRate: 100, successRateMinimumHosts: 5, successRateRequestVolume: 100,
    successRateStdevFactor: 1900, failurePercentageThreshold: 85, enforcingFailurePercentage: 0, failurePercentageMinimumHosts: 5,
    failurePercentageRequestVolume: 50, splitExternalLocalOriginErrors: false };
  const oc = new Cluster(cfg('ROUND_ROBIN', { outlierDetection: od }), { outlierTimer: false });
  const outcome = { kind: 'status', status: 200 };
  rows.push(['pick + outlier record(200): ROUND_ROBIN, 8 hosts', bench(N, () => oc.recordOutcome(oc.pickHost(), outcome))]);
  const retryCfg = { retryOn: ['5xx', 'connect-failure'], numRetries: 2, perTryTimeoutMs: 0, perTryIdleTimeoutMs: 0, retriableStatusCodes: [],
    hostSelectionRetryMaxAttempts: 1, retryHostPredicates: [], retriableHeaders: [], retriableRequestHeaders: [] };
  const policy = compiledRetryPolicy(retryCfg);
  const reqHeaders = new HeaderMap([':path', '/', ':method', 'GET', 'user-agent', 'wrk']);
  const respHeaders = new HeaderMap(['content-type', 'text/plain']);
  rows.push(['pick + retry state create + wouldRetry(200)', bench(N / 2, () => {
    plainCluster.pickHost();
    RetryState.create(policy, reqHeaders).wouldRetryHeaders(200, respHeaders);
  })]);
  console.log('\n## micro: per-request policy work, in-process (best of 5)\n');
  console.log('| what | ns/request | vs plain pick |');
  console.log('|---|---:|---:|');
  for (const [name, ns] of rows) console.log(`| ${name} | ${ns.toFixed(1)} | ${(ns / plain).toFixed(2)}× |`);
  for (const c of [plainCluster, wc, oc]) c.destroy();
}

// ---------------------------------------------------------------------------------------------
// 2. macro

const children = [];
function cleanup() {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

async function waitFor(port, pathName, ms = 30_000) {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port, path: pathName, headers: { 'x-user': 'probe' } }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing answered 200 on ${port}${pathName}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function keelConfig(keelPort, upPort) {
  const ep = (n) => Array.from({ length: n }, () => `        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${upPort} } } }`).join('\n');
  const cluster = (name, extra, n = 4) => `
  - name: ${name}
    type: STATIC
    connect_timeout: 1s
${extra}
    load_assignment:
      cluster_name: ${name}
      endpoints:
      - lb_endpoints:
${ep(n)}`;
  const routes = [
    ['/plain', 'cluster: plain'],
    ['/retry', 'cluster: plain, retry_policy: { retry_on: "5xx,connect-failure,reset", num_retries: 2, per_try_timeout: 5s }'],
    ['/outlier', 'cluster: outlier'],
    ['/least', 'cluster: least'],
    ['/random', 'cluster: random'],
    ['/ring', 'cluster: ring, hash_policy: [{ header: { header_name: x-user } }]'],
    ['/maglev', 'cluster: maglev, hash_policy: [{ header: { header_name: x-user } }]'],
  ];
  return {
    routes: routes.map((r) => r[0]),
    yaml: `
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: ${keelPort} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
${routes.map(([p, a]) => `              - { match: { prefix: ${p} }, route: { ${a} } }`).join('\n')}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
${cluster('plain', '')}
${cluster('outlier', '    outlier_detection: { consecutive_5xx: 5, interval: 1s, base_ejection_time: 30s }')}
${cluster('least', '    lb_policy: LEAST_REQUEST')}
${cluster('random', '    lb_policy: RANDOM')}
${cluster('ring', '    lb_policy: RING_HASH')}
${cluster('maglev', '    lb_policy: MAGLEV')}
`,
  };
}

function wrk(url, secs = DURATION) {
  return new Promise((resolve, reject) => {
    const p = spawn('wrk', ['-t1', `-c${CONNS}`, `-d${secs}s`, '--latency', '-H', 'x-user: user-42', url], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(p);
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('error', reject);
    p.on('close', () => {
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
      const lat = (q) => {
        const m = new RegExp(`\\s${q}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
        if (!m) return NaN;
        return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
      };
      const errs = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1];
      resolve({ rps, p50: lat(50), p99: lat(99), errors: Number(errs ?? 0) });
    });
  });
}

async function macro() {
  try {
    execFileSync('wrk', ['-v'], { stdio: 'ignore' });
  } catch (e) {
    if (e.code === 'ENOENT') {
      console.error('wrk is not installed (bench/run installs it with apt-get): skipping the macro part');
      return;
    }
  }
  let upPort = Number(process.env.UPSTREAM_PORT ?? 0);
  if (!upPort) {
    upPort = await freePort();
    const body = 'x'.repeat(100);
    const up = spawn(process.execPath, ['-e', `require('http').createServer((q,s)=>{s.setHeader('content-type','text/plain');s.end(${JSON.stringify(body)})}).listen(${upPort},'127.0.0.1')`], { stdio: 'inherit' });
    children.push(up);
    await waitFor(upPort, '/');
  }
  const keelPort = await freePort();
  const { routes, yaml } = keelConfig(keelPort, upPort);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-policy-'));
  const cfgPath = path.join(dir, 'policy.yaml');
  fs.writeFileSync(cfgPath, yaml);
  const keel = spawn(process.execPath, [dist('cli/main.js'), '-c', cfgPath, ...(process.env.KEEL_ARGS ? process.env.KEEL_ARGS.split(' ') : [])], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(keel);
  for (const r of routes) await waitFor(keelPort, r);

  // warm-up: every route once, so the JIT has seen all paths before anything is measured
  if (WARMUP > 0) for (const r of routes) await wrk(`http://127.0.0.1:${keelPort}${r}`, WARMUP);
  const results = new Map(routes.map((r) => [r, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const r of routes) results.get(r).push(await wrk(`http://127.0.0.1:${keelPort}${r}`));
  }
  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.floor(s.length / 2)];
  };
  const plainRps = median(results.get('/plain').map((x) => x.rps));
  console.log(`\n## macro: wrk -t1 -c${CONNS} -d${DURATION}s, ${ROUNDS} round(s) interleaved, median per route (one keel process)\n`);
  console.log('| route | policy | req/s | vs plain | p50 ms | p99 ms | non-2xx |');
  console.log('|---|---|---:|---:|---:|---:|---:|');
  const what = {
    '/plain': 'ROUND_ROBIN, 4 hosts, no retry policy',
    '/retry': 'plain + retry_policy (5xx, connect-failure, reset; per_try_timeout)',
    '/outlier': 'plain + outlier_detection',
    '/least': 'LEAST_REQUEST',
    '/random': 'RANDOM',
    '/ring': 'RING_HASH + header hash_policy',
    '/maglev': 'MAGLEV + header hash_policy',
  };
  for (const r of routes) {
    const xs = results.get(r);
    const rps = median(xs.map((x) => x.rps));
    console.log(`| ${r} | ${what[r]} | ${rps.toFixed(0)} | ${(rps / plainRps).toFixed(3)} | ${median(xs.map((x) => x.p50)).toFixed(2)} | ${median(xs.map((x) => x.p99)).toFixed(2)} | ${xs.reduce((a, x) => a + x.errors, 0)} |`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

(async () => {
  micro();
  if (!MICRO_ONLY) await macro();
  cleanup();
  process.exit(0);
})().catch((e) => {
  console.error(e);
  cleanup();
  process.exit(1);
});
