// Compiled matchers: StringMatcher, HeaderMatcher, query-parameter and metadata matchers, built once
// from config into closures. The per-request side only calls them; nothing here parses or compiles
// while a request is being matched.

import type {
  HeaderMatcherConfig,
  MetadataMatcherConfig,
  QueryParameterMatcherConfig,
  StringMatcherConfig,
  ValueMatcherConfig,
} from '../config/types';
import { compileRe2Full } from '../common/re2';
import type { HeaderMap } from '../http/headers';

export type StringPredicate = (value: string) => boolean;

/** Thrown at compile time only (config validation catches these earlier with paths). */
export class MatcherCompileError extends Error {}

export function compileStringMatcher(cfg: StringMatcherConfig): StringPredicate {
  if (cfg.kind === 'regex') {
    const compiled = compileRe2Full(cfg.regex, { ignoreCase: cfg.ignoreCase });
    if ('error' in compiled) throw new MatcherCompileError(compiled.error);
    const re = compiled.re;
    return (v) => re.test(v);
  }
  const ic = cfg.ignoreCase;
  const want = ic ? cfg.value.toLowerCase() : cfg.value;
  switch (cfg.kind) {
    case 'exact':
      return ic ? (v) => v.length === want.length && v.toLowerCase() === want : (v) => v === want;
    case 'prefix':
      return ic ? (v) => v.length >= want.length && v.slice(0, want.length).toLowerCase() === want : (v) => v.startsWith(want);
    case 'suffix':
      return ic ? (v) => v.length >= want.length && v.slice(v.length - want.length).toLowerCase() === want : (v) => v.endsWith(want);
    case 'contains':
      return ic ? (v) => v.toLowerCase().includes(want) : (v) => v.includes(want);
  }
}

const INT_RE = /^[+-]?\d+$/;

export type HeaderPredicate = (headers: HeaderMap) => boolean;

/**
 * Envoy's HeaderMatcher: repeated headers are joined with ','; an absent header matches only a
 * `present_match: false` (or, inverted, `present_match: true`) unless treat_missing_header_as_empty,
 * which evaluates the matcher against "" instead.
 */
export function compileHeaderMatcher(cfg: HeaderMatcherConfig): HeaderPredicate {
  // Envoy keeps the HTTP/1 Host header as :authority and looks `host` up as :authority.
  const name = cfg.name === 'host' ? ':authority' : cfg.name;
  const invert = cfg.invert;
  const missingAsEmpty = cfg.treatMissingAsEmpty;
  let specific: StringPredicate;
  let isPresent = false;
  let presentValue = true;
  switch (cfg.kind) {
    case 'string':
      specific = compileStringMatcher(cfg.match);
      break;
    case 'present':
      isPresent = true;
      presentValue = cfg.present;
      specific = () => cfg.present;
      break;
    case 'range': {
      const { start, end } = cfg.range;
      specific = (v) => {
        if (!INT_RE.test(v)) return false;
        const n = Number(v);
        return Number.isSafeInteger(n) ? n >= start && n < end : false;
      };
      break;
    }
  }
  const absentResult = invert ? isPresent && presentValue : isPresent && !presentValue;
  // Pseudo-headers: HTTP/1 requests carry Host, not :authority; the codec maps both ways.
  return (headers) => {
    const value = headers.get(name);
    if (value === undefined) {
      if (!missingAsEmpty) return absentResult;
      return specific('') !== invert;
    }
    return specific(value) !== invert;
  };
}

export function compileHeaderMatchers(list: readonly HeaderMatcherConfig[]): HeaderPredicate | undefined {
  if (list.length === 0) return undefined;
  const preds = list.map(compileHeaderMatcher);
  if (preds.length === 1) return preds[0];
  return (h) => {
    for (let i = 0; i < preds.length; i++) if (!preds[i](h)) return false;
    return true;
  };
}

/**
 * Query string -> first value per name, as Envoy's route matching sees it (QueryParamsMulti::
 * parseQueryString): names and values are NOT percent-decoded, the fragment is ignored.
 */
export function parseQuery(path: string): Map<string, string> {
  const out = new Map<string, string>();
  const q = path.indexOf('?');
  if (q < 0) return out;
  let end = path.indexOf('#', q);
  if (end < 0) end = path.length;
  let i = q + 1;
  while (i <= end) {
    let amp = path.indexOf('&', i);
    if (amp < 0 || amp > end) amp = end;
    if (amp > i) {
      const eq = path.indexOf('=', i);
      const hasValue = eq >= 0 && eq < amp;
      const k = path.slice(i, hasValue ? eq : amp);
      if (!out.has(k)) out.set(k, hasValue ? path.slice(eq + 1, amp) : '');
    }
    i = amp + 1;
  }
  return out;
}

export type QueryPredicate = (query: Map<string, string>) => boolean;

export function compileQueryMatcher(cfg: QueryParameterMatcherConfig): QueryPredicate {
  const name = cfg.name;
  if (cfg.match) {
    const m = compileStringMatcher(cfg.match);
    return (q) => {
      const v = q.get(name);
      return v !== undefined && m(v);
    };
  }
  const want = cfg.present ?? true;
  return (q) => q.has(name) === want;
}

export type ValuePredicate = (v: unknown) => boolean;

export function compileValueMatcher(cfg: ValueMatcherConfig): ValuePredicate {
  switch (cfg.kind) {
    case 'null':
      return (v) => v === null;
    case 'double_exact':
      return (v) => typeof v === 'number' && v === cfg.value;
    case 'double_range':
      return (v) => typeof v === 'number' && v >= cfg.range.start && v < cfg.range.end;
    case 'string': {
      const m = compileStringMatcher(cfg.match);
      return (v) => typeof v === 'string' && m(v);
    }
    case 'bool':
      return (v) => typeof v === 'boolean' && v === cfg.value;
    case 'present':
      return (v) => (v !== undefined) === cfg.present;
    case 'list': {
      const inner = compileValueMatcher(cfg.oneOf);
      return (v) => Array.isArray(v) && v.some(inner);
    }
  }
}

export type MetadataPredicate = (metadata: Readonly<Record<string, unknown>> | undefined) => boolean;

export function compileMetadataMatcher(cfg: MetadataMatcherConfig): MetadataPredicate {
  const value = compileValueMatcher(cfg.value);
  const { filter, path, invert } = cfg;
  return (md) => {
    let cur: unknown = md?.[filter];
    for (const key of path) {
      if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) {
        cur = undefined;
        break;
      }
      cur = (cur as Record<string, unknown>)[key];
    }
    return value(cur) !== invert;
  };
}
