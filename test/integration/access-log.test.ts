// HCM access logs on real traffic: Istio's default text format, json_format with typed values,
// Envoy's default format when none is given, status_code and duration filters, and config errors
// for unknown commands. Log files are read back (polled with a deadline: writes are asynchronous).
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as http from 'node:http';
import { startKeel, startUpstream } from '../helpers/keel';
import { parseBootstrapText } from '../../src/config/bootstrap';
import { ConfigError } from '../../src/config/errors';
import { ISTIO_DEFAULT_FORMAT } from '../../src/config/observability';

function get(port: number, p: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: p, headers, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      })
      .on('error', reject);
  });
}

async function lines(file: string, n: number): Promise<string[]> {
  const end = Date.now() + 3000;
  for (;;) {
    const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    const ls = text.split('\n').filter((l) => l !== '');
    if (ls.length >= n || Date.now() > end) return ls;
    await new Promise((r) => setTimeout(r, 20));
  }
}

function yaml(appPort: number, accessLogs: string): string {
  return `
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: l
          access_log:
${accessLogs}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - name: to-app
                match: { prefix: "/" }
                route: { cluster: app }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${appPort} } } }
`;
}

t.test('file access logs in text and JSON, with filters', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-al-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const app = await startUpstream('app', (req, res) => {
    res.writeHead(req.url === '/fail' ? 503 : 200, { 'content-type': 'text/plain' });
    res.end('0123456789');
  });
  t.teardown(() => app.close());
  const istioLog = path.join(dir, 'istio.log');
  const jsonLog = path.join(dir, 'json.log');
  const errLog = path.join(dir, 'errors.log');
  const defLog = path.join(dir, 'default.log');
  const keel = await startKeel(
    yaml(
      app.port,
      `
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: ${istioLog}
              log_format:
                text_format_source:
                  inline_string: ${JSON.stringify(ISTIO_DEFAULT_FORMAT)}
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: ${jsonLog}
              log_format:
                json_format:
                  code: "%RESPONSE_CODE%"
                  method: "%REQ(:METHOD)%"
                  path: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"
                  bytes: "%BYTES_SENT%"
                  missing: "%REQ(X-NOT-THERE)%"
                  upstream: { cluster: "%UPSTREAM_CLUSTER%", host: "%UPSTREAM_HOST%" }
                  line: "%REQ(:METHOD)% %RESPONSE_CODE%"
          - name: errors-only
            filter:
              status_code_filter: { comparison: { op: GE, value: { default_value: 500, runtime_key: access_log.min_status } } }
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: ${errLog}
              log_format: { text_format: "%RESPONSE_CODE% %REQ(:PATH)% %RESPONSE_FLAGS%\\n" }
          - name: slow-or-default
            filter:
              or_filter:
                filters:
                - duration_filter: { comparison: { op: GE, value: { default_value: 0 } } }
                - status_code_filter: { comparison: { op: EQ, value: { default_value: 999 } } }
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: ${defLog}`,
    ),
  );
  t.teardown(() => keel.stop());

  t.equal(await get(keel.port, '/ok?x=1', { 'user-agent': 'tester/1', 'x-request-id': 'rid-1' }), 200);
  t.equal(await get(keel.port, '/fail'), 503);

  const istio = await lines(istioLog, 2);
  t.equal(istio.length, 2);
  const m = /^\[(\S+)\] "GET \/ok\?x=1 HTTP\/1\.1" 200 - via_upstream - "-" 0 10 (\d+) (\d+|-) "-" "tester\/1" "rid-1" "127\.0\.0\.1:\d+" "127\.0\.0\.1:(\d+)" app - 127\.0\.0\.1:\d+ 127\.0\.0\.1:\d+ - to-app$/.exec(istio[0]);
  t.ok(m, `Istio's format: ${istio[0]}`);
  if (m) {
    t.ok(!Number.isNaN(Date.parse(m[1])), 'START_TIME is a timestamp');
    t.equal(Number(m[4]), app.port, 'UPSTREAM_HOST');
  }
  t.match(istio[1], /"GET \/fail HTTP\/1\.1" 503 - via_upstream /);

  const json = (await lines(jsonLog, 2)).map((l) => JSON.parse(l));
  t.same(json[0], { code: 200, method: 'GET', path: '/ok?x=1', bytes: 10, missing: null, upstream: { cluster: 'app', host: `127.0.0.1:${app.port}` }, line: 'GET 200' });
  t.equal(json[1].code, 503);

  const errs = await lines(errLog, 1);
  t.same(errs, ['503 /fail -'], 'status_code_filter GE 500 logs only the failure');

  const def = await lines(defLog, 2);
  t.match(def[0], /^\[\S+\] "GET \/ok\?x=1 HTTP\/1\.1" 200 - 0 10 \d+ \d+ "-" "tester\/1" "rid-1" "127\.0\.0\.1:\d+" "127\.0\.0\.1:\d+"$/, "Envoy's default format");
});

t.test('a local reply is logged with its flags', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-al-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const log = path.join(dir, 'a.log');
  // the cluster's only host refuses connections
  const keel = await startKeel(
    yaml(
      1,
      `
          - name: f
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: ${log}
              log_format: { text_format: "%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER%\\n" }`,
    ),
  );
  t.teardown(() => keel.stop());
  t.equal(await get(keel.port, '/'), 503);
  t.same(await lines(log, 1), ['503 UF app']);
});

t.test('bad access log config is refused with its path', async (t) => {
  const bad = yaml(
    1,
    `
          - name: f
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: /tmp/x.log
              log_format: { text_format: "%NOT_A_COMMAND%" }`,
  );
  t.throws(() => parseBootstrapText(bad, 'test'), ConfigError);
  try {
    parseBootstrapText(bad, 'test');
  } catch (e) {
    t.match((e as ConfigError).format(), /access_log\[0\].*unknown access log command %NOT_A_COMMAND%/);
  }
  const other = yaml(
    1,
    `
          - name: f
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig
              common_config: { log_name: x }`,
  );
  const { warnings } = parseBootstrapText(other, 'test');
  t.match(warnings.join('\n'), /access logger .*OpenTelemetryAccessLogConfig is not supported/);
});
