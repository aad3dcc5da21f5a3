import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tf } from '../src/model/tf';
import { tempDir } from './harness';

/**
 * selectBackend in a child whose NODE_PATH holds stand-ins for the optional
 * native packages (they cannot be installed here): what it picks, and the
 * notes that say why it skipped the others.
 */
function select(choice: string, packages: Record<string, { version: string; index: string }>): { status: number | null; out: string } {
  const dir = tempDir('native-stand-ins');
  for (const [name, p] of Object.entries(packages)) {
    const at = path.join(dir, ...name.split('/'));
    fs.mkdirSync(at, { recursive: true });
    fs.writeFileSync(path.join(at, 'package.json'), JSON.stringify({ name, version: p.version, main: 'index.js' }));
    fs.writeFileSync(path.join(at, 'index.js'), p.index);
  }
  const backend = path.join(__dirname, '..', 'src', 'backend');
  const script = `require(${JSON.stringify(backend)}).selectBackend(${JSON.stringify(choice)}).then((r) => console.log(JSON.stringify(r)), (e) => { console.log(e.message); process.exit(1); })`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_PATH: dir } });
  fs.rmSync(dir, { recursive: true, force: true });
  return { status: r.status, out: r.stdout + r.stderr };
}

test('--backend auto skips a native package that loads but registers no backend here (a second tfjs-core), saying so, and falls back to wasm', () => {
  const empty = { version: tf.version_core, index: 'module.exports = {};' };
  const auto = select('auto', { '@tensorflow/tfjs-node-gpu': empty, '@tensorflow/tfjs-node': { version: '0.0.1', index: '' } });
  assert.equal(auto.status, 0, auto.out);
  const chosen = JSON.parse(auto.out);
  assert.equal(chosen.name, 'wasm');
  assert.match(chosen.notes[0], /skipped @tensorflow\/tfjs-node-gpu loaded, but its tensorflow backend did not start here \(Backend name 'tensorflow' not found in registry; is a second copy of @tensorflow\/tfjs-core installed beside it\?\)/);
  assert.match(chosen.notes[1], new RegExp(`skipped @tensorflow/tfjs-node@0\\.0\\.1 does not match @tensorflow/tfjs-core@${tf.version_core.replace(/\./g, '\\.')}; run npm i @tensorflow/tfjs-node@`));
  const strict = select('tensorflow', { '@tensorflow/tfjs-node-gpu': empty });
  assert.equal(strict.status, 1, strict.out);
  assert.match(strict.out, /--backend tensorflow: no native backend could be loaded \(.*loaded, but its tensorflow backend did not start here/);
  const broken = select('auto', { '@tensorflow/tfjs-node-gpu': { version: tf.version_core, index: "throw new Error('libcudart.so.11.0: cannot open shared object file');" } });
  assert.match(JSON.parse(broken.out).notes[0], /failed to load: libcudart\.so\.11\.0: cannot open shared object file/);
});
