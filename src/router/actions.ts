// What a matched route does to a request besides choosing a cluster: redirect locations, direct
// responses, host rewrites. Pure functions over the compiled route and the request's headers.

import type { RedirectAction } from '../config/types';
import type { HeaderMap } from '../http/headers';
import { CompiledRoute, queryStart, rewritePrefix } from './route-table';

/** Envoy's redirect URI (RouteEntryImplBase::newUri). */
export function redirectLocation(route: CompiledRoute, a: RedirectAction, headers: HeaderMap, secure: boolean): string {
  const forwardedProto = headers.first('x-forwarded-proto') ?? (secure ? 'https' : 'http');
  const scheme = a.schemeRedirect ?? forwardedProto;
  const port = a.portRedirect !== undefined && a.portRedirect !== 0 ? `:${a.portRedirect}` : '';
  const host = a.hostRedirect ?? requestHostForRedirect(headers.first(':authority') ?? '', scheme, port, forwardedProto);
  const origPath = headers.first(':path') ?? '/';
  // Envoy (Http::Utility::newUri): empty path_redirect / prefix_rewrite are the proto defaults, i.e. unset.
  const pathRedirect = a.pathRedirect !== undefined && a.pathRedirect !== '' ? a.pathRedirect : undefined;
  let path: string;
  if (pathRedirect !== undefined) {
    path = pathRedirect;
    if (!path.includes('?')) {
      const q = origPath.indexOf('?');
      if (q >= 0) path += origPath.slice(q);
    }
  } else if (a.prefixRewrite !== undefined && a.prefixRewrite !== '') {
    path = rewritePrefix(route.config, origPath, a.prefixRewrite);
  } else if (route.regexRewrite) {
    const q = queryStart(origPath);
    path = route.regexRewrite.apply(origPath.slice(0, q)) + origPath.slice(q);
  } else {
    path = origPath;
  }
  if (path.charCodeAt(0) !== 47 /* / */) path = `/${path}`;
  // strip_query never strips a query that path_redirect itself carries.
  if (a.stripQuery && (pathRedirect === undefined || !pathRedirect.includes('?'))) {
    const q = path.indexOf('?');
    if (q >= 0) path = path.slice(0, q);
  }
  return `${scheme}://${host}${port}${path}`;
}

function requestHostForRedirect(host: string, newScheme: string, newPort: string, requestProto: string): string {
  if (host === '') return '';
  let end: number;
  if (host.charCodeAt(0) === 91) {
    end = host.lastIndexOf(']:');
    if (end >= 0) end += 1;
  } else {
    end = host.lastIndexOf(':');
  }
  if (end < 0) return host;
  const reqPort = host.slice(end);
  let remove = newPort !== '';
  if (newScheme !== requestProto) {
    remove ||= requestProto === 'https' && reqPort === ':443';
    remove ||= requestProto === 'http' && reqPort === ':80';
  }
  return remove ? host.slice(0, end) : host;
}

/** The :authority a forwarded request carries, after host_rewrite_* (auto_host_rewrite is the upstream's job). */
export function rewrittenHost(route: CompiledRoute, headers: HeaderMap, pickLiteral: string | undefined): string | undefined {
  if (pickLiteral !== undefined) return pickLiteral;
  const f = route.forward;
  if (!f) return undefined;
  if (f.hostRewriteLiteral !== undefined) return f.hostRewriteLiteral;
  if (f.hostRewriteHeader !== undefined) {
    const v = headers.first(f.hostRewriteHeader);
    return v === undefined || v === '' ? undefined : v;
  }
  if (route.hostPathRegex) {
    const p = headers.first(':path') ?? '/';
    return route.hostPathRegex.apply(p.slice(0, queryStart(p)));
  }
  return undefined;
}
