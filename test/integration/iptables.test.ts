// `keel istio-iptables` for real, inside a throwaway network namespace: the rules land in the
// kernel, a second run leaves the same rules, --run-validation sees a probe redirected, and
// --cleanup-only removes everything. Needs root, iproute2 (ip netns) and iptables; skipped otherwise.
import t from 'tap';
import { execFile, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { createNetns, netnsSkipReason } from '../helpers/netns';

const MAIN = path.join(__dirname, '../../src/cli/main.ts');

const why = netnsSkipReason(['ip', 'iptables', 'iptables-save', 'iptables-restore'], 'iptables iproute2');
const netns = why === undefined ? createNetns('keel-ipt') : undefined;
const skip = why ?? (netns instanceof Error ? netns.message : false);
const ns = netns !== undefined && !(netns instanceof Error) ? netns.name : '';
const removeNs = (): void => {
  if (netns !== undefined && !(netns instanceof Error)) netns.remove();
};
t.teardown(removeNs);
process.once('exit', removeNs); // also when the run is cut short

// Each run starts node with tap's TypeScript loader (several seconds).
t.setTimeout(240_000);

function keel(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', ns, process.execPath, ...process.execArgv, MAIN, 'istio-iptables', ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** iptables-save of one table in the namespace, without comments and counters. */
function save(table: string): string {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'iptables-save', '-t', table], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`iptables-save failed: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/ \[\d+:\d+\]$/, ''))
    .join('\n');
}

const istioLines = (s: string): string[] => s.split('\n').filter((l) => l.includes('ISTIO'));

t.test('install, reinstall, validate, clean up', { skip }, async (t) => {
  const flags = ['-p', '15001', '-z', '15006', '-u', '0', '-g', '0', '-m', 'REDIRECT', '-b', '*', '-d', '15090,15021', '-i', '10.0.0.0/8'];
  const first = await keel(flags);
  t.equal(first.code, 0, first.stderr);
  const nat1 = save('nat');
  for (const chain of ['ISTIO_INBOUND', 'ISTIO_REDIRECT', 'ISTIO_IN_REDIRECT', 'ISTIO_OUTPUT']) t.match(nat1, new RegExp(`^:${chain} -$`, 'm'), `chain ${chain}`);
  for (const rule of [
    '-A PREROUTING -p tcp -j ISTIO_INBOUND',
    '-A OUTPUT -j ISTIO_OUTPUT',
    '-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN',
    '-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN',
    '-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT',
    '-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006',
    '-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN',
    '-A ISTIO_OUTPUT -m owner --uid-owner 0 -j RETURN',
    '-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT',
    '-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001',
  ]) t.ok(nat1.split('\n').includes(rule), rule);
  t.equal(istioLines(nat1).filter((l) => l.startsWith('-A ISTIO_OUTPUT')).length, 9, 'ISTIO_OUTPUT has its 9 rules');

  // A second run (now also validating) replaces the rules with identical ones.
  const second = await keel([...flags, '--run-validation', '--probe-timeout', '20s']);
  t.equal(second.code, 0, second.stderr);
  t.match(second.stderr, /validation passed/);
  t.equal(save('nat'), nat1, 'same nat table after running twice');

  const clean = await keel([...flags, '--cleanup-only']);
  t.equal(clean.code, 0, clean.stderr);
  t.same(istioLines(save('nat')), [], 'no ISTIO chains or rules left');

  // Without the rules, validation fails with Istio's exit code.
  const invalid = await keel([...flags, '--skip-rule-apply', '--run-validation', '--probe-timeout', '300ms']);
  t.equal(invalid.code, 126, invalid.stderr);
  t.match(invalid.stderr, /validation timeout/);
});

t.test('TPROXY, DNS and drop-invalid: mangle and raw, then cleanup', { skip }, async (t) => {
  const flags = ['-m', 'TPROXY', '-b', '*', '--redirect-dns', '--capture-all-dns', '--drop-invalid', '-c', 'eth9'];
  const r = await keel(flags);
  t.equal(r.code, 0, r.stderr);
  const mangle = save('mangle');
  for (const chain of ['ISTIO_DIVERT', 'ISTIO_TPROXY', 'ISTIO_INBOUND', 'ISTIO_DROP']) t.match(mangle, new RegExp(`^:${chain} -$`, 'm'), `mangle chain ${chain}`);
  t.match(mangle, /^-A ISTIO_TPROXY ! -d 127\.0\.0\.1\/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0\.0\.0\.0 --tproxy-mark 0x539\/0xffffffff$/m);
  t.match(mangle, /^-A PREROUTING -i eth9 -j RETURN$/m);
  t.match(save('raw'), /^-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -j CT --zone 2$/m);
  t.match(save('nat'), /^-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053$/m);
  const rule = spawnSync('ip', ['-n', ns, '-4', 'rule', 'show'], { encoding: 'utf8' }).stdout;
  t.match(rule, /fwmark 0x539 lookup 133/);
  t.match(spawnSync('ip', ['-n', ns, '-4', 'route', 'show', 'table', '133'], { encoding: 'utf8' }).stdout, /local default dev lo/);

  const again = await keel(flags);
  t.equal(again.code, 0, again.stderr);
  t.equal(save('mangle'), mangle, 'same mangle table after running twice');
  t.equal(spawnSync('ip', ['-n', ns, '-4', 'rule', 'show'], { encoding: 'utf8' }).stdout, rule, 'no duplicate ip rule');

  const clean = await keel([...flags, '--cleanup-only']);
  t.equal(clean.code, 0, clean.stderr);
  for (const table of ['nat', 'mangle', 'raw']) t.same(istioLines(save(table)), [], `${table}: nothing ISTIO left`);
  t.notMatch(save('mangle'), /eth9|CONNMARK|0x53a/, 'the non-jump built-in chain rules are gone too');
  t.notMatch(spawnSync('ip', ['-n', ns, '-4', 'rule', 'show'], { encoding: 'utf8' }).stdout, /lookup 133/);
});
