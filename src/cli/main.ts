#!/usr/bin/env node
// keel's command line: `keel -c bootstrap.yaml` runs the proxy (Envoy's flags where they apply),
// `keel --demo` runs it with the embedded demo config and demo upstreams, `keel route-check ...`
// tests a route table like Envoy's router_check_tool. Parses flags and wires; no proxy logic here.

import { SecretManager } from '../security/secret-manager';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { ConfigError } from '../config/errors';
import { loadBootstrapFile, parseBootstrapText } from '../config/bootstrap';
import type { Bootstrap } from '../config/types';
import { KeelServer } from '../server/server';
import { Logger, isLevel } from '../common/logger';
import { nativeStatusLine } from '../native';
import { startDemoUpstreams } from './demo';
import { ISTIO_USAGE, runIstioProxy, runTranslate, wantsIstio } from './istio';
import { eachFlag, UsageError } from './args';
import { availableParallelism } from 'node:os';
import { concurrencyFromEnv, isWorker, lifecycleFromEnv, runUntilTerminated, startStatus, workerIndex } from '../server/lifecycle';
import type { StatusServers } from '../admin/status';

const USAGE = `usage:
  keel -c <bootstrap.yaml|json> [--mode serve|validate] [-l <level>] [--drain-time-s N] [--concurrency N]
       [--istio-status] [--status-port 15020] [--readiness-port 15021] [--prometheus-port 15090] (-1 = off)
  keel --config-yaml '<inline yaml>'
  keel --demo                      run the embedded demo config with demo upstreams (npm start)
  keel route-check -c <routes> -t <tests> [-d] [--only-show-failures] [-f N] [--covall] [--detailed-coverage]
  keel istio-iptables [-p 15001] [-z 15006] [-u 1337] [-m REDIRECT|TPROXY] [-b '*'] [-i '*'] [-n] ... (--help)
  keel version
  keel proxy sidecar|router [pilot-agent flags]   the istio-proxy agent: env, CA, ADS to istiod (unknown flags ignored)
  keel wait [--timeoutSeconds 60] [--periodMillis 500]   poll :15021/healthz/ready
  keel request METHOD PATH [BODY]   one admin call on :15000
${ISTIO_USAGE}`;

/** The agent role (CA client, xDS bootstrap), loaded only for its subcommands. */
function agent(): typeof import('../agent/proxy') {
  return require('../agent/proxy') as typeof import('../agent/proxy');
}

export function packageVersion(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}

export function packageRoot(): string {
  let dir = __dirname;
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
  return dir;
}

interface ProxyArgs {
  configPath?: string;
  configYaml?: string;
  mode: 'serve' | 'validate';
  logLevel: string;
  drainTimeS: number;
  demo: boolean;
  concurrency: number;
  /** --drain-time-s given explicitly (else TERMINATION_DRAIN_DURATION_SECONDS, else 5 s) */
  drainGiven: boolean;
  concurrencyGiven: boolean;
  /** status ports (pilot-agent's): undefined = not served */
  status?: { readinessPort: number; statusPort: number; prometheusPort: number };
}

function parseProxyArgs(argv: string[]): ProxyArgs {
  const a: ProxyArgs = { mode: 'serve', logLevel: 'info', drainTimeS: 5, demo: false, concurrency: 1, drainGiven: false, concurrencyGiven: false };
  const statusPorts = (): NonNullable<ProxyArgs['status']> => (a.status ??= { readinessPort: 15021, statusPort: 15020, prometheusPort: 15090 });
  const portFlag = (v: string, flag: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < -1 || n > 65535) throw new UsageError(`${flag} needs a port (or -1 for off), not '${v}'`);
    return n;
  };
  for (const f of eachFlag(argv)) {
    const { flag, value } = f;
    switch (flag) {
      case '-c':
      case '--config-path':
        a.configPath = value();
        break;
      case '--config-yaml':
        a.configYaml = value();
        break;
      case '--mode': {
        const m = value();
        if (m !== 'serve' && m !== 'validate') throw new UsageError(`--mode must be serve or validate, not ${m}`);
        a.mode = m;
        break;
      }
      case '-l':
      case '--log-level':
        a.logLevel = value();
        if (!isLevel(a.logLevel)) throw new UsageError(`unknown log level ${a.logLevel}`);
        break;
      case '--drain-time-s':
        a.drainTimeS = Number(value());
        if (!Number.isFinite(a.drainTimeS) || a.drainTimeS < 0) throw new UsageError('--drain-time-s needs a number of seconds');
        a.drainGiven = true;
        break;
      case '--istio-status':
        statusPorts();
        break;
      case '--status-port':
        statusPorts().statusPort = portFlag(value(), flag);
        break;
      case '--readiness-port':
        statusPorts().readinessPort = portFlag(value(), flag);
        break;
      case '--prometheus-port':
        statusPorts().prometheusPort = portFlag(value(), flag);
        break;
      case '--demo':
        a.demo = true;
        break;
      case '--concurrency': {
        const v = value();
        a.concurrency = Number(v);
        if (!Number.isInteger(a.concurrency) || a.concurrency < 0) throw new UsageError(`--concurrency needs a whole number, not '${v}'`);
        if (a.concurrency === 0) a.concurrency = availableParallelism();
        a.concurrencyGiven = true;
        break;
      }
      case '-h':
      case '--help':
        process.stdout.write(USAGE + '\n');
        process.exit(0);
        break;
      default:
        // Envoy flags keel does not need (--service-cluster, --base-id, ...) are tolerated.
        if (flag.startsWith('--') && f.arg === flag && f.peek() !== undefined && !f.peek()!.startsWith('-')) f.skip();
        else if (!flag.startsWith('-')) throw new UsageError(`unexpected argument ${flag}`);
    }
  }
  if (a.demo) a.configPath ??= path.join(packageRoot(), 'config', 'demo.yaml');
  if (a.configPath === undefined && a.configYaml === undefined) throw new UsageError('a config is needed: -c <file> (or --demo)');
  return a;
}


// The workers module (node:cluster's primary and worker sides) is required only where workers are
// in play: a primary with --concurrency > 1, or a worker it forked (see isWorker).
const workers = (): typeof import('../server/workers') => require('../server/workers') as typeof import('../server/workers');

async function runProxy(argv: string[]): Promise<number> {
  const args = parseProxyArgs(argv);
  const log = new Logger(isLevel(args.logLevel) ? args.logLevel : 'info', isWorker() ? `keel-worker-${workerIndex()}` : 'keel');
  let bootstrap: Bootstrap;
  let warnings: string[];
  try {
    ({ bootstrap, warnings } = args.configYaml !== undefined ? parseBootstrapText(args.configYaml, '--config-yaml') : loadBootstrapFile(args.configPath!));
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(e.format() + '\n');
      return 1;
    }
    throw e;
  }
  for (const w of warnings) log.warn(w);
  if (args.mode === 'validate') {
    process.stdout.write(`configuration '${args.configPath ?? '--config-yaml'}' OK\n`);
    return 0;
  }
  if (!args.concurrencyGiven) args.concurrency = concurrencyFromEnv(process.env) ?? args.concurrency;
  const life = lifecycleFromEnv(process.env, args.drainGiven ? args.drainTimeS * 1000 : undefined);
  if (args.concurrency > 1 && !isWorker()) {
    log.info(nativeStatusLine());
    log.info(`starting ${args.concurrency} workers`);
    return workers().runPrimary(args.concurrency, log, life.drainMs);
  }
  if (!isWorker()) log.info(nativeStatusLine());
  const demoServers = args.demo ? await startDemoUpstreams({ v1: 19081, v2: 19082 }) : [];
  // Standalone: SDS names resolve to Istio's file-mounted secrets (file-cert:<chain>~<key>, file-root:<root>), watched.
  const server = new KeelServer(bootstrap, { log, drainTimeMs: life.drainMs, admin: workerIndex() <= 1, secrets: new SecretManager({ log }) });
  server.version = packageVersion();
  server.commandLine = { config_path: args.configPath ?? '', concurrency: args.concurrency, drain_time: `${life.drainMs / 1000}s`, log_level: args.logLevel, mode: args.mode === 'serve' ? 'Serve' : 'Validate' };
  const stopScrapes = isWorker() ? workers().serveScrapes(server) : () => undefined;
  let ports: Map<string, number>;
  let status: StatusServers | undefined;
  try {
    ports = await server.start();
    if (args.status && workerIndex() <= 1) status = await startStatus(server, args.status);
  } catch (e) {
    if (isWorker()) workers().tellPrimary({ keel: 'failed', detail: (e as Error).message });
    throw e;
  }
  if (isWorker()) workers().tellPrimary({ keel: 'ready' });
  for (const [name, port] of ports) log.info(`listener '${name}' serving on port ${port}`);
  if (server.admin) log.info(`admin on port ${server.admin.port}`);
  if (args.demo && workerIndex() <= 1) {
    const p = ports.get('demo') ?? 10000;
    process.stdout.write(`keel demo: try  curl -s localhost:${p}/  and  curl -s -H 'x-version: v2' localhost:${p}/\n`);
  }
  if (status) log.info(`status ports: readiness ${status.ports.readiness ?? 'off'}, status ${status.ports.status ?? 'off'}, prometheus ${status.ports.prometheus ?? 'off'}`);
  await runUntilTerminated(server, life, log);
  stopScrapes();
  await status?.close();
  for (const s of demoServers) s.close();
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  try {
    switch (argv[0]) {
      case 'route-check':
        return await (require('./route-check') as typeof import('./route-check')).runRouteCheck(argv.slice(1));
      case 'istio-iptables':
        return await (require('./istio-iptables') as typeof import('./istio-iptables')).runIstioIptables(argv.slice(1));
      case 'translate':
        return runTranslate(argv.slice(1));
      case 'proxy':
        return await agent().runAgentProxy(argv.slice(1));
      case 'wait':
        return await agent().runWait(argv.slice(1));
      case 'request':
        return await agent().runRequest(argv.slice(1));
      case 'version':
      case '--version': {
        const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
        process.stdout.write(`keel ${pkg.version} (node ${process.version})\n`);
        return 0;
      }
      default:
        if (wantsIstio(argv)) return await runIstioProxy(argv);
        return await runProxy(argv);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`keel: ${e.message}\n${USAGE}\n`);
      return 2;
    }
    process.stderr.write(`keel: ${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
    if (code !== 0) process.exit(code);
  });
}
