// The parsed configuration of `keel istio-iptables`, the same knobs as Istio's istio-iptables (1.2x)
// `config.Config`. Strings stay strings where Istio keeps them as strings (ports, uid lists, marks):
// they are pasted verbatim into iptables arguments, as Istio does.

export type InterceptionMode = 'REDIRECT' | 'TPROXY';

export interface IptablesConfig {
  /** -p: outbound capture port (REDIRECT target of ISTIO_REDIRECT) */
  proxyPort: string;
  /** -z: inbound capture port (ISTIO_IN_REDIRECT / TPROXY --on-port) */
  inboundCapturePort: string;
  /** -e: HBONE tunnel port, always let through */
  inboundTunnelPort: string;
  /** -u: comma-separated uids whose traffic is not captured */
  proxyUid: string;
  /** -g: comma-separated gids whose traffic is not captured */
  proxyGid: string;
  /** -m */
  inboundInterceptionMode: InterceptionMode;
  /** -t */
  inboundTproxyMark: string;
  /** -r */
  inboundTproxyRouteTable: string;
  /** -b: '' none, '*' all, or a port list */
  inboundPortsInclude: string;
  /** -d: only applies with -b '*' */
  inboundPortsExclude: string;
  /** ISTIO_OUTBOUND_OWNER_GROUPS (env only), default '*' */
  ownerGroupsInclude: string;
  /** ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE (env only) */
  ownerGroupsExclude: string;
  /** -q */
  outboundPortsInclude: string;
  /** -o */
  outboundPortsExclude: string;
  /** -i: '' none, '*' all, or a CIDR list */
  outboundIpRangesInclude: string;
  /** -x */
  outboundIpRangesExclude: string;
  /** -k */
  rerouteVirtualInterfaces: string;
  /** -c */
  excludeInterfaces: string;
  /** ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR (env only), default 127.0.0.1/32 */
  hostIpv4LoopbackCidr: string;
  redirectDns: boolean;
  captureAllDns: boolean;
  dropInvalid: boolean;
  dualStack: boolean;
  /** Whether ip6tables rules are built too (Istio: the pod's address is IPv6, or dual stack with an IPv6 address). */
  enableIpv6: boolean;
  /** Name servers from /etc/resolv.conf (only read with --redirect-dns and not --capture-all-dns). */
  dnsServersV4: string[];
  dnsServersV6: string[];
  // Behaviour (not rules):
  dryRun: boolean;
  cleanupOnly: boolean;
  runValidation: boolean;
  skipRuleApply: boolean;
  /** --iptables-probe-port: the original port the validation client connects to */
  iptablesProbePort: number;
  /** --probe-timeout in ms */
  probeTimeoutMs: number;
  /** --force-iptables-binary: e.g. iptables-legacy (then iptables-legacy-restore, ip6tables-legacy-restore, ...) */
  iptablesBinary: string;
}

export function defaultConfig(): IptablesConfig {
  return {
    proxyPort: '15001',
    inboundCapturePort: '15006',
    inboundTunnelPort: '15008',
    proxyUid: '1337',
    proxyGid: '1337',
    inboundInterceptionMode: 'REDIRECT',
    inboundTproxyMark: '1337',
    inboundTproxyRouteTable: '133',
    inboundPortsInclude: '',
    inboundPortsExclude: '',
    ownerGroupsInclude: '*',
    ownerGroupsExclude: '',
    outboundPortsInclude: '',
    outboundPortsExclude: '',
    outboundIpRangesInclude: '',
    outboundIpRangesExclude: '',
    rerouteVirtualInterfaces: '',
    excludeInterfaces: '',
    hostIpv4LoopbackCidr: '127.0.0.1/32',
    redirectDns: false,
    captureAllDns: false,
    dropInvalid: false,
    dualStack: false,
    enableIpv6: false,
    dnsServersV4: [],
    dnsServersV6: [],
    dryRun: false,
    cleanupOnly: false,
    runValidation: false,
    skipRuleApply: false,
    iptablesProbePort: 15002,
    probeTimeoutMs: 5000,
    iptablesBinary: 'iptables',
  };
}

/** Istio's list split: comma-separated, blanks trimmed, empty items dropped. */
export function splitList(s: string): string[] {
  return s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
}
