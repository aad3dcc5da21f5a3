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
 * the signal: as the CLI loads yargs (after util/early-signals, before any stop handler), or at the first line
 * of its output that `at` matches, on any machine's speed. Not being pid 1 in truth, a signal that nothing keeps
 * or handles kills them (status null), which the assertions tell apart.
 */
function asPid1WithSignal(dir: string, signal: NodeJS.Signals, at: 'loading' | RegExp = 'loading'): string {
  const preload = path.join(dir, `pid1-${signal}-${at === 'loading' ? 'loading' : 'output'}.js`);
  const send = `process.kill(real, ${JSON.stringify(signal)})`;
  fs.writeFileSync(
    preload,
    `const real = process.pid;
    Object.defineProperty(process, 'pid', { value: 1 });
    let sent = false;
    ${
      at === 'loading'
        ? `const Module = require('node:module');
    const load = Module._load;
    Module._load = function (request) {
      if (request === 'yargs' && !sent) { sent = true; ${send}; }
      return load.apply(this, arguments);
    };`
        : `for (const stream of [process.stdout, process.stderr]) {
      const write = stream.write;
      stream.write = function (chunk) {
        const r = write.apply(this, arguments);
        if (!sent && ${at}.test(String(chunk))) { sent = true; ${send}; }
        return r;
      };
    }`
    }`,
  );
  return preload;
}

test('as pid 1, a coordinator given a SIGTERM while the CLI loads stops cleanly (the kernel dropped it, and the coordinator trained on until SIGKILL)', () => {
  const dir = tempDir('early-signal');
  const preload = asPid1WithSignal(dir, 'SIGTERM');
  const r = spawnSync(process.execPath, ['-r', preload, CLI, 'coordinator', '--port', '0', '--metrics-port', '-1', '--steps', '5', '--out', path.join(dir, 'run')], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `${r.signal ?? ''} ${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /SIGTERM received/);
});

test('as pid 1, generate and eval end on a SIGTERM that came while the CLI loaded, not after all their work', () => {
  const dir = tempDir('early-signal-commands');
  const preload = asPid1WithSignal(dir, 'SIGTERM');
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

test('as pid 1, generate and eval end at their next batch on a SIGTERM that comes while they work (dropped, it let them run to the end)', () => {
  const dir = tempDir('early-signal-working');
  const { ckpt } = untrainedCheckpoint(dir);
  const out = path.join(dir, 'x.npy');
  const generate = spawnSync(process.execPath, ['-r', asPid1WithSignal(dir, 'SIGTERM', /drawing: 10%/), CLI, 'generate', '--checkpoint', ckpt, '--count', '100000', '--backend', 'cpu', '--out', out], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(generate.status, 143, `${generate.signal ?? ''} ${generate.stdout}${generate.stderr}`);
  const [, drawn] = /SIGTERM received after (\d+) of 100000 samples: nothing written; exiting/.exec(generate.stdout) ?? assert.fail(generate.stdout);
  assert.ok(Number(drawn) >= 10_000 && Number(drawn) < 100_000, drawn);
  assert.equal(fs.existsSync(out), false);
  const evaluate = spawnSync(process.execPath, ['-r', asPid1WithSignal(dir, 'SIGTERM', /classifying the test set: 10%/), CLI, 'eval', '--checkpoint', ckpt, '--samples', '2', '--backend', 'cpu'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(evaluate.status, 143, `${evaluate.signal ?? ''} ${evaluate.stdout}${evaluate.stderr}`);
  assert.match(evaluate.stderr, /SIGTERM received while classifying the test set: no score; exiting/);
  assert.doesNotMatch(evaluate.stderr, /classifying the test set: 100%/);
  assert.equal(evaluate.stdout, '', 'no result');
});
