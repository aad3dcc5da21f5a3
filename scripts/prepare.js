#!/usr/bin/env node
// npm's "prepare" (`npm install`/`npm ci` of a checkout, `npm pack`): compiles src/ to dist/. TypeScript is a
// devDependency, so an install with --omit=dev has no tsc: a bare `tsc -p` would fail it with
// `sh: 1: tsc: not found` (exit 127) after every runtime dependency and the native kernels were installed.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
try {
  require.resolve('typescript/package.json', { paths: [root] });
} catch {
  if (fs.existsSync(path.join(root, 'dist', 'src', 'cli.js'))) {
    console.log('ganfleet: TypeScript is not installed (--omit=dev): dist/ is kept as it is, not rebuilt from src/');
    process.exit(0);
  }
  console.error('ganfleet: TypeScript is not installed (--omit=dev) and there is no dist/ to run: install with devDependencies (npm ci), or build dist/ with them and copy it here');
  process.exit(1);
}
const r = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc', { paths: [root] }), '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit' });
process.exit(r.status ?? 1);
