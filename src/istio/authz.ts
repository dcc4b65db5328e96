// AuthorizationPolicy -> the envoy.filters.http.rbac configs istiod emits (one DENY filter, then one
// ALLOW filter, policies named `ns[<ns>]-policy[<name>]-rule[<i>]`), and PeerAuthentication -> the
// mTLS mode of keel's listener. Only policies that select this proxy apply (root namespace
// istio-system or the proxy's namespace; selector against the proxy's labels). Raw Envoy JSON out.

import { type IstioDiagnostics, type IstioResource, type Obj, isObj, label } from './resources';
import { labelsMatch } from './registry';
import { TYPE_URL } from './traffic-policy';

export const RBAC_FILTER = 'envoy.filters.http.rbac';
const RBAC_TYPE = TYPE_URL('envoy.extensions.filters.http.rbac.v3.RBAC');
export const ROOT_NAMESPACE = 'istio-system';

export interface ProxyIdentity {
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly trustDomain: string;
}

function strList(v: unknown): string[] {
  return Array.isArray(v) ? v.map(String) : [];
}

function selects(r: IstioResource, proxy: ProxyIdentity): boolean {
  if (r.namespace !== ROOT_NAMESPACE && r.namespace !== proxy.namespace) return false;
  const sel = r.spec.selector;
  if (!isObj(sel) || !isObj(sel.matchLabels)) return true;
  const want: Record<string, string> = {};
  for (const [k, v] of Object.entries(sel.matchLabels)) want[k] = String(v);
  return labelsMatch(want, proxy.labels);
}

/** Istio path matching: `/a` exact, `/a*` prefix, `*a` suffix, `*` any. */
function pathMatcher(p: string): Obj {
  if (p === '*') return { path: { safe_regex: { regex: '.+' } } };
  if (p.endsWith('*')) return { path: { prefix: p.slice(0, -1) } };
  if (p.startsWith('*')) return { path: { suffix: p.slice(1) } };
  return { path: { exact: p } };
}

function stringValue(v: string): Obj {
  if (v === '*') return { safe_regex: { regex: '.+' } };
  if (v.endsWith('*')) return { prefix: v.slice(0, -1) };
  if (v.startsWith('*')) return { suffix: v.slice(1) };
  return { exact: v };
}

function header(name: string, v: string): Obj {
  return { header: { name, string_match: stringValue(v) } };
}

function cidr(v: string): Obj {
  const [ip, len] = v.split('/');
  return { address_prefix: ip, prefix_len: len !== undefined ? Number(len) : ip.includes(':') ? 128 : 32 };
}

/** An OR of values, or the NOT of an OR; undefined when both lists are empty. */
function orOf(values: Obj[], notValues: Obj[], kind: 'permission' | 'principal'): Obj[] {
  const out: Obj[] = [];
  const orKey = kind === 'permission' ? 'or_rules' : 'or_ids';
  const notKey = kind === 'permission' ? 'not_rule' : 'not_id';
  if (values.length > 0) out.push({ [orKey]: { [kind === 'permission' ? 'rules' : 'ids']: values } });
  if (notValues.length > 0) out.push({ [notKey]: { [orKey]: { [kind === 'permission' ? 'rules' : 'ids']: notValues } } });
  return out;
}

function principalName(v: string): Obj {
  // Istio matches principals without the spiffe:// prefix; the peer's URI SAN carries it.
  if (v === '*') return { authenticated: { principal_name: { safe_regex: { regex: '.+' } } } };
  const sm = stringValue(v);
  const withScheme: Obj = {};
  for (const [k, x] of Object.entries(sm)) withScheme[k] = k === 'safe_regex' ? x : k === 'suffix' ? x : `spiffe://${String(x)}`;
  return { authenticated: { principal_name: withScheme } };
}

function namespacePrincipal(ns: string): Obj {
  const esc = ns.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return { authenticated: { principal_name: { safe_regex: { regex: `.*/ns/${ns === '*' ? '[^/]+' : esc}/.*` } } } };
}

interface RuleCtx {
  diag: IstioDiagnostics;
  where: string;
}

function sourcePrincipals(ctx: RuleCtx, path: string, s: Obj): Obj[] {
  const and: Obj[] = [];
  and.push(...orOf(strList(s.principals).map(principalName), strList(s.notPrincipals).map(principalName), 'principal'));
  and.push(...orOf(strList(s.namespaces).map(namespacePrincipal), strList(s.notNamespaces).map(namespacePrincipal), 'principal'));
  and.push(...orOf(strList(s.ipBlocks).map((c) => ({ direct_remote_ip: cidr(c) })), strList(s.notIpBlocks).map((c) => ({ direct_remote_ip: cidr(c) })), 'principal'));
  and.push(...orOf(strList(s.remoteIpBlocks).map((c) => ({ remote_ip: cidr(c) })), strList(s.notRemoteIpBlocks).map((c) => ({ remote_ip: cidr(c) })), 'principal'));
  for (const f of ['requestPrincipals', 'notRequestPrincipals', 'serviceAccounts', 'notServiceAccounts']) {
    if (s[f] !== undefined) ctx.diag.problem(ctx.where, `${path}.${f}: is not supported by keel (needs JWT authentication / service-account identities)`);
  }
  return and;
}

function operationPermissions(o: Obj): Obj[] {
  const and: Obj[] = [];
  const host = (h: string): Obj => ({ header: { name: ':authority', string_match: { ...stringValue(h), ignore_case: true } } });
  and.push(...orOf(strList(o.hosts).map(host), strList(o.notHosts).map(host), 'permission'));
  const port = (p: string): Obj => ({ destination_port: Number(p) });
  and.push(...orOf(strList(o.ports).map(port), strList(o.notPorts).map(port), 'permission'));
  const method = (m: string): Obj => header(':method', m);
  and.push(...orOf(strList(o.methods).map(method), strList(o.notMethods).map(method), 'permission'));
  const path_ = (p: string): Obj => ({ url_path: pathMatcher(p) });
  and.push(...orOf(strList(o.paths).map(path_), strList(o.notPaths).map(path_), 'permission'));
  return and;
}

function conditionRules(ctx: RuleCtx, path: string, when: unknown): { permissions: Obj[]; principals: Obj[] } {
  const permissions: Obj[] = [];
  const principals: Obj[] = [];
  if (!Array.isArray(when)) return { permissions, principals };
  when.forEach((c, i) => {
    const p = `${path}[${i}]`;
    if (!isObj(c) || typeof c.key !== 'string') return ctx.diag.problem(ctx.where, `${p}.key: is required`);
    const values = strList(c.values);
    const notValues = strList(c.notValues);
    if (values.length === 0 && notValues.length === 0) return ctx.diag.problem(ctx.where, `${p}: values or notValues is required`);
    const key = c.key;
    const hdr = /^request\.headers\[(.+)\]$/.exec(key);
    if (hdr) permissions.push(...orOf(values.map((v) => header(hdr[1].toLowerCase(), v)), notValues.map((v) => header(hdr[1].toLowerCase(), v)), 'permission'));
    else if (key === 'source.ip') principals.push(...orOf(values.map((v) => ({ direct_remote_ip: cidr(v) })), notValues.map((v) => ({ direct_remote_ip: cidr(v) })), 'principal'));
    else if (key === 'remote.ip') principals.push(...orOf(values.map((v) => ({ remote_ip: cidr(v) })), notValues.map((v) => ({ remote_ip: cidr(v) })), 'principal'));
    else if (key === 'source.namespace') principals.push(...orOf(values.map(namespacePrincipal), notValues.map(namespacePrincipal), 'principal'));
    else if (key === 'source.principal') principals.push(...orOf(values.map(principalName), notValues.map(principalName), 'principal'));
    else if (key === 'destination.port') permissions.push(...orOf(values.map((v) => ({ destination_port: Number(v) })), notValues.map((v) => ({ destination_port: Number(v) })), 'permission'));
    else if (key === 'connection.sni') {
      const sni = (v: string): Obj => ({ requested_server_name: stringValue(v) });
      permissions.push(...orOf(values.map(sni), notValues.map(sni), 'permission'));
    } else ctx.diag.problem(ctx.where, `${p}.key: '${key}' is not supported by keel (request.headers[...], source.ip, remote.ip, source.namespace, source.principal, destination.port, connection.sni are)`);
  });
  return { permissions, principals };
}

function andPermission(rules: Obj[]): Obj {
  return rules.length === 0 ? { any: true } : { and_rules: { rules } };
}
function andPrincipal(ids: Obj[]): Obj {
  return ids.length === 0 ? { any: true } : { and_ids: { ids } };
}

/** The RBAC HTTP filters (DENY first, then ALLOW) for the policies that select this proxy; [] when none. */
export function authorizationFilters(resources: readonly IstioResource[], proxy: ProxyIdentity, defaultNamespace: string, diag: IstioDiagnostics): Obj[] {
  const deny: Obj = {};
  const allow: Obj = {};
  let anyAllow = false;
  let anyDeny = false;
  for (const r of resources) {
    if (r.kind !== 'AuthorizationPolicy') continue;
    const where = label(r, defaultNamespace);
    const s = r.spec;
    if (s.targetRef !== undefined || s.targetRefs !== undefined) diag.warn(where, 'spec.targetRef(s): ignored (keel applies policies by selector)');
    const action = typeof s.action === 'string' ? s.action : 'ALLOW';
    if (action === 'CUSTOM' || action === 'AUDIT') {
      diag.warn(where, `spec.action: ${action} is not enforced by keel (no external authorizer / audit sink); the policy is skipped`);
      continue;
    }
    if (action !== 'ALLOW' && action !== 'DENY') {
      diag.problem(where, `spec.action: ${action} is not one of ALLOW, DENY, AUDIT, CUSTOM`);
      continue;
    }
    if (!selects(r, proxy)) continue;
    const target = action === 'ALLOW' ? allow : deny;
    if (action === 'ALLOW') anyAllow = true;
    else anyDeny = true;
    const rules = Array.isArray(s.rules) ? s.rules : [];
    rules.forEach((rule, i) => {
      const path = `spec.rules[${i}]`;
      if (!isObj(rule)) return diag.problem(where, `${path}: must be an object`);
      const ctx: RuleCtx = { diag, where };
      const froms = Array.isArray(rule.from) ? rule.from : [];
      const tos = Array.isArray(rule.to) ? rule.to : [];
      const cond = conditionRules(ctx, `${path}.when`, rule.when);
      // Each `from` entry is an alternative (OR); within one, every field must hold (AND).
      const principalAlts = froms.map((f, j) => andPrincipal(isObj(f) && isObj(f.source) ? sourcePrincipals(ctx, `${path}.from[${j}].source`, f.source) : []));
      const permissionAlts = tos.map((t) => andPermission(isObj(t) && isObj(t.operation) ? operationPermissions(t.operation) : []));
      const principals = [principalAlts.length === 0 ? { any: true } : principalAlts.length === 1 ? principalAlts[0] : { or_ids: { ids: principalAlts } }];
      const permissions = [permissionAlts.length === 0 ? { any: true } : permissionAlts.length === 1 ? permissionAlts[0] : { or_rules: { rules: permissionAlts } }];
      const policy: Obj = {
        permissions: cond.permissions.length > 0 ? [andPermission([permissions[0], ...cond.permissions])] : permissions,
        principals: cond.principals.length > 0 ? [andPrincipal([principals[0], ...cond.principals])] : principals,
      };
      target[`ns[${r.namespace}]-policy[${r.name}]-rule[${i}]`] = policy;
    });
  }
  const out: Obj[] = [];
  if (anyDeny) out.push({ name: RBAC_FILTER, typed_config: { '@type': RBAC_TYPE, rules: { action: 'DENY', policies: deny } } });
  // An ALLOW policy with no rules allows nothing: the ALLOW filter with no policies denies every request.
  if (anyAllow) out.push({ name: RBAC_FILTER, typed_config: { '@type': RBAC_TYPE, rules: { action: 'ALLOW', policies: allow } } });
  return out;
}

/** The effective PeerAuthentication mode for this proxy: workload selector > namespace > root (mesh). */
export function peerAuthenticationMode(resources: readonly IstioResource[], proxy: ProxyIdentity, defaultNamespace: string, diag: IstioDiagnostics): 'STRICT' | 'PERMISSIVE' | 'DISABLE' {
  let mesh: string | undefined;
  let ns: string | undefined;
  let workload: string | undefined;
  for (const r of resources) {
    if (r.kind !== 'PeerAuthentication') continue;
    const where = label(r, defaultNamespace);
    const mtls = isObj(r.spec.mtls) ? r.spec.mtls : {};
    const mode = typeof mtls.mode === 'string' ? mtls.mode : 'UNSET';
    if (!['UNSET', 'STRICT', 'PERMISSIVE', 'DISABLE'].includes(mode)) {
      diag.problem(where, `spec.mtls.mode: ${mode} is not one of UNSET, DISABLE, PERMISSIVE, STRICT`);
      continue;
    }
    if (r.spec.portLevelMtls !== undefined) diag.warn(where, 'spec.portLevelMtls: ignored (keel applies one mode to its listener)');
    if (!selects(r, proxy)) continue;
    if (mode === 'UNSET') continue;
    if (isObj(r.spec.selector)) workload = mode;
    else if (r.namespace === ROOT_NAMESPACE) mesh = mode;
    else ns = mode;
  }
  return (workload ?? ns ?? mesh ?? 'PERMISSIVE') as 'STRICT' | 'PERMISSIVE' | 'DISABLE';
}
