// The container image without a Docker engine: the Dockerfile is parsed (stages, final base,
// user, no build tools in the final stage, ports, entrypoint), the entrypoint is followed through
// its symlink to the compiled CLI and from there to the TypeScript source tsc builds it from, and
// the arguments Istio's injector gives the istio-proxy and istio-init containers are run through
// that CLI: istio-iptables prints the expected rules (dry run), `proxy sidecar` reaches the agent
// (which stops at the missing mesh root certificate, not at argument parsing), `pilot-agent wait`
// reaches the readiness poll.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { main } from '../../src/cli/main';

const ROOT = path.join(__dirname, '..', '..');
const dockerfile = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');

interface Instr {
  readonly op: string;
  readonly args: string;
}

/** Dockerfile instructions with line continuations joined and comments dropped. */
function parse(text: string): Instr[][] {
  const joined = text.replace(/\\\n/g, ' ');
  const stages: Instr[][] = [];
  for (const raw of joined.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\S+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const op = m[1].toUpperCase();
    if (op === 'FROM') stages.push([]);
    stages[stages.length - 1].push({ op, args: m[2] });
  }
  return stages;
}

async function capture(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const ow = process.stdout.write.bind(process.stdout);
  const ew = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((c: string | Uint8Array) => ((out += String(c)), true)) as typeof process.stdout.write;
  process.stderr.write = ((c: string | Uint8Array) => ((err += String(c)), true)) as typeof process.stderr.write;
  try {
    const code = await main(argv);
    return { code, out, err };
  } finally {
    process.stdout.write = ow;
    process.stderr.write = ew;
  }
}

const stages = parse(dockerfile);
const final = stages[stages.length - 1];
const one = (op: string): Instr[] => final.filter((i) => i.op === op);

t.test('multi-stage, Node 20, non-root 1337, no build tools in the final stage', async (t) => {
  t.ok(stages.length >= 2, 'a build stage and a runtime stage');
  t.match(final[0].args, /^node:20[-.\w]*$/, 'Node 20 base');
  t.same(one('USER').map((i) => i.args), ['1337:1337']);
  const installs = one('RUN').map((i) => i.args).join('\n');
  for (const tool of ['g++', 'gcc', 'make', 'python3', 'build-essential', 'clang']) t.notMatch(installs, new RegExp(`(^|\\s)${tool.replace('+', '\\+')}(\\s|$)`), `no ${tool} in the final stage`);
  t.match(installs, /\biptables\b/, 'iptables for istio-init');
  t.ok(final.some((i) => i.op === 'COPY' && i.args.startsWith('--from=build /src/dist ')), 'the compiled proxy comes from the build stage');
  const exposed = one('EXPOSE').flatMap((i) => i.args.split(/\s+/)).map(Number);
  for (const p of [15001, 15006, 15008, 15020, 15021, 15090]) t.ok(exposed.includes(p), `port ${p} exposed`);
  t.notOk(exposed.includes(15000), 'admin is not exposed (loopback only)');
});

t.test('the entrypoint resolves to the CLI built from src/cli/main.ts', async (t) => {
  const entry = JSON.parse(one('ENTRYPOINT')[0].args) as string[];
  t.same(entry, ['/usr/local/bin/keel']);
  const links = new Map<string, string>();
  for (const r of one('RUN')) for (const m of r.args.matchAll(/ln -s (\S+) (\S+)/g)) links.set(m[2], m[1]);
  const target = links.get(entry[0]);
  t.equal(target, '/usr/local/lib/keel/dist/src/cli/main.js');
  t.equal(links.get('/usr/local/bin/pilot-agent'), target, 'pilot-agent (used by the postStart `wait` hook) is keel too');
  const workdir = one('WORKDIR')[0].args;
  t.equal(workdir, '/usr/local/lib/keel');
  const inRepo = path.relative(workdir, target!); // dist/src/cli/main.js
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> };
  t.equal(pkg.bin.keel, inRepo, 'package.json bin names the same file');
  const tsconfig = JSON.parse(fs.readFileSync(path.join(ROOT, 'tsconfig.json'), 'utf8')) as { compilerOptions: { outDir: string; rootDir: string } };
  const source = path.join(ROOT, tsconfig.compilerOptions.rootDir, path.relative(tsconfig.compilerOptions.outDir, inRepo)).replace(/\.js$/, '.ts');
  t.equal(path.relative(ROOT, source), path.join('src', 'cli', 'main.ts'));
  t.match(fs.readFileSync(source, 'utf8'), /^#!\/usr\/bin\/env node\n/, 'the CLI has a node shebang (tsc keeps it), so the symlink is executable');
  t.match(one('RUN').map((i) => i.args).join('\n'), /chmod \+x dist\/src\/cli\/main\.js/);
});

t.test("istio-init's arguments run the iptables setup", async (t) => {
  // the injector's istio-init args, plus -n (dry run) so nothing here is changed
  const args = ['istio-iptables', '-p', '15001', '-z', '15006', '-u', '1337', '-m', 'REDIRECT', '-i', '*', '-x', '', '-b', '*', '-d', '15090,15021,15020', '--log_output_level=default:info', '-n'];
  const r = await capture(args);
  t.equal(r.code, 0, r.err);
  t.match(r.out, '-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001');
  t.match(r.out, '-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006');
  t.match(r.out, '-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN');
  t.match(r.out, '-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN');
});

t.test("istio-proxy's arguments reach the agent", async (t) => {
  const args = ['proxy', 'sidecar', '--domain', 'default.svc.cluster.local', '--proxyLogLevel=warning', '--proxyComponentLogLevel=misc:error', '--log_output_level=default:info'];
  const r = await capture(args);
  t.equal(r.code, 1, 'without mesh certificates the agent stops');
  t.match(r.err, /^keel proxy: /m, 'the failure is the agent’s, after parsing the arguments');
  t.notMatch(r.err, /usage|unexpected argument|unknown flag/i, 'the injector’s flags are accepted');
});

t.test('`pilot-agent wait` polls readiness', async (t) => {
  const r = await capture(['wait', '--timeoutSeconds', '0', '--periodMillis', '10', '--url', 'http://127.0.0.1:9/healthz/ready']);
  t.equal(r.code, 1);
  t.match(r.err, /keel wait: not ready after 0s/);
});
