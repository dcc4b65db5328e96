// A route's hash_policy -> the request's hash for RING_HASH / MAGLEV, as Envoy computes it: each
// policy that yields a value is hashed and folded into the running hash (rotate left, xor); a
// terminal policy that yields a value ends the walk. No policy yielding a value: no hash (the
// balancer then picks at random). A cookie policy with a ttl whose cookie is missing generates one
// (a value derived from the client's address, so a client keeps its host) and hands the Set-Cookie
// for the response to the caller. Reads only the request; allocates only for a generated cookie.

import type { HashPolicyConfig } from '../config/types';
import type { HeaderMap } from '../http/headers';
import { hashString } from '../upstream/load-balancer-hash';

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
  }
  return undefined;
}

function queryValue(path: string, name: string): string | undefined {
  const q = path.indexOf('?');
  if (q < 0) return undefined;
  for (const pair of path.slice(q + 1).split('&')) {
    const eq = pair.indexOf('=');
    const k = eq < 0 ? pair : pair.slice(0, eq);
    if (k === name) return eq < 0 ? '' : pair.slice(eq + 1);
  }
  return undefined;
}

/** Where a generated cookie's Set-Cookie value goes (the stream adds it to the upstream response). */
export interface SetCookieSink {
  hashSetCookie: string | undefined;
}

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

/** The generated cookie's value for a client: 16 hex digits derived from its address. */
export function generatedCookieValue(remoteAddress: string): string {
  return hex8(hashString(remoteAddress)) + hex8(hashString(`${remoteAddress}/keel`));
}

/** Envoy's Set-Cookie for a generated hash cookie: name="value"; Max-Age; Path; attributes; HttpOnly. */
export function generatedSetCookie(p: HashPolicyConfig, value: string): string {
  let c = `${p.name}="${value}"`;
  const ttl = p.cookieTtlMs ?? 0;
  if (ttl > 0) c += `; Max-Age=${Math.floor(ttl / 1000)}`;
  if (p.cookiePath !== undefined && p.cookiePath !== '') c += `; Path=${p.cookiePath}`;
  if (p.cookieAttributes !== undefined) for (const a of p.cookieAttributes) c += `; ${a}`;
  return `${c}; HttpOnly`;
}

/**
 * The request hash (uint32) for `policies`, or undefined when none of them yields a value. A
 * generated cookie's Set-Cookie goes to `sink`.
 */
export function requestHash(
  policies: readonly HashPolicyConfig[],
  headers: HeaderMap,
  path: string,
  remoteAddress: string,
  sink?: SetCookieSink,
): number | undefined {
  let hash: number | undefined;
  for (const p of policies) {
    let v: string | undefined;
    switch (p.kind) {
      case 'header':
        v = headers.get(p.name);
        break;
      case 'cookie':
        v = cookieValue(headers.get('cookie'), p.name);
        if (v === undefined && p.cookieTtlMs !== undefined && remoteAddress !== '') {
          v = generatedCookieValue(remoteAddress);
          if (sink !== undefined) sink.hashSetCookie = generatedSetCookie(p, v);
        }
        break;
      case 'source_ip':
        v = remoteAddress === '' ? undefined : remoteAddress;
        break;
      case 'query_parameter':
        v = queryValue(path, p.name);
        break;
    }
    if (v === undefined) continue;
    const h = hashString(v);
    hash = hash === undefined ? h : (((hash << 1) | (hash >>> 31)) ^ h) >>> 0;
    if (p.terminal) break;
  }
  return hash;
}
