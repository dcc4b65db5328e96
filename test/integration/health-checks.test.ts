// Active HTTP health checking (cluster health_checks) against upstreams on loopback whose health
// endpoint is switched at will: hosts start unused until their first check passes, a 503 from
// /healthz takes a host out at once, timeouts take unhealthy_threshold checks, recovery needs
// healthy_threshold passes; expected_statuses, host and path are honoured; decoding refuses bad
// configs with their path. Intervals are short; every wait polls a condition with a deadline.
import t from 'tap';
import { request } from 'undici';
import { parseBootstrapText } from '../../src/config/bootstrap';
import { ConfigError } from '../../src/config/errors';
import { bootstrap, startKeel, startUpstream } from '../helpers/keel';
import { waitUntil } from '../helpers/wait';

const until = (cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> => waitUntil(cond, what, ms);

const vhost = `
            - name: a
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: u, timeout: 5s }`;

function hcCluster(ports: number[], hc: string): string {
  return `
  - name: u
    type: STATIC
    connect_timeout: 1s
    health_checks:
${hc}
    load_assignment:
      cluster_name: u
      endpoints:
      - lb_endpoints:
${ports.map((p) => `        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${p} } } }`).join('\n')}`;
}

type Mode = 'ok' | 'fail' | 'hang';

async function hcUpstream(name: string, mode: { v: Mode }) {
  const probes: { host: string | undefined; ua: string | undefined; extra: string | undefined }[] = [];
  const up = await startUpstream(name, (req, res) => {
    if (req.url === '/healthz') {
      probes.push({ host: req.headers.host, ua: req.headers['user-agent'], extra: req.headers['x-probe'] as string | undefined });
      if (mode.v === 'hang') return;
      res.writeHead(mode.v === 'ok' ? 200 : 503);
      res.end();
      return;
    }
    res.writeHead(200, { 'x-upstream': name });
    res.end(name);
  });
  return { up, probes, traffic: () => up.requests.filter((r) => r.url !== '/healthz').length };
}

const hc = `
    - timeout: 0.2s
      interval: 0.05s
      no_traffic_interval: 0.05s
      unhealthy_threshold: 2
      healthy_threshold: 2
      http_health_check:
        path: /healthz
        host: health.local
        request_headers_to_add: [{ header: { key: x-probe, value: "1" } }]`;

t.test('hosts are used only once healthy; 503 ejects at once; recovery takes healthy_threshold passes', async (t) => {
  const aMode = { v: 'ok' as Mode };
  const bMode = { v: 'fail' as Mode };
  const a = await hcUpstream('a', aMode);
  const b = await hcUpstream('b', bMode);
  const keel = await startKeel(bootstrap(vhost, hcCluster([a.up.port, b.up.port], hc)));
  t.teardown(async () => {
    await keel.stop();
    await a.up.close();
    await b.up.close();
  });
  const c = keel.server.clusters.get('u')!;
  const hostA = c.hosts.find((h) => h.port === a.up.port)!;
  const hostB = c.hosts.find((h) => h.port === b.up.port)!;
  // startKeel waits for cluster warming: every host has had its first probe
  t.notOk(hostA.activeHcFailed, 'a passed its first check (one pass is enough at start)');
  t.ok(hostB.activeHcFailed, 'b failed its first check');
  t.same(a.probes[0], { host: 'health.local', ua: 'Envoy/HC', extra: '1' }, 'probe headers: host, user agent, request_headers_to_add');
  for (let i = 0; i < 10; i++) {
    const r = await request(`${keel.url}/x${i}`);
    t.equal(await r.body.text(), 'a');
  }
  t.equal(b.traffic(), 0, 'no traffic to the failing host');
  t.equal(a.traffic(), 10);

  // b recovers: two passes in a row are needed
  bMode.v = 'ok';
  const probesAtFlip = b.probes.length;
  await until(() => !hostB.activeHcFailed, 5000, 'b healthy');
  t.ok(b.probes.length - probesAtFlip >= 2, `b needed ${b.probes.length - probesAtFlip} probes (>= healthy_threshold 2)`);
  const seen = new Set<string>();
  for (let i = 0; i < 6; i++) seen.add(await (await request(`${keel.url}/y${i}`)).body.text());
  t.same([...seen].sort(), ['a', 'b'], 'both hosts serve again');

  // a answers 503: out after one probe (not in expected_statuses, not retriable)
  const aProbes = a.probes.length;
  aMode.v = 'fail';
  await until(() => hostA.activeHcFailed, 5000, 'a failed');
  t.ok(a.probes.length - aProbes <= 2, 'a 503 fails the host at once (the in-flight probe may still have passed)');
  const before = a.traffic();
  for (let i = 0; i < 6; i++) t.equal(await (await request(`${keel.url}/z${i}`)).body.text(), 'b');
  t.equal(a.traffic(), before, 'no traffic to a');

  // a hangs: timeouts count against unhealthy_threshold; first bring it back
  aMode.v = 'ok';
  await until(() => !hostA.activeHcFailed, 5000, 'a back');
  aMode.v = 'hang';
  const st = c.healthChecker!.stats;
  const netBefore = st.network_failure;
  await until(() => hostA.activeHcFailed, 5000, 'a failed by timeouts');
  t.ok(st.network_failure - netBefore >= 2, `${st.network_failure - netBefore} timed-out probes (>= unhealthy_threshold 2)`);
  t.ok(st.attempt > 0 && st.success > 0 && st.failure > 0, 'counters move');
});

t.test('expected_statuses and tcp_health_check', async (t) => {
  const mode = { v: 'fail' as Mode };
  const a = await hcUpstream('a', mode);
  const keel = await startKeel(
    bootstrap(
      vhost,
      hcCluster(
        [a.up.port],
        `
    - timeout: 0.2s
      interval: 0.05s
      no_traffic_interval: 0.05s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: { path: /healthz, expected_statuses: [{ start: 200, end: 300 }, { start: 503, end: 504 }] }`,
      ),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await a.up.close();
  });
  const host = keel.server.clusters.get('u')!.hosts[0];
  t.notOk(host.activeHcFailed, '503 is expected here');
  t.equal(a.probes[0].host, 'u', 'Host defaults to the cluster name');

  const tcpUp = await hcUpstream('t', { v: 'ok' });
  const keel2 = await startKeel(
    bootstrap(vhost, hcCluster([tcpUp.up.port], `
    - { timeout: 0.2s, interval: 0.05s, no_traffic_interval: 0.05s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {} }`)),
  );
  t.teardown(() => keel2.stop());
  const th = keel2.server.clusters.get('u')!.hosts[0];
  t.notOk(th.activeHcFailed, 'tcp connect check passes');
  await tcpUp.up.close();
  await until(() => th.activeHcFailed, 5000, 'tcp check to fail once the port is closed');
  t.pass('a refused connect fails the tcp check');
});

t.test('health check config is decoded with paths; bad ones are refused', async (t) => {
  const bad = bootstrap(
    vhost,
    hcCluster(
      [1],
      `
    - interval: 1s
      healthy_threshold: 1
      http_health_check: { path: healthz, codec_client_type: HTTP2, expected_statuses: [{ start: 300, end: 200 }] }`,
    ),
  );
  try {
    parseBootstrapText(bad, 'test');
    t.fail('should be refused');
  } catch (e) {
    t.ok(e instanceof ConfigError);
    const msg = (e as ConfigError).message;
    t.match(msg, /health_checks\[0\]\.timeout/, 'timeout is required');
    t.match(msg, /unhealthy_threshold/, 'unhealthy_threshold is required');
    t.match(msg, /path must start with \//);
    t.match(msg, /codec_client_type/);
    t.match(msg, /status range/);
  }
  const grpc = bootstrap(vhost, hcCluster([1], `    - { timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, grpc_health_check: {} }`));
  t.throws(() => parseBootstrapText(grpc, 'test'), /grpc_health_check is not supported/);
});
