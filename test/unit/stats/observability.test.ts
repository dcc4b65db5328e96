// Pieces of the observability code on their own: access log format compilation and rendering
// (typed JSON values, :N truncation, X?Y alternates, unknown commands refused), trace context
// extraction (B3 multi and single header, W3C, invalid ones), /config_dump key normalisation,
// redaction and FieldMask, and Istio duration strings.
import t from 'tap';
import { AccessLogger, compileText, FormatError, type LogSink } from '../../../src/observability/access-log';
import { extractContext } from '../../../src/observability/tracing';
import { applyMask, normalize } from '../../../src/admin/config-dump';
import { parseDurationMs, lifecycleFromEnv, concurrencyFromEnv } from '../../../src/server/lifecycle';
import { HeaderMap } from '../../../src/http/headers';
import type { ActiveStream } from '../../../src/http/stream';

function stream(o: Record<string, unknown> = {}): ActiveStream {
  return {
    headers: new HeaderMap([':method', 'POST', ':path', '/a/very/long/path', 'x-envoy-original-path', '/orig', 'user-agent', 'ua']),
    responseHeaders: new HeaderMap(['x-envoy-upstream-service-time', '7']),
    responseCode: 201,
    responseFlags: '',
    responseCodeDetails: 'via_upstream',
    bytesReceived: 3,
    bytesSent: 9,
    startTime: Date.UTC(2026, 0, 2, 3, 4, 5, 678),
    protocol: 'HTTP/1.1',
    remoteAddress: '10.1.1.1',
    remotePort: 5555,
    localAddress: '10.2.2.2',
    localPort: 80,
    upstreamAddress: '10.3.3.3',
    upstreamPort: 8080,
    cluster: { name: 'backend' },
    route: { config: { name: 'r1' } },
    attemptCount: 2,
    connection: { sni: 'api.example.com' },
    grpc: false,
    ...o,
  } as unknown as ActiveStream;
}

t.test('text formats', async (t) => {
  const lines: string[] = [];
  const sink: LogSink = { write: (l) => void lines.push(l) };
  new AccessLogger({ name: 'x', path: '-', textFormat: '%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(:PATH):6% %RESP(X-MISSING)% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% %UPSTREAM_CLUSTER% %ROUTE_NAME% %REQUESTED_SERVER_NAME% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %START_TIME(%Y/%m/%d %H:%M:%E3S)%\n' }, '', sink).complete(stream());
  t.same(lines, ['/orig /a/ver - 201 - 10.3.3.3:8080 backend r1 api.example.com 2 2026/01/02 03:04:05.678\n']);
  t.throws(() => compileText('%NOPE%'), /unknown access log command %NOPE%/);
  try {
    compileText('%NOPE%');
  } catch (e) {
    t.ok(e instanceof FormatError);
  }
  t.throws(() => compileText('%REQ%'), /needs an argument/);
  t.same(compileText('plain %% text'), ['plain %% text'], 'text without commands stays one constant part');
});

t.test('json format keeps types', async (t) => {
  const lines: string[] = [];
  new AccessLogger({ name: 'j', path: '-', jsonFormat: { code: '%RESPONSE_CODE%', sent: '%BYTES_SENT%', ua: '%REQ(USER-AGENT)%', none: '%RESP(NOPE)%', mixed: 'c=%RESPONSE_CODE%', nested: { d: '%DOWNSTREAM_REMOTE_ADDRESS%' } } }, '', { write: (l) => void lines.push(l) }).complete(stream());
  t.same(JSON.parse(lines[0]), { code: 201, sent: 9, ua: 'ua', none: null, mixed: 'c=201', nested: { d: '10.1.1.1:5555' } });
});

t.test('filters', async (t) => {
  const lines: string[] = [];
  const log = new AccessLogger(
    { name: 'f', path: '-', textFormat: '%RESPONSE_CODE%\n', filter: { kind: 'and', filters: [{ kind: 'status_code', op: 'GE', value: 400 }, { kind: 'response_flag', flags: ['UH', 'UF'] }] } },
    '',
    { write: (l) => void lines.push(l) },
  );
  log.complete(stream({ responseCode: 503, responseFlags: 'UF' }));
  log.complete(stream({ responseCode: 503, responseFlags: 'UT' }));
  log.complete(stream({ responseCode: 200, responseFlags: 'UF' }));
  t.same(lines, ['503\n']);
});

t.test('grpc_status and runtime filters', async (t) => {
  const lines: string[] = [];
  const sink = { write: (l: string) => void lines.push(l) };
  const unavailable = new AccessLogger({ name: 'g', path: '-', textFormat: '%RESPONSE_CODE%\n', filter: { kind: 'grpc_status', statuses: [14], exclude: false } }, '', sink);
  unavailable.complete(stream({ grpc: true, responseCode: 200, responseTrailers: new HeaderMap(['grpc-status', '14']) }));
  unavailable.complete(stream({ grpc: true, responseCode: 200, responseTrailers: new HeaderMap(['grpc-status', '0']) }));
  unavailable.complete(stream({ responseCode: 503 }));
  t.same(lines, ['200\n', '503\n'], 'grpc-status 14, and HTTP 503 mapped to UNAVAILABLE');
  lines.length = 0;
  const never = new AccessLogger({ name: 'r', path: '-', textFormat: 'x\n', filter: { kind: 'runtime', percent: 0 } }, '', sink);
  const always = new AccessLogger({ name: 'r', path: '-', textFormat: 'y\n', filter: { kind: 'runtime', percent: 100 } }, '', sink);
  for (let i = 0; i < 20; i++) {
    never.complete(stream());
    always.complete(stream());
  }
  t.equal(lines.filter((l) => l === 'x\n').length, 0);
  t.equal(lines.filter((l) => l === 'y\n').length, 20);
});

t.test('trace context extraction', async (t) => {
  t.same(extractContext(new HeaderMap(['x-b3-traceid', '80f198ee56343ba864fe8b2a57d3eff7', 'x-b3-spanid', 'e457b5a2e4d86bd1', 'x-b3-sampled', '0'])), { traceId: '80f198ee56343ba864fe8b2a57d3eff7', spanId: 'e457b5a2e4d86bd1', sampled: false });
  t.same(extractContext(new HeaderMap(['b3', '80f198ee56343ba8-e457b5a2e4d86bd1-1'])), { traceId: '80f198ee56343ba8', spanId: 'e457b5a2e4d86bd1', sampled: true });
  t.same(extractContext(new HeaderMap(['traceparent', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00'])), { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', sampled: false });
  t.equal(extractContext(new HeaderMap(['traceparent', '00-00000000000000000000000000000000-00f067aa0ba902b7-01'])), undefined, 'all-zero trace id');
  t.equal(extractContext(new HeaderMap(['x-b3-traceid', 'xyz', 'x-b3-spanid', 'e457b5a2e4d86bd1'])), undefined, 'not hex');
  t.equal(extractContext(new HeaderMap(['b3', 'garbage'])), undefined);
  t.equal(extractContext(new HeaderMap([])), undefined);
});

t.test('config dump normalisation', async (t) => {
  const raw = {
    name: 'l',
    statPrefix: 'x',
    metadata: { filterMetadata: { istio: { someKey: 1 } } },
    typedPerFilterConfig: { 'envoy.filters.http.fault': { '@type': 't', abortPercent: 1 } },
    node: { metadata: { ISTIO_VERSION: '1.2', camelKey: 1 } },
    tls: { private_key: { inline_string: 'SECRET' }, certificate_chain: { inline_string: 'CERT' } },
    typed_config: { '@type': 'type.googleapis.com/xds.type.v3.TypedStruct', type_url: 'u', value: { someField: 1 } },
  };
  t.same(normalize(raw), {
    name: 'l',
    stat_prefix: 'x',
    metadata: { filter_metadata: { istio: { someKey: 1 } } },
    typed_per_filter_config: { 'envoy.filters.http.fault': { '@type': 't', abort_percent: 1 } },
    node: { metadata: { ISTIO_VERSION: '1.2', camelKey: 1 } },
    tls: { private_key: { inline_string: '[redacted]' }, certificate_chain: { inline_string: 'CERT' } },
    typed_config: { '@type': 'type.googleapis.com/xds.type.v3.TypedStruct', type_url: 'u', value: { someField: 1 } },
  });
  t.same(applyMask({ '@type': 'T', a: [{ b: 1, c: 2 }, { b: 3 }], d: 4 }, ['a.b']), { '@type': 'T', a: [{ b: 1 }, { b: 3 }] });
});

t.test('durations and environment', async (t) => {
  t.equal(parseDurationMs('5s'), 5000);
  t.equal(parseDurationMs('1m30s'), 90_000);
  t.equal(parseDurationMs('250ms'), 250);
  t.equal(parseDurationMs('7'), 7000, 'plain seconds');
  t.equal(parseDurationMs('soon'), undefined);
  t.same(lifecycleFromEnv({ EXIT_ON_ZERO_ACTIVE_CONNECTIONS: 'true', MINIMUM_DRAIN_DURATION: '2s', TERMINATION_DRAIN_DURATION_SECONDS: '30' }, undefined), { drainMs: 30_000, exitOnZeroActive: true, minDrainMs: 2000 });
  t.same(lifecycleFromEnv({}, 1000), { drainMs: 1000, exitOnZeroActive: false, minDrainMs: 5000 });
  t.equal(concurrencyFromEnv({ ISTIO_CPU_LIMIT: '1.5' }), 2);
  t.equal(concurrencyFromEnv({}), undefined);
});
