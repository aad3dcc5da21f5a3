#!/usr/bin/env node
// Builds native/ (ganfleet's matrix product for the wasm backend) with the
// node-gyp that npm ships. Runs on `npm install`/`npm ci`. A failed build
// never fails the install: ganfleet then keeps the wasm backend's own
// matmul (XNNPACK) and says so in its backend line.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const nativeDir = path.join(__dirname, '..', 'native');
if (process.env.GANFLEET_SKIP_NATIVE === '1') {
  console.log('ganfleet: GANFLEET_SKIP_NATIVE=1, not building the native matmul');
  process.exit(0);
}
const nodeGyp = process.env.npm_config_node_gyp;
if (!nodeGyp) {
  console.warn('ganfleet: not run by npm (no npm_config_node_gyp); build the native matmul with `npm run build:native`');
  process.exit(0);
}
// This Node's own headers where it ships them (official builds and Debian do),
// so node-gyp need not download them: installs may have no internet.
const args = [nodeGyp, 'rebuild', '--directory', nativeDir];
const prefix = path.dirname(path.dirname(process.execPath));
if (!process.env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
if (r.status !== 0) {
  console.warn('ganfleet: the native matmul did not build (see above; it needs python3, make and a C compiler).');
  console.warn('ganfleet: training still works on the wasm backend\'s own matmul, 3-4x slower per step for the MLP, about 2x for the DCGAN.');
}
process.exit(0);
