// Per-route filter config, compiled when the route table is built. Filters register a compiler
// for their per-route config types (src/filters/index.ts, registerHttpFilters); the route table
// calls it once per typed_per_filter_config entry, so the request path only reads the result.
// Config types nobody registered are kept as decoded.

import type { PerFilterConfig } from '../config/types';

export type PerFilterCompiler = (config: unknown) => unknown;

/** Compiles one filter's configs from every level that has one, most specific first (CORS merges fields). */
export type PerFilterLevelsCompiler = (configs: readonly unknown[]) => unknown;

const COMPILERS = new Map<string, PerFilterCompiler>();
const LEVEL_COMPILERS = new Map<string, PerFilterLevelsCompiler>();

export function registerPerFilterCompiler(typeName: string, compile: PerFilterCompiler): void {
  COMPILERS.set(typeName, compile);
}

/** For filters whose per-route config merges across levels (route over virtual host), as Envoy's CORS. */
export function registerPerFilterLevelsCompiler(typeName: string, compile: PerFilterLevelsCompiler): void {
  LEVEL_COMPILERS.set(typeName, compile);
}

/**
 * filter name -> compiled per-route config, most specific level first (route, then virtual host);
 * a disabled entry becomes null.
 */
export function compilePerFilterConfigs(levels: readonly Readonly<Record<string, PerFilterConfig>>[]): ReadonlyMap<string, unknown> | undefined {
  let out: Map<string, unknown> | undefined;
  for (const level of levels) {
    for (const name of Object.keys(level)) {
      if (out?.has(name)) continue;
      const e = level[name];
      const merge = e.disabled ? undefined : LEVEL_COMPILERS.get(e.typeName);
      if (merge !== undefined) {
        // this level and the less specific ones with the same filter type, up to a disabled one
        const configs: unknown[] = [];
        for (let j = levels.indexOf(level); j < levels.length; j++) {
          const x = levels[j][name];
          if (x === undefined) continue;
          if (x.disabled || x.typeName !== e.typeName) break;
          configs.push(x.config);
        }
        (out ??= new Map()).set(name, merge(configs));
        continue;
      }
      const compile = COMPILERS.get(e.typeName);
      (out ??= new Map()).set(name, e.disabled ? null : compile ? compile(e.config) : e.config);
    }
  }
  return out;
}
