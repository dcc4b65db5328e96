// Istio's standard metrics (what the istio.stats filter reports) on a prom-client registry:
// istio_requests_total, istio_request_duration_milliseconds, istio_request_bytes,
// istio_response_bytes and istio_tcp_*, with every standard label. reporter=destination on inbound
// listeners, reporter=source on outbound ones. The metrics are created once per registry; label
// children are cached per label set (a Map lookup per request, no registration on the request path),
// and the number of label sets is bounded: past MAX_SERIES new sets are counted under one overflow
// set with the peer and service labels "unknown".

import { stripHostPort } from '../router/route-table';
import type { Registry } from 'prom-client';
import { FastCounter, FastHistogram, renderLabels, type CounterChild, type HistogramChild } from './fast-metrics';
import type { ActiveStream } from '../http/stream';
import type { HeaderMap } from '../http/headers';
import { PEER_METADATA_HEADER, PeerCache, UNKNOWN, UNKNOWN_WORKLOAD, WorkloadInfo, workloadFromMetadata } from './peer-metadata';

export type Reporter = 'source' | 'destination';

/** Envoy's default histogram buckets, which Istio uses for request duration (ms). */
export const DURATION_BUCKETS_MS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];
/** Size buckets for istio_request_bytes / istio_response_bytes: powers of ten up to 1 GB. */
export const SIZE_BUCKETS = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000];

export const HTTP_LABELS = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_service',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_service_name',
  'destination_service_namespace',
  'destination_cluster',
  'request_protocol',
  'response_code',
  'grpc_response_status',
  'response_flags',
  'connection_security_policy',
] as const;
export const TCP_LABELS = HTTP_LABELS.filter((l) => l !== 'response_code' && l !== 'grpc_response_status');

/** Most label sets kept per metric family group (HTTP and TCP each). */
export const MAX_SERIES = 20000;

type Labels = Record<string, string>;

interface HttpChildren {
  readonly requests: CounterChild;
  readonly duration: HistogramChild;
  readonly requestBytes: HistogramChild;
  readonly responseBytes: HistogramChild;
}

interface TcpChildren {
  readonly opened: CounterChild;
  readonly closed: CounterChild;
  readonly sent: CounterChild;
  readonly received: CounterChild;
}

/** The destination service of a request: from an Istio cluster name, the cluster's istio metadata, or the authority. */
export interface ServiceInfo {
  readonly host: string;
  readonly name: string;
  readonly namespace: string;
}

const UNKNOWN_SERVICE: ServiceInfo = { host: UNKNOWN, name: UNKNOWN, namespace: UNKNOWN };

export function serviceFromHost(host: string): ServiceInfo {
  if (host === '') return UNKNOWN_SERVICE;
  const labels = host.split('.');
  // name.namespace.svc.<domain>: Kubernetes service; otherwise the host is the name
  if (labels.length >= 3 && labels[2] === 'svc') return { host, name: labels[0], namespace: labels[1] };
  return { host, name: host, namespace: UNKNOWN };
}

export function serviceFromCluster(name: string, metadata: Readonly<Record<string, unknown>> | undefined): ServiceInfo | undefined {
  const istio = metadata?.istio as { services?: Array<{ host?: string; name?: string; namespace?: string }> } | undefined;
  const svc = istio?.services?.[0];
  if (svc?.host) return { host: svc.host, name: svc.name ?? serviceFromHost(svc.host).name, namespace: svc.namespace ?? serviceFromHost(svc.host).namespace };
  // outbound|9080|v1|reviews.default.svc.cluster.local
  if (name.startsWith('outbound|')) {
    const host = name.split('|')[3];
    if (host) return serviceFromHost(host);
  }
  return undefined;
}

/** Envoy's request.total_size / response.total_size header part: names plus values. */
function headerBytes(h: HeaderMap | undefined): number {
  if (!h) return 0;
  const raw = h.raw;
  let n = 0;
  for (let i = 0; i < raw.length; i++) n += raw[i].length;
  return n;
}

/** The istio_* families on one registry. Create one per registry; share it between listeners. */
export class IstioMetrics {
  readonly requests: FastCounter;
  readonly duration: FastHistogram;
  readonly requestBytes: FastHistogram;
  readonly responseBytes: FastHistogram;
  readonly tcpOpened: FastCounter;
  readonly tcpClosed: FastCounter;
  readonly tcpSent: FastCounter;
  readonly tcpReceived: FastCounter;
  private nextSeries = 0;
  /** label sets not kept because MAX_SERIES was reached */
  overflowed = 0;
  private readonly http = new Map<string, HttpChildren>();
  private readonly tcp = new Map<string, TcpChildren>();
  private readonly httpOverflow = new Map<string, HttpChildren>();
  private readonly tcpOverflow = new Map<string, TcpChildren>();
  private readonly peers = new PeerCache();
  /** this proxy's workload */
  readonly local: WorkloadInfo;

  constructor(
    readonly registry: Registry,
    nodeMetadata: Readonly<Record<string, unknown>>,
    /** most label sets kept per group before new ones collapse into the overflow set */
    private readonly maxSeries = MAX_SERIES,
  ) {
    this.local = workloadFromMetadata(nodeMetadata);
    this.requests = new FastCounter('istio_requests_total', 'Requests handled, by source and destination workload', registry);
    this.duration = new FastHistogram('istio_request_duration_milliseconds', 'Request duration in milliseconds', registry, DURATION_BUCKETS_MS);
    this.requestBytes = new FastHistogram('istio_request_bytes', 'Request sizes (headers and body) in bytes', registry, SIZE_BUCKETS);
    this.responseBytes = new FastHistogram('istio_response_bytes', 'Response sizes (headers and body) in bytes', registry, SIZE_BUCKETS);
    this.tcpOpened = new FastCounter('istio_tcp_connections_opened_total', 'TCP connections opened', registry);
    this.tcpClosed = new FastCounter('istio_tcp_connections_closed_total', 'TCP connections closed', registry);
    this.tcpSent = new FastCounter('istio_tcp_sent_bytes_total', 'Bytes sent to the downstream on TCP connections', registry);
    this.tcpReceived = new FastCounter('istio_tcp_received_bytes_total', 'Bytes received from the downstream on TCP connections', registry);
  }

  /** The peer of a stream: exchange header (request side inbound, response side outbound) and TLS identity. */
  peerOf(reporter: Reporter, s: ActiveStream): WorkloadInfo {
    const conn = s.connection;
    if (reporter === 'destination') {
      const h = s.peerMetadata ?? s.headers?.first(PEER_METADATA_HEADER);
      if (h !== undefined) return this.peers.get(h, conn.peerPrincipal);
      return conn.peerPrincipal ? this.peers.get('', conn.peerPrincipal) : UNKNOWN_WORKLOAD;
    }
    const h = s.peerMetadata ?? s.responseHeaders?.first(PEER_METADATA_HEADER);
    return h !== undefined ? this.peers.get(h, undefined) : UNKNOWN_WORKLOAD;
  }

  /** Service per cluster object (null: the cluster names none), and per authority, both bounded. */
  private readonly serviceByCluster = new WeakMap<object, ServiceInfo | null>();
  private readonly serviceByAuthority = new Map<string, ServiceInfo>();

  private service(reporter: Reporter, s: ActiveStream): ServiceInfo {
    const c = s.cluster;
    if (c) {
      let fromCluster = this.serviceByCluster.get(c);
      if (fromCluster === undefined) this.serviceByCluster.set(c, (fromCluster = serviceFromCluster(c.name, c.config.metadata) ?? null));
      if (fromCluster) return fromCluster;
    }
    const key = `${reporter}\u0001${s.authority}`;
    let svc = this.serviceByAuthority.get(key);
    if (svc === undefined) {
      if (this.serviceByAuthority.size >= 1024) this.serviceByAuthority.clear();
      this.serviceByAuthority.set(key, (svc = this.serviceOfAuthority(reporter, s.authority)));
    }
    return svc;
  }

  private serviceOfAuthority(reporter: Reporter, authority: string): ServiceInfo {
    const host = stripHostPort(authority);
    if (host === '') return UNKNOWN_SERVICE;
    const svc = serviceFromHost(host);
    // Inbound: a bare service name is in our own namespace.
    if (reporter === 'destination' && svc.namespace === UNKNOWN && !host.includes('.')) return { host, name: host, namespace: this.local.namespace };
    return svc;
  }

  /** Records one finished HTTP stream. */
  recordHttp(reporter: Reporter, s: ActiveStream): void {
    const conn = s.connection;
    const peer = this.peerOf(reporter, s);
    let src: WorkloadInfo;
    let dst: WorkloadInfo;
    let policy: string;
    if (reporter === 'destination') {
      src = peer;
      dst = conn.localPrincipal ? this.localAs(conn.localPrincipal) : this.local;
      policy = conn.peerPrincipal ? 'mutual_tls' : 'none';
    } else {
      src = this.local;
      dst = peer;
      policy = UNKNOWN;
    }
    const svc = this.service(reporter, s);
    let grpcStatus = '';
    if (s.grpc) grpcStatus = s.responseTrailers?.first('grpc-status') ?? s.responseHeaders?.first('grpc-status') ?? '';
    const code = String(s.responseCode);
    const flags = s.responseFlags === '' ? '-' : s.responseFlags;
    const protocol = s.grpc ? 'grpc' : 'http';
    const key = `${reporter}.${workloadKey(src)}.${workloadKey(dst)}.${serviceKey(svc)}.${protocol}.${code}.${grpcStatus}.${flags}.${policy}`;
    let ch = this.http.get(key);
    if (ch === undefined) {
      if (this.http.size < this.maxSeries) {
        ch = this.httpChildren(labelSet(reporter, src, dst, svc, protocol, policy), code, grpcStatus, flags);
        this.http.set(key, ch);
      } else {
        // Past the bound: peer and service labels collapse to "unknown"; this map is bounded by codes x flags.
        const okey = `${reporter}\u0001${protocol}\u0001${code}\u0001${grpcStatus}\u0001${flags}`;
        ch = this.httpOverflow.get(okey);
        if (ch === undefined) {
          ch = this.httpChildren(this.overflow(reporter, protocol), code, grpcStatus, flags);
          this.httpOverflow.set(okey, ch);
        }
        this.overflowed++;
      }
    }
    ch.requests.inc();
    ch.duration.observe(Date.now() - s.startTime);
    ch.requestBytes.observe(s.bytesReceived + headerBytes(s.headers));
    ch.responseBytes.observe(s.bytesSent + headerBytes(s.responseHeaders));
  }

  private readonly localByPrincipal = new Map<string, WorkloadInfo>();
  /** This workload under the certificate it served with (few distinct values: one per SDS cert). */
  private localAs(principal: string): WorkloadInfo {
    let w = this.localByPrincipal.get(principal);
    if (w === undefined) {
      if (this.localByPrincipal.size > 64) this.localByPrincipal.clear();
      this.localByPrincipal.set(principal, (w = { ...this.local, principal }));
    }
    return w;
  }

  private httpChildren(labels: Labels, code: string, grpcStatus: string, flags: string): HttpChildren {
    labels.response_code = code;
    labels.grpc_response_status = grpcStatus;
    labels.response_flags = flags;
    const k = String(this.nextSeries++);
    const r = renderLabels(labels);
    return {
      requests: this.requests.child(k, labels, r),
      duration: this.duration.child(k, labels, r),
      requestBytes: this.requestBytes.child(k, labels, r),
      responseBytes: this.responseBytes.child(k, labels, r),
    };
  }

  private overflow(reporter: Reporter, protocol: string): Labels {
    return labelSet(reporter, reporter === 'source' ? this.local : UNKNOWN_WORKLOAD, reporter === 'destination' ? this.local : UNKNOWN_WORKLOAD, UNKNOWN_SERVICE, protocol, UNKNOWN);
  }

  /**
   * A TCP connection's label children, looked up once when it opens. `peerPrincipal`: the
   * downstream's TLS identity (inbound); `service`: from the cluster it was proxied to.
   */
  tcpChildren(reporter: Reporter, clusterName: string, clusterMetadata: Readonly<Record<string, unknown>> | undefined, peerPrincipal: string | undefined, localPrincipal?: string): TcpChildren {
    const peer = peerPrincipal ? this.peers.get('', peerPrincipal) : UNKNOWN_WORKLOAD;
    const local = localPrincipal ? this.localAs(localPrincipal) : this.local;
    const src = reporter === 'destination' ? peer : local;
    const dst = reporter === 'destination' ? local : peer;
    const svc = serviceFromCluster(clusterName, clusterMetadata) ?? UNKNOWN_SERVICE;
    const policy = reporter === 'destination' ? (peerPrincipal ? 'mutual_tls' : 'none') : UNKNOWN;
    const key = `${reporter}.${workloadKey(src)}.${workloadKey(dst)}.${serviceKey(svc)}.${policy}`;
    let ch = this.tcp.get(key);
    if (ch === undefined) {
      const over = this.tcp.size >= this.maxSeries;
      const okey = `${reporter}`;
      ch = over ? this.tcpOverflow.get(okey) : undefined;
      if (ch === undefined) {
        const labels = over ? this.overflow(reporter, 'tcp') : labelSet(reporter, src, dst, svc, 'tcp', policy);
        labels.response_flags = '-';
        const k = String(this.nextSeries++);
        const r = renderLabels(labels);
        ch = { opened: this.tcpOpened.child(k, labels, r), closed: this.tcpClosed.child(k, labels, r), sent: this.tcpSent.child(k, labels, r), received: this.tcpReceived.child(k, labels, r) };
        if (over) this.tcpOverflow.set(okey, ch);
        else this.tcp.set(key, ch);
      }
      if (over) this.overflowed++;
    }
    return ch;
  }
}

// Short ids for workloads and services in series keys: equal facts get the same id (so a peer
// decoded twice, or evicted and decoded again, maps to the same series), found through the object
// first so a cached object costs one WeakMap lookup.
const IDS = new WeakMap<object, string>();
const ID_BY_FACTS = new Map<string, string>();
function idOf(o: object, facts: () => string): string {
  let id = IDS.get(o);
  if (id === undefined) {
    const f = facts();
    id = ID_BY_FACTS.get(f);
    if (id === undefined) {
      // bounded: past it, ids are per object (series stay correct, equal facts may not share one)
      id = String(nextId++);
      if (ID_BY_FACTS.size < 100_000) ID_BY_FACTS.set(f, id);
    }
    IDS.set(o, id);
  }
  return id;
}
let nextId = 0;

function workloadKey(w: WorkloadInfo): string {
  return idOf(w, () => `${w.workload}\u0002${w.namespace}\u0002${w.app}\u0002${w.version}\u0002${w.canonicalService}\u0002${w.canonicalRevision}\u0002${w.cluster}\u0002${w.principal}`);
}

function serviceKey(s: ServiceInfo): string {
  return idOf(s, () => `${s.host}\u0002${s.name}\u0002${s.namespace}`);
}

function labelSet(reporter: Reporter, src: WorkloadInfo, dst: WorkloadInfo, svc: ServiceInfo, protocol: string, policy: string): Labels {
  return {
    reporter,
    source_workload: src.workload,
    source_canonical_service: src.canonicalService,
    source_canonical_revision: src.canonicalRevision,
    source_workload_namespace: src.namespace,
    source_principal: src.principal,
    source_app: src.app,
    source_version: src.version,
    source_cluster: src.cluster,
    destination_workload: dst.workload,
    destination_workload_namespace: dst.namespace,
    destination_principal: dst.principal,
    destination_app: dst.app,
    destination_version: dst.version,
    destination_service: svc.host,
    destination_canonical_service: dst.canonicalService,
    destination_canonical_revision: dst.canonicalRevision,
    destination_service_name: svc.name,
    destination_service_namespace: svc.namespace,
    destination_cluster: dst.cluster,
    request_protocol: protocol,
    connection_security_policy: policy,
  };
}
