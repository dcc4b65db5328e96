// Istio CA client: istio.v1.auth.IstioCertificateService/CreateCertificate over gRPC (TLS to the CA
// with its root certificate, bearer token, ClusterID and CA_HEADER_* metadata). The two messages and
// the service are defined here in code (field numbers as istio/api security/v1alpha1/ca.proto
// documents them); no proto file is copied or read. Never logs the token, the CSR or keys.

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** protobufjs JSON descriptor of the CA service, with the google.protobuf.Struct family it uses. */
const CA_DESCRIPTOR = {
  nested: {
    google: {
      nested: {
        protobuf: {
          nested: {
            Struct: { fields: { fields: { keyType: 'string', type: 'Value', id: 1 } } },
            Value: {
              oneofs: { kind: { oneof: ['null_value', 'number_value', 'string_value', 'bool_value', 'struct_value', 'list_value'] } },
              fields: {
                null_value: { type: 'NullValue', id: 1 },
                number_value: { type: 'double', id: 2 },
                string_value: { type: 'string', id: 3 },
                bool_value: { type: 'bool', id: 4 },
                struct_value: { type: 'Struct', id: 5 },
                list_value: { type: 'ListValue', id: 6 },
              },
            },
            NullValue: { values: { NULL_VALUE: 0 } },
            ListValue: { fields: { values: { rule: 'repeated', type: 'Value', id: 1 } } },
          },
        },
      },
    },
    istio: {
      nested: {
        v1: {
          nested: {
            auth: {
              nested: {
                IstioCertificateRequest: {
                  fields: {
                    csr: { type: 'string', id: 1 },
                    validity_duration: { type: 'int64', id: 3 },
                    metadata: { type: 'google.protobuf.Struct', id: 4 },
                  },
                },
                IstioCertificateResponse: { fields: { cert_chain: { rule: 'repeated', type: 'string', id: 1 } } },
                IstioCertificateService: {
                  methods: {
                    CreateCertificate: { requestType: 'IstioCertificateRequest', responseType: 'IstioCertificateResponse' },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
};

export const CA_SERVICE_NAME = 'istio.v1.auth.IstioCertificateService';
export const CA_METHOD_PATH = `/${CA_SERVICE_NAME}/CreateCertificate`;

let serviceDef: grpc.ServiceDefinition | undefined;

/** The CA service definition for grpc-js clients and servers (built once). */
export function caServiceDefinition(): grpc.ServiceDefinition {
  if (!serviceDef) {
    const pkg = protoLoader.fromJSON(CA_DESCRIPTOR as unknown as Parameters<typeof protoLoader.fromJSON>[0], { keepCase: true, longs: Number, defaults: true, oneofs: true });
    serviceDef = pkg[CA_SERVICE_NAME] as grpc.ServiceDefinition;
  }
  return serviceDef;
}

/** JSON value -> google.protobuf.Value as proto-loader objects. */
export function toProtoValue(v: unknown): Record<string, unknown> {
  if (v === null || v === undefined) return { null_value: 'NULL_VALUE' };
  if (typeof v === 'number') return { number_value: v };
  if (typeof v === 'boolean') return { bool_value: v };
  if (typeof v === 'string') return { string_value: v };
  if (Array.isArray(v)) return { list_value: { values: v.map(toProtoValue) } };
  return { struct_value: toProtoStruct(v as Record<string, unknown>) };
}

export function toProtoStruct(o: Readonly<Record<string, unknown>>): { fields: Record<string, unknown> } {
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) fields[k] = toProtoValue(v);
  return { fields };
}

/** google.protobuf.Value (proto-loader object, with or without its `kind` oneof name) -> JSON value. */
export function fromProtoValue(v: Record<string, unknown> | undefined): unknown {
  if (!v) return null;
  const kind = typeof v.kind === 'string' ? v.kind : Object.keys(v).find((k) => v[k] !== undefined && v[k] !== null);
  switch (kind) {
    case 'number_value':
      return v.number_value;
    case 'bool_value':
      return v.bool_value;
    case 'string_value':
      return v.string_value;
    case 'struct_value':
      return fromProtoStruct(v.struct_value as { fields?: Record<string, Record<string, unknown>> });
    case 'list_value':
      return ((v.list_value as { values?: Record<string, unknown>[] }).values ?? []).map(fromProtoValue);
    default:
      return null;
  }
}

export function fromProtoStruct(s: { fields?: Record<string, Record<string, unknown>> } | undefined | null): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s?.fields ?? {})) out[k] = fromProtoValue(v);
  return out;
}

export interface CaClientOptions {
  /** host:port of the CA (CA_ADDR, e.g. istiod.istio-system.svc:15012) */
  readonly address: string;
  /** PEM root for the CA's TLS; undefined = plaintext (only for tests or a local CA) */
  readonly rootCert?: string;
  /** Name the CA's certificate must carry, when it differs from the address host (ISTIOD_SAN). */
  readonly serverName?: string;
  /** Read at every call (projected tokens rotate); undefined/empty = no authorization header. */
  readonly token?: () => string | undefined;
  /** ClusterID metadata (ISTIO_META_CLUSTER_ID), sent when set. */
  readonly clusterId?: string;
  /** Extra metadata: CA_HEADER_* environment variables with the prefix removed. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Struct metadata of the request (Istio uses it for impersonation); usually unset. */
  readonly requestMetadata?: Readonly<Record<string, unknown>>;
  /** Deadline per call (default 10 s). */
  readonly timeoutMs?: number;
}

/** What a secret manager needs from a CA: sign a CSR, get the chain (leaf first, root last). */
export interface CertificateSigner {
  sign(csrPem: string, ttlSeconds: number): Promise<string[]>;
  close(): void;
}

/** Extracts `CA_HEADER_*` variables as metadata (prefix removed), as pilot-agent does. */
export function caHeadersFromEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (k.startsWith('CA_HEADER_') && v !== undefined && k.length > 10) out[k.slice(10)] = v;
  return out;
}

/** The gRPC client of Istio's CA. One channel, reused across calls; `close()` releases it. */
export class IstioCaClient implements CertificateSigner {
  private readonly client: grpc.Client;

  constructor(private readonly opts: CaClientOptions) {
    const creds = opts.rootCert !== undefined ? grpc.credentials.createSsl(Buffer.from(opts.rootCert)) : grpc.credentials.createInsecure();
    const channelOptions: grpc.ChannelOptions = {};
    if (opts.serverName) channelOptions['grpc.ssl_target_name_override'] = opts.serverName;
    const Ctor = grpc.makeGenericClientConstructor(caServiceDefinition(), 'IstioCertificateService');
    this.client = new Ctor(opts.address, creds, channelOptions);
  }

  /** Sends the CSR; resolves with the PEM chain, leaf first. Rejects on any gRPC error or an empty chain. */
  sign(csrPem: string, ttlSeconds: number): Promise<string[]> {
    const md = new grpc.Metadata();
    const token = this.opts.token?.();
    if (token) md.set('authorization', `Bearer ${token}`);
    if (this.opts.clusterId) md.set('ClusterID', this.opts.clusterId);
    for (const [k, v] of Object.entries(this.opts.headers ?? {})) md.set(k, v);
    const req: Record<string, unknown> = { csr: csrPem, validity_duration: Math.max(0, Math.floor(ttlSeconds)) };
    if (this.opts.requestMetadata) req.metadata = toProtoStruct(this.opts.requestMetadata);
    const deadline = Date.now() + (this.opts.timeoutMs ?? 10_000);
    return new Promise((resolve, reject) => {
      const call = (this.client as unknown as Record<string, (r: unknown, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, res?: { cert_chain?: string[] }) => void) => void>)
        .CreateCertificate;
      call.call(this.client, req, md, { deadline }, (err, res) => {
        if (err) return reject(new Error(`CA ${this.opts.address}: CreateCertificate failed: ${grpc.status[err.code] ?? err.code} ${err.details}`));
        const chain = (res?.cert_chain ?? []).filter((c) => c.trim() !== '');
        if (chain.length === 0) return reject(new Error(`CA ${this.opts.address}: empty certificate chain`));
        resolve(chain);
      });
    });
  }

  close(): void {
    this.client.close();
  }
}
