// The Aggregated Discovery Service (envoy.service.discovery.v3) loaded with @grpc/proto-loader from
// @grpc/grpc-js-xds's deps/, and the message shapes keel exchanges on it (written by hand: the few
// fields keel reads and writes, in proto-loader's keepCase object form). Used by the xDS client and
// by the test control plane. Nothing outside src/xds/ sees these types.

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoIncludeDirs } from './proto';

export const TYPE = {
  cluster: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  endpoint: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  listener: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  route: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  secret: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret',
} as const;

// Message types generated at build time from the same protos (scripts/gen-xds-types.js); the
// input forms, all fields optional, match how the service is loaded (defaults and oneofs off).
export type { DiscoveryRequest } from './generated/envoy/service/discovery/v3/DiscoveryRequest';
export type { DiscoveryResponse } from './generated/envoy/service/discovery/v3/DiscoveryResponse';
export type { DeltaDiscoveryRequest } from './generated/envoy/service/discovery/v3/DeltaDiscoveryRequest';
export type { DeltaDiscoveryResponse } from './generated/envoy/service/discovery/v3/DeltaDiscoveryResponse';
export type { Resource as DeltaResource } from './generated/envoy/service/discovery/v3/Resource';
export type { Status as RpcStatus } from './generated/google/rpc/Status';
import type { DiscoveryRequest } from './generated/envoy/service/discovery/v3/DiscoveryRequest';
import type { DiscoveryResponse } from './generated/envoy/service/discovery/v3/DiscoveryResponse';
import type { DeltaDiscoveryRequest } from './generated/envoy/service/discovery/v3/DeltaDiscoveryRequest';
import type { DeltaDiscoveryResponse } from './generated/envoy/service/discovery/v3/DeltaDiscoveryResponse';

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
