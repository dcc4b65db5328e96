// Starts dynamic configuration for a KeelServer whose bootstrap has dynamic_resources: the ADS
// stream to the management server named by ads_config (its static cluster gives the address and
// TLS), and/or path_config_source files for CDS and LDS. Returns the XdsStatus the server reads for
// readiness and /config_dump.

import * as fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { ClusterConfig } from '../config/types';
import type { KeelServer, XdsStatus } from '../server/server';
import { TYPE } from './ads-service';
import { XdsApplier } from './apply';
import { AdsStreamClient } from './client';
import { FileConfigSource } from './file-source';

/** gRPC target and credentials for the ADS cluster (its first endpoint; TLS from its transport socket). */
export function adsChannel(cluster: ClusterConfig): { target: string; credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  const ep = cluster.endpoints[0]?.endpoints[0];
  if (!ep) throw new Error(`the ADS cluster '${cluster.name}' has no endpoint`);
  const a = ep.address;
  const target = a.pipe !== undefined ? `unix:${a.pipe}` : a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  const options: grpc.ChannelOptions = { 'grpc.keepalive_time_ms': 30_000, 'grpc.max_receive_message_length': 256 * 1024 * 1024 };
  const t = cluster.tls;
  if (!t) return { target, credentials: grpc.credentials.createInsecure(), options };
  const ca = t.validation?.trustedCa !== undefined ? Buffer.from(t.validation.trustedCa) : null;
  const cert = t.certificates[0];
  const credentials = grpc.credentials.createSsl(ca, cert ? Buffer.from(cert.privateKey) : null, cert ? Buffer.from(cert.certChain) : null);
  if (t.sni) options['grpc.ssl_target_name_override'] = t.sni;
  return { target, credentials, options };
}

export function startXds(server: KeelServer): XdsStatus | undefined {
  const dr = server.bootstrap.dynamicResources;
  if (!dr) return undefined;
  const applier = new XdsApplier(server);
  // before any transport starts: a file source applies synchronously, and readiness must already
  // wait for CDS and LDS
  server.xds = applier;
  const timeouts = [dr.cds?.initialFetchTimeoutMs, dr.lds?.initialFetchTimeoutMs].filter((t): t is number => t !== undefined);
  if (timeouts.length > 0) server.dynamic.initialFetchTimeoutMs = Math.max(...timeouts);
  const stops: (() => void)[] = [];
  const files: FileConfigSource[] = [];
  let ads: AdsStreamClient | undefined;
  if (dr.ads && (dr.cds?.kind === 'ads' || dr.lds?.kind === 'ads')) {
    const cluster = server.bootstrap.clusters.find((c) => c.name === dr.ads!.clusterName);
    if (!cluster) throw new Error(`unknown ADS cluster '${dr.ads.clusterName}'`);
    const ch = adsChannel(cluster);
    const node = server.bootstrap.node;
    const client = new AdsStreamClient({
      target: ch.target,
      credentials: ch.credentials,
      channelOptions: ch.options,
      metadata: dr.ads.initialMetadata,
      ...(server.xdsMetadata ? { dynamicMetadata: server.xdsMetadata } : {}),
      node: { id: node.id, cluster: node.cluster, metadata: node.metadata, user_agent_name: 'keel', user_agent_version: keelVersion() },
      delta: dr.ads.apiType === 'DELTA_GRPC',
      setNodeOnFirstMessageOnly: dr.ads.setNodeOnFirstMessageOnly,
      handler: applier,
      log: server.log,
    });
    ads = client;
    applier.subscriber = client;
    client.start();
    stops.push(() => client.stop());
  }
  for (const [type, src] of [
    [TYPE.cluster, dr.cds],
    [TYPE.listener, dr.lds],
  ] as const) {
    if (src?.kind !== 'path' || !src.path) continue;
    const f = new FileConfigSource(src.path, type, applier, server.log);
    files.push(f);
    f.start();
    stops.push(() => f.stop());
  }
  applier.stopTransport = () => stops.forEach((s) => s());
  applier.statusSource = () => {
    const types = { ...(ads?.status() ?? {}) };
    for (const f of files) types[f.typeUrl] = f.status();
    return { connected: ads ? ads.connected : true, mode: ads ? ads.mode : 'file', types };
  };
  return applier;
}

function keelVersion(): string {
  // src/xds/ under ts-node, dist/src/xds/ when built
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(fs.readFileSync(require.resolve(rel), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'keel') return pkg.version ?? '0.0.0';
    } catch {
      // try the next
    }
  }
  return '0.0.0';
}
