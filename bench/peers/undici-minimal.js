'use strict';
// Minimal reverse proxy: node:http server + one undici Pool to the upstream.
// The smallest sensible Node proxy.
// Env: PORT (listen, 127.0.0.1), UPSTREAM (e.g. http://127.0.0.1:18080).
const http = require('node:http');
const { Pool } = require('undici');

const port = Number(process.env.PORT);
const pool = new Pool(process.env.UPSTREAM, { connections: 64, pipelining: 1, keepAliveTimeout: 60_000 });
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

function strip(h) {
  const out = {};
  for (const k of Object.keys(h)) if (!HOP.has(k)) out[k] = h[k];
  return out;
}

http.createServer((req, res) => {
  const body = req.method === 'GET' || req.method === 'HEAD' ? null : req;
  pool.stream(
    { path: req.url, method: req.method, headers: strip(req.headers), body },
    ({ statusCode, headers }) => { res.writeHead(statusCode, strip(headers)); return res; },
    (err) => {
      if (!err) return;
      if (!res.headersSent) { res.writeHead(502, { 'content-type': 'text/plain' }); res.end('bad gateway\n'); }
      else res.destroy(err);
    },
  );
}).listen(port, '127.0.0.1');
