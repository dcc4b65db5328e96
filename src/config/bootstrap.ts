// Envoy v3 bootstrap (YAML or proto3 JSON) -> keel's Bootstrap, validated. Every problem found is
// collected with its path and reported at once through ConfigError; things keel accepts but does not
// act on are reported as warnings.

import { compileFormat } from '../common/header-format';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { parseDocument } from 'yaml';
import { compileRe2, compileRe2Full, compileSubstitution } from '../common/re2';
import { Diagnostics, IgnoredFields, isObject, readAny, Reader } from './decode';
import { ConfigError, type ConfigProblem } from './errors';
import { filterDecoder, perRouteDecoder } from './http-filters';
import { decodeCorsPolicy, withLegacyCors } from './filters/cors';
import { decodeAccessLog, decodeHcmTracing, decodeRouteTracing } from './observability';
import type {
  AlpnOverride,
  AppendAction,
  Bootstrap,
  CertificateValidation,
  CidrRange,
  CircuitBreakerThresholds,
  ClusterConfig,
  ConfigSourceConfig,
  DynamicResourcesConfig,
  DirectResponseAction,
  DownstreamTlsConfig,
  ClientCertDetail,
  ForwardClientCertDetails,
  EndpointConfig,
  FilterChainConfig,
  FilterChainMatchConfig,
  NetworkPreFilterConfig,
  ForwardAction,
  FractionalPercent,
  HashPolicyConfig,
  HealthCheckConfig,
  SlowStartConfig,
  HeaderMatcherConfig,
  HeaderMutations,
  HeaderValueOption,
  HealthStatus,
  Http2Options,
  HttpConnectionManagerConfig,
  HttpFilterConfig,
  LbPolicy,
  PerFilterConfig,
  ListenerConfig,
  ListenerFilterConfig,
  LocalityEndpointsConfig,
  MetadataMatcherConfig,
  NetworkFilterConfig,
  NodeInfo,
  OutlierDetectionConfig,
  QueryParameterMatcherConfig,
  RedirectAction,
  RegexRewriteConfig,
  RequestMirrorPolicyConfig,
  RetryPolicyConfig,
  RouteActionConfig,
  RouteConfigEntry,
  RouteMatchConfig,
  RouteTableConfig,
  RuntimeFractionConfig,
  RuntimeValues,
  SocketAddress,
  StringMatcherConfig,
  TcpProxyConfig,
  TlsCertificate,
  UpstreamTlsConfig,
  ValueMatcherConfig,
  VirtualClusterConfig,
  VirtualHostConfig,
} from './types';

import { RBAC_NETWORK_NAME, RBAC_NETWORK_TYPE, decodeNetworkRbac } from './filters/rbac';
import { FilterChainMatcher } from '../listener/chain-match';
export interface DecodedBootstrap {
  readonly bootstrap: Bootstrap;
  readonly warnings: string[];
}

// ---------------------------------------------------------------------------------------------
// Extension names and types keel knows

const TYPE = {
  hcm: 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
  tcpProxy: 'envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
  router: 'envoy.extensions.filters.http.router.v3.Router',
  downstreamTls: 'envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
  upstreamTls: 'envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
  rawBuffer: 'envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer',
  httpProtocolOptions: 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
  tcpProtocolOptions: 'envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions',
  istioAlpn: 'istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig',
} as const;

const NAME = {
  hcm: 'envoy.filters.network.http_connection_manager',
  tcpProxy: 'envoy.filters.network.tcp_proxy',
  router: 'envoy.filters.http.router',
  istioAlpn: 'istio.alpn',
  tls: 'envoy.transport_sockets.tls',
  rawBuffer: 'envoy.transport_sockets.raw_buffer',
} as const;

/** Listener filters keel implements: canonical name -> config type. */
const LISTENER_FILTERS: ReadonlyMap<string, string> = new Map([
  ['envoy.filters.listener.original_dst', 'envoy.extensions.filters.listener.original_dst.v3.OriginalDst'],
  ['envoy.filters.listener.tls_inspector', 'envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector'],
  ['envoy.filters.listener.http_inspector', 'envoy.extensions.filters.listener.http_inspector.v3.HttpInspector'],
]);

/**
 * HTTP filters (by filter name or by config type) that keel accepts and skips with a warning: Istio's
 * telemetry and metadata plumbing, which does not change how a request is routed or answered. Later
 * work implements some of these (stats, peer metadata); until then the proxy runs without them.
 * Note: any filter named envoy.filters.http.wasm is skipped, whatever plugin it loads.
 */
export const SKIPPED_HTTP_FILTERS: ReadonlySet<string> = new Set([
  'istio.metadata_exchange',
  'istio.stats',
  'istio.peer_metadata',
  'envoy.filters.http.peer_metadata',
  'envoy.filters.http.grpc_stats',
  'envoy.filters.http.wasm',
  // config types of the same filters
  'io.istio.http.peer_metadata.Config',
  'stats.PluginConfig',
  'envoy.extensions.filters.http.grpc_stats.v3.FilterConfig',
]);

/**
 * Non-terminal network filters (by name or config type) keel accepts and skips with a warning:
 * Istio's TCP telemetry and peer-metadata plumbing, which never decide whether bytes flow.
 */
export const SKIPPED_NETWORK_FILTERS: ReadonlySet<string> = new Set([
  'istio.metadata_exchange',
  'istio.stats',
  'envoy.tcp.metadataexchange.config.MetadataExchange',
  'stats.PluginConfig',
]);

// ---------------------------------------------------------------------------------------------
// Fields Envoy has that keel accepts and does not act on. This is the one place that list lives:
// anything else that keel does not read is an error (`unknown field`), as it is for Envoy. A string
// is the warning given when the field is set; null means the field is skipped silently because it
// cannot change what keel does (statistics names, identification, performance knobs).

const STATS = null;
const ACCESS_LOG = 'access logging is not configured through the bootstrap in keel';
const TRACING = 'keel does not emit traces';
const TUNING = null;

export const IGNORED_FIELDS: IgnoredFields = {
  Bootstrap: {
    stats_config: 'stats tags and matchers are fixed in keel',
    stats_sinks: 'keel exposes stats on the admin endpoint only',
    stats_flush_interval: STATS,
    stats_flush_on_admin: STATS,
    stats_server_version_override: STATS,
    enable_dispatcher_stats: STATS,
    tracing: TRACING,
    watchdog: 'keel has no watchdog',
    watchdogs: 'keel has no watchdog',
    overload_manager: 'keel has no overload manager',
    cluster_manager: 'cluster manager options (local cluster, outlier event log) are not used',
    node_context_params: null,
  },
  Node: {
    // identification sent to a management server; keel has none yet
    locality: null,
    user_agent_name: null,
    user_agent_version: null,
    user_agent_build_version: null,
    extensions: null,
    client_features: null,
    listening_addresses: null,
  },
  Admin: {
    access_log_path: ACCESS_LOG,
    access_log: ACCESS_LOG,
    profile_path: 'keel has no CPU profiler endpoint',
    socket_options: 'socket options are not applied',
    ignore_global_conn_limit: null,
  },
  SocketAddress: { ipv4_compat: null },
  Listener: {
    stat_prefix: STATS,
    metadata: null,
    access_log: ACCESS_LOG,
    socket_options: 'socket options are not applied',
    drain_type: 'keel drains every listener the same way',
    tcp_backlog_size: TUNING,
    enable_reuse_port: TUNING,
    connection_balance_config: TUNING,
    tcp_fast_open_queue_length: TUNING,
    ignore_global_conn_limit: TUNING,
    freebind: 'IP_FREEBIND is not available to Node.js sockets',
  },
  FilterChain: {
    metadata: null,
    transport_socket_connect_timeout: 'the TLS handshake is bounded by listener_filters_timeout only',
  },
  ListenerFilter: { filter_disabled: 'the listener filter runs on every connection' },
  HttpConnectionManager: {
    access_log_options: 'access logs are written when each request completes',
    access_log_flush_interval: null,
    flush_access_log_on_new_request: 'access logs are written when each request completes',
    request_id_extension: 'x-request-id is always a UUID4',
    add_user_agent: 'user-agent and x-envoy-downstream-service-cluster are not set',
    local_reply_config: 'local replies use the default bodies',
    proxy_100_continue: 'keel answers Expect: 100-continue itself',
    http3_protocol_options: null,
    represent_ipv4_remote_address_as_ipv4_mapped_ipv6: null,
    add_proxy_protocol_connection_state: null,
    stream_flush_timeout: TUNING,
    drain_timeout_jitter: TUNING,
    http1_safe_max_connection_duration: TUNING,
  },
  Router: {
    dynamic_stats: STATS,
    start_child_span: TRACING,
    upstream_log: ACCESS_LOG,
    upstream_log_options: ACCESS_LOG,
    suppress_grpc_request_failure_code_stats: STATS,
    strict_check_headers: 'x-envoy-* request headers are not strictly validated',
    respect_expected_rq_timeout: 'x-envoy-expected-rq-timeout-ms is not honoured',
  },
  HttpProtocolOptions: { max_response_headers_kb: TUNING },
  Http1ProtocolOptions: {
    header_key_format: 'header names are always sent in lower case',
    allow_absolute_url: TUNING,
    enable_trailers: TUNING,
    allow_chunked_length: TUNING,
    override_stream_error_on_invalid_http_message: TUNING,
    send_fully_qualified_url: TUNING,
    use_balsa_parser: TUNING,
    allow_custom_methods: TUNING,
  },
  KeepaliveSettings: { connection_idle_interval: 'PINGs are sent every interval, idle or not' },
  Http2ProtocolOptions: {
    max_inbound_priority_frames_per_stream: 'PRIORITY frames are not acted on, so they are not counted',
    max_inbound_window_update_frames_per_data_frame_sent: TUNING,
    max_header_field_size_kb: TUNING,
    allow_metadata: TUNING,
  },
  UpstreamHttpProtocolOptions: {
    upstream_http_protocol_options: 'auto_sni and auto_san_validation are not implemented',
    header_validation_config: null,
  },
  TcpProxy: {
    access_log: ACCESS_LOG,
    access_log_options: ACCESS_LOG,
    hash_policy: null,
  },
  Cluster: {
    alt_stat_name: STATS,
    track_cluster_stats: STATS,
    upstream_connection_options: 'TCP keepalive options are not applied',
    close_connections_on_host_health_failure: 'connections to a host that fails health checks are not closed',
    ignore_health_on_host_removal: 'a host removed from service discovery is dropped at once',
    cleanup_interval: null,
    dns_failure_refresh_rate: TUNING,
    dns_resolvers: 'keel uses the system DNS resolver',
    dns_resolution_config: 'keel uses the system DNS resolver',
    typed_dns_resolver_config: 'keel uses the system DNS resolver',
    use_tcp_for_dns_lookups: 'keel uses the system DNS resolver',
    original_dst_lb_config: 'the original destination comes from the connection only',
    preconnect_policy: TUNING,
  },
  ClusterLoadAssignment: {},
  ClusterLoadAssignmentPolicy: { drop_overloads: 'drop_overloads is not applied', endpoint_stale_after: null, weighted_priority_health: TUNING },
  HealthCheck: {
    event_log_path: 'health check events are not logged',
    event_logger: 'health check events are not logged',
    always_log_health_check_failures: null,
    always_log_health_check_success: null,
    tls_options: 'health checks use the cluster TLS settings as they are',
    transport_socket_match_criteria: 'health checks use the cluster transport socket',
  },
  HttpHealthCheck: { response_buffer_size: TUNING },
  LocalityLbEndpoints: { proximity: null, metadata: null },
  Endpoint: { health_check_config: 'health checks go to the endpoint address and port' },
  CircuitBreakers: { per_host_thresholds: 'per-host circuit breakers are not enforced' },
  Thresholds: { max_connection_pools: 'max_connection_pools is not enforced' },
  OutlierDetection: {
    max_ejection_time_jitter: TUNING,
    successful_active_health_check_uneject_host: 'a passing active health check does not uneject a host',
    enforcing_local_origin_success_rate: 'success-rate ejection of local-origin failures is not implemented',
    enforcing_failure_percentage_local_origin: 'failure-percentage ejection of local-origin failures is not implemented',
  },
  CommonLbConfig: {
    zone_aware_lb_config: 'zone-aware routing is not implemented',
    update_merge_window: TUNING,
    ignore_new_hosts_until_first_hc: null,
    close_connections_on_host_set_change: 'connections are not closed when the host set changes',
    consistent_hashing_lb_config: 'consistent hashing options use their defaults',
  },
  Metadata: { typed_filter_metadata: 'typed metadata is not read' },
  RouteConfiguration: {
    metadata: null,
    typed_per_filter_config: 'route-table-level per-filter config is not read',
  },
  VirtualHost: {
    rate_limits: 'rate limiting is not implemented',
    per_request_buffer_limit_bytes: TUNING,
    metadata: null,
  },
  Route: {
    stat_prefix: STATS,
    per_request_buffer_limit_bytes: TUNING,
  },
  RouteAction: {
    priority: 'routing priority is not implemented (DEFAULT circuit breakers apply)',
    rate_limits: 'rate limiting is not implemented',
  },
  WeightedCluster: {},
  ClusterWeight: { typed_per_filter_config: 'per-filter config on weighted clusters is not read', metadata_match: null },
  RegexMatcher: { google_re2: null },
  DataSource: { watched_directory: 'files are read once, at start-up' },
  DownstreamTlsContext: {
    session_ticket_keys: TUNING,
    session_ticket_keys_sds_secret_config: TUNING,
    disable_stateless_session_resumption: TUNING,
    disable_stateful_session_resumption: TUNING,
    session_timeout: TUNING,
    ocsp_staple_policy: 'OCSP stapling is not implemented',
    full_scan_certs_on_sni_mismatch: TUNING,
    prefer_client_ciphers: TUNING,
  },
  UpstreamTlsContext: { max_session_keys: TUNING },
  CommonTlsContext: { key_log: null },
  TlsParameters: {
    cipher_suites: "Node's default cipher suites are used",
    ecdh_curves: "Node's default curves are used",
    signature_algorithms: "Node's default signature algorithms are used",
  },
  TlsCertificate: { ocsp_staple: 'OCSP stapling is not implemented', signed_certificate_timestamp: null, watched_directory: 'files are read once, at start-up' },
  CertificateValidationContext: { watched_directory: 'files are read once, at start-up' },
  SdsSecretConfig: {},
};

// ---------------------------------------------------------------------------------------------
// Envoy defaults

const MIB = 1024 * 1024;
const DEFAULT_HTTP2: Http2Options = {
  maxConcurrentStreams: 2_147_483_647,
  initialStreamWindowSize: 268_435_456,
  initialConnectionWindowSize: 268_435_456,
  allowConnect: false,
  hpackTableSize: 4096,
  maxOutboundFrames: 10_000,
  maxOutboundControlFrames: 1000,
  maxConsecutiveInboundFramesWithEmptyPayload: 1,
};
const DEFAULT_MAX_DIRECT_RESPONSE_BODY_BYTES = 4096;

const KNOWN_RETRY_ON = new Set([
  '5xx',
  'gateway-error',
  'reset',
  'reset-before-request',
  'connect-failure',
  'envoy-ratelimited',
  'retriable-4xx',
  'refused-stream',
  'retriable-status-codes',
  'retriable-headers',
  'http3-post-connect-failure',
  // gRPC
  'cancelled',
  'deadline-exceeded',
  'internal',
  'resource-exhausted',
  'unavailable',
]);

// ---------------------------------------------------------------------------------------------
// Decoding context

interface StaticSecret {
  readonly certificate?: TlsCertificate;
  readonly validation?: CertificateValidation;
}

interface Ctx {
  readonly diag: Diagnostics;
  readonly runtime: RuntimeValues;
  readonly secrets: ReadonlyMap<string, StaticSecret>;
  readonly clusterNames: ReadonlySet<string>;
}

interface RouteTableCtx {
  readonly ctx: Ctx;
  readonly validateClusters: boolean;
  readonly maxDirectResponseBodyBytes: number;
}

// ---------------------------------------------------------------------------------------------
// Entry points

/** Decodes and validates a bootstrap already parsed from YAML/JSON. Throws ConfigError. */
export function decodeBootstrap(raw: unknown): DecodedBootstrap {
  const diag = new Diagnostics(IGNORED_FIELDS);
  if (!isObject(raw)) {
    diag.problem('', `the bootstrap must be an object, got ${raw === null ? 'null' : Array.isArray(raw) ? 'a list' : typeof raw}`);
    throw new ConfigError(diag.problems);
  }
  const r = new Reader(diag, '', raw, 'Bootstrap');

  const node: NodeInfo = r.sub('node', 'Node', (n) => ({ id: n.str('id'), cluster: n.str('cluster'), metadata: n.struct('metadata') })) ?? {
    id: '',
    cluster: '',
    metadata: {},
  };

  const runtime = r.sub('layered_runtime', 'LayeredRuntime', (lr) => decodeLayeredRuntime(lr)) ?? {};

  let admin: Bootstrap['admin'];
  r.sub('admin', 'Admin', (a) => {
    const address = a.sub('address', 'Address', (ad) => decodeAddress(ad, 'bind'));
    if (address) admin = { address };
  });

  const dynamicResources = r.sub('dynamic_resources', 'DynamicResources', decodeDynamicResources);

  let listeners: ListenerConfig[] = [];
  let clusters: ClusterConfig[] = [];
  r.sub('static_resources', 'StaticResources', (sr) => {
    const secrets = decodeStaticSecrets(diag, sr);
    const clusterCtx: Ctx = { diag, runtime, secrets, clusterNames: new Set() };
    const clusterName = uniqueNames(diag, 'cluster name');
    clusters = sr.objects('clusters', 'Cluster', (c) => {
      const cluster = decodeCluster(clusterCtx, c);
      if (cluster) clusterName(c.path, cluster.name);
      return cluster;
    });
    const ctx: Ctx = { diag, runtime, secrets, clusterNames: new Set(clusters.map((c) => c.name)) };
    const listenerName = uniqueNames(diag, 'listener name');
    const bound = new Map<string, string>();
    listeners = sr.objects('listeners', 'Listener', (l, i) => {
      const listener = decodeListener(ctx, l, i);
      if (!listener) return undefined;
      if (l.has('name')) listenerName(l.path, listener.name);
      if (listener.bindToPort) {
        const a = listener.address;
        const key = a.pipe !== undefined ? `pipe:${a.pipe}` : `${a.address}:${a.port}`;
        const prev = bound.get(key);
        if (prev !== undefined && (a.pipe !== undefined || a.port !== 0)) {
          l.problem(`listener '${listener.name}' has the same address as ${prev}`, 'address');
        } else bound.set(key, l.path);
      }
      return listener;
    });
  });

  const adsCluster = dynamicResources?.ads?.clusterName;
  if (adsCluster !== undefined && adsCluster !== '' && !clusters.some((c) => c.name === adsCluster)) {
    diag.problem('dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name', `unknown cluster '${adsCluster}' (the ADS cluster must be a static cluster)`);
  }
  r.done();
  if (diag.problems.length > 0) throw new ConfigError(diag.problems, diag.warnings);
  return { bootstrap: { node, admin, listeners, clusters, runtime, ...(dynamicResources ? { dynamicResources } : {}), source: raw }, warnings: diag.warnings };
}

/** Parses YAML or JSON text (JSON when it starts with `{`) and decodes it. Throws ConfigError. */
export function parseBootstrapText(text: string, sourceName: string, format?: 'json' | 'yaml'): DecodedBootstrap {
  const fmt = format ?? (/^\s*\{/.test(text) ? 'json' : 'yaml');
  return decodeBootstrap(fmt === 'json' ? parseJson(text, sourceName) : parseYaml(text, sourceName));
}

/** Reads a bootstrap file: JSON for a `.json` name or content starting with `{`, YAML otherwise. */
export function loadBootstrapFile(path: string): DecodedBootstrap {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError([{ path, message: `cannot read the bootstrap file: ${(e as Error).message}` }]);
  }
  return parseBootstrapText(text, path, /\.json$/i.test(path) ? 'json' : undefined);
}

function parseJson(text: string, sourceName: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const message = (e as Error).message;
    const m = /position (\d+)/.exec(message);
    let where = sourceName;
    if (m) {
      const { line, col } = lineCol(text, Number(m[1]));
      where = `${sourceName}:${line}:${col}`;
    }
    throw new ConfigError([{ path: where, message: `invalid JSON: ${message.replace(/\s*\(line \d+ column \d+\)/, '')}` }]);
  }
}

function parseYaml(text: string, sourceName: string): unknown {
  const doc = parseDocument(text, { merge: true, uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((err) => {
        const pos = err.linePos?.[0] ?? lineCol(text, err.pos[0]);
        return { path: `${sourceName}:${pos.line}:${pos.col}`, message: `invalid YAML: ${err.message.split('\n')[0]}` };
      }),
    );
  }
  return doc.toJS({ maxAliasCount: 1000 });
}

function lineCol(text: string, offset: number): { line: number; col: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, col: offset - lineStart + 1 };
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/** Reports a name seen twice in one list: `check(path, name)` per decoded item, in order. */
function uniqueNames(diag: Diagnostics, what: string): (path: string, name: string) => void {
  const first = new Map<string, string>();
  return (path, name) => {
    if (name === '') return;
    const prev = first.get(name);
    if (prev === undefined) first.set(name, path);
    else diag.problem(`${path}.name`, `duplicate ${what} '${name}' (also ${prev})`);
  };
}

function decodeLayeredRuntime(r: Reader): RuntimeValues {
  const out: Record<string, string | number | boolean> = {};
  r.objects('layers', 'RuntimeLayer', (layer) => {
    layer.str('name');
    const kind = layer.oneof(['static_layer', 'disk_layer', 'admin_layer', 'rtds_layer'], true);
    if (kind === 'static_layer') {
      const v = layer.get('static_layer');
      if (!isObject(v)) layer.problem('expected an object', 'static_layer');
      else flattenRuntime(r.diag, layer.at('static_layer'), '', v, out);
    } else if (kind === 'admin_layer') {
      layer.get('admin_layer'); // runtime overrides through the admin endpoint: accepted, nothing to load
    } else if (kind !== undefined) {
      layer.problem(`${kind} is not supported by keel (static_layer and admin_layer only)`, kind);
    }
    return undefined;
  });
  return out;
}

function flattenRuntime(diag: Diagnostics, path: string, prefix: string, v: Record<string, unknown>, out: Record<string, string | number | boolean>): void {
  for (const [k, value] of Object.entries(v)) {
    const key = prefix === '' ? k : `${prefix}.${k}`;
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') out[key] = value;
    else if (isObject(value)) flattenRuntime(diag, path, key, value, out);
    else diag.problem(`${path}.${key}`, `runtime values must be strings, numbers, booleans or objects, got ${Array.isArray(value) ? 'a list' : 'null'}`);
  }
}

/** Address: socket_address or pipe. `bind`/`ip` require an IP address; `host` accepts a hostname. */
function decodeAddress(r: Reader, mode: 'bind' | 'ip' | 'host'): SocketAddress | undefined {
  const kind = r.oneof(['socket_address', 'pipe', 'envoy_internal_address'], true);
  if (kind === 'pipe') {
    return r.sub('pipe', 'Pipe', (p) => {
      const path = p.requiredStr('path');
      p.uint32('mode', 0, { max: 0o777 });
      return path === '' ? undefined : { address: '', port: 0, pipe: path };
    });
  }
  if (kind === 'envoy_internal_address') {
    r.problem('envoy_internal_address is not supported by keel', 'envoy_internal_address');
    return undefined;
  }
  if (kind !== 'socket_address') return undefined;
  return r.sub('socket_address', 'SocketAddress', (s) => decodeSocketAddress(s, mode));
}

function decodeSocketAddress(s: Reader, mode: 'bind' | 'ip' | 'host'): SocketAddress | undefined {
  s.enum('protocol', ['TCP', 'UDP'], 'TCP', ['TCP']);
  const address = s.requiredStr('address');
  const portKind = s.oneof(['port_value', 'named_port'], false);
  if (portKind === 'named_port') s.problem('named_port is not supported by keel', 'named_port');
  const port = s.uint32('port_value', 0, { max: 65535 });
  s.unsupported('resolver_name', 'a custom resolver_name');
  s.unsupported('network_namespace_filepath');
  if (address === '') return undefined;
  if (mode !== 'host' && isIP(address) === 0) {
    s.problem(
      mode === 'bind' ? `'${address}' is not an IP address (listeners bind to IP addresses)` : `'${address}' is not an IP address`,
      'address',
    );
    return undefined;
  }
  return { address, port };
}

function readDataSource(r: Reader): string | undefined {
  const kind = r.oneof(['filename', 'inline_bytes', 'inline_string', 'environment_variable'], true);
  switch (kind) {
    case 'filename': {
      const file = r.requiredStr('filename');
      if (file === '') return undefined;
      try {
        return readFileSync(file, 'utf8');
      } catch (e) {
        r.problem(`cannot read '${file}': ${(e as Error).message}`, 'filename');
        return undefined;
      }
    }
    case 'inline_bytes':
      return r.optBytes('inline_bytes') ?? '';
    case 'inline_string':
      return r.str('inline_string');
    case 'environment_variable': {
      const name = r.requiredStr('environment_variable');
      const v = process.env[name];
      if (name !== '' && v === undefined) r.problem(`environment variable '${name}' is not set`, 'environment_variable');
      return v;
    }
    default:
      return undefined;
  }
}

function dataSource(r: Reader, field: string): string | undefined {
  return r.sub(field, 'DataSource', readDataSource);
}

/** envoy.config.core.v3.Metadata -> filter_metadata (namespace -> struct). */
function decodeMetadata(r: Reader, field = 'metadata'): Record<string, unknown> {
  return r.sub(field, 'Metadata', (m) => m.struct('filter_metadata')) ?? {};
}

/**
 * typed_per_filter_config: filter name -> the filter's per-route config, decoded by its decoder.
 * envoy.config.route.v3.FilterConfig wraps one with is_optional / disabled. Config for a filter
 * keel does not implement is skipped with a warning (Istio sends some for its telemetry filters).
 */
function decodeTypedPerFilterConfig(r: Reader): Record<string, PerFilterConfig> {
  const out: Record<string, PerFilterConfig> = {};
  for (const { key, value, path } of r.map('typed_per_filter_config')) {
    let typed = readAny(r.diag, path, value);
    if (typed === undefined) continue;
    let disabled = false;
    let optional = false;
    if (typed.typeName === 'envoy.config.route.v3.FilterConfig') {
      const fc = typed.reader.retype('FilterConfig');
      disabled = fc.bool('disabled', false);
      optional = fc.bool('is_optional', false);
      const inner = fc.has('config') ? fc.typed('config') : undefined;
      fc.done();
      if (inner === undefined) {
        if (disabled) out[key] = { typeName: '', config: undefined, disabled };
        else if (!fc.has('config')) r.diag.problem(path, 'FilterConfig needs config unless disabled');
        continue;
      }
      typed = inner;
    }
    const d = perRouteDecoder(typed.typeName);
    if (d === undefined || d.decodePerRoute === undefined) {
      if (!disabled) r.diag.warn(path, `skipping per-route config ${typed.typeName}${optional ? ' (optional)' : ''}: keel does not implement that filter`);
      continue;
    }
    const config = d.decodePerRoute(typed.reader);
    typed.reader.done();
    if (config !== undefined) out[key] = { typeName: typed.typeName, config, disabled };
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Matchers

const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** A header name (lower-cased); pseudo-headers allowed when `pseudo`. */
export function headerName(r: Reader, field: string, pseudo: boolean): string {
  const name = r.requiredStr(field);
  if (name === '') return '';
  const bare = pseudo && name.startsWith(':') ? name.slice(1) : name;
  if (!TOKEN_RE.test(bare)) {
    r.problem(`'${name}' is not a valid HTTP header name`, field);
    return '';
  }
  return name.toLowerCase();
}

function checkHeaderValue(r: Reader, field: string, value: string): void {
  if (/[\0\r\n]/.test(value)) r.problem('header values must not contain NUL, CR or LF', field);
}

function regexField(r: Reader, field: string): string | undefined {
  return r.sub(field, 'RegexMatcher', (m) => {
    const regex = m.requiredStr('regex');
    if (regex === '') return undefined;
    const compiled = compileRe2Full(regex);
    if ('error' in compiled) {
      m.problem(`invalid regex: ${compiled.error}`, 'regex');
      return undefined;
    }
    return regex;
  });
}

export function decodeStringMatcher(r: Reader): StringMatcherConfig | undefined {
  const kind = r.oneof(['exact', 'prefix', 'suffix', 'safe_regex', 'contains', 'custom'], true);
  const ignoreCase = r.bool('ignore_case', false);
  switch (kind) {
    case 'exact':
      return { kind: 'exact', value: r.str('exact'), ignoreCase };
    case 'prefix':
    case 'suffix':
    case 'contains': {
      const value = r.str(kind);
      if (value === '') {
        r.problem('must not be empty', kind);
        return undefined;
      }
      return { kind, value, ignoreCase };
    }
    case 'safe_regex': {
      // Envoy: ignore_case has no effect on safe_regex.
      if (ignoreCase) r.warn('ignore_case has no effect on safe_regex (use (?i) in the pattern)', 'ignore_case');
      const regex = regexField(r, 'safe_regex');
      return regex === undefined ? undefined : { kind: 'regex', regex, ignoreCase: false };
    }
    case 'custom':
      r.problem('custom string matchers are not supported by keel', 'custom');
      return undefined;
    default:
      return undefined;
  }
}

function stringMatcherField(r: Reader, field: string): StringMatcherConfig | undefined {
  return r.sub(field, 'StringMatcher', decodeStringMatcher);
}

const HEADER_MATCH_FORMS = [
  'exact_match',
  'safe_regex_match',
  'range_match',
  'present_match',
  'prefix_match',
  'suffix_match',
  'contains_match',
  'string_match',
] as const;

export function decodeHeaderMatcher(r: Reader): HeaderMatcherConfig | undefined {
  const name = headerName(r, 'name', true);
  const base = { name, invert: r.bool('invert_match', false), treatMissingAsEmpty: r.bool('treat_missing_header_as_empty', false) };
  const kind = r.oneof(HEADER_MATCH_FORMS, false);
  let result: HeaderMatcherConfig | undefined;
  switch (kind) {
    case undefined:
      // No specifier: Envoy checks that the header is present.
      result = { ...base, kind: 'present', present: true };
      break;
    case 'exact_match':
      result = { ...base, kind: 'string', match: { kind: 'exact', value: r.str('exact_match'), ignoreCase: false } };
      break;
    case 'prefix_match':
    case 'suffix_match':
    case 'contains_match': {
      const value = r.str(kind);
      if (value === '') r.problem('must not be empty', kind);
      else {
        const k = kind === 'prefix_match' ? 'prefix' : kind === 'suffix_match' ? 'suffix' : 'contains';
        result = { ...base, kind: 'string', match: { kind: k, value, ignoreCase: false } };
      }
      break;
    }
    case 'safe_regex_match': {
      const regex = regexField(r, 'safe_regex_match');
      if (regex !== undefined) result = { ...base, kind: 'string', match: { kind: 'regex', regex, ignoreCase: false } };
      break;
    }
    case 'range_match': {
      const range = r.sub('range_match', 'Int64Range', (x) => ({ start: x.int64('start', 0), end: x.int64('end', 0) }));
      if (range) result = { ...base, kind: 'range', range };
      break;
    }
    case 'present_match':
      result = { ...base, kind: 'present', present: r.bool('present_match', false) };
      break;
    case 'string_match': {
      const match = stringMatcherField(r, 'string_match');
      if (match) result = { ...base, kind: 'string', match };
      break;
    }
  }
  return name === '' ? undefined : result;
}

export function headerMatchers(r: Reader, field: string): HeaderMatcherConfig[] {
  return r.objects(field, 'HeaderMatcher', decodeHeaderMatcher);
}

function decodeQueryParameterMatcher(r: Reader): QueryParameterMatcherConfig | undefined {
  const name = r.requiredStr('name');
  const kind = r.oneof(['string_match', 'present_match'], false);
  if (name === '') return undefined;
  if (kind === 'string_match') {
    const match = stringMatcherField(r, 'string_match');
    return match ? { name, match } : undefined;
  }
  if (kind === 'present_match') return { name, present: r.bool('present_match', false) };
  return { name };
}

function decodeValueMatcher(r: Reader): ValueMatcherConfig | undefined {
  const kind = r.oneof(['null_match', 'double_match', 'string_match', 'bool_match', 'present_match', 'list_match', 'or_match'], true);
  switch (kind) {
    case 'null_match':
      r.sub('null_match', 'NullMatch', () => undefined);
      return { kind: 'null' };
    case 'double_match':
      return r.sub('double_match', 'DoubleMatcher', (d): ValueMatcherConfig | undefined => {
        const which = d.oneof(['range', 'exact'], true);
        if (which === 'exact') return { kind: 'double_exact', value: d.num('exact', 0) };
        if (which === 'range') {
          const range = d.sub('range', 'DoubleRange', (x) => ({ start: x.num('start', 0), end: x.num('end', 0) }));
          return range ? { kind: 'double_range', range } : undefined;
        }
        return undefined;
      });
    case 'string_match': {
      const match = stringMatcherField(r, 'string_match');
      return match ? { kind: 'string', match } : undefined;
    }
    case 'bool_match':
      return { kind: 'bool', value: r.bool('bool_match', false) };
    case 'present_match':
      return { kind: 'present', present: r.bool('present_match', false) };
    case 'list_match':
      return r.sub('list_match', 'ListMatcher', (l): ValueMatcherConfig | undefined => {
        if (!l.has('one_of')) {
          l.problem('exactly one of one_of must be set');
          return undefined;
        }
        const oneOf = l.sub('one_of', 'ValueMatcher', decodeValueMatcher);
        return oneOf ? { kind: 'list', oneOf } : undefined;
      });
    case 'or_match':
      r.problem('or_match is not supported by keel', 'or_match');
      return undefined;
    default:
      return undefined;
  }
}

function decodeMetadataMatcher(r: Reader): MetadataMatcherConfig | undefined {
  const filter = r.requiredStr('filter');
  const path = r.objects('path', 'PathSegment', (s) => {
    const key = s.requiredStr('key');
    return key === '' ? undefined : key;
  });
  if (r.has('path') && path.length === 0) r.problem('path must have at least one segment', 'path');
  else if (!r.has('path')) r.problem('path is required', 'path');
  const invert = r.bool('invert', false);
  if (!r.has('value')) {
    r.problem('value is required', 'value');
    return undefined;
  }
  const value = r.sub('value', 'ValueMatcher', decodeValueMatcher);
  return value && filter !== '' && path.length > 0 ? { filter, path, value, invert } : undefined;
}

export function decodeFractionalPercent(r: Reader): FractionalPercent {
  const numerator = r.uint32('numerator', 0);
  const d = r.enum('denominator', ['HUNDRED', 'TEN_THOUSAND', 'MILLION'], 'HUNDRED');
  return { numerator, denominator: d === 'HUNDRED' ? 100 : d === 'TEN_THOUSAND' ? 10_000 : 1_000_000 };
}

/** RuntimeFractionalPercent (default_value required, runtime_key optional). */
export function decodeRuntimeFraction(f: Reader): RuntimeFractionConfig | undefined {
  if (!f.has('default_value')) f.problem('default_value is required', 'default_value');
  const defaultValue = f.sub('default_value', 'FractionalPercent', decodeFractionalPercent);
  const runtimeKey = f.str('runtime_key');
  return defaultValue ? { defaultValue, runtimeKey } : undefined;
}

/** request_mirror_policies at any level; undefined when the field is absent or empty. */
function decodeMirrorPolicies(rt: RouteTableCtx, r: Reader): RequestMirrorPolicyConfig[] | undefined {
  const out = r.objects('request_mirror_policies', 'RequestMirrorPolicy', (m): RequestMirrorPolicyConfig | undefined => {
    const which = m.oneof(['cluster', 'cluster_header'], true);
    const cluster = m.str('cluster');
    const clusterHeader = which === 'cluster_header' ? headerName(m, 'cluster_header', true) : undefined;
    if (which === 'cluster') checkCluster(rt, m, 'cluster', cluster, 'mirror cluster');
    const runtimeFraction = m.sub('runtime_fraction', 'RuntimeFractionalPercent', decodeRuntimeFraction);
    if (m.has('trace_sampled')) m.optBool('trace_sampled');
    const disableShadowHostSuffixAppend = m.bool('disable_shadow_host_suffix_append', false);
    if (which === undefined || (which === 'cluster_header' && !clusterHeader)) return undefined;
    return {
      cluster: which === 'cluster' ? cluster : '',
      ...(clusterHeader ? { clusterHeader } : {}),
      ...(runtimeFraction !== undefined ? { runtimeFraction } : {}),
      disableShadowHostSuffixAppend,
    };
  });
  return out.length > 0 ? out : undefined;
}

// ---------------------------------------------------------------------------------------------
// Header mutation

const APPEND_ACTIONS = ['APPEND_IF_EXISTS_OR_ADD', 'ADD_IF_ABSENT', 'OVERWRITE_IF_EXISTS_OR_ADD', 'OVERWRITE_IF_EXISTS'] as const;

function decodeHeaderValueOption(r: Reader): HeaderValueOption | undefined {
  const header = r.sub('header', 'HeaderValue', (h) => {
    const key = h.requiredStr('key');
    let ok = key !== '';
    if (ok && (key.startsWith(':') || key.toLowerCase() === 'host')) {
      h.problem(`':-prefixed or host headers may not be modified ('${key}')`, 'key');
      ok = false;
    } else if (ok && !TOKEN_RE.test(key)) {
      h.problem(`'${key}' is not a valid HTTP header name`, 'key');
      ok = false;
    }
    const which = h.oneof(['value', 'raw_value'], false);
    const value = which === 'raw_value' ? (h.optBytes('raw_value') ?? '') : h.str('value');
    checkHeaderValue(h, which ?? 'value', value);
    try {
      compileFormat(value); // %COMMAND% substitutions are checked here, with their path
    } catch (e) {
      h.problem((e as Error).message, which ?? 'value');
      ok = false;
    }
    return ok ? { key: key.toLowerCase(), value } : undefined;
  });
  if (!r.has('header')) r.problem('header is required', 'header');
  const append = r.optBool('append');
  let appendAction: AppendAction = r.enum('append_action', APPEND_ACTIONS, 'APPEND_IF_EXISTS_OR_ADD');
  if (append !== undefined) {
    if (appendAction !== 'APPEND_IF_EXISTS_OR_ADD') r.problem("both append and append_action are set and it's not allowed", 'append');
    appendAction = append ? 'APPEND_IF_EXISTS_OR_ADD' : 'OVERWRITE_IF_EXISTS_OR_ADD';
  }
  const keepEmptyValue = r.bool('keep_empty_value', false);
  return header ? { key: header.key, value: header.value, appendAction, keepEmptyValue } : undefined;
}

function headersToRemove(r: Reader, field: string): string[] {
  const out: string[] = [];
  for (const { value, path } of r.list(field)) {
    if (typeof value !== 'string' || value === '') r.diag.problem(path, 'expected a header name');
    else if (value.startsWith(':') || value.toLowerCase() === 'host') r.diag.problem(path, `':-prefixed or host headers may not be removed ('${value}')`);
    else if (!TOKEN_RE.test(value)) r.diag.problem(path, `'${value}' is not a valid HTTP header name`);
    else out.push(value.toLowerCase());
  }
  return out;
}

function decodeHeaderMutations(r: Reader): HeaderMutations {
  return {
    requestHeadersToAdd: r.objects('request_headers_to_add', 'HeaderValueOption', decodeHeaderValueOption),
    requestHeadersToRemove: headersToRemove(r, 'request_headers_to_remove'),
    responseHeadersToAdd: r.objects('response_headers_to_add', 'HeaderValueOption', decodeHeaderValueOption),
    responseHeadersToRemove: headersToRemove(r, 'response_headers_to_remove'),
  };
}

// ---------------------------------------------------------------------------------------------
// Routes

function decodeRouteTable(ctx: Ctx, r: Reader, validateClustersDefault: boolean): RouteTableConfig {
  const rt: RouteTableCtx = {
    ctx,
    validateClusters: r.bool('validate_clusters', validateClustersDefault),
    maxDirectResponseBodyBytes: r.uint32('max_direct_response_body_size_bytes', DEFAULT_MAX_DIRECT_RESPONSE_BODY_BYTES),
  };
  const name = r.str('name');
  r.unsupported('vhds', 'vhds (virtual host discovery)');
  r.unsupported('cluster_specifier_plugins');
  const tableMirrors = decodeMirrorPolicies(rt, r);
  r.unsupported('ignore_path_parameters_in_path_matching');
  const vhostName = uniqueNames(ctx.diag, 'virtual host name');
  const virtualHosts = r.objects('virtual_hosts', 'VirtualHost', (v) => {
    let vh = decodeVirtualHost(rt, v);
    if (vh) vhostName(v.path, vh.name);
    // the route table's mirror policies apply where neither the route nor its host has any
    if (vh && tableMirrors && !vh.requestMirrorPolicies) vh = { ...vh, requestMirrorPolicies: tableMirrors };
    return vh;
  });
  checkDomains(ctx.diag, r, name);
  const internalOnlyHeaders = r.strList('internal_only_headers').map((h) => h.toLowerCase());
  return {
    name,
    source: r.raw,
    virtualHosts,
    internalOnlyHeaders,
    mostSpecificHeaderMutationsWins: r.bool('most_specific_header_mutations_wins', false),
    ignorePortInHostMatching: r.bool('ignore_port_in_host_matching', false),
    ...decodeHeaderMutations(r),
  };
}

/** Envoy: at most one `*` domain per route table, and no domain (lower-cased) in two virtual hosts. */
function checkDomains(diag: Diagnostics, r: Reader, tableName: string): void {
  const seen = new Map<string, string>();
  const hosts = r.raw.virtual_hosts ?? r.raw.virtualHosts;
  if (!Array.isArray(hosts)) return;
  hosts.forEach((vh, i) => {
    if (!isObject(vh) || !Array.isArray(vh.domains)) return;
    vh.domains.forEach((d, j) => {
      if (typeof d !== 'string') return;
      const domain = d.toLowerCase();
      const path = `${r.at('virtual_hosts')}[${i}].domains[${j}]`;
      const prev = seen.get(domain);
      if (prev === undefined) seen.set(domain, path);
      else if (domain === '*') diag.problem(path, `only a single wildcard domain is permitted in route table '${tableName}' (also ${prev})`);
      else diag.problem(path, `domain '${domain}' is used by two virtual hosts in route table '${tableName}' (also ${prev})`);
    });
  });
}

function decodeVirtualHost(rt: RouteTableCtx, r: Reader): VirtualHostConfig | undefined {
  const name = r.requiredStr('name');
  const domains = r.strList('domains');
  if (domains.length === 0 && !r.has('domains')) r.problem('domains is required (at least one)', 'domains');
  else if (domains.length === 0) r.problem('at least one domain is required', 'domains');
  domains.forEach((d, i) => {
    if (/[\0\r\n]/.test(d)) r.diag.problem(`${r.at('domains')}[${i}]`, 'domains must not contain NUL, CR or LF');
  });
  r.unsupported('matcher', 'the matcher tree (use routes)');
  const requestMirrorPolicies = decodeMirrorPolicies(rt, r);
  r.unsupported('vhds');
  const routes = r.objects('routes', 'Route', (x) => decodeRoute(rt, x));
  const virtualClusters = r.objects('virtual_clusters', 'VirtualCluster', (v): VirtualClusterConfig | undefined => {
    const n = v.requiredStr('name');
    const headers = headerMatchers(v, 'headers');
    return n === '' ? undefined : { name: n, headers };
  });
  const retryPolicy = r.sub('retry_policy', 'RetryPolicy', decodeRetryPolicy);
  const vhHedge = r.sub('hedge_policy', 'HedgePolicy', decodeHedgePolicy);
  const vh: VirtualHostConfig = {
    name,
    domains: domains.map((d) => d.toLowerCase()),
    routes,
    requireTls: r.enum('require_tls', ['NONE', 'EXTERNAL_ONLY', 'ALL'], 'NONE'),
    virtualClusters,
    retryPolicy,
    includeRequestAttemptCount: r.bool('include_request_attempt_count', false),
    includeAttemptCountInResponse: r.bool('include_attempt_count_in_response', false),
    ...(vhHedge !== undefined ? { hedgeOnPerTryTimeout: vhHedge } : {}),
    typedPerFilterConfig: withLegacyCors(decodeTypedPerFilterConfig(r), r.sub('cors', 'CorsPolicy', decodeCorsPolicy)),
    ...(requestMirrorPolicies ? { requestMirrorPolicies } : {}),
    ...decodeHeaderMutations(r),
  };
  return name === '' ? undefined : vh;
}

function decodeRoute(rt: RouteTableCtx, r: Reader): RouteConfigEntry | undefined {
  const name = r.str('name');
  if (!r.has('match')) r.problem('match is required', 'match');
  const match = r.sub('match', 'RouteMatch', decodeRouteMatch);
  const kind = r.oneof(['route', 'redirect', 'direct_response', 'filter_action', 'non_forwarding_action'], true);
  let action: RouteActionConfig | undefined;
  switch (kind) {
    case 'route':
      action = r.sub('route', 'RouteAction', (a) => decodeRouteAction(rt, a));
      break;
    case 'redirect':
      action = r.sub('redirect', 'RedirectAction', decodeRedirect);
      break;
    case 'direct_response':
      action = r.sub('direct_response', 'DirectResponseAction', (d) => decodeDirectResponse(rt, d));
      break;
    case 'non_forwarding_action':
      r.sub('non_forwarding_action', 'NonForwardingAction', () => undefined);
      action = { kind: 'non_forwarding' };
      break;
    case 'filter_action':
      r.problem('filter_action is not supported by keel', 'filter_action');
      break;
  }
  const entry = {
    name,
    ...decodeRouteTracing(r),
    metadata: decodeMetadata(r),
    typedPerFilterConfig: withLegacyCors(decodeTypedPerFilterConfig(r), action?.kind === 'route' ? action.cors : undefined),
    ...decodeHeaderMutations(r),
  };
  return match && action ? { ...entry, match, action } : undefined;
}

const PATH_SPECIFIERS = ['prefix', 'path', 'safe_regex', 'path_separated_prefix', 'connect_matcher'] as const;

function decodeRouteMatch(r: Reader): RouteMatchConfig | undefined {
  let path: RouteMatchConfig['path'] | undefined;
  if (r.has('path_match_policy')) {
    r.problem('path_match_policy (URI templates) is not supported by keel', 'path_match_policy');
  } else {
    const kind = r.oneof(PATH_SPECIFIERS, true);
    switch (kind) {
      case 'prefix':
        path = { kind: 'prefix', value: r.str('prefix') };
        break;
      case 'path':
        path = { kind: 'path', value: r.str('path') };
        break;
      case 'safe_regex': {
        const regex = regexField(r, 'safe_regex');
        if (regex !== undefined) path = { kind: 'regex', regex };
        break;
      }
      case 'path_separated_prefix': {
        const value = r.str('path_separated_prefix');
        if (!/^[^?#]+[^?#/]$/.test(value)) {
          r.problem(`'${value}' must be a path without '?' or '#' that does not end in '/'`, 'path_separated_prefix');
        } else path = { kind: 'path_separated_prefix', value };
        break;
      }
      case 'connect_matcher':
        r.sub('connect_matcher', 'ConnectMatcher', () => undefined);
        path = { kind: 'connect' };
        break;
    }
    for (const k of ['prefix', 'path'] as const) {
      const v = path?.kind === k ? path.value : undefined;
      if (v !== undefined && /[\0\r\n]/.test(v)) r.problem('must not contain NUL, CR or LF', k);
    }
  }
  const runtimeFraction = r.sub('runtime_fraction', 'RuntimeFractionalPercent', (f) => {
    if (!f.has('default_value')) f.problem('default_value is required', 'default_value');
    const defaultValue = f.sub('default_value', 'FractionalPercent', decodeFractionalPercent);
    const runtimeKey = f.str('runtime_key');
    return defaultValue ? { defaultValue, runtimeKey } : undefined;
  });
  const grpc = r.sub('grpc', 'GrpcRouteMatchOptions', () => true) ?? false;
  const tlsContext = r.sub('tls_context', 'TlsContextMatchOptions', (t) => {
    const presented = t.optBool('presented');
    const validated = t.optBool('validated');
    return { ...(presented !== undefined ? { presented } : {}), ...(validated !== undefined ? { validated } : {}) };
  });
  r.unsupported('filter_state');
  const caseSensitive = r.bool('case_sensitive', true);
  const headers = headerMatchers(r, 'headers');
  const queryParameters = r.objects('query_parameters', 'QueryParameterMatcher', decodeQueryParameterMatcher);
  const dynamicMetadata = r.objects('dynamic_metadata', 'MetadataMatcher', decodeMetadataMatcher);
  if (path === undefined) return undefined;
  return {
    path,
    caseSensitive,
    headers,
    queryParameters,
    grpc,
    ...(runtimeFraction !== undefined ? { runtimeFraction } : {}),
    dynamicMetadata,
    ...(tlsContext !== undefined ? { tlsContext } : {}),
  };
}

function decodeRegexRewrite(r: Reader): RegexRewriteConfig | undefined {
  if (!r.has('pattern')) r.problem('pattern is required', 'pattern');
  const regex = regexField(r, 'pattern');
  const substitution = r.str('substitution');
  if (regex === undefined) return undefined;
  const compiled = compileRe2(regex, { global: true });
  if ('error' in compiled) return undefined; // reported by regexField
  const sub = compileSubstitution(substitution, compiled.groupCount);
  if ('error' in sub) {
    r.problem(`invalid substitution: ${sub.error}`, 'substitution');
    return undefined;
  }
  return { regex, substitution };
}

function checkCluster(rt: RouteTableCtx, r: Reader, field: string, name: string, what: string): void {
  if (rt.validateClusters && name !== '' && !rt.ctx.clusterNames.has(name)) {
    r.problem(`unknown ${what} '${name}' (not defined in static_resources.clusters)`, field);
  }
}

const CLUSTER_SPECIFIERS = ['cluster', 'cluster_header', 'weighted_clusters', 'cluster_specifier_plugin', 'inline_cluster_specifier_plugin'];

function decodeRouteAction(rt: RouteTableCtx, r: Reader): ForwardAction | undefined {
  const spec = r.oneof(CLUSTER_SPECIFIERS, true);
  let cluster: string | undefined;
  let clusterHeader: string | undefined;
  let weightedClusters: ForwardAction['weightedClusters'];
  let ok = spec !== undefined;
  switch (spec) {
    case 'cluster':
      cluster = r.requiredStr('cluster');
      checkCluster(rt, r, 'cluster', cluster, 'cluster');
      break;
    case 'cluster_header':
      clusterHeader = headerName(r, 'cluster_header', true);
      break;
    case 'weighted_clusters':
      weightedClusters = r.sub('weighted_clusters', 'WeightedCluster', (w) => decodeWeightedClusters(rt, w));
      ok = weightedClusters !== undefined;
      break;
    case 'cluster_specifier_plugin':
    case 'inline_cluster_specifier_plugin':
      r.problem(`${spec} is not supported by keel`, spec);
      ok = false;
      break;
  }
  const notFound = r.enum('cluster_not_found_response_code', ['SERVICE_UNAVAILABLE', 'NOT_FOUND', 'INTERNAL_SERVER_ERROR'], 'SERVICE_UNAVAILABLE');
  const prefixRewrite = r.optStr('prefix_rewrite');
  const regexRewrite = r.sub('regex_rewrite', 'RegexMatchAndSubstitute', decodeRegexRewrite);
  if (prefixRewrite !== undefined && r.has('regex_rewrite')) r.problem('cannot specify both prefix_rewrite and regex_rewrite');
  if (prefixRewrite !== undefined) checkHeaderValue(r, 'prefix_rewrite', prefixRewrite);
  r.unsupported('path_rewrite_policy', 'path_rewrite_policy (URI templates)');

  const hostKind = r.oneof(['host_rewrite_literal', 'auto_host_rewrite', 'host_rewrite_header', 'host_rewrite_path_regex'], false);
  const hostRewriteLiteral = r.optStr('host_rewrite_literal');
  if (hostRewriteLiteral !== undefined) checkHeaderValue(r, 'host_rewrite_literal', hostRewriteLiteral);
  const autoHostRewrite = r.bool('auto_host_rewrite', false);
  const hostRewriteHeader = hostKind === 'host_rewrite_header' ? headerName(r, 'host_rewrite_header', true) : undefined;
  const hostRewritePathRegex = r.sub('host_rewrite_path_regex', 'RegexMatchAndSubstitute', decodeRegexRewrite);

  const timeoutMs = r.duration('timeout', 15_000);
  const idleTimeoutMs = r.optDuration('idle_timeout');
  const msd = r.sub('max_stream_duration', 'MaxStreamDuration', (m) => ({
    maxStreamDurationMs: m.optDuration('max_stream_duration'),
    grpcTimeoutHeaderMaxMs: m.optDuration('grpc_timeout_header_max'),
    grpcTimeoutHeaderOffsetMs: m.optDuration('grpc_timeout_header_offset'),
  }));
  const maxStreamDurationMs = msd?.maxStreamDurationMs;
  const retryPolicy = r.sub('retry_policy', 'RetryPolicy', decodeRetryPolicy);
  const hedge = r.sub('hedge_policy', 'HedgePolicy', decodeHedgePolicy);
  const hashPolicy = r.objects('hash_policy', 'HashPolicy', decodeHashPolicy);
  const upgradeConfigs = r.objects('upgrade_configs', 'UpgradeConfig', (u) => {
    const upgradeType = u.requiredStr('upgrade_type');
    const enabled = u.bool('enabled', true);
    u.unsupported('connect_config', 'connect_config (CONNECT termination)');
    return upgradeType === '' ? undefined : { upgradeType: upgradeType.toLowerCase(), enabled };
  });
  const includeVhRateLimits = r.bool('include_vh_rate_limits', false);
  const requestMirrorPolicies = decodeMirrorPolicies(rt, r);
  const cors = r.sub('cors', 'CorsPolicy', decodeCorsPolicy);
  for (const f of ['internal_redirect_policy', 'max_internal_redirects', 'metadata_match', 'early_data_policy']) {
    r.unsupported(f);
  }
  if (!ok) return undefined;
  return {
    kind: 'route',
    ...(cluster !== undefined ? { cluster } : {}),
    ...(clusterHeader !== undefined ? { clusterHeader } : {}),
    ...(weightedClusters !== undefined ? { weightedClusters } : {}),
    clusterNotFoundResponseCode: notFound === 'NOT_FOUND' ? 404 : notFound === 'INTERNAL_SERVER_ERROR' ? 500 : 503,
    ...(prefixRewrite !== undefined ? { prefixRewrite } : {}),
    ...(regexRewrite !== undefined ? { regexRewrite } : {}),
    ...(hostRewriteLiteral !== undefined ? { hostRewriteLiteral } : {}),
    autoHostRewrite,
    ...(hostRewriteHeader ? { hostRewriteHeader } : {}),
    ...(hostRewritePathRegex !== undefined ? { hostRewritePathRegex } : {}),
    timeoutMs,
    ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}),
    ...(maxStreamDurationMs !== undefined ? { maxStreamDurationMs } : {}),
    ...(msd?.grpcTimeoutHeaderMaxMs !== undefined ? { grpcTimeoutHeaderMaxMs: msd.grpcTimeoutHeaderMaxMs } : {}),
    ...(msd?.grpcTimeoutHeaderOffsetMs !== undefined ? { grpcTimeoutHeaderOffsetMs: msd.grpcTimeoutHeaderOffsetMs } : {}),
    ...(msd !== undefined ? { usesMaxStreamDuration: true } : {}),
    ...(hedge !== undefined ? { hedgeOnPerTryTimeout: hedge } : {}),
    ...(retryPolicy !== undefined ? { retryPolicy } : {}),
    hashPolicy,
    includeVhRateLimits,
    upgradeConfigs,
    ...(requestMirrorPolicies ? { requestMirrorPolicies } : {}),
    ...(cors ? { cors } : {}),
  };
}

function decodeWeightedClusters(rt: RouteTableCtx, r: Reader): ForwardAction['weightedClusters'] {
  const clusters = r.objects('clusters', 'ClusterWeight', (c) => {
    const which = c.oneof(['name', 'cluster_header'], true);
    const name = c.str('name');
    const clusterHeader = which === 'cluster_header' ? headerName(c, 'cluster_header', true) : undefined;
    if (which === 'name') checkCluster(rt, c, 'name', name, 'weighted cluster');
    const weight = c.uint32('weight', 0);
    const hostRewriteLiteral = c.optStr('host_rewrite_literal');
    c.unsupported('metadata_match');
    const mutations = decodeHeaderMutations(c);
    if (which === undefined || (which === 'name' && name === '') || clusterHeader === '') return undefined;
    return {
      name: which === 'name' ? name : '',
      ...(clusterHeader !== undefined ? { clusterHeader } : {}),
      weight,
      ...(hostRewriteLiteral !== undefined ? { hostRewriteLiteral } : {}),
      ...mutations,
    };
  });
  if (!r.has('clusters')) r.problem('clusters is required (at least one)', 'clusters');
  const totalWeight = r.optUint32('total_weight', { min: 1 });
  const runtimeKeyPrefix = r.optStr('runtime_key_prefix');
  const headerName_ = r.has('header_name') ? headerName(r, 'header_name', false) : undefined;
  const sum = clusters.reduce((a, c) => a + c.weight, 0);
  if (clusters.length > 0 && sum === 0) r.problem('the sum of the weights must be greater than 0', 'clusters');
  if (totalWeight !== undefined && clusters.length > 0 && sum !== totalWeight) {
    r.problem(`the weights add up to ${sum}, not total_weight ${totalWeight}`, 'total_weight');
  }
  if (clusters.length === 0) return undefined;
  return {
    clusters,
    totalWeight: totalWeight ?? sum,
    ...(runtimeKeyPrefix !== undefined && runtimeKeyPrefix !== '' ? { runtimeKeyPrefix } : {}),
    ...(headerName_ ? { headerName: headerName_ } : {}),
  };
}

function decodeRetryPolicy(r: Reader): RetryPolicyConfig {
  const retryOn = r
    .str('retry_on')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const on of retryOn) if (!KNOWN_RETRY_ON.has(on)) r.warn(`unknown retry condition '${on}' is ignored`, 'retry_on');
  const numRetries = r.uint32('num_retries', 1);
  const perTryTimeoutMs = r.duration('per_try_timeout', 0);
  const perTryIdleTimeoutMs = r.duration('per_try_idle_timeout', 0);
  r.unsupported('retry_priority');
  r.unsupported('retry_options_predicates');
  const rateLimitedRetryBackOff = r.sub('rate_limited_retry_back_off', 'RateLimitedRetryBackOff', (b) => {
    const resetHeaders = b.objects('reset_headers', 'ResetHeader', (h) => {
      const name = headerName(h, 'name', true);
      const format = h.enum('format', ['SECONDS', 'UNIX_TIMESTAMP'], 'SECONDS');
      return name === '' ? undefined : { name, format };
    });
    if (resetHeaders.length === 0) b.problem('reset_headers needs at least one header', 'reset_headers');
    const maxIntervalMs = b.duration('max_interval', 300_000, { positive: true });
    return resetHeaders.length === 0 ? undefined : { resetHeaders, maxIntervalMs };
  });
  const retryHostPredicates = r.objects('retry_host_predicate', 'RetryHostPredicate', (p) => {
    const name = p.str('name');
    const typed = p.typed('typed_config');
    return name !== '' ? name : typed?.typeName;
  });
  const hostSelectionRetryMaxAttempts = r.int64('host_selection_retry_max_attempts', 1);
  const retriableStatusCodes = r.uint32List('retriable_status_codes', { min: 100, max: 599 });
  const retryBackOff = r.sub('retry_back_off', 'RetryBackOff', (b) => {
    if (!b.has('base_interval')) b.problem('base_interval is required', 'base_interval');
    const base = b.optDuration('base_interval', { positive: true });
    const max = b.optDuration('max_interval', { positive: true });
    if (base === undefined) return undefined;
    if (max !== undefined && max < base) {
      b.problem('max_interval must be greater than or equal to base_interval', 'max_interval');
      return undefined;
    }
    return { baseIntervalMs: base, maxIntervalMs: max ?? base * 10 };
  });
  return {
    retryOn,
    numRetries,
    perTryTimeoutMs,
    perTryIdleTimeoutMs,
    retriableStatusCodes,
    ...(retryBackOff !== undefined ? { retryBackOff } : {}),
    hostSelectionRetryMaxAttempts,
    retryHostPredicates,
    retriableHeaders: headerMatchers(r, 'retriable_headers'),
    retriableRequestHeaders: headerMatchers(r, 'retriable_request_headers'),
    ...(rateLimitedRetryBackOff !== undefined ? { rateLimitedRetryBackOff } : {}),
  };
}

/** HedgePolicy: only hedge_on_per_try_timeout (initial_requests 1, no additional_request_chance). */
function decodeHedgePolicy(r: Reader): boolean {
  const initial = r.uint32('initial_requests', 1, { min: 1 });
  if (initial > 1) r.problem('initial_requests above 1 is not supported by keel (hedging happens on per-try timeouts only)', 'initial_requests');
  r.unsupported('additional_request_chance');
  return r.bool('hedge_on_per_try_timeout', false);
}

function decodeHashPolicy(r: Reader): HashPolicyConfig | undefined {
  const kind = r.oneof(['header', 'cookie', 'connection_properties', 'query_parameter', 'filter_state'], true);
  const terminal = r.bool('terminal', false);
  switch (kind) {
    case 'header':
      return r.sub('header', 'HashPolicyHeader', (h) => {
        const name = headerName(h, 'header_name', true);
        h.unsupported('regex_rewrite');
        return name === '' ? undefined : { kind: 'header' as const, name, terminal };
      });
    case 'cookie':
      return r.sub('cookie', 'HashPolicyCookie', (c) => {
        const name = c.requiredStr('name');
        if (name !== '' && !TOKEN_RE.test(name)) c.problem(`'${name}' is not a valid cookie name`, 'name');
        const cookieTtlMs = c.optDuration('ttl');
        const cookiePath = c.optStr('path');
        if (cookiePath !== undefined) checkHeaderValue(c, 'path', cookiePath);
        const cookieAttributes = c.objects('attributes', 'CookieAttribute', (a) => {
          const n = a.requiredStr('name');
          const v = a.str('value');
          if (n !== '' && !TOKEN_RE.test(n)) a.problem(`'${n}' is not a valid cookie attribute name`, 'name');
          if (/[;\0\r\n]/.test(v)) a.problem('cookie attribute values must not contain ;, NUL, CR or LF', 'value');
          return n === '' ? undefined : v === '' ? n : `${n}=${v}`;
        });
        if (cookieTtlMs === undefined && (cookiePath !== undefined || cookieAttributes.length > 0)) {
          c.warn('path and attributes only apply to generated cookies, which need ttl', 'ttl');
        }
        return name === ''
          ? undefined
          : {
              kind: 'cookie' as const,
              name,
              terminal,
              ...(cookieTtlMs !== undefined ? { cookieTtlMs } : {}),
              ...(cookiePath !== undefined ? { cookiePath } : {}),
              ...(cookieAttributes.length > 0 ? { cookieAttributes } : {}),
            };
      });
    case 'connection_properties':
      return r.sub('connection_properties', 'HashPolicyConnectionProperties', (c) =>
        c.bool('source_ip', false) ? { kind: 'source_ip' as const, name: '', terminal } : undefined,
      );
    case 'query_parameter':
      return r.sub('query_parameter', 'HashPolicyQueryParameter', (q) => {
        const name = q.requiredStr('name');
        return name === '' ? undefined : { kind: 'query_parameter' as const, name, terminal };
      });
    case 'filter_state':
      r.problem('filter_state hashing is not supported by keel', 'filter_state');
      return undefined;
    default:
      return undefined;
  }
}

const REDIRECT_CODES = ['MOVED_PERMANENTLY', 'FOUND', 'SEE_OTHER', 'TEMPORARY_REDIRECT', 'PERMANENT_REDIRECT'] as const;
const REDIRECT_STATUS: Readonly<Record<(typeof REDIRECT_CODES)[number], number>> = {
  MOVED_PERMANENTLY: 301,
  FOUND: 302,
  SEE_OTHER: 303,
  TEMPORARY_REDIRECT: 307,
  PERMANENT_REDIRECT: 308,
};

function decodeRedirect(r: Reader): RedirectAction {
  const scheme = r.oneof(['https_redirect', 'scheme_redirect'], false);
  let schemeRedirect: string | undefined;
  if (scheme === 'https_redirect') schemeRedirect = r.bool('https_redirect', false) ? 'https' : undefined;
  else if (scheme === 'scheme_redirect') schemeRedirect = r.str('scheme_redirect').toLowerCase() || undefined;
  const hostRedirect = r.optStr('host_redirect');
  const portRedirect = r.uint32('port_redirect', 0, { max: 65535 });
  const pathKind = r.oneof(['path_redirect', 'prefix_rewrite', 'regex_rewrite'], false);
  const pathRedirect = r.optStr('path_redirect');
  const prefixRewrite = r.optStr('prefix_rewrite');
  const regexRewrite = r.sub('regex_rewrite', 'RegexMatchAndSubstitute', decodeRegexRewrite);
  for (const [f, v] of [
    ['host_redirect', hostRedirect],
    ['path_redirect', pathRedirect],
    ['prefix_rewrite', prefixRewrite],
  ] as const) {
    if (v !== undefined) checkHeaderValue(r, f, v);
  }
  const code = r.enum('response_code', REDIRECT_CODES, 'MOVED_PERMANENTLY');
  return {
    kind: 'redirect',
    ...(schemeRedirect !== undefined ? { schemeRedirect } : {}),
    ...(hostRedirect !== undefined && hostRedirect !== '' ? { hostRedirect } : {}),
    ...(portRedirect !== 0 ? { portRedirect } : {}),
    ...(pathKind === 'path_redirect' && pathRedirect !== undefined ? { pathRedirect } : {}),
    ...(pathKind === 'prefix_rewrite' && prefixRewrite !== undefined ? { prefixRewrite } : {}),
    ...(pathKind === 'regex_rewrite' && regexRewrite !== undefined ? { regexRewrite } : {}),
    responseCode: REDIRECT_STATUS[code],
    stripQuery: r.bool('strip_query', false),
  };
}

function decodeDirectResponse(rt: RouteTableCtx, r: Reader): DirectResponseAction | undefined {
  if (!r.has('status')) r.problem('status is required', 'status');
  const status = r.optUint32('status', { min: 100, max: 599 });
  const body = dataSource(r, 'body');
  if (body !== undefined && Buffer.byteLength(body) > rt.maxDirectResponseBodyBytes) {
    r.problem(
      `the body is ${Buffer.byteLength(body)} bytes, more than max_direct_response_body_size_bytes (${rt.maxDirectResponseBodyBytes})`,
      'body',
    );
  }
  if (status === undefined) return undefined;
  return body === undefined ? { kind: 'direct_response', status } : { kind: 'direct_response', status, body };
}

// ---------------------------------------------------------------------------------------------
// HTTP connection manager

interface CommonHttpOptions {
  readonly idleTimeoutMs?: number;
  readonly maxConnectionDurationMs: number;
  readonly maxHeadersCount: number;
  readonly maxStreamDurationMs: number;
  readonly headersWithUnderscoresAction: HttpConnectionManagerConfig['headersWithUnderscoresAction'];
  readonly maxRequestsPerConnection: number;
}

/** A cluster's common_http_protocol_options keel does not apply to upstream connections. */
function warnUnappliedUpstreamOptions(r: Reader, c: CommonHttpOptions | undefined): void {
  if (c === undefined) return;
  const unapplied: string[] = [];
  if (c.maxStreamDurationMs > 0) unapplied.push('max_stream_duration');
  if (c.maxHeadersCount !== 100) unapplied.push('max_headers_count');
  if (c.headersWithUnderscoresAction !== 'ALLOW') unapplied.push('headers_with_underscores_action');
  if (unapplied.length > 0) r.warn(`ignored on upstream connections: ${unapplied.join(', ')}`, 'common_http_protocol_options');
}

function decodeCommonHttpOptions(r: Reader): CommonHttpOptions {
  const idleTimeoutMs = r.optDuration('idle_timeout');
  return {
    ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}),
    maxConnectionDurationMs: r.duration('max_connection_duration', 0),
    maxHeadersCount: r.uint32('max_headers_count', 100, { min: 1 }),
    maxStreamDurationMs: r.duration('max_stream_duration', 0),
    headersWithUnderscoresAction: r.enum('headers_with_underscores_action', ['ALLOW', 'REJECT_REQUEST', 'DROP_HEADER'], 'ALLOW'),
    maxRequestsPerConnection: r.uint32('max_requests_per_connection', 0),
  };
}

function decodeHttp1Options(r: Reader): HttpConnectionManagerConfig['http1'] {
  const acceptHttp10 = r.bool('accept_http_10', false);
  const defaultHostForHttp10 = r.optStr('default_host_for_http_10');
  if (defaultHostForHttp10 !== undefined && !acceptHttp10) r.problem('default_host_for_http_10 needs accept_http_10', 'default_host_for_http_10');
  return { acceptHttp10, ...(defaultHostForHttp10 ? { defaultHostForHttp10 } : {}) };
}

function decodeHttp2Options(r: Reader): Http2Options {
  const legacy = r.optBool('stream_error_on_invalid_http_messaging');
  const invalid = r.optBool('override_stream_error_on_invalid_http_message') ?? legacy;
  const ka = r.sub('connection_keepalive', 'KeepaliveSettings', decodeKeepalive);
  // without an interval Envoy sends no periodic PING (connection_idle_interval alone is not modelled)
  const keepalive = ka !== undefined && ka.intervalMs > 0 ? ka : undefined;
  return {
    maxConcurrentStreams: r.uint32('max_concurrent_streams', DEFAULT_HTTP2.maxConcurrentStreams, { min: 1, max: 2_147_483_647 }),
    initialStreamWindowSize: r.uint32('initial_stream_window_size', DEFAULT_HTTP2.initialStreamWindowSize, { min: 65_535, max: 2_147_483_647 }),
    initialConnectionWindowSize: r.uint32('initial_connection_window_size', DEFAULT_HTTP2.initialConnectionWindowSize, {
      min: 65_535,
      max: 2_147_483_647,
    }),
    allowConnect: r.bool('allow_connect', false),
    hpackTableSize: r.uint32('hpack_table_size', DEFAULT_HTTP2.hpackTableSize),
    maxOutboundFrames: r.uint32('max_outbound_frames', DEFAULT_HTTP2.maxOutboundFrames, { min: 1 }),
    maxOutboundControlFrames: r.uint32('max_outbound_control_frames', DEFAULT_HTTP2.maxOutboundControlFrames, { min: 1 }),
    maxConsecutiveInboundFramesWithEmptyPayload: r.uint32('max_consecutive_inbound_frames_with_empty_payload', DEFAULT_HTTP2.maxConsecutiveInboundFramesWithEmptyPayload),
    ...(invalid !== undefined ? { overrideStreamErrorOnInvalidHttpMessage: invalid } : {}),
    ...(keepalive !== undefined ? { keepalive } : {}),
  };
}

function decodeKeepalive(k: Reader): NonNullable<Http2Options['keepalive']> {
  const timeoutMs = k.duration('timeout', 0, { minMs: 1 });
  if (!k.has('timeout')) k.problem('timeout is required', 'timeout');
  return {
    intervalMs: k.duration('interval', 0, { minMs: 1 }),
    timeoutMs,
    jitterPercent: k.sub('interval_jitter', 'Percent', (p) => p.num('value', 15, { min: 0, max: 100 })) ?? 15,
  };
}

export function decodeCidrRange(r: Reader): CidrRange | undefined {
  const addressPrefix = r.requiredStr('address_prefix');
  const family = isIP(addressPrefix);
  const prefixLen = r.uint32('prefix_len', 0, { max: family === 4 ? 32 : 128 });
  if (addressPrefix !== '' && family === 0) {
    r.problem(`'${addressPrefix}' is not an IP address`, 'address_prefix');
    return undefined;
  }
  return addressPrefix === '' ? undefined : { addressPrefix, prefixLen };
}

function runtimeBool(runtime: RuntimeValues, key: string, def: boolean): boolean {
  const v = runtime[key];
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === 1) return true;
  if (v === 'false' || v === 0) return false;
  return def;
}

function decodeHcm(ctx: Ctx, r: Reader): HttpConnectionManagerConfig | undefined {
  const statPrefix = r.requiredStr('stat_prefix');
  const codecType = r.enum('codec_type', ['AUTO', 'HTTP1', 'HTTP2', 'HTTP3'], 'AUTO', ['AUTO', 'HTTP1', 'HTTP2']);
  const routeKind = r.oneof(['rds', 'route_config', 'scoped_routes'], true);
  let routeConfig: RouteTableConfig | undefined;
  let rdsName: string | undefined;
  let rdsInitialFetchTimeoutMs: number | undefined;
  if (routeKind === 'route_config') {
    routeConfig = r.sub('route_config', 'RouteConfiguration', (rc) => decodeRouteTable(ctx, rc, true));
  } else if (routeKind === 'rds') {
    rdsName = r.sub('rds', 'Rds', (x) => {
      const src = x.sub('config_source', 'ConfigSource', decodeConfigSource);
      if (src?.kind === 'path') x.problem('routes from path_config_source are not supported by keel (use ads: {})', 'config_source');
      if (src) rdsInitialFetchTimeoutMs = src.initialFetchTimeoutMs;
      return x.requiredStr('route_config_name');
    });
  } else if (routeKind === 'scoped_routes') {
    r.problem('scoped_routes is not supported by keel', 'scoped_routes');
  }
  const { filters: httpFilters, suppressEnvoyHeaders, alpnOverride } = decodeHttpFilters(r);
  const common = r.sub('common_http_protocol_options', 'HttpProtocolOptions', decodeCommonHttpOptions);
  if (common && common.maxRequestsPerConnection !== 0) {
    r.warn('ignored: max_requests_per_connection is not enforced on downstream connections', 'common_http_protocol_options');
  }
  if (common && common.maxConnectionDurationMs > 0) {
    r.warn('ignored: max_connection_duration is not enforced on downstream connections', 'common_http_protocol_options');
  }
  if (r.has('delayed_close_timeout')) r.warn('ignored: keel closes a connection once its last response is written', 'delayed_close_timeout');
  if (r.has('drain_timeout')) r.warn('ignored: a draining HTTP/2 connection gets one GOAWAY and closes when its streams end', 'drain_timeout');
  const http1 = r.sub('http_protocol_options', 'Http1ProtocolOptions', decodeHttp1Options) ?? { acceptHttp10: false };
  const http2 = r.sub('http2_protocol_options', 'Http2ProtocolOptions', decodeHttp2Options) ?? DEFAULT_HTTP2;
  const stripMatching = r.bool('strip_matching_host_port', false);
  const stripAny = r.bool('strip_any_host_port', false);
  if (stripMatching && stripAny) r.problem('only one of strip_matching_host_port or strip_any_host_port can be set');
  r.enum(
    'path_with_escaped_slashes_action',
    ['IMPLEMENTATION_SPECIFIC_DEFAULT', 'KEEP_UNCHANGED', 'REJECT_REQUEST', 'UNESCAPE_AND_REDIRECT', 'UNESCAPE_AND_FORWARD'],
    'IMPLEMENTATION_SPECIFIC_DEFAULT',
    ['IMPLEMENTATION_SPECIFIC_DEFAULT', 'KEEP_UNCHANGED'],
  );
  const internalAddressCidrs =
    r.sub('internal_address_config', 'InternalAddressConfig', (i) => {
      if (i.bool('unix_sockets', false)) i.warn('ignored: unix socket peers are treated as external', 'unix_sockets');
      return i.objects('cidr_ranges', 'CidrRange', decodeCidrRange).map((c) => `${c.addressPrefix}/${c.prefixLen}`);
    }) ?? [];
  const upgradeConfigs = r.objects('upgrade_configs', 'HcmUpgradeConfig', (u) => {
    const upgradeType = u.requiredStr('upgrade_type');
    u.unsupported('filters', 'an upgrade-specific filter chain');
    const enabled = u.bool('enabled', true);
    return upgradeType === '' ? undefined : { upgradeType: upgradeType.toLowerCase(), enabled };
  });
  r.unsupported('original_ip_detection_extensions');
  r.unsupported('early_header_mutation_extensions');
  const via = r.optStr('via');
  const serverName = r.str('server_name', 'envoy');
  if (via !== undefined) checkHeaderValue(r, 'via', via);
  checkHeaderValue(r, 'server_name', serverName);
  const streamErrorOnInvalid = r.optBool('stream_error_on_invalid_http_message');
  const cfg: HttpConnectionManagerConfig = {
    kind: 'http_connection_manager',
    statPrefix,
    codecType,
    ...(routeConfig !== undefined ? { routeConfig } : {}),
    ...(rdsName !== undefined ? { rdsName } : {}),
    ...(rdsInitialFetchTimeoutMs !== undefined ? { rdsInitialFetchTimeoutMs } : {}),
    httpFilters,
    useRemoteAddress: r.bool('use_remote_address', false),
    xffNumTrustedHops: r.uint32('xff_num_trusted_hops', 0),
    skipXffAppend: r.bool('skip_xff_append', false),
    ...decodeClientCertDetails(r),
    ...(via !== undefined && via !== '' ? { via } : {}),
    generateRequestId: r.bool('generate_request_id', true),
    preserveExternalRequestId: r.bool('preserve_external_request_id', false),
    alwaysSetRequestIdInResponse: r.bool('always_set_request_id_in_response', false),
    serverName,
    accessLogs: r.objects('access_log', 'AccessLog', decodeAccessLog),
    ...(r.has('tracing') ? { tracing: r.sub('tracing', 'Tracing', decodeHcmTracing) } : {}),
    serverHeaderTransformation: r.enum('server_header_transformation', ['OVERWRITE', 'APPEND_IF_ABSENT', 'PASS_THROUGH'], 'OVERWRITE'),
    maxRequestHeadersKb: r.uint32('max_request_headers_kb', 60, { gt: 0, max: 8192 }),
    maxHeadersCount: common?.maxHeadersCount ?? 100,
    headersWithUnderscoresAction: common?.headersWithUnderscoresAction ?? 'ALLOW',
    streamIdleTimeoutMs: r.duration('stream_idle_timeout', 300_000),
    requestTimeoutMs: r.duration('request_timeout', 0),
    requestHeadersTimeoutMs: r.duration('request_headers_timeout', 0),
    idleTimeoutMs: common?.idleTimeoutMs ?? 3_600_000,
    maxConnectionDurationMs: common?.maxConnectionDurationMs ?? 0,
    maxStreamDurationMs: common?.maxStreamDurationMs ?? 0,
    drainTimeoutMs: r.duration('drain_timeout', 5000),
    delayedCloseTimeoutMs: r.duration('delayed_close_timeout', 1000),
    upgradeConfigs,
    normalizePath: r.bool('normalize_path', runtimeBool(ctx.runtime, 'http_connection_manager.normalize_path', false)),
    mergeSlashes: r.bool('merge_slashes', false),
    stripMatchingHostPort: stripMatching,
    stripAnyHostPort: stripAny,
    suppressEnvoyHeaders,
    ...(alpnOverride !== undefined ? { alpnOverride } : {}),
    http1,
    http2,
    ...(streamErrorOnInvalid !== undefined ? { streamErrorOnInvalidHttpMessage: streamErrorOnInvalid } : {}),
    internalAddressCidrs,
  };
  return statPrefix === '' || routeKind === undefined || routeKind === 'scoped_routes' ? undefined : cfg;
}

function decodeHttpFilters(r: Reader): { filters: HttpFilterConfig[]; suppressEnvoyHeaders: boolean; alpnOverride?: AlpnOverride } {
  const diag = r.diag;
  const items = r.list('http_filters');
  const filters: HttpFilterConfig[] = [];
  let suppressEnvoyHeaders = false;
  let alpnOverride: AlpnOverride | undefined;
  let routerAt = -1;
  let routerPath = '';
  items.forEach(({ value, path }, i) => {
    const f = Reader.of(diag, path, value, 'HttpFilter');
    if (!f) return;
    const name = f.requiredStr('name');
    const isOptional = f.bool('is_optional', false);
    const disabled = f.bool('disabled', false);
    f.unsupported('config_discovery', 'config_discovery (ECDS)');
    const typed = f.typed('typed_config');
    f.done();
    const typeName = typed?.typeName ?? '';
    const label = `'${name}' (@type ${typeName || 'none'})`;
    if (typeName === TYPE.router || (typed === undefined && name === NAME.router)) {
      if (disabled) f.problem('the router filter cannot be disabled', 'disabled');
      routerAt = i;
      routerPath = path;
      if (typed) {
        const rc = typed.reader.retype('Router');
        suppressEnvoyHeaders = rc.bool('suppress_envoy_headers', false);
        rc.unsupported('upstream_http_filters');
        rc.done();
      }
      filters.push({ name, typeName: TYPE.router, config: typed ? { ...typed.reader.raw } : {}, isOptional, disabled });
    } else if (typeName === TYPE.istioAlpn || (typed === undefined && name === NAME.istioAlpn)) {
      // Not a filter on the request path: it chooses the upstream connection's ALPN (Stream.startAttempt).
      if (typed && !disabled) {
        const ar = typed.reader.retype('FilterConfig');
        alpnOverride = decodeAlpnOverride(ar);
        ar.done();
      }
    } else if (typed !== undefined && filterDecoder(typeName) !== undefined) {
      const config = filterDecoder(typeName)!.decode(typed.reader);
      typed.reader.done();
      if (config !== undefined) filters.push({ name, typeName, config, isOptional, disabled });
    } else if (SKIPPED_HTTP_FILTERS.has(name) || SKIPPED_HTTP_FILTERS.has(typeName)) {
      diag.warn(path, `skipping HTTP filter ${label}: keel does not implement this telemetry filter yet`);
    } else if (isOptional || disabled) {
      diag.warn(path, `skipping ${isOptional ? 'optional' : 'disabled'} HTTP filter ${label}: not supported by keel`);
    } else {
      diag.problem(path, `unsupported HTTP filter ${label}`);
    }
  });
  if (routerAt < 0) r.problem(`the last HTTP filter must be ${NAME.router}`, 'http_filters');
  else if (routerAt !== items.length - 1) diag.problem(routerPath, `${NAME.router} must be the last HTTP filter`);
  return { filters, suppressEnvoyHeaders, ...(alpnOverride !== undefined ? { alpnOverride } : {}) };
}

/** istio.alpn's FilterConfig: alpn_override [{ upstream_protocol: HTTP10 | HTTP11 | HTTP2, alpn_override: [..] }]. */
function decodeAlpnOverride(r: Reader): AlpnOverride {
  const out: { http10?: string[]; http11?: string[]; http2?: string[] } = {};
  for (const { value, path } of r.list('alpn_override')) {
    const o = Reader.of(r.diag, path, value, 'AlpnOverride');
    if (!o) continue;
    const protocol = o.enum('upstream_protocol', ['HTTP10', 'HTTP11', 'HTTP2'], 'HTTP10');
    const list = o.strList('alpn_override');
    o.done();
    if (list.some((p) => p === '' || p.length > 255)) {
      o.problem('ALPN protocol names must be 1 to 255 bytes', 'alpn_override');
      continue;
    }
    const key = protocol === 'HTTP2' ? 'http2' : protocol === 'HTTP11' ? 'http11' : 'http10';
    if (out[key] !== undefined) o.problem(`upstream_protocol ${protocol} is overridden twice`, 'upstream_protocol');
    else if (list.length > 0) out[key] = list;
  }
  return out;
}

function decodeTcpProxy(ctx: Ctx, r: Reader): TcpProxyConfig | undefined {
  const statPrefix = r.requiredStr('stat_prefix');
  const kind = r.oneof(['cluster', 'weighted_clusters'], true);
  let cluster: string | undefined;
  let weightedClusters: TcpProxyConfig['weightedClusters'];
  if (kind === 'cluster') {
    cluster = r.requiredStr('cluster');
    if (cluster !== '' && !ctx.clusterNames.has(cluster)) {
      r.warn(`cluster '${cluster}' is not defined in static_resources.clusters: connections will be closed`, 'cluster');
    }
  } else if (kind === 'weighted_clusters') {
    weightedClusters = r.sub('weighted_clusters', 'TcpWeightedCluster', (w) => {
      if (!w.has('clusters')) w.problem('clusters is required (at least one)', 'clusters');
      return w.objects('clusters', 'TcpClusterWeight', (c) => {
        const name = c.requiredStr('name');
        const weight = c.uint32('weight', 0, { min: 1 });
        if (!c.has('weight')) c.problem('weight is required (at least 1)', 'weight');
        c.unsupported('metadata_match');
        return name === '' ? undefined : { name, weight };
      });
    });
  }
  const idleTimeoutMs = r.duration('idle_timeout', 3_600_000);
  const maxConnectAttempts = r.uint32('max_connect_attempts', 1, { min: 1 });
  for (const f of ['tunneling_config', 'on_demand', 'metadata_match', 'max_downstream_connection_duration', 'backoff_options']) r.unsupported(f);
  if (statPrefix === '' || (cluster === undefined && weightedClusters === undefined) || cluster === '') return undefined;
  return { kind: 'tcp_proxy', statPrefix, ...(cluster !== undefined ? { cluster } : {}), ...(weightedClusters ? { weightedClusters } : {}), idleTimeoutMs, ...(maxConnectAttempts > 1 ? { maxConnectAttempts } : {}) };
}

// ---------------------------------------------------------------------------------------------
// TLS

const FORWARD_CLIENT_CERT = ['SANITIZE', 'FORWARD_ONLY', 'APPEND_FORWARD', 'SANITIZE_SET', 'ALWAYS_FORWARD_ONLY'] as const;

/** HCM forward_client_cert_details and set_current_client_cert_details (x-forwarded-client-cert). */
function decodeClientCertDetails(r: Reader): { forwardClientCertDetails?: ForwardClientCertDetails; setCurrentClientCertDetails?: ClientCertDetail[] } {
  const forward = r.enum('forward_client_cert_details', FORWARD_CLIENT_CERT, 'SANITIZE');
  const details = r.sub('set_current_client_cert_details', 'SetCurrentClientCertDetails', (d) => {
    const out: ClientCertDetail[] = [];
    // Envoy's order, whatever the order of the fields in the config.
    if (d.bool('cert', false)) out.push('Cert');
    if (d.bool('chain', false)) out.push('Chain');
    const subject = d.get('subject');
    if (subject === true || (typeof subject === 'object' && subject !== null && (subject as { value?: unknown }).value === true)) out.push('Subject');
    else if (subject !== undefined && subject !== false && !(typeof subject === 'object' && subject !== null)) d.problem(`expected true or false, got ${JSON.stringify(subject)}`, 'subject');
    if (d.bool('uri', false)) out.push('URI');
    if (d.bool('dns', false)) out.push('DNS');
    return out;
  });
  if (details && details.length > 0 && forward !== 'APPEND_FORWARD' && forward !== 'SANITIZE_SET') {
    r.warn(`set_current_client_cert_details has no effect with forward_client_cert_details ${forward}`);
  }
  return {
    ...(forward !== 'SANITIZE' ? { forwardClientCertDetails: forward } : {}),
    ...(details && details.length > 0 ? { setCurrentClientCertDetails: details } : {}),
  };
}

const TLS_VERSIONS = ['TLS_AUTO', 'TLSv1_0', 'TLSv1_1', 'TLSv1_2', 'TLSv1_3'] as const;
/** Envoy's names -> Node's `minVersion`/`maxVersion` names. */
const NODE_TLS_VERSION: Readonly<Record<string, string>> = { TLSv1_0: 'TLSv1', TLSv1_1: 'TLSv1.1', TLSv1_2: 'TLSv1.2', TLSv1_3: 'TLSv1.3' };

interface CommonTls {
  readonly certificates: TlsCertificate[];
  readonly sdsCertificateNames: string[];
  readonly validation?: CertificateValidation;
  readonly sdsValidationName?: string;
  readonly alpnProtocols: string[];
  readonly minVersion?: string;
  readonly maxVersion?: string;
}

function decodeTlsCertificate(r: Reader): TlsCertificate | undefined {
  const certChain = dataSource(r, 'certificate_chain');
  const privateKey = dataSource(r, 'private_key');
  if (!r.has('certificate_chain')) r.problem('certificate_chain is required', 'certificate_chain');
  if (!r.has('private_key')) r.problem('private_key is required', 'private_key');
  r.unsupported('password', 'password (encrypted private keys)');
  r.unsupported('private_key_provider');
  r.unsupported('pkey', 'pkey (PKCS#12)');
  return certChain !== undefined && privateKey !== undefined ? { certChain, privateKey } : undefined;
}

const SAN_TYPES = ['SAN_TYPE_UNSPECIFIED', 'EMAIL', 'DNS', 'URI', 'IP_ADDRESS', 'OTHER_NAME'] as const;
const SAN_KIND = { EMAIL: 'email', DNS: 'dns', URI: 'uri', IP_ADDRESS: 'ip' } as const;

function decodeValidationContext(r: Reader): CertificateValidation {
  const trustedCa = dataSource(r, 'trusted_ca');
  const typedSans = r.objects('match_typed_subject_alt_names', 'SubjectAltNameMatcher', (m) => {
    const sanType = m.enum('san_type', SAN_TYPES, 'SAN_TYPE_UNSPECIFIED', ['EMAIL', 'DNS', 'URI', 'IP_ADDRESS']);
    if (!m.has('san_type')) m.problem('san_type is required', 'san_type');
    m.unsupported('oid');
    if (!m.has('matcher')) m.problem('matcher is required', 'matcher');
    const match = stringMatcherField(m, 'matcher');
    return match && sanType !== 'SAN_TYPE_UNSPECIFIED' ? { kind: SAN_KIND[sanType], match } : undefined;
  });
  const anySans = r.objects('match_subject_alt_names', 'StringMatcher', (m) => {
    const match = decodeStringMatcher(m);
    return match ? { kind: 'any' as const, match } : undefined;
  });
  for (const f of ['verify_certificate_spki', 'verify_certificate_hash', 'crl', 'custom_validator_config', 'require_signed_certificate_timestamp']) {
    r.unsupported(f);
  }
  if (r.bool('allow_expired_certificate', false)) r.problem('allow_expired_certificate is not supported by keel', 'allow_expired_certificate');
  r.enum('trust_chain_verification', ['VERIFY_TRUST_CHAIN', 'ACCEPT_UNTRUSTED'], 'VERIFY_TRUST_CHAIN', ['VERIFY_TRUST_CHAIN']);
  return { ...(trustedCa !== undefined ? { trustedCa } : {}), matchSubjectAltNames: [...typedSans, ...anySans] };
}

/** SdsSecretConfig: the secret name, and whether it is fetched over SDS (else a static secret). */
function decodeSdsConfig(r: Reader): { name: string; dynamic: boolean } | undefined {
  const name = r.requiredStr('name');
  const dynamic = r.has('sds_config');
  return name === '' ? undefined : { name, dynamic };
}

function decodeCommonTls(ctx: Ctx, r: Reader): CommonTls {
  const params = r.sub('tls_params', 'TlsParameters', (p) => {
    const min = p.enum('tls_minimum_protocol_version', TLS_VERSIONS, 'TLS_AUTO');
    const max = p.enum('tls_maximum_protocol_version', TLS_VERSIONS, 'TLS_AUTO');
    if (min !== 'TLS_AUTO' && max !== 'TLS_AUTO' && TLS_VERSIONS.indexOf(min) > TLS_VERSIONS.indexOf(max)) {
      p.problem(`tls_minimum_protocol_version ${min} is above tls_maximum_protocol_version ${max}`);
    }
    return { minVersion: NODE_TLS_VERSION[min], maxVersion: NODE_TLS_VERSION[max] };
  });
  const certificates = r.objects('tls_certificates', 'TlsCertificate', decodeTlsCertificate);
  const sdsCertificateNames: string[] = [];
  r.objects('tls_certificate_sds_secret_configs', 'SdsSecretConfig', (s) => {
    const sds = decodeSdsConfig(s);
    if (!sds) return undefined;
    if (sds.dynamic) sdsCertificateNames.push(sds.name);
    else {
      const secret = ctx.secrets.get(sds.name);
      if (secret?.certificate) certificates.push(secret.certificate);
      else s.problem(secret ? `static secret '${sds.name}' has no tls_certificate` : `unknown static secret '${sds.name}'`, 'name');
    }
    return undefined;
  });
  r.unsupported('tls_certificate_provider_instance');
  r.unsupported('custom_handshaker');
  r.unsupported('custom_tls_certificate_selector');

  let validation: CertificateValidation | undefined;
  let sdsValidationName: string | undefined;
  const resolveValidation = (s: Reader, sds: { name: string; dynamic: boolean }): CertificateValidation | undefined => {
    if (sds.dynamic) {
      sdsValidationName = sds.name;
      return undefined;
    }
    const secret = ctx.secrets.get(sds.name);
    if (!secret?.validation) {
      s.problem(secret ? `static secret '${sds.name}' has no validation_context` : `unknown static secret '${sds.name}'`, 'name');
    }
    return secret?.validation;
  };
  const vkind = r.oneof(
    [
      'validation_context',
      'validation_context_sds_secret_config',
      'combined_validation_context',
      'validation_context_certificate_provider',
      'validation_context_certificate_provider_instance',
    ],
    false,
  );
  switch (vkind) {
    case 'validation_context':
      validation = r.sub('validation_context', 'CertificateValidationContext', decodeValidationContext);
      break;
    case 'validation_context_sds_secret_config':
      validation = r.sub('validation_context_sds_secret_config', 'SdsSecretConfig', (s) => {
        const sds = decodeSdsConfig(s);
        return sds ? resolveValidation(s, sds) : undefined;
      });
      break;
    case 'combined_validation_context':
      validation = r.sub('combined_validation_context', 'CombinedCertificateValidationContext', (c) => {
        if (!c.has('default_validation_context')) c.problem('default_validation_context is required', 'default_validation_context');
        if (!c.has('validation_context_sds_secret_config')) c.problem('validation_context_sds_secret_config is required', 'validation_context_sds_secret_config');
        const def = c.sub('default_validation_context', 'CertificateValidationContext', decodeValidationContext);
        const fromSecret = c.sub('validation_context_sds_secret_config', 'SdsSecretConfig', (s) => {
          const sds = decodeSdsConfig(s);
          return sds ? resolveValidation(s, sds) : undefined;
        });
        c.unsupported('validation_context_certificate_provider');
        c.unsupported('validation_context_certificate_provider_instance');
        const trustedCa = fromSecret?.trustedCa ?? def?.trustedCa;
        return {
          ...(trustedCa !== undefined ? { trustedCa } : {}),
          matchSubjectAltNames: [...(def?.matchSubjectAltNames ?? []), ...(fromSecret?.matchSubjectAltNames ?? [])],
        };
      });
      break;
    case 'validation_context_certificate_provider':
    case 'validation_context_certificate_provider_instance':
      r.problem(`${vkind} is not supported by keel`, vkind);
      break;
  }
  if (validation && validation.matchSubjectAltNames.length > 0 && validation.trustedCa === undefined && sdsValidationName === undefined) {
    r.problem('SAN-based verification of peer certificates without a trusted CA is insecure and not allowed');
  }
  const alpnProtocols = r.strList('alpn_protocols');
  return {
    certificates,
    sdsCertificateNames,
    ...(validation !== undefined ? { validation } : {}),
    ...(sdsValidationName !== undefined ? { sdsValidationName } : {}),
    alpnProtocols,
    ...(params?.minVersion !== undefined ? { minVersion: params.minVersion } : {}),
    ...(params?.maxVersion !== undefined ? { maxVersion: params.maxVersion } : {}),
  };
}

const EMPTY_COMMON_TLS: CommonTls = { certificates: [], sdsCertificateNames: [], alpnProtocols: [] };

function decodeDownstreamTls(ctx: Ctx, r: Reader): DownstreamTlsConfig | undefined {
  const common = r.sub('common_tls_context', 'CommonTlsContext', (c) => decodeCommonTls(ctx, c)) ?? EMPTY_COMMON_TLS;
  const requireClientCertificate = r.bool('require_client_certificate', false);
  r.unsupported('require_sni');
  if (common.certificates.length === 0 && common.sdsCertificateNames.length === 0) {
    r.problem('a server TLS context needs a certificate (tls_certificates or tls_certificate_sds_secret_configs)', 'common_tls_context');
  }
  return { ...common, requireClientCertificate };
}

function decodeUpstreamTls(ctx: Ctx, r: Reader): UpstreamTlsConfig {
  const common = r.sub('common_tls_context', 'CommonTlsContext', (c) => decodeCommonTls(ctx, c)) ?? EMPTY_COMMON_TLS;
  const sni = r.optStr('sni');
  if (sni !== undefined && sni.length > 255) r.problem('sni must be at most 255 characters', 'sni');
  return {
    ...common,
    ...(sni !== undefined && sni !== '' ? { sni } : {}),
    allowRenegotiation: r.bool('allow_renegotiation', false),
  };
}

/** A transport socket: TLS (with its decoded context) or raw_buffer (undefined tls). */
function decodeTransportSocket<T>(r: Reader, side: 'downstream' | 'upstream', decode: (tls: Reader) => T): { tls?: T } | undefined {
  const name = r.requiredStr('name');
  const typed = r.typed('typed_config');
  const wanted = side === 'downstream' ? TYPE.downstreamTls : TYPE.upstreamTls;
  const label = `'${name}' (@type ${typed?.typeName ?? 'none'})`;
  if (typed === undefined) {
    if (name === NAME.rawBuffer) return {};
    if (name === NAME.tls) r.problem(`${NAME.tls} needs a typed_config (${wanted.split('.').pop()})`);
    else r.problem(`unsupported transport socket ${label}`);
    return undefined;
  }
  if (typed.typeName === TYPE.rawBuffer) return {};
  if (typed.typeName === TYPE.downstreamTls || typed.typeName === TYPE.upstreamTls) {
    if (typed.typeName !== wanted) {
      r.problem(`a ${side === 'downstream' ? 'listener' : 'cluster'} TLS transport socket takes a ${wanted.split('.').pop()}, not ${typed.typeName}`, 'typed_config');
      return undefined;
    }
    const tr = typed.reader.retype(side === 'downstream' ? 'DownstreamTlsContext' : 'UpstreamTlsContext');
    const tls = decode(tr);
    tr.done();
    return { tls };
  }
  r.problem(`unsupported transport socket ${label}`);
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Listeners

const DEFAULT_CHAIN_MATCH: FilterChainMatchConfig = {
  prefixRanges: [],
  serverNames: [],
  applicationProtocols: [],
  sourceType: 'ANY',
  sourcePrefixRanges: [],
  sourcePorts: [],
};

function decodeFilterChainMatch(r: Reader): FilterChainMatchConfig {
  const destinationPort = r.optUint32('destination_port', { min: 1, max: 65535 });
  const serverNames = r.strList('server_names').map((s) => s.toLowerCase());
  serverNames.forEach((s, i) => {
    const star = s.indexOf('*');
    if (star >= 0 && !(star === 0 && s.startsWith('*.') && s.indexOf('*', 1) < 0)) {
      r.diag.problem(`${r.at('server_names')}[${i}]`, `partial wildcards are not supported in server_names ('${s}')`);
    }
  });
  const transportProtocol = r.optStr('transport_protocol');
  const directSourcePrefixRanges = r.objects('direct_source_prefix_ranges', 'CidrRange', decodeCidrRange);
  r.unsupported('address_suffix');
  r.unsupported('suffix_len');
  return {
    ...(destinationPort !== undefined ? { destinationPort } : {}),
    prefixRanges: r.objects('prefix_ranges', 'CidrRange', decodeCidrRange),
    serverNames,
    ...(transportProtocol !== undefined && transportProtocol !== '' ? { transportProtocol } : {}),
    applicationProtocols: r.strList('application_protocols'),
    ...(directSourcePrefixRanges.length > 0 ? { directSourcePrefixRanges } : {}),
    sourceType: r.enum('source_type', ['ANY', 'SAME_IP_OR_LOOPBACK', 'EXTERNAL'], 'ANY'),
    sourcePrefixRanges: r.objects('source_prefix_ranges', 'CidrRange', decodeCidrRange),
    sourcePorts: r.uint32List('source_ports', { min: 1, max: 65535 }),
  };
}

/** Canonical form of a filter chain match, to find chains Envoy would reject as duplicates. */
function matchKey(m: FilterChainMatchConfig): string {
  const cidrs = (l: readonly CidrRange[]): string[] => l.map((c) => `${c.addressPrefix}/${c.prefixLen}`).sort();
  return JSON.stringify([
    m.destinationPort ?? 0,
    cidrs(m.prefixRanges),
    [...m.serverNames].sort(),
    m.transportProtocol ?? '',
    [...m.applicationProtocols].sort(),
    cidrs(m.directSourcePrefixRanges ?? []),
    m.sourceType,
    cidrs(m.sourcePrefixRanges),
    [...m.sourcePorts].sort((a, b) => a - b),
  ]);
}

function decodeNetworkFilters(ctx: Ctx, r: Reader, pre: NetworkPreFilterConfig[] = []): NetworkFilterConfig | undefined {
  const diag = r.diag;
  const items = r.list('filters');
  if (items.length === 0) {
    r.problem(`a filter chain needs a terminal network filter (${NAME.hcm} or ${NAME.tcpProxy})`, 'filters');
    return undefined;
  }
  let result: NetworkFilterConfig | undefined;
  items.forEach(({ value, path }, i) => {
    const f = Reader.of(diag, path, value, 'Filter');
    if (!f) return;
    const name = f.requiredStr('name');
    f.unsupported('config_discovery', 'config_discovery (ECDS)');
    const typed = f.typed('typed_config');
    f.done();
    const typeName = typed?.typeName;
    const kind =
      typeName !== undefined
        ? typeName === TYPE.hcm
          ? 'hcm'
          : typeName === TYPE.tcpProxy
            ? 'tcp'
            : undefined
        : name === NAME.hcm
          ? 'hcm'
          : name === NAME.tcpProxy
            ? 'tcp'
            : undefined;
    if (kind === undefined && (typeName === RBAC_NETWORK_TYPE || (typeName === undefined && name === RBAC_NETWORK_NAME))) {
      // envoy.filters.network.rbac: a non-terminal filter before HCM / tcp_proxy
      const rr = typed ? typed.reader.retype('NetworkRBAC') : new Reader(diag, f.at('typed_config'), {}, 'NetworkRBAC');
      const cfg = decodeNetworkRbac(rr);
      rr.done();
      if (i === items.length - 1) diag.problem(path, `'${name}' is not a terminal filter: the last network filter must be ${NAME.hcm} or ${NAME.tcpProxy}`);
      else if (cfg) pre.push({ name, typeName: RBAC_NETWORK_TYPE, config: cfg });
      return;
    }
    if (kind === undefined && (SKIPPED_NETWORK_FILTERS.has(name) || (typeName !== undefined && SKIPPED_NETWORK_FILTERS.has(typeName)))) {
      if (i === items.length - 1) diag.problem(path, `'${name}' is not a terminal filter: the last network filter must be ${NAME.hcm} or ${NAME.tcpProxy}`);
      else diag.warn(path, `network filter '${name}' is accepted and skipped (telemetry/metadata exchange keel does not run as a network filter)`);
      return;
    }
    if (kind === undefined) {
      diag.problem(path, `unknown network filter '${name}' (@type ${typeName ?? 'none'})`);
      return;
    }
    if (i !== items.length - 1) diag.problem(path, `'${name}' is a terminal filter and must be the last network filter`);
    const msg = kind === 'hcm' ? 'HttpConnectionManager' : 'TcpProxy';
    const cr = typed ? typed.reader.retype(msg) : new Reader(diag, f.at('typed_config'), {}, msg);
    const cfg = kind === 'hcm' ? decodeHcm(ctx, cr) : decodeTcpProxy(ctx, cr);
    cr.done();
    if (i === items.length - 1) result = cfg;
  });
  return result;
}

function decodeFilterChain(ctx: Ctx, r: Reader): FilterChainConfig | undefined {
  const name = r.str('name');
  const match = r.sub('filter_chain_match', 'FilterChainMatch', decodeFilterChainMatch) ?? DEFAULT_CHAIN_MATCH;
  const socket = r.sub('transport_socket', 'TransportSocket', (t) => decodeTransportSocket(t, 'downstream', (x) => decodeDownstreamTls(ctx, x)));
  r.unsupported('on_demand_configuration');
  const networkFilters: NetworkPreFilterConfig[] = [];
  const filter = decodeNetworkFilters(ctx, r, networkFilters);
  if (!filter || (r.has('transport_socket') && socket === undefined)) return undefined;
  const tls = socket?.tls;
  return { name, match, ...(tls !== undefined ? { tls } : {}), filter, ...(networkFilters.length > 0 ? { networkFilters } : {}) };
}

function decodeListenerFilter(r: Reader): ListenerFilterConfig | undefined {
  const name = r.requiredStr('name');
  r.unsupported('config_discovery', 'config_discovery (ECDS)');
  const typed = r.typed('typed_config');
  const typeName = typed?.typeName ?? LISTENER_FILTERS.get(name);
  if (typeName === undefined || ![...LISTENER_FILTERS.values()].includes(typeName)) {
    r.problem(`unsupported listener filter '${name}' (@type ${typed?.typeName ?? 'none'})`);
    return undefined;
  }
  return { name, typeName };
}

function decodeListener(ctx: Ctx, r: Reader, index: number): ListenerConfig | undefined {
  const name = r.str('name') || `listener_${index}`;
  if (!r.has('address')) r.problem('address is required', 'address');
  const address = r.sub('address', 'Address', (a) => decodeAddress(a, 'bind'));
  for (const f of ['additional_addresses', 'api_listener', 'internal_listener', 'udp_listener_config', 'quic_options']) r.unsupported(f);
  r.unsupported('filter_chain_matcher', 'filter_chain_matcher (use filter_chain_match)');

  const seenMatches = new Map<string, string>();
  const chainPaths = new Map<FilterChainConfig, string>();
  const reported = new Set<FilterChainConfig>();
  const filterChains = r.objects('filter_chains', 'FilterChain', (fc) => {
    const chain = decodeFilterChain(ctx, fc);
    if (chain) {
      chainPaths.set(chain, fc.path);
      const key = matchKey(chain.match);
      const prev = seenMatches.get(key);
      if (prev !== undefined) {
        fc.problem(`multiple filter chains with the same matching rules (also ${prev})`, 'filter_chain_match');
        reported.add(chain);
      } else seenMatches.set(key, fc.path);
    }
    return chain;
  });
  // Overlapping lists (server_names, application_protocols, ranges, ports) can give two chains one
  // same full combination: Envoy refuses that too.
  for (const c of new FilterChainMatcher(filterChains.map((chain) => ({ match: chain.match, chain }))).conflicts) {
    if (reported.has(c.chain)) continue;
    r.diag.problem(`${chainPaths.get(c.chain)}.filter_chain_match`, `multiple filter chains with the same matching rules (overlaps ${chainPaths.get(c.with)})`);
  }
  const defaultFilterChain = r.sub('default_filter_chain', 'FilterChain', (fc) => decodeFilterChain(ctx, fc));
  const rawChains = r.get('filter_chains');
  if ((!Array.isArray(rawChains) || rawChains.length === 0) && !r.has('default_filter_chain')) {
    r.problem('no filter chains specified (filter_chains or default_filter_chain)');
  }
  const listenerFilters = r.objects('listener_filters', 'ListenerFilter', decodeListenerFilter);
  const listener: ListenerConfig = {
    name,
    source: r.raw,
    address: address ?? { address: '', port: 0 },
    filterChains,
    ...(defaultFilterChain !== undefined ? { defaultFilterChain } : {}),
    listenerFilters,
    listenerFiltersTimeoutMs: r.duration('listener_filters_timeout', 15_000),
    continueOnListenerFiltersTimeout: r.bool('continue_on_listener_filters_timeout', false),
    useOriginalDst: r.bool('use_original_dst', false),
    ...(r.bool('transparent', false) ? { transparent: true } : {}),
    bindToPort: r.bool('bind_to_port', true),
    perConnectionBufferLimitBytes: r.uint32('per_connection_buffer_limit_bytes', MIB),
    trafficDirection: r.enum('traffic_direction', ['UNSPECIFIED', 'INBOUND', 'OUTBOUND'], 'UNSPECIFIED'),
  };
  return address === undefined ? undefined : listener;
}

// ---------------------------------------------------------------------------------------------
// Clusters

const CLUSTER_TYPES = ['STATIC', 'STRICT_DNS', 'LOGICAL_DNS', 'EDS', 'ORIGINAL_DST'] as const;
const LB_POLICIES = ['ROUND_ROBIN', 'LEAST_REQUEST', 'RING_HASH', 'RANDOM', '', 'MAGLEV', 'CLUSTER_PROVIDED', 'LOAD_BALANCING_POLICY_CONFIG'];
const SUPPORTED_LB: readonly LbPolicy[] = ['ROUND_ROBIN', 'LEAST_REQUEST', 'RING_HASH', 'RANDOM', 'MAGLEV', 'CLUSTER_PROVIDED'];
const HEALTH_STATUSES = ['UNKNOWN', 'HEALTHY', 'UNHEALTHY', 'DRAINING', 'TIMEOUT', 'DEGRADED'] as const;

type AddressMode = 'ip' | 'host' | 'static';

/**
 * One shared object per distinct endpoint metadata within a load assignment: istiod gives every
 * endpoint of a workload the same metadata (tlsMode, workload name), and at mesh size (100,000
 * endpoints) a copy per endpoint is tens of megabytes. Metadata is read-only config.
 */
type MetadataInterner = Map<string, Readonly<Record<string, unknown>>>;

function internMetadata(seen: MetadataInterner, m: Readonly<Record<string, unknown>>): Readonly<Record<string, unknown>> {
  let any = false;
  for (const _ in m) {
    any = true;
    break;
  }
  if (!any) return EMPTY_METADATA;
  const key = JSON.stringify(m);
  const prev = seen.get(key);
  if (prev !== undefined) return prev;
  seen.set(key, m);
  return m;
}

const EMPTY_METADATA: Readonly<Record<string, unknown>> = Object.freeze({});

function decodeLbEndpoint(r: Reader, mode: AddressMode, seen?: MetadataInterner): EndpointConfig | undefined {
  r.unsupported('endpoint_name', 'endpoint_name (named endpoints)');
  if (!r.has('endpoint')) r.problem('endpoint is required', 'endpoint');
  const ep = r.sub('endpoint', 'Endpoint', (e) => {
    if (!e.has('address')) e.problem('address is required', 'address');
    const address = e.sub('address', 'Address', (a) => decodeEndpointAddress(a, mode));
    const hostname = e.str('hostname');
    e.unsupported('additional_addresses');
    return address ? { address, hostname } : undefined;
  });
  const healthStatus: HealthStatus = r.enum('health_status', HEALTH_STATUSES, 'UNKNOWN');
  const decoded = decodeMetadata(r);
  const metadata = seen === undefined ? decoded : internMetadata(seen, decoded);
  const loadBalancingWeight = r.uint32('load_balancing_weight', 1, { min: 1 });
  // A plain literal, not a spread of ep: V8 gave every spread copy a map of its own (measured:
  // 100,000 endpoints, 100,000 maps and descriptor arrays, ~20 MB).
  return ep ? { address: ep.address, hostname: ep.hostname, healthStatus, loadBalancingWeight, metadata } : undefined;
}

function decodeEndpointAddress(r: Reader, mode: AddressMode): SocketAddress | undefined {
  if (mode !== 'static') return decodeAddress(r, mode);
  // STATIC: same as 'ip', with a message that says what to do instead.
  const raw = r.raw.socket_address ?? r.raw.socketAddress;
  const host = isObject(raw) ? raw.address : undefined;
  if (typeof host === 'string' && host !== '' && isIP(host) === 0) {
    r.diag.problem(
      `${r.at('socket_address')}.address`,
      `'${host}' is not an IP address (STATIC clusters need IP addresses; use STRICT_DNS or LOGICAL_DNS for hostnames)`,
    );
    r.get('socket_address');
    return undefined;
  }
  return decodeAddress(r, 'ip');
}

function decodeLoadAssignment(r: Reader, mode: AddressMode, policy?: { overprovisioningFactor?: number }): LocalityEndpointsConfig[] {
  r.requiredStr('cluster_name');
  r.unsupported('named_endpoints');
  r.sub('policy', 'ClusterLoadAssignmentPolicy', (p) => {
    const f = p.optUint32('overprovisioning_factor', { min: 1 });
    if (f !== undefined && policy !== undefined) policy.overprovisioningFactor = f;
  });
  const seen: MetadataInterner = new Map();
  return r.objects('endpoints', 'LocalityLbEndpoints', (le) => {
    const locality = le.sub('locality', 'Locality', (l) => ({ region: l.str('region'), zone: l.str('zone'), subZone: l.str('sub_zone') })) ?? {
      region: '',
      zone: '',
      subZone: '',
    };
    const endpoints = le.objects('lb_endpoints', 'LbEndpoint', (lb) => decodeLbEndpoint(lb, mode, seen));
    le.unsupported('leds_cluster_locality_config', 'leds_cluster_locality_config (LEDS)');
    return {
      locality,
      priority: le.uint32('priority', 0, { max: 128 }),
      loadBalancingWeight: le.uint32('load_balancing_weight', 0, { min: 1 }),
      endpoints,
    };
  });
}

function decodeThresholds(r: Reader): CircuitBreakerThresholds {
  const retryBudget = r.sub('retry_budget', 'RetryBudget', (b) => ({
    budgetPercent: b.sub('budget_percent', 'Percent', (p) => p.num('value', 0, { min: 0, max: 100 })) ?? 20,
    minRetryConcurrency: b.uint32('min_retry_concurrency', 3),
  }));
  return {
    priority: r.enum('priority', ['DEFAULT', 'HIGH'], 'DEFAULT'),
    maxConnections: r.uint32('max_connections', 1024),
    maxPendingRequests: r.uint32('max_pending_requests', 1024),
    maxRequests: r.uint32('max_requests', 1024),
    maxRetries: r.uint32('max_retries', 3),
    ...(retryBudget !== undefined ? { retryBudget } : {}),
    trackRemaining: r.bool('track_remaining', false),
  };
}

/** Always one DEFAULT and one HIGH entry (Envoy's defaults when not configured); the first entry per priority wins. */
function decodeCircuitBreakers(r: Reader): CircuitBreakerThresholds[] {
  const given = r.sub('circuit_breakers', 'CircuitBreakers', (cb) => cb.objects('thresholds', 'Thresholds', decodeThresholds)) ?? [];
  const out: CircuitBreakerThresholds[] = [];
  for (const priority of ['DEFAULT', 'HIGH'] as const) {
    const matching = given.filter((t) => t.priority === priority);
    if (matching.length > 1) r.warn(`more than one ${priority} threshold: the first one applies`, 'circuit_breakers');
    out.push(
      matching[0] ?? { priority, maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3, trackRemaining: false },
    );
  }
  return out;
}

function decodeOutlierDetection(r: Reader): OutlierDetectionConfig {
  const pct = { max: 100 };
  const baseEjectionTimeMs = r.duration('base_ejection_time', 30_000, { positive: true });
  const maxEjectionTimeMs = r.optDuration('max_ejection_time', { positive: true });
  return {
    consecutive5xx: r.uint32('consecutive_5xx', 5),
    consecutiveGatewayFailure: r.uint32('consecutive_gateway_failure', 5),
    consecutiveLocalOriginFailure: r.uint32('consecutive_local_origin_failure', 5),
    intervalMs: r.duration('interval', 10_000, { positive: true }),
    baseEjectionTimeMs,
    // Envoy: 300 s, or base_ejection_time when that is larger.
    maxEjectionTimeMs: maxEjectionTimeMs ?? Math.max(300_000, baseEjectionTimeMs),
    maxEjectionPercent: r.uint32('max_ejection_percent', 10, pct),
    enforcingConsecutive5xx: r.uint32('enforcing_consecutive_5xx', 100, pct),
    enforcingConsecutiveGatewayFailure: r.uint32('enforcing_consecutive_gateway_failure', 0, pct),
    enforcingConsecutiveLocalOriginFailure: r.uint32('enforcing_consecutive_local_origin_failure', 100, pct),
    enforcingSuccessRate: r.uint32('enforcing_success_rate', 100, pct),
    successRateMinimumHosts: r.uint32('success_rate_minimum_hosts', 5),
    successRateRequestVolume: r.uint32('success_rate_request_volume', 100),
    successRateStdevFactor: r.uint32('success_rate_stdev_factor', 1900),
    failurePercentageThreshold: r.uint32('failure_percentage_threshold', 85, pct),
    enforcingFailurePercentage: r.uint32('enforcing_failure_percentage', 0, pct),
    failurePercentageMinimumHosts: r.uint32('failure_percentage_minimum_hosts', 5),
    failurePercentageRequestVolume: r.uint32('failure_percentage_request_volume', 50),
    splitExternalLocalOriginErrors: r.bool('split_external_local_origin_errors', false),
  };
}

interface UpstreamProtocol {
  protocol: ClusterConfig['protocol'];
  http2: Http2Options;
  common?: CommonHttpOptions;
}

const LEGACY_PROTOCOL_FIELDS = ['http2_protocol_options', 'http_protocol_options', 'common_http_protocol_options', 'protocol_selection'];

function decodeUpstreamProtocol(r: Reader, hasTls: boolean): UpstreamProtocol {
  const out: UpstreamProtocol = { protocol: 'HTTP1', http2: DEFAULT_HTTP2 };
  const legacy = LEGACY_PROTOCOL_FIELDS.filter((f) => r.has(f));
  const h2 = r.sub('http2_protocol_options', 'Http2ProtocolOptions', decodeHttp2Options);
  if (h2) {
    out.protocol = 'HTTP2';
    out.http2 = h2;
  }
  r.sub('http_protocol_options', 'Http1ProtocolOptions', decodeHttp1Options);
  out.common = r.sub('common_http_protocol_options', 'HttpProtocolOptions', decodeCommonHttpOptions);
  if (r.enum('protocol_selection', ['USE_CONFIGURED_PROTOCOL', 'USE_DOWNSTREAM_PROTOCOL'], 'USE_CONFIGURED_PROTOCOL') === 'USE_DOWNSTREAM_PROTOCOL') {
    out.protocol = 'USE_DOWNSTREAM';
  }
  for (const { key, value, path } of r.map('typed_extension_protocol_options')) {
    const typed = readAny(r.diag, path, value);
    if (!typed) continue;
    if (typed.typeName === TYPE.httpProtocolOptions) {
      if (legacy.length > 0) r.diag.problem(path, `cannot be combined with the deprecated cluster fields ${legacy.join(', ')}`);
      const o = typed.reader.retype('UpstreamHttpProtocolOptions');
      decodeHttpProtocolOptions(o, out, hasTls);
      o.done();
    } else if (typed.typeName === TYPE.tcpProtocolOptions) {
      r.diag.warn(path, 'ignored: TCP protocol options (idle_timeout) are not applied');
    } else {
      r.diag.problem(path, `unsupported protocol options '${key}' (@type ${typed.typeName})`);
    }
  }
  return out;
}

function decodeHttpProtocolOptions(o: Reader, out: UpstreamProtocol, hasTls: boolean): void {
  const kind = o.oneof(['explicit_http_config', 'use_downstream_protocol_config', 'auto_config'], true);
  if (kind === 'explicit_http_config') {
    o.sub('explicit_http_config', 'ExplicitHttpConfig', (e) => {
      const k = e.oneof(['http_protocol_options', 'http2_protocol_options', 'http3_protocol_options'], true);
      if (k === 'http_protocol_options') {
        e.sub('http_protocol_options', 'Http1ProtocolOptions', decodeHttp1Options);
        out.protocol = 'HTTP1';
      } else if (k === 'http2_protocol_options') {
        out.protocol = 'HTTP2';
        out.http2 = e.sub('http2_protocol_options', 'Http2ProtocolOptions', decodeHttp2Options) ?? DEFAULT_HTTP2;
      } else if (k === 'http3_protocol_options') {
        e.problem('HTTP/3 upstreams are not supported by keel', 'http3_protocol_options');
      }
    });
  } else if (kind === 'use_downstream_protocol_config') {
    o.sub('use_downstream_protocol_config', 'UseDownstreamHttpConfig', (u) => {
      u.sub('http_protocol_options', 'Http1ProtocolOptions', decodeHttp1Options);
      out.http2 = u.sub('http2_protocol_options', 'Http2ProtocolOptions', decodeHttp2Options) ?? DEFAULT_HTTP2;
      u.unsupported('http3_protocol_options', 'HTTP/3 upstreams');
      out.protocol = 'USE_DOWNSTREAM';
    });
  } else if (kind === 'auto_config') {
    o.sub('auto_config', 'AutoHttpConfig', (a) => {
      a.sub('http_protocol_options', 'Http1ProtocolOptions', decodeHttp1Options);
      out.http2 = a.sub('http2_protocol_options', 'Http2ProtocolOptions', decodeHttp2Options) ?? DEFAULT_HTTP2;
      a.unsupported('http3_protocol_options', 'HTTP/3 upstreams');
      a.unsupported('alternate_protocols_cache_options');
      out.protocol = 'HTTP1';
      if (hasTls) a.warn('keel does not negotiate the upstream protocol with ALPN yet: HTTP/1.1 is used');
    });
  }
  const common = o.sub('common_http_protocol_options', 'HttpProtocolOptions', decodeCommonHttpOptions);
  if (common) out.common = common;
  o.unsupported('http_filters', 'upstream HTTP filters');
}

function decodeSlowStart(r: Reader): SlowStartConfig | undefined {
  const windowMs = r.duration('slow_start_window', 0);
  const aggression = r.sub('aggression', 'RuntimeDouble', (a) => {
    a.str('runtime_key');
    return a.num('default_value', 1, { min: 0 });
  });
  if (aggression !== undefined && aggression <= 0) r.problem('aggression must be greater than 0', 'aggression');
  const minWeightPercent = r.sub('min_weight_percent', 'Percent', (p) => p.num('value', 10, { min: 0, max: 100 })) ?? 10;
  return windowMs > 0 ? { windowMs, aggression: aggression ?? 1, minWeightPercent } : undefined;
}

/** [start, end) status ranges (Int64Range), each within 100..599. */
function statusRanges(r: Reader, field: string): [number, number][] {
  return r.objects(field, 'Int64Range', (g) => {
    const start = g.int64('start', 0);
    const end = g.int64('end', 0);
    if (start < 100 || end > 600 || start >= end) {
      g.problem(`status range [${start}, ${end}) must be within [100, 600) and not empty`);
      return undefined;
    }
    return [start, end] as [number, number];
  });
}

function decodeHealthCheck(r: Reader): HealthCheckConfig | undefined {
  for (const f of ['timeout', 'interval', 'unhealthy_threshold', 'healthy_threshold']) if (!r.has(f)) r.problem(`${f} is required`, f);
  const timeoutMs = r.duration('timeout', 1000, { positive: true });
  const intervalMs = r.duration('interval', 10_000, { positive: true });
  const kind = r.oneof(['http_health_check', 'tcp_health_check', 'grpc_health_check', 'custom_health_check'], true);
  let http: HealthCheckConfig['http'];
  let tcp = false;
  if (kind === 'http_health_check') {
    http = r.sub('http_health_check', 'HttpHealthCheck', (h) => {
      const path = h.requiredStr('path');
      if (path !== '' && !path.startsWith('/')) h.problem('path must start with /', 'path');
      const host = h.str('host');
      if (host !== '') checkHeaderValue(h, 'host', host);
      h.unsupported('send', 'send (payload health checks)');
      h.unsupported('receive', 'receive (payload health checks)');
      h.unsupported('service_name_matcher');
      const codec = h.enum('codec_client_type', ['HTTP1', 'HTTP2', 'HTTP3'], 'HTTP1');
      if (codec !== 'HTTP1') h.problem(`codec_client_type ${codec} is not supported for health checks by keel (HTTP1 only)`, 'codec_client_type');
      const method = h.enum('method', ['METHOD_UNSPECIFIED', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'], 'METHOD_UNSPECIFIED');
      if (method === 'CONNECT') h.problem('CONNECT is not allowed for health checks', 'method');
      const expected = statusRanges(h, 'expected_statuses');
      return {
        host,
        path,
        method: method === 'METHOD_UNSPECIFIED' ? 'GET' : method,
        expectedStatuses: expected.length > 0 ? expected : [[200, 201] as const],
        retriableStatuses: statusRanges(h, 'retriable_statuses'),
        requestHeadersToAdd: h.objects('request_headers_to_add', 'HeaderValueOption', decodeHeaderValueOption),
        requestHeadersToRemove: headersToRemove(h, 'request_headers_to_remove'),
      };
    });
  } else if (kind === 'tcp_health_check') {
    r.sub('tcp_health_check', 'TcpHealthCheck', (t) => {
      t.unsupported('send', 'send (payload health checks)');
      t.unsupported('receive', 'receive (payload health checks)');
      t.unsupported('proxy_protocol_config');
    });
    tcp = true;
  } else if (kind !== undefined) {
    r.problem(`${kind} is not supported by keel (http_health_check and tcp_health_check are)`, kind);
  }
  const jitterPct = r.uint32('interval_jitter_percent', 0, { max: 100 });
  const altPort = r.optUint32('alt_port', { min: 1, max: 65535 });
  const out: HealthCheckConfig = {
    timeoutMs,
    intervalMs,
    initialJitterMs: r.duration('initial_jitter', 0),
    intervalJitterMs: r.duration('interval_jitter', 0),
    intervalJitterPercent: jitterPct,
    unhealthyThreshold: r.uint32('unhealthy_threshold', 1, { min: 1 }),
    healthyThreshold: r.uint32('healthy_threshold', 1, { min: 1 }),
    noTrafficIntervalMs: r.duration('no_traffic_interval', 60_000, { positive: true }),
    ...optMs(r, 'no_traffic_healthy_interval', 'noTrafficHealthyIntervalMs'),
    ...optMs(r, 'unhealthy_interval', 'unhealthyIntervalMs'),
    ...optMs(r, 'unhealthy_edge_interval', 'unhealthyEdgeIntervalMs'),
    ...optMs(r, 'healthy_edge_interval', 'healthyEdgeIntervalMs'),
    ...(altPort !== undefined ? { altPort } : {}),
    reuseConnection: r.bool('reuse_connection', true),
    ...(http !== undefined ? { http } : {}),
    ...(tcp ? { tcp: true as const } : {}),
  };
  return http !== undefined || tcp ? out : undefined;
}

function optMs<K extends string>(r: Reader, field: string, key: K): { [P in K]?: number } {
  const v = r.optDuration(field, { positive: true });
  return (v === undefined ? {} : { [key]: v }) as { [P in K]?: number };
}

function decodeCluster(ctx: Ctx, r: Reader): ClusterConfig | undefined {
  const name = r.requiredStr('name');
  const typeKind = r.oneof(['type', 'cluster_type'], false);
  if (typeKind === 'cluster_type') r.problem('custom cluster types (cluster_type) are not supported by keel', 'cluster_type');
  const type = r.enum('type', CLUSTER_TYPES, 'STATIC');
  const connectTimeoutMs = r.duration('connect_timeout', 5000, { positive: true });
  const lbPolicy = r.enum('lb_policy', LB_POLICIES, 'ROUND_ROBIN', SUPPORTED_LB);
  if (type === 'ORIGINAL_DST' && r.has('lb_policy') && lbPolicy !== 'CLUSTER_PROVIDED') {
    r.problem(`lb_policy ${lbPolicy} is not valid for cluster type ORIGINAL_DST (only CLUSTER_PROVIDED is allowed)`, 'lb_policy');
  } else if (type !== 'ORIGINAL_DST' && lbPolicy === 'CLUSTER_PROVIDED') {
    r.problem(`lb_policy CLUSTER_PROVIDED is not valid for cluster type ${type}`, 'lb_policy');
  }
  r.unsupported('load_balancing_policy');
  r.unsupported('lb_subset_config');
  const lbOptions: { -readonly [K in keyof ClusterConfig['lbOptions']]: number } = {};
  let slowStart: SlowStartConfig | undefined;
  r.sub('round_robin_lb_config', 'RoundRobinLbConfig', (rr) => {
    slowStart = rr.sub('slow_start_config', 'SlowStartConfig', decodeSlowStart);
  });
  r.sub('least_request_lb_config', 'LeastRequestLbConfig', (l) => {
    slowStart = l.sub('slow_start_config', 'SlowStartConfig', decodeSlowStart);
    l.unsupported('selection_method');
    const choice = l.optUint32('choice_count', { min: 2 });
    if (choice !== undefined) lbOptions.choiceCount = choice;
    l.sub('active_request_bias', 'RuntimeDouble', (b) => {
      lbOptions.activeRequestBias = b.num('default_value', 1, { min: 0 });
      b.str('runtime_key');
    });
  });
  r.sub('ring_hash_lb_config', 'RingHashLbConfig', (h) => {
    const min = h.optUint32('minimum_ring_size', { min: 1, max: 8388608 });
    const max = h.optUint32('maximum_ring_size', { min: 1, max: 8388608 });
    if (min !== undefined) lbOptions.minimumRingSize = min;
    if (max !== undefined) lbOptions.maximumRingSize = max;
    if (min !== undefined && max !== undefined && min > max) h.problem('minimum_ring_size is larger than maximum_ring_size', 'minimum_ring_size');
    h.enum('hash_function', ['XX_HASH', 'MURMUR_HASH_2'], 'XX_HASH');
  });
  r.sub('maglev_lb_config', 'MaglevLbConfig', (m) => {
    const size = m.optUint32('table_size', { min: 1, max: 5000011 });
    if (size !== undefined) lbOptions.maglevTableSize = size;
  });

  const mode: AddressMode = type === 'STRICT_DNS' || type === 'LOGICAL_DNS' ? 'host' : type === 'STATIC' ? 'static' : 'ip';
  const laPolicy: { overprovisioningFactor?: number } = {};
  const endpoints = r.sub('load_assignment', 'ClusterLoadAssignment', (la) => decodeLoadAssignment(la, mode, laPolicy)) ?? [];
  if (type === 'ORIGINAL_DST' && r.has('load_assignment')) r.problem('ORIGINAL_DST clusters must have no load assignment configured', 'load_assignment');
  if (type === 'LOGICAL_DNS') {
    const count = endpoints.reduce((n, l) => n + l.endpoints.length, 0);
    if (endpoints.length !== 1 || count !== 1) {
      r.problem('LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint', 'load_assignment');
    }
  }
  let edsInitialFetchTimeoutMs: number | undefined;
  const eds = r.sub('eds_cluster_config', 'EdsClusterConfig', (e) => {
    const src = e.sub('eds_config', 'ConfigSource', decodeConfigSource);
    if (src?.kind === 'path') e.problem('endpoints from path_config_source are not supported by keel (use ads: {})', 'eds_config');
    if (src) edsInitialFetchTimeoutMs = src.initialFetchTimeoutMs;
    return e.str('service_name');
  });
  if (type === 'EDS' && eds === undefined) r.problem('EDS clusters need eds_cluster_config', 'eds_cluster_config');

  const socket = r.sub('transport_socket', 'TransportSocket', (t) => decodeTransportSocket(t, 'upstream', (x) => decodeUpstreamTls(ctx, x)));
  const tls = socket?.tls;
  const transportSocketMatches = r.objects('transport_socket_matches', 'TransportSocketMatch', (m) => {
    const n = m.requiredStr('name');
    const match = m.struct('match');
    if (!m.has('transport_socket')) m.problem('transport_socket is required', 'transport_socket');
    const ts = m.sub('transport_socket', 'TransportSocket', (t) => decodeTransportSocket(t, 'upstream', (x) => decodeUpstreamTls(ctx, x)));
    if (n === '' || ts === undefined) return undefined;
    return { name: n, match, ...(ts.tls !== undefined ? { tls: ts.tls } : {}) };
  });

  const proto = decodeUpstreamProtocol(r, tls !== undefined);
  warnUnappliedUpstreamOptions(r, proto.common);
  const legacyMaxRequests = r.optUint32('max_requests_per_connection');
  const circuitBreakers = decodeCircuitBreakers(r);
  const outlierDetection = r.sub('outlier_detection', 'OutlierDetection', decodeOutlierDetection);
  let localityWeighted = false;
  const healthyPanicThreshold =
    r.sub('common_lb_config', 'CommonLbConfig', (c) => {
      if (c.has('locality_weighted_lb_config')) localityWeighted = c.sub('locality_weighted_lb_config', 'LocalityWeightedLbConfig', () => true) ?? false;
      return c.sub('healthy_panic_threshold', 'Percent', (p) => p.num('value', 0, { min: 0, max: 100 }));
    }) ?? 50;
  const healthChecks = r.objects('health_checks', 'HealthCheck', decodeHealthCheck);
  if (healthChecks.length > 1) r.warn('only the first health check is run', 'health_checks');
  const dnsRefreshRateMs = r.duration('dns_refresh_rate', 5000);
  if (dnsRefreshRateMs <= 1) r.problem('must be greater than 1ms', 'dns_refresh_rate');
  const upstreamBindSource = r.sub('upstream_bind_config', 'BindConfig', (b) => {
    b.unsupported('extra_source_addresses');
    b.unsupported('additional_source_addresses');
    b.unsupported('local_address_selector');
    if (b.bool('freebind', false)) b.warn('ignored: IP_FREEBIND is not available to Node.js sockets', 'freebind');
    if (b.has('socket_options')) b.warn('ignored: socket options are not applied', 'socket_options');
    return b.sub('source_address', 'SocketAddress', (s) => decodeSocketAddress(s, 'ip'));
  });

  const cluster: ClusterConfig = {
    name,
    source: r.raw,
    type,
    connectTimeoutMs,
    lbPolicy: type === 'ORIGINAL_DST' ? 'CLUSTER_PROVIDED' : lbPolicy,
    lbOptions,
    endpoints,
    ...(type === 'EDS' ? { edsServiceName: eds || name } : {}),
    ...(type === 'EDS' && edsInitialFetchTimeoutMs !== undefined ? { edsInitialFetchTimeoutMs } : {}),
    protocol: proto.protocol,
    http2: proto.http2,
    idleTimeoutMs: proto.common?.idleTimeoutMs ?? 3_600_000,
    maxRequestsPerConnection: proto.common?.maxRequestsPerConnection || legacyMaxRequests || 0,
    maxConnectionDurationMs: proto.common?.maxConnectionDurationMs ?? 0,
    circuitBreakers,
    ...(outlierDetection !== undefined ? { outlierDetection } : {}),
    healthyPanicThreshold,
    ...(tls !== undefined ? { tls } : {}),
    transportSocketMatches,
    dnsRefreshRateMs,
    dnsLookupFamily: r.enum('dns_lookup_family', ['AUTO', 'V4_ONLY', 'V6_ONLY', 'V4_PREFERRED', 'ALL'], 'AUTO'),
    respectDnsTtl: r.bool('respect_dns_ttl', false),
    perConnectionBufferLimitBytes: r.uint32('per_connection_buffer_limit_bytes', MIB),
    ...(upstreamBindSource !== undefined ? { upstreamBindSource } : {}),
    metadata: decodeMetadata(r),
    ...(healthChecks.length > 0 ? { healthChecks } : {}),
    ...(slowStart !== undefined ? { slowStart } : {}),
    ...(localityWeighted ? { localityWeighted } : {}),
    ...(laPolicy.overprovisioningFactor !== undefined ? { overprovisioningFactor: laPolicy.overprovisioningFactor } : {}),
  };
  return name === '' ? undefined : cluster;
}

// ---------------------------------------------------------------------------------------------
// Static secrets (static_resources.secrets), referenced by SdsSecretConfig without sds_config

function decodeStaticSecrets(diag: Diagnostics, sr: Reader): Map<string, StaticSecret> {
  const out = new Map<string, StaticSecret>();
  const check = uniqueNames(diag, 'secret name');
  sr.objects('secrets', 'Secret', (s) => {
    const name = s.requiredStr('name');
    const kind = s.oneof(['tls_certificate', 'session_ticket_keys', 'validation_context', 'generic_secret'], true);
    let secret: StaticSecret | undefined;
    if (kind === 'tls_certificate') {
      const certificate = s.sub('tls_certificate', 'TlsCertificate', decodeTlsCertificate);
      if (certificate) secret = { certificate };
    } else if (kind === 'validation_context') {
      secret = { validation: s.sub('validation_context', 'CertificateValidationContext', decodeValidationContext) };
    } else if (kind !== undefined) {
      s.problem(`${kind} secrets are not supported by keel`, kind);
    }
    if (name !== '') {
      check(s.path, name);
      if (secret) out.set(name, secret);
    }
    return undefined;
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Standalone RouteConfiguration (route-check's config file)

/**
 * Decodes a standalone envoy.config.route.v3.RouteConfiguration, as router_check_tool reads it:
 * there are no clusters, so validate_clusters defaults to false. Throws ConfigError.
 */
export function decodeRouteConfiguration(raw: unknown): { routes: RouteTableConfig; warnings: string[] } {
  const diag = new Diagnostics(IGNORED_FIELDS);
  if (!isObject(raw)) {
    diag.problem('', `the route configuration must be an object, got ${raw === null ? 'null' : Array.isArray(raw) ? 'a list' : typeof raw}`);
    throw new ConfigError(diag.problems);
  }
  const r = new Reader(diag, '', raw, 'RouteConfiguration');
  const routes = decodeRouteTable({ diag, runtime: {}, secrets: new Map(), clusterNames: new Set() }, r, false);
  r.done();
  if (diag.problems.length > 0) throw new ConfigError(diag.problems, diag.warnings);
  return { routes, warnings: diag.warnings };
}

/** Parses a RouteConfiguration from YAML or JSON text (JSON when it starts with `{`). Throws ConfigError. */
export function parseRouteConfigurationText(text: string, sourceName: string, format?: 'json' | 'yaml'): { routes: RouteTableConfig; warnings: string[] } {
  const fmt = format ?? (/^\s*\{/.test(text) ? 'json' : 'yaml');
  return decodeRouteConfiguration(fmt === 'json' ? parseJson(text, sourceName) : parseYaml(text, sourceName));
}

// ---------------------------------------------------------------------------------------------
// dynamic_resources and config sources (the xDS client in src/xds/ acts on them)

const DEFAULT_INITIAL_FETCH_TIMEOUT_MS = 15_000;

/** A ConfigSource for CDS/LDS: `ads: {}` or path_config_source (a file watched on disk). */
function decodeConfigSource(r: Reader): ConfigSourceConfig | undefined {
  const kind = r.oneof(['path', 'path_config_source', 'api_config_source', 'ads', 'self'], true);
  r.enum('resource_api_version', ['AUTO', 'V2', 'V3'], 'AUTO', ['AUTO', 'V3']);
  r.get('authorities');
  const initialFetchTimeoutMs = r.duration('initial_fetch_timeout', DEFAULT_INITIAL_FETCH_TIMEOUT_MS);
  if (kind === 'ads') {
    r.sub('ads', 'AggregatedConfigSource', () => undefined);
    return { kind: 'ads', initialFetchTimeoutMs };
  }
  if (kind === 'path_config_source' || kind === 'path') {
    const path =
      kind === 'path'
        ? r.requiredStr('path')
        : r.sub('path_config_source', 'PathConfigSource', (p) => {
            p.get('watched_directory');
            return p.requiredStr('path');
          });
    return path ? { kind: 'path', path, initialFetchTimeoutMs } : undefined;
  }
  if (kind !== undefined) r.problem(`${kind} is not supported by keel (use ads: {} with ads_config, or path_config_source)`, kind);
  return undefined;
}

function decodeDynamicResources(r: Reader): DynamicResourcesConfig {
  const ads = r.sub('ads_config', 'ApiConfigSource', (a) => {
    const apiType = a.enum(
      'api_type',
      ['DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE', 'REST', 'GRPC', 'DELTA_GRPC', 'AGGREGATED_GRPC', 'AGGREGATED_DELTA_GRPC'],
      'GRPC',
      ['GRPC', 'DELTA_GRPC', 'AGGREGATED_GRPC', 'AGGREGATED_DELTA_GRPC'],
    );
    a.enum('transport_api_version', ['AUTO', 'V2', 'V3'], 'AUTO', ['AUTO', 'V3']);
    a.unsupported('cluster_names', 'cluster_names (REST config sources)');
    a.unsupported('config_validators');
    a.get('refresh_delay');
    a.get('request_timeout');
    if (a.has('rate_limit_settings')) a.warn('ignored: xDS request rate limiting is not implemented', 'rate_limit_settings');
    const setNodeOnFirstMessageOnly = a.bool('set_node_on_first_message_only', false);
    const services = a.objects('grpc_services', 'GrpcService', (g) => {
      const kind = g.oneof(['envoy_grpc', 'google_grpc'], true);
      if (kind === 'google_grpc') g.problem('google_grpc is not supported by keel (use envoy_grpc with a static cluster)', 'google_grpc');
      const clusterName = g.sub('envoy_grpc', 'EnvoyGrpc', (e) => {
        e.get('authority');
        e.get('retry_policy');
        e.get('max_receive_message_length');
        e.get('skip_envoy_headers');
        return e.requiredStr('cluster_name');
      });
      g.get('timeout');
      g.get('retry_policy');
      const initialMetadata = g.objects('initial_metadata', 'HeaderValue', (h) => {
        const key = h.requiredStr('key').toLowerCase();
        const value = h.str('value');
        h.get('raw_value');
        return key === '' ? undefined : { key, value };
      });
      return clusterName ? { clusterName, initialMetadata } : undefined;
    });
    if (services.length !== 1) a.problem('ads_config needs exactly one grpc_services entry', 'grpc_services');
    const first = services[0];
    if (!first) return undefined;
    return {
      apiType: apiType === 'DELTA_GRPC' || apiType === 'AGGREGATED_DELTA_GRPC' ? ('DELTA_GRPC' as const) : ('GRPC' as const),
      clusterName: first.clusterName,
      initialMetadata: first.initialMetadata,
      setNodeOnFirstMessageOnly,
    };
  });
  const cds = r.sub('cds_config', 'ConfigSource', decodeConfigSource);
  const lds = r.sub('lds_config', 'ConfigSource', decodeConfigSource);
  r.unsupported('cds_resources_locator', 'cds_resources_locator (xdstp)');
  r.unsupported('lds_resources_locator', 'lds_resources_locator (xdstp)');
  if (r.has('default_config_source')) r.warn('ignored: default_config_source (xdstp) is not used', 'default_config_source');
  r.get('xds_config_tracker_extension');
  r.get('xds_delegate_extension');
  if ((cds?.kind === 'ads' || lds?.kind === 'ads') && ads === undefined && !r.has('ads_config')) {
    r.problem('cds_config/lds_config use ads but there is no ads_config');
  }
  return { ...(ads ? { ads } : {}), ...(cds ? { cds } : {}), ...(lds ? { lds } : {}) };
}

// ---------------------------------------------------------------------------------------------
// Single xDS resources (CDS, LDS, RDS, EDS): the same decoders the bootstrap uses, one resource at a
// time, returning every problem instead of throwing (the xDS client NACKs with them).

/** One decoded xDS resource: its value when it is valid, and every problem and warning found. */
export interface ResourceDecodeResult<T> {
  readonly value?: T;
  readonly problems: readonly ConfigProblem[];
  readonly warnings: readonly string[];
}

/** What a resource is checked against: known cluster names (inline routes with validate_clusters) and runtime. */
export interface ResourceContext {
  readonly clusterNames?: ReadonlySet<string>;
  readonly runtime?: RuntimeValues;
}

function decodeOne<T>(raw: unknown, message: string, what: string, opts: ResourceContext, fn: (ctx: Ctx, r: Reader) => T | undefined): ResourceDecodeResult<T> {
  const diag = new Diagnostics(IGNORED_FIELDS);
  if (!isObject(raw)) {
    diag.problem('', `the ${what} must be an object, got ${raw === null ? 'null' : Array.isArray(raw) ? 'a list' : typeof raw}`);
    return { problems: diag.problems, warnings: diag.warnings };
  }
  const rest: Record<string, unknown> = {};
  for (const k of Object.keys(raw)) if (k !== '@type') rest[k] = raw[k];
  const r = new Reader(diag, '', rest, message);
  const ctx: Ctx = { diag, runtime: opts.runtime ?? {}, secrets: new Map(), clusterNames: opts.clusterNames ?? new Set() };
  const value = fn(ctx, r);
  r.done();
  if (diag.problems.length > 0 || value === undefined) {
    if (diag.problems.length === 0) diag.problem('', `invalid ${what}`);
    return { problems: diag.problems, warnings: diag.warnings };
  }
  return { value, problems: [], warnings: diag.warnings };
}

/** envoy.config.cluster.v3.Cluster (CDS). */
export function decodeClusterResource(raw: unknown, opts: ResourceContext = {}): ResourceDecodeResult<ClusterConfig> {
  return decodeOne(raw, 'Cluster', 'cluster', opts, (ctx, r) => {
    if (!r.has('name')) r.problem('name is required', 'name');
    return decodeCluster(ctx, r);
  });
}

/** envoy.config.listener.v3.Listener (LDS). */
export function decodeListenerResource(raw: unknown, opts: ResourceContext = {}): ResourceDecodeResult<ListenerConfig> {
  return decodeOne(raw, 'Listener', 'listener', opts, (ctx, r) => {
    if (!r.has('name')) r.problem('name is required', 'name');
    return decodeListener(ctx, r, 0);
  });
}

/** envoy.config.route.v3.RouteConfiguration (RDS): validate_clusters defaults to false, as for Envoy's RDS. */
export function decodeRouteConfigurationResource(raw: unknown, opts: ResourceContext = {}): ResourceDecodeResult<RouteTableConfig> {
  return decodeOne(raw, 'RouteConfiguration', 'route configuration', opts, (ctx, r) => decodeRouteTable(ctx, r, false));
}

/** A decoded envoy.config.endpoint.v3.ClusterLoadAssignment (EDS). */
export interface ClusterLoadAssignmentConfig {
  readonly clusterName: string;
  readonly endpoints: readonly LocalityEndpointsConfig[];
}

/** envoy.config.endpoint.v3.ClusterLoadAssignment (EDS): endpoints must be IP addresses. */
export function decodeClusterLoadAssignment(raw: unknown, opts: ResourceContext = {}): ResourceDecodeResult<ClusterLoadAssignmentConfig> {
  return decodeOne(raw, 'ClusterLoadAssignment', 'cluster load assignment', opts, (_ctx, r) => {
    const clusterName = typeof r.raw.cluster_name === 'string' ? r.raw.cluster_name : typeof r.raw.clusterName === 'string' ? r.raw.clusterName : '';
    if (r.has('policy')) {
      r.sub('policy', 'ClusterLoadAssignmentPolicy', (p) => {
        p.get('overprovisioning_factor');
        p.get('endpoint_stale_after');
        p.get('weighted_priority_health');
        p.unsupported('drop_overloads');
      });
    }
    const endpoints = decodeLoadAssignment(r, 'ip');
    return clusterName === '' ? undefined : { clusterName, endpoints };
  });
}

/** A decoded envoy.extensions.transport_sockets.tls.v3.Secret (SDS): a certificate or trusted roots. */
export interface SecretResourceConfig {
  readonly name: string;
  readonly certificate?: TlsCertificate;
  readonly validation?: CertificateValidation;
}

/** envoy.extensions.transport_sockets.tls.v3.Secret (SDS over ADS): tls_certificate or validation_context. */
export function decodeSecretResource(raw: unknown, opts: ResourceContext = {}): ResourceDecodeResult<SecretResourceConfig> {
  return decodeOne(raw, 'Secret', 'secret', opts, (_ctx, s) => {
    const name = s.requiredStr('name');
    const kind = s.oneof(['tls_certificate', 'session_ticket_keys', 'validation_context', 'generic_secret'], true);
    if (kind === 'tls_certificate') {
      const certificate = s.sub('tls_certificate', 'TlsCertificate', decodeTlsCertificate);
      return certificate && name ? { name, certificate } : undefined;
    }
    if (kind === 'validation_context') {
      const validation = s.sub('validation_context', 'CertificateValidationContext', decodeValidationContext);
      if (validation && validation.trustedCa === undefined) s.problem('an SDS validation_context needs trusted_ca', 'validation_context');
      return validation && name ? { name, validation } : undefined;
    }
    if (kind !== undefined) s.problem(`${kind} secrets are not supported by keel`, kind);
    return undefined;
  });
}
