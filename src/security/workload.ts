// The agent's entry point to workload certificates: builds the SecretManager pilot-agent would from
// the injected environment and files — mounted /etc/certs when present, else Istio's CA at CA_ADDR
// (TLS with /var/run/secrets/istio/root-cert.pem, the projected istio-token, ClusterID and
// CA_HEADER_* metadata). The caller starts it, passes it to KeelServer (ServerOptions.secrets) and
// stops it on exit. Reads files only here, at start; never logs tokens or keys.
//
//   const secrets = workloadSecretManager(process.env, { log });
//   await secrets.start();                       // default + ROOTCA obtained
//   const server = new KeelServer(bootstrap, { secrets, log });

import * as fs from 'node:fs';
import type { Logger } from '../common/logger';
import { caHeadersFromEnv, IstioCaClient } from './ca-client';
import { DEFAULT_FILE_CERTS, SecretManager, workloadSecretEnv, type FileCertPaths } from './secret-manager';

export const DEFAULT_TOKEN_PATH = '/var/run/secrets/tokens/istio-token';
export const DEFAULT_CA_ROOT_PATH = '/var/run/secrets/istio/root-cert.pem';
export const DEFAULT_CA_ADDR = 'istiod.istio-system.svc:15012';

export interface WorkloadSecretOptions {
  readonly log?: Logger;
  /** mounted certificates (default /etc/certs/...); used when all three files exist */
  readonly files?: FileCertPaths;
  /** projected service-account token (default /var/run/secrets/tokens/istio-token) */
  readonly tokenPath?: string;
  /** root of trust for the CA's TLS (default /var/run/secrets/istio/root-cert.pem) */
  readonly caRootPath?: string;
  /** CA address when CA_ADDR is unset (pilot-agent uses the discovery address) */
  readonly discoveryAddress?: string;
  /** test hooks */
  readonly retryInitialMs?: number;
  readonly filePollMs?: number;
}

function exists(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/** The secret manager for this workload, from the environment (see the file header). Throws when neither files nor a CA root are usable. */
export function workloadSecretManager(env: NodeJS.ProcessEnv, o: WorkloadSecretOptions = {}): SecretManager {
  const w = workloadSecretEnv(env);
  const files = o.files ?? DEFAULT_FILE_CERTS;
  const common = {
    ...(o.log ? { log: o.log } : {}),
    ...(o.retryInitialMs !== undefined ? { retryInitialMs: o.retryInitialMs } : {}),
    ...(o.filePollMs !== undefined ? { filePollMs: o.filePollMs } : {}),
    graceRatio: w.graceRatio,
  };
  if (exists(files.certChain) && exists(files.key) && exists(files.rootCert)) {
    o.log?.info(`workload certificates: mounted files ${files.certChain}, ${files.key}, ${files.rootCert}`);
    return new SecretManager({ ...common, files });
  }
  const address = env.CA_ADDR || o.discoveryAddress || DEFAULT_CA_ADDR;
  const rootPath = o.caRootPath ?? DEFAULT_CA_ROOT_PATH;
  let rootCert: string;
  try {
    rootCert = fs.readFileSync(rootPath, 'utf8');
  } catch (e) {
    throw new Error(`cannot read the CA root certificate ${rootPath}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const tokenPath = o.tokenPath ?? DEFAULT_TOKEN_PATH;
  const host = address.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  const ca = new IstioCaClient({
    address,
    rootCert,
    // pilot-agent checks the CA certificate against the CA host name (istiod.istio-system.svc)
    serverName: host,
    token: () => {
      try {
        return fs.readFileSync(tokenPath, 'utf8').trim();
      } catch {
        return undefined;
      }
    },
    clusterId: env.ISTIO_META_CLUSTER_ID || 'Kubernetes',
    headers: caHeadersFromEnv(env),
  });
  o.log?.info(`workload certificates: CA ${address} for ${w.identity.namespace}/${w.identity.serviceAccount} (${w.keyType}, TTL ${w.ttlSeconds} s)`);
  return new SecretManager({ ...common, ca, identity: w.identity, keyType: w.keyType, ttlSeconds: w.ttlSeconds });
}
