import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PNG } from 'pngjs';
import { decodeCheckpoint } from '../src/coordinator/checkpoint';
import { createModel } from '../src/model';
import { CLI, metricValue } from './helpers';
import { tempDir } from './harness';

/** Runs the CLI to completion; its exit code and everything it printed. */
async function runCli(args: string[]): Promise<{ code: unknown; log: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  return { code: await new Promise((r) => child.on('exit', r)), log };
}

test('ganfleet local --workers 2 trains on real MNIST, writes grids and serves rising metrics', { timeout: 120_000 }, async () => {
  const out = tempDir('e2e');
  const child = spawn(
    process.execPath,
    [CLI, 'local', '--workers', '2', '--steps', '80', '--sample-every', '40', '--log-every', '20', '--metrics-port', '0', '--seed', '3', '--out', out],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stdout += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));

  // Scrape /metrics while the run is going.
  const steps: number[] = [];
  let metricsText = '';
  let running = true;
  void exited.then(() => (running = false));
  while (running) {
    const url = /metrics on (http:\/\/\S+\/metrics)/.exec(stdout)?.[1];
    if (url) {
      try {
        metricsText = await (await fetch(url)).text();
        const v = metricValue(metricsText, 'ganfleet_steps_total');
        if (v !== undefined) steps.push(v);
      } catch {
        // the server closes when the run ends
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const code = await exited;
  assert.equal(code, 0, `exit code ${code}\n${stdout}`);

  const distinct = [...new Set(steps)];
  assert.ok(distinct.length >= 3, `steps counter seen as ${distinct.join(',')}`);
  for (let i = 1; i < steps.length; i++) assert.ok(steps[i] >= steps[i - 1], 'the step counter never goes down');
  assert.ok(distinct.some((s) => s > 0 && s < 80), 'scraped mid-run');
  for (const name of ['ganfleet_workers_connected', 'ganfleet_images_total', 'ganfleet_d_loss', 'ganfleet_sent_bytes_total', 'ganfleet_process_resident_memory_bytes']) {
    // A sample with a value, not only the # HELP line that a series never set still has.
    const sample = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(metricsText);
    assert.ok(sample && Number.isFinite(Number(sample[1])), `${name} exported with a value`);
  }
  assert.match(metricsText, /ganfleet_round_duration_seconds_bucket\{le="[^"]+",phase="discriminator"\}/);
  assert.match(metricsText, /ganfleet_worker_compute_seconds_total\{worker="w\d"\}/);

  for (const step of ['000040', '000080']) {
    const png = PNG.sync.read(fs.readFileSync(path.join(out, 'samples', `step-${step}.png`)));
    assert.equal(png.width, 152);
    assert.equal(png.height, 152);
  }
  const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  assert.equal(summary.steps, 80);
  for (const k of ['dLoss', 'gLoss', 'dReal', 'dFake']) assert.ok(Number.isFinite(summary.last[k]), `${k} finite`);
  assert.equal(summary.last.workers, 2);
  assert.ok(fs.statSync(path.join(out, 'generator', 'weights.bin')).size === 114064 * 4);
  assert.match(stdout, /step 80\/80 d_loss=\d/);
  assert.match(stdout, /shard plan 1: w1=30000 w2=30000/);
  fs.rmSync(out, { recursive: true, force: true });
});

test('--loss lsgan trains end to end through the same workers', { timeout: 60_000 }, async () => {
  const out = tempDir('lsgan');
  const { code, log } = await runCli(['local', '--workers', '2', '--loss', 'lsgan', '--steps', '40', '--log-every', '20', '--sample-every', '40', '--metrics-port', '-1', '--out', out]);
  assert.equal(code, 0, log);
  assert.match(log, /joined as w\d: model mlp, loss lsgan/);
  const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  assert.equal(summary.steps, 40);
  for (const k of ['dLoss', 'gLoss', 'dReal', 'dFake']) assert.ok(Number.isFinite(summary.last[k]), `${k} finite`);
  // Least squares: D's loss is bounded by how far its scores are from the 0/1 targets, far below BCE's start.
  assert.ok(summary.last.dLoss < 0.5, `d_loss ${summary.last.dLoss}`);
  fs.rmSync(out, { recursive: true, force: true });
});

test('--model dcgan trains through the same workers; BatchNorm statistics reach the coordinator; --eval-every scores it', { timeout: 180_000 }, async () => {
  const out = tempDir('dcgan');
  const args = ['local', '--workers', '2', '--model', 'dcgan', '--steps', '6', '--batch-size', '16', '--log-every', '3', '--sample-every', '3', '--eval-every', '3', '--eval-samples', '200', '--metrics-port', '-1', '--out', out];
  const { code, log } = await runCli(args);
  assert.equal(code, 0, log);
  assert.match(log, /joined as w\d: model dcgan, loss bce/);
  assert.match(log, /eval step 3: fid=\d+\.\d+ mnist_score=\d/);
  const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  assert.equal(summary.steps, 6);
  assert.deepEqual(summary.evaluations.map((e: { step: number }) => e.step), [3, 6]);
  for (const e of summary.evaluations) assert.ok(Number.isFinite(e.fid) && e.fid > 0 && e.mnistScore >= 1, JSON.stringify(e));
  const model = createModel('dcgan');
  assert.equal(fs.statSync(path.join(out, 'generator', 'weights.bin')).size, model.generatorLayout.size * 4);
  // The moving statistics moved from their initial 0 (means) and 1 (variances): the workers' batch statistics arrived.
  const file = path.join(out, 'checkpoints', fs.readdirSync(path.join(out, 'checkpoints')).sort().pop()!);
  const ckpt = decodeCheckpoint(fs.readFileSync(file), file);
  for (const e of model.generatorLayout.statistics) {
    const v = ckpt.generator.subarray(e.offset, e.offset + e.size);
    const moved = e.name.endsWith('variance') ? v.some((x) => Math.abs(x - 1) > 1e-3) : v.some((x) => x !== 0);
    assert.ok(v.every((x) => Number.isFinite(x)) && moved, `${e.name} never updated: ${v.slice(0, 4)}`);
  }
  fs.rmSync(out, { recursive: true, force: true });
});

test('--wire-dtype float16 and bfloat16 halve the gradient bytes and train like float32', { timeout: 180_000 }, async () => {
  // One worker: the run is deterministic, so the three runs differ only by the wire's rounding.
  const run = async (dtype: string) => {
    const out = tempDir(`wire-${dtype}`);
    const args = ['local', '--workers', '1', '--steps', '150', '--log-every', '150', '--sample-every', '150', '--eval-every', '150', '--eval-samples', '1000', '--metrics-port', '-1', '--wire-dtype', dtype, '--out', out];
    const { code, log } = await runCli(args);
    assert.equal(code, 0, log);
    const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
    fs.rmSync(out, { recursive: true, force: true });
    return summary;
  };
  const wide = await run('float32');
  for (const dtype of ['float16', 'bfloat16']) {
    const narrow = await run(dtype);
    // The envelope (field names, the mailbox's notices) does not halve: a few hundred bytes a step.
    assert.ok(Math.abs(narrow.bytesReceivedPerStep - wide.bytesReceivedPerStep / 2) < 500, `${dtype}: ${narrow.bytesReceivedPerStep} bytes from the worker per step vs ${wide.bytesReceivedPerStep}`);
    for (const k of ['dLoss', 'gLoss', 'dReal', 'dFake']) {
      assert.ok(Math.abs(narrow.last[k] - wide.last[k]) < 0.05, `${dtype} ${k}: ${narrow.last[k]} vs float32 ${wide.last[k]}`);
    }
    const [fid, fid32] = [narrow.evaluations[0].fid, wide.evaluations[0].fid];
    assert.ok(Math.abs(fid - fid32) < 0.05 * fid32, `${dtype} FID ${fid} vs float32 ${fid32}`);
  }
});
