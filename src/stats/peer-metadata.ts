// Workload identity for Istio's metric labels: our own from the bootstrap node metadata, the peer's
// from Istio's HTTP metadata exchange headers (x-envoy-peer-metadata: base64 of a serialized
// google.protobuf.Struct of the peer's node metadata; x-envoy-peer-metadata-id: its node id) or from
// its TLS identity (spiffe://<td>/ns/<ns>/sa/<sa>). Decoded peers are cached by header value in a
// bounded LRU, so a request from a known peer decodes nothing.

import type * as Protobuf from 'protobufjs';
import { LRUCache } from 'lru-cache';

export const PEER_METADATA_HEADER = 'x-envoy-peer-metadata';
export const PEER_METADATA_ID_HEADER = 'x-envoy-peer-metadata-id';
export const UNKNOWN = 'unknown';

/** The workload facts Istio's metric labels are made of (every field 'unknown' when not known). */
export interface WorkloadInfo {
  readonly workload: string;
  readonly namespace: string;
  readonly app: string;
  readonly version: string;
  readonly canonicalService: string;
  readonly canonicalRevision: string;
  readonly cluster: string;
  readonly principal: string;
}

export const UNKNOWN_WORKLOAD: WorkloadInfo = {
  workload: UNKNOWN,
  namespace: UNKNOWN,
  app: UNKNOWN,
  version: UNKNOWN,
  canonicalService: UNKNOWN,
  canonicalRevision: UNKNOWN,
  cluster: UNKNOWN,
  principal: UNKNOWN,
};

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/**
 * Workload facts from Istio node metadata (NAME, NAMESPACE, WORKLOAD_NAME, LABELS, CLUSTER_ID,
 * SERVICE_ACCOUNT, MESH_ID...), with Istio's fallbacks: canonical service = the
 * service.istio.io/canonical-name label, else app (or app.kubernetes.io/name), else the workload name;
 * canonical revision = service.istio.io/canonical-revision, else version, else "latest".
 */
export function workloadFromMetadata(md: Readonly<Record<string, unknown>>, principal?: string): WorkloadInfo {
  const labels = (md.LABELS && typeof md.LABELS === 'object' ? md.LABELS : {}) as Record<string, unknown>;
  const namespace = str(md.NAMESPACE) ?? UNKNOWN;
  const workload = str(md.WORKLOAD_NAME) ?? str(md.NAME) ?? UNKNOWN;
  const app = str(labels.app) ?? str(labels['app.kubernetes.io/name']) ?? UNKNOWN;
  const version = str(labels.version) ?? str(labels['app.kubernetes.io/version']) ?? UNKNOWN;
  const canonicalService = str(labels['service.istio.io/canonical-name']) ?? (app !== UNKNOWN ? app : workload);
  const canonicalRevision = str(labels['service.istio.io/canonical-revision']) ?? (version !== UNKNOWN ? version : 'latest');
  // The principal is a TLS fact (Istio labels it only under mTLS), never derived from SERVICE_ACCOUNT.
  return { workload, namespace, app, version, canonicalService, canonicalRevision, cluster: str(md.CLUSTER_ID) ?? UNKNOWN, principal: principal ?? UNKNOWN };
}

/** A peer known only by its certificate: namespace from the SPIFFE id, the rest unknown. */
export function workloadFromPrincipal(principal: string): WorkloadInfo {
  const m = /^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(principal);
  return { ...UNKNOWN_WORKLOAD, namespace: m ? m[1] : UNKNOWN, principal };
}

let structType: Protobuf.Type | undefined;
function struct(): Protobuf.Type {
  if (!structType) {
    // loaded on first use: a proxy without Istio's metadata exchange never pays for protobufjs
    const protobuf = require('protobufjs') as typeof Protobuf;
    const root = new protobuf.Root();
    root.loadSync('google/protobuf/struct.proto'); // protobufjs ships the well-known types
    structType = root.lookupType('google.protobuf.Struct');
  }
  return structType;
}

type PbValue = { nullValue?: number; numberValue?: number; stringValue?: string; boolValue?: boolean; structValue?: PbStruct; listValue?: { values?: PbValue[] } };
type PbStruct = { fields?: Record<string, PbValue> };

function fromPbValue(v: PbValue): unknown {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.numberValue !== undefined) return v.numberValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.structValue !== undefined) return fromPbStruct(v.structValue);
  if (v.listValue !== undefined) return (v.listValue.values ?? []).map(fromPbValue);
  return null;
}

function fromPbStruct(s: PbStruct): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s.fields ?? {})) out[k] = fromPbValue(v);
  return out;
}

function toPbValue(v: unknown): PbValue {
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toPbValue) } };
  if (v && typeof v === 'object') return { structValue: toPbStruct(v as Record<string, unknown>) };
  return { nullValue: 0 };
}

function toPbStruct(o: Record<string, unknown>): PbStruct {
  const fields: Record<string, PbValue> = {};
  for (const [k, v] of Object.entries(o)) fields[k] = toPbValue(v);
  return { fields };
}

/** x-envoy-peer-metadata for our own metadata (computed once per config). */
export function encodePeerMetadata(md: Readonly<Record<string, unknown>>): string {
  const t = struct();
  return Buffer.from(t.encode(t.fromObject(toPbStruct(md as Record<string, unknown>))).finish()).toString('base64');
}

/** Decodes x-envoy-peer-metadata; undefined when it is not a base64 Struct. Never throws. */
export function decodePeerMetadata(b64: string): Record<string, unknown> | undefined {
  try {
    const buf = Buffer.from(b64, 'base64');
    if (buf.length === 0) return undefined;
    const t = struct();
    return fromPbStruct(t.toObject(t.decode(buf), { defaults: false }) as PbStruct);
  } catch {
    return undefined;
  }
}

/** Which of our metadata keys go into the exchange header (Istio sends the node metadata it labels with). */
const EXCHANGED_KEYS = ['NAME', 'NAMESPACE', 'LABELS', 'WORKLOAD_NAME', 'CLUSTER_ID', 'MESH_ID', 'SERVICE_ACCOUNT', 'OWNER', 'PLATFORM_METADATA', 'APP_CONTAINERS', 'INSTANCE_IPS'];
export function exchangedMetadata(md: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of EXCHANGED_KEYS) if (md[k] !== undefined) out[k] = md[k];
  return out;
}

/**
 * Peer workloads by exchange header value, decoded once. Bounded: a flood of distinct values costs
 * at most `max` entries, and an undecodable value is cached as unknown too.
 */
export class PeerCache {
  private readonly cache: LRUCache<string, WorkloadInfo>;
  constructor(max = 1024) {
    this.cache = new LRUCache({ max });
  }
  get(header: string, principal: string | undefined): WorkloadInfo {
    const key = principal === undefined ? header : `${header}\u0000${principal}`;
    let w = this.cache.get(key);
    if (w === undefined) {
      const md = decodePeerMetadata(header);
      w = md ? workloadFromMetadata(md, principal) : principal ? workloadFromPrincipal(principal) : UNKNOWN_WORKLOAD;
      this.cache.set(key, w);
    }
    return w;
  }
}
