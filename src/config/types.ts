// Plain, readonly domain types for keel's configuration: what an Envoy v3 bootstrap (or, later, xDS)
// means once decoded and validated. Nothing here knows about YAML, JSON field spellings or protobuf;
// nothing here does work at request time. Durations are milliseconds (0 = disabled unless noted).

export interface SocketAddress {
  readonly address: string;
  readonly port: number;
  /** Unix domain socket path (Envoy `pipe.path`), when the address is a pipe. */
  readonly pipe?: string;
}

export interface NodeInfo {
  readonly id: string;
  readonly cluster: string;
  readonly metadata: Readonly<Record<string, unknown>>;
}

export interface AdminConfig {
  readonly address: SocketAddress;
}

/** Static runtime layer, flattened: `a.b.c` -> value (Envoy's layered_runtime static_layer). */
export type RuntimeValues = Readonly<Record<string, string | number | boolean>>;

export interface Bootstrap {
  readonly node: NodeInfo;
  readonly admin?: AdminConfig;
  readonly listeners: readonly ListenerConfig[];
  readonly clusters: readonly ClusterConfig[];
  readonly runtime: RuntimeValues;
  /** the bootstrap as written (Envoy JSON/YAML), for /config_dump */
  readonly source?: Readonly<Record<string, unknown>>;
  /** dynamic_resources: where CDS/LDS come from (ADS or a watched file); undefined for a static config. */
  readonly dynamicResources?: DynamicResourcesConfig;
}

/** A ConfigSource as keel honours it: the ADS stream, or a file watched on disk (path_config_source). */
export interface ConfigSourceConfig {
  readonly kind: 'ads' | 'path';
  /** path_config_source.path */
  readonly path?: string;
  /** initial_fetch_timeout: how long a resource waits for what it depends on (Envoy default 15 s; 0 = forever). */
  readonly initialFetchTimeoutMs: number;
}

/** dynamic_resources (Envoy's DynamicResources). */
export interface DynamicResourcesConfig {
  readonly ads?: {
    readonly apiType: 'GRPC' | 'DELTA_GRPC';
    /** envoy_grpc.cluster_name: a static cluster that reaches the management server */
    readonly clusterName: string;
    /** initial_metadata: extra gRPC headers on the stream (authorization, ClusterID ...) */
    readonly initialMetadata: readonly { readonly key: string; readonly value: string }[];
    readonly setNodeOnFirstMessageOnly: boolean;
  };
  readonly cds?: ConfigSourceConfig;
  readonly lds?: ConfigSourceConfig;
}

// ---------------------------------------------------------------------------------------------
// Matchers shared by routes and filters

export type StringMatcherConfig =
  | { readonly kind: 'exact' | 'prefix' | 'suffix' | 'contains'; readonly value: string; readonly ignoreCase: boolean }
  | { readonly kind: 'regex'; readonly regex: string; readonly ignoreCase: boolean };

export interface Int64Range {
  /** inclusive */
  readonly start: number;
  /** exclusive */
  readonly end: number;
}

export type HeaderMatcherConfig = {
  readonly name: string;
  readonly invert: boolean;
  readonly treatMissingAsEmpty: boolean;
} & (
  | { readonly kind: 'string'; readonly match: StringMatcherConfig }
  | { readonly kind: 'present'; readonly present: boolean }
  | { readonly kind: 'range'; readonly range: Int64Range }
);

export interface QueryParameterMatcherConfig {
  readonly name: string;
  /** absent string match and absent present => present match true */
  readonly match?: StringMatcherConfig;
  readonly present?: boolean;
}

export type ValueMatcherConfig =
  | { readonly kind: 'null' }
  | { readonly kind: 'double_exact'; readonly value: number }
  | { readonly kind: 'double_range'; readonly range: { readonly start: number; readonly end: number } }
  | { readonly kind: 'string'; readonly match: StringMatcherConfig }
  | { readonly kind: 'bool'; readonly value: boolean }
  | { readonly kind: 'present'; readonly present: boolean }
  | { readonly kind: 'list'; readonly oneOf: ValueMatcherConfig };

export interface MetadataMatcherConfig {
  readonly filter: string;
  readonly path: readonly string[];
  readonly value: ValueMatcherConfig;
  readonly invert: boolean;
}

export interface FractionalPercent {
  readonly numerator: number;
  /** 100, 10_000 or 1_000_000 */
  readonly denominator: number;
}

/** envoy.config.core.v3.RuntimeFractionalPercent: a default fraction a runtime key may override. */
export interface RuntimeFractionConfig {
  readonly defaultValue: FractionalPercent;
  /** '' when none */
  readonly runtimeKey: string;
}

// ---------------------------------------------------------------------------------------------
// Header mutation

export type AppendAction =
  | 'APPEND_IF_EXISTS_OR_ADD'
  | 'ADD_IF_ABSENT'
  | 'OVERWRITE_IF_EXISTS_OR_ADD'
  | 'OVERWRITE_IF_EXISTS';

export interface HeaderValueOption {
  readonly key: string; // lower-cased
  /** Raw value, may contain %COMMAND% substitutions (compiled by the router). */
  readonly value: string;
  readonly appendAction: AppendAction;
  readonly keepEmptyValue: boolean;
}

export interface HeaderMutations {
  readonly requestHeadersToAdd: readonly HeaderValueOption[];
  readonly requestHeadersToRemove: readonly string[]; // lower-cased
  readonly responseHeadersToAdd: readonly HeaderValueOption[];
  readonly responseHeadersToRemove: readonly string[]; // lower-cased
}

// ---------------------------------------------------------------------------------------------
// Routes

export type PathSpec =
  | { readonly kind: 'prefix'; readonly value: string }
  | { readonly kind: 'path'; readonly value: string }
  | { readonly kind: 'regex'; readonly regex: string }
  | { readonly kind: 'path_separated_prefix'; readonly value: string }
  | { readonly kind: 'connect' };

export interface RouteMatchConfig {
  readonly path: PathSpec;
  readonly caseSensitive: boolean;
  readonly headers: readonly HeaderMatcherConfig[];
  readonly queryParameters: readonly QueryParameterMatcherConfig[];
  readonly grpc: boolean;
  readonly runtimeFraction?: { readonly defaultValue: FractionalPercent; readonly runtimeKey: string };
  readonly dynamicMetadata: readonly MetadataMatcherConfig[];
  readonly tlsContext?: { readonly presented?: boolean; readonly validated?: boolean };
}

export interface WeightedClusterEntry extends HeaderMutations {
  readonly name: string; // may be '' when clusterHeader is used
  readonly clusterHeader?: string;
  readonly weight: number;
  readonly hostRewriteLiteral?: string;
}

export interface WeightedClustersConfig {
  readonly clusters: readonly WeightedClusterEntry[];
  /** Sum of weights unless the legacy total_weight was given. */
  readonly totalWeight: number;
  readonly runtimeKeyPrefix?: string;
  readonly headerName?: string; // random value taken from this header when present
}

export interface RegexRewriteConfig {
  readonly regex: string;
  readonly substitution: string;
}

/** Retry policy as Envoy models it; enforced by the router (issue: resilience). */
export interface RetryPolicyConfig {
  readonly retryOn: readonly string[];
  readonly numRetries: number;
  readonly perTryTimeoutMs: number;
  readonly perTryIdleTimeoutMs: number;
  readonly retriableStatusCodes: readonly number[];
  readonly retryBackOff?: { readonly baseIntervalMs: number; readonly maxIntervalMs: number };
  readonly hostSelectionRetryMaxAttempts: number;
  readonly retryHostPredicates: readonly string[];
  readonly retriableHeaders: readonly HeaderMatcherConfig[];
  readonly retriableRequestHeaders: readonly HeaderMatcherConfig[];
  /** rate_limited_retry_back_off: back-off taken from a response header (Retry-After, X-RateLimit-Reset) */
  readonly rateLimitedRetryBackOff?: {
    readonly resetHeaders: readonly { readonly name: string; readonly format: 'SECONDS' | 'UNIX_TIMESTAMP' }[];
    /** Envoy default 300 s */
    readonly maxIntervalMs: number;
  };
}

export interface HashPolicyConfig {
  readonly kind: 'header' | 'cookie' | 'source_ip' | 'query_parameter';
  readonly name: string;
  readonly terminal: boolean;
  /** cookie: generate the cookie when the request has none (ms; 0 = session cookie) */
  readonly cookieTtlMs?: number;
  readonly cookiePath?: string;
  /** cookie: extra attributes on the generated cookie, as `name=value` or bare `name` */
  readonly cookieAttributes?: readonly string[];
}

/** RouteAction.RequestMirrorPolicy: a fire-and-forget copy of the request to another cluster. */
export interface RequestMirrorPolicyConfig {
  /** the shadow cluster; '' when clusterHeader names it */
  readonly cluster: string;
  /** request header holding the shadow cluster's name (lower-cased) */
  readonly clusterHeader?: string;
  /** absent: every request is mirrored */
  readonly runtimeFraction?: RuntimeFractionConfig;
  /** do not append -shadow to the shadow request's :authority */
  readonly disableShadowHostSuffixAppend: boolean;
}

export interface ForwardAction {
  readonly kind: 'route';
  readonly cluster?: string;
  readonly clusterHeader?: string;
  readonly weightedClusters?: WeightedClustersConfig;
  /** 503 (Envoy default), 404 or 500 when the chosen cluster does not exist. */
  readonly clusterNotFoundResponseCode: number;
  readonly prefixRewrite?: string;
  readonly regexRewrite?: RegexRewriteConfig;
  readonly hostRewriteLiteral?: string;
  readonly autoHostRewrite: boolean;
  readonly hostRewriteHeader?: string;
  readonly hostRewritePathRegex?: RegexRewriteConfig;
  /** Route timeout; Envoy's default is 15 s; 0 disables. */
  readonly timeoutMs: number;
  readonly idleTimeoutMs?: number;
  /** route max_stream_duration.max_stream_duration (0 disables the connection manager's) */
  readonly maxStreamDurationMs?: number;
  /** max_stream_duration.grpc_timeout_header_max: a grpc-timeout header sets the stream duration (0 = uncapped) */
  readonly grpcTimeoutHeaderMaxMs?: number;
  readonly grpcTimeoutHeaderOffsetMs?: number;
  /** hedge_policy.hedge_on_per_try_timeout, when the route has a hedge_policy */
  readonly hedgeOnPerTryTimeout?: boolean;
  /** the route has a max_stream_duration message: Envoy's "new timeouts", the route `timeout` is not used */
  readonly usesMaxStreamDuration?: boolean;
  readonly retryPolicy?: RetryPolicyConfig;
  readonly hashPolicy: readonly HashPolicyConfig[];
  readonly includeVhRateLimits: boolean;
  readonly upgradeConfigs: readonly { readonly upgradeType: string; readonly enabled: boolean }[];
  /** request_mirror_policies (route level; when absent the virtual host's apply, see VirtualHostConfig) */
  readonly requestMirrorPolicies?: readonly RequestMirrorPolicyConfig[];
  /** the deprecated RouteAction.cors (also kept in the route's typedPerFilterConfig for the CORS filter) */
  readonly cors?: import('./filters/cors').CorsPolicyConfig;
}

export interface RedirectAction {
  readonly kind: 'redirect';
  readonly schemeRedirect?: string; // https_redirect => 'https'
  readonly hostRedirect?: string;
  readonly portRedirect?: number;
  readonly pathRedirect?: string;
  readonly prefixRewrite?: string;
  readonly regexRewrite?: RegexRewriteConfig;
  readonly responseCode: number; // 301 default
  readonly stripQuery: boolean;
}

export interface DirectResponseAction {
  readonly kind: 'direct_response';
  readonly status: number;
  readonly body?: string;
}

export interface NonForwardingAction {
  readonly kind: 'non_forwarding';
}

export type RouteActionConfig = ForwardAction | RedirectAction | DirectResponseAction | NonForwardingAction;

export interface RouteConfigEntry extends HeaderMutations {
  readonly name: string;
  /** decorator: the span's operation name, and whether x-envoy-decorator-operation goes upstream */
  readonly decorator?: { readonly operation: string; readonly propagate: boolean };
  /** route tracing: sampling percentages overriding the HCM's (0..100) */
  readonly tracing?: { readonly clientSamplingPct?: number; readonly randomSamplingPct?: number; readonly overallSamplingPct?: number };
  readonly match: RouteMatchConfig;
  readonly action: RouteActionConfig;
  readonly metadata: Readonly<Record<string, unknown>>;
  /** Per-filter config keyed by the HTTP filter's name, decoded by that filter's config decoder. */
  readonly typedPerFilterConfig: Readonly<Record<string, PerFilterConfig>>;
}

/** One typed_per_filter_config entry (a bare config, or envoy.config.route.v3.FilterConfig). */
export interface PerFilterConfig {
  readonly typeName: string;
  /** the owning filter's decoded per-route config (a domain type of config/filters/) */
  readonly config: unknown;
  /** FilterConfig.disabled: the filter is off for this route / virtual host */
  readonly disabled: boolean;
}

export interface VirtualClusterConfig {
  readonly name: string;
  readonly headers: readonly HeaderMatcherConfig[];
}

export interface VirtualHostConfig extends HeaderMutations {
  readonly name: string;
  readonly domains: readonly string[];
  readonly routes: readonly RouteConfigEntry[];
  readonly requireTls: 'NONE' | 'EXTERNAL_ONLY' | 'ALL';
  readonly virtualClusters: readonly VirtualClusterConfig[];
  readonly retryPolicy?: RetryPolicyConfig;
  readonly includeRequestAttemptCount: boolean;
  /** hedge_policy.hedge_on_per_try_timeout (a route's hedge_policy overrides it) */
  readonly hedgeOnPerTryTimeout?: boolean;
  readonly includeAttemptCountInResponse: boolean;
  readonly typedPerFilterConfig: Readonly<Record<string, PerFilterConfig>>;
  /**
   * request_mirror_policies for routes that set none (Envoy: the most specific non-empty list wins,
   * lists are not merged); the route table's own list is folded in here when the host has none.
   */
  readonly requestMirrorPolicies?: readonly RequestMirrorPolicyConfig[];
}

export interface RouteTableConfig extends HeaderMutations {
  readonly name: string;
  /** the resource as written (Envoy JSON/YAML, snake or camel case), for /config_dump */
  readonly source?: Readonly<Record<string, unknown>>;
  readonly virtualHosts: readonly VirtualHostConfig[];
  readonly internalOnlyHeaders: readonly string[]; // lower-cased
  readonly mostSpecificHeaderMutationsWins: boolean;
  readonly ignorePortInHostMatching: boolean;
}

// ---------------------------------------------------------------------------------------------
// HTTP connection manager

export interface HttpFilterConfig {
  readonly name: string;
  /** Fully qualified proto type, from typed_config's @type (without the type.googleapis.com/ prefix). */
  readonly typeName: string;
  /** the filter's decoded config (a domain type of config/filters/); the router's raw fields */
  readonly config: unknown;
  readonly isOptional: boolean;
  readonly disabled: boolean;
}

export type ServerHeaderTransformation = 'OVERWRITE' | 'APPEND_IF_ABSENT' | 'PASS_THROUGH';
export type HeadersWithUnderscoresAction = 'ALLOW' | 'REJECT_REQUEST' | 'DROP_HEADER';

export interface HttpConnectionManagerConfig {
  readonly kind: 'http_connection_manager';
  readonly statPrefix: string;
  readonly codecType: 'AUTO' | 'HTTP1' | 'HTTP2';
  /** Inline route table; `rdsName` is set instead when routes come from RDS (xDS). */
  readonly routeConfig?: RouteTableConfig;
  readonly rdsName?: string;
  /** rds.config_source.initial_fetch_timeout: how long the listener warms waiting for the routes (0 = forever). */
  readonly rdsInitialFetchTimeoutMs?: number;
  readonly httpFilters: readonly HttpFilterConfig[];
  readonly useRemoteAddress: boolean;
  readonly xffNumTrustedHops: number;
  readonly skipXffAppend: boolean;
  /** forward_client_cert_details: what happens to x-forwarded-client-cert (unset = Envoy's SANITIZE). */
  readonly forwardClientCertDetails?: ForwardClientCertDetails;
  /** set_current_client_cert_details: the parts of the peer certificate added, in Envoy's order. */
  readonly setCurrentClientCertDetails?: readonly ClientCertDetail[];
  readonly via?: string;
  readonly generateRequestId: boolean;
  readonly preserveExternalRequestId: boolean;
  readonly alwaysSetRequestIdInResponse: boolean;
  readonly serverName: string;
  readonly serverHeaderTransformation: ServerHeaderTransformation;
  /** Envoy default 60 KiB, max 8192 KiB */
  readonly maxRequestHeadersKb: number;
  /** Envoy default 100 */
  readonly maxHeadersCount: number;
  readonly headersWithUnderscoresAction: HeadersWithUnderscoresAction;
  /** Envoy default 5 min */
  readonly streamIdleTimeoutMs: number;
  readonly requestTimeoutMs: number;
  /** 0 = disabled, which is Envoy's default */
  readonly requestHeadersTimeoutMs: number;
  /** HCM common_http_protocol_options.idle_timeout, Envoy default 1 h */
  readonly idleTimeoutMs: number;
  readonly maxConnectionDurationMs: number;
  readonly maxStreamDurationMs: number;
  /** Envoy default 5 s */
  readonly drainTimeoutMs: number;
  readonly delayedCloseTimeoutMs: number;
  readonly upgradeConfigs: readonly { readonly upgradeType: string; readonly enabled: boolean }[];
  readonly normalizePath: boolean;
  readonly mergeSlashes: boolean;
  readonly stripMatchingHostPort: boolean;
  readonly stripAnyHostPort: boolean;
  readonly suppressEnvoyHeaders: boolean;
  /** Istio's istio.alpn filter: the ALPN list an upstream TLS connection offers, by upstream protocol */
  readonly alpnOverride?: AlpnOverride;
  readonly http1: { readonly acceptHttp10: boolean; readonly defaultHostForHttp10?: string };
  readonly http2: Http2Options;
  /** stream_error_on_invalid_http_message, when set: a malformed HTTP/2 request resets its stream only (default: the connection) */
  readonly streamErrorOnInvalidHttpMessage?: boolean;
  /** CIDRs counted as internal; empty = RFC 1918 + loopback (Envoy's default behaviour). */
  readonly internalAddressCidrs: readonly string[];
  /** access_log: file / stdout / stderr loggers, in config order */
  readonly accessLogs: readonly AccessLogConfig[];
  /** tracing: set when the HCM traces (sampling and, optionally, a Zipkin provider) */
  readonly tracing?: HcmTracingConfig;
}

/** An access log filter (envoy.config.accesslog.v3.AccessLogFilter), the forms keel evaluates. */
export type AccessLogFilterConfig =
  | { readonly kind: 'status_code' | 'duration'; readonly op: 'EQ' | 'GE' | 'LE'; readonly value: number }
  | { readonly kind: 'not_health_check' | 'traceable' }
  | { readonly kind: 'response_flag'; readonly flags: readonly string[] }
  | { readonly kind: 'header'; readonly header: HeaderMatcherConfig }
  | { readonly kind: 'runtime'; readonly percent: number }
  | { readonly kind: 'grpc_status'; readonly statuses: readonly number[]; readonly exclude: boolean }
  | { readonly kind: 'and' | 'or'; readonly filters: readonly AccessLogFilterConfig[] };

/** One access logger: where lines go and how they look. */
export interface AccessLogConfig {
  readonly name: string;
  /** a file path; '/dev/stdout' and '/dev/stderr' for the stdout/stderr loggers */
  readonly path: string;
  /** text_format (or Envoy's default format when neither is set) */
  readonly textFormat?: string;
  /** json_format: keys to format strings (nested objects allowed) */
  readonly jsonFormat?: Readonly<Record<string, unknown>>;
  readonly filter?: AccessLogFilterConfig;
}

/** HCM tracing, with the provider (Zipkin is the one keel exports to). Percentages 0..100. */
export interface HcmTracingConfig {
  readonly clientSamplingPct: number;
  readonly randomSamplingPct: number;
  readonly overallSamplingPct: number;
  readonly spawnUpstreamSpan: boolean;
  readonly provider?: ZipkinConfig;
}

export interface ZipkinConfig {
  readonly collectorCluster: string;
  readonly collectorEndpoint: string;
  readonly collectorHostname?: string;
  readonly traceId128bit: boolean;
  readonly sharedSpanContext: boolean;
}

export interface Http2Options {
  /** Envoy default 2147483647; node's default is used when unset */
  readonly maxConcurrentStreams: number;
  readonly initialStreamWindowSize: number;
  readonly initialConnectionWindowSize: number;
  readonly allowConnect: boolean;
  /** Envoy's defaults: 4096, 10000, 1000, 1 (both ends: the HCM's connections and a cluster's) */
  readonly hpackTableSize: number;
  readonly maxOutboundFrames: number;
  readonly maxOutboundControlFrames: number;
  readonly maxConsecutiveInboundFramesWithEmptyPayload: number;
  /** override_stream_error_on_invalid_http_message (or the deprecated stream_error_on_invalid_http_messaging), when set */
  readonly overrideStreamErrorOnInvalidHttpMessage?: boolean;
  /** connection_keepalive: a PING every interval (± jitter); no ACK within timeout closes the connection */
  readonly keepalive?: { readonly intervalMs: number; readonly timeoutMs: number; readonly jitterPercent: number };
}

export interface TcpProxyConfig {
  readonly kind: 'tcp_proxy';
  readonly statPrefix: string;
  readonly cluster?: string;
  readonly weightedClusters?: readonly { readonly name: string; readonly weight: number }[];
  readonly idleTimeoutMs: number;
  /** max_connect_attempts: upstream connection attempts before giving up (Envoy default 1; unset = 1) */
  readonly maxConnectAttempts?: number;
}

export type NetworkFilterConfig = HttpConnectionManagerConfig | TcpProxyConfig;

// ---------------------------------------------------------------------------------------------
// TLS

export type ForwardClientCertDetails = 'SANITIZE' | 'FORWARD_ONLY' | 'APPEND_FORWARD' | 'SANITIZE_SET' | 'ALWAYS_FORWARD_ONLY';
/** Envoy adds them in this order: Cert, Chain, Subject, URI, DNS. */
export type ClientCertDetail = 'Cert' | 'Chain' | 'Subject' | 'URI' | 'DNS';

export interface TlsCertificate {
  readonly certChain: string; // PEM
  readonly privateKey: string; // PEM
}

export interface CertificateValidation {
  readonly trustedCa?: string; // PEM
  readonly matchSubjectAltNames: readonly { readonly kind: 'uri' | 'dns' | 'email' | 'ip' | 'any'; readonly match: StringMatcherConfig }[];
}

export interface DownstreamTlsConfig {
  readonly certificates: readonly TlsCertificate[];
  /** SDS secret names, resolved later (issue: xDS). */
  readonly sdsCertificateNames: readonly string[];
  readonly validation?: CertificateValidation;
  readonly sdsValidationName?: string;
  readonly requireClientCertificate: boolean;
  readonly alpnProtocols: readonly string[];
  /** Node's names ('TLSv1.2', 'TLSv1.3', ...); unset = TLS_AUTO */
  readonly minVersion?: string;
  readonly maxVersion?: string;
}

export interface UpstreamTlsConfig {
  readonly certificates: readonly TlsCertificate[];
  readonly sdsCertificateNames: readonly string[];
  readonly validation?: CertificateValidation;
  readonly sdsValidationName?: string;
  readonly sni?: string;
  readonly alpnProtocols: readonly string[];
  readonly allowRenegotiation: boolean;
  /** Node's names ('TLSv1.2', 'TLSv1.3', ...); unset = TLS_AUTO */
  readonly minVersion?: string;
  readonly maxVersion?: string;
}

// ---------------------------------------------------------------------------------------------
// Listeners

export interface CidrRange {
  readonly addressPrefix: string;
  readonly prefixLen: number;
}

export interface FilterChainMatchConfig {
  readonly destinationPort?: number;
  readonly prefixRanges: readonly CidrRange[];
  readonly serverNames: readonly string[];
  readonly transportProtocol?: string;
  readonly applicationProtocols: readonly string[];
  /** the directly connected peer's address ranges (keel has no PROXY protocol: the source's) */
  readonly directSourcePrefixRanges?: readonly CidrRange[];
  readonly sourceType: 'ANY' | 'SAME_IP_OR_LOOPBACK' | 'EXTERNAL';
  readonly sourcePrefixRanges: readonly CidrRange[];
  readonly sourcePorts: readonly number[];
}

export interface FilterChainConfig {
  readonly name: string;
  readonly match: FilterChainMatchConfig;
  readonly tls?: DownstreamTlsConfig;
  /** The terminal network filter (a chain with any other network filter is rejected). */
  readonly filter: NetworkFilterConfig;
  /** Non-terminal network filters keel implements, in order, before the terminal one (envoy.filters.network.rbac). */
  readonly networkFilters?: readonly NetworkPreFilterConfig[];
}

/** A non-terminal network filter: its config type and decoded config (a domain type of config/filters/). */
export interface NetworkPreFilterConfig {
  readonly name: string;
  readonly typeName: string;
  readonly config: unknown;
}

export interface ListenerFilterConfig {
  readonly name: string;
  readonly typeName: string;
}

export interface ListenerConfig {
  readonly name: string;
  /** the resource as written (Envoy JSON/YAML, snake or camel case), for /config_dump */
  readonly source?: Readonly<Record<string, unknown>>;
  readonly address: SocketAddress;
  readonly filterChains: readonly FilterChainConfig[];
  readonly defaultFilterChain?: FilterChainConfig;
  readonly listenerFilters: readonly ListenerFilterConfig[];
  readonly listenerFiltersTimeoutMs: number;
  readonly continueOnListenerFiltersTimeout: boolean;
  readonly useOriginalDst: boolean;
  /** IP_TRANSPARENT on the listening socket (TPROXY interception; needs the addon and CAP_NET_ADMIN) */
  readonly transparent?: boolean;
  readonly bindToPort: boolean;
  readonly perConnectionBufferLimitBytes: number;
  readonly trafficDirection: 'UNSPECIFIED' | 'INBOUND' | 'OUTBOUND';
}

// ---------------------------------------------------------------------------------------------
// Clusters

export type HealthStatus = 'UNKNOWN' | 'HEALTHY' | 'UNHEALTHY' | 'DRAINING' | 'TIMEOUT' | 'DEGRADED';

export interface EndpointConfig {
  readonly address: SocketAddress;
  readonly hostname: string;
  readonly healthStatus: HealthStatus;
  readonly loadBalancingWeight: number;
  readonly metadata: Readonly<Record<string, unknown>>;
}

export interface LocalityEndpointsConfig {
  readonly locality: { readonly region: string; readonly zone: string; readonly subZone: string };
  readonly priority: number;
  /** 0 when unset (the locality takes no part in locality-weighted balancing) */
  readonly loadBalancingWeight: number;
  readonly endpoints: readonly EndpointConfig[];
}

export interface CircuitBreakerThresholds {
  readonly priority: 'DEFAULT' | 'HIGH';
  /** Envoy defaults: 1024 each, retries 3 */
  readonly maxConnections: number;
  readonly maxPendingRequests: number;
  readonly maxRequests: number;
  readonly maxRetries: number;
  readonly retryBudget?: { readonly budgetPercent: number; readonly minRetryConcurrency: number };
  readonly trackRemaining: boolean;
}

export interface OutlierDetectionConfig {
  readonly consecutive5xx: number;
  readonly consecutiveGatewayFailure: number;
  readonly consecutiveLocalOriginFailure: number;
  readonly intervalMs: number;
  readonly baseEjectionTimeMs: number;
  readonly maxEjectionTimeMs: number;
  readonly maxEjectionPercent: number;
  readonly enforcingConsecutive5xx: number;
  readonly enforcingConsecutiveGatewayFailure: number;
  readonly enforcingConsecutiveLocalOriginFailure: number;
  readonly enforcingSuccessRate: number;
  readonly successRateMinimumHosts: number;
  readonly successRateRequestVolume: number;
  readonly successRateStdevFactor: number;
  readonly failurePercentageThreshold: number;
  readonly enforcingFailurePercentage: number;
  readonly failurePercentageMinimumHosts: number;
  readonly failurePercentageRequestVolume: number;
  readonly splitExternalLocalOriginErrors: boolean;
}

export type LbPolicy = 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM' | 'RING_HASH' | 'MAGLEV' | 'CLUSTER_PROVIDED';

export interface ClusterConfig {
  readonly name: string;
  /** the resource as written (Envoy JSON/YAML, snake or camel case), for /config_dump */
  readonly source?: Readonly<Record<string, unknown>>;
  readonly type: 'STATIC' | 'STRICT_DNS' | 'LOGICAL_DNS' | 'EDS' | 'ORIGINAL_DST';
  readonly connectTimeoutMs: number; // Envoy default 5 s
  readonly lbPolicy: LbPolicy;
  /** least_request_lb_config / ring_hash_lb_config / maglev_lb_config; unset fields use Envoy's defaults. */
  readonly lbOptions: {
    readonly choiceCount?: number;
    readonly activeRequestBias?: number;
    readonly minimumRingSize?: number;
    readonly maximumRingSize?: number;
    readonly maglevTableSize?: number;
  };
  readonly endpoints: readonly LocalityEndpointsConfig[];
  /** EDS service name when endpoints come from EDS. */
  readonly edsServiceName?: string;
  /** eds_config.initial_fetch_timeout: how long the cluster warms waiting for its endpoints (0 = forever). */
  readonly edsInitialFetchTimeoutMs?: number;
  readonly protocol: 'HTTP1' | 'HTTP2' | 'USE_DOWNSTREAM';
  readonly http2: Http2Options;
  /** Upstream idle timeout (common_http_protocol_options.idle_timeout), Envoy default 1 h. */
  readonly idleTimeoutMs: number;
  readonly maxRequestsPerConnection: number; // 0 = unlimited
  /** common_http_protocol_options.max_connection_duration: an upstream connection is retired (drained, then closed) this long after it was made; 0 = never */
  readonly maxConnectionDurationMs: number;
  readonly circuitBreakers: readonly CircuitBreakerThresholds[];
  readonly outlierDetection?: OutlierDetectionConfig;
  readonly healthyPanicThreshold: number; // percent, Envoy default 50
  readonly tls?: UpstreamTlsConfig;
  readonly transportSocketMatches: readonly { readonly name: string; readonly match: Readonly<Record<string, unknown>>; readonly tls?: UpstreamTlsConfig }[];
  readonly dnsRefreshRateMs: number; // Envoy default 5 s
  readonly dnsLookupFamily: 'AUTO' | 'V4_ONLY' | 'V6_ONLY' | 'V4_PREFERRED' | 'ALL';
  readonly respectDnsTtl: boolean;
  readonly perConnectionBufferLimitBytes: number; // Envoy default 1 MiB
  readonly upstreamBindSource?: SocketAddress;
  readonly metadata: Readonly<Record<string, unknown>>;
  /** active health checks (only the first is run) */
  readonly healthChecks?: readonly HealthCheckConfig[];
  /** round_robin_lb_config / least_request_lb_config slow_start_config */
  readonly slowStart?: SlowStartConfig;
  /** common_lb_config.locality_weighted_lb_config: pick a locality by weight first */
  readonly localityWeighted?: boolean;
  /** load_assignment.policy.overprovisioning_factor, percent (Envoy default 140) */
  readonly overprovisioningFactor?: number;
}

/** Envoy's SlowStartConfig: a new host's weight ramps up over the window. */
export interface SlowStartConfig {
  readonly windowMs: number;
  /** aggression (runtime default 1.0) */
  readonly aggression: number;
  /** min_weight_percent (default 10) */
  readonly minWeightPercent: number;
}

/** An active HTTP or TCP health check of every host of a cluster (envoy.config.core.v3.HealthCheck). */
export interface HealthCheckConfig {
  readonly timeoutMs: number;
  readonly intervalMs: number;
  readonly initialJitterMs: number;
  readonly intervalJitterMs: number;
  readonly intervalJitterPercent: number;
  readonly unhealthyThreshold: number;
  readonly healthyThreshold: number;
  /** Envoy default 60 s: the interval while the cluster has had no traffic */
  readonly noTrafficIntervalMs: number;
  readonly noTrafficHealthyIntervalMs?: number;
  readonly unhealthyIntervalMs?: number;
  readonly unhealthyEdgeIntervalMs?: number;
  readonly healthyEdgeIntervalMs?: number;
  readonly altPort?: number;
  readonly reuseConnection: boolean;
  readonly http?: {
    readonly host: string;
    readonly path: string;
    readonly method: string;
    /** [start, end) ranges; default [[200, 201)] */
    readonly expectedStatuses: readonly (readonly [number, number])[];
    readonly retriableStatuses: readonly (readonly [number, number])[];
    readonly requestHeadersToAdd: readonly HeaderValueOption[];
    readonly requestHeadersToRemove: readonly string[];
  };
  /** tcp_health_check: connect only (send/receive payloads are not supported) */
  readonly tcp?: true;
}

/**
 * istio.alpn (istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig): the ALPN protocols an
 * upstream TLS connection offers instead of the cluster's, by the protocol the request goes
 * upstream with, so that the peer sidecar's inbound filter chains can tell mTLS HTTP (e.g.
 * `istio-http/1.1`, `istio-h2`) from mTLS TCP. An absent entry leaves the cluster's list.
 */
export interface AlpnOverride {
  readonly http10?: readonly string[];
  readonly http11?: readonly string[];
  readonly http2?: readonly string[];
}
