// `keel -f gateway.yaml -f reviews.yaml [--gateway] ...` (run a proxy from Istio YAML, re-translating
// and applying live on every edit) and `keel translate -f ...` (print the generated Envoy bootstrap).
// Flag parsing and wiring only; the translation is src/istio/.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Logger, isLevel } from '../common/logger';
import { KeelServer } from '../server/server';
import type { IstioTranslation, TranslateOptions } from '../istio';
import type { IstioFileWatcher } from '../istio/watch';

/** The translator and its schemas, loaded only when Istio mode runs (~60 ms of start-up otherwise). */
function istio(): typeof import('../istio') & typeof import('../istio/watch') {
  return { ...(require('../istio') as typeof import('../istio')), ...(require('../istio/watch') as typeof import('../istio/watch')) };
}
import { eachFlag, UsageError } from './args';

export const ISTIO_USAGE = `  keel -f <istio.yaml> [-f ...] [--endpoints <file>] [--gateway] [--listen host:port] [--namespace ns]
       [--port-map 443=8443,...] [--credentials-dir dir] [--mesh-certs dir] [--labels k=v,...]
       [--admin-address host:port|none] [--no-watch] [-l level]
                                   run from Istio resources (VirtualService, DestinationRule, Gateway, ...)
  keel translate -f <istio.yaml> [-f ...] [same flags] [-o yaml|json] [--routes[=name]]
                                   print the Envoy bootstrap they become (--routes: only a RouteConfiguration, for route-check)`;

export interface IstioArgs {
  files: string[];
  dirs: string[];
  opts: TranslateOptions;
  logLevel: string;
  drainTimeS: number;
  watch: boolean;
  output: 'yaml' | 'json';
  /** `--routes[=name]`: print only a RouteConfiguration (for `keel route-check -c`); '' = the first. */
  routes?: string;
}

function hostPort(v: string, flag: string): { address: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(v);
  if (!m) throw new UsageError(`${flag} needs host:port, not '${v}'`);
  const port = Number(m[2]);
  if (port > 65535) throw new UsageError(`${flag}: ${port} is not a port`);
  return { address: m[1] === '' ? '0.0.0.0' : m[1], port };
}

/** Expands -f arguments: files as given, directories to their .yaml/.yml/.json files (sorted). */
function expand(paths: readonly string[]): { files: string[]; dirs: string[] } {
  const files: string[] = [];
  const dirs: string[] = [];
  for (const p of paths) {
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(p);
    } catch {
      throw new UsageError(`cannot read ${p}`);
    }
    if (st.isDirectory()) {
      dirs.push(p);
      for (const f of fs.readdirSync(p).sort()) if (/\.(ya?ml|json)$/i.test(f)) files.push(path.join(p, f));
    } else files.push(p);
  }
  return { files, dirs };
}

export function parseIstioArgs(argv: readonly string[]): IstioArgs {
  const given: string[] = [];
  let mode: 'sidecar' | 'gateway' = 'sidecar';
  let listen: { address: string; port: number } | undefined;
  let namespace = 'default';
  const portMap = new Map<number, number>();
  let credentialsDir: string | undefined;
  let meshCertsDir: string | undefined;
  let labels: Record<string, string> | undefined;
  let admin: { address: string; port: number } | undefined = { address: '127.0.0.1', port: 15000 };
  let logLevel = 'info';
  let drainTimeS = 5;
  let watch = true;
  let output: 'yaml' | 'json' = 'yaml';
  let routes: string | undefined;
  for (const f of eachFlag(argv)) {
    switch (f.flag) {
      case '-f':
      case '--filename':
      case '--endpoints':
        given.push(f.value());
        break;
      case '--gateway':
        mode = 'gateway';
        break;
      case '--listen':
        listen = hostPort(f.value(), '--listen');
        break;
      case '--namespace':
      case '-n':
        namespace = f.value();
        break;
      case '--port-map':
        for (const pair of f.value().split(',')) {
          const m = /^(\d+)=(\d+)$/.exec(pair.trim());
          if (!m) throw new UsageError(`--port-map takes gatewayPort=bindPort[,...], not '${pair}'`);
          portMap.set(Number(m[1]), Number(m[2]));
        }
        break;
      case '--credentials-dir':
        credentialsDir = f.value();
        break;
      case '--mesh-certs':
        meshCertsDir = f.value();
        break;
      case '--labels':
        labels = {};
        for (const pair of f.value().split(',')) {
          const [k, ...v] = pair.split('=');
          if (!k || v.length === 0) throw new UsageError(`--labels takes k=v[,...], not '${pair}'`);
          labels[k.trim()] = v.join('=').trim();
        }
        break;
      case '--admin-address': {
        const v = f.value();
        admin = v === 'none' ? undefined : hostPort(v, '--admin-address');
        break;
      }
      case '--no-watch':
        watch = false;
        break;
      case '-o':
      case '--output': {
        const v = f.value();
        if (v !== 'yaml' && v !== 'json') throw new UsageError(`-o takes yaml or json, not '${v}'`);
        output = v;
        break;
      }
      case '--routes':
        routes = f.arg.includes('=') ? f.value() : '';
        break;
      case '-l':
      case '--log-level':
        logLevel = f.value();
        if (!isLevel(logLevel)) throw new UsageError(`unknown log level ${logLevel}`);
        break;
      case '--drain-time-s':
        drainTimeS = Number(f.value());
        if (!Number.isFinite(drainTimeS) || drainTimeS < 0) throw new UsageError('--drain-time-s needs a number of seconds');
        break;
      default:
        throw new UsageError(`unknown flag ${f.flag} for Istio mode`);
    }
  }
  if (given.length === 0) throw new UsageError('at least one -f <istio.yaml> is needed');
  const { files, dirs } = expand(given);
  let meshCerts: TranslateOptions['meshCerts'];
  if (meshCertsDir !== undefined) {
    meshCerts = { certChain: path.join(meshCertsDir, 'cert-chain.pem'), key: path.join(meshCertsDir, 'key.pem'), rootCert: path.join(meshCertsDir, 'root-cert.pem') };
    for (const p of Object.values(meshCerts)) if (!fs.existsSync(p)) throw new UsageError(`--mesh-certs: ${p} is missing (cert-chain.pem, key.pem, root-cert.pem)`);
  }
  const opts: TranslateOptions = {
    mode,
    namespace,
    ...(listen && mode === 'sidecar' ? { listen } : {}),
    ...(listen && mode === 'gateway' ? { gatewayAddress: listen.address } : {}),
    ...(portMap.size > 0 ? { portMap: (p: number) => portMap.get(p) ?? p } : {}),
    credentialsDir: credentialsDir ?? path.dirname(path.resolve(files[0] ?? '.')),
    ...(meshCerts ? { meshCerts } : {}),
    ...(labels ? { proxyLabels: labels } : {}),
    ...(admin ? { admin } : {}),
  };
  return { files, dirs, opts, logLevel, drainTimeS, watch, output, ...(routes !== undefined ? { routes } : {}) };
}

/** Whether argv asks for Istio mode (has -f / --filename / --endpoints). */
export function wantsIstio(argv: readonly string[]): boolean {
  return argv.some((a) => a === '-f' || a === '--filename' || a.startsWith('--filename=') || a === '--endpoints' || a.startsWith('--endpoints='));
}

/** `keel translate`: prints the Envoy bootstrap, or every problem (exit 1). */
export function runTranslate(argv: readonly string[]): number {
  const args = parseIstioArgs(argv);
  let t: IstioTranslation;
  try {
    t = istio().translateIstioFiles(args.files, args.opts);
  } catch (e) {
    if (e instanceof istio().IstioConfigError) {
      for (const w of e.warnings) process.stderr.write(`keel: warning: ${w}\n`);
      process.stderr.write(e.format() + '\n');
      return 1;
    }
    throw e;
  }
  for (const w of t.warnings) process.stderr.write(`keel: warning: ${w}\n`);
  if (args.routes !== undefined) {
    const all = routeConfigs(t.envoy);
    const rc = args.routes === '' ? all[0] : all.find((r) => r.name === args.routes);
    if (!rc) {
      process.stderr.write(`keel: no route configuration ${args.routes === '' ? '' : `'${args.routes}' `}(there are: ${all.map((r) => r.name).join(', ') || 'none'})\n`);
      return 1;
    }
    process.stdout.write(args.output === 'json' ? JSON.stringify(rc, null, 2) + '\n' : istio().envoyYaml(rc));
    return 0;
  }
  process.stdout.write(args.output === 'json' ? JSON.stringify(t.envoy, null, 2) + '\n' : istio().envoyYaml(t.envoy));
  return 0;
}

/** Every HCM's inline route_config in the generated bootstrap, in listener order. */
function routeConfigs(envoy: Record<string, unknown>): { name: string }[] {
  const out: { name: string }[] = [];
  const sr = envoy.static_resources as { listeners?: { filter_chains?: { filters?: { typed_config?: { route_config?: { name: string } } }[] }[] }[] };
  for (const l of sr.listeners ?? []) for (const c of l.filter_chains ?? []) for (const f of c.filters ?? []) if (f.typed_config?.route_config) out.push(f.typed_config.route_config);
  return out;
}

/** Runs the proxy from Istio files; every edit is re-translated and applied live (or refused whole). */
export async function runIstioProxy(argv: readonly string[]): Promise<number> {
  const args = parseIstioArgs(argv);
  const log = new Logger(isLevel(args.logLevel) ? args.logLevel : 'info', 'keel');
  let t: IstioTranslation;
  try {
    t = istio().translateIstioFiles(args.files, args.opts);
  } catch (e) {
    if (e instanceof istio().IstioConfigError) {
      for (const w of e.warnings) log.warn(w);
      process.stderr.write(e.format() + '\n');
      return 1;
    }
    throw e;
  }
  for (const w of t.warnings) log.warn(w);
  const server = new KeelServer(t.bootstrap, { log, drainTimeMs: args.drainTimeS * 1000 });
  const ports = await server.start();
  for (const [name, port] of ports) log.info(`listener '${name}' serving on port ${port}`);
  if (server.admin) log.info(`admin on port ${server.admin.port}`);
  let watcher: IstioFileWatcher | undefined;
  if (args.watch) {
    watcher = new (istio().IstioFileWatcher)(args.files, args.dirs, () => {
      try {
        const next = parseIstioArgs(argv); // a -f directory may have new files
        const nt = istio().translateIstioFiles(next.files, next.opts);
        for (const w of nt.warnings) log.warn(w);
        server.applyBootstrap(nt.bootstrap);
        log.info(`applied the edited Istio config (${nt.resources.length} resources)`);
      } catch (e) {
        // never crash on an edit: a vanished file (UsageError) or bad config leaves the running config alone
        const detail = e instanceof istio().IstioConfigError ? e.format() : (e as Error).message;
        log.error(`the edited Istio config is refused; the last good one keeps serving:\n${detail}`);
      }
    });
    log.info(`watching ${args.files.length} file(s) for changes`);
  }
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      log.info(`${sig}: draining (up to ${args.drainTimeS}s), then exiting`);
      watcher?.close();
      void server.stop().then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}
