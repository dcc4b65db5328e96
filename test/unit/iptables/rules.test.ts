// Golden rule sets of `keel istio-iptables`, written out by hand from Istio 1.2x's istio-iptables
// (tools/istio-iptables/pkg/capture/run.go and its testdata goldens): the base nat table is the one
// in ISTIO-CONTRACT.md, byte for byte.
import t from 'tap';
import { completeConfig, parseIstioIptablesArgs, type HostInfo } from '../../../src/iptables/flags';
import { buildRules, renderRestore, undoBuiltinRules, type RuleSet } from '../../../src/iptables/rules';

function host(opts: { v6?: boolean; dual?: boolean; resolv?: string } = {}): HostInfo {
  const addrs: Array<{ address: string; family: 'IPv4' | 'IPv6'; internal: boolean }> = [
    { address: '127.0.0.1', family: 'IPv4', internal: true },
    { address: '::1', family: 'IPv6', internal: true },
  ];
  if (!opts.v6 || opts.dual) addrs.push({ address: '10.244.1.7', family: 'IPv4', internal: false });
  if (opts.v6 || opts.dual) addrs.push({ address: 'fe80::1', family: 'IPv6', internal: false }, { address: 'fd00:10:244::7', family: 'IPv6', internal: false });
  return { lookupUid: () => undefined, addresses: () => addrs, resolvConf: () => opts.resolv ?? 'search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n' };
}

function rules(argv: string[], h: HostInfo = host(), env: NodeJS.ProcessEnv = {}): RuleSet {
  return buildRules(completeConfig(parseIstioIptablesArgs(argv, env), env, h).config);
}

const BASE_NAT = `-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN`;

const UIDGID = `-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN`;

t.test('base case: the contract nat table, byte for byte', async (t) => {
  const r = rules(['-p', '15001', '-z', '15006', '-u', '1337', '-g', '1337']);
  t.equal(renderRestore(r.v4), `* nat\n${BASE_NAT}\nCOMMIT\n`);
  t.same(r.v6, [], 'no IPv6 rules on an IPv4 pod');
  t.same(r.routes, { add: [], remove: [] });
  // Defaults give the same thing.
  t.equal(renderRestore(rules([]).v4), `* nat\n${BASE_NAT}\nCOMMIT\n`);
});

t.test("-b '*' captures all inbound", async (t) => {
  const lines = BASE_NAT.split('\n');
  lines.splice(7, 0, '-A PREROUTING -p tcp -j ISTIO_INBOUND', '-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT');
  t.equal(renderRestore(rules(['-b', '*']).v4), `* nat\n${lines.join('\n')}\nCOMMIT\n`);
});

t.test('-b with a port list', async (t) => {
  const lines = BASE_NAT.split('\n');
  lines.splice(7, 0, '-A PREROUTING -p tcp -j ISTIO_INBOUND', '-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT', '-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT');
  t.equal(renderRestore(rules(['-b', '9080,8080']).v4), `* nat\n${lines.join('\n')}\nCOMMIT\n`);
});

t.test('-i 10.0.0.0/8 redirects that range', async (t) => {
  t.equal(renderRestore(rules(['-i', '10.0.0.0/8']).v4), `* nat\n${BASE_NAT}\n-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT\nCOMMIT\n`);
  t.equal(renderRestore(rules(['-i', '*']).v4), `* nat\n${BASE_NAT}\n-A ISTIO_OUTPUT -j ISTIO_REDIRECT\nCOMMIT\n`);
});

t.test('exclusions: -d -x -o -q -c -k', async (t) => {
  const r = rules(['-i', '*', '-b', '*', '-d', '15090,15021', '-x', '10.96.0.0/12,fd00::/8', '-o', '3306', '-q', '9080', '-c', 'eth9', '-k', 'eth1']);
  t.equal(
    renderRestore(r.v4),
    `* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A PREROUTING -i eth9 -j RETURN
-A OUTPUT -o eth9 -j RETURN
-I PREROUTING 1 -i eth1 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -p tcp --dport 3306 -j RETURN
-A ISTIO_OUTPUT -p udp --dport 3306 -j RETURN
${UIDGID}
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN
-A ISTIO_OUTPUT -p tcp --dport 9080 -j ISTIO_REDIRECT
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-I PREROUTING 1 -i eth1 -j ISTIO_REDIRECT
COMMIT
`,
  );
  t.same(r.v6, [], 'the IPv6 exclusion only goes to ip6tables');
});

t.test('-k with CIDRs inserts a per-CIDR PREROUTING redirect', async (t) => {
  const text = renderRestore(rules(['-k', 'eth1,eth2', '-i', '10.0.0.0/8']).v4);
  t.match(text, /-I PREROUTING 1 -i eth1 -j RETURN\n-I PREROUTING 1 -i eth2 -j RETURN\n/);
  t.match(text, /-I PREROUTING 1 -i eth1 -d 10\.0\.0\.0\/8 -j ISTIO_REDIRECT\n-I PREROUTING 1 -i eth2 -d 10\.0\.0\.0\/8 -j ISTIO_REDIRECT\n-A ISTIO_OUTPUT -d 10\.0\.0\.0\/8 -j ISTIO_REDIRECT\nCOMMIT/);
});

t.test('a loopback range in -i keeps app-to-self loopback traffic captured', async (t) => {
  const text = renderRestore(rules(['-i', '127.1.2.3/32']).v4);
  t.notMatch(text, /! --uid-owner/);
  t.notMatch(text, /! --gid-owner/);
  t.match(text, /-A ISTIO_OUTPUT -d 127\.1\.2\.3\/32 -j ISTIO_REDIRECT\n/);
});

const TPROXY_MANGLE = `* mangle
-N ISTIO_DIVERT
-N ISTIO_TPROXY
-N ISTIO_INBOUND
-A ISTIO_DIVERT -j MARK --set-mark 1337
-A ISTIO_DIVERT -j ACCEPT
-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT
-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY
-A PREROUTING -p tcp -m mark --mark 1337 -j CONNMARK --save-mark
-A OUTPUT -p tcp -o lo -m mark --mark 1337 -j RETURN
-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338
-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --gid-owner 1337 -j MARK --set-mark 1338
-A OUTPUT -p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark
-I ISTIO_INBOUND 1 -p tcp -m mark --mark 1337 -j RETURN
-I ISTIO_INBOUND 2 -p tcp -s 127.0.0.6/32 -i lo -j RETURN
-I ISTIO_INBOUND 3 -p tcp -i lo -m mark ! --mark 1338 -j RETURN
COMMIT
`;

t.test('TPROXY mode', async (t) => {
  const r = rules(['-m', 'TPROXY', '-b', '*']);
  t.equal(renderRestore(r.v4), `${TPROXY_MANGLE}* nat\n${BASE_NAT}\nCOMMIT\n`);
  t.same(r.routes.add, [
    ['-4', 'rule', 'add', 'fwmark', '1337', 'lookup', '133'],
    ['-4', 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '133'],
  ]);
  t.same(r.routes.remove, [
    ['-4', 'rule', 'del', 'fwmark', '1337', 'lookup', '133'],
    ['-4', 'route', 'flush', 'table', '133'],
  ]);
  const ports = renderRestore(rules(['-m', 'TPROXY', '-b', '9080', '-t', '77', '-r', '99']).v4);
  t.match(ports, /-A ISTIO_INBOUND -p tcp --dport 9080 -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT\n-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_TPROXY\n/);
  t.match(ports, /--tproxy-mark 77\/0xffffffff --on-port 15006/);
  t.same(rules(['-m', 'TPROXY', '-b', '9080', '-t', '77', '-r', '99']).routes.add[0], ['-4', 'rule', 'add', 'fwmark', '77', 'lookup', '99']);
  // TPROXY with excluded interfaces also returns early in mangle.
  t.match(renderRestore(rules(['-m', 'TPROXY', '-b', '*', '-c', 'eth9']).v4), /^\* mangle\n-N ISTIO_DIVERT\n-N ISTIO_TPROXY\n-N ISTIO_INBOUND\n-A PREROUTING -i eth9 -j RETURN\n-A OUTPUT -o eth9 -j RETURN\n/);
  // No inbound capture: no mangle rules but the TPROXY tail, and no routes.
  t.same(rules(['-m', 'TPROXY']).routes.add, []);
});

const DNS_NAT = `* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-N ISTIO_OUTPUT_DNS
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m multiport ! --dports 53,15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS
`;
const DNS_RAW_HEAD = `* raw
-N ISTIO_OUTPUT_DNS
-N ISTIO_INBOUND
-A OUTPUT -j ISTIO_OUTPUT_DNS
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 1337 -j CT --zone 1
-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --uid-owner 1337 -j CT --zone 2
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --gid-owner 1337 -j CT --zone 1
-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --gid-owner 1337 -j CT --zone 2
-A PREROUTING -j ISTIO_INBOUND
`;

t.test('--redirect-dns: the resolv.conf servers', async (t) => {
  t.equal(
    renderRestore(rules(['--redirect-dns']).v4),
    `${DNS_NAT}-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-ports 15053
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-port 15053
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
COMMIT
${DNS_RAW_HEAD}-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j CT --zone 2
-A ISTIO_INBOUND -p udp --sport 53 -s 10.96.0.10/32 -j CT --zone 1
COMMIT
`,
  );
  // ISTIO_META_DNS_CAPTURE=true is the same switch.
  t.equal(renderRestore(rules([], host(), { ISTIO_META_DNS_CAPTURE: 'true' }).v4), renderRestore(rules(['--redirect-dns']).v4));
  // Without servers (and without --capture-all-dns) DNS capture is off, with a warning.
  const none = rules(['--redirect-dns'], host({ resolv: 'search x\n' }));
  t.equal(renderRestore(none.v4), `* nat\n${BASE_NAT}\nCOMMIT\n`);
  t.match(none.warnings.join('\n'), /DNS capture disabled/);
});

t.test('--redirect-dns --capture-all-dns', async (t) => {
  t.equal(
    renderRestore(rules(['--redirect-dns', '--capture-all-dns']).v4),
    `${DNS_NAT}-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -j REDIRECT --to-ports 15053
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-port 15053
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
COMMIT
${DNS_RAW_HEAD}-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j CT --zone 2
-A ISTIO_INBOUND -p udp --sport 53 -j CT --zone 1
COMMIT
`,
  );
});

t.test('--drop-invalid', async (t) => {
  t.equal(
    renderRestore(rules(['--drop-invalid']).v4),
    `* mangle\n-N ISTIO_DROP\n-A PREROUTING -m conntrack --ctstate INVALID -j ISTIO_DROP\n-A ISTIO_DROP -j DROP\nCOMMIT\n* nat\n${BASE_NAT}\nCOMMIT\n`,
  );
  t.equal(renderRestore(rules([], host(), { INVALID_DROP: 'true' }).v4), renderRestore(rules(['--drop-invalid']).v4));
});

const V6_NAT = BASE_NAT.replace('127.0.0.6/32', '::6/128').replace(/127\.0\.0\.1\/32/g, '::1/128');

t.test('--dual-stack: ip6tables rules with ::6 and ::1', async (t) => {
  const r = rules(['--dual-stack', '-i', '10.0.0.0/8,fd00::/8', '-x', '10.96.0.0/12,fd01::/16'], host({ dual: true }));
  t.equal(renderRestore(r.v4), `* nat\n${BASE_NAT}\n-A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN\n-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT\nCOMMIT\n`);
  t.equal(renderRestore(r.v6), `* nat\n${V6_NAT}\n-A ISTIO_OUTPUT -d fd01::/16 -j RETURN\n-A ISTIO_OUTPUT -d fd00::/8 -j ISTIO_REDIRECT\nCOMMIT\n`);
  t.same(r.routes.add, [['-6', 'addr', 'add', '::6/128', 'dev', 'lo']]);
  // Without --dual-stack an IPv4-first pod gets IPv4 rules only; an IPv6 pod gets both.
  t.same(rules([], host({ dual: true })).v6, []);
  t.equal(renderRestore(rules([], host({ v6: true })).v6), `* nat\n${V6_NAT}\nCOMMIT\n`);
  // IPv6 TPROXY: ::6 in mangle, and the IPv6 policy route.
  const tp = rules(['-m', 'TPROXY', '-b', '*'], host({ v6: true }));
  t.match(renderRestore(tp.v6), /-I ISTIO_INBOUND 2 -p tcp -s ::6\/128 -i lo -j RETURN\n/);
  t.match(renderRestore(tp.v6), /-A ISTIO_TPROXY ! -d ::1\/128 -p tcp -j TPROXY/);
  t.same(tp.routes.add.slice(-2), [
    ['-6', 'rule', 'add', 'fwmark', '1337', 'lookup', '133'],
    ['-6', 'route', 'add', 'local', '::/0', 'dev', 'lo', 'table', '133'],
  ]);
});

t.test('several uids/gids and owner groups', async (t) => {
  const text = renderRestore(rules(['-u', '3,4', '-g', '1']).v4);
  t.match(text, /--uid-owner 3 -j ISTIO_IN_REDIRECT\n.*! --uid-owner 3 -j RETURN\n.*--uid-owner 3 -j RETURN\n.*--uid-owner 4 -j ISTIO_IN_REDIRECT\n/);
  // The owner-group rule goes right after the uid/gid rules (index 11), before the localhost RETURN.
  const only = rules([], host(), { ISTIO_OUTBOUND_OWNER_GROUPS: 'java,202' }).v4.map((r) => r.args.join(' '));
  t.same(only.slice(11), ['-m owner ! --gid-owner java -m owner ! --gid-owner 202 -j RETURN', '-d 127.0.0.1/32 -j RETURN']);
  const except = rules([], host(), { ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE: '888,ftp' }).v4.map((r) => r.args.join(' '));
  t.same(except.slice(11), ['-m owner --gid-owner 888 -j RETURN', '-m owner --gid-owner ftp -j RETURN', '-d 127.0.0.1/32 -j RETURN']);
  t.throws(() => rules([], host(), { ISTIO_OUTBOUND_OWNER_GROUPS: 'a', ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE: 'b' }), /cannot both be set/);
  t.match(renderRestore(rules([], host(), { ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR: '127.0.0.1/8' }).v4), /-A ISTIO_OUTPUT -d 127\.0\.0\.1\/8 -j RETURN\nCOMMIT/);
  t.throws(() => rules([], host(), { ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR: '10.0.0.0/8' }), /loopback/);
});

t.test('bad CIDRs are skipped with a warning; -x * is an error', async (t) => {
  const r = rules(['-i', 'nonsense,10.0.0.0/8']);
  t.match(r.warnings.join('\n'), /Ignoring error.*nonsense/);
  t.match(renderRestore(r.v4), /-A ISTIO_OUTPUT -d 10\.0\.0\.0\/8 -j ISTIO_REDIRECT\n/);
  t.throws(() => rules(['-x', '*']), /OUTBOUND_IP_RANGES_EXCLUDE/);
});

t.test('undo of built-in chain rules, newest first', async (t) => {
  const undo = undoBuiltinRules(rules(['-c', 'eth9', '-b', '*']).v4);
  t.same(undo, [
    ['-t', 'nat', '-D', 'OUTPUT', '-j', 'ISTIO_OUTPUT'],
    ['-t', 'nat', '-D', 'PREROUTING', '-p', 'tcp', '-j', 'ISTIO_INBOUND'],
    ['-t', 'nat', '-D', 'OUTPUT', '-o', 'eth9', '-j', 'RETURN'],
    ['-t', 'nat', '-D', 'PREROUTING', '-i', 'eth9', '-j', 'RETURN'],
  ]);
});
