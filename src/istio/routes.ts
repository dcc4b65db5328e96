// VirtualService http routes -> Envoy routes, as istiod's route translation does it: one Envoy route
// per match condition in rule order, matches (uri, headers, withoutHeaders, queryParams, method,
// authority, scheme, ignoreUriCase), route/weighted_clusters to `outbound|port|subset|host`,
// redirect, rewrite, directResponse, timeout (0 = none), retries (istiod's default policy when
// unset), fault and CORS as per-route filter config, mirrors, header manipulation, hash policy from
// the destination's DestinationRule. Produces raw Envoy v3 JSON; problems go to the diagnostics.

import { envoyDuration, parseIstioDuration } from './durations';
import { type IstioDiagnostics, type Obj, isObj } from './resources';
import { TYPE_URL } from './traffic-policy';

export const FAULT_FILTER = 'envoy.filters.http.fault';
export const CORS_FILTER = 'envoy.filters.http.cors';

/** istiod's retry policy when a rule sets none (retry.DefaultPolicy). */
export function defaultRetryPolicy(): Obj {
  return {
    retry_on: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes',
    num_retries: 2,
    retry_host_predicate: [{ name: 'envoy.retry_host_predicates.previous_hosts', typed_config: { '@type': TYPE_URL('envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate') } }],
    host_selection_retry_max_attempts: 5,
    retriable_status_codes: [503],
  };
}

/** What the route builder needs from the translator: cluster names for destinations, DR hash policies. */
export interface RouteContext {
  readonly diag: IstioDiagnostics;
  /** `VirtualService reviews` */
  readonly where: string;
  /** The VS namespace (short names resolve in it). */
  readonly namespace: string;
  /** Port of the virtual host being built (a match's `port` must equal it); undefined: any. */
  readonly port?: number;
  /** Gateway names (ns/name) this route table is for; 'mesh' for the sidecar-like listener. */
  readonly gateway: string;
  /** `outbound|port|subset|host`, or undefined after reporting a problem. */
  clusterFor(destination: Obj, path: string): { cluster: string; hashPolicy?: Obj[] } | undefined;
  /** Notes that a filter is used, so the HCM gets it in its chain. */
  useFilter(name: string): void;
  /** Whether a problem at this path is reported (the first virtual host reports; the others repeat silently). */
  readonly report: boolean;
}

function problem(ctx: RouteContext, path: string, message: string): void {
  if (ctx.report) ctx.diag.problem(ctx.where, `${path}: ${message}`);
}
function warn(ctx: RouteContext, path: string, message: string): void {
  if (ctx.report) ctx.diag.warn(ctx.where, `${path}: ${message}`);
}

function stringMatch(ctx: RouteContext, path: string, m: unknown): Obj | undefined {
  if (!isObj(m)) {
    problem(ctx, path, 'must be a StringMatch (exact, prefix or regex)');
    return undefined;
  }
  const kinds = ['exact', 'prefix', 'regex'].filter((k) => m[k] !== undefined);
  if (kinds.length === 0) return undefined; // {}: presence
  if (kinds.length > 1) problem(ctx, path, `only one of exact, prefix or regex may be set (got ${kinds.join(', ')})`);
  const k = kinds[0];
  const v = m[k];
  if (typeof v !== 'string') {
    problem(ctx, `${path}.${k}`, 'must be a string');
    return undefined;
  }
  if (k === 'regex') {
    try {
      new RegExp(v, 'u');
    } catch (e) {
      problem(ctx, `${path}.regex`, `invalid regex: ${(e as Error).message}`);
      return undefined;
    }
    return { safe_regex: { regex: v } };
  }
  return { [k]: v };
}

function headerMatcher(ctx: RouteContext, path: string, name: string, m: unknown, invert: boolean): Obj | undefined {
  const h: Obj = { name };
  if (isObj(m) && Object.keys(m).length === 0) {
    h.present_match = true;
  } else {
    const sm = stringMatch(ctx, path, m);
    if (!sm) return undefined;
    h.string_match = sm;
  }
  if (invert) h.invert_match = true;
  return h;
}

function translateMatch(ctx: RouteContext, path: string, m: Obj | undefined): Obj | undefined {
  const match: Obj = {};
  const headers: Obj[] = [];
  if (m === undefined) {
    match.prefix = '/';
    return match;
  }
  if (m.uri !== undefined) {
    const sm = stringMatch(ctx, `${path}.uri`, m.uri);
    if (sm?.exact !== undefined) match.path = sm.exact;
    else if (sm?.prefix !== undefined) match.prefix = sm.prefix;
    else if (sm?.safe_regex !== undefined) match.safe_regex = sm.safe_regex;
    else match.prefix = '/';
  } else match.prefix = '/';
  if (m.ignoreUriCase === true) match.case_sensitive = false;
  for (const [field, name] of [
    ['method', ':method'],
    ['authority', ':authority'],
    ['scheme', ':scheme'],
  ] as const) {
    if (m[field] === undefined) continue;
    const h = headerMatcher(ctx, `${path}.${field}`, name, m[field], false);
    if (h) headers.push(h);
  }
  if (m.headers !== undefined) {
    if (!isObj(m.headers)) problem(ctx, `${path}.headers`, 'must be a map of header name to StringMatch');
    else
      for (const [name, v] of Object.entries(m.headers)) {
        const h = headerMatcher(ctx, `${path}.headers.${name}`, name.toLowerCase(), v, false);
        if (h) headers.push(h);
      }
  }
  if (m.withoutHeaders !== undefined) {
    if (!isObj(m.withoutHeaders)) problem(ctx, `${path}.withoutHeaders`, 'must be a map of header name to StringMatch');
    else
      for (const [name, v] of Object.entries(m.withoutHeaders)) {
        const h = headerMatcher(ctx, `${path}.withoutHeaders.${name}`, name.toLowerCase(), v, true);
        if (h) headers.push(h);
      }
  }
  if (headers.length > 0) match.headers = headers;
  if (m.queryParams !== undefined) {
    if (!isObj(m.queryParams)) problem(ctx, `${path}.queryParams`, 'must be a map of parameter name to StringMatch');
    else {
      const qps: Obj[] = [];
      for (const [name, v] of Object.entries(m.queryParams)) {
        if (isObj(v) && Object.keys(v).length === 0) qps.push({ name, present_match: true });
        else {
          const sm = stringMatch(ctx, `${path}.queryParams.${name}`, v);
          if (sm) qps.push({ name, string_match: sm });
        }
      }
      if (qps.length > 0) match.query_parameters = qps;
    }
  }
  return match;
}

function percentToFraction(ctx: RouteContext, path: string, pct: unknown, legacyInt: unknown): Obj {
  if (isObj(pct)) {
    const v = Number(pct.value ?? 0);
    if (!Number.isFinite(v) || v < 0 || v > 100) problem(ctx, `${path}.percentage.value`, `must be 0..100, got ${JSON.stringify(pct.value)}`);
    return { numerator: Math.round(Math.min(Math.max(v, 0), 100) * 10_000), denominator: 'MILLION' };
  }
  if (legacyInt !== undefined) {
    const n = Number(legacyInt);
    if (!Number.isInteger(n) || n < 0 || n > 100) problem(ctx, `${path}.percent`, `must be 0..100, got ${JSON.stringify(legacyInt)}`);
    return { numerator: n, denominator: 'HUNDRED' };
  }
  return { numerator: 1_000_000, denominator: 'MILLION' };
}

const GRPC_CODES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

function translateFault(ctx: RouteContext, path: string, f: unknown): Obj | undefined {
  if (!isObj(f)) {
    problem(ctx, path, 'must be an object with delay and/or abort');
    return undefined;
  }
  const out: Obj = { '@type': TYPE_URL('envoy.extensions.filters.http.fault.v3.HTTPFault') };
  if (f.delay !== undefined) {
    const d = f.delay;
    if (!isObj(d)) problem(ctx, `${path}.delay`, 'must be an object');
    else {
      if (d.exponentialDelay !== undefined) problem(ctx, `${path}.delay.exponentialDelay`, 'is not supported (only fixedDelay)');
      const ms = d.fixedDelay === undefined ? undefined : parseIstioDuration(d.fixedDelay);
      if (ms === undefined) problem(ctx, `${path}.delay.fixedDelay`, 'is required');
      else if (typeof ms === 'string') problem(ctx, `${path}.delay.fixedDelay`, ms);
      else if (ms < 1) problem(ctx, `${path}.delay.fixedDelay`, 'must be at least 1ms');
      else out.delay = { fixed_delay: envoyDuration(ms), percentage: percentToFraction(ctx, `${path}.delay`, d.percentage, d.percent) };
    }
  }
  if (f.abort !== undefined) {
    const a = f.abort;
    if (!isObj(a)) problem(ctx, `${path}.abort`, 'must be an object');
    else {
      const abort: Obj = { percentage: percentToFraction(ctx, `${path}.abort`, a.percentage, undefined) };
      if (a.httpStatus !== undefined) {
        const s = Number(a.httpStatus);
        if (!Number.isInteger(s) || s < 200 || s > 599) problem(ctx, `${path}.abort.httpStatus`, `must be an HTTP status 200..599, got ${JSON.stringify(a.httpStatus)}`);
        abort.http_status = s;
      } else if (a.grpcStatus !== undefined) {
        const code = typeof a.grpcStatus === 'number' ? a.grpcStatus : GRPC_CODES.indexOf(String(a.grpcStatus));
        if (code < 0 || code > 16) problem(ctx, `${path}.abort.grpcStatus`, `unknown gRPC status ${JSON.stringify(a.grpcStatus)}`);
        abort.grpc_status = code;
      } else if (a.http2Error !== undefined) {
        problem(ctx, `${path}.abort.http2Error`, 'is not supported by keel');
      } else problem(ctx, `${path}.abort`, 'one of httpStatus or grpcStatus is required');
      out.abort = abort;
    }
  }
  if (out.delay === undefined && out.abort === undefined) {
    if (f.delay === undefined && f.abort === undefined) problem(ctx, path, 'needs delay or abort');
    return undefined;
  }
  return out;
}

function joinList(v: unknown): string | undefined {
  return Array.isArray(v) && v.length > 0 ? v.map(String).join(',') : undefined;
}

function translateCors(ctx: RouteContext, path: string, c: unknown): Obj | undefined {
  if (!isObj(c)) {
    problem(ctx, path, 'must be an object');
    return undefined;
  }
  const out: Obj = { '@type': TYPE_URL('envoy.extensions.filters.http.cors.v3.CorsPolicy') };
  const origins: Obj[] = [];
  if (Array.isArray(c.allowOrigins)) {
    c.allowOrigins.forEach((o, i) => {
      const sm = stringMatch(ctx, `${path}.allowOrigins[${i}]`, o);
      if (sm) origins.push(sm);
    });
  }
  if (Array.isArray(c.allowOrigin)) for (const o of c.allowOrigin) origins.push({ exact: String(o) });
  if (origins.length > 0) out.allow_origin_string_match = origins;
  const methods = joinList(c.allowMethods);
  if (methods) out.allow_methods = methods;
  const headers = joinList(c.allowHeaders);
  if (headers) out.allow_headers = headers;
  const expose = joinList(c.exposeHeaders);
  if (expose) out.expose_headers = expose;
  if (c.maxAge !== undefined) {
    const ms = parseIstioDuration(c.maxAge);
    if (typeof ms === 'string') problem(ctx, `${path}.maxAge`, ms);
    else out.max_age = String(Math.floor(ms / 1000));
  }
  if (c.allowCredentials !== undefined) out.allow_credentials = c.allowCredentials === true;
  if (c.unmatchedPreflights === 'IGNORE') out.forward_not_matching_preflights = false;
  else if (c.unmatchedPreflights === 'FORWARD') out.forward_not_matching_preflights = true;
  out.filter_enabled = { default_value: { numerator: 100, denominator: 'HUNDRED' } };
  return out;
}

/** headers.request / headers.response -> *_headers_to_add / *_headers_to_remove (and a Host rewrite). */
function applyHeaders(ctx: RouteContext, path: string, h: unknown, target: Obj, allowHostRewrite: Obj | undefined): void {
  if (h === undefined) return;
  if (!isObj(h)) return problem(ctx, path, 'must be an object with request and/or response');
  for (const side of ['request', 'response'] as const) {
    const ops = h[side];
    if (ops === undefined) continue;
    if (!isObj(ops)) {
      problem(ctx, `${path}.${side}`, 'must be an object with set, add and/or remove');
      continue;
    }
    const add: Obj[] = [];
    for (const [op, action] of [
      ['set', 'OVERWRITE_IF_EXISTS_OR_ADD'],
      ['add', 'APPEND_IF_EXISTS_OR_ADD'],
    ] as const) {
      const m = ops[op];
      if (m === undefined) continue;
      if (!isObj(m)) {
        problem(ctx, `${path}.${side}.${op}`, 'must be a map of header name to value');
        continue;
      }
      for (const [k, v] of Object.entries(m)) {
        const key = k.toLowerCase();
        if (side === 'request' && op === 'set' && (key === 'host' || key === ':authority')) {
          if (allowHostRewrite) allowHostRewrite.host_rewrite_literal = String(v);
          else problem(ctx, `${path}.${side}.${op}.${k}`, 'the Host can only be set on a route, not per destination');
          continue;
        }
        if (key.startsWith(':')) {
          problem(ctx, `${path}.${side}.${op}.${k}`, 'pseudo-headers cannot be changed');
          continue;
        }
        add.push({ header: { key, value: String(v) }, append_action: action });
      }
    }
    if (add.length > 0) target[`${side}_headers_to_add`] = [...((target[`${side}_headers_to_add`] as Obj[] | undefined) ?? []), ...add];
    if (ops.remove !== undefined) {
      if (!Array.isArray(ops.remove)) problem(ctx, `${path}.${side}.remove`, 'must be a list of header names');
      else target[`${side}_headers_to_remove`] = [...((target[`${side}_headers_to_remove`] as string[] | undefined) ?? []), ...ops.remove.map((x) => String(x).toLowerCase())];
    }
  }
}

function translateRetries(ctx: RouteContext, path: string, r: unknown): Obj | undefined {
  if (r === undefined) return defaultRetryPolicy();
  if (!isObj(r)) {
    problem(ctx, path, 'must be an object');
    return defaultRetryPolicy();
  }
  const attempts = r.attempts === undefined ? 0 : Number(r.attempts);
  if (!Number.isInteger(attempts) || attempts < 0) problem(ctx, `${path}.attempts`, `must be a whole number >= 0, got ${JSON.stringify(r.attempts)}`);
  if (attempts <= 0) {
    if (r.perTryTimeout !== undefined) problem(ctx, `${path}.perTryTimeout`, 'needs attempts > 0');
    return undefined; // retries explicitly off
  }
  const out = defaultRetryPolicy();
  out.num_retries = attempts;
  if (typeof r.retryOn === 'string' && r.retryOn.trim() !== '') {
    const on: string[] = [];
    const codes: number[] = [];
    for (const part of r.retryOn.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
      if (/^\d+$/.test(part)) {
        const code = Number(part);
        if (code < 100 || code > 599) problem(ctx, `${path}.retryOn`, `'${part}' is not an HTTP status`);
        else codes.push(code);
      } else on.push(part);
    }
    if (codes.length > 0 && !on.includes('retriable-status-codes')) on.push('retriable-status-codes');
    out.retry_on = on.join(',');
    if (codes.length > 0) out.retriable_status_codes = codes;
    else delete out.retriable_status_codes;
  }
  if (r.perTryTimeout !== undefined) {
    const ms = parseIstioDuration(r.perTryTimeout);
    if (typeof ms === 'string') problem(ctx, `${path}.perTryTimeout`, ms);
    else if (ms < 1) problem(ctx, `${path}.perTryTimeout`, 'must be at least 1ms');
    else out.per_try_timeout = envoyDuration(ms);
  }
  if (r.backoff !== undefined) {
    const ms = parseIstioDuration(r.backoff);
    if (typeof ms === 'string') problem(ctx, `${path}.backoff`, ms);
    else if (ms < 1) problem(ctx, `${path}.backoff`, 'must be at least 1ms');
    else out.retry_back_off = { base_interval: envoyDuration(ms) };
  }
  if (r.retryIgnorePreviousHosts === false) delete out.retry_host_predicate;
  if (r.retryRemoteLocalities === true) warn(ctx, `${path}.retryRemoteLocalities`, 'ignored (keel has no localities)');
  return out;
}

const REDIRECT_CODES: Readonly<Record<number, string>> = { 301: 'MOVED_PERMANENTLY', 302: 'FOUND', 303: 'SEE_OTHER', 307: 'TEMPORARY_REDIRECT', 308: 'PERMANENT_REDIRECT' };

/** Builds the route action or a redirect / direct response for one http rule; the same for each of its matches. */
function translateAction(ctx: RouteContext, path: string, http: Obj, match: Obj): Obj | undefined {
  const out: Obj = {};
  const kinds = ['route', 'redirect', 'directResponse', 'delegate'].filter((k) => http[k] !== undefined);
  if (kinds.includes('delegate')) {
    problem(ctx, `${path}.delegate`, 'delegate VirtualServices are not supported by keel');
    return undefined;
  }
  if (kinds.length === 0) {
    problem(ctx, path, 'one of route, redirect or directResponse is required');
    return undefined;
  }
  if (kinds.length > 1) problem(ctx, path, `only one of route, redirect or directResponse may be set (got ${kinds.join(', ')})`);
  if (http.redirect !== undefined) {
    const r = http.redirect;
    if (!isObj(r)) {
      problem(ctx, `${path}.redirect`, 'must be an object');
      return undefined;
    }
    const red: Obj = {};
    if (typeof r.uri === 'string') red.path_redirect = r.uri;
    if (typeof r.authority === 'string') red.host_redirect = r.authority;
    if (r.port !== undefined) red.port_redirect = Number(r.port);
    if (r.derivePort !== undefined) warn(ctx, `${path}.redirect.derivePort`, 'ignored (the port is kept as in the request)');
    if (typeof r.scheme === 'string') red.scheme_redirect = r.scheme;
    const code = r.redirectCode === undefined ? 301 : Number(r.redirectCode);
    if (REDIRECT_CODES[code] === undefined) problem(ctx, `${path}.redirect.redirectCode`, `must be one of 301, 302, 303, 307, 308, got ${JSON.stringify(r.redirectCode)}`);
    else red.response_code = REDIRECT_CODES[code];
    out.redirect = red;
    return out;
  }
  if (http.directResponse !== undefined) {
    const d = http.directResponse;
    if (!isObj(d)) {
      problem(ctx, `${path}.directResponse`, 'must be an object');
      return undefined;
    }
    const status = Number(d.status);
    if (!Number.isInteger(status) || status < 200 || status > 599) problem(ctx, `${path}.directResponse.status`, `must be an HTTP status 200..599, got ${JSON.stringify(d.status)}`);
    const dr: Obj = { status };
    if (isObj(d.body)) {
      if (typeof d.body.string === 'string') dr.body = { inline_string: d.body.string };
      else if (typeof d.body.bytes === 'string') dr.body = { inline_bytes: d.body.bytes };
    }
    out.direct_response = dr;
    return out;
  }
  if (!Array.isArray(http.route) || http.route.length === 0) {
    problem(ctx, `${path}.route`, 'at least one destination is required');
    return undefined;
  }
  const action: Obj = {};
  const dests: { cluster: string; weight: number; entry: Obj; hash?: Obj[] }[] = [];
  let total = 0;
  let badWeight = false;
  http.route.forEach((d, i) => {
    const p = `${path}.route[${i}]`;
    if (!isObj(d) || !isObj(d.destination)) return problem(ctx, `${p}.destination`, 'is required');
    const c = ctx.clusterFor(d.destination, `${p}.destination`);
    const w = d.weight === undefined ? (http.route as unknown[]).length === 1 ? 100 : 0 : Number(d.weight);
    if (!Number.isInteger(w) || w < 0) {
      badWeight = true;
      return problem(ctx, `${p}.weight`, `must be a whole number >= 0, got ${JSON.stringify(d.weight)}`);
    }
    if (w > 100) problem(ctx, `${p}.weight`, `must be at most 100, got ${w}`);
    if (!c) return;
    const entry: Obj = { name: c.cluster, weight: w };
    applyHeaders(ctx, `${p}.headers`, d.headers, entry, undefined);
    total += w;
    if (w > 0 || (http.route as unknown[]).length === 1) dests.push({ cluster: c.cluster, weight: w, entry, ...(c.hashPolicy ? { hash: c.hashPolicy } : {}) });
  });
  if ((http.route as unknown[]).length > 1 && total === 0 && !badWeight) problem(ctx, `${path}.route`, 'the weights add up to 0: at least one destination needs a weight');
  // With no usable destination the rest is still checked (every problem at once), then dropped.
  const broken = dests.length === 0;
  if (broken) {
    // nothing to route to
  } else if (dests.length === 1) {
    action.cluster = dests[0].cluster;
    // A single destination's header operations apply to the route itself.
    for (const k of ['request_headers_to_add', 'request_headers_to_remove', 'response_headers_to_add', 'response_headers_to_remove']) {
      if (dests[0].entry[k] !== undefined) out[k] = dests[0].entry[k];
    }
  } else {
    action.weighted_clusters = { clusters: dests.map((d) => d.entry) };
  }
  const hash = dests[0]?.hash;
  if (hash && dests.every((d) => JSON.stringify(d.hash) === JSON.stringify(hash))) action.hash_policy = hash;

  // timeout: none unless set (istiod sets 0s)
  let timeoutMs = 0;
  if (http.timeout !== undefined) {
    const ms = parseIstioDuration(http.timeout);
    if (typeof ms === 'string') problem(ctx, `${path}.timeout`, ms);
    else timeoutMs = ms;
  }
  action.timeout = envoyDuration(timeoutMs);
  const retry = translateRetries(ctx, `${path}.retries`, http.retries);
  if (retry) action.retry_policy = retry;

  if (http.rewrite !== undefined) {
    const rw = http.rewrite;
    if (!isObj(rw)) problem(ctx, `${path}.rewrite`, 'must be an object');
    else {
      if (typeof rw.uri === 'string') {
        if (match.safe_regex !== undefined) problem(ctx, `${path}.rewrite.uri`, 'cannot rewrite a regex uri match (use uriRegexRewrite)');
        else action.prefix_rewrite = rw.uri;
      }
      if (isObj(rw.uriRegexRewrite)) {
        if (typeof rw.uri === 'string') problem(ctx, `${path}.rewrite`, 'only one of uri or uriRegexRewrite may be set');
        action.regex_rewrite = { pattern: { regex: String(rw.uriRegexRewrite.match ?? '') }, substitution: String(rw.uriRegexRewrite.rewrite ?? '') };
      }
      if (typeof rw.authority === 'string') action.host_rewrite_literal = rw.authority;
    }
  }
  const mirrors: Obj[] = [];
  if (http.mirror !== undefined) {
    if (!isObj(http.mirror)) problem(ctx, `${path}.mirror`, 'must be a Destination');
    else {
      const c = ctx.clusterFor(http.mirror, `${path}.mirror`);
      const pct = http.mirrorPercentage !== undefined ? http.mirrorPercentage : undefined;
      if (c) mirrors.push({ cluster: c.cluster, runtime_fraction: { default_value: percentToFraction(ctx, `${path}.mirrorPercentage`, pct, http.mirrorPercent) } });
    }
  }
  if (Array.isArray(http.mirrors)) {
    if (http.mirror !== undefined) problem(ctx, `${path}.mirrors`, 'cannot be used with mirror');
    http.mirrors.forEach((m, i) => {
      if (!isObj(m) || !isObj(m.destination)) return problem(ctx, `${path}.mirrors[${i}].destination`, 'is required');
      const c = ctx.clusterFor(m.destination, `${path}.mirrors[${i}].destination`);
      if (c) mirrors.push({ cluster: c.cluster, runtime_fraction: { default_value: percentToFraction(ctx, `${path}.mirrors[${i}]`, m.percentage, undefined) } });
    });
  }
  if (mirrors.length > 0) action.request_mirror_policies = mirrors;
  out.route = action;
  return broken ? undefined : out;
}

/** The Envoy routes for a VirtualService's http list, in order (first match wins, as in Istio). */
export function translateHttpRoutes(ctx: RouteContext, http: unknown, basePath = 'spec.http'): Obj[] {
  const routes: Obj[] = [];
  if (http === undefined) return routes;
  if (!Array.isArray(http)) {
    problem(ctx, basePath, 'must be a list');
    return routes;
  }
  http.forEach((rule, i) => {
    const path = `${basePath}[${i}]`;
    if (!isObj(rule)) return problem(ctx, path, 'must be an object');
    let matches: (Obj | undefined)[] = [undefined];
    if (rule.match !== undefined) {
      if (!Array.isArray(rule.match)) return problem(ctx, `${path}.match`, 'must be a list');
      matches = [];
      rule.match.forEach((m, j) => {
        if (!isObj(m)) return problem(ctx, `${path}.match[${j}]`, 'must be an object');
        if (m.port !== undefined && ctx.port !== undefined && Number(m.port) !== ctx.port) return;
        if (Array.isArray(m.gateways) && m.gateways.length > 0 && !m.gateways.some((g) => qualifyGateway(String(g), ctx.namespace) === ctx.gateway)) return;
        if (m.sourceLabels !== undefined || m.sourceNamespace !== undefined) {
          warn(ctx, `${path}.match[${j}]`, 'sourceLabels/sourceNamespace never match here (keel runs as no workload): this condition is skipped, as istiod skips it for proxies without those labels');
          return;
        }
        matches.push(m);
      });
      if (rule.match.length === 0) matches = [undefined];
      if (matches.length === 0) return;
    }
    for (const m of matches) {
      const matchIndex = m === undefined ? -1 : (rule.match as unknown[]).indexOf(m);
      const mpath = matchIndex < 0 ? path : `${path}.match[${matchIndex}]`;
      const match = translateMatch(ctx, mpath, m);
      if (!match) continue;
      const action = translateAction(ctx, path, rule, match);
      if (!action) continue;
      const route: Obj = { match, ...action };
      const name = typeof rule.name === 'string' ? (m && typeof m.name === 'string' ? `${rule.name}.${m.name}` : rule.name) : undefined;
      if (name) route.name = name;
      if (route.route !== undefined || route.redirect !== undefined) {
        applyHeaders(ctx, `${path}.headers`, rule.headers, route, route.route as Obj | undefined);
      }
      const perFilter: Obj = {};
      if (rule.fault !== undefined && route.route !== undefined) {
        const f = translateFault(ctx, `${path}.fault`, rule.fault);
        if (f) {
          perFilter[FAULT_FILTER] = f;
          ctx.useFilter(FAULT_FILTER);
        }
      }
      if (rule.corsPolicy !== undefined) {
        const c = translateCors(ctx, `${path}.corsPolicy`, rule.corsPolicy);
        if (c) {
          perFilter[CORS_FILTER] = c;
          ctx.useFilter(CORS_FILTER);
        }
      }
      if (Object.keys(perFilter).length > 0) route.typed_per_filter_config = perFilter;
      routes.push(route);
    }
  });
  return routes;
}

/** `name` or `ns/name` -> `ns/name` (a gateway reference resolves in the referring resource's namespace). */
export function qualifyGateway(ref: string, namespace: string): string {
  if (ref === 'mesh') return 'mesh';
  if (ref.includes('/')) return ref;
  // istiod also accepts `name.namespace.svc.cluster.local` style references
  const parts = ref.split('.');
  if (parts.length >= 2) return `${parts[1]}/${parts[0]}`;
  return `${namespace}/${ref}`;
}
