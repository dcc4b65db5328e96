// Filter-chain match tree: Envoy's level order, most specific wins per level with no backtracking,
// "any" only when nothing more specific fits, wildcard server names, default chain.
import t from 'tap';
import { FilterChainMatcher, CidrTable, parseIp, type ConnectionFacts } from '../../../src/listener/chain-match';
import type { FilterChainMatchConfig } from '../../../src/config/types';

const ANY: FilterChainMatchConfig = { prefixRanges: [], serverNames: [], applicationProtocols: [], sourceType: 'ANY', sourcePrefixRanges: [], sourcePorts: [] };
const m = (o: Partial<FilterChainMatchConfig>): FilterChainMatchConfig => ({ ...ANY, ...o });
const cidr = (s: string): { addressPrefix: string; prefixLen: number } => {
  const [a, l] = s.split('/');
  return { addressPrefix: a!, prefixLen: Number(l) };
};
const facts = (o: Partial<ConnectionFacts>): ConnectionFacts => ({
  destinationAddress: '10.0.0.1',
  destinationPort: 80,
  transportProtocol: 'raw_buffer',
  applicationProtocols: [],
  sourceAddress: '10.1.1.1',
  sourcePort: 40000,
  ...o,
});
function matcher(chains: [string, FilterChainMatchConfig][], def?: string): FilterChainMatcher<string> {
  return new FilterChainMatcher(
    chains.map(([chain, match]) => ({ chain, match })),
    def,
  );
}

t.test('parseIp and longest prefix', async (t) => {
  t.same(parseIp('10.0.0.1'), { v6: false, n: 0x0a000001 });
  t.same(parseIp('::ffff:10.0.0.1'), { v6: false, n: 0x0a000001 });
  t.same(parseIp('::1'), { v6: true, n: 1n });
  t.same(parseIp('2001:db8::1'), { v6: true, n: (0x20010db8n << 96n) | 1n });
  t.equal(parseIp('nope'), undefined);
  const tab = new CidrTable<string>();
  tab.getOrAdd('10.0.0.0', 8, () => 'eight');
  tab.getOrAdd('10.1.0.0', 16, () => 'sixteen');
  tab.getOrAdd('0.0.0.0', 0, () => 'any4');
  tab.getOrAdd('2001:db8::', 32, () => 'v6');
  t.equal(tab.lookup(parseIp('10.1.2.3')), 'sixteen');
  t.equal(tab.lookup(parseIp('10.2.2.3')), 'eight');
  t.equal(tab.lookup(parseIp('192.168.0.1')), 'any4');
  t.equal(tab.lookup(parseIp('2001:db8:1::5')), 'v6');
  t.equal(tab.lookup(parseIp('2001:db9::5')), undefined);
  t.equal(tab.getOrAdd('10.255.0.0', 8, () => 'other'), 'eight', 'same masked range is the same entry');
});

t.test('destination port beats any, and there is no backtracking to the port-less chains', async (t) => {
  const mt = matcher([
    ['port80-tls', m({ destinationPort: 80, transportProtocol: 'tls' })],
    ['any', m({})],
  ]);
  t.equal(mt.find(facts({ transportProtocol: 'tls' })), 'port80-tls');
  t.equal(mt.find(facts({ transportProtocol: 'raw_buffer' })), undefined, 'port 80 subtree has no raw_buffer chain: no match (Envoy)');
  t.equal(mt.find(facts({ destinationPort: 81 })), 'any');
});

t.test('default chain when nothing matches', async (t) => {
  const mt = matcher([['p80', m({ destinationPort: 80 })]], 'default');
  t.equal(mt.find(facts({ destinationPort: 81 })), 'default');
  t.equal(mt.find(facts({})), 'p80');
});

t.test('prefix_ranges: longest prefix wins, empty is any', async (t) => {
  const mt = matcher([
    ['wide', m({ prefixRanges: [cidr('10.0.0.0/8')] })],
    ['narrow', m({ prefixRanges: [cidr('10.0.0.0/24'), cidr('192.168.1.0/24')] })],
    ['any', m({ serverNames: [] , sourcePorts: [] })],
  ]);
  t.equal(mt.find(facts({ destinationAddress: '10.0.0.9' })), 'narrow');
  t.equal(mt.find(facts({ destinationAddress: '192.168.1.9' })), 'narrow');
  t.equal(mt.find(facts({ destinationAddress: '10.9.0.9' })), 'wide');
  t.equal(mt.find(facts({ destinationAddress: '172.16.0.1' })), 'any');
  t.equal(mt.find(facts({ destinationAddress: '::ffff:10.0.0.9' })), 'narrow', 'v4-mapped counts as v4');
  t.equal(mt.find(facts({ destinationAddress: 'fd00::1' })), 'any');
});

t.test('server_names: exact, then the longest wildcard suffix, then any; case-insensitive', async (t) => {
  const mt = matcher([
    ['exact', m({ serverNames: ['api.example.com'] })],
    ['wild-sub', m({ serverNames: ['*.b.example.com'] })],
    ['wild', m({ serverNames: ['*.example.com'] })],
    ['none', m({})],
  ]);
  t.equal(mt.find(facts({ serverName: 'API.example.com' })), 'exact');
  t.equal(mt.find(facts({ serverName: 'x.b.example.com' })), 'wild-sub');
  t.equal(mt.find(facts({ serverName: 'y.x.b.example.com' })), 'wild-sub');
  t.equal(mt.find(facts({ serverName: 'other.example.com' })), 'wild');
  t.equal(mt.find(facts({ serverName: 'example.com' })), 'none', '*.example.com does not match the bare domain');
  t.equal(mt.find(facts({ serverName: 'foo.org' })), 'none');
  t.equal(mt.find(facts({})), 'none');
  t.same(mt.needs, { serverNames: true, transportProtocol: false, applicationProtocols: false });
});

t.test('transport_protocol and application_protocols as Istio virtualInbound uses them', async (t) => {
  const mt = matcher(
    [
      ['mtls-http', m({ destinationPort: 8080, transportProtocol: 'tls', applicationProtocols: ['istio-http/1.0', 'istio-http/1.1', 'istio-h2'] })],
      ['mtls-tcp', m({ destinationPort: 8080, transportProtocol: 'tls' })],
      ['plain-http', m({ destinationPort: 8080, transportProtocol: 'raw_buffer', applicationProtocols: ['http/1.1', 'http/1.0', 'h2c'] })],
      ['plain-tcp', m({ destinationPort: 8080, transportProtocol: 'raw_buffer' })],
    ],
    'passthrough',
  );
  const at = (o: Partial<ConnectionFacts>): string | undefined => mt.find(facts({ destinationPort: 8080, ...o }));
  t.equal(at({ transportProtocol: 'tls', applicationProtocols: ['istio-peer-exchange', 'istio-h2'] }), 'mtls-http', 'first listed ALPN any chain names');
  t.equal(at({ transportProtocol: 'tls', applicationProtocols: ['istio-peer-exchange', 'istio'] }), 'mtls-tcp');
  t.equal(at({ transportProtocol: 'raw_buffer', applicationProtocols: ['h2c'] }), 'plain-http');
  t.equal(at({ transportProtocol: 'raw_buffer', applicationProtocols: [] }), 'plain-tcp');
  t.equal(at({ destinationPort: 9999 }), 'passthrough');
  t.same(mt.needs, { serverNames: false, transportProtocol: true, applicationProtocols: true });
});

t.test('source levels: direct source, source type, source ranges, source ports', async (t) => {
  const mt = matcher([
    ['local', m({ sourceType: 'SAME_IP_OR_LOOPBACK' })],
    ['external-10', m({ sourceType: 'EXTERNAL', sourcePrefixRanges: [cidr('10.0.0.0/8')] })],
    ['external-10-port', m({ sourceType: 'EXTERNAL', sourcePrefixRanges: [cidr('10.0.0.0/8')], sourcePorts: [5555] })],
    ['any', m({ sourcePorts: [] })],
  ]);
  t.equal(mt.find(facts({ sourceAddress: '127.0.0.1' })), 'local');
  t.equal(mt.find(facts({ sourceAddress: '10.0.0.1' })), 'local', 'same IP as the destination');
  t.equal(mt.find(facts({ sourceAddress: '10.2.0.1' })), 'external-10');
  t.equal(mt.find(facts({ sourceAddress: '10.2.0.1', sourcePort: 5555 })), 'external-10-port');
  t.equal(mt.find(facts({ sourceAddress: '192.168.0.1' })), undefined, 'EXTERNAL chosen, no source range fits: no match');
  const direct = matcher([
    ['direct', m({ directSourcePrefixRanges: [cidr('127.0.0.6/32')] })],
    ['other', m({ sourcePorts: [1] })],
  ]);
  t.equal(direct.find(facts({ sourceAddress: '127.0.0.6' })), 'direct');
  t.equal(direct.find(facts({ sourceAddress: '127.0.0.7', sourcePort: 1 })), 'other');
  t.equal(direct.find(facts({ sourceAddress: '127.0.0.7', sourcePort: 2 })), undefined);
});

t.test('a chain whose every combination repeats an earlier one is a duplicate', async (t) => {
  const mt = matcher([
    ['a', m({ serverNames: ['a.com', 'b.com'] })],
    ['b', m({ serverNames: ['b.com'] })],
    ['c', m({ serverNames: ['b.com', 'c.com'] })],
  ]);
  t.same(mt.duplicates, ['b']);
  t.same(mt.conflicts, [
    { chain: 'b', with: 'a' },
    { chain: 'c', with: 'a' },
  ], 'any shared combination is a conflict (Envoy refuses the listener)');
  t.equal(mt.find(facts({ serverName: 'b.com' })), 'a', 'first wins');
  t.equal(mt.find(facts({ serverName: 'c.com' })), 'c');
});
