// keel's error type: a stable `code`, an optional `cause`, and the one table that maps a failure on
// the request path to its HTTP status and Envoy response flag. Nothing here does I/O.

export type ErrorCode =
  | 'KEEL_CONFIG_INVALID'
  | 'KEEL_NATIVE_UNAVAILABLE'
  | 'KEEL_NO_ROUTE'
  | 'KEEL_NO_CLUSTER'
  | 'KEEL_NO_HEALTHY_UPSTREAM'
  | 'KEEL_UPSTREAM_CONNECT_FAILURE'
  | 'KEEL_UPSTREAM_CONNECT_TIMEOUT'
  | 'KEEL_UPSTREAM_TLS_VERIFY_FAILED'
  | 'KEEL_UPSTREAM_RESET'
  | 'KEEL_UPSTREAM_CONNECTION_TERMINATION'
  | 'KEEL_UPSTREAM_PROTOCOL_ERROR'
  | 'KEEL_UPSTREAM_TIMEOUT'
  | 'KEEL_UPSTREAM_OVERFLOW'
  | 'KEEL_DOWNSTREAM_DISCONNECT'
  | 'KEEL_STREAM_IDLE_TIMEOUT';

export class KeelError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'KeelError';
  }
}

/** How a request-path failure is answered: status, Envoy response flag, and the body Envoy sends. */
export interface LocalReplySpec {
  readonly status: number;
  readonly flag: string;
  readonly body: string;
  /** Envoy's response code details, e.g. `route_not_found`. */
  readonly details: string;
}

export const LOCAL_REPLIES: Readonly<Record<string, LocalReplySpec>> = {
  KEEL_NO_ROUTE: { status: 404, flag: 'NR', body: '', details: 'route_not_found' },
  KEEL_NO_CLUSTER: { status: 503, flag: 'NC', body: '', details: 'cluster_not_found' },
  KEEL_NO_HEALTHY_UPSTREAM: { status: 503, flag: 'UH', body: 'no healthy upstream', details: 'no_healthy_upstream' },
  KEEL_UPSTREAM_CONNECT_FAILURE: {
    status: 503,
    flag: 'UF',
    body: 'upstream connect error or disconnect/reset before headers. reset reason: connection failure',
    details: 'upstream_reset_before_response_started{connection_failure}',
  },
  // The upstream's certificate failed verification (chain or SAN matchers): Envoy's wording with
  // BoringSSL's CERTIFICATE_VERIFY_FAILED error string as the transport failure reason.
  KEEL_UPSTREAM_TLS_VERIFY_FAILED: {
    status: 503,
    flag: 'UF',
    body: 'upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end',
    details: 'upstream_reset_before_response_started{connection_failure,TLS_error:|268435581:SSL_routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end}',
  },
  KEEL_UPSTREAM_CONNECT_TIMEOUT: {
    status: 503,
    flag: 'UF',
    body: 'upstream connect error or disconnect/reset before headers. reset reason: connection timeout',
    details: 'upstream_reset_before_response_started{connection_timeout}',
  },
  KEEL_UPSTREAM_RESET: {
    status: 503,
    flag: 'UR',
    body: 'upstream connect error or disconnect/reset before headers. reset reason: remote reset',
    details: 'upstream_reset_before_response_started{remote_reset}',
  },
  KEEL_UPSTREAM_CONNECTION_TERMINATION: {
    status: 503,
    flag: 'UC',
    body: 'upstream connect error or disconnect/reset before headers. reset reason: connection termination',
    details: 'upstream_reset_before_response_started{connection_termination}',
  },
  KEEL_UPSTREAM_PROTOCOL_ERROR: {
    status: 502,
    flag: 'UPE',
    body: 'upstream connect error or disconnect/reset before headers. reset reason: protocol error',
    details: 'upstream_reset_before_response_started{protocol_error}',
  },
  KEEL_UPSTREAM_TIMEOUT: { status: 504, flag: 'UT', body: 'upstream request timeout', details: 'upstream_response_timeout' },
  KEEL_UPSTREAM_OVERFLOW: { status: 503, flag: 'UO', body: 'upstream connect error or disconnect/reset before headers. reset reason: overflow', details: 'upstream_reset_before_response_started{overflow}' },
  KEEL_STREAM_IDLE_TIMEOUT: { status: 408, flag: 'SI', body: 'stream timeout', details: 'stream_idle_timeout' },
};

/** gRPC status for a local reply's HTTP status, as Envoy maps it (Http::Utility::httpToGrpcStatus). */
export function grpcStatusForHttp(status: number): number {
  switch (status) {
    case 400:
      return 13; // INTERNAL
    case 401:
      return 16; // UNAUTHENTICATED
    case 403:
      return 7; // PERMISSION_DENIED
    case 404:
      return 12; // UNIMPLEMENTED
    case 429:
    case 502:
    case 503:
    case 504:
      return 14; // UNAVAILABLE
    default:
      return 2; // UNKNOWN
  }
}
