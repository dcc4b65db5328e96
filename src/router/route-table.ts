// The compiled route table: virtual host selection by :authority and first-match route selection, with
// Envoy's semantics. Built once from a RouteTableConfig; `route()` is the per-request entry point and
// does no parsing or compiling (query strings are parsed lazily, only for tables that match on them).

import { compilePerFilterConfigs } from './per-filter';
import type {
  ForwardAction,
  HeaderMutations,
  HeaderValueOption,
  RouteConfigEntry,
  RouteTableConfig,
  RuntimeValues,
  VirtualHostConfig,
  WeightedClusterEntry,
} from '../config/types';
import { HeaderMap } from '../http/headers';
import { compileRe2, compileRe2Full, compileSubstitution, applySubstitution } from '../common/re2';
import {
  compileHeaderMatchers,
  compileMetadataMatcher,
  compileQueryMatcher,
  HeaderPredicate,
  MetadataPredicate,
  parseQuery,
  QueryPredicate,
} from './matchers';
import { CompiledFormat, compileFormat, FormatContext, renderFormat } from '../common/header-format';

/** What the router needs to know about a request. Headers include the pseudo-headers. */
export interface RouteInput {
  readonly authority: string;
  /** :path, with the query string */
  readonly path: string;
  readonly method: string;
  readonly headers: HeaderMap;
  readonly secure: boolean;
  readonly internal: boolean;
  /** uint32 random value for runtime fractions and weighted clusters */
  readonly randomValue: number;
  readonly runtime?: Runtime;
  readonly dynamicMetadata?: Readonly<Record<string, unknown>>;
  readonly tlsPresented?: boolean;
  readonly tlsValidated?: boolean;
}

/** Envoy's runtime: static layer plus overrides, read through typed getters. */
export class Runtime {
  constructor(private readonly values: RuntimeValues = {}) {}
  get(key: string): string | number | boolean | undefined {
    return this.values[key];
  }
  getInteger(key: string, def: number): number {
    const v = this.values[key];
    if (typeof v === 'number' && Number.isFinite(v)) return Math.trunc(v);
    if (typeof v === 'string' && /^\d+$/.test(v)) return Number(v);
    return def;
  }
  /**
   * Envoy's featureEnabled(key, default FractionalPercent, random): random % denominator < numerator.
   * An integer runtime value overrides the default as a percentage (denominator 100, as Envoy's
   * SnapshotImpl does); a value above 100 always enables.
   */
  fractionEnabled(key: string, numerator: number, denominator: number, random: number): boolean {
    const v = this.values[key];
    let pct: number | undefined;
    if (typeof v === 'number' && Number.isFinite(v) && v >= 0) pct = Math.trunc(v);
    else if (typeof v === 'string' && /^\d+$/.test(v)) pct = Number(v);
    if (pct === undefined) return random % denominator < numerator;
    if (pct > 100) return true;
    return random % 100 < pct;
  }
  with(overrides: RuntimeValues): Runtime {
    return new Runtime({ ...this.values, ...overrides });
  }
}

const EMPTY_RUNTIME = new Runtime();

// ---------------------------------------------------------------------------------------------
// Header mutation, compiled

interface AddOp {
  readonly key: string;
  readonly format: CompiledFormat;
  readonly action: HeaderValueOption['appendAction'];
  readonly keepEmpty: boolean;
}
interface MutationLevel {
  readonly removes: readonly string[];
  readonly adds: readonly AddOp[];
}

export class CompiledMutations {
  constructor(readonly levels: readonly MutationLevel[]) {}
  get empty(): boolean {
    return this.levels.length === 0;
  }
  /**
   * Envoy's HeaderParser::evaluateHeaders, level by level: the removes first; then every value is
   * rendered and every condition checked against the headers as they were before this level's adds;
   * then the overwrites are set, and the appends added last.
   */
  apply(headers: HeaderMap, ctx: FormatContext): void {
    for (const level of this.levels) {
      for (const r of level.removes) headers.remove(r);
      const adds = level.adds;
      if (adds.length === 0) continue;
      let overwrite: string[] | undefined;
      let append: string[] | undefined;
      for (const op of adds) {
        const value = renderFormat(op.format, ctx);
        if (value === '' && !op.keepEmpty) continue;
        switch (op.action) {
          case 'APPEND_IF_EXISTS_OR_ADD':
            (append ??= []).push(op.key, value);
            break;
          case 'ADD_IF_ABSENT':
            if (!headers.has(op.key)) (append ??= []).push(op.key, value);
            break;
          case 'OVERWRITE_IF_EXISTS':
            if (headers.has(op.key)) (overwrite ??= []).push(op.key, value);
            break;
          case 'OVERWRITE_IF_EXISTS_OR_ADD':
            (overwrite ??= []).push(op.key, value);
            break;
        }
      }
      if (overwrite) for (let i = 0; i < overwrite.length; i += 2) headers.set(overwrite[i], overwrite[i + 1]);
      if (append) for (let i = 0; i < append.length; i += 2) headers.add(append[i], append[i + 1]);
    }
  }
}

function level(adds: readonly HeaderValueOption[], removes: readonly string[]): MutationLevel | undefined {
  if (adds.length === 0 && removes.length === 0) return undefined;
  return {
    removes,
    adds: adds.map((h) => ({ key: h.key === 'host' ? ':authority' : h.key, format: compileFormat(h.value), action: h.appendAction, keepEmpty: h.keepEmptyValue })),
  };
}

/** Levels most specific first (Envoy's default order, so the least specific level's overwrite wins). */
function compileMutations(specificFirst: readonly HeaderMutations[], mostSpecificWins: boolean, side: 'request' | 'response'): CompiledMutations {
  const levels: MutationLevel[] = [];
  for (const m of specificFirst) {
    const l = side === 'request' ? level(m.requestHeadersToAdd, m.requestHeadersToRemove) : level(m.responseHeadersToAdd, m.responseHeadersToRemove);
    if (l) levels.push(l);
  }
  if (mostSpecificWins) levels.reverse();
  return new CompiledMutations(levels);
}

// ---------------------------------------------------------------------------------------------
// Routes

type PathPredicate = (path: string, pathNoQuery: string) => boolean;

function compilePathMatcher(entry: RouteConfigEntry): PathPredicate {
  const spec = entry.match.path;
  const cs = entry.match.caseSensitive;
  switch (spec.kind) {
    case 'prefix': {
      // Envoy's PathMatcher: the prefix is matched against the path without query and fragment.
      const p = cs ? spec.value : spec.value.toLowerCase();
      if (p === '' || p === '/') return p === '' ? () => true : (_, np) => np.charCodeAt(0) === 47;
      return cs ? (_, np) => np.startsWith(p) : (_, np) => np.length >= p.length && np.slice(0, p.length).toLowerCase() === p;
    }
    case 'path': {
      const p = cs ? spec.value : spec.value.toLowerCase();
      return cs ? (_, np) => np === p : (_, np) => np.length === p.length && np.toLowerCase() === p;
    }
    case 'regex': {
      const c = compileRe2Full(spec.regex);
      if ('error' in c) throw new Error(c.error);
      const re = c.re;
      return (_, np) => re.test(np);
    }
    case 'path_separated_prefix': {
      const p = cs ? spec.value : spec.value.toLowerCase();
      return (_, np) => {
        const v = cs ? np : np.toLowerCase();
        return v === p || (v.startsWith(p) && v.charCodeAt(p.length) === 47);
      };
    }
    case 'connect':
      return () => true; // method is checked separately
  }
}

export interface ClusterPick {
  readonly name: string;
  /** headers of the weighted cluster entry, applied before the route's own */
  readonly requestMutations?: CompiledMutations;
  readonly responseMutations?: CompiledMutations;
  readonly hostRewriteLiteral?: string;
  /** index of the weighted_clusters entry this pick came from (route-check's per-cluster coverage) */
  readonly weightedIndex?: number;
}

class CompiledWeightedClusters {
  private readonly picks: ClusterPick[];
  private readonly weights: number[];
  private readonly headerNames: (string | undefined)[];
  constructor(
    private readonly entries: readonly WeightedClusterEntry[],
    private readonly totalWeight: number,
    private readonly runtimeKeyPrefix: string | undefined,
    mostSpecificWins: boolean,
    /** weighted_clusters.header_name: the random value comes from this header when it holds one uint64 */
    private readonly randomHeader?: string,
  ) {
    this.picks = entries.map((e, i) => ({
      name: e.name,
      weightedIndex: i,
      requestMutations: compileMutations([e], mostSpecificWins, 'request'),
      responseMutations: compileMutations([e], mostSpecificWins, 'response'),
      hostRewriteLiteral: e.hostRewriteLiteral,
    }));
    this.weights = entries.map((e) => e.weight);
    this.headerNames = entries.map((e) => e.clusterHeader);
  }
  pick(random: number, runtime: Runtime, headers: HeaderMap): ClusterPick | undefined {
    let weights = this.weights;
    let total = this.totalWeight;
    if (this.runtimeKeyPrefix !== undefined) {
      weights = this.entries.map((e) => runtime.getInteger(`${this.runtimeKeyPrefix}.${e.name}`, e.weight));
      total = weights.reduce((a, b) => a + b, 0);
    }
    if (total <= 0) return undefined;
    let value = random;
    if (this.randomHeader !== undefined) {
      // Envoy: only a single-valued header that parses as a uint64 is used; else the stream's random.
      const raw = headers.raw;
      let count = 0;
      let hv = '';
      for (let i = 0; i < raw.length; i += 2) {
        if (raw[i] === this.randomHeader) {
          count++;
          hv = raw[i + 1];
        }
      }
      if (count === 1 && /^\d{1,20}$/.test(hv)) {
        const n = BigInt(hv);
        if (n <= 0xffffffffffffffffn) value = Number(n % BigInt(total));
      }
    }
    const selected = value % total;
    let begin = 0;
    for (let i = 0; i < weights.length; i++) {
      const end = begin + weights[i];
      if (selected >= begin && selected < end) {
        const hn = this.headerNames[i];
        if (hn !== undefined) {
          const name = headers.first(hn) ?? '';
          return { ...this.picks[i], name };
        }
        return this.picks[i];
      }
      begin = end;
    }
    return undefined;
  }
}

export interface CompiledRewrite {
  apply(input: string): string;
}

function compileRegexRewrite(regex: string, substitution: string): CompiledRewrite {
  const c = compileRe2(regex, { global: true });
  if ('error' in c) throw new Error(c.error);
  const sub = compileSubstitution(substitution, c.groupCount);
  if ('error' in sub) throw new Error(sub.error);
  const re = c.re;
  return { apply: (s) => applySubstitution(re, s, sub) };
}

export class CompiledRoute {
  readonly name: string;
  readonly config: RouteConfigEntry;
  readonly virtualHost: CompiledVirtualHost;
  readonly requestMutations: CompiledMutations;
  readonly responseMutations: CompiledMutations;
  readonly forward?: ForwardAction;
  readonly regexRewrite?: CompiledRewrite;
  readonly hostPathRegex?: CompiledRewrite;
  private readonly pathMatch: PathPredicate;
  private readonly headerMatch?: HeaderPredicate;
  private readonly queryMatchers: readonly QueryPredicate[];
  private readonly metadataMatchers: readonly MetadataPredicate[];
  readonly usesQuery: boolean;
  private readonly weighted?: CompiledWeightedClusters;
  private readonly staticPick?: ClusterPick;
  /** typed_per_filter_config of the route over its virtual host's, compiled (per-filter.ts) */
  readonly perFilter: ReadonlyMap<string, unknown> | undefined;

  constructor(cfg: RouteConfigEntry, vh: CompiledVirtualHost, table: RouteTableConfig) {
    this.name = cfg.name;
    this.config = cfg;
    this.virtualHost = vh;
    this.result = { kind: 'route', route: this, virtualHost: vh };
    this.pathMatch = compilePathMatcher(cfg);
    this.headerMatch = compileHeaderMatchers(cfg.match.headers);
    this.queryMatchers = cfg.match.queryParameters.map(compileQueryMatcher);
    this.usesQuery = this.queryMatchers.length > 0;
    this.metadataMatchers = cfg.match.dynamicMetadata.map(compileMetadataMatcher);
    const msw = table.mostSpecificHeaderMutationsWins;
    this.requestMutations = compileMutations([cfg, vh.config, table], msw, 'request');
    this.responseMutations = compileMutations([cfg, vh.config, table], msw, 'response');
    this.perFilter = compilePerFilterConfigs([cfg.typedPerFilterConfig, vh.config.typedPerFilterConfig]);
    const a = cfg.action;
    if (a.kind === 'route') {
      this.forward = a;
      if (a.weightedClusters) {
        this.weighted = new CompiledWeightedClusters(
          a.weightedClusters.clusters,
          a.weightedClusters.totalWeight,
          a.weightedClusters.runtimeKeyPrefix,
          msw,
          a.weightedClusters.headerName,
        );
      } else if (a.cluster !== undefined) {
        this.staticPick = { name: a.cluster };
      }
      if (a.regexRewrite) this.regexRewrite = compileRegexRewrite(a.regexRewrite.regex, a.regexRewrite.substitution);
      if (a.hostRewritePathRegex) this.hostPathRegex = compileRegexRewrite(a.hostRewritePathRegex.regex, a.hostRewritePathRegex.substitution);
    } else if (a.kind === 'redirect' && a.regexRewrite) {
      this.regexRewrite = compileRegexRewrite(a.regexRewrite.regex, a.regexRewrite.substitution);
    }
  }

  /** Preallocated result, so a match allocates nothing. */
  readonly result: RouteResult;

  matches(input: RouteInput, pathNoQuery: string, query: Map<string, string>): boolean {
    const m = this.config.match;
    if (m.path.kind === 'connect') {
      if (input.method !== 'CONNECT') return false;
    } else if (input.method === 'CONNECT' && m.path.kind !== 'prefix') {
      // CONNECT requests carry no path; only connect_matcher (and prefix "" in Envoy) match them
      return false;
    }
    if (!this.pathMatch(input.path, pathNoQuery)) return false;
    if (m.grpc && !isGrpcContentType(input.headers.first('content-type'))) return false;
    if (this.headerMatch !== undefined && !this.headerMatch(input.headers)) return false;
    const qms = this.queryMatchers;
    for (let i = 0; i < qms.length; i++) if (!qms[i](query)) return false;
    if (m.runtimeFraction) {
      const rf = m.runtimeFraction;
      const rt = input.runtime ?? EMPTY_RUNTIME;
      if (!rt.fractionEnabled(rf.runtimeKey, rf.defaultValue.numerator, rf.defaultValue.denominator, input.randomValue)) return false;
    }
    for (const mm of this.metadataMatchers) if (!mm(input.dynamicMetadata)) return false;
    if (m.tlsContext) {
      if (m.tlsContext.presented !== undefined && (input.tlsPresented ?? false) !== m.tlsContext.presented) return false;
      if (m.tlsContext.validated !== undefined && (input.tlsValidated ?? false) !== m.tlsContext.validated) return false;
    }
    return true;
  }

  /** The cluster this request goes to; undefined for a cluster_header route whose header is absent. */
  pickCluster(input: RouteInput): ClusterPick | undefined {
    if (this.staticPick) return this.staticPick;
    const f = this.forward;
    if (!f) return undefined;
    if (this.weighted) return this.weighted.pick(input.randomValue, input.runtime ?? EMPTY_RUNTIME, input.headers);
    if (f.clusterHeader !== undefined) {
      const name = input.headers.first(f.clusterHeader);
      return name === undefined || name === '' ? undefined : { name };
    }
    return undefined;
  }

  /** New :path for a forwarded request (prefix_rewrite / regex_rewrite), or undefined to keep it. */
  rewritePath(path: string): string | undefined {
    const f = this.forward;
    if (!f) return undefined;
    // Envoy: an empty prefix_rewrite is the proto default, i.e. no rewrite.
    if (f.prefixRewrite !== undefined && f.prefixRewrite !== '') return rewritePrefix(this.config, path, f.prefixRewrite);
    if (this.regexRewrite) {
      const q = queryStart(path);
      return this.regexRewrite.apply(path.slice(0, q)) + path.slice(q);
    }
    return undefined;
  }
}

/** Where the path proper ends: at the query or the fragment (Envoy's PathUtil::removeQueryAndFragment). */
export function queryStart(path: string): number {
  const q = path.indexOf('?');
  const h = path.indexOf('#');
  return q < 0 ? (h < 0 ? path.length : h) : h < 0 ? q : Math.min(q, h);
}

/**
 * Envoy's prefix rewrite: replace the matched prefix (or path) with the rewrite. For a safe_regex
 * (or CONNECT) match the matched part is the whole path without the query and fragment.
 */
export function rewritePrefix(cfg: RouteConfigEntry, path: string, rewrite: string): string {
  const spec = cfg.match.path;
  let matched: number;
  if (spec.kind === 'prefix' || spec.kind === 'path' || spec.kind === 'path_separated_prefix') matched = spec.value.length;
  else matched = queryStart(path);
  return rewrite + path.slice(matched);
}

/** Envoy's Grpc::Common::hasGrpcContentType: exactly application/grpc, or application/grpc+<codec>. */
export function isGrpcContentType(ct: string | undefined): boolean {
  return ct !== undefined && ct.startsWith('application/grpc') && (ct.length === 16 || ct.charCodeAt(16) === 43 /* + */);
}

export class CompiledVirtualHost {
  readonly name: string;
  readonly config: VirtualHostConfig;
  readonly routes: CompiledRoute[];
  readonly virtualClusters: readonly { readonly name: string; readonly match: HeaderPredicate }[];
  readonly usesQuery: boolean;
  readonly noRoute: RouteResult;
  readonly requireTlsResult: RouteResult;

  constructor(cfg: VirtualHostConfig, table: RouteTableConfig) {
    this.name = cfg.name;
    this.config = cfg;
    this.noRoute = { kind: 'none', virtualHost: this };
    this.requireTlsResult = { kind: 'require_tls', virtualHost: this };
    this.routes = cfg.routes.map((r) => new CompiledRoute(r, this, table));
    this.usesQuery = this.routes.some((r) => r.usesQuery);
    this.virtualClusters = cfg.virtualClusters.map((vc) => ({
      name: vc.name,
      match: compileHeaderMatchers(vc.headers) ?? (() => true),
    }));
  }

  /** Envoy's virtual cluster for stats: first whose header matchers match, else undefined. */
  virtualClusterFor(headers: HeaderMap): string | undefined {
    for (const vc of this.virtualClusters) if (vc.match(headers)) return vc.name;
    return undefined;
  }
}

export type RouteResult =
  | { readonly kind: 'route'; readonly route: CompiledRoute; readonly virtualHost: CompiledVirtualHost }
  | { readonly kind: 'require_tls'; readonly virtualHost: CompiledVirtualHost }
  | { readonly kind: 'none'; readonly virtualHost?: CompiledVirtualHost };

const NO_VHOST: RouteResult = { kind: 'none' };
const EMPTY_QUERY: Map<string, string> = new Map();

export class RouteTable {
  readonly name: string;
  readonly config: RouteTableConfig;
  readonly virtualHosts: readonly CompiledVirtualHost[];
  private readonly exact = new Map<string, CompiledVirtualHost>();
  /** suffix wildcards (`*.foo.com` stored as `.foo.com`), grouped by length, longest first */
  private readonly suffixes: [number, Map<string, CompiledVirtualHost>][] = [];
  private readonly prefixes: [number, Map<string, CompiledVirtualHost>][] = [];
  private readonly defaultHost?: CompiledVirtualHost;
  private readonly stripPort: boolean;
  readonly internalOnlyHeaders: readonly string[];

  constructor(cfg: RouteTableConfig) {
    this.name = cfg.name;
    this.config = cfg;
    this.internalOnlyHeaders = cfg.internalOnlyHeaders;
    this.virtualHosts = cfg.virtualHosts.map((vh) => new CompiledVirtualHost(vh, cfg));
    let anyPort = false;
    const suffixes = new Map<number, Map<string, CompiledVirtualHost>>();
    const prefixes = new Map<number, Map<string, CompiledVirtualHost>>();
    let defaultHost: CompiledVirtualHost | undefined;
    for (const vh of this.virtualHosts) {
      for (const raw of vh.config.domains) {
        const d = raw.toLowerCase();
        if (d === '*') {
          defaultHost ??= vh;
          continue;
        }
        if (/:\d+$/.test(d) || d.endsWith(':*')) anyPort = true;
        if (d.startsWith('*')) {
          const s = d.slice(1);
          let m = suffixes.get(s.length);
          if (!m) suffixes.set(s.length, (m = new Map()));
          if (!m.has(s)) m.set(s, vh);
        } else if (d.endsWith('*')) {
          const p = d.slice(0, -1);
          let m = prefixes.get(p.length);
          if (!m) prefixes.set(p.length, (m = new Map()));
          if (!m.has(p)) m.set(p, vh);
        } else if (!this.exact.has(d)) {
          this.exact.set(d, vh);
        }
      }
    }
    this.defaultHost = defaultHost;
    this.suffixes = [...suffixes.entries()].sort((a, b) => b[0] - a[0]);
    this.prefixes = [...prefixes.entries()].sort((a, b) => b[0] - a[0]);
    this.stripPort = cfg.ignorePortInHostMatching || !anyPort;
  }

  selectVirtualHost(authority: string): CompiledVirtualHost | undefined {
    if (this.exact.size === 0 && this.suffixes.length === 0 && this.prefixes.length === 0) return this.defaultHost;
    let host = authority;
    if (this.stripPort) host = stripHostPort(host);
    host = host.toLowerCase();
    const vh = this.exact.get(host);
    if (vh !== undefined) return vh;
    const len = host.length;
    for (const [wl, m] of this.suffixes) {
      if (wl >= len) continue;
      const v = m.get(host.slice(len - wl));
      if (v !== undefined) return v;
    }
    for (const [wl, m] of this.prefixes) {
      if (wl >= len) continue;
      const v = m.get(host.slice(0, wl));
      if (v !== undefined) return v;
    }
    return this.defaultHost;
  }

  route(input: RouteInput): RouteResult {
    const vh = this.selectVirtualHost(input.authority);
    if (vh === undefined) return NO_VHOST;
    const rt = vh.config.requireTls;
    if (rt !== 'NONE') {
      // Envoy decides on x-forwarded-proto (set by the connection manager, or trusted from a
      // downstream proxy), not on the connection, and on x-envoy-internal for EXTERNAL_ONLY.
      const xfp = input.headers.first('x-forwarded-proto');
      const secure = xfp !== undefined ? xfp === 'https' : input.secure;
      if (!secure && (rt === 'ALL' || !(input.internal || input.headers.first('x-envoy-internal') === 'true'))) return vh.requireTlsResult;
    }
    const path = input.path;
    let pathNoQuery = path;
    const q = path.indexOf('?');
    const h = path.indexOf('#');
    const cut = q < 0 ? h : h < 0 ? q : Math.min(q, h);
    if (cut >= 0) pathNoQuery = path.slice(0, cut);
    const query = vh.usesQuery && cut >= 0 ? parseQuery(path) : EMPTY_QUERY;
    const routes = vh.routes;
    for (let i = 0; i < routes.length; i++) {
      const r = routes[i];
      if (r.matches(input, pathNoQuery, query)) return r.result;
    }
    return vh.noRoute;
  }
}

/** Strips `:port` from a host (IPv6 literals keep their brackets). */
export function stripHostPort(host: string): string {
  const c = host.lastIndexOf(':');
  if (c < 0) return host;
  if (host.charCodeAt(0) === 91 /* [ */) {
    const close = host.indexOf(']');
    return close >= 0 && close < c ? host.slice(0, c) : host;
  }
  if (host.indexOf(':') !== c) return host; // bare IPv6 without brackets: no port
  return host.slice(0, c);
}
