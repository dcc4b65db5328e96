// The service registry keel builds without Kubernetes: services (FQDN host, ports, resolution) and
// their endpoints with labels, from ServiceEntry, WorkloadEntry and keel's compact Endpoints files.
// Also the host-name rules istiod applies (short names resolved in the resource's namespace).
// Plain data; no Envoy config is produced here.

import { type IstioDiagnostics, type IstioResource, type Obj, isObj, label } from './resources';

export interface ServicePort {
  readonly number: number;
  readonly name: string;
  /** HTTP, HTTP2, GRPC, HTTPS, TLS, TCP, ... (upper case; from protocol, else the name prefix). */
  readonly protocol: string;
  readonly targetPort?: number;
}

export interface ServiceEndpoint {
  readonly address: string;
  /** Port per service port name (ServiceEntry endpoints' `ports`), else per number. */
  readonly ports: Readonly<Record<string, number>>;
  readonly labels: Readonly<Record<string, string>>;
  /** Where it came from, for messages. */
  readonly source: string;
}

export interface Service {
  readonly hostname: string;
  readonly namespace: string;
  readonly ports: ServicePort[];
  readonly resolution: 'STATIC' | 'DNS' | 'DNS_ROUND_ROBIN' | 'NONE';
  readonly endpoints: ServiceEndpoint[];
  /** ServiceEntry location: MESH_INTERNAL or MESH_EXTERNAL. */
  readonly location: string;
  readonly source: string;
}

export const CLUSTER_DOMAIN = 'svc.cluster.local';

/** istiod's ResolveShortnameToFQDN: a name without dots is `<name>.<namespace>.svc.cluster.local`. */
export function resolveHost(host: string, namespace: string): string {
  if (host === '*' || host.includes('.')) return host.toLowerCase();
  return `${host}.${namespace}.${CLUSTER_DOMAIN}`.toLowerCase();
}

/** Istio host matching: exact, or a `*.example.com` wildcard on either side. */
export function hostMatches(pattern: string, host: string): boolean {
  if (pattern === '*' || pattern === host) return true;
  if (pattern.startsWith('*')) return host.endsWith(pattern.slice(1));
  if (host.startsWith('*')) return pattern.endsWith(host.slice(1));
  return false;
}

export function protocolOf(name: string, protocol: unknown): string {
  if (typeof protocol === 'string' && protocol !== '') return protocol.toUpperCase();
  const prefix = name.split('-')[0].toLowerCase();
  const known: Record<string, string> = { http: 'HTTP', http2: 'HTTP2', grpc: 'GRPC', 'grpc-web': 'GRPC-WEB', https: 'HTTPS', tls: 'TLS', tcp: 'TCP', mongo: 'MONGO', redis: 'REDIS', mysql: 'MYSQL' };
  return known[prefix] ?? 'HTTP';
}

function labelsOf(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (isObj(v)) for (const [k, x] of Object.entries(v)) out[k] = String(x);
  return out;
}

export function labelsMatch(selector: Readonly<Record<string, string>>, labels: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}

function splitAddress(address: string): { host: string; port?: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
  if (m && (address.startsWith('[') || !m[1].includes(':'))) return { host: m[1], port: Number(m[2]) };
  return { host: address };
}

/** Builds the registry; every problem is reported with its resource and path. */
export function buildRegistry(resources: readonly IstioResource[], defaultNamespace: string, diag: IstioDiagnostics): Map<string, Service> {
  const services = new Map<string, Service>();
  const workloadEntries = resources.filter((r) => r.kind === 'WorkloadEntry');

  for (const r of resources) {
    if (r.kind === 'ServiceEntry') addServiceEntry(r, workloadEntries, services, defaultNamespace, diag);
  }
  for (const r of resources) {
    if (r.kind === 'Endpoints') addEndpoints(r, services, defaultNamespace, diag);
  }
  for (const r of workloadEntries) {
    const where = label(r, defaultNamespace);
    if (typeof r.spec.address !== 'string' || r.spec.address === '') diag.problem(where, 'spec.address is required');
  }
  return services;
}

function readPorts(list: unknown, path: string, where: string, diag: IstioDiagnostics): ServicePort[] {
  const ports: ServicePort[] = [];
  if (!Array.isArray(list)) return ports;
  list.forEach((p, i) => {
    if (!isObj(p)) return diag.problem(where, `${path}[${i}]: must be an object`);
    const number = Number(p.number);
    if (!Number.isInteger(number) || number < 1 || number > 65535) return diag.problem(where, `${path}[${i}].number: must be a port number (1..65535), got ${JSON.stringify(p.number)}`);
    const name = typeof p.name === 'string' ? p.name : `port-${number}`;
    const targetPort = p.targetPort === undefined ? undefined : Number(p.targetPort);
    if (targetPort !== undefined && (!Number.isInteger(targetPort) || targetPort < 1 || targetPort > 65535)) {
      diag.problem(where, `${path}[${i}].targetPort: must be a port number (1..65535)`);
    }
    if (ports.some((x) => x.number === number)) diag.problem(where, `${path}[${i}].number: port ${number} is listed twice`);
    ports.push({ number, name, protocol: protocolOf(name, p.protocol), ...(targetPort !== undefined ? { targetPort } : {}) });
  });
  return ports;
}

function addServiceEntry(r: IstioResource, workloadEntries: readonly IstioResource[], services: Map<string, Service>, defaultNamespace: string, diag: IstioDiagnostics): void {
  const where = label(r, defaultNamespace);
  const s = r.spec;
  const hosts = Array.isArray(s.hosts) ? s.hosts.filter((h): h is string => typeof h === 'string') : [];
  if (hosts.length === 0) diag.problem(where, 'spec.hosts: at least one host is required');
  const ports = readPorts(s.ports, 'spec.ports', where, diag);
  if (ports.length === 0) diag.problem(where, 'spec.ports: at least one port is required');
  const resolution = (typeof s.resolution === 'string' ? s.resolution : 'NONE') as Service['resolution'];
  if (!['STATIC', 'DNS', 'DNS_ROUND_ROBIN', 'NONE'].includes(resolution)) diag.problem(where, `spec.resolution: ${resolution} is not STATIC, DNS, DNS_ROUND_ROBIN or NONE`);
  const endpoints: ServiceEndpoint[] = [];
  if (Array.isArray(s.endpoints)) {
    s.endpoints.forEach((e, i) => {
      const path = `spec.endpoints[${i}]`;
      if (!isObj(e) || typeof e.address !== 'string' || e.address === '') return diag.problem(where, `${path}.address: is required`);
      if (e.address.startsWith('unix://')) return diag.problem(where, `${path}.address: unix domain socket endpoints are not supported by keel`);
      endpoints.push({ address: e.address, ports: endpointPorts(e.ports, `${path}.ports`, where, diag), labels: labelsOf(e.labels), source: `${where} ${path}` });
    });
  }
  const selector = isObj(s.workloadSelector) ? labelsOf(s.workloadSelector.labels) : undefined;
  if (selector && endpoints.length > 0) diag.problem(where, 'spec.workloadSelector and spec.endpoints cannot both be set');
  if (selector) {
    for (const we of workloadEntries) {
      if (we.namespace !== r.namespace || !labelsMatch(selector, labelsOf(we.spec.labels))) continue;
      if (typeof we.spec.address !== 'string' || we.spec.address === '') continue;
      endpoints.push({ address: we.spec.address, ports: endpointPorts(we.spec.ports, 'spec.ports', label(we, defaultNamespace), diag), labels: labelsOf(we.spec.labels), source: label(we, defaultNamespace) });
    }
  }
  if (resolution === 'STATIC' && endpoints.length === 0) diag.warn(where, 'resolution STATIC without endpoints: requests to it get 503 (no healthy upstream)');
  if (resolution === 'STATIC') {
    endpoints.forEach((e, i) => {
      if (!isIpAddress(e.address)) diag.problem(where, `spec.endpoints[${i}].address: '${e.address}' must be an IP address with resolution STATIC`);
    });
  }
  hosts.forEach((h, i) => {
    if (resolution !== 'NONE' && h.startsWith('*')) diag.problem(where, `spec.hosts[${i}]: wildcard host '${h}' needs resolution NONE`);
    const hostname = h.toLowerCase();
    if (services.has(hostname)) {
      diag.warn(where, `spec.hosts[${i}]: '${hostname}' is already defined by ${services.get(hostname)!.source}; this one is ignored`);
      return;
    }
    services.set(hostname, { hostname, namespace: r.namespace, ports, resolution, endpoints, location: typeof s.location === 'string' ? s.location : 'MESH_EXTERNAL', source: where });
  });
}

function endpointPorts(v: unknown, path: string, where: string, diag: IstioDiagnostics): Record<string, number> {
  const out: Record<string, number> = {};
  if (v === undefined) return out;
  if (!isObj(v)) {
    diag.problem(where, `${path}: must be a map of port name to number`);
    return out;
  }
  for (const [k, x] of Object.entries(v)) {
    const n = Number(x);
    if (!Number.isInteger(n) || n < 1 || n > 65535) diag.problem(where, `${path}.${k}: must be a port number (1..65535)`);
    else out[k] = n;
  }
  return out;
}

/**
 * keel's compact endpoints file: one service port and its endpoints, e.g.
 * `kind: Endpoints`, `service: reviews`, `port: 9080`, `endpoints: [{address: 127.0.0.1:9081, labels: {version: v1}}]`.
 * `ports` (a list like a ServiceEntry's) may replace `port`; `protocol` defaults to HTTP.
 */
function addEndpoints(r: IstioResource, services: Map<string, Service>, defaultNamespace: string, diag: IstioDiagnostics): void {
  const where = label(r, defaultNamespace);
  const s = r.spec;
  const known = new Set(['service', 'namespace', 'port', 'ports', 'protocol', 'endpoints', 'resolution']);
  for (const k of Object.keys(s)) if (!known.has(k)) diag.problem(where, `${k}: unknown field (Endpoints has service, namespace, port, ports, protocol, resolution, endpoints)`);
  const service = typeof s.service === 'string' ? s.service : r.name;
  const hostname = resolveHost(service, r.namespace);
  let ports: ServicePort[];
  if (s.ports !== undefined) ports = readPorts(s.ports, 'ports', where, diag);
  else {
    const number = Number(s.port);
    if (!Number.isInteger(number) || number < 1 || number > 65535) {
      diag.problem(where, `port: must be a port number (1..65535), got ${JSON.stringify(s.port)}`);
      return;
    }
    ports = [{ number, name: `http-${number}`, protocol: protocolOf('http', s.protocol) }];
  }
  const resolution = s.resolution === 'DNS' ? 'DNS' : 'STATIC';
  const endpoints: ServiceEndpoint[] = [];
  const list: unknown[] = Array.isArray(s.endpoints) ? s.endpoints : [];
  if (!Array.isArray(s.endpoints)) diag.problem(where, 'endpoints: a list of {address, port?, labels?} is required');
  list.forEach((e, i) => {
    const path = `endpoints[${i}]`;
    const item: Obj = typeof e === 'string' ? { address: e } : isObj(e) ? e : {};
    if (typeof item.address !== 'string' || item.address === '') return diag.problem(where, `${path}.address: is required`);
    const { host, port } = splitAddress(item.address);
    const p = item.port !== undefined ? Number(item.port) : port;
    if (p !== undefined && (!Number.isInteger(p) || p < 1 || p > 65535)) return diag.problem(where, `${path}.port: must be a port number (1..65535)`);
    if (resolution === 'STATIC' && !isIpAddress(host)) return diag.problem(where, `${path}.address: '${host}' must be an IP address (or set resolution: DNS)`);
    const byPort: Record<string, number> = {};
    if (p !== undefined) for (const sp of ports) byPort[sp.name] = p;
    endpoints.push({ address: host, ports: byPort, labels: labelsOf(item.labels), source: `${where} ${path}` });
  });
  const existing = services.get(hostname);
  if (existing) {
    // Several Endpoints files (or one per port) for the same service add up.
    for (const p of ports) if (!existing.ports.some((x) => x.number === p.number)) existing.ports.push(p);
    for (const e of endpoints) {
      const ports2: Record<string, number> = { ...e.ports };
      existing.endpoints.push({ ...e, ports: ports2 });
    }
    return;
  }
  services.set(hostname, { hostname, namespace: r.namespace, ports, resolution, endpoints, location: 'MESH_INTERNAL', source: where });
}

export function isIpAddress(s: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(s) || (s.includes(':') && /^[0-9a-fA-F:.]+$/.test(s));
}

/** The port an endpoint listens on for a service port (by name, then target port, then the number). */
export function endpointPort(e: ServiceEndpoint, p: ServicePort): number {
  return e.ports[p.name] ?? p.targetPort ?? p.number;
}
