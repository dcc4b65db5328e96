// Checks JSON against Envoy's protos as proto3 JSON (proto field names or lowerCamel, Any by @type,
// Struct/Value free-form, Duration and Timestamp as strings, 64-bit integers as strings or numbers,
// enums by name), reporting every unknown field or mistyped value with its path. The protos are
// loaded by @grpc/proto-loader from @grpc/grpc-js-xds's bundled copies; nothing is copied here.

import * as path from 'node:path';
import '@grpc/proto-loader';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { loadProtosWithOptionsSync } = require('@grpc/proto-loader/build/src/util') as {
  loadProtosWithOptionsSync(files: string[], opts: object): import('protobufjs').Root;
};
import * as protobuf from 'protobufjs';

const DEPS = path.join(__dirname, '..', '..', 'node_modules', '@grpc', 'grpc-js-xds', 'deps');

let root: protobuf.Root | undefined;
export function envoyRoot(extra: readonly string[] = []): protobuf.Root {
  if (root && extra.length === 0) return root;
  root = loadProtosWithOptionsSync(
    [
      'envoy/admin/v3/config_dump.proto',
      'envoy/admin/v3/clusters.proto',
      'envoy/admin/v3/listeners.proto',
      'envoy/admin/v3/server_info.proto',
      'envoy/admin/v3/memory.proto',
      'envoy/config/bootstrap/v3/bootstrap.proto',
      'envoy/config/listener/v3/listener.proto',
      'envoy/config/cluster/v3/cluster.proto',
      'envoy/config/route/v3/route.proto',
      'envoy/config/endpoint/v3/endpoint.proto',
      'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
      'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
      'envoy/extensions/filters/http/router/v3/router.proto',
      'envoy/extensions/transport_sockets/tls/v3/tls.proto',
      'envoy/extensions/transport_sockets/tls/v3/secret.proto',
      'envoy/extensions/access_loggers/file/v3/file.proto',
      'envoy/extensions/access_loggers/stream/v3/stream.proto',
      'envoy/config/trace/v3/zipkin.proto',
      ...extra,
    ],
    { includeDirs: ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => path.join(DEPS, d)), keepCase: true },
  );
  root.resolveAll();
  return root;
}

const INT64 = new Set(['int64', 'uint64', 'sint64', 'fixed64', 'sfixed64']);
const INT32 = new Set(['int32', 'uint32', 'sint32', 'fixed32', 'sfixed32']);

/** Problems ("path: message") of `json` as an instance of `typeName`; empty when it conforms. */
export function checkProtoJson(r: protobuf.Root, typeName: string, json: unknown, at = ''): string[] {
  const out: string[] = [];
  checkMessage(r, r.lookupType(typeName), json, at, out);
  return out;
}

function checkMessage(r: protobuf.Root, t: protobuf.Type, v: unknown, at: string, out: string[]): void {
  const full = t.fullName.replace(/^\./, '');
  switch (full) {
    case 'google.protobuf.Struct':
    case 'google.protobuf.Value':
    case 'google.protobuf.ListValue':
      return;
    case 'google.protobuf.Duration':
      if (typeof v !== 'string' || !/^-?\d+(\.\d{1,9})?s$/.test(v)) out.push(`${at}: not a Duration string: ${JSON.stringify(v)}`);
      return;
    case 'google.protobuf.Timestamp':
      if (typeof v !== 'string' || Number.isNaN(Date.parse(v))) out.push(`${at}: not a Timestamp string: ${JSON.stringify(v)}`);
      return;
    case 'google.protobuf.BoolValue':
      if (typeof v !== 'boolean') out.push(`${at}: not a bool`);
      return;
    case 'google.protobuf.StringValue':
      if (typeof v !== 'string') out.push(`${at}: not a string`);
      return;
    case 'google.protobuf.UInt32Value':
    case 'google.protobuf.Int32Value':
    case 'google.protobuf.UInt64Value':
    case 'google.protobuf.Int64Value':
    case 'google.protobuf.DoubleValue':
    case 'google.protobuf.FloatValue':
      if (typeof v !== 'number' && !(typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v))) out.push(`${at}: not a number`);
      return;
    case 'google.protobuf.Any': {
      if (!v || typeof v !== 'object') return void out.push(`${at}: Any is not an object`);
      const type = (v as Record<string, unknown>)['@type'];
      if (typeof type !== 'string') return void out.push(`${at}: Any without @type`);
      const name = type.slice(type.lastIndexOf('/') + 1);
      let inner: protobuf.Type;
      try {
        inner = r.lookupType(name);
      } catch {
        return void out.push(`${at}: @type ${name} is not among the loaded protos`);
      }
      const rest = { ...(v as Record<string, unknown>) };
      delete rest['@type'];
      return checkMessage(r, inner, rest, at, out);
    }
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) return void out.push(`${at}: expected a ${t.name} object, got ${JSON.stringify(v)?.slice(0, 60)}`);
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    const f = t.fields[k] ?? Object.values(t.fields).find((x) => x.name === k || camel(x.name) === k);
    const p = at === '' ? k : `${at}.${k}`;
    if (!f) {
      out.push(`${p}: unknown field of ${t.fullName.replace(/^\./, "")}`);
      continue;
    }
    f.resolve();
    if (f.map) {
      if (!val || typeof val !== 'object') out.push(`${p}: map is not an object`);
      else for (const [mk, mv] of Object.entries(val as Record<string, unknown>)) checkValue(r, f, mv, `${p}[${mk}]`, out);
    } else if (f.repeated) {
      if (!Array.isArray(val)) out.push(`${p}: repeated field is not a list`);
      else val.forEach((x, i) => checkValue(r, f, x, `${p}[${i}]`, out));
    } else checkValue(r, f, val, p, out);
  }
}

function camel(s: string): string {
  return s.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

function checkValue(r: protobuf.Root, f: protobuf.Field, v: unknown, at: string, out: string[]): void {
  if (f.resolvedType instanceof protobuf.Type) return checkMessage(r, f.resolvedType, v, at, out);
  if (f.resolvedType instanceof protobuf.Enum) {
    if (typeof v === 'string' ? !(v in f.resolvedType.values) : typeof v !== 'number') out.push(`${at}: ${JSON.stringify(v)} is not a ${f.resolvedType.name}`);
    return;
  }
  if (f.type === 'string' || f.type === 'bytes') {
    if (typeof v !== 'string') out.push(`${at}: not a string`);
  } else if (f.type === 'bool') {
    if (typeof v !== 'boolean') out.push(`${at}: not a bool`);
  } else if (INT64.has(f.type)) {
    if (!(typeof v === 'string' && /^-?\d+$/.test(v)) && !Number.isInteger(v)) out.push(`${at}: not a 64-bit integer`);
  } else if (INT32.has(f.type)) {
    if (!Number.isInteger(v)) out.push(`${at}: not an integer`);
  } else if (f.type === 'double' || f.type === 'float') {
    if (typeof v !== 'number') out.push(`${at}: not a number`);
  }
}
