// A route's hash_policy -> the request's hash for RING_HASH / MAGLEV, as Envoy computes it: each
// policy that yields a value is hashed and folded into the running hash (rotate left, xor); a
// terminal policy that yields a value ends the walk. No policy yielding a value: no hash (the
// balancer then picks at random). Pure; reads only the request.

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

/** The request hash (uint32) for `policies`, or undefined when none of them yields a value. */
export function requestHash(policies: readonly HashPolicyConfig[], headers: HeaderMap, path: string, remoteAddress: string): number | undefined {
  let hash: number | undefined;
  for (const p of policies) {
    let v: string | undefined;
    switch (p.kind) {
      case 'header':
        v = headers.get(p.name);
        break;
      case 'cookie':
        v = cookieValue(headers.get('cookie'), p.name);
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
