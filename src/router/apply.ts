// What the proxy does to a request and its response once a route is chosen, in Envoy's order: the
// header work of RouteEntry::finalizeRequestHeaders / finalizeResponseHeaders, the headers of a
// route's own reply (direct_response, redirect, require_tls), and the removal of
// internal_only_headers. Shared by the HTTP stream (src/http/stream.ts) and `keel route-check`, so
// that route-check computes exactly what the proxy sends. No I/O, no config parsing here.

import type { RedirectAction } from '../config/types';
import { HeaderMap } from '../http/headers';
import { redirectLocation, rewrittenHost } from './actions';
import type { FormatContext } from '../common/header-format';
import type { ClusterPick, CompiledRoute, RouteTable } from './route-table';

/** Envoy removes a route table's internal_only_headers from requests that are not internal. */
export function stripInternalOnlyHeaders(table: RouteTable, headers: HeaderMap, internal: boolean): void {
  if (internal) return;
  const names = table.internalOnlyHeaders;
  for (let i = 0; i < names.length; i++) headers.remove(names[i]);
}

export interface FinalizeRequestOptions {
  /** Set x-envoy-original-path when the path is rewritten (false with suppress_envoy_headers). */
  readonly keepOriginalPath: boolean;
  /** The chosen upstream host's hostname, for auto_host_rewrite; undefined or '' leaves :authority. */
  readonly upstreamHostname?: string;
}

/**
 * The request headers a forwarded request carries upstream, as Envoy's finalizeRequestHeaders
 * (WeightedClusterEntry, then RouteEntryImplBase) and the router's auto_host_rewrite make them:
 *   1. the weighted cluster's request headers, then its host_rewrite_literal;
 *   2. the route / virtual host / route table request header mutations (order per
 *      most_specific_header_mutations_wins);
 *   3. the route's host rewrite (literal, header, path regex), which a weighted cluster's literal
 *      does not override; it sees the headers added in 2;
 *   4. the path rewrite (prefix_rewrite / regex_rewrite), recording x-envoy-original-path;
 *   5. auto_host_rewrite with the upstream host's hostname.
 */
export function finalizeRequestHeaders(route: CompiledRoute, pick: ClusterPick | undefined, headers: HeaderMap, ctx: FormatContext, opts: FinalizeRequestOptions): void {
  if (pick !== undefined) {
    if (pick.requestMutations !== undefined && !pick.requestMutations.empty) pick.requestMutations.apply(headers, ctx);
    if (pick.hostRewriteLiteral !== undefined && pick.hostRewriteLiteral !== '') headers.set(':authority', pick.hostRewriteLiteral);
  }
  if (!route.requestMutations.empty) route.requestMutations.apply(headers, ctx);
  const host = rewrittenHost(route, headers, undefined);
  if (host !== undefined && host !== '') headers.set(':authority', host);
  const path = headers.first(':path');
  if (path !== undefined) {
    const newPath = route.rewritePath(path);
    if (newPath !== undefined) {
      if (opts.keepOriginalPath) headers.set('x-envoy-original-path', path);
      headers.set(':path', newPath);
    }
  }
  if (route.forward?.autoHostRewrite && opts.upstreamHostname) headers.set(':authority', opts.upstreamHostname);
}

/** Envoy's finalizeResponseHeaders: the weighted cluster's response headers, then the route's levels. */
export function finalizeResponseHeaders(route: CompiledRoute, pick: ClusterPick | undefined, headers: HeaderMap, ctx: FormatContext): void {
  if (pick?.responseMutations !== undefined && !pick.responseMutations.empty) pick.responseMutations.apply(headers, ctx);
  if (!route.responseMutations.empty) route.responseMutations.apply(headers, ctx);
}

/** A reply the route makes itself, before the connection manager adds date, server and request id. */
export interface RouteReply {
  readonly status: number;
  readonly body: string;
  readonly headers: HeaderMap;
}

/**
 * The reply of a direct_response or redirect route, in the order of Envoy's router and local reply
 * (modify_headers first): location (redirects; and, as in Envoy, a direct_response answering 201 or
 * 3xx gets the request's own URL), the route's response header mutations, then content-type
 * (text/plain unless a mutation set one) and content-length. undefined for other routes.
 * `ctx.responseHeaders` is ignored: %RESP(...)% sees the reply's own headers.
 */
export function routeReply(route: CompiledRoute, requestHeaders: HeaderMap, secure: boolean, ctx: FormatContext): RouteReply | undefined {
  const a = route.config.action;
  let status: number;
  let body = '';
  const headers = new HeaderMap();
  if (a.kind === 'redirect') {
    status = a.responseCode;
    headers.add('location', redirectLocation(route, a, requestHeaders, secure));
  } else if (a.kind === 'direct_response') {
    status = a.status;
    body = a.body ?? '';
    if (status === 201 || (status >= 300 && status < 400)) headers.add('location', currentUri(route, requestHeaders, secure));
  } else {
    return undefined;
  }
  if (!route.responseMutations.empty) route.responseMutations.apply(headers, withResponseHeaders(ctx, headers));
  setLocalReplyBodyHeaders(headers, body, false);
  return { status, body, headers };
}

/**
 * content-type (text/plain, when there is a body and none is set yet) and content-length of a local
 * reply. Envoy sets no content-type for an empty body, even a configured empty one; `forceBodyType`
 * keeps stream.ts's current behaviour available (text/plain for a configured empty body).
 */
export function setLocalReplyBodyHeaders(headers: HeaderMap, body: string, forceBodyType: boolean): void {
  const length = Buffer.byteLength(body);
  if ((length > 0 || forceBodyType) && !headers.has('content-type')) headers.set('content-type', 'text/plain');
  headers.set('content-length', String(length));
}

/**
 * What Envoy's redirect machinery would answer for the request's current URL on a route without a
 * redirect (router_check_tool's path_redirect of a direct_response route: newUri without redirect
 * config): scheme, host (port dropped as for a redirect) and path, unchanged.
 */
export function currentUri(route: CompiledRoute, requestHeaders: HeaderMap, secure: boolean): string {
  const none: RedirectAction = { kind: 'redirect', responseCode: 0, stripQuery: false };
  return redirectLocation(route, none, requestHeaders, secure);
}

/** The location of require_tls's 301 (Envoy's createSslRedirectPath). */
export function sslRedirectLocation(authority: string, path: string): string {
  return `https://${authority}${path}`;
}

function withResponseHeaders(ctx: FormatContext, responseHeaders: HeaderMap): FormatContext {
  return {
    remoteAddress: ctx.remoteAddress,
    remotePort: ctx.remotePort,
    localAddress: ctx.localAddress,
    localPort: ctx.localPort,
    requestHeaders: ctx.requestHeaders,
    responseHeaders,
    protocol: ctx.protocol,
    upstreamAddress: ctx.upstreamAddress,
    upstreamPort: ctx.upstreamPort,
    upstreamMetadata: ctx.upstreamMetadata,
    startTime: ctx.startTime,
  };
}
