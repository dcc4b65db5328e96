// DestinationRule -> Envoy cluster settings, as istiod's cluster builder does it: load balancer
// (LEAST_REQUEST by default; consistentHash -> RING_HASH/MAGLEV plus the route hash_policy),
// connectionPool -> circuit_breakers / connect_timeout / HttpProtocolOptions, outlierDetection,
// upstream TLS, and the per-port / per-subset overrides. Produces raw Envoy v3 JSON objects
// (snake_case); validation problems go to the diagnostics with their paths.

import { parseIstioDuration, envoyDuration } from './durations';
import { type IstioDiagnostics, type Obj, isObj } from './resources';

export const MAX_UINT32 = 4294967295;
export const TYPE_URL = (t: string): string => `type.googleapis.com/${t}`;
export const HTTP_PROTOCOL_OPTIONS = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';

/** Where a DestinationRule field lives, for messages: `DestinationRule reviews` + `spec.trafficPolicy...`. */
export interface At {
  readonly diag: IstioDiagnostics;
  readonly where: string;
}

/** Files for TLS material, resolved by the caller (credentialName -> files). */
export interface TlsFiles {
  readonly cert?: string;
  readonly key?: string;
  readonly ca?: string;
}

export interface ClusterPolicyOptions {
  /** Cluster's port protocol: HTTP2/GRPC use HTTP/2 upstream. */
  readonly protocol: string;
  /** Resolves a credentialName to files (undefined: unknown). */
  credential(name: string): TlsFiles | undefined;
  /** Mesh certificates for ISTIO_MUTUAL (Istio's file-mounted /etc/certs layout), when configured. */
  readonly meshCerts?: { readonly certChain: string; readonly key: string; readonly rootCert: string };
  /** SNI istiod would use for ISTIO_MUTUAL: outbound_.9080_.v1_.reviews.default.svc.cluster.local */
  readonly istioSni: string;
  readonly hostname: string;
}

export function durationField(at: At, path: string, v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined;
  const ms = parseIstioDuration(v);
  if (typeof ms === 'string') {
    at.diag.problem(at.where, `${path}: ${ms}`);
    return undefined;
  }
  return ms;
}

function uintField(at: At, path: string, v: unknown, min = 0): number | undefined {
  if (v === undefined || v === null) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > MAX_UINT32) {
    at.diag.problem(at.where, `${path}: must be a whole number${min > 0 ? ` >= ${min}` : ''}, got ${JSON.stringify(v)}`);
    return undefined;
  }
  return n;
}

/**
 * istiod merges a subset's (or a port's) policy over the rule's: each of loadBalancer,
 * connectionPool, outlierDetection and tls is taken whole from the more specific level.
 */
export function mergePolicy(base: Obj | undefined, over: Obj | undefined): Obj | undefined {
  if (!over) return base;
  if (!base) return over;
  const out: Obj = { ...base };
  for (const k of ['loadBalancer', 'connectionPool', 'outlierDetection', 'tls', 'tunnel', 'proxyProtocol']) if (over[k] !== undefined) out[k] = over[k];
  return out;
}

/** The policy for one port: the portLevelSettings entry for that port number overrides. */
export function policyForPort(policy: Obj | undefined, port: number): Obj | undefined {
  if (!policy || !Array.isArray(policy.portLevelSettings)) return policy;
  const entry = policy.portLevelSettings.find((p) => isObj(p) && isObj(p.port) && Number(p.port.number) === port);
  return isObj(entry) ? mergePolicy(policy, entry) : policy;
}

/** Checks portLevelSettings entries (each needs port.number). */
export function checkPortLevelSettings(at: At, path: string, policy: Obj | undefined): void {
  if (!policy || policy.portLevelSettings === undefined) return;
  if (!Array.isArray(policy.portLevelSettings)) return at.diag.problem(at.where, `${path}.portLevelSettings: must be a list`);
  policy.portLevelSettings.forEach((p, i) => {
    if (!isObj(p) || !isObj(p.port) || !Number.isInteger(Number(p.port.number))) at.diag.problem(at.where, `${path}.portLevelSettings[${i}].port.number: is required`);
  });
}

/** The fields of `cluster` a traffic policy sets; `path` is where `policy` sits in the rule. */
export function applyTrafficPolicy(cluster: Obj, policy: Obj | undefined, path: string, at: At, opts: ClusterPolicyOptions): void {
  const thresholds: Obj = { max_connections: MAX_UINT32, max_pending_requests: MAX_UINT32, max_requests: MAX_UINT32, max_retries: MAX_UINT32, track_remaining: true };
  cluster.circuit_breakers = { thresholds: [thresholds] };
  cluster.lb_policy = 'LEAST_REQUEST';
  const http2 = opts.protocol === 'HTTP2' || opts.protocol === 'GRPC' || opts.protocol === 'GRPC-WEB';
  const common: Obj = {};
  let useHttp2 = http2;
  if (policy) {
    applyLoadBalancer(cluster, policy.loadBalancer, `${path}.loadBalancer`, at);
    if (isObj(policy.connectionPool)) {
      const cp = policy.connectionPool;
      const p = `${path}.connectionPool`;
      if (isObj(cp.tcp)) {
        const max = uintField(at, `${p}.tcp.maxConnections`, cp.tcp.maxConnections);
        if (max !== undefined && max > 0) thresholds.max_connections = max;
        const ct = durationField(at, `${p}.tcp.connectTimeout`, cp.tcp.connectTimeout);
        if (ct !== undefined) {
          if (ct <= 0) at.diag.problem(at.where, `${p}.tcp.connectTimeout: must be greater than 0`);
          else cluster.connect_timeout = envoyDuration(ct);
        }
        if (cp.tcp.tcpKeepalive !== undefined) at.diag.warn(at.where, `${p}.tcp.tcpKeepalive: ignored (keel does not set TCP keepalive options)`);
        if (cp.tcp.maxConnectionDuration !== undefined) {
          const d = durationField(at, `${p}.tcp.maxConnectionDuration`, cp.tcp.maxConnectionDuration);
          if (d !== undefined && d > 0) common.max_connection_duration = envoyDuration(d);
        }
        if (cp.tcp.idleTimeout !== undefined) durationField(at, `${p}.tcp.idleTimeout`, cp.tcp.idleTimeout);
      }
      if (isObj(cp.http)) {
        const h = cp.http;
        const pending = uintField(at, `${p}.http.http1MaxPendingRequests`, h.http1MaxPendingRequests);
        if (pending !== undefined && pending > 0) thresholds.max_pending_requests = pending;
        const reqs = uintField(at, `${p}.http.http2MaxRequests`, h.http2MaxRequests);
        if (reqs !== undefined && reqs > 0) thresholds.max_requests = reqs;
        const retries = uintField(at, `${p}.http.maxRetries`, h.maxRetries);
        if (retries !== undefined && retries > 0) thresholds.max_retries = retries;
        const perConn = uintField(at, `${p}.http.maxRequestsPerConnection`, h.maxRequestsPerConnection);
        if (perConn !== undefined && perConn > 0) common.max_requests_per_connection = perConn;
        const idle = durationField(at, `${p}.http.idleTimeout`, h.idleTimeout);
        if (idle !== undefined) common.idle_timeout = envoyDuration(idle);
        if (h.h2UpgradePolicy === 'UPGRADE') useHttp2 = true;
        else if (h.h2UpgradePolicy === 'DO_NOT_UPGRADE') useHttp2 = http2;
        if (h.useClientProtocol === true) at.diag.warn(at.where, `${p}.http.useClientProtocol: ignored; the port's protocol decides HTTP/1.1 or HTTP/2`);
        if (h.maxConcurrentStreams !== undefined && uintField(at, `${p}.http.maxConcurrentStreams`, h.maxConcurrentStreams) !== undefined) {
          at.diag.warn(at.where, `${p}.http.maxConcurrentStreams: ignored (keel's HTTP/2 pool uses the server's limit)`);
        }
      }
    }
    applyOutlierDetection(cluster, policy.outlierDetection, `${path}.outlierDetection`, at);
    applyTls(cluster, policy.tls, `${path}.tls`, at, opts);
    if (policy.tunnel !== undefined) at.diag.warn(at.where, `${path}.tunnel: ignored (keel does not tunnel upstream connections)`);
    if (policy.proxyProtocol !== undefined) at.diag.problem(at.where, `${path}.proxyProtocol: is not supported by keel`);
  }
  const protocolOptions: Obj = { '@type': TYPE_URL(HTTP_PROTOCOL_OPTIONS), explicit_http_config: useHttp2 ? { http2_protocol_options: {} } : { http_protocol_options: {} } };
  if (Object.keys(common).length > 0) protocolOptions.common_http_protocol_options = common;
  cluster.typed_extension_protocol_options = { [HTTP_PROTOCOL_OPTIONS]: protocolOptions };
}

const SIMPLE_LB: Readonly<Record<string, string>> = {
  UNSPECIFIED: 'LEAST_REQUEST',
  LEAST_CONN: 'LEAST_REQUEST',
  LEAST_REQUEST: 'LEAST_REQUEST',
  ROUND_ROBIN: 'ROUND_ROBIN',
  RANDOM: 'RANDOM',
};

function applyLoadBalancer(cluster: Obj, lb: unknown, path: string, at: At): void {
  if (lb === undefined) return;
  if (!isObj(lb)) return at.diag.problem(at.where, `${path}: must be an object`);
  if (lb.simple !== undefined && lb.consistentHash !== undefined) at.diag.problem(at.where, `${path}: only one of simple or consistentHash may be set`);
  if (lb.simple !== undefined) {
    const s = String(lb.simple);
    if (s === 'PASSTHROUGH') {
      cluster.type = 'ORIGINAL_DST';
      cluster.lb_policy = 'CLUSTER_PROVIDED';
      delete cluster.load_assignment;
    } else if (SIMPLE_LB[s] !== undefined) cluster.lb_policy = SIMPLE_LB[s];
    else at.diag.problem(at.where, `${path}.simple: ${s} is not one of UNSPECIFIED, LEAST_CONN, LEAST_REQUEST, ROUND_ROBIN, RANDOM, PASSTHROUGH`);
  }
  if (isObj(lb.consistentHash)) {
    const ch = lb.consistentHash;
    if (isObj(ch.maglev)) {
      cluster.lb_policy = 'MAGLEV';
      const size = uintField(at, `${path}.consistentHash.maglev.tableSize`, ch.maglev.tableSize, 1);
      if (size !== undefined) cluster.maglev_lb_config = { table_size: size };
    } else {
      cluster.lb_policy = 'RING_HASH';
      const fromRing = isObj(ch.ringHash) ? ch.ringHash.minimumRingSize : undefined;
      const min = uintField(at, `${path}.consistentHash.${fromRing !== undefined ? 'ringHash.' : ''}minimumRingSize`, fromRing ?? ch.minimumRingSize, 1);
      cluster.ring_hash_lb_config = { minimum_ring_size: min ?? 1024 };
    }
    const kinds = ['httpHeaderName', 'httpCookie', 'useSourceIp', 'httpQueryParameterName'].filter((k) => ch[k] !== undefined && ch[k] !== false);
    if (kinds.length !== 1) at.diag.problem(at.where, `${path}.consistentHash: exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required`);
    if (isObj(ch.httpCookie)) {
      if (typeof ch.httpCookie.name !== 'string' || ch.httpCookie.name === '') at.diag.problem(at.where, `${path}.consistentHash.httpCookie.name: is required`);
      durationField(at, `${path}.consistentHash.httpCookie.ttl`, ch.httpCookie.ttl);
    }
  }
  if (lb.localityLbSetting !== undefined) at.diag.warn(at.where, `${path}.localityLbSetting: ignored (keel's endpoints have no locality)`);
  if (lb.warmupDurationSecs !== undefined || lb.warmup !== undefined) at.diag.warn(at.where, `${path}.warmupDurationSecs: ignored (no slow start)`);
}

/** The route hash_policy for a destination whose rule uses consistentHash (istiod's consistentHashToHashPolicy). */
export function hashPolicyFor(policy: Obj | undefined): Obj[] | undefined {
  const lb = policy && isObj(policy.loadBalancer) ? policy.loadBalancer : undefined;
  const ch = lb && isObj(lb.consistentHash) ? lb.consistentHash : undefined;
  if (!ch) return undefined;
  if (typeof ch.httpHeaderName === 'string') return [{ header: { header_name: ch.httpHeaderName } }];
  if (isObj(ch.httpCookie)) {
    const c: Obj = { name: ch.httpCookie.name };
    if (typeof ch.httpCookie.path === 'string') c.path = ch.httpCookie.path;
    const ttl = ch.httpCookie.ttl !== undefined ? parseIstioDuration(ch.httpCookie.ttl) : undefined;
    if (typeof ttl === 'number') c.ttl = envoyDuration(ttl);
    return [{ cookie: c }];
  }
  if (ch.useSourceIp === true) return [{ connection_properties: { source_ip: true } }];
  if (typeof ch.httpQueryParameterName === 'string') return [{ query_parameter: { name: ch.httpQueryParameterName } }];
  return undefined;
}

function applyOutlierDetection(cluster: Obj, od: unknown, path: string, at: At): void {
  if (od === undefined) return;
  if (!isObj(od)) return at.diag.problem(at.where, `${path}: must be an object`);
  // istiod turns success-rate ejection off and sets only what the rule says.
  const out: Obj = { enforcing_success_rate: 0 };
  const gw = uintField(at, `${path}.consecutiveGatewayErrors`, od.consecutiveGatewayErrors);
  if (gw !== undefined) {
    out.consecutive_gateway_failure = gw;
    out.enforcing_consecutive_gateway_failure = gw > 0 ? 100 : 0;
  }
  const fivexx = uintField(at, `${path}.consecutive5xxErrors`, od.consecutive5xxErrors ?? od.consecutiveErrors);
  if (fivexx !== undefined) {
    out.consecutive_5xx = fivexx;
    out.enforcing_consecutive_5xx = fivexx > 0 ? 100 : 0;
  }
  if (od.splitExternalLocalOriginErrors === true) {
    out.split_external_local_origin_errors = true;
    const local = uintField(at, `${path}.consecutiveLocalOriginFailures`, od.consecutiveLocalOriginFailures);
    if (local !== undefined) {
      out.consecutive_local_origin_failure = local;
      out.enforcing_consecutive_local_origin_failure = 100;
    }
  } else if (od.consecutiveLocalOriginFailures !== undefined) {
    at.diag.problem(at.where, `${path}.consecutiveLocalOriginFailures: needs splitExternalLocalOriginErrors: true`);
  }
  const interval = durationField(at, `${path}.interval`, od.interval);
  if (interval !== undefined) {
    if (interval < 1) at.diag.problem(at.where, `${path}.interval: must be at least 1ms`);
    else out.interval = envoyDuration(interval);
  }
  const base = durationField(at, `${path}.baseEjectionTime`, od.baseEjectionTime);
  if (base !== undefined) {
    if (base < 1) at.diag.problem(at.where, `${path}.baseEjectionTime: must be at least 1ms`);
    else out.base_ejection_time = envoyDuration(base);
  }
  const pct = od.maxEjectionPercent;
  if (pct !== undefined) {
    const n = Number(pct);
    if (!Number.isInteger(n) || n < 0 || n > 100) at.diag.problem(at.where, `${path}.maxEjectionPercent: must be 0..100, got ${JSON.stringify(pct)}`);
    else out.max_ejection_percent = n;
  }
  const minHealth = od.minHealthPercent === undefined ? 0 : Number(od.minHealthPercent);
  if (!Number.isInteger(minHealth) || minHealth < 0 || minHealth > 100) at.diag.problem(at.where, `${path}.minHealthPercent: must be 0..100, got ${JSON.stringify(od.minHealthPercent)}`);
  else cluster.common_lb_config = { healthy_panic_threshold: { value: minHealth } };
  cluster.outlier_detection = out;
}

function validationContext(ca: string | undefined, sans: unknown, path: string, at: At): Obj | undefined {
  const list = Array.isArray(sans) ? sans.filter((s): s is string => typeof s === 'string') : [];
  if (ca === undefined) {
    if (list.length > 0) at.diag.problem(at.where, `${path}.subjectAltNames: need caCertificates (a CA to verify against)`);
    return undefined;
  }
  const v: Obj = { trusted_ca: { filename: ca } };
  if (list.length > 0) v.match_subject_alt_names = list.map((s) => ({ exact: s }));
  return v;
}

function applyTls(cluster: Obj, tls: unknown, path: string, at: At, opts: ClusterPolicyOptions): void {
  if (tls === undefined) return;
  if (!isObj(tls)) return at.diag.problem(at.where, `${path}: must be an object`);
  const mode = typeof tls.mode === 'string' ? tls.mode : 'DISABLE';
  if (mode === 'DISABLE') return;
  if (tls.caCrl !== undefined) at.diag.problem(at.where, `${path}.caCrl: certificate revocation lists are not supported by keel`);
  const common: Obj = {};
  const ctx: Obj = { common_tls_context: common };
  if (mode === 'ISTIO_MUTUAL') {
    if (!opts.meshCerts) {
      at.diag.warn(
        at.where,
        `${path}.mode: ISTIO_MUTUAL needs the mesh's certificates, which come from istiod; without --mesh-certs keel connects to ${opts.hostname} in plaintext`,
      );
      return;
    }
    common.tls_certificates = [{ certificate_chain: { filename: opts.meshCerts.certChain }, private_key: { filename: opts.meshCerts.key } }];
    common.validation_context = validationContext(opts.meshCerts.rootCert, tls.subjectAltNames, path, at);
    common.alpn_protocols = ['istio-peer-exchange', 'istio'];
    ctx.sni = typeof tls.sni === 'string' ? tls.sni : opts.istioSni;
  } else if (mode === 'SIMPLE' || mode === 'MUTUAL') {
    let files: TlsFiles = {};
    if (typeof tls.credentialName === 'string' && tls.credentialName !== '') {
      const f = opts.credential(tls.credentialName);
      if (!f) at.diag.problem(at.where, `${path}.credentialName: no files for credential '${tls.credentialName}' (expected <credentials dir>/${tls.credentialName}/tls.crt, tls.key, ca.crt)`);
      else files = f;
    }
    const ca = typeof tls.caCertificates === 'string' ? tls.caCertificates : files.ca;
    if (tls.insecureSkipVerify !== true) {
      const v = validationContext(ca, tls.subjectAltNames, path, at);
      if (v) common.validation_context = v;
      else at.diag.warn(at.where, `${path}: no caCertificates: the server certificate of ${opts.hostname} is not verified`);
    }
    if (mode === 'MUTUAL') {
      const cert = typeof tls.clientCertificate === 'string' ? tls.clientCertificate : files.cert;
      const key = typeof tls.privateKey === 'string' ? tls.privateKey : files.key;
      if (!cert || !key) at.diag.problem(at.where, `${path}: MUTUAL needs clientCertificate and privateKey (or a credentialName)`);
      else common.tls_certificates = [{ certificate_chain: { filename: cert }, private_key: { filename: key } }];
    }
    const sni = typeof tls.sni === 'string' && tls.sni !== '' ? tls.sni : opts.hostname.startsWith('*') ? undefined : opts.hostname;
    if (sni) ctx.sni = sni;
  } else {
    return at.diag.problem(at.where, `${path}.mode: ${mode} is not one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL`);
  }
  cluster.transport_socket = { name: 'envoy.transport_sockets.tls', typed_config: { '@type': TYPE_URL('envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext'), ...ctx } };
}
