// The secret manager: the in-process SDS server of keel's agent role. It holds the secrets TLS
// contexts refer to by name: `default` (workload certificate chain + key) and `ROOTCA` (trust
// anchor), obtained from Istio's CA (key + CSR, CreateCertificate) or from mounted files
// (/etc/certs style); `file-cert:<chain>~<key>` and `file-root:<root>` (Istio's names for files a
// DestinationRule/Gateway points at); and secrets set from outside (static bootstrap secrets, SDS
// resources pushed by istiod). It rotates the workload certificate at SECRET_GRACE_PERIOD_RATIO of its
// lifetime (with jitter), retries the CA with exponential back-off, reloads watched files, and
// tells subscribers. It must never log key material, certificates' bodies or tokens.

import { parseGoDurationOrSeconds } from '../common/go-duration';
import * as fs from 'node:fs';
import type { Logger } from '../common/logger';
import type { CertificateSigner } from './ca-client';
import { certFacts, createCsr, generateWorkloadKey, spiffeId, type WorkloadIdentity, type WorkloadKeyType } from './csr';

export interface TlsCertificateSecret {
  readonly kind: 'tls_certificate';
  readonly name: string;
  /** PEM chain, leaf first */
  readonly certChain: string;
  /** PEM private key */
  readonly privateKey: string;
  /** leaf validity (ms since epoch), when the chain parses */
  readonly notBefore?: number;
  readonly notAfter?: number;
  /** leaf URI SANs (the first is the workload's SPIFFE id) */
  readonly uris: readonly string[];
  readonly serialNumber?: string;
  /** increments on every change of this name */
  readonly version: number;
  readonly updatedAt: number;
}

export interface ValidationContextSecret {
  readonly kind: 'validation_context';
  readonly name: string;
  /** PEM bundle of trusted roots */
  readonly trustedCa: string;
  readonly version: number;
  readonly updatedAt: number;
}

export type Secret = TlsCertificateSecret | ValidationContextSecret;

/** What TLS contexts need: a secret by name, and a callback when it changes. */
export interface SecretSource {
  get(name: string): Secret | undefined;
  /** Calls `onChange` with each new version of `name`; returns the unsubscribe function. */
  watch(name: string, onChange: (s: Secret) => void): () => void;
}

/** Istio's SDS names */
export const WORKLOAD_SECRET = 'default';
export const ROOT_SECRET = 'ROOTCA';
export const FILE_CERT_PREFIX = 'file-cert:';
export const FILE_ROOT_PREFIX = 'file-root:';

export interface FileCertPaths {
  /** e.g. /etc/certs/cert-chain.pem */
  readonly certChain: string;
  /** e.g. /etc/certs/key.pem */
  readonly key: string;
  /** e.g. /etc/certs/root-cert.pem */
  readonly rootCert: string;
}

export const DEFAULT_FILE_CERTS: FileCertPaths = { certChain: '/etc/certs/cert-chain.pem', key: '/etc/certs/key.pem', rootCert: '/etc/certs/root-cert.pem' };

export interface SecretManagerOptions {
  /** The CA; with `identity`, `default` and `ROOTCA` come from it. */
  readonly ca?: CertificateSigner;
  readonly identity?: WorkloadIdentity;
  readonly keyType?: WorkloadKeyType;
  readonly rsaBits?: number;
  /** requested certificate lifetime (SECRET_TTL, default 24 h) */
  readonly ttlSeconds?: number;
  /** rotate when this share of the lifetime is left (SECRET_GRACE_PERIOD_RATIO, default 0.5) */
  readonly graceRatio?: number;
  /** ± jitter on the ratio (Istio's SECRET_GRACE_PERIOD_RATIO_JITTER, default 0.01) */
  readonly graceJitter?: number;
  /** Trust anchors used for ROOTCA when set (else the last certificate of the CA's chain). */
  readonly trustAnchors?: string;
  /** Mounted certificates for `default`/`ROOTCA` (used instead of a CA). */
  readonly files?: FileCertPaths;
  /** Poll interval for watched files (default 2 s). */
  readonly filePollMs?: number;
  /** CA retry back-off (defaults 1 s, doubling up to 60 s, ±20 % jitter). */
  readonly retryInitialMs?: number;
  readonly retryMaxMs?: number;
  readonly log?: Logger;
  readonly random?: () => number;
  readonly now?: () => number;
}

/**
 * When to rotate a certificate valid from `notBefore` to `notAfter`: once `ratio` (± `jitter`) of its
 * lifetime is left, as Istio's secret cache does. Returns the delay from `now` in ms (0 if overdue).
 */
export function rotationDelayMs(notBefore: number, notAfter: number, now: number, ratio = 0.5, jitter = 0.01, random: () => number = Math.random): number {
  const lifetime = Math.max(0, notAfter - notBefore);
  const r = Math.min(1, Math.max(0, ratio + jitter * (2 * random() - 1)));
  const at = notAfter - lifetime * r;
  return Math.max(0, Math.round(at - now));
}

interface FileWatch {
  readonly paths: readonly string[];
  readonly load: () => void;
}

export class SecretManager implements SecretSource {
  private readonly secrets = new Map<string, Secret>();
  private readonly watchers = new Map<string, Set<(s: Secret) => void>>();
  private readonly fileWatches = new Map<string, FileWatch>();
  private readonly watchedPaths = new Map<string, () => void>();
  private rotateTimer: NodeJS.Timeout | undefined;
  /** ends a pending retry wait early (stop) */
  private wake: (() => void) | undefined;
  private retryMs: number;
  private stopped = false;
  private started: Promise<void> | undefined;
  private readonly now: () => number;
  private readonly random: () => number;
  /** CA calls made and failed (for tests and admin). */
  readonly stats = { caRequests: 0, caFailures: 0, rotations: 0, fileReloads: 0 };

  constructor(private readonly opts: SecretManagerOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.retryMs = opts.retryInitialMs ?? 1000;
  }

  /** Our workload identity (the SPIFFE id requested from the CA), when a CA is used. */
  get identity(): string | undefined {
    return this.opts.identity ? spiffeId(this.opts.identity) : undefined;
  }

  /**
   * Obtains `default` and `ROOTCA` (from the CA, or the mounted files). Resolves once both are there;
   * a failing CA is retried with back-off until it answers or `stop()`.
   */
  start(): Promise<void> {
    this.started ??= (async () => {
      if (this.opts.files) {
        const f = this.opts.files;
        this.watchFiles(WORKLOAD_SECRET, [f.certChain, f.key], () => this.loadCertFiles(WORKLOAD_SECRET, f.certChain, f.key));
        this.watchFiles(ROOT_SECRET, [f.rootCert], () => this.loadRootFile(ROOT_SECRET, f.rootCert));
        if (!this.secrets.has(WORKLOAD_SECRET) || !this.secrets.has(ROOT_SECRET)) {
          throw new Error(`mounted certificates are missing or unreadable (${f.certChain}, ${f.key}, ${f.rootCert})`);
        }
        return;
      }
      if (this.opts.ca && this.opts.identity) {
        if (this.opts.trustAnchors) this.set(ROOT_SECRET, { kind: 'validation_context', trustedCa: this.opts.trustAnchors });
        await this.fetchUntilDone();
      }
    })();
    return this.started;
  }

  get(name: string): Secret | undefined {
    const s = this.secrets.get(name);
    if (s || this.stopped) return s;
    // Istio's file-mounted names load (and are watched) on first reference.
    if (name.startsWith(FILE_CERT_PREFIX)) {
      const [chain, key] = name.slice(FILE_CERT_PREFIX.length).split('~');
      if (chain && key) this.watchFiles(name, [chain, key], () => this.loadCertFiles(name, chain, key));
    } else if (name.startsWith(FILE_ROOT_PREFIX)) {
      const root = name.slice(FILE_ROOT_PREFIX.length);
      if (root) this.watchFiles(name, [root], () => this.loadRootFile(name, root));
    }
    return this.secrets.get(name);
  }

  watch(name: string, onChange: (s: Secret) => void): () => void {
    let set = this.watchers.get(name);
    if (!set) this.watchers.set(name, (set = new Set()));
    set.add(onChange);
    return () => {
      set.delete(onChange);
    };
  }

  /**
   * Sets a secret from outside: a static bootstrap secret or an SDS resource from istiod. Subscribers
   * are told. Passing a certificate parses its validity and SANs (failures leave them unset).
   */
  set(name: string, s: { kind: 'tls_certificate'; certChain: string; privateKey: string } | { kind: 'validation_context'; trustedCa: string }): Secret {
    const prev = this.secrets.get(name);
    const version = (prev?.version ?? 0) + 1;
    let secret: Secret;
    if (s.kind === 'tls_certificate') {
      let facts: ReturnType<typeof certFacts> | undefined;
      try {
        facts = certFacts(s.certChain);
      } catch {
        facts = undefined;
      }
      secret = {
        kind: 'tls_certificate',
        name,
        certChain: s.certChain,
        privateKey: s.privateKey,
        uris: facts?.uris ?? [],
        ...(facts ? { notBefore: facts.notBefore, notAfter: facts.notAfter, serialNumber: facts.serialNumber } : {}),
        version,
        updatedAt: this.now(),
      };
    } else {
      secret = { kind: 'validation_context', name, trustedCa: s.trustedCa, version, updatedAt: this.now() };
    }
    this.secrets.set(name, secret);
    for (const cb of this.watchers.get(name) ?? []) {
      try {
        cb(secret);
      } catch (e) {
        this.opts.log?.error(`secret '${name}' subscriber failed: ${(e as Error).message}`);
      }
    }
    return secret;
  }

  /** Drops a secret (an SDS removal); contexts keep what they have until a new version arrives. */
  remove(name: string): void {
    this.secrets.delete(name);
  }

  /** Names and metadata only (for /config_dump and logs): never the PEM bodies. */
  describe(): { name: string; kind: Secret['kind']; version: number; updatedAt: number; notAfter?: number; serialNumber?: string; uris?: readonly string[] }[] {
    return [...this.secrets.values()].map((s) =>
      s.kind === 'tls_certificate'
        ? { name: s.name, kind: s.kind, version: s.version, updatedAt: s.updatedAt, ...(s.notAfter !== undefined ? { notAfter: s.notAfter } : {}), ...(s.serialNumber ? { serialNumber: s.serialNumber } : {}), uris: s.uris }
        : { name: s.name, kind: s.kind, version: s.version, updatedAt: s.updatedAt },
    );
  }

  /** Stops rotation, retries and file watches, and closes the CA client. */
  stop(): void {
    this.stopped = true;
    if (this.rotateTimer) clearTimeout(this.rotateTimer);
    this.rotateTimer = undefined;
    this.wake?.();
    for (const unwatch of this.watchedPaths.values()) unwatch();
    this.watchedPaths.clear();
    this.fileWatches.clear();
    this.opts.ca?.close();
  }

  // ------------------------------------------------------------------------------------------
  // CA

  /** One key + CSR + CreateCertificate round; updates `default` (and ROOTCA unless anchors are fixed). */
  async rotateNow(): Promise<TlsCertificateSecret> {
    const ca = this.opts.ca;
    const id = this.opts.identity;
    if (!ca || !id) throw new Error('no CA configured');
    const key = await generateWorkloadKey(this.opts.keyType ?? 'RSA', this.opts.rsaBits ?? 2048);
    const csr = createCsr(key, { uris: [spiffeId(id)] });
    this.stats.caRequests++;
    const chain = await ca.sign(csr, this.opts.ttlSeconds ?? 86_400);
    if (this.stopped) throw new Error('secret manager stopped');
    const pems = chain.map((c) => (c.endsWith('\n') ? c : `${c}\n`));
    // The chain is leaf first, root last: the root is the trust anchor, the rest is presented.
    const presented = pems.length > 1 ? pems.slice(0, -1) : pems;
    const root = pems[pems.length - 1];
    const secret = this.set(WORKLOAD_SECRET, { kind: 'tls_certificate', certChain: presented.join(''), privateKey: key.privateKeyPem }) as TlsCertificateSecret;
    if (!this.opts.trustAnchors && pems.length > 1) {
      const prev = this.secrets.get(ROOT_SECRET);
      if (!prev || prev.kind !== 'validation_context' || prev.trustedCa !== root) this.set(ROOT_SECRET, { kind: 'validation_context', trustedCa: root });
    }
    return secret;
  }

  private async fetchUntilDone(): Promise<void> {
    for (;;) {
      if (this.stopped) throw new Error('secret manager stopped');
      try {
        const s = await this.rotateNow();
        this.retryMs = this.opts.retryInitialMs ?? 1000;
        this.scheduleRotation(s);
        return;
      } catch (e) {
        if (this.stopped) throw e;
        this.stats.caFailures++;
        const delay = this.nextRetryDelay();
        this.opts.log?.warn(`workload certificate request failed (${(e as Error).message}); retrying in ${delay} ms`);
        await new Promise<void>((resolve) => {
          this.wake = resolve;
          this.rotateTimer = setTimeout(resolve, delay);
          this.rotateTimer.unref();
        });
        this.wake = undefined;
      }
    }
  }

  private nextRetryDelay(): number {
    const base = this.retryMs;
    this.retryMs = Math.min(this.opts.retryMaxMs ?? 60_000, this.retryMs * 2);
    return Math.max(1, Math.round(base * (0.8 + 0.4 * this.random())));
  }

  private scheduleRotation(s: TlsCertificateSecret): void {
    if (this.stopped || s.notBefore === undefined || s.notAfter === undefined) return;
    // Floored at the retry interval: a CA handing out already-expiring certificates is not hammered.
    const delay = Math.max(this.opts.retryInitialMs ?? 1000, rotationDelayMs(s.notBefore, s.notAfter, this.now(), this.opts.graceRatio ?? 0.5, this.opts.graceJitter ?? 0.01, this.random));
    this.opts.log?.info(
      `workload certificate ${s.uris[0] ?? ''} serial ${s.serialNumber ?? '?'} valid until ${new Date(s.notAfter).toISOString()}; rotation in ${Math.round(delay / 1000)} s`,
    );
    if (this.rotateTimer) clearTimeout(this.rotateTimer);
    // setTimeout holds at most 2^31-1 ms; longer waits re-arm.
    const step = Math.min(delay, 2_147_483_647);
    this.rotateTimer = setTimeout(() => {
      this.rotateTimer = undefined;
      if (step < delay) return this.scheduleRotation(s);
      this.stats.rotations++;
      this.fetchUntilDone().catch(() => undefined);
    }, step);
    this.rotateTimer.unref();
  }

  // ------------------------------------------------------------------------------------------
  // Files

  private watchFiles(name: string, paths: readonly string[], load: () => void): void {
    if (this.fileWatches.has(name)) return;
    this.fileWatches.set(name, { paths, load });
    load();
    for (const p of paths) {
      if (this.watchedPaths.has(p)) continue;
      const onChange = (cur: fs.Stats, prev: fs.Stats): void => {
        if (cur.mtimeMs === prev.mtimeMs && cur.size === prev.size && cur.ino === prev.ino) return;
        for (const w of this.fileWatches.values()) if (w.paths.includes(p)) w.load();
      };
      const watcher = fs.watchFile(p, { interval: this.opts.filePollMs ?? 2000, persistent: false }, onChange);
      watcher.unref?.();
      this.watchedPaths.set(p, () => fs.unwatchFile(p, onChange));
    }
  }

  private loadCertFiles(name: string, chainPath: string, keyPath: string): void {
    let certChain: string;
    let privateKey: string;
    try {
      certChain = fs.readFileSync(chainPath, 'utf8');
      privateKey = fs.readFileSync(keyPath, 'utf8');
    } catch (e) {
      this.opts.log?.warn(`secret '${name}': cannot read ${chainPath} / ${keyPath}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      return;
    }
    const prev = this.secrets.get(name);
    if (prev?.kind === 'tls_certificate' && prev.certChain === certChain && prev.privateKey === privateKey) return;
    if (!certChain.includes('-----BEGIN CERTIFICATE-----') || !privateKey.includes('PRIVATE KEY-----')) {
      // A half-written pair (files are replaced one at a time): wait for the next change.
      this.opts.log?.warn(`secret '${name}': ${chainPath} / ${keyPath} do not hold a PEM certificate and key yet`);
      return;
    }
    if (prev) this.stats.fileReloads++;
    const s = this.set(name, { kind: 'tls_certificate', certChain, privateKey }) as TlsCertificateSecret;
    this.opts.log?.info(`secret '${name}' loaded from ${chainPath} (serial ${s.serialNumber ?? '?'})`);
  }

  private loadRootFile(name: string, rootPath: string): void {
    let trustedCa: string;
    try {
      trustedCa = fs.readFileSync(rootPath, 'utf8');
    } catch (e) {
      this.opts.log?.warn(`secret '${name}': cannot read ${rootPath}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      return;
    }
    const prev = this.secrets.get(name);
    if (prev?.kind === 'validation_context' && prev.trustedCa === trustedCa) return;
    if (!trustedCa.includes('-----BEGIN CERTIFICATE-----')) {
      this.opts.log?.warn(`secret '${name}': ${rootPath} holds no PEM certificate`);
      return;
    }
    if (prev) this.stats.fileReloads++;
    this.set(name, { kind: 'validation_context', trustedCa });
    this.opts.log?.info(`secret '${name}' loaded from ${rootPath}`);
  }
}

/** The secret-related settings of the injected environment, as pilot-agent reads them. */
export interface WorkloadSecretEnv {
  readonly identity: WorkloadIdentity;
  readonly keyType: WorkloadKeyType;
  readonly ttlSeconds: number;
  readonly graceRatio: number;
}

/** TRUST_DOMAIN, POD_NAMESPACE, SERVICE_ACCOUNT, ECC_SIGNATURE_ALGORITHM, SECRET_TTL, SECRET_GRACE_PERIOD_RATIO. */
export function workloadSecretEnv(env: NodeJS.ProcessEnv = process.env): WorkloadSecretEnv {
  const ttl = env.SECRET_TTL ? parseGoDurationOrSeconds(env.SECRET_TTL) : undefined;
  const ratio = env.SECRET_GRACE_PERIOD_RATIO !== undefined ? Number(env.SECRET_GRACE_PERIOD_RATIO) : NaN;
  return {
    identity: { trustDomain: env.TRUST_DOMAIN || 'cluster.local', namespace: env.POD_NAMESPACE || 'default', serviceAccount: env.SERVICE_ACCOUNT || 'default' },
    keyType: (env.ECC_SIGNATURE_ALGORITHM ?? '').toUpperCase() === 'ECDSA' ? 'ECDSA' : 'RSA',
    ttlSeconds: ttl !== undefined && ttl > 0 ? Math.round(ttl / 1000) : 86_400,
    graceRatio: Number.isFinite(ratio) && ratio > 0 && ratio < 1 ? ratio : 0.5,
  };
}
