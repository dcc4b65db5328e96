// The HTTP filters keel implements besides the router, as config: for each typed_config type, the
// decoder of its filter-level config and of its per-route config (typed_per_filter_config), both
// into plain domain types. The runtime side (src/filters/) maps the same type names to factories.
// Decoders collect problems on the Reader like the rest of the config layer; they never throw.
// One file per filter in ./filters/, listed once in FILTER_DECODERS below.

import type { Reader } from './decode';
import { rbacDecoder } from './filters/rbac';
import { faultDecoder } from './filters/fault';
import { corsDecoder } from './filters/cors';

export interface HttpFilterDecoder {
  /** The filter's typed_config message (without type.googleapis.com/). */
  readonly typeName: string;
  /** Filter-level config (HttpFilter.typed_config); undefined when it had problems. */
  decode(r: Reader): unknown;
  /** Per-route config (typed_per_filter_config); absent when the filter has none. */
  decodePerRoute?(r: Reader): unknown;
  /** The per-route config's message names (default: the filter config's). */
  readonly perRouteTypeNames?: readonly string[];
}

/**
 * Every filter keel implements. Add a filter: its decoder file in ./filters/, and one line here.
 * A function, read on first use: the decoder files import bootstrap.ts's shared decoders, which
 * import this module, so nothing here may run while the modules are still loading.
 */
function filterDecoders(): readonly HttpFilterDecoder[] {
  return [faultDecoder, corsDecoder, rbacDecoder];
}

let byType: Map<string, HttpFilterDecoder> | undefined;
let byPerRouteType: Map<string, HttpFilterDecoder> | undefined;

function index(): void {
  byType = new Map();
  byPerRouteType = new Map();
  for (const d of filterDecoders()) {
    byType.set(d.typeName, d);
    if (d.decodePerRoute) for (const t of d.perRouteTypeNames ?? [d.typeName]) byPerRouteType.set(t, d);
  }
}

export function filterDecoder(typeName: string): HttpFilterDecoder | undefined {
  if (byType === undefined) index();
  return byType!.get(typeName);
}

export function perRouteDecoder(typeName: string): HttpFilterDecoder | undefined {
  if (byPerRouteType === undefined) index();
  return byPerRouteType!.get(typeName);
}
