// Filter-chain selection as Envoy's FilterChainManager does it: the listener's filter chains are
// compiled once into a match tree whose levels are, in order, destination_port, prefix_ranges
// (destination IP, longest prefix), server_names (SNI: exact, then *.suffix wildcards from the
// longest suffix), transport_protocol, application_protocols (the first of the connection's
// protocols any chain names), direct_source_prefix_ranges, source_type, source_prefix_ranges,
// source_ports. At each level the most specific key that fits wins and the search never backs up
// to a less specific sibling; an empty criterion ("any") is only taken when nothing more specific
// fits. No fit: the default filter chain, if any.
//
// Must not: parse or allocate per connection beyond the facts' own IP parse; scan chains per
// connection.

import * as net from 'node:net';
import type { CidrRange, FilterChainMatchConfig } from '../config/types';

/** What a connection offers the match (its restored destination, listener-filter results). */
export interface ConnectionFacts {
  readonly destinationAddress: string;
  readonly destinationPort: number;
  /** SNI from tls_inspector ('' or undefined: none) */
  readonly serverName?: string;
  /** 'tls' (tls_inspector saw a ClientHello) or 'raw_buffer' (the default) */
  readonly transportProtocol: string;
  /** ALPN from the ClientHello, or http_inspector's 'http/1.1' / 'http/1.0' / 'h2c' */
  readonly applicationProtocols: readonly string[];
  readonly sourceAddress: string;
  readonly sourcePort: number;
  /** the directly connected peer (no PROXY protocol in keel: the source) */
  readonly directSourceAddress?: string;
}

/** What the match tree looks at, so the listener only inspects what it needs. */
export interface MatchNeeds {
  readonly serverNames: boolean;
  readonly transportProtocol: boolean;
  readonly applicationProtocols: boolean;
}

// ---------------------------------------------------------------------------------------------
// Longest-prefix tables

type ParsedIp = { readonly v6: false; readonly n: number } | { readonly v6: true; readonly n: bigint };

/** An IP address (v4-mapped v6 counts as v4) as a number/bigint; undefined if it is not one. */
export function parseIp(addr: string): ParsedIp | undefined {
  let a = addr;
  if (a.startsWith('::ffff:') && net.isIPv4(a.slice(7))) a = a.slice(7);
  const pct = a.indexOf('%');
  if (pct >= 0) a = a.slice(0, pct);
  if (net.isIPv4(a)) {
    const p = a.split('.');
    return { v6: false, n: ((+p[0]! << 24) | (+p[1]! << 16) | (+p[2]! << 8) | +p[3]!) >>> 0 };
  }
  if (!net.isIPv6(a)) return undefined;
  // expand :: and a trailing dotted quad
  let s = a;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    const v4 = parseIp(dotted[1]!);
    const n = v4 && !v4.v6 ? v4.n : 0;
    s = `${s.slice(0, -dotted[1]!.length)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  let n = 0n;
  for (const g of groups) n = (n << 16n) | BigInt(parseInt(g || '0', 16));
  return { v6: true, n };
}

function maskV4(n: number, len: number): number {
  return len === 0 ? 0 : (n & (0xffffffff << (32 - len))) >>> 0;
}
function maskV6(n: bigint, len: number): bigint {
  return len === 0 ? 0n : (n >> BigInt(128 - len)) << BigInt(128 - len);
}

/** CIDR -> value with longest-prefix lookup (a map per prefix length, longest first). */
export class CidrTable<T> {
  private readonly v4 = new Map<number, Map<number, T>>();
  private readonly v6 = new Map<number, Map<bigint, T>>();
  private v4Lens: number[] = [];
  private v6Lens: number[] = [];

  /** Adds a range; returns the value already there for that exact range, if any. */
  getOrAdd(prefix: string, len: number, make: () => T): T {
    const ip = parseIp(prefix);
    if (!ip) return make();
    if (ip.v6) {
      let m = this.v6.get(len);
      if (!m) {
        this.v6.set(len, (m = new Map()));
        this.v6Lens = [...this.v6.keys()].sort((a, b) => b - a);
      }
      const k = maskV6(ip.n, len);
      let v = m.get(k);
      if (v === undefined) m.set(k, (v = make()));
      return v;
    }
    let m = this.v4.get(len);
    if (!m) {
      this.v4.set(len, (m = new Map()));
      this.v4Lens = [...this.v4.keys()].sort((a, b) => b - a);
    }
    const k = maskV4(ip.n, len);
    let v = m.get(k);
    if (v === undefined) m.set(k, (v = make()));
    return v;
  }

  lookup(ip: ParsedIp | undefined): T | undefined {
    if (!ip) return undefined;
    if (ip.v6) {
      for (const len of this.v6Lens) {
        const v = this.v6.get(len)!.get(maskV6(ip.n, len));
        if (v !== undefined) return v;
      }
      return undefined;
    }
    for (const len of this.v4Lens) {
      const v = this.v4.get(len)!.get(maskV4(ip.n, len));
      if (v !== undefined) return v;
    }
    return undefined;
  }

  values(): T[] {
    const out: T[] = [];
    for (const m of this.v4.values()) out.push(...m.values());
    for (const m of this.v6.values()) out.push(...m.values());
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// The tree

type SourceType = FilterChainMatchConfig['sourceType'];

interface SourcePortNode<C> {
  readonly byPort: Map<number, C>; // 0 = any
}
interface SourceIpNode<C> {
  readonly table: CidrTable<SourcePortNode<C>>;
}
interface SourceTypeNode<C> {
  readonly byType: Map<SourceType, SourceIpNode<C>>;
}
interface AppProtocolNode<C> {
  readonly byProtocol: Map<string, CidrTable<SourceTypeNode<C>>>; // '' = any; value: direct source
}
interface TransportNode<C> {
  readonly byTransport: Map<string, AppProtocolNode<C>>; // '' = any
}
interface ServerNameNode<C> {
  readonly exact: Map<string, TransportNode<C>>; // 'a.b.com', '*.b.com' (wildcards keyed with the star), '' = any
  hasWildcards: boolean;
}
interface DestinationPortNode<C> {
  readonly table: CidrTable<ServerNameNode<C>>;
}

function anyRanges(ranges: readonly CidrRange[]): readonly CidrRange[] {
  return ranges.length > 0
    ? ranges
    : [
        { addressPrefix: '0.0.0.0', prefixLen: 0 },
        { addressPrefix: '::', prefixLen: 0 },
      ];
}

function isLoopback(ip: ParsedIp | undefined): boolean {
  if (!ip) return false;
  return ip.v6 ? ip.n === 1n : ip.n >>> 24 === 127;
}

/**
 * A listener's filter chains as a match tree. `C` is the listener's chain object. Chains whose
 * whole match repeats an earlier one's are recorded in `duplicates` (the first wins).
 */
export class FilterChainMatcher<C> {
  private readonly byPort = new Map<number, DestinationPortNode<C>>();
  readonly needs: MatchNeeds;
  /** chains every combination of whose match an earlier chain already took (they can never be chosen) */
  readonly duplicates: C[] = [];
  /** chains sharing at least one full combination with an earlier chain (Envoy refuses such listeners) */
  readonly conflicts: { readonly chain: C; readonly with: C }[] = [];
  /** Does any level past the destination depend on the source side? */
  private readonly sourceTypesUsed: boolean;

  constructor(
    chains: readonly { readonly match: FilterChainMatchConfig; readonly chain: C }[],
    private readonly defaultChain?: C,
  ) {
    let serverNames = false;
    let transport = false;
    let alpn = false;
    let srcType = false;
    for (const { match, chain } of chains) {
      if (match.serverNames.length > 0) serverNames = true;
      if (match.transportProtocol !== undefined) transport = true;
      if (match.applicationProtocols.length > 0) alpn = true;
      if (match.sourceType !== 'ANY') srcType = true;
      if (!this.insert(match, chain)) this.duplicates.push(chain);
    }
    this.needs = { serverNames, transportProtocol: transport, applicationProtocols: alpn };
    this.sourceTypesUsed = srcType;
  }

  /** false when every combination of this match was already taken by an earlier chain */
  private insert(m: FilterChainMatchConfig, chain: C): boolean {
    let added = false;
    const port = m.destinationPort ?? 0;
    let pn = this.byPort.get(port);
    if (!pn) this.byPort.set(port, (pn = { table: new CidrTable() }));
    for (const dst of anyRanges(m.prefixRanges)) {
      const sn = pn.table.getOrAdd(dst.addressPrefix, dst.prefixLen, () => ({ exact: new Map(), hasWildcards: false }));
      for (const name of m.serverNames.length > 0 ? m.serverNames : ['']) {
        if (name.startsWith('*.')) sn.hasWildcards = true;
        let tn = sn.exact.get(name);
        if (!tn) sn.exact.set(name, (tn = { byTransport: new Map() }));
        const tp = m.transportProtocol ?? '';
        let an = tn.byTransport.get(tp);
        if (!an) tn.byTransport.set(tp, (an = { byProtocol: new Map() }));
        for (const proto of m.applicationProtocols.length > 0 ? m.applicationProtocols : ['']) {
          let direct = an.byProtocol.get(proto);
          if (!direct) an.byProtocol.set(proto, (direct = new CidrTable()));
          for (const dsrc of anyRanges(m.directSourcePrefixRanges ?? [])) {
            const stn = direct.getOrAdd(dsrc.addressPrefix, dsrc.prefixLen, () => ({ byType: new Map() }));
            let sin = stn.byType.get(m.sourceType);
            if (!sin) stn.byType.set(m.sourceType, (sin = { table: new CidrTable() }));
            for (const src of anyRanges(m.sourcePrefixRanges)) {
              const spn = sin.table.getOrAdd(src.addressPrefix, src.prefixLen, () => ({ byPort: new Map() }));
              for (const sp of m.sourcePorts.length > 0 ? m.sourcePorts : [0]) {
                const taken = spn.byPort.get(sp);
                if (taken === undefined) {
                  spn.byPort.set(sp, chain);
                  added = true;
                } else if (taken !== chain && !this.conflicts.some((c) => c.chain === chain)) {
                  this.conflicts.push({ chain, with: taken });
                }
              }
            }
          }
        }
      }
    }
    return added;
  }

  /** The chain for a connection: the most specific fit at each level, else the default chain. */
  find(f: ConnectionFacts): C | undefined {
    return this.walk(f) ?? this.defaultChain;
  }

  private walk(f: ConnectionFacts): C | undefined {
    const pn = this.byPort.get(f.destinationPort) ?? this.byPort.get(0);
    if (!pn) return undefined;
    const sn = pn.table.lookup(parseIp(f.destinationAddress));
    if (!sn) return undefined;
    const tn = this.serverName(sn, f.serverName);
    if (!tn) return undefined;
    const an = tn.byTransport.get(f.transportProtocol) ?? tn.byTransport.get('');
    if (!an) return undefined;
    let direct: CidrTable<SourceTypeNode<C>> | undefined;
    for (const p of f.applicationProtocols) {
      direct = an.byProtocol.get(p);
      if (direct) break;
    }
    direct ??= an.byProtocol.get('');
    if (!direct) return undefined;
    const src = parseIp(f.sourceAddress);
    const stn = direct.lookup(f.directSourceAddress !== undefined ? parseIp(f.directSourceAddress) : src);
    if (!stn) return undefined;
    let sin: SourceIpNode<C> | undefined;
    if (this.sourceTypesUsed) {
      const local = stn.byType.get('SAME_IP_OR_LOOPBACK');
      const external = stn.byType.get('EXTERNAL');
      if (local || external) {
        const same = isLoopback(src) || (src !== undefined && sameIp(src, parseIp(f.destinationAddress)));
        sin = same ? local : external;
      }
    }
    sin ??= stn.byType.get('ANY');
    if (!sin) return undefined;
    const spn = sin.table.lookup(src);
    if (!spn) return undefined;
    return spn.byPort.get(f.sourcePort) ?? spn.byPort.get(0);
  }

  private serverName(sn: ServerNameNode<C>, sni: string | undefined): TransportNode<C> | undefined {
    if (sni !== undefined && sni !== '') {
      const name = sni.toLowerCase();
      const hit = sn.exact.get(name);
      if (hit) return hit;
      if (sn.hasWildcards) {
        // *.b.example.com, then *.example.com, then *.com
        for (let dot = name.indexOf('.'); dot >= 0; dot = name.indexOf('.', dot + 1)) {
          const w = sn.exact.get(`*${name.slice(dot)}`);
          if (w) return w;
        }
      }
    }
    return sn.exact.get('');
  }
}

function sameIp(a: ParsedIp, b: ParsedIp | undefined): boolean {
  return b !== undefined && a.v6 === b.v6 && a.n === b.n;
}
