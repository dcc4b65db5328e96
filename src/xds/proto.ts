// Envoy's protos, loaded at run time from @grpc/grpc-js-xds's deps/ (never copied into keel), and
// the conversion between protobuf messages and the proto3-JSON form src/config/ decodes: snake_case
// field names, Any as {'@type': url, ...fields}, Duration "1.5s", Struct as plain JSON, wrappers as
// their value, enums by name, bytes as base64. Protobuf types stop here: nothing outside src/xds/
// sees a protobuf message.
//
// The ADS service itself is loaded with @grpc/proto-loader (ads-service.ts); the resource bodies
// inside Any need reflection over their message types, which comes from protobufjs (the library
// proto-loader itself uses) over the same proto files.

import * as fs from 'node:fs';
import * as path from 'node:path';
// eslint-disable-next-line @typescript-eslint/no-require-imports
import protobuf = require('protobufjs');

/** The protobuf form of google.protobuf.Any, as grpc-js/proto-loader hand it over. */
export interface AnyMessage {
  readonly type_url: string;
  readonly value: Buffer | Uint8Array;
}

export const TYPE_URL_PREFIX = 'type.googleapis.com/';

/** The include directories: Envoy's API, xds/udpa, googleapis, PGV, and protobufjs's google/protobuf. */
export function protoIncludeDirs(): string[] {
  const deps = path.join(path.dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
  return [
    path.join(deps, 'envoy-api'),
    path.join(deps, 'xds'),
    path.join(deps, 'googleapis'),
    path.join(deps, 'protoc-gen-validate'),
    path.dirname(require.resolve('protobufjs/package.json')),
  ];
}

/** Directories (under envoy-api) whose v3 protos are loaded: every resource type and the extensions a resource may embed. */
const PROTO_DIRS = [
  'envoy/config/cluster',
  'envoy/config/listener',
  'envoy/config/route',
  'envoy/config/endpoint',
  'envoy/config/core',
  'envoy/extensions/filters',
  'envoy/extensions/transport_sockets/tls',
  'envoy/extensions/transport_sockets/raw_buffer',
  'envoy/extensions/upstreams/http',
  'envoy/extensions/upstreams/tcp',
  'envoy/extensions/request_id',
  'envoy/extensions/retry',
  'envoy/extensions/path',
  'envoy/extensions/http/original_ip_detection',
  'envoy/extensions/http/header_formatters',
  'envoy/extensions/matching',
  'envoy/extensions/access_loggers/file',
  'envoy/extensions/access_loggers/stream',
  'envoy/extensions/access_loggers/grpc',
  'envoy/extensions/access_loggers/filters',
];
const PROTO_FILES = ['envoy/service/discovery/v3/ads.proto', 'xds/type/v3/typed_struct.proto', 'udpa/type/v1/typed_struct.proto', 'google/rpc/status.proto'];

/**
 * Istio's own filter configs that istiod puts in Any and Envoy's protos do not carry, described here
 * field by field (keel loads no Istio proto): istio.alpn's FilterConfig, in its package.
 */
const ISTIO_ALPN_PACKAGE = 'istio.envoy.config.filter.http.alpn.v2alpha1';
const ISTIO_ALPN_TYPES: Record<string, protobuf.AnyNestedObject> = {
  FilterConfig: {
    fields: { alpn_override: { rule: 'repeated', type: 'AlpnOverride', id: 1 } },
    nested: {
      Protocol: { values: { HTTP10: 0, HTTP11: 1, HTTP2: 2 } },
      AlpnOverride: {
        fields: {
          upstream_protocol: { type: 'Protocol', id: 1 },
          alpn_override: { rule: 'repeated', type: 'string', id: 2 },
        },
      },
    },
  },
};

let root: protobuf.Root | undefined;

/** The protobufjs root with every resource type keel reads (loaded once, ~0.3 s). */
export function xdsRoot(): protobuf.Root {
  if (root) return root;
  const inc = protoIncludeDirs();
  const envoyApi = inc[0];
  const files = [...PROTO_FILES];
  const walk = (rel: string): void => {
    const abs = path.join(envoyApi, rel);
    if (!fs.existsSync(abs)) return;
    for (const e of fs.readdirSync(abs, { withFileTypes: true })) {
      const p = `${rel}/${e.name}`;
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.proto') && p.includes('/v3/')) files.push(p);
    }
  };
  for (const d of PROTO_DIRS) walk(d);
  const r = new protobuf.Root();
  r.resolvePath = (_origin: string, target: string): string => {
    for (const dir of inc) {
      const p = path.join(dir, target);
      if (fs.existsSync(p)) return p;
    }
    return target;
  };
  r.loadSync(files, { keepCase: true });
  r.define(ISTIO_ALPN_PACKAGE).addJSON(ISTIO_ALPN_TYPES);
  r.resolveAll();
  root = r;
  return r;
}

function lookupType(name: string): protobuf.Type | undefined {
  const t = xdsRoot().lookup(name.startsWith('.') ? name : `.${name}`);
  return t instanceof protobuf.Type ? t : undefined;
}

export function typeNameOf(typeUrl: string): string {
  const slash = typeUrl.lastIndexOf('/');
  return slash >= 0 ? typeUrl.slice(slash + 1) : typeUrl;
}

// ---------------------------------------------------------------------------------------------
// protobuf -> proto3 JSON

/** Decodes an Any into the JSON form: {'@type': url, ...fields}. Throws when the bytes do not decode. */
export function anyToJson(any: AnyMessage): Record<string, unknown> {
  const type = lookupType(typeNameOf(any.type_url));
  if (!type) return { '@type': any.type_url };
  const msg = type.decode(any.value);
  const json = messageToJson(type, msg as unknown as Record<string, unknown>);
  if (json === null || typeof json !== 'object' || Array.isArray(json)) return { '@type': any.type_url, value: json };
  return { '@type': any.type_url, ...(json as Record<string, unknown>) };
}

const WRAPPERS = new Set([
  'google.protobuf.DoubleValue',
  'google.protobuf.FloatValue',
  'google.protobuf.Int64Value',
  'google.protobuf.UInt64Value',
  'google.protobuf.Int32Value',
  'google.protobuf.UInt32Value',
  'google.protobuf.BoolValue',
  'google.protobuf.StringValue',
  'google.protobuf.BytesValue',
]);

const fullNames = new WeakMap<protobuf.Type, string>();

/** The type's name without the leading dot (protobufjs recomputes fullName on every read: cached). */
function fullName(t: protobuf.Type): string {
  let n = fullNames.get(t);
  if (n === undefined) {
    n = t.fullName.startsWith('.') ? t.fullName.slice(1) : t.fullName;
    fullNames.set(t, n);
  }
  return n;
}

function own(m: Record<string, unknown>, k: string): boolean {
  return Object.prototype.hasOwnProperty.call(m, k);
}

function scalarToJson(field: protobuf.Field, v: unknown): unknown {
  if (field.resolvedType instanceof protobuf.Enum) {
    return typeof v === 'number' ? (field.resolvedType.valuesById[v] ?? v) : v;
  }
  if (v instanceof Uint8Array) return Buffer.from(v).toString('base64');
  if (v !== null && typeof v === 'object' && 'low' in (v as object) && 'high' in (v as object)) {
    const s = String(v);
    const n = Number(s);
    return Number.isSafeInteger(n) ? n : s;
  }
  return v;
}

function valueToJson(field: protobuf.Field, v: unknown): unknown {
  if (field.resolvedType instanceof protobuf.Type) return messageToJson(field.resolvedType, v as Record<string, unknown>);
  return scalarToJson(field, v);
}

function durationToJson(m: Record<string, unknown>): string {
  const seconds = Number(String(m.seconds ?? 0));
  const nanos = Number(m.nanos ?? 0);
  if (nanos === 0) return `${seconds}s`;
  const neg = seconds < 0 || nanos < 0;
  const frac = String(Math.abs(nanos)).padStart(9, '0').replace(/0+$/, '');
  return `${neg ? '-' : ''}${Math.abs(seconds)}.${frac}s`;
}

// protobufjs defines google.protobuf.Value with its own built-in (camelCase) field names.
function structValueToJson(m: Record<string, unknown>): unknown {
  if (own(m, 'nullValue')) return null;
  if (own(m, 'numberValue')) return m.numberValue;
  if (own(m, 'stringValue')) return m.stringValue;
  if (own(m, 'boolValue')) return m.boolValue;
  if (own(m, 'structValue')) return structToJson(m.structValue as Record<string, unknown>);
  if (own(m, 'listValue')) return ((m.listValue as { values?: Record<string, unknown>[] }).values ?? []).map(structValueToJson);
  return null;
}

function structToJson(m: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const fields = (m.fields ?? {}) as Record<string, Record<string, unknown>>;
  for (const k of Object.keys(fields)) out[k] = structValueToJson(fields[k]);
  return out;
}

/** A decoded protobufjs message -> proto3 JSON (snake_case names; only fields that are set). */
export function messageToJson(type: protobuf.Type, m: Record<string, unknown>): unknown {
  const name = fullName(type);
  switch (name) {
    case 'google.protobuf.Any':
      return anyToJson({ type_url: String(m.type_url ?? ''), value: (m.value as Uint8Array) ?? new Uint8Array() });
    case 'google.protobuf.Duration':
      return durationToJson(m);
    case 'google.protobuf.Timestamp':
      return new Date(Number(String(m.seconds ?? 0)) * 1000 + Math.floor(Number(m.nanos ?? 0) / 1e6)).toISOString();
    case 'google.protobuf.Struct':
      return structToJson(m);
    case 'google.protobuf.Value':
      return structValueToJson(m);
    case 'google.protobuf.ListValue':
      return ((m.values as Record<string, unknown>[] | undefined) ?? []).map(structValueToJson);
    case 'google.protobuf.FieldMask':
      return ((m.paths as string[] | undefined) ?? []).join(',');
    case 'google.protobuf.Empty':
      return {};
  }
  if (WRAPPERS.has(name)) {
    const f = type.fields.value;
    const v = own(m, 'value') ? m.value : f.typeDefault;
    return scalarToJson(f, v);
  }
  const out: Record<string, unknown> = {};
  for (const f of type.fieldsArray) {
    if (!own(m, f.name)) continue;
    const v = m[f.name];
    if (v === undefined || v === null) continue;
    if (f.map) {
      const obj = v as Record<string, unknown>;
      const keys = Object.keys(obj);
      if (keys.length === 0) continue;
      const mo: Record<string, unknown> = {};
      for (const k of keys) mo[k] = valueToJson(f, obj[k]);
      out[f.name] = mo;
    } else if (f.repeated) {
      const arr = v as unknown[];
      if (arr.length === 0) continue;
      out[f.name] = arr.map((x) => valueToJson(f, x));
    } else {
      out[f.name] = valueToJson(f, v);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// proto3 JSON -> protobuf (the test control plane and the benchmark encode resources this way)

function jsonField(type: protobuf.Type, key: string): protobuf.Field | undefined {
  return type.fields[key] ?? type.fieldsArray.find((f) => f.name.replace(/_([a-z0-9])/g, (_s, c: string) => c.toUpperCase()) === key);
}

function parseDuration(v: unknown): { seconds: number; nanos: number } {
  if (typeof v === 'object' && v !== null) return v as { seconds: number; nanos: number };
  const m = /^(-)?(\d+)(?:\.(\d{1,9}))?s$/.exec(String(v));
  if (!m) throw new Error(`bad duration ${JSON.stringify(v)}`);
  const sign = m[1] ? -1 : 1;
  return { seconds: sign * Number(m[2]), nanos: sign * Number((m[3] ?? '').padEnd(9, '0') || 0) };
}

function jsonToStructValue(v: unknown): Record<string, unknown> {
  if (v === null || v === undefined) return { nullValue: 0 };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(jsonToStructValue) } };
  return { structValue: jsonToStruct(v as Record<string, unknown>) };
}

function jsonToStruct(o: Record<string, unknown>): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (const k of Object.keys(o)) fields[k] = jsonToStructValue(o[k]);
  return { fields };
}

/** proto3 JSON -> protobufjs object form (what Type.fromObject takes). */
export function jsonToObject(type: protobuf.Type, json: unknown): unknown {
  const name = fullName(type);
  switch (name) {
    case 'google.protobuf.Any':
      return jsonToAny(json as Record<string, unknown>);
    case 'google.protobuf.Duration':
      return parseDuration(json);
    case 'google.protobuf.Struct':
      return jsonToStruct(json as Record<string, unknown>);
    case 'google.protobuf.Value':
      return jsonToStructValue(json);
    case 'google.protobuf.ListValue':
      return { values: (json as unknown[]).map(jsonToStructValue) };
    case 'google.protobuf.Timestamp': {
      const ms = new Date(String(json)).getTime();
      return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
    }
  }
  if (WRAPPERS.has(name)) return { value: json };
  const out: Record<string, unknown> = {};
  const o = json as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    const f = jsonField(type, key);
    if (!f) throw new Error(`${name} has no field '${key}'`);
    const v = o[key];
    if (v === null || v === undefined) continue;
    const conv = (x: unknown): unknown => (f.resolvedType instanceof protobuf.Type ? jsonToObject(f.resolvedType, x) : x);
    if (f.map) {
      const mo: Record<string, unknown> = {};
      for (const k of Object.keys(v as object)) mo[k] = conv((v as Record<string, unknown>)[k]);
      out[f.name] = mo;
    } else if (f.repeated) out[f.name] = (v as unknown[]).map(conv);
    else out[f.name] = conv(v);
  }
  return out;
}

/** {'@type': url, ...fields} -> {type_url, value} (protobuf-encoded). Throws on unknown types or fields. */
export function jsonToAny(json: Record<string, unknown>): AnyMessage {
  const url = String(json['@type'] ?? '');
  const type = lookupType(typeNameOf(url));
  if (!type) throw new Error(`unknown type ${url}`);
  const body: Record<string, unknown> = {};
  for (const k of Object.keys(json)) if (k !== '@type') body[k] = json[k];
  const wkt = fullName(type).startsWith('google.protobuf.') && 'value' in body && Object.keys(body).length === 1 ? body.value : body;
  const obj = jsonToObject(type, wkt);
  const msg = type.fromObject(obj as Record<string, unknown>);
  return { type_url: url.includes('/') ? url : TYPE_URL_PREFIX + url, value: Buffer.from(type.encode(msg).finish()) };
}

/** A message of `typeName` in protobufjs object form, from proto3 JSON (e.g. the Node in a request). */
export function jsonToMessageObject(typeName: string, json: unknown): Record<string, unknown> {
  const type = lookupType(typeName);
  if (!type) throw new Error(`unknown type ${typeName}`);
  return jsonToObject(type, json) as Record<string, unknown>;
}

/** The reverse for a whole message: protobufjs object form -> proto3 JSON. */
export function messageObjectToJson(typeName: string, obj: Record<string, unknown>): unknown {
  const type = lookupType(typeName);
  if (!type) throw new Error(`unknown type ${typeName}`);
  return messageToJson(type, type.fromObject(obj) as unknown as Record<string, unknown>);
}
