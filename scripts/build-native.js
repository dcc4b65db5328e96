#!/usr/bin/env node
// Builds keel's optional N-API addon (native/ -> native/build/Release/keel_native.node) with the
// node-gyp from node_modules. Run by `npm run build` after tsc, and so by `npm ci` via prepare.
// On success it prints one line; on any failure (no compiler, no python, no headers, a load error)
// it prints ONE line `keel: native addon not built (<reason>); running on the TypeScript twins`,
// keeps the full node-gyp output in native/build/keel-build.log, and exits 0.
// KEEL_NATIVE=0 skips the build. KEEL_NATIVE_VERBOSE=1 streams node-gyp's output.
// Must not: exit non-zero because the addon could not be built (a missing compiler must never
// break `npm ci`), download anything itself, or write outside native/build/.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const ROOT = path.resolve(__dirname, '..');
const NATIVE_DIR = path.join(ROOT, 'native');
const BUILD_DIR = path.join(NATIVE_DIR, 'build');
const ADDON = path.join(BUILD_DIR, 'Release', 'keel_native.node');
const LOG = path.join(BUILD_DIR, 'keel-build.log');
const EXPECTED_ABI = 4; // must match kAbiVersion in native/src/addon.cc
const TIMEOUT_MS = 10 * 60 * 1000;

function rel(p) {
  return path.relative(ROOT, p) || '.';
}

function fallback(reason) {
  console.log(`keel: native addon not built (${reason}); running on the TypeScript twins`);
  process.exit(0);
}

/** The first line of node-gyp/make/compiler output that says why the build failed. */
function reasonFrom(output, status) {
  const lines = output.split(/\r?\n/);
  const find = (re) => {
    for (const line of lines) {
      const m = re.exec(line);
      if (m) return m;
    }
    return null;
  };
  let m = find(/make(?:\[\d+\])?: (\S+): (?:No such file or directory|Command not found)/i);
  if (m) {
    const tool = m[1];
    return /(?:^|[/-])(?:g\+\+|c\+\+|clang\+\+|clang|gcc|cc)(?:-[\d.]+)?$/.test(tool)
      ? `C++ compiler '${tool}' not found`
      : `build tool '${tool}' not found`;
  }
  m = find(/(?:^|\s)(\S+): (?:command )?not found$/i);
  if (m) return `'${m[1]}' not found`;
  m = find(/gyp ERR! find Python/);
  if (m) return 'node-gyp found no usable python3';
  m = find(/gyp ERR! .*(?:make|gmake).*not found|`make` (?:command )?not found|spawn make ENOENT/i);
  if (m) return "'make' not found";
  m = find(/fatal error: (.*)$/);
  if (m) return `compile error: ${m[1].trim()}`;
  m = find(/(?:^|\s)error: (.*)$/);
  if (m) return `compile error: ${m[1].trim()}`;
  m = find(/make(?:\[\d+\])?: \*\*\* \[[^\]]*?([\w./-]+\.o)\] Error \d+/);
  if (m) return `the C++ compiler (${process.env.CXX || 'g++'}) failed on ${path.basename(m[1], '.o')}.cc`;
  m = find(/gyp ERR! stack Error: (.*)$/);
  if (m) return m[1].replace(/`/g, "'").trim();
  return `node-gyp exited with ${status === null ? 'a signal' : `code ${status}`}`;
}

function nodeGypPath() {
  try {
    return require.resolve('node-gyp/bin/node-gyp.js', { paths: [ROOT] });
  } catch {
    return null;
  }
}

/** --nodedir for node-gyp when npm did not pass one: the headers beside this node, if present. */
function nodedirArgs() {
  if (process.env.npm_config_nodedir) return [];
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) return [`--nodedir=${prefix}`];
  return [];
}

function main() {
  if (process.env.KEEL_NATIVE === '0') fallback('KEEL_NATIVE=0');
  if (process.platform !== 'linux') fallback(`platform ${process.platform}: transparent capture is Linux-only`);

  const gyp = nodeGypPath();
  if (!gyp) fallback('node-gyp is not installed in node_modules');

  const verbose = process.env.KEEL_NATIVE_VERBOSE === '1';
  const args = [gyp, 'rebuild', '--jobs=max', ...nodedirArgs()];
  const result = spawnSync(process.execPath, args, {
    cwd: NATIVE_DIR,
    env: process.env,
    encoding: 'utf8',
    stdio: verbose ? 'inherit' : 'pipe',
    timeout: TIMEOUT_MS,
    maxBuffer: 64 * 1024 * 1024,
  });
  const output = `${result.stdout || ''}\n${result.stderr || ''}`;
  if (!verbose) {
    try {
      fs.mkdirSync(BUILD_DIR, { recursive: true });
      fs.writeFileSync(LOG, `$ node ${args.join(' ')}\n${output}`);
    } catch {
      // the log is a convenience; failing to write it must not fail the build
    }
  }
  const logNote = verbose ? '' : `; log: ${rel(LOG)}`;

  if (result.error) {
    const why = result.error.code === 'ETIMEDOUT' ? 'node-gyp timed out' : `could not run node-gyp: ${result.error.message}`;
    fallback(`${why}${logNote}`);
  }
  if (result.status !== 0) fallback(`${reasonFrom(output, result.status)}${logNote}`);
  if (!fs.existsSync(ADDON)) fallback(`node-gyp succeeded but ${rel(ADDON)} is missing${logNote}`);

  try {
    const addon = require(ADDON);
    if (addon.abiVersion !== EXPECTED_ABI) {
      fallback(`built addon has ABI ${String(addon.abiVersion)}, expected ${EXPECTED_ABI}`);
    }
  } catch (err) {
    fallback(`built but failed to load: ${String((err && err.message) || err).split('\n')[0]}`);
  }
  console.log(`keel: native addon built (${rel(ADDON)})`);
}

try {
  main();
} catch (err) {
  fallback(`build script error: ${String((err && err.message) || err).split('\n')[0]}`);
}
