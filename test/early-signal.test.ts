import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';
import assert from 'node:assert/strict';

const CLI = path.join(__dirname, '..', 'src', 'cli.js');
// As in a container: the CLI is pid 1 of its pid namespace, where the kernel drops a signal with no handler.
const canUnshare = process.getuid?.() === 0 && spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true']).status === 0;

test('a SIGTERM to a pid-1 coordinator while the CLI loads stops it', { skip: !canUnshare && 'needs root and unshare --pid' }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'ganfleet-early-'));
  const child = spawn('unshare', ['--pid', '--fork', '--mount-proc', process.execPath, CLI, 'coordinator', '--port', '0', '--metrics-port', '-1', '--steps', '5', '--out', path.join(out, 'run')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  // The node process, pid 1 inside: unshare's child.
  let pid = 0;
  for (let i = 0; i < 200 && !pid; i++) {
    await new Promise((r) => setTimeout(r, 5));
    try {
      pid = Number(fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/)[0]) || 0;
    } catch {
      /* not yet */
    }
  }
  assert.ok(pid > 0, 'no child of unshare');
  // Past node's own start (no JS runs before it), well before its stop handlers (the CLI loads yargs, then TensorFlow.js).
  await new Promise((r) => setTimeout(r, 200));
  process.kill(pid, 'SIGTERM');
  const timer = setTimeout(() => process.kill(pid, 'SIGKILL'), 15_000);
  const code = await exited;
  clearTimeout(timer);
  fs.rmSync(out, { recursive: true, force: true });
  assert.equal(code, 0, `still running 15 s after SIGTERM (killed), or failed:\n${log}`);
});
