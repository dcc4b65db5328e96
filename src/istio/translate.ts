// Istio resources -> one Envoy v3 bootstrap (snake_case JSON, typed_config with '@type'), the way
// istiod would configure a proxy for them:
// - clusters `outbound|<port>|<subset>|<host>` for every service port and DestinationRule subset,
//   endpoints picked by subset labels, traffic policy merged rule < port < subset;
// - sidecar-like mode: one HTTP listener routing by Host (a vhost per service port with istiod's
//   domain list), VirtualServices bound to `mesh`, a default route where none applies;
// - gateway mode: a listener per Gateway server port, TLS termination/passthrough by SNI, virtual
//   hosts from the VirtualServices bound to each Gateway;
// - RBAC filters from AuthorizationPolicy, the listener's mTLS from PeerAuthentication.
// The result goes through decodeBootstrap like any other config; nothing here runs a proxy.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { authorizationFilters, peerAuthenticationMode, type ProxyIdentity } from './authz';
import { buildRegistry, endpointPort, hostMatches, labelsMatch, resolveHost, type Service, type ServicePort } from './registry';
import { type IstioDiagnostics, type IstioResource, type Obj, isObj, label } from './resources';
import { CORS_FILTER, FAULT_FILTER, defaultRetryPolicy, qualifyGateway, translateHttpRoutes, type RouteContext } from './routes';
import { applyTrafficPolicy, checkPortLevelSettings, hashPolicyFor, mergePolicy, policyForPort, TYPE_URL, type TlsFiles } from './traffic-policy';

export interface MeshCerts {
  readonly certChain: string;
  readonly key: string;
  readonly rootCert: string;
}

export interface TranslateOptions {
  /** 'sidecar': one listener routing by Host; 'gateway': the Gateways' servers become listeners. */
  readonly mode: 'sidecar' | 'gateway';
  /** Namespace of resources that name none, and of this proxy. Default `default`. */
  readonly namespace?: string;
  /** Sidecar-mode listener address. Default 127.0.0.1:15001. */
  readonly listen?: { readonly address: string; readonly port: number };
  /** Gateway-mode bind address. Default 0.0.0.0. */
  readonly gatewayAddress?: string;
  /** Gateway server port -> port to bind (e.g. 443 -> 8443, or 0 in tests). Default: the same. */
  readonly portMap?: (port: number) => number;
  /** Where credentialName files live: <dir>/<name>/tls.crt, tls.key, ca.crt. */
  readonly credentialsDir?: string;
  /** Istio's file-mounted mesh certificates (cert-chain.pem, key.pem, root-cert.pem) for ISTIO_MUTUAL / STRICT. */
  readonly meshCerts?: MeshCerts;
  /** This proxy's labels (AuthorizationPolicy / PeerAuthentication selectors). Gateway default istio=ingressgateway. */
  readonly proxyLabels?: Readonly<Record<string, string>>;
  /** Admin listener, e.g. { address: '127.0.0.1', port: 15000 }. None when absent. */
  readonly admin?: { readonly address: string; readonly port: number };
}

const HCM_TYPE = TYPE_URL('envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager');
const ROUTER = { name: 'envoy.filters.http.router', typed_config: { '@type': TYPE_URL('envoy.extensions.filters.http.router.v3.Router') } };
const HTTP_PROTOCOLS = new Set(['HTTP', 'HTTP2', 'GRPC', 'GRPC-WEB', 'HTTPS']);

export function clusterName(port: number, subset: string, host: string): string {
  return `outbound|${port}|${subset}|${host}`;
}

interface RuleForHost {
  readonly resource: IstioResource;
  readonly host: string;
}

/** Translates; problems and warnings go to `diag`. The result is meaningful only without problems. */
export function translateIstio(resources: readonly IstioResource[], opts: TranslateOptions, diag: IstioDiagnostics): Obj {
  const ns = opts.namespace ?? 'default';
  const services = buildRegistry(resources, ns, diag);
  const meshCerts = opts.meshCerts;
  const credential = (name: string): TlsFiles | undefined => {
    const dir = opts.credentialsDir;
    if (!dir) return undefined;
    const base = path.join(dir, name);
    const files: { cert?: string; key?: string; ca?: string } = {};
    for (const [k, f] of [
      ['cert', 'tls.crt'],
      ['key', 'tls.key'],
      ['ca', 'ca.crt'],
    ] as const) {
      if (fs.existsSync(path.join(base, f))) files[k] = path.join(base, f);
    }
    if (!files.ca && fs.existsSync(`${base}-cacert`)) files.ca = path.join(`${base}-cacert`, 'ca.crt');
    return files.cert || files.ca ? files : undefined;
  };

  // DestinationRules by host (first one wins, as istiod picks the oldest).
  const rules = new Map<string, RuleForHost>();
  for (const r of resources) {
    if (r.kind !== 'DestinationRule') continue;
    const where = label(r, ns);
    if (typeof r.spec.host !== 'string' || r.spec.host === '') {
      diag.problem(where, 'spec.host: is required');
      continue;
    }
    const host = resolveHost(r.spec.host, r.namespace);
    if (rules.has(host)) {
      diag.warn(where, `spec.host: ${host} already has ${label(rules.get(host)!.resource, ns)}; this rule is ignored (istiod uses one rule per host)`);
      continue;
    }
    rules.set(host, { resource: r, host });
    const subsets = Array.isArray(r.spec.subsets) ? r.spec.subsets : [];
    const names = new Set<string>();
    subsets.forEach((s, i) => {
      if (!isObj(s) || typeof s.name !== 'string' || s.name === '') return diag.problem(where, `spec.subsets[${i}].name: is required`);
      if (names.has(s.name)) diag.problem(where, `spec.subsets[${i}].name: subset '${s.name}' is defined twice`);
      names.add(s.name);
      if (s.labels !== undefined && !isObj(s.labels)) diag.problem(where, `spec.subsets[${i}].labels: must be a map`);
      if (isObj(s.trafficPolicy)) checkPortLevelSettings({ diag, where }, `spec.subsets[${i}].trafficPolicy`, s.trafficPolicy);
    });
    if (isObj(r.spec.trafficPolicy)) checkPortLevelSettings({ diag, where }, 'spec.trafficPolicy', r.spec.trafficPolicy);
    // Every policy of the rule is checked here once, whether or not a cluster uses it.
    const check = (policy: unknown, p: string): void => {
      if (!isObj(policy)) return;
      const dummy = { protocol: 'HTTP', credential, ...(meshCerts ? { meshCerts } : {}), istioSni: '', hostname: host };
      applyTrafficPolicy({}, policy, p, { diag, where }, dummy);
      if (Array.isArray(policy.portLevelSettings)) policy.portLevelSettings.forEach((pl, i) => isObj(pl) && applyTrafficPolicy({}, pl, `${p}.portLevelSettings[${i}]`, { diag, where }, dummy));
    };
    check(r.spec.trafficPolicy, 'spec.trafficPolicy');
    subsets.forEach((sub, i) => isObj(sub) && check(sub.trafficPolicy, `spec.subsets[${i}].trafficPolicy`));
    if (!services.has(host) && !host.startsWith('*')) diag.warn(where, `spec.host: no ServiceEntry or Endpoints define ${host}`);
  }
  const ruleFor = (host: string): RuleForHost | undefined => {
    const exact = rules.get(host);
    if (exact) return exact;
    for (const [h, r] of rules) if (h.startsWith('*') && hostMatches(h, host)) return r;
    return undefined;
  };

  // Clusters: one per service port, one per subset.
  const clusters = new Map<string, Obj>();
  const buildCluster = (svc: Service | undefined, host: string, port: ServicePort, subset: string): Obj => {
    const name = clusterName(port.number, subset, host);
    const existing = clusters.get(name);
    if (existing) return existing;
    const rule = ruleFor(host);
    const where = rule ? label(rule.resource, ns) : host;
    let policy = rule && isObj(rule.resource.spec.trafficPolicy) ? rule.resource.spec.trafficPolicy : undefined;
    let policyPath = 'spec.trafficPolicy';
    policy = policyForPort(policy, port.number);
    let selector: Record<string, string> = {};
    if (subset !== '' && rule) {
      const subsets = Array.isArray(rule.resource.spec.subsets) ? rule.resource.spec.subsets : [];
      const idx = subsets.findIndex((s) => isObj(s) && s.name === subset);
      const s = subsets[idx] as Obj;
      if (isObj(s.labels)) for (const [k, v] of Object.entries(s.labels)) selector[k] = String(v);
      if (isObj(s.trafficPolicy)) {
        policy = mergePolicy(policy, policyForPort(s.trafficPolicy, port.number));
        policyPath = `spec.subsets[${idx}].trafficPolicy`;
      }
    }
    const cluster: Obj = { name, connect_timeout: '10s' };
    const resolution = svc?.resolution ?? 'STATIC';
    const endpoints = (svc?.endpoints ?? []).filter((e) => labelsMatch(selector, e.labels));
    if (resolution === 'NONE') {
      cluster.type = 'ORIGINAL_DST';
    } else {
      cluster.type = resolution === 'DNS' ? 'STRICT_DNS' : resolution === 'DNS_ROUND_ROBIN' ? 'LOGICAL_DNS' : 'STATIC';
      let lbEndpoints = endpoints.map((e) => ({ endpoint: { address: { socket_address: { address: e.address, port_value: endpointPort(e, port) } } }, metadata: { filter_metadata: { istio: { labels: e.labels } } } }));
      if (lbEndpoints.length === 0 && svc && resolution !== 'STATIC' && svc.endpoints.length === 0 && !host.startsWith('*')) {
        // A DNS ServiceEntry without endpoints resolves its host itself.
        lbEndpoints = [{ endpoint: { address: { socket_address: { address: host, port_value: port.targetPort ?? port.number } } }, metadata: { filter_metadata: { istio: { labels: {} } } } }];
      }
      if (cluster.type === 'LOGICAL_DNS') lbEndpoints = lbEndpoints.slice(0, 1);
      cluster.load_assignment = { cluster_name: name, endpoints: lbEndpoints.length > 0 ? [{ lb_endpoints: lbEndpoints }] : [] };
      if (cluster.type === 'LOGICAL_DNS' && lbEndpoints.length === 0) cluster.type = 'STATIC';
    }
    // (the rule's policies were checked, and their problems reported, when the rules were read)
    const at = { diag: silentDiag(), where };
    applyTrafficPolicy(cluster, policy, policyPath, at, {
      protocol: port.protocol,
      credential,
      ...(meshCerts ? { meshCerts } : {}),
      istioSni: `outbound_.${port.number}_.${subset}_.${host}`,
      hostname: host,
    });
    if (cluster.type === 'ORIGINAL_DST') cluster.lb_policy = 'CLUSTER_PROVIDED';
    cluster.metadata = { filter_metadata: { istio: { services: [{ host, name: host.split('.')[0], namespace: svc?.namespace ?? ns }], ...(subset ? { subset } : {}), default_original_port: port.number } } };
    clusters.set(name, cluster);
    return cluster;
  };
  for (const svc of services.values()) {
    for (const port of svc.ports) {
      buildCluster(svc, svc.hostname, port, '');
      const rule = ruleFor(svc.hostname);
      const subsets = rule && Array.isArray(rule.resource.spec.subsets) ? rule.resource.spec.subsets : [];
      for (const s of subsets) if (isObj(s) && typeof s.name === 'string' && s.name !== '') buildCluster(svc, svc.hostname, port, s.name);
    }
  }

  // The destination of a route -> its cluster (creating an empty one for an unknown host).
  const clusterFor = (vs: IstioResource, where: string, report: boolean) => (dest: Obj, p: string) => {
    if (typeof dest.host !== 'string' || dest.host === '') {
      if (report) diag.problem(where, `${p}.host: is required`);
      return undefined;
    }
    const host = resolveHost(dest.host, vs.namespace);
    const svc = services.get(host);
    let port: ServicePort | undefined;
    const wanted = isObj(dest.port) ? Number(dest.port.number) : undefined;
    if (wanted !== undefined && (!Number.isInteger(wanted) || wanted < 1 || wanted > 65535)) {
      if (report) diag.problem(where, `${p}.port.number: must be a port number (1..65535)`);
      return undefined;
    }
    if (svc) {
      if (wanted !== undefined) {
        port = svc.ports.find((x) => x.number === wanted);
        if (!port) {
          if (report) diag.problem(where, `${p}.port.number: ${host} has no port ${wanted} (it has ${svc.ports.map((x) => x.number).join(', ')})`);
          return undefined;
        }
      } else if (svc.ports.length === 1) port = svc.ports[0];
      else {
        if (report) diag.problem(where, `${p}.port: ${host} has several ports (${svc.ports.map((x) => x.number).join(', ')}); the destination must name one`);
        return undefined;
      }
    } else {
      if (wanted === undefined) {
        if (report) diag.problem(where, `${p}.host: unknown service ${host} (no ServiceEntry or Endpoints define it) and no port.number`);
        return undefined;
      }
      if (report) diag.warn(where, `${p}.host: unknown service ${host} (no ServiceEntry or Endpoints define it): requests routed there get 503`);
      port = { number: wanted, name: `http-${wanted}`, protocol: 'HTTP' };
    }
    const subset = typeof dest.subset === 'string' ? dest.subset : '';
    const rule = ruleFor(host);
    if (subset !== '') {
      const subsets = rule && Array.isArray(rule.resource.spec.subsets) ? rule.resource.spec.subsets : [];
      if (!subsets.some((s) => isObj(s) && s.name === subset)) {
        if (report) diag.problem(where, `${p}.subset: subset '${subset}' of ${host} is not defined by any DestinationRule`);
        return undefined;
      }
    }
    buildCluster(svc, host, port, subset);
    let policy = rule && isObj(rule.resource.spec.trafficPolicy) ? policyForPort(rule.resource.spec.trafficPolicy, port.number) : undefined;
    if (subset !== '' && rule) {
      const s = (rule.resource.spec.subsets as unknown[]).find((x) => isObj(x) && x.name === subset) as Obj;
      if (isObj(s.trafficPolicy)) policy = mergePolicy(policy, policyForPort(s.trafficPolicy, port.number));
    }
    const hashPolicy = hashPolicyFor(policy);
    return { cluster: clusterName(port.number, subset, host), ...(hashPolicy ? { hashPolicy } : {}) };
  };

  const virtualServices = resources.filter((r) => r.kind === 'VirtualService');
  for (const vs of virtualServices) {
    const where = label(vs, ns);
    if (!Array.isArray(vs.spec.hosts) || vs.spec.hosts.length === 0) diag.problem(where, 'spec.hosts: at least one host is required');
    if (Array.isArray(vs.spec.tcp) && vs.spec.tcp.length > 0 && opts.mode === 'sidecar') diag.warn(where, 'spec.tcp: ignored in sidecar mode (keel\'s mesh listener is HTTP; TCP routes apply to Gateway TCP servers)');
    if (Array.isArray(vs.spec.tls) && vs.spec.tls.length > 0 && opts.mode === 'sidecar') diag.warn(where, 'spec.tls: ignored in sidecar mode (TLS routes apply to Gateway PASSTHROUGH servers)');
  }
  const gatewaysOf = (vs: IstioResource): string[] => (Array.isArray(vs.spec.gateways) && vs.spec.gateways.length > 0 ? vs.spec.gateways.map((g) => qualifyGateway(String(g), vs.namespace)) : ['mesh']);
  const proxy: ProxyIdentity = {
    namespace: ns,
    labels: opts.proxyLabels ?? (opts.mode === 'gateway' ? { istio: 'ingressgateway' } : {}),
    trustDomain: 'cluster.local',
  };
  const rbac = authorizationFilters(resources, proxy, ns, diag);

  const reportedVs = new Set<string>();
  const routesFor = (vs: IstioResource, port: number | undefined, gateway: string, used: Set<string>): Obj[] => {
    const where = label(vs, ns);
    const key = `${where}`;
    const report = !reportedVs.has(key);
    reportedVs.add(key);
    const ctx: RouteContext = {
      diag: report ? diag : silentDiag(),
      where,
      namespace: vs.namespace,
      ...(port !== undefined ? { port } : {}),
      gateway,
      clusterFor: clusterFor(vs, where, report),
      useFilter: (n) => used.add(n),
      report: true,
    };
    return translateHttpRoutes(ctx, vs.spec.http);
  };
  const httpFilters = (used: Set<string>): Obj[] => {
    const out: Obj[] = [...rbac];
    if (used.has(FAULT_FILTER)) out.push({ name: FAULT_FILTER, typed_config: { '@type': TYPE_URL('envoy.extensions.filters.http.fault.v3.HTTPFault') } });
    if (used.has(CORS_FILTER)) out.push({ name: CORS_FILTER, typed_config: { '@type': TYPE_URL('envoy.extensions.filters.http.cors.v3.Cors') } });
    out.push(ROUTER);
    return out;
  };
  const hcm = (statPrefix: string, routeName: string, vhosts: Obj[], used: Set<string>, gateway: boolean): Obj => ({
    name: 'envoy.filters.network.http_connection_manager',
    typed_config: {
      '@type': HCM_TYPE,
      stat_prefix: statPrefix,
      route_config: { name: routeName, virtual_hosts: vhosts, validate_clusters: false },
      http_filters: httpFilters(used),
      normalize_path: true,
      use_remote_address: gateway,
    },
  });

  const listeners: Obj[] = [];
  if (opts.mode === 'sidecar') {
    const used = new Set<string>();
    const vhosts = sidecarVirtualHosts(services, virtualServices, ns, gatewaysOf, routesFor, used, diag, (svc, port) => ({
      name: 'default',
      match: { prefix: '/' },
      route: { cluster: clusterName(port.number, '', svc.hostname), timeout: '0s', retry_policy: defaultRetryPolicy(), ...(hashFor(ruleFor(svc.hostname), port.number)) },
    }));
    const listen = opts.listen ?? { address: '127.0.0.1', port: 15001 };
    const listener: Obj = {
      name: `${listen.address}_${listen.port}`,
      address: { socket_address: { address: listen.address, port_value: listen.port } },
      filter_chains: [{ filters: [hcm(`outbound_${listen.address}_${listen.port}`, String(listen.port), vhosts, used, false)] }],
    };
    applyPeerAuthentication(listener, peerAuthenticationMode(resources, proxy, ns, diag), meshCerts, diag);
    listeners.push(listener);
  } else {
    listeners.push(...gatewayListeners(resources, virtualServices, opts, ns, gatewaysOf, routesFor, hcm, clusterFor, credential, diag));
  }

  const bootstrap: Obj = {
    node: { id: `${opts.mode === 'gateway' ? 'router' : 'sidecar'}~127.0.0.1~keel.${ns}~${ns}.svc.cluster.local`, cluster: 'keel' },
    static_resources: { listeners, clusters: [...clusters.values()] },
  };
  if (opts.admin) bootstrap.admin = { address: { socket_address: { address: opts.admin.address, port_value: opts.admin.port } } };
  return bootstrap;
}

function hashFor(rule: RuleForHost | undefined, port: number): Obj {
  const policy = rule && isObj(rule.resource.spec.trafficPolicy) ? policyForPort(rule.resource.spec.trafficPolicy, port) : undefined;
  const h = hashPolicyFor(policy);
  return h ? { hash_policy: h } : {};
}

function silentDiag(): IstioDiagnostics {
  return { problems: [], warnings: [], problem() {}, warn() {} } as unknown as IstioDiagnostics;
}

/** istiod's sidecar outbound domains for a service port: FQDN, short forms in the same namespace, each with and without the port. */
function domainsFor(svc: Service, port: number, proxyNamespace: string, withBare: boolean): string[] {
  const h = svc.hostname;
  const names = [h];
  const suffix = `.${svc.namespace}.svc.cluster.local`;
  if (h.endsWith(suffix)) {
    const short = h.slice(0, -suffix.length);
    if (svc.namespace === proxyNamespace) names.push(short);
    names.push(`${short}.${svc.namespace}`, `${short}.${svc.namespace}.svc`);
  }
  const out: string[] = [];
  for (const n of names) {
    if (withBare) out.push(n);
    out.push(`${n}:${port}`);
  }
  return out;
}

function sidecarVirtualHosts(
  services: Map<string, Service>,
  virtualServices: readonly IstioResource[],
  ns: string,
  gatewaysOf: (vs: IstioResource) => string[],
  routesFor: (vs: IstioResource, port: number | undefined, gateway: string, used: Set<string>) => Obj[],
  used: Set<string>,
  diag: IstioDiagnostics,
  defaultRoute: (svc: Service, port: ServicePort) => Obj,
): Obj[] {
  const vhosts: Obj[] = [];
  const taken = new Set<string>();
  const meshVs = virtualServices.filter((vs) => gatewaysOf(vs).includes('mesh'));
  // One VirtualService per host (the first in file order), as istiod does for sidecars.
  const vsForHost = new Map<string, IstioResource>();
  for (const vs of meshVs) {
    const hosts = Array.isArray(vs.spec.hosts) ? vs.spec.hosts.map((h) => resolveHost(String(h), vs.namespace)) : [];
    for (const h of hosts) {
      const matching = [...services.keys()].filter((s) => hostMatches(h, s));
      if (matching.length === 0) diag.warn(label(vs, ns), `spec.hosts: no ServiceEntry or Endpoints define ${h}: no route is generated for it`);
      for (const s of matching) {
        const prev = vsForHost.get(s);
        if (prev && prev !== vs) diag.warn(label(vs, ns), `spec.hosts: ${s} is already routed by ${label(prev, ns)}; this VirtualService is ignored for it`);
        else vsForHost.set(s, vs);
      }
    }
  }
  for (const svc of services.values()) {
    const httpPorts = svc.ports.filter((p) => HTTP_PROTOCOLS.has(p.protocol) && p.protocol !== 'HTTPS');
    httpPorts.forEach((port, i) => {
      const domains = domainsFor(svc, port.number, ns, i === 0).filter((d) => !taken.has(d));
      if (domains.length === 0) return;
      for (const d of domains) taken.add(d);
      const vs = vsForHost.get(svc.hostname);
      const routes = vs ? routesFor(vs, port.number, 'mesh', used) : [defaultRoute(svc, port)];
      vhosts.push({ name: `${svc.hostname}:${port.number}`, domains, routes });
    });
  }
  return vhosts;
}

function applyPeerAuthentication(listener: Obj, mode: string, meshCerts: MeshCerts | undefined, diag: IstioDiagnostics): void {
  if (mode === 'DISABLE') return;
  if (!meshCerts) {
    if (mode === 'STRICT') diag.warn('PeerAuthentication', 'STRICT mTLS is not enforced: it needs the mesh certificates (--mesh-certs); the listener accepts plaintext');
    return;
  }
  const chains = listener.filter_chains as Obj[];
  const plain = chains[0];
  const tlsChain: Obj = {
    ...plain,
    filter_chain_match: { transport_protocol: 'tls' },
    transport_socket: {
      name: 'envoy.transport_sockets.tls',
      typed_config: {
        '@type': TYPE_URL('envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext'),
        common_tls_context: {
          tls_certificates: [{ certificate_chain: { filename: meshCerts.certChain }, private_key: { filename: meshCerts.key } }],
          validation_context: { trusted_ca: { filename: meshCerts.rootCert } },
          alpn_protocols: ['h2', 'http/1.1'],
        },
        require_client_certificate: true,
      },
    },
  };
  listener.listener_filters = [{ name: 'envoy.filters.listener.tls_inspector', typed_config: { '@type': TYPE_URL('envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector') } }];
  listener.filter_chains = mode === 'STRICT' ? [tlsChain] : [tlsChain, plain];
}

type ClusterForFactory = (vs: IstioResource, where: string, report: boolean) => (dest: Obj, p: string) => { cluster: string } | undefined;

interface GatewayServer {
  readonly gateway: IstioResource;
  readonly gwName: string;
  readonly index: number;
  readonly port: { number: number; name: string; protocol: string };
  readonly hosts: { ns: string; host: string }[];
  readonly tls?: Obj;
}

/** Gateway servers -> listeners (one per port), with TLS chains by SNI. */
function gatewayListeners(
  resources: readonly IstioResource[],
  virtualServices: readonly IstioResource[],
  opts: TranslateOptions,
  ns: string,
  gatewaysOf: (vs: IstioResource) => string[],
  routesFor: (vs: IstioResource, port: number | undefined, gateway: string, used: Set<string>) => Obj[],
  hcm: (statPrefix: string, routeName: string, vhosts: Obj[], used: Set<string>, gateway: boolean) => Obj,
  clusterFor: ClusterForFactory,
  credential: (name: string) => TlsFiles | undefined,
  diag: IstioDiagnostics,
): Obj[] {
  const servers: GatewayServer[] = [];
  const proxyLabels = opts.proxyLabels ?? { istio: 'ingressgateway' };
  const all = resources.filter((r) => r.kind === 'Gateway');
  // As on a gateway pod, only the Gateways whose selector matches this proxy's labels apply.
  const gateways = all.filter((gw) => {
    const sel = isObj(gw.spec.selector) ? Object.fromEntries(Object.entries(gw.spec.selector).map(([k, v]) => [k, String(v)])) : {};
    if (labelsMatch(sel, proxyLabels)) return true;
    diag.warn(label(gw, ns), `spec.selector ${JSON.stringify(sel)} does not select this gateway (labels ${JSON.stringify(proxyLabels)}; set --labels): not served`);
    return false;
  });
  if (gateways.length === 0) diag.problem('--gateway', all.length === 0 ? 'no Gateway resource in the files' : 'no Gateway selects this proxy (see --labels)');
  for (const gw of gateways) {
    const where = label(gw, ns);
    const list = Array.isArray(gw.spec.servers) ? gw.spec.servers : [];
    if (list.length === 0) diag.problem(where, 'spec.servers: at least one server is required');
    list.forEach((s, i) => {
      const p = `spec.servers[${i}]`;
      if (!isObj(s) || !isObj(s.port)) return diag.problem(where, `${p}.port: is required`);
      const number = Number(s.port.number);
      if (!Number.isInteger(number) || number < 1 || number > 65535) return diag.problem(where, `${p}.port.number: must be a port number (1..65535)`);
      const protocol = String(s.port.protocol ?? 'HTTP').toUpperCase();
      if (!['HTTP', 'HTTPS', 'HTTP2', 'GRPC', 'TLS', 'TCP'].includes(protocol)) return diag.problem(where, `${p}.port.protocol: ${protocol} is not supported by keel (HTTP, HTTPS, HTTP2, GRPC, TLS, TCP)`);
      const hosts = (Array.isArray(s.hosts) ? s.hosts : []).map((h) => {
        const str = String(h);
        const slash = str.indexOf('/');
        if (slash < 0) return { ns: '*', host: str.toLowerCase() };
        const hns = str.slice(0, slash);
        return { ns: hns === '.' ? gw.namespace : hns, host: str.slice(slash + 1).toLowerCase() };
      });
      if (hosts.length === 0) diag.problem(where, `${p}.hosts: at least one host is required`);
      if ((protocol === 'HTTPS' || protocol === 'TLS') && !isObj(s.tls)) diag.problem(where, `${p}.tls: is required for ${protocol} servers`);
      if (s.bind !== undefined) diag.warn(where, `${p}.bind: ignored; every server binds the gateway address (--listen)`);
      if (s.defaultEndpoint !== undefined) diag.problem(where, `${p}.defaultEndpoint: is not supported by keel`);
      servers.push({ gateway: gw, gwName: `${gw.namespace}/${gw.name}`, index: i, port: { number, name: String(s.port.name ?? `${protocol.toLowerCase()}-${number}`), protocol }, hosts, ...(isObj(s.tls) ? { tls: s.tls } : {}) });
    });
  }
  const byPort = new Map<number, GatewayServer[]>();
  for (const s of servers) byPort.set(s.port.number, [...(byPort.get(s.port.number) ?? []), s]);

  /** The virtual hosts of one server (or of several plain-HTTP servers sharing a port). */
  const vhostsFor = (group: GatewayServer[], used: Set<string>, httpsRedirect: boolean): Obj[] => {
    const byDomain = new Map<string, Obj[]>();
    const order: string[] = [];
    for (const s of group) {
      for (const vs of virtualServices) {
        if (!gatewaysOf(vs).includes(s.gwName) || !Array.isArray(vs.spec.http)) continue;
        const vsHosts = Array.isArray(vs.spec.hosts) ? vs.spec.hosts.map((h) => String(h).toLowerCase()) : [];
        const domains: string[] = [];
        for (const sh of s.hosts) {
          if (sh.ns !== '*' && sh.ns !== vs.namespace) continue;
          for (const vh of vsHosts) {
            if (!hostMatches(sh.host, vh)) continue;
            // the more specific of the two names
            const d = vh === '*' ? sh.host : sh.host === '*' ? vh : vh.startsWith('*') && !sh.host.startsWith('*') ? sh.host : vh;
            if (!domains.includes(d)) domains.push(d);
          }
        }
        if (domains.length === 0) continue;
        const routes = routesFor(vs, s.port.number, s.gwName, used);
        for (const d of domains) {
          if (!byDomain.has(d)) {
            byDomain.set(d, []);
            order.push(d);
          }
          byDomain.get(d)!.push(...routes);
        }
      }
    }
    return order.map((d) => ({
      name: `${d}:${group[0].port.number}`,
      domains: d === '*' ? ['*'] : [d, `${d}:*`],
      routes: byDomain.get(d)!,
      ...(httpsRedirect ? { require_tls: 'ALL' } : {}),
    }));
  };

  const listeners: Obj[] = [];
  const bindAddress = opts.gatewayAddress ?? '0.0.0.0';
  for (const [number, group] of byPort) {
    const chains: Obj[] = [];
    const plainHttp = group.filter((s) => s.port.protocol !== 'HTTPS' && s.port.protocol !== 'TLS' && s.port.protocol !== 'TCP' && !s.tls);
    let needsInspector = false;
    for (const s of group) {
      const where = label(s.gateway, ns);
      const p = `spec.servers[${s.index}]`;
      if (!s.tls || plainHttp.includes(s)) continue;
      const mode = String(s.tls.mode ?? 'SIMPLE');
      if (s.tls.httpsRedirect === true && (s.port.protocol === 'HTTP' || s.port.protocol === 'HTTP2')) continue;
      const sni = s.hosts.map((h) => h.host).filter((h) => h !== '*');
      const match: Obj = { transport_protocol: 'tls', ...(sni.length > 0 ? { server_names: sni } : {}) };
      needsInspector = true;
      if (mode === 'PASSTHROUGH') {
        chains.push(...passthroughChains(s, virtualServices, gatewaysOf, clusterFor, ns, diag));
        continue;
      }
      if (mode === 'AUTO_PASSTHROUGH' || mode === 'ISTIO_MUTUAL' || mode === 'OPTIONAL_MUTUAL') {
        diag.problem(where, `${p}.tls.mode: ${mode} is not supported by keel (SIMPLE, MUTUAL, PASSTHROUGH are)`);
        continue;
      }
      if (mode !== 'SIMPLE' && mode !== 'MUTUAL') {
        diag.problem(where, `${p}.tls.mode: ${mode} is not one of SIMPLE, MUTUAL, PASSTHROUGH, AUTO_PASSTHROUGH, ISTIO_MUTUAL, OPTIONAL_MUTUAL`);
        continue;
      }
      let files: TlsFiles = {};
      if (typeof s.tls.credentialName === 'string' && s.tls.credentialName !== '') {
        const f = credential(s.tls.credentialName);
        if (!f) diag.problem(where, `${p}.tls.credentialName: no files for credential '${s.tls.credentialName}' (expected ${opts.credentialsDir ? path.join(opts.credentialsDir, s.tls.credentialName) : '<credentials dir>/' + s.tls.credentialName}/tls.crt and tls.key; set --credentials-dir)`);
        else files = f;
      }
      const cert = typeof s.tls.serverCertificate === 'string' ? s.tls.serverCertificate : files.cert;
      const key = typeof s.tls.privateKey === 'string' ? s.tls.privateKey : files.key;
      if (!cert || !key) {
        if (!s.tls.credentialName) diag.problem(where, `${p}.tls: ${mode} needs serverCertificate and privateKey, or a credentialName`);
        continue;
      }
      const common: Obj = { tls_certificates: [{ certificate_chain: { filename: cert }, private_key: { filename: key } }], alpn_protocols: ['h2', 'http/1.1'] };
      const tlsParams: Obj = {};
      // Istio's TLSV1_2 is Envoy's TLSv1_2
      const envoyTls = (v: string): string => v.replace(/^TLSV/, 'TLSv');
      if (typeof s.tls.minProtocolVersion === 'string' && s.tls.minProtocolVersion !== 'TLS_AUTO') tlsParams.tls_minimum_protocol_version = envoyTls(s.tls.minProtocolVersion);
      if (typeof s.tls.maxProtocolVersion === 'string' && s.tls.maxProtocolVersion !== 'TLS_AUTO') tlsParams.tls_maximum_protocol_version = envoyTls(s.tls.maxProtocolVersion);
      if (Object.keys(tlsParams).length > 0) common.tls_params = tlsParams;
      const ctx: Obj = { '@type': TYPE_URL('envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext'), common_tls_context: common };
      if (mode === 'MUTUAL') {
        const ca = typeof s.tls.caCertificates === 'string' ? s.tls.caCertificates : files.ca;
        if (!ca) {
          diag.problem(where, `${p}.tls.caCertificates: MUTUAL needs a CA to verify client certificates (caCertificates, or ca.crt beside the credential)`);
          continue;
        }
        const v: Obj = { trusted_ca: { filename: ca } };
        const sans = Array.isArray(s.tls.subjectAltNames) ? s.tls.subjectAltNames.map(String) : [];
        if (sans.length > 0) v.match_subject_alt_names = sans.map((x) => ({ exact: x }));
        common.validation_context = v;
        ctx.require_client_certificate = true;
      }
      if (s.tls.caCrl !== undefined) diag.problem(where, `${p}.tls.caCrl: certificate revocation lists are not supported by keel`);
      if (s.tls.cipherSuites !== undefined) diag.warn(where, `${p}.tls.cipherSuites: ignored (Node's default cipher list is used)`);
      const used = new Set<string>();
      const transport_socket = { name: 'envoy.transport_sockets.tls', typed_config: ctx };
      if (s.port.protocol === 'TLS') {
        // TLS terminated here, then the VirtualService's tcp routes carry the bytes.
        const tcp = tcpChains(s, virtualServices, gatewaysOf, clusterFor, ns, diag);
        if (tcp.length > 0) chains.push({ filter_chain_match: match, transport_socket, filters: tcp[0].filters });
        continue;
      }
      const vhosts = vhostsFor([s], used, false);
      const routeName = `https.${number}.${s.port.name}.${s.gateway.name}.${s.gateway.namespace}`;
      chains.push({ filter_chain_match: match, transport_socket, filters: [hcm(routeName, routeName, vhosts, used, true)] });
    }
    const tcpServers = group.filter((s) => s.port.protocol === 'TCP' && !s.tls);
    for (const s of tcpServers) chains.push(...tcpChains(s, virtualServices, gatewaysOf, clusterFor, ns, diag));
    const redirecting = group.filter((s) => s.tls?.httpsRedirect === true && (s.port.protocol === 'HTTP' || s.port.protocol === 'HTTP2'));
    const httpGroup = [...plainHttp, ...redirecting];
    if (httpGroup.length > 0) {
      const used = new Set<string>();
      const vhosts = redirecting.length > 0 ? [...vhostsFor(plainHttp.filter((s) => !redirecting.includes(s)), used, false), ...vhostsFor(redirecting, used, true)] : vhostsFor(plainHttp, used, false);
      chains.push({ filters: [hcm(`http.${number}`, `http.${number}`, vhosts, used, true)] });
    }
    if (chains.length === 0) continue;
    const bindPort = opts.portMap ? opts.portMap(number) : number;
    const listener: Obj = {
      name: `${bindAddress}_${number}`,
      address: { socket_address: { address: bindAddress, port_value: bindPort } },
      filter_chains: chains,
    };
    if (needsInspector) listener.listener_filters = [{ name: 'envoy.filters.listener.tls_inspector', typed_config: { '@type': TYPE_URL('envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector') } }];
    listeners.push(listener);
  }
  return listeners;
}

function tcpProxy(statPrefix: string, route: unknown[], clusterOf: (dest: Obj, p: string) => { cluster: string } | undefined, p: string): Obj | undefined {
  const dests = route.map((d, i) => (isObj(d) && isObj(d.destination) ? { c: clusterOf(d.destination, `${p}[${i}].destination`), w: Number(d.weight ?? (route.length === 1 ? 100 : 0)) } : undefined)).filter((x) => x?.c !== undefined) as { c: { cluster: string }; w: number }[];
  if (dests.length === 0) return undefined;
  const cfg: Obj = { '@type': TYPE_URL('envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy'), stat_prefix: statPrefix };
  if (dests.length === 1) cfg.cluster = dests[0].c.cluster;
  else cfg.weighted_clusters = { clusters: dests.filter((d) => d.w > 0).map((d) => ({ name: d.c.cluster, weight: d.w })) };
  return { name: 'envoy.filters.network.tcp_proxy', typed_config: cfg };
}

/** PASSTHROUGH: a chain per VirtualService tls route, matched on its sniHosts, proxying TCP as is. */
function passthroughChains(s: GatewayServer, virtualServices: readonly IstioResource[], gatewaysOf: (vs: IstioResource) => string[], clusterFor: ClusterForFactory, ns: string, diag: IstioDiagnostics): Obj[] {
  const chains: Obj[] = [];
  for (const vs of virtualServices) {
    if (!gatewaysOf(vs).includes(s.gwName) || !Array.isArray(vs.spec.tls)) continue;
    const where = label(vs, ns);
    vs.spec.tls.forEach((rule, i) => {
      const p = `spec.tls[${i}]`;
      if (!isObj(rule)) return;
      const matches = Array.isArray(rule.match) ? rule.match.filter(isObj) : [];
      const sni: string[] = [];
      for (const m of matches) {
        if (m.port !== undefined && Number(m.port) !== s.port.number) continue;
        for (const h of Array.isArray(m.sniHosts) ? m.sniHosts : []) if (s.hosts.some((sh) => hostMatches(sh.host, String(h)))) sni.push(String(h).toLowerCase());
      }
      if (matches.length === 0) diag.problem(where, `${p}.match: sniHosts are required for TLS routes`);
      if (sni.length === 0) return;
      const tp = tcpProxy(`outbound|${s.port.number}||${sni[0]}`, Array.isArray(rule.route) ? rule.route : [], clusterFor(vs, where, true), `${p}.route`);
      if (!tp) return diag.problem(where, `${p}.route: at least one destination is required`);
      chains.push({ filter_chain_match: { transport_protocol: 'tls', server_names: sni }, filters: [tp] });
    });
  }
  return chains;
}

/** TCP servers: the first matching VirtualService tcp route. */
function tcpChains(s: GatewayServer, virtualServices: readonly IstioResource[], gatewaysOf: (vs: IstioResource) => string[], clusterFor: ClusterForFactory, ns: string, diag: IstioDiagnostics): Obj[] {
  for (const vs of virtualServices) {
    if (!gatewaysOf(vs).includes(s.gwName) || !Array.isArray(vs.spec.tcp)) continue;
    const where = label(vs, ns);
    for (let i = 0; i < vs.spec.tcp.length; i++) {
      const rule = vs.spec.tcp[i];
      if (!isObj(rule)) continue;
      const matches = Array.isArray(rule.match) ? rule.match.filter(isObj) : [];
      if (matches.length > 0 && !matches.some((m) => m.port === undefined || Number(m.port) === s.port.number)) continue;
      const tp = tcpProxy(`tcp.${s.port.number}`, Array.isArray(rule.route) ? rule.route : [], clusterFor(vs, where, true), `spec.tcp[${i}].route`);
      if (tp) return [{ filters: [tp] }];
    }
  }
  diag.warn(label(s.gateway, ns), `spec.servers[${s.index}]: no VirtualService tcp route for this TCP server; it is not served`);
  return [];
}
