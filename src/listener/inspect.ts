// Listener filters that look at a connection's first bytes (Envoy's tls_inspector and
// http_inspector), planned once per listener: a listener only waits for the bytes its filter-chain
// match (and an HTTP/2-capable AUTO codec) actually needs. tls_inspector: transport protocol 'tls'
// when a ClientHello starts the connection, plus its SNI and ALPN when a chain matches on server
// names or application protocols. http_inspector: 'http/1.1', 'http/1.0' or 'h2c' for plaintext.
// Without tls_inspector every connection's transport protocol is 'raw_buffer' (Envoy's default).
//
// Must not: consume or terminate anything (the bytes are only looked at), or run per-connection
// work that the plan says nobody uses.

import type { ListenerConfig } from '../config/types';
import type { MatchNeeds } from './chain-match';
import { H2_PREFACE, detectProtocol, parseClientHello } from './peek';

export const TLS_INSPECTOR_TYPE = 'envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector';
export const HTTP_INSPECTOR_TYPE = 'envoy.extensions.filters.listener.http_inspector.v3.HttpInspector';

export interface InspectPlan {
  /** off: no tls_inspector (or nothing uses it); transport: the first byte says TLS; hello: the whole ClientHello (SNI, ALPN) */
  readonly tls: 'off' | 'transport' | 'hello';
  /** http_inspector runs (a chain matches on application protocols) */
  readonly http: boolean;
  /** an AUTO-codec HTTP/2-capable plaintext chain must see whether the h2c preface comes */
  readonly h2Preface: boolean;
  /** anything at all to wait for */
  readonly any: boolean;
  readonly want: (bytes: Buffer) => 'more' | 'done';
}

/** What the inspection found. */
export interface Inspection {
  readonly transportProtocol: 'tls' | 'raw_buffer';
  readonly serverName?: string;
  readonly applicationProtocols: readonly string[];
  /** the HTTP/2 prior-knowledge preface was seen in full */
  readonly h2c: boolean;
}

export function planInspection(config: ListenerConfig, needs: MatchNeeds, h2Preface: boolean): InspectPlan {
  const hasTls = config.listenerFilters.some((f) => f.typeName === TLS_INSPECTOR_TYPE);
  const hasHttp = config.listenerFilters.some((f) => f.typeName === HTTP_INSPECTOR_TYPE);
  const tls: InspectPlan['tls'] = !hasTls
    ? 'off'
    : needs.serverNames || needs.applicationProtocols
      ? 'hello'
      : needs.transportProtocol
        ? 'transport'
        : 'off';
  const http = hasHttp && needs.applicationProtocols;
  const want = (b: Buffer): 'more' | 'done' => {
    if (b.length === 0) return 'more';
    if (b[0] === 0x16) {
      if (tls !== 'hello') return 'done';
      const hello = parseClientHello(b);
      return hello !== undefined && !hello.complete ? 'more' : 'done';
    }
    if (http) return detectProtocol(b).status;
    if (h2Preface) {
      const n = Math.min(b.length, H2_PREFACE.length);
      return b.subarray(0, n).equals(H2_PREFACE.subarray(0, n)) && n < H2_PREFACE.length ? 'more' : 'done';
    }
    return 'done';
  };
  return { tls, http, h2Preface, any: tls !== 'off' || http || h2Preface, want };
}

const RAW: Inspection = { transportProtocol: 'raw_buffer', applicationProtocols: [], h2c: false };
const NO_PROTOCOLS: readonly string[] = [];

/** Interprets the bytes seen (possibly fewer than wanted, after a timeout) under the plan. */
export function inspectBytes(b: Buffer, plan: InspectPlan): Inspection {
  if (b.length === 0) return RAW;
  if (b[0] === 0x16) {
    if (plan.tls === 'off') return RAW;
    if (plan.tls === 'transport') return { transportProtocol: 'tls', applicationProtocols: NO_PROTOCOLS, h2c: false };
    const hello = parseClientHello(b);
    if (hello === undefined || !hello.complete) return RAW;
    return {
      transportProtocol: 'tls',
      ...(hello.sni !== undefined ? { serverName: hello.sni } : {}),
      applicationProtocols: hello.alpn ?? NO_PROTOCOLS,
      h2c: false,
    };
  }
  const h2c = b.length >= H2_PREFACE.length && b.subarray(0, H2_PREFACE.length).equals(H2_PREFACE);
  if (plan.http) {
    const d = detectProtocol(b);
    if (d.status === 'done' && (d.protocol === 'h2c' || d.protocol === 'http/1.1' || d.protocol === 'http/1.0')) {
      return { transportProtocol: 'raw_buffer', applicationProtocols: [d.protocol], h2c };
    }
  }
  return h2c ? { transportProtocol: 'raw_buffer', applicationProtocols: NO_PROTOCOLS, h2c } : RAW;
}
