// The HTTP filters keel implements, by config type: each builds its shared, compiled state once
// from its decoded config (src/config/filters/) into an HttpFilterFactory, and may compile its
// per-route config for the route table. Add a filter: a folder or file here, one entry in FILTERS.
// registerHttpFilters() must run before route tables are built (the server and route-check call it).

import type { HttpFilterConfig } from '../config/types';
import type { HttpFilterFactory } from '../http/filter';
import { rbacFilterType } from './rbac';
import { faultFilterType } from './fault';
import { corsFilterType } from './cors';
import { registerPerFilterCompiler, registerPerFilterLevelsCompiler } from '../router/per-filter';

/** What a filter's factory may use besides its config. */
export interface FilterContext {
  /** the HCM's stat prefix, for the filter's own stats */
  readonly statPrefix: string;
  /** how the HCM derives the downstream client address from x-forwarded-for (RBAC remote_ip) */
  readonly xff?: { readonly useRemoteAddress: boolean; readonly xffNumTrustedHops: number };
}

export interface HttpFilterType {
  /** the filter's typed_config type name (as in config/http-filters.ts) */
  readonly typeName: string;
  createFactory(cfg: HttpFilterConfig, ctx: FilterContext): HttpFilterFactory;
  /** per-route config type names -> compiler of their decoded config */
  readonly perRoute?: Readonly<Record<string, (config: unknown) => unknown>>;
  /** per-route config type names -> compiler of every level's config, most specific first (merging) */
  readonly perRouteLevels?: Readonly<Record<string, (configs: readonly unknown[]) => unknown>>;
}

function filterTypes(): readonly HttpFilterType[] {
  return [faultFilterType, corsFilterType, rbacFilterType];
}

let byType: Map<string, HttpFilterType> | undefined;

/** Register every filter's per-route compiler with the route table; idempotent. */
export function registerHttpFilters(): void {
  if (byType !== undefined) return;
  byType = new Map();
  for (const t of filterTypes()) {
    byType.set(t.typeName, t);
    for (const [typeName, compile] of Object.entries(t.perRoute ?? {})) registerPerFilterCompiler(typeName, compile);
    for (const [typeName, compile] of Object.entries(t.perRouteLevels ?? {})) registerPerFilterLevelsCompiler(typeName, compile);
  }
}

/**
 * Factories for an HCM's filters, router excluded, in config order. A filter marked disabled acts
 * only on routes whose typed_per_filter_config enables it (Envoy's HttpFilter.disabled).
 */
export function buildHttpFilters(filters: readonly HttpFilterConfig[], ctx: FilterContext): HttpFilterFactory[] {
  registerHttpFilters();
  const out: HttpFilterFactory[] = [];
  for (const f of filters) {
    const t = byType!.get(f.typeName);
    if (t === undefined) continue;
    const factory = t.createFactory(f, ctx);
    out.push(f.disabled ? new PerRouteEnabledFactory(factory) : factory);
  }
  return out;
}

/** A filter disabled by default: it makes a stream filter only where the route has (enabled) config for it. */
class PerRouteEnabledFactory implements HttpFilterFactory {
  readonly name: string;
  readonly stats?: () => Record<string, number>;

  constructor(private readonly inner: HttpFilterFactory) {
    this.name = inner.name;
    if (inner.stats) this.stats = () => inner.stats!();
  }

  create(stream: Parameters<HttpFilterFactory['create']>[0]): ReturnType<HttpFilterFactory['create']> {
    const c = stream.perFilterConfig(this.name);
    return c === undefined || c === null ? undefined : this.inner.create(stream);
  }
}
