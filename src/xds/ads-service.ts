// The Aggregated Discovery Service (envoy.service.discovery.v3) loaded with @grpc/proto-loader from
// @grpc/grpc-js-xds's deps/, and the message shapes keel exchanges on it (written by hand: the few
// fields keel reads and writes, in proto-loader's keepCase object form). Used by the xDS client and
// by the test control plane. Nothing outside src/xds/ sees these types.

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoIncludeDirs, type AnyMessage } from './proto';

export const TYPE = {
  cluster: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  endpoint: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  listener: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  route: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  secret: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret',
} as const;

/** google.rpc.Status as it travels in error_detail. */
export interface RpcStatus {
  code?: number;
  message?: string;
}

export interface DiscoveryRequest {
  version_info?: string;
  node?: Record<string, unknown>;
  resource_names?: string[];
  type_url?: string;
  response_nonce?: string;
  error_detail?: RpcStatus | null;
}

export interface DiscoveryResponse {
  version_info?: string;
  resources?: AnyMessage[];
  type_url?: string;
  nonce?: string;
}

export interface DeltaDiscoveryRequest {
  node?: Record<string, unknown>;
  type_url?: string;
  resource_names_subscribe?: string[];
  resource_names_unsubscribe?: string[];
  initial_resource_versions?: Record<string, string>;
  response_nonce?: string;
  error_detail?: RpcStatus | null;
}

/** envoy.service.discovery.v3.Resource */
export interface DeltaResource {
  name?: string;
  aliases?: string[];
  version?: string;
  resource?: AnyMessage | null;
}

export interface DeltaDiscoveryResponse {
  system_version_info?: string;
  resources?: DeltaResource[];
  type_url?: string;
  removed_resources?: string[];
  nonce?: string;
}

export type SotwStream = grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>;
export type DeltaStream = grpc.ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

export interface AdsClient extends grpc.Client {
  StreamAggregatedResources(metadata: grpc.Metadata, options?: grpc.CallOptions): SotwStream;
  DeltaAggregatedResources(metadata: grpc.Metadata, options?: grpc.CallOptions): DeltaStream;
}

let loaded: { client: grpc.ServiceClientConstructor; service: grpc.ServiceDefinition } | undefined;

/** The ADS client constructor and service definition (loaded once). */
export function adsService(): { client: grpc.ServiceClientConstructor; service: grpc.ServiceDefinition } {
  if (loaded) return loaded;
  const def = protoLoader.loadSync('envoy/service/discovery/v3/ads.proto', {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: false,
    oneofs: false,
    includeDirs: protoIncludeDirs(),
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    envoy: { service: { discovery: { v3: { AggregatedDiscoveryService: grpc.ServiceClientConstructor } } } };
  };
  const client = pkg.envoy.service.discovery.v3.AggregatedDiscoveryService;
  loaded = { client, service: client.service };
  return loaded;
}
