// `keel route-check`: keel's router_check_tool. Reads a RouteConfiguration (-c) and a file of tests
// in Envoy's router_check_tool format (-t), routes each test's request through the very RouteTable
// the proxy builds, applies what the proxy applies (src/router/apply.ts), and compares the outcome
// with the test's expectations. Prints failures and route coverage the way Envoy's tool does.
//
// Semantics follow Envoy's tool: requests carry :authority, :path, :method, :scheme and
// x-forwarded-proto (ssl), x-envoy-internal (internal) and the additional headers; a runtime
// fraction is enabled only for the test's `runtime` key (random_value % denominator < numerator,
// a numerator of 0 counting as 1); the downstream address is 127.0.0.1:0, the protocol HTTP/1.1.
// Where keel's proxy differs from Envoy's tool, route-check does what keel's proxy does (e.g. it
// removes internal_only_headers from requests that are not internal).

import { registerHttpFilters } from '../filters';
import { eachFlag, UsageError } from './args';
import * as fs from 'node:fs';
import { parseDocument } from 'yaml';
import { decodeRouteConfiguration, parseRouteConfigurationText } from '../config/bootstrap';
import { Diagnostics, indexPath, isObject, Reader } from '../config/decode';
import { ConfigError, ConfigProblem } from '../config/errors';
import type { HeaderMatcherConfig, RouteConfigEntry } from '../config/types';
import { HeaderMap } from '../http/headers';
import { redirectLocation } from '../router/actions';
import { currentUri, finalizeRequestHeaders, finalizeResponseHeaders, routeReply, sslRedirectLocation, stripInternalOnlyHeaders } from '../router/apply';
import type { FormatContext } from '../common/header-format';
import { compileHeaderMatcher, HeaderPredicate } from '../router/matchers';
import { CompiledRoute, CompiledVirtualHost, RouteInput, RouteTable, Runtime } from '../router/route-table';

/** Where route-check writes; tests pass their own. */
export interface RouteCheckIO {
  stdout(text: string): void;
  stderr(text: string): void;
}

const PROCESS_IO: RouteCheckIO = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
};

const USAGE = `usage: keel route-check -c <route config yaml|json> -t <tests yaml|json> [options]
  -c, --config-path <file>   envoy.config.route.v3.RouteConfiguration (YAML or JSON)
  -t, --test-path <file>     tests in router_check_tool's format ({"tests": [...]}, YAML or JSON)
  -o, --output-path <file>   write the test results as JSON (Envoy's ValidationResult fields)
  -d, --details              print the name of every test, passing ones too
      --only-show-failures   print failing tests only (passing names are omitted even with -d)
  -f, --fail-under <percent> fail when route coverage is below <percent>
      --covall               count every validated field of each route (comprehensive coverage)
      --detailed-coverage    list the routes no test exercises
`;

interface Options {
  configPath: string;
  testPath: string;
  outputPath?: string;
  details: boolean;
  onlyShowFailures: boolean;
  failUnder: number;
  covall: boolean;
  detailedCoverage: boolean;
}


function parseArgs(argv: string[]): Options | 'help' {
  let configPath: string | undefined;
  let testPath: string | undefined;
  let outputPath: string | undefined;
  let details = false;
  let onlyShowFailures = false;
  let failUnder = 0;
  let covall = false;
  let detailedCoverage = false;
  const positional: string[] = [];
  for (const { flag, arg, value } of eachFlag(argv)) {
    switch (flag) {
      case '-c':
      case '--config-path':
        configPath = value();
        break;
      case '-t':
      case '--test-path':
        testPath = value();
        break;
      case '-o':
      case '--output-path':
        outputPath = value();
        break;
      case '-d':
      case '--details':
        details = true;
        break;
      case '--only-show-failures':
        onlyShowFailures = true;
        break;
      case '-f':
      case '--fail-under': {
        const v = value();
        failUnder = Number(v);
        if (v.trim() === '' || !Number.isFinite(failUnder)) throw new UsageError(`--fail-under needs a number, not '${v}'`);
        break;
      }
      case '--covall':
        covall = true;
        break;
      case '--detailed-coverage':
        detailedCoverage = true;
        break;
      case '--disable-deprecation-check':
        break; // Envoy's flag; keel has no deprecated-field check to disable
      case '-h':
      case '--help':
        return 'help';
      default:
        if (flag.startsWith('-') && flag !== '-') throw new UsageError(`unknown option ${flag}`);
        positional.push(arg);
    }
  }
  // The original tool's form: router_check_tool <config> <tests>.
  if (configPath === undefined && testPath === undefined && positional.length === 2) [configPath, testPath] = positional;
  else if (positional.length > 0) throw new UsageError(`unexpected argument ${positional[0]}`);
  if (configPath === undefined || testPath === undefined) throw new UsageError('both --config-path/-c and --test-path/-t are required');
  return { configPath, testPath, outputPath, details, onlyShowFailures, failUnder, covall, detailedCoverage };
}

/** Runs `keel route-check <argv>`; resolves to the exit code. */
export async function runRouteCheck(argv: string[], io: RouteCheckIO = PROCESS_IO): Promise<number> {
  let opts: Options | 'help';
  try {
    opts = parseArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    io.stderr(`keel: route-check: ${e.message}\n${USAGE}`);
    return 2;
  }
  if (opts === 'help') {
    io.stdout(USAGE);
    return 0;
  }

  let table: RouteTable;
  let tests: TestCase[];
  try {
    const { routes, warnings } = parseRouteConfigurationText(readText(opts.configPath), opts.configPath, formatOf(opts.configPath));
    for (const w of warnings) io.stderr(`keel: warning: ${w}\n`);
    try {
      registerHttpFilters();
      table = new RouteTable(routes);
    } catch (e) {
      throw new ConfigError([{ path: opts.configPath, message: (e as Error).message }]);
    }
    tests = loadTests(opts.testPath);
  } catch (e) {
    if (e instanceof ConfigError) {
      io.stderr(e.format() + '\n');
      return 1;
    }
    throw e;
  }

  const coverage = new Coverage(table);
  const results = tests.map((t) => runTest(table, t, coverage));

  for (const r of results) {
    if (r.failures.length > 0) io.stderr(`${r.name}\n${r.failures.map((f) => `${f}\n`).join('')}`);
    else if (opts.details && !opts.onlyShowFailures) io.stdout(`${r.name}\n`);
  }
  if (opts.outputPath !== undefined) {
    const shown = opts.onlyShowFailures ? results.filter((r) => r.failures.length > 0) : results;
    const doc = { test_results: shown.map((r) => ({ test_name: r.name, test_passed: r.failures.length === 0, ...(r.failures.length > 0 ? { failure: r.failure } : {}) })) };
    try {
      fs.writeFileSync(opts.outputPath, JSON.stringify(doc, null, 2) + '\n');
    } catch (e) {
      io.stderr(`keel: route-check: cannot write ${opts.outputPath}: ${(e as Error).message}\n`);
      return 1;
    }
  }
  if (results.some((r) => r.failures.length > 0)) return 1;

  if (opts.covall || opts.detailedCoverage) for (const line of coverage.missing()) io.stdout(`${line}\n`);
  const current = coverage.report(opts.covall);
  io.stdout(`Current route coverage: ${formatDouble(current)}%\n`);
  if (opts.failUnder !== 0 && current < opts.failUnder) {
    io.stderr(`Failed to meet coverage requirement: ${formatDouble(opts.failUnder)}%\n`);
    return 1;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Test files

interface HeaderCheck {
  /** the matcher as written, for messages */
  readonly rawName: string;
  readonly form: string;
  readonly config: HeaderMatcherConfig;
  readonly raw: Readonly<Record<string, unknown>>;
  readonly match: HeaderPredicate;
}

interface FieldCheck {
  readonly key: string;
  readonly value: string;
  /** the test type printed on failure */
  readonly type: string;
}

interface TestCase {
  readonly name: string;
  readonly authority: string;
  readonly path: string;
  readonly method: string;
  readonly ssl: boolean;
  readonly internal: boolean;
  readonly randomValue: number;
  readonly runtime: string;
  readonly requestHeaders: readonly (readonly [string, string])[];
  readonly responseHeaders: readonly (readonly [string, string])[];
  readonly dynamicMetadata: Readonly<Record<string, unknown>>;
  readonly expect: {
    readonly cluster_name?: string;
    readonly virtual_cluster_name?: string;
    readonly virtual_host_name?: string;
    readonly path_rewrite?: string;
    readonly host_rewrite?: string;
    readonly path_redirect?: string;
    readonly code_redirect?: number;
  };
  readonly requestHeaderMatches: readonly HeaderCheck[];
  readonly responseHeaderMatches: readonly HeaderCheck[];
  readonly requestHeaderFields: readonly FieldCheck[];
  readonly responseHeaderFields: readonly FieldCheck[];
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError([{ path: file, message: `cannot read the file: ${(e as Error).message}` }]);
  }
}

function formatOf(file: string): 'json' | 'yaml' | undefined {
  if (/\.json$/i.test(file)) return 'json';
  if (/\.ya?ml$/i.test(file)) return 'yaml';
  return undefined;
}

function parseText(text: string, file: string): unknown {
  const fmt = formatOf(file) ?? (/^\s*[[{]/.test(text) ? 'json' : 'yaml');
  if (fmt === 'json') {
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new ConfigError([{ path: file, message: `invalid JSON: ${(e as Error).message}` }]);
    }
  }
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((err) => {
        const pos = err.linePos?.[0];
        return { path: pos ? `${file}:${pos.line}:${pos.col}` : file, message: `invalid YAML: ${err.message.split('\n')[0]}` };
      }),
    );
  }
  return doc.toJS({ maxAliasCount: 1000 });
}

/** Reads and validates a test file (Envoy's Validation message, or the original tool's bare list). */
function loadTests(file: string): TestCase[] {
  const raw = parseText(readText(file), file);
  const diag = new Diagnostics();
  let items: { value: unknown; path: string }[];
  let legacy = false;
  if (Array.isArray(raw)) {
    legacy = true;
    items = raw.map((value, i) => ({ value, path: indexPath('', i) }));
  } else if (isObject(raw)) {
    const r = new Reader(diag, '', raw, 'Validation');
    items = r.list('tests');
    r.done();
    if (items.length === 0 && diag.problems.length === 0) diag.problem('tests', 'at least one test is required');
  } else {
    throw new ConfigError([{ path: file, message: 'a test file is {"tests": [...]} (or a list of tests)' }]);
  }
  const tests: TestCase[] = [];
  for (const item of items) {
    const r = Reader.of(diag, item.path, item.value, 'ValidationItem');
    if (r === undefined) continue;
    const t = decodeTest(r, legacy);
    r.done();
    if (t) tests.push(t);
  }
  if (diag.problems.length > 0) throw new ConfigError(diag.problems);
  return tests;
}

/** Reads `field` or, in the original tool's format, one of its older spellings. */
function pick(r: Reader, legacy: boolean, field: string, ...old: string[]): string {
  if (legacy) for (const o of old) if (r.has(o)) return o;
  return field;
}

function decodeTest(r: Reader, legacy: boolean): TestCase | undefined {
  const name = r.str('test_name');
  if (name === '') r.problem('test_name is required (a non-empty string)', 'test_name');
  if (!r.has('input')) r.problem('input is required', 'input');
  if (!r.has('validate')) r.problem('validate is required', 'validate');
  const input = r.sub('input', 'ValidationInput', (i) => {
    const authorityField = pick(i, legacy, 'authority', ':authority');
    const pathField = pick(i, legacy, 'path', ':path');
    const methodField = pick(i, legacy, 'method', ':method');
    const authority = i.str(authorityField);
    const path = i.str(pathField);
    const method = legacy ? i.str(methodField, 'GET') : i.str(methodField);
    if (authority === '') i.problem('authority is required (a non-empty string)', authorityField);
    if (path === '') i.problem('path is required (a non-empty string)', pathField);
    if (method.length < 3) i.problem('method is required (at least 3 characters)', methodField);
    const requestHeaders = headerValues(i, legacy ? pick(i, legacy, 'additional_request_headers', 'additional_headers') : 'additional_request_headers', legacy);
    const responseHeaders = headerValues(i, 'additional_response_headers', legacy);
    const dynamicMetadata: Record<string, unknown> = {};
    i.objects('dynamic_metadata', 'DynamicMetadata', (d) => {
      const ns = d.requiredStr('metadata_namespace');
      const value = d.struct('value');
      const overwrite = d.bool('allow_overwrite', false);
      if (ns === '') return undefined;
      const prev = dynamicMetadata[ns];
      if (prev === undefined) dynamicMetadata[ns] = value;
      else if (overwrite && isObject(prev)) dynamicMetadata[ns] = { ...prev, ...value }; // Struct MergeFrom
      return undefined;
    });
    return {
      authority,
      path,
      method,
      ssl: i.bool('ssl', false),
      internal: i.bool('internal', false),
      randomValue: i.int64('random_value', 0, { min: 0 }),
      runtime: i.str('runtime'),
      requestHeaders,
      responseHeaders,
      dynamicMetadata,
    };
  });
  const validate = r.sub('validate', 'ValidationAssert', (v) => {
    const expect: Record<string, string | number> = {};
    for (const f of ['cluster_name', 'virtual_cluster_name', 'virtual_host_name', 'host_rewrite', 'path_rewrite', 'path_redirect'] as const) {
      const s = v.optStr(f);
      if (s !== undefined) expect[f] = s;
    }
    const code = v.optUint32('code_redirect');
    if (code !== undefined) expect.code_redirect = code;
    const fields = (field: string, type: string): FieldCheck[] =>
      v.objects(field, 'HeaderValue', (h) => {
        const keyField = legacy && h.has('field') ? 'field' : 'key';
        const key = h.requiredStr(keyField).toLowerCase();
        const value = h.str('value');
        return key === '' ? undefined : { key: key === 'host' ? ':authority' : key, value, type };
      });
    return {
      expect,
      requestHeaderMatches: headerChecks(v, 'request_header_matches'),
      responseHeaderMatches: headerChecks(v, 'response_header_matches'),
      requestHeaderFields: [...fields('request_header_fields', 'request_header_fields'), ...fields('header_fields', 'check_header'), ...fields('custom_header_fields', 'custom_header')],
      responseHeaderFields: fields('response_header_fields', 'response_header_fields'),
    };
  });
  if (!input || !validate || name === '') return undefined;
  return { name, ...input, ...validate };
}

function headerValues(r: Reader, field: string, legacy: boolean): [string, string][] {
  return r.objects(field, 'HeaderValue', (h): [string, string] | undefined => {
    const keyField = legacy && h.has('field') ? 'field' : 'key';
    const key = h.requiredStr(keyField).toLowerCase();
    const value = h.str('value');
    return key === '' ? undefined : [key === 'host' ? ':authority' : key, value];
  });
}

const HEADER_FORMS = ['exact_match', 'safe_regex_match', 'range_match', 'present_match', 'prefix_match', 'suffix_match', 'contains_match'];
const STRING_FORMS = ['exact', 'prefix', 'suffix', 'safe_regex', 'contains'];

function rawField(o: Readonly<Record<string, unknown>>, snake: string): unknown {
  const camel = snake.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
  return o[snake] ?? o[camel];
}

/**
 * HeaderMatchers of a test, decoded by keel's own route decoder (they are route HeaderMatchers), so
 * they mean exactly what they mean in a route; problems keep the test file's paths.
 */
function headerChecks(v: Reader, field: string): HeaderCheck[] {
  const items = v.list(field);
  if (items.length === 0) return [];
  const wrapper = {
    virtual_hosts: [{ name: 'route-check', domains: ['*'], routes: items.map((it) => ({ match: { prefix: '', headers: [it.value] }, direct_response: { status: 200 } })) }],
  };
  let configs: HeaderMatcherConfig[];
  try {
    const { routes } = decodeRouteConfiguration(wrapper);
    configs = routes.virtualHosts[0].routes.map((route: RouteConfigEntry) => route.match.headers[0]);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    for (const p of e.problems) v.diag.problem(...remap(p, items));
    return [];
  }
  return items.map((it, i) => {
    const raw = it.value as Record<string, unknown>;
    const form = HEADER_FORMS.find((f) => rawField(raw, f) !== undefined);
    let label = form ?? 'present_match';
    const sm = rawField(raw, 'string_match');
    if (form === undefined && isObject(sm)) label = `string_match.${STRING_FORMS.find((f) => rawField(sm, f) !== undefined) ?? 'custom'}`;
    return { rawName: String(raw.name), form: label, config: configs[i], raw, match: compileHeaderMatcher(configs[i]) };
  });
}

function remap(p: ConfigProblem, items: { path: string }[]): [string, string] {
  const m = /^virtual_hosts\[0\]\.routes\[(\d+)\]\.match\.headers\[0\](.*)$/.exec(p.path);
  if (m) return [items[Number(m[1])].path + m[2], p.message];
  return [items[0].path, p.message];
}

// ---------------------------------------------------------------------------------------------
// Running a test

/** Envoy's tool mocks the runtime: only the test's `runtime` key is enabled, for random values below the fraction. */
class ToolRuntime extends Runtime {
  constructor(private readonly active: string) {
    super({});
  }
  override fractionEnabled(key: string, numerator: number, denominator: number, random: number): boolean {
    return this.active !== '' && key === this.active && random % denominator < (numerator === 0 ? 1 : numerator);
  }
}

type CoverageField = 'cluster_name' | 'virtual_cluster_name' | 'virtual_host_name' | 'path_rewrite' | 'host_rewrite' | 'path_redirect' | 'code_redirect';

interface TestResult {
  readonly name: string;
  readonly failures: string[];
  /** Envoy's ValidationFailure fields, for --output-path */
  readonly failure: Record<string, unknown>;
}

function runTest(table: RouteTable, t: TestCase, coverage: Coverage): TestResult {
  const headers = new HeaderMap([
    ':authority',
    t.authority,
    ':path',
    t.path,
    ':method',
    t.method,
    'x-forwarded-proto',
    t.ssl ? 'https' : 'http',
    ':scheme',
    t.ssl ? 'https' : 'http',
  ]);
  if (t.internal) headers.add('x-envoy-internal', 'true');
  for (const [k, v] of t.requestHeaders) headers.add(k, v);
  const responseHeaders = new HeaderMap();
  for (const [k, v] of t.responseHeaders) responseHeaders.add(k, v);
  stripInternalOnlyHeaders(table, headers, t.internal);

  const input: RouteInput = {
    authority: headers.first(':authority') ?? '',
    path: t.path,
    method: t.method,
    headers,
    secure: t.ssl,
    internal: t.internal,
    randomValue: t.randomValue,
    runtime: new ToolRuntime(t.runtime),
    dynamicMetadata: t.dynamicMetadata,
  };
  const ctx: FormatContext = {
    remoteAddress: '127.0.0.1',
    remotePort: 0,
    localAddress: '127.0.0.1',
    localPort: 0,
    requestHeaders: headers,
    responseHeaders,
    protocol: 'HTTP/1.1',
    startTime: Date.now(),
  };

  const result = table.route(input);
  // What Envoy calls a route entry (forwarding routes) and a direct response entry (redirects,
  // direct responses, require_tls); each exposes only its own fields, the others read as "".
  let entry: { route: CompiledRoute; vh: CompiledVirtualHost; cluster: string; vcluster: string; weightedIndex: number } | undefined;
  let direct: { route?: CompiledRoute; uri: string; code: number } | undefined;
  if (result.kind === 'route') {
    const route = result.route;
    const a = route.config.action;
    if (a.kind === 'route' || a.kind === 'non_forwarding') {
      const vh = result.virtualHost;
      // the virtual cluster is chosen on the request as it arrived, before the route's header changes
      const vcluster = vh.virtualClusterFor(headers) ?? (vh.virtualClusters.length > 0 ? 'other' : '');
      const chosen = a.kind === 'route' ? route.pickCluster(input) : undefined;
      if (a.kind === 'route') {
        finalizeRequestHeaders(route, chosen, headers, ctx, { keepOriginalPath: true });
        finalizeResponseHeaders(route, chosen, responseHeaders, ctx);
      }
      entry = { route, vh, cluster: chosen?.name ?? '', vcluster, weightedIndex: chosen?.weightedIndex ?? -1 };
    } else if (a.kind === 'redirect' || a.kind === 'direct_response') {
      const uri = a.kind === 'redirect' ? redirectLocation(route, a, headers, t.ssl) : currentUri(route, headers, t.ssl);
      const reply = routeReply(route, headers, t.ssl, ctx)!;
      responseHeaders.add(':status', String(reply.status));
      for (let i = 0; i < reply.headers.raw.length; i += 2) responseHeaders.add(reply.headers.raw[i], reply.headers.raw[i + 1]);
      direct = { route, uri, code: reply.status };
    }
  } else if (result.kind === 'require_tls') {
    const uri = sslRedirectLocation(input.authority, t.path);
    responseHeaders.add(':status', '301');
    responseHeaders.add('location', uri);
    direct = { uri, code: 301 };
  }

  const failures: string[] = [];
  const failure: Record<string, unknown> = {};
  const e = t.expect;
  const check = (field: CoverageField, actual: string | number, expected: string | number | undefined, covers: boolean): void => {
    if (expected === undefined) return;
    if (actual === expected) {
      if (covers && entry) coverage.mark(entry.route, entry.weightedIndex, field);
      else if (covers && direct?.route) coverage.mark(direct.route, -1, field);
      return;
    }
    failures.push(`expected: [${expected}], actual: [${actual}], test type: ${field}`);
    failure[`expected_${field}`] = expected;
    failure[`actual_${field}`] = actual;
  };
  check('cluster_name', entry?.cluster ?? '', e.cluster_name, entry !== undefined);
  check('virtual_cluster_name', entry?.vcluster ?? '', e.virtual_cluster_name, entry !== undefined);
  check('virtual_host_name', entry?.vh.name ?? '', e.virtual_host_name, entry !== undefined);
  check('path_rewrite', entry ? (headers.first(':path') ?? '') : '', e.path_rewrite, entry !== undefined);
  check('host_rewrite', entry ? (headers.first(':authority') ?? '') : '', e.host_rewrite, entry !== undefined);
  check('path_redirect', direct?.uri ?? '', e.path_redirect, direct !== undefined);
  check('code_redirect', direct?.code ?? 0, e.code_redirect, direct !== undefined);

  const headerMatches = (map: HeaderMap, checks: readonly HeaderCheck[], type: string): void => {
    const list: unknown[] = [];
    for (const c of checks) {
      if (c.match(map)) continue;
      // Envoy's tool shows the first value only (a TODO there); the joined value is what was matched.
      const actual = map.get(c.config.name === 'host' ? ':authority' : c.config.name);
      failures.push(headerMatchFailure(c, actual, type));
      list.push({ header_matcher: c.raw, actual_header_value: actual ?? '' });
    }
    if (list.length > 0) failure[type === 'request_header_matches' ? 'request_header_match_failures' : 'response_header_match_failures'] = list;
  };
  headerMatches(headers, t.requestHeaderMatches, 'request_header_matches');
  for (const f of t.requestHeaderFields) fieldCheck(headers, f, failures);
  headerMatches(responseHeaders, t.responseHeaderMatches, 'response_header_matches');
  for (const f of t.responseHeaderFields) fieldCheck(responseHeaders, f, failures);
  return { name: t.name, failures, failure };
}

function fieldCheck(map: HeaderMap, f: FieldCheck, failures: string[]): void {
  const actual = map.first(f.key) ?? '';
  if (actual !== f.value) failures.push(`expected: [${f.value}], actual: [${actual}], test type: ${f.type}`);
}

/** The failure line Envoy's tool prints for a header matcher that did not match. */
function headerMatchFailure(c: HeaderCheck, actual: string | undefined, type: string): string {
  const testType = `${type}.${c.form}`;
  const shown = actual ?? 'NULL';
  if (c.form === 'present_match') {
    const want = (c.config.kind === 'present' ? c.config.present : true) !== c.config.invert;
    return `expected: [has(${c.rawName}):${want}], actual: [has(${c.rawName}):${!want}], test type: ${testType}`;
  }
  if (c.form === 'string_match.exact' && c.config.kind === 'string' && c.config.match.kind === 'exact') {
    return `expected: [${c.rawName}: ${c.config.match.value}], actual: ${c.config.invert ? 'NOT ' : ''}[${c.rawName}: ${shown}], test type: ${testType}`;
  }
  return `actual: [${c.rawName}: ${shown}], test type: ${testType}`;
}

// ---------------------------------------------------------------------------------------------
// Coverage

const ENTRY_FIELDS: readonly CoverageField[] = ['cluster_name', 'virtual_cluster_name', 'virtual_host_name', 'path_rewrite', 'host_rewrite'];
const DIRECT_FIELDS: readonly CoverageField[] = ['path_redirect'];

interface CoverageItem {
  readonly vh: CompiledVirtualHost;
  readonly route: CompiledRoute;
  /** -1 unless the route has weighted clusters: then one item per cluster, as in Envoy's tool */
  readonly weightedIndex: number;
  readonly fields: readonly CoverageField[];
  readonly marked: Set<CoverageField>;
}

/**
 * Envoy's route coverage: a route (each weighted cluster of a route counting separately) is covered
 * once a test validated one of its fields successfully; --covall weighs each route by the share of
 * its fields validated (cluster, virtual cluster, virtual host, path and host rewrite for forwarding
 * routes; the redirect path for redirects and direct responses).
 */
class Coverage {
  private readonly items: CoverageItem[] = [];
  private readonly byRoute = new Map<CompiledRoute, CoverageItem[]>();

  constructor(table: RouteTable) {
    for (const vh of table.virtualHosts) {
      for (const route of vh.routes) {
        const a = route.config.action;
        const fields = a.kind === 'redirect' || a.kind === 'direct_response' ? DIRECT_FIELDS : ENTRY_FIELDS;
        const n = a.kind === 'route' ? (a.weightedClusters?.clusters.length ?? 0) : 0;
        const list: CoverageItem[] = [];
        for (let i = n > 0 ? 0 : -1; i < Math.max(n, 0); i++) list.push({ vh, route, weightedIndex: i, fields, marked: new Set() });
        this.byRoute.set(route, list);
        this.items.push(...list);
      }
    }
  }

  mark(route: CompiledRoute, weightedIndex: number, field: CoverageField): void {
    const list = this.byRoute.get(route);
    const item = list?.find((it) => it.weightedIndex === weightedIndex) ?? list?.[0];
    item?.marked.add(field);
  }

  report(comprehensive: boolean): number {
    if (this.items.length === 0) return 100;
    let sum = 0;
    for (const it of this.items) {
      if (it.marked.size === 0) continue;
      sum += comprehensive ? it.fields.filter((f) => it.marked.has(f)).length / it.fields.length : 1;
    }
    return (100 * sum) / this.items.length;
  }

  /** One line per route (or weighted cluster) no test covered. */
  missing(): string[] {
    const out: string[] = [];
    for (const it of this.items) {
      if (it.marked.size > 0) continue;
      const name = it.route.name !== '' ? `route name: ${it.route.name}` : `route: ${describeMatch(it.route.config)}`;
      const a = it.route.config.action;
      const wc = it.weightedIndex >= 0 && a.kind === 'route' ? a.weightedClusters?.clusters[it.weightedIndex] : undefined;
      const cluster = wc ? `, weighted cluster: ${wc.name !== '' ? wc.name : `cluster_header ${wc.clusterHeader ?? ''}`}` : '';
      out.push(`Missing test for host: ${it.vh.name}, ${name}${cluster}`);
    }
    return out;
  }
}

function describeMatch(route: RouteConfigEntry): string {
  const p = route.match.path;
  switch (p.kind) {
    case 'prefix':
    case 'path':
    case 'path_separated_prefix':
      return `${p.kind}: ${JSON.stringify(p.value)}`;
    case 'regex':
      return `safe_regex: ${JSON.stringify(p.regex)}`;
    case 'connect':
      return 'connect_matcher';
  }
}

/** A double as C++'s ostream prints it (6 significant digits, no trailing zeros). */
function formatDouble(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  return String(Number(x.toPrecision(6)));
}
