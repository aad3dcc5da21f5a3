import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { GanfleetProcess, clockStepOnSignal, freePort, loggedSteps, scrape, sleep, startCoordinator, startWorker, tempDir } from './harness';
import { metricValue } from './helpers';

const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const procs: GanfleetProcess[] = [];
const dirs: string[] = [];

after(() => {
  for (const p of procs) p.kill();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function track<T extends GanfleetProcess>(p: T): T {
  procs.push(p);
  return p;
}

function out(name: string): string {
  const d = tempDir(name);
  dirs.push(d);
  return d;
}

/** The worker counts of every shard plan the coordinator logged, with their sizes. */
function shardPlans(log: string): number[][] {
  return [...log.matchAll(/shard plan \d+: (.*);/g)].map((m) => m[1].split(' ').map((kv) => Number(kv.split('=')[1])));
}

/** The images each shard plan sent, over all workers. */
function imagesSent(log: string): number[] {
  return [...log.matchAll(/shard plan \d+: .*; (\d+) images? sent/g)].map((m) => Number(m[1]));
}

describe('worker failures', () => {
  test('SIGKILL one of 3 workers: the run pauses below --min-workers, resumes when a new one joins, and no step is lost or repeated', { timeout: 90_000 }, async () => {
    const dir = out('kill');
    // The kill is seen by its socket's close, not the heartbeat: a 1 s heartbeat only risked dropping a live worker on a
    // loaded machine (it rejoins, and the last plan is no longer 3 x 20000). 3 s still fails detectMs if the close went unseen.
    const c = await startCoordinator(['--min-workers', '3', '--steps', '120', '--log-every', '1', '--checkpoint-every', '0', '--heartbeat', '3', '--round-timeout', '5', '--linger', '1', '--out', dir]);
    track(c.proc);
    const workers = ['a', 'b', 'c'].map((n) => track(startWorker(c.url, n)));
    await c.proc.waitFor(/step 20\/120/);
    const killedAt = Date.now();
    const mark = c.proc.log.length;
    workers[1].kill('SIGKILL');
    await c.proc.waitFor(/paused at step \d+: 2\/3 workers connected/, 30_000, mark);
    const detectMs = Date.now() - killedAt;
    const paused = metricValue(await scrape(c.metrics), 'ganfleet_paused');
    assert.equal(paused, 1, 'the pause is visible in metrics');
    const stepsWhilePaused = loggedSteps(c.proc.log).length;
    await sleep(500);
    assert.equal(loggedSteps(c.proc.log).length, stepsWhilePaused, 'no step runs while paused');
    track(startWorker(c.url, 'd'));
    await c.proc.waitFor(/resuming at step \d+ with 3 workers/, 30_000, mark);
    assert.equal(await c.proc.exited, 0, c.proc.log);
    assert.deepEqual(loggedSteps(c.proc.log), range(1, 120), 'every step exactly once');
    for (const sizes of shardPlans(c.proc.log)) assert.equal(sizes.reduce((a, b) => a + b, 0), 60000, 'each plan covers the training set');
    assert.deepEqual(shardPlans(c.proc.log).at(-1), [20000, 20000, 20000]);
    // The survivors keep their shards: only the newcomer is sent images (the killed worker's).
    assert.equal(imagesSent(c.proc.log)[0], 60000);
    assert.equal(imagesSent(c.proc.log).at(-1), 20000, c.proc.log);
    assert.ok(detectMs < 5000, `kill detected in ${detectMs} ms`);
    for (const w of workers.filter((_, i) => i !== 1)) assert.equal(await w.exited, 0);
    // The killed worker never heard that the run is over: the coordinator waited --linger for it, and said so.
    assert.match(c.proc.log, /waiting up to 1 s \(--linger; a signal ends this\) to tell workers that reconnect that the run is over: 1 worker left without hearing it \(w\d "b"\)\n/);
    assert.match(c.proc.log, /not back within --linger 1 s: w\d "b" \(gone, or still trying/);
  });

  test('a worker frozen past --heartbeat is dropped, and told why: it reads the reason when it wakes, rejoins, and the run completes', { timeout: 90_000 }, async () => {
    const dir = out('frozen');
    const c = await startCoordinator(['--steps', '400', '--log-every', '1', '--checkpoint-every', '0', '--heartbeat', '1', '--out', dir]);
    track(c.proc);
    const w = track(startWorker(c.url, 'frozen'));
    await c.proc.waitFor(/step 20\/400/);
    const mark = c.proc.log.length;
    w.kill('SIGSTOP');
    await c.proc.waitFor(/w1 left \(no heartbeat for [\d.]+ s \(--heartbeat 1\)\)/, 30_000, mark);
    await sleep(1500);
    w.kill('SIGCONT');
    await w.waitFor(/connection lost \(the coordinator dropped this worker: no heartbeat for [\d.]+ s \(--heartbeat 1\)\); reconnecting in/);
    assert.match(w.log, /coordinator says COORDINATOR_DROPPED: no heartbeat for [\d.]+ s \(--heartbeat 1\)/);
    assert.equal(await c.proc.exited, 0, c.proc.log);
    assert.equal(await w.exited, 0, w.log);
  });

  test("a worker frozen before its round's mailed weights came reads why it was dropped when it wakes, not a mailbox emptied under it", { timeout: 90_000 }, async () => {
    const dir = out('frozen-mail');
    // a holds its shard and waits while the run is paused for a second worker; frozen then, it is sent the next
    // round's notice (mailboxes are on by default) while stopped, and the coordinator drops it, closing its mailbox,
    // before it reads the notice.
    const c = await startCoordinator(['--steps', '400', '--min-workers', '2', '--log-every', '1', '--checkpoint-every', '0', '--heartbeat', '1', '--round-timeout', '5', '--linger', '0', '--out', dir]);
    track(c.proc);
    const a = track(startWorker(c.url, 'a'));
    const b = track(startWorker(c.url, 'b'));
    await c.proc.waitFor(/step 5\/400/);
    const id = /joined as (w\d+)/.exec(a.log)![1];
    await c.proc.waitFor(new RegExp(`${id} exchanges frames through shared memory`));
    const mark = c.proc.log.length;
    b.kill('SIGKILL');
    await c.proc.waitFor(/paused at step \d+: 1\/2 workers connected/, 30_000, mark);
    a.kill('SIGSTOP');
    track(startWorker(c.url, 'c'));
    await c.proc.waitFor(new RegExp(`${id} left \\(no heartbeat for [\\d.]+ s \\(--heartbeat 1\\)\\)`), 30_000, mark);
    a.kill('SIGCONT');
    await a.waitFor(/connection lost \(.*\); reconnecting in/);
    assert.doesNotMatch(a.log, /PROTOCOL_BAD_SIZE|the mailbox holds/);
    assert.match(a.log, /coordinator says COORDINATOR_DROPPED: no heartbeat for [\d.]+ s \(--heartbeat 1\)/);
    assert.equal(await c.proc.exited, 0, c.proc.log);
    assert.equal(await a.exited, 0, a.log);
  });

  test('an idle worker frozen past its own silence limit reads why it was dropped before it judges the coordinator silent', { timeout: 90_000 }, async () => {
    const dir = out('frozen-idle');
    // Waiting for a second worker, the first is idle: stopped in its event loop's wait, it runs its overdue
    // silence check (3 heartbeats) on waking, before it reads what came meanwhile.
    const c = await startCoordinator(['--steps', '50', '--min-workers', '2', '--log-every', '10', '--checkpoint-every', '0', '--heartbeat', '1', '--out', dir]);
    track(c.proc);
    const w = track(startWorker(c.url, 'idle'));
    await w.waitFor(/joined as w1/);
    await sleep(500);
    const stoppedAt = Date.now();
    w.kill('SIGSTOP');
    await c.proc.waitFor(/w1 left \(no heartbeat for [\d.]+ s \(--heartbeat 1\)\)/);
    await sleep(4500 - (Date.now() - stoppedAt));
    w.kill('SIGCONT');
    await w.waitFor(/connection lost \(the coordinator dropped this worker: no heartbeat for [\d.]+ s \(--heartbeat 1\)\); reconnecting in/);
    assert.doesNotMatch(w.log, /nothing from the coordinator/);
    track(startWorker(c.url, 'second'));
    assert.equal(await c.proc.exited, 0, c.proc.log);
    assert.equal(await w.exited, 0, w.log);
  });

  test("a step of the wall clock (NTP) back does not hide a frozen worker from the coordinator's heartbeat", { timeout: 60_000 }, async () => {
    const dir = out('clock-step');
    const c = await startCoordinator(['--steps', '5', '--min-workers', '2', '--heartbeat', '1', '--out', dir], clockStepOnSignal(dir, -60_000));
    track(c.proc);
    // Waiting for a second worker, the first is idle: only pings cross.
    const w = track(startWorker(c.url, 'idle'));
    await c.proc.waitFor(/w1 joined/);
    c.proc.kill('SIGUSR2');
    await c.proc.waitFor(/wall clock stepped/);
    const mark = c.proc.log.length;
    w.kill('SIGSTOP');
    // 1.5 to 2 heartbeats; on the wall clock, no ping would go out for a minute.
    await c.proc.waitFor(/w1 left \(no heartbeat for [\d.]+ s \(--heartbeat 1\)\)/, 10_000, mark);
    w.kill('SIGKILL');
    c.proc.kill('SIGKILL');
  });

  test('a worker that joins mid-run is admitted at a step boundary with its own shard', { timeout: 60_000 }, async () => {
    const dir = out('join');
    // Steps enough that the second worker, started at step 15, joins before the end even on a loaded machine.
    const c = await startCoordinator(['--steps', '300', '--log-every', '1', '--checkpoint-every', '0', '--out', dir]);
    track(c.proc);
    const first = track(startWorker(c.url, 'first'));
    await c.proc.waitFor(/step 15\/300/);
    const second = track(startWorker(c.url, 'second'));
    await second.waitFor(/shard plan 2: 30000 images \(0 kept, 30000 received\)/);
    assert.equal(await c.proc.exited, 0, c.proc.log);
    assert.deepEqual(shardPlans(c.proc.log), [[60000], [30000, 30000]]);
    // The first worker keeps half of its shard and is sent nothing; the second gets the other half.
    assert.deepEqual(imagesSent(c.proc.log), [60000, 30000]);
    assert.match(first.log, /shard plan 2: 30000 images \(30000 kept, 0 received\)/);
    assert.match(c.proc.log, /step 300\/300 .* workers=2 /);
    assert.deepEqual(loggedSteps(c.proc.log), range(1, 300));
    assert.equal(await first.exited, 0);
    assert.equal(await second.exited, 0);
  });

  test('--max-workers: a worker over the cap is told why, and retries until there is room', { timeout: 120_000 }, async () => {
    const dir = out('cap');
    // Steps the run cannot finish before the extra worker joins: 200 took under 2 s, and the coordinator had gone
    // before the extra worker's retry. The run is stopped once it has joined.
    const c = await startCoordinator(['--steps', '100000', '--max-workers', '1', '--log-every', '50', '--checkpoint-every', '0', '--out', dir]);
    track(c.proc);
    const first = track(startWorker(c.url, 'first'));
    await c.proc.waitFor(/step 50\/100000/);
    const extra = track(startWorker(c.url, 'extra'));
    await extra.waitFor(/COORDINATOR_FULL: the coordinator already has --max-workers 1 workers/);
    await extra.waitFor(/reconnecting in/);
    first.kill('SIGTERM'); // leaves cleanly; the extra worker gets its place
    assert.equal(await first.exited, 0);
    await extra.waitFor(/joined as w\d+/);
    c.proc.kill('SIGTERM');
    assert.equal(await c.proc.exited, 0, c.proc.log);
    assert.equal(await extra.exited, 0);
  });
});

describe('coordinator failure and resume', () => {
  test('SIGKILL the coordinator; restarted with --resume it skips a corrupted checkpoint, the workers reconnect by themselves, and the run completes', { timeout: 120_000 }, async () => {
    const dir = out('resume');
    const port = await freePort();
    const args = ['coordinator', '--port', String(port), '--metrics-port', '-1', '--steps', '150', '--log-every', '1', '--checkpoint-every', '20', '--keep-checkpoints', '3', '--out', dir];
    const first = track(new GanfleetProcess(args));
    await first.waitFor(/listening for workers/);
    const url = `ws://127.0.0.1:${port}`;
    const workers = ['a', 'b'].map((n) => track(startWorker(url, n)));
    await first.waitFor(/step 70\/150/);
    first.kill('SIGKILL');
    await first.exited;
    // A step takes about 10 ms: the kill, sent once this process has read "step 70", may land past step 80 (a
    // slow wake-up of this process on a loaded machine), when a fourth checkpoint was written and the oldest pruned.
    const lastStep = Math.max(...loggedSteps(first.log));
    const ckpts = fs.readdirSync(path.join(dir, 'checkpoints')).sort();
    const saved = ckpts.map((f) => Number(/^ckpt-(\d{9})\.bin$/.exec(f)?.[1]));
    const newestStep = saved[2];
    assert.ok(newestStep >= 60 && newestStep <= lastStep, `${ckpts} after step ${lastStep}`);
    assert.deepEqual(saved, [newestStep - 40, newestStep - 20, newestStep], `the newest 3 are kept: ${ckpts}`);
    const resumedAt = newestStep - 20;
    // A torn newest checkpoint (as a crash mid-write would leave without the atomic rename).
    const newest = path.join(dir, 'checkpoints', ckpts[2]);
    fs.truncateSync(newest, fs.statSync(newest).size - 1000);
    for (const w of workers) await w.waitFor(/reconnecting in/);

    // Both workers must rejoin before it starts: 110 steps take about a second now, less than a
    // reconnect backoff can be, and a worker that misses the run would retry forever.
    const second = track(new GanfleetProcess([...args, '--resume', '--min-workers', '2']));
    await second.waitFor(new RegExp(`skipping checkpoint .*${ckpts[2].replace('.', '\\.')}: payload is \\d+ bytes, expected \\d+ \\(truncated\\?\\)`));
    await second.waitFor(new RegExp(`resumed from .*${ckpts[1].replace('.', '\\.')} at step ${resumedAt}`));
    assert.equal(await second.exited, 0, second.log);
    assert.deepEqual(loggedSteps(second.log), range(resumedAt + 1, 150), 'continues from the checkpointed step');
    for (const w of workers) {
      assert.equal(await w.exited, 0, w.log);
      assert.match(w.log, /joined as w[12]:/);
      // Worker ids continue from the checkpoint's counter, so a rejoin never reuses one.
      assert.match(w.log, /joined as w[34]:/, 'rejoined the restarted coordinator');
    }
    const summary = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8'));
    assert.equal(summary.steps, 150);
    assert.equal(summary.resumedFrom, resumedAt);
  });

  test('SIGTERM on the coordinator finishes the step, checkpoints, stops the workers and exits 0', { timeout: 60_000 }, async () => {
    const dir = out('sigterm');
    const c = await startCoordinator(['--steps', '100000', '--log-every', '10', '--checkpoint-every', '0', '--out', dir]);
    track(c.proc);
    const w = track(startWorker(c.url, 'w'));
    await c.proc.waitFor(/step 30\/100000/);
    c.proc.kill('SIGTERM');
    assert.equal(await c.proc.exited, 0, c.proc.log);
    assert.equal(await w.exited, 0, 'the worker was told to stop');
    const step = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')).steps;
    assert.ok(fs.existsSync(path.join(dir, 'checkpoints', `ckpt-${String(step).padStart(9, '0')}.bin`)), 'checkpoint of the last step');
    assert.match(w.log, /stopped by the coordinator: SIGTERM received/);
  });
});
