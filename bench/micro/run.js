#!/usr/bin/env node
// Micro-benchmarks of keel's hot-path pieces, from the built dist/: route matching against the
// Bookinfo-shaped table the macro benchmark uses, HTTP/1 head parsing, and the native functions
// against their TypeScript twins where both can run, including the pool/LB bookkeeping functions
// (src/native/lb-pool.ts) beside the object-field code the request path uses, and the least a
// native route matcher would cost per request. Prints ns/op; run with `node bench/micro/run.js`.
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
const routeNs = [];
for (const [name, inp] of cases) {
  routeNs.push(bench(`  ${name}`, 1_000_000, () => {
    const r = table.route(inp);
    if (r.kind === 'route') r.route.pickCluster(inp);
  }));
}

// --- HTTP/1 head parsing
const reqBuf = Buffer.from('GET /productpage HTTP/1.1\r\nHost: reviews:9080\r\nUser-Agent: wrk\r\nAccept: */*\r\nX-Request-Id: 2d1f3c44-5b5e-4f1e-9a0d-2b4c5d6e7f80\r\nX-B3-Traceid: 80f198ee56343ba864fe8b2a57d3eff7\r\nX-B3-Spanid: e457b5a2e4d86bd1\r\nX-B3-Sampled: 1\r\n\r\n');
const handler = { onHead() {}, onBody() {}, onTrailers() {}, onMessageComplete() { parser.resume(); }, onParseError(e) { throw new Error(e.details); } };
const parser = new H1Parser(handler, { isResponse: false, maxHeaderBytes: 61440, maxHeaders: 100 });
console.log('HTTP/1 parsing:');
bench('  request head, 8 headers (parse + HeaderMap)', 1_000_000, () => parser.execute(reqBuf));

// --- HPACK (src/http/hpack.ts): request blocks as node:http2's nghttp2 encoder writes them (captured
// once: a first block with Huffman literals, then the repeat that is all dynamic-table indexes), each
// decoded by a decoder whose table already holds the first block's entries; and a typical response.
{
  const { HpackDecoder, HpackEncoder } = require(path.join(root, 'dist/src/http/hpack'));
  const blocks = {
    'h2load GET, first block (Huffman literals)': '8284418b089d5c0b8170dc0bc0781f867a8f9c541c722954d3a5358980aedbeb83',
    'h2load GET, repeat block (indexed)': '8284bf86be',
    'gRPC POST, first block (10 fields, Huffman literals)': '8304956272d141fc1eca245f15852a4b631b87eb1968a0ff419c9ac29525b1790b28eda12ba3b9172516a125b17a0e41d171b001b0ff865f8b1d75d0620d263d4c4d656440027465864d833505b11f408e9acac8b0c842d6958b510f21aa9b903485a9264fafa90b2d03497ea6f66aff50863485a9264faf7a8e9acac8b54790ab7443015c2d2eef40899acac8b24d494f6a7f857df7df7e9f',
    'gRPC POST, repeat block (:path literal, rest indexed)': '8304956272d141fc1eca245f15852a4b631b87eb1968a0ffc486c3c2c1c0bfbe',
  };
  console.log('HPACK (ns per header block):');
  const names = Object.keys(blocks);
  for (let i = 0; i < names.length; i += 2) {
    const first = Buffer.from(blocks[names[i]], 'hex');
    const repeat = Buffer.from(blocks[names[i + 1]], 'hex');
    // A first block re-decoded into a full table would evict and re-add: decode it with a fresh decoder
    // primed by nothing (its literals with indexing fill an empty table each time).
    bench(`  decode ${names[i]}`, 300_000, () => { const out = []; new HpackDecoder().decode(first, 0, first.length, out, 65536); });
    const dec = new HpackDecoder();
    dec.decode(first, 0, first.length, [], 65536);
    bench(`  decode ${names[i + 1]}`, 1_000_000, () => { const out = []; dec.decode(repeat, 0, repeat.length, out, 65536); });
  }
  bench('  (a fresh decoder alone, for the first-block figures)', 1_000_000, () => new HpackDecoder());
  const enc = new HpackEncoder();
  const date = new Date(0).toUTCString();
  // :status 200, content-type, date, server (indexed after the first block), x-envoy-upstream-service-time and
  // content-length (literals without indexing)
  bench('  encode response, 6 fields (4 indexed, 2 literal)', 1_000_000, (i) => {
    enc.begin();
    enc.status(200);
    enc.field('content-type', 'application/json');
    enc.field('date', date);
    enc.field('server', 'istio-envoy');
    enc.field('x-envoy-upstream-service-time', String(i & 7));
    enc.field('content-length', '1234');
    enc.end();
  });
}

// --- pool/LB bookkeeping and the header-block probe: the object-field code on the request path
// (src/upstream/) beside the typed-array functions of src/native/lb-pool.ts, twin and native,
// each wrapped the way it would be wired in (a balancer object with the cluster's random source,
// a pool object handing out connection objects). "End to end" = what a request pays: the pick,
// then the host's active count up and down; for the typed-array versions the host's count is an
// accessor over a shared Int32Array slot, which is what keeping counts where the addon can read
// them costs. Variants of one comparison run interleaved (five rounds, best of each).
function benchSet(n, variants) {
  for (const [, fn] of variants) for (let i = 0; i < Math.min(n, 50000); i++) fn(i);
  const best = variants.map(() => Infinity);
  for (let r = 0; r < 5; r++) {
    variants.forEach(([, fn], v) => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) fn(i);
      best[v] = Math.min(best[v], Number(process.hrtime.bigint() - t0) / n);
    });
  }
  variants.forEach(([name], v) => console.log(`${name.padEnd(62)} ${best[v].toFixed(1).padStart(9)} ns/op`));
  return best;
}

function lbPoolBenchmarks(loaded) {
  const { lbPoolTwin, edfInit } = require(path.join(root, 'dist/src/native/lb-pool'));
  const lb = require(path.join(root, 'dist/src/upstream/load-balancer'));
  const { ResourceManager } = require(path.join(root, 'dist/src/upstream/resource-manager'));
  const impls = [['twin', lbPoolTwin]];
  if (loaded.available) impls.push(['native', loaded.lbPool]);
  const N = 8;
  class FieldHost {
    constructor(weight) {
      this.activeRequests = 0;
      this.weight = weight;
    }
  }
  class SlotHost {
    constructor(counts, slot, weight) {
      this.counts = counts;
      this.slot = slot;
      this.weight = weight;
    }
    get activeRequests() {
      return this.counts[this.slot];
    }
    set activeRequests(v) {
      this.counts[this.slot] = v;
    }
  }
  class TypedLeastRequest {
    constructor(hosts, counts, random, choiceCount, impl) {
      this.hosts = hosts;
      this.counts = counts;
      this.slots = Int32Array.from(hosts, (h) => h.slot);
      this.random = random;
      this.choiceCount = choiceCount;
      this.randoms = new Float64Array(choiceCount);
      this.impl = impl;
    }
    pick() {
      const r = this.randoms;
      for (let i = 0; i < this.choiceCount; i++) r[i] = this.random();
      return this.hosts[this.impl.leastRequestPick(this.counts, this.slots, r, this.choiceCount)];
    }
  }
  class TypedEdf {
    constructor(hosts, counts, bias, impl) {
      const n = hosts.length;
      this.hosts = hosts;
      this.counts = counts;
      this.slots = Int32Array.from(hosts, (h) => h.slot);
      this.weights = Float64Array.from(hosts, (h) => h.weight);
      this.deadlines = new Float64Array(n + 1);
      this.heap = new Int32Array(n);
      this.bias = bias;
      this.impl = impl;
      edfInit(counts, this.slots, this.weights, this.deadlines, this.heap, bias);
    }
    pick() {
      return this.hosts[this.impl.edfPick(this.counts, this.slots, this.weights, this.deadlines, this.heap, this.bias)];
    }
  }
  // some load on the hosts, so picks compare different counts
  const load = (hosts) => hosts.forEach((h, i) => (h.activeRequests = (i * 7) % 5));
  const weightOf = (i) => 1 + (i % 3);
  const fieldHosts = (weighted) => {
    const hosts = Array.from({ length: N }, (_, i) => new FieldHost(weighted ? weightOf(i) : 1));
    load(hosts);
    return hosts;
  };
  const slotHosts = (weighted) => {
    const counts = new Int32Array(N);
    const hosts = Array.from({ length: N }, (_, i) => new SlotHost(counts, i, weighted ? weightOf(i) : 1));
    load(hosts);
    return { counts, hosts };
  };
  const request = (balancer) => () => {
    const h = balancer.pick();
    h.activeRequests++;
    h.activeRequests--;
  };
  const results = {};

  console.log(`least-request choice, ${N} hosts, choice_count 2 (pick + active count up/down), interleaved:`);
  [results.lrField, results.lr_twin, results.lr_native] = benchSet(2_000_000, [
    ['  object fields, LeastRequestLoadBalancer (the default)', request(new lb.LeastRequestLoadBalancer(fieldHosts(false), Math.random, 2))],
    ...impls.map(([name, impl]) => {
      const { counts, hosts } = slotHosts(false);
      return [`  typed arrays, leastRequestPick — ${name}`, request(new TypedLeastRequest(hosts, counts, Math.random, 2, impl))];
    }),
  ]);

  for (const bias of [1, 0.5]) {
    console.log(`weighted least-request (EDF, weight / (active + 1)^${bias}), ${N} hosts, interleaved:`);
    [results[`edfField${bias}`], results[`edf${bias}_twin`], results[`edf${bias}_native`]] = benchSet(2_000_000, [
      ['  object fields, WeightedLeastRequestLoadBalancer (the default)', request(new lb.WeightedLeastRequestLoadBalancer(fieldHosts(true), Math.random, bias))],
      ...impls.map(([name, impl]) => {
        const { counts, hosts } = slotHosts(true);
        return [`  typed arrays, edfPick — ${name}`, request(new TypedEdf(hosts, counts, bias, impl))];
      }),
    ]);
  }

  console.log('connection pool: take an idle connection (per-host limit checked), give it back, interleaved:');
  const conns = Array.from({ length: 4 }, (_, id) => ({ id, socket: { destroyed: false, writable: true } }));
  class FieldPool {
    constructor() {
      this.idle = conns.slice();
      this.rm = new ResourceManager();
    }
    take() {
      while (this.idle.length > 0) {
        const c = this.idle.pop();
        if (c.socket.destroyed || !c.socket.writable) continue;
        return c;
      }
      return this.rm.connections.canCreate() ? null : undefined;
    }
    put(c) {
      this.idle.push(c);
    }
  }
  class TypedPool {
    constructor(impl) {
      this.impl = impl;
      this.state = new Int32Array(3 + conns.length);
      this.state[2] = 1024;
      for (const c of conns) impl.poolPut(this.state, c.id);
    }
    take() {
      for (;;) {
        const id = this.impl.poolTake(this.state);
        if (id < 0) return id === -1 ? null : undefined;
        const c = conns[id];
        if (c.socket.destroyed || !c.socket.writable) continue;
        return c;
      }
    }
    put(c) {
      this.impl.poolPut(this.state, c.id);
    }
  }
  const cycle = (pool) => () => pool.put(pool.take());
  [results.poolField, results.pool_twin, results.pool_native] = benchSet(2_000_000, [
    ['  object array + Resource (H1Pool, the default)', cycle(new FieldPool())],
    ...impls.map(([name, impl]) => [`  Int32Array ready list, poolTake + poolPut — ${name}`, cycle(new TypedPool(impl))]),
  ]);

  console.log("a native route matcher's minimum: the request's header block read into native memory:");
  // the first route case's request as the router sees it (HCM has added x-forwarded-proto and
  // x-request-id): 16 strings
  const raw = [...cases[0][1].headers.raw, 'x-forwarded-proto', 'http', 'x-request-id', '2d1f3c44-5b5e-4f1e-9a0d-2b4c5d6e7f80'];
  const inp = cases[0][1];
  const blockVariants = [
    ['  the whole TypeScript route match + cluster pick (as above)', () => {
      const r = table.route(inp);
      if (r.kind === 'route') r.route.pickCluster(inp);
    }],
    ...impls.map(([name, impl]) => [`  readHeaderBlock, ${raw.length} strings — ${name}`, () => impl.readHeaderBlock(raw)]),
  ];
  if (loaded.available) {
    const nat = loaded.lbPool;
    blockVariants.push([`  readHeaderBlock, the ${raw.length} strings as call arguments — native`, () => nat.readHeaderBlock(...raw)]);
    blockVariants.push([`  readHeaderBlock, the ${raw.length} strings joined into one first — native`, () => nat.readHeaderBlock(raw.join('\n'))]);
    blockVariants.push(['  readHeaderBlock, only :path and :authority as arguments — native', () => nat.readHeaderBlock(inp.path, inp.authority)]);
    blockVariants.push(['  readHeaderBlock, empty string (the bare N-API call) — native', () => nat.readHeaderBlock('')]);
  }
  [results.routeMatch, results.block_twin, results.block_native, results.block_args, results.block_joined, results.block_two, results.bareCall] = benchSet(
    1_000_000,
    blockVariants,
  );

  const x = (a, b) => `${(a / b).toFixed(2)}x`;
  console.log('summary (time relative to the default; above 1.00x is slower):');
  const row = (what, base, key) => {
    if (results[key] !== undefined) console.log(`  ${what.padEnd(50)} ${x(results[key], base).padStart(7)}`);
  };
  for (const name of ['twin', 'native']) {
    row(`least-request, typed arrays — ${name}`, results.lrField, `lr_${name}`);
    row(`weighted least-request bias 1 — ${name}`, results.edfField1, `edf1_${name}`);
    row(`weighted least-request bias 0.5 — ${name}`, results['edfField0.5'], `edf0.5_${name}`);
    row(`pool take + put — ${name}`, results.poolField, `pool_${name}`);
  }
  row('native header-block read vs the TS route match', results.routeMatch, 'block_native');
  row('the same, the strings as call arguments', results.routeMatch, 'block_args');
  row('the same, joined into one string first', results.routeMatch, 'block_joined');
  row('only :path and :authority, vs the TS route match', results.routeMatch, 'block_two');
  row('the bare N-API call vs the TS route match', results.routeMatch, 'bareCall');
  return results;
}

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
    lbPoolBenchmarks(loaded);
    sock.destroy();
    server.close();
  });
});
