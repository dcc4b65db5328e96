// Test PKI and an Istio CA stand-in: a root CA (node:crypto keys, certificates written with
// node-forge's ASN.1 and signed with node:crypto, so RSA and ECDSA leaves both work), helpers that
// mint workload/server certificates for static-config tests, and `addCaService` which mounts
// istio.v1.auth.IstioCertificateService/CreateCertificate on a grpc.Server (bearer token check,
// CSR signature check, signs the requested SPIFFE SAN with a possibly short TTL). Test-only.

import * as crypto from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import * as forge from 'node-forge';
import { caServiceDefinition } from '../../src/security/ca-client';
import { extension, fromDer, parseCsr, pem, signatureAlgorithm, signDer, spkiNode, toDer } from '../../src/security/csr';

const asn1 = forge.asn1;
const U = asn1.Class.UNIVERSAL;

export interface TestCa {
  readonly trustDomain: string;
  readonly rootKey: crypto.KeyObject;
  readonly rootKeyPem: string;
  readonly rootCert: string;
}

export interface IssuedCert {
  /** PEM leaf */
  readonly cert: string;
  /** PEM leaf + root (what a workload presents plus its anchor is separate: use `rootCert`) */
  readonly certChain: string;
  readonly privateKey: string;
  readonly rootCert: string;
}

function oid(o: string): forge.asn1.Asn1 {
  return asn1.create(U, asn1.Type.OID, false, asn1.oidToDer(o).getBytes());
}

function name(parts: readonly [string, string][]): forge.asn1.Asn1 {
  return asn1.create(
    U,
    asn1.Type.SEQUENCE,
    true,
    parts.map(([o, v]) => asn1.create(U, asn1.Type.SET, true, [asn1.create(U, asn1.Type.SEQUENCE, true, [oid(o), asn1.create(U, asn1.Type.UTF8, false, forge.util.encodeUtf8(v))])])),
  );
}

const CN = '2.5.4.3';
const O = '2.5.4.10';

function time(d: Date): forge.asn1.Asn1 {
  return asn1.create(U, asn1.Type.UTCTIME, false, asn1.dateToUtcTime(d));
}

function sanNode(uris: readonly string[], dns: readonly string[], ips: readonly string[]): forge.asn1.Asn1 {
  const out: forge.asn1.Asn1[] = [];
  for (const u of uris) out.push(asn1.create(asn1.Class.CONTEXT_SPECIFIC, 6, false, u));
  for (const d of dns) out.push(asn1.create(asn1.Class.CONTEXT_SPECIFIC, 2, false, d));
  for (const ip of ips) out.push(asn1.create(asn1.Class.CONTEXT_SPECIFIC, 7, false, Buffer.from(ip.split('.').map(Number)).toString('binary')));
  return asn1.create(U, asn1.Type.SEQUENCE, true, out);
}

interface CertSpec {
  readonly subject: forge.asn1.Asn1;
  readonly issuer: forge.asn1.Asn1;
  readonly publicKey: crypto.KeyObject;
  readonly signer: crypto.KeyObject;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly ca: boolean;
  readonly uris?: readonly string[];
  readonly dns?: readonly string[];
  readonly ips?: readonly string[];
}

function buildCert(s: CertSpec): string {
  const serial = crypto.randomBytes(16);
  serial[0] &= 0x7f;
  const exts: forge.asn1.Asn1[] = [];
  exts.push(extension('2.5.29.19', true, asn1.create(U, asn1.Type.SEQUENCE, true, s.ca ? [asn1.create(U, asn1.Type.BOOLEAN, false, String.fromCharCode(0xff))] : [])));
  exts.push(extension('2.5.29.15', true, asn1.create(U, asn1.Type.BITSTRING, false, s.ca ? '\x01\x06' : '\x05\xa0')));
  if (!s.ca) {
    exts.push(extension('2.5.29.37', false, asn1.create(U, asn1.Type.SEQUENCE, true, [oid('1.3.6.1.5.5.7.3.1'), oid('1.3.6.1.5.5.7.3.2')])));
  }
  const hasSan = (s.uris?.length ?? 0) + (s.dns?.length ?? 0) + (s.ips?.length ?? 0) > 0;
  const emptySubject = (s.subject.value as unknown[]).length === 0;
  if (hasSan) exts.push(extension('2.5.29.17', emptySubject, sanNode(s.uris ?? [], s.dns ?? [], s.ips ?? [])));
  const skid = crypto.createHash('sha1').update(s.publicKey.export({ type: 'spki', format: 'der' })).digest();
  exts.push(extension('2.5.29.14', false, asn1.create(U, asn1.Type.OCTETSTRING, false, skid.toString('binary'))));
  const tbs = asn1.create(U, asn1.Type.SEQUENCE, true, [
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [asn1.create(U, asn1.Type.INTEGER, false, String.fromCharCode(2))]),
    asn1.create(U, asn1.Type.INTEGER, false, serial.toString('binary')),
    signatureAlgorithm(s.signer),
    s.issuer,
    asn1.create(U, asn1.Type.SEQUENCE, true, [time(s.notBefore), time(s.notAfter)]),
    s.subject,
    spkiNode(s.publicKey),
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 3, true, [asn1.create(U, asn1.Type.SEQUENCE, true, exts)]),
  ]);
  const cert = asn1.create(U, asn1.Type.SEQUENCE, true, [tbs, signatureAlgorithm(s.signer), asn1.create(U, asn1.Type.BITSTRING, false, signDer(toDer(tbs), s.signer))]);
  return pem('CERTIFICATE', toDer(cert));
}

function keyPair(type: 'RSA' | 'ECDSA'): { publicKey: crypto.KeyObject; privateKey: crypto.KeyObject } {
  return type === 'ECDSA' ? crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
}

/** A self-signed root CA for `trustDomain` (ECDSA by default: fast to make). */
export function createTestCa(opts: { trustDomain?: string; keyType?: 'RSA' | 'ECDSA'; commonName?: string } = {}): TestCa {
  const trustDomain = opts.trustDomain ?? 'cluster.local';
  const { publicKey, privateKey } = keyPair(opts.keyType ?? 'ECDSA');
  const subject = name([
    [O, trustDomain],
    [CN, opts.commonName ?? 'keel test root CA'],
  ]);
  const now = Date.now();
  const rootCert = buildCert({ subject, issuer: subject, publicKey, signer: privateKey, notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 10 * 86_400_000), ca: true });
  return { trustDomain, rootKey: privateKey, rootKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), rootCert };
}

function issuerName(ca: TestCa): forge.asn1.Asn1 {
  // The issuer field is the root's subject, copied from its DER so it matches byte for byte.
  const der = Buffer.from(ca.rootCert.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  const root = fromDer(der);
  const tbs = (root.value as forge.asn1.Asn1[])[0];
  return (tbs.value as forge.asn1.Asn1[])[5];
}

export interface MintOptions {
  readonly uris?: readonly string[];
  readonly dns?: readonly string[];
  readonly ips?: readonly string[];
  readonly commonName?: string;
  readonly ttlSeconds?: number;
  /** default: one minute ago (clock skew) */
  readonly notBefore?: Date;
  readonly keyType?: 'RSA' | 'ECDSA';
  /** sign this key instead of a new one */
  readonly publicKey?: crypto.KeyObject;
}

/** A leaf signed by the test CA (new key unless `publicKey`). */
export function mintCert(ca: TestCa, o: MintOptions = {}): IssuedCert {
  const pair = o.publicKey ? undefined : keyPair(o.keyType ?? 'ECDSA');
  const publicKey = o.publicKey ?? pair!.publicKey;
  const notBefore = o.notBefore ?? new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + (o.ttlSeconds ?? 3600) * 1000);
  const cert = buildCert({
    subject: name(o.commonName ? [[CN, o.commonName]] : []),
    issuer: issuerName(ca),
    publicKey,
    signer: ca.rootKey,
    notBefore,
    notAfter,
    ca: false,
    ...(o.uris ? { uris: o.uris } : {}),
    ...(o.dns ? { dns: o.dns } : {}),
    ...(o.ips ? { ips: o.ips } : {}),
  });
  return {
    cert,
    certChain: cert,
    privateKey: pair ? pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() : '',
    rootCert: ca.rootCert,
  };
}

/** A workload certificate for spiffe://<trust domain>/ns/<ns>/sa/<sa>. */
export function mintWorkloadCert(ca: TestCa, ns: string, sa: string, o: MintOptions = {}): IssuedCert {
  return mintCert(ca, { ...o, uris: [`spiffe://${ca.trustDomain}/ns/${ns}/sa/${sa}`, ...(o.uris ?? [])] });
}

/** A server certificate for localhost / 127.0.0.1 (for the CA's or an upstream's TLS). */
export function mintServerCert(ca: TestCa, o: MintOptions = {}): IssuedCert {
  return mintCert(ca, { ...o, dns: ['localhost', ...(o.dns ?? [])], ips: ['127.0.0.1', ...(o.ips ?? [])] });
}

export interface CaServiceOptions {
  readonly rootKey: crypto.KeyObject;
  readonly rootCert: string;
  readonly trustDomain: string;
  /** when set, calls must carry `authorization: Bearer <token>` */
  readonly token?: string;
  /** cap on the issued lifetime (the request's validity_duration is used when shorter or this is unset) */
  readonly ttlSeconds?: number;
}

export interface CaServiceRecord {
  /** every call: its metadata (as a plain object) and the SAN asked for */
  readonly calls: { metadata: Record<string, unknown>; uris: string[]; validityDuration: number; ttlSeconds: number; keyType: string }[];
  /** make the next `n` calls fail with UNAVAILABLE */
  failNext: number;
}

/** Mounts CreateCertificate on `server` (call before bindAsync/start). Returns what it saw. */
export function addCaService(server: grpc.Server, opts: CaServiceOptions): CaServiceRecord {
  const record: CaServiceRecord = { calls: [], failNext: 0 };
  const ca: TestCa = { trustDomain: opts.trustDomain, rootKey: opts.rootKey, rootKeyPem: '', rootCert: opts.rootCert };
  server.addService(caServiceDefinition(), {
    CreateCertificate: (call: grpc.ServerUnaryCall<{ csr: string; validity_duration: number }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const md = call.metadata.getMap();
      if (record.failNext > 0) {
        record.failNext--;
        return cb({ code: grpc.status.UNAVAILABLE, details: 'test CA told to fail' }, null);
      }
      if (opts.token !== undefined && md.authorization !== `Bearer ${opts.token}`) {
        return cb({ code: grpc.status.UNAUTHENTICATED, details: 'authenticate failure' }, null);
      }
      let csr: ReturnType<typeof parseCsr>;
      try {
        csr = parseCsr(call.request.csr);
      } catch (e) {
        return cb({ code: grpc.status.INVALID_ARGUMENT, details: `bad CSR: ${(e as Error).message}` }, null);
      }
      if (!csr.signatureValid) return cb({ code: grpc.status.INVALID_ARGUMENT, details: 'CSR signature does not verify' }, null);
      const prefix = `spiffe://${opts.trustDomain}/`;
      if (csr.uris.length === 0 || !csr.uris.every((u) => u.startsWith(prefix))) {
        return cb({ code: grpc.status.PERMISSION_DENIED, details: `SANs ${csr.uris.join(',')} outside ${prefix}` }, null);
      }
      const asked = Number(call.request.validity_duration) || 86_400;
      const ttl = opts.ttlSeconds !== undefined ? Math.min(asked, opts.ttlSeconds) : asked;
      record.calls.push({ metadata: md, uris: csr.uris, validityDuration: asked, ttlSeconds: ttl, keyType: csr.publicKey.asymmetricKeyType ?? '' });
      // notBefore = now: rotation tests with short TTLs compute from the real lifetime.
      const leaf = mintCert(ca, { uris: csr.uris, publicKey: csr.publicKey, ttlSeconds: ttl, notBefore: new Date(Math.floor(Date.now() / 1000) * 1000) });
      cb(null, { cert_chain: [leaf.cert, opts.rootCert] });
    },
  });
  return record;
}

export interface FakeCaServer {
  readonly port: number;
  readonly record: CaServiceRecord;
  readonly ca: TestCa;
  /** the CA server's own TLS certificate (SAN localhost, 127.0.0.1), signed by `ca` */
  readonly serverCert: IssuedCert;
  close(): Promise<void>;
}

/** A standalone TLS gRPC server on 127.0.0.1:0 with only the CA service (for CA tests). */
export async function startFakeCa(opts: { ca?: TestCa; token?: string; ttlSeconds?: number; tls?: boolean } = {}): Promise<FakeCaServer> {
  const ca = opts.ca ?? createTestCa();
  const serverCert = mintServerCert(ca, { dns: ['istiod.istio-system.svc'] });
  const server = new grpc.Server();
  const record = addCaService(server, { rootKey: ca.rootKey, rootCert: ca.rootCert, trustDomain: ca.trustDomain, ...(opts.token !== undefined ? { token: opts.token } : {}), ...(opts.ttlSeconds !== undefined ? { ttlSeconds: opts.ttlSeconds } : {}) });
  const creds =
    opts.tls === false
      ? grpc.ServerCredentials.createInsecure()
      : grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(serverCert.cert), private_key: Buffer.from(serverCert.privateKey) }], false);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (e, p) => (e ? reject(e) : resolve(p))));
  return {
    port,
    record,
    ca,
    serverCert,
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}
