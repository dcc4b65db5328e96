// Header value templates with Envoy's %COMMAND% substitutions, compiled once into parts. Rendering
// concatenates the parts against a per-request context; it never re-parses the template.

import type { HeaderMap } from '../http/headers';

export interface FormatContext {
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  readonly requestHeaders: HeaderMap;
  readonly responseHeaders?: HeaderMap;
  readonly protocol: string; // HTTP/1.1, HTTP/2
  readonly upstreamAddress?: string;
  readonly upstreamPort?: number;
  readonly upstreamMetadata?: Readonly<Record<string, unknown>>;
  readonly startTime?: number;
}

type Part = string | ((ctx: FormatContext) => string);

export interface CompiledFormat {
  readonly constant: string | undefined;
  readonly parts: readonly Part[];
}

import { hostname } from 'node:os';

function joinHostPort(addr: string, port: number): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

function commandPart(cmd: string, arg: string | undefined, maxLength: number | undefined): Part | string {
  switch (cmd) {
    case 'DOWNSTREAM_REMOTE_ADDRESS':
    case 'DOWNSTREAM_DIRECT_REMOTE_ADDRESS':
      return (c) => joinHostPort(c.remoteAddress, c.remotePort);
    case 'DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT':
    case 'DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT':
      return (c) => c.remoteAddress;
    case 'DOWNSTREAM_REMOTE_PORT':
    case 'DOWNSTREAM_DIRECT_REMOTE_PORT':
      return (c) => String(c.remotePort);
    case 'DOWNSTREAM_LOCAL_ADDRESS':
      return (c) => joinHostPort(c.localAddress, c.localPort);
    case 'DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT':
      return (c) => c.localAddress;
    case 'DOWNSTREAM_LOCAL_PORT':
      return (c) => String(c.localPort);
    case 'UPSTREAM_REMOTE_ADDRESS':
      return (c) => (c.upstreamAddress ? joinHostPort(c.upstreamAddress, c.upstreamPort ?? 0) : '');
    case 'PROTOCOL':
      return (c) => c.protocol;
    case 'HOSTNAME': {
      return hostname();
    }
    case 'START_TIME':
      return (c) => new Date(c.startTime ?? Date.now()).toISOString();
    case 'REQ': {
      if (!arg) throw new Error('%REQ(...)% needs a header name');
      const [main, alt] = headerNames(arg);
      return (c) => truncate(firstOf(c.requestHeaders, main, alt), maxLength);
    }
    case 'RESP': {
      if (!arg) throw new Error('%RESP(...)% needs a header name');
      const [main, alt] = headerNames(arg);
      return (c) => (c.responseHeaders ? truncate(firstOf(c.responseHeaders, main, alt), maxLength) : '');
    }
    case 'UPSTREAM_METADATA': {
      let path: unknown;
      try {
        path = JSON.parse(arg ?? '');
      } catch {
        throw new Error(`%UPSTREAM_METADATA(${arg ?? ''})% needs a JSON array of strings: ["namespace", "key", ...]`);
      }
      if (!Array.isArray(path) || path.length < 2 || !path.every((p) => typeof p === 'string'))
        throw new Error(`%UPSTREAM_METADATA(${arg ?? ''})% needs a JSON array of at least two strings`);
      const keys = path as string[];
      return (c) => {
        let cur: unknown = c.upstreamMetadata;
        for (const k of keys) {
          if (cur === null || typeof cur !== 'object') return '';
          cur = (cur as Record<string, unknown>)[k];
        }
        if (cur === undefined || cur === null) return '';
        return typeof cur === 'string' ? cur : typeof cur === 'object' ? JSON.stringify(cur) : String(cur);
      };
    }
    default:
      throw new Error(`unsupported header substitution %${cmd}${arg !== undefined ? `(${arg})` : ''}%`);
  }
}

function mapPseudo(name: string): string {
  const n = name.toLowerCase();
  return n === 'host' ? ':authority' : n;
}

/** `%REQ(main?alternative)%`: Envoy's HeaderFormatter takes the alternative when main is absent. */
function headerNames(arg: string): [string, string | undefined] {
  const q = arg.indexOf('?');
  if (q < 0) return [mapPseudo(arg), undefined];
  const main = arg.slice(0, q);
  const alt = arg.slice(q + 1);
  if (main === '' || alt === '' || alt.includes('?')) throw new Error(`invalid header configuration %REQ/RESP(${arg})%: expected 'main?alternative'`);
  return [mapPseudo(main), mapPseudo(alt)];
}

/** The first value of a header (Envoy formats header[0], not the ','-joined values). */
function firstOf(headers: HeaderMap, main: string, alt: string | undefined): string {
  const v = headers.first(main);
  if (v !== undefined || alt === undefined) return v ?? '';
  return headers.first(alt) ?? '';
}

function truncate(v: string, maxLength: number | undefined): string {
  return maxLength !== undefined && v.length > maxLength ? v.slice(0, maxLength) : v;
}

/** Compiles a header value; throws Error with a message naming the bad command. */
export function compileFormat(template: string): CompiledFormat {
  const parts: Part[] = [];
  let lit = '';
  let i = 0;
  while (i < template.length) {
    const c = template[i];
    if (c !== '%') {
      lit += c;
      i++;
      continue;
    }
    if (template[i + 1] === '%') {
      lit += '%';
      i += 2;
      continue;
    }
    const end = findCommandEnd(template, i + 1);
    if (end < 0) throw new Error(`unterminated %COMMAND% in header value "${template}"`);
    const body = template.slice(i + 1, end);
    const m = /^([A-Z_0-9]+)(?:\((.*)\))?(?::(\d+))?$/s.exec(body);
    if (!m) throw new Error(`malformed substitution %${body}% in header value "${template}"`);
    const part = commandPart(m[1], m[2], m[3] === undefined ? undefined : Number(m[3]));
    if (typeof part === 'string') lit += part;
    else {
      if (lit) parts.push(lit);
      lit = '';
      parts.push(part);
    }
    i = end + 1;
  }
  if (lit || parts.length === 0) parts.push(lit);
  const constant = parts.length === 1 && typeof parts[0] === 'string' ? parts[0] : undefined;
  return { constant, parts };
}

function findCommandEnd(s: string, from: number): number {
  let depth = 0;
  for (let i = from; i < s.length; i++) {
    const c = s[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '%' && depth <= 0) return i;
  }
  return -1;
}

export function renderFormat(f: CompiledFormat, ctx: FormatContext): string {
  if (f.constant !== undefined) return f.constant;
  let out = '';
  const parts = f.parts;
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    out += typeof p === 'string' ? p : p(ctx);
  }
  return out;
}
