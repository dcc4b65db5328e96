// istio-iptables' command line: long/short forms, booleans, environment defaults, errors; and the
// command's dry run and failure paths with a fake host and a fake command runner.
import t from 'tap';
import { UsageError } from '../../../src/cli/args';
import { completeConfig, nameServers, parseIstioIptablesArgs, type HostInfo } from '../../../src/iptables/flags';
import { parseGoDuration } from '../../../src/common/go-duration';
import { runIstioIptables, type IstioIptablesIo } from '../../../src/cli/istio-iptables';
import { cleanupRestoreFor, splitSaveLine, type Runner } from '../../../src/iptables/apply';

const v4host: HostInfo = {
  lookupUid: (u) => (u === 'envoy' ? '101' : undefined),
  addresses: () => [{ address: '10.1.2.3', family: 'IPv4', internal: false }],
  resolvConf: () => 'nameserver 10.96.0.10\nnameserver fd00::a\n',
};

t.test('long, short, inline and separate values', async (t) => {
  const c = parseIstioIptablesArgs(['-p', '15101', '-z15106', '-e=15108', '--proxy-uid=7', '--proxy-gid', '8', '-m', 'TPROXY', '-b', '*', '-d', '15090,15021', '-i', '*', '-x', '', '-q', '80', '-o', '3306', '-k', 'eth1', '-c', 'eth9', '-t', '9', '-r', '10', '-n', '--redirect-dns', '--capture-all-dns=true', '--drop-invalid', '--dual-stack', '--run-validation', '--cleanup-only=false', '--probe-timeout=250ms', '--iptables-probe-port', '16002']).config;
  t.match(c, {
    proxyPort: '15101', inboundCapturePort: '15106', inboundTunnelPort: '15108', proxyUid: '7', proxyGid: '8',
    inboundInterceptionMode: 'TPROXY', inboundPortsInclude: '*', inboundPortsExclude: '15090,15021', outboundIpRangesInclude: '*',
    outboundIpRangesExclude: '', outboundPortsInclude: '80', outboundPortsExclude: '3306', rerouteVirtualInterfaces: 'eth1',
    excludeInterfaces: 'eth9', inboundTproxyMark: '9', inboundTproxyRouteTable: '10', dryRun: true, redirectDns: true,
    captureAllDns: true, dropInvalid: true, dualStack: true, runValidation: true, cleanupOnly: false, probeTimeoutMs: 250, iptablesProbePort: 16002,
  });
  // The long names of every short flag.
  const l = parseIstioIptablesArgs(['--envoy-port', '1', '--inbound-capture-port', '2', '--inbound-tunnel-port', '3', '--istio-inbound-interception-mode', 'REDIRECT', '--istio-inbound-ports', '4', '--istio-local-exclude-ports', '5', '--istio-service-cidr', '6.0.0.0/8', '--istio-service-exclude-cidr', '7.0.0.0/8', '--istio-outbound-ports', '8', '--istio-local-outbound-ports-exclude', '9', '--kube-virt-interfaces', 'k', '--istio-exclude-interfaces', 'c', '--istio-inbound-tproxy-mark', '11', '--istio-inbound-tproxy-route-table', '12', '--dry-run']).config;
  t.match(l, { proxyPort: '1', inboundCapturePort: '2', inboundTunnelPort: '3', inboundPortsInclude: '4', inboundPortsExclude: '5', outboundIpRangesInclude: '6.0.0.0/8', outboundIpRangesExclude: '7.0.0.0/8', outboundPortsInclude: '8', outboundPortsExclude: '9', rerouteVirtualInterfaces: 'k', excludeInterfaces: 'c', inboundTproxyMark: '11', inboundTproxyRouteTable: '12', dryRun: true });
  // Istio's injected init-container command line, with its tolerated extras.
  const inj = parseIstioIptablesArgs(['-p', '15001', '-z', '15006', '-u', '1337', '-m', 'REDIRECT', '-i', '*', '-x', '', '-b', '*', '-d', '15090,15021,15020', '--log_output_level=default:info', '--log_as_json', '--reconcile', '--force-apply', '--skip-rule-apply', '--cni-mode=false', '--native-nftables=false']);
  t.match(inj.config, { inboundPortsInclude: '*', outboundIpRangesInclude: '*', skipRuleApply: true });
  t.equal(inj.warnings.filter((w) => w.includes('log_')).length, 2);
});

t.test('booleans do not take the next argument', async (t) => {
  t.throws(() => parseIstioIptablesArgs(['--dry-run', 'false']), new UsageError('unexpected argument false'));
  t.equal(parseIstioIptablesArgs(['--dry-run=false']).config.dryRun, false);
  t.equal(parseIstioIptablesArgs(['-n=true']).config.dryRun, true);
});

t.test('errors', async (t) => {
  t.throws(() => parseIstioIptablesArgs(['--bogus']), /unknown flag: --bogus/);
  t.throws(() => parseIstioIptablesArgs(['-Z', '1']), /unknown shorthand flag: 'Z'/);
  t.throws(() => parseIstioIptablesArgs(['-p']), /flag needs an argument: -p/);
  t.throws(() => parseIstioIptablesArgs(['-p', 'http']), /-p: --envoy-port must be a port number/);
  t.throws(() => parseIstioIptablesArgs(['-z', '70000']), /port number/);
  t.throws(() => parseIstioIptablesArgs(['-m', 'NAT']), /REDIRECT or TPROXY/);
  t.throws(() => parseIstioIptablesArgs(['-t', 'x']), /must be a number/);
  t.throws(() => parseIstioIptablesArgs(['--dry-run=maybe']), /invalid boolean/);
  t.throws(() => parseIstioIptablesArgs(['--probe-timeout', '5']), /duration/);
  t.throws(() => parseIstioIptablesArgs(['--native-nftables']), /not supported/);
  t.throws(() => parseIstioIptablesArgs(['--network-namespace', '/var/run/netns/x']), /not supported/);
  t.throws(() => parseIstioIptablesArgs(['stray']), /unexpected argument stray/);
  t.throws(() => parseIstioIptablesArgs(['--', 'x']), /unexpected argument x/);
  t.ok(parseIstioIptablesArgs(['-h']).help);
});

t.test('environment defaults, overridden by flags', async (t) => {
  const env = {
    INBOUND_CAPTURE_PORT: '16006', INBOUND_TUNNEL_PORT: '16008', PROXY_UID: '5', PROXY_GID: '6',
    ISTIO_INBOUND_INTERCEPTION_MODE: 'TPROXY', ISTIO_INBOUND_PORTS: '*', ISTIO_LOCAL_EXCLUDE_PORTS: '15020',
    ISTIO_EXCLUDE_INTERFACES: 'eth9', ISTIO_SERVICE_CIDR: '10.0.0.0/8', ISTIO_SERVICE_EXCLUDE_CIDR: '10.96.0.0/12',
    ISTIO_OUTBOUND_PORTS: '80', ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE: '3306', KUBE_VIRT_INTERFACES: 'eth1',
    ISTIO_INBOUND_TPROXY_MARK: '9', ISTIO_INBOUND_TPROXY_ROUTE_TABLE: '10', DRY_RUN: 'true', REDIRECT_DNS: 'true',
    CAPTURE_ALL_DNS: '1', DROP_INVALID: 'true', DUAL_STACK: 'true', RUN_VALIDATION: 'true', CLEANUP_ONLY: 'false',
    ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE: '888', ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR: '127.0.0.1/8',
    ENVOY_PORT: '1', // not read: Istio binds --envoy-port without an environment variable
  };
  const c = parseIstioIptablesArgs([], env).config;
  t.match(c, {
    proxyPort: '15001', inboundCapturePort: '16006', inboundTunnelPort: '16008', proxyUid: '5', proxyGid: '6', inboundInterceptionMode: 'TPROXY',
    inboundPortsInclude: '*', inboundPortsExclude: '15020', excludeInterfaces: 'eth9', outboundIpRangesInclude: '10.0.0.0/8',
    outboundIpRangesExclude: '10.96.0.0/12', outboundPortsInclude: '80', outboundPortsExclude: '3306', rerouteVirtualInterfaces: 'eth1',
    inboundTproxyMark: '9', inboundTproxyRouteTable: '10', dryRun: true, redirectDns: true, captureAllDns: true, dropInvalid: true,
    dualStack: true, runValidation: true, cleanupOnly: false, ownerGroupsExclude: '888', hostIpv4LoopbackCidr: '127.0.0.1/8',
  });
  const f = parseIstioIptablesArgs(['-z', '17006', '--dry-run=false', '-m', 'REDIRECT'], env).config;
  t.match(f, { inboundCapturePort: '17006', dryRun: false, inboundInterceptionMode: 'REDIRECT' });
  // The extra names Istio also reads; an unparsable boolean in the environment is ignored, as Istio does.
  t.match(parseIstioIptablesArgs([], { ISTIO_META_DNS_CAPTURE: 'true', INVALID_DROP: 'true', ISTIO_DUAL_STACK: 'true', RUN_VALIDATION: 'yes' }).config, { redirectDns: true, dropInvalid: true, dualStack: true, runValidation: false });
  // A bad value in the environment is reported with the variable's name.
  t.throws(() => parseIstioIptablesArgs([], { INBOUND_CAPTURE_PORT: 'x' }), /\$INBOUND_CAPTURE_PORT/);
});

t.test('host-derived settings', async (t) => {
  const none = completeConfig(parseIstioIptablesArgs([]), {}, v4host).config;
  t.match(none, { proxyUid: '1337', proxyGid: '1337', enableIpv6: false, dnsServersV4: [], dnsServersV6: [] });
  const envoy = completeConfig(parseIstioIptablesArgs(['-g', '9']), { ENVOY_USER: 'envoy' }, v4host).config;
  t.match(envoy, { proxyUid: '101', proxyGid: '9' });
  t.equal(completeConfig(parseIstioIptablesArgs(['-u', '4']), {}, v4host).config.proxyGid, '4', 'gid defaults to the uid');
  const dns = completeConfig(parseIstioIptablesArgs(['--redirect-dns']), {}, v4host).config;
  t.same([dns.dnsServersV4, dns.dnsServersV6], [['10.96.0.10'], ['fd00::a']]);
  t.same(completeConfig(parseIstioIptablesArgs(['--redirect-dns', '--capture-all-dns']), {}, v4host).config.dnsServersV4, []);
  t.same(nameServers('# c\nnameserver 1.1.1.1\n nameserver fe80::1%eth0\nsearch x\n'), { v4: ['1.1.1.1'], v6: ['fe80::1'] });
  t.equal(parseGoDuration('1m30s'), 90_000);
  t.equal(parseGoDuration('1.5s'), 1500);
  t.equal(parseGoDuration('s'), undefined);
});

function fakeIo(run: Runner = () => ({ status: 0, stdout: '', stderr: '' })): IstioIptablesIo & { o: string; e: string; calls: Array<{ cmd: string; args: readonly string[]; input?: string }> } {
  const io = {
    o: '',
    e: '',
    calls: [] as Array<{ cmd: string; args: readonly string[]; input?: string }>,
    env: {},
    host: v4host,
    run: ((cmd, args, input) => {
      io.calls.push({ cmd, args, input });
      return run(cmd, args, input);
    }) as Runner,
    out: (s: string) => void (io.o += s),
    err: (s: string) => void (io.e += s),
  };
  return io;
}

t.test('--dry-run prints the restore input and runs nothing', async (t) => {
  const io = fakeIo();
  t.equal(await runIstioIptables(['-n', '-i', '10.0.0.0/8'], io), 0);
  t.match(io.e, /dry run/);
  t.match(io.o, /^# dry run: iptables-restore --noflush <<EOF\n\* nat\n-N ISTIO_INBOUND\n/);
  t.match(io.o, /-A ISTIO_OUTPUT -d 10\.0\.0\.0\/8 -j ISTIO_REDIRECT\nCOMMIT\n$/);
  t.same(io.calls, []);
});

t.test('apply: cleanup from iptables-save, then one iptables-restore; failures exit 1 with stderr', async (t) => {
  const saved = '*nat\n:PREROUTING ACCEPT [0:0]\n:ISTIO_INBOUND - [0:0]\n:ISTIO_OUTPUT - [0:0]\n-A PREROUTING -p tcp -j ISTIO_INBOUND\n-A OUTPUT -j ISTIO_OUTPUT\n-A OUTPUT -j KEEP_ME\n-A ISTIO_OUTPUT -j RETURN\nCOMMIT\n';
  const io = fakeIo((cmd, args) => ({ status: cmd === 'iptables-save' && args[1] === 'nat' ? 0 : cmd === 'iptables' ? 1 : 0, stdout: cmd === 'iptables-save' && args[1] === 'nat' ? saved : '', stderr: '' }));
  t.equal(await runIstioIptables([], io), 0, io.e);
  const restores = io.calls.filter((c) => c.cmd === 'iptables-restore');
  t.equal(restores.length, 2);
  t.equal(restores[0].input, '*nat\n-D PREROUTING -p tcp -j ISTIO_INBOUND\n-D OUTPUT -j ISTIO_OUTPUT\n-F ISTIO_INBOUND\n-F ISTIO_OUTPUT\n-X ISTIO_INBOUND\n-X ISTIO_OUTPUT\nCOMMIT\n');
  t.match(restores[1].input, /^\* nat\n-N ISTIO_INBOUND\n/);
  t.same(restores[1].args, ['--noflush']);

  const bad = fakeIo((cmd) => (cmd === 'iptables-restore' ? { status: 2, stdout: '', stderr: 'iptables-restore: line 3 failed\n' } : { status: 0, stdout: '', stderr: '' }));
  t.equal(await runIstioIptables([], bad), 1);
  t.match(bad.e, /iptables-restore --noflush failed \(exit 2\): iptables-restore: line 3 failed/);

  const missing = fakeIo(() => {
    throw new (require('../../../src/iptables/apply').ApplyError)('iptables-save not found in PATH: install iptables');
  });
  t.equal(await runIstioIptables([], missing), 1);
  t.match(missing.e, /not found in PATH/);
});

t.test('iptables-save parsing', async (t) => {
  t.same(splitSaveLine('-A OUTPUT -m comment --comment "a \\"b\\" c" -j ISTIO_OUTPUT'), ['-A', 'OUTPUT', '-m', 'comment', '--comment', 'a "b" c', '-j', 'ISTIO_OUTPUT']);
  t.equal(cleanupRestoreFor('nat', '*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j KEEP\nCOMMIT\n'), '');
});
