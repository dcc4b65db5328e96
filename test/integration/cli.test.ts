// The keel command as a user runs it: config errors and their exit code, --mode validate, and a
// graceful SIGTERM (in-flight requests finish, new connections are refused, the process exits).
import t from 'tap';
import { execFile, spawn, ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { request } from 'undici';
import { promisify } from 'node:util';
import { bootstrap, cluster, mixedListenerYaml, selfSignedCert, startUpstream } from '../helpers/keel';

const MAIN = path.join(__dirname, '../../src/cli/main.ts');

function keel(args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
  // execArgv carries tap's TypeScript loader, so the source runs as is.
  return spawn(process.execPath, [...process.execArgv, MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
}

/** Starts keel; resolves with the port its first listener reports and a way to await later log lines. */
function startProcess(args: string[], env?: NodeJS.ProcessEnv): Promise<{ p: ChildProcess; port: number; waitFor(text: string): Promise<void> }> {
  const p = keel(args, env);
  let err = '';
  const waiters: { text: string; resolve: () => void }[] = [];
  const waitFor = (text: string): Promise<void> =>
    err.includes(text) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ text, resolve }));
  return new Promise((resolve, reject) => {
    p.stderr!.on('data', (d) => {
      err += d;
      for (const w of waiters.splice(0)) {
        if (err.includes(w.text)) w.resolve();
        else waiters.push(w);
      }
      const m = /listener '[^']+' serving on port (\d+)/.exec(err);
      if (m) resolve({ p, port: Number(m[1]), waitFor });
    });
    p.on('close', () => reject(new Error(`keel exited: ${err}`)));
  });
}

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = keel(args);
    let stdout = '';
    let stderr = '';
    p.stdout!.on('data', (d) => (stdout += d));
    p.stderr!.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const dir = mkdtempSync(path.join(tmpdir(), 'keel-cli-'));

t.test('a bad config is refused with every problem and its path, exit 1', async (t) => {
  const file = path.join(dir, 'bad.yaml');
  writeFileSync(
    file,
    `static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 70000 } }
    filter_chains: [{ filters: [{ name: envoy.filters.network.nope, typed_config: { "@type": type.googleapis.com/nope.Nope } }] }]
  clusters:
  - { name: c, type: STATIC, lb_policy: SIDEWAYS }
`,
  );
  const r = await run(['-c', file]);
  t.equal(r.code, 1);
  const lines = r.stderr.trim().split('\n');
  t.ok(lines.every((l) => l.startsWith('keel: config error: ')), r.stderr);
  t.match(r.stderr, /static_resources\.listeners\[0\]\.address\.socket_address\.port_value: 70000 is out of range/);
  t.match(r.stderr, /static_resources\.listeners\[0\]\.filter_chains\[0\]\.filters\[0\]: unknown network filter 'envoy\.filters\.network\.nope'/);
  t.match(r.stderr, /static_resources\.clusters\[0\]\.lb_policy: unknown value 'SIDEWAYS'/);
});

t.test('--mode validate checks without serving', async (t) => {
  const file = path.join(dir, 'good.yaml');
  writeFileSync(file, bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: c } }] }`, cluster('c', 1)));
  const r = await run(['--mode', 'validate', '-c', file]);
  t.equal(r.code, 0);
  t.match(r.stdout, /OK/);
});

t.test('SIGTERM lets the in-flight request finish, refuses new ones, and exits 0', async (t) => {
  let release: () => void = () => undefined;
  const released = new Promise<void>((r) => (release = r));
  let arrived: () => void = () => undefined;
  const arrivedP = new Promise<void>((r) => (arrived = r));
  const up = await startUpstream('slow', (_req, res) => {
    arrived();
    void released.then(() => res.end('finished'));
  });
  t.teardown(() => up.close());
  const file = path.join(dir, 'drain.yaml');
  writeFileSync(file, bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: slow } }] }`, cluster('slow', up.port)));
  const p = keel(['-c', file, '--drain-time-s', '10']);
  t.teardown(() => p.kill('SIGKILL'));
  const port = await new Promise<number>((resolve, reject) => {
    let err = '';
    p.stderr!.on('data', (d) => {
      err += d;
      const m = /listener 'test' serving on port (\d+)/.exec(err);
      if (m) resolve(Number(m[1]));
    });
    p.on('close', () => reject(new Error(`keel exited: ${err}`)));
  });
  const exited = new Promise<number | null>((r) => p.on('close', (code) => r(code)));
  const inflight = request(`http://127.0.0.1:${port}/slow`).then(async (r) => ({ status: r.statusCode, body: await r.body.text(), connection: r.headers.connection }));
  await arrivedP;
  p.kill('SIGTERM');
  // The listener closes: new connections are refused once it has stopped accepting.
  await new Promise<void>((resolve) => {
    const tryConnect = (): void => {
      request(`http://127.0.0.1:${port}/new`, { reset: true })
        .then(async (r) => {
          await r.body.text();
          setImmediate(tryConnect);
        })
        .catch(() => resolve());
    };
    tryConnect();
  });
  release();
  const res = await inflight;
  t.equal(res.status, 200);
  t.equal(res.body, 'finished');
  t.equal(res.connection, 'close', 'the draining connection is closed after the response');
  t.equal(await exited, 0);
});

t.test('without the native addon (KEEL_NATIVE=0) sniffing reads and replays: h1, h2c and TLS h2 on one port', async (t) => {
  const up = await startUpstream('u');
  t.teardown(() => up.close());
  const { crt, key } = await selfSignedCert();
  const file = path.join(dir, 'mixed.yaml');
  writeFileSync(file, mixedListenerYaml(up.port, crt, key));
  const { p, port } = await startProcess(['-c', file], { ...process.env, KEEL_NATIVE: '0' });
  t.teardown(() => p.kill('SIGKILL'));
  const curl = async (...args: string[]) => (await promisify(execFile)('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', ...args])).stdout;
  t.equal(await curl(`http://127.0.0.1:${port}/plain`), '1.1 200');
  t.equal(await curl('--http2-prior-knowledge', `http://127.0.0.1:${port}/h2c`), '2 200');
  t.equal(await curl('-k', '--http2', `https://localhost:${port}/tls`), '2 200');
  t.same(up.requests.map((r) => r.headers['x-forwarded-proto']), ['http', 'http', 'https']);
});

t.test('--concurrency 2 runs two workers sharing the listener, and stops both on SIGTERM', async (t) => {
  const upstreamPeers = new Set<number>();
  const up = await startUpstream('u', (req, res) => {
    upstreamPeers.add(req.socket.remotePort ?? 0);
    res.end('ok');
  });
  t.teardown(() => up.close());
  const file = path.join(dir, 'workers.yaml');
  writeFileSync(file, bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u } }] }`, cluster('u', up.port)));
  const { p, port, waitFor } = await startProcess(['-c', file, '--concurrency', '2']);
  t.teardown(() => p.kill('SIGKILL'));
  await waitFor('all 2 workers serving');
  const exited = new Promise<number | null>((r) => p.on('close', (code) => r(code)));
  // Each request on a new downstream connection: the primary hands connections to workers in turn,
  // and each worker reuses its one upstream connection, so the upstream sees one peer per worker.
  for (let i = 0; i < 10; i++) {
    const r = await request(`http://127.0.0.1:${port}/w${i}`, { reset: true });
    t.equal(r.statusCode, 200);
    await r.body.text();
  }
  t.equal(upstreamPeers.size, 2, 'two workers served');
  p.kill('SIGTERM');
  t.equal(await exited, 0);
});
