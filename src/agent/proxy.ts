// The agent role: `keel proxy sidecar|router <pilot-agent flags>` does what pilot-agent plus Envoy
// do in an istio-proxy container: read the injected environment, obtain the workload certificate
// from the CA (src/security/), generate the bootstrap (ADS to istiod), serve, expose the status
// ports, and drain on SIGTERM. Also `keel wait` (poll readiness) and `keel request METHOD PATH`
// (an admin call), as `pilot-agent wait` / `pilot-agent request`.

import * as fs from 'node:fs';
import * as http from 'node:http';
import { Logger, isLevel, type Level } from '../common/logger';
import { ConfigError } from '../config/errors';
import { KeelServer } from '../server/server';
import { IstioCaClient, caHeadersFromEnv } from '../security/ca-client';
import { SecretManager, workloadSecretEnv } from '../security/secret-manager';
import type { StatusServers } from '../admin/status';
import { lifecycleFromEnv, runUntilTerminated, startStatus } from '../server/lifecycle';
import { agentConfigFromEnv, parseAgentFlags, type AgentConfig } from './env';
import { agentBootstrap } from './bootstrap';

export interface RunningAgent {
  readonly config: AgentConfig;
  readonly server: KeelServer;
  readonly secrets: SecretManager;
  readonly status?: StatusServers;
  stop(): Promise<void>;
}

export interface AgentOptions {
  readonly log?: Logger;
  /** start the 15020/15021/15090 status ports (default true) */
  readonly status?: boolean;
  readonly drainTimeMs?: number;
}

/** Starts the agent in this process: CA + SDS secrets, the generated bootstrap, xDS, status ports. */
export async function startAgent(env: NodeJS.ProcessEnv, argv: readonly string[], opts: AgentOptions = {}): Promise<RunningAgent> {
  const log = opts.log ?? new Logger('info');
  const config = agentConfigFromEnv(env, argv);
  const { ignored } = parseAgentFlags(argv);
  if (ignored.length > 0) log.info(`ignoring pilot-agent flags keel does not need: ${ignored.join(' ')}`);
  let rootCert: string | undefined;
  if (config.tls) {
    try {
      rootCert = fs.readFileSync(config.paths.rootCert, 'utf8');
    } catch (e) {
      throw new Error(`cannot read the root certificate for istiod's TLS (${config.paths.rootCert}): ${(e as Error).message}`);
    }
  }
  if (!fs.existsSync(config.paths.token)) log.warn(`no service-account token at ${config.paths.token}: istiod will refuse the connection`);
  const sec = workloadSecretEnv(env);
  const ca = new IstioCaClient({
    address: config.caAddress,
    ...(rootCert !== undefined ? { rootCert } : {}),
    serverName: config.istiodSan,
    token: () => {
      try {
        return fs.readFileSync(config.paths.token, 'utf8').trim();
      } catch {
        return undefined;
      }
    },
    clusterId: config.clusterId,
    headers: caHeadersFromEnv(env),
  });
  const secrets = new SecretManager({ ca, identity: sec.identity, keyType: sec.keyType, ttlSeconds: sec.ttlSeconds, graceRatio: sec.graceRatio, log });
  // Certificates come in the background (retried with back-off); TLS chains naming them wait.
  void secrets.start().catch((e: Error) => log.error(`workload certificate: ${e.message}`));
  const { bootstrap, warnings } = agentBootstrap(config);
  for (const w of warnings) log.warn(w);
  const server = new KeelServer(bootstrap, { log, secrets, ...(opts.drainTimeMs !== undefined ? { drainTimeMs: opts.drainTimeMs } : {}) });
  // The projected token rotates: read it again at every reconnect (overrides the bootstrap's copy).
  server.xdsMetadata = (): Record<string, string> => {
    try {
      return { authorization: `Bearer ${fs.readFileSync(config.paths.token, 'utf8').trim()}` };
    } catch {
      return {};
    }
  };
  await server.start();
  let status: StatusServers | undefined;
  if (opts.status !== false) {
    status = await startStatus(server, { readinessPort: config.ports.readiness, statusPort: config.ports.status, prometheusPort: config.ports.prometheus }, env);
  }
  log.info(`${config.type} ${config.nodeId}: xDS ${config.delta ? 'delta' : 'state-of-the-world'} to ${config.discoveryAddress} (${config.tls ? `TLS, SAN ${config.istiodSan}` : 'plaintext'}), CA ${config.caAddress}`);
  return {
    config,
    server,
    secrets,
    ...(status ? { status } : {}),
    async stop() {
      await server.stop(opts.drainTimeMs ?? 0);
      await status?.close();
      secrets.stop();
      ca.close();
    },
  };
}

/** `keel proxy sidecar|router [flags]`: runs until SIGTERM, then drains. */
export async function runAgentProxy(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const level = flagValue(argv, 'proxyLogLevel') ?? flagValue(argv, 'log_output_level')?.split(':').pop() ?? 'info';
  const log = new Logger(isLevel(level) ? (level as Level) : level === 'warning' ? 'warn' : 'info');
  let agent: RunningAgent;
  try {
    agent = await startAgent(env, argv, { log });
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(e.format() + '\n');
      return 1;
    }
    process.stderr.write(`keel proxy: ${(e as Error).message}\n`);
    return 1;
  }
  const life = lifecycleFromEnv(env, undefined);
  await runUntilTerminated(agent.server, life, log);
  await agent.status?.close();
  agent.secrets.stop();
  return 0;
}

function flagValue(argv: readonly string[], name: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i].replace(/^--?/, '');
    if (a === name) return argv[i + 1];
    if (a.startsWith(`${name}=`)) return a.slice(name.length + 1);
  }
  return undefined;
}

function httpGet(url: string, method = 'GET', timeoutMs = 1000, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * `keel wait [--timeoutSeconds 60] [--requestTimeoutMillis 500] [--periodMillis 500] [--url ...]`:
 * polls the readiness port (KEEL_READINESS_PORT, default 15021) /healthz/ready until 200.
 */
export async function runWait(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const timeoutS = Number(flagValue(argv, 'timeoutSeconds') ?? 60);
  const reqTimeout = Number(flagValue(argv, 'requestTimeoutMillis') ?? 500);
  const period = Number(flagValue(argv, 'periodMillis') ?? 500);
  const url = flagValue(argv, 'url') ?? `http://localhost:${env.KEEL_READINESS_PORT || 15021}/healthz/ready`;
  const deadline = Date.now() + timeoutS * 1000;
  for (;;) {
    try {
      const r = await httpGet(url, 'GET', reqTimeout);
      if (r.status === 200) {
        process.stdout.write('keel is ready\n');
        return 0;
      }
    } catch {
      // not up yet
    }
    if (Date.now() + period > deadline) {
      process.stderr.write(`keel wait: not ready after ${timeoutS}s (${url})\n`);
      return 1;
    }
    await new Promise((r) => setTimeout(r, period));
  }
}

/** `keel request METHOD PATH [BODY]`: one admin call (KEEL_ADMIN_PORT, default 15000); prints the body. */
export async function runRequest(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const [method, p, body] = argv;
  if (!method || !p) {
    process.stderr.write('usage: keel request METHOD PATH [BODY]\n');
    return 2;
  }
  const port = flagValue(argv, 'debug-port') ?? env.KEEL_ADMIN_PORT ?? '15000';
  try {
    const r = await httpGet(`http://localhost:${port}${p.startsWith('/') ? p : `/${p}`}`, method.toUpperCase(), 10_000, body && !body.startsWith('--') ? body : undefined);
    process.stdout.write(r.body);
    return r.status >= 200 && r.status < 300 ? 0 : 1;
  } catch (e) {
    process.stderr.write(`keel request: ${(e as Error).message}\n`);
    return 1;
  }
}
