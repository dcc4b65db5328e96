// Decoders for the observability parts of Envoy's config: HCM access_log (file, stdout and stderr
// loggers with text/JSON formats and filters), HCM tracing (sampling, Zipkin provider), and the
// route's decorator and tracing. Only decoding and validation; the loggers and tracer that use these
// live in src/observability/.

import type { Reader } from './decode';
import type { AccessLogConfig, AccessLogFilterConfig, HcmTracingConfig, RouteConfigEntry, ZipkinConfig } from './types';
import { decodeFractionalPercent, decodeHeaderMatcher } from './bootstrap';
import { compileText } from '../observability/access-log';

export const FILE_ACCESS_LOG = 'envoy.extensions.access_loggers.file.v3.FileAccessLog';
export const STDOUT_ACCESS_LOG = 'envoy.extensions.access_loggers.stream.v3.StdoutAccessLog';
export const STDERR_ACCESS_LOG = 'envoy.extensions.access_loggers.stream.v3.StderrAccessLog';
export const ZIPKIN_CONFIG = 'envoy.config.trace.v3.ZipkinConfig';

/** Envoy's default access log format (used when a logger sets none). */
export const ENVOY_DEFAULT_FORMAT =
  '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n';

/** The text format Istio configures for meshConfig.accessLogFile with the default encoding. */
export const ISTIO_DEFAULT_FORMAT =
  '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n';

/** SubstitutionFormatString: text_format / text_format_source.inline_string / json_format. */
function decodeLogFormat(r: Reader): { textFormat?: string; jsonFormat?: Record<string, unknown> } {
  const kind = r.oneof(['text_format', 'json_format', 'text_format_source'], false);
  r.bool('omit_empty_values', false);
  r.str('content_type');
  r.unsupported('formatters', 'custom formatter extensions');
  if (kind === 'text_format') return { textFormat: r.str('text_format') };
  if (kind === 'json_format') return { jsonFormat: r.struct('json_format') };
  if (kind === 'text_format_source') {
    const t = r.sub('text_format_source', 'DataSource', (d) => {
      if (d.has('filename') || d.has('environment_variable')) d.problem('only inline_string is supported for an access log format');
      d.get('filename');
      d.get('environment_variable');
      return d.optStr('inline_string') ?? d.optBytes('inline_bytes');
    });
    return t !== undefined ? { textFormat: t } : {};
  }
  return {};
}

function decodeComparison(r: Reader, kind: 'status_code' | 'duration'): AccessLogFilterConfig | undefined {
  return r.sub('comparison', 'ComparisonFilter', (c) => {
    const op = c.enum('op', ['EQ', 'GE', 'LE'], 'EQ') as 'EQ' | 'GE' | 'LE';
    const value = c.sub('value', 'RuntimeUInt32', (v) => {
      v.str('runtime_key');
      return v.uint32('default_value', 0);
    });
    return { kind, op, value: value ?? 0 };
  });
}

const FILTER_KINDS = [
  'status_code_filter',
  'duration_filter',
  'not_health_check_filter',
  'traceable_filter',
  'runtime_filter',
  'and_filter',
  'or_filter',
  'header_filter',
  'response_flag_filter',
  'grpc_status_filter',
  'extension_filter',
  'metadata_filter',
  'log_type_filter',
] as const;

/** gRPC status names by code (GrpcStatusFilter.Status). */
const GRPC_STATUS_NAMES = ['OK', 'CANCELED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

/** AccessLogFilter; a kind keel cannot evaluate is warned about and treated as "log everything". */
export function decodeAccessLogFilter(r: Reader): AccessLogFilterConfig | undefined {
  const kind = r.oneof(FILTER_KINDS, true);
  switch (kind) {
    case 'status_code_filter':
      return r.sub(kind, 'StatusCodeFilter', (f) => decodeComparison(f, 'status_code'));
    case 'duration_filter':
      return r.sub(kind, 'DurationFilter', (f) => decodeComparison(f, 'duration'));
    case 'not_health_check_filter':
      r.sub(kind, 'NotHealthCheckFilter', () => undefined);
      return { kind: 'not_health_check' };
    case 'traceable_filter':
      r.sub(kind, 'TraceableFilter', () => undefined);
      return { kind: 'traceable' };
    case 'response_flag_filter':
      return r.sub(kind, 'ResponseFlagFilter', (f) => ({ kind: 'response_flag' as const, flags: f.strList('flags') }));
    case 'header_filter':
      return r.sub(kind, 'HeaderFilter', (f) => {
        const header = f.sub('header', 'HeaderMatcher', decodeHeaderMatcher);
        return header ? { kind: 'header' as const, header } : undefined;
      });
    case 'runtime_filter':
      return r.sub(kind, 'RuntimeFilter', (f) => {
        f.str('runtime_key');
        f.bool('use_independent_randomness', false);
        const p = f.sub('percent_sampled', 'FractionalPercent', decodeFractionalPercent);
        // without percent_sampled Envoy reads the runtime key, whose default is 0% here
        return { kind: 'runtime' as const, percent: p ? (p.numerator / p.denominator) * 100 : 0 };
      });
    case 'grpc_status_filter':
      return r.sub(kind, 'GrpcStatusFilter', (f) => {
        const statuses: number[] = [];
        for (const item of f.list('statuses')) {
          const v = item.value;
          const n = typeof v === 'number' ? v : GRPC_STATUS_NAMES.indexOf(String(v));
          if (!Number.isInteger(n) || n < 0 || n > 16) f.diag.problem(item.path, `'${String(v)}' is not a gRPC status`);
          else statuses.push(n);
        }
        return { kind: 'grpc_status' as const, statuses, exclude: f.bool('exclude', false) };
      });
    case 'and_filter':
    case 'or_filter':
      return r.sub(kind, kind === 'and_filter' ? 'AndFilter' : 'OrFilter', (f) => ({
        kind: kind === 'and_filter' ? ('and' as const) : ('or' as const),
        filters: f.objects('filters', 'AccessLogFilter', decodeAccessLogFilter),
      }));
    case undefined:
      return undefined;
    default:
      r.get(kind);
      r.warn(`ignored: the ${kind} access log filter is not evaluated by keel (every request is logged)`, kind);
      return undefined;
  }
}

/** One AccessLog entry: a file, stdout or stderr logger. */
export function decodeAccessLog(r: Reader): AccessLogConfig | undefined {
  const name = r.str('name');
  const filter = r.sub('filter', 'AccessLogFilter', decodeAccessLogFilter);
  const typed = r.typed('typed_config');
  if (!typed) {
    r.problem('typed_config is required (a file, stdout or stderr access logger)', 'typed_config');
    return undefined;
  }
  const t = typed.reader;
  let path: string;
  let format: { textFormat?: string; jsonFormat?: Record<string, unknown> } = {};
  switch (typed.typeName) {
    case FILE_ACCESS_LOG: {
      const fr = t.retype('FileAccessLog');
      path = fr.requiredStr('path');
      const kind = fr.oneof(['format', 'json_format', 'typed_json_format', 'log_format'], false);
      if (kind === 'format') format = { textFormat: fr.str('format') };
      else if (kind === 'json_format' || kind === 'typed_json_format') format = { jsonFormat: fr.struct(kind) };
      else if (kind === 'log_format') format = fr.sub('log_format', 'SubstitutionFormatString', decodeLogFormat) ?? {};
      fr.done();
      break;
    }
    case STDOUT_ACCESS_LOG:
    case STDERR_ACCESS_LOG: {
      const sr = t.retype('StreamAccessLog');
      path = typed.typeName === STDOUT_ACCESS_LOG ? '/dev/stdout' : '/dev/stderr';
      format = sr.sub('log_format', 'SubstitutionFormatString', decodeLogFormat) ?? {};
      sr.done();
      break;
    }
    default:
      r.warn(`ignored: access logger ${typed.typeName} is not supported by keel (file, stdout and stderr are)`, 'typed_config');
      return undefined;
  }
  if (path === '') return undefined;
  if (!checkFormat(r, format.textFormat ?? format.jsonFormat)) return undefined;
  return { name, path, ...format, ...(filter ? { filter } : {}) };
}

/** Every %COMMAND% of a text format or of a json_format's values must be one keel knows. */
function checkFormat(r: Reader, f: string | Readonly<Record<string, unknown>> | undefined): boolean {
  if (f === undefined) return true;
  try {
    const walk = (v: unknown): void => {
      if (typeof v === 'string') compileText(v);
      else if (v && typeof v === 'object') for (const x of Object.values(v)) walk(x);
    };
    walk(f);
    return true;
  } catch (e) {
    r.problem(`bad access log format: ${(e as Error).message}`, 'typed_config');
    return false;
  }
}

function percent(r: Reader, field: string, def: number): number {
  const v = r.sub(field, 'Percent', (p) => p.num('value', def, { min: 0, max: 100 }));
  return v ?? def;
}

/** HttpConnectionManager.Tracing. */
export function decodeHcmTracing(r: Reader): HcmTracingConfig {
  const clientSamplingPct = percent(r, 'client_sampling', 100);
  const randomSamplingPct = percent(r, 'random_sampling', 100);
  const overallSamplingPct = percent(r, 'overall_sampling', 100);
  r.bool('verbose', false);
  r.num('max_path_tag_length', 256);
  if (r.has('custom_tags')) r.warn('ignored: custom_tags are not added to spans', 'custom_tags');
  r.get('custom_tags');
  const spawnUpstreamSpan = r.optBool('spawn_upstream_span') ?? false;
  let provider: ZipkinConfig | undefined;
  r.sub('provider', 'Tracing.Http', (p) => {
    const name = p.str('name');
    const typed = p.typed('typed_config');
    if (typed?.typeName === ZIPKIN_CONFIG) {
      const z = typed.reader.retype('ZipkinConfig');
      const collectorCluster = z.requiredStr('collector_cluster');
      const collectorEndpoint = z.requiredStr('collector_endpoint');
      z.enum('collector_endpoint_version', ['DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE', 'HTTP_JSON', 'HTTP_PROTO', 'GRPC'], 'HTTP_JSON', ['HTTP_JSON']);
      const collectorHostname = z.optStr('collector_hostname');
      const traceId128bit = z.bool('trace_id_128bit', false);
      const sharedSpanContext = z.optBool('shared_span_context') ?? true;
      z.bool('split_spans_for_request', false);
      z.get('collector_service');
      z.done();
      if (collectorCluster !== '' && collectorEndpoint !== '') {
        provider = { collectorCluster, collectorEndpoint, traceId128bit, sharedSpanContext, ...(collectorHostname ? { collectorHostname } : {}) };
      }
    } else {
      p.warn(`ignored: tracing provider ${typed?.typeName ?? name} is not supported (keel exports to Zipkin); trace headers are still propagated`, 'typed_config');
    }
  });
  return { clientSamplingPct, randomSamplingPct, overallSamplingPct, spawnUpstreamSpan, ...(provider ? { provider } : {}) };
}

/** Route.decorator and Route.tracing, merged into a route entry. */
export function decodeRouteTracing(r: Reader): Pick<RouteConfigEntry, 'decorator' | 'tracing'> {
  const decorator = r.sub('decorator', 'Decorator', (d) => ({ operation: d.requiredStr('operation'), propagate: d.optBool('propagate') ?? true }));
  const tracing = r.sub('tracing', 'Route.Tracing', (t) => {
    const pct = (field: string): number | undefined => {
      const f = t.sub(field, 'FractionalPercent', decodeFractionalPercent);
      return f ? (f.numerator / f.denominator) * 100 : undefined;
    };
    const client = pct('client_sampling');
    const random = pct('random_sampling');
    const overall = pct('overall_sampling');
    if (t.has('custom_tags')) t.warn('ignored: custom_tags are not added to spans', 'custom_tags');
    t.get('custom_tags');
    return {
      ...(client !== undefined ? { clientSamplingPct: client } : {}),
      ...(random !== undefined ? { randomSamplingPct: random } : {}),
      ...(overall !== undefined ? { overallSamplingPct: overall } : {}),
    };
  });
  return { ...(decorator && decorator.operation !== '' ? { decorator } : {}), ...(tracing ? { tracing } : {}) };
}
