// `keel translate -f ...` and `keel -f ...` as a user runs them: the generated Envoy config, every
// problem with its path and exit 1, the route table checked with `keel route-check`, and the file
// watch: an edit applies live, an invalid edit changes nothing and logs every problem.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { request } from 'undici';
import { startUpstream } from '../helpers/keel';
import { endpointsYaml } from '../helpers/istio';
import { main } from '../../src/cli/main';

t.setTimeout(180_000);

const MAIN = path.join(__dirname, '../../src/cli/main.ts');
const EXAMPLES = path.join(__dirname, '../../config/istio-examples');

function keel(args: string[]): ChildProcess {
  return spawn(process.execPath, [...process.execArgv, MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The command in-process (main() as the binary calls it), with stdout and stderr captured. */
async function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((d: string | Uint8Array) => ((stdout += String(d)), true)) as typeof process.stdout.write;
  process.stderr.write = ((d: string | Uint8Array) => ((stderr += String(d)), true)) as typeof process.stderr.write;
  try {
    const code = await main(args);
    return { code, stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
}

const dir = mkdtempSync(path.join(tmpdir(), 'keel-istio-cli-'));

t.test('keel translate prints the Envoy bootstrap istiod-style', async (t) => {
  const r = await run([
    'translate',
    '-f',
    path.join(EXAMPLES, 'reviews-endpoints.yaml'),
    '-f',
    path.join(EXAMPLES, 'destination-rule-reviews.yaml'),
    '-f',
    path.join(EXAMPLES, 'virtual-service-reviews-jason-v2-v3.yaml'),
  ]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /name: outbound\|9080\|v2\|reviews\.default\.svc\.cluster\.local/);
  t.match(r.stdout, /retry_on: connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes/);
  t.match(r.stdout, /"@type": type\.googleapis\.com\/envoy\.extensions\.filters\.network\.http_connection_manager\.v3\.HttpConnectionManager/);
});

t.test('an invalid file: every problem with its resource and path, exit 1', async (t) => {
  const file = path.join(dir, 'bad.yaml');
  writeFileSync(
    file,
    `${endpointsYaml('reviews', 9080, [[9081, 'v1']])}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - route:
    - { destination: { host: reviews, subset: v1 }, weight: 50 }
    - { destination: { host: reviews, subset: v9 }, weight: "half" }
    timeout: soon
`,
  );
  const r = await run(['translate', '-f', file]);
  t.equal(r.code, 1);
  t.match(r.stderr, /VirtualService reviews: spec\.http\[0\]\.route\[1\]\.weight: must be integer/);
  t.match(r.stderr, /VirtualService reviews: spec\.http\[0\]\.route\[0\]\.destination\.subset: subset 'v1' of reviews\.default\.svc\.cluster\.local is not defined by any DestinationRule/);
  t.equal(r.stdout, '', 'nothing is printed as config');
});

t.test('translate --routes feeds keel route-check', async (t) => {
  const routes = path.join(dir, 'routes.yaml');
  const r = await run([
    'translate',
    '--routes',
    '-f',
    path.join(EXAMPLES, 'reviews-endpoints.yaml'),
    '-f',
    path.join(EXAMPLES, 'destination-rule-reviews.yaml'),
    '-f',
    path.join(EXAMPLES, 'virtual-service-reviews-jason-v2-v3.yaml'),
  ]);
  t.equal(r.code, 0, r.stderr);
  writeFileSync(routes, r.stdout);
  const tests = path.join(dir, 'tests.yaml');
  writeFileSync(
    tests,
    `tests:
- test_name: jason gets v2
  input: { authority: "reviews:9080", path: /reviews/0, method: GET, additional_request_headers: [{ key: end-user, value: jason }] }
  validate: { cluster_name: "outbound|9080|v2|reviews.default.svc.cluster.local" }
- test_name: everyone else gets v3
  input: { authority: reviews, path: /reviews/0, method: GET }
  validate: { cluster_name: "outbound|9080|v3|reviews.default.svc.cluster.local" }
`,
  );
  const check = await run(['route-check', '-c', routes, '-t', tests]);
  t.equal(check.code, 0, check.stdout + check.stderr);
});

t.test('keel -f: serves, applies an edit live, refuses an invalid edit and keeps serving', async (t) => {
  const v1 = await startUpstream('v1');
  const v2 = await startUpstream('v2');
  const work = mkdtempSync(path.join(tmpdir(), 'keel-istio-watch-'));
  writeFileSync(path.join(work, 'endpoints.yaml'), endpointsYaml('reviews', 9080, [[v1.port, 'v1'], [v2.port, 'v2']]));
  copyFileSync(path.join(EXAMPLES, 'destination-rule-reviews.yaml'), path.join(work, 'dr.yaml'));
  const vs = (subset: string, extra = ''): string => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: { host: reviews, subset: ${subset} }
${extra}`;
  const vsFile = path.join(work, 'vs.yaml');
  writeFileSync(vsFile, vs('v1'));
  const p = keel(['-f', work, '--listen', '127.0.0.1:0', '--admin-address', 'none']);
  let err = '';
  p.stderr!.on('data', (d) => (err += d));
  t.teardown(async () => {
    p.kill('SIGKILL');
    await v1.close();
    await v2.close();
  });
  const until = async (cond: () => boolean | Promise<boolean>, what: string, ms = 15_000): Promise<void> => {
    const deadline = Date.now() + ms;
    while (!(await cond())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; keel said:\n${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  // a child process loads the TypeScript sources first: slow on a busy machine
  await until(() => /serving on port (\d+)/.test(err), 'the listener', 90_000);
  const port = Number(/serving on port (\d+)/.exec(err)![1]);
  const upstream = async (): Promise<string> => {
    const r = await request(`http://127.0.0.1:${port}/`, { headers: { host: 'reviews:9080' }, reset: true });
    await r.body.text();
    return String(r.headers['x-upstream'] ?? r.statusCode);
  };
  t.equal(await upstream(), 'v1');
  await until(() => /watching/.test(err), 'the watcher');

  writeFileSync(vsFile, vs('v2'));
  // A connection that arrives while the replaced listener hands over may be closed by its drain
  // (xDS listener-update semantics); such an attempt counts as "not yet".
  await until(async () => (await upstream().catch(() => '')) === 'v2', 'the edit to apply');
  t.pass('the edit routes to v2 without a restart');

  writeFileSync(vsFile, vs('v7', '    timeout: whenever\n'));
  await until(() => /refused/.test(err), 'the refusal');
  t.match(err, /spec\.http\[0\]\.route\[0\]\.destination\.subset: subset 'v7'/);
  t.match(err, /spec\.http\[0\]\.timeout: expected a duration/);
  t.equal(await upstream(), 'v2', 'the last good config keeps serving');
});
