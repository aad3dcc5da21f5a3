import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import assert from 'node:assert/strict';
import { tempDir, untrainedCheckpoint } from './harness';
import { CLI } from './helpers';

/*
 * In a container the CLI is pid 1 (the images' entrypoint is node, without an init), and the kernel drops a
 * signal that pid 1 has no handler for. These runs take themselves for pid 1 through a preload, which also sends
 * the signal as the CLI loads yargs: after util/early-signals, before any stop handler, on any machine's speed.
 * Not being pid 1 in truth, a signal that nothing keeps kills them (status null), which the assertions tell apart.
 */
function asPid1WithSignalWhileLoading(dir: string, signal: NodeJS.Signals): string {
  const preload = path.join(dir, 'pid1.js');
  fs.writeFileSync(
    preload,
    `const real = process.pid;
    Object.defineProperty(process, 'pid', { value: 1 });
    const Module = require('node:module');
    const load = Module._load;
    let sent = false;
    Module._load = function (request) {
      if (request === 'yargs' && !sent) { sent = true; process.kill(real, ${JSON.stringify(signal)}); }
      return load.apply(this, arguments);
    };`,
  );
  return preload;
}

test('as pid 1, a coordinator given a SIGTERM while the CLI loads stops cleanly (the kernel dropped it, and the coordinator trained on until SIGKILL)', () => {
  const dir = tempDir('early-signal');
  const preload = asPid1WithSignalWhileLoading(dir, 'SIGTERM');
  const r = spawnSync(process.execPath, ['-r', preload, CLI, 'coordinator', '--port', '0', '--metrics-port', '-1', '--steps', '5', '--out', path.join(dir, 'run')], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `${r.signal ?? ''} ${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /SIGTERM received/);
});

test('as pid 1, generate and eval (no stop handler) end on a SIGTERM that came while the CLI loaded, not after all their work', () => {
  const dir = tempDir('early-signal-commands');
  const preload = asPid1WithSignalWhileLoading(dir, 'SIGTERM');
  const { ckpt } = untrainedCheckpoint(dir);
  const out = path.join(dir, 'x.npy');
  const generate = spawnSync(process.execPath, ['-r', preload, CLI, 'generate', '--checkpoint', ckpt, '--count', '7', '--backend', 'cpu', '--out', out], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(generate.status, 143, generate.stdout + generate.stderr);
  assert.doesNotMatch(generate.stdout, /received while writing/);
  assert.equal(fs.existsSync(out), false, 'ended before its samples were written');
  const evaluate = spawnSync(process.execPath, ['-r', preload, CLI, 'eval', '--checkpoint', ckpt, '--samples', '2', '--backend', 'cpu'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(evaluate.status, 143, evaluate.stdout + evaluate.stderr);
  assert.equal(evaluate.stdout, '', 'no result');
});
