// The agent's view of the injected istio-proxy environment (what pilot-agent reads): identity, the
// discovery and CA addresses, ProxyConfig, node metadata (ISTIO_META_*, ISTIO_METAJSON_*, pod
// labels and annotations), extra gRPC headers, and the file paths (token, root cert, pod info).
// Every path and port is overridable by an environment variable so tests can run it unprivileged.
// Pure: reads env and small files, starts nothing.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';

export type ProxyType = 'sidecar' | 'router';

export interface AgentPaths {
  /** projected service-account JWT (KEEL_TOKEN_PATH; default /var/run/secrets/tokens/istio-token) */
  readonly token: string;
  /** root of trust for istiod's TLS (KEEL_ROOT_CERT_PATH; default /var/run/secrets/istio/root-cert.pem) */
  readonly rootCert: string;
  /** downward API dir with `labels` and `annotations` (KEEL_POD_INFO_DIR; default /etc/istio/pod) */
  readonly podInfoDir: string;
  /** writable scratch (KEEL_PROXY_DIR; default /etc/istio/proxy) */
  readonly proxyDir: string;
}

export interface AgentPorts {
  /** admin (KEEL_ADMIN_PORT, default 15000; localhost only) */
  readonly admin: number;
  /** agent status (KEEL_STATUS_PORT, default 15020) */
  readonly status: number;
  /** readiness (KEEL_READINESS_PORT, default 15021) */
  readonly readiness: number;
  /** Envoy Prometheus (KEEL_PROMETHEUS_PORT, default 15090) */
  readonly prometheus: number;
}

export interface AgentConfig {
  readonly type: ProxyType;
  readonly podName: string;
  readonly namespace: string;
  readonly instanceIp: string;
  readonly serviceAccount: string;
  readonly trustDomain: string;
  readonly domain: string;
  readonly clusterId: string;
  /** host:port of istiod's xDS (ProxyConfig discoveryAddress, default istiod.istio-system.svc:15012) */
  readonly discoveryAddress: string;
  /** host:port of the CA (CA_ADDR, default the discovery address) */
  readonly caAddress: string;
  /** name istiod's certificate must carry (ISTIOD_SAN, default the discovery host) */
  readonly istiodSan: string;
  /** TLS to istiod (off for port 15010 or controlPlaneAuthPolicy NONE) */
  readonly tls: boolean;
  /** delta xDS (ISTIO_DELTA_XDS, default true) */
  readonly delta: boolean;
  /** ProxyConfig (PROXY_CONFIG), as JSON */
  readonly proxyConfig: Record<string, unknown>;
  /** XDS_HEADER_* */
  readonly xdsHeaders: Readonly<Record<string, string>>;
  readonly paths: AgentPaths;
  readonly ports: AgentPorts;
  /** node metadata as pilot-agent sends it */
  readonly metadata: Record<string, unknown>;
  readonly nodeId: string;
}

export interface AgentFlags {
  readonly domain?: string;
  readonly serviceCluster?: string;
}

/** pilot-agent flags keel reads; every other flag is tolerated and ignored. */
export function parseAgentFlags(argv: readonly string[]): { type: ProxyType; flags: AgentFlags; ignored: string[] } {
  const type: ProxyType = argv[0] === 'router' ? 'router' : 'sidecar';
  const flags: { domain?: string; serviceCluster?: string } = {};
  const ignored: string[] = [];
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(0, eq) : a;
    const inline = eq > 0 ? a.slice(eq + 1) : undefined;
    const value = (): string | undefined => inline ?? (i + 1 < argv.length && !argv[i + 1].startsWith('-') ? argv[++i] : undefined);
    switch (name.replace(/^--?/, '')) {
      case 'domain':
        flags.domain = value();
        break;
      case 'serviceCluster':
        flags.serviceCluster = value();
        break;
      default:
        if (name.startsWith('-') && inline === undefined && i + 1 < argv.length && !argv[i + 1].startsWith('-')) i++;
        ignored.push(name);
    }
  }
  return { type, flags, ignored };
}

function num(v: string | undefined, def: number): number {
  const n = Number(v);
  return v !== undefined && v !== '' && Number.isInteger(n) && n >= 0 ? n : def;
}

function readOr(file: string, def = ''): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return def;
  }
}

/** Downward API files: `key="value"` lines. */
export function parseDownwardApi(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([^=]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    let v = m[2];
    if (v.startsWith('"') && v.endsWith('"')) {
      try {
        v = JSON.parse(v) as string;
      } catch {
        v = v.slice(1, -1);
      }
    }
    out[m[1]] = v;
  }
  return out;
}

function parseProxyConfig(text: string | undefined): Record<string, unknown> {
  if (!text) return {};
  const v = parseYaml(text) as unknown;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('PROXY_CONFIG must be a ProxyConfig object (JSON or YAML)');
  return v as Record<string, unknown>;
}

function hostOf(address: string): string {
  const i = address.lastIndexOf(':');
  const h = i > 0 ? address.slice(0, i) : address;
  return h.replace(/^\[|\]$/g, '');
}

/** Reads the environment (and the pod info files) the way pilot-agent does. Throws on malformed PROXY_CONFIG / ISTIO_METAJSON_*. */
export function agentConfigFromEnv(env: NodeJS.ProcessEnv, argv: readonly string[] = ['sidecar']): AgentConfig {
  const { type, flags } = parseAgentFlags(argv);
  const namespace = env.POD_NAMESPACE || 'default';
  const podName = env.POD_NAME || 'unknown';
  const instanceIp = env.INSTANCE_IP || '127.0.0.1';
  const serviceAccount = env.SERVICE_ACCOUNT || 'default';
  const proxyConfig = parseProxyConfig(env.PROXY_CONFIG);
  const discoveryAddress = String(proxyConfig.discoveryAddress ?? 'istiod.istio-system.svc:15012');
  const istiodSan = env.ISTIOD_SAN || hostOf(discoveryAddress);
  const trustDomain = env.TRUST_DOMAIN || 'cluster.local';
  const domain = flags.domain || `${namespace}.svc.cluster.local`;
  const paths: AgentPaths = {
    token: env.KEEL_TOKEN_PATH || '/var/run/secrets/tokens/istio-token',
    rootCert: env.KEEL_ROOT_CERT_PATH || '/var/run/secrets/istio/root-cert.pem',
    podInfoDir: env.KEEL_POD_INFO_DIR || '/etc/istio/pod',
    proxyDir: env.KEEL_PROXY_DIR || '/etc/istio/proxy',
  };
  const ports: AgentPorts = {
    admin: num(env.KEEL_ADMIN_PORT, 15000),
    status: num(env.KEEL_STATUS_PORT, 15020),
    readiness: num(env.KEEL_READINESS_PORT, 15021),
    prometheus: num(env.KEEL_PROMETHEUS_PORT, 15090),
  };
  const xdsHeaders: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (k.startsWith('XDS_HEADER_') && k.length > 11 && v !== undefined) xdsHeaders[k.slice(11)] = v;

  // Node metadata (pkg/bootstrap/config.go GetNodeMetaData): ISTIO_META_* as strings, ISTIO_METAJSON_* merged as JSON.
  const meta: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(env)) if (k.startsWith('ISTIO_META_') && v !== undefined) meta[k.slice(11)] = v;
  for (const [k, v] of Object.entries(env)) {
    if (!k.startsWith('ISTIO_METAJSON_') || v === undefined) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(v);
    } catch (e) {
      throw new Error(`${k}: invalid JSON: ${(e as Error).message}`);
    }
    const key = k.slice(15);
    const prev = meta[key];
    meta[key] = prev !== null && typeof prev === 'object' && parsed !== null && typeof parsed === 'object' ? { ...prev, ...parsed } : parsed;
  }
  const labels = { ...parseDownwardApi(readOr(path.join(paths.podInfoDir, 'labels'))), ...((meta.LABELS as Record<string, string> | undefined) ?? {}) };
  const annotations = { ...parseDownwardApi(readOr(path.join(paths.podInfoDir, 'annotations'))), ...((meta.ANNOTATIONS as Record<string, string> | undefined) ?? {}) };
  const clusterId = (meta.CLUSTER_ID as string | undefined) || 'Kubernetes';
  const metadata: Record<string, unknown> = {
    ...meta,
    ISTIO_VERSION: (meta.ISTIO_VERSION as string | undefined) ?? env.ISTIO_VERSION ?? '1.24.0',
    NAMESPACE: namespace,
    NAME: podName,
    SERVICE_ACCOUNT: serviceAccount,
    INSTANCE_IPS: env.INSTANCE_IPS || instanceIp,
    CLUSTER_ID: clusterId,
    LABELS: labels,
    ANNOTATIONS: annotations,
    PROXY_CONFIG: proxyConfig,
    PILOT_SAN: [istiodSan],
    ENVOY_STATUS_PORT: ports.readiness,
    ENVOY_PROMETHEUS_PORT: ports.prometheus,
    ISTIO_PROXY_SHA: 'keel',
    ...(meta.INTERCEPTION_MODE === undefined ? { INTERCEPTION_MODE: 'REDIRECT' } : {}),
    ...(meta.WORKLOAD_NAME === undefined && labels.app ? { WORKLOAD_NAME: labels.app } : {}),
  };
  const authPolicy = String(proxyConfig.controlPlaneAuthPolicy ?? '');
  const tls = !(authPolicy === 'NONE' || discoveryAddress.endsWith(':15010'));
  return {
    type,
    podName,
    namespace,
    instanceIp,
    serviceAccount,
    trustDomain,
    domain,
    clusterId,
    discoveryAddress,
    caAddress: env.CA_ADDR || discoveryAddress,
    istiodSan,
    tls,
    delta: !/^(0|false|no)$/i.test(env.ISTIO_DELTA_XDS ?? 'true'),
    proxyConfig,
    xdsHeaders,
    paths,
    ports,
    metadata,
    nodeId: `${type}~${instanceIp}~${podName}.${namespace}~${domain}`,
  };
}
