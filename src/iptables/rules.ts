// The rule set `keel istio-iptables` installs, built from an IptablesConfig with no I/O, in the same
// chains, tables, order and argument spelling as Istio's istio-iptables (1.2x): ISTIO_INBOUND,
// ISTIO_REDIRECT, ISTIO_IN_REDIRECT, ISTIO_OUTPUT (nat); ISTIO_DIVERT, ISTIO_TPROXY (mangle, TPROXY
// mode); ISTIO_DROP (mangle, --drop-invalid); ISTIO_OUTPUT_DNS (nat + raw, --redirect-dns) and the
// DNS conntrack-zone rules (raw). IPv6 rules (ip6tables) are built when config.enableIpv6.
//
// renderRestore turns one family's rules into iptables-restore input the way Istio renders it: one
// `* <table>` block per table in name order, `-N` for every non-built-in chain (first the chains
// rules are added to, then chains only jumped to), the rules in the order they were added, COMMIT.

import { splitList, type IptablesConfig } from './config';
import { parsePrefix, type Prefix } from './cidr';

export type Table = 'filter' | 'mangle' | 'nat' | 'raw';

export interface Rule {
  readonly table: Table;
  readonly chain: string;
  /** `-I chain <insertAt>` when set, else `-A chain` */
  readonly insertAt?: number;
  /** the match and target arguments after `-A chain` */
  readonly args: readonly string[];
}

export interface RouteCommands {
  /** `ip` argument lists that install the TPROXY policy routing (and ::6 on lo for IPv6) */
  readonly add: string[][];
  /** `ip` argument lists that remove the TPROXY policy routing */
  readonly remove: string[][];
}

export interface RuleSet {
  readonly v4: readonly Rule[];
  readonly v6: readonly Rule[];
  readonly routes: RouteCommands;
  /** things Istio logs as warnings (e.g. --redirect-dns with nothing to redirect), not errors */
  readonly warnings: readonly string[];
}

export class IptablesConfigError extends Error {}

export const ISTIO_INBOUND = 'ISTIO_INBOUND';
export const ISTIO_REDIRECT = 'ISTIO_REDIRECT';
export const ISTIO_IN_REDIRECT = 'ISTIO_IN_REDIRECT';
export const ISTIO_OUTPUT = 'ISTIO_OUTPUT';
export const ISTIO_OUTPUT_DNS = 'ISTIO_OUTPUT_DNS';
export const ISTIO_DIVERT = 'ISTIO_DIVERT';
export const ISTIO_TPROXY = 'ISTIO_TPROXY';
export const ISTIO_DROP = 'ISTIO_DROP';

/** Mark Istio sets on proxy -> app packets over lo in TPROXY mode. */
export const OUTBOUND_MARK = '1338';
/** istio-agent's DNS proxy port. */
export const DNS_PROXY_PORT = '15053';

export const BUILTIN_CHAINS: ReadonlySet<string> = new Set(['INPUT', 'OUTPUT', 'FORWARD', 'PREROUTING', 'POSTROUTING']);
const BUILTIN_TARGETS: ReadonlySet<string> = new Set([...BUILTIN_CHAINS, 'ACCEPT', 'RETURN', 'DROP']);

const V = Symbol('ip-version-specific');
type Arg = string | typeof V;

class Builder {
  readonly v4: Rule[] = [];
  readonly v6: Rule[] = [];
  constructor(private readonly ipv6: boolean) {}

  append4(table: Table, chain: string, ...args: string[]): void {
    this.v4.push({ table, chain, args });
  }
  append6(table: Table, chain: string, ...args: string[]): void {
    if (this.ipv6) this.v6.push({ table, chain, args });
  }
  append(table: Table, chain: string, ...args: string[]): void {
    this.append4(table, chain, ...args);
    this.append6(table, chain, ...args);
  }
  insert4(table: Table, chain: string, at: number, ...args: string[]): void {
    this.v4.push({ table, chain, insertAt: at, args });
  }
  insert6(table: Table, chain: string, at: number, ...args: string[]): void {
    if (this.ipv6) this.v6.push({ table, chain, insertAt: at, args });
  }
  insert(table: Table, chain: string, at: number, ...args: string[]): void {
    this.insert4(table, chain, at, ...args);
    this.insert6(table, chain, at, ...args);
  }
  /** Appends to both families, V replaced by the family's value. */
  appendVersioned(v4: string, v6: string, table: Table, chain: string, ...args: Arg[]): void {
    this.append4(table, chain, ...args.map((a) => (a === V ? v4 : a)));
    this.append6(table, chain, ...args.map((a) => (a === V ? v6 : a)));
  }
}

interface NetworkRange {
  wildcard: boolean;
  prefixes: Prefix[];
  hasLoopback: boolean;
}

/** Splits a CIDR list by family; '*' is a wildcard for both. Unparsable items are skipped with a warning (as Istio does). */
function separateV4V6(list: string, warnings: string[]): [NetworkRange, NetworkRange] {
  if (list === '*') return [{ wildcard: true, prefixes: [], hasLoopback: false }, { wildcard: true, prefixes: [], hasLoopback: false }];
  const v4: NetworkRange = { wildcard: false, prefixes: [], hasLoopback: false };
  const v6: NetworkRange = { wildcard: false, prefixes: [], hasLoopback: false };
  for (const item of splitList(list)) {
    let p: Prefix;
    try {
      p = parsePrefix(item);
    } catch (e) {
      warnings.push(`Ignoring error for bug compatibility with istio-iptables: ${(e as Error).message}`);
      continue;
    }
    const r = p.family === 4 ? v4 : v6;
    r.prefixes.push(p);
    if (p.loopback) r.hasLoopback = true;
  }
  return [v4, v6];
}

/** Istio's owner-group filter: include '*' means "all but the excluded", else "only these". */
export function ownerGroupsFilter(include: string, exclude: string): { except: boolean; values: string[] } {
  if (include === '*') return { except: true, values: splitList(exclude) };
  return { except: false, values: splitList(include) };
}

/** Validation Istio applies to the env-only settings (config.Validate). */
export function validateConfig(cfg: IptablesConfig): void {
  const include = splitList(cfg.ownerGroupsInclude === '*' ? '' : cfg.ownerGroupsInclude);
  const exclude = splitList(cfg.ownerGroupsExclude);
  if (cfg.ownerGroupsInclude !== '*' && exclude.length > 0) {
    throw new IptablesConfigError('ISTIO_OUTBOUND_OWNER_GROUPS and ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE cannot both be set (exclusions only apply when all groups, "*", are included)');
  }
  if (include.length > 64 || exclude.length > 64) throw new IptablesConfigError('at most 64 owner groups can be listed');
  let p: Prefix;
  try {
    p = parsePrefix(cfg.hostIpv4LoopbackCidr);
  } catch (e) {
    throw new IptablesConfigError(`ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR: ${(e as Error).message}`);
  }
  const bits = Number(p.text.split('/')[1]);
  if (p.family !== 4 || !p.loopback || bits < 8 || bits > 32) {
    throw new IptablesConfigError(`ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR must be an IPv4 loopback CIDR with a prefix of /8 to /32, not '${cfg.hostIpv4LoopbackCidr}'`);
  }
}

/** Builds the rules (and TPROXY routes) Istio's istio-iptables installs for `cfg`. Pure. */
export function buildRules(cfg: IptablesConfig): RuleSet {
  validateConfig(cfg);
  const warnings: string[] = [];
  const b = new Builder(cfg.enableIpv6);
  const tproxy = cfg.inboundInterceptionMode === 'TPROXY';
  const loV4 = cfg.hostIpv4LoopbackCidr;
  const loV6 = '::1/128';
  const uids = splitList(cfg.proxyUid);
  const gids = splitList(cfg.proxyGid);

  const [excludeV4, excludeV6] = separateV4V6(cfg.outboundIpRangesExclude, warnings);
  if (excludeV4.wildcard) throw new IptablesConfigError('invalid value for OUTBOUND_IP_RANGES_EXCLUDE (-x): "*" is not allowed');
  const [includeV4, includeV6] = separateV4V6(cfg.outboundIpRangesInclude, warnings);

  let redirectDns = cfg.redirectDns;
  if (redirectDns && !cfg.captureAllDns && cfg.dnsServersV4.length === 0 && cfg.dnsServersV6.length === 0) {
    warnings.push('REDIRECT_DNS is set, but CAPTURE_ALL_DNS is false, and no DNS servers provided. DNS capture disabled.');
    redirectDns = false;
  }

  // Interfaces whose traffic is never captured.
  const excluded = splitList(cfg.excludeInterfaces);
  for (const nic of excluded) {
    b.append('nat', 'PREROUTING', '-i', nic, '-j', 'RETURN');
    b.append('nat', 'OUTPUT', '-o', nic, '-j', 'RETURN');
  }
  if (tproxy) {
    for (const nic of excluded) {
      b.append('mangle', 'PREROUTING', '-i', nic, '-j', 'RETURN');
      b.append('mangle', 'OUTPUT', '-o', nic, '-j', 'RETURN');
    }
  }
  // Inbound traffic on the virtual interfaces (VMs) is treated as outbound, not as inbound.
  const virt = splitList(cfg.rerouteVirtualInterfaces);
  for (const nic of virt) b.insert('nat', 'PREROUTING', 1, '-i', nic, '-j', 'RETURN');

  if (cfg.dropInvalid) {
    b.append('mangle', 'PREROUTING', '-m', 'conntrack', '--ctstate', 'INVALID', '-j', ISTIO_DROP);
    b.append('mangle', ISTIO_DROP, '-j', 'DROP');
  }

  b.append('nat', ISTIO_INBOUND, '-p', 'tcp', '--dport', cfg.inboundTunnelPort, '-j', 'RETURN');
  b.append('nat', ISTIO_REDIRECT, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', cfg.proxyPort);
  b.append('nat', ISTIO_IN_REDIRECT, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', cfg.inboundCapturePort);

  // Inbound capture.
  if (cfg.inboundPortsInclude !== '') {
    let table: Table = 'nat';
    if (tproxy) {
      b.append('mangle', ISTIO_DIVERT, '-j', 'MARK', '--set-mark', cfg.inboundTproxyMark);
      b.append('mangle', ISTIO_DIVERT, '-j', 'ACCEPT');
      b.appendVersioned(loV4, loV6, 'mangle', ISTIO_TPROXY, '!', '-d', V, '-p', 'tcp', '-j', 'TPROXY',
        '--tproxy-mark', `${cfg.inboundTproxyMark}/0xffffffff`, '--on-port', cfg.inboundCapturePort);
      table = 'mangle';
    }
    b.append(table, 'PREROUTING', '-p', 'tcp', '-j', ISTIO_INBOUND);
    if (cfg.inboundPortsInclude === '*') {
      for (const port of splitList(cfg.inboundPortsExclude)) b.append(table, ISTIO_INBOUND, '-p', 'tcp', '--dport', port, '-j', 'RETURN');
      if (tproxy) {
        b.append('mangle', ISTIO_INBOUND, '-p', 'tcp', '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', ISTIO_DIVERT);
        b.append('mangle', ISTIO_INBOUND, '-p', 'tcp', '-j', ISTIO_TPROXY);
      } else {
        b.append('nat', ISTIO_INBOUND, '-p', 'tcp', '-j', ISTIO_IN_REDIRECT);
      }
    } else {
      for (const port of splitList(cfg.inboundPortsInclude)) {
        if (tproxy) {
          b.append('mangle', ISTIO_INBOUND, '-p', 'tcp', '--dport', port, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', ISTIO_DIVERT);
          b.append('mangle', ISTIO_INBOUND, '-p', 'tcp', '--dport', port, '-j', ISTIO_TPROXY);
        } else {
          b.append('nat', ISTIO_INBOUND, '-p', 'tcp', '--dport', port, '-j', ISTIO_IN_REDIRECT);
        }
      }
    }
  }

  // Outbound: everything goes through ISTIO_OUTPUT (UDP only matters for DNS).
  b.append('nat', 'OUTPUT', '-j', ISTIO_OUTPUT);
  for (const port of splitList(cfg.outboundPortsExclude)) {
    b.append('nat', ISTIO_OUTPUT, '-p', 'tcp', '--dport', port, '-j', 'RETURN');
    b.append('nat', ISTIO_OUTPUT, '-p', 'udp', '--dport', port, '-j', 'RETURN');
  }
  // Inbound passthrough connections bind 127.0.0.6 / ::6.
  b.appendVersioned('127.0.0.6/32', '::6/128', 'nat', ISTIO_OUTPUT, '-o', 'lo', '-s', V, '-j', 'RETURN');

  const loopbackIncluded = includeV4.hasLoopback || includeV6.hasLoopback;
  for (const uid of uids) {
    // The proxy calling its own pod over lo (app -> VIP -> proxy -> proxy inbound -> app).
    if (redirectDns) {
      b.appendVersioned(loV4, loV6, 'nat', ISTIO_OUTPUT, '-o', 'lo', '!', '-d', V, '-p', 'tcp', '-m', 'multiport',
        '!', '--dports', `53,${cfg.inboundTunnelPort}`, '-m', 'owner', '--uid-owner', uid, '-j', ISTIO_IN_REDIRECT);
    } else {
      b.appendVersioned(loV4, loV6, 'nat', ISTIO_OUTPUT, '-o', 'lo', '!', '-d', V, '-p', 'tcp',
        '!', '--dport', cfg.inboundTunnelPort, '-m', 'owner', '--uid-owner', uid, '-j', ISTIO_IN_REDIRECT);
    }
    // The app calling itself over lo is not captured, unless loopback ranges are explicitly included.
    if (!loopbackIncluded) {
      if (redirectDns) b.append('nat', ISTIO_OUTPUT, '-o', 'lo', '-p', 'tcp', '!', '--dport', '53', '-m', 'owner', '!', '--uid-owner', uid, '-j', 'RETURN');
      else b.append('nat', ISTIO_OUTPUT, '-o', 'lo', '-m', 'owner', '!', '--uid-owner', uid, '-j', 'RETURN');
    }
    // Never capture the proxy's own traffic (any protocol).
    b.append('nat', ISTIO_OUTPUT, '-m', 'owner', '--uid-owner', uid, '-j', 'RETURN');
  }
  for (const gid of gids) {
    b.appendVersioned(loV4, loV6, 'nat', ISTIO_OUTPUT, '-o', 'lo', '!', '-d', V, '-p', 'tcp',
      '!', '--dport', cfg.inboundTunnelPort, '-m', 'owner', '--gid-owner', gid, '-j', ISTIO_IN_REDIRECT);
    if (!loopbackIncluded) {
      if (redirectDns) b.append('nat', ISTIO_OUTPUT, '-o', 'lo', '-p', 'tcp', '!', '--dport', '53', '-m', 'owner', '!', '--gid-owner', gid, '-j', 'RETURN');
      else b.append('nat', ISTIO_OUTPUT, '-o', 'lo', '-m', 'owner', '!', '--gid-owner', gid, '-j', 'RETURN');
    }
    b.append('nat', ISTIO_OUTPUT, '-m', 'owner', '--gid-owner', gid, '-j', 'RETURN');
  }

  const groups = ownerGroupsFilter(cfg.ownerGroupsInclude, cfg.ownerGroupsExclude);
  if (groups.except) {
    for (const g of groups.values) b.append('nat', ISTIO_OUTPUT, '-m', 'owner', '--gid-owner', g, '-j', 'RETURN');
  } else {
    b.append('nat', ISTIO_OUTPUT, ...groups.values.flatMap((g) => ['-m', 'owner', '!', '--gid-owner', g]), '-j', 'RETURN');
  }

  if (redirectDns) dnsRules(b, cfg, uids, gids);

  // Envoy-aware apps and container-to-container traffic on localhost.
  b.appendVersioned(loV4, loV6, 'nat', ISTIO_OUTPUT, '-d', V, '-j', 'RETURN');
  for (const p of excludeV4.prefixes) b.append4('nat', ISTIO_OUTPUT, '-d', p.text, '-j', 'RETURN');
  for (const p of excludeV6.prefixes) b.append6('nat', ISTIO_OUTPUT, '-d', p.text, '-j', 'RETURN');

  for (const port of splitList(cfg.outboundPortsInclude)) b.append('nat', ISTIO_OUTPUT, '-p', 'tcp', '--dport', port, '-j', ISTIO_REDIRECT);

  outboundInclude(includeV4, virt, b.append4.bind(b), b.insert4.bind(b));
  outboundInclude(includeV6, virt, b.append6.bind(b), b.insert6.bind(b));

  if (tproxy) {
    const mark = cfg.inboundTproxyMark;
    b.append('mangle', 'PREROUTING', '-p', 'tcp', '-m', 'mark', '--mark', mark, '-j', 'CONNMARK', '--save-mark');
    b.append('mangle', 'OUTPUT', '-p', 'tcp', '-o', 'lo', '-m', 'mark', '--mark', mark, '-j', 'RETURN');
    for (const uid of uids) {
      b.appendVersioned(loV4, loV6, 'mangle', 'OUTPUT', '!', '-d', V, '-p', 'tcp', '-o', 'lo', '-m', 'owner', '--uid-owner', uid, '-j', 'MARK', '--set-mark', OUTBOUND_MARK);
    }
    for (const gid of gids) {
      b.appendVersioned(loV4, loV6, 'mangle', 'OUTPUT', '!', '-d', V, '-p', 'tcp', '-o', 'lo', '-m', 'owner', '--gid-owner', gid, '-j', 'MARK', '--set-mark', OUTBOUND_MARK);
    }
    b.append('mangle', 'OUTPUT', '-p', 'tcp', '-m', 'connmark', '--mark', mark, '-j', 'CONNMARK', '--restore-mark');
    b.insert('mangle', ISTIO_INBOUND, 1, '-p', 'tcp', '-m', 'mark', '--mark', mark, '-j', 'RETURN');
    b.insert4('mangle', ISTIO_INBOUND, 2, '-p', 'tcp', '-s', '127.0.0.6/32', '-i', 'lo', '-j', 'RETURN');
    b.insert6('mangle', ISTIO_INBOUND, 2, '-p', 'tcp', '-s', '::6/128', '-i', 'lo', '-j', 'RETURN');
    b.insert('mangle', ISTIO_INBOUND, 3, '-p', 'tcp', '-i', 'lo', '-m', 'mark', '!', '--mark', OUTBOUND_MARK, '-j', 'RETURN');
  }

  return { v4: b.v4, v6: b.v6, routes: routeCommands(cfg), warnings };
}

function outboundInclude(
  range: NetworkRange,
  virt: string[],
  append: (table: Table, chain: string, ...args: string[]) => void,
  insert: (table: Table, chain: string, at: number, ...args: string[]) => void,
): void {
  if (range.wildcard) {
    append('nat', ISTIO_OUTPUT, '-j', ISTIO_REDIRECT);
    for (const nic of virt) insert('nat', 'PREROUTING', 1, '-i', nic, '-j', ISTIO_REDIRECT);
  } else {
    for (const p of range.prefixes) {
      for (const nic of virt) insert('nat', 'PREROUTING', 1, '-i', nic, '-d', p.text, '-j', ISTIO_REDIRECT);
      append('nat', ISTIO_OUTPUT, '-d', p.text, '-j', ISTIO_REDIRECT);
    }
  }
}

/** DNS capture to the agent's :15053 (nat) and the conntrack zones that keep its UDP flows apart (raw). */
function dnsRules(b: Builder, cfg: IptablesConfig, uids: string[], gids: string[]): void {
  const all = cfg.captureAllDns;
  const v4 = cfg.dnsServersV4;
  const v6 = cfg.dnsServersV6;
  b.append('raw', 'OUTPUT', '-j', ISTIO_OUTPUT_DNS);
  if (all || v4.length > 0) b.append4('nat', ISTIO_OUTPUT, '-j', ISTIO_OUTPUT_DNS);
  if (all || v6.length > 0) b.append6('nat', ISTIO_OUTPUT, '-j', ISTIO_OUTPUT_DNS);
  if (all) {
    b.append('nat', ISTIO_OUTPUT_DNS, '-p', 'tcp', '--dport', '53', '-j', 'REDIRECT', '--to-ports', DNS_PROXY_PORT);
  } else {
    for (const s of v4) b.append4('nat', ISTIO_OUTPUT_DNS, '-p', 'tcp', '--dport', '53', '-d', `${s}/32`, '-j', 'REDIRECT', '--to-ports', DNS_PROXY_PORT);
    for (const s of v6) b.append6('nat', ISTIO_OUTPUT_DNS, '-p', 'tcp', '--dport', '53', '-d', `${s}/128`, '-j', 'REDIRECT', '--to-ports', DNS_PROXY_PORT);
  }
  if (all) {
    b.append('nat', ISTIO_OUTPUT_DNS, '-p', 'udp', '--dport', '53', '-j', 'REDIRECT', '--to-port', DNS_PROXY_PORT);
  } else {
    for (const s of v4) b.append4('nat', ISTIO_OUTPUT_DNS, '-p', 'udp', '--dport', '53', '-d', `${s}/32`, '-j', 'REDIRECT', '--to-port', DNS_PROXY_PORT);
    for (const s of v6) b.append6('nat', ISTIO_OUTPUT_DNS, '-p', 'udp', '--dport', '53', '-d', `${s}/128`, '-j', 'REDIRECT', '--to-port', DNS_PROXY_PORT);
  }
  // Conntrack zones: proxy <-> upstream resolvers in zone 1, app <-> proxy in zone 2.
  for (const uid of uids) {
    b.append('raw', ISTIO_OUTPUT_DNS, '-p', 'udp', '--dport', '53', '-m', 'owner', '--uid-owner', uid, '-j', 'CT', '--zone', '1');
    b.append('raw', ISTIO_OUTPUT_DNS, '-p', 'udp', '--sport', DNS_PROXY_PORT, '-m', 'owner', '--uid-owner', uid, '-j', 'CT', '--zone', '2');
  }
  for (const gid of gids) {
    b.append('raw', ISTIO_OUTPUT_DNS, '-p', 'udp', '--dport', '53', '-m', 'owner', '--gid-owner', gid, '-j', 'CT', '--zone', '1');
    b.append('raw', ISTIO_OUTPUT_DNS, '-p', 'udp', '--sport', DNS_PROXY_PORT, '-m', 'owner', '--gid-owner', gid, '-j', 'CT', '--zone', '2');
  }
  if (all) {
    b.append('raw', 'PREROUTING', '-j', ISTIO_INBOUND);
    b.append('raw', ISTIO_OUTPUT_DNS, '-p', 'udp', '--dport', '53', '-j', 'CT', '--zone', '2');
    b.append('raw', ISTIO_INBOUND, '-p', 'udp', '--sport', '53', '-j', 'CT', '--zone', '1');
  } else {
    if (v4.length > 0) b.append4('raw', 'PREROUTING', '-j', ISTIO_INBOUND);
    for (const s of v4) {
      b.append4('raw', ISTIO_OUTPUT_DNS, '-p', 'udp', '--dport', '53', '-d', `${s}/32`, '-j', 'CT', '--zone', '2');
      b.append4('raw', ISTIO_INBOUND, '-p', 'udp', '--sport', '53', '-s', `${s}/32`, '-j', 'CT', '--zone', '1');
    }
    if (v6.length > 0) b.append6('raw', 'PREROUTING', '-j', ISTIO_INBOUND);
    for (const s of v6) {
      b.append6('raw', ISTIO_OUTPUT_DNS, '-p', 'udp', '--dport', '53', '-d', `${s}/128`, '-j', 'CT', '--zone', '2');
      b.append6('raw', ISTIO_INBOUND, '-p', 'udp', '--sport', '53', '-s', `${s}/128`, '-j', 'CT', '--zone', '1');
    }
  }
}

/**
 * Istio's ConfigureRoutes: `::6/128` on lo when IPv6 is on (the inbound passthrough source), and for
 * TPROXY with inbound capture, a policy rule sending marked packets to a table whose default route
 * is local via lo.
 */
function routeCommands(cfg: IptablesConfig): RouteCommands {
  const add: string[][] = [];
  const remove: string[][] = [];
  if (cfg.enableIpv6) add.push(['-6', 'addr', 'add', '::6/128', 'dev', 'lo']);
  if (cfg.inboundInterceptionMode === 'TPROXY' && cfg.inboundPortsInclude !== '') {
    const families: Array<['-4' | '-6', string]> = [['-4', '0.0.0.0/0']];
    if (cfg.enableIpv6) families.push(['-6', '::/0']);
    for (const [f, dst] of families) {
      add.push([f, 'rule', 'add', 'fwmark', cfg.inboundTproxyMark, 'lookup', cfg.inboundTproxyRouteTable]);
      add.push([f, 'route', 'add', 'local', dst, 'dev', 'lo', 'table', cfg.inboundTproxyRouteTable]);
      remove.push([f, 'rule', 'del', 'fwmark', cfg.inboundTproxyMark, 'lookup', cfg.inboundTproxyRouteTable]);
      remove.push([f, 'route', 'flush', 'table', cfg.inboundTproxyRouteTable]);
    }
  }
  return { add, remove };
}

/** `-A chain args...` / `-I chain N args...` */
export function ruleLine(r: Rule): string {
  const head = r.insertAt === undefined ? ['-A', r.chain] : ['-I', r.chain, String(r.insertAt)];
  return [...head, ...r.args].join(' ');
}

const TABLE_ORDER: readonly Table[] = ['filter', 'mangle', 'nat', 'raw'];

/** iptables-restore input (for `--noflush`) creating the chains and adding the rules. '' when there are no rules. */
export function renderRestore(rules: readonly Rule[]): string {
  const byTable = new Map<Table, string[]>();
  const seen = new Set<string>();
  const lines = (t: Table): string[] => {
    let l = byTable.get(t);
    if (!l) byTable.set(t, (l = []));
    return l;
  };
  for (const r of rules) {
    const key = `${r.chain}:${r.table}`;
    if (!seen.has(key)) {
      seen.add(key);
      if (!BUILTIN_CHAINS.has(r.chain)) lines(r.table).push(`-N ${r.chain}`);
    }
  }
  for (const r of rules) {
    const n = r.args.length;
    if (n >= 2 && r.args[n - 2] === '-j') {
      const target = r.args[n - 1];
      const key = `${target}:${r.table}`;
      if (!seen.has(key)) {
        seen.add(key);
        if (!BUILTIN_TARGETS.has(target)) lines(r.table).push(`-N ${target}`);
      }
    }
  }
  for (const r of rules) lines(r.table).push(ruleLine(r));
  let out = '';
  for (const t of TABLE_ORDER) {
    const l = byTable.get(t);
    if (!l || l.length === 0) continue;
    out += `* ${t}\n${l.join('\n')}\nCOMMIT\n`;
  }
  return out;
}

/** Chains (per table) the rules create: what cleanup flushes and deletes. */
export function istioChains(rules: readonly Rule[]): Map<Table, string[]> {
  const m = new Map<Table, string[]>();
  for (const r of rules) {
    const names = [r.chain];
    const n = r.args.length;
    if (n >= 2 && r.args[n - 2] === '-j') names.push(r.args[n - 1]);
    for (const c of names) {
      if (BUILTIN_TARGETS.has(c) || !c.startsWith('ISTIO_')) continue;
      const l = m.get(r.table) ?? [];
      if (!l.includes(c)) l.push(c);
      m.set(r.table, l);
    }
  }
  return m;
}

/**
 * `iptables` argument lists that undo this config's rules in built-in chains (most recent first),
 * as Istio's cleanup does: `-t table -D chain args`. Rules in ISTIO_* chains go with the chains.
 */
export function undoBuiltinRules(rules: readonly Rule[]): string[][] {
  return [...rules]
    .reverse()
    .filter((r) => BUILTIN_CHAINS.has(r.chain))
    .map((r) => ['-t', r.table, '-D', r.chain, ...r.args]);
}
