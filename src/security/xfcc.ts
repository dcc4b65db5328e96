// x-forwarded-client-cert as Envoy's HTTP connection manager writes it, per
// forward_client_cert_details (SANITIZE, FORWARD_ONLY, APPEND_FORWARD, SANITIZE_SET,
// ALWAYS_FORWARD_ONLY) and set_current_client_cert_details (By and Hash always, then Cert, Chain,
// Subject, URI, DNS). The element for a connection is computed once and cached on its ConnectionInfo;
// requests on plaintext connections only pay for the header removal Envoy also does.

import * as crypto from 'node:crypto';
import type * as tls from 'node:tls';
import type { ClientCertDetail, ForwardClientCertDetails } from '../config/types';
import type { HeaderMap } from '../http/headers';
import type { ConnectionInfo } from '../http/stream';
import { pem } from './csr';
import { peerSans } from './tls-context';

export const XFCC = 'x-forwarded-client-cert';

const cache = new WeakMap<ConnectionInfo, string>();

/**
 * Envoy's subjectPeerCertificate: the subject in RFC 2253 order (most specific first,
 * comma-separated). Node prints one RDN a line, least specific first, values already escaped.
 */
function rfc2253(subject: string): string {
  if (subject === '') return '';
  return subject
    .split('\n')
    .filter((l) => l !== '')
    .reverse()
    .join(',');
}

/** The chain the peer presented (leaf first), as Node links it through `issuerCertificate`. */
function chainOf(cert: tls.DetailedPeerCertificate): Buffer[] {
  const out: Buffer[] = [];
  const seen = new Set<tls.DetailedPeerCertificate>();
  for (let c: tls.DetailedPeerCertificate | undefined = cert; c && c.raw && !seen.has(c); c = c.issuerCertificate) {
    seen.add(c);
    out.push(c.raw);
  }
  return out;
}

/** This connection's XFCC element (`By=...;Hash=...;...`), or undefined without a peer certificate. */
export function xfccElement(info: ConnectionInfo, details: readonly ClientCertDetail[]): string | undefined {
  const cached = cache.get(info);
  if (cached !== undefined) return cached;
  const cert = info.peerCertificate as tls.DetailedPeerCertificate | undefined;
  if (!cert || !cert.raw) return undefined;
  const parts: string[] = [];
  if (info.localPrincipal) parts.push(`By=${info.localPrincipal}`);
  parts.push(`Hash=${crypto.createHash('sha256').update(cert.raw).digest('hex')}`);
  const sans = peerSans(cert.subjectaltname);
  for (const d of details) {
    switch (d) {
      case 'Cert':
        parts.push(`Cert="${encodeURIComponent(pem('CERTIFICATE', cert.raw))}"`);
        break;
      case 'Chain':
        parts.push(`Chain="${encodeURIComponent(chainOf(cert).map((b) => pem('CERTIFICATE', b)).join(''))}"`);
        break;
      case 'Subject': {
        let subject = '';
        try {
          subject = rfc2253(new crypto.X509Certificate(cert.raw).subject);
        } catch {
          subject = '';
        }
        // The Subject key is there even when the subject is empty (SPIFFE certificates).
        parts.push(`Subject="${subject}"`);
        break;
      }
      case 'URI':
        for (const u of sans.uri) parts.push(`URI=${u}`);
        break;
      case 'DNS':
        for (const n of sans.dns) parts.push(`DNS=${n}`);
        break;
    }
  }
  const value = parts.join(';');
  cache.set(info, value);
  return value;
}

/** Applies forward_client_cert_details to a request's headers (Envoy's mutateXfccRequestHeader). */
export function applyXfcc(headers: HeaderMap, mode: ForwardClientCertDetails | undefined, details: readonly ClientCertDetail[] | undefined, info: ConnectionInfo): void {
  if (mode === undefined || mode === 'SANITIZE') {
    headers.remove(XFCC);
    return;
  }
  if (mode === 'ALWAYS_FORWARD_ONLY') return;
  const mtls = info.secure && info.peerCertificate !== undefined;
  if (!mtls) {
    headers.remove(XFCC);
    return;
  }
  if (mode === 'FORWARD_ONLY') return;
  const element = xfccElement(info, details ?? []);
  if (element === undefined) {
    headers.remove(XFCC);
    return;
  }
  if (mode === 'APPEND_FORWARD') {
    const prev = headers.get(XFCC);
    headers.set(XFCC, prev ? `${prev},${element}` : element);
  } else {
    headers.set(XFCC, element);
  }
}
