// The demo service behind `keel --demo`: two tiny HTTP servers, v1 and v2, answering with their
// version and what they received, so a person can see routing decisions with curl.

import * as http from 'node:http';

export function startDemoUpstreams(ports: { v1: number; v2: number }, host = '127.0.0.1'): Promise<http.Server[]> {
  const make = (version: string, port: number): Promise<http.Server> =>
    new Promise((resolve, reject) => {
      const s = http.createServer((req, res) => {
        const body = JSON.stringify({ service: 'demo', version, method: req.method, path: req.url, host: req.headers.host, requestId: req.headers['x-request-id'] }) + '\n';
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-demo-version': version });
        res.end(body);
      });
      s.keepAliveTimeout = 60_000;
      s.once('error', reject);
      s.listen(port, host, () => resolve(s));
    });
  return Promise.all([make('v1', ports.v1), make('v2', ports.v2)]);
}
