// istio-iptables' command line (Istio 1.2x, cobra/pflag): long flags `--name value` / `--name=value`,
// short flags `-p value` / `-p=value` / `-pvalue`, booleans `--name` / `--name=false` (a boolean never
// takes the next argument), `--` ends the flags. Most flags also read an environment variable first
// (the flag name upper-cased, `-` -> `_`), and a flag on the command line wins over it.
//
// parseIstioIptablesArgs is pure (argv + env in, config out); completeConfig fills what Istio finds
// on the host (ENVOY_USER's uid, whether the pod is IPv6, /etc/resolv.conf's name servers) from a
// HostInfo the caller supplies.

import { parseGoDuration } from '../common/go-duration';
import { UsageError } from '../cli/args';
import { defaultConfig, type IptablesConfig } from './config';

type Kind = 'string' | 'bool';

interface FlagDef {
  readonly name: string;
  readonly short?: string;
  readonly kind: Kind;
  /** environment variables read as the default, in order (a later one wins) */
  readonly env: readonly string[];
  readonly set: (s: ParseState, value: string, source: string) => void;
  readonly help: string;
}

interface ParseState {
  cfg: IptablesConfig;
  uidSet: boolean;
  gidSet: boolean;
  warnings: string[];
}

/** Go's strconv.ParseBool. */
export function parseGoBool(v: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  return undefined;
}

function port(name: string, v: string, source: string): string {
  if (!/^[0-9]+$/.test(v) || Number(v) < 1 || Number(v) > 65535) throw new UsageError(`${source}: ${name} must be a port number (1-65535), not '${v}'`);
  return String(Number(v));
}

function num(name: string, v: string, source: string): string {
  if (!/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(v)) throw new UsageError(`${source}: ${name} must be a number, not '${v}'`);
  return v;
}

function envName(flag: string): string {
  return flag.toUpperCase().replace(/-/g, '_');
}

function str(name: string, short: string | undefined, help: string, set: (s: ParseState, v: string, src: string) => void, extraEnv: string[] = [], noEnv = false): FlagDef {
  return { name, short, kind: 'string', env: noEnv ? extraEnv : [envName(name), ...extraEnv], set, help };
}

function bool(name: string, short: string | undefined, help: string, set: (s: ParseState, v: boolean) => void, extraEnv: string[] = []): FlagDef {
  return {
    name,
    short,
    kind: 'bool',
    env: [envName(name), ...extraEnv],
    help,
    set: (s, v, src) => {
      const b = parseGoBool(v);
      if (b === undefined) throw new UsageError(`${src}: invalid boolean '${v}' for --${name}`);
      set(s, b);
    },
  };
}

function tolerated(name: string, kind: Kind, help: string): FlagDef {
  return { name, kind, env: [], help, set: (s) => s.warnings.push(`--${name} is accepted for compatibility and ignored`) };
}

/** Every flag Istio's istio-iptables (1.2x) defines, plus the log flags its binary accepts. */
export const FLAGS: readonly FlagDef[] = [
  // Istio binds --envoy-port without an environment variable.
  str('envoy-port', 'p', 'outbound capture port (15001)', (s, v, src) => (s.cfg.proxyPort = port('--envoy-port', v, src)), [], true),
  str('inbound-capture-port', 'z', 'inbound capture port (15006)', (s, v, src) => (s.cfg.inboundCapturePort = port('--inbound-capture-port', v, src))),
  str('inbound-tunnel-port', 'e', 'HBONE tunnel port, never captured (15008)', (s, v, src) => (s.cfg.inboundTunnelPort = port('--inbound-tunnel-port', v, src))),
  str('proxy-uid', 'u', 'uid(s) whose traffic is not captured (uid of $ENVOY_USER, else 1337)', (s, v) => {
    s.cfg.proxyUid = v;
    s.uidSet = v !== '';
  }),
  str('proxy-gid', 'g', 'gid(s) whose traffic is not captured (same as -u)', (s, v) => {
    s.cfg.proxyGid = v;
    s.gidSet = v !== '';
  }),
  str('istio-inbound-interception-mode', 'm', 'REDIRECT (default) or TPROXY', (s, v, src) => {
    if (v !== '' && v !== 'REDIRECT' && v !== 'TPROXY') throw new UsageError(`${src}: interception mode must be REDIRECT or TPROXY, not '${v}'`);
    s.cfg.inboundInterceptionMode = v === 'TPROXY' ? 'TPROXY' : 'REDIRECT';
  }),
  str('istio-inbound-ports', 'b', "inbound ports to capture: '*' for all, or a list", (s, v) => (s.cfg.inboundPortsInclude = v)),
  str('istio-local-exclude-ports', 'd', "inbound ports not captured (with -b '*')", (s, v) => (s.cfg.inboundPortsExclude = v)),
  str('istio-exclude-interfaces', 'c', 'interfaces whose traffic is never captured', (s, v) => (s.cfg.excludeInterfaces = v)),
  str('istio-service-cidr', 'i', "outbound CIDRs to capture: '*' for all, or a list", (s, v) => (s.cfg.outboundIpRangesInclude = v)),
  str('istio-service-exclude-cidr', 'x', 'outbound CIDRs not captured', (s, v) => (s.cfg.outboundIpRangesExclude = v)),
  str('istio-outbound-ports', 'q', 'outbound ports always captured', (s, v) => (s.cfg.outboundPortsInclude = v)),
  str('istio-local-outbound-ports-exclude', 'o', 'outbound ports never captured', (s, v) => (s.cfg.outboundPortsExclude = v)),
  str('kube-virt-interfaces', 'k', 'virtual interfaces whose inbound traffic is treated as outbound', (s, v) => (s.cfg.rerouteVirtualInterfaces = v)),
  str('istio-inbound-tproxy-mark', 't', 'TPROXY packet mark (1337)', (s, v, src) => (s.cfg.inboundTproxyMark = num('--istio-inbound-tproxy-mark', v, src))),
  str('istio-inbound-tproxy-route-table', 'r', 'TPROXY routing table (133)', (s, v, src) => (s.cfg.inboundTproxyRouteTable = num('--istio-inbound-tproxy-route-table', v, src))),
  bool('dry-run', 'n', 'print the rules, change nothing', (s, v) => (s.cfg.dryRun = v)),
  str('iptables-probe-port', undefined, 'original port of the validation probe (15002)', (s, v, src) => (s.cfg.iptablesProbePort = Number(port('--iptables-probe-port', v, src)))),
  str('probe-timeout', undefined, 'validation timeout (5s)', (s, v, src) => {
    const ms = parseGoDuration(v);
    if (ms === undefined) throw new UsageError(`${src}: --probe-timeout needs a duration like 5s, not '${v}'`);
    s.cfg.probeTimeoutMs = ms;
  }),
  bool('skip-rule-apply', undefined, 'do not install rules (with --run-validation: only validate)', (s, v) => (s.cfg.skipRuleApply = v)),
  bool('run-validation', undefined, 'check that redirection works', (s, v) => (s.cfg.runValidation = v)),
  bool('redirect-dns', undefined, 'capture DNS to the agent on :15053', (s, v) => (s.cfg.redirectDns = v), ['ISTIO_META_DNS_CAPTURE']),
  bool('drop-invalid', undefined, 'drop conntrack-INVALID packets', (s, v) => (s.cfg.dropInvalid = v), ['INVALID_DROP']),
  bool('dual-stack', undefined, 'IPv4 and IPv6 rules', (s, v) => (s.cfg.dualStack = v), ['ISTIO_DUAL_STACK']),
  bool('capture-all-dns', undefined, 'capture all port-53 traffic, not only to the resolv.conf servers', (s, v) => (s.cfg.captureAllDns = v)),
  bool('cleanup-only', undefined, 'remove the rules and chains, install nothing', (s, v) => (s.cfg.cleanupOnly = v)),
  bool('reconcile', undefined, 'replace existing ISTIO_* rules (keel always does)', () => undefined),
  bool('force-apply', undefined, 'apply even if the rules look present (keel always re-applies)', () => undefined),
  str('force-iptables-binary', undefined, 'iptables binary to use, e.g. iptables-legacy', (s, v) => (s.cfg.iptablesBinary = v === '' ? 'iptables' : v)),
  str('network-namespace', undefined, 'not supported: run keel inside the namespace (ip netns exec)', (s, v) => {
    if (v !== '') throw new UsageError('--network-namespace is not supported by keel; run it inside the namespace (ip netns exec / nsenter)');
  }),
  bool('cni-mode', undefined, 'accepted and ignored', (s, v) => {
    if (v) s.warnings.push('--cni-mode is accepted for compatibility and ignored');
  }),
  bool('native-nftables', undefined, 'not supported (iptables only)', (s, v) => {
    if (v) throw new UsageError('--native-nftables is not supported by keel (iptables only)');
  }),
  bool('iptables-trace-logging', undefined, 'not supported (NFLOG trace rules are not generated)', (s, v) => {
    if (v) s.warnings.push('--iptables-trace-logging is not supported; no NFLOG trace rules are added');
  }),
  // Older releases' flag; iptables-restore format is what keel always uses.
  { name: 'restore-format', short: 'f', kind: 'bool', env: [], help: 'accepted (keel always uses iptables-restore)', set: () => undefined },
  // istio's log options, accepted by the istio-iptables binary.
  tolerated('log_output_level', 'string', 'ignored'),
  tolerated('log_stacktrace_level', 'string', 'ignored'),
  tolerated('log_target', 'string', 'ignored'),
  tolerated('log_caller', 'string', 'ignored'),
  tolerated('log_rotate', 'string', 'ignored'),
  tolerated('log_rotate_max_age', 'string', 'ignored'),
  tolerated('log_rotate_max_size', 'string', 'ignored'),
  tolerated('log_rotate_max_backups', 'string', 'ignored'),
  tolerated('log_as_json', 'bool', 'ignored'),
];

const BY_NAME = new Map(FLAGS.map((f) => [f.name, f]));
const BY_SHORT = new Map(FLAGS.filter((f) => f.short !== undefined).map((f) => [f.short!, f]));

/** Environment-only settings (no flag). */
export const ENV_ONLY = ['ISTIO_OUTBOUND_OWNER_GROUPS', 'ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE', 'ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR', 'ENVOY_USER'] as const;

export function usage(): string {
  const lines = FLAGS.filter((f) => !f.name.startsWith('log_')).map((f) => {
    const names = (f.short ? `-${f.short}, ` : '    ') + `--${f.name}` + (f.kind === 'string' ? ' <v>' : '');
    const env = f.env.length ? ` [$${f.env.join(', $')}]` : '';
    return `  ${names.padEnd(48)} ${f.help}${env}`;
  });
  return `usage: keel istio-iptables [flags]\n${lines.join('\n')}\n  env only: $${ENV_ONLY.join(', $')}`;
}

export interface ParsedIstioIptables {
  readonly config: IptablesConfig;
  /** -u / -g (or their env) were given; completeConfig fills them otherwise */
  readonly uidSet: boolean;
  readonly gidSet: boolean;
  readonly help: boolean;
  readonly warnings: string[];
}

/** Parses istio-iptables' flags and environment into a config. Throws UsageError. No I/O. */
export function parseIstioIptablesArgs(argv: readonly string[], env: NodeJS.ProcessEnv = {}): ParsedIstioIptables {
  const s: ParseState = { cfg: defaultConfig(), uidSet: false, gidSet: false, warnings: [] };
  // Environment first (Istio applies env while defining the flags, the command line is parsed after).
  for (const f of FLAGS) {
    for (const e of f.env) {
      const v = env[e];
      if (v === undefined) continue;
      if (f.kind === 'bool' && parseGoBool(v) === undefined) continue; // Istio ignores an unparsable env value
      f.set(s, v, `$${e}`);
    }
  }
  if (env.ISTIO_OUTBOUND_OWNER_GROUPS !== undefined) s.cfg.ownerGroupsInclude = env.ISTIO_OUTBOUND_OWNER_GROUPS;
  if (env.ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE !== undefined) s.cfg.ownerGroupsExclude = env.ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE;
  if (env.ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR !== undefined) s.cfg.hostIpv4LoopbackCidr = env.ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR;

  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      if (i + 1 < argv.length) throw new UsageError(`unexpected argument ${argv[i + 1]}`);
      break;
    }
    if (arg === '-h' || arg === '--help') {
      help = true;
      continue;
    }
    let def: FlagDef | undefined;
    let inline: string | undefined;
    let shown: string;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
      inline = eq > 0 ? arg.slice(eq + 1) : undefined;
      def = BY_NAME.get(name);
      shown = `--${name}`;
      if (!def) throw new UsageError(`unknown flag: --${name}`);
    } else if (arg.startsWith('-') && arg.length > 1) {
      const c = arg[1];
      def = BY_SHORT.get(c);
      shown = `-${c}`;
      if (!def) throw new UsageError(`unknown shorthand flag: '${c}' in ${arg}`);
      if (arg.length > 2) inline = arg[2] === '=' ? arg.slice(3) : arg.slice(2);
    } else {
      throw new UsageError(`unexpected argument ${arg}`);
    }
    let value: string;
    if (def.kind === 'bool') {
      value = inline ?? 'true';
    } else if (inline !== undefined) {
      value = inline;
    } else {
      if (i + 1 >= argv.length) throw new UsageError(`flag needs an argument: ${shown}`);
      value = argv[++i];
    }
    def.set(s, value, shown);
  }
  return { config: s.cfg, uidSet: s.uidSet, gidSet: s.gidSet, help, warnings: s.warnings };
}

export interface HostInfo {
  /** uid of a user name (from /etc/passwd), or undefined */
  lookupUid(user: string): string | undefined;
  /** the host's addresses, as os.networkInterfaces() lists them, in order */
  addresses(): Array<{ address: string; family: 'IPv4' | 'IPv6' | 4 | 6; internal: boolean }>;
  /** /etc/resolv.conf's text, or undefined when unreadable */
  resolvConf(): string | undefined;
}

/** Name servers from resolv.conf text, split into IPv4 and IPv6. */
export function nameServers(text: string): { v4: string[]; v6: string[] } {
  const v4: string[] = [];
  const v6: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    const a = m[1];
    if (/^[0-9.]+$/.test(a)) v4.push(a);
    else if (a.includes(':')) v6.push(a.replace(/%.*$/, ''));
  }
  return { v4, v6 };
}

function isLinkLocal(a: string, v6: boolean): boolean {
  return v6 ? /^fe[89ab]/i.test(a) || /^ff02:/i.test(a) : a.startsWith('169.254.') || a.startsWith('224.0.0.');
}

/**
 * Fills the host-derived settings as Istio does: proxy uid from $ENVOY_USER (default istio-proxy)
 * when -u is absent, else 1337; gid = uid when -g is absent; IPv6 rules when the first non-loopback,
 * non-link-local address is IPv6 (with --dual-stack: when any is); DNS servers from resolv.conf with
 * --redirect-dns (and not --capture-all-dns). Returns warnings to print.
 */
export function completeConfig(p: ParsedIstioIptables, env: NodeJS.ProcessEnv, host: HostInfo): { config: IptablesConfig; warnings: string[] } {
  const cfg: IptablesConfig = { ...p.config };
  const warnings = [...p.warnings];
  if (!p.uidSet) cfg.proxyUid = host.lookupUid(env.ENVOY_USER ?? 'istio-proxy') ?? '1337';
  if (!p.gidSet) cfg.proxyGid = cfg.proxyUid;
  let found = false;
  let ipv6 = false;
  for (const a of host.addresses()) {
    const v6 = a.family === 'IPv6' || a.family === 6;
    if (a.internal || isLinkLocal(a.address, v6)) continue;
    found = true;
    if (!cfg.dualStack) {
      ipv6 = v6;
      break;
    }
    if (v6) {
      ipv6 = true;
      break;
    }
  }
  if (!found) warnings.push('no non-loopback address found; building IPv4 rules only');
  cfg.enableIpv6 = ipv6;
  if (cfg.redirectDns && !cfg.captureAllDns) {
    const text = host.resolvConf();
    if (text === undefined) throw new UsageError('--redirect-dns: failed to read /etc/resolv.conf');
    const ns = nameServers(text);
    cfg.dnsServersV4 = ns.v4;
    cfg.dnsServersV6 = ns.v6;
  }
  return { config: cfg, warnings };
}
