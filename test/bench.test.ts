import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sleep, tempDir } from './harness';
import { inProcess, median, memoryGrowth, MemoryReading, memoryReport, ratioAcrossRepeats, timedMsPerStep } from '../bench/bench';
import { stepCountingClock } from './helpers';
import { lostWorkerLine } from '../bench/children';
import { openblasCoreFor } from '../bench/openblas';

const BENCH = path.join(__dirname, '..', 'bench', 'bench.js');

/**
 * Stands in for a python3 with torch: answers the bench's probe, and prints
 * the anchor's last line with a step that grows with the DDP world (4 + world
 * ms), and 4 ms for ganfleet's step (bench/torch_matched.py), so the expected
 * ratios are known exactly.
 */
function fakeTorch(ddpFails = false): string {
  const file = path.join(tempDir('fake-torch'), 'python3');
  fs.writeFileSync(
    file,
    `#!/bin/sh
[ "$1" = "-c" ] && exit 0
world=1; prev=""
for a in "$@"; do [ "$prev" = "--world" ] && world=$a; prev=$a; done
${ddpFails ? '[ "$world" != 1 ] && { echo "RuntimeError: Address already in use (port 29517)" >&2; exit 1; }' : ''}
ms=$((4 + world))
case "$1" in *torch_matched.py) ms=4 ;; esac
echo "{\\"anchor\\":\\"fake\\",\\"world\\":$world,\\"ms_per_step\\":$ms,\\"images_per_s\\":$((128000 * world / ms))}"
`,
    { mode: 0o755 },
  );
  return file;
}

test('bench --scaling: local, the ceiling, PyTorch DDP and their ratios for each worker count, in one JSON object', () => {
  const python = fakeTorch();
  const r = spawnSync(process.execPath, [BENCH, '--scaling', '1,2', '--steps', '50', '--repeats', '1', '--python', python, '--anchor', python], { encoding: 'utf8', timeout: 360_000 });
  fs.rmSync(path.dirname(python), { recursive: true, force: true });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  for (const key of ['workers1', 'workers2']) {
    assert.ok(report.local[key].msPerStep > 0 && report.sharedMemoryCeiling[key].msPerStep > 0, key);
    assert.equal(report.repeats.localMsPerStep[key].length, 1);
  }
  assert.equal(report.local.workers2.workers, 2);
  assert.equal(report.sharedMemoryCeiling.workers2.workers, 2);
  const { local, sharedMemoryCeiling: ceiling, ratios } = report;
  const near = (a: number, b: number) => Math.abs(a - b) < 1e-3;
  assert.equal(ratios.scaling.workers1, 1);
  assert.ok(near(ratios.scaling.workers2, local.workers2.imagesPerSecond / (2 * local.workers1.imagesPerSecond)), JSON.stringify(ratios));
  assert.ok(near(ratios.scalingCeiling.workers2, ceiling.workers2.imagesPerSecond / (2 * ceiling.workers1.imagesPerSecond)), JSON.stringify(ratios));
  assert.ok(near(ratios.distributedOverhead, local.workers1.imagesPerSecond / report.inProcess.imagesPerSecond));
  // The fake anchor: one process 5 ms/step (25,600 images/s), DDP over 2 at 6 ms/step (42,666 images/s).
  assert.equal(report.torch.single.ms_per_step, 5);
  assert.equal(report.torch.ddp.world2.world, 2);
  assert.deepEqual(report.repeats.torchDdpMsPerStep, { world2: [6] });
  assert.ok(near(ratios.torchDdpScaling.world2, 42666 / (2 * 25600)), JSON.stringify(ratios));
  // Each figure is printed as it comes, so a run cut short still shows what it measured.
  assert.match(r.stderr, /bench: local --workers 2: [\d.]+ ms\/step/);
});

test('npm run bench: one JSON object with every #6 figure, the ratios from its own runs, wire bytes without the shard, memory peaks and a growth verdict', () => {
  const python = fakeTorch();
  const r = spawnSync(process.execPath, [BENCH, '--steps', '50', '--repeats', '1', '--memory-steps', '200', '--python', python, '--anchor', python], {
    encoding: 'utf8',
    timeout: 600_000,
    // OPENBLAS_CORETYPE left in the shell is the user's choice, which the bench keeps (bench/openblas.ts):
    // the fake python's "no core detected" is checked only without it.
    env: { ...process.env, GANFLEET_BATCH_SIZE: '64', OPENBLAS_CORETYPE: undefined },
  });
  fs.rmSync(path.dirname(python), { recursive: true, force: true });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  // The bench's runs ignore a GANFLEET_* setting left in the shell, and say so.
  // (CI's GANFLEET_EXPECT_NATIVE may be named beside it.)
  assert.match(r.stderr, /bench: ignoring (?:\S+, )*GANFLEET_BATCH_SIZE\b.*: every run takes its settings from the bench/);
  const { ratios, local, inProcess } = report;
  const near = (a: number, b: number) => Math.abs(a - b) < 2e-3;
  assert.ok(near(ratios.perWorkerMsVsTorch, inProcess.msPerStep / 5), JSON.stringify(ratios));
  // The anchor's network on ganfleet's step (bench/torch_matched.py; 4 ms in the fake).
  assert.ok(near(ratios.perWorkerMsVsTorchMatchedWork, inProcess.msPerStep / 4), JSON.stringify(ratios));
  assert.ok(near(ratios.perWorkerMsVsTorchWithoutNative, report.inProcessWithoutNative.msPerStep / 5), JSON.stringify(ratios));
  // Each ratio within each repeat, and its median.
  assert.deepEqual(report.repeats.ratios.distributedOverhead, [ratios.distributedOverhead]);
  assert.ok(near(ratios.distributedOverhead, local.workers1.imagesPerSecond / inProcess.imagesPerSecond), JSON.stringify(ratios));
  assert.ok(near(ratios.scaling2Workers, local.workers2.imagesPerSecond / (2 * local.workers1.imagesPerSecond)), JSON.stringify(ratios));
  // The timed steps of N workers carry N batches a step: counted as one, a run's ms/step would read N times too fast
  // against its whole run's (which only its slower warm-up steps make longer). Measured 0.79–0.87 of it, and counted
  // as one batch 0.22–0.41: the bound leaves room for warm-up steps up to 3× the timed ones on a loaded machine.
  for (const key of ['workers2', 'workers3', 'workers4']) assert.ok(local[key].msPerStep > 0.5 * local[key].wholeRunMsPerStep, JSON.stringify(local[key]));
  // Every other ratio, each against what it is said to divide.
  const { localNoMailbox: socket, sharedMemoryCeiling: ceiling } = report;
  assert.ok(near(ratios.scaling3Workers, local.workers3.imagesPerSecond / (3 * local.workers1.imagesPerSecond)), JSON.stringify(ratios));
  assert.ok(near(ratios.scaling4Workers, local.workers4.imagesPerSecond / (4 * local.workers1.imagesPerSecond)), JSON.stringify(ratios));
  assert.ok(near(ratios.distributedOverheadNoMailbox, socket.workers1.imagesPerSecond / inProcess.imagesPerSecond), JSON.stringify(ratios));
  assert.ok(near(ratios.scaling2WorkersNoMailbox, socket.workers2.imagesPerSecond / (2 * socket.workers1.imagesPerSecond)), JSON.stringify(ratios));
  assert.ok(near(ratios.distributedOverheadCeiling, ceiling.workers1.imagesPerSecond / inProcess.imagesPerSecond), JSON.stringify(ratios));
  assert.ok(near(ratios.scaling2WorkersCeiling, ceiling.workers2.imagesPerSecond / (2 * ceiling.workers1.imagesPerSecond)), JSON.stringify(ratios));
  assert.ok(near(ratios.scalingCeilingTwoProcesses, report.inProcessTwoAtOnce.imagesPerSecond / (2 * inProcess.imagesPerSecond)), JSON.stringify(ratios));
  // The fake anchor: one process 25,600 images/s, DDP over 2 at 42,666.
  assert.ok(near(ratios.torchDdpScaling2, 42666 / (2 * 25600)), JSON.stringify(ratios));
  assert.deepEqual(report.torch.openblasCore, { detected: null, used: null, env: {} }, 'the fake python prints no OpenBLAS core');
  // Target 4: G's and D's weights (114,064 + 100,609 values) as float32 to a worker, and their gradients back, D's in its
  // two halves, plus a few hundred bytes of framing; the shard and the join's networks apart.
  const { float32, float16, bfloat16 } = report.wireBytesPerStepPerWorker;
  const values = { toWorker: 114_064 + 100_609, fromWorker: 114_064 + 2 * 100_609 };
  for (const way of ['toWorker', 'fromWorker'] as const) {
    assert.ok(float32[way] >= 4 * values[way] && float32[way] < 4 * values[way] + 2000, JSON.stringify(float32));
    assert.ok(Math.abs(float16[way] / float32[way] - 0.5) < 0.01 && bfloat16[way] === float16[way], JSON.stringify(report.wireBytesPerStepPerWorker));
  }
  assert.ok(float32.atJoinToWorker > 47_000_000 && float32.atJoinToWorker < 49_000_000, JSON.stringify(float32));
  // Each worker of a run sends its own gradients, as one worker does: per worker, not the run's total.
  for (const key of ['workers1', 'workers2', 'workers3', 'workers4']) {
    assert.ok(Math.abs(local[key].wireBytesPerStepPerWorker.fromWorker / float32.fromWorker - 1) < 0.05, JSON.stringify(local[key]));
  }
  // Target 5: peaks to the end, at least every sample's, and a verdict, with mailboxes and without (remote workers' transport).
  for (const memory of [report.memory.mailbox, report.memory.noMailbox]) {
    assert.deepEqual(memory.mib.map((m: { step: number }) => m.step), Array.from({ length: 20 }, (_, i) => 10 * (i + 1)));
    for (const m of memory.mib) {
      assert.ok(memory.peakMiB.coordinator >= m.coordinator.peak, JSON.stringify(memory));
      m.workers.forEach((w: { peak: number }, i: number) => assert.ok(memory.peakMiB.workers[i] >= w.peak, JSON.stringify(memory)));
    }
    assert.equal(typeof memory.flat, 'boolean');
    assert.equal(memory.rssGrowthMiBPer1000Steps.workers.length, 2);
  }
  assert.equal(report.memory.flat, report.memory.mailbox.flat && report.memory.noMailbox.flat);
  assert.deepEqual(report.failedRuns, []);
});

test('bench --memory: the memory and CPU runs alone, with and without the mailboxes', () => {
  const r = spawnSync(process.execPath, [BENCH, '--memory', '--memory-steps', '100'], { encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  for (const run of [report.memory.mailbox, report.memory.noMailbox]) {
    assert.equal(run.steps, 100);
    assert.equal(run.mib.length, 20);
    assert.equal(typeof run.flat, 'boolean');
  }
  for (const cpu of [report.cpuMsPerStepLocal2.mailbox, report.cpuMsPerStepLocal2.noMailbox]) {
    assert.ok(cpu.coordinator > 0 && cpu.workers.length === 2, JSON.stringify(cpu));
  }
  assert.equal(report.ratios, undefined);
  assert.deepEqual(report.failedRuns, []);
});

test('each ratio is the median of its values within the repeats, and the median run the faster of the middle two', () => {
  // Two sides of one ratio in each repeat (images/s, say): 2, 3 and 10.
  const repeats = [{ a: 4, b: 2 }, { a: 30, b: 10 }, { a: 10, b: 1 }];
  const ratio = (r: { a: number; b: number | null }) => (r.b === null ? null : r.a / r.b);
  assert.deepEqual(ratioAcrossRepeats(repeats, ratio), { median: 3, each: [2, 3, 10] });
  // An even count: the mean of the middle two (3 and 10); a repeat with no value (no anchor) is left out.
  assert.deepEqual(ratioAcrossRepeats([...repeats, { a: 20, b: 1 }, { a: 1, b: null }], ratio), { median: 6.5, each: [2, 3, 10, 20, null] });
  assert.deepEqual(ratioAcrossRepeats([{ a: 1, b: null }], ratio), { median: null, each: [null] });
  // The run behind a figure: of 4, 5, 6 and 7 ms/step, 5.
  assert.equal(median([6, 4, 7, 5], (ms) => ms), 5);
  assert.equal(median([6, 4, 7], (ms) => ms), 6);
});

test("local's ms/step counts its timed steps alone: the progress windows after the 50-step warm-up", () => {
  // 2 workers of 128: the warm-up's window at 1,000 images/s is not counted; then 50 steps in 1 s and 50 in 0.5 s.
  const log = [50, 100, 150].map((step, i) => `[coordinator] step ${step}/150 d_loss=0.1 g_loss=2.0 images/s=${[1000, 12800, 25600][i]} workers=2`).join('\n');
  assert.equal(timedMsPerStep(log, 50, 150, 256), 15);
  // A log without its progress lines is no figure.
  assert.throws(() => timedMsPerStep(log.split('\n').slice(0, 2).join('\n'), 50, 150, 256), /expected 2 progress lines after the warm-up, found 1/);
});

test("the memory verdict is RSS's slope over the run's second half: start-up's growth and V8's saw pass, a leak of 3 KB a step does not", () => {
  // 20 readings of a 10,000-step run, RSS in MiB as a function of the step.
  const readings = (rss: (step: number) => number): MemoryReading[] =>
    Array.from({ length: 20 }, (_, i) => {
      const step = 500 * (i + 1);
      const m = { rss: rss(step), peak: 0 };
      return { step, coordinator: m, workers: [m, m] };
    });
  const verdict = (rss: (step: number) => number) => memoryGrowth(readings(rss), 10_000);
  // Start-up: 20 MiB over the first 5,000 steps, then level (the coordinator over the WebSocket rose 17 MiB over
  // session 38's 2,000 steps, and 12 MiB over 2,300 in session 39's runs), which a window from a quarter of the
  // run (session 38's) read as growth.
  const startUp = verdict((step) => 180 + (20 * Math.min(step, 5000)) / 5000);
  assert.deepEqual(startUp.rssGrowthMiBPer1000Steps, { coordinator: 0, workers: [0, 0] });
  assert.equal(startUp.flat, true);
  // V8's saw as session 39 measured it: 1.1 MiB per 1,000 steps for 8,000 steps, then collected by 18 MiB.
  const saw = verdict((step) => 175 + 1.1 * ((step % 8000) / 1000) - (step >= 8000 ? 10 : 0));
  assert.equal(saw.flat, true, JSON.stringify(saw));
  const leak = verdict((step) => 180 + 3 * (step / 1000));
  assert.equal(leak.flat, false);
  assert.deepEqual(leak.rssGrowthMiBPer1000Steps, { coordinator: 3, workers: [3, 3] });
  // One allocation taken and kept (session 20's coordinator: 3 MiB up from one reading on) raises only the pairs
  // that straddle it: the median of the slopes reads no growth, where their mean or a least-squares line would.
  const kept = verdict((step) => 180 + (step >= 8500 ? 3 : 0));
  assert.deepEqual(kept.rssGrowthMiBPer1000Steps, { coordinator: 0, workers: [0, 0] });
  // 2 MiB per 1,000 steps is already growth: every process stays under it.
  assert.equal(verdict((step) => 180 + 2 * (step / 1000)).flat, false);
  // The window's ends: the reading at half the run is in it (10 of the 20), the last one (the final outputs) is not.
  const goneAt = (step: number) => readings(() => 180).map((r) => (r.step === step ? { ...r, workers: [r.workers[0], null] } : r));
  assert.equal(memoryGrowth(goneAt(4500), 10_000).flat, true);
  assert.equal(memoryGrowth(goneAt(5000), 10_000).flat, null);
  assert.equal(memoryGrowth(goneAt(9500), 10_000).flat, null);
  assert.equal(memoryGrowth(goneAt(10_000), 10_000).flat, true);
  // A process gone at a reading gives no figure, and no verdict (null: not measured, where false says it grew).
  const gone = readings(() => 180).map((r, i) => (i === 15 ? { ...r, workers: [r.workers[0], null] } : r));
  const g = memoryGrowth(gone, 10_000);
  assert.deepEqual(g.rssGrowthMiBPer1000Steps, { coordinator: 0, workers: [0, null] });
  assert.equal(g.flat, null);
  // So do fewer than 3 readings in the second half; a process that grew still makes it false.
  assert.equal(memoryGrowth(readings(() => 180).slice(0, 11), 10_000).flat, null);
  const grewBesideGone = readings((step) => 180 + 3 * (step / 1000)).map((r, i) => (i === 15 ? { ...r, workers: [r.workers[0], null] } : r));
  assert.equal(memoryGrowth(grewBesideGone, 10_000).flat, false);
  // And the report over both runs says no more than its runs do.
  type Run = Exclude<Parameters<typeof memoryReport>[0], { reason: string }>;
  const asRun = (memory: ReturnType<typeof memoryGrowth>) => ({ memory }) as unknown as Run;
  assert.equal(memoryReport(asRun(g), asRun(startUp)).flat, null);
  assert.equal(memoryReport(asRun(g), asRun(leak)).flat, false);
});

test("the memory verdict is flat only where both runs are: a leak without mailboxes shows; a run that failed leaves no verdict", () => {
  type Run = Exclude<Parameters<typeof memoryReport>[0], { reason: string }>;
  const run = (flat: boolean) => ({ memory: { flat, rssGrowthMiBPer1000Steps: { coordinator: flat ? 0.5 : 300, workers: [0.5, 0.5] } } }) as unknown as Run;
  assert.equal(memoryReport(run(true), run(true)).flat, true);
  assert.equal(memoryReport(run(true), run(false)).flat, false);
  assert.equal(memoryReport(run(false), run(true)).flat, false);
  const failed = { reason: 'local --workers 2 --no-mailbox (200 steps, memory and CPU) exited 1' };
  const withoutOne = memoryReport(run(true), failed);
  assert.equal(withoutOne.flat, null);
  assert.deepEqual(withoutOne.noMailbox, failed);
  assert.equal(memoryReport(run(false), failed).flat, false);
  assert.deepEqual(memoryReport(run(true), run(false)).noMailbox, run(false).memory);
});

// Lines of a real `local --workers 2 --steps 600 --log-every 50` whose worker 1 was SIGKILLed after step 150: local
// restarted it and exited 0, with the restart inside the timed steps (the window to step 200 ran at 4,250 images/s).
const KILLED_WORKER_LOG = `2026-11-30T16:43:08.711Z [worker local-2] shard plan 1: 30000 images (0 kept, 30000 received)
2026-11-30T16:43:12.184Z [coordinator] step 150/600 d_loss=0.0195 g_loss=6.8117 D(x)=0.9939 D(G(z))=0.0127 images/s=13619 workers=2 eta=0m10s
2026-11-30T16:43:12.465Z [coordinator] w2 left (connection lost, no close: crashed, killed or cut off); 1 connected
2026-11-30T16:43:12.823Z [coordinator] shard plan 2: w1=60000; 30000 images sent
2026-11-30T16:43:12.936Z [local] worker 1 (pid 9068) exited with SIGKILL; restarting it (1/3)
2026-11-30T16:43:13.961Z [coordinator] step 200/600 d_loss=0.0265 g_loss=4.5727 D(x)=0.9965 D(G(z))=0.0409 images/s=4250 workers=1 eta=0m10s
`;
// The end of a real run that lost nothing: its workers leave once it has finished.
const FINISHED_LOG = `2026-11-30T16:43:00.921Z [coordinator] step 300/300 d_loss=0.0890 g_loss=1.9550 D(x)=0.9910 D(G(z))=0.1416 images/s=27162 workers=2 eta=0m00s
2026-11-30T16:43:01.035Z [coordinator] finished 300 steps: step 300 (300 this run) in 4.0 s; samples in /tmp/b27run/ok/samples, generator in /tmp/b27run/ok/generator
2026-11-30T16:43:01.041Z [worker local-2] stopped by the coordinator: finished 300 steps
2026-11-30T16:43:01.045Z [coordinator] w2 left (disconnected); 1 connected
2026-11-30T16:43:01.047Z [coordinator] w1 left (disconnected); 0 connected
`;

test("a timed run that lost a worker is a failed run, not a figure: local restarts it and exits 0", () => {
  assert.equal(lostWorkerLine(KILLED_WORKER_LOG), '2026-11-30T16:43:12.465Z [coordinator] w2 left (connection lost, no close: crashed, killed or cut off); 1 connected');
  // local's own line, where the coordinator's is missing (a worker that died before it joined).
  assert.match(lostWorkerLine(KILLED_WORKER_LOG.split('\n').filter((l) => !l.includes(' left (')).join('\n'))!, /\[local\] worker 1 \(pid 9068\) exited with SIGKILL; restarting it/);
  assert.match(lostWorkerLine('2026-11-30T16:43:12.936Z [local] worker 2 (pid 9070) has not had its main thread free for 601 s (--hang-timeout 600): killing it as hung\n')!, /killing it as hung/);
  assert.equal(lostWorkerLine(FINISHED_LOG), null);
  assert.equal(lostWorkerLine(KILLED_WORKER_LOG + FINISHED_LOG), KILLED_WORKER_LOG.split('\n')[2]);
});

test('the PyTorch anchor runs the best OpenBLAS kernel of this CPU where OpenBLAS falls back to its generic one', () => {
  const flags = (s: string) => new Set(s.split(' '));
  const avx512 = flags('sse3 avx2 fma avx512f avx512cd avx512bw avx512dq avx512vl');
  assert.equal(openblasCoreFor('Prescott', avx512), 'SkylakeX');
  assert.equal(openblasCoreFor('Prescott', flags('sse3 avx2 fma')), 'Haswell');
  assert.equal(openblasCoreFor('Prescott', flags('sse3 sse4_2')), null);
  // A kernel OpenBLAS detected itself is kept.
  assert.equal(openblasCoreFor('Zen', avx512), null);
  assert.equal(openblasCoreFor(null, avx512), null);
});

test('bench --scaling where PyTorch DDP fails: the single-process anchor is kept, DDP is null with what python said', () => {
  const python = fakeTorch(true);
  const r = spawnSync(process.execPath, [BENCH, '--scaling', '1,2', '--steps', '50', '--repeats', '1', '--python', python, '--anchor', python], { encoding: 'utf8', timeout: 360_000 });
  fs.rmSync(path.dirname(python), { recursive: true, force: true });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  // It used to throw the working anchor away with it: torch null, and a reason without python's own words.
  assert.equal(report.torch.single.ms_per_step, 5);
  assert.equal(report.torchReason, undefined);
  assert.equal(report.torch.ddp.world2, null);
  assert.match(report.torchDdpReason, /^the anchor's DDP over 2 failed: Command failed: .*: RuntimeError: Address already in use \(port 29517\)$/);
  assert.equal(report.ratios.torchDdpScaling.world2, null);
});

test('bench --scaling without torch: the anchor is null, with the reason', () => {
  const r = spawnSync(process.execPath, [BENCH, '--scaling', '1', '--steps', '50', '--repeats', '1', '--anchor', '/nonexistent/torch_gan.py'], { encoding: 'utf8', timeout: 240_000 });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.torch, null);
  assert.match(report.torchReason, /anchor script not found at \/nonexistent/);
  assert.equal(report.ratios.torchDdpScaling, null);
});

test('bench --scaling with a --python that is not there: the anchor is null, and the reason says it could not be run', () => {
  const r = spawnSync(process.execPath, [BENCH, '--scaling', '1', '--steps', '50', '--repeats', '1', '--python', '/nonexistent/python3', '--anchor', BENCH], { encoding: 'utf8', timeout: 240_000 });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.torch, null);
  // It said "has no torch (apt-get install -y python3-torch …)", which installs nothing at that path.
  assert.equal(report.torchReason, '/nonexistent/python3 could not be run: spawn /nonexistent/python3 ENOENT');
});

test('the bench refuses a bad command line before running anything: unknown options, steps off the warm-up, bad counts', () => {
  for (const [args, why] of [
    [['--scalling', '1,2'], /Unknown option '--scalling'/],
    [['--steps', '75'], /--steps takes a whole number of at least 1, a multiple of 50; got "75"/],
    [['--scaling', '2,4'], /--scaling takes increasing worker counts that start with 1/],
    [['--scaling', '1,2,2'], /--scaling takes increasing worker counts/],
    [['--link', '1gbps'], /--link takes a rate such as 100mbit, 1gbit or 10gbit; got "1gbps"/],
  ] as const) {
    const r = spawnSync(process.execPath, [BENCH, ...args], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, why);
    assert.match(r.stderr, /Usage: npm run bench/);
    assert.equal(r.stdout, '');
  }
  const help = spawnSync(process.execPath, [BENCH, '--help'], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /--scaling LIST/);
});

test('bench --link: a real coordinator and real workers on either side of a shaped link, for 1 and 2 workers and each wire dtype', () => {
  // What a bench killed with SIGKILL leaves (pid 999999999 cannot exist: pids stop at 2^22): the next one removes it.
  const leftover = spawnSync('ip', ['netns', 'add', 'gf999999999-c']).status === 0;
  const r = spawnSync(process.execPath, [BENCH, '--link', '1gbit', '--steps', '50'], { encoding: 'utf8', timeout: 360_000 });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.link, '1gbit');
  assert.equal(report.steps, 50);
  if (report.results === null) {
    // Only a machine that may not make namespaces at all (not root, or a container without the right) gives a
    // reason; one that fails later, at the veth or the qdisc, is a broken bench.
    assert.equal(report.failedStep, 'ip netns add', report.reason);
    assert.match(report.reason, /a shaped link needs root, iproute2 and the kernel's tbf qdisc/);
    return;
  }
  assert.deepEqual(report.results.map((x: { workers: number; wireDtype: string }) => `${x.workers} ${x.wireDtype}`), ['1 float32', '1 float16', '1 bfloat16', '2 float32', '2 float16', '2 bfloat16']);
  // The MLP's networks: G 114,064 values, D 100,609. One worker: both networks down, and up G's gradients and D's
  // in two halves, 2G + 3D; two: each round's larger frame once more (D's two halves up in the D round, G's
  // gradients up in the G round).
  const [G, D] = [114_064, 100_609];
  const least = (workers: number, bytesPerValue: number) => (((workers === 1 ? 2 * G + 3 * D : 2 * G + 3 * D + 2 * D + G) * bytesPerValue * 8) / 1e9) * 1000;
  for (const x of report.results) {
    assert.ok(x.msPerStep > 0, JSON.stringify(x));
    assert.ok(Math.abs(x.linkMsPerStep - least(x.workers, x.wireDtype === 'float32' ? 4 : 2)) < 1e-3, JSON.stringify(x));
  }
  const [f32, f16, bf16] = report.results;
  assert.ok(Math.abs(f16.wireBytesPerStepPerWorker.fromWorker / f32.wireBytesPerStepPerWorker.fromWorker - 0.5) < 0.01);
  assert.equal(bf16.wireBytesPerStepPerWorker.fromWorker, f16.wireBytesPerStepPerWorker.fromWorker);
  // Nothing is left behind: this bench's namespaces go with it, and a killed one's before it.
  const left = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '';
  assert.doesNotMatch(left, new RegExp(`^gf${r.pid}-[cw]\\b`, 'm'));
  if (leftover) assert.doesNotMatch(left, /^gf999999999-c\b/m);
});

test('bench --link removes its namespaces, what runs in them and its scratch directory when it is stopped mid-run', async (t) => {
  const probe = spawnSync('ip', ['netns', 'add', `gf${process.pid}-probe`], { encoding: 'utf8' });
  spawnSync('ip', ['netns', 'del', `gf${process.pid}-probe`]);
  if (probe.error || probe.status !== 0) return t.skip('no network namespaces here: the test above checks the reason');
  const namespaces = () => spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  const started = Date.now();
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    const bench = spawn(process.execPath, [BENCH, '--link', '1gbit', '--steps', '1000'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    bench.stderr.on('data', (d) => (err += d));
    // Stopped once its first run is under way: its coordinator and worker are in the namespaces.
    const pids = () => ['c', 'w'].flatMap((end) => spawnSync('ip', ['netns', 'pids', `gf${bench.pid}-${end}`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number));
    for (let i = 0; i < 300 && pids().length < 2; i++) await sleep(100);
    const inside = pids();
    assert.ok(inside.length >= 2, `no coordinator and worker ran in gf${bench.pid}-*: ${err}`);
    bench.kill(signal);
    const code = await new Promise<number | null>((resolve) => bench.on('exit', (c) => resolve(c)));
    assert.equal(code, 128 + os.constants.signals[signal], err);
    // Killed, not waited for: gone once reaped, a zombie until then.
    const lives = (pid: number) => {
      try {
        return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 50 && inside.some(lives); i++) await sleep(100);
    assert.deepEqual(inside.filter(lives), [], `${signal}: processes of the run still live`);
    assert.doesNotMatch(namespaces(), new RegExp(`^gf${bench.pid}-`, 'm'), `${signal}: namespaces left`);
  }
  const scratch = fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith('ganfleet-bench-link-') && fs.statSync(path.join(os.tmpdir(), f)).mtimeMs >= started);
  assert.deepEqual(scratch, [], 'scratch directories left');
});

test("the bench's in-process child (its run without the native addon, and two at once) takes its own options", () => {
  const r = spawnSync(process.execPath, [BENCH, '--in-process-only', '--steps', '50'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const result = JSON.parse(r.stdout);
  assert.equal(result.steps, 50);
  assert.ok(result.msPerStep > 0);
});

test("the in-process step's ms/step is its timed steps' alone, after the warm-up", { timeout: 60_000 }, async (t) => {
  stepCountingClock(t);
  // 2 warm-up steps, then 3 timed: the warm-up's would make it 5/3; batch 128 a step.
  const r = await inProcess(3, 2);
  assert.deepEqual({ steps: r.steps, msPerStep: r.msPerStep, imagesPerSecond: r.imagesPerSecond }, { steps: 3, msPerStep: 1, imagesPerSecond: 128_000 });
});

test('bench: --memory, --scaling and --link are reports of their own: two of them at once are refused, not one dropped', () => {
  for (const args of [['--memory', '--scaling', '1,2'], ['--memory', '--link', '1gbit'], ['--scaling', '1,2', '--link', '1gbit']]) {
    const r = spawnSync(process.execPath, [BENCH, ...args, '--memory-steps', '20', '--steps', '50', '--repeats', '1'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /each print a report of their own: give one of them/);
  }
});

test("bench stopped mid-run leaves no mailbox directory of its killed local behind", async (t) => {
  if (!fs.existsSync('/dev/shm') || !fs.existsSync('/proc/self/stat')) return t.skip('needs /dev/shm and /proc');
  const shm = () => fs.readdirSync('/dev/shm');
  const childrenOf = (pid: number) =>
    fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((d) => {
      try {
        return Number(fs.readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1].split(' ')[1]) === pid;
      } catch {
        return false;
      }
    });
  const bench = spawn(process.execPath, [BENCH, '--memory', '--memory-steps', '4000'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  bench.stderr.on('data', (d) => (err += d));
  // Stopped once its local trains: the coordinator's mailbox directory is in /dev/shm.
  const mine = () => shm().filter((f) => childrenOf(bench.pid!).some((pid) => f.startsWith(`ganfleet-coordinator-${pid}-`)));
  let dirs: string[] = [];
  for (let i = 0; i < 600 && dirs.length === 0; i++, await sleep(100)) dirs = mine();
  assert.ok(dirs.length > 0, `no mailbox directory of the bench's local: ${err}`);
  bench.kill('SIGINT');
  assert.equal(await new Promise<number | null>((resolve) => bench.on('exit', (c) => resolve(c))), 130, err);
  // It used to stay until another ganfleet process made a mailbox directory and swept it.
  assert.deepEqual(shm().filter((f) => dirs.includes(f)), [], 'mailbox directories left');
});
