import t from 'tap';
import { H1Handler, H1Head, H1Parser, ParseErrorInfo } from '../../../src/http/h1-codec';
import { HeaderMap } from '../../../src/http/headers';

interface Event {
  kind: 'head' | 'body' | 'trailers' | 'complete' | 'error';
  head?: H1Head;
  body?: string;
  trailers?: HeaderMap;
  err?: ParseErrorInfo;
}

function collect(isResponse = false, opts: Partial<{ maxHeaderBytes: number; maxHeaders: number; rejectUnderscores: boolean }> = {}) {
  const events: Event[] = [];
  const handler: H1Handler = {
    onHead: (head) => events.push({ kind: 'head', head }),
    onBody: (c) => events.push({ kind: 'body', body: c.toString('latin1') }),
    onTrailers: (tr) => events.push({ kind: 'trailers', trailers: tr }),
    onMessageComplete: () => {
      events.push({ kind: 'complete' });
      if (!isResponse) parser.resume();
    },
    onParseError: (err) => events.push({ kind: 'error', err }),
  };
  const parser = new H1Parser(handler, { isResponse, maxHeaderBytes: opts.maxHeaderBytes ?? 60 * 1024, maxHeaders: opts.maxHeaders ?? 100, rejectUnderscores: opts.rejectUnderscores });
  return { parser, events };
}

t.test('simple GET with pseudo-headers and lower-cased names', async (t) => {
  const { parser, events } = collect();
  parser.execute(Buffer.from('GET /a?b=1 HTTP/1.1\r\nHost: example.com:8080\r\nX-Foo:  bar \r\nAccept: */*\r\n\r\n'));
  t.equal(events.length, 2);
  const h = events[0].head!;
  t.same(h.headers.raw, [':method', 'GET', ':path', '/a?b=1', ':authority', 'example.com:8080', ':scheme', 'http', 'x-foo', 'bar', 'accept', '*/*']);
  t.equal(h.keepAlive, true);
  t.equal(h.noBody, true);
  t.equal(events[1].kind, 'complete');
});

t.test('byte-at-a-time delivery gives the same result', async (t) => {
  const msg = 'POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello';
  const { parser, events } = collect();
  for (const b of Buffer.from(msg)) parser.execute(Buffer.from([b]));
  t.equal(events[0].kind, 'head');
  t.equal(events.filter((e) => e.kind === 'body').map((e) => e.body).join(''), 'hello');
  t.equal(events[events.length - 1].kind, 'complete');
});

t.test('chunked body with extensions and trailers', async (t) => {
  const { parser, events } = collect();
  parser.execute(Buffer.from('POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n'));
  t.equal(events[0].head!.chunked, true);
  t.notOk(events[0].head!.headers.has('transfer-encoding'), 'framing header is not forwarded');
  t.equal(events.filter((e) => e.kind === 'body').map((e) => e.body).join(''), 'hello world');
  const tr = events.find((e) => e.kind === 'trailers');
  t.equal(tr?.trailers?.get('x-trailer'), 'yes');
  t.equal(events[events.length - 1].kind, 'complete');
});

t.test('chunked split across every boundary', async (t) => {
  const msg = Buffer.from('POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n');
  for (let cut = 1; cut < msg.length; cut++) {
    const { parser, events } = collect();
    parser.execute(msg.subarray(0, cut));
    parser.execute(msg.subarray(cut));
    t.equal(events.filter((e) => e.kind === 'body').map((e) => e.body).join(''), '0123456789', `cut at ${cut}`);
    t.equal(events.filter((e) => e.kind === 'complete').length, 1, `complete once, cut at ${cut}`);
    t.equal(events.filter((e) => e.kind === 'error').length, 0);
  }
});

t.test('pipelined requests are parsed in order', async (t) => {
  const { parser, events } = collect();
  parser.execute(Buffer.from('GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n'));
  const heads = events.filter((e) => e.kind === 'head').map((e) => e.head!.path);
  t.same(heads, ['/1', '/2']);
});

t.test('malformed requests are refused with the right status', async (t) => {
  const cases: [string, number][] = [
    ['GET / HTTP/1.1\r\n\r\n', 400], // no host
    ['GET  / HTTP/1.1\r\nHost: h\r\n\r\n', 400],
    ['GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n', 400],
    ['GET / HTTP/1.1\r\nHost: h\r\nX: a\nb\r\n\r\n', 400], // bare LF
    ['GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n', 400],
    ['POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 400],
    ['POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n', 400],
    ['POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n', 400],
    ['POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n', 501],
    ['GET / HTTP/2.0\r\nHost: h\r\n\r\n', 505],
    ['GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400],
    ['G@T / HTTP/1.1\r\nHost: h\r\n\r\n', 400],
    ['POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 400],
  ];
  for (const [msg, status] of cases) {
    const { parser, events } = collect();
    parser.execute(Buffer.from(msg));
    const e = events.find((x) => x.kind === 'error');
    t.equal(e?.err?.kind, status, JSON.stringify(msg));
  }
});

t.test('oversized heads and too many headers are 431', async (t) => {
  {
    const { parser, events } = collect(false, { maxHeaderBytes: 1024 });
    parser.execute(Buffer.from('GET / HTTP/1.1\r\nHost: h\r\nX: ' + 'a'.repeat(2000) + '\r\n\r\n'));
    t.equal(events[0].err?.kind, 431);
  }
  {
    const { parser, events } = collect(false, { maxHeaderBytes: 1024 });
    parser.execute(Buffer.from('GET / HTTP/1.1\r\nHost: h\r\nX: ' + 'a'.repeat(600)));
    parser.execute(Buffer.from('a'.repeat(600)));
    t.equal(events[0]?.err?.kind, 431, 'also when the head arrives in pieces');
  }
  {
    const { parser, events } = collect(false, { maxHeaders: 3 });
    parser.execute(Buffer.from('GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n'));
    t.equal(events[0].err?.kind, 431);
  }
});

t.test('underscores rejected when configured', async (t) => {
  const { parser, events } = collect(false, { rejectUnderscores: true });
  parser.execute(Buffer.from('GET / HTTP/1.1\r\nHost: h\r\nx_y: 1\r\n\r\n'));
  t.equal(events[0].err?.kind, 400);
});

t.test('HTTP/1.0 and connection semantics', async (t) => {
  const { parser, events } = collect();
  parser.execute(Buffer.from('GET / HTTP/1.0\r\nHost: h\r\n\r\n'));
  t.equal(events[0].head!.keepAlive, false);
  const b = collect();
  b.parser.execute(Buffer.from('GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n'));
  t.equal(b.events[0].head!.keepAlive, true);
  const c = collect();
  c.parser.execute(Buffer.from('GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n'));
  t.equal(c.events[0].head!.keepAlive, false);
  t.notOk(c.events[0].head!.headers.has('connection'), 'connection is hop-by-hop');
});

t.test('absolute-form target sets :authority and :path', async (t) => {
  const { parser, events } = collect();
  parser.execute(Buffer.from('GET http://other.example:81/x?y HTTP/1.1\r\nHost: ignored\r\n\r\n'));
  const h = events[0].head!;
  t.equal(h.headers.get(':authority'), 'other.example:81');
  t.equal(h.headers.get(':path'), '/x?y');
});

t.test('expect 100-continue and upgrade are recognised', async (t) => {
  const { parser, events } = collect();
  parser.execute(Buffer.from('POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n'));
  t.equal(events[0].head!.expectContinue, true);
  t.notOk(events[0].head!.headers.has('expect'));
  const u = collect();
  u.parser.execute(Buffer.from('GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'));
  t.equal(u.events[0].head!.upgrade, true);
  t.equal(u.events[0].head!.headers.get('upgrade'), 'websocket');
  const n = collect();
  n.parser.execute(Buffer.from('GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n'));
  t.equal(n.events[0].head!.upgrade, false, 'upgrade without connection: upgrade is not an upgrade');
  t.notOk(n.events[0].head!.headers.has('upgrade'));
});

t.test('responses: content-length, chunked, until-close, no-body statuses, interim', async (t) => {
  {
    const { parser, events } = collect(true);
    parser.execute(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc'));
    t.equal(events[0].head!.status, 200);
    t.equal(events[1].body, 'abc');
    t.equal(events[2].kind, 'complete');
  }
  {
    const { parser, events } = collect(true);
    parser.execute(Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n'));
    t.same(events.filter((e) => e.kind === 'head').map((e) => e.head!.status), [100, 204]);
    t.equal(events[events.length - 1].kind, 'complete');
  }
  {
    const { parser, events } = collect(true);
    parser.execute(Buffer.from('HTTP/1.0 200 OK\r\n\r\nsome'));
    parser.execute(Buffer.from(' body'));
    t.equal(events[0].head!.untilClose, true);
    t.equal(parser.finish(), true);
    t.equal(events.filter((e) => e.kind === 'body').map((e) => e.body).join(''), 'some body');
    t.equal(events[events.length - 1].kind, 'complete');
  }
  {
    const { parser, events } = collect(true);
    parser.expectNoBody = true;
    parser.execute(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n'));
    t.equal(events[1].kind, 'complete', 'response to HEAD has no body');
  }
  {
    const { parser, events } = collect(true);
    parser.execute(Buffer.from('HTTP/1.1 2000 OK\r\n\r\n'));
    t.equal(events[0].kind, 'error');
  }
});

t.test('a response with content-length: 0 completes with its head, not with the next bytes', async (t) => {
  const { parser, events } = collect(true);
  parser.execute(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
  t.same(
    events.map((e) => e.kind),
    ['head', 'complete'],
  );
  t.equal(events[0].head!.noBody, true, 'reported as a response without a body (endStream on its headers)');
});
