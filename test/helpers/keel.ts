// Test helpers: run keel in-process from a bootstrap YAML template, and small real upstreams.
// Everything binds port 0 on loopback and is closed by the returned cleanup.

import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import * as http from 'node:http';
import type * as http2 from 'node:http2';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as net from 'node:net';
import { parseBootstrapText } from '../../src/config/bootstrap';
import { KeelServer, type ServerOptions } from '../../src/server/server';
import { Logger } from '../../src/common/logger';

export interface RunningKeel {
  server: KeelServer;
  port: number;
  ports: Map<string, number>;
  url: string;
  stop(): Promise<void>;
}

/** `yaml` is a full bootstrap; listeners should use port_value 0. */
export async function startKeel(yaml: string, opts: ServerOptions = {}): Promise<RunningKeel> {
  const { bootstrap } = parseBootstrapText(yaml, 'test');
  const server = new KeelServer(bootstrap, { log: new Logger('error'), drainTimeMs: 1000, ...opts });
  const ports = await server.start();
  const port = [...ports.values()][0];
  return { server, port, ports, url: `http://127.0.0.1:${port}`, stop: () => server.stop(200) };
}

export interface Upstream {
  port: number;
  server: http.Server;
  requests: { method: string; url: string; headers: http.IncomingHttpHeaders; body: string }[];
  close(): Promise<void>;
}

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void;

/** An HTTP/1.1 upstream that records what it receives and answers with `name`, or with `handler`. */
export async function startUpstream(name: string, handler?: Handler): Promise<Upstream> {
  const requests: Upstream['requests'] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      if (handler) return handler(req, res, body);
      const out = JSON.stringify({ upstream: name, method: req.method, url: req.url, body });
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': name });
      res.end(out);
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    server,
    requests,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A port on loopback that refuses connections (bound, then closed). */
export async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export function cluster(name: string, port: number, extra = ''): string {
  return `
  - name: ${name}
    type: STATIC
    connect_timeout: 1s
${extra}
    load_assignment:
      cluster_name: ${name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: ${port} }`;
}

/** A bootstrap with one HTTP listener on port 0; `vhosts` is the YAML list of virtual hosts. */
export function bootstrap(vhosts: string, clusters: string, hcmExtra = ''): string {
  return `
static_resources:
  listeners:
  - name: test
    address:
      socket_address: { address: 127.0.0.1, port_value: 0 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: test
${hcmExtra}
          route_config:
            name: test
            virtual_hosts:
${vhosts}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
${clusters}
`;
}

/** Raw HTTP/1.1 exchange over one socket: sends `data`, resolves with everything read until close or `until` matches. */
export function rawExchange(port: number, data: string | Buffer, until?: (text: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let out = '';
    s.on('data', (d) => {
      out += d.toString('latin1');
      if (until?.(out)) {
        s.destroy();
        resolve(out);
      }
    });
    s.on('end', () => resolve(out));
    s.on('close', () => resolve(out));
    s.on('error', reject);
    s.write(data);
  });
}

/** One listener with a TLS chain and a plaintext chain (Istio's PERMISSIVE shape): the first bytes decide. */
export function mixedListenerYaml(upPort: number, crt: string, key: string): string {
  const routes = `            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u } }] }`;
  const hcm = `
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: mixed
          route_config:
            name: mixed
            virtual_hosts:
${routes}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router`;
  return `
static_resources:
  listeners:
  - name: mixed
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }
    filter_chains:
    - filter_chain_match: { transport_protocol: tls }
${downstreamTls(crt, key)}
      filters:${hcm}
    - filters:${hcm}
  clusters:
${cluster('u', upPort)}
`;
}


/** A self-signed P-256 certificate for CN=localhost in a temp dir. */
export async function selfSignedCert(): Promise<{ crt: string; key: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'keel-cert-'));
  const key = path.join(dir, 'key.pem');
  const crt = path.join(dir, 'cert.pem');
  await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', crt, '-subj', '/CN=localhost', '-days', '1']);
  return { crt, key };
}

/** A filter chain's transport_socket (DownstreamTlsContext with one certificate), indented for a chain entry. */
export function downstreamTls(crt: string, key: string): string {
  return `      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: { filename: ${crt} }
              private_key: { filename: ${key} }`;
}

/**
 * A cluster's `typed_extension_protocol_options` with one HttpProtocolOptions field (e.g.
 * `use_downstream_protocol_config: {}`), indented for cluster()'s `extra`.
 */
export function httpProtocolOptions(field: string): string {
  return `
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        ${field}`;
}

/** A cluster's transport_socket: TLS to `localhost` trusting `crt`, optionally with alpn_protocols; for cluster()'s `extra`. */
export function upstreamTls(crt: string, alpn?: readonly string[]): string {
  return `
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:${alpn ? `\n          alpn_protocols: [${alpn.join(', ')}]` : ''}
          validation_context: { trusted_ca: { filename: ${crt} } }`;
}

/** GET `path` on an HTTP/2 client session; resolves with the body (latin1). */
export function h2Get(client: http2.ClientHttp2Session, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = client.request({ ':path': path });
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => resolve(body));
    req.on('error', reject);
    req.end();
  });
}

/** GET http://127.0.0.1:`port``path` on a fresh connection; resolves with the body (latin1). */
export function getText(port: number, path = '/'): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let b = '';
        res.setEncoding('latin1');
        res.on('data', (c: string) => (b += c));
        res.on('end', () => resolve(b));
      })
      .on('error', reject);
  });
}
