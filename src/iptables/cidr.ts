// IP prefixes as istio-iptables reads them (Go's netip.ParsePrefix): `addr/bits`, bits required,
// host bits allowed and kept ("10.1.2.3/8" stays "10.1.2.3/8"); IPv6 printed in canonical form.

import * as net from 'node:net';

export interface Prefix {
  readonly family: 4 | 6;
  /** canonical text, as iptables gets it */
  readonly text: string;
  readonly loopback: boolean;
}

function canonicalV6(addr: string): string {
  // WHATWG URL serialises IPv6 hosts in RFC 5952 form (lowercase, longest zero run compressed).
  return new URL(`http://[${addr}]/`).hostname.slice(1, -1);
}

/** Parses one prefix; throws Error with a Go-like message when it is not one. */
export function parsePrefix(s: string): Prefix {
  const slash = s.lastIndexOf('/');
  if (slash < 0) throw new Error(`netip.ParsePrefix("${s}"): no '/'`);
  const addr = s.slice(0, slash);
  const bitsText = s.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(bitsText)) throw new Error(`netip.ParsePrefix("${s}"): bad bits after slash: "${bitsText}"`);
  const bits = Number(bitsText);
  if (net.isIPv4(addr) && /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*)){3}$/.test(addr)) {
    if (bits > 32) throw new Error(`netip.ParsePrefix("${s}"): prefix length out of range`);
    return { family: 4, text: `${addr}/${bits}`, loopback: addr.startsWith('127.') };
  }
  if (net.isIPv6(addr) && !addr.includes('%')) {
    if (bits > 128) throw new Error(`netip.ParsePrefix("${s}"): prefix length out of range`);
    const c = canonicalV6(addr);
    return { family: 6, text: `${c}/${bits}`, loopback: c === '::1' };
  }
  throw new Error(`netip.ParsePrefix("${s}"): ParseAddr("${addr}"): unable to parse IP`);
}
