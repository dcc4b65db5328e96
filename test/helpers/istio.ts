// Test helpers for the Istio front end: run keel in-process from Istio YAML text (listeners on port
// 0 on loopback), and an Endpoints document for small upstreams labelled v1/v2/v3.

import { KeelServer } from '../../src/server/server';
import { Logger } from '../../src/common/logger';
import { translateIstioText, type TranslateOptions } from '../../src/istio';

export interface RunningIstioKeel {
  server: KeelServer;
  /** bound port by listener name */
  ports: Map<string, number>;
  /** the first listener's port */
  port: number;
  stop(): Promise<void>;
  /** re-translates `yaml` and applies it live (what the file watcher does) */
  apply(yaml: string): void;
}

export async function startIstioKeel(yaml: string, extra: Partial<TranslateOptions> = {}): Promise<RunningIstioKeel> {
  const opts: TranslateOptions = { mode: 'sidecar', listen: { address: '127.0.0.1', port: 0 }, gatewayAddress: '127.0.0.1', portMap: () => 0, ...extra };
  const t = translateIstioText(yaml, opts, 'test.yaml');
  const server = new KeelServer(t.bootstrap, { log: new Logger('error'), drainTimeMs: 1000, listenerDrainTimeMs: 1000 });
  const ports = await server.start();
  return {
    server,
    ports,
    port: [...ports.values()][0],
    stop: () => server.stop(200),
    apply: (next: string) => server.applyBootstrap(translateIstioText(next, opts, 'test.yaml').bootstrap),
  };
}

/** keel's compact Endpoints document: `service` on `port`, one endpoint per [upstream port, version]. */
export function endpointsYaml(service: string, port: number, eps: readonly (readonly [number, string])[]): string {
  return `
kind: Endpoints
service: ${service}
port: ${port}
endpoints:
${eps.map(([p, v]) => `- { address: 127.0.0.1:${p}, labels: { app: ${service}, version: ${v} } }`).join('\n')}
---`;
}

export const REVIEWS_DR = `
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
