// Loads Istio resources from YAML/JSON text (multi-document) and checks their shape: apiVersion and
// kind, metadata, and the CRD schemas that @kubernetes-models/istio ships (types, enums). Problems are
// collected with their path (`VirtualService reviews: spec.http[0].route[1].weight: ...`); nothing
// here throws on bad input and nothing here translates (see translate.ts).

import * as fs from 'node:fs';
import { parseAllDocuments } from 'yaml';
import schemaRegistry = require('@kubernetes-models/validate');
import { VirtualService as VsModel } from '@kubernetes-models/istio/networking.istio.io/v1beta1/VirtualService';
import { DestinationRule as DrModel } from '@kubernetes-models/istio/networking.istio.io/v1beta1/DestinationRule';
import { Gateway as GwModel } from '@kubernetes-models/istio/networking.istio.io/v1beta1/Gateway';
import { ServiceEntry as SeModel } from '@kubernetes-models/istio/networking.istio.io/v1beta1/ServiceEntry';
import { WorkloadEntry as WeModel } from '@kubernetes-models/istio/networking.istio.io/v1beta1/WorkloadEntry';
import { PeerAuthentication as PaModel } from '@kubernetes-models/istio/security.istio.io/v1beta1/PeerAuthentication';
import { AuthorizationPolicy as ApModel } from '@kubernetes-models/istio/security.istio.io/v1/AuthorizationPolicy';

export type Obj = Record<string, unknown>;

export const ISTIO_KINDS = [
  'VirtualService',
  'DestinationRule',
  'Gateway',
  'ServiceEntry',
  'WorkloadEntry',
  'PeerAuthentication',
  'AuthorizationPolicy',
  'Endpoints',
] as const;
export type IstioKind = (typeof ISTIO_KINDS)[number];

const NETWORKING_VERSIONS = ['networking.istio.io/v1', 'networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3'];
const SECURITY_VERSIONS = ['security.istio.io/v1', 'security.istio.io/v1beta1'];
const API_VERSIONS: Readonly<Record<IstioKind, readonly string[]>> = {
  VirtualService: NETWORKING_VERSIONS,
  DestinationRule: NETWORKING_VERSIONS,
  Gateway: NETWORKING_VERSIONS,
  ServiceEntry: NETWORKING_VERSIONS,
  WorkloadEntry: NETWORKING_VERSIONS,
  PeerAuthentication: SECURITY_VERSIONS,
  AuthorizationPolicy: SECURITY_VERSIONS,
  Endpoints: [], // keel's own compact endpoints file: any apiVersion (or none)
};

/** One Istio resource as read: kind, name, namespace, its spec, and where it came from. */
export interface IstioResource {
  readonly kind: IstioKind;
  readonly name: string;
  readonly namespace: string;
  /** The spec (for Endpoints: the whole document minus apiVersion/kind/metadata). */
  readonly spec: Obj;
  /** `file.yaml#2` (document index, from 1). */
  readonly source: string;
}

/** Problems and warnings, each already prefixed with the resource (`VirtualService reviews: spec...`). */
export class IstioDiagnostics {
  readonly problems: string[] = [];
  readonly warnings: string[] = [];
  private readonly paths = new Set<string>();
  /** One problem per field: a later one for a path already reported (schema, then translation) is dropped. */
  problem(where: string, message: string): void {
    const colon = message.indexOf(': ');
    const key = `${where}: ${colon > 0 ? message.slice(0, colon) : message}`;
    if (colon > 0 && this.paths.has(key)) return;
    this.paths.add(key);
    this.problems.push(`${where}: ${message}`);
  }
  warn(where: string, message: string): void {
    this.warnings.push(`${where}: ${message}`);
  }
}

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `VirtualService reviews` (with the namespace when it is not the default one). */
export function label(r: { kind: string; name: string; namespace: string }, defaultNamespace: string): string {
  return `${r.kind} ${r.namespace === defaultNamespace ? r.name : `${r.namespace}/${r.name}`}`;
}

/** Reads every document of every file; a file that cannot be read or parsed is a problem. */
export function loadIstioFiles(paths: readonly string[], defaultNamespace: string, diag: IstioDiagnostics): IstioResource[] {
  const out: IstioResource[] = [];
  for (const p of paths) {
    let text: string;
    try {
      text = fs.readFileSync(p, 'utf8');
    } catch (e) {
      diag.problem(p, `cannot read: ${(e as Error).message}`);
      continue;
    }
    out.push(...parseIstioText(text, p, defaultNamespace, diag));
  }
  return out;
}

export function parseIstioText(text: string, sourceName: string, defaultNamespace: string, diag: IstioDiagnostics): IstioResource[] {
  const out: IstioResource[] = [];
  const docs = parseAllDocuments(text);
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((doc, i) => {
    const src = `${sourceName}#${i + 1}`;
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        const pos = e.linePos?.[0];
        diag.problem(pos ? `${sourceName}:${pos.line}:${pos.col}` : src, e.message.split('\n')[0]);
      }
      return;
    }
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) return; // empty document
    // A Kubernetes List (kubectl get -o yaml) holds items.
    if (isObj(value) && value.kind === 'List' && Array.isArray(value.items)) {
      value.items.forEach((item, j) => {
        const r = readResource(item, `${src}.items[${j}]`, defaultNamespace, diag);
        if (r) out.push(r);
      });
      return;
    }
    const r = readResource(value, src, defaultNamespace, diag);
    if (r) out.push(r);
  });
  return out;
}

function readResource(value: unknown, src: string, defaultNamespace: string, diag: IstioDiagnostics): IstioResource | undefined {
  if (!isObj(value)) {
    diag.problem(src, 'a document must be an object with apiVersion, kind, metadata and spec');
    return undefined;
  }
  const kind = value.kind;
  if (typeof kind !== 'string' || !(ISTIO_KINDS as readonly string[]).includes(kind)) {
    diag.problem(src, `kind ${JSON.stringify(kind)} is not one keel reads (${ISTIO_KINDS.join(', ')})`);
    return undefined;
  }
  const k = kind as IstioKind;
  const meta = isObj(value.metadata) ? value.metadata : {};
  const name =
    typeof meta.name === 'string' && meta.name !== ''
      ? meta.name
      : k === 'Endpoints' && typeof value.service === 'string'
        ? value.service
        : '';
  const namespace =
    typeof meta.namespace === 'string' && meta.namespace !== ''
      ? meta.namespace
      : k === 'Endpoints' && typeof value.namespace === 'string'
        ? value.namespace
        : defaultNamespace;
  const where = `${k} ${name || '(unnamed)'} (${src})`;
  if (name === '') diag.problem(where, 'metadata.name is required');
  if (value.metadata !== undefined && !isObj(value.metadata)) diag.problem(where, 'metadata must be an object');
  const versions = API_VERSIONS[k];
  if (versions.length > 0 && !versions.includes(String(value.apiVersion))) {
    diag.problem(where, `apiVersion ${JSON.stringify(value.apiVersion)} is not one of ${versions.join(', ')}`);
    return undefined;
  }
  let spec: Obj;
  if (k === 'Endpoints') {
    const { apiVersion: _a, kind: _k, metadata: _m, ...rest } = value;
    void _a;
    void _k;
    void _m;
    spec = rest;
  } else {
    if (value.spec !== undefined && !isObj(value.spec)) {
      diag.problem(where, 'spec must be an object');
      return undefined;
    }
    spec = isObj(value.spec) ? value.spec : {};
    for (const e of schemaProblems(k, value)) diag.problem(`${k} ${name}`, e);
    // Like kubectl's strict field validation: a misspelt field (`lables`) would otherwise silently change meaning.
    for (const f of unknownFields(k, value)) diag.problem(`${k} ${name}`, `${f}: unknown field`);
  }
  return name === '' ? undefined : { kind: k, name, namespace, spec, source: src };
}

type Validatable = { validate(): void };
const MODELS: Partial<Record<IstioKind, new (data: never) => Validatable>> = {
  VirtualService: VsModel as never,
  DestinationRule: DrModel as never,
  Gateway: GwModel as never,
  ServiceEntry: SeModel as never,
  WorkloadEntry: WeModel as never,
  PeerAuthentication: PaModel as never,
  AuthorizationPolicy: ApModel as never,
};

/**
 * The CRD schema's verdict (types, enums, required fields) as `spec.http[0].route[0].weight: must be
 * integer`. The schemas are the same for every served apiVersion, so v1beta1/v1 models check all.
 */
export function schemaProblems(kind: IstioKind, value: Obj): string[] {
  const Model = MODELS[kind];
  if (!Model) return [];
  const copy = { ...value, apiVersion: kind === 'AuthorizationPolicy' ? 'security.istio.io/v1' : kind === 'PeerAuthentication' ? 'security.istio.io/v1beta1' : 'networking.istio.io/v1beta1', metadata: isObj(value.metadata) ? value.metadata : { name: 'x' } };
  try {
    new Model(copy as never).validate();
    return [];
  } catch (e) {
    const errors = (e as { errors?: { instancePath?: string; message?: string; params?: Obj }[] }).errors;
    if (!Array.isArray(errors)) return [(e as Error).message];
    const seen = new Set<string>();
    const out: string[] = [];
    for (const err of errors) {
      const path = jsonPointerToPath(err.instancePath ?? '');
      if (path === 'apiVersion' || path === 'kind') continue;
      let msg = err.message ?? 'invalid';
      if (err.params && Array.isArray(err.params.allowedValues)) msg += ` (${(err.params.allowedValues as unknown[]).join(', ')})`;
      const line = `${path === '' ? '' : `${path}: `}${msg}`;
      if (!seen.has(line)) {
        seen.add(line);
        out.push(line);
      }
    }
    return out;
  }
}

/** `/spec/http/0/route/1/weight` -> `spec.http[0].route[1].weight`. */
export function jsonPointerToPath(p: string): string {
  let out = '';
  for (const raw of p.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (/^\d+$/.test(seg)) out += `[${seg}]`;
    else out += out === '' ? seg : `.${seg}`;
  }
  return out;
}

// The models register their JSON schema lazily through @kubernetes-models/validate's register();
// keeping a copy lets keel also point at fields the schema does not know (typos such as `lables`).
const SCHEMAS = new Map<string, Obj>();
let capturing = false;
function captureSchemas(): void {
  if (capturing) return;
  capturing = true;
  const reg = schemaRegistry as unknown as { register: (id: string, schema: Obj) => void };
  const original = reg.register;
  try {
    reg.register = (id: string, schema: Obj): void => {
      SCHEMAS.set(id, schema);
      original(id, schema);
    };
  } catch {
    // a frozen module namespace: no unknown-field warnings
  }
}
captureSchemas();

/** Fields newer than the bundled schemas that keel reads. */
const NEWER_FIELDS = new Set([
  'uriRegexRewrite',
  'mirrors',
  'backoff',
  'retryIgnorePreviousHosts',
  'unmatchedPreflights',
  'targetRef',
  'targetRefs',
  'warmup',
  'maxConcurrentStreams',
  'proxyProtocol',
  'caCrl',
  'serviceAccounts',
  'notServiceAccounts',
]);

/** Paths of object keys the kind's schema does not list (only where the schema lists properties). */
export function unknownFields(kind: IstioKind, value: Obj): string[] {
  const id = kind === 'AuthorizationPolicy' ? 'security.istio.io.v1.AuthorizationPolicy' : kind === 'PeerAuthentication' ? 'security.istio.io.v1beta1.PeerAuthentication' : `networking.istio.io.v1beta1.${kind}`;
  const schema = SCHEMAS.get(id);
  if (!schema || !isObj(schema.properties) || !isObj(schema.properties.spec)) return [];
  const out: string[] = [];
  const walk = (v: unknown, sch: unknown, path: string): void => {
    if (!isObj(sch)) return;
    if (Array.isArray(v)) {
      v.forEach((x, i) => walk(x, sch.items, `${path}[${i}]`));
      return;
    }
    if (!isObj(v)) return;
    if (isObj(sch.properties) && sch.additionalProperties === undefined && sch['x-kubernetes-preserve-unknown-fields'] !== true) {
      for (const [k, x] of Object.entries(v)) {
        const p = `${path}.${k}`;
        if (k in sch.properties) walk(x, sch.properties[k], p);
        else if (!NEWER_FIELDS.has(k)) out.push(p);
      }
    } else if (isObj(sch.additionalProperties)) {
      for (const [k, x] of Object.entries(v)) walk(x, sch.additionalProperties, `${path}.${k}`);
    }
  };
  walk(value.spec, schema.properties.spec, 'spec');
  return out;
}
