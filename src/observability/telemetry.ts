// Installs the per-HCM observability hooks when a listener is built: Istio metrics (with the
// metadata exchange headers) on listeners with a traffic direction, access loggers and the tracer
// from the HCM's own config, and istio_tcp_* counting on TCP proxies. Everything is decided here,
// once per connection manager; a stream only runs the hooks its HCM got.

import { peerSans } from '../security/tls-context';
import * as tls from 'node:tls';
import type { Registry } from 'prom-client';
import type { ListenerConfig, NodeInfo } from '../config/types';
import type { ConnectionManager, StreamHeaderObserver } from '../http/conn-manager';
import type { ActiveStream } from '../http/stream';
import type { HeaderMap } from '../http/headers';
import type { ListenerObserver } from '../listener/listener';
import type { TcpProxy } from '../listener/tcp-proxy';
import type { ClusterManager } from '../upstream/cluster-manager';
import type { Logger } from '../common/logger';
import { IstioMetrics, Reporter } from '../stats/istio-metrics';
import { encodePeerMetadata, exchangedMetadata, PEER_METADATA_HEADER, PEER_METADATA_ID_HEADER, workloadFromMetadata } from '../stats/peer-metadata';
import { AccessLogger } from './access-log';
import { ENVOY_DEFAULT_FORMAT } from '../config/observability';
import { Tracer, ZipkinReporter } from './tracing';
import { onSweep } from '../common/clock';

/** reporter=destination for inbound listeners, source for outbound ones; undefined: no Istio metrics. */
export function reporterOf(l: ListenerConfig): Reporter | undefined {
  if (l.trafficDirection === 'INBOUND' || l.name === 'virtualInbound') return 'destination';
  if (l.trafficDirection === 'OUTBOUND' || l.name === 'virtualOutbound') return 'source';
  return undefined;
}

/** Istio's HTTP metadata exchange: take the peer's headers off, put ours on (requests outbound, responses inbound). */
class MetadataExchange implements StreamHeaderObserver {
  constructor(private readonly reporter: Reporter, private readonly id: string, private readonly value: string) {}
  private take(s: ActiveStream, h: HeaderMap): void {
    const v = h.first(PEER_METADATA_HEADER);
    if (v !== undefined) {
      s.peerMetadata = v;
      h.remove(PEER_METADATA_HEADER);
      h.remove(PEER_METADATA_ID_HEADER);
    }
  }
  private give(h: HeaderMap): void {
    h.set(PEER_METADATA_HEADER, this.value);
    h.set(PEER_METADATA_ID_HEADER, this.id);
  }
  onRequestHeaders(s: ActiveStream, h: HeaderMap): void {
    if (this.reporter === 'destination') this.take(s, h);
    else this.give(h);
  }
  onResponseHeaders(s: ActiveStream, h: HeaderMap): void {
    if (this.reporter === 'source') this.take(s, h);
    else this.give(h);
  }
}

/** How often open TCP connections report their bytes (Istio's tcp_reporting_duration default). */
export const TCP_REPORT_MS = 15_000;

interface OpenTcp {
  readonly down: import('node:net').Socket;
  readonly ch: ReturnType<IstioMetrics['tcpChildren']>;
  rx: number;
  tx: number;
}

/** The peer certificate's first URI SAN (its SPIFFE id). */
function uriSan(t: tls.TLSSocket): string | undefined {
  return peerSans(t.getPeerCertificate()?.subjectaltname).uri[0];
}

export class Telemetry implements ListenerObserver {
  private istioMetrics: IstioMetrics | undefined;
  private exchange: string | undefined;
  private readonly reporters = new Map<string, ZipkinReporter>();
  private readonly serviceName: string;
  /** proxied TCP connections still open, for the periodic byte reports */
  private readonly tcpOpen = new Set<OpenTcp>();
  private readonly stopSweep: () => void;

  constructor(
    /** the registry, made when the first listener reports Istio metrics */
    private readonly registry: () => Registry,
    private readonly node: NodeInfo,
    private readonly clusters: ClusterManager,
    private readonly log: Logger,
  ) {
    // Istio names a proxy's spans <canonical service>.<namespace>; a plain Envoy uses its --service-cluster.
    const local = workloadFromMetadata(node.metadata);
    const ns = local.namespace;
    let last = 0;
    this.stopSweep = onSweep((now) => {
      if (this.tcpOpen.size > 0 && now - last >= TCP_REPORT_MS) {
        last = now;
        this.reportOpenTcp();
      }
    });
    this.serviceName = local.canonicalService !== 'unknown' && ns !== 'unknown' ? `${local.canonicalService}.${ns}` : node.cluster || 'keel';
  }

  /** x-envoy-peer-metadata's value for this proxy, encoded when the first listener exchanges it */
  private get exchangeValue(): string {
    return (this.exchange ??= encodePeerMetadata(exchangedMetadata(this.node.metadata)));
  }

  /** The istio_* metrics, registered on first use (a listener that reports them). */
  get istio(): IstioMetrics {
    return (this.istioMetrics ??= new IstioMetrics(this.registry(), this.node.metadata));
  }

  http(hcm: ConnectionManager, listener: ListenerConfig): void {
    const reporter = reporterOf(listener);
    if (reporter !== undefined) {
      hcm.headerObservers.push(new MetadataExchange(reporter, this.node.id, this.exchangeValue));
      const istio = this.istio;
      hcm.completionHooks.push((s) => istio.recordHttp(reporter, s));
    }
    const tracing = hcm.config.tracing;
    if (tracing) {
      let zipkin: ZipkinReporter | undefined;
      if (tracing.provider) {
        const key = `${tracing.provider.collectorCluster}\u0000${tracing.provider.collectorEndpoint}`;
        zipkin = this.reporters.get(key);
        if (!zipkin) this.reporters.set(key, (zipkin = new ZipkinReporter(tracing.provider, this.clusters)));
        if (!this.clusters.get(tracing.provider.collectorCluster)) this.log.warn(`tracing: collector cluster '${tracing.provider.collectorCluster}' is not defined (yet)`);
      }
      const tracer = new Tracer(tracing, reporter === 'source' ? 'outbound' : 'inbound', this.serviceName, zipkin);
      hcm.headerObservers.push(tracer);
      hcm.completionHooks.push(tracer.complete);
    }
    for (const al of hcm.config.accessLogs) hcm.completionHooks.push(new AccessLogger(al, ENVOY_DEFAULT_FORMAT).complete);
  }

  tcp(tcp: TcpProxy, listener: ListenerConfig): void {
    const reporter = reporterOf(listener);
    if (reporter === undefined) return;
    const istio = this.istio;
    const open = this.tcpOpen;
    tcp.observer = {
      opened(down, cluster) {
        const ch = istio.tcpChildren(reporter, cluster.name, cluster.config.metadata, down instanceof tls.TLSSocket ? uriSan(down) : undefined);
        ch.opened.inc();
        const c: OpenTcp = { down, ch, rx: 0, tx: 0 };
        open.add(c);
        return (received, sent) => {
          open.delete(c);
          ch.closed.inc();
          if (received > c.rx) ch.received.inc(received - c.rx);
          if (sent > c.tx) ch.sent.inc(sent - c.tx);
        };
      },
    };
  }

  /**
   * Adds the bytes open TCP connections moved since the last report to istio_tcp_*_bytes_total, as
   * Istio reports long-lived connections periodically (every TCP_REPORT_MS from a sweep; tests call it).
   */
  reportOpenTcp(): void {
    for (const c of this.tcpOpen) {
      const rx = c.down.bytesRead;
      const tx = c.down.bytesWritten;
      if (rx > c.rx) c.ch.received.inc(rx - c.rx);
      if (tx > c.tx) c.ch.sent.inc(tx - c.tx);
      c.rx = rx;
      c.tx = tx;
    }
  }

  /** Sends spans still waiting (on stop). */
  flush(): void {
    for (const r of this.reporters.values()) r.flush();
  }

  stop(): void {
    this.stopSweep();
    this.flush();
  }
}
