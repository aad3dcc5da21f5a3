import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI } from './helpers';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function startLocal(out: string): { child: ChildProcess; log: () => string; workerPids: () => number[] } {
  const child = spawn(process.execPath, [CLI, 'local', '--workers', '2', '--steps', '100000', '--log-every', '10', '--metrics-port', '-1', '--out', out], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  return { child, log: () => log, workerPids: () => [...log.matchAll(/pid (\d+), backend/g)].map((m) => Number(m[1])) };
}

test('SIGINT stops a local run cleanly: outputs written, exit 0, no worker left', { timeout: 60_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'ganfleet-sigint-'));
  const run = startLocal(out);
  await waitFor(() => /step 10\/100000/.test(run.log()), 30_000, 'training to start');
  const pids = run.workerPids();
  assert.equal(pids.length, 2);
  run.child.kill('SIGINT');
  const code = await new Promise((r) => run.child.on('exit', r));
  assert.equal(code, 0, run.log());
  assert.match(run.log(), /SIGINT received/);
  const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  assert.ok(summary.steps >= 10 && summary.steps < 100000);
  assert.ok(fs.existsSync(path.join(out, 'samples', `step-${String(summary.steps).padStart(6, '0')}.png`)), 'final grid written');
  await waitFor(() => pids.every((p) => !alive(p)), 10_000, 'worker processes to exit');
  fs.rmSync(out, { recursive: true, force: true });
});

test('workers exit by themselves when the local parent is SIGKILLed', { timeout: 60_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'ganfleet-sigkill-'));
  const run = startLocal(out);
  await waitFor(() => /step 10\/100000/.test(run.log()), 30_000, 'training to start');
  const pids = run.workerPids();
  run.child.kill('SIGKILL');
  await waitFor(() => pids.every((p) => !alive(p)), 15_000, 'orphaned workers to exit');
  fs.rmSync(out, { recursive: true, force: true });
});

test('--no-native reaches the workers local starts: they run on XNNPACK and say so', { timeout: 60_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'ganfleet-nonative-'));
  const child = spawn(process.execPath, [CLI, 'local', '--workers', '1', '--steps', '5', '--backend', 'wasm', '--no-native', '--metrics-port', '-1', '--out', out], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  const code = await new Promise((r) => child.on('exit', r));
  assert.equal(code, 0, log);
  assert.match(log, /\[worker local-1\] backend wasm \(native matmul off \(--no-native\); using XNNPACK; using wasm\)/);
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8')).steps, 5);
  fs.rmSync(out, { recursive: true, force: true });
});
