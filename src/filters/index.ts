// The HTTP filters keel implements, by config type: each builds its shared, compiled state once
// from its decoded config (src/config/filters/) into an HttpFilterFactory, and may compile its
// per-route config for the route table. Add a filter: a folder or file here, one entry in FILTERS.
// registerHttpFilters() must run before route tables are built (the server and route-check call it).

import type { HttpFilterConfig } from '../config/types';
import type { HttpFilterFactory } from '../http/filter';
import { registerPerFilterCompiler } from '../router/per-filter';

/** What a filter's factory may use besides its config. */
export interface FilterContext {
  /** the HCM's stat prefix, for the filter's own stats */
  readonly statPrefix: string;
}

export interface HttpFilterType {
  /** the filter's typed_config type name (as in config/http-filters.ts) */
  readonly typeName: string;
  createFactory(cfg: HttpFilterConfig, ctx: FilterContext): HttpFilterFactory;
  /** per-route config type names -> compiler of their decoded config */
  readonly perRoute?: Readonly<Record<string, (config: unknown) => unknown>>;
}

function filterTypes(): readonly HttpFilterType[] {
  return [];
}

let byType: Map<string, HttpFilterType> | undefined;

/** Register every filter's per-route compiler with the route table; idempotent. */
export function registerHttpFilters(): void {
  if (byType !== undefined) return;
  byType = new Map();
  for (const t of filterTypes()) {
    byType.set(t.typeName, t);
    for (const [typeName, compile] of Object.entries(t.perRoute ?? {})) registerPerFilterCompiler(typeName, compile);
  }
}

/**
 * Factories for an HCM's filters, router excluded, in config order. Filters marked disabled are
 * left out (Envoy then enables them only from per-route config, which keel does not do).
 */
export function buildHttpFilters(filters: readonly HttpFilterConfig[], ctx: FilterContext): HttpFilterFactory[] {
  registerHttpFilters();
  const out: HttpFilterFactory[] = [];
  for (const f of filters) {
    if (f.disabled) continue;
    const t = byType!.get(f.typeName);
    if (t !== undefined) out.push(t.createFactory(f, ctx));
  }
  return out;
}
