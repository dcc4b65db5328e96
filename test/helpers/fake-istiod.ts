// An istiod stand-in for tests: ADS (delta and state of the world) over TLS with a test root CA,
// a bearer-token check, the Istio CA service (test/helpers/fake-ca.ts) on the same port, and the
// config istiod sends a Bookinfo `productpage` sidecar (bookinfoProductpage below), with addresses
// made test-friendly (127.0.0.1, port 0). It records every request it gets (ACKs, NACKs with their
// error_detail) and can be stopped and restarted on the same port. Test-only.

import * as grpc from '@grpc/grpc-js';
import { addCaService, createTestCa, mintServerCert, type CaServiceRecord, type IssuedCert, type TestCa } from './fake-ca';
import {
  adsService,
  TYPE,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  type DiscoveryRequest,
  type DiscoveryResponse,
} from '../../src/xds/ads-service';
import { jsonToAny, messageObjectToJson, type AnyMessage } from '../../src/xds/proto';

export { TYPE };

export interface RecordedRequest {
  readonly mode: 'delta' | 'sotw';
  readonly typeUrl: string;
  readonly nonce: string;
  readonly versionInfo: string;
  readonly errorDetail?: string;
  readonly subscribe: readonly string[];
  readonly unsubscribe: readonly string[];
  readonly initialVersions: Readonly<Record<string, string>>;
  /** node (proto3 JSON) when the request carried one */
  readonly node?: Record<string, unknown>;
  readonly metadata: Record<string, unknown>;
  readonly stream: number;
}

interface Stored {
  readonly name: string;
  readonly version: string;
  readonly any: AnyMessage;
}

interface StreamState {
  readonly id: number;
  readonly delta: boolean;
  /** per type: wildcard?, names, what was sent (name -> version) */
  readonly types: Map<string, { wildcard: boolean; names: Set<string>; sent: Map<string, string> }>;
  write(typeUrl: string): void;
  end(): void;
}

export interface FakeIstiodOptions {
  /** TLS with a server certificate for istiod.istio-system.svc, localhost, 127.0.0.1 (default true) */
  readonly tls?: boolean;
  /** required bearer token (default 'test-token'; null: no check) */
  readonly token?: string | null;
  readonly ca?: TestCa;
  /** leaf lifetime the CA service issues */
  readonly certTtlSeconds?: number;
}

export class FakeIstiod {
  port = 0;
  readonly ca: TestCa;
  readonly serverCert: IssuedCert;
  readonly requests: RecordedRequest[] = [];
  caRecord?: CaServiceRecord;
  /** streams refused for a missing or wrong token */
  refused = 0;
  private server?: grpc.Server;
  private readonly store = new Map<string, Map<string, Stored>>();
  private readonly streams = new Set<StreamState>();
  private version = 0;
  private nonce = 0;
  private streamIds = 0;
  private readonly waiters: { pred: (r: RecordedRequest) => boolean; resolve: (r: RecordedRequest) => void }[] = [];
  readonly token: string | null;

  constructor(private readonly opts: FakeIstiodOptions = {}) {
    this.ca = opts.ca ?? createTestCa();
    this.serverCert = mintServerCert(this.ca, { dns: ['istiod.istio-system.svc'] });
    this.token = opts.token === undefined ? 'test-token' : opts.token;
    for (const t of Object.values(TYPE)) this.store.set(t, new Map());
  }

  get rootCert(): string {
    return this.ca.rootCert;
  }

  /** Number of open ADS streams. */
  get streamCount(): number {
    return this.streams.size;
  }

  async start(port = 0): Promise<number> {
    const server = new grpc.Server();
    const { service } = adsService();
    server.addService(service, {
      StreamAggregatedResources: (call: grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>) => this.sotw(call),
      DeltaAggregatedResources: (call: grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>) => this.delta(call),
    });
    this.caRecord = addCaService(server, {
      rootKey: this.ca.rootKey,
      rootCert: this.ca.rootCert,
      trustDomain: this.ca.trustDomain,
      ...(this.token !== null ? { token: this.token } : {}),
      ...(this.opts.certTtlSeconds !== undefined ? { ttlSeconds: this.opts.certTtlSeconds } : {}),
    });
    const creds =
      this.opts.tls === false
        ? grpc.ServerCredentials.createInsecure()
        : grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(this.serverCert.cert), private_key: Buffer.from(this.serverCert.privateKey) }], false);
    this.port = await new Promise<number>((resolve, reject) => server.bindAsync(`127.0.0.1:${port}`, creds, (e, p) => (e ? reject(e) : resolve(p))));
    this.server = server;
    return this.port;
  }

  /** Closes the server and every stream (keel sees the connection drop). */
  async stop(): Promise<void> {
    for (const s of this.streams) s.end();
    this.streams.clear();
    this.server?.forceShutdown();
    this.server = undefined;
  }

  /** Stops and starts again on the same port with the same resources. */
  async restart(): Promise<void> {
    const port = this.port;
    await this.stop();
    await this.start(port);
  }

  /** Adds or replaces resources (proto3 JSON with '@type' optional) and pushes them. */
  set(typeUrl: string, resources: readonly Record<string, unknown>[]): void {
    const m = this.store.get(typeUrl)!;
    const version = `v${++this.version}`;
    for (const r of resources) {
      const name = String(typeUrl === TYPE.endpoint ? r.cluster_name : r.name);
      const any = jsonToAny({ '@type': typeUrl, ...r });
      const prev = m.get(name);
      if (prev && Buffer.compare(Buffer.from(prev.any.value), Buffer.from(any.value)) === 0) continue;
      m.set(name, { name, version, any });
    }
    this.pushAll(typeUrl);
  }

  /** Sends raw bytes as a resource of `typeUrl` (for decode-failure tests). */
  setRaw(typeUrl: string, name: string, any: AnyMessage): void {
    this.store.get(typeUrl)!.set(name, { name, version: `v${++this.version}`, any });
    this.pushAll(typeUrl);
  }

  remove(typeUrl: string, names: readonly string[]): void {
    const m = this.store.get(typeUrl)!;
    ++this.version;
    for (const n of names) m.delete(n);
    this.pushAll(typeUrl);
  }

  /** Loads a whole config (e.g. bookinfoProductpage()) in istiod's push order: CDS, EDS, LDS, RDS. */
  load(cfg: XdsConfig): void {
    this.set(TYPE.cluster, cfg.clusters);
    this.set(TYPE.endpoint, cfg.endpoints);
    this.set(TYPE.listener, cfg.listeners);
    this.set(TYPE.route, cfg.routes);
  }

  /** Resolves with the first request (already received or future) that satisfies `pred`. */
  waitFor(pred: (r: RecordedRequest) => boolean, timeoutMs = 10_000, from = 0): Promise<RecordedRequest> {
    const hit = this.requests.slice(from).find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: (r: RecordedRequest) => (clearTimeout(t), resolve(r)) };
      const t = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error('fake istiod: timed out waiting for a request'));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  private record(r: RecordedRequest): void {
    this.requests.push(r);
    for (const w of [...this.waiters]) {
      if (w.pred(r)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(r);
      }
    }
  }

  private authorized(call: grpc.ServerDuplexStream<unknown, unknown>): boolean {
    if (this.token === null) return true;
    const auth = call.metadata.get('authorization')[0];
    if (auth === `Bearer ${this.token}`) return true;
    this.refused++;
    call.emit('error', { code: grpc.status.UNAUTHENTICATED, details: 'authentication failure' });
    return false;
  }

  private pushAll(typeUrl: string): void {
    for (const s of this.streams) if (s.types.has(typeUrl)) s.write(typeUrl);
  }

  private typeState(s: StreamState, typeUrl: string, wildcard: boolean): { wildcard: boolean; names: Set<string>; sent: Map<string, string> } {
    let t = s.types.get(typeUrl);
    if (!t) s.types.set(typeUrl, (t = { wildcard, names: new Set(), sent: new Map() }));
    return t;
  }

  private delta(call: grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>): void {
    if (!this.authorized(call)) return;
    const s: StreamState = {
      id: ++this.streamIds,
      delta: true,
      types: new Map(),
      write: (typeUrl) => {
        const t = s.types.get(typeUrl)!;
        const resources: { name: string; version: string; resource: AnyMessage }[] = [];
        const removed: string[] = [];
        for (const r of this.store.get(typeUrl)!.values()) {
          if (!t.wildcard && !t.names.has(r.name)) continue;
          if (t.sent.get(r.name) === r.version) continue;
          resources.push({ name: r.name, version: r.version, resource: r.any });
          t.sent.set(r.name, r.version);
        }
        for (const n of [...t.sent.keys()]) {
          if (!this.store.get(typeUrl)!.has(n) || (!t.wildcard && !t.names.has(n))) {
            t.sent.delete(n);
            if (this.store.get(typeUrl)!.has(n)) continue; // unsubscribed: nothing to say
            removed.push(n);
          }
        }
        if (resources.length === 0 && removed.length === 0) return;
        call.write({ type_url: typeUrl, system_version_info: `v${this.version}`, resources, removed_resources: removed, nonce: String(++this.nonce) });
      },
      end: () => call.end(),
    };
    this.streams.add(s);
    const gone = (): void => void this.streams.delete(s);
    call.on('end', () => {
      gone();
      call.end();
    });
    call.on('error', gone);
    call.on('cancelled', gone);
    call.on('data', (req: DeltaDiscoveryRequest) => {
      const typeUrl = req.type_url ?? '';
      const sub = req.resource_names_subscribe ?? [];
      const unsub = req.resource_names_unsubscribe ?? [];
      this.record({
        mode: 'delta',
        typeUrl,
        nonce: req.response_nonce ?? '',
        versionInfo: '',
        ...(req.error_detail ? { errorDetail: req.error_detail.message ?? '' } : {}),
        subscribe: sub,
        unsubscribe: unsub,
        initialVersions: req.initial_resource_versions ?? {},
        ...(req.node ? { node: messageObjectToJson('envoy.config.core.v3.Node', req.node) as Record<string, unknown> } : {}),
        metadata: call.metadata.getMap(),
        stream: s.id,
      });
      if (!this.store.has(typeUrl)) return;
      const first = !s.types.has(typeUrl);
      const t = this.typeState(s, typeUrl, (typeUrl === TYPE.cluster || typeUrl === TYPE.listener) && sub.length === 0);
      if (first) for (const [n, v] of Object.entries(req.initial_resource_versions ?? {})) t.sent.set(n, v);
      for (const n of sub) n === '*' ? (t.wildcard = true) : t.names.add(n);
      for (const n of unsub) t.names.delete(n);
      if (first || sub.length > 0 || unsub.length > 0) s.write(typeUrl);
    });
  }

  private sotw(call: grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>): void {
    if (!this.authorized(call)) return;
    const s: StreamState = {
      id: ++this.streamIds,
      delta: false,
      types: new Map(),
      write: (typeUrl) => {
        const t = s.types.get(typeUrl)!;
        const resources: AnyMessage[] = [];
        for (const r of this.store.get(typeUrl)!.values()) if (t.wildcard || t.names.has(r.name)) resources.push(r.any);
        call.write({ type_url: typeUrl, version_info: `v${this.version}`, resources, nonce: String(++this.nonce) });
      },
      end: () => call.end(),
    };
    this.streams.add(s);
    const gone = (): void => void this.streams.delete(s);
    call.on('end', () => {
      gone();
      call.end();
    });
    call.on('error', gone);
    call.on('cancelled', gone);
    call.on('data', (req: DiscoveryRequest) => {
      const typeUrl = req.type_url ?? '';
      const names = req.resource_names ?? [];
      this.record({
        mode: 'sotw',
        typeUrl,
        nonce: req.response_nonce ?? '',
        versionInfo: req.version_info ?? '',
        ...(req.error_detail ? { errorDetail: req.error_detail.message ?? '' } : {}),
        subscribe: names,
        unsubscribe: [],
        initialVersions: {},
        ...(req.node ? { node: messageObjectToJson('envoy.config.core.v3.Node', req.node) as Record<string, unknown> } : {}),
        metadata: call.metadata.getMap(),
        stream: s.id,
      });
      if (!this.store.has(typeUrl)) return;
      const first = !s.types.has(typeUrl);
      const t = this.typeState(s, typeUrl, typeUrl === TYPE.cluster || typeUrl === TYPE.listener);
      const changed = !t.wildcard && (names.length !== t.names.size || names.some((n) => !t.names.has(n)));
      if (!t.wildcard) t.names = new Set(names);
      if (first || changed) s.write(typeUrl);
    });
  }
}

/**
 * A bootstrap (YAML) whose dynamic_resources point at `istiod` over TLS (its test root as trusted
 * CA, SNI istiod.istio-system.svc) with a bearer token and ClusterID, as the agent generates.
 */
export function adsBootstrap(istiod: FakeIstiod, o: { apiType?: 'DELTA_GRPC' | 'GRPC'; token?: string; initialFetchTimeout?: string } = {}): string {
  const ca = istiod.rootCert.replace(/\n/g, '\\n');
  const timeout = o.initialFetchTimeout ?? '0s';
  return `
node: { id: "sidecar~10.0.0.5~productpage-v1-abc.default~default.svc.cluster.local", cluster: productpage.default, metadata: { CLUSTER_ID: Kubernetes, NAMESPACE: default } }
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }
dynamic_resources:
  ads_config:
    api_type: ${o.apiType ?? 'DELTA_GRPC'}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services:
    - envoy_grpc: { cluster_name: xds-grpc }
      initial_metadata:
      - { key: authorization, value: "Bearer ${o.token ?? 'test-token'}" }
      - { key: ClusterID, value: Kubernetes }
  cds_config: { ads: {}, initial_fetch_timeout: ${timeout}, resource_api_version: V3 }
  lds_config: { ads: {}, initial_fetch_timeout: ${timeout}, resource_api_version: V3 }
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${istiod.port} } } } }] }]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: istiod.istio-system.svc
        common_tls_context:
          validation_context:
            trusted_ca: { inline_string: "${ca}" }
`;
}

export async function startFakeIstiod(opts: FakeIstiodOptions = {}): Promise<FakeIstiod> {
  const f = new FakeIstiod(opts);
  await f.start();
  return f;
}

// ---------------------------------------------------------------------------------------------
// The config istiod sends a Bookinfo productpage sidecar (trimmed to what the tests exercise).

export interface XdsConfig {
  clusters: Record<string, unknown>[];
  endpoints: Record<string, unknown>[];
  listeners: Record<string, unknown>[];
  routes: Record<string, unknown>[];
}

export interface BookinfoOptions {
  /** where reviews v1 really listens (its EDS endpoint) */
  readonly reviewsPort: number;
  /** the productpage app (inbound|9080|| target) */
  readonly appPort: number;
  /** mTLS transport_socket_matches on the outbound clusters (needs the SDS secrets `default`/`ROOTCA`) */
  readonly mtls?: boolean;
  /** the route timeout for reviews (Istio's default: none) */
  readonly timeout?: string;
}

const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const TCP_PROXY = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';
const REVIEWS = 'reviews.default.svc.cluster.local';
export const REVIEWS_V1 = `outbound|9080|v1|${REVIEWS}`;
export const REVIEWS_ALL = `outbound|9080||${REVIEWS}`;

/** The HTTP filters istiod puts in a sidecar's HCM, in its order (the Istio ones keel skips). */
export function istioHttpFilters(): Record<string, unknown>[] {
  return [
    {
      name: 'istio.metadata_exchange',
      typed_config: {
        '@type': 'type.googleapis.com/udpa.type.v1.TypedStruct',
        type_url: 'type.googleapis.com/io.istio.http.peer_metadata.Config',
        value: { upstream_discovery: [{ istio_headers: {} }, { workload_discovery: {} }], upstream_propagation: [{ istio_headers: {} }] },
      },
    },
    {
      name: 'envoy.filters.http.grpc_stats',
      typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig', emit_filter_state: true, stats_for_all_methods: false },
    },
    {
      name: 'istio.alpn',
      typed_config: {
        '@type': 'type.googleapis.com/udpa.type.v1.TypedStruct',
        type_url: 'type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig',
        value: { alpn_override: [{ alpn_override: ['istio-http/1.0', 'istio'] }, { upstream_protocol: 'HTTP11', alpn_override: ['istio-http/1.1', 'istio'] }] },
      },
    },
    { name: 'envoy.filters.http.fault', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault' } },
    { name: 'envoy.filters.http.cors', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors' } },
    {
      name: 'istio.stats',
      typed_config: {
        '@type': 'type.googleapis.com/udpa.type.v1.TypedStruct',
        type_url: 'type.googleapis.com/stats.PluginConfig',
        value: { reporter: 'SIDECAR_OUTBOUND' },
      },
    },
    { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } },
  ];
}

function upstreamMtls(sni: string): Record<string, unknown> {
  return {
    name: 'envoy.transport_sockets.tls',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
      sni,
      common_tls_context: {
        alpn_protocols: ['istio-peer-exchange', 'istio'],
        tls_certificate_sds_secret_configs: [{ name: 'default', sds_config: { ads: {}, resource_api_version: 'V3' } }],
        combined_validation_context: {
          default_validation_context: { match_subject_alt_names: [{ exact: 'spiffe://cluster.local/ns/default/sa/bookinfo-reviews' }] },
          validation_context_sds_secret_config: { name: 'ROOTCA', sds_config: { ads: {}, resource_api_version: 'V3' } },
        },
      },
    },
  };
}

function edsCluster(name: string, mtls: boolean): Record<string, unknown> {
  const sni = name.replace(/\|/g, '_.').replace(/^outbound_\./, 'outbound_.');
  return {
    name,
    type: 'EDS',
    eds_cluster_config: { eds_config: { ads: {}, initial_fetch_timeout: '0s', resource_api_version: 'V3' }, service_name: name },
    connect_timeout: '10s',
    lb_policy: 'LEAST_REQUEST',
    circuit_breakers: { thresholds: [{ max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295, track_remaining: true }] },
    common_lb_config: {},
    metadata: { filter_metadata: { istio: { services: [{ host: REVIEWS, name: 'reviews', namespace: 'default' }], ...(name.includes('|v1|') ? { subset: 'v1' } : {}) } } },
    ...(mtls
      ? {
          transport_socket_matches: [
            { name: 'tlsMode-istio', match: { tlsMode: 'istio' }, transport_socket: upstreamMtls(sni) },
            { name: 'tlsMode-disabled', match: {}, transport_socket: { name: 'envoy.transport_sockets.raw_buffer', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer' } } },
          ],
        }
      : {}),
  };
}

/** A route configuration named `name` sending reviews traffic to `cluster`. */
export function reviewsRoute(name: string, cluster: string, o: { timeout?: string; prefix?: string } = {}): Record<string, unknown> {
  return {
    name,
    virtual_hosts: [
      {
        name: `${REVIEWS}:9080`,
        domains: ['reviews.default.svc.cluster.local', 'reviews', 'reviews.default', '*'],
        routes: [
          {
            name: 'default',
            match: { prefix: o.prefix ?? '/' },
            route: {
              cluster,
              timeout: o.timeout ?? '0s',
              retry_policy: {
                retry_on: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes',
                num_retries: 2,
                retry_host_predicate: [{ name: 'envoy.retry_host_predicates.previous_hosts', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate' } }],
                host_selection_retry_max_attempts: '5',
                retriable_status_codes: [503],
              },
              max_stream_duration: { max_stream_duration: '0s', grpc_timeout_header_max: '0s' },
            },
            decorator: { operation: `${REVIEWS}:9080/*` },
          },
        ],
        include_request_attempt_count: true,
      },
    ],
    validate_clusters: false,
  };
}

/** Endpoints of reviews v1: one host with istio's metadata (tlsMode: istio). */
export function reviewsEndpoints(cluster: string, ports: readonly number[]): Record<string, unknown> {
  return {
    cluster_name: cluster,
    endpoints: [
      {
        locality: { region: 'us-east1', zone: 'us-east1-b' },
        lb_endpoints: ports.map((port) => ({
          endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } },
          health_status: 'HEALTHY',
          metadata: {
            filter_metadata: {
              'envoy.transport_socket_match': { tlsMode: 'istio' },
              istio: { workload: 'reviews-v1;default;reviews;v1;Kubernetes' },
            },
          },
          load_balancing_weight: 1,
        })),
        load_balancing_weight: ports.length,
      },
    ],
  };
}

/**
 * The productpage sidecar's config: virtualOutbound / virtualInbound (127.0.0.1:0), the per-port
 * outbound listener 0.0.0.0_9080 (bound at 127.0.0.1:0 so tests can send to it; istiod has it
 * bind_to_port false behind virtualOutbound) with RDS "9080", clusters reviews v1 / all (EDS),
 * inbound|9080||, PassthroughCluster, BlackHoleCluster, InboundPassthroughCluster.
 */
export function bookinfoProductpage(o: BookinfoOptions): XdsConfig {
  const mtls = o.mtls ?? false;
  const tcp = (cluster: string, stat: string): Record<string, unknown> => ({
    filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': TCP_PROXY, stat_prefix: stat, cluster } }],
  });
  return {
    clusters: [
      edsCluster(REVIEWS_V1, mtls),
      edsCluster(REVIEWS_ALL, mtls),
      {
        name: 'inbound|9080||',
        type: 'STATIC',
        connect_timeout: '10s',
        lb_policy: 'ROUND_ROBIN',
        load_assignment: { cluster_name: 'inbound|9080||', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: o.appPort } } } }] }] },
        upstream_bind_config: { source_address: { address: '127.0.0.6', port_value: 0 } },
        metadata: { filter_metadata: { istio: { services: [{ host: 'productpage.default.svc.cluster.local', name: 'productpage', namespace: 'default' }] } } },
      },
      { name: 'PassthroughCluster', type: 'ORIGINAL_DST', connect_timeout: '10s', lb_policy: 'CLUSTER_PROVIDED', circuit_breakers: { thresholds: [{ max_connections: 4294967295 }] } },
      { name: 'BlackHoleCluster', type: 'STATIC', connect_timeout: '10s' },
      { name: 'InboundPassthroughCluster', type: 'ORIGINAL_DST', connect_timeout: '10s', lb_policy: 'CLUSTER_PROVIDED', upstream_bind_config: { source_address: { address: '127.0.0.6', port_value: 0 } } },
    ],
    endpoints: [reviewsEndpoints(REVIEWS_V1, [o.reviewsPort]), reviewsEndpoints(REVIEWS_ALL, [o.reviewsPort])],
    listeners: [
      {
        name: 'virtualOutbound',
        address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
        use_original_dst: true,
        filter_chains: [{ name: 'virtualOutbound-catchall-tcp', ...tcp('PassthroughCluster', 'PassthroughCluster') }],
        traffic_direction: 'OUTBOUND',
      },
      {
        name: '0.0.0.0_9080',
        address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
        traffic_direction: 'OUTBOUND',
        filter_chains: [
          {
            filters: [
              {
                name: 'envoy.filters.network.http_connection_manager',
                typed_config: {
                  '@type': HCM,
                  stat_prefix: 'outbound_0.0.0.0_9080',
                  rds: { config_source: { ads: {}, initial_fetch_timeout: '0s', resource_api_version: 'V3' }, route_config_name: '9080' },
                  http_filters: istioHttpFilters(),
                  use_remote_address: false,
                  upgrade_configs: [{ upgrade_type: 'websocket' }],
                  stream_idle_timeout: '0s',
                  normalize_path: true,
                  path_with_escaped_slashes_action: 'KEEP_UNCHANGED',
                  request_id_extension: { typed_config: { '@type': 'type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig', use_request_id_for_trace_sampling: true } },
                },
              },
            ],
          },
        ],
      },
      {
        name: 'virtualInbound',
        address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
        listener_filters: [
          { name: 'envoy.filters.listener.original_dst', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst' } },
          { name: 'envoy.filters.listener.tls_inspector', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector' } },
          { name: 'envoy.filters.listener.http_inspector', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector' } },
        ],
        listener_filters_timeout: '0s',
        continue_on_listener_filters_timeout: true,
        traffic_direction: 'INBOUND',
        filter_chains: [
          {
            name: '0.0.0.0_9080',
            filter_chain_match: { destination_port: 9080, transport_protocol: 'raw_buffer' },
            filters: [
              {
                name: 'envoy.filters.network.http_connection_manager',
                typed_config: {
                  '@type': HCM,
                  stat_prefix: 'inbound_0.0.0.0_9080',
                  route_config: {
                    name: 'inbound|9080||',
                    virtual_hosts: [{ name: 'inbound|http|9080', domains: ['*'], routes: [{ name: 'default', match: { prefix: '/' }, route: { cluster: 'inbound|9080||', timeout: '0s', max_stream_duration: { max_stream_duration: '0s', grpc_timeout_header_max: '0s' } } }] }],
                    validate_clusters: false,
                  },
                  http_filters: istioHttpFilters(),
                  use_remote_address: false,
                  forward_client_cert_details: 'APPEND_FORWARD',
                  set_current_client_cert_details: { subject: true, dns: true, uri: true },
                },
              },
            ],
          },
        ],
        default_filter_chain: { name: 'virtualInbound-catchall', ...tcp('InboundPassthroughCluster', 'InboundPassthroughCluster') },
      },
    ],
    routes: [reviewsRoute('9080', REVIEWS_V1, o.timeout !== undefined ? { timeout: o.timeout } : {})],
  };
}
