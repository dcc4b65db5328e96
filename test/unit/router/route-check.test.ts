// Runs `keel route-check` on every test/route-check/<feature>.routes.yaml + <feature>.tests.yaml
// pair (these pairs are the route-matching tests of the project), then checks the tool itself:
// failure output, exit codes, coverage, config and test-file errors.

import t, { Test } from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runRouteCheck } from '../../../src/cli/route-check';

const DIR = path.join(__dirname, '..', '..', 'route-check');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(...argv: string[]): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const code = await runRouteCheck(argv, { stdout: (s) => (stdout += s), stderr: (s) => (stderr += s) });
  return { code, stdout, stderr };
}

const pairs = fs
  .readdirSync(DIR)
  .filter((f) => f.endsWith('.routes.yaml'))
  .map((f) => f.slice(0, -'.routes.yaml'.length))
  .sort();

t.test('every fixture pair passes with 100% route coverage', async (t) => {
  t.ok(pairs.length >= 17, `found ${pairs.length} pairs`);
  for (const name of pairs) {
    const tests = path.join(DIR, `${name}.tests.yaml`);
    t.ok(fs.existsSync(tests), `${name}.tests.yaml exists`);
    const r = await run('-c', path.join(DIR, `${name}.routes.yaml`), '-t', tests, '--details');
    t.equal(r.stderr, '', `${name}: no failures`);
    t.equal(r.code, 0, `${name}: exit 0`);
    t.match(r.stdout, /^Current route coverage: 100%$/m, `${name}: 100% coverage`);
  }
});

t.test('every tests file belongs to a routes file', async (t) => {
  const orphans = fs.readdirSync(DIR).filter((f) => f.endsWith('.tests.yaml') && !pairs.includes(f.slice(0, -'.tests.yaml'.length)));
  t.same(orphans, []);
});

// ---------------------------------------------------------------------------------------------
// The tool itself

const ROUTES = `
virtual_hosts:
- name: www
  domains: [www.example.com]
  virtual_clusters:
  - name: vc-get
    headers: [{ name: ":method", string_match: { exact: GET } }]
  routes:
  - match: { prefix: /api }
    route: { cluster: api, prefix_rewrite: /v2 }
  - match: { path: /old }
    redirect: { path_redirect: /new, response_code: FOUND }
  - name: named-route
    match: { prefix: /named }
    route: { cluster: named }
  - match: { prefix: /w }
    route: { weighted_clusters: { clusters: [{ name: w1, weight: 1 }, { name: w2, weight: 1 }] } }
`;

function files(t: Test, tests: string, routes = ROUTES): { c: string; t: string; dir: string } {
  const dir = t.testdir({ 'routes.yaml': routes, 'tests.yaml': tests });
  return { c: path.join(dir, 'routes.yaml'), t: path.join(dir, 'tests.yaml'), dir };
}

const PASSING = `
tests:
- test_name: api
  input: { authority: www.example.com, path: /api/x, method: GET }
  validate: { cluster_name: api, path_rewrite: /v2/x }
- test_name: old
  input: { authority: www.example.com, path: /old, method: GET }
  validate: { path_redirect: "http://www.example.com/new", code_redirect: 302 }
`;

const FAILING = `
tests:
- test_name: passes
  input: { authority: www.example.com, path: /api, method: GET }
  validate: { cluster_name: api }
- test_name: wrong cluster
  input: { authority: www.example.com, path: /api/x, method: GET }
  validate: { cluster_name: web, virtual_host_name: www, virtual_cluster_name: vc-post }
- test_name: wrong redirect
  input: { authority: www.example.com, path: /old, method: GET }
  validate: { path_redirect: "http://www.example.com/newer", code_redirect: 301, cluster_name: api }
`;

t.test('a wrong expectation fails with Envoy-style lines and a non-zero exit', async (t) => {
  const f = files(t, FAILING);
  const r = await run('-c', f.c, '-t', f.t);
  t.equal(r.code, 1);
  t.equal(
    r.stderr,
    [
      'wrong cluster',
      'expected: [web], actual: [api], test type: cluster_name',
      'expected: [vc-post], actual: [vc-get], test type: virtual_cluster_name',
      'wrong redirect',
      'expected: [api], actual: [], test type: cluster_name',
      'expected: [http://www.example.com/newer], actual: [http://www.example.com/new], test type: path_redirect',
      'expected: [301], actual: [302], test type: code_redirect',
      '',
    ].join('\n'),
  );
  t.notMatch(r.stdout, /passes/, 'passing tests are not listed without --details');
  t.notMatch(r.stdout, /Current route coverage/, 'no coverage report when a test fails (as Envoy)');
});

t.test('--details lists passing tests; --only-show-failures hides them', async (t) => {
  const f = files(t, FAILING);
  const d = await run('-c', f.c, '-t', f.t, '-d');
  t.equal(d.code, 1);
  t.equal(d.stdout, 'passes\n');
  t.match(d.stderr, /^wrong cluster\n/);
  const o = await run('-c', f.c, '-t', f.t, '--details', '--only-show-failures');
  t.equal(o.code, 1);
  t.equal(o.stdout, '');
  t.match(o.stderr, /^wrong cluster\nexpected: \[web\]/);
});

t.test('header matcher failures are reported like Envoy', async (t) => {
  const f = files(
    t,
    `
tests:
- test_name: headers
  input:
    authority: www.example.com
    path: /api/x
    method: GET
    additional_request_headers: [{ key: x-a, value: "1" }, { key: x-a, value: "2" }]
    additional_response_headers: [{ key: x-r, value: yes }]
  validate:
    request_header_matches:
    - { name: x-missing, present_match: true }
    - { name: x-a, present_match: true, invert_match: true }
    - { name: x-a, string_match: { exact: "1" } }
    - { name: x-a, string_match: { exact: "1,2" }, invert_match: true }
    - { name: x-a, range_match: { start: 5, end: 10 } }
    - { name: x-a, exact_match: "3" }
    - { name: x-a, string_match: { prefix: "9" } }
    - { name: :path, string_match: { exact: /v2/x } }
    - { name: x-envoy-original-path, string_match: { exact: /api/x } }
    response_header_matches:
    - { name: x-r, string_match: { exact: pong } }
    - { name: x-none, string_match: { exact: pong } }
    request_header_fields: [{ key: x-a, value: "2" }]
    response_header_fields: [{ key: x-r, value: "no" }]
`,
  );
  const r = await run('-c', f.c, '-t', f.t);
  t.equal(r.code, 1);
  t.equal(
    r.stderr,
    [
      'headers',
      'expected: [has(x-missing):true], actual: [has(x-missing):false], test type: request_header_matches.present_match',
      'expected: [has(x-a):false], actual: [has(x-a):true], test type: request_header_matches.present_match',
      'expected: [x-a: 1], actual: [x-a: 1,2], test type: request_header_matches.string_match.exact',
      'expected: [x-a: 1,2], actual: NOT [x-a: 1,2], test type: request_header_matches.string_match.exact',
      'actual: [x-a: 1,2], test type: request_header_matches.range_match',
      'actual: [x-a: 1,2], test type: request_header_matches.exact_match',
      'actual: [x-a: 1,2], test type: request_header_matches.string_match.prefix',
      'expected: [2], actual: [1], test type: request_header_fields',
      'expected: [x-r: pong], actual: [x-r: yes], test type: response_header_matches.string_match.exact',
      'expected: [x-none: pong], actual: [x-none: NULL], test type: response_header_matches.string_match.exact',
      'expected: [no], actual: [yes], test type: response_header_fields',
      '',
    ].join('\n'),
  );
});

t.test('coverage: percentage, --covall, --detailed-coverage and --fail-under', async (t) => {
  const f = files(t, PASSING);
  // 5 items: /api, /old, /named, and the two weighted clusters of /w; /api and /old are covered.
  const r = await run('-c', f.c, '-t', f.t);
  t.equal(r.code, 0);
  t.equal(r.stdout, 'Current route coverage: 40%\n');
  const all = await run('-c', f.c, '-t', f.t, '--covall');
  // /api: 2 of 5 fields (cluster, path rewrite), /old: 1 of 1 (path_redirect): (0.4 + 1) / 5
  t.equal(
    all.stdout,
    [
      'Missing test for host: www, route name: named-route',
      'Missing test for host: www, route: prefix: "/w", weighted cluster: w1',
      'Missing test for host: www, route: prefix: "/w", weighted cluster: w2',
      'Current route coverage: 28%',
      '',
    ].join('\n'),
  );
  const detailed = await run('-c', f.c, '-t', f.t, '--detailed-coverage');
  t.match(detailed.stdout, /^Missing test for host: www, route name: named-route\n/);
  t.match(detailed.stdout, /Current route coverage: 40%\n$/);
  const under = await run('-c', f.c, '-t', f.t, '-f', '50');
  t.equal(under.code, 1);
  t.equal(under.stderr, 'Failed to meet coverage requirement: 50%\n');
  const over = await run('-c', f.c, '-t', f.t, '--fail-under=40');
  t.equal(over.code, 0);
});

t.test('weighted clusters count one by one', async (t) => {
  const f = files(
    t,
    `
tests:
- test_name: w1
  input: { authority: www.example.com, path: /w, method: GET, random_value: 0 }
  validate: { cluster_name: w1 }
- test_name: w2
  input: { authority: www.example.com, path: /w, method: GET, random_value: 1 }
  validate: { cluster_name: w2 }
`,
  );
  const r = await run('-c', f.c, '-t', f.t);
  t.equal(r.stdout, 'Current route coverage: 40%\n');
});

t.test('a bad route config reports the path of each problem', async (t) => {
  const f = files(
    t,
    PASSING,
    `
virtual_hosts:
- name: www
  domains: [www.example.com]
  routes:
  - match: { prefix: /, headers: [{ name: x-a, string_match: { exact: a, prefix: b } }] }
    route: { cluster: api, prefix_rewritten: /x }
  - match: { safe_regex: { regex: "(" } }
    route: { cluster: api }
`,
  );
  const r = await run('-c', f.c, '-t', f.t);
  t.equal(r.code, 1);
  t.equal(r.stdout, '');
  const lines = r.stderr.trimEnd().split('\n');
  t.ok(lines.length >= 3);
  t.ok(lines.every((l) => l.startsWith('keel: config error: ')), r.stderr);
  t.match(r.stderr, /^keel: config error: virtual_hosts\[0\]\.routes\[0\]\.match\.headers\[0\]\.string_match: exactly one of exact, prefix/m);
  t.match(r.stderr, /^keel: config error: virtual_hosts\[0\]\.routes\[0\]\.route: unknown field 'prefix_rewritten'$/m);
  t.match(r.stderr, /^keel: config error: virtual_hosts\[0\]\.routes\[1\]\.match\.safe_regex\.regex: invalid regex/m);
});

t.test('a YAML syntax error reports file, line and column', async (t) => {
  const f = files(t, PASSING, 'virtual_hosts:\n  - name: [unclosed\n');
  const r = await run('-c', f.c, '-t', f.t);
  t.equal(r.code, 1);
  t.match(r.stderr, new RegExp(`^keel: config error: ${f.c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: invalid YAML`));
});

t.test('a header value with a bad substitution is a config error', async (t) => {
  const f = files(
    t,
    PASSING,
    `
virtual_hosts:
- name: www
  domains: ["*"]
  routes:
  - match: { prefix: / }
    route: { cluster: api }
    request_headers_to_add: [{ header: { key: x-a, value: "%NOT_A_COMMAND%" } }]
`,
  );
  const r = await run('-c', f.c, '-t', f.t);
  t.equal(r.code, 1);
  t.match(r.stderr, /^keel: config error: virtual_hosts\[0\]\.routes\[0\]\.request_headers_to_add\[0\]\.header\.value: unsupported header substitution %NOT_A_COMMAND%/);
});

t.test('a bad test file reports the path of each problem', async (t) => {
  const f = files(
    t,
    `
tests:
- test_name: ""
  input: { authority: www.example.com, path: /, metod: GET }
  validate: { cluster_name: 7 }
- test_name: matchers
  input: { authority: www.example.com, path: /, method: GET }
  validate:
    request_header_matches:
    - { name: x-a, string_match: { safe_regex: { regex: "(" } } }
    - { string_match: { exact: a } }
`,
  );
  const r = await run('-c', f.c, '-t', f.t);
  t.equal(r.code, 1);
  t.match(r.stderr, /^keel: config error: tests\[0\]\.test_name: test_name is required/m);
  t.match(r.stderr, /^keel: config error: tests\[0\]\.input\.method: method is required/m);
  t.match(r.stderr, /^keel: config error: tests\[0\]\.input: unknown field 'metod'$/m);
  t.match(r.stderr, /^keel: config error: tests\[0\]\.validate\.cluster_name: expected a string/m);
  t.match(r.stderr, /^keel: config error: tests\[1\]\.validate\.request_header_matches\[0\]\.string_match\.safe_regex\.regex: invalid regex/m);
  t.match(r.stderr, /^keel: config error: tests\[1\]\.validate\.request_header_matches\[1\]\.name: name is required$/m);
});

t.test('an empty test list is an error', async (t) => {
  const f = files(t, 'tests: []\n');
  const r = await run('-c', f.c, '-t', f.t);
  t.equal(r.code, 1);
  t.equal(r.stderr, 'keel: config error: tests: at least one test is required\n');
});

t.test('JSON test files and the original bare-list format', async (t) => {
  const dir = t.testdir({
    'routes.json': JSON.stringify({ virtual_hosts: [{ name: 'www', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'app' } }] }] }),
    'tests.json': JSON.stringify({ tests: [{ test_name: 'json', input: { authority: 'a', path: '/', method: 'GET' }, validate: { cluster_name: 'app' } }] }),
    'legacy.json': JSON.stringify([
      { test_name: 'legacy', input: { ':authority': 'a', ':path': '/', additional_headers: [{ field: 'x-a', value: '1' }] }, validate: { cluster_name: 'app', header_fields: [{ field: 'x-a', value: '1' }] } },
      { test_name: 'legacy fails', input: { ':authority': 'a', ':path': '/' }, validate: { custom_header_fields: [{ field: 'x-a', value: '1' }] } },
    ]),
  });
  const json = await run('-c', path.join(dir, 'routes.json'), '-t', path.join(dir, 'tests.json'));
  t.equal(json.code, 0);
  t.equal(json.stdout, 'Current route coverage: 100%\n');
  const legacy = await run(path.join(dir, 'routes.json'), path.join(dir, 'legacy.json'));
  t.equal(legacy.code, 1);
  t.equal(legacy.stderr, 'legacy fails\nexpected: [1], actual: [], test type: custom_header\n');
});

t.test('--output-path writes the results as JSON', async (t) => {
  const f = files(t, FAILING);
  const out = path.join(f.dir, 'out.json');
  const r = await run('-c', f.c, '-t', f.t, '-o', out, '--only-show-failures');
  t.equal(r.code, 1);
  const doc = JSON.parse(fs.readFileSync(out, 'utf8')) as { test_results: { test_name: string; test_passed: boolean; failure?: Record<string, unknown> }[] };
  t.same(
    doc.test_results.map((x) => [x.test_name, x.test_passed]),
    [
      ['wrong cluster', false],
      ['wrong redirect', false],
    ],
  );
  t.same(doc.test_results[0].failure, { expected_cluster_name: 'web', actual_cluster_name: 'api', expected_virtual_cluster_name: 'vc-post', actual_virtual_cluster_name: 'vc-get' });
});

t.test('usage errors', async (t) => {
  const missing = await run('-c', 'x.yaml');
  t.equal(missing.code, 2);
  t.match(missing.stderr, /^keel: route-check: both --config-path\/-c and --test-path\/-t are required\n/);
  const unknown = await run('-c', 'a', '-t', 'b', '--bogus');
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /unknown option --bogus/);
  const notFound = await run('-c', '/nonexistent/routes.yaml', '-t', '/nonexistent/tests.yaml');
  t.equal(notFound.code, 1);
  t.match(notFound.stderr, /^keel: config error: \/nonexistent\/routes\.yaml: cannot read the file/);
  const help = await run('--help');
  t.equal(help.code, 0);
  t.match(help.stdout, /^usage: keel route-check/);
});
