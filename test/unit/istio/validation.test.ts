// Loading and validation: documents and kinds, the CRD schema's verdict with paths, the checks
// istiod / istioctl analyze make (unknown subsets, ambiguous ports, weights), all problems at once;
// Istio durations.
import t from 'tap';
import { envoyDuration, parseIstioDuration } from '../../../src/istio/durations';
import { IstioDiagnostics, jsonPointerToPath, parseIstioText } from '../../../src/istio/resources';
import { DR, EP, problems, vs, warnings } from './helpers';

t.test('documents: kinds, apiVersions, YAML errors with line and column, Lists, empty documents', async (t) => {
  const diag = new IstioDiagnostics();
  const out = parseIstioText(
    `---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: { name: a, namespace: shop }
spec: { hosts: [a] }
---
apiVersion: v1
kind: List
items:
- { apiVersion: networking.istio.io/v1beta1, kind: DestinationRule, metadata: { name: b }, spec: { host: b } }
---
apiVersion: networking.istio.io/v1
kind: Deployment
metadata: { name: c }
---
apiVersion: networking.istio.io/v2
kind: Gateway
metadata: { name: d }
---
apiVersion: networking.istio.io/v1
kind: Gateway
spec: {}
`,
    'f.yaml',
    'default',
    diag,
  );
  t.same(out.map((r) => `${r.kind}/${r.namespace}/${r.name}`), ['VirtualService/shop/a', 'DestinationRule/default/b']);
  t.match(diag.problems[0], /^f\.yaml#3: kind "Deployment" is not one keel reads/);
  t.match(diag.problems[1], /Gateway d \(f\.yaml#4\): apiVersion "networking\.istio\.io\/v2" is not one of networking\.istio\.io\/v1, networking\.istio\.io\/v1beta1, networking\.istio\.io\/v1alpha3/);
  t.match(diag.problems[2], /metadata\.name is required/);
  const bad = new IstioDiagnostics();
  parseIstioText('kind: VirtualService\nspec: { hosts: [a\n', 'broken.yaml', 'default', bad);
  t.match(bad.problems[0], /^broken\.yaml:\d+:\d+: /);
});

t.test('schema problems carry the resource and the field path; every problem is reported at once', async (t) => {
  const p = problems(
    EP() +
      DR +
      `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: { host: reviews, subset: v1 }
      weight: 50
    - destination: { host: reviews, subset: v4 }
      weight: "x"
    timeout: 3 seconds
    retries: { attempts: -1 }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: ratings }
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: { simple: SIDEWAYS }
    outlierDetection: { maxEjectionPercent: 300, interval: soon }
`,
  );
  const text = p.join('\n');
  t.match(text, /VirtualService reviews: spec\.http\[0\]\.route\[1\]\.weight: must be integer/);
  t.match(text, /VirtualService reviews: spec\.http\[0\]\.route\[1\]\.destination\.subset: subset 'v4' of reviews\.default\.svc\.cluster\.local is not defined by any DestinationRule/);
  t.match(text, /VirtualService reviews: spec\.http\[0\]\.timeout: expected a duration/);
  t.match(text, /VirtualService reviews: spec\.http\[0\]\.retries\.attempts: must be a whole number >= 0/);
  t.match(text, /DestinationRule ratings: spec\.trafficPolicy\.loadBalancer\.simple: must be equal to one of the allowed values/);
  t.match(text, /DestinationRule ratings: spec\.trafficPolicy\.outlierDetection\.maxEjectionPercent: must be 0\.\.100/);
  t.match(text, /DestinationRule ratings: spec\.trafficPolicy\.outlierDetection\.interval: expected a duration/);
  t.equal(p.filter((x) => x.includes('route[1].weight')).length, 1, 'one problem per field (schema and translation do not repeat each other)');
});

t.test('unknown fields are refused with their path (kubectl strict validation)', async (t) => {
  const p = problems(
    EP() +
      `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews }
spec:
  host: reviews
  subsets:
  - name: v1
    lables: { version: v1 }
  trafficPolicy: { connectionPool: { tcp: { maxConections: 1 } } }
`,
  );
  t.match(p.join('\n'), /DestinationRule reviews: spec\.subsets\[0\]\.lables: unknown field/);
  t.match(p.join('\n'), /DestinationRule reviews: spec\.trafficPolicy\.connectionPool\.tcp\.maxConections: unknown field/);
  t.same(problems(EP() + vs('  - route: [{ destination: { host: reviews } }]\n    mirrors: []\n    retries: { attempts: 2, backoff: 10ms }')), [], 'fields newer than the bundled schema that keel reads are accepted');
});

t.test('references: ports of multi-port services, unknown services, weights that add up to 0', async (t) => {
  const twoPorts = `
kind: Endpoints
service: reviews
ports: [{ number: 9080, name: http }, { number: 9090, name: http-admin }]
endpoints: [{ address: 10.0.0.1 }]
---`;
  t.match(problems(twoPorts + vs('  - route: [{ destination: { host: reviews } }]')).join('\n'), /spec\.http\[0\]\.route\[0\]\.destination\.port: reviews\.default\.svc\.cluster\.local has several ports \(9080, 9090\); the destination must name one/);
  t.match(problems(EP() + vs('  - route: [{ destination: { host: reviews, port: { number: 1 } } }]')).join('\n'), /destination\.port\.number: reviews\.default\.svc\.cluster\.local has no port 1 \(it has 9080\)/);
  t.match(problems(EP() + vs('  - route: [{ destination: { host: nowhere } }]')).join('\n'), /destination\.host: unknown service nowhere\.default\.svc\.cluster\.local .* and no port\.number/);
  t.match(
    warnings(EP() + vs('  - match: [{ uri: { prefix: /x } }]\n    route: [{ destination: { host: nowhere, port: { number: 80 } } }]\n  - route: [{ destination: { host: reviews } }]')).join('\n'),
    /unknown service nowhere\.default\.svc\.cluster\.local .*503/,
  );
  t.match(problems(EP() + DR + vs('  - route:\n    - { destination: { host: reviews, subset: v1 }, weight: 0 }\n    - { destination: { host: reviews, subset: v2 }, weight: 0 }')).join('\n'), /spec\.http\[0\]\.route: the weights add up to 0/);
  t.match(problems(EP() + vs('  - name: nothing')).join('\n'), /spec\.http\[0\]: one of route, redirect or directResponse is required/);
  t.match(problems(EP() + vs('  - fault: { abort: { percentage: { value: 10 } } }\n    route: [{ destination: { host: reviews } }]')).join('\n'), /spec\.http\[0\]\.fault\.abort: one of httpStatus or grpcStatus is required/);
  t.match(problems(EP().replace('port: 9080\n', 'port: 9080\nbogus: 1\n')).join('\n'), /Endpoints reviews: bogus: unknown field/);
});

t.test('the first VirtualService for a host wins (a warning for the others)', async (t) => {
  const second = vs('  - route: [{ destination: { host: reviews } }]').replace('name: reviews', 'name: reviews-2');
  t.match(warnings(EP() + vs('  - route: [{ destination: { host: reviews } }]') + second).join('\n'), /VirtualService reviews-2: spec\.hosts: reviews\.default\.svc\.cluster\.local is already routed by VirtualService reviews/);
});

t.test('durations and paths', async (t) => {
  t.equal(parseIstioDuration('1s'), 1000);
  t.equal(parseIstioDuration('0.5s'), 500);
  t.equal(parseIstioDuration('100ms'), 100);
  t.equal(parseIstioDuration('1m30s'), 90_000);
  t.equal(parseIstioDuration('2h'), 7_200_000);
  t.equal(parseIstioDuration('0'), 0);
  t.type(parseIstioDuration('5'), 'string');
  t.type(parseIstioDuration('1x'), 'string');
  t.type(parseIstioDuration(5), 'string');
  t.equal(envoyDuration(0), '0s');
  t.equal(envoyDuration(1500), '1.5s');
  t.equal(envoyDuration(30), '0.03s');
  t.equal(jsonPointerToPath('/spec/http/0/route/1/weight'), 'spec.http[0].route[1].weight');
});
