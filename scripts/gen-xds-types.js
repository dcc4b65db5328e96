#!/usr/bin/env node
// Generates TypeScript types for the xDS messages keel exchanges with istiod, from the Envoy protos
// that ship in @grpc/grpc-js-xds (deps/), with @grpc/proto-loader's generator. Output goes to
// src/xds/generated/ (git-ignored), before tsc runs; nothing outside src/xds/ imports it. Only the
// closure of the ADS service is generated (~130 files, about a second): resources inside Any are
// converted to JSON by src/xds/proto.ts and read by the config decoders, not by generated types.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const deps = path.dirname(require.resolve('@grpc/grpc-js-xds/package.json', { paths: [root] })) + '/deps';
const out = path.join(root, 'src/xds/generated');
const gen = require.resolve('@grpc/proto-loader/build/bin/proto-loader-gen-types.js', { paths: [root] });

fs.rmSync(out, { recursive: true, force: true });
const args = [
  gen,
  'envoy/service/discovery/v3/ads.proto',
  '--keepCase',
  '--longs=String',
  '--enums=String',
  '--defaults',
  '--oneofs',
  '--grpcLib=@grpc/grpc-js',
  `--outDir=${out}`,
  '-I',
  `${deps}/envoy-api`,
  `${deps}/xds`,
  `${deps}/googleapis`,
  `${deps}/protoc-gen-validate`,
];
try {
  execFileSync(process.execPath, args, { stdio: 'pipe' });
} catch (e) {
  process.stderr.write(`keel: generating xDS types failed:\n${e.stderr || e.message}\n`);
  process.exit(1);
}
