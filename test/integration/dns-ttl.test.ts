// respect_dns_ttl (Istio sets it on every DNS cluster): a STRICT_DNS cluster re-resolves its name
// when the answer's TTL runs out, not at dns_refresh_rate. A DNS server in the test answers A
// queries with an address and TTL it can change; keel runs in this process, so dns.setServers
// points its resolver there. The two upstreams share a port on 127.0.0.1 and 127.0.0.2.
import t from 'tap';
import * as dgram from 'node:dgram';
import * as dns from 'node:dns';
import * as http from 'node:http';
import * as net from 'node:net';
import { bootstrap, cluster, getText, startKeel } from '../helpers/keel';
import { waitUntil } from '../helpers/wait';

interface FakeDns {
  port: number;
  answer: { address: string; ttl: number };
  queries: number;
  close(): Promise<void>;
}

/** Answers every A query with `answer`, and other types with no records. */
async function startDns(): Promise<FakeDns> {
  const sock = dgram.createSocket('udp4');
  const d: FakeDns = { port: 0, answer: { address: '127.0.0.1', ttl: 1 }, queries: 0, close: () => new Promise((r) => sock.close(() => r())) };
  sock.on('message', (q, rinfo) => {
    // header (12) then the question: labels up to a zero byte, QTYPE, QCLASS
    let p = 12;
    while (p < q.length && q[p] !== 0) p += q[p] + 1;
    const qEnd = p + 5;
    const qtype = q.readUInt16BE(p + 1);
    d.queries++;
    const isA = qtype === 1;
    const head = Buffer.alloc(12);
    q.copy(head, 0, 0, 2); // id
    head.writeUInt16BE(0x8180, 2); // response, recursion desired and available, no error
    head.writeUInt16BE(1, 4);
    head.writeUInt16BE(isA ? 1 : 0, 6);
    const parts = [head, q.subarray(12, qEnd)];
    if (isA) {
      const rr = Buffer.alloc(16);
      rr.writeUInt16BE(0xc00c, 0); // name: pointer to the question
      rr.writeUInt16BE(1, 2); // A
      rr.writeUInt16BE(1, 4); // IN
      rr.writeUInt32BE(d.answer.ttl, 6);
      rr.writeUInt16BE(4, 10);
      d.answer.address.split('.').forEach((o, i) => (rr[12 + i] = Number(o)));
      parts.push(rr);
    }
    sock.send(Buffer.concat(parts), rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  d.port = sock.address().port;
  return d;
}

async function upstream(host: string, port: number, name: string): Promise<http.Server> {
  const s = http.createServer((_req, res) => res.end(name));
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(port, host, () => resolve());
  });
  return s;
}

t.test('respect_dns_ttl: a new address is used once the TTL runs out, long before dns_refresh_rate', async (t) => {
  const two = await upstream('127.0.0.2', 0, 'two');
  const port = (two.address() as net.AddressInfo).port;
  const one = await upstream('127.0.0.1', port, 'one');
  const fake = await startDns();
  const saved = dns.getServers();
  dns.setServers([`127.0.0.1:${fake.port}`]);
  const extra = `    dns_lookup_family: V4_ONLY
    dns_refresh_rate: 60s
    respect_dns_ttl: true`;
  const yaml = bootstrap(`            - { name: a, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: u } }] }`, cluster('u', port, extra).replace('type: STATIC', 'type: STRICT_DNS').replace('address: 127.0.0.1', 'address: svc.keel.test'));
  const keel = await startKeel(yaml);
  t.teardown(async () => {
    await keel.stop();
    dns.setServers(saved);
    await fake.close();
    await new Promise<void>((r) => one.close(() => r()));
    await new Promise<void>((r) => two.close(() => r()));
  });
  await waitUntil(async () => (await getText(keel.port)) === 'one', 'the first resolution (127.0.0.1) serves');
  const before = fake.queries;
  fake.answer = { address: '127.0.0.2', ttl: 1 };
  await waitUntil(async () => (await getText(keel.port)) === 'two', 'the name re-resolved within the TTL, not dns_refresh_rate (60 s)', 8000);
  t.ok(fake.queries > before, 'keel asked DNS again');
  t.equal(await getText(keel.port), 'two');
});
