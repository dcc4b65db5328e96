// VirtualService -> Envoy routes: istiod's defaults (timeout 0s, the default retry policy, route
// order, the sidecar domains), every match kind, weights, redirect, rewrite, directResponse,
// retries, fault, CORS, mirror, header manipulation.
import t from 'tap';
import { DR, EP, envoy, vhostOf, vs, type J, hcmOf } from './helpers';

const V = 'reviews.default.svc.cluster.local:9080';
const c = (subset: string): string => `outbound|9080|${subset}|reviews.default.svc.cluster.local`;

t.test('defaults: no VirtualService -> a default route to the service cluster with the default retry policy', async (t) => {
  const e = envoy(EP());
  const vh = vhostOf(e, V);
  t.same(vh.domains, [
    'reviews.default.svc.cluster.local',
    'reviews.default.svc.cluster.local:9080',
    'reviews',
    'reviews:9080',
    'reviews.default',
    'reviews.default:9080',
    'reviews.default.svc',
    'reviews.default.svc:9080',
  ]);
  t.same(vh.routes, [
    {
      name: 'default',
      match: { prefix: '/' },
      route: {
        cluster: c(''),
        timeout: '0s',
        retry_policy: {
          retry_on: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes',
          num_retries: 2,
          retry_host_predicate: [{ name: 'envoy.retry_host_predicates.previous_hosts', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate' } }],
          host_selection_retry_max_attempts: 5,
          retriable_status_codes: [503],
        },
      },
    },
  ]);
  t.same(hcmOf(e).http_filters.map((f: J) => f.name), ['envoy.filters.http.router'], 'only the router when nothing needs a filter');
});

t.test('another namespace: no bare short name, but name.namespace forms', async (t) => {
  const e = envoy(EP().replace('service: reviews', 'service: reviews\nnamespace: shop'));
  t.same(vhostOf(e, 'reviews.shop.svc.cluster.local:9080').domains, [
    'reviews.shop.svc.cluster.local',
    'reviews.shop.svc.cluster.local:9080',
    'reviews.shop',
    'reviews.shop:9080',
    'reviews.shop.svc',
    'reviews.shop.svc:9080',
  ]);
});

t.test('route order, one Envoy route per match, subsets -> clusters, names', async (t) => {
  const e = envoy(
    EP() +
      DR +
      vs(`
  - name: jason
    match:
    - name: by-header
      headers: { end-user: { exact: jason } }
    - uri: { prefix: /v2 }
    route: [{ destination: { host: reviews, subset: v2 } }]
  - name: rest
    route: [{ destination: { host: reviews, subset: v1 } }]`),
  );
  const routes = vhostOf(e, V).routes as J[];
  t.equal(routes.length, 3);
  t.same(routes.map((r) => r.name), ['jason.by-header', 'jason', 'rest']);
  t.same(routes[0].match, { prefix: '/', headers: [{ name: 'end-user', string_match: { exact: 'jason' } }] });
  t.same(routes[1].match, { prefix: '/v2' });
  t.same(routes[2].match, { prefix: '/' });
  t.same(routes.map((r) => r.route.cluster), [c('v2'), c('v2'), c('v1')]);
});

t.test('every match kind', async (t) => {
  const e = envoy(
    EP() +
      vs(`
  - match:
    - uri: { exact: /exact }
      ignoreUriCase: true
      method: { exact: POST }
      authority: { prefix: rev }
      scheme: { exact: https }
      headers:
        X-Regex: { regex: "v[0-9]+" }
        x-present: {}
      withoutHeaders:
        x-canary: { exact: "true" }
        x-absent: {}
      queryParams:
        debug: { exact: "1" }
        trace: {}
        q: { regex: "a.*" }
    route: [{ destination: { host: reviews } }]
  - match: [{ uri: { regex: "/r/[0-9]+" } }]
    route: [{ destination: { host: reviews } }]`),
  );
  const [a, b] = vhostOf(e, V).routes as J[];
  t.same(a.match, {
    path: '/exact',
    case_sensitive: false,
    headers: [
      { name: ':method', string_match: { exact: 'POST' } },
      { name: ':authority', string_match: { prefix: 'rev' } },
      { name: ':scheme', string_match: { exact: 'https' } },
      { name: 'x-regex', string_match: { safe_regex: { regex: 'v[0-9]+' } } },
      { name: 'x-present', present_match: true },
      { name: 'x-canary', string_match: { exact: 'true' }, invert_match: true },
      { name: 'x-absent', present_match: true, invert_match: true },
    ],
    query_parameters: [
      { name: 'debug', string_match: { exact: '1' } },
      { name: 'trace', present_match: true },
      { name: 'q', string_match: { safe_regex: { regex: 'a.*' } } },
    ],
  });
  t.same(b.match, { safe_regex: { regex: '/r/[0-9]+' } });
});

t.test('weights -> weighted_clusters (0-weight destinations dropped), per-destination headers', async (t) => {
  const e = envoy(
    EP() +
      DR +
      vs(`
  - route:
    - destination: { host: reviews, subset: v1 }
      weight: 75
      headers: { request: { set: { x-v: one } } }
    - destination: { host: reviews, subset: v2 }
      weight: 25
    - destination: { host: reviews, subset: v3 }
      weight: 0`),
  );
  const r = (vhostOf(e, V).routes as J[])[0];
  t.same(r.route.weighted_clusters, {
    clusters: [
      { name: c('v1'), weight: 75, request_headers_to_add: [{ header: { key: 'x-v', value: 'one' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }] },
      { name: c('v2'), weight: 25 },
    ],
  });
  t.equal(r.route.cluster, undefined);
});

t.test('redirect, directResponse, rewrite, timeout, header manipulation', async (t) => {
  const e = envoy(
    EP() +
      vs(`
  - match: [{ uri: { exact: /old } }]
    redirect: { uri: /new, authority: example.com, redirectCode: 308, scheme: https, port: 8443 }
  - match: [{ uri: { prefix: /teapot } }]
    directResponse: { status: 418, body: { string: "short and stout" } }
  - match: [{ uri: { prefix: /api/v1 } }]
    rewrite: { uri: /v1, authority: internal.reviews }
    timeout: 1.5s
    headers:
      request: { set: { x-a: "1" }, add: { x-b: "2" }, remove: [X-Secret] }
      response: { set: { x-served-by: keel }, remove: [server] }
    route: [{ destination: { host: reviews } }]
  - match: [{ uri: { regex: "/re/(.*)" } }]
    rewrite: { uriRegexRewrite: { match: "/re/(.*)", rewrite: "/\\\\1" } }
    route: [{ destination: { host: reviews } }]`),
  );
  const [red, dr, rw, rx] = vhostOf(e, V).routes as J[];
  t.same(red.redirect, { path_redirect: '/new', host_redirect: 'example.com', port_redirect: 8443, scheme_redirect: 'https', response_code: 'PERMANENT_REDIRECT' });
  t.same(dr.direct_response, { status: 418, body: { inline_string: 'short and stout' } });
  t.equal(rw.route.prefix_rewrite, '/v1');
  t.equal(rw.route.host_rewrite_literal, 'internal.reviews');
  t.equal(rw.route.timeout, '1.5s');
  t.same(rw.request_headers_to_add, [
    { header: { key: 'x-a', value: '1' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
    { header: { key: 'x-b', value: '2' }, append_action: 'APPEND_IF_EXISTS_OR_ADD' },
  ]);
  t.same(rw.request_headers_to_remove, ['x-secret']);
  t.same(rw.response_headers_to_add, [{ header: { key: 'x-served-by', value: 'keel' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }]);
  t.same(rw.response_headers_to_remove, ['server']);
  t.same(rx.route.regex_rewrite, { pattern: { regex: '/re/(.*)' }, substitution: '/\\1' });
});

t.test('retries: explicit policy, status codes in retryOn, attempts 0 turns retries off', async (t) => {
  const e = envoy(
    EP() +
      vs(`
  - match: [{ uri: { prefix: /a } }]
    retries: { attempts: 3, perTryTimeout: 2s, retryOn: "gateway-error,connect-failure,503,504" }
    route: [{ destination: { host: reviews } }]
  - match: [{ uri: { prefix: /b } }]
    retries: { attempts: 4, retryOn: 5xx }
    route: [{ destination: { host: reviews } }]
  - match: [{ uri: { prefix: /c } }]
    retries: { attempts: 0 }
    route: [{ destination: { host: reviews } }]
  - match: [{ uri: { prefix: /d } }]
    retries: { attempts: 5 }
    route: [{ destination: { host: reviews } }]`),
  );
  const [a, b, cc, d] = vhostOf(e, V).routes as J[];
  t.equal(a.route.retry_policy.num_retries, 3);
  t.equal(a.route.retry_policy.per_try_timeout, '2s');
  t.equal(a.route.retry_policy.retry_on, 'gateway-error,connect-failure,retriable-status-codes');
  t.same(a.route.retry_policy.retriable_status_codes, [503, 504]);
  t.equal(a.route.retry_policy.host_selection_retry_max_attempts, 5, 'the default predicate stays');
  t.equal(b.route.retry_policy.retry_on, '5xx');
  t.equal(b.route.retry_policy.retriable_status_codes, undefined);
  t.equal(cc.route.retry_policy, undefined, 'attempts: 0 = no retries');
  t.equal(d.route.retry_policy.retry_on, 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes', 'retryOn unset keeps the default conditions');
  t.equal(d.route.retry_policy.num_retries, 5);
});

t.test('fault -> per-route envoy.filters.http.fault (percentages in millionths), filter added to the chain', async (t) => {
  const e = envoy(
    EP() +
      vs(`
  - match: [{ headers: { end-user: { exact: jason } } }]
    fault:
      delay: { fixedDelay: 7s, percentage: { value: 0.1 } }
      abort: { httpStatus: 500, percentage: { value: 100 } }
    route: [{ destination: { host: reviews } }]
  - fault: { delay: { fixedDelay: 100ms } , abort: { grpcStatus: UNAVAILABLE } }
    route: [{ destination: { host: reviews } }]`),
  );
  const [a, b] = vhostOf(e, V).routes as J[];
  t.same(a.typed_per_filter_config['envoy.filters.http.fault'], {
    '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault',
    delay: { fixed_delay: '7s', percentage: { numerator: 1000, denominator: 'MILLION' } },
    abort: { percentage: { numerator: 1_000_000, denominator: 'MILLION' }, http_status: 500 },
  });
  t.same(b.typed_per_filter_config['envoy.filters.http.fault'].delay, { fixed_delay: '0.1s', percentage: { numerator: 1_000_000, denominator: 'MILLION' } }, 'no percentage = 100%');
  t.equal(b.typed_per_filter_config['envoy.filters.http.fault'].abort.grpc_status, 14);
  t.same(hcmOf(e).http_filters.map((f: J) => f.name), ['envoy.filters.http.fault', 'envoy.filters.http.router']);
});

t.test('corsPolicy -> per-route CorsPolicy, mirror and mirrors -> request_mirror_policies', async (t) => {
  const e = envoy(
    EP() +
      DR +
      vs(`
  - corsPolicy:
      allowOrigins: [{ exact: "https://example.com" }, { regex: "https://.*\\\\.example\\\\.org" }]
      allowMethods: [GET, POST]
      allowHeaders: [x-a, x-b]
      exposeHeaders: [x-c]
      maxAge: 24h
      allowCredentials: true
    route: [{ destination: { host: reviews, subset: v1 } }]
    mirror: { host: reviews, subset: v2 }
    mirrorPercentage: { value: 50 }`),
  );
  const r = (vhostOf(e, V).routes as J[])[0];
  t.same(r.typed_per_filter_config['envoy.filters.http.cors'], {
    '@type': 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy',
    allow_origin_string_match: [{ exact: 'https://example.com' }, { safe_regex: { regex: 'https://.*\\.example\\.org' } }],
    allow_methods: 'GET,POST',
    allow_headers: 'x-a,x-b',
    expose_headers: 'x-c',
    max_age: '86400',
    allow_credentials: true,
    filter_enabled: { default_value: { numerator: 100, denominator: 'HUNDRED' } },
  });
  t.same(r.route.request_mirror_policies, [{ cluster: c('v2'), runtime_fraction: { default_value: { numerator: 500_000, denominator: 'MILLION' } } }]);
  t.same(hcmOf(e).http_filters.map((f: J) => f.name), ['envoy.filters.http.cors', 'envoy.filters.http.router']);
});

t.test('a match on another port or another gateway drops that condition; sourceLabels are skipped with a warning', async (t) => {
  const e = envoy(
    EP() +
      vs(`
  - match: [{ port: 9999 }]
    route: [{ destination: { host: reviews } }]
  - match: [{ gateways: [some-gateway] }]
    route: [{ destination: { host: reviews } }]
  - match: [{ sourceLabels: { app: productpage } }]
    route: [{ destination: { host: reviews } }]
  - name: last
    route: [{ destination: { host: reviews } }]`),
  );
  t.same((vhostOf(e, V).routes as J[]).map((r) => r.name), ['last']);
});

t.test('a VirtualService bound only to a gateway does not apply to the sidecar listener', async (t) => {
  const e = envoy(EP() + DR + vs(`  - route: [{ destination: { host: reviews, subset: v2 } }]`, '  gateways: [my-gw]'));
  t.equal((vhostOf(e, V).routes as J[])[0].name, 'default');
});
