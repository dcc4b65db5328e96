// Config decoder for envoy.filters.http.cors: the filter's own config (extensions.filters.http.cors.v3.Cors,
// an empty message) and its per-route config (CorsPolicy, on routes or virtual hosts, as Istio emits
// it from a VirtualService corsPolicy). Decodes into plain domain types; origin matchers are compiled
// by src/filters/cors.ts when the route table is built, never here.

import type { Reader } from '../decode';
import type { RuntimeFractionConfig, StringMatcherConfig } from '../types';
import type { HttpFilterDecoder } from '../http-filters';
import { decodeRuntimeFraction, decodeStringMatcher } from '../bootstrap';

export const CORS_TYPE = 'envoy.extensions.filters.http.cors.v3.Cors';
export const CORS_POLICY_TYPE = 'envoy.extensions.filters.http.cors.v3.CorsPolicy';

/**
 * The deprecated route-level `cors` (RouteAction.cors, VirtualHost.cors) is kept in the level's
 * typed_per_filter_config under this key, which no filter name can be; the CORS filter reads it
 * when no typed per-filter policy applies (Envoy's order).
 */
export const LEGACY_CORS_KEY = '(route.cors)';

/** `perFilter` with the deprecated `cors` field's policy added under LEGACY_CORS_KEY. */
export function withLegacyCors<T>(perFilter: Record<string, T | { typeName: string; config: CorsPolicyConfig; disabled: boolean }>, cors: CorsPolicyConfig | undefined) {
  return cors === undefined ? perFilter : { ...perFilter, [LEGACY_CORS_KEY]: { typeName: CORS_POLICY_TYPE, config: cors, disabled: false } };
}

/** CorsPolicy; unset fields are undefined (a less specific level may supply them). */
export interface CorsPolicyConfig {
  readonly allowOrigins: readonly StringMatcherConfig[];
  readonly allowMethods?: string;
  readonly allowHeaders?: string;
  readonly exposeHeaders?: string;
  readonly maxAge?: string;
  readonly allowCredentials?: boolean;
  /** unset: enabled for every request */
  readonly filterEnabled?: RuntimeFractionConfig;
  /** unset: no shadow mode */
  readonly shadowEnabled?: RuntimeFractionConfig;
  readonly allowPrivateNetworkAccess?: boolean;
  /** Envoy default true: preflights from origins that do not match go upstream */
  readonly forwardNotMatchingPreflights?: boolean;
}

function optNonEmpty(r: Reader, field: string): string | undefined {
  const v = r.optStr(field);
  if (v !== undefined && /[\0\r\n]/.test(v)) {
    r.problem('header values must not contain NUL, CR or LF', field);
    return undefined;
  }
  return v === '' ? undefined : v;
}

export function decodeCorsPolicy(r: Reader): CorsPolicyConfig | undefined {
  const before = r.diag.problems.length;
  const allowOrigins = r.objects('allow_origin_string_match', 'StringMatcher', decodeStringMatcher);
  const allowMethods = optNonEmpty(r, 'allow_methods');
  const allowHeaders = optNonEmpty(r, 'allow_headers');
  const exposeHeaders = optNonEmpty(r, 'expose_headers');
  const maxAge = optNonEmpty(r, 'max_age');
  if (maxAge !== undefined && !/^\d+$/.test(maxAge)) r.problem(`expected a number of seconds, got '${maxAge}'`, 'max_age');
  const allowCredentials = r.optBool('allow_credentials');
  const filterEnabled = r.sub('filter_enabled', 'RuntimeFractionalPercent', decodeRuntimeFraction);
  const shadowEnabled = r.sub('shadow_enabled', 'RuntimeFractionalPercent', decodeRuntimeFraction);
  const allowPrivateNetworkAccess = r.optBool('allow_private_network_access');
  const forwardNotMatchingPreflights = r.optBool('forward_not_matching_preflights');
  if (r.diag.problems.length > before) return undefined;
  return {
    allowOrigins,
    ...(allowMethods !== undefined ? { allowMethods } : {}),
    ...(allowHeaders !== undefined ? { allowHeaders } : {}),
    ...(exposeHeaders !== undefined ? { exposeHeaders } : {}),
    ...(maxAge !== undefined ? { maxAge } : {}),
    ...(allowCredentials !== undefined ? { allowCredentials } : {}),
    ...(filterEnabled !== undefined ? { filterEnabled } : {}),
    ...(shadowEnabled !== undefined ? { shadowEnabled } : {}),
    ...(allowPrivateNetworkAccess !== undefined ? { allowPrivateNetworkAccess } : {}),
    ...(forwardNotMatchingPreflights !== undefined ? { forwardNotMatchingPreflights } : {}),
  };
}

export const corsDecoder: HttpFilterDecoder = {
  typeName: CORS_TYPE,
  // the filter-level message has no fields: the policies are per route
  decode: () => ({}),
  decodePerRoute: decodeCorsPolicy,
  perRouteTypeNames: [CORS_POLICY_TYPE],
};
