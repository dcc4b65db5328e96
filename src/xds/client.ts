// The ADS client: one gRPC stream to the management server, incremental (DeltaAggregatedResources,
// Istio's default) or state of the world (StreamAggregatedResources), carrying CDS, EDS, LDS, RDS
// (and SDS when asked). It keeps per type the subscription (wildcard or names), the versions and
// nonces; hands each response, decoded to proto3 JSON, to the handler and ACKs it, or NACKs it with
// every error the handler found; reconnects with exponential back-off and full jitter, resending
// its subscriptions (delta: with the versions it has). While disconnected nothing is changed: the
// last good config keeps serving. It does not validate or apply config itself (see apply.ts).

import type { Any } from './generated/google/protobuf/Any';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../common/logger';
import { adsService, TYPE, type AdsClient, type DeltaDiscoveryResponse, type DeltaStream, type DiscoveryResponse, type SotwStream } from './ads-service';
import { anyToJson, jsonToMessageObject, typeNameOf, type AnyMessage } from './proto';

/** One resource of an update, decoded to the JSON form src/config/ reads. */
export interface XdsResource {
  readonly name: string;
  readonly version: string;
  readonly json: Record<string, unknown>;
}

export interface XdsUpdate {
  readonly typeUrl: string;
  /** the response's version_info (SotW) or system_version_info (delta) */
  readonly version: string;
  readonly added: readonly XdsResource[];
  readonly removed: readonly string[];
  /** resources that did not decode (bad bytes, wrong type): always a NACK */
  readonly errors: readonly string[];
}

export interface XdsHandler {
  /** Applies what is valid in an update; returns every validation error (empty: ACK). */
  apply(update: XdsUpdate): string[];
  /** The stream is up (true) or went down (false). */
  connectionChanged?(connected: boolean): void;
}

export interface AdsClientOptions {
  /** host:port of the management server */
  readonly target: string;
  readonly credentials: grpc.ChannelCredentials;
  readonly channelOptions?: grpc.ChannelOptions;
  /** extra metadata on the stream (authorization, ClusterID, XDS_HEADER_*) */
  readonly metadata: readonly { readonly key: string; readonly value: string }[];
  /** more metadata computed at each (re)connect (overrides `metadata` keys): a rotating token */
  readonly dynamicMetadata?: () => Readonly<Record<string, string>>;
  /** envoy.config.core.v3.Node in proto3 JSON */
  readonly node: Record<string, unknown>;
  readonly delta: boolean;
  readonly setNodeOnFirstMessageOnly?: boolean;
  readonly handler: XdsHandler;
  readonly log: Logger;
  /** back-off: first retry within baseMs, doubling up to maxMs (Envoy: 500 ms, 30 s) */
  readonly backoffBaseMs?: number;
  readonly backoffMaxMs?: number;
}

/** The order types are requested in on (re)connect, as Envoy does: CDS, EDS, LDS, RDS, SDS. */
const ORDER = [TYPE.cluster, TYPE.endpoint, TYPE.listener, TYPE.route, TYPE.secret];
const WILDCARD_TYPES = new Set<string>([TYPE.cluster, TYPE.listener]);

interface TypeState {
  /** subscribed names (non-wildcard types) */
  names: Set<string>;
  /** names sent to the server on this stream (delta) */
  sentNames: Set<string>;
  /** name -> version of every resource we hold (delta's initial_resource_versions; SotW removal) */
  versions: Map<string, string>;
  /** SotW: last accepted version_info; delta: last system_version_info */
  version: string;
  nonce: string;
  /** requested at least once on this stream */
  requested: boolean;
  lastNack?: { version: string; error: string; at: string };
}

/** gRPC status INTERNAL, as Envoy puts in error_detail.code. */
const NACK_CODE = 13;

export class AdsStreamClient {
  private client?: AdsClient;
  private sotw?: SotwStream;
  private deltaStream?: DeltaStream;
  private readonly types = new Map<string, TypeState>();
  private stopped = false;
  private attempt = 0;
  private timer?: NodeJS.Timeout;
  private sentNode = false;
  /** a CDS response was handled (on any stream): LDS is requested right away on reconnect */
  private cdsSeen = false;
  connected = false;
  /** responses received since start (tests and admin) */
  responses = 0;
  /** NACKs sent since start */
  nacks = 0;

  constructor(private readonly opts: AdsClientOptions) {
    for (const t of ORDER) this.types.set(t, { names: new Set(), sentNames: new Set(), versions: new Map(), version: '', nonce: '', requested: false });
  }

  get mode(): 'delta' | 'sotw' {
    return this.opts.delta ? 'delta' : 'sotw';
  }

  start(): void {
    const { client } = adsService();
    this.client = new client(this.opts.target, this.opts.credentials, this.opts.channelOptions ?? {}) as unknown as AdsClient;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.sotw?.cancel();
    this.deltaStream?.cancel();
    this.client?.close();
  }

  /** Per type: version and last NACK (for /config_dump). */
  status(): Record<string, { version: string; lastNack?: { version: string; error: string; at: string } }> {
    const out: Record<string, { version: string; lastNack?: { version: string; error: string; at: string } }> = {};
    for (const [t, s] of this.types) if (s.requested || s.version !== '') out[t] = { version: s.version, ...(s.lastNack ? { lastNack: s.lastNack } : {}) };
    return out;
  }

  /**
   * Subscribes a type: wildcard types (CDS, LDS) take `undefined`; the others the names wanted.
   * Sends a request when the subscription changed (or the type was never requested on this stream).
   */
  subscribe(typeUrl: string, names?: ReadonlySet<string>): void {
    const s = this.types.get(typeUrl);
    if (!s) return;
    const next = new Set(names ?? []);
    const changed = !s.requested || next.size !== s.names.size || [...next].some((n) => !s.names.has(n));
    s.names = next;
    if (!WILDCARD_TYPES.has(typeUrl) && names !== undefined) {
      // forget resources no longer wanted
      for (const n of [...s.versions.keys()]) if (!next.has(n)) s.versions.delete(n);
    }
    if (changed) this.request(typeUrl); // no-op without a stream: connect() sends every subscription
  }

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    for (const { key, value } of this.opts.metadata) md.add(key, value);
    for (const [key, value] of Object.entries(this.opts.dynamicMetadata?.() ?? {})) md.set(key, value);
    return md;
  }

  private connect(): void {
    if (this.stopped || !this.client) return;
    this.sentNode = false;
    for (const s of this.types.values()) {
      s.requested = false;
      s.nonce = '';
      s.sentNames = new Set();
    }
    const md = this.metadata();
    let stream: SotwStream | DeltaStream;
    if (this.opts.delta) {
      const d = this.client.DeltaAggregatedResources(md);
      this.deltaStream = d;
      d.on('data', (r: DeltaDiscoveryResponse) => this.onDelta(d, r));
      stream = d;
    } else {
      const so = this.client.StreamAggregatedResources(md);
      this.sotw = so;
      so.on('data', (r: DiscoveryResponse) => this.onSotw(so, r));
      stream = so;
    }
    let ended = false;
    const down = (why: string): void => {
      if (ended) return;
      ended = true;
      if (this.sotw === stream) this.sotw = undefined;
      if (this.deltaStream === stream) this.deltaStream = undefined;
      const was = this.connected;
      this.connected = false;
      if (was) this.opts.handler.connectionChanged?.(false);
      if (!this.stopped) {
        this.opts.log.warn(`xDS stream closed (${why}); keeping the last good config and reconnecting`);
        this.scheduleReconnect();
      }
    };
    // Connected once the server answers (response headers or a first response).
    const up = (): void => {
      if (ended || this.connected) return;
      this.connected = true;
      this.opts.handler.connectionChanged?.(true);
    };
    stream.on('metadata', up);
    stream.on('data', up);
    stream.on('error', (e: Error) => down(e.message));
    stream.on('end', () => down('ended by the server'));
    stream.on('status', (st: grpc.StatusObject) => {
      if (st.code !== grpc.status.OK) down(st.details);
    });
    // CDS first; LDS once CDS has been applied (as Envoy's init order); EDS/RDS with their names.
    for (const t of ORDER) {
      const s = this.types.get(t)!;
      // (a delta server with nothing new for CDS after a reconnect may send no CDS response at all)
      if (t === TYPE.cluster || s.names.size > 0 || (t === TYPE.listener && this.cdsSeen)) {
        this.request(t);
      }
    }
  }

  private scheduleReconnect(): void {
    if (this.timer) clearTimeout(this.timer);
    const base = this.opts.backoffBaseMs ?? 500;
    const max = this.opts.backoffMaxMs ?? 30_000;
    const ceiling = Math.min(max, base * 2 ** this.attempt);
    this.attempt++;
    const delay = Math.floor(Math.random() * ceiling); // full jitter
    this.timer = setTimeout(() => this.connect(), delay);
    this.timer.unref();
  }

  private node(): Record<string, unknown> | undefined {
    if (this.sentNode && this.opts.setNodeOnFirstMessageOnly) return undefined;
    this.sentNode = true;
    return jsonToMessageObject('envoy.config.core.v3.Node', this.opts.node);
  }

  /** A request for a type: the initial one on this stream, or a subscription change. */
  private request(typeUrl: string): void {
    const s = this.types.get(typeUrl)!;
    const wildcard = WILDCARD_TYPES.has(typeUrl);
    if (this.opts.delta) {
      const d = this.deltaStream;
      if (!d) return;
      const first = !s.requested;
      const subscribe = wildcard ? [] : [...s.names].filter((n) => !s.sentNames.has(n));
      const unsubscribe = wildcard ? [] : [...s.sentNames].filter((n) => !s.names.has(n));
      if (!first && subscribe.length === 0 && unsubscribe.length === 0) return;
      const node = this.node();
      d.write({
        ...(node ? { node } : {}),
        type_url: typeUrl,
        resource_names_subscribe: subscribe,
        resource_names_unsubscribe: unsubscribe,
        ...(first ? { initial_resource_versions: Object.fromEntries(s.versions) } : {}),
        response_nonce: first ? '' : s.nonce,
      });
      s.sentNames = new Set(wildcard ? [] : s.names);
    } else {
      const so = this.sotw;
      if (!so) return;
      const node = this.node();
      so.write({
        ...(node ? { node } : {}),
        type_url: typeUrl,
        version_info: s.version,
        resource_names: wildcard ? [] : [...s.names],
        response_nonce: s.nonce,
      });
    }
    s.requested = true;
  }

  private decode(typeUrl: string, body: Any | null | undefined, fallbackName: string): { name: string; json?: Record<string, unknown>; error?: string } {
    // the service is loaded without Any expansion: a body is always { type_url, value: Buffer }
    const any = body as AnyMessage | null | undefined;
    if (!any || !('value' in any) || typeof any.type_url !== 'string') return { name: fallbackName, error: `resource '${fallbackName}' has no body` };
    if (any.type_url !== typeUrl) return { name: fallbackName, error: `resource '${fallbackName}' has type ${any.type_url}, expected ${typeUrl}` };
    try {
      const json = anyToJson(any);
      const raw = typeUrl === TYPE.endpoint ? json.cluster_name : json.name;
      return { name: fallbackName || (typeof raw === 'string' ? raw : ''), json };
    } catch (e) {
      return { name: fallbackName, error: `resource '${fallbackName}' does not decode as ${typeNameOf(typeUrl)}: ${(e as Error).message}` };
    }
  }

  private handled(): void {
    this.attempt = 0;
    this.responses++;
  }

  private onDelta(stream: DeltaStream, r: DeltaDiscoveryResponse): void {
    const typeUrl = r.type_url ?? '';
    const s = this.types.get(typeUrl);
    this.handled();
    if (!s) {
      stream.write({ type_url: typeUrl, response_nonce: r.nonce ?? '', error_detail: { code: NACK_CODE, message: `keel does not subscribe to ${typeUrl}` } });
      return;
    }
    s.nonce = r.nonce ?? '';
    const added: XdsResource[] = [];
    const errors: string[] = [];
    for (const res of r.resources ?? []) {
      const d = this.decode(typeUrl, res.resource, res.name ?? '');
      if (d.error || !d.json) errors.push(d.error ?? 'bad resource');
      else added.push({ name: d.name, version: res.version ?? '', json: d.json });
    }
    const removed = r.removed_resources ?? [];
    const update: XdsUpdate = { typeUrl, version: r.system_version_info ?? '', added, removed, errors };
    const problems = [...errors, ...this.safeApply(update)];
    // versions we hold: valid resources only (a rejected one is asked for again after reconnect)
    const bad = new Set(problems.map((p) => p.match(/'([^']*)'/)?.[1]).filter((x): x is string => x !== undefined));
    for (const a of added) if (!bad.has(a.name)) s.versions.set(a.name, a.version);
    for (const n of removed) s.versions.delete(n);
    if (problems.length === 0) {
      s.version = update.version;
      stream.write({ type_url: typeUrl, response_nonce: s.nonce });
    } else {
      this.nack(s, update.version, problems);
      stream.write({ type_url: typeUrl, response_nonce: s.nonce, error_detail: { code: NACK_CODE, message: problems.join('\n') } });
    }
    this.afterApply(typeUrl);
  }

  private onSotw(stream: SotwStream, r: DiscoveryResponse): void {
    const typeUrl = r.type_url ?? '';
    const s = this.types.get(typeUrl);
    this.handled();
    if (!s) {
      stream.write({ type_url: typeUrl, response_nonce: r.nonce ?? '', version_info: '', error_detail: { code: NACK_CODE, message: `keel does not subscribe to ${typeUrl}` } });
      return;
    }
    s.nonce = r.nonce ?? '';
    const version = r.version_info ?? '';
    const added: XdsResource[] = [];
    const errors: string[] = [];
    for (const any of r.resources ?? []) {
      const d = this.decode(typeUrl, any, '');
      if (d.error || !d.json) errors.push(d.error ?? 'bad resource');
      else added.push({ name: d.name, version, json: d.json });
    }
    // State of the world: for CDS and LDS a resource missing from the response is removed.
    const present = new Set(added.map((a) => a.name));
    const removed = WILDCARD_TYPES.has(typeUrl) && errors.length === 0 ? [...s.versions.keys()].filter((n) => !present.has(n)) : [];
    const update: XdsUpdate = { typeUrl, version, added, removed, errors };
    const problems = [...errors, ...this.safeApply(update)];
    if (problems.length === 0) {
      s.version = version;
      for (const a of added) s.versions.set(a.name, version);
      for (const n of removed) s.versions.delete(n);
      stream.write({ type_url: typeUrl, version_info: version, resource_names: WILDCARD_TYPES.has(typeUrl) ? [] : [...s.names], response_nonce: s.nonce });
    } else {
      for (const a of added) s.versions.set(a.name, version);
      this.nack(s, version, problems);
      stream.write({
        type_url: typeUrl,
        version_info: s.version,
        resource_names: WILDCARD_TYPES.has(typeUrl) ? [] : [...s.names],
        response_nonce: s.nonce,
        error_detail: { code: NACK_CODE, message: problems.join('\n') },
      });
    }
    this.afterApply(typeUrl);
  }

  private nack(s: TypeState, version: string, problems: string[]): void {
    this.nacks++;
    s.lastNack = { version, error: problems.join('\n'), at: new Date().toISOString() };
    this.opts.log.warn(`xDS update rejected (version ${version}):\n  ${problems.join('\n  ')}`);
  }

  private safeApply(update: XdsUpdate): string[] {
    try {
      return this.opts.handler.apply(update);
    } catch (e) {
      return [`keel could not apply the update: ${(e as Error).message}`];
    }
  }

  /** After CDS the listeners are requested (first time on this stream). */
  private afterApply(typeUrl: string): void {
    if (typeUrl === TYPE.cluster) this.cdsSeen = true;
    if (typeUrl === TYPE.cluster && !this.types.get(TYPE.listener)!.requested) this.request(TYPE.listener);
  }
}
