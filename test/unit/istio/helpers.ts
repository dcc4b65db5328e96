// Shared bits for the Istio unit tests: translate text, pick clusters / routes / listeners out of
// the generated Envoy JSON, and collect the problems of a refused config.

import { IstioConfigError, translateIstioText, type IstioTranslation, type TranslateOptions } from '../../../src/istio';

export type J = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export const EP = (service = 'reviews', port = 9080): string => `
kind: Endpoints
service: ${service}
port: ${port}
endpoints:
- { address: 10.0.0.1, port: 9080, labels: { version: v1 } }
- { address: 10.0.0.2, port: 9080, labels: { version: v2 } }
- { address: 10.0.0.3, port: 9080, labels: { version: v3 } }
---`;

export const DR = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews }
spec:
  host: reviews
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
  - { name: v3, labels: { version: v3 } }
---`;

export function translate(yaml: string, opts: Partial<TranslateOptions> = {}): IstioTranslation {
  return translateIstioText(yaml, { mode: 'sidecar', listen: { address: '127.0.0.1', port: 15001 }, ...opts });
}

export function envoy(yaml: string, opts: Partial<TranslateOptions> = {}): J {
  return translate(yaml, opts).envoy as J;
}

export function problems(yaml: string, opts: Partial<TranslateOptions> = {}): string[] {
  try {
    translate(yaml, opts);
  } catch (e) {
    if (e instanceof IstioConfigError) return [...e.problems];
    throw e;
  }
  return [];
}

export function warnings(yaml: string, opts: Partial<TranslateOptions> = {}): string[] {
  return [...translate(yaml, opts).warnings];
}

export function clusterOf(e: J, name: string): J {
  const c = (e.static_resources.clusters as J[]).find((x) => x.name === name);
  if (!c) throw new Error(`no cluster ${name}: ${(e.static_resources.clusters as J[]).map((x) => x.name).join(', ')}`);
  return c;
}

export function hcmOf(e: J, listener = 0, chain = 0): J {
  return e.static_resources.listeners[listener].filter_chains[chain].filters[0].typed_config;
}

export function vhostOf(e: J, name: string, listener = 0, chain = 0): J {
  const vh = (hcmOf(e, listener, chain).route_config.virtual_hosts as J[]).find((v) => v.name === name);
  if (!vh) throw new Error(`no virtual host ${name}`);
  return vh;
}

export function vs(http: string, extra = ''): string {
  return `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
${extra}
  http:
${http}
---`;
}
