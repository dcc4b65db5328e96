// Workload keys and PKCS#10 certificate signing requests with a SPIFFE URI SAN, as Istio's agent
// sends them to its CA. Keys come from node:crypto (RSA 2048 by default, ECDSA P-256 on request);
// the CSR is assembled with node-forge's ASN.1 writer and signed with node:crypto, because
// node-forge itself can only sign RSA CSRs. Also small readers for certificates (validity, SANs).
// Nothing here does I/O or logs; private keys never leave the returned objects.

import * as crypto from 'node:crypto';
import type * as Forge from 'node-forge';

let forgeModule: typeof Forge | undefined;
/** node-forge, loaded on first use: only key/CSR/certificate work needs it, and loading it costs ~50 ms at start. */
function forge(): typeof Forge {
  return (forgeModule ??= require('node-forge') as typeof Forge);
}


export type WorkloadKeyType = 'RSA' | 'ECDSA';

export interface WorkloadIdentity {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

/** `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`, Istio's workload identity. */
export function spiffeId(id: WorkloadIdentity): string {
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

export interface WorkloadKey {
  readonly type: WorkloadKeyType;
  /** PKCS#8 PEM */
  readonly privateKeyPem: string;
  readonly privateKey: crypto.KeyObject;
  readonly publicKey: crypto.KeyObject;
}

/** Generates a workload key: RSA (2048 bits unless `rsaBits`) or ECDSA on P-256. */
export function generateWorkloadKey(type: WorkloadKeyType = 'RSA', rsaBits = 2048): Promise<WorkloadKey> {
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, publicKey: crypto.KeyObject, privateKey: crypto.KeyObject): void => {
      if (err) return reject(err);
      resolve({ type, publicKey, privateKey, privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() });
    };
    if (type === 'ECDSA') crypto.generateKeyPair('ec', { namedCurve: 'prime256v1' }, done);
    else crypto.generateKeyPair('rsa', { modulusLength: rsaBits, publicExponent: 0x10001 }, done);
  });
}

// OIDs used below
export const OID = {
  sha256WithRSA: '1.2.840.113549.1.1.11',
  ecdsaWithSHA256: '1.2.840.10045.4.3.2',
  extensionRequest: '1.2.840.113549.1.9.14',
  subjectAltName: '2.5.29.17',
  organization: '2.5.4.10',
} as const;

/** AlgorithmIdentifier for a SHA-256 signature with this key (RSA carries a NULL parameter, ECDSA none). */
export function signatureAlgorithm(key: crypto.KeyObject): Forge.asn1.Asn1 {
  const ec = key.asymmetricKeyType === 'ec';
  const parts: Forge.asn1.Asn1[] = [forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.OID, false, forge().asn1.oidToDer(ec ? OID.ecdsaWithSHA256 : OID.sha256WithRSA).getBytes())];
  if (!ec) parts.push(forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.NULL, false, ''));
  return forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.SEQUENCE, true, parts);
}

/** The DER of an ASN.1 node as a Buffer. */
export function toDer(node: Forge.asn1.Asn1): Buffer {
  return Buffer.from(forge().asn1.toDer(node).getBytes(), 'binary');
}

/** Parses DER into forge's ASN.1 tree. */
export function fromDer(der: Buffer): Forge.asn1.Asn1 {
  return forge().asn1.fromDer(forge().util.createBuffer(der.toString('binary')));
}

/** SubjectPublicKeyInfo of a key, as an ASN.1 node. */
export function spkiNode(key: crypto.KeyObject): Forge.asn1.Asn1 {
  return fromDer(key.export({ type: 'spki', format: 'der' }));
}

/** GeneralNames with URI and DNS entries (context tags [6] and [2], IMPLICIT IA5String). */
export function generalNames(names: { uris?: readonly string[]; dns?: readonly string[] }): Forge.asn1.Asn1 {
  const out: Forge.asn1.Asn1[] = [];
  for (const u of names.uris ?? []) out.push(forge().asn1.create(forge().asn1.Class.CONTEXT_SPECIFIC, 6, false, u));
  for (const d of names.dns ?? []) out.push(forge().asn1.create(forge().asn1.Class.CONTEXT_SPECIFIC, 2, false, d));
  return forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.SEQUENCE, true, out);
}

/** One X.509 Extension: SEQUENCE { OID, [critical BOOLEAN], OCTET STRING(value DER) }. */
export function extension(oid: string, critical: boolean, value: Forge.asn1.Asn1): Forge.asn1.Asn1 {
  const parts: Forge.asn1.Asn1[] = [forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.OID, false, forge().asn1.oidToDer(oid).getBytes())];
  if (critical) parts.push(forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.BOOLEAN, false, String.fromCharCode(0xff)));
  parts.push(forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.OCTETSTRING, false, forge().asn1.toDer(value).getBytes()));
  return forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.SEQUENCE, true, parts);
}

/** An X.501 Name with at most an organization (Istio's workload CSRs have an empty subject). */
export function x501Name(org?: string): Forge.asn1.Asn1 {
  const rdns: Forge.asn1.Asn1[] = [];
  if (org) {
    rdns.push(
      forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.SET, true, [
        forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.SEQUENCE, true, [
          forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.OID, false, forge().asn1.oidToDer(OID.organization).getBytes()),
          forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.UTF8, false, forge().util.encodeUtf8(org)),
        ]),
      ]),
    );
  }
  return forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.SEQUENCE, true, rdns);
}

/** Signs `tbs` (DER) with SHA-256 and returns the BIT STRING contents (leading 0 unused-bits byte). */
export function signDer(tbs: Buffer, key: crypto.KeyObject): string {
  const sig = crypto.sign('sha256', tbs, key);
  return String.fromCharCode(0) + sig.toString('binary');
}

export interface CsrOptions {
  /** URI SANs, e.g. the SPIFFE id */
  readonly uris: readonly string[];
  readonly dns?: readonly string[];
  /** Subject organization; empty subject when unset (the SAN extension is then critical, RFC 5280). */
  readonly org?: string;
}

/** A PEM PKCS#10 CSR for `key` carrying the SANs as a requested extension. */
export function createCsr(key: WorkloadKey, opts: CsrOptions): string {
  const san = extension(OID.subjectAltName, !opts.org, generalNames({ uris: opts.uris, ...(opts.dns ? { dns: opts.dns } : {}) }));
  const extReq = forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.SEQUENCE, true, [
    forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.OID, false, forge().asn1.oidToDer(OID.extensionRequest).getBytes()),
    forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.SET, true, [forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.SEQUENCE, true, [san])]),
  ]);
  const info = forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.SEQUENCE, true, [
    forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.INTEGER, false, String.fromCharCode(0)),
    x501Name(opts.org),
    spkiNode(key.publicKey),
    forge().asn1.create(forge().asn1.Class.CONTEXT_SPECIFIC, 0, true, [extReq]),
  ]);
  const infoDer = toDer(info);
  const csr = forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.SEQUENCE, true, [
    info,
    signatureAlgorithm(key.privateKey),
    forge().asn1.create(forge().asn1.Class.UNIVERSAL, forge().asn1.Type.BITSTRING, false, signDer(infoDer, key.privateKey)),
  ]);
  return pem('CERTIFICATE REQUEST', toDer(csr));
}

export function pem(label: string, der: Buffer): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n');
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END ${label}-----\n`;
}

/** The DER payloads of every PEM block with this label, in order. */
export function pemBlocks(text: string, label = 'CERTIFICATE'): Buffer[] {
  const out: Buffer[] = [];
  const re = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`, 'g');
  for (let m = re.exec(text); m; m = re.exec(text)) out.push(Buffer.from(m[1].replace(/\s+/g, ''), 'base64'));
  return out;
}

export interface ParsedCsr {
  readonly publicKey: crypto.KeyObject;
  readonly uris: string[];
  readonly dns: string[];
  /** whether the CSR's self-signature verifies */
  readonly signatureValid: boolean;
}

/** Reads a PEM CSR (RSA or ECDSA): its key, requested SANs, and whether its signature holds. Throws on garbage. */
export function parseCsr(csrPem: string): ParsedCsr {
  const der = pemBlocks(csrPem, 'CERTIFICATE REQUEST')[0];
  if (!der) throw new Error('no CERTIFICATE REQUEST block');
  const root = fromDer(der);
  const [info, , sigBits] = root.value as Forge.asn1.Asn1[];
  const infoParts = info.value as Forge.asn1.Asn1[];
  const spkiDer = toDer(infoParts[2]);
  const publicKey = crypto.createPublicKey({ key: spkiDer, format: 'der', type: 'spki' });
  const uris: string[] = [];
  const dns: string[] = [];
  const attrs = infoParts[3];
  if (attrs && Array.isArray(attrs.value)) {
    for (const attr of attrs.value as Forge.asn1.Asn1[]) {
      const [oidNode, set] = attr.value as Forge.asn1.Asn1[];
      if (forge().asn1.derToOid(forge().util.createBuffer(oidNode.value as string)) !== OID.extensionRequest) continue;
      const exts = (set.value as Forge.asn1.Asn1[])[0].value as Forge.asn1.Asn1[];
      for (const ext of exts) collectSans(ext, uris, dns);
    }
  }
  // forge parses a BIT STRING that looks like DER (an ECDSA signature does) and keeps the raw bytes aside.
  const bits = (sigBits as Forge.asn1.Asn1 & { bitStringContents?: string }).bitStringContents ?? (sigBits.value as string);
  const sig = Buffer.from(bits.slice(1), 'binary');
  const signatureValid = crypto.verify('sha256', toDer(info), publicKey, sig);
  return { publicKey, uris, dns, signatureValid };
}

/** Adds the URI/DNS names of a subjectAltName Extension node to the lists. */
export function collectSans(ext: Forge.asn1.Asn1, uris: string[], dns: string[]): void {
  const parts = ext.value as Forge.asn1.Asn1[];
  if (forge().asn1.derToOid(forge().util.createBuffer(parts[0].value as string)) !== OID.subjectAltName) return;
  const octets = parts[parts.length - 1].value as string;
  const names = forge().asn1.fromDer(forge().util.createBuffer(octets)).value as Forge.asn1.Asn1[];
  for (const n of names) {
    if (n.tagClass !== forge().asn1.Class.CONTEXT_SPECIFIC) continue;
    if (n.type === 6) uris.push(n.value as string);
    else if (n.type === 2) dns.push(n.value as string);
  }
}

export interface CertFacts {
  readonly notBefore: number; // ms since epoch
  readonly notAfter: number;
  readonly uris: string[];
  readonly dns: string[];
  readonly serialNumber: string;
}

/** Validity and SANs of the first certificate in a PEM chain. Throws when there is none. */
export function certFacts(chainPem: string): CertFacts {
  const x = new crypto.X509Certificate(chainPem);
  const uris: string[] = [];
  const dns: string[] = [];
  for (const part of splitSanList(x.subjectAltName ?? '')) {
    if (part.startsWith('URI:')) uris.push(part.slice(4));
    else if (part.startsWith('DNS:')) dns.push(part.slice(4));
  }
  return { notBefore: Date.parse(x.validFrom), notAfter: Date.parse(x.validTo), uris, dns, serialNumber: x.serialNumber };
}

/** Splits Node's `subjectAltName` string ("DNS:a, URI:b", with JSON-quoted entries when they hold commas). */
export function splitSanList(s: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < s.length) {
    const colon = s.indexOf(':', i);
    if (colon < 0) break;
    const kind = s.slice(i, colon + 1);
    let j = colon + 1;
    let value: string;
    if (s[j] === '"') {
      let k = j + 1;
      while (k < s.length && s[k] !== '"') k += s[k] === '\\' ? 2 : 1;
      try {
        value = JSON.parse(s.slice(j, k + 1)) as string;
      } catch {
        value = s.slice(j + 1, k);
      }
      j = k + 1;
    } else {
      const comma = s.indexOf(', ', j);
      const end = comma < 0 ? s.length : comma;
      value = s.slice(j, end);
      j = end;
    }
    out.push(kind + value);
    i = s.indexOf(', ', j);
    if (i < 0) break;
    i += 2;
  }
  return out;
}
