// Config decoder for envoy.filters.http.rbac (extensions.filters.http.rbac.v3.RBAC, per route
// RBACPerRoute) and envoy.filters.network.rbac (extensions.filters.network.rbac.v3.RBAC): the
// policies Istio's AuthorizationPolicy turns into, as plain domain types. Matchers are compiled by
// src/filters/rbac.ts, never here. Principals and permissions keel cannot evaluate (metadata such
// as istio_authn's request.auth.*, other filter_state keys, custom matchers) are accepted with a
// warning and FAIL CLOSED: they never let a request through that they might have stopped (in an
// ALLOW policy they do not match, in a DENY policy they do, with the polarity flipped under
// not_rule / not_id). CEL conditions and the unified matcher API are refused.

import { Reader } from '../decode';
import type { CidrRange, HeaderMatcherConfig, StringMatcherConfig } from '../types';
import type { HttpFilterDecoder } from '../http-filters';
import { decodeCidrRange, decodeHeaderMatcher, decodeStringMatcher } from '../bootstrap';

export const RBAC_HTTP_TYPE = 'envoy.extensions.filters.http.rbac.v3.RBAC';
export const RBAC_PER_ROUTE_TYPE = 'envoy.extensions.filters.http.rbac.v3.RBACPerRoute';
export const RBAC_NETWORK_TYPE = 'envoy.extensions.filters.network.rbac.v3.RBAC';
export const RBAC_NETWORK_NAME = 'envoy.filters.network.rbac';
/** The filter_state key Istio's metadata exchange / authn use for the peer's SPIFFE identity. */
export const PEER_PRINCIPAL_STATE_KEY = 'io.istio.peer_principal';

export type RbacPermission =
  | { readonly kind: 'any' }
  | { readonly kind: 'and' | 'or'; readonly rules: readonly RbacPermission[] }
  | { readonly kind: 'not'; readonly rule: RbacPermission }
  | { readonly kind: 'header'; readonly header: HeaderMatcherConfig }
  | { readonly kind: 'url_path'; readonly path: StringMatcherConfig }
  | { readonly kind: 'destination_ip'; readonly cidr: CidrRange }
  | { readonly kind: 'destination_port'; readonly port: number }
  | { readonly kind: 'destination_port_range'; readonly start: number; readonly end: number }
  | { readonly kind: 'requested_server_name'; readonly match: StringMatcherConfig }
  | Unevaluated;

/** A matcher keel does not evaluate: it fails closed (see the header). */
export interface Unevaluated {
  readonly kind: 'unevaluated';
  readonly what: string;
}

export type RbacPrincipal =
  | { readonly kind: 'any' }
  | { readonly kind: 'and' | 'or'; readonly ids: readonly RbacPrincipal[] }
  | { readonly kind: 'not'; readonly id: RbacPrincipal }
  /** principalName absent: any peer that presented a certificate */
  | { readonly kind: 'authenticated'; readonly principalName?: StringMatcherConfig }
  | { readonly kind: 'direct_remote_ip' | 'remote_ip'; readonly cidr: CidrRange }
  | { readonly kind: 'header'; readonly header: HeaderMatcherConfig }
  | { readonly kind: 'url_path'; readonly path: StringMatcherConfig }
  /** filter_state io.istio.peer_principal: the peer's SPIFFE identity */
  | { readonly kind: 'peer_principal'; readonly match: StringMatcherConfig }
  | Unevaluated;

export interface RbacPolicyConfig {
  readonly name: string;
  readonly permissions: readonly RbacPermission[];
  readonly principals: readonly RbacPrincipal[];
}

export interface RbacRulesConfig {
  readonly action: 'ALLOW' | 'DENY' | 'LOG';
  readonly policies: readonly RbacPolicyConfig[];
}

export interface RbacConfig {
  /** absent: nothing enforced (every request allowed) */
  readonly rules?: RbacRulesConfig;
  readonly shadowRules?: RbacRulesConfig;
  readonly rulesStatPrefix: string;
  readonly shadowRulesStatPrefix: string;
}

export interface NetworkRbacConfig extends RbacConfig {
  readonly statPrefix: string;
  readonly enforcementType: 'ONE_TIME_ON_FIRST_BYTE' | 'CONTINUOUS';
}

/** RBACPerRoute: `rbac` absent (or without rules) disables the filter on the route. */
export interface RbacPerRouteConfig {
  readonly rbac?: RbacConfig;
}

function pathMatcher(r: Reader): StringMatcherConfig | undefined {
  if (!r.has('path')) {
    r.problem('path is required', 'path');
    return undefined;
  }
  return r.sub('path', 'StringMatcher', decodeStringMatcher);
}

const PERMISSION_FIELDS = [
  'and_rules',
  'or_rules',
  'any',
  'header',
  'url_path',
  'destination_ip',
  'destination_port',
  'destination_port_range',
  'metadata',
  'not_rule',
  'requested_server_name',
  'matcher',
  'uri_template',
  'sourced_metadata',
] as const;

function decodePermission(r: Reader): RbacPermission | undefined {
  const kind = r.oneof(PERMISSION_FIELDS, true);
  switch (kind) {
    case 'and_rules':
    case 'or_rules': {
      const rules = r.sub(kind, 'PermissionSet', (s) => s.objects('rules', 'Permission', decodePermission)) ?? [];
      return { kind: kind === 'and_rules' ? 'and' : 'or', rules };
    }
    case 'any':
      if (!r.bool('any', false)) r.problem('any must be true', 'any');
      return { kind: 'any' };
    case 'header': {
      const header = r.sub('header', 'HeaderMatcher', decodeHeaderMatcher);
      return header ? { kind: 'header', header } : undefined;
    }
    case 'url_path': {
      const path = r.sub('url_path', 'PathMatcher', pathMatcher);
      return path ? { kind: 'url_path', path } : undefined;
    }
    case 'destination_ip': {
      const cidr = r.sub('destination_ip', 'CidrRange', decodeCidrRange);
      return cidr ? { kind: 'destination_ip', cidr } : undefined;
    }
    case 'destination_port':
      return { kind: 'destination_port', port: r.num('destination_port', 0, { min: 0, max: 65535 }) };
    case 'destination_port_range': {
      const range = r.sub('destination_port_range', 'Int32Range', (x) => ({ start: x.num('start', 0), end: x.num('end', 0) }));
      return range ? { kind: 'destination_port_range', ...range } : undefined;
    }
    case 'not_rule': {
      const rule = r.sub('not_rule', 'Permission', decodePermission);
      return rule ? { kind: 'not', rule } : undefined;
    }
    case 'requested_server_name': {
      const match = r.sub('requested_server_name', 'StringMatcher', decodeStringMatcher);
      return match ? { kind: 'requested_server_name', match } : undefined;
    }
    case undefined:
      return undefined;
    default:
      return unevaluated(r, 'permission', kind);
  }
}

/** A matcher keel accepts but does not evaluate: warned about, failing closed at run time. */
function unevaluated(r: Reader, side: 'permission' | 'principal', field: string, what = field): Unevaluated {
  r.get(field); // read: not reported as an unknown field
  r.warn(`${side} '${what}' is not evaluated by keel: it fails closed (never matches in an ALLOW policy, always matches in a DENY policy)`, field);
  return { kind: 'unevaluated', what };
}

const PRINCIPAL_FIELDS = [
  'and_ids',
  'or_ids',
  'any',
  'authenticated',
  'source_ip',
  'direct_remote_ip',
  'remote_ip',
  'header',
  'url_path',
  'metadata',
  'filter_state',
  'not_id',
  'custom',
  'sourced_metadata',
] as const;

function decodePrincipal(r: Reader): RbacPrincipal | undefined {
  const kind = r.oneof(PRINCIPAL_FIELDS, true);
  switch (kind) {
    case 'and_ids':
    case 'or_ids': {
      const ids = r.sub(kind, 'PrincipalSet', (s) => s.objects('ids', 'Principal', decodePrincipal)) ?? [];
      return { kind: kind === 'and_ids' ? 'and' : 'or', ids };
    }
    case 'any':
      if (!r.bool('any', false)) r.problem('any must be true', 'any');
      return { kind: 'any' };
    case 'authenticated': {
      const a = r.sub('authenticated', 'Authenticated', (x) => ({ name: x.sub('principal_name', 'StringMatcher', decodeStringMatcher) }));
      if (!a) return undefined;
      return a.name ? { kind: 'authenticated', principalName: a.name } : { kind: 'authenticated' };
    }
    case 'source_ip':
    case 'direct_remote_ip':
    case 'remote_ip': {
      const cidr = r.sub(kind, 'CidrRange', decodeCidrRange);
      return cidr ? { kind: kind === 'remote_ip' ? 'remote_ip' : 'direct_remote_ip', cidr } : undefined;
    }
    case 'header': {
      const header = r.sub('header', 'HeaderMatcher', decodeHeaderMatcher);
      return header ? { kind: 'header', header } : undefined;
    }
    case 'url_path': {
      const path = r.sub('url_path', 'PathMatcher', pathMatcher);
      return path ? { kind: 'url_path', path } : undefined;
    }
    case 'filter_state': {
      const raw = r.get('filter_state') as { key?: unknown } | undefined;
      if (raw?.key !== PEER_PRINCIPAL_STATE_KEY) return unevaluated(r, 'principal', 'filter_state', `filter_state ${String(raw?.key)}`);
      const fs = r.sub('filter_state', 'FilterStateMatcher', (x) => {
        x.requiredStr('key');
        if (!x.has('string_match')) {
          x.problem('string_match is required', 'string_match');
          return undefined;
        }
        return x.sub('string_match', 'StringMatcher', decodeStringMatcher);
      });
      return fs ? { kind: 'peer_principal', match: fs } : undefined;
    }
    case 'not_id': {
      const id = r.sub('not_id', 'Principal', decodePrincipal);
      return id ? { kind: 'not', id } : undefined;
    }
    case undefined:
      return undefined;
    default:
      return unevaluated(r, 'principal', kind);
  }
}

function decodePolicy(name: string, r: Reader): RbacPolicyConfig | undefined {
  const permissions = r.objects('permissions', 'Permission', decodePermission);
  const principals = r.objects('principals', 'Principal', decodePrincipal);
  if (!r.has('permissions')) r.problem('permissions is required (at least one)', 'permissions');
  if (!r.has('principals')) r.problem('principals is required (at least one)', 'principals');
  r.unsupported('condition', 'condition (CEL)');
  r.unsupported('checked_condition', 'checked_condition (CEL)');
  r.unsupported('cel_config', 'cel_config (CEL)');
  return { name, permissions, principals };
}

function decodeRules(r: Reader): RbacRulesConfig {
  const action = r.enum('action', ['ALLOW', 'DENY', 'LOG'], 'ALLOW');
  const policies: RbacPolicyConfig[] = [];
  for (const { key, value, path } of r.map('policies')) {
    const pr = Reader.of(r.diag, path, value, 'Policy');
    if (!pr) continue;
    const p = decodePolicy(key, pr);
    pr.done();
    if (p) policies.push(p);
  }
  r.unsupported('audit_logging_options');
  return { action, policies };
}

/** The fields HTTP and network RBAC share; problems are collected on `r`. */
function decodeRbacCommon(r: Reader): RbacConfig {
  const rules = r.sub('rules', 'RBACRules', decodeRules);
  const shadowRules = r.sub('shadow_rules', 'RBACRules', decodeRules);
  r.unsupported('matcher', 'matcher (unified matcher API; use rules)');
  r.unsupported('shadow_matcher', 'shadow_matcher (unified matcher API; use shadow_rules)');
  return {
    ...(rules !== undefined ? { rules } : {}),
    ...(shadowRules !== undefined ? { shadowRules } : {}),
    rulesStatPrefix: r.str('rules_stat_prefix'),
    shadowRulesStatPrefix: r.str('shadow_rules_stat_prefix'),
  };
}

export function decodeHttpRbac(r: Reader): RbacConfig | undefined {
  const before = r.diag.problems.length;
  const cfg = decodeRbacCommon(r);
  r.bool('track_per_rule_stats', false);
  return r.diag.problems.length > before ? undefined : cfg;
}

export function decodeRbacPerRoute(r: Reader): RbacPerRouteConfig | undefined {
  const before = r.diag.problems.length;
  const rbac = r.sub('rbac', 'RBAC', (x) => decodeHttpRbac(x));
  if (r.diag.problems.length > before) return undefined;
  return rbac ? { rbac } : {};
}

export function decodeNetworkRbac(r: Reader): NetworkRbacConfig | undefined {
  const before = r.diag.problems.length;
  const statPrefix = r.requiredStr('stat_prefix');
  const cfg = decodeRbacCommon(r);
  const enforcementType = r.enum('enforcement_type', ['ONE_TIME_ON_FIRST_BYTE', 'CONTINUOUS'], 'ONE_TIME_ON_FIRST_BYTE');
  r.unsupported('delay_deny', 'delay_deny');
  return r.diag.problems.length > before ? undefined : { ...cfg, statPrefix, enforcementType };
}

export const rbacDecoder: HttpFilterDecoder = {
  typeName: RBAC_HTTP_TYPE,
  decode: decodeHttpRbac,
  decodePerRoute: decodeRbacPerRoute,
  perRouteTypeNames: [RBAC_PER_ROUTE_TYPE],
};
