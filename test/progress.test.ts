import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { RunClock, progressLine } from '../src/coordinator/progress';
import { STALL_SECONDS, batchProgress } from '../src/util/batch-progress';
import { ProgressLine } from '../src/worker/progress';
import { SilenceWatchdog } from '../src/worker/silence';

/** A RunClock on a clock the test moves (milliseconds). */
function clockAt(): { clock: RunClock; advance: (ms: number) => void } {
  let ms = 0;
  return { clock: new RunClock(() => ms), advance: (by) => (ms += by) };
}

/** A step of `ms`, `images` images, then whatever `after` does (sample grid, checkpoint, evaluation) before the pace is taken. */
function step(c: ReturnType<typeof clockAt>, ms: number, stepsThisRun: number, after: () => void = () => {}, images = 128): void {
  c.clock.stepStarted();
  c.advance(ms);
  c.clock.stepFinished(images);
  after();
  c.clock.paceAfter(stepsThisRun);
}

const close = (actual: number | null, expected: number) => assert.ok(actual !== null && Math.abs(actual - expected) < 1e-9, `${actual}, expected ${expected}`);

test("the ETA's pace starts after the first step, which carries the start-up; with one step done, it is that step's", () => {
  const c = clockAt();
  assert.equal(c.clock.etaSeconds(10), null, 'no pace before the first step');
  step(c, 1000, 1);
  close(c.clock.etaSeconds(10), 10);
  step(c, 100, 2);
  step(c, 100, 3);
  close(c.clock.etaSeconds(10), 1);
  // The first progress line's images/s leaves it out as well; the run's elapsed time keeps it.
  close(c.clock.windowRate(), (2 * 128) / 0.2);
  close(c.clock.elapsed().seconds, 1.2);
  step(c, 50, 4);
  close(c.clock.windowRate(), 128 / 0.05);
});

test('with a progress line every step, the first line is the first step\'s own rate, start-up and all', () => {
  const c = clockAt();
  step(c, 1000, 1);
  close(c.clock.windowRate(), 128);
  step(c, 100, 2);
  close(c.clock.windowRate(), 1280);
});

test('an evaluation is counted in the ETA (the run still has it to do) and left out of images/s and the elapsed training time', () => {
  const c = clockAt();
  step(c, 100, 1);
  step(c, 100, 2, () => {
    c.advance(1000);
    c.clock.addEvaluation(1);
  });
  close(c.clock.etaSeconds(1), 1.1);
  close(c.clock.windowRate(), (2 * 128) / 0.2);
  assert.deepEqual(c.clock.elapsed(), { seconds: 1.2, pausedSeconds: 0, evaluationSeconds: 1 });
  // The step average behind the status page's images/s: steps only.
  close(c.clock.imagesPerSecond(128), 1280);
});

test('a pause (waiting for workers) is left out of the ETA, images/s and the training time alike', () => {
  const c = clockAt();
  step(c, 100, 1);
  c.clock.stepStarted();
  c.advance(50);
  c.advance(2000);
  c.clock.addPause(2);
  c.advance(50);
  // The step's own training time: what ganfleet_unsaved_training_seconds adds up.
  close(c.clock.stepFinished(128), 0.1);
  c.clock.paceAfter(2);
  close(c.clock.etaSeconds(1), 0.1);
  close(c.clock.windowRate(), (2 * 128) / 0.2);
  assert.deepEqual(c.clock.elapsed(), { seconds: 2.2, pausedSeconds: 2, evaluationSeconds: 0 });
});

test("the status page's images/s is at the median of the last 32 steps: one step that waited out a dropped worker does not drag it down for long", () => {
  const c = clockAt();
  assert.equal(c.clock.imagesPerSecond(128), 0, 'none before the first step');
  for (let i = 1; i <= 10; i++) step(c, 10, i);
  close(c.clock.imagesPerSecond(128), 12800);
  // A 7 s step (a round that waited for its deadline), then the usual pace again.
  step(c, 7000, 11);
  step(c, 10, 12);
  close(c.clock.imagesPerSecond(128), 12800);
  // A lasting slowdown shows once it is most of the recent steps.
  for (let i = 13; i <= 40; i++) step(c, 20, i);
  close(c.clock.imagesPerSecond(128), 6400);
});

test("an evaluation before the first step (a resume scoring its checkpoint's step) counts in the run's seconds and evaluationSeconds, not in its training time", () => {
  const c = clockAt();
  // As Coordinator.evaluate does: the clock starts with the evaluation.
  c.clock.begin();
  c.advance(2000);
  c.clock.addEvaluation(2);
  // A finished run resumed trains no step: this evaluation is the run's last, and its time was reported as 0.
  assert.deepEqual(c.clock.elapsed(), { seconds: 2, pausedSeconds: 0, evaluationSeconds: 2 });
  // Then the wait for the first workers, which a run that starts with a step does not count either.
  c.advance(600_000);
  c.clock.addPause(600);
  step(c, 100, 1);
  step(c, 100, 2);
  const e = c.clock.elapsed();
  close(e.seconds, 2.2);
  close(e.evaluationSeconds, 2);
  close(e.seconds - e.pausedSeconds - e.evaluationSeconds, 0.2);
  close(c.clock.windowRate(), (2 * 128) / 0.2);
});

test("the status page's images/s over an even number of recent steps is at the mean of the middle two; beyond 32 steps the oldest give way", () => {
  const c = clockAt();
  step(c, 10, 1);
  step(c, 30, 2);
  close(c.clock.imagesPerSecond(128), 128 / 0.02);
  // An odd number: the middle one (20 ms), not its neighbour.
  step(c, 20, 3);
  close(c.clock.imagesPerSecond(128), 128 / 0.02);
  // 32 steps at 10 ms, then 20 at 40 ms: the window holds the last 32, 12 fast and 20 slow.
  const d = clockAt();
  for (let i = 1; i <= 32; i++) step(d, 10, i);
  for (let i = 33; i <= 52; i++) step(d, 40, i);
  close(d.clock.imagesPerSecond(128), 128 / 0.04);
  // 32 at 10 ms, then 16 at 40 ms: exactly 16 of each in the window (one step more or less there tips the median to one side).
  const e = clockAt();
  for (let i = 1; i <= 32; i++) step(e, 10, i);
  for (let i = 33; i <= 48; i++) step(e, 40, i);
  close(e.clock.imagesPerSecond(128), 128 / 0.025);
});

test("the progress line's images/s counts the images since the line before, not since the run began", () => {
  const c = clockAt();
  step(c, 100, 1, () => {}, 128);
  close(c.clock.windowRate(), 128 / 0.1);
  step(c, 100, 2, () => {}, 64);
  close(c.clock.windowRate(), 64 / 0.1);
});

test('the progress line gives its ETA in minutes and seconds under an hour, in hours and minutes from an hour on', () => {
  const stats = { dLoss: 1.23456, gLoss: 0.5, dReal: 0.6, dFake: 0.4, images: 256, workers: 2 };
  assert.equal(progressLine(10, 100, stats, 1234.4, 3599), 'step 10/100 d_loss=1.2346 g_loss=0.5000 D(x)=0.6000 D(G(z))=0.4000 images/s=1234 workers=2 eta=59m59s');
  assert.match(progressLine(10, 100, stats, 0, 3600), / eta=1h00m$/);
  assert.match(progressLine(10, 100, stats, 0, 7199), / eta=1h59m$/);
  assert.match(progressLine(10, 100, stats, 0, 90061), / eta=25h01m$/);
  // To the nearest second, not cut down.
  assert.match(progressLine(10, 100, stats, 0, 89.6), / eta=1m30s$/);
});

test("a worker's 'no round' line comes --progress-every after its join or its last round, not up to twice that, and not while rounds come", async () => {
  const lines: { at: number; text: string }[] = [];
  const t0 = performance.now();
  const line = new ProgressLine(0.4, (text) => lines.push({ at: performance.now() - t0, text }));
  line.start();
  // Rounds every 0.1 s for 0.5 s: no line; then none, and one comes 0.4 s after the last round (an interval
  // timer that only looked at each tick would find 0.3 s at its second and say so at its third, 0.7 s after).
  for (let i = 1; i <= 5; i++) {
    await new Promise((r) => setTimeout(r, 100));
    line.answered(i - 1, 0.001);
  }
  const lastRound = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 1000));
  line.stop();
  const idle = lines.filter((l) => /^no round/.test(l.text));
  assert.ok(idle.length === 2, JSON.stringify(lines));
  assert.match(idle[0].text, /^no round for 0\.\d s since step 5: /);
  // A timer is never early by more than a millisecond, and late only by what a busy machine adds.
  assert.ok(idle[0].at - lastRound >= 399 && idle[0].at - lastRound < 650, JSON.stringify({ lastRound, lines }));
  assert.ok(idle[1].at - idle[0].at >= 399, JSON.stringify(lines));
});

/** A TCP connection on loopback: `coordinator` writes what the worker's `link` reads. */
async function loopbackLink(): Promise<{ coordinator: net.Socket; link: net.Socket; close: () => void }> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const coordinator = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const [link] = (await once(server, 'connection')) as [net.Socket];
  const close = () => {
    coordinator.destroy();
    server.close();
  };
  return { coordinator, link, close };
}

/** This process frozen for `ms` (as by SIGSTOP or a paused VM): its timers fall due, and nothing is read meanwhile. */
function freeze(ms: number): void {
  for (const until = performance.now() + ms; performance.now() < until; );
}

test("a worker woken from a stop answers the round that came meanwhile and says no 'no round': the coordinator waited on it, not it on the coordinator", async () => {
  const { coordinator, link, close } = await loopbackLink();
  const lines: string[] = [];
  const line = new ProgressLine(0.3, (text) => lines.push(text));
  let thawed = false;
  let readAfterThaw = false;
  link.on('data', () => {
    readAfterThaw = thawed;
    line.answered(2, 0.001);
  });
  line.start();
  coordinator.write('weights');
  // This process frozen (SIGSTOP, a paused VM) past the interval, the round waiting in the socket's buffer.
  freeze(500);
  thawed = true;
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(readAfterThaw, 'the round was read after the freeze');
  line.stop();
  close();
  assert.ok(lines.some((l) => /^step \d+: 1 rounds/.test(l)), JSON.stringify(lines));
  assert.deepEqual(lines.filter((l) => /^no round/.test(l)), []);
});

test("a worker woken from a stop says no 'no round' for a round whose frame is still being read (a DCGAN's weights, several MiB): more than one turn's read", async () => {
  const { coordinator, link, close } = await loopbackLink();
  const lines: string[] = [];
  const line = new ProgressLine(0.3, (text) => lines.push(text), () => link.bytesRead);
  const frame = 16 << 20;
  let got = 0;
  const answered = new Promise<void>((resolve) =>
    link.on('data', (chunk: Buffer) => {
      if ((got += chunk.length) < frame) return;
      line.answered(2, 0.001);
      resolve();
    }),
  );
  line.start();
  coordinator.write(Buffer.alloc(frame));
  // This process frozen past the interval, the round part in the socket's buffers and part still to come.
  freeze(500);
  await answered;
  line.stop();
  close();
  assert.deepEqual(lines.filter((l) => /^no round/.test(l)), []);
});

/** batchProgress on a clock of its own, and a phase's batches of `batch` items, `msEach` apart, up to `upTo` of `total`. */
function timedProgress(unit: string, gapSeconds = 0) {
  const clock = { ms: 0 };
  const lines: string[] = [];
  const progress = batchProgress((m) => lines.push(m), unit, gapSeconds, () => clock.ms);
  const batches = (phase: string, batch: number, msEach: number, total: number, upTo = total) => {
    for (let done = batch; done <= upTo; done += batch) {
      clock.ms += msEach;
      progress(phase, done, total);
    }
  };
  return { clock, lines, progress, batches };
}

test("a long generate or eval says each tenth of each phase, its time from the phase's start and the time left; a short phase says nothing", () => {
  const { clock, lines, progress, batches } = timedProgress('images');
  // 20 batches of 500, 100 ms each: a line every second batch.
  batches('drawing', 500, 100, 10_000);
  assert.equal(lines.length, 10);
  assert.equal(lines[4], 'drawing: 50% (5000/10000 images) in 1.0 s, about 1 s left');
  assert.equal(lines[9], 'drawing: 100% (10000/10000 images) in 2.0 s');
  // The next phase is timed from the end of the one before, its first batch included.
  clock.ms += 300;
  progress('classifying the samples', 1000, 10_000);
  assert.equal(lines[10], 'classifying the samples: 10% (1000/10000 images) in 0.3 s, about 3 s left');
  // Fewer than 10 batches: over in moments.
  lines.length = 0;
  for (let done = 1000; done <= 9000; done += 1000) progress('classifying the test set', done, 9000);
  assert.deepEqual(lines, []);
});

test('batch progress times its phases by the monotonic clock: a step of the wall clock (NTP, a resumed VM) neither silences nor skews it', (t) => {
  // The wall clock steps back an hour at each call: on it, no line came for the rest of the phase.
  let wall = 1_800_000_000_000;
  t.mock.method(Date, 'now', () => (wall -= 3_600_000));
  let ms = 0;
  t.mock.method(performance, 'now', () => ms);
  const lines: string[] = [];
  const progress = batchProgress((m) => lines.push(m), 'samples');
  for (let done = 500; done <= 10_000; done += 500) {
    ms += 100;
    progress('drawing', done, 10_000);
  }
  assert.equal(lines.length, 10);
  assert.equal(lines[9], 'drawing: 100% (10000/10000 samples) in 2.0 s');
});

/** What batch progress says of drawing `total` samples in batches of `batch`, `msEach` apiece, up to `upTo`, on a clock the test moves. */
function drawn(batch: number, msEach: number, total: number, upTo = total): string[] {
  const timed = timedProgress('samples');
  timed.batches('drawing', batch, msEach, total, upTo);
  return timed.lines;
}

test('a phase whose tenths take longer than STALL_SECONDS gets a line meanwhile, at its own percent: 200,000 DCGAN samples said nothing for their first 30 s', () => {
  // 100 batches of 2000, 1.5 s each: a tenth every 15 s.
  const lines = drawn(2000, 1500, 200_000, 30_000);
  assert.equal(STALL_SECONDS, 5);
  assert.deepEqual(lines, [
    'drawing: 4% (8000/200000 samples) in 6.0 s, about 144 s left',
    'drawing: 8% (16000/200000 samples) in 12.0 s, about 138 s left',
    'drawing: 12% (24000/200000 samples) in 18.0 s, about 132 s left',
  ]);
});

test('a phase whose tenths take a little longer than STALL_SECONDS gets a line every STALL_SECONDS, not one at 5 s and its tenth a second later', () => {
  // 100 batches of 200, 0.6 s each: a tenth every 6 s.
  const lines = drawn(200, 600, 20_000);
  const at = lines.map((l) => Number(/ in ([\d.]+) s/.exec(l)![1]));
  for (let i = 1; i < at.length; i++) assert.ok(at[i] - at[i - 1] >= STALL_SECONDS || i === at.length - 1, lines.join('\n'));
  assert.equal(lines.at(-1), 'drawing: 100% (20000/20000 samples) in 60.0 s');
});

test("a phase after a quiet one (fewer than 10 batches, however long) still gets its lines at its tenths, not at once as if it had stalled", () => {
  const { lines, batches } = timedProgress('images');
  // 5 batches of 2 s: no line, yet 10 s since the last one.
  batches('classifying the test set', 2000, 2000, 10_000);
  assert.deepEqual(lines, []);
  // 100 batches of 100 ms: its tenths come every second, the first line at 10%.
  batches('drawing', 100, 100, 10_000);
  assert.equal(lines.length, 10, lines.join('\n'));
  assert.equal(lines[0], 'drawing: 10% (1000/10000 images) in 1.0 s, about 9 s left');
});

test('batch progress rounds its estimate of the time left up: a phase with a fraction of a second to go says 1 s, not 0', () => {
  const { lines, batches } = timedProgress('images');
  // 10 batches of 40 ms: 0.36 s left at 10%.
  batches('drawing', 1000, 40, 10_000);
  assert.equal(lines[0], 'drawing: 10% (1000/10000 images) in 0.0 s, about 1 s left');
  assert.equal(lines[8], 'drawing: 90% (9000/10000 images) in 0.4 s, about 1 s left');
});

test("with a gap, batch progress lines come at least that far apart, none in the gap's first stretch, across phases", () => {
  const { lines, batches } = timedProgress('images', 10);
  // 20 batches of 500, 400 ms each (8 s): none, as the phase ends inside the first 10 s.
  batches('drawing', 500, 400, 10_000);
  assert.deepEqual(lines, []);
  // 10 batches of 1000, 1.5 s each: a line at 11 s (2 batches in), the next 10 s or more after it.
  batches('classifying the samples', 1000, 1500, 10_000);
  assert.deepEqual(lines, [
    'classifying the samples: 20% (2000/10000 images) in 3.0 s, about 12 s left',
    'classifying the samples: 90% (9000/10000 images) in 13.5 s, about 2 s left',
  ]);
});

test("a worker's silence watchdog counts a ping missed after one and a half heartbeats of silence, and gives the connection up after three", () => {
  const watchdog = new SilenceWatchdog();
  const heardAgo = (ms: number) => ((watchdog as unknown as { lastHeard: number }).lastHeard = performance.now() - ms);
  assert.equal(watchdog.missedPings(), null, 'before a welcome');
  watchdog.start(2, () => {});
  try {
    heardAgo(2800);
    assert.equal(watchdog.missedPings(), null, 'within one and a half heartbeats of 2 s');
    heardAgo(3200);
    const missed = watchdog.missedPings();
    assert.ok(missed && missed.silentMs >= 3200 && missed.silentMs < 3700, JSON.stringify(missed));
    assert.equal(missed.limitMs, 6000);
  } finally {
    watchdog.stop();
  }
});
