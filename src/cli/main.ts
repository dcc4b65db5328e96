#!/usr/bin/env node
// keel's command line: `keel -c bootstrap.yaml` runs the proxy (Envoy's flags where they apply),
// `keel --demo` runs it with the embedded demo config and demo upstreams, `keel route-check ...`
// tests a route table like Envoy's router_check_tool. Parses flags and wires; no proxy logic here.

import * as path from 'node:path';
import * as fs from 'node:fs';
import { ConfigError } from '../config/errors';
import { loadBootstrapFile, parseBootstrapText } from '../config/bootstrap';
import type { Bootstrap } from '../config/types';
import { KeelServer } from '../server/server';
import { Logger, isLevel } from '../common/logger';
import { nativeStatusLine } from '../native';
import { startDemoUpstreams } from './demo';
import { runRouteCheck } from './route-check';
import { runIstioIptables } from './istio-iptables';
import { eachFlag, UsageError } from './args';
import { availableParallelism } from 'node:os';
import { isWorker, runPrimary, tellPrimary, workerIndex } from '../server/workers';

const USAGE = `usage:
  keel -c <bootstrap.yaml|json> [--mode serve|validate] [-l <level>] [--drain-time-s N] [--concurrency N]
  keel --config-yaml '<inline yaml>'
  keel --demo                      run the embedded demo config with demo upstreams (npm start)
  keel route-check -c <routes> -t <tests> [-d] [--only-show-failures] [-f N] [--covall] [--detailed-coverage]
  keel istio-iptables [-p 15001] [-z 15006] [-u 1337] [-m REDIRECT|TPROXY] [-b '*'] [-i '*'] [-n] ... (--help)
  keel version`;

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
}

function parseProxyArgs(argv: string[]): ProxyArgs {
  const a: ProxyArgs = { mode: 'serve', logLevel: 'info', drainTimeS: 5, demo: false, concurrency: 1 };
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
        break;
      case '--demo':
        a.demo = true;
        break;
      case '--concurrency': {
        const v = value();
        a.concurrency = Number(v);
        if (!Number.isInteger(a.concurrency) || a.concurrency < 0) throw new UsageError(`--concurrency needs a whole number, not '${v}'`);
        if (a.concurrency === 0) a.concurrency = availableParallelism();
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
  if (args.concurrency > 1 && !isWorker()) {
    log.info(nativeStatusLine());
    log.info(`starting ${args.concurrency} workers`);
    return runPrimary(args.concurrency, log, args.drainTimeS * 1000);
  }
  if (!isWorker()) log.info(nativeStatusLine());
  const demoServers = args.demo ? await startDemoUpstreams({ v1: 19081, v2: 19082 }) : [];
  const server = new KeelServer(bootstrap, { log, drainTimeMs: args.drainTimeS * 1000, admin: workerIndex() <= 1 });
  let ports: Map<string, number>;
  try {
    ports = await server.start();
  } catch (e) {
    tellPrimary({ keel: 'failed', detail: (e as Error).message });
    throw e;
  }
  tellPrimary({ keel: 'ready' });
  for (const [name, port] of ports) log.info(`listener '${name}' serving on port ${port}`);
  if (server.admin) log.info(`admin on port ${server.admin.port}`);
  if (args.demo && workerIndex() <= 1) {
    const p = ports.get('demo') ?? 10000;
    process.stdout.write(`keel demo: try  curl -s localhost:${p}/  and  curl -s -H 'x-version: v2' localhost:${p}/\n`);
  }
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      log.info(`${sig}: draining (up to ${args.drainTimeS}s), then exiting`);
      void server.stop().then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  for (const s of demoServers) s.close();
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  try {
    switch (argv[0]) {
      case 'route-check':
        return await runRouteCheck(argv.slice(1));
      case 'istio-iptables':
        return await runIstioIptables(argv.slice(1));
      case 'version':
      case '--version': {
        const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
        process.stdout.write(`keel ${pkg.version} (node ${process.version})\n`);
        return 0;
      }
      default:
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
