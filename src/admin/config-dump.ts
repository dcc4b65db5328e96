// /config_dump: the config in use as envoy.admin.v3.ConfigDump JSON (what `istioctl proxy-config`
// reads): BootstrapConfigDump, ClustersConfigDump, EndpointsConfigDump (with include_eds),
// ListenersConfigDump, RoutesConfigDump and SecretsConfigDump, with Envoy's `resource`, `mask` and
// `name_regex` parameters. Built from KeelServer.configSnapshot() and the resources as they were
// written (their `source`), printed with proto field names like Envoy; key material is redacted.
// Runs only when the admin endpoint is asked; never on the request path.

import type { Bootstrap, ClusterConfig, ListenerConfig, RouteTableConfig } from '../config/types';
import type { ConfigSnapshot } from '../server/server';
import type { ClusterManager } from '../upstream/cluster-manager';

const T = 'type.googleapis.com/';
export const DUMP_TYPES = {
  bootstrap: `${T}envoy.admin.v3.BootstrapConfigDump`,
  clusters: `${T}envoy.admin.v3.ClustersConfigDump`,
  endpoints: `${T}envoy.admin.v3.EndpointsConfigDump`,
  listeners: `${T}envoy.admin.v3.ListenersConfigDump`,
  routes: `${T}envoy.admin.v3.RoutesConfigDump`,
  secrets: `${T}envoy.admin.v3.SecretsConfigDump`,
} as const;

/** `resource=` field -> the type of each of its elements. */
const RESOURCE_TYPES: Record<string, string> = {
  static_clusters: `${T}envoy.admin.v3.ClustersConfigDump.StaticCluster`,
  dynamic_active_clusters: `${T}envoy.admin.v3.ClustersConfigDump.DynamicCluster`,
  dynamic_warming_clusters: `${T}envoy.admin.v3.ClustersConfigDump.DynamicCluster`,
  static_endpoint_configs: `${T}envoy.admin.v3.EndpointsConfigDump.StaticEndpointConfig`,
  dynamic_endpoint_configs: `${T}envoy.admin.v3.EndpointsConfigDump.DynamicEndpointConfig`,
  static_listeners: `${T}envoy.admin.v3.ListenersConfigDump.StaticListener`,
  dynamic_listeners: `${T}envoy.admin.v3.ListenersConfigDump.DynamicListener`,
  static_route_configs: `${T}envoy.admin.v3.RoutesConfigDump.StaticRouteConfig`,
  dynamic_route_configs: `${T}envoy.admin.v3.RoutesConfigDump.DynamicRouteConfig`,
  static_secrets: `${T}envoy.admin.v3.SecretsConfigDump.StaticSecret`,
  dynamic_active_secrets: `${T}envoy.admin.v3.SecretsConfigDump.DynamicSecret`,
  dynamic_warming_secrets: `${T}envoy.admin.v3.SecretsConfigDump.DynamicSecret`,
};

type Json = Record<string, unknown>;

function snake(k: string): string {
  return k.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
}

/** Fields whose value is a google.protobuf.Struct (or a map of them): copied as they are. */
const OPAQUE = new Set(['filter_metadata', 'typed_filter_metadata', 'static_layer', 'json_format', 'typed_json_format']);
/** Map fields keyed by user strings whose values are messages. */
const MESSAGE_MAPS = new Set(['typed_per_filter_config', 'typed_extension_protocol_options']);
/** Fields holding key material. */
const SENSITIVE = new Set(['private_key', 'password', 'session_ticket_keys']);

/**
 * A resource as written (YAML/JSON, snake or lowerCamel case) -> proto field names, like Envoy
 * prints; Struct contents and map keys are left alone, secrets are redacted.
 */
export function normalize(v: unknown, structValue = false): unknown {
  if (Array.isArray(v)) return v.map((x) => normalize(x, structValue));
  if (!v || typeof v !== 'object') return v;
  if (structValue) return v;
  const o = v as Json;
  const out: Json = {};
  const isTypedStruct = typeof o['@type'] === 'string' && (o['@type'] as string).endsWith('TypedStruct');
  for (const [k0, val] of Object.entries(o)) {
    const k = k0 === '@type' ? k0 : snake(k0);
    if (SENSITIVE.has(k)) out[k] = redact(val);
    else if (OPAQUE.has(k) || (isTypedStruct && k === 'value')) out[k] = val;
    else if (k === 'metadata' && val && typeof val === 'object' && !('filter_metadata' in val) && !('filterMetadata' in val) && !('typed_filter_metadata' in val) && !('typedFilterMetadata' in val)) {
      out[k] = val; // node.metadata is a Struct
    } else if (MESSAGE_MAPS.has(k) && val && typeof val === 'object') {
      const m: Json = {};
      for (const [mk, mv] of Object.entries(val as Json)) m[mk] = normalize(mv);
      out[k] = m;
    } else out[k] = normalize(val);
  }
  return out;
}

function redact(v: unknown): unknown {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const out: Json = {};
    for (const k of Object.keys(v as Json)) out[snake(k)] = '[redacted]';
    return out;
  }
  return '[redacted]';
}

function withType(type: string, v: unknown): Json {
  return { '@type': `${T}${type}`, ...((normalize(v) as Json) ?? {}) };
}

function listenerJson(l: ListenerConfig): Json {
  return withType('envoy.config.listener.v3.Listener', l.source ?? minimalListener(l));
}

function minimalListener(l: ListenerConfig): Json {
  const a = l.address;
  return { name: l.name, address: a.pipe !== undefined ? { pipe: { path: a.pipe } } : { socket_address: { address: a.address, port_value: a.port } }, traffic_direction: l.trafficDirection };
}

function clusterJson(c: ClusterConfig): Json {
  return withType('envoy.config.cluster.v3.Cluster', c.source ?? { name: c.name, type: c.type });
}

function routeJson(r: RouteTableConfig): Json {
  return withType('envoy.config.route.v3.RouteConfiguration', r.source ?? { name: r.name });
}

/** Inline route tables of the listeners' connection managers (Envoy lists them as static route configs). */
function inlineRoutes(listeners: readonly ListenerConfig[]): RouteTableConfig[] {
  const out: RouteTableConfig[] = [];
  for (const l of listeners) {
    for (const fc of [...l.filterChains, ...(l.defaultFilterChain ? [l.defaultFilterChain] : [])]) {
      const f = fc.filter;
      if (f.kind === 'http_connection_manager' && f.routeConfig) out.push(f.routeConfig);
    }
  }
  return out;
}

/** Live hosts of every cluster as ClusterLoadAssignment JSON. */
function endpointsOf(clusters: ClusterManager): Array<{ name: string; json: Json }> {
  const out: Array<{ name: string; json: Json }> = [];
  for (const c of clusters.all()) {
    const byPriority = new Map<number, Json[]>();
    for (const h of c.hosts) {
      const prio = (h as unknown as { priority?: number }).priority ?? 0;
      let list = byPriority.get(prio);
      if (!list) byPriority.set(prio, (list = []));
      list.push({
        endpoint: { address: { socket_address: { address: h.address, port_value: h.port } }, ...(h.hostname ? { hostname: h.hostname } : {}) },
        health_status: h.health,
        load_balancing_weight: h.weight,
      });
    }
    const endpoints = [...byPriority.entries()].map(([priority, lb_endpoints]) => ({ lb_endpoints, ...(priority ? { priority } : {}) }));
    out.push({ name: c.name, json: { '@type': `${T}envoy.config.endpoint.v3.ClusterLoadAssignment`, cluster_name: c.name, endpoints } });
  }
  return out;
}

export interface DumpOptions {
  readonly includeEds: boolean;
  readonly resource?: string;
  readonly mask?: readonly string[];
  readonly nameRegex?: RegExp;
  /** a secret's public material by name (certificate chain or trusted CA); keys never come through here */
  readonly secretOf?: (name: string) => { certChain?: string; trustedCa?: string } | undefined;
}

/** Builds the ConfigDump ({configs: [...]}) for a snapshot. */
export function buildConfigDump(snap: ConfigSnapshot, clusters: ClusterManager, opts: DumpOptions): Json {
  const isStatic = (v: string): boolean => v === 'static';
  const bootstrap: Bootstrap = snap.bootstrap;
  const bootstrapDump: Json = {
    '@type': DUMP_TYPES.bootstrap,
    bootstrap: normalize(bootstrap.source ?? { node: bootstrap.node }),
    last_updated: snap.startedAt,
  };

  const lastVersion = (xs: readonly { version: string }[]): string => xs.filter((x) => !isStatic(x.version)).map((x) => x.version).pop() ?? '';

  const clustersDump: Json = { '@type': DUMP_TYPES.clusters, version_info: lastVersion(snap.clusters) };
  const staticClusters = snap.clusters.filter((c) => isStatic(c.version));
  const dynClusters = snap.clusters.filter((c) => !isStatic(c.version));
  if (staticClusters.length) clustersDump.static_clusters = staticClusters.map((c) => ({ cluster: clusterJson(c.config), last_updated: c.lastUpdated }));
  const active = dynClusters.filter((c) => c.state === 'active');
  const warming = dynClusters.filter((c) => c.state === 'warming');
  if (active.length) clustersDump.dynamic_active_clusters = active.map((c) => ({ version_info: c.version, cluster: clusterJson(c.config), last_updated: c.lastUpdated }));
  if (warming.length) clustersDump.dynamic_warming_clusters = warming.map((c) => ({ version_info: c.version, cluster: clusterJson(c.config), last_updated: c.lastUpdated }));

  const endpointsDump: Json = { '@type': DUMP_TYPES.endpoints };
  const dynamicEds = new Map(snap.endpoints.map((e) => [e.name, e]));
  const staticEps: Json[] = [];
  const dynEps: Json[] = [];
  for (const e of endpointsOf(clusters)) {
    const d = dynamicEds.get(e.name);
    if (d && !isStatic(d.version)) dynEps.push({ version_info: d.version, endpoint_config: e.json, last_updated: d.lastUpdated });
    else staticEps.push({ endpoint_config: e.json, last_updated: snap.startedAt });
  }
  if (staticEps.length) endpointsDump.static_endpoint_configs = staticEps;
  if (dynEps.length) endpointsDump.dynamic_endpoint_configs = dynEps;

  const listenersDump: Json = { '@type': DUMP_TYPES.listeners, version_info: lastVersion(snap.listeners) };
  const staticL = snap.listeners.filter((l) => isStatic(l.version));
  const dynL = snap.listeners.filter((l) => !isStatic(l.version));
  const lj = listenerJson;
  if (staticL.length) listenersDump.static_listeners = staticL.map((l) => ({ listener: lj(l.config), last_updated: l.lastUpdated }));
  if (dynL.length) {
    listenersDump.dynamic_listeners = dynL.map((l) => ({
      name: l.name,
      [l.state === 'active' ? 'active_state' : 'warming_state']: { version_info: l.version, listener: lj(l.config), last_updated: l.lastUpdated },
    }));
  }

  const routesDump: Json = { '@type': DUMP_TYPES.routes };
  const staticRoutes = inlineRoutes(snap.listeners.map((l) => l.config)).map((r) => ({ route_config: routeJson(r), last_updated: snap.startedAt }));
  for (const r of snap.routeConfigs.filter((x) => isStatic(x.version))) staticRoutes.push({ route_config: routeJson(r.config), last_updated: r.lastUpdated });
  const dynRoutes = snap.routeConfigs.filter((x) => !isStatic(x.version)).map((r) => ({ version_info: r.version, route_config: routeJson(r.config), last_updated: r.lastUpdated }));
  if (staticRoutes.length) routesDump.static_route_configs = staticRoutes;
  if (dynRoutes.length) routesDump.dynamic_route_configs = dynRoutes;

  const secretsDump: Json = { '@type': DUMP_TYPES.secrets };
  const secret = (name: string): Json => {
    const pub = opts.secretOf?.(name);
    const b64 = (pem: string): string => Buffer.from(pem, 'utf8').toString('base64');
    return {
      '@type': `${T}envoy.extensions.transport_sockets.tls.v3.Secret`,
      name,
      ...(pub?.certChain !== undefined ? { tls_certificate: { certificate_chain: { inline_bytes: b64(pub.certChain) }, private_key: { inline_string: '[redacted]' } } } : {}),
      ...(pub?.trustedCa !== undefined ? { validation_context: { trusted_ca: { inline_bytes: b64(pub.trustedCa) } } } : {}),
    };
  };
  const staticS = snap.secrets.filter((s) => isStatic(s.version));
  const dynS = snap.secrets.filter((s) => !isStatic(s.version));
  if (staticS.length) secretsDump.static_secrets = staticS.map((s) => ({ name: s.name, last_updated: s.lastUpdated, secret: secret(s.name) }));
  if (dynS.length) secretsDump.dynamic_active_secrets = dynS.map((s) => ({ name: s.name, version_info: s.version, last_updated: s.lastUpdated, secret: secret(s.name) }));

  let configs: Json[] = [bootstrapDump, clustersDump, ...(opts.includeEds ? [endpointsDump] : []), listenersDump, routesDump, secretsDump];

  if (opts.resource !== undefined) {
    const type = RESOURCE_TYPES[opts.resource];
    if (type === undefined) throw new DumpError(`resource '${opts.resource}' is not a repeated config dump field`);
    const items: Json[] = [];
    for (const c of configs) {
      const list = c[opts.resource];
      if (Array.isArray(list)) for (const it of list as Json[]) items.push({ '@type': type, ...it });
    }
    configs = items;
  }
  if (opts.nameRegex) {
    const re = opts.nameRegex;
    configs = opts.resource !== undefined ? configs.filter((c) => re.test(resourceName(c))) : configs.map((c) => filterByName(c, re));
  }
  if (opts.mask && opts.mask.length > 0) configs = configs.map((c) => applyMask(c, opts.mask!));
  return { configs };
}

export class DumpError extends Error {}

/** Name of a dump element: the listener/cluster/route/secret name inside it. */
function resourceName(el: Json): string {
  if (typeof el.name === 'string') return el.name;
  for (const k of ['cluster', 'listener', 'route_config', 'endpoint_config', 'secret']) {
    const inner = el[k] as Json | undefined;
    if (inner) return String(inner.name ?? inner.cluster_name ?? '');
  }
  return '';
}

function filterByName(dump: Json, re: RegExp): Json {
  const out: Json = {};
  for (const [k, v] of Object.entries(dump)) out[k] = Array.isArray(v) ? (v as Json[]).filter((el) => re.test(resourceName(el))) : v;
  return out;
}

/** A FieldMask over one config: dotted paths, applied through repeated fields; @type is kept. */
export function applyMask(obj: Json, paths: readonly string[]): Json {
  const tree: Record<string, unknown> = {};
  for (const p of paths) {
    let node = tree;
    for (const part of p.split('.')) node = (node[part] ??= {}) as Record<string, unknown>;
  }
  const pick = (v: unknown, t: Record<string, unknown>): unknown => {
    if (Object.keys(t).length === 0) return v;
    if (Array.isArray(v)) return v.map((x) => pick(x, t));
    if (!v || typeof v !== 'object') return v;
    const o = v as Json;
    const out: Json = {};
    if (o['@type'] !== undefined) out['@type'] = o['@type'];
    for (const [k, sub] of Object.entries(t)) if (o[k] !== undefined) out[k] = pick(o[k], sub as Record<string, unknown>);
    return out;
  };
  return pick(obj, tree) as Json;
}
