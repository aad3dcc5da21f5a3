import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LEASE_FILE, OutputClaim } from '../src/coordinator/output-claim';
import { GanfleetError } from '../src/util/errors';

const FAST = { refreshMs: 50, staleMs: 400 };

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'ganfleet-claim-'));
}

function rejectsWith(code: string, pattern: RegExp) {
  return (e: unknown) => e instanceof GanfleetError && e.code === code && pattern.test(e.message);
}

/** A lease as another coordinator writes it. */
function plantLease(out: string, holder: { pid: number; hostname: string; token?: string }, ageMs = 0): string {
  fs.mkdirSync(out, { recursive: true });
  const file = path.join(out, LEASE_FILE);
  fs.writeFileSync(file, JSON.stringify({ token: 'theirs', since: '2026-11-29T00:00:00.000Z', ...holder }) + '\n');
  const then = new Date(Date.now() - ageMs);
  fs.utimesSync(file, then, then);
  return file;
}

const noLost = (why: string) => assert.fail(`lost the lease: ${why}`);

test('a claim makes the run directories and a lease naming this process; release takes the lease and the directories still empty', async () => {
  const root = tempDir();
  const out = path.join(root, 'runs', 'a');
  const claim = await OutputClaim.take(out, () => {}, noLost, FAST);
  for (const d of ['checkpoints', 'generator', 'samples']) assert.ok(fs.statSync(path.join(out, d)).isDirectory(), d);
  const lease = JSON.parse(fs.readFileSync(path.join(out, LEASE_FILE), 'utf8'));
  assert.equal(lease.pid, process.pid);
  assert.equal(lease.hostname, os.hostname());
  fs.writeFileSync(path.join(out, 'checkpoints', 'ckpt-000000001.bin'), 'x');
  claim.release();
  assert.ok(!fs.existsSync(path.join(out, LEASE_FILE)));
  assert.deepEqual(fs.readdirSync(out), ['checkpoints'], 'what holds a file stays; what is empty and was made goes');
  // Nothing written: nothing left, the parents it made included.
  (await OutputClaim.take(path.join(root, 'b', 'c'), () => {}, noLost, FAST)).release();
  assert.ok(!fs.existsSync(path.join(root, 'b')));
  fs.rmSync(root, { recursive: true, force: true });
});

test('an --out that cannot hold the outputs is refused with OUT_UNUSABLE, and leaves nothing made', async () => {
  const root = tempDir();
  const file = path.join(root, 'file');
  fs.writeFileSync(file, 'x');
  await assert.rejects(OutputClaim.take(path.join(file, 'run'), () => {}, noLost, FAST), rejectsWith('OUT_UNUSABLE', /ENOTDIR/));
  await assert.rejects(OutputClaim.take(file, () => {}, noLost, FAST), rejectsWith('OUT_UNUSABLE', /is not a directory/));
  const out = path.join(root, 'run');
  fs.mkdirSync(out);
  fs.writeFileSync(path.join(out, 'samples'), 'x');
  await assert.rejects(OutputClaim.take(out, () => {}, noLost, FAST), rejectsWith('OUT_UNUSABLE', /samples is not a directory/));
  assert.deepEqual(fs.readdirSync(out), ['samples'], 'the directories made before the failure are gone again');
  fs.rmSync(root, { recursive: true, force: true });
});

test('a second claim on an --out held by a live process is refused; a lease whose holder on this host is gone is taken over', async () => {
  const root = tempDir();
  const out = path.join(root, 'run');
  const first = await OutputClaim.take(out, () => {}, noLost, FAST);
  await assert.rejects(OutputClaim.take(out, () => {}, noLost, FAST), rejectsWith('OUT_IN_USE', new RegExp(`in use by another coordinator \\(pid ${process.pid} on ${os.hostname()}`)));
  first.release();
  const gone = spawnSync(process.execPath, ['-e', '']).pid!;
  plantLease(out, { pid: gone, hostname: os.hostname() });
  const lines: string[] = [];
  const claim = await OutputClaim.take(out, (l) => lines.push(l), noLost, FAST);
  assert.match(lines.join('\n'), new RegExp(`took over the lease on --out .* from pid ${gone} on .*: pid ${gone} is gone`));
  claim.release();
  // This pid, another token: an earlier process of this container (a restarted one is pid 1 again).
  plantLease(out, { pid: process.pid, hostname: os.hostname() });
  lines.length = 0;
  (await OutputClaim.take(out, (l) => lines.push(l), noLost, FAST)).release();
  assert.match(lines.join('\n'), new RegExp(`took over .*: pid ${process.pid} was an earlier process`));
  fs.rmSync(root, { recursive: true, force: true });
});

test('a lease from another host is waited on: taken once untouched for the stale time, refused while its holder touches it', async () => {
  const root = tempDir();
  const out = path.join(root, 'run');
  const elsewhere = { pid: 1, hostname: 'another-host' };
  // Long untouched: taken at once.
  plantLease(out, elsewhere, 60_000);
  let lines: string[] = [];
  (await OutputClaim.take(out, (l) => lines.push(l), noLost, FAST)).release();
  assert.match(lines.join('\n'), /took over .* from pid 1 on another-host, .*: untouched for 60\.\d s/);
  assert.doesNotMatch(lines.join('\n'), /waiting/);
  // Fresh, and no longer touched (its holder died): taken after the wait.
  plantLease(out, elsewhere);
  lines = [];
  const t0 = Date.now();
  (await OutputClaim.take(out, (l) => lines.push(l), noLost, FAST)).release();
  assert.ok(Date.now() - t0 >= FAST.staleMs - 50, `${Date.now() - t0} ms`);
  assert.match(lines.join('\n'), /has a lease of pid 1 on another-host.*waiting 0\.\d s to see whether its holder is alive[\s\S]*took over/);
  // Fresh and touched: its holder is alive.
  const file = plantLease(out, elsewhere);
  const toucher = setInterval(() => fs.utimesSync(file, new Date(), new Date()), FAST.refreshMs);
  try {
    await assert.rejects(OutputClaim.take(out, () => {}, noLost, FAST), rejectsWith('OUT_IN_USE', /pid 1 on another-host/));
  } finally {
    clearInterval(toucher);
  }
  fs.rmSync(root, { recursive: true, force: true });
});

test('a holder whose lease another coordinator took over is told so, and its release leaves the new lease alone', async () => {
  const root = tempDir();
  const out = path.join(root, 'run');
  let lost: string | null = null;
  const claim = await OutputClaim.take(out, () => {}, (why) => (lost = why), FAST);
  const file = plantLease(out, { pid: 1, hostname: 'another-host' });
  for (let i = 0; i < 100 && lost === null; i++) await new Promise((r) => setTimeout(r, 10));
  assert.match(String(lost), /another coordinator \(pid 1 on another-host, .*\) took over the lease on --out/);
  claim.release();
  assert.equal(JSON.parse(fs.readFileSync(file, 'utf8')).token, 'theirs');
  fs.rmSync(root, { recursive: true, force: true });
});
