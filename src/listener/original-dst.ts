// use_original_dst: which listener a redirected connection belongs to. A connection that iptables
// REDIRECTed to the capture listener (15001 / 15006) carries its original destination; the
// listener bound (or, with bind_to_port: false, merely declared) for that destination serves it.
// An exact IP:port listener wins over a wildcard 0.0.0.0:port / [::]:port one.

import * as net from 'node:net';
import type { ListenerConfig } from '../config/types';
import { native } from '../native';
import { KeelError } from '../common/errors';

/** The original_dst listener filter's type (what istiod puts on virtualInbound). */
export const ORIGINAL_DST_FILTER_TYPE = 'envoy.extensions.filters.listener.original_dst.v3.OriginalDst';

/** Does this listener read each connection's original destination (SO_ORIGINAL_DST)? */
export function readsOriginalDst(config: ListenerConfig): boolean {
  return config.useOriginalDst || config.listenerFilters.some((f) => f.typeName === ORIGINAL_DST_FILTER_TYPE);
}

/**
 * Refuses configs that need SO_ORIGINAL_DST when the addon cannot make the call: without it every
 * redirected connection would be served as if addressed to the capture port itself.
 */
export function checkOriginalDstSupport(listeners: readonly ListenerConfig[]): void {
  const needs = listeners.filter(readsOriginalDst).map((l) => l.name);
  if (needs.length === 0 || native.available) return;
  throw new KeelError(
    'KEEL_NATIVE_UNAVAILABLE',
    `listener(s) ${needs.map((n) => `'${n}'`).join(', ')} use the original destination (use_original_dst / original_dst listener filter), ` +
      `which needs keel's native addon (getsockopt SO_ORIGINAL_DST); it is not in use: ${native.reason ?? 'unknown reason'}`,
  );
}

function strip(addr: string): string {
  return addr.startsWith('::ffff:') && net.isIPv4(addr.slice(7)) ? addr.slice(7) : addr;
}

function isWildcard(addr: string): boolean {
  return addr === '0.0.0.0' || addr === '::' || addr === '';
}

/**
 * Index of listeners by address for the hand-off. `find` returns the listener for an original
 * destination, or undefined (the capture listener then serves the connection itself).
 */
export class ListenerIndex<L extends { readonly config: ListenerConfig }> {
  private readonly exact = new Map<string, L>();
  private readonly wild4 = new Map<number, L>();
  private readonly wild6 = new Map<number, L>();

  constructor(listeners: readonly L[]) {
    for (const l of listeners) {
      const a = l.config.address;
      if (a.pipe !== undefined || a.port === 0) continue;
      const ip = strip(a.address);
      if (isWildcard(ip)) {
        const m = ip === '::' ? this.wild6 : this.wild4;
        if (!m.has(a.port)) m.set(a.port, l);
      } else {
        const key = `${ip}:${a.port}`;
        if (!this.exact.has(key)) this.exact.set(key, l);
      }
    }
  }

  find(address: string, port: number): L | undefined {
    const ip = strip(address);
    const hit = this.exact.get(`${ip}:${port}`);
    if (hit) return hit;
    // A v4 destination prefers 0.0.0.0:port, a v6 one [::]:port; either takes the other's as a fallback.
    return net.isIPv6(ip) ? (this.wild6.get(port) ?? this.wild4.get(port)) : (this.wild4.get(port) ?? this.wild6.get(port));
  }
}
