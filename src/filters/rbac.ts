// envoy.filters.http.rbac and the engine envoy.filters.network.rbac shares: policies compiled once
// into predicates over what a request or connection offers (peer identity from its certificate,
// source and destination addresses, SNI, headers, path). ALLOW: allowed when a policy matches;
// DENY: denied when one matches; LOG: always allowed (counted as logged). Shadow rules are
// evaluated and counted, never enforced. A denied request gets Envoy's 403 `RBAC: access denied`
// with details rbac_access_denied_matched_policy[<policy>|none]; a denied connection is closed.
//
// Must not: compile matchers per request, or allocate anything for a stream whose route disables
// the filter.

import { peerSans } from '../security/tls-context';
import type { HttpFilterConfig } from '../config/types';
import type { FilterCallbacks, HttpFilterFactory, StreamFilter } from '../http/filter';
import { FilterHeadersStatus } from '../http/filter';
import type { ConnectionInfo } from '../http/stream';
import type { HeaderMap } from '../http/headers';
import type { FilterContext, HttpFilterType } from './index';
import { compileHeaderMatcher, compileStringMatcher, type StringPredicate } from '../router/matchers';
import { CidrTable, parseIp } from '../listener/chain-match';
import {
  RBAC_HTTP_TYPE,
  RBAC_PER_ROUTE_TYPE,
  type RbacConfig,
  type RbacPerRouteConfig,
  type RbacPermission,
  type RbacPrincipal,
  type RbacRulesConfig,
} from '../config/filters/rbac';

/** What the policies look at. `headers`/`path` are absent for network RBAC (such matchers never match). */
export interface RbacSubject {
  readonly connection: ConnectionInfo;
  readonly headers?: HeaderMap;
  /** request path without the query string */
  readonly path?: string;
  /** the downstream client address as the HCM derived it (x-forwarded-for); default: the peer's */
  readonly remoteAddress?: string;
}

type Pred = (s: RbacSubject) => boolean;

function cidrPred(cidr: { addressPrefix: string; prefixLen: number }, addr: (s: RbacSubject) => string): Pred {
  const t = new CidrTable<true>();
  t.getOrAdd(cidr.addressPrefix, cidr.prefixLen, () => true);
  return (s) => t.lookup(parseIp(addr(s))) === true;
}

function pathOf(s: RbacSubject): string | undefined {
  return s.path;
}

/** URI SANs, then DNS SANs, of the peer certificate: worked out once per connection, not per request. */
const PEER_NAMES = new WeakMap<ConnectionInfo, readonly string[]>();
function peerNames(c: ConnectionInfo): readonly string[] {
  let out = PEER_NAMES.get(c);
  if (out !== undefined) return out;
  const sans = peerSans(c.peerCertificate?.subjectaltname);
  out = [...sans.uri, ...sans.dns];
  if (out.length === 0 && c.peerPrincipal !== undefined) out = [c.peerPrincipal];
  PEER_NAMES.set(c, out);
  return out;
}

function hasPeerCert(c: ConnectionInfo): boolean {
  return c.peerPrincipal !== undefined || (c.peerCertificate !== undefined && Object.keys(c.peerCertificate).length > 0);
}

/**
 * `failClosed`: what a matcher keel does not evaluate answers at this point, so that the policy
 * never allows what it might have denied (true in a DENY policy, false in ALLOW; flipped under not).
 */
function compilePermission(p: RbacPermission, failClosed: boolean): Pred {
  switch (p.kind) {
    case 'unevaluated':
      return () => failClosed;
    case 'any':
      return () => true;
    case 'and': {
      const all = p.rules.map((x) => compilePermission(x, failClosed));
      return (s) => all.every((f) => f(s));
    }
    case 'or': {
      const any = p.rules.map((x) => compilePermission(x, failClosed));
      return (s) => any.some((f) => f(s));
    }
    case 'not': {
      const f = compilePermission(p.rule, !failClosed);
      return (s) => !f(s);
    }
    case 'header': {
      const h = compileHeaderMatcher(p.header);
      return (s) => s.headers !== undefined && h(s.headers);
    }
    case 'url_path': {
      const m = compileStringMatcher(p.path);
      return (s) => {
        const path = pathOf(s);
        return path !== undefined && m(path);
      };
    }
    case 'destination_ip':
      return cidrPred(p.cidr, (s) => s.connection.localAddress);
    case 'destination_port':
      return (s) => s.connection.localPort === p.port;
    case 'destination_port_range':
      return (s) => s.connection.localPort >= p.start && s.connection.localPort < p.end;
    case 'requested_server_name': {
      const m = compileStringMatcher(p.match);
      return (s) => m(s.connection.sni ?? '');
    }
  }
}

function compilePrincipal(p: RbacPrincipal, failClosed: boolean): Pred {
  switch (p.kind) {
    case 'unevaluated':
      return () => failClosed;
    case 'any':
      return () => true;
    case 'and': {
      const all = p.ids.map((x) => compilePrincipal(x, failClosed));
      return (s) => all.every((f) => f(s));
    }
    case 'or': {
      const any = p.ids.map((x) => compilePrincipal(x, failClosed));
      return (s) => any.some((f) => f(s));
    }
    case 'not': {
      const f = compilePrincipal(p.id, !failClosed);
      return (s) => !f(s);
    }
    case 'authenticated': {
      if (p.principalName === undefined) return (s) => hasPeerCert(s.connection);
      const m: StringPredicate = compileStringMatcher(p.principalName);
      return (s) => hasPeerCert(s.connection) && peerNames(s.connection).some(m);
    }
    case 'peer_principal': {
      const m = compileStringMatcher(p.match);
      return (s) => s.connection.peerPrincipal !== undefined && m(s.connection.peerPrincipal);
    }
    case 'direct_remote_ip':
      // the physical peer (keel has no PROXY protocol)
      return cidrPred(p.cidr, (s) => s.connection.remoteAddress);
    case 'remote_ip':
      // the client address as the HCM derived it from x-forwarded-for; on a connection, the peer
      return cidrPred(p.cidr, (s) => s.remoteAddress ?? s.connection.remoteAddress);
    case 'header': {
      const h = compileHeaderMatcher(p.header);
      return (s) => s.headers !== undefined && h(s.headers);
    }
    case 'url_path': {
      const m = compileStringMatcher(p.path);
      return (s) => {
        const path = pathOf(s);
        return path !== undefined && m(path);
      };
    }
  }
}

interface CompiledPolicy {
  readonly name: string;
  readonly permissions: readonly Pred[];
  readonly principals: readonly Pred[];
}

/** One RBACRules set, compiled. */
export class RbacRules {
  readonly action: RbacRulesConfig['action'];
  private readonly policies: readonly CompiledPolicy[];

  constructor(cfg: RbacRulesConfig) {
    this.action = cfg.action;
    const failClosed = cfg.action === 'DENY';
    this.policies = cfg.policies.map((p) => ({
      name: p.name,
      permissions: p.permissions.map((x) => compilePermission(x, failClosed)),
      principals: p.principals.map((x) => compilePrincipal(x, failClosed)),
    }));
  }

  /** The first policy whose permissions and principals both match, or undefined. */
  matchedPolicy(s: RbacSubject): string | undefined {
    for (const p of this.policies) {
      if (p.permissions.some((f) => f(s)) && p.principals.some((f) => f(s))) return p.name;
    }
    return undefined;
  }

  /** allowed, and the policy that decided (undefined: none matched) */
  evaluate(s: RbacSubject): { allowed: boolean; policy: string | undefined } {
    const policy = this.matchedPolicy(s);
    const allowed = this.action === 'ALLOW' ? policy !== undefined : this.action === 'DENY' ? policy === undefined : true;
    return { allowed, policy };
  }
}

/** An RBAC config compiled: enforced and shadow rules. */
export class RbacEngine {
  readonly rules?: RbacRules;
  readonly shadow?: RbacRules;
  readonly rulesStatPrefix: string;
  readonly shadowStatPrefix: string;
  /** some policy has a remote_ip principal (only then is x-forwarded-for looked at) */
  readonly usesRemoteIp: boolean;

  constructor(cfg: RbacConfig) {
    this.usesRemoteIp = JSON.stringify([cfg.rules ?? null, cfg.shadowRules ?? null]).includes('"kind":"remote_ip"');
    if (cfg.rules) this.rules = new RbacRules(cfg.rules);
    if (cfg.shadowRules) this.shadow = new RbacRules(cfg.shadowRules);
    this.rulesStatPrefix = cfg.rulesStatPrefix;
    this.shadowStatPrefix = cfg.shadowRulesStatPrefix;
  }

  get active(): boolean {
    return this.rules !== undefined || this.shadow !== undefined;
  }
}

/** Envoy's RBAC counters for one filter instance; names relative to its `<prefix>rbac.`. */
export class RbacStats {
  private readonly counts = new Map<string, number>();
  constructor(readonly prefix: string) {}
  inc(name: string): void {
    this.counts.set(name, (this.counts.get(name) ?? 0) + 1);
  }
  get(name: string): number {
    return this.counts.get(name) ?? 0;
  }
  snapshot(declared: readonly string[]): Record<string, number> {
    const out: Record<string, number> = {};
    for (const n of declared) out[`${this.prefix}${n}`] = 0;
    for (const [n, v] of this.counts) out[`${this.prefix}${n}`] = v;
    return out;
  }
}

/**
 * Evaluates shadow then enforced rules, counting as Envoy does. Returns undefined when allowed, else
 * the policy name that denied ('none' when an ALLOW set matched nothing).
 */
export function enforce(engine: RbacEngine, s: RbacSubject, stats: RbacStats): string | undefined {
  if (engine.shadow) {
    const r = engine.shadow.evaluate(s);
    stats.inc(`${engine.shadowStatPrefix}${r.allowed ? 'shadow_allowed' : 'shadow_denied'}`);
  }
  const rules = engine.rules;
  if (!rules) return undefined;
  const r = rules.evaluate(s);
  if (rules.action === 'LOG') stats.inc(`${engine.rulesStatPrefix}${r.policy !== undefined ? 'logged' : 'not_logged'}`);
  if (r.allowed) {
    stats.inc(`${engine.rulesStatPrefix}allowed`);
    return undefined;
  }
  stats.inc(`${engine.rulesStatPrefix}denied`);
  return r.policy ?? 'none';
}

/** The path without its query string (what url_path matchers see). */
function pathWithoutQuery(path: string): string {
  const q = path.indexOf('?');
  return q < 0 ? path : path.slice(0, q);
}

/**
 * Envoy's downstream client address: with use_remote_address and no trusted hops, the peer; else the
 * x-forwarded-for entry xff_num_trusted_hops from the end (the HCM has already appended the peer
 * when use_remote_address is set), when there is such an entry and it is an IP address.
 */
export function clientAddress(headers: HeaderMap, peer: string, xff: NonNullable<FilterContext['xff']>): string {
  if (xff.useRemoteAddress && xff.xffNumTrustedHops === 0) return peer;
  const v = headers.get('x-forwarded-for');
  if (v === undefined) return peer;
  const list = v.split(',');
  const e = list[list.length - 1 - xff.xffNumTrustedHops]?.trim();
  return e !== undefined && parseIp(e) !== undefined ? e : peer;
}

class RbacStreamFilter implements StreamFilter {
  constructor(
    private readonly engine: RbacEngine,
    private readonly stream: FilterCallbacks,
    private readonly stats: RbacStats,
    private readonly xff: FilterContext['xff'],
  ) {}

  decodeHeaders(headers: HeaderMap): FilterHeadersStatus {
    const conn = this.stream.connection;
    const subject: RbacSubject = {
      connection: conn,
      headers,
      path: pathWithoutQuery(this.stream.path),
      ...(this.engine.usesRemoteIp && this.xff ? { remoteAddress: clientAddress(headers, conn.remoteAddress, this.xff) } : {}),
    };
    const denied = enforce(this.engine, subject, this.stats);
    if (denied === undefined) return FilterHeadersStatus.Continue;
    this.stream.sendLocalReply(403, 'RBAC: access denied', `rbac_access_denied_matched_policy[${denied}]`, '');
    return FilterHeadersStatus.StopIteration;
  }
}

/** RBACPerRoute compiled: an engine, or DISABLED (no rbac / no rules on the route). */
const DISABLED = Symbol('rbac.disabled');
type CompiledPerRoute = RbacEngine | typeof DISABLED;

function compilePerRoute(config: unknown): CompiledPerRoute {
  const c = config as RbacPerRouteConfig;
  if (!c.rbac) return DISABLED;
  const e = new RbacEngine(c.rbac);
  return e.active ? e : DISABLED;
}

const DECLARED = ['allowed', 'denied', 'shadow_allowed', 'shadow_denied'];

export const rbacFilterType: HttpFilterType = {
  typeName: RBAC_HTTP_TYPE,
  createFactory(cfg: HttpFilterConfig, ctx: FilterContext): HttpFilterFactory {
    const engine = new RbacEngine(cfg.config as RbacConfig);
    const stats = new RbacStats(`http.${ctx.statPrefix}.rbac.`);
    const name = cfg.name;
    return {
      name,
      create(stream: FilterCallbacks): StreamFilter | undefined {
        const pr = stream.perFilterConfig(name) as CompiledPerRoute | null | undefined;
        if (pr === null || pr === DISABLED) return undefined;
        const e = pr ?? engine;
        if (!e.active) return undefined;
        return new RbacStreamFilter(e, stream, stats, ctx.xff);
      },
      stats: () => stats.snapshot(DECLARED),
    };
  },
  perRoute: { [RBAC_PER_ROUTE_TYPE]: compilePerRoute },
};
