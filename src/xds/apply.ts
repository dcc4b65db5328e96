// Between the xDS transport (client.ts, file-source.ts) and the running server: decodes each
// resource of an update with src/config/'s per-resource decoders, applies the valid ones through
// KeelServer.dynamic (warming, draining, in-place EDS and RDS), and returns every error for the
// NACK. After CDS and LDS it recomputes the EDS and RDS subscriptions. It tracks readiness (CDS and
// LDS each applied at least once) for KeelServer.
//
// Envoy's partial acceptance: valid resources of an update are applied, invalid ones are not, and
// the update is NACKed with the reason of each invalid one.

import {
  decodeClusterLoadAssignment,
  decodeClusterResource,
  decodeListenerResource,
  decodeRouteConfigurationResource,
  decodeSecretResource,
  type ResourceDecodeResult,
} from '../config/bootstrap';
import type { ConfigProblem } from '../config/errors';
import type { KeelServer, XdsSnapshot, XdsStatus } from '../server/server';
import { TYPE } from './ads-service';
import type { XdsHandler, XdsUpdate } from './client';

/** Where subscriptions go (the ADS client, or nothing for a file source). */
export interface Subscriber {
  subscribe(typeUrl: string, names?: ReadonlySet<string>): void;
}

function formatProblems(kind: string, name: string, problems: readonly ConfigProblem[]): string {
  return `${kind} '${name}': ${problems.map((p) => (p.path === '' ? p.message : `${p.path}: ${p.message}`)).join('; ')}`;
}

export class XdsApplier implements XdsHandler, XdsStatus {
  private cdsApplied = false;
  private ldsApplied = false;
  connected = false;
  /** warnings from the last decode of each resource (unsupported-but-skipped filters etc.), by "kind/name" */
  readonly warnings = new Map<string, readonly string[]>();
  private readonly logged = new Set<string>();
  subscriber?: Subscriber;
  /** filled by the transport for snapshot() */
  statusSource?: () => { connected: boolean; mode: 'delta' | 'sotw' | 'file'; types: XdsSnapshot['types'] };
  stopTransport?: () => void;

  private readonly staticClusters: ReadonlySet<string>;
  private readonly staticListeners: ReadonlySet<string>;

  constructor(private readonly server: KeelServer) {
    this.staticClusters = new Set(server.bootstrap.clusters.map((c) => c.name));
    this.staticListeners = new Set(server.bootstrap.listeners.map((l) => l.name));
  }

  initialized(): boolean {
    return this.cdsApplied && this.ldsApplied;
  }

  snapshot(): XdsSnapshot {
    const base = this.statusSource?.() ?? { connected: this.connected, mode: 'file' as const, types: {} };
    return { ...base, warnings: Object.fromEntries(this.warnings) };
  }

  stop(): void {
    this.stopTransport?.();
  }

  connectionChanged(connected: boolean): void {
    this.connected = connected;
  }

  /**
   * SDS over ADS: the secret names clusters and listeners refer to, except those the agent itself
   * provides (`default`, `ROOTCA`: the workload certificate and root from the CA; file-cert:/file-root:).
   */
  wantedSecretNames(): Set<string> {
    const out = new Set<string>();
    const add = (t: { readonly sdsCertificateNames: readonly string[]; readonly sdsValidationName?: string } | undefined): void => {
      if (!t) return;
      for (const n of t.sdsCertificateNames) out.add(n);
      if (t.sdsValidationName !== undefined) out.add(t.sdsValidationName);
    };
    for (const c of this.server.clusters.all()) {
      add(c.config.tls);
      for (const m of c.config.transportSocketMatches) add(m.tls);
    }
    const listeners = [...this.server.listeners.map((l) => l.config), ...[...this.server.dynamic.warmingListeners.values()].map((w) => w.listener.config)];
    for (const l of listeners) for (const ch of [...l.filterChains, ...(l.defaultFilterChain ? [l.defaultFilterChain] : [])]) add(ch.tls);
    for (const n of [...out]) if (n === 'default' || n === 'ROOTCA' || n.startsWith('file-cert:') || n.startsWith('file-root:')) out.delete(n);
    return out;
  }

  private subscribeSecrets(): void {
    const names = this.wantedSecretNames();
    if (names.size > 0 || this.secretsSubscribed) {
      this.secretsSubscribed = true;
      this.subscriber?.subscribe(TYPE.secret, names);
    }
  }

  private secretsSubscribed = false;

  apply(update: XdsUpdate): string[] {
    const errors: string[] = [];
    const d = this.server.dynamic;
    const runtime = this.server.bootstrap.runtime;
    const take = <T>(kind: string, name: string, r: ResourceDecodeResult<T>): T | undefined => {
      if (r.warnings.length > 0) {
        this.warnings.set(`${kind}/${name}`, r.warnings);
        // istiod repeats the same filter chain in every listener: log each distinct warning once
        for (const w of r.warnings) {
          if (this.logged.has(w)) continue;
          if (this.logged.size < 10_000) this.logged.add(w);
          this.server.log.info(`${kind} '${name}': ${w}`);
        }
      } else this.warnings.delete(`${kind}/${name}`);
      if (r.value === undefined) errors.push(formatProblems(kind, name, r.problems));
      return r.value;
    };
    switch (update.typeUrl) {
      case TYPE.cluster: {
        for (const res of update.added) {
          const c = take('cluster', res.name, decodeClusterResource(res.json, { runtime }));
          if (c && c.name !== res.name && res.name !== '') errors.push(`cluster '${res.name}': the resource is named '${c.name}'`);
          else if (c) {
            // as Envoy: CDS cannot replace a cluster of static_resources (the ADS cluster among them)
            if (this.staticClusters.has(c.name)) {
              errors.push(`cluster '${c.name}': a static cluster cannot be updated by CDS`);
              continue;
            }
            d.setCluster(c, res.version);
          }
        }
        for (const name of update.removed) if (!this.staticClusters.has(name)) d.removeCluster(name);
        if (errors.length === 0) this.cdsApplied = true; // a NACK keeps the proxy unready (Istio)
        this.server.stats.inc(errors.length === 0 ? 'cluster_manager.cds.update_success' : 'cluster_manager.cds.update_rejected');
        this.subscriber?.subscribe(TYPE.endpoint, d.wantedEndpointNames());
        this.subscribeSecrets();
        break;
      }
      case TYPE.endpoint: {
        for (const res of update.added) {
          const e = take('endpoint', res.name, decodeClusterLoadAssignment(res.json, { runtime }));
          if (e) d.setEndpoints(res.name || e.clusterName, e.endpoints, res.version);
        }
        for (const name of update.removed) d.removeEndpoints(name);
        break;
      }
      case TYPE.listener: {
        const clusterNames = d.clusterNames();
        for (const res of update.added) {
          const l = take('listener', res.name, decodeListenerResource(res.json, { runtime, clusterNames }));
          if (l && l.name !== res.name && res.name !== '') errors.push(`listener '${res.name}': the resource is named '${l.name}'`);
          else if (l && this.staticListeners.has(l.name)) errors.push(`listener '${l.name}': a static listener cannot be updated by LDS`);
          else if (l) d.setListener(l, res.version);
        }
        for (const name of update.removed) if (!this.staticListeners.has(name)) d.removeListener(name);
        if (errors.length === 0) this.ldsApplied = true; // a NACK keeps the proxy unready (Istio)
        this.server.stats.inc(errors.length === 0 ? 'listener_manager.lds.update_success' : 'listener_manager.lds.update_rejected');
        this.subscriber?.subscribe(TYPE.route, d.wantedRouteNames());
        this.subscribeSecrets();
        break;
      }
      case TYPE.route: {
        for (const res of update.added) {
          const r = take('route', res.name, decodeRouteConfigurationResource(res.json, { runtime }));
          if (r) d.setRouteConfig(res.name || r.name, r, res.version);
        }
        for (const name of update.removed) d.removeRouteConfig(name);
        break;
      }
      case TYPE.secret: {
        const store = this.server.secretManager;
        for (const res of update.added) {
          const sec = take('secret', res.name, decodeSecretResource(res.json, { runtime }));
          if (!sec) continue;
          if (!store) {
            errors.push(`secret '${sec.name}': keel has no secret store to put it in`);
            continue;
          }
          if (sec.certificate) store.set(sec.name, { kind: 'tls_certificate', certChain: sec.certificate.certChain, privateKey: sec.certificate.privateKey });
          else if (sec.validation?.trustedCa !== undefined) store.set(sec.name, { kind: 'validation_context', trustedCa: sec.validation.trustedCa });
        }
        for (const name of update.removed) store?.remove(name);
        break;
      }
      default:
        errors.push(`keel does not handle ${update.typeUrl} resources`);
    }
    this.server.updateReady();
    return errors;
  }
}

