// The Envoy v3 bootstrap the agent generates for itself (as pilot-agent writes envoy-rev.json): the
// node, admin on localhost, ADS (delta by default) to istiod through a static `xds-grpc` cluster
// over TLS (root-cert.pem, ISTIOD_SAN) with the bearer token, ClusterID and XDS_HEADER_* as stream
// metadata, CDS and LDS over ADS. It goes through the same decoder as any bootstrap.

import * as fs from 'node:fs';
import { isIP } from 'node:net';
import { decodeBootstrap, type DecodedBootstrap } from '../config/bootstrap';
import type { AgentConfig } from './env';

export const XDS_CLUSTER = 'xds-grpc';

/** The bootstrap as proto3 JSON (what `keel proxy ... --print-bootstrap` would show). Reads the token and root cert. */
export function agentBootstrapJson(cfg: AgentConfig): Record<string, unknown> {
  const i = cfg.discoveryAddress.lastIndexOf(':');
  const host = cfg.discoveryAddress.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(cfg.discoveryAddress.slice(i + 1));
  let token = '';
  try {
    token = fs.readFileSync(cfg.paths.token, 'utf8').trim();
  } catch {
    // no token file: istiod will refuse the stream (as it would pilot-agent's); logged by the caller
  }
  const metadata = [
    ...(token ? [{ key: 'authorization', value: `Bearer ${token}` }] : []),
    { key: 'clusterid', value: cfg.clusterId },
    ...Object.entries(cfg.xdsHeaders).map(([key, value]) => ({ key: key.toLowerCase(), value })),
  ];
  const tls = cfg.tls
    ? {
        transport_socket: {
          name: 'envoy.transport_sockets.tls',
          typed_config: {
            '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
            sni: cfg.istiodSan,
            common_tls_context: {
              alpn_protocols: ['h2'],
              validation_context: { trusted_ca: { filename: cfg.paths.rootCert } },
            },
          },
        },
      }
    : {};
  const xdsSource = { ads: {}, initial_fetch_timeout: '0s', resource_api_version: 'V3' };
  return {
    node: { id: cfg.nodeId, cluster: 'istio-proxy', metadata: cfg.metadata },
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: cfg.ports.admin } } },
    dynamic_resources: {
      ads_config: {
        api_type: cfg.delta ? 'DELTA_GRPC' : 'GRPC',
        transport_api_version: 'V3',
        set_node_on_first_message_only: true,
        grpc_services: [{ envoy_grpc: { cluster_name: XDS_CLUSTER }, initial_metadata: metadata }],
      },
      cds_config: xdsSource,
      lds_config: xdsSource,
    },
    static_resources: {
      clusters: [
        {
          name: XDS_CLUSTER,
          type: isIP(host) ? 'STATIC' : 'STRICT_DNS',
          connect_timeout: '1s',
          load_assignment: { cluster_name: XDS_CLUSTER, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: host, port_value: port } } } }] }] },
          typed_extension_protocol_options: {
            'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
              '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
              explicit_http_config: { http2_protocol_options: {} },
            },
          },
          ...tls,
        },
      ],
    },
  };
}

/** The generated bootstrap, decoded. Throws ConfigError (e.g. an unreadable root cert). */
export function agentBootstrap(cfg: AgentConfig): DecodedBootstrap {
  return decodeBootstrap(agentBootstrapJson(cfg));
}
