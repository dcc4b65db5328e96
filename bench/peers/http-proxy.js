'use strict';
// http-proxy 1.18 (node-http-proxy) with a keep-alive http.Agent to the upstream.
// Env: PORT (listen, 127.0.0.1), UPSTREAM (e.g. http://127.0.0.1:18080).
const http = require('node:http');
const httpProxy = require('http-proxy');

const agent = new http.Agent({ keepAlive: true, maxSockets: 64, maxFreeSockets: 64, keepAliveMsecs: 60_000 });
const proxy = httpProxy.createProxyServer({ target: process.env.UPSTREAM, agent, xfwd: false });
proxy.on('error', (err, req, res) => {
  if (res && typeof res.writeHead === 'function' && !res.headersSent) {
    res.writeHead(502, { 'content-type': 'text/plain' });
    res.end('bad gateway\n');
  } else if (res) res.destroy();
});

http.createServer((req, res) => proxy.web(req, res)).listen(Number(process.env.PORT), '127.0.0.1');
