// A listener: a bound socket (optionally IP_TRANSPARENT for TPROXY), its filter chains compiled
// once into Envoy's match tree (chain-match.ts), and per connection: the listener filters' look at
// the first bytes, only as far as the match needs (inspect.ts: tls_inspector, http_inspector), the
// chain, its network filters (envoy.filters.network.rbac) and then a codec (HTTP/2 by
// prior-knowledge preface or ALPN h2, else HTTP/1.x) or the TCP proxy.

import { buildHttpFilters, registerHttpFilters } from '../filters';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { FilterChainConfig, ListenerConfig, RuntimeValues } from '../config/types';
import { ConnectionManager, StaticRouteProvider, RouteTableProvider } from '../http/conn-manager';
import { H1ServerConnection } from '../http/h1-server';
import { H2Server } from '../http/h2-server';
import { RouteTable } from '../router/route-table';
import type { ClusterManager } from '../upstream/cluster-manager';
import { onSweep } from '../common/clock';
import { TcpProxy } from './tcp-proxy';
import { ReplaySocket, sniffConnection } from './peek';
import { FilterChainMatcher } from './chain-match';
import { inspectBytes, planInspection, type InspectPlan, type Inspection } from './inspect';
import type { ConnectionInfo } from '../http/stream';
import { originalDst, setTransparent } from '../native';
import { readsOriginalDst } from './original-dst';
import { RbacEngine, RbacStats, enforce } from '../filters/rbac';
import { RBAC_NETWORK_TYPE, type NetworkRbacConfig } from '../config/filters/rbac';
import { DownstreamTls } from '../security/tls-context';
import type { SecretSource } from '../security/secret-manager';

const TLS_INFO = Symbol('keel.tlsConnectionInfo');
/** On a raw socket handed to a TLS chain: its restored original destination, for tcp_proxy. */
const ORIG_DST = Symbol('keel.originalDst');

/** A connection's restored original destination (SO_ORIGINAL_DST), when it was redirected. */
export interface Destination {
  readonly address: string;
  readonly port: number;
}


export interface ListenerDeps {
  readonly clusters: ClusterManager;
  readonly runtime: RuntimeValues;
  /** RDS: route tables by name (issue: xDS); inline route configs need none. */
  readonly routeProvider?: (name: string) => RouteTableProvider;
  /**
   * use_original_dst hand-off: the listener configured for a connection's original destination
   * (bind_to_port or not), or undefined. Without it a listener serves every connection itself.
   */
  readonly findListener?: (address: string, port: number) => Listener | undefined;
  /** Telemetry (metrics, access logs): told of each connection manager and TCP proxy once, when built. */
  readonly observe?: ListenerObserver;
  /** SDS: secrets TLS chains name (`default`, `ROOTCA`, ...); chains naming one wait for it. */
  readonly secrets?: SecretSource;
}

export interface ListenerObserver {
  http(hcm: ConnectionManager, listener: ListenerConfig): void;
  tcp(tcp: TcpProxy, listener: ListenerConfig): void;
}

class Chain {
  /** envoy.filters.network.rbac instances, in order; undefined when the chain has none */
  readonly rbac?: { readonly engine: RbacEngine; readonly stats: RbacStats }[];
  readonly hcm?: ConnectionManager;
  readonly h2?: H2Server;
  readonly tcp?: TcpProxy;
  /** the chain's server TLS context (certificates from config or SDS, client-cert checks, rotation) */
  readonly tlsContext?: DownstreamTls;
  readonly tlsServer?: tls.Server;

  constructor(public config: FilterChainConfig, deps: ListenerDeps) {
    for (const nf of config.networkFilters ?? []) {
      if (nf.typeName !== RBAC_NETWORK_TYPE) continue;
      const c = nf.config as NetworkRbacConfig;
      const engine = new RbacEngine(c);
      if (engine.active) (this.rbac ??= []).push({ engine, stats: new RbacStats(`${c.statPrefix}rbac.`) });
    }
    const f = config.filter;
    if (f.kind === 'http_connection_manager') {
      registerHttpFilters();
      let provider: RouteTableProvider;
      if (f.routeConfig) provider = new StaticRouteProvider(new RouteTable(f.routeConfig));
      else if (f.rdsName !== undefined && deps.routeProvider) provider = deps.routeProvider(f.rdsName);
      else provider = { current: () => undefined };
      this.hcm = new ConnectionManager(f, provider, deps.clusters, deps.runtime, buildHttpFilters(f.httpFilters, { statPrefix: f.statPrefix, xff: { useRemoteAddress: f.useRemoteAddress, xffNumTrustedHops: f.xffNumTrustedHops } }));
      if (f.codecType !== 'HTTP1') this.h2 = new H2Server(this.hcm);
    } else {
      this.tcp = new TcpProxy(f, deps.clusters);
    }
    if (config.tls) {
      this.tlsContext = new DownstreamTls(config.tls, deps.secrets, this.h2 ? ['h2', 'http/1.1'] : ['http/1.1']);
      this.tlsServer = this.tlsContext.server;
      this.tlsServer.on('tlsClientError', (_e, s) => s.destroy());
      this.tlsServer.on('secureConnection', (ts: tls.TLSSocket) => this.onSecure(ts));
    }
  }

  /**
   * Network filters before the terminal one (envoy.filters.network.rbac): false when one closes the
   * connection. Evaluated once, when the connection is handed to the chain (after the TLS handshake).
   */
  admit(info: ConnectionInfo): boolean {
    const rbac = this.rbac;
    if (rbac === undefined) return true;
    for (const r of rbac) if (enforce(r.engine, { connection: info }, r.stats) !== undefined) return false;
    return true;
  }

  /** Set by the listener: where a handshaken connection goes. */
  onSecure: (t: tls.TLSSocket) => void = (t) => t.destroy();

  connectionInfo(t: tls.TLSSocket): ConnectionInfo {
    const parent = (t as unknown as { _parent?: Record<symbol, ConnectionInfo> })._parent;
    return parent?.[TLS_INFO] ?? { remoteAddress: t.remoteAddress ?? '', remotePort: t.remotePort ?? 0, localAddress: t.localAddress ?? '', localPort: t.localPort ?? 0, secure: true };
  }

  get isTls(): boolean {
    return this.tlsContext !== undefined;
  }
}

const NOTHING_SEEN: Inspection = { transportProtocol: 'raw_buffer', applicationProtocols: [], h2c: false };

export class Listener {
  readonly name: string;
  private server: net.Server;
  private readonly chains: Chain[];
  private readonly defaultChain?: Chain;
  /** the filter chains as Envoy's match tree, compiled once */
  private readonly matcher: FilterChainMatcher<Chain>;
  /** what the listener filters look at before a chain is chosen */
  private readonly plan: InspectPlan;
  /** connections closed because no filter chain (and no default chain) matched */
  noFilterChainMatch = 0;
  /** listener filters' counters (tls_inspector.*, http_inspector.*) */
  private readonly inspectorCounts = new Map<string, number>();
  private readonly connections = new Set<net.Socket>();
  private readonly h1Connections = new Set<H1ServerConnection>();
  private draining = false;
  private readonly stopSweep: () => void;
  private readonly readsOriginalDst: boolean;
  private readonly findListener?: (address: string, port: number) => Listener | undefined;

  /** HCM idle_timeout for HTTP/1 connections, checked once a second. */
  private readonly sweep = (now: number): void => {
    for (const c of this.h1Connections) {
      const idle = c.idleTimeoutMs;
      if (idle > 0) c.closeIfIdle(now, idle);
    }
  };

  constructor(public config: ListenerConfig, deps: ListenerDeps) {
    this.name = config.name;
    this.readsOriginalDst = readsOriginalDst(config);
    if (config.useOriginalDst) this.findListener = deps.findListener;
    this.chains = config.filterChains.map((c) => new Chain(c, deps));
    if (config.defaultFilterChain) this.defaultChain = new Chain(config.defaultFilterChain, deps);
    this.matcher = new FilterChainMatcher(
      this.chains.map((chain) => ({ match: chain.config.match, chain })),
      this.defaultChain,
    );
    const all = [...this.chains, ...(this.defaultChain ? [this.defaultChain] : [])];
    if (deps.observe) {
      for (const c of all) {
        if (c.hcm) deps.observe.http(c.hcm, config);
        else if (c.tcp) deps.observe.tcp(c.tcp, config);
      }
    }
    const h2Preface = all.some((c) => !c.isTls && c.h2 !== undefined && c.hcm!.config.codecType === 'AUTO');
    this.plan = planInspection(config, this.matcher.needs, h2Preface);
    for (const chain of [...this.chains, ...(this.defaultChain ? [this.defaultChain] : [])]) {
      chain.onSecure = (t) => {
        // Envoy's post-handshake checks: required client certificate, its verification and SANs.
        if (!chain.tlsContext!.accept(t)) {
          t.destroy();
          return;
        }
        const info: ConnectionInfo = { ...chain.connectionInfo(t), ...chain.tlsContext!.facts(t) };
        if (!chain.admit(info)) {
          t.destroy();
          return;
        }
        const parent = (t as unknown as { _parent?: Record<symbol, Destination | undefined> })._parent;
        if (chain.tcp) chain.tcp.handle(t, undefined, parent?.[ORIG_DST]);
        // istio-h2: an Istio client's ALPN override for an HTTP/2 upstream (see alpnSelector)
        else if ((t.alpnProtocol === 'h2' || t.alpnProtocol === 'istio-h2') && chain.h2) chain.h2.handle(t, info);
        else this.serveH1(t, chain, undefined, info);
      };
    }
    this.server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, this.onConnection);
    this.stopSweep = onSweep(this.sweep);
    this.server.on('error', () => undefined);
  }

  /** Listens; resolves with the bound port (useful with port 0). */
  listen(): Promise<number> {
    const a = this.config.address;
    return new Promise((resolve, reject) => {
      const onError = (e: Error): void => reject(e);
      this.server.once('error', onError);
      const opts: net.ListenOptions = a.pipe ? { path: a.pipe } : { host: a.address, port: a.port, backlog: 1024 };
      this.server.listen(opts, () => {
        this.server.removeListener('error', onError);
        if (this.config.transparent && !a.pipe) {
          // TPROXY: accept connections addressed to any IP; the original destination is then the
          // accepted socket's own local address (no NAT entry: SO_ORIGINAL_DST says ENOENT)
          try {
            setTransparent(this.server, net.isIPv6(a.address) ? 6 : 4);
          } catch (e) {
            this.server.close();
            const code = (e as NodeJS.ErrnoException).code;
            reject(new Error(`listener '${this.name}': transparent: true needs IP_TRANSPARENT${code === 'EPERM' ? ' (CAP_NET_ADMIN is missing)' : ''}: ${(e as Error).message}`));
            return;
          }
        }
        const addr = this.server.address();
        resolve(typeof addr === 'object' && addr ? addr.port : 0);
      });
    });
  }

  get port(): number {
    const addr = this.server.address();
    return typeof addr === 'object' && addr ? addr.port : 0;
  }

  /** Counters and gauges of the chains' HTTP filters by Envoy name (e.g. http.<prefix>.fault.aborts_injected). */
  httpFilterStats(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const c of [...this.chains, ...(this.defaultChain ? [this.defaultChain] : [])]) {
      for (const f of c.hcm?.filters ?? []) {
        const st = f.stats?.();
        if (st !== undefined) for (const [k, v] of Object.entries(st)) out[k] = (out[k] ?? 0) + v;
      }
    }
    return out;
  }

  /**
   * Take a config that differs from this one only in its HCMs' inline route tables (see
   * sameButInlineRoutes): the tables are swapped in place, so sockets and connections stay and
   * requests in flight keep the route they matched. Envoy would drain the listener; keel need not,
   * because nothing else of the listener changed.
   */
  replaceInlineRoutes(config: ListenerConfig): void {
    const next = [...config.filterChains, ...(config.defaultFilterChain ? [config.defaultFilterChain] : [])];
    const chains = [...this.chains, ...(this.defaultChain ? [this.defaultChain] : [])];
    chains.forEach((c, i) => {
      const f = next[i].filter;
      if (f.kind === 'http_connection_manager' && f.routeConfig && c.hcm?.routes instanceof StaticRouteProvider) c.hcm.routes.replace(new RouteTable(f.routeConfig));
      c.config = next[i];
    });
    this.config = config;
  }

  /** Envoy's listener `ssl.*` counters, summed over the TLS filter chains (keys without the `ssl.` prefix). */
  sslStats(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const c of [...this.chains, ...(this.defaultChain ? [this.defaultChain] : [])]) {
      if (c.tlsContext) for (const [k, v] of Object.entries(c.tlsContext.stats)) out[k] = (out[k] ?? 0) + v;
    }
    return out;
  }

  /**
   * Counters of the listener filters and of the chains' network filters by Envoy name
   * (tls_inspector.tls_found, tcp.rbac.denied, tcp.<prefix>.downstream_cx_total ...).
   */
  networkFilterStats(): Record<string, number> {
    const out: Record<string, number> = Object.fromEntries(this.inspectorCounts);
    for (const c of [...this.chains, ...(this.defaultChain ? [this.defaultChain] : [])]) {
      for (const r of c.rbac ?? []) {
        for (const [k, v] of Object.entries(r.stats.snapshot(['allowed', 'denied', 'shadow_allowed', 'shadow_denied']))) out[k] = (out[k] ?? 0) + v;
      }
      if (c.tcp) for (const [k, v] of Object.entries(c.tcp.stats())) out[k] = (out[k] ?? 0) + v;
    }
    return out;
  }

  get activeConnections(): number {
    return this.connections.size;
  }

  get connectionManagers(): ConnectionManager[] {
    const out: ConnectionManager[] = [];
    for (const c of this.chains) if (c.hcm) out.push(c.hcm);
    if (this.defaultChain?.hcm) out.push(this.defaultChain.hcm);
    return out;
  }

  private readonly onConnection = (socket: net.Socket): void => {
    // The server pauses accepted sockets: nothing is read until a consumer (or a peek) asks.
    let dst: Destination | undefined;
    if (this.readsOriginalDst) {
      try {
        const d = originalDst(socket);
        dst = { address: d.address, port: d.port };
      } catch {
        // ENOENT: not redirected (no NAT entry); the socket's own address is the destination.
        dst = undefined;
      }
    }
    if (dst && this.findListener) {
      const target = this.findListener(dst.address, dst.port);
      if (target && target !== this) {
        target.accept(socket, dst);
        return;
      }
    }
    this.accept(socket, dst);
  };

  /**
   * Serves a connection: accepted here, or handed off by a use_original_dst listener. `dst` is its
   * restored original destination: filter-chain matching and the connection info see it instead of
   * the socket's local address, and an ORIGINAL_DST tcp_proxy connects to it.
   */
  accept(socket: net.Socket, dst: Destination | undefined): void {
    if (this.draining) {
      socket.destroy();
      return;
    }
    this.connections.add(socket);
    socket.on('close', () => this.connections.delete(socket));
    socket.on('error', () => undefined);
    const local: Destination = dst ?? { address: socket.localAddress ?? '', port: socket.localPort ?? 0 };
    if (!this.plan.any) {
      this.dispatch(socket, local, dst, NOTHING_SEEN, undefined);
      return;
    }
    sniffConnection(socket, { timeoutMs: this.config.listenerFiltersTimeoutMs, want: this.plan.want }).then(
      (r) => {
        if (socket.destroyed) return;
        if (r.eof && r.bytes.length === 0) {
          socket.destroy();
          return;
        }
        const seen = inspectBytes(r.bytes, this.plan);
        this.countInspection(seen, r.timedOut);
        // listener_filters_timeout: the connection is closed unless continue_on_listener_filters_timeout
        if (r.timedOut && !this.config.continueOnListenerFiltersTimeout) {
          socket.destroy();
          return;
        }
        this.dispatch(socket, local, dst, seen, r.consumed ? r.bytes : undefined);
      },
      () => socket.destroy(),
    );
  }

  /** tls_inspector / http_inspector counters (Envoy's names), for the connections they looked at. */
  private countInspection(seen: Inspection, timedOut: boolean): void {
    const n = this.inspectorCounts;
    const inc = (k: string): void => void n.set(k, (n.get(k) ?? 0) + 1);
    if (timedOut) {
      inc(`listener.${this.config.address.address}_${this.config.address.port}.downstream_pre_cx_timeout`);
      return;
    }
    if (this.plan.tls !== 'off') {
      const tlsFound = seen.transportProtocol === 'tls';
      inc(tlsFound ? 'tls_inspector.tls_found' : 'tls_inspector.tls_not_found');
      if (tlsFound && this.plan.tls === 'hello') {
        inc(seen.serverName !== undefined ? 'tls_inspector.sni_found' : 'tls_inspector.sni_not_found');
        inc(seen.applicationProtocols.length > 0 ? 'tls_inspector.alpn_found' : 'tls_inspector.alpn_not_found');
      }
    }
    if (this.plan.http && seen.transportProtocol !== 'tls') {
      const p = seen.applicationProtocols[0];
      inc(p === 'http/1.1' ? 'http_inspector.http11_found' : p === 'http/1.0' ? 'http_inspector.http10_found' : p === 'h2c' ? 'http_inspector.http2_found' : 'http_inspector.http_not_found');
    }
  }

  private dispatch(socket: net.Socket, local: Destination, dst: Destination | undefined, seen: Inspection, consumed: Buffer | undefined): void {
    const chain = this.matcher.find({
      destinationAddress: local.address,
      destinationPort: local.port,
      ...(seen.serverName !== undefined ? { serverName: seen.serverName } : {}),
      transportProtocol: seen.transportProtocol,
      applicationProtocols: seen.applicationProtocols,
      sourceAddress: socket.remoteAddress ?? '',
      sourcePort: socket.remotePort ?? 0,
    });
    if (!chain) {
      this.noFilterChainMatch++;
      socket.destroy();
      return;
    }
    this.serve(socket, chain, consumed, seen.h2c, local, dst);
  }

  /**
   * Hands a connection to its chain. `consumed` holds bytes already read off the socket (the
   * sniffing twin without the addon); `isH2` says the sniff saw the HTTP/2 preface; `local` is the
   * destination the connection is served as (the restored original one, `dst`, when there is one).
   */
  private serve(raw: net.Socket, chain: Chain, consumed: Buffer | undefined, isH2: boolean, local: Destination, dst: Destination | undefined): void {
    const info: ConnectionInfo = {
      remoteAddress: raw.remoteAddress ?? '',
      remotePort: raw.remotePort ?? 0,
      localAddress: local.address,
      localPort: local.port,
      secure: chain.isTls,
    };
    if (chain.isTls) {
      if (!chain.tlsContext!.ready) {
        // An SDS secret the chain names has not arrived (Envoy would still be warming it).
        raw.destroy();
        return;
      }
      // A non-listening tls.Server does the handshake, so the socket it hands back is in the same
      // state as one from a listening TLS server.
      const base: net.Socket = consumed ? (new ReplaySocket(raw, consumed) as unknown as net.Socket) : raw;
      (base as unknown as Record<symbol, ConnectionInfo>)[TLS_INFO] = info;
      (base as unknown as Record<symbol, Destination | undefined>)[ORIG_DST] = dst;
      chain.tlsServer!.emit('connection', base);
      return;
    }
    if (!chain.admit(info)) {
      raw.destroy();
      return;
    }
    if (chain.tcp) {
      chain.tcp.handle(raw, consumed, dst);
      return;
    }
    if (chain.h2 && (chain.hcm!.config.codecType === 'HTTP2' || isH2)) {
      chain.h2.handle(raw, info, consumed);
      raw.resume();
      return;
    }
    this.serveH1(raw, chain, consumed, info);
    raw.resume();
  }

  private serveH1(socket: net.Socket, chain: Chain, initial: Buffer | undefined, info: ConnectionInfo): void {
    const c = new H1ServerConnection(socket, chain.hcm!, info, (closed) => this.h1Connections.delete(closed));
    this.h1Connections.add(c);
    if (this.draining) c.drain();
    else if (this.drainOnly) c.closeAfterNextResponse();
    if (initial) c.feed(initial);
  }

  /**
   * Stop accepting and drain: idle HTTP/1 connections close, busy ones close after their response
   * (with `connection: close`), HTTP/2 sessions get GOAWAY. Connections then go on until they
   * finish or `closeConnections()`.
   */
  /**
   * xDS update of a listener at the same address: this (new) listener takes over `old`'s bound
   * socket, so no connection is refused in between. `old` keeps its connections and is left with an
   * unbound server: its stopAccepting() then only drains them.
   */
  takeOver(old: Listener): void {
    const s = old.server;
    s.removeListener('connection', old.onConnection);
    s.on('connection', this.onConnection);
    this.server.close();
    this.server = s;
    old.server = net.createServer();
  }

  /**
   * Graceful drain (Envoy's /drain_listeners?graceful): keep accepting, but every connection, open or
   * new, closes after its current request (HTTP/1 `connection: close`, HTTP/2 GOAWAY).
   */
  drainConnections(): void {
    this.drainOnly = true;
    for (const c of this.h1Connections) c.closeAfterNextResponse();
    for (const ch of [...this.chains, ...(this.defaultChain ? [this.defaultChain] : [])]) ch.h2?.drain();
  }
  private drainOnly = false;

  stopAccepting(): void {
    this.draining = true;
    this.stopSweep();
    if (this.server.listening) this.server.close();
    for (const c of this.h1Connections) c.drain();
    for (const ch of [...this.chains, ...(this.defaultChain ? [this.defaultChain] : [])]) {
      ch.h2?.drain();
      // no new handshakes: stop following SDS secrets (open connections keep their context)
      ch.tlsContext?.close();
    }
  }

  /** Closes every connection now. */
  closeConnections(): void {
    for (const s of this.connections) s.destroy();
  }

  /** Resolves when no connection is left (for graceful drain). */
  async waitIdle(): Promise<void> {
    while (this.connections.size > 0) {
      await new Promise<void>((resolve) => {
        const first = this.connections.values().next().value as net.Socket;
        first.once('close', () => resolve());
      });
    }
  }
}

/** Whether two listener configs are the same but for their HCMs' inline route tables. */
export function sameButInlineRoutes(a: ListenerConfig, b: ListenerConfig): boolean {
  const strip = (k: string, v: unknown): unknown => (k === 'routeConfig' || k === 'source' ? undefined : v);
  return JSON.stringify(a, strip) === JSON.stringify(b, strip);
}
