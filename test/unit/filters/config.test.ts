// Config decoding of envoy.filters.http.fault, envoy.filters.http.cors (filter-level and per-route)
// and route request_mirror_policies: good config in Istio's shapes, and bad config with the path
// of every problem.

import t from 'tap';
import { decodeBootstrap } from '../../../src/config/bootstrap';
import { ConfigError } from '../../../src/config/errors';
import type { FaultConfig } from '../../../src/config/filters/fault';
import type { CorsPolicyConfig } from '../../../src/config/filters/cors';
import type { Bootstrap, HttpConnectionManagerConfig, RouteConfigEntry } from '../../../src/config/types';

const ROUTER = { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } };
const HCM_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const FAULT = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault';
const CORS = 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors';
const CORS_POLICY = 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy';

function bootstrapWith(filters: unknown[], routes: unknown[], vhost: Record<string, unknown> = {}, table: Record<string, unknown> = {}): Record<string, unknown> {
  const cluster = (name: string) => ({
    name,
    type: 'STATIC',
    load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 1 } } } }] }] },
  });
  return {
    static_resources: {
      listeners: [
        {
          name: 'l',
          address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
          filter_chains: [
            {
              filters: [
                {
                  name: 'envoy.filters.network.http_connection_manager',
                  typed_config: {
                    '@type': HCM_TYPE,
                    stat_prefix: 'in',
                    http_filters: [...filters, ROUTER],
                    route_config: { name: 'rt', virtual_hosts: [{ name: 'vh', domains: ['*'], routes, ...vhost }], ...table },
                  },
                },
              ],
            },
          ],
        },
      ],
      clusters: [cluster('backend'), cluster('shadow')],
    },
  };
}

const hcmOf = (b: Bootstrap): HttpConnectionManagerConfig => {
  const f = b.listeners[0].filterChains[0].filter;
  if (f.kind !== 'http_connection_manager') throw new Error('not an HCM');
  return f;
};
const routesOf = (b: Bootstrap): readonly RouteConfigEntry[] => hcmOf(b).routeConfig!.virtualHosts[0].routes;

function problems(raw: unknown): string[] {
  try {
    decodeBootstrap(raw);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => `${p.path}: ${p.message}`);
    throw e;
  }
  throw new Error('expected a ConfigError');
}

const F = 'static_resources.listeners[0].filter_chains[0].filters[0].typed_config';
const VH = `${F}.route_config.virtual_hosts[0]`;
const route = (extra: Record<string, unknown>, action: Record<string, unknown> = { cluster: 'backend' }) => ({ match: { prefix: '/' }, route: action, ...extra });

t.test('fault: Istio shape (empty filter config, per-route HTTPFault)', async (t) => {
  const { bootstrap, warnings } = decodeBootstrap(
    bootstrapWith(
      [{ name: 'envoy.filters.http.fault', typed_config: { '@type': FAULT } }],
      [
        route({
          typed_per_filter_config: {
            'envoy.filters.http.fault': {
              '@type': FAULT,
              delay: { fixed_delay: '0.25s', percentage: { numerator: 500000, denominator: 'MILLION' } },
              abort: { http_status: 503, percentage: { numerator: 100 } },
              headers: [{ name: 'end-user', string_match: { exact: 'jason' } }],
              max_active_faults: 7,
            },
          },
        }),
      ],
    ),
  );
  t.same(warnings, []);
  const f = hcmOf(bootstrap).httpFilters[0];
  t.equal(f.typeName, 'envoy.extensions.filters.http.fault.v3.HTTPFault');
  t.same((f.config as FaultConfig).delay, undefined, 'filter level: no fault');
  const per = routesOf(bootstrap)[0].typedPerFilterConfig['envoy.filters.http.fault'];
  const c = per.config as FaultConfig;
  t.same(c.delay, { kind: 'fixed', fixedDelayMs: 250, percentage: { numerator: 500000, denominator: 1_000_000 } });
  t.same(c.abort, { kind: 'http', httpStatus: 503, percentage: { numerator: 100, denominator: 100 } });
  t.equal(c.headers.length, 1);
  t.equal(c.maxActiveFaults, 7);
  t.equal(c.runtime.abortPercent, 'fault.http.abort.abort_percent');
});

t.test('fault: header faults, gRPC status, runtime keys; unset percentage is 0%', async (t) => {
  const { bootstrap } = decodeBootstrap(
    bootstrapWith(
      [
        {
          name: 'envoy.filters.http.fault',
          typed_config: {
            '@type': FAULT,
            delay: { header_delay: {}, percentage: { numerator: 100 } },
            abort: { header_abort: {} },
            upstream_cluster: 'backend',
            downstream_nodes: ['n1'],
            abort_percent_runtime: 'my.abort',
            response_rate_limit: { header_limit: {}, percentage: { numerator: 100 } },
          },
        },
      ],
      [route({ typed_per_filter_config: { 'envoy.filters.http.fault': { '@type': FAULT, abort: { grpc_status: 14, percentage: { numerator: 100 } } } } })],
    ),
  );
  const c = hcmOf(bootstrap).httpFilters[0].config as FaultConfig;
  t.same(c.delay, { kind: 'header', percentage: { numerator: 100, denominator: 100 } });
  t.same(c.abort, { kind: 'header', percentage: { numerator: 0, denominator: 100 } });
  t.equal(c.upstreamCluster, 'backend');
  t.same(c.downstreamNodes, ['n1']);
  t.equal(c.runtime.abortPercent, 'my.abort');
  t.same(c.responseRateLimit, { kind: 'header', percentage: { numerator: 100, denominator: 100 } });
  t.equal(c.runtime.responseRateLimitPercent, 'fault.http.rate_limit.response_percent');
  t.equal(c.runtime.delayPercent, 'fault.http.delay.fixed_delay_percent');
  const per = routesOf(bootstrap)[0].typedPerFilterConfig['envoy.filters.http.fault'].config as FaultConfig;
  t.same(per.abort, { kind: 'grpc', grpcStatus: 14, percentage: { numerator: 100, denominator: 100 } });
});

t.test('fault: bad config is refused with every problem and its path', async (t) => {
  const P = `${F}.http_filters[0].typed_config`;
  t.same(
    problems(
      bootstrapWith(
        [
          {
            name: 'envoy.filters.http.fault',
            typed_config: {
              '@type': FAULT,
              delay: { fixed_delay: '0s', header_delay: {} },
              abort: { http_status: 700, percentage: { numerator: 1, denominator: 'THOUSAND' } },
              response_rate_limit: { fixed_limit: { limit_kbps: 0 } },
              max_active_faults: -1,
              bogus: 1,
            },
          },
        ],
        [route({ typed_per_filter_config: { 'envoy.filters.http.fault': { '@type': FAULT, delay: { fixed_delay: '1s' }, abort: {} } } })],
      ),
    ),
    [
      `${VH}.routes[0].typed_per_filter_config["envoy.filters.http.fault"].abort: exactly one of http_status, grpc_status, header_abort must be set`,
      `${P}.delay: exactly one of fixed_delay, header_delay must be set`,
      `${P}.abort.percentage.denominator: unknown value 'THOUSAND' (expected one of HUNDRED, TEN_THOUSAND, MILLION)`,
      `${P}.abort.http_status: 700 is out of range (200..599)`,
      `${P}.max_active_faults: -1 is out of range (0..4294967295)`,
      `${P}.response_rate_limit.fixed_limit.limit_kbps: must be at least 1, got 0`,
      `${P}: unknown field 'bogus'`,
    ],
  );
});

t.test('cors: Istio shape, and the per-route entry keyed by the filter name', async (t) => {
  const policy = {
    '@type': CORS_POLICY,
    allow_origin_string_match: [{ exact: 'https://a.example' }, { safe_regex: { regex: 'https://.*\\.b\\.example' } }],
    allow_methods: 'GET,POST',
    allow_headers: 'x-a',
    expose_headers: 'x-b',
    max_age: '600',
    allow_credentials: true,
    filter_enabled: { default_value: { numerator: 100, denominator: 'HUNDRED' } },
    forward_not_matching_preflights: false,
  };
  const { bootstrap, warnings } = decodeBootstrap(
    bootstrapWith([{ name: 'envoy.filters.http.cors', typed_config: { '@type': CORS } }], [route({ typed_per_filter_config: { 'envoy.filters.http.cors': policy } })], {
      typed_per_filter_config: { 'envoy.filters.http.cors': { '@type': CORS_POLICY, allow_methods: 'GET' } },
    }),
  );
  t.same(warnings, []);
  t.same(Object.keys(routesOf(bootstrap)[0].typedPerFilterConfig), ['envoy.filters.http.cors']);
  const c = routesOf(bootstrap)[0].typedPerFilterConfig['envoy.filters.http.cors'].config as CorsPolicyConfig;
  t.same(c, {
    allowOrigins: [
      { kind: 'exact', value: 'https://a.example', ignoreCase: false },
      { kind: 'regex', regex: 'https://.*\\.b\\.example', ignoreCase: false },
    ],
    allowMethods: 'GET,POST',
    allowHeaders: 'x-a',
    exposeHeaders: 'x-b',
    maxAge: '600',
    allowCredentials: true,
    filterEnabled: { defaultValue: { numerator: 100, denominator: 100 }, runtimeKey: '' },
    forwardNotMatchingPreflights: false,
  });
  const vh = hcmOf(bootstrap).routeConfig!.virtualHosts[0].typedPerFilterConfig['envoy.filters.http.cors'].config as CorsPolicyConfig;
  t.same(vh, { allowOrigins: [], allowMethods: 'GET' });
});

t.test('cors: bad config', async (t) => {
  const K = `${VH}.routes[0].typed_per_filter_config["envoy.filters.http.cors"]`;
  t.same(
    problems(
      bootstrapWith(
        [{ name: 'envoy.filters.http.cors', typed_config: { '@type': CORS, allow_methods: 'GET' } }],
        [
          route({
            typed_per_filter_config: {
              'envoy.filters.http.cors': {
                '@type': CORS_POLICY,
                allow_origin_string_match: [{ prefix: '' }, { safe_regex: { regex: '(' } }],
                max_age: '1h',
                filter_enabled: { runtime_key: 'k' },
                allow_credentials: 'yes',
              },
            },
          }),
        ],
      ),
    ).map((p) => p.replace(/invalid regex: .*/, 'invalid regex')),
    [
      `${K}.allow_origin_string_match[0].prefix: must not be empty`,
      `${K}.allow_origin_string_match[1].safe_regex.regex: invalid regex`,
      `${K}.max_age: expected a number of seconds, got '1h'`,
      `${K}.allow_credentials: expected true or false, got the string "yes"`,
      `${K}.filter_enabled.default_value: default_value is required`,
      `${F}.http_filters[0].typed_config: unknown field 'allow_methods'`,
    ],
  );
});

t.test('request_mirror_policies at route, virtual host and route table level', async (t) => {
  const { bootstrap } = decodeBootstrap(
    bootstrapWith(
      [],
      [
        route({}, {
          cluster: 'backend',
          request_mirror_policies: [
            { cluster: 'shadow', runtime_fraction: { default_value: { numerator: 50 }, runtime_key: 'mirror.pct' }, trace_sampled: false },
            { cluster_header: 'X-Mirror', disable_shadow_host_suffix_append: true },
          ],
        }),
        route({}),
      ],
      {},
      { request_mirror_policies: [{ cluster: 'shadow' }] },
    ),
  );
  const rs = routesOf(bootstrap);
  const a = rs[0].action;
  if (a.kind !== 'route') throw new Error('route');
  t.same(a.requestMirrorPolicies, [
    { cluster: 'shadow', runtimeFraction: { defaultValue: { numerator: 50, denominator: 100 }, runtimeKey: 'mirror.pct' }, disableShadowHostSuffixAppend: false },
    { cluster: '', clusterHeader: 'x-mirror', disableShadowHostSuffixAppend: true },
  ]);
  const b = rs[1].action;
  t.equal(b.kind === 'route' ? b.requestMirrorPolicies : 'x', undefined, 'no route-level policies');
  t.same(hcmOf(bootstrap).routeConfig!.virtualHosts[0].requestMirrorPolicies, [{ cluster: 'shadow', disableShadowHostSuffixAppend: false }], 'table level folded into the host');

  t.same(
    problems(
      bootstrapWith(
        [],
        [route({}, { cluster: 'backend', request_mirror_policies: [{ cluster: 'ghost' }, {}, { cluster: 'shadow', cluster_header: 'x' }, { cluster_header: 'bad header' }] })],
        { request_mirror_policies: [{ cluster: 'shadow', runtime_fraction: {} }] },
      ),
    ),
    [
      `${VH}.request_mirror_policies[0].runtime_fraction.default_value: default_value is required`,
      `${VH}.routes[0].route.request_mirror_policies[0].cluster: unknown mirror cluster 'ghost' (not defined in static_resources.clusters)`,
      `${VH}.routes[0].route.request_mirror_policies[1]: exactly one of cluster, cluster_header must be set`,
      `${VH}.routes[0].route.request_mirror_policies[2]: exactly one of cluster, cluster_header must be set`,
      `${VH}.routes[0].route.request_mirror_policies[3].cluster_header: 'bad header' is not a valid HTTP header name`,
    ],
  );
});

t.test('the deprecated route / virtual host cors field feeds the CORS filter under its own key', async (t) => {
  const { bootstrap, warnings } = decodeBootstrap(
    bootstrapWith([{ name: 'envoy.filters.http.cors', typed_config: { '@type': CORS } }], [route({}, { cluster: 'backend', cors: { allow_methods: 'GET' } })], {
      cors: { allow_origin_string_match: [{ exact: 'https://a.example' }] },
    }),
  );
  t.same(warnings, []);
  const r = routesOf(bootstrap)[0];
  t.same(r.typedPerFilterConfig['(route.cors)'], { typeName: 'envoy.extensions.filters.http.cors.v3.CorsPolicy', config: { allowOrigins: [], allowMethods: 'GET' }, disabled: false });
  t.same(r.action.kind === 'route' ? r.action.cors : undefined, { allowOrigins: [], allowMethods: 'GET' });
  t.same(hcmOf(bootstrap).routeConfig!.virtualHosts[0].typedPerFilterConfig['(route.cors)'].config, { allowOrigins: [{ kind: 'exact', value: 'https://a.example', ignoreCase: false }] });
  t.same(problems(bootstrapWith([], [route({}, { cluster: 'backend', cors: { max_age: 'x' } })])), [`${VH}.routes[0].route.cors.max_age: expected a number of seconds, got 'x'`]);
});
