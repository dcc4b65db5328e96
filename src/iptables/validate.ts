// --run-validation, as Istio's istio-validation does it: listen on loopback at the outbound and
// inbound capture ports, connect (from 127.0.0.1) to 127.0.0.6:<probe port> (::6 / ::1 for an IPv6
// pod), and pass once such a connection arrives at one of the listeners: only the NAT redirect can
// bring it there. The original destination port is checked with SO_ORIGINAL_DST when keel's native
// addon is available; without it, the accepted connection is matched to the client's own local port.
// The client retries until the timeout (the rules may be installed by someone else meanwhile).
// Run as a uid in -u (the proxy uid), as Istio's validation container does: the rules only redirect
// the proxy's own loopback connections to the inbound port.

import * as net from 'node:net';
import type { IptablesConfig } from './config';
import { native, originalDst } from '../native';

export class ValidationError extends Error {}

/** Istio's exit code for a failed validation. */
export const VALIDATION_ERROR_CODE = 126;

export interface ValidationResult {
  /** the listener port the probe arrived at */
  readonly arrivedAt: number;
  /** the original destination port, when the native addon could read it */
  readonly originalPort?: number;
}

export function validate(cfg: IptablesConfig, opts: { retryMs?: number } = {}): Promise<ValidationResult> {
  const v6 = cfg.enableIpv6 && !cfg.dualStack;
  const listenHost = v6 ? '::1' : '127.0.0.1';
  const target = v6 ? '::6' : '127.0.0.6';
  const probePort = cfg.iptablesProbePort;
  const ports = [...new Set([Number(cfg.proxyPort), Number(cfg.inboundCapturePort)])];
  const retryMs = opts.retryMs ?? 250;
  const clientPorts = new Set<number>();
  /** remote port -> listener port of connections accepted before their client saw 'connect' */
  const accepted = new Map<number, number>();

  return new Promise<ValidationResult>((resolve, reject) => {
    const servers: net.Server[] = [];
    const clients = new Set<net.Socket>();
    let timer: NodeJS.Timeout | undefined;
    let retry: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (err: Error | null, res?: ValidationResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(retry);
      for (const s of servers) s.close();
      for (const c of clients) c.destroy();
      if (err) reject(err);
      else resolve(res!);
    };
    const onConn = (port: number) => (sock: net.Socket): void => {
      sock.on('error', () => undefined); // the probe client may reset it once validation is over
      let orig: number | undefined;
      if (native.available) {
        try {
          orig = originalDst(sock).port;
        } catch {
          orig = undefined;
        }
      }
      sock.end(String(orig ?? ''));
      if (orig !== undefined) {
        if (orig === probePort) finish(null, { arrivedAt: port, originalPort: orig });
        return;
      }
      // No SO_ORIGINAL_DST: it is ours if it comes from one of our probe's local ports.
      const rp = sock.remotePort;
      if (rp === undefined) return;
      if (clientPorts.has(rp)) finish(null, { arrivedAt: port });
      else accepted.set(rp, port);
    };
    let listening = 0;
    let failed = 0;
    const errors: string[] = [];
    const startClient = (): void => {
      if (done) return;
      const c = net.connect({ host: target, port: probePort, localAddress: listenHost });
      clients.add(c);
      c.on('connect', () => {
        const lp = c.localPort;
        if (lp === undefined) return;
        clientPorts.add(lp);
        const at = accepted.get(lp);
        if (at !== undefined) finish(null, { arrivedAt: at });
      });
      c.on('error', () => undefined);
      c.on('close', () => {
        clients.delete(c);
        if (!done) retry = setTimeout(startClient, retryMs);
      });
      c.on('data', () => undefined);
    };
    for (const port of ports) {
      const s = net.createServer(onConn(port));
      servers.push(s);
      s.on('error', (e) => {
        errors.push(`${listenHost}:${port}: ${e.message}`);
        if (++failed === ports.length) finish(new ValidationError(`no listener available: ${errors.join(', ')}`));
      });
      s.listen({ host: listenHost, port }, () => {
        if (++listening === 1) startClient();
      });
    }
    timer = setTimeout(() => finish(new ValidationError(`validation timeout: no connection to ${target}:${probePort} was redirected to ${listenHost}:${ports.join(' or :')} within ${cfg.probeTimeoutMs} ms`)), cfg.probeTimeoutMs);
  });
}

export const VALIDATION_FAILED_MESSAGE =
  'iptables validation failed: connections are not being redirected to the proxy, so this workload is not ready for the mesh. ' +
  'With Istio CNI this happens when the pod started before the CNI agent was ready on its node; delete the pod so it is rescheduled.';
