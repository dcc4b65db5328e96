#!/usr/bin/env node
// Micro-benchmarks of keel's hot-path pieces, from the built dist/: route matching against the
// Bookinfo-shaped table the macro benchmark uses, HTTP/1 head parsing, and the native functions
// against their TypeScript twins where both can run. Prints ns/op; run with `node bench/micro/run.js`.
'use strict';
const path = require('node:path');
const net = require('node:net');
const fs = require('node:fs');
const root = path.join(__dirname, '../..');
const { parseBootstrapText } = require(path.join(root, 'dist/src/config/bootstrap'));
const { RouteTable, Runtime } = require(path.join(root, 'dist/src/router/route-table'));
const { HeaderMap } = require(path.join(root, 'dist/src/http/headers'));
const { H1Parser } = require(path.join(root, 'dist/src/http/h1-codec'));
const nativeMod = require(path.join(root, 'dist/src/native'));

// The best of five timed runs: on a shared machine the minimum is the stable figure.
function bench(name, n, fn) {
  for (let i = 0; i < Math.min(n, 50000); i++) fn(i); // warm up
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn(i);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / n);
  }
  console.log(`${name.padEnd(62)} ${best.toFixed(1).padStart(9)} ns/op`);
  return best;
}

// --- route matching
const yaml = fs.readFileSync(path.join(root, 'bench/config/bookinfo.yaml'), 'utf8').replace(/\$\{KEEL_PORT\}/g, '0').replace(/\$\{UPSTREAM_PORT\}/g, '1');
const { bootstrap } = parseBootstrapText(yaml, 'bookinfo');
const table = new RouteTable(bootstrap.listeners[0].filterChains[0].filter.routeConfig);
const runtime = new Runtime();
function input(authority, p, extra = []) {
  return {
    authority, path: p, method: 'GET', secure: false, internal: true, randomValue: 12345, runtime,
    headers: new HeaderMap([':method', 'GET', ':path', p, ':authority', authority, ':scheme', 'http', 'user-agent', 'wrk', 'accept', '*/*', ...extra]),
  };
}
const cases = [
  ['catch-all vhost, header + prefix routes missed, weighted split', input('127.0.0.1:18086', '/productpage')],
  ['named vhost (reviews:9080), first route', input('reviews:9080', '/reviews/1')],
  ['catch-all vhost, header route (end-user: jason)', input('127.0.0.1:18086', '/productpage', ['end-user', 'jason'])],
  ['no route (unknown path on a named vhost)', input('details', '/nope')],
];
console.log('route matching (RouteTable.route + pickCluster), Bookinfo-shaped table:');
for (const [name, inp] of cases) {
  bench(`  ${name}`, 1_000_000, () => {
    const r = table.route(inp);
    if (r.kind === 'route') r.route.pickCluster(inp);
  });
}

// --- HTTP/1 head parsing
const reqBuf = Buffer.from('GET /productpage HTTP/1.1\r\nHost: reviews:9080\r\nUser-Agent: wrk\r\nAccept: */*\r\nX-Request-Id: 2d1f3c44-5b5e-4f1e-9a0d-2b4c5d6e7f80\r\nX-B3-Traceid: 80f198ee56343ba864fe8b2a57d3eff7\r\nX-B3-Spanid: e457b5a2e4d86bd1\r\nX-B3-Sampled: 1\r\n\r\n');
const handler = { onHead() {}, onBody() {}, onTrailers() {}, onMessageComplete() { parser.resume(); }, onParseError(e) { throw new Error(e.details); } };
const parser = new H1Parser(handler, { isResponse: false, maxHeaderBytes: 61440, maxHeaders: 100 });
console.log('HTTP/1 parsing:');
bench('  request head, 8 headers (parse + HeaderMap)', 1_000_000, () => parser.execute(reqBuf));

// --- native vs twin (the functions both can run)
const server = net.createServer(() => undefined);
server.listen(0, '127.0.0.1', () => {
  const sock = net.connect(server.address().port, '127.0.0.1', () => {
    console.log(`native addon: ${nativeMod.native.available ? 'built' : 'not built (' + nativeMod.native.reason + ')'}`);
    const impls = [['twin', nativeMod.twin]];
    if (nativeMod.native.available) impls.unshift(['native', nativeMod.activeImpl()]);
    for (const [name, impl] of impls) bench(`  localAddress (getsockname) — ${name}`, 200_000, () => impl.localAddress(sock));
    const head = reqBuf.subarray(0, reqBuf.length - 4);
    const loaded = nativeMod.loadNative();
    if (loaded.available) bench('  scanHead, 8-header request head — native', 1_000_000, () => loaded.scanHead(head, 0, head.length));
    bench('  scanHead, 8-header request head — twin', 1_000_000, () => nativeMod.scanHeadTwin(head, 0, head.length));
    sock.destroy();
    server.close();
  });
});
