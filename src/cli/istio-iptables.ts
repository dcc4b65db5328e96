// `keel istio-iptables [flags]`: the init-container command of an Istio sidecar pod (Istio's
// istio-iptables command line). Parses flags + environment, builds the rules (src/iptables/rules),
// then prints them (--dry-run), removes them (--cleanup-only) or installs them, and optionally checks
// that redirection works (--run-validation). Wiring only.

import * as fs from 'node:fs';
import * as os from 'node:os';
import { UsageError } from './args';
import { completeConfig, parseIstioIptablesArgs, usage, type HostInfo } from '../iptables/flags';
import { buildRules, IptablesConfigError, renderRestore } from '../iptables/rules';
import { apply, ApplyError, cleanup, families, spawnRunner, type Runner } from '../iptables/apply';
import { validate, ValidationError, VALIDATION_ERROR_CODE, VALIDATION_FAILED_MESSAGE } from '../iptables/validate';

export const systemHost: HostInfo = {
  lookupUid(user) {
    try {
      for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
        const f = line.split(':');
        if (f[0] === user && f.length > 2) return f[2];
      }
    } catch {
      // no passwd: default uid
    }
    return undefined;
  },
  addresses() {
    return Object.values(os.networkInterfaces()).flatMap((l) => l ?? []);
  },
  resolvConf() {
    try {
      return fs.readFileSync('/etc/resolv.conf', 'utf8');
    } catch {
      return undefined;
    }
  },
};

export interface IstioIptablesIo {
  env: NodeJS.ProcessEnv;
  host: HostInfo;
  run: Runner;
  out: (s: string) => void;
  err: (s: string) => void;
}

const defaultIo = (): IstioIptablesIo => ({
  env: process.env,
  host: systemHost,
  run: spawnRunner,
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
});

/** Runs the command; returns the exit code. Throws UsageError for bad flags (main prints usage). */
export async function runIstioIptables(argv: string[], io: IstioIptablesIo = defaultIo()): Promise<number> {
  const parsed = parseIstioIptablesArgs(argv, io.env);
  if (parsed.help) {
    io.out(usage() + '\n');
    return 0;
  }
  const { config: cfg, warnings } = completeConfig(parsed, io.env, io.host);
  const warn = (m: string): void => io.err(`keel istio-iptables: warning: ${m}\n`);
  for (const w of warnings) warn(w);

  let rules;
  try {
    rules = buildRules(cfg);
  } catch (e) {
    if (e instanceof IptablesConfigError) throw new UsageError(e.message);
    throw e;
  }
  for (const w of rules.warnings) warn(w);

  if (cfg.dryRun) {
    io.err('keel istio-iptables: dry run: printing the rules, nothing is changed\n');
    for (const f of families(cfg)) {
      const text = renderRestore(f.name === 'IPv4' ? rules.v4 : rules.v6);
      if (cfg.cleanupOnly) io.out(`# dry run: would remove all ISTIO_* chains and the rules jumping to them (${f.name})\n`);
      else if (text !== '') io.out(`# dry run: ${f.restore} --noflush <<EOF\n${text}`);
    }
    for (const c of cfg.cleanupOnly ? rules.routes.remove : rules.routes.add) io.out(`# dry run: ip ${c.join(' ')}\n`);
    if (cfg.runValidation) io.out('# dry run: validation skipped\n');
    return 0;
  }

  const log = { info: (m: string) => io.err(`keel istio-iptables: ${m}\n`) };
  try {
    if (cfg.cleanupOnly) {
      cleanup(cfg, rules, io.run, log);
      io.err('keel istio-iptables: cleanup done\n');
      return 0;
    }
    if (!cfg.skipRuleApply) apply(cfg, rules, io.run, log);
  } catch (e) {
    if (e instanceof ApplyError) {
      io.err(`keel istio-iptables: ${e.message}\n`);
      return 1;
    }
    throw e;
  }

  if (cfg.runValidation) {
    try {
      const r = await validate(cfg);
      io.err(`keel istio-iptables: validation passed (probe redirected to port ${r.arrivedAt}${r.originalPort !== undefined ? `, original port ${r.originalPort}` : ''})\n`);
    } catch (e) {
      if (e instanceof ValidationError) {
        io.err(`keel istio-iptables: ${e.message}\nkeel istio-iptables: ${VALIDATION_FAILED_MESSAGE}\n`);
        return VALIDATION_ERROR_CODE;
      }
      throw e;
    }
  }
  return 0;
}
