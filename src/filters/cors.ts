// envoy.filters.http.cors at request time, driven by per-route CorsPolicy (route over virtual host,
// field by field as Envoy merges them). A preflight (OPTIONS with Origin and
// Access-Control-Request-Method) from an allowed origin is answered here with 200 and the
// allow-* headers; an actual request from an allowed origin gets access-control-allow-origin
// (and -credentials, -expose-headers) on its response. Origins that do not match get nothing and
// the request goes on (or, with forward_not_matching_preflights false, the preflight gets a bare 200).
// filter_enabled / shadow_enabled are runtime fractions. Origin matchers are compiled with the route
// table; a stream without an Origin header or a CORS policy costs one lookup.

import { random32 } from '../common/random';
import { CORS_POLICY_TYPE, CORS_TYPE, LEGACY_CORS_KEY, type CorsPolicyConfig } from '../config/filters/cors';
import type { HttpFilterConfig, RuntimeFractionConfig } from '../config/types';
import { FilterCallbacks, FilterHeadersStatus, HttpFilterFactory, StreamFilter } from '../http/filter';
import { HeaderMap } from '../http/headers';
import { compileStringMatcher, StringPredicate } from '../router/matchers';
import type { Runtime } from '../router/route-table';
import type { FilterContext, HttpFilterType } from './index';

/** The CorsPolicy of a route, merged from its levels (the most specific set value wins). */
export class CompiledCors {
  /** from the most specific level that lists any */
  readonly allowOrigins: readonly StringPredicate[] | undefined;
  readonly allowMethods: string | undefined;
  readonly allowHeaders: string | undefined;
  readonly exposeHeaders: string | undefined;
  readonly maxAge: string | undefined;
  readonly allowCredentials: boolean;
  readonly allowPrivateNetworkAccess: boolean;
  readonly forwardNotMatchingPreflights: boolean;
  /** the most specific level's filter_enabled / shadow_enabled (Envoy reads only that one) */
  private readonly filterEnabled: RuntimeFractionConfig | undefined;
  private readonly shadowEnabled: RuntimeFractionConfig | undefined;

  /** `levels`: most specific first. */
  constructor(levels: readonly CorsPolicyConfig[]) {
    const first = <K extends keyof CorsPolicyConfig>(k: K): CorsPolicyConfig[K] | undefined => {
      for (const l of levels) if (l[k] !== undefined) return l[k];
      return undefined;
    };
    const origins = levels.find((l) => l.allowOrigins.length > 0)?.allowOrigins;
    this.allowOrigins = origins?.map(compileStringMatcher);
    this.allowMethods = first('allowMethods');
    this.allowHeaders = first('allowHeaders');
    this.exposeHeaders = first('exposeHeaders');
    this.maxAge = first('maxAge');
    this.allowCredentials = first('allowCredentials') ?? false;
    this.allowPrivateNetworkAccess = first('allowPrivateNetworkAccess') ?? false;
    this.forwardNotMatchingPreflights = first('forwardNotMatchingPreflights') ?? true;
    this.filterEnabled = levels[0]?.filterEnabled;
    this.shadowEnabled = levels[0]?.shadowEnabled;
  }

  enabled(runtime: Runtime): boolean {
    const f = this.filterEnabled;
    return f === undefined || runtime.fractionEnabled(f.runtimeKey, f.defaultValue.numerator, f.defaultValue.denominator, random32());
  }

  shadow(runtime: Runtime): boolean {
    const f = this.shadowEnabled;
    return f !== undefined && runtime.fractionEnabled(f.runtimeKey, f.defaultValue.numerator, f.defaultValue.denominator, random32());
  }

  originAllowed(origin: string): boolean {
    const list = this.allowOrigins;
    if (list === undefined) return false;
    for (let i = 0; i < list.length; i++) if (list[i]('*') || list[i](origin)) return true;
    return false;
  }
}

export interface CorsStats {
  originValid: number;
  originInvalid: number;
}

export class CorsFilterFactory implements HttpFilterFactory {
  readonly counters: CorsStats = { originValid: 0, originInvalid: 0 };
  private readonly prefix: string;

  constructor(
    readonly name: string,
    statPrefix: string,
  ) {
    this.prefix = `http.${statPrefix}.cors.`;
  }

  create(stream: FilterCallbacks): StreamFilter | undefined {
    let policy = stream.perFilterConfig(this.name);
    // the deprecated route / virtual host `cors` field applies when no typed per-filter policy does
    if (policy === undefined) policy = stream.perFilterConfig(LEGACY_CORS_KEY);
    if (!(policy instanceof CompiledCors)) return undefined;
    const origin = stream.requestHeaders.first('origin');
    if (origin === undefined || origin === '') return undefined;
    const on = policy.enabled(stream.runtime);
    if (!on && !policy.shadow(stream.runtime)) return undefined;
    return new CorsStreamFilter(this, policy, stream, origin, on);
  }

  stats(): Record<string, number> {
    return { [`${this.prefix}origin_valid`]: this.counters.originValid, [`${this.prefix}origin_invalid`]: this.counters.originInvalid };
  }
}

class CorsStreamFilter implements StreamFilter {
  /** the response gets CORS headers (an allowed origin, filter enabled, not answered as a preflight) */
  private decorate = false;

  constructor(
    private readonly factory: CorsFilterFactory,
    private readonly p: CompiledCors,
    private readonly cb: FilterCallbacks,
    private readonly origin: string,
    /** filter_enabled (else only shadow_enabled: count, change nothing) */
    private readonly on: boolean,
  ) {}

  decodeHeaders(headers: HeaderMap): FilterHeadersStatus {
    const p = this.p;
    const requestMethod = this.cb.method === 'OPTIONS' ? headers.first('access-control-request-method') : undefined;
    const preflight = requestMethod !== undefined && requestMethod !== '';
    if (!p.originAllowed(this.origin)) {
      this.factory.counters.originInvalid++;
      if (this.on && preflight && !p.forwardNotMatchingPreflights) {
        this.cb.sendLocalReply(200, '', 'cors_response', '');
        return FilterHeadersStatus.StopIteration;
      }
      return FilterHeadersStatus.Continue;
    }
    this.factory.counters.originValid++;
    if (!this.on) return FilterHeadersStatus.Continue;
    if (!preflight) {
      this.decorate = true;
      return FilterHeadersStatus.Continue;
    }
    const out = new HeaderMap(['access-control-allow-origin', this.origin]);
    if (p.allowCredentials) out.add('access-control-allow-credentials', 'true');
    if (p.allowMethods !== undefined) out.add('access-control-allow-methods', p.allowMethods);
    if (p.allowHeaders !== undefined) out.add('access-control-allow-headers', p.allowHeaders);
    if (p.maxAge !== undefined) out.add('access-control-max-age', p.maxAge);
    if (p.allowPrivateNetworkAccess && headers.first('access-control-request-private-network') === 'true') {
      out.add('access-control-allow-private-network', 'true');
    }
    this.cb.sendLocalReply(200, '', 'cors_response', '', out);
    return FilterHeadersStatus.StopIteration;
  }

  encodeHeaders(_status: number, headers: HeaderMap): void {
    if (!this.decorate) return;
    const p = this.p;
    headers.set('access-control-allow-origin', this.origin);
    if (p.allowCredentials) headers.set('access-control-allow-credentials', 'true');
    if (p.exposeHeaders !== undefined) headers.set('access-control-expose-headers', p.exposeHeaders);
  }
}

export const corsFilterType: HttpFilterType = {
  typeName: CORS_TYPE,
  createFactory(cfg: HttpFilterConfig, ctx: FilterContext): HttpFilterFactory {
    return new CorsFilterFactory(cfg.name, ctx.statPrefix);
  },
  perRouteLevels: { [CORS_POLICY_TYPE]: (levels) => new CompiledCors(levels as readonly CorsPolicyConfig[]) },
};
