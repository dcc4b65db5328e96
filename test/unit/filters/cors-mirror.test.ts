// CORS policy compilation (levels merged as Envoy does, origin matching, runtime fractions), the
// per-route levels compiler hook, and the mirror's -shadow authority.
import t from 'tap';
import type { CorsPolicyConfig } from '../../../src/config/filters/cors';
import { CompiledCors } from '../../../src/filters/cors';
import { registerHttpFilters } from '../../../src/filters';
import { compilePerFilterConfigs } from '../../../src/router/per-filter';
import { shadowAuthority } from '../../../src/router/mirror';
import { Runtime } from '../../../src/router/route-table';

const exact = (value: string) => ({ kind: 'exact' as const, value, ignoreCase: false });

t.test('CORS levels: the most specific set value wins, field by field', async (t) => {
  const route: CorsPolicyConfig = { allowOrigins: [exact('https://a.example')], exposeHeaders: 'x-r' };
  const vhost: CorsPolicyConfig = { allowOrigins: [exact('https://v.example')], allowMethods: 'GET', exposeHeaders: 'x-v', allowCredentials: true, maxAge: '60' };
  const c = new CompiledCors([route, vhost]);
  t.ok(c.originAllowed('https://a.example'));
  t.notOk(c.originAllowed('https://v.example'), 'origins come from the most specific level that lists any');
  t.equal(c.allowMethods, 'GET');
  t.equal(c.exposeHeaders, 'x-r');
  t.equal(c.allowCredentials, true);
  t.equal(c.maxAge, '60');
  t.equal(c.forwardNotMatchingPreflights, true, 'Envoy default');
  const none = new CompiledCors([{ allowOrigins: [] }]);
  t.notOk(none.originAllowed('https://a.example'), 'no origins listed: nothing is allowed');
  const star = new CompiledCors([{ allowOrigins: [exact('*')] }]);
  t.ok(star.originAllowed('https://anything.example'), 'a matcher that matches "*" allows all');
});

t.test('CORS filter_enabled / shadow_enabled are runtime fractions', async (t) => {
  const rt = new Runtime({ 'cors.on': 0 });
  const frac = (n: number, key = '') => ({ defaultValue: { numerator: n, denominator: 100 }, runtimeKey: key });
  t.ok(new CompiledCors([{ allowOrigins: [] }]).enabled(rt), 'unset: enabled');
  t.notOk(new CompiledCors([{ allowOrigins: [] }]).shadow(rt), 'unset: no shadow');
  t.notOk(new CompiledCors([{ allowOrigins: [], filterEnabled: frac(0) }]).enabled(rt));
  t.notOk(new CompiledCors([{ allowOrigins: [], filterEnabled: frac(100, 'cors.on') }]).enabled(rt), 'the runtime key overrides the default');
  t.ok(new CompiledCors([{ allowOrigins: [], shadowEnabled: frac(100) }]).shadow(rt));
});

t.test('per-route levels compiler: route over virtual host, stopping at a disabled level', async (t) => {
  registerHttpFilters();
  const T = 'envoy.extensions.filters.http.cors.v3.CorsPolicy';
  const route = { 'envoy.filters.http.cors': { typeName: T, config: { allowOrigins: [exact('https://a.example')] }, disabled: false } };
  const vh = { 'envoy.filters.http.cors': { typeName: T, config: { allowOrigins: [], allowMethods: 'PUT' }, disabled: false } };
  const merged = compilePerFilterConfigs([route, vh])!.get('envoy.filters.http.cors') as CompiledCors;
  t.ok(merged instanceof CompiledCors);
  t.equal(merged.allowMethods, 'PUT');
  t.ok(merged.originAllowed('https://a.example'));
  const off = { 'envoy.filters.http.cors': { typeName: '', config: undefined, disabled: true } };
  t.equal(compilePerFilterConfigs([off, vh])!.get('envoy.filters.http.cors'), null, 'disabled at the route');
  const onlyVh = compilePerFilterConfigs([{}, vh])!.get('envoy.filters.http.cors') as CompiledCors;
  t.equal(onlyVh.allowMethods, 'PUT', 'a route without its own policy uses its host one');
});

t.test('shadow authority: -shadow before the port', async (t) => {
  t.equal(shadowAuthority('reviews'), 'reviews-shadow');
  t.equal(shadowAuthority('reviews:9080'), 'reviews-shadow:9080');
  t.equal(shadowAuthority('reviews.default.svc.cluster.local:9080'), 'reviews.default.svc.cluster.local-shadow:9080');
  t.equal(shadowAuthority('[::1]:8080'), '[::1]-shadow:8080');
  t.equal(shadowAuthority('[::1]'), '[::1]-shadow');
  t.equal(shadowAuthority(''), '-shadow');
});
