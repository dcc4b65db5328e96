// HTTP/1.1 through keel to real upstreams on loopback: routing, headers Envoy adds, framing,
// keep-alive, pipelining, local replies with response flags, upgrades.
import t from 'tap';
import * as net from 'node:net';
import { request, Agent } from 'undici';
import { bootstrap, cluster, deadPort, rawExchange, startKeel, startUpstream } from '../helpers/keel';

t.test('routes by header, prefix and weighted split; adds Envoy headers', async (t) => {
  const v1 = await startUpstream('v1');
  const v2 = await startUpstream('v2');
  const keel = await startKeel(
    bootstrap(
      `
            - name: all
              domains: ["*"]
              routes:
              - match:
                  prefix: /
                  headers: [{ name: x-version, string_match: { exact: v2 } }]
                route: { cluster: v2 }
              - match: { prefix: /only-v1 }
                route: { cluster: v1, prefix_rewrite: /rewritten }
              - match: { prefix: / }
                route:
                  weighted_clusters:
                    clusters: [{ name: v1, weight: 50 }, { name: v2, weight: 50 }]`,
      cluster('v1', v1.port) + cluster('v2', v2.port),
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await v1.close();
    await v2.close();
  });
  const agent = new Agent({ connections: 1 });
  t.teardown(() => agent.close());

  const r1 = await request(`${keel.url}/x`, { headers: { 'x-version': 'v2' }, dispatcher: agent });
  t.equal(r1.statusCode, 200);
  t.equal(r1.headers['x-upstream'], 'v2');
  t.equal(r1.headers['server'], 'envoy');
  t.match(String(r1.headers['x-envoy-upstream-service-time']), /^\d+$/);
  await r1.body.text();
  const seen = v2.requests[0].headers;
  t.match(String(seen['x-request-id']), /^[0-9a-f-]{36}$/, 'x-request-id generated');
  t.equal(seen['x-forwarded-proto'], 'http');
  t.equal(seen['x-envoy-expected-rq-timeout-ms'], '15000', 'default route timeout is 15s');

  const r2 = await request(`${keel.url}/only-v1/a?q=1`, { dispatcher: agent });
  t.same(JSON.parse(await r2.body.text()).url, '/rewritten/a?q=1');
  t.equal(v1.requests.at(-1)?.headers['x-envoy-original-path'], '/only-v1/a?q=1');

  const counts = { v1: 0, v2: 0 };
  for (let i = 0; i < 200; i++) {
    const r = await request(`${keel.url}/split`, { dispatcher: agent });
    counts[r.headers['x-upstream'] as 'v1' | 'v2']++;
    await r.body.text();
  }
  t.ok(counts.v1 > 50 && counts.v2 > 50, `both versions get traffic: ${JSON.stringify(counts)}`);
});

t.test('request and response bodies stream both ways (content-length and chunked)', async (t) => {
  const up = await startUpstream('echo', (req, res, body) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    // chunked response (no content-length)
    res.write(body.slice(0, 10));
    res.end(body.slice(10));
  });
  const keel = await startKeel(bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: echo } }] }`, cluster('echo', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const big = 'x'.repeat(300_000);
  const r = await request(`${keel.url}/echo`, { method: 'POST', body: big });
  t.equal(r.statusCode, 200);
  t.equal((await r.body.text()).length, big.length);
  // chunked request body
  const text = await rawExchange(keel.port, 'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n');
  t.match(text, /^HTTP\/1\.1 200 OK\r\n/);
  t.match(text, /transfer-encoding: chunked/);
  t.equal(up.requests.at(-1)?.body, 'hello world');
});

t.test('keep-alive and pipelined requests are answered in order', async (t) => {
  const up = await startUpstream('p', (req, res) => {
    // answer out of order in time: the first request is slow
    const delay = req.url === '/1' ? 30 : 0;
    setTimeout(() => res.end(req.url), delay);
  });
  const keel = await startKeel(bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: p } }] }`, cluster('p', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const text = await rawExchange(
    keel.port,
    'GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
  );
  const bodies = [...text.matchAll(/\r\n\r\n(\/\d)/g)].map((m) => m[1]);
  t.same(bodies, ['/1', '/2', '/3']);
  t.match(text, /connection: close/);
});

t.test('local replies: NR 404, UF 503, UH 503, NC 503, UT 504, direct response, redirect', async (t) => {
  const dead = await deadPort();
  const slow = await startUpstream('slow', (_req, res) => setTimeout(() => res.end('late'), 2000));
  const keel = await startKeel(
    bootstrap(
      `
            - name: a
              domains: ["a.test"]
              routes:
              - { match: { prefix: /dead }, route: { cluster: dead } }
              - { match: { prefix: /empty }, route: { cluster: empty } }
              - { match: { prefix: /nocluster }, route: { cluster_header: x-cluster } }
              - { match: { prefix: /slow }, route: { cluster: slow, timeout: 0.1s } }
              - { match: { path: /direct }, direct_response: { status: 418, body: { inline_string: "teapot" } } }
              - { match: { prefix: /old }, redirect: { prefix_rewrite: /new, response_code: PERMANENT_REDIRECT } }
              - { match: { prefix: /secure }, redirect: { https_redirect: true } }`,
      cluster('dead', dead) +
        cluster('slow', slow.port) +
        `
  - name: empty
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: empty, endpoints: [] }`,
    ),
  );
  t.teardown(async () => {
    await keel.stop();
    await slow.close();
  });
  const get = async (path: string, host = 'a.test', headers: Record<string, string> = {}) => {
    const r = await request(`${keel.url}${path}`, { headers: { host, ...headers } });
    return { status: r.statusCode, headers: r.headers, body: await r.body.text() };
  };
  t.equal((await get('/', 'nowhere.test')).status, 404, 'no virtual host: NR');
  const uf = await get('/dead');
  t.equal(uf.status, 503);
  t.match(uf.body, /upstream connect error or disconnect\/reset before headers. reset reason: connection failure/);
  const uh = await get('/empty');
  t.equal(uh.status, 503);
  t.equal(uh.body, 'no healthy upstream');
  t.equal((await get('/nocluster', 'a.test', { 'x-cluster': 'missing' })).status, 503, 'NC');
  const ut = await get('/slow');
  t.equal(ut.status, 504);
  t.equal(ut.body, 'upstream request timeout');
  const d = await get('/direct');
  t.equal(d.status, 418);
  t.equal(d.body, 'teapot');
  const red = await get('/old/x?y=1');
  t.equal(red.status, 308);
  t.equal(red.headers.location, 'http://a.test/new/x?y=1');
  const sec = await get('/secure/p');
  t.equal(sec.status, 301);
  t.equal(sec.headers.location, 'https://a.test/secure/p');
});

t.test('malformed requests get 400/431 and the connection closes', async (t) => {
  const up = await startUpstream('u');
  const keel = await startKeel(bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u } }] }`, cluster('u', up.port), '          max_request_headers_kb: 1'));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  t.match(await rawExchange(keel.port, 'GET / HTTP/1.1\r\n\r\n'), /^HTTP\/1\.1 400 Bad Request\r\n/);
  t.match(await rawExchange(keel.port, 'BAD REQUEST LINE\r\n\r\n'), /^HTTP\/1\.1 400 /);
  t.match(await rawExchange(keel.port, 'GET / HTTP/1.1\r\nHost: a\r\nX: ' + 'y'.repeat(2000) + '\r\n\r\n'), /^HTTP\/1\.1 431 /);
  t.equal(up.requests.length, 0, 'nothing reached the upstream');
});

t.test('websocket upgrade is proxied as a byte pipe when enabled', async (t) => {
  const up = net.createServer((s) => {
    s.once('data', () => {
      s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      s.on('data', (d) => s.write(Buffer.concat([Buffer.from('echo:'), d])));
    });
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  const upPort = (up.address() as net.AddressInfo).port;
  const keel = await startKeel(
    bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: ws } }] }`, cluster('ws', upPort), '          upgrade_configs: [{ upgrade_type: websocket }]'),
  );
  t.teardown(async () => {
    await keel.stop();
    up.close();
  });
  // after the 101, bytes flow: send one frame
  const sock = net.connect(keel.port, '127.0.0.1');
  const got = await new Promise<string>((resolve) => {
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n\r\n') && !buf.includes('echo:')) sock.write('ping');
      if (buf.includes('echo:ping')) resolve(buf);
    });
    sock.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
  });
  sock.destroy();
  t.match(got, /^HTTP\/1\.1 101 /);
  t.match(got, /echo:ping/);

  const keel2 = await startKeel(bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: ws } }] }`, cluster('ws', upPort)));
  t.teardown(() => keel2.stop());
  t.match(await rawExchange(keel2.port, 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n', (s) => s.includes('\r\n\r\n')), /^HTTP\/1\.1 403 /, 'not enabled: 403');
});

t.test('an upstream response delimited by connection close is relayed whole (chunked downstream)', async (t) => {
  const up = net.createServer((s) => {
    s.once('data', () => {
      s.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\npart one, ');
      setImmediate(() => s.end('part two'));
    });
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  const keel = await startKeel(bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: c } }] }`, cluster('c', (up.address() as net.AddressInfo).port)));
  t.teardown(async () => {
    await keel.stop();
    up.close();
  });
  const r = await request(`${keel.url}/close`);
  t.equal(r.statusCode, 200);
  t.equal(r.headers['transfer-encoding'], 'chunked');
  t.equal(await r.body.text(), 'part one, part two');
});

t.test('Expect: 100-continue is answered by keel, and the body then flows', async (t) => {
  const up = await startUpstream('u');
  const keel = await startKeel(bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u } }] }`, cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const sock = net.connect(keel.port, '127.0.0.1');
  t.teardown(() => sock.destroy());
  let got = '';
  const done = new Promise<void>((resolve) => {
    sock.on('data', (d) => {
      got += d.toString('latin1');
      if (got.startsWith('HTTP/1.1 100 Continue\r\n\r\n') && !got.includes('hello')) {
        if (!got.includes('200 OK')) sock.write('hello');
      }
      if (got.includes('200 OK') && got.includes('"body":"hello"')) resolve();
    });
  });
  sock.write('POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n');
  await done;
  t.match(got, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
  t.equal(up.requests[0].headers.expect, undefined, 'Expect is not forwarded (keel answered it)');
});

t.test('upstream closing the connection before answering: 503 with a reset reason', async (t) => {
  const up = net.createServer((s) => s.once('data', () => s.destroy()));
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  const keel = await startKeel(bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: c } }] }`, cluster('c', (up.address() as net.AddressInfo).port)));
  t.teardown(async () => {
    await keel.stop();
    up.close();
  });
  const r = await request(`${keel.url}/x`);
  t.equal(r.statusCode, 503);
  t.match(await r.body.text(), /^upstream connect error or disconnect\/reset before headers\. reset reason: (connection termination|remote reset)$/);
});

t.test('STRICT_DNS cluster resolves its hostname; use_remote_address appends x-forwarded-for; via', async (t) => {
  const up = await startUpstream('dns');
  const dnsCluster = `
  - name: dns
    type: STRICT_DNS
    dns_lookup_family: V4_ONLY
    connect_timeout: 1s
    load_assignment:
      cluster_name: dns
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: localhost, port_value: ${up.port} } } }`;
  const keel = await startKeel(
    bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: dns, auto_host_rewrite: true } }] }`, dnsCluster, '          use_remote_address: true\n          via: keel-test'),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  const r = await request(`${keel.url}/dns`, { headers: { 'x-forwarded-for': '192.0.2.1' } });
  t.equal(r.statusCode, 200);
  await r.body.text();
  const h = up.requests[0].headers;
  t.equal(h['x-forwarded-for'], '192.0.2.1,127.0.0.1');
  t.equal(h.via, 'keel-test');
  t.equal(h.host, 'localhost', 'auto_host_rewrite uses the DNS name');
  t.equal(h['x-envoy-internal'], 'true', 'loopback is internal');
});

t.test('RING_HASH with a header hash_policy keeps each user on one host', async (t) => {
  const a = await startUpstream('a');
  const b = await startUpstream('b');
  const ring = `
  - name: ring
    type: STATIC
    lb_policy: RING_HASH
    connect_timeout: 1s
    load_assignment:
      cluster_name: ring
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${a.port} } } }
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${b.port} } } }`;
  const keel = await startKeel(
    bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: ring, hash_policy: [{ header: { header_name: x-user } }] } }] }`, ring),
  );
  t.teardown(async () => {
    await keel.stop();
    await a.close();
    await b.close();
  });
  const hostFor = new Map<string, Set<string>>();
  for (let i = 0; i < 60; i++) {
    const user = `user-${i % 20}`;
    const r = await request(`${keel.url}/h`, { headers: { 'x-user': user } });
    const up = String(r.headers['x-upstream']);
    await r.body.text();
    if (!hostFor.has(user)) hostFor.set(user, new Set());
    hostFor.get(user)!.add(up);
  }
  t.ok([...hostFor.values()].every((s) => s.size === 1), 'each user always lands on the same host');
  const used = new Set([...hostFor.values()].flatMap((s) => [...s]));
  t.equal(used.size, 2, 'users spread over both hosts');
});

t.test('admin: /ready, /stats counters and /clusters', async (t) => {
  const up = await startUpstream('u');
  const keel = await startKeel(
    'admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }\n' +
      bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u } }] }`, cluster('u', up.port)),
  );
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  for (let i = 0; i < 3; i++) await (await request(`${keel.url}/s`)).body.text();
  await (await request(`${keel.url}/s`, { headers: { host: 'x' }, method: 'GET' })).body.text();
  const admin = `http://127.0.0.1:${keel.server.admin!.port}`;
  const ready = await request(`${admin}/ready`);
  t.equal(ready.statusCode, 200);
  t.equal(await ready.body.text(), 'LIVE\n');
  const stats = await (await request(`${admin}/stats`)).body.text();
  t.match(stats, /^cluster\.u\.upstream_rq_2xx: 4$/m);
  t.match(stats, /^http\.test\.downstream_rq_2xx: 4$/m);
  t.match(stats, /^cluster\.u\.upstream_rq_retry: 0$/m);
  const clusters = await (await request(`${admin}/clusters`)).body.text();
  t.match(clusters, new RegExp(`^u::127\\.0\\.0\\.1:${up.port}::health_flags::healthy$`, 'm'));
});

t.test('garbage on the wire never takes keel down', async (t) => {
  const up = await startUpstream('u');
  const keel = await startKeel(bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u } }] }`, cluster('u', up.port)));
  t.teardown(async () => {
    await keel.stop();
    await up.close();
  });
  let seed = 12345;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const payloads: Buffer[] = [];
  for (let i = 0; i < 100; i++) {
    const len = 1 + Math.floor(rand() * 300);
    const b = Buffer.alloc(len);
    for (let j = 0; j < len; j++) b[j] = Math.floor(rand() * 256);
    // some start like HTTP/2 or TLS to reach those paths too
    if (i % 10 === 1) Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n').copy(b, 0, 0, Math.min(24, len));
    if (i % 10 === 2) b[0] = 0x16;
    if (i % 10 === 3) Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n').copy(b, 0, 0, Math.min(25, len));
    payloads.push(b);
  }
  await Promise.all(
    payloads.map(
      (p) =>
        new Promise<void>((resolve) => {
          const s = net.connect(keel.port, '127.0.0.1', () => {
            s.write(p);
            s.end();
          });
          s.on('data', () => undefined);
          s.on('error', () => resolve());
          s.on('close', () => resolve());
          s.setTimeout(3000, () => s.destroy());
        }),
    ),
  );
  const r = await request(`${keel.url}/still-alive`);
  t.equal(r.statusCode, 200);
  await r.body.text();
});

t.test('filter chains match on destination prefix_ranges (most specific chain wins)', async (t) => {
  const hit = await startUpstream('prefix-hit');
  const other = await startUpstream('no-prefix');
  const chain = (match: string, c: string): string => `
    - filter_chain_match: ${match}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ${c}
          route_config: { virtual_hosts: [{ name: v, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: ${c} } }] }] }
          http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]`;
  const yaml = `
static_resources:
  listeners:
  - name: ranges
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:${chain('{ prefix_ranges: [{ address_prefix: 10.0.0.0, prefix_len: 8 }] }', 'other')}${chain('{ prefix_ranges: [{ address_prefix: 127.0.0.0, prefix_len: 8 }] }', 'hit')}${chain('{}', 'other')}
  clusters:
${cluster('hit', hit.port)}
${cluster('other', other.port)}
`;
  const keel = await startKeel(yaml);
  t.teardown(async () => {
    await keel.stop();
    await hit.close();
    await other.close();
  });
  const r = await request(`${keel.url}/r`);
  t.equal(r.headers['x-upstream'], 'prefix-hit');
  await r.body.text();
});
