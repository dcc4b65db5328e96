// TLS contexts built from decoded Downstream/UpstreamTlsContext config and the secret manager: the
// server (listener filter chain) and client (upstream host) sides, SAN matching, peer identity, and
// rotation (a new secret version replaces the context for new handshakes; open connections keep
// theirs). Built once per filter chain / per cluster transport socket, never per request. Never logs
// key material.

import * as crypto from 'node:crypto';
import * as tls from 'node:tls';
import type { CertificateValidation, DownstreamTlsConfig, StringMatcherConfig, TlsCertificate, UpstreamTlsConfig } from '../config/types';
import { compileStringMatcher } from '../router/matchers';
import { splitSanList } from './csr';
import type { Secret, SecretSource } from './secret-manager';

/** Envoy's message for a failed peer verification; our SAN check reports it as the error code. */
export const CERT_VERIFY_FAILED = 'CERTIFICATE_VERIFY_FAILED';
export const SAN_MISMATCH_CODE = 'ERR_KEEL_TLS_SAN_MISMATCH';
export const SECRET_NOT_READY_CODE = 'ERR_KEEL_TLS_SECRET_NOT_READY';

/** Node's error codes that mean "the peer's certificate did not verify" (Envoy: CERTIFICATE_VERIFY_FAILED). */
const VERIFY_ERRORS = new Set([
  SAN_MISMATCH_CODE,
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'ERR_TLS_CERT_SIGNATURE_ALGORITHM_UNSUPPORTED',
]);

/** Whether a socket error means the upstream's certificate failed verification. */
export function isCertVerifyError(e: NodeJS.ErrnoException): boolean {
  return e.code !== undefined && VERIFY_ERRORS.has(e.code);
}

type SanKind = CertificateValidation['matchSubjectAltNames'][number]['kind'];

export interface PeerSans {
  readonly uri: string[];
  readonly dns: string[];
  readonly email: string[];
  readonly ip: string[];
}

/** A certificate's SANs by kind, from Node's `subjectaltname` string. */
export function peerSans(subjectaltname: string | undefined): PeerSans {
  const out: PeerSans = { uri: [], dns: [], email: [], ip: [] };
  for (const part of splitSanList(subjectaltname ?? '')) {
    if (part.startsWith('URI:')) out.uri.push(part.slice(4));
    else if (part.startsWith('DNS:')) out.dns.push(part.slice(4));
    else if (part.startsWith('email:')) out.email.push(part.slice(6));
    else if (part.startsWith('IP Address:')) out.ip.push(part.slice(11));
  }
  return out;
}

/** DNS SAN matching as Envoy does: a `*.` wildcard SAN covers exactly one label of an exact matcher's value. */
function dnsMatches(san: string, m: StringMatcherConfig, pred: (v: string) => boolean): boolean {
  if (pred(san)) return true;
  if (m.kind === 'exact' && san.startsWith('*.')) {
    const v = m.ignoreCase ? m.value.toLowerCase() : m.value;
    const suffix = m.ignoreCase ? san.slice(1).toLowerCase() : san.slice(1);
    const dot = v.indexOf('.');
    return dot > 0 && v.slice(dot) === suffix;
  }
  return false;
}

/** Compiles SAN matchers; the result says whether a peer's SANs satisfy any of them (true when there are none). */
export function compileSanMatchers(list: CertificateValidation['matchSubjectAltNames']): ((sans: PeerSans) => boolean) | undefined {
  if (list.length === 0) return undefined;
  const compiled = list.map((m) => ({ kind: m.kind as SanKind, cfg: m.match, pred: compileStringMatcher(m.match) }));
  return (sans) => {
    for (const m of compiled) {
      if ((m.kind === 'uri' || m.kind === 'any') && sans.uri.some(m.pred)) return true;
      if ((m.kind === 'dns' || m.kind === 'any') && sans.dns.some((d) => dnsMatches(d, m.cfg, m.pred))) return true;
      if ((m.kind === 'email' || m.kind === 'any') && sans.email.some(m.pred)) return true;
      if ((m.kind === 'ip' || m.kind === 'any') && sans.ip.some(m.pred)) return true;
    }
    return false;
  };
}

/** The first URI SAN of a PEM chain's leaf, or undefined. */
export function firstUriSan(chainPem: string): string | undefined {
  try {
    const x = new crypto.X509Certificate(chainPem);
    return peerSans(x.subjectAltName).uri[0];
  } catch {
    return undefined;
  }
}

/** What the TLS layer learned about a downstream connection (copied onto ConnectionInfo). */
export interface TlsConnectionFacts {
  sni?: string;
  alpn?: string;
  peerPrincipal?: string;
  peerCertificate?: tls.DetailedPeerCertificate;
  localPrincipal?: string;
}

/** Resolves a context's certificates and trust from its static parts and its SDS secrets. */
class SecretBinding {
  private readonly unsubscribe: (() => void)[] = [];

  constructor(
    private readonly certNames: readonly string[],
    private readonly validationName: string | undefined,
    private readonly secrets: SecretSource | undefined,
    onChange: () => void,
  ) {
    if (secrets) {
      for (const n of [...certNames, ...(validationName !== undefined ? [validationName] : [])]) this.unsubscribe.push(secrets.watch(n, onChange));
    }
  }

  /** SDS certificates (undefined while any of them is missing). */
  certificates(): TlsCertificate[] | undefined {
    const out: TlsCertificate[] = [];
    for (const n of this.certNames) {
      const s: Secret | undefined = this.secrets?.get(n);
      if (s?.kind !== 'tls_certificate') return undefined;
      out.push({ certChain: s.certChain, privateKey: s.privateKey });
    }
    return out;
  }

  /** The SDS trusted CA (undefined while missing); '' when the context names no SDS validation. */
  trustedCa(): string | undefined {
    if (this.validationName === undefined) return '';
    const s = this.secrets?.get(this.validationName);
    return s?.kind === 'validation_context' ? s.trustedCa : undefined;
  }

  missing(): string[] {
    const out: string[] = [];
    for (const n of this.certNames) if (this.secrets?.get(n)?.kind !== 'tls_certificate') out.push(n);
    if (this.validationName !== undefined && this.secrets?.get(this.validationName)?.kind !== 'validation_context') out.push(this.validationName);
    return out;
  }

  close(): void {
    for (const u of this.unsubscribe) u();
    this.unsubscribe.length = 0;
  }
}

/**
 * The server side of a TLS filter chain: a non-listening tls.Server the listener hands sockets to.
 * Its secure context follows the chain's SDS secrets (setSecureContext on change: new handshakes
 * use the new certificate, open connections keep theirs). Session tickets are on (Node's default).
 */
export class DownstreamTls {
  readonly server: tls.Server;
  private readonly binding: SecretBinding;
  private readonly sanMatch?: (sans: PeerSans) => boolean;
  /** false while an SDS secret the chain needs is missing: connections are refused. */
  ready = false;
  localPrincipal: string | undefined;
  /** Handshakes refused after they completed (missing client cert, SAN mismatch). */
  rejected = 0;
  /** Envoy's listener `ssl.*` counters for this chain. */
  readonly stats = { handshake: 0, connection_error: 0, session_reused: 0, no_certificate: 0, fail_verify_no_cert: 0, fail_verify_error: 0, fail_verify_san: 0 };
  /** Secret versions that could not be used (bad PEM, mismatched key). */
  rejectedSecrets = 0;
  private readonly requireClientCert: boolean;
  /** a trust anchor is configured (static or SDS): presented client certificates are verified */
  private readonly verifying: boolean;

  constructor(
    private readonly cfg: DownstreamTlsConfig,
    secrets: SecretSource | undefined,
    defaultAlpn: readonly string[],
  ) {
    this.requireClientCert = cfg.requireClientCertificate;
    this.verifying = cfg.sdsValidationName !== undefined || cfg.validation?.trustedCa !== undefined;
    this.sanMatch = compileSanMatchers(cfg.validation?.matchSubjectAltNames ?? []);
    this.binding = new SecretBinding(cfg.sdsCertificateNames, cfg.sdsValidationName, secrets, () => this.refresh());
    // Server-level settings come from config only (setSecureContext replaces just the context:
    // certificates, key, trust); the context follows the secrets.
    const base = this.options();
    let usable = base;
    if (base) {
      try {
        tls.createSecureContext(base);
      } catch {
        usable = undefined;
        this.localPrincipal = undefined;
        this.rejectedSecrets++;
      }
    }
    this.server = tls.createServer({
      ...(usable ?? {}),
      requestCert: this.requireClientCert || this.verifying,
      // With a trust anchor the handshake itself refuses a missing or unverifiable client cert;
      // without one Envoy only asks for a certificate (checked in accept()).
      rejectUnauthorized: this.requireClientCert && this.verifying,
      ALPNCallback: alpnSelector(cfg.alpnProtocols.length > 0 ? cfg.alpnProtocols : defaultAlpn),
    });
    this.ready = usable !== undefined;
    this.server.on('tlsClientError', (e: NodeJS.ErrnoException) => {
      // A handshake the TLS layer refused. A missing client certificate is told apart; an
      // unverifiable one often surfaces only as a reset (Node checks it after the handshake).
      const code = e.code ?? '';
      if (code.includes('PEER_DID_NOT_RETURN_A_CERTIFICATE') || code.includes('CERTIFICATE_REQUIRED')) this.stats.fail_verify_no_cert++;
      else if (code.includes('CERTIFICATE_VERIFY_FAILED')) this.stats.fail_verify_error++;
      this.stats.connection_error++;
    });
  }

  /** The names of SDS secrets this chain still waits for. */
  missingSecrets(): string[] {
    return this.binding.missing();
  }

  private options(): tls.TlsOptions | undefined {
    const c = this.cfg;
    const sdsCerts = this.binding.certificates();
    const sdsCa = this.binding.trustedCa();
    if (sdsCerts === undefined || sdsCa === undefined) return undefined;
    const certs = [...c.certificates, ...sdsCerts];
    if (certs.length === 0) return undefined;
    const ca = sdsCa !== '' ? sdsCa : c.validation?.trustedCa;
    this.localPrincipal = firstUriSan(certs[0].certChain);
    return {
      cert: certs.map((x) => x.certChain),
      key: certs.map((x) => x.privateKey),
      ...(ca !== undefined ? { ca } : {}),
      ...(c.minVersion ? { minVersion: c.minVersion as tls.SecureVersion } : {}),
      ...(c.maxVersion ? { maxVersion: c.maxVersion as tls.SecureVersion } : {}),
    };
  }

  private refresh(): void {
    // A file-backed secret loads on first reference, inside the constructor: the server comes next.
    if ((this.server as tls.Server | undefined) === undefined) return;
    const previousPrincipal = this.localPrincipal;
    const o = this.options();
    if (!o) {
      this.ready = false;
      return;
    }
    try {
      this.server.setSecureContext(o);
      this.ready = true;
    } catch {
      // An unusable secret (bad PEM, key not matching): keep serving with the previous context.
      this.localPrincipal = previousPrincipal;
      this.rejectedSecrets++;
    }
  }

  /**
   * Checks a handshaken connection as Envoy's validator does: a required client certificate is
   * there, a presented one verified (when a trust anchor is set), and its SANs match. False = close it.
   */
  accept(t: tls.TLSSocket): boolean {
    const needsCheck = this.requireClientCert || this.verifying || this.sanMatch !== undefined;
    if (!needsCheck) {
      this.stats.no_certificate++;
      this.countHandshake(t);
      return true;
    }
    const cert = t.getPeerCertificate();
    const presented = cert !== null && cert !== undefined && Object.keys(cert).length > 0;
    let ok = true;
    if (!presented) {
      ok = !this.requireClientCert;
      if (ok) this.stats.no_certificate++;
      else this.stats.fail_verify_no_cert++;
    } else if (this.verifying && !t.authorized) {
      ok = false;
      this.stats.fail_verify_error++;
    } else if (this.sanMatch && !this.sanMatch(peerSans(cert.subjectaltname))) {
      ok = false;
      this.stats.fail_verify_san++;
    }
    if (ok) this.countHandshake(t);
    else this.rejected++;
    return ok;
  }

  private countHandshake(t: tls.TLSSocket): void {
    this.stats.handshake++;
    if (t.isSessionReused()) this.stats.session_reused++;
  }

  /** SNI, ALPN and identities of a handshaken connection. */
  facts(t: tls.TLSSocket): TlsConnectionFacts {
    const out: TlsConnectionFacts = {};
    const sni = (t as unknown as { servername?: string | false }).servername;
    if (typeof sni === 'string' && sni !== '') out.sni = sni;
    if (typeof t.alpnProtocol === 'string' && t.alpnProtocol !== '') out.alpn = t.alpnProtocol;
    if (this.localPrincipal !== undefined) out.localPrincipal = this.localPrincipal;
    if (this.requireClientCert || this.verifying) {
      const cert = t.getPeerCertificate(true);
      if (cert && Object.keys(cert).length > 0) {
        out.peerCertificate = cert;
        const uri = peerSans(cert.subjectaltname).uri[0];
        if (uri !== undefined) out.peerPrincipal = uri;
      }
    }
    return out;
  }

  close(): void {
    this.binding.close();
  }
}

/**
 * The client side of a cluster's (or transport_socket_match's) TLS: connection options for new
 * upstream connections, rebuilt when the SDS secrets change. SAN matchers are checked in
 * checkServerIdentity (Envoy checks no hostname unless SANs are configured).
 */
export class UpstreamTls {
  private current: tls.ConnectionOptions;
  private readonly binding: SecretBinding;
  private readonly sanMatch?: (sans: PeerSans) => boolean;

  constructor(
    private readonly cfg: UpstreamTlsConfig,
    secrets: SecretSource | undefined,
    private readonly http2: boolean,
  ) {
    this.sanMatch = compileSanMatchers(cfg.validation?.matchSubjectAltNames ?? []);
    this.binding = new SecretBinding(cfg.sdsCertificateNames, cfg.sdsValidationName, secrets, () => (this.current = this.build()));
    this.current = this.build();
  }

  /** Options for a new connection (the latest secrets). */
  options(): tls.ConnectionOptions {
    return this.current;
  }

  private build(): tls.ConnectionOptions {
    const c = this.cfg;
    const o: tls.ConnectionOptions = {
      ALPNProtocols: c.alpnProtocols.length > 0 ? [...c.alpnProtocols] : this.http2 ? ['h2'] : ['http/1.1'],
    };
    if (c.sni) o.servername = c.sni;
    if (c.minVersion) o.minVersion = c.minVersion as tls.SecureVersion;
    if (c.maxVersion) o.maxVersion = c.maxVersion as tls.SecureVersion;
    const sdsCerts = this.binding.certificates();
    const sdsCa = this.binding.trustedCa();
    const missing = this.binding.missing();
    if (sdsCerts === undefined || sdsCa === undefined) {
      // A secret is not there yet: every handshake fails (Envoy keeps such a cluster warming).
      o.rejectUnauthorized = true;
      o.checkServerIdentity = () => codeError(SECRET_NOT_READY_CODE, `SDS secret(s) ${missing.map((n) => `'${n}'`).join(', ')} not ready`);
      return o;
    }
    const certs = [...c.certificates, ...sdsCerts];
    const ca = sdsCa !== '' ? sdsCa : c.validation?.trustedCa;
    o.rejectUnauthorized = ca !== undefined;
    // One secure context per secret version, shared by every connection (no PEM parsing per connect).
    try {
      o.secureContext = tls.createSecureContext({
        ...(certs.length > 0 ? { cert: certs[0].certChain, key: certs[0].privateKey } : {}),
        ...(ca !== undefined ? { ca } : {}),
        ...(c.minVersion ? { minVersion: c.minVersion as tls.SecureVersion } : {}),
        ...(c.maxVersion ? { maxVersion: c.maxVersion as tls.SecureVersion } : {}),
      });
    } catch (e) {
      // An unusable secret: keep the previous options when there are some, else fail closed.
      if (this.current !== undefined && this.current.secureContext !== undefined) return this.current;
      o.rejectUnauthorized = true;
      o.checkServerIdentity = () => codeError(SECRET_NOT_READY_CODE, `unusable TLS secret: ${(e as Error).message}`);
      return o;
    }
    if (certs.length > 0) o.cert = certs[0].certChain; // informational (tests, config dump); the context is what counts
    if (ca !== undefined) o.ca = ca;
    const match = this.sanMatch;
    o.checkServerIdentity = match
      ? (_host, cert) => (match(peerSans(cert.subjectaltname)) ? undefined : codeError(SAN_MISMATCH_CODE, `the upstream certificate's SANs (${cert.subjectaltname ?? 'none'}) match no configured SAN matcher`))
      : () => undefined;
    return o;
  }

  close(): void {
    this.binding.close();
  }
}

/**
 * Server ALPN selection: the first of our protocols the client offers (server preference, as
 * BoringSSL's SSL_select_next_proto in Envoy). Without overlap Envoy negotiates nothing and goes on;
 * Node cannot (no selection = fatal alert), so keel answers with the client's first protocol other
 * than `istio-peer-exchange` (which would make an Istio client start the TCP metadata exchange),
 * e.g. `istio-http/1.1` or `istio` from a sidecar's istio.alpn override.
 */
export function alpnSelector(ours: readonly string[]): (arg: { servername: string; protocols: string[] }) => string | undefined {
  const list = [...ours];
  return ({ protocols }) => {
    for (const p of list) if (protocols.includes(p)) return p;
    return protocols.find((p) => p !== 'istio-peer-exchange') ?? protocols[0];
  };
}

function codeError(code: string, message: string): Error {
  const e = new Error(message) as NodeJS.ErrnoException;
  e.code = code;
  return e;
}

/** Whether endpoint metadata satisfies a transport_socket_match (every key equal; `{}` matches all). */
export function transportSocketMatches(match: Readonly<Record<string, unknown>>, endpointMetadata: Readonly<Record<string, unknown>>): boolean {
  const md = endpointMetadata['envoy.transport_socket_match'];
  const have = md && typeof md === 'object' ? (md as Record<string, unknown>) : {};
  for (const [k, v] of Object.entries(match)) {
    if (JSON.stringify(have[k]) !== JSON.stringify(v)) return false;
  }
  return true;
}
