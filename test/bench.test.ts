import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const BENCH = path.join(__dirname, '..', 'bench', 'bench.js');

test('bench --scaling: local, the ceiling and ratio 3 for each worker count, in one JSON object; a missing anchor is a reason', () => {
  const r = spawnSync(process.execPath, [BENCH, '--scaling', '1,2', '--steps', '50', '--repeats', '1', '--anchor', '/nonexistent/torch_gan.py'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  for (const key of ['workers1', 'workers2']) {
    assert.ok(report.local[key].msPerStep > 0 && report.sharedMemoryCeiling[key].msPerStep > 0, key);
    assert.equal(report.repeats.localMsPerStep[key].length, 1);
  }
  assert.equal(report.local.workers2.workers, 2);
  const { local, ratios } = report;
  assert.equal(ratios.scaling.workers1, 1);
  assert.ok(Math.abs(ratios.scaling.workers2 - local.workers2.imagesPerSecond / (2 * local.workers1.imagesPerSecond)) < 1e-3, JSON.stringify(ratios));
  assert.ok(Math.abs(ratios.distributedOverhead - local.workers1.imagesPerSecond / report.inProcess.imagesPerSecond) < 1e-3);
  assert.equal(report.torch, null);
  assert.match(report.torchReason, /anchor script not found at \/nonexistent/);
  assert.equal(ratios.torchDdpScaling, null);
  // Each figure is printed as it comes, so a run cut short still shows what it measured.
  assert.match(r.stderr, /bench: local --workers 2: [\d.]+ ms\/step/);
});

test('the bench refuses a bad command line before running anything: unknown options, steps off the warm-up, counts not starting with 1', () => {
  for (const [args, why] of [
    [['--scalling', '1,2'], /Unknown option '--scalling'/],
    [['--steps', '75'], /--steps takes a whole number of at least 1, a multiple of 50; got "75"/],
    [['--scaling', '2,4'], /--scaling takes worker counts that start with 1/],
  ] as const) {
    const r = spawnSync(process.execPath, [BENCH, ...args], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, why);
    assert.match(r.stderr, /Usage: npm run bench/);
    assert.equal(r.stdout, '');
  }
  const help = spawnSync(process.execPath, [BENCH, '--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /--scaling LIST/);
});
