// RouteTable behaviour that `keel route-check` cannot express (route-check's runtime is mocked as in
// Envoy's tool, its requests always carry x-forwarded-proto, ...). Route matching proper is tested
// by the test/route-check fixtures (route-check.test.ts).

import t from 'tap';
import { parseRouteConfigurationText } from '../../../src/config/bootstrap';
import { HeaderMap } from '../../../src/http/headers';
import { compileHeaderMatcher, parseQuery } from '../../../src/router/matchers';
import { CompiledRoute, isGrpcContentType, RouteInput, RouteResult, RouteTable, Runtime } from '../../../src/router/route-table';
import { finalizeRequestHeaders, routeReply, stripInternalOnlyHeaders } from '../../../src/router/apply';
import type { FormatContext } from '../../../src/common/header-format';
import { compileFormat, renderFormat } from '../../../src/common/header-format';

function table(yaml: string): RouteTable {
  return new RouteTable(parseRouteConfigurationText(yaml, 'test').routes);
}

function request(path: string, headers: string[] = [], over: Partial<RouteInput> = {}): RouteInput {
  const authority = over.authority ?? 'example.com';
  return {
    authority,
    path,
    method: 'GET',
    headers: new HeaderMap([':authority', authority, ':path', path, ':method', 'GET', ...headers]),
    secure: false,
    internal: false,
    randomValue: 0,
    ...over,
  };
}

function clusterOf(rt: RouteTable, input: RouteInput): string | undefined {
  const r = rt.route(input);
  return r.kind === 'route' ? (r.route.pickCluster(input)?.name ?? '') : undefined;
}

function ctx(headers: HeaderMap): FormatContext {
  return { remoteAddress: '10.0.0.1', remotePort: 1234, localAddress: '10.0.0.2', localPort: 80, requestHeaders: headers, protocol: 'HTTP/2' };
}

t.test('a hostile regex on a 100 KB header returns false', async (t) => {
  const rt = table(`
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: { prefix: /, headers: [{ name: x-evil, string_match: { safe_regex: { regex: "(a+)+$" } } }] }
    route: { cluster: evil }
  - match: { prefix: /, headers: [{ name: x-evil, safe_regex_match: { regex: "(a|aa)+b" } }] }
    route: { cluster: evil2 }
  - match: { prefix: / }
    route: { cluster: fallback }
`);
  const hostile = 'a'.repeat(100 * 1024) + '!';
  t.equal(clusterOf(rt, request('/', ['x-evil', hostile])), 'fallback');
  t.equal(clusterOf(rt, request('/', ['x-evil', 'a'.repeat(100 * 1024)])), 'evil');
});

t.test('a hostile path regex on a long path returns false', async (t) => {
  const rt = table(`
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: { safe_regex: { regex: "/(x+x+)+y" } }
    route: { cluster: evil }
`);
  const r = rt.route(request('/' + 'x'.repeat(100 * 1024)));
  t.equal(r.kind, 'none');
});

t.test('header matchers see repeated headers joined with ","', async (t) => {
  const exact = compileHeaderMatcher({ name: 'x-a', invert: false, treatMissingAsEmpty: false, kind: 'string', match: { kind: 'exact', value: '1,2', ignoreCase: false } });
  t.equal(exact(new HeaderMap(['x-a', '1', 'x-b', 'z', 'x-a', '2'])), true);
  t.equal(exact(new HeaderMap(['x-a', '1'])), false);
  t.equal(exact(new HeaderMap(['x-a', '1,2'])), true);
  const range = compileHeaderMatcher({ name: 'x-n', invert: false, treatMissingAsEmpty: false, kind: 'range', range: { start: 0, end: 100 } });
  t.equal(range(new HeaderMap(['x-n', '5'])), true);
  t.equal(range(new HeaderMap(['x-n', '5', 'x-n', '6'])), false, '"5,6" is not an integer');
});

t.test('a header matcher on host looks at :authority', async (t) => {
  const m = compileHeaderMatcher({ name: 'host', invert: false, treatMissingAsEmpty: false, kind: 'string', match: { kind: 'exact', value: 'h.example', ignoreCase: false } });
  t.equal(m(new HeaderMap([':authority', 'h.example'])), true);
});

t.test('query parameters are not percent-decoded', async (t) => {
  t.same([...parseQuery('/p?a=1&b=x%20y&a=2&c&d=&e=f=g#h=i')], [
    ['a', '1'],
    ['b', 'x%20y'],
    ['c', ''],
    ['d', ''],
    ['e', 'f=g'],
  ]);
  t.same([...parseQuery('/p')], []);
});

t.test('gRPC content types', async (t) => {
  t.equal(isGrpcContentType('application/grpc'), true);
  t.equal(isGrpcContentType('application/grpc+proto'), true);
  t.equal(isGrpcContentType('application/grpc-web'), false);
  t.equal(isGrpcContentType('application/grpc-web+proto'), false);
  t.equal(isGrpcContentType('application/grpcx'), false);
  t.equal(isGrpcContentType(undefined), false);
});

t.test('runtime fractions: an integer runtime value is a percentage', async (t) => {
  const rt = new Runtime({ 'f.pct': 50, 'f.str': '10', 'f.big': 150 });
  // default 5000/10000 when the key is absent
  t.equal(rt.fractionEnabled('f.none', 5000, 10_000, 4999), true);
  t.equal(rt.fractionEnabled('f.none', 5000, 10_000, 5000), false);
  // the runtime value overrides with denominator 100, whatever the default's denominator
  t.equal(rt.fractionEnabled('f.pct', 1, 1_000_000, 49), true);
  t.equal(rt.fractionEnabled('f.pct', 1, 1_000_000, 50), false);
  t.equal(rt.fractionEnabled('f.pct', 1, 1_000_000, 149), true);
  t.equal(rt.fractionEnabled('f.str', 100, 100, 10), false);
  t.equal(rt.fractionEnabled('f.big', 0, 100, 99), true, 'above 100 always enables');
});

t.test('runtime_fraction routes use the runtime', async (t) => {
  const rt = table(`
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: { prefix: /, runtime_fraction: { runtime_key: f.new, default_value: { numerator: 0 } } }
    route: { cluster: new }
  - match: { prefix: / }
    route: { cluster: old }
`);
  t.equal(clusterOf(rt, request('/', [], { randomValue: 0 })), 'old', 'default 0%');
  const runtime = new Runtime({ 'f.new': 100 });
  t.equal(clusterOf(rt, request('/', [], { randomValue: 99, runtime })), 'new', 'runtime 100%');
});

t.test('weighted clusters: runtime_key_prefix weights come from the runtime', async (t) => {
  const rt = table(`
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: { prefix: / }
    route:
      weighted_clusters:
        runtime_key_prefix: routing.w
        clusters: [{ name: a, weight: 90 }, { name: b, weight: 10 }]
`);
  t.equal(clusterOf(rt, request('/', [], { randomValue: 0 })), 'a');
  const runtime = new Runtime({ 'routing.w.a': 0, 'routing.w.b': '5' });
  for (const randomValue of [0, 1, 2, 3, 4, 1000]) t.equal(clusterOf(rt, request('/', [], { randomValue, runtime })), 'b', `random ${randomValue}`);
});

t.test('weighted clusters: header_name accepts any uint64', async (t) => {
  const rt = table(`
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: { prefix: / }
    route:
      weighted_clusters:
        header_name: x-r
        clusters: [{ name: a, weight: 1 }, { name: b, weight: 1 }]
`);
  t.equal(clusterOf(rt, request('/', ['x-r', '18446744073709551615'])), 'b', '2^64-1 is odd');
  t.equal(clusterOf(rt, request('/', ['x-r', '18446744073709551616'], { randomValue: 1 })), 'b', 'above 2^64-1: the random value');
  t.equal(clusterOf(rt, request('/', ['x-r', '-1'], { randomValue: 0 })), 'a');
});

t.test('require_tls goes by x-forwarded-proto and x-envoy-internal, as Envoy does', async (t) => {
  const rt = table(`
virtual_hosts:
- name: all
  domains: [all.example.com]
  require_tls: ALL
  routes: [{ match: { prefix: / }, route: { cluster: all } }]
- name: ext
  domains: [ext.example.com]
  require_tls: EXTERNAL_ONLY
  routes: [{ match: { prefix: / }, route: { cluster: ext } }]
`);
  const kind = (r: RouteResult): string => r.kind;
  const all = { authority: 'all.example.com' };
  t.equal(kind(rt.route(request('/', ['x-forwarded-proto', 'https'], all))), 'route', 'TLS terminated downstream (trusted x-forwarded-proto)');
  t.equal(kind(rt.route(request('/', ['x-forwarded-proto', 'http'], { ...all, secure: true }))), 'require_tls', 'x-forwarded-proto decides');
  t.equal(kind(rt.route(request('/', [], { ...all, secure: true }))), 'route', 'no x-forwarded-proto: the connection decides');
  t.equal(kind(rt.route(request('/', [], all))), 'require_tls');
  const ext = { authority: 'ext.example.com' };
  t.equal(kind(rt.route(request('/', ['x-forwarded-proto', 'http', 'x-envoy-internal', 'true'], ext))), 'route');
  t.equal(kind(rt.route(request('/', ['x-forwarded-proto', 'http'], { ...ext, internal: true }))), 'route');
  t.equal(kind(rt.route(request('/', ['x-forwarded-proto', 'http'], ext))), 'require_tls');
});

t.test('prefix matching ignores the query and fragment (a prefix with "?" never matches)', async (t) => {
  // route-check cannot show this: such a route is unreachable, so never covered.
  const rt = table(`
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: { prefix: "/search?q=" }
    route: { cluster: with-query }
  - match: { prefix: "/page#" }
    route: { cluster: with-fragment }
  - match: { prefix: / }
    route: { cluster: other }
`);
  t.equal(clusterOf(rt, request('/search?q=cats')), 'other');
  t.equal(clusterOf(rt, request('/page#top')), 'other');
});

t.test('CONNECT requests only match connect_matcher (and prefix routes)', async (t) => {
  const rt = table(`
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: { path: /x }
    route: { cluster: path }
  - match: { connect_matcher: {} }
    route: { cluster: connect }
`);
  t.equal(clusterOf(rt, request('/x', [], { method: 'CONNECT' })), 'connect');
  t.equal(clusterOf(rt, request('/x')), 'path');
});

t.test('finalizeRequestHeaders: auto_host_rewrite and suppressed x-envoy-original-path', async (t) => {
  const rt = table(`
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: { prefix: /a }
    route: { cluster: c, auto_host_rewrite: true, prefix_rewrite: /b }
`);
  const input = request('/a/1');
  const r = rt.route(input);
  if (r.kind !== 'route') return t.fail('no route');
  const route: CompiledRoute = r.route;
  finalizeRequestHeaders(route, route.pickCluster(input), input.headers, ctx(input.headers), { keepOriginalPath: false, upstreamHostname: 'upstream.internal' });
  t.equal(input.headers.first(':authority'), 'upstream.internal');
  t.equal(input.headers.first(':path'), '/b/1');
  t.equal(input.headers.has('x-envoy-original-path'), false);
  const again = request('/a/1');
  finalizeRequestHeaders(route, route.pickCluster(again), again.headers, ctx(again.headers), { keepOriginalPath: true, upstreamHostname: '' });
  t.equal(again.headers.first(':authority'), 'example.com', 'no hostname: :authority kept');
  t.equal(again.headers.first('x-envoy-original-path'), '/a/1');
});

t.test('route replies render %RESP()% against their own headers', async (t) => {
  const rt = table(`
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: { prefix: / }
    redirect: { path_redirect: /new }
    response_headers_to_add: [{ header: { key: x-loc, value: "%RESP(location)%" } }]
`);
  const input = request('/old', ['x-forwarded-proto', 'https']);
  const r = rt.route(input);
  if (r.kind !== 'route') return t.fail('no route');
  const reply = routeReply(r.route, input.headers, false, ctx(input.headers));
  t.same(reply?.headers.raw, ['location', 'https://example.com/new', 'x-loc', 'https://example.com/new', 'content-length', '0']);
  t.equal(reply?.status, 301);
});

t.test('internal_only_headers are only stripped from external requests', async (t) => {
  const rt = table(`
internal_only_headers: [x-secret]
virtual_hosts: [{ name: v, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: c } }] }]
`);
  const h = new HeaderMap(['x-secret', '1', 'x-secret', '2', 'x-other', '3']);
  stripInternalOnlyHeaders(rt, h, true);
  t.same(h.raw, ['x-secret', '1', 'x-secret', '2', 'x-other', '3']);
  stripInternalOnlyHeaders(rt, h, false);
  t.same(h.raw, ['x-other', '3']);
});

t.test('header formatter: first value, alternatives, length limits', async (t) => {
  const h = new HeaderMap([':authority', 'h', 'x-m', 'a', 'x-m', 'b', 'x-alt', 'alt', 'x-long', 'abcdef']);
  const render = (f: string): string => renderFormat(compileFormat(f), ctx(h));
  t.equal(render('%REQ(x-m)%'), 'a');
  t.equal(render('%REQ(x-none?x-alt)%'), 'alt');
  t.equal(render('%REQ(x-m?x-alt)%'), 'a');
  t.equal(render('%REQ(x-long):3%'), 'abc');
  t.equal(render('%REQ(HOST)%'), 'h');
  t.equal(render('[%DOWNSTREAM_REMOTE_ADDRESS%] %DOWNSTREAM_LOCAL_PORT% %PROTOCOL% 50%%'), '[10.0.0.1:1234] 80 HTTP/2 50%');
  t.throws(() => compileFormat('%REQ(a?)%'));
});
