import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeBootstrap, loadBootstrapFile, parseBootstrapText, SKIPPED_HTTP_FILTERS } from '../../../src/config/bootstrap';
import { ConfigError } from '../../../src/config/errors';
import { compileRe2, compileSubstitution } from '../../../src/common/re2';
import type {
  Bootstrap,
  ForwardAction,
  HttpConnectionManagerConfig,
  RedirectAction,
  RouteConfigEntry,
  TcpProxyConfig,
} from '../../../src/config/types';

// ---------------------------------------------------------------------------------------------
// helpers

const dir = mkdtempSync(join(tmpdir(), 'keel-bootstrap-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const CERT = '-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n';
const KEY = '-----BEGIN PRIVATE KEY-----\nMIIBkey\n-----END PRIVATE KEY-----\n';
const CA = '-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n';
writeFileSync(join(dir, 'cert.pem'), CERT);
writeFileSync(join(dir, 'key.pem'), KEY);
writeFileSync(join(dir, 'ca.pem'), CA);
writeFileSync(join(dir, 'body.txt'), 'maintenance\n');
writeFileSync(join(dir, 'big.txt'), 'x'.repeat(5000));

const ROUTER = { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } };
const HCM_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';

function staticCluster(name: string, port = 8080, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name,
    type: 'STATIC',
    load_assignment: {
      cluster_name: name,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } }] }],
    },
    ...extra,
  };
}

/** A bootstrap with one HTTP listener whose HCM gets `hcm` merged in. */
function withHcm(hcm: Record<string, unknown>, clusters: unknown[] = [staticCluster('backend'), staticCluster('other', 8081)]): Record<string, unknown> {
  return {
    static_resources: {
      listeners: [
        {
          name: 'http',
          address: { socket_address: { address: '0.0.0.0', port_value: 8000 } },
          filter_chains: [
            {
              filters: [
                {
                  name: 'envoy.filters.network.http_connection_manager',
                  typed_config: { '@type': HCM_TYPE, stat_prefix: 'http', http_filters: [ROUTER], ...hcm },
                },
              ],
            },
          ],
        },
      ],
      clusters,
    },
  };
}

/** A bootstrap whose only virtual host has `routes`. */
function withRoutes(routes: unknown[], vhost: Record<string, unknown> = {}): Record<string, unknown> {
  return withHcm({ route_config: { name: 'rt', virtual_hosts: [{ name: 'vh', domains: ['*'], routes, ...vhost }] } });
}

const hcmOf = (b: Bootstrap, listener = 0, chain = 0): HttpConnectionManagerConfig => {
  const f = b.listeners[listener].filterChains[chain].filter;
  if (f.kind !== 'http_connection_manager') throw new Error('not an HCM');
  return f;
};
const routesOf = (b: Bootstrap): readonly RouteConfigEntry[] => hcmOf(b).routeConfig!.virtualHosts[0].routes;
const forward = (r: RouteConfigEntry): ForwardAction => {
  if (r.action.kind !== 'route') throw new Error(`not a route action: ${r.action.kind}`);
  return r.action;
};
const redirect = (r: RouteConfigEntry): RedirectAction => {
  if (r.action.kind !== 'redirect') throw new Error(`not a redirect: ${r.action.kind}`);
  return r.action;
};

/** The problems of a config that must be rejected, as `path: message` lines. */
function problems(raw: unknown): string[] {
  try {
    decodeBootstrap(raw);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => `${p.path}: ${p.message}`);
    throw e;
  }
  throw new Error('expected a ConfigError');
}

const RT = 'static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config';
const VH = `${RT}.virtual_hosts[0]`;

// ---------------------------------------------------------------------------------------------
// a realistic bootstrap

const FULL = `
node:
  id: sidecar~10.1.2.3~productpage-v1.default~default.svc.cluster.local
  cluster: productpage.default
  locality: { region: us-east1 }
  metadata:
    ISTIO_VERSION: "1.22.0"
    LABELS: { app: productpage }
admin:
  access_log_path: /dev/null
  address:
    socket_address: { address: 127.0.0.1, port_value: 15000 }
layered_runtime:
  layers:
  - name: global
    static_layer:
      overload: { global_downstream_max_connections: 2147483647 }
      re2.max_program_size.error_level: 32768
      http_connection_manager.normalize_path: true
  - name: admin
    admin_layer: {}
stats_config:
  use_all_default_tags: false
static_resources:
  listeners:
  - name: public
    address:
      socket_address: { address: 0.0.0.0, port_value: 8443 }
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
    - name: envoy.filters.listener.original_dst
    listener_filters_timeout: 5s
    continue_on_listener_filters_timeout: true
    traffic_direction: INBOUND
    per_connection_buffer_limit_bytes: 32768
    access_log: []
    filter_chains:
    - name: tls
      filter_chain_match:
        destination_port: 8443
        server_names: [www.example.com, "*.Example.org"]
        transport_protocol: tls
        application_protocols: [h2, http/1.1]
        prefix_ranges: [{ address_prefix: 10.0.0.0, prefix_len: 8 }]
        source_type: EXTERNAL
        source_ports: [1234]
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_params: { tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3 }
            tls_certificates:
            - certificate_chain: { filename: ${join(dir, 'cert.pem')} }
              private_key: { filename: ${join(dir, 'key.pem')} }
            tls_certificate_sds_secret_configs:
            - name: default
              sds_config: { ads: {} }
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names:
                - san_type: URI
                  matcher: { prefix: "spiffe://cluster.local/" }
              validation_context_sds_secret_config:
                name: ROOTCA
                sds_config: { ads: {} }
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": ${HCM_TYPE}
          stat_prefix: public_https
          codec_type: AUTO
          use_remote_address: true
          xff_num_trusted_hops: 1
          server_name: keel-test
          stream_idle_timeout: 60s
          request_timeout: 30s
          request_headers_timeout: 2s
          drain_timeout: 1s
          delayed_close_timeout: 0s
          max_request_headers_kb: 96
          generate_request_id: false
          forward_client_cert_details: SANITIZE_SET
          common_http_protocol_options:
            idle_timeout: 120s
            max_headers_count: 50
            headers_with_underscores_action: REJECT_REQUEST
          http_protocol_options: { accept_http_10: true, default_host_for_http_10: legacy.local }
          http2_protocol_options:
            max_concurrent_streams: 128
            initial_stream_window_size: 65536
            hpack_table_size: 8192
            max_outbound_frames: 500
            max_outbound_control_frames: 50
            max_consecutive_inbound_frames_with_empty_payload: 3
            override_stream_error_on_invalid_http_message: false
            connection_keepalive: { interval: 30s, timeout: 5s }
          stream_error_on_invalid_http_message: true
          upgrade_configs: [{ upgrade_type: WebSocket }]
          strip_any_host_port: true
          merge_slashes: true
          internal_address_config:
            cidr_ranges: [{ address_prefix: 192.168.0.0, prefix_len: 16 }]
          http_filters:
          - name: istio.stats
            typed_config:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/stats.PluginConfig
              value: {}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: true
          route_config:
            name: public
            internal_only_headers: [X-Internal]
            response_headers_to_add:
            - header: { key: X-Served-By, value: keel }
              append: false
            virtual_hosts:
            - name: www
              domains: [www.example.com, "www.example.com:8443"]
              require_tls: ALL
              include_request_attempt_count: true
              retry_policy: { retry_on: "5xx,reset", num_retries: 2 }
              virtual_clusters:
              - name: api
                headers: [{ name: ":path", string_match: { prefix: /api } }]
              routes:
              - name: api
                match: { prefix: /api/ }
                route:
                  cluster: productpage
                  timeout: 2.5s
                  prefix_rewrite: /
                  retry_policy:
                    retry_on: "connect-failure, refused-stream,retriable-status-codes"
                    num_retries: 3
                    per_try_timeout: 0.5s
                    retriable_status_codes: [503, 504]
                    retry_back_off: { base_interval: 0.1s }
                    retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts }]
                    host_selection_retry_max_attempts: "5"
              - match: { prefix: / }
                redirect: { https_redirect: true, response_code: PERMANENT_REDIRECT }
    default_filter_chain:
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: passthrough
          cluster: passthrough
  clusters:
  - name: productpage
    type: STATIC
    connect_timeout: 0.25s
    lb_policy: LEAST_REQUEST
    per_connection_buffer_limit_bytes: 65536
    metadata: { filter_metadata: { istio: { default_original_port: 9080 } } }
    load_assignment:
      cluster_name: productpage
      endpoints:
      - locality: { region: us-east1, zone: b }
        priority: 0
        load_balancing_weight: 3
        lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.1.2.3, port_value: 9080 } }, hostname: pp-1 }
          load_balancing_weight: 2
          health_status: HEALTHY
          metadata: { filter_metadata: { envoy.lb: { canary: true } } }
        - endpoint: { address: { socket_address: { address: "::1", port_value: 9081 } } }
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: { max_concurrent_streams: 100 }
        common_http_protocol_options: { idle_timeout: 30s, max_requests_per_connection: 1000 }
    circuit_breakers:
      thresholds:
      - max_connections: 100
        max_retries: 10
        retry_budget: { budget_percent: { value: 25.5 } }
      - priority: HIGH
        max_requests: 5000
    outlier_detection:
      consecutive_5xx: 7
      base_ejection_time: 60s
    common_lb_config: { healthy_panic_threshold: { value: 0 } }
    upstream_bind_config: { source_address: { address: 10.1.2.3, port_value: 0 } }
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: productpage.default.svc.cluster.local
        common_tls_context:
          alpn_protocols: [h2]
          validation_context:
            trusted_ca: { filename: ${join(dir, 'ca.pem')} }
            match_subject_alt_names: [{ exact: "spiffe://cluster.local/ns/default/sa/productpage" }]
  - name: passthrough
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 10s
  - name: reviews
    type: STRICT_DNS
    dns_lookup_family: V4_ONLY
    dns_refresh_rate: 30s
    respect_dns_ttl: true
    load_assignment:
      cluster_name: reviews
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: reviews.default.svc, port_value: 9080 } } }
    http2_protocol_options: {}
  - name: xds-grpc
    type: LOGICAL_DNS
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: istiod.istio-system.svc, port_value: 15012 } } }
    transport_socket_matches:
    - name: tls-mode
      match: { tlsMode: istio }
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    - name: plain
      match: {}
      transport_socket: { name: envoy.transport_sockets.raw_buffer }
  - name: ratings
    type: EDS
    eds_cluster_config: { eds_config: { ads: {} } }
  - name: sds
    type: STATIC
    load_assignment:
      cluster_name: sds
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { pipe: { path: /var/run/sds.sock } } }
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        use_downstream_protocol_config: {}
`;

t.test('a realistic bootstrap decodes with the expected values and defaults', async (t) => {
  const { bootstrap: b, warnings } = parseBootstrapText(FULL, 'full.yaml');

  t.same(b.node, {
    id: 'sidecar~10.1.2.3~productpage-v1.default~default.svc.cluster.local',
    cluster: 'productpage.default',
    metadata: { ISTIO_VERSION: '1.22.0', LABELS: { app: 'productpage' } },
  });
  t.same(b.admin, { address: { address: '127.0.0.1', port: 15000 } });
  t.same(b.runtime, {
    'overload.global_downstream_max_connections': 2147483647,
    're2.max_program_size.error_level': 32768,
    'http_connection_manager.normalize_path': true,
  });

  t.equal(b.listeners.length, 1);
  const l = b.listeners[0];
  t.equal(l.name, 'public');
  t.same(l.address, { address: '0.0.0.0', port: 8443 });
  t.same(l.listenerFilters, [
    { name: 'envoy.filters.listener.tls_inspector', typeName: 'envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector' },
    { name: 'envoy.filters.listener.original_dst', typeName: 'envoy.extensions.filters.listener.original_dst.v3.OriginalDst' },
  ]);
  t.equal(l.listenerFiltersTimeoutMs, 5000);
  t.equal(l.continueOnListenerFiltersTimeout, true);
  t.equal(l.trafficDirection, 'INBOUND');
  t.equal(l.perConnectionBufferLimitBytes, 32768);
  t.equal(l.bindToPort, true, 'bind_to_port defaults to true');
  t.equal(l.useOriginalDst, false);

  const chain = l.filterChains[0];
  t.equal(chain.name, 'tls');
  t.same(chain.match, {
    destinationPort: 8443,
    prefixRanges: [{ addressPrefix: '10.0.0.0', prefixLen: 8 }],
    serverNames: ['www.example.com', '*.example.org'],
    transportProtocol: 'tls',
    applicationProtocols: ['h2', 'http/1.1'],
    sourceType: 'EXTERNAL',
    sourcePrefixRanges: [],
    sourcePorts: [1234],
  });
  t.same(chain.tls, {
    certificates: [{ certChain: CERT, privateKey: KEY }],
    sdsCertificateNames: ['default'],
    validation: { matchSubjectAltNames: [{ kind: 'uri', match: { kind: 'prefix', value: 'spiffe://cluster.local/', ignoreCase: false } }] },
    sdsValidationName: 'ROOTCA',
    alpnProtocols: ['h2', 'http/1.1'],
    minVersion: 'TLSv1.2',
    maxVersion: 'TLSv1.3',
    requireClientCertificate: true,
  });

  const hcm = hcmOf(b);
  t.match(hcm, {
    statPrefix: 'public_https',
    codecType: 'AUTO',
    useRemoteAddress: true,
    xffNumTrustedHops: 1,
    serverName: 'keel-test',
    streamIdleTimeoutMs: 60_000,
    requestTimeoutMs: 30_000,
    requestHeadersTimeoutMs: 2000,
    drainTimeoutMs: 1000,
    delayedCloseTimeoutMs: 0,
    maxRequestHeadersKb: 96,
    generateRequestId: false,
    idleTimeoutMs: 120_000,
    maxHeadersCount: 50,
    headersWithUnderscoresAction: 'REJECT_REQUEST',
    http1: { acceptHttp10: true, defaultHostForHttp10: 'legacy.local' },
    http2: {
      maxConcurrentStreams: 128,
      initialStreamWindowSize: 65536,
      initialConnectionWindowSize: 268435456,
      allowConnect: false,
      hpackTableSize: 8192,
      maxOutboundFrames: 500,
      maxOutboundControlFrames: 50,
      maxConsecutiveInboundFramesWithEmptyPayload: 3,
      overrideStreamErrorOnInvalidHttpMessage: false,
      keepalive: { intervalMs: 30_000, timeoutMs: 5000, jitterPercent: 15 },
    },
    streamErrorOnInvalidHttpMessage: true,
    upgradeConfigs: [{ upgradeType: 'websocket', enabled: true }],
    stripAnyHostPort: true,
    stripMatchingHostPort: false,
    mergeSlashes: true,
    normalizePath: true, // from the runtime layer
    suppressEnvoyHeaders: true,
    internalAddressCidrs: ['192.168.0.0/16'],
  });
  t.same(
    hcm.httpFilters.map((f) => [f.name, f.typeName]),
    [['envoy.filters.http.router', 'envoy.extensions.filters.http.router.v3.Router']],
    'istio.stats is skipped, the router kept',
  );
  t.same(hcm.httpFilters[0].config, { suppress_envoy_headers: true });

  const rt = hcm.routeConfig!;
  t.equal(rt.name, 'public');
  t.same(rt.internalOnlyHeaders, ['x-internal']);
  t.same(rt.responseHeadersToAdd, [{ key: 'x-served-by', value: 'keel', appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD', keepEmptyValue: false }]);
  const vh = rt.virtualHosts[0];
  t.same(vh.domains, ['www.example.com', 'www.example.com:8443']);
  t.equal(vh.requireTls, 'ALL');
  t.equal(vh.includeRequestAttemptCount, true);
  t.same(vh.retryPolicy?.retryOn, ['5xx', 'reset']);
  t.equal(vh.retryPolicy?.numRetries, 2);
  t.same(vh.virtualClusters, [
    { name: 'api', headers: [{ name: ':path', invert: false, treatMissingAsEmpty: false, kind: 'string', match: { kind: 'prefix', value: '/api', ignoreCase: false } }] },
  ]);
  const api = forward(vh.routes[0]);
  t.equal(vh.routes[0].name, 'api');
  t.match(api, { cluster: 'productpage', timeoutMs: 2500, prefixRewrite: '/', clusterNotFoundResponseCode: 503 });
  t.same(api.retryPolicy, {
    retryOn: ['connect-failure', 'refused-stream', 'retriable-status-codes'],
    numRetries: 3,
    perTryTimeoutMs: 500,
    perTryIdleTimeoutMs: 0,
    retriableStatusCodes: [503, 504],
    retryBackOff: { baseIntervalMs: 100, maxIntervalMs: 1000 },
    hostSelectionRetryMaxAttempts: 5,
    retryHostPredicates: ['envoy.retry_host_predicates.previous_hosts'],
    retriableHeaders: [],
    retriableRequestHeaders: [],
  });
  t.same(redirect(vh.routes[1]), { kind: 'redirect', schemeRedirect: 'https', responseCode: 308, stripQuery: false });

  const dflt = l.defaultFilterChain!;
  t.same(dflt.filter, { kind: 'tcp_proxy', statPrefix: 'passthrough', cluster: 'passthrough', idleTimeoutMs: 3_600_000 } satisfies TcpProxyConfig);

  t.same(
    b.clusters.map((c) => c.name),
    ['productpage', 'passthrough', 'reviews', 'xds-grpc', 'ratings', 'sds'],
  );
  const [pp, passthrough, reviews, xds, ratings, sds] = b.clusters;
  t.match(pp, {
    type: 'STATIC',
    connectTimeoutMs: 250,
    lbPolicy: 'LEAST_REQUEST',
    protocol: 'HTTP2',
    http2: { maxConcurrentStreams: 100, initialStreamWindowSize: 268435456 },
    idleTimeoutMs: 30_000,
    maxRequestsPerConnection: 1000,
    healthyPanicThreshold: 0,
    perConnectionBufferLimitBytes: 65536,
    upstreamBindSource: { address: '10.1.2.3', port: 0 },
    metadata: { istio: { default_original_port: 9080 } },
    tls: { sni: 'productpage.default.svc.cluster.local', alpnProtocols: ['h2'], allowRenegotiation: false },
  });
  t.same(pp.tls?.validation, {
    trustedCa: CA,
    matchSubjectAltNames: [{ kind: 'any', match: { kind: 'exact', value: 'spiffe://cluster.local/ns/default/sa/productpage', ignoreCase: false } }],
  });
  t.same(pp.endpoints, [
    {
      locality: { region: 'us-east1', zone: 'b', subZone: '' },
      priority: 0,
      loadBalancingWeight: 3,
      endpoints: [
        {
          address: { address: '10.1.2.3', port: 9080 },
          hostname: 'pp-1',
          healthStatus: 'HEALTHY',
          loadBalancingWeight: 2,
          metadata: { 'envoy.lb': { canary: true } },
        },
        { address: { address: '::1', port: 9081 }, hostname: '', healthStatus: 'UNKNOWN', loadBalancingWeight: 1, metadata: {} },
      ],
    },
  ]);
  t.same(pp.circuitBreakers, [
    { priority: 'DEFAULT', maxConnections: 100, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 10, retryBudget: { budgetPercent: 25.5, minRetryConcurrency: 3 }, trackRemaining: false },
    { priority: 'HIGH', maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 5000, maxRetries: 3, trackRemaining: false },
  ]);
  t.same(pp.outlierDetection, {
    consecutive5xx: 7,
    consecutiveGatewayFailure: 5,
    consecutiveLocalOriginFailure: 5,
    intervalMs: 10_000,
    baseEjectionTimeMs: 60_000,
    maxEjectionTimeMs: 300_000,
    maxEjectionPercent: 10,
    enforcingConsecutive5xx: 100,
    enforcingConsecutiveGatewayFailure: 0,
    enforcingConsecutiveLocalOriginFailure: 100,
    enforcingSuccessRate: 100,
    successRateMinimumHosts: 5,
    successRateRequestVolume: 100,
    successRateStdevFactor: 1900,
    failurePercentageThreshold: 85,
    enforcingFailurePercentage: 0,
    failurePercentageMinimumHosts: 5,
    failurePercentageRequestVolume: 50,
    splitExternalLocalOriginErrors: false,
  });
  t.match(passthrough, { type: 'ORIGINAL_DST', lbPolicy: 'CLUSTER_PROVIDED', connectTimeoutMs: 10_000, endpoints: [] });
  t.match(reviews, { type: 'STRICT_DNS', dnsLookupFamily: 'V4_ONLY', dnsRefreshRateMs: 30_000, respectDnsTtl: true, protocol: 'HTTP2' });
  t.same(reviews.endpoints[0].endpoints[0].address, { address: 'reviews.default.svc', port: 9080 });
  t.equal(xds.type, 'LOGICAL_DNS');
  t.same(
    xds.transportSocketMatches.map((m) => [m.name, m.match, m.tls !== undefined]),
    [
      ['tls-mode', { tlsMode: 'istio' }, true],
      ['plain', {}, false],
    ],
  );
  t.match(ratings, { type: 'EDS', edsServiceName: 'ratings', endpoints: [] });
  t.match(sds, { protocol: 'USE_DOWNSTREAM' });
  t.same(sds.endpoints[0].endpoints[0].address, { address: '', port: 0, pipe: '/var/run/sds.sock' });

  // Envoy's defaults on a cluster that sets almost nothing
  t.match(xds, {
    connectTimeoutMs: 5000,
    lbPolicy: 'ROUND_ROBIN',
    protocol: 'HTTP1',
    idleTimeoutMs: 3_600_000,
    maxRequestsPerConnection: 0,
    healthyPanicThreshold: 50,
    dnsRefreshRateMs: 5000,
    dnsLookupFamily: 'AUTO',
    respectDnsTtl: false,
    perConnectionBufferLimitBytes: 1024 * 1024,
    http2: { maxConcurrentStreams: 2147483647, initialStreamWindowSize: 268435456, initialConnectionWindowSize: 268435456 },
  });
  t.equal(xds.outlierDetection, undefined);
  t.same(
    xds.circuitBreakers.map((c) => [c.priority, c.maxConnections, c.maxPendingRequests, c.maxRequests, c.maxRetries]),
    [
      ['DEFAULT', 1024, 1024, 1024, 3],
      ['HIGH', 1024, 1024, 1024, 3],
    ],
  );

  for (const w of [
    "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0]: skipping HTTP filter 'istio.stats' (@type stats.PluginConfig)",
    'admin.access_log_path: ignored',
    'stats_config: ignored',
    'static_resources.listeners[0].access_log: ignored',
  ]) {
    t.ok(
      warnings.some((x) => x.startsWith(w)),
      `warning ${w}`,
    );
  }
  // decoded but not applied: each says so (found by an audit for silently ignored config)
  for (const w of ['.drain_timeout: ignored', '.delayed_close_timeout: ignored']) {
    t.ok(warnings.some((x) => x.includes(w)), `warning ${w}`);
  }
  t.notOk(
    warnings.some((x) => x.includes('forward_client_cert_details')),
    'forward_client_cert_details is implemented (x-forwarded-client-cert)',
  );
  t.notOk(
    warnings.some((x) => x.startsWith('node.locality')),
    'silently ignored fields give no warning',
  );
});

t.test('defaults of the HTTP connection manager, listener, route and cluster', async (t) => {
  const { bootstrap: b, warnings } = decodeBootstrap(withRoutes([{ match: { prefix: '/' }, route: { cluster: 'backend', retry_policy: {} } }]));
  t.same(warnings, []);
  t.same(b.node, { id: '', cluster: '', metadata: {} });
  t.equal(b.admin, undefined);
  t.same(b.runtime, {});
  const l = b.listeners[0];
  t.match(l, {
    listenerFiltersTimeoutMs: 15_000,
    continueOnListenerFiltersTimeout: false,
    useOriginalDst: false,
    bindToPort: true,
    perConnectionBufferLimitBytes: 1_048_576,
    trafficDirection: 'UNSPECIFIED',
    listenerFilters: [],
  });
  t.equal(l.defaultFilterChain, undefined);
  t.equal(l.filterChains[0].tls, undefined);
  t.same(hcmOf(b), {
    kind: 'http_connection_manager',
    statPrefix: 'http',
    codecType: 'AUTO',
    routeConfig: hcmOf(b).routeConfig,
    httpFilters: [{ name: 'envoy.filters.http.router', typeName: 'envoy.extensions.filters.http.router.v3.Router', config: {}, isOptional: false, disabled: false }],
    useRemoteAddress: false,
    xffNumTrustedHops: 0,
    skipXffAppend: false,
    generateRequestId: true,
    preserveExternalRequestId: false,
    alwaysSetRequestIdInResponse: false,
    serverName: 'envoy',
    serverHeaderTransformation: 'OVERWRITE',
    maxRequestHeadersKb: 60,
    maxHeadersCount: 100,
    headersWithUnderscoresAction: 'ALLOW',
    streamIdleTimeoutMs: 300_000,
    requestTimeoutMs: 0,
    requestHeadersTimeoutMs: 0, // disabled unless set (Envoy's default)
    idleTimeoutMs: 3_600_000,
    maxConnectionDurationMs: 0,
    maxStreamDurationMs: 0,
    drainTimeoutMs: 5000,
    delayedCloseTimeoutMs: 1000,
    upgradeConfigs: [],
    normalizePath: false,
    mergeSlashes: false,
    stripMatchingHostPort: false,
    stripAnyHostPort: false,
    suppressEnvoyHeaders: false,
    http1: { acceptHttp10: false },
    http2: {
      maxConcurrentStreams: 2147483647,
      initialStreamWindowSize: 268435456,
      initialConnectionWindowSize: 268435456,
      allowConnect: false,
      hpackTableSize: 4096,
      maxOutboundFrames: 10000,
      maxOutboundControlFrames: 1000,
      maxConsecutiveInboundFramesWithEmptyPayload: 1,
    },
    internalAddressCidrs: [],
    accessLogs: [],
  });
  const rt = hcmOf(b).routeConfig!;
  t.same(
    [rt.mostSpecificHeaderMutationsWins, rt.ignorePortInHostMatching, rt.internalOnlyHeaders, rt.requestHeadersToAdd],
    [false, false, [], []],
  );
  const vh = rt.virtualHosts[0];
  t.same([vh.requireTls, vh.includeRequestAttemptCount, vh.includeAttemptCountInResponse, vh.retryPolicy], ['NONE', false, false, undefined]);
  const route = routesOf(b)[0];
  t.same(route.match, { path: { kind: 'prefix', value: '/' }, caseSensitive: true, headers: [], queryParameters: [], grpc: false, dynamicMetadata: [] });
  t.same(forward(route), {
    kind: 'route',
    cluster: 'backend',
    clusterNotFoundResponseCode: 503,
    autoHostRewrite: false,
    timeoutMs: 15_000,
    retryPolicy: {
      retryOn: [],
      numRetries: 1,
      perTryTimeoutMs: 0,
      perTryIdleTimeoutMs: 0,
      retriableStatusCodes: [],
      hostSelectionRetryMaxAttempts: 1,
      retryHostPredicates: [],
      retriableHeaders: [],
      retriableRequestHeaders: [],
    },
    hashPolicy: [],
    includeVhRateLimits: false,
    upgradeConfigs: [],
  });
  const c = b.clusters[0];
  t.match(c, { type: 'STATIC', connectTimeoutMs: 5000, lbPolicy: 'ROUND_ROBIN', protocol: 'HTTP1', healthyPanicThreshold: 50, transportSocketMatches: [], metadata: {} });

  const od = decodeBootstrap(withHcm({ route_config: {} }, [staticCluster('backend', 1, { outlier_detection: {} })])).bootstrap.clusters[0].outlierDetection;
  t.match(od, { consecutive5xx: 5, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionTimeMs: 300_000, maxEjectionPercent: 10, enforcingConsecutive5xx: 100 });
  const od2 = decodeBootstrap(withHcm({ route_config: {} }, [staticCluster('backend', 1, { outlier_detection: { base_ejection_time: '400s' } })])).bootstrap.clusters[0]
    .outlierDetection;
  t.equal(od2?.maxEjectionTimeMs, 400_000, 'max_ejection_time defaults to base_ejection_time when that is larger');
});

// ---------------------------------------------------------------------------------------------
// errors

const BAD = `static_resources:
  listeners:
  - name: web
    address:
      socket_address: { address: 0.0.0.0, port_value: 70000 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": ${HCM_TYPE}
          stat_prefix: web
          stream_idle_timeout: 5 minutes
          http_filters:
          - name: envoy.filters.http.router
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
          route_config:
            virtual_hosts:
            - name: a
              domains: [a.example.com]
              routes:
              - match: { prefix: / }
                route: { cluster: backend }
            - name: b
              domains: ["*", A.example.com]
              routes:
              - match: { prefix: /x }
                route: { cluster: nowhere }
              - match: { safe_regex: { regex: "a(b" } }
                route: { cluster: backend }
              - match: { prefix: /y }
                direct_response: { status: 700 }
              - match: { prefix: /, path: /z }
                route: { cluster: backend }
  - name: web
    address:
      socket_address: { address: 0.0.0.0, port_value: 8081 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: backend
  clusters:
  - name: backend
    connect_timeout: 1s
    foo: bar
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: backend.local, port_value: 80 } } }
  - name: backend
    type: LOGICAL_DNS
dynamic_resources:
  ads_config: {}
`;

t.test('a bad bootstrap reports every problem with its exact path', async (t) => {
  const L0 = 'static_resources.listeners[0]';
  const HCM = `${L0}.filter_chains[0].filters[0].typed_config`;
  const VHB = `${HCM}.route_config.virtual_hosts[1]`;
  let err: ConfigError | undefined;
  try {
    parseBootstrapText(BAD, 'bad.yaml');
  } catch (e) {
    if (e instanceof ConfigError) err = e;
    else throw e;
  }
  t.ok(err, 'throws a ConfigError');
  const got = err!.problems.map((p) => `${p.path}: ${p.message}`);
  t.same([...got].sort(), [
    `${L0}.address.socket_address.port_value: 70000 is out of range (0..65535)`,
    `${HCM}.stream_idle_timeout: expected a duration such as "1.5s", got the string "5 minutes"`,
    `${HCM}.http_filters[1]: unsupported HTTP filter 'envoy.filters.http.jwt_authn' (@type envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication)`,
    `${HCM}.http_filters[0]: envoy.filters.http.router must be the last HTTP filter`,
    `${VHB}.domains[1]: domain 'a.example.com' is used by two virtual hosts in route table '' (also ${HCM}.route_config.virtual_hosts[0].domains[0])`,
    `${VHB}.routes[0].route.cluster: unknown cluster 'nowhere' (not defined in static_resources.clusters)`,
    `${VHB}.routes[1].match.safe_regex.regex: invalid regex: ${regexError('a(b')}`,
    `${VHB}.routes[2].direct_response.status: 700 is out of range (100..599)`,
    `${VHB}.routes[3].match: exactly one of prefix, path, safe_regex, path_separated_prefix, connect_matcher must be set`,
    `static_resources.listeners[1].name: duplicate listener name 'web' (also ${L0})`,
    `static_resources.listeners[1].filter_chains[0].filters[0].typed_config.stat_prefix: stat_prefix is required`,
    `static_resources.clusters[0]: unknown field 'foo'`,
    `static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: 'backend.local' is not an IP address (STATIC clusters need IP addresses; use STRICT_DNS or LOGICAL_DNS for hostnames)`,
    `static_resources.clusters[1].load_assignment: LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint`,
    `static_resources.clusters[1].name: duplicate cluster name 'backend' (also static_resources.clusters[0])`,
    `dynamic_resources.ads_config.grpc_services: ads_config needs exactly one grpc_services entry`,
  ].sort());

  const lines = err!.format().split('\n');
  t.equal(lines.length, got.length, 'one line per problem');
  t.ok(lines.every((line) => line.startsWith('keel: config error: ')));
  t.ok(lines.includes(`keel: config error: ${VHB}.routes[3].match: exactly one of prefix, path, safe_regex, path_separated_prefix, connect_matcher must be set`));
  t.equal(err!.message, err!.format());
  t.equal(err!.code, 'KEEL_CONFIG_INVALID');
});

/** The compile error src/common/re2 gives for `pattern` (its wording is that module's business). */
function regexError(pattern: string): string {
  const c = compileRe2(pattern);
  if (!('error' in c)) throw new Error(`${pattern} compiled`);
  return c.error;
}

t.test('YAML and JSON syntax errors report line numbers', async (t) => {
  const yamlFile = join(dir, 'broken.yaml');
  writeFileSync(yamlFile, 'node:\n  id: a\nstatic_resources:\n  clusters:\n  - name: x\n   type: STATIC\n');
  t.throws(() => loadBootstrapFile(yamlFile), ConfigError);
  try {
    loadBootstrapFile(yamlFile);
  } catch (e) {
    const p = (e as ConfigError).problems;
    t.ok(p.length >= 1);
    t.match(p[0].path, new RegExp(`^${yamlFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:6:\\d+$`), 'points at line 6');
    t.match(p[0].message, /^invalid YAML: /);
  }

  const dup = problemsOfText('a: 1\nb: 2\na: 3\n', 'dup.yaml');
  t.match(dup[0], /^dup\.yaml:3:1: invalid YAML: .*unique/i, 'duplicate keys are an error, on line 3');

  const jsonFile = join(dir, 'broken.json');
  writeFileSync(jsonFile, '{\n  "node": {\n    "id": "a",\n  }\n}\n');
  try {
    loadBootstrapFile(jsonFile);
    t.fail('expected a ConfigError');
  } catch (e) {
    const p = (e as ConfigError).problems;
    t.equal(p.length, 1);
    t.match(p[0].path, /broken\.json:4:\d+$/, 'points at line 4');
    t.match(p[0].message, /^invalid JSON: /);
  }

  const missing = join(dir, 'missing.yaml');
  try {
    loadBootstrapFile(missing);
    t.fail('expected a ConfigError');
  } catch (e) {
    t.ok(e instanceof ConfigError);
    t.match((e as ConfigError).problems, [{ path: missing, message: /^cannot read the bootstrap file: ENOENT/ }]);
  }
});

function problemsOfText(text: string, name: string): string[] {
  try {
    parseBootstrapText(text, name);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => `${p.path}: ${p.message}`);
    throw e;
  }
  throw new Error('expected a ConfigError');
}

t.test('JSON files, and content starting with { is JSON', async (t) => {
  const raw = withRoutes([{ match: { prefix: '/' }, route: { cluster: 'backend' } }]);
  const file = join(dir, 'bootstrap.json');
  writeFileSync(file, JSON.stringify(raw));
  t.equal(forward(routesOf(loadBootstrapFile(file).bootstrap)[0]).cluster, 'backend');
  const noExt = join(dir, 'bootstrap');
  writeFileSync(noExt, `  ${JSON.stringify(raw, null, 2)}`);
  t.equal(loadBootstrapFile(noExt).bootstrap.clusters.length, 2);
  t.same(problemsOfText('[1, 2]', 'list.yaml'), [': the bootstrap must be an object, got a list']);
});

t.test('lowerCamelCase field names are accepted', async (t) => {
  const camel = {
    node: { id: 'n1' },
    layeredRuntime: { layers: [{ name: 's', staticLayer: { a: { b: 'c' } } }] },
    staticResources: {
      listeners: [
        {
          name: 'l',
          address: { socketAddress: { address: '127.0.0.1', portValue: '8080' } },
          perConnectionBufferLimitBytes: 1000,
          filterChains: [
            {
              filterChainMatch: { serverNames: ['x.com'], destinationPort: 8080 },
              filters: [
                {
                  name: 'envoy.filters.network.http_connection_manager',
                  typedConfig: {
                    '@type': HCM_TYPE,
                    statPrefix: 'p',
                    streamIdleTimeout: '10s',
                    maxRequestHeadersKb: 10,
                    commonHttpProtocolOptions: { idleTimeout: '1s' },
                    httpFilters: [{ name: 'envoy.filters.http.router', typedConfig: ROUTER.typed_config }],
                    routeConfig: {
                      virtualHosts: [
                        {
                          name: 'v',
                          domains: ['*'],
                          requestHeadersToAdd: [{ header: { key: 'x-a', value: '1' }, appendAction: 'ADD_IF_ABSENT', keepEmptyValue: true }],
                          routes: [
                            {
                              match: { safeRegex: { regex: '/a.*' }, caseSensitive: false },
                              route: { cluster: 'c', prefixRewrite: '/b', hostRewriteLiteral: 'h', retryPolicy: { retryOn: '5xx', numRetries: 4 } },
                            },
                          ],
                        },
                      ],
                    },
                  },
                },
              ],
            },
          ],
        },
      ],
      clusters: [
        {
          name: 'c',
          type: 'STRICT_DNS',
          connectTimeout: '2s',
          lbPolicy: 'RANDOM',
          dnsLookupFamily: 'V6_ONLY',
          loadAssignment: { clusterName: 'c', endpoints: [{ lbEndpoints: [{ endpoint: { address: { socketAddress: { address: 'c.local', portValue: 80 } } }, loadBalancingWeight: 7 }] }] },
          circuitBreakers: { thresholds: [{ maxConnections: 5 }] },
          outlierDetection: { consecutive5xx: 9 },
        },
      ],
    },
  };
  const { bootstrap: b } = decodeBootstrap(camel);
  t.same(b.runtime, { 'a.b': 'c' });
  t.same(b.listeners[0].address, { address: '127.0.0.1', port: 8080 });
  t.equal(b.listeners[0].perConnectionBufferLimitBytes, 1000);
  t.match(b.listeners[0].filterChains[0].match, { serverNames: ['x.com'], destinationPort: 8080 });
  t.match(hcmOf(b), { statPrefix: 'p', streamIdleTimeoutMs: 10_000, maxRequestHeadersKb: 10, idleTimeoutMs: 1000 });
  const vh = hcmOf(b).routeConfig!.virtualHosts[0];
  t.same(vh.requestHeadersToAdd, [{ key: 'x-a', value: '1', appendAction: 'ADD_IF_ABSENT', keepEmptyValue: true }]);
  t.same(vh.routes[0].match.path, { kind: 'regex', regex: '/a.*' });
  t.equal(vh.routes[0].match.caseSensitive, false);
  t.match(forward(vh.routes[0]), { cluster: 'c', prefixRewrite: '/b', hostRewriteLiteral: 'h', retryPolicy: { retryOn: ['5xx'], numRetries: 4 } });
  t.match(b.clusters[0], { connectTimeoutMs: 2000, lbPolicy: 'RANDOM', dnsLookupFamily: 'V6_ONLY', outlierDetection: { consecutive5xx: 9 } });
  t.equal(b.clusters[0].endpoints[0].endpoints[0].loadBalancingWeight, 7);
  t.equal(b.clusters[0].circuitBreakers[0].maxConnections, 5);

  const both = withHcm({ route_config: {}, stat_prefix: 'a', statPrefix: 'b' });
  t.same(problems(both), [
    `static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefix: field is set twice, as 'stat_prefix' and as 'statPrefix'`,
  ]);
});

t.test('durations and numbers in proto3 JSON form', async (t) => {
  const route = (timeout: unknown) => withRoutes([{ match: { prefix: '/' }, route: { cluster: 'backend', timeout } }]);
  const ms = (timeout: unknown) => forward(routesOf(decodeBootstrap(route(timeout)).bootstrap)[0]).timeoutMs;
  t.equal(ms('1.5s'), 1500);
  t.equal(ms('0s'), 0, '0 disables the route timeout');
  t.equal(ms('0.000001s'), 0.001);
  t.equal(ms('3600s'), 3_600_000);
  t.equal(ms({ seconds: 2, nanos: 500_000_000 }), 2500);
  t.equal(ms({ seconds: '3' }), 3000);
  t.equal(ms({ nanos: 250_000_000 }), 250);
  const path = `${VH}.routes[0].route.timeout`;
  t.same(problems(route('5m')), [`${path}: expected a duration such as "1.5s", got the string "5m"`]);
  t.same(problems(route(5)), [`${path}: expected a duration such as "1.5s", got number 5`]);
  t.same(problems(route('-1s')), [`${path}: must not be negative, got '-1s'`]);
  t.same(problems(route('1.1234567891s')), [`${path}: expected a duration such as "1.5s", got the string "1.1234567891s"`]);
  t.same(problems(route({ seconds: 1, millis: 5 })), [`${path}: unknown field 'millis' in duration (expected seconds, nanos)`]);
  t.same(problems(withHcm({ route_config: {} }, [staticCluster('backend', 1, { connect_timeout: '0s' })])), [
    'static_resources.clusters[0].connect_timeout: must be greater than 0s',
  ]);

  // integers as strings, enums as numbers, wrappers as plain values
  const { bootstrap: b } = decodeBootstrap(
    withHcm(
      { route_config: {}, max_request_headers_kb: '80', codec_type: 2, generate_request_id: false },
      [staticCluster('backend', 1, { lb_policy: 5, per_connection_buffer_limit_bytes: '4096' })],
    ),
  );
  t.match(hcmOf(b), { maxRequestHeadersKb: 80, codecType: 'HTTP2', generateRequestId: false });
  t.match(b.clusters[0], { lbPolicy: 'MAGLEV', perConnectionBufferLimitBytes: 4096 });

  const P = 'static_resources.listeners[0].filter_chains[0].filters[0].typed_config';
  t.same(problems(withHcm({ route_config: {}, max_request_headers_kb: 9000, xff_num_trusted_hops: -1, use_remote_address: 'yes', codec_type: 'HTTP3' })), [
    `${P}.codec_type: HTTP3 is not supported by keel (supported: AUTO, HTTP1, HTTP2)`,
    `${P}.use_remote_address: expected true or false, got the string "yes"`,
    `${P}.xff_num_trusted_hops: -1 is out of range (0..4294967295)`,
    `${P}.max_request_headers_kb: must be at most 8192, got 9000`,
  ]);
  t.same(problems(withHcm({ route_config: {}, server_header_transformation: 'DROP' })), [
    `${P}.server_header_transformation: unknown value 'DROP' (expected one of OVERWRITE, APPEND_IF_ABSENT, PASS_THROUGH)`,
  ]);
});

t.test('DataSource: file, inline string, inline bytes, environment variable', async (t) => {
  process.env.KEEL_TEST_BODY = 'from env';
  t.teardown(() => delete process.env.KEEL_TEST_BODY);
  const dr = (body: unknown) => ({ match: { prefix: '/' }, direct_response: { status: 503, body } });
  const { bootstrap: b } = decodeBootstrap(
    withRoutes([
      dr({ filename: join(dir, 'body.txt') }),
      dr({ inline_string: 'hello' }),
      dr({ inline_bytes: Buffer.from('bytes!').toString('base64') }),
      dr({ environment_variable: 'KEEL_TEST_BODY' }),
      { match: { prefix: '/' }, direct_response: { status: 204 } },
    ]),
  );
  t.same(
    routesOf(b).map((r) => r.action),
    [
      { kind: 'direct_response', status: 503, body: 'maintenance\n' },
      { kind: 'direct_response', status: 503, body: 'hello' },
      { kind: 'direct_response', status: 503, body: 'bytes!' },
      { kind: 'direct_response', status: 503, body: 'from env' },
      { kind: 'direct_response', status: 204 },
    ],
  );

  const missing = join(dir, 'nope.txt');
  const got = problems(
    withRoutes([
      dr({ filename: missing }),
      dr({ environment_variable: 'KEEL_TEST_UNSET_VARIABLE' }),
      dr({ inline_bytes: 'not base64!' }),
      dr({ filename: join(dir, 'big.txt') }),
      dr({ inline_string: 'a', filename: 'b' }),
    ]),
  );
  t.equal(got.length, 5);
  t.match(got[0], `${VH}.routes[0].direct_response.body.filename: cannot read '${missing}': ENOENT`);
  t.equal(got[1], `${VH}.routes[1].direct_response.body.environment_variable: environment variable 'KEEL_TEST_UNSET_VARIABLE' is not set`);
  t.equal(got[2], `${VH}.routes[2].direct_response.body.inline_bytes: expected base64-encoded bytes`);
  t.equal(got[3], `${VH}.routes[3].direct_response.body: the body is 5000 bytes, more than max_direct_response_body_size_bytes (4096)`);
  t.equal(got[4], `${VH}.routes[4].direct_response.body: exactly one of filename, inline_bytes, inline_string, environment_variable must be set`);
});

t.test('every route match form', async (t) => {
  const m = (match: Record<string, unknown>) => ({ match, route: { cluster: 'backend' } });
  const { bootstrap: b } = decodeBootstrap(
    withRoutes([
      m({ prefix: '/p' }),
      m({ path: '/exact', case_sensitive: false }),
      m({ safe_regex: { google_re2: {}, regex: '/r/[0-9]+' } }),
      m({ path_separated_prefix: '/api' }),
      m({ connect_matcher: {} }),
      m({
        prefix: '/',
        headers: [
          { name: 'X-Exact', exact_match: 'a' },
          { name: 'x-re', safe_regex_match: { regex: 'b+' } },
          { name: 'x-range', range_match: { start: '-5', end: 10 } },
          { name: 'x-present', present_match: true, invert_match: true },
          { name: 'x-prefix', prefix_match: 'p' },
          { name: 'x-suffix', suffix_match: 's' },
          { name: 'x-contains', contains_match: 'c' },
          { name: 'x-sm', string_match: { suffix: '.COM', ignore_case: true }, treat_missing_header_as_empty: true },
          { name: 'x-sm-re', string_match: { safe_regex: { regex: 'x|y' } } },
          { name: ':method' },
        ],
        query_parameters: [
          { name: 'q', string_match: { exact: 'v' } },
          { name: 'flag', present_match: true },
          { name: 'bare' },
        ],
        grpc: {},
        runtime_fraction: { default_value: { numerator: 25, denominator: 'TEN_THOUSAND' }, runtime_key: 'routing.canary' },
        dynamic_metadata: [
          { filter: 'envoy.filters.http.jwt_authn', path: [{ key: 'claims' }, { key: 'sub' }], value: { string_match: { exact: 'alice' } } },
          { filter: 'f', path: [{ key: 'n' }], value: { double_match: { range: { start: 1, end: 2.5 } } }, invert: true },
          { filter: 'f', path: [{ key: 'e' }], value: { double_match: { exact: 3 } } },
          { filter: 'f', path: [{ key: 'b' }], value: { bool_match: true } },
          { filter: 'f', path: [{ key: 'p' }], value: { present_match: true } },
          { filter: 'f', path: [{ key: 'z' }], value: { null_match: {} } },
          { filter: 'f', path: [{ key: 'l' }], value: { list_match: { one_of: { string_match: { prefix: 'a' } } } } },
        ],
        tls_context: { presented: true, validated: false },
      }),
    ]),
  );
  const r = routesOf(b);
  t.same(
    r.slice(0, 5).map((x) => [x.match.path, x.match.caseSensitive]),
    [
      [{ kind: 'prefix', value: '/p' }, true],
      [{ kind: 'path', value: '/exact' }, false],
      [{ kind: 'regex', regex: '/r/[0-9]+' }, true],
      [{ kind: 'path_separated_prefix', value: '/api' }, true],
      [{ kind: 'connect' }, true],
    ],
  );
  const full = r[5].match;
  const base = { invert: false, treatMissingAsEmpty: false };
  t.same(full.headers, [
    { name: 'x-exact', ...base, kind: 'string', match: { kind: 'exact', value: 'a', ignoreCase: false } },
    { name: 'x-re', ...base, kind: 'string', match: { kind: 'regex', regex: 'b+', ignoreCase: false } },
    { name: 'x-range', ...base, kind: 'range', range: { start: -5, end: 10 } },
    { name: 'x-present', invert: true, treatMissingAsEmpty: false, kind: 'present', present: true },
    { name: 'x-prefix', ...base, kind: 'string', match: { kind: 'prefix', value: 'p', ignoreCase: false } },
    { name: 'x-suffix', ...base, kind: 'string', match: { kind: 'suffix', value: 's', ignoreCase: false } },
    { name: 'x-contains', ...base, kind: 'string', match: { kind: 'contains', value: 'c', ignoreCase: false } },
    { name: 'x-sm', invert: false, treatMissingAsEmpty: true, kind: 'string', match: { kind: 'suffix', value: '.COM', ignoreCase: true } },
    { name: 'x-sm-re', ...base, kind: 'string', match: { kind: 'regex', regex: 'x|y', ignoreCase: false } },
    { name: ':method', ...base, kind: 'present', present: true },
  ]);
  t.same(full.queryParameters, [{ name: 'q', match: { kind: 'exact', value: 'v', ignoreCase: false } }, { name: 'flag', present: true }, { name: 'bare' }]);
  t.equal(full.grpc, true);
  t.same(full.runtimeFraction, { defaultValue: { numerator: 25, denominator: 10_000 }, runtimeKey: 'routing.canary' });
  t.same(full.dynamicMetadata, [
    { filter: 'envoy.filters.http.jwt_authn', path: ['claims', 'sub'], value: { kind: 'string', match: { kind: 'exact', value: 'alice', ignoreCase: false } }, invert: false },
    { filter: 'f', path: ['n'], value: { kind: 'double_range', range: { start: 1, end: 2.5 } }, invert: true },
    { filter: 'f', path: ['e'], value: { kind: 'double_exact', value: 3 }, invert: false },
    { filter: 'f', path: ['b'], value: { kind: 'bool', value: true }, invert: false },
    { filter: 'f', path: ['p'], value: { kind: 'present', present: true }, invert: false },
    { filter: 'f', path: ['z'], value: { kind: 'null' }, invert: false },
    { filter: 'f', path: ['l'], value: { kind: 'list', oneOf: { kind: 'string', match: { kind: 'prefix', value: 'a', ignoreCase: false } } }, invert: false },
  ]);
  t.same(full.tlsContext, { presented: true, validated: false });

  const M = (i: number) => `${VH}.routes[${i}].match`;
  t.same(
    problems(
      withRoutes([
        m({}),
        m({ path_separated_prefix: '/api/' }),
        m({ prefix: '/', headers: [{ name: 'x', exact_match: 'a', prefix_match: 'b' }] }),
        m({ prefix: '/', headers: [{ name: 'x', prefix_match: '' }, { name: 'bad name' }] }),
        m({ prefix: '/', query_parameters: [{ name: 'q', string_match: {} }] }),
        m({ prefix: '/', runtime_fraction: { runtime_key: 'k' } }),
        m({ prefix: '/', dynamic_metadata: [{ filter: 'f', value: { bool_match: true } }] }),
        m({ prefix: '/', headers: [{ name: 'x', string_match: { safe_regex: { regex: '(?<!a)b' } } }] }),
        { route: { cluster: 'backend' } },
      ]),
    ),
    [
      `${M(0)}: exactly one of prefix, path, safe_regex, path_separated_prefix, connect_matcher must be set`,
      `${M(1)}.path_separated_prefix: '/api/' must be a path without '?' or '#' that does not end in '/'`,
      `${M(2)}.headers[0]: exactly one of exact_match, safe_regex_match, range_match, present_match, prefix_match, suffix_match, contains_match, string_match must be set`,
      `${M(3)}.headers[0].prefix_match: must not be empty`,
      `${M(3)}.headers[1].name: 'bad name' is not a valid HTTP header name`,
      `${M(4)}.query_parameters[0].string_match: exactly one of exact, prefix, suffix, safe_regex, contains, custom must be set`,
      `${M(5)}.runtime_fraction.default_value: default_value is required`,
      `${M(6)}.dynamic_metadata[0].path: path is required`,
      `${M(7)}.headers[0].string_match.safe_regex.regex: invalid regex: ${regexError('(?<!a)b')}`,
      `${M(8)}: match is required`,
    ],
  );
});

t.test('every route action form', async (t) => {
  const { bootstrap: b } = decodeBootstrap(
    withRoutes([
      { match: { prefix: '/a' }, route: { cluster_header: 'X-Cluster', cluster_not_found_response_code: 'NOT_FOUND', auto_host_rewrite: true } },
      {
        match: { prefix: '/b' },
        route: {
          weighted_clusters: {
            clusters: [
              { name: 'backend', weight: 30, request_headers_to_add: [{ header: { key: 'x-w', value: 'b' } }], host_rewrite_literal: 'b.local' },
              { name: 'other', weight: 70, response_headers_to_remove: ['x-drop'] },
              { cluster_header: 'x-pick', weight: 0 },
            ],
            total_weight: 100,
            runtime_key_prefix: 'routing.split',
            header_name: 'x-random',
          },
          regex_rewrite: { pattern: { regex: '^/b/(.*)$' }, substitution: '/\\1' },
          host_rewrite_header: 'X-Host',
          idle_timeout: '30s',
          max_stream_duration: { max_stream_duration: '60s' },
          hash_policy: [
            { header: { header_name: 'X-User' } },
            { cookie: { name: 'session' }, terminal: true },
            { connection_properties: { source_ip: true } },
            { query_parameter: { name: 'id' } },
          ],
          upgrade_configs: [{ upgrade_type: 'websocket', enabled: false }, { upgrade_type: 'CONNECT' }],
          cluster_not_found_response_code: 'INTERNAL_SERVER_ERROR',
          retry_policy: {
            retry_on: 'retriable-headers',
            per_try_idle_timeout: '1s',
            retry_back_off: { base_interval: '0.025s', max_interval: '0.1s' },
            retriable_headers: [{ name: 'x-retry', exact_match: 'yes' }],
            retriable_request_headers: [{ name: ':method', exact_match: 'GET' }],
          },
        },
      },
      { match: { prefix: '/c' }, route: { cluster: 'backend', host_rewrite_path_regex: { pattern: { regex: '^/c/([^/]+)' }, substitution: '\\1.svc' } } },
      { match: { prefix: '/d' }, redirect: { scheme_redirect: 'HTTP', host_redirect: 'example.com', port_redirect: 8080, path_redirect: '/new', response_code: 'FOUND', strip_query: true } },
      { match: { prefix: '/e' }, redirect: { prefix_rewrite: '/e2', response_code: 'SEE_OTHER' } },
      { match: { prefix: '/f' }, redirect: { regex_rewrite: { pattern: { regex: 'f' }, substitution: 'g' }, response_code: 'TEMPORARY_REDIRECT' } },
      { match: { prefix: '/g' }, redirect: { host_redirect: 'h.example' } },
      { match: { prefix: '/h' }, direct_response: { status: 200, body: { inline_string: 'ok' } } },
      { match: { prefix: '/i' }, non_forwarding_action: {} },
      {
        name: 'headers',
        match: { prefix: '/j' },
        route: { cluster: 'backend' },
        metadata: { filter_metadata: { 'istio.io': { name: 'j' } } },
        typed_per_filter_config: { 'envoy.filters.http.cors': { '@type': 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy' } },
        request_headers_to_add: [
          { header: { key: 'x-append', value: 'a' } },
          { header: { key: 'x-overwrite', value: '%REQ(x-a)%' }, append: false },
          { header: { key: 'x-if-absent', value: 'c' }, append_action: 'ADD_IF_ABSENT' },
          { header: { key: 'x-raw', raw_value: Buffer.from('raw').toString('base64') }, append: true, keep_empty_value: true },
        ],
        request_headers_to_remove: ['X-Secret'],
        response_headers_to_add: [{ header: { key: 'x-resp', value: 'r' }, append_action: 'OVERWRITE_IF_EXISTS' }],
        response_headers_to_remove: ['server'],
      },
    ]),
  );
  const r = routesOf(b);
  t.match(forward(r[0]), { clusterHeader: 'x-cluster', clusterNotFoundResponseCode: 404, autoHostRewrite: true });
  t.equal(forward(r[0]).cluster, undefined);
  const wc = forward(r[1]);
  t.same(wc.weightedClusters, {
    clusters: [
      {
        name: 'backend',
        weight: 30,
        hostRewriteLiteral: 'b.local',
        requestHeadersToAdd: [{ key: 'x-w', value: 'b', appendAction: 'APPEND_IF_EXISTS_OR_ADD', keepEmptyValue: false }],
        requestHeadersToRemove: [],
        responseHeadersToAdd: [],
        responseHeadersToRemove: [],
      },
      { name: 'other', weight: 70, requestHeadersToAdd: [], requestHeadersToRemove: [], responseHeadersToAdd: [], responseHeadersToRemove: ['x-drop'] },
      { name: '', clusterHeader: 'x-pick', weight: 0, requestHeadersToAdd: [], requestHeadersToRemove: [], responseHeadersToAdd: [], responseHeadersToRemove: [] },
    ],
    totalWeight: 100,
    runtimeKeyPrefix: 'routing.split',
    headerName: 'x-random',
  });
  t.match(wc, {
    clusterNotFoundResponseCode: 500,
    regexRewrite: { regex: '^/b/(.*)$', substitution: '/\\1' },
    hostRewriteHeader: 'x-host',
    idleTimeoutMs: 30_000,
    maxStreamDurationMs: 60_000,
    upgradeConfigs: [
      { upgradeType: 'websocket', enabled: false },
      { upgradeType: 'connect', enabled: true },
    ],
    retryPolicy: {
      retryOn: ['retriable-headers'],
      perTryIdleTimeoutMs: 1000,
      retryBackOff: { baseIntervalMs: 25, maxIntervalMs: 100 },
      retriableHeaders: [{ name: 'x-retry', kind: 'string', match: { kind: 'exact', value: 'yes' } }],
      retriableRequestHeaders: [{ name: ':method', kind: 'string', match: { kind: 'exact', value: 'GET' } }],
    },
  });
  t.same(wc.hashPolicy, [
    { kind: 'header', name: 'x-user', terminal: false },
    { kind: 'cookie', name: 'session', terminal: true },
    { kind: 'source_ip', name: '', terminal: false },
    { kind: 'query_parameter', name: 'id', terminal: false },
  ]);
  t.same(forward(r[2]).hostRewritePathRegex, { regex: '^/c/([^/]+)', substitution: '\\1.svc' });
  t.same(r[3].action, { kind: 'redirect', schemeRedirect: 'http', hostRedirect: 'example.com', portRedirect: 8080, pathRedirect: '/new', responseCode: 302, stripQuery: true });
  t.same(r[4].action, { kind: 'redirect', prefixRewrite: '/e2', responseCode: 303, stripQuery: false });
  t.same(r[5].action, { kind: 'redirect', regexRewrite: { regex: 'f', substitution: 'g' }, responseCode: 307, stripQuery: false });
  t.same(r[6].action, { kind: 'redirect', hostRedirect: 'h.example', responseCode: 301, stripQuery: false });
  t.same(r[7].action, { kind: 'direct_response', status: 200, body: 'ok' });
  t.same(r[8].action, { kind: 'non_forwarding' });
  const h = r[9];
  t.equal(h.name, 'headers');
  t.same(h.metadata, { 'istio.io': { name: 'j' } });
  t.same(Object.keys(h.typedPerFilterConfig), ['envoy.filters.http.cors']);
  t.same(h.requestHeadersToAdd, [
    { key: 'x-append', value: 'a', appendAction: 'APPEND_IF_EXISTS_OR_ADD', keepEmptyValue: false },
    { key: 'x-overwrite', value: '%REQ(x-a)%', appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD', keepEmptyValue: false },
    { key: 'x-if-absent', value: 'c', appendAction: 'ADD_IF_ABSENT', keepEmptyValue: false },
    { key: 'x-raw', value: 'raw', appendAction: 'APPEND_IF_EXISTS_OR_ADD', keepEmptyValue: true },
  ]);
  t.same(h.requestHeadersToRemove, ['x-secret']);
  t.same(h.responseHeadersToAdd, [{ key: 'x-resp', value: 'r', appendAction: 'OVERWRITE_IF_EXISTS', keepEmptyValue: false }]);
  t.same(h.responseHeadersToRemove, ['server']);

  const A = (i: number) => `${VH}.routes[${i}]`;
  const R = (route: Record<string, unknown>) => ({ match: { prefix: '/' }, route });
  t.same(
    problems(
      withRoutes([
        { match: { prefix: '/' } },
        R({ cluster: 'backend', cluster_header: 'x' }),
        R({ weighted_clusters: { clusters: [{ name: 'backend', weight: 0 }] } }),
        R({ weighted_clusters: { clusters: [{ name: 'backend', weight: 1 }, { name: 'ghost', weight: 2 }], total_weight: 4 } }),
        R({ cluster: 'backend', prefix_rewrite: '/a', regex_rewrite: { pattern: { regex: 'a' }, substitution: 'b' } }),
        R({ cluster: 'backend', host_rewrite_literal: 'a', auto_host_rewrite: true }),
        R({ cluster: 'backend', regex_rewrite: { pattern: { regex: 'a' }, substitution: '\\3' } }),
        { match: { prefix: '/' }, redirect: { path_redirect: '/a', prefix_rewrite: '/b', response_code: 'GONE' } },
        {
          match: { prefix: '/' },
          route: { cluster: 'backend' },
          request_headers_to_add: [{ header: { key: ':authority', value: 'x' } }, { header: { key: 'Host', value: 'x' } }, { header: { key: 'x-b', value: 'x' }, append: true, append_action: 'ADD_IF_ABSENT' }],
          request_headers_to_remove: [':path', 'host'],
        },
        R({ cluster: 'backend', retry_policy: { retry_back_off: { max_interval: '1s' } } }),
      ]),
    ),
    [
      `${A(0)}: exactly one of route, redirect, direct_response, filter_action, non_forwarding_action must be set`,
      `${A(1)}.route: exactly one of cluster, cluster_header, weighted_clusters, cluster_specifier_plugin, inline_cluster_specifier_plugin must be set`,
      `${A(2)}.route.weighted_clusters.clusters: the sum of the weights must be greater than 0`,
      `${A(3)}.route.weighted_clusters.clusters[1].name: unknown weighted cluster 'ghost' (not defined in static_resources.clusters)`,
      `${A(3)}.route.weighted_clusters.total_weight: the weights add up to 3, not total_weight 4`,
      `${A(4)}.route: cannot specify both prefix_rewrite and regex_rewrite`,
      `${A(5)}.route: exactly one of host_rewrite_literal, auto_host_rewrite, host_rewrite_header, host_rewrite_path_regex must be set`,
      `${A(6)}.route.regex_rewrite.substitution: invalid substitution: ${substitutionError('a', '\\3')}`,
      `${A(7)}.redirect: exactly one of path_redirect, prefix_rewrite, regex_rewrite must be set`,
      `${A(7)}.redirect.response_code: unknown value 'GONE' (expected one of MOVED_PERMANENTLY, FOUND, SEE_OTHER, TEMPORARY_REDIRECT, PERMANENT_REDIRECT)`,
      `${A(8)}.request_headers_to_add[0].header.key: ':-prefixed or host headers may not be modified (':authority')`,
      `${A(8)}.request_headers_to_add[1].header.key: ':-prefixed or host headers may not be modified ('Host')`,
      `${A(8)}.request_headers_to_add[2].append: both append and append_action are set and it's not allowed`,
      `${A(8)}.request_headers_to_remove[0]: ':-prefixed or host headers may not be removed (':path')`,
      `${A(8)}.request_headers_to_remove[1]: ':-prefixed or host headers may not be removed ('host')`,
      `${A(9)}.route.retry_policy.retry_back_off.base_interval: base_interval is required`,
    ],
  );
});

function substitutionError(pattern: string, substitution: string): string {
  const c = compileRe2(pattern, { global: true });
  if ('error' in c) throw new Error(c.error);
  const s = compileSubstitution(substitution, c.groupCount);
  if (!('error' in s)) throw new Error(`${substitution} compiled`);
  return s.error;
}

t.test('route table checks: domains, names, cluster references', async (t) => {
  const vhs = (virtual_hosts: unknown[], extra: Record<string, unknown> = {}) => withHcm({ route_config: { name: 'main', virtual_hosts, ...extra } });
  const vh = (name: string, domains: string[], cluster = 'backend') => ({ name, domains, routes: [{ match: { prefix: '/' }, route: { cluster } }] });
  t.same(problems(vhs([vh('a', ['*']), vh('b', ['*', 'x.com']), vh('a', ['*.Y.com', '*.y.com', 'z.*'])])), [
    `${RT}.virtual_hosts[2].name: duplicate virtual host name 'a' (also ${RT}.virtual_hosts[0])`,
    `${RT}.virtual_hosts[1].domains[0]: only a single wildcard domain is permitted in route table 'main' (also ${RT}.virtual_hosts[0].domains[0])`,
    `${RT}.virtual_hosts[2].domains[1]: domain '*.y.com' is used by two virtual hosts in route table 'main' (also ${RT}.virtual_hosts[2].domains[0])`,
  ]);
  t.same(problems(vhs([{ name: 'e', domains: [], routes: [] }, { domains: ['q'] }])), [
    `${RT}.virtual_hosts[0].domains: at least one domain is required`,
    `${RT}.virtual_hosts[1].name: name is required`,
  ]);
  // validate_clusters: false turns the cluster check off (as for RDS route tables)
  const { bootstrap: b } = decodeBootstrap(vhs([vh('a', ['*'], 'later')], { validate_clusters: false }));
  t.equal(forward(routesOf(b)[0]).cluster, 'later');
  t.same(problems(vhs([vh('a', ['*'], 'later')])), [`${RT}.virtual_hosts[0].routes[0].route.cluster: unknown cluster 'later' (not defined in static_resources.clusters)`]);
});

t.test('unknown filters, sockets and extensions are reported by name', async (t) => {
  const F = 'static_resources.listeners[0].filter_chains[0]';
  const H = `${F}.filters[0].typed_config`;
  const skipped = decodeBootstrap(
    withHcm({
      route_config: {},
      http_filters: [
        { name: 'istio.metadata_exchange', typed_config: { '@type': 'type.googleapis.com/udpa.type.v1.TypedStruct', type_url: 'type.googleapis.com/io.istio.http.peer_metadata.Config', value: {} } },
        { name: 'envoy.filters.http.grpc_stats', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig', emit_filter_state: true } },
        { name: 'envoy.filters.http.lua', is_optional: true, typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua' } },
        { name: 'envoy.filters.http.buffer', disabled: true, typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer' } },
        ROUTER,
      ],
    }),
  );
  t.same(hcmOf(skipped.bootstrap).httpFilters.map((f) => f.name), ['envoy.filters.http.router']);
  t.same(skipped.warnings, [
    `${H}.http_filters[0]: skipping HTTP filter 'istio.metadata_exchange' (@type io.istio.http.peer_metadata.Config): keel does not implement this telemetry filter yet`,
    `${H}.http_filters[1]: skipping HTTP filter 'envoy.filters.http.grpc_stats' (@type envoy.extensions.filters.http.grpc_stats.v3.FilterConfig): keel does not implement this telemetry filter yet`,
    `${H}.http_filters[2]: skipping optional HTTP filter 'envoy.filters.http.lua' (@type envoy.extensions.filters.http.lua.v3.Lua): not supported by keel`,
    `${H}.http_filters[3]: skipping disabled HTTP filter 'envoy.filters.http.buffer' (@type envoy.extensions.filters.http.buffer.v3.Buffer): not supported by keel`,
  ]);
  t.ok(SKIPPED_HTTP_FILTERS.has('istio.stats'));

  t.same(problems(withHcm({ route_config: {}, http_filters: [{ name: 'envoy.filters.http.ext_authz', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz' } }] })), [
    `${H}.http_filters[0]: unsupported HTTP filter 'envoy.filters.http.ext_authz' (@type envoy.extensions.filters.http.ext_authz.v3.ExtAuthz)`,
    `${H}.http_filters: the last HTTP filter must be envoy.filters.http.router`,
  ]);
  t.same(problems(withHcm({ route_config: {}, http_filters: [] })), [`${H}.http_filters: the last HTTP filter must be envoy.filters.http.router`]);

  const listener = (patch: Record<string, unknown>) => {
    const raw = withHcm({ route_config: {} });
    Object.assign((raw.static_resources as { listeners: Record<string, unknown>[] }).listeners[0], patch);
    return raw;
  };
  const chain = (patch: Record<string, unknown>) => {
    const raw = withHcm({ route_config: {} });
    const l = (raw.static_resources as { listeners: { filter_chains: Record<string, unknown>[] }[] }).listeners[0];
    Object.assign(l.filter_chains[0], patch);
    return raw;
  };
  t.same(problems(listener({ listener_filters: [{ name: 'envoy.filters.listener.proxy_protocol', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol' } }] })), [
    `static_resources.listeners[0].listener_filters[0]: unsupported listener filter 'envoy.filters.listener.proxy_protocol' (@type envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol)`,
  ]);
  t.same(problems(chain({ transport_socket: { name: 'envoy.transport_sockets.alts', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts' } } })), [
    `${F}.transport_socket: unsupported transport socket 'envoy.transport_sockets.alts' (@type envoy.extensions.transport_sockets.alts.v3.Alts)`,
  ]);
  t.same(
    problems(
      chain({
        transport_socket: {
          name: 'envoy.transport_sockets.tls',
          typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext' },
        },
      }),
    ),
    [`${F}.transport_socket.typed_config: a listener TLS transport socket takes a DownstreamTlsContext, not envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`],
  );
  t.same(
    problems(chain({ transport_socket: { name: 'envoy.transport_sockets.tls', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext' } } })),
    [`${F}.transport_socket.typed_config.common_tls_context: a server TLS context needs a certificate (tls_certificates or tls_certificate_sds_secret_configs)`],
  );
  t.same(problems(chain({ filters: [{ name: 'envoy.filters.network.redis_proxy' }] })), [`${F}.filters[0]: unknown network filter 'envoy.filters.network.redis_proxy' (@type none)`]);
  t.same(problems(chain({ filters: [] })), [`${F}.filters: a filter chain needs a terminal network filter (envoy.filters.network.http_connection_manager or envoy.filters.network.tcp_proxy)`]);
  t.same(problems(withHcm({ route_config: {} }, [staticCluster('backend', 1, { typed_extension_protocol_options: { 'envoy.extensions.upstreams.http.v3.Nope': { '@type': 'type.googleapis.com/x.Nope' } } })])), [
    `static_resources.clusters[0].typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.Nope"]: unsupported protocol options 'envoy.extensions.upstreams.http.v3.Nope' (@type x.Nope)`,
  ]);
});

t.test('listener and cluster validation', async (t) => {
  const L = 'static_resources.listeners[0]';
  const C = 'static_resources.clusters[0]';
  const raw = withHcm({ route_config: {} });
  const l = (raw.static_resources as { listeners: Record<string, unknown>[] }).listeners;
  l[0].address = { socket_address: { address: 'localhost', port_value: 80 } };
  l.push({ name: 'same-port', address: { socket_address: { address: '0.0.0.0', port_value: 8000 } }, filter_chains: (l[0] as { filter_chains: unknown }).filter_chains });
  l.push({ name: 'no-chains', address: { socket_address: { address: '0.0.0.0', port_value: 8001 } } });
  l.push({ name: 'dup-chain', address: { socket_address: { address: '0.0.0.0', port_value: 8002 } }, filter_chains: [l[0].filter_chains, l[0].filter_chains].flat() });
  t.same(problems(raw), [
    `${L}.address.socket_address.address: 'localhost' is not an IP address (listeners bind to IP addresses)`,
    `static_resources.listeners[2]: no filter chains specified (filter_chains or default_filter_chain)`,
    `static_resources.listeners[3].filter_chains[1].filter_chain_match: multiple filter chains with the same matching rules (also static_resources.listeners[3].filter_chains[0])`,
  ]);

  const twice = withHcm({ route_config: {} });
  const ls = (twice.static_resources as { listeners: Record<string, unknown>[] }).listeners;
  ls.push({ ...ls[0], name: 'second' });
  t.same(problems(twice), [`static_resources.listeners[1].address: listener 'second' has the same address as static_resources.listeners[0]`]);

  const cl = (extra: Record<string, unknown>, name = 'backend') => withHcm({ route_config: {} }, [staticCluster(name, 1, extra)]);
  t.same(problems(cl({ type: 'ORIGINAL_DST' })), [`${C}.load_assignment: ORIGINAL_DST clusters must have no load assignment configured`]);
  t.same(problems(withHcm({ route_config: {} }, [{ name: 'o', type: 'ORIGINAL_DST', lb_policy: 'ROUND_ROBIN' }])), [
    `${C}.lb_policy: lb_policy ROUND_ROBIN is not valid for cluster type ORIGINAL_DST (only CLUSTER_PROVIDED is allowed)`,
  ]);
  t.same(problems(cl({ lb_policy: 'CLUSTER_PROVIDED' })), [`${C}.lb_policy: lb_policy CLUSTER_PROVIDED is not valid for cluster type STATIC`]);
  t.same(problems(cl({ type: 'EDS' })), [`${C}.eds_cluster_config: EDS clusters need eds_cluster_config`]);
  t.same(problems(cl({ lb_policy: 'LOAD_BALANCING_POLICY_CONFIG' })), [
    `${C}.lb_policy: LOAD_BALANCING_POLICY_CONFIG is not supported by keel (supported: ROUND_ROBIN, LEAST_REQUEST, RING_HASH, RANDOM, MAGLEV, CLUSTER_PROVIDED)`,
  ]);
  t.same(problems(cl({ dns_refresh_rate: '0.001s', common_lb_config: { healthy_panic_threshold: { value: 101 } } })), [
    `${C}.common_lb_config.healthy_panic_threshold.value: 101 is out of range (0..100)`,
    `${C}.dns_refresh_rate: must be greater than 1ms`,
  ]);
  t.same(
    problems(cl({ http2_protocol_options: {}, typed_extension_protocol_options: { 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': { '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions', explicit_http_config: { http_protocol_options: {} } } } })),
    [
      `${C}.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]: cannot be combined with the deprecated cluster fields http2_protocol_options`,
    ],
  );
  t.same(problems(cl({ http2_protocol_options: { connection_keepalive: { interval: '10s' } } })), [`${C}.http2_protocol_options.connection_keepalive.timeout: timeout is required`]);
  t.same(problems(withHcm({ route_config: {} }, [{ name: '' }])), [`${C}.name: name is required`]);
  t.same(
    problems(
      withHcm({ route_config: {} }, [
        { name: 'x', type: 'STATIC', load_assignment: { endpoints: [{ priority: 200, lb_endpoints: [{ endpoint: { address: { socket_address: { address: '10.0.0.1', port_value: 1 } } }, load_balancing_weight: 0 }] }] } },
      ]),
    ),
    [
      `${C}.load_assignment.cluster_name: cluster_name is required`,
      `${C}.load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight: 0 is out of range (1..4294967295)`,
      `${C}.load_assignment.endpoints[0].priority: 200 is out of range (0..128)`,
    ],
  );
  t.same(
    problems(
      cl({
        transport_socket: {
          name: 'envoy.transport_sockets.tls',
          typed_config: {
            '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
            common_tls_context: { validation_context: { match_typed_subject_alt_names: [{ san_type: 'DNS', matcher: { exact: 'a' } }] } },
          },
        },
      }),
    ),
    [`${C}.transport_socket.typed_config.common_tls_context: SAN-based verification of peer certificates without a trusted CA is insecure and not allowed`],
  );
});

t.test('static secrets resolve SDS references without sds_config', async (t) => {
  const raw = withHcm({ route_config: {} });
  const sr = raw.static_resources as Record<string, unknown> & { listeners: { filter_chains: Record<string, unknown>[] }[] };
  sr.secrets = [
    { name: 'server', tls_certificate: { certificate_chain: { inline_string: CERT }, private_key: { filename: join(dir, 'key.pem') } } },
    { name: 'ca', validation_context: { trusted_ca: { inline_string: CA } } },
  ];
  sr.listeners[0].filter_chains[0].transport_socket = {
    name: 'envoy.transport_sockets.tls',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
      common_tls_context: { tls_certificate_sds_secret_configs: [{ name: 'server' }], validation_context_sds_secret_config: { name: 'ca' } },
    },
  };
  const tls = decodeBootstrap(raw).bootstrap.listeners[0].filterChains[0].tls!;
  t.same(tls.certificates, [{ certChain: CERT, privateKey: KEY }]);
  t.same(tls.sdsCertificateNames, []);
  t.same(tls.validation, { trustedCa: CA, matchSubjectAltNames: [] });
  t.equal(tls.sdsValidationName, undefined);

  (sr.listeners[0].filter_chains[0].transport_socket as { typed_config: { common_tls_context: unknown } }).typed_config.common_tls_context = {
    tls_certificate_sds_secret_configs: [{ name: 'missing' }],
  };
  t.same(problems(raw), [
    `static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].name: unknown static secret 'missing'`,
    `static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.common_tls_context: a server TLS context needs a certificate (tls_certificates or tls_certificate_sds_secret_configs)`,
  ]);
});

t.test('ignored and unknown fields', async (t) => {
  const raw = withHcm({ route_config: {}, tracing: {}, bogus_option: 1 });
  (raw as Record<string, unknown>).watchdog = {};
  (raw as Record<string, unknown>).node = { id: 'x', user_agent_name: 'envoy', flavour: 'y' };
  t.same(problems(raw), [
    `node: unknown field 'flavour'`,
    `static_resources.listeners[0].filter_chains[0].filters[0].typed_config: unknown field 'bogus_option'`,
  ]);
  const ok = withHcm({ route_config: {}, request_id_extension: {} });
  (ok as Record<string, unknown>).watchdog = {};
  t.same(decodeBootstrap(ok).warnings, [
    `static_resources.listeners[0].filter_chains[0].filters[0].typed_config.request_id_extension: ignored: x-request-id is always a UUID4`,
    'watchdog: ignored: keel has no watchdog',
  ]);
  t.same(problems({ static_resources: { listeners: {} }, layered_runtime: { layers: [{ name: 'd', disk_layer: {} }] } }), [
    'layered_runtime.layers[0].disk_layer: disk_layer is not supported by keel (static_layer and admin_layer only)',
    'static_resources.listeners: expected a list, got an object',
  ]);
  t.same(problems('nope'), [': the bootstrap must be an object, got string']);
});

t.test('load balancer options are decoded (least request, ring hash, maglev)', async (t) => {
  const yaml = (extra: string) => `
static_resources:
  clusters:
  - name: c
    type: STATIC
    lb_policy: RING_HASH
${extra}
    load_assignment: { cluster_name: c, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 1 } } } }] }] }
`;
  const { bootstrap } = parseBootstrapText(
    yaml(`    least_request_lb_config: { choice_count: 3, active_request_bias: { default_value: 0.5, runtime_key: x } }
    ring_hash_lb_config: { minimum_ring_size: 2048, maximum_ring_size: 4096 }
    maglev_lb_config: { table_size: 131 }`),
    'lb.yaml',
  );
  t.same(bootstrap.clusters[0].lbOptions, { choiceCount: 3, activeRequestBias: 0.5, minimumRingSize: 2048, maximumRingSize: 4096, maglevTableSize: 131 });
  t.throws(() => parseBootstrapText(yaml('    ring_hash_lb_config: { minimum_ring_size: 4096, maximum_ring_size: 1024 }'), 'lb.yaml'), /static_resources\.clusters\[0\]\.ring_hash_lb_config\.minimum_ring_size: minimum_ring_size is larger than maximum_ring_size/);
  t.throws(() => parseBootstrapText(yaml('    least_request_lb_config: { choice_count: 1 }'), 'lb.yaml'), /least_request_lb_config\.choice_count/);
});

t.test('cluster HTTP options keel does not apply upstream are named in a warning', async (t) => {
  const { warnings } = parseBootstrapText(
    `
static_resources:
  clusters:
  - name: c
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: { max_connection_duration: 60s, max_stream_duration: 5s, idle_timeout: 30s }
        explicit_http_config: { http_protocol_options: {} }
    load_assignment: { cluster_name: c, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 1 } } } }] }] }
`,
    't',
  );
  t.ok(warnings.some((w) => w.includes('ignored on upstream connections: max_stream_duration')), warnings.join('\n'));
  t.notOk(warnings.some((w) => w.includes('idle_timeout') || w.includes('max_connection_duration')), 'idle_timeout and max_connection_duration are applied');
});
