// A listener: a bound socket, its filter chains compiled once, and per connection the choice of a
// chain (destination port and address, TLS or plaintext by the first byte, SNI) and of a codec
// (HTTP/2 by prior-knowledge preface or ALPN h2, else HTTP/1.x), or the TCP proxy.

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
import { H2_PREFACE, ReplaySocket, sniffConnection } from './peek';
import type { ConnectionInfo } from '../http/stream';
import { originalDst } from '../native';
import { readsOriginalDst } from './original-dst';

const TLS_INFO = Symbol('keel.tlsConnectionInfo');
/** On a raw socket handed to a TLS chain: its restored original destination, for tcp_proxy. */
const ORIG_DST = Symbol('keel.originalDst');

/** A connection's restored original destination (SO_ORIGINAL_DST), when it was redirected. */
export interface Destination {
  readonly address: string;
  readonly port: number;
}

/** The listener-filter decision: TLS by its first byte, h2c by the whole preface, else HTTP/1. */
function wantProtocol(b: Buffer): 'more' | 'done' {
  if (b.length === 0) return 'more';
  if (b[0] === 0x16) return 'done';
  const n = Math.min(b.length, H2_PREFACE.length);
  if (b.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) return n === H2_PREFACE.length ? 'done' : 'more';
  return 'done';
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
}

class Chain {
  /** destination prefix_ranges, compiled once; undefined when the chain has none */
  readonly prefixes?: net.BlockList;
  readonly hcm?: ConnectionManager;
  readonly h2?: H2Server;
  readonly tcp?: TcpProxy;
  readonly tlsServerOptions?: tls.TlsOptions;
  readonly tlsServer?: tls.Server;

  constructor(readonly config: FilterChainConfig, deps: ListenerDeps) {
    if (config.match.prefixRanges.length > 0) this.prefixes = compileCidrs(config.match.prefixRanges);
    const f = config.filter;
    if (f.kind === 'http_connection_manager') {
      registerHttpFilters();
      let provider: RouteTableProvider;
      if (f.routeConfig) provider = new StaticRouteProvider(new RouteTable(f.routeConfig));
      else if (f.rdsName !== undefined && deps.routeProvider) provider = deps.routeProvider(f.rdsName);
      else provider = { current: () => undefined };
      this.hcm = new ConnectionManager(f, provider, deps.clusters, deps.runtime, buildHttpFilters(f.httpFilters, { statPrefix: f.statPrefix }));
      if (f.codecType !== 'HTTP1') this.h2 = new H2Server(this.hcm);
    } else {
      this.tcp = new TcpProxy(f, deps.clusters);
    }
    const t = config.tls;
    if (t && t.certificates.length > 0) {

      const alpn = t.alpnProtocols.length > 0 ? [...t.alpnProtocols] : this.h2 ? ['h2', 'http/1.1'] : ['http/1.1'];
      this.tlsServerOptions = {
        cert: t.certificates.map((c) => c.certChain),
        key: t.certificates.map((c) => c.privateKey),
        ca: t.validation?.trustedCa,
        requestCert: t.requireClientCertificate || t.validation?.trustedCa !== undefined,
        rejectUnauthorized: t.requireClientCertificate,
        ALPNProtocols: alpn,
      };
      this.tlsServer = tls.createServer(this.tlsServerOptions);
      this.tlsServer.on('tlsClientError', (_e, s) => s.destroy());
      this.tlsServer.on('secureConnection', (ts: tls.TLSSocket) => this.onSecure(ts));
    }
  }

  /** Set by the listener: where a handshaken connection goes. */
  onSecure: (t: tls.TLSSocket) => void = (t) => t.destroy();

  connectionInfo(t: tls.TLSSocket): ConnectionInfo {
    const parent = (t as unknown as { _parent?: Record<symbol, ConnectionInfo> })._parent;
    return parent?.[TLS_INFO] ?? { remoteAddress: t.remoteAddress ?? '', remotePort: t.remotePort ?? 0, localAddress: t.localAddress ?? '', localPort: t.localPort ?? 0, secure: true };
  }

  get isTls(): boolean {
    return this.tlsServerOptions !== undefined;
  }
}

export class Listener {
  readonly name: string;
  private readonly server: net.Server;
  private readonly chains: Chain[];
  private readonly defaultChain?: Chain;
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

  constructor(readonly config: ListenerConfig, deps: ListenerDeps) {
    this.name = config.name;
    this.readsOriginalDst = readsOriginalDst(config);
    if (config.useOriginalDst) this.findListener = deps.findListener;
    this.chains = config.filterChains.map((c) => new Chain(c, deps));
    if (config.defaultFilterChain) this.defaultChain = new Chain(config.defaultFilterChain, deps);
    for (const chain of [...this.chains, ...(this.defaultChain ? [this.defaultChain] : [])]) {
      chain.onSecure = (t) => {
        const info = chain.connectionInfo(t);
        const parent = (t as unknown as { _parent?: Record<symbol, Destination | undefined> })._parent;
        if (chain.tcp) chain.tcp.handle(t, undefined, parent?.[ORIG_DST]);
        else if (t.alpnProtocol === 'h2' && chain.h2) chain.h2.handle(t, info);
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
        const addr = this.server.address();
        resolve(typeof addr === 'object' && addr ? addr.port : 0);
      });
    });
  }

  get port(): number {
    const addr = this.server.address();
    return typeof addr === 'object' && addr ? addr.port : 0;
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
    const candidates = this.candidates(local);
    if (candidates.length === 0) {
      socket.destroy();
      return;
    }
    const tlsMixed = candidates.some((c) => c.isTls) && candidates.some((c) => !c.isTls);
    const h2Sniff = candidates.some((c) => !c.isTls && c.h2 !== undefined && c.hcm!.config.codecType === 'AUTO');
    if (!tlsMixed && !h2Sniff) {
      this.serve(socket, candidates[0], undefined, false, local, dst);
      return;
    }
    sniffConnection(socket, { timeoutMs: this.config.listenerFiltersTimeoutMs, want: wantProtocol }).then(
      (r) => {
        if (socket.destroyed) return;
        if (r.eof && r.bytes.length === 0) {
          socket.destroy();
          return;
        }
        if (r.timedOut && !this.config.continueOnListenerFiltersTimeout && r.bytes.length === 0) {
          socket.destroy();
          return;
        }
        const isTls = r.bytes.length > 0 && r.bytes[0] === 0x16;
        const chain = candidates.find((c) => c.isTls === isTls);
        if (!chain) {
          socket.destroy();
          return;
        }
        const isH2 = !isTls && r.bytes.length >= H2_PREFACE.length && r.bytes.subarray(0, H2_PREFACE.length).equals(H2_PREFACE);
        this.serve(socket, chain, r.consumed ? r.bytes : undefined, isH2, local, dst);
      },
      () => socket.destroy(),
    );
  }

  /** Filter chains that fit the connection's destination, most specific first (Envoy's order). */
  private candidates(local: Destination): Chain[] {
    const port = local.port;
    const addr = local.address;
    const byPort = this.chains.filter((c) => c.config.match.destinationPort === port);
    let set = byPort.length > 0 ? byPort : this.chains.filter((c) => c.config.match.destinationPort === undefined);
    const withRange = set.filter((c) => c.prefixes !== undefined && inCidrs(c.prefixes, addr));
    set = withRange.length > 0 ? withRange : set.filter((c) => c.prefixes === undefined);
    if (set.length === 0 && this.defaultChain) return [this.defaultChain];
    return this.defaultChain ? [...set, this.defaultChain] : set;
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
      // A non-listening tls.Server does the handshake, so the socket it hands back is in the same
      // state as one from a listening TLS server (node:http2 relies on that).
      const base: net.Socket = consumed ? (new ReplaySocket(raw, consumed) as unknown as net.Socket) : raw;
      (base as unknown as Record<symbol, ConnectionInfo>)[TLS_INFO] = info;
      (base as unknown as Record<symbol, Destination | undefined>)[ORIG_DST] = dst;
      chain.tlsServer!.emit('connection', base);
      return;
    }
    if (chain.tcp) {
      chain.tcp.handle(raw, consumed, dst);
      return;
    }
    if (chain.h2 && (chain.hcm!.config.codecType === 'HTTP2' || isH2)) {
      if (consumed) chain.h2.handle(new ReplaySocket(raw, consumed) as unknown as net.Socket, info);
      else {
        chain.h2.handle(raw, info);
        raw.resume();
      }
      return;
    }
    this.serveH1(raw, chain, consumed, info);
    raw.resume();
  }

  private serveH1(socket: net.Socket, chain: Chain, initial: Buffer | undefined, info: ConnectionInfo): void {
    const c = new H1ServerConnection(socket, chain.hcm!, info, (closed) => this.h1Connections.delete(closed));
    this.h1Connections.add(c);
    if (this.draining) c.drain();
    if (initial) c.feed(initial);
  }

  /**
   * Stop accepting and drain: idle HTTP/1 connections close, busy ones close after their response
   * (with `connection: close`), HTTP/2 sessions get GOAWAY. Connections then go on until they
   * finish or `closeConnections()`.
   */
  stopAccepting(): void {
    this.draining = true;
    this.stopSweep();
    if (this.server.listening) this.server.close();
    for (const c of this.h1Connections) c.drain();
    for (const ch of [...this.chains, ...(this.defaultChain ? [this.defaultChain] : [])]) ch.h2?.drain();
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

function compileCidrs(ranges: readonly { readonly addressPrefix: string; readonly prefixLen: number }[]): net.BlockList {
  const bl = new net.BlockList();
  for (const r of ranges) {
    try {
      bl.addSubnet(r.addressPrefix, r.prefixLen, net.isIPv6(r.addressPrefix) ? 'ipv6' : 'ipv4');
    } catch {
      // validated at load; an unusable range simply matches nothing
    }
  }
  return bl;
}

function inCidrs(bl: net.BlockList, addr: string): boolean {
  const a = addr.startsWith('::ffff:') ? addr.slice(7) : addr;
  try {
    return bl.check(a, net.isIPv6(a) ? 'ipv6' : 'ipv4');
  } catch {
    return false;
  }
}
