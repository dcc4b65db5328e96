// Downstream HTTP/2 (h2c by prior knowledge, or h2 over TLS with ALPN) for one HTTP connection
// manager: hands each socket the listener gives it to keel's own HTTP/2 connection
// (h2-connection.ts), keeps the connections for the HCM idle_timeout sweep and for graceful drain.
// It owns no port and no per-request state.

import type * as net from 'node:net';
import { onSweep } from '../common/clock';
import { ConnectionManager } from './conn-manager';
import { H2ServerConnection, H2ServerSettings } from './h2-connection';
import { ConnectionInfo } from './stream';

export class H2Server {
  private settingsCache: H2ServerSettings | undefined;
  private readonly connections = new Set<H2ServerConnection>();
  private stopSweep: (() => void) | undefined;
  /** drain() was called: connections that arrive later get GOAWAY after their first stream */
  private draining = false;

  constructor(private readonly hcm: ConnectionManager) {}

  /** The HCM's HTTP/2 settings, compiled with the first connection. */
  private get settings(): H2ServerSettings {
    return (this.settingsCache ??= new H2ServerSettings(this.hcm));
  }

  /**
   * Serves an HTTP/2 connection. `info` carries the TCP addresses (a TLS socket may not);
   * `consumed`: bytes protocol sniffing already read off the socket, parsed first.
   */
  handle(socket: net.Socket, info: ConnectionInfo, consumed?: Buffer): void {
    const c = new H2ServerConnection(socket, this.hcm, this.settings, info, this.onClosed);
    this.connections.add(c);
    if (consumed !== undefined && consumed.length > 0) c.feed(consumed);
    // arriving during a drain: served once, then told to go (as Envoy's drain-close does)
    if (this.draining) c.drainAfterNextStream = true;
    if (this.hcm.config.idleTimeoutMs > 0 && this.stopSweep === undefined) this.stopSweep = onSweep(this.sweepIdle);
  }

  private readonly onClosed = (c: H2ServerConnection): void => {
    this.connections.delete(c);
    if (this.connections.size === 0 && this.stopSweep !== undefined) {
      this.stopSweep();
      this.stopSweep = undefined;
    }
  };

  /** HCM idle_timeout: a connection with no active stream for that long is closed (GOAWAY). */
  private readonly sweepIdle = (now: number): void => {
    const idle = this.hcm.config.idleTimeoutMs;
    for (const c of this.connections) c.closeIfIdle(now, idle);
  };

  /** Graceful drain: GOAWAY on every connection; streams in flight finish. */
  drain(): void {
    this.draining = true;
    for (const c of this.connections) c.drain();
  }
}
