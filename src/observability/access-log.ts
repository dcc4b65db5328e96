// HCM access logs: Envoy's format strings (%REQ(X?Y):N%, %RESPONSE_CODE%, %DURATION%, ...) and
// json_format compiled once per logger into parts, filters (status code, duration, response flags,
// header, traceable, and/or) compiled once, and file / stdout / stderr sinks shared per path.
// The completion hook renders one line per finished stream that passes the filter; nothing is
// parsed per request.

import * as fs from 'node:fs';
import { hostname } from 'node:os';
import type { AccessLogConfig, AccessLogFilterConfig } from '../config/types';
import type { ActiveStream } from '../http/stream';
import type { HeaderMap } from '../http/headers';
import { compileHeaderMatcher } from '../router/matchers';

/** A value for one command: a string, a number (typed in JSON), or undefined (logged as '-'). */
type Getter = (s: ActiveStream) => string | number | undefined;
type TextPart = string | Getter;

export class FormatError extends Error {}

function hostPort(addr: string | undefined, port: number | undefined): string | undefined {
  if (addr === undefined || addr === '') return undefined;
  return addr.includes(':') ? `[${addr}]:${port ?? 0}` : `${addr}:${port ?? 0}`;
}

function headerGetter(which: 'req' | 'resp' | 'trailer', arg: string): (s: ActiveStream) => string | undefined {
  const [main, alt] = arg.toLowerCase().split('?');
  const pick = (s: ActiveStream): HeaderMap | undefined => (which === 'req' ? s.headers : which === 'resp' ? s.responseHeaders : s.responseTrailers);
  return (s) => {
    const h = pick(s);
    if (!h) return undefined;
    return h.first(main) ?? (alt !== undefined ? h.first(alt) : undefined);
  };
}

const pad = (n: number, w = 2): string => String(n).padStart(w, '0');

/** START_TIME with a strftime-like format (%Y %m %d %H %M %S %z %s, %E3S / %3f / %6f / %9f for fractions). */
function timeFormatter(fmt: string | undefined): (ms: number) => string {
  if (!fmt) return (ms) => new Date(ms).toISOString();
  return (ms) => {
    const d = new Date(ms);
    return fmt.replace(/%(E?\d?[a-zA-Z%])/g, (_m, spec: string) => {
      switch (spec) {
        case 'Y': return String(d.getUTCFullYear());
        case 'm': return pad(d.getUTCMonth() + 1);
        case 'd': return pad(d.getUTCDate());
        case 'H': return pad(d.getUTCHours());
        case 'M': return pad(d.getUTCMinutes());
        case 'S': return pad(d.getUTCSeconds());
        case 'z': return '+0000';
        case 's': return String(Math.floor(ms / 1000));
        case 'E3S': return `${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}`;
        case '3f': return pad(d.getUTCMilliseconds(), 3);
        case '6f': return pad(d.getUTCMilliseconds(), 3) + '000';
        case '9f': return pad(d.getUTCMilliseconds(), 3) + '000000';
        case '%': return '%';
        default: return `%${spec}`;
      }
    });
  };
}

function command(cmd: string, arg: string | undefined): Getter {
  const needArg = (): string => {
    if (!arg) throw new FormatError(`%${cmd}(...)% needs an argument`);
    return arg;
  };
  switch (cmd) {
    case 'START_TIME': {
      const f = timeFormatter(arg);
      return (s) => f(s.startTime);
    }
    case 'REQ':
      return headerGetter('req', needArg());
    case 'RESP':
      return headerGetter('resp', needArg());
    case 'TRAILER':
      return headerGetter('trailer', needArg());
    case 'PROTOCOL':
      return (s) => s.protocol;
    case 'RESPONSE_CODE':
      return (s) => s.responseCode;
    case 'RESPONSE_CODE_DETAILS':
      return (s) => s.responseCodeDetails || undefined;
    case 'RESPONSE_FLAGS':
      return (s) => s.responseFlags || undefined;
    case 'BYTES_RECEIVED':
      return (s) => s.bytesReceived;
    case 'BYTES_SENT':
      return (s) => s.bytesSent;
    case 'DURATION':
      return (s) => Date.now() - s.startTime;
    case 'UPSTREAM_HOST':
    case 'UPSTREAM_REMOTE_ADDRESS':
      return (s) => hostPort(s.upstreamAddress, s.upstreamPort);
    case 'UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT':
      return (s) => s.upstreamAddress;
    case 'UPSTREAM_CLUSTER':
    case 'UPSTREAM_CLUSTER_RAW':
      return (s) => s.cluster?.name;
    case 'UPSTREAM_REQUEST_ATTEMPT_COUNT':
      return (s) => s.attemptCount;
    case 'DOWNSTREAM_REMOTE_ADDRESS':
    case 'DOWNSTREAM_DIRECT_REMOTE_ADDRESS':
      return (s) => hostPort(s.remoteAddress, s.remotePort);
    case 'DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT':
    case 'DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT':
      return (s) => s.remoteAddress;
    case 'DOWNSTREAM_REMOTE_PORT':
      return (s) => s.remotePort;
    case 'DOWNSTREAM_LOCAL_ADDRESS':
      return (s) => hostPort(s.localAddress, s.localPort);
    case 'DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT':
      return (s) => s.localAddress;
    case 'DOWNSTREAM_LOCAL_PORT':
      return (s) => s.localPort;
    case 'REQUESTED_SERVER_NAME':
      return (s) => s.connection.sni || undefined;
    case 'DOWNSTREAM_PEER_URI_SAN':
      return (s) => s.connection.peerPrincipal || undefined;
    case 'DOWNSTREAM_LOCAL_URI_SAN':
      return (s) => s.connection.localPrincipal || undefined;
    case 'ROUTE_NAME':
      return (s) => s.route?.config.name || undefined;
    case 'GRPC_STATUS':
      return (s) => (s.grpc ? (s.responseTrailers?.first('grpc-status') ?? s.responseHeaders?.first('grpc-status')) : undefined);
    case 'TRACE_ID':
      return (s) => s.span?.traceId;
    case 'HOSTNAME': {
      const h = hostname();
      return () => h;
    }
    // Facts keel does not track: logged as '-' like Envoy does when they are absent.
    case 'UPSTREAM_LOCAL_ADDRESS':
    case 'UPSTREAM_TRANSPORT_FAILURE_REASON':
    case 'CONNECTION_TERMINATION_DETAILS':
    case 'DOWNSTREAM_TLS_VERSION':
    case 'UPSTREAM_PEER_URI_SAN':
    case 'CONNECTION_ID':
    case 'REQUEST_DURATION':
    case 'RESPONSE_DURATION':
    case 'RESPONSE_TX_DURATION':
    case 'DYNAMIC_METADATA':
    case 'FILTER_STATE':
    case 'CEL':
      return () => undefined;
    default:
      throw new FormatError(`unknown access log command %${cmd}%`);
  }
}

const TOKEN = /%([A-Z_0-9]+)(?:\(([^)]*)\))?(?::(\d+))?%/g;

/** Compiles a text format into parts; throws FormatError on an unknown command. */
export function compileText(format: string): TextPart[] {
  const parts: TextPart[] = [];
  let last = 0;
  TOKEN.lastIndex = 0;
  for (let m = TOKEN.exec(format); m; m = TOKEN.exec(format)) {
    if (m.index > last) parts.push(format.slice(last, m.index));
    const g = command(m[1], m[2]);
    const max = m[3] !== undefined ? Number(m[3]) : undefined;
    parts.push(max === undefined ? g : (s) => {
      const v = g(s);
      return typeof v === 'string' ? v.slice(0, max) : v;
    });
    last = m.index + m[0].length;
  }
  if (last < format.length) parts.push(format.slice(last));
  return parts;
}

function renderText(parts: readonly TextPart[], s: ActiveStream): string {
  let out = '';
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    if (typeof p === 'string') out += p;
    else {
      const v = p(s);
      out += v === undefined || v === '' ? '-' : String(v);
    }
  }
  return out;
}

type JsonPart = { readonly key: string; readonly value: TextPart[] | JsonPart[]; readonly nested: boolean; readonly single: boolean };

function compileJson(obj: Readonly<Record<string, unknown>>): JsonPart[] {
  return Object.entries(obj).map(([key, v]) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) return { key, value: compileJson(v as Record<string, unknown>), nested: true, single: false };
    const text = typeof v === 'string' ? v : JSON.stringify(v);
    const parts = compileText(text);
    return { key, value: parts, nested: false, single: parts.length === 1 && typeof parts[0] !== 'string' };
  });
}

function renderJson(parts: readonly JsonPart[], s: ActiveStream): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const p of parts) {
    if (p.nested) out[p.key] = renderJson(p.value as JsonPart[], s);
    else if (p.single) {
      // A lone command keeps its type (numbers stay numbers); an absent value is null.
      const v = (p.value[0] as Getter)(s);
      out[p.key] = v === undefined || v === '' ? null : v;
    } else out[p.key] = renderText(p.value as TextPart[], s);
  }
  return out;
}

type Filter = (s: ActiveStream) => boolean;

function compileFilter(f: AccessLogFilterConfig): Filter {
  switch (f.kind) {
    case 'status_code':
    case 'duration': {
      const get = f.kind === 'status_code' ? (s: ActiveStream) => s.responseCode : (s: ActiveStream) => Date.now() - s.startTime;
      const v = f.value;
      return f.op === 'EQ' ? (s) => get(s) === v : f.op === 'GE' ? (s) => get(s) >= v : (s) => get(s) <= v;
    }
    case 'not_health_check':
      return () => true; // keel has no health-check filter marking requests
    case 'traceable':
      return (s) => s.span?.sampled === true;
    case 'response_flag': {
      const want = f.flags;
      if (want.length === 0) return (s) => s.responseFlags !== '';
      return (s) => s.responseFlags !== '' && s.responseFlags.split(',').some((x) => want.includes(x));
    }
    case 'header': {
      const m = compileHeaderMatcher(f.header);
      return (s) => s.headers !== undefined && m(s.headers);
    }
    case 'runtime': {
      const pct = f.percent;
      return () => Math.random() * 100 < pct;
    }
    case 'grpc_status': {
      const set = new Set(f.statuses);
      const exclude = f.exclude;
      return (s) => {
        // Envoy: a non-gRPC response maps its HTTP status to a gRPC status
        const raw = s.responseTrailers?.first('grpc-status') ?? s.responseHeaders?.first('grpc-status');
        const code = raw !== undefined ? Number(raw) : s.grpc ? 2 : httpToGrpc(s.responseCode);
        return set.has(code) !== exclude;
      };
    }
    case 'and': {
      const fs = f.filters.map(compileFilter);
      return (s) => fs.every((x) => x(s));
    }
    case 'or': {
      const fs = f.filters.map(compileFilter);
      return (s) => fs.some((x) => x(s));
    }
  }
}

/** gRPC status for an HTTP status (the gRPC HTTP mapping). */
function httpToGrpc(status: number): number {
  switch (status) {
    case 200:
      return 0;
    case 400:
      return 13;
    case 401:
      return 16;
    case 403:
      return 7;
    case 404:
      return 12;
    case 429:
    case 502:
    case 503:
    case 504:
      return 14;
    default:
      return 2;
  }
}

/** Where lines go: one shared sink per path for the whole process. */
export interface LogSink {
  write(line: string): void;
}

const sinks = new Map<string, LogSink>();

export function sinkFor(path: string): LogSink {
  let s = sinks.get(path);
  if (s) return s;
  if (path === '/dev/stdout') s = { write: (l) => void process.stdout.write(l) };
  else if (path === '/dev/stderr') s = { write: (l) => void process.stderr.write(l) };
  else {
    const stream = fs.createWriteStream(path, { flags: 'a' });
    stream.on('error', () => undefined); // an unwritable log must not take the proxy down
    s = { write: (l) => void stream.write(l) };
  }
  sinks.set(path, s);
  return s;
}

/** One configured logger as a completion hook. */
export class AccessLogger {
  private readonly text?: TextPart[];
  private readonly json?: JsonPart[];
  private readonly filter?: Filter;
  private readonly sink: LogSink;

  constructor(config: AccessLogConfig, defaultFormat: string, sink?: LogSink) {
    if (config.jsonFormat) this.json = compileJson(config.jsonFormat);
    else this.text = compileText(config.textFormat ?? defaultFormat);
    if (config.filter) this.filter = compileFilter(config.filter);
    this.sink = sink ?? sinkFor(config.path);
  }

  format(s: ActiveStream): string {
    if (this.json) return JSON.stringify(renderJson(this.json, s)) + '\n';
    return renderText(this.text!, s);
  }

  readonly complete = (s: ActiveStream): void => {
    if (this.filter && !this.filter(s)) return;
    this.sink.write(this.format(s));
  };
}
