// Installs / removes a RuleSet on this host (this network namespace) with iptables-restore.
//
// Install = cleanup, then one `iptables-restore --noflush` per family (atomic per table), then the
// `ip` route/address commands. Cleanup removes what any earlier run left, whatever its flags:
// every built-in-chain rule that jumps to an ISTIO_* chain and every ISTIO_* chain (read back with
// iptables-save and removed in one iptables-restore transaction), plus this config's own built-in
// chain rules that do not jump (exclude-interface RETURNs, TPROXY CONNMARK/MARK rules), deleted with
// `iptables -D` until none is left, plus the TPROXY policy routing. So running twice gives the same
// rules, and --cleanup-only leaves none of them.

import { spawnSync } from 'node:child_process';
import type { IptablesConfig } from './config';
import { BUILTIN_CHAINS, renderRestore, undoBuiltinRules, type RuleSet, type Table } from './rules';

export class ApplyError extends Error {}

export interface RunResult {
  readonly status: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a program; throws ApplyError when it cannot be started (ENOENT: not installed). */
export type Runner = (cmd: string, args: readonly string[], input?: string) => RunResult;

export const spawnRunner: Runner = (cmd, args, input) => {
  const r = spawnSync(cmd, [...args], { input, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ApplyError(`${cmd} not found in PATH: install iptables and iproute2 (e.g. apt-get install -y iptables iproute2)`);
    throw new ApplyError(`${cmd}: ${r.error.message}`);
  }
  return { status: r.status ?? 1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
};

interface Family {
  readonly name: 'IPv4' | 'IPv6';
  readonly iptables: string;
  readonly save: string;
  readonly restore: string;
}

export function families(cfg: IptablesConfig): Family[] {
  const base = cfg.iptablesBinary;
  const v6 = base.replace(/^iptables/, 'ip6tables');
  const out: Family[] = [{ name: 'IPv4', iptables: base, save: `${base}-save`, restore: `${base}-restore` }];
  if (cfg.enableIpv6) out.push({ name: 'IPv6', iptables: v6, save: `${v6}-save`, restore: `${v6}-restore` });
  return out;
}

const TABLES: readonly Table[] = ['filter', 'mangle', 'nat', 'raw'];

function must(r: RunResult, what: string): RunResult {
  if (r.status !== 0) throw new ApplyError(`${what} failed (exit ${r.status}): ${r.stderr.trim() || r.stdout.trim() || 'no output'}`);
  return r;
}

/** Splits an iptables-save rule line into arguments (it quotes with "..." and escapes with \). */
export function splitSaveLine(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inArg = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '\\' && i + 1 < line.length) cur += line[++i];
      else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') {
      quoted = true;
      inArg = true;
    } else if (c === ' ' || c === '\t') {
      if (inArg) out.push(cur);
      cur = '';
      inArg = false;
    } else {
      cur += c;
      inArg = true;
    }
  }
  if (inArg) out.push(cur);
  return out;
}

/**
 * iptables-restore input removing every ISTIO_* chain of one table and the built-in-chain rules
 * jumping to them, from that table's iptables-save output. '' when there is nothing to remove.
 */
export function cleanupRestoreFor(table: string, saved: string): string {
  const chains: string[] = [];
  const deletes: string[] = [];
  for (const line of saved.split('\n')) {
    const chainDecl = /^:(ISTIO_\S+)\s/.exec(line);
    if (chainDecl) {
      chains.push(chainDecl[1]);
      continue;
    }
    if (!line.startsWith('-A ')) continue;
    const args = splitSaveLine(line);
    const chain = args[1];
    if (!BUILTIN_CHAINS.has(chain)) continue;
    const j = args.lastIndexOf('-j');
    const g = args.lastIndexOf('-g');
    const target = j >= 0 ? args[j + 1] : g >= 0 ? args[g + 1] : undefined;
    if (target !== undefined && target.startsWith('ISTIO_')) deletes.push('-D' + line.slice(2));
  }
  if (chains.length === 0 && deletes.length === 0) return '';
  const lines = [`*${table}`, ...deletes, ...chains.map((c) => `-F ${c}`), ...chains.map((c) => `-X ${c}`), 'COMMIT'];
  return lines.join('\n') + '\n';
}

export interface ApplyLog {
  info(msg: string): void;
}

function cleanupFamily(f: Family, rules: RuleSet['v4'], run: Runner, log: ApplyLog): void {
  for (const table of TABLES) {
    const saved = run(f.save, ['-t', table]);
    // A table the kernel does not have (no raw module) cannot hold ISTIO chains.
    if (saved.status !== 0) continue;
    const input = cleanupRestoreFor(table, saved.stdout);
    if (input === '') continue;
    log.info(`${f.name}: removing existing ISTIO_* rules from table ${table}`);
    must(run(f.restore, ['--noflush'], input), `${f.restore} --noflush (cleanup of ${table})`);
  }
  // This config's non-jump rules in built-in chains (the jumps to ISTIO_* went above).
  for (const args of undoBuiltinRules(rules)) {
    const target = args[args.length - 1];
    if (target.startsWith('ISTIO_')) continue;
    for (let n = 0; n < 16 && run(f.iptables, args).status === 0; n++);
  }
}

function runRoutes(cmds: readonly string[][], run: Runner, ignoreErrors: boolean): void {
  for (const c of cmds) {
    const r = run('ip', c);
    if (r.status !== 0 && !ignoreErrors && !/File exists/i.test(r.stderr)) {
      throw new ApplyError(`ip ${c.join(' ')} failed (exit ${r.status}): ${r.stderr.trim()}`);
    }
  }
}

/** Removes everything keel istio-iptables (any flags) installed, and this config's routes. */
export function cleanup(cfg: IptablesConfig, rules: RuleSet, run: Runner = spawnRunner, log: ApplyLog = { info: () => undefined }): void {
  for (const f of families(cfg)) cleanupFamily(f, f.name === 'IPv4' ? rules.v4 : rules.v6, run, log);
  runRoutes(rules.routes.remove, run, true);
}

/** Cleans up, then installs `rules` atomically per family, then the routes. */
export function apply(cfg: IptablesConfig, rules: RuleSet, run: Runner = spawnRunner, log: ApplyLog = { info: () => undefined }): void {
  cleanup(cfg, rules, run, log);
  for (const f of families(cfg)) {
    const input = renderRestore(f.name === 'IPv4' ? rules.v4 : rules.v6);
    if (input === '') continue;
    log.info(`${f.name}: ${f.restore} --noflush with:\n${input.trimEnd()}`);
    must(run(f.restore, ['--noflush'], input), `${f.restore} --noflush`);
  }
  runRoutes(rules.routes.add, run, false);
}
