import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { checkpointName, decodeCheckpoint } from '../src/coordinator/checkpoint';
import { coordinatorMemoryEstimate, memoryWarning, oversubscriptionWarning, workerMemoryEstimate } from '../src/local';
import { availableCores, availableMemory } from '../src/util/process';
import { blankMnistDir, freePort, tempDir } from './harness';
import { CLI, nodeUnrunnableBy } from './helpers';

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

/** The pid of each worker's join in the coordinator's log, in order: a worker that rejoins appears again. */
function joinedPids(log: string): number[] {
  return [...log.matchAll(/pid (\d+), backend/g)].map((m) => Number(m[1]));
}

/** The mailbox directories named for `pid`, in /dev/shm and the temp dir (where there is no /dev/shm). */
function mailboxDirsOf(pid: number): string[] {
  const listed = (dir: string) => (fs.existsSync(dir) ? fs.readdirSync(dir) : []);
  return [...listed('/dev/shm'), ...listed(os.tmpdir())].filter((name) => name.startsWith(`ganfleet-worker-${pid}-`));
}

/** `ganfleet <args>` as a child (run by `node`) whose stdout and stderr are collected into one log. */
function spawnCli(args: string[], node = process.execPath, nodeArgs: string[] = [], env: NodeJS.ProcessEnv = {}): { child: ChildProcess; log: () => string; exit: Promise<number | null> } {
  const child = spawn(node, [...nodeArgs, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  return { child, log: () => log, exit: new Promise((r) => child.on('exit', r)) };
}

function startLocal(out: string): { child: ChildProcess; log: () => string; workerPids: () => number[] } {
  const { child, log } = spawnCli(['local', '--workers', '2', '--steps', '100000', '--log-every', '10', '--metrics-port', '-1', '--out', out]);
  return { child, log, workerPids: () => joinedPids(log()) };
}

test('SIGINT stops a local run cleanly: outputs written, exit 0, no worker left; its port admits only its own workers', { timeout: 60_000 }, async () => {
  const out = tempDir('sigint');
  const run = startLocal(out);
  await waitFor(() => /step 10\/100000/.test(run.log()), 30_000, 'training to start');
  const pids = run.workerPids();
  assert.equal(pids.length, 2);
  // Another user of the machine could join a token-less run on loopback, and take a worker's place.
  const url = /listening for workers on (ws:\/\/\S+) \(token required\)/.exec(run.log())?.[1];
  assert.ok(url, run.log());
  const status = await new Promise<number>((resolve, reject) => {
    const stranger = new WebSocket(url);
    stranger.on('unexpected-response', (_req, res) => resolve(res.statusCode!));
    stranger.on('open', () => reject(new Error('a connection without the token was accepted')));
    stranger.on('error', () => {});
  });
  assert.equal(status, 401);
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

test('a second SIGINT while the first stop is still writing outputs exits at once, with 130, and takes the workers with it', { timeout: 60_000 }, async () => {
  const out = tempDir('sigint2');
  // The first stop evaluates 60,000 samples before it writes its outputs: seconds in which to send the second.
  const run = spawnCli(['local', '--workers', '1', '--steps', '100000', '--log-every', '10', '--eval-every', '100000', '--eval-samples', '60000', '--metrics-port', '-1', '--out', out]);
  await waitFor(() => /step 10\/100000/.test(run.log()), 30_000, 'training to start');
  const pids = joinedPids(run.log());
  run.child.kill('SIGINT');
  await waitFor(() => /stop requested: SIGINT received/.test(run.log()), 10_000, 'the first stop');
  run.child.kill('SIGINT');
  assert.equal(await run.exit, 130, run.log());
  assert.match(run.log(), /second signal: killing workers/);
  assert.doesNotMatch(run.log(), /eval step/, 'the evaluation was cut short');
  await waitFor(() => pids.every((p) => !alive(p)), 10_000, 'worker processes to exit');
  fs.rmSync(out, { recursive: true, force: true });
});

test('a stop before the workers have joined stops them at once, instead of leaving them to retry a closed port', { timeout: 60_000 }, async () => {
  const out = tempDir('stop-unjoined');
  // Each worker blocks for a second before it loads the CLI, so none can have joined when the stop comes; one that
  // gets past it writes its pid, which it could only do where it was left running after the stop.
  const preload = path.join(out, 'slow-worker.js');
  fs.writeFileSync(
    preload,
    `if (process.argv.includes('worker')) { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000); require('node:fs').writeFileSync(${JSON.stringify(path.join(out, 'past-'))} + process.pid, ''); }`,
  );
  const run = spawnCli(['local', '--workers', '2', '--steps', '100', '--metrics-port', '-1', '--out', path.join(out, 'run')], process.execPath, [], { NODE_OPTIONS: `--require ${preload}` });
  await waitFor(() => /started 2 worker processes/.test(run.log()), 30_000, 'the workers to be started');
  run.child.kill('SIGINT');
  assert.equal(await run.exit, 0, run.log());
  assert.match(run.log(), /stopping the workers that were not connected to hear the stop \(not joined yet, or dropped and not back\): local-1, local-2/);
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(fs.readdirSync(out).filter((f) => f.startsWith('past-')), [], 'no worker got past its start');
  assert.doesNotMatch(run.log(), /reconnecting in/);
});

test('a stop with a worker that the coordinator dropped (frozen) does not call it unjoined, and says whom it waits for and kills at its exit', { timeout: 60_000 }, async () => {
  const out = tempDir('stop-frozen');
  const run = spawnCli(['local', '--workers', '2', '--steps', '100000', '--log-every', '10', '--heartbeat', '1', '--checkpoint-every', '0', '--metrics-port', '-1', '--out', out]);
  await waitFor(() => /step 10\/100000/.test(run.log()), 30_000, 'training to start');
  const frozen = /w\d+ joined from \S+ \("local-2" pid (\d+),/.exec(run.log())!;
  const pid = Number(frozen[1]);
  process.kill(pid, 'SIGSTOP');
  try {
    await waitFor(() => /left \(no heartbeat/.test(run.log()), 15_000, 'the frozen worker to be dropped');
    run.child.kill('SIGINT');
    assert.equal(await run.exit, 0, run.log());
  } finally {
    if (alive(pid)) process.kill(pid, 'SIGCONT');
  }
  // It had joined, and trained: it was dropped.
  assert.doesNotMatch(run.log(), /had not joined/);
  assert.match(run.log(), /stopping the workers that were not connected to hear the stop \(not joined yet, or dropped and not back\): [^\n]*local-2/);
  // Stopped, it takes neither SIGTERM nor anything else but SIGKILL: the exit waits for it, and says so.
  assert.match(run.log(), new RegExp(`waiting for local-2 \\(pid ${pid}\\) to exit: still running 2 s after the coordinator closed; sending SIGTERM, and SIGKILL at 10 s`));
  assert.match(run.log(), new RegExp(`local-2 \\(pid ${pid}\\) did not exit within 10 s of the coordinator's close \\(hung, or stopped\\): killing it \\(SIGKILL\\)`));
  await waitFor(() => !alive(pid), 5_000, 'the frozen worker to be gone');
});

test('a worker process that dies after a stop was asked for is not restarted: the run is ending', { timeout: 90_000 }, async () => {
  const out = tempDir('stop-lost');
  // The stop scores its step after the checkpoint: seconds in which the worker dies.
  const run = spawnCli(['local', '--workers', '1', '--steps', '100000', '--log-every', '10', '--eval-every', '100000', '--eval-samples', '20000', '--metrics-port', '-1', '--out', out]);
  await waitFor(() => /step 10\/100000/.test(run.log()), 30_000, 'training to start');
  const [pid] = joinedPids(run.log());
  run.child.kill('SIGINT');
  await waitFor(() => /checkpoint .*ckpt-/.test(run.log()), 30_000, "the stop's checkpoint");
  process.kill(pid, 'SIGKILL');
  assert.equal(await run.exit, 0, run.log());
  assert.doesNotMatch(run.log(), /restarting it/);
  assert.match(run.log(), /eval step \d+: fid=/, 'the stop still scored its step');
  fs.rmSync(out, { recursive: true, force: true });
});

test('a worker process that dies after the last step, while the final outputs are written, fails nothing: exit 0, ok, no restart', { timeout: 90_000 }, async () => {
  const out = tempDir('final-lost');
  // The final evaluation (--eval-every does not divide --steps: it comes after the last step's line) takes seconds,
  // in which the worker dies with no restart left.
  const run = spawnCli(['local', '--workers', '1', '--steps', '20', '--log-every', '20', '--max-restarts', '0', '--eval-every', '1000', '--eval-samples', '20000', '--metrics-port', '-1', '--out', out]);
  await waitFor(() => /step 20\/20/.test(run.log()), 60_000, 'the last step');
  const [pid] = joinedPids(run.log());
  process.kill(pid, 'SIGKILL');
  assert.equal(await run.exit, 0, run.log());
  assert.doesNotMatch(run.log(), /restart|stop requested/);
  const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  assert.equal(summary.ok, true);
  assert.equal(summary.evaluations.length, 1);
  fs.rmSync(out, { recursive: true, force: true });
});

test('a signal in the last moments of a finished run (local, coordinator, worker), once its outputs are written, leaves it finished: exit 0, not 130/143', { timeout: 90_000 }, async () => {
  // At the process's 'exit' event, the last moment JavaScript runs, a signal to itself: with no stop handler
  // left, it took the default action at once (killed by SIGTERM, 143) though the run had finished.
  const hooks = tempDir('late-signal-hook');
  const hook = path.join(hooks, 'late-signal.js');
  fs.writeFileSync(hook, "process.on('exit', () => process.kill(process.pid, 'SIGTERM'));\n");
  const out = tempDir('late-signal-local');
  const local = spawnCli(['local', '--workers', '1', '--steps', '2', '--metrics-port', '-1', '--out', out], process.execPath, ['--require', hook]);
  const code = await local.exit;
  assert.equal(local.child.signalCode, null, local.log());
  assert.equal(code, 0, local.log());
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8')).stopReason, 'finished 2 steps');
  const out2 = tempDir('late-signal-coordinator');
  const coordinator = spawnCli(['coordinator', '--port', '0', '--steps', '2', '--metrics-port', '-1', '--linger', '0', '--out', out2], process.execPath, ['--require', hook]);
  const listening = /listening for workers on (ws:\/\/\S+)/;
  await waitFor(() => listening.test(coordinator.log()), 30_000, 'the coordinator to listen');
  const worker = spawnCli(['worker', '--coordinator', listening.exec(coordinator.log())![1]], process.execPath, ['--require', hook]);
  const [ccode, wcode] = await Promise.all([coordinator.exit, worker.exit]);
  assert.equal(coordinator.child.signalCode, null, coordinator.log());
  assert.equal(worker.child.signalCode, null, worker.log());
  assert.equal(ccode, 0, coordinator.log());
  assert.equal(wcode, 0, worker.log());
  for (const dir of [hooks, out, out2]) fs.rmSync(dir, { recursive: true, force: true });
});

test('a worker frozen past the heartbeat but within --hang-timeout is left alone, and rejoins; one frozen past it is killed and restarted: a run of one worker does not stall for ever', { timeout: 120_000 }, async () => {
  const out = tempDir('hung');
  const run = spawnCli(['local', '--workers', '1', '--steps', '100000', '--log-every', '10', '--heartbeat', '1', '--hang-timeout', '10', '--metrics-port', '-1', '--out', out]);
  const spawned = Date.now();
  await waitFor(() => /step 10\/100000/.test(run.log()), 30_000, 'training to start');
  const [hung] = joinedPids(run.log());
  const joins = () => joinedPids(run.log());
  // Frozen past the heartbeat, then woken: it reads why it was dropped and rejoins, the same process.
  process.kill(hung, 'SIGSTOP');
  await waitFor(() => /w1 left \(no heartbeat/.test(run.log()), 30_000, 'the drop');
  await new Promise((r) => setTimeout(r, 2_000));
  process.kill(hung, 'SIGCONT');
  await waitFor(() => joins().length >= 2, 30_000, 'the worker to rejoin');
  const rejoined = run.log().length;
  await waitFor(() => /step \d+\/100000/.test(run.log().slice(rejoined)), 30_000, 'training to go on after the rejoin');
  // The same process each time (on a loaded machine a 1 s heartbeat can cost it a reconnect more while its shard is planned).
  assert.ok(joins().every((pid) => pid === hung), `${joins()}`);
  // Alive all along, it outlives --hang-timeout counted from its start: each second its main thread is free resets the count.
  await new Promise((r) => setTimeout(r, Math.max(0, spawned + 13_000 - Date.now())));
  assert.doesNotMatch(run.log(), /killing it as hung/);
  assert.ok(alive(hung));
  // Frozen for good: killed once silent for --hang-timeout.
  process.kill(hung, 'SIGSTOP');
  await waitFor(() => joins().some((pid) => pid !== hung), 60_000, 'a new worker to join');
  assert.match(run.log(), new RegExp(`worker 1 \\(pid ${hung}\\) has not had its main thread free for 1\\d s \\(--hang-timeout 10\\): killing it as hung`));
  assert.equal((run.log().match(/killing it/g) ?? []).length, 1, run.log());
  assert.match(run.log(), new RegExp(`worker 1 \\(pid ${hung}\\) exited with SIGKILL; restarting it \\(1/3\\)`));
  const joined = run.log().lastIndexOf('pid ');
  await waitFor(() => /step \d+\/100000/.test(run.log().slice(joined)), 30_000, 'training to go on with the new worker');
  assert.equal(alive(hung), false);
  run.child.kill('SIGKILL');
});

test('a worker busy with one long round is dropped by the coordinator but not killed by local: it rejoins warm and the run finishes', { timeout: 90_000 }, async () => {
  const out = tempDir('slow-round');
  // A GPU's first kernels, say: the first round of each worker process keeps its main thread busy for 25 s, past
  // --heartbeat and --round-timeout (and past the 20 s after a drop at which local used to kill).
  const preload = path.join(out, 'slow-first-round.js');
  fs.writeFileSync(
    preload,
    `if (process.argv.includes('worker') && require('node:worker_threads').isMainThread) {
       const { ShardCompute } = require(${JSON.stringify(path.resolve(__dirname, '../src/worker/compute.js'))});
       const step = ShardCompute.prototype.step; let first = true;
       ShardCompute.prototype.step = function (...a) {
         if (first) { first = false; const end = Date.now() + 25000; while (Date.now() < end); }
         return step.apply(this, a);
       };
     }`,
  );
  const run = spawnCli(['local', '--workers', '1', '--steps', '5', '--heartbeat', '1', '--round-timeout', '2', '--max-restarts', '0', '--metrics-port', '-1', '--out', path.join(out, 'run')], process.execPath, [], { NODE_OPTIONS: `--require ${preload}` });
  assert.equal(await run.exit, 0, run.log());
  assert.match(run.log(), /w1 left \(/);
  const pids = joinedPids(run.log());
  assert.equal(pids.length, 2, run.log());
  assert.equal(pids[0], pids[1], 'the same process rejoined');
  assert.doesNotMatch(run.log(), /killing it|restart/);
});

test('a worker that hangs before it joins is killed after --hang-timeout and restarted: the run does not wait for it for ever', { timeout: 90_000 }, async () => {
  const out = tempDir('hung-at-start');
  const marker = path.join(out, 'hung-once');
  const preload = path.join(out, 'hang-first-worker.js');
  fs.writeFileSync(preload, `if (process.argv.includes('worker') && !require('node:fs').existsSync(${JSON.stringify(marker)})) { require('node:fs').writeFileSync(${JSON.stringify(marker)}, String(process.pid)); for (;;); }`);
  const run = spawnCli(['local', '--workers', '1', '--steps', '5', '--hang-timeout', '10', '--max-restarts', '1', '--metrics-port', '-1', '--out', path.join(out, 'run')], process.execPath, [], { NODE_OPTIONS: `--require ${preload}` });
  assert.equal(await run.exit, 0, run.log());
  const hung = Number(fs.readFileSync(marker, 'utf8'));
  assert.match(run.log(), new RegExp(`worker 1 \\(pid ${hung}\\) has not had its main thread free for 1\\d s \\(--hang-timeout 10\\): killing it as hung`));
  assert.match(run.log(), new RegExp(`worker 1 \\(pid ${hung}\\) exited with SIGKILL; restarting it \\(1/1\\)`));
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'run', 'summary.json'), 'utf8')).steps, 5);
});

test('a worker process that dies is restarted, up to --max-restarts; with none left and no worker, the run stops and exits 1', { timeout: 90_000 }, async () => {
  const out = tempDir('restart');
  const run = spawnCli(['local', '--workers', '1', '--steps', '100000', '--log-every', '10', '--max-restarts', '1', '--metrics-port', '-1', '--out', out]);
  const workerPids = () => joinedPids(run.log());
  await waitFor(() => /step 10\/100000/.test(run.log()), 30_000, 'training to start');
  const [first] = workerPids();
  process.kill(first, 'SIGKILL');
  await waitFor(() => workerPids().length === 2, 30_000, 'a restarted worker to join');
  assert.match(run.log(), new RegExp(`worker 1 \\(pid ${first}\\) exited with SIGKILL; restarting it \\(1/1\\)`));
  // It trains: a progress line comes after the second join.
  const joined = run.log().lastIndexOf('pid ');
  await waitFor(() => /step \d+\/100000/.test(run.log().slice(joined)), 30_000, 'training to go on with the restarted worker');
  const second = workerPids()[1];
  process.kill(second, 'SIGKILL');
  assert.equal(await run.exit, 1, run.log());
  assert.match(run.log(), new RegExp(`worker 1 \\(pid ${second}\\) exited with SIGKILL; no restarts left`));
  assert.match(run.log(), /stop requested: worker 1 was lost and no restarts are left \(--max-restarts 1\)/);
  // On stderr too, where every other failure says why: the log's last line was local stopping its workers.
  assert.match(run.log(), /^ganfleet: the run failed: worker 1 was lost and no restarts are left \(--max-restarts 1\)$/m);
  const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  assert.equal(summary.ok, false);
  // No later ganfleet process sweeps the killed worker's mailbox: local, which saw it die, removes it.
  assert.deepEqual(mailboxDirsOf(second), []);
  fs.rmSync(out, { recursive: true, force: true });
});

for (const remade of [false, true]) {
  const how = remade ? 'removed and made again at its path (a CI workspace cleaned)' : 'removed';
  test(`a worker process restarted after its working directory was ${how} mid-run starts, in the root, and trains`, { timeout: 90_000 }, async () => {
    const out = tempDir('cwd-removed');
    const cwd = tempDir('cwd');
    const child = spawn(process.execPath, [CLI, 'local', '--workers', '1', '--steps', '100000', '--log-every', '10', '--max-restarts', '1', '--metrics-port', '-1', '--out', out], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout!.on('data', (d) => (log += d));
    child.stderr!.on('data', (d) => (log += d));
    const exit = new Promise((r) => child.on('exit', r));
    await waitFor(() => /step 10\/100000/.test(log), 30_000, 'training to start');
    fs.rmdirSync(cwd);
    // The path names a directory again, but not local's: its own is gone, and a child started in it fails at once.
    if (remade) fs.mkdirSync(cwd);
    const [first] = joinedPids(log);
    process.kill(first, 'SIGKILL');
    await Promise.race([
      waitFor(() => joinedPids(log).length === 2, 30_000, 'a restarted worker to join'),
      exit.then((code) => assert.fail(`local exited (${code}) instead of restarting its worker:\n${log}`)),
    ]);
    const joined = log.lastIndexOf('pid ');
    await waitFor(() => /step \d+\/100000/.test(log.slice(joined)), 30_000, 'training to go on with the restarted worker');
    assert.doesNotMatch(log, /uv_cwd/);
    child.kill('SIGINT');
    assert.equal(await exit, 0, log);
    for (const d of [out, cwd]) fs.rmSync(d, { recursive: true, force: true });
  });
}

test('a worker process that cannot be started counts as lost: restarted up to --max-restarts, then the run stops and exits 1 (it waited for it for ever)', { timeout: 90_000 }, async () => {
  const out = tempDir('nostart');
  // local starts its workers with its own node binary: a copy, removed mid-run, makes the restart's spawn fail (ENOENT).
  const bin = tempDir('node');
  const node = path.join(bin, 'node');
  fs.copyFileSync(process.execPath, node);
  fs.chmodSync(node, 0o755);
  const data = blankMnistDir(256);
  const run = spawnCli(['local', '--workers', '1', '--steps', '100000', '--log-every', '10', '--max-restarts', '2', '--data-dir', data, '--metrics-port', '-1', '--out', out], node);
  await waitFor(() => /step 10\/100000/.test(run.log()), 30_000, 'training to start');
  const [worker] = joinedPids(run.log());
  fs.rmSync(bin, { recursive: true });
  process.kill(worker, 'SIGKILL');
  assert.equal(await run.exit, 1, run.log());
  assert.match(run.log(), new RegExp(`worker 1 \\(pid ${worker}\\) exited with SIGKILL; restarting it \\(1/2\\)`));
  assert.match(run.log(), /worker 1 could not be started \(spawn \S+node ENOENT\); restarting it \(2\/2\)\n/);
  assert.match(run.log(), /worker 1 could not be started \(spawn \S+node ENOENT\); no restarts left\n/);
  // A process that never started is lost once: Node follows its 'error' with a 'close' (code -2).
  assert.doesNotMatch(run.log(), /pid undefined/);
  assert.match(run.log(), /stop requested: worker 1 was lost and no restarts are left \(--max-restarts 2\)/);
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8')).ok, false);
  for (const d of [out, data]) fs.rmSync(d, { recursive: true, force: true });
});

// In local's own process only, its second worker spawn fails: as one hitting ENOENT or EAGAIN does (an 'error' event,
// then a 'close'), or as one hitting ENOMEM, E2BIG or EPERM does (spawn throws; from a restart's 'close' handler the
// throw ended local with no checkpoint).
for (const [how, second, said] of [
  ['fails (an error event)', "return spawn.call(this, '/nonexistent/node', args, opts);", 'spawn /nonexistent/node ENOENT'],
  ['throws (ENOMEM)', "throw Object.assign(new Error('spawn ENOMEM'), { code: 'ENOMEM', errno: -12, syscall: 'spawn' });", 'spawn ENOMEM'],
] as const) {
  test(`a worker process whose spawn ${how} is lost once: the restart after it trains, and no second process is started for the slot`, { timeout: 90_000 }, async () => {
    const out = tempDir('failonce');
    const preload = path.join(out, 'fail-second-spawn.js');
    fs.writeFileSync(
      preload,
      `const cp = require('node:child_process'); const spawn = cp.spawn; let n = 0;
       cp.spawn = function (cmd, args, opts) { if (args.includes('worker') && ++n === 2) { ${second} } return spawn.call(this, cmd, args, opts); };`,
    );
    const data = blankMnistDir(256);
    const run = spawnCli(['local', '--workers', '1', '--steps', '100000', '--log-every', '10', '--max-restarts', '3', '--data-dir', data, '--metrics-port', '-1', '--out', path.join(out, 'run')], process.execPath, ['--require', preload]);
    await waitFor(() => /step 10\/100000/.test(run.log()), 30_000, 'training to start');
    const [worker] = joinedPids(run.log());
    process.kill(worker, 'SIGKILL');
    await Promise.race([
      waitFor(() => /w2 joined/.test(run.log()), 30_000, 'the restarted worker to join'),
      run.exit.then((code) => assert.fail(`local exited (${code}) instead of restarting its worker:\n${run.log()}`)),
    ]);
    const joined = run.log().lastIndexOf('w2 joined');
    await waitFor(() => (run.log().slice(joined).match(/\] step \d+\/100000/g) ?? []).length >= 2, 30_000, 'training to go on');
    run.child.kill('SIGINT');
    assert.equal(await run.exit, 0, run.log());
    assert.match(run.log(), new RegExp(`worker 1 \\(pid ${worker}\\) exited with SIGKILL; restarting it \\(1/3\\)`));
    assert.ok(run.log().includes(`worker 1 could not be started (${said}); restarting it (2/3)\n`), run.log());
    // Node follows a failed spawn's 'error' with a 'close' (code -2): counted again, it started a second process.
    assert.doesNotMatch(run.log(), /\(3\/3\)|pid undefined|COORDINATOR_FULL/);
    assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'run', 'summary.json'), 'utf8')).ok, true);
    for (const d of [out, data]) fs.rmSync(d, { recursive: true, force: true });
  });
}

test('workers exit by themselves when the local parent is SIGKILLed', { timeout: 60_000 }, async () => {
  const out = tempDir('sigkill');
  const run = startLocal(out);
  await waitFor(() => /step 10\/100000/.test(run.log()), 30_000, 'training to start');
  const pids = run.workerPids();
  run.child.kill('SIGKILL');
  await waitFor(() => pids.every((p) => !alive(p)), 15_000, 'orphaned workers to exit');
  fs.rmSync(out, { recursive: true, force: true });
});

test('a worker whose main thread hangs exits too when the local parent is SIGKILLed: it never hears its IPC channel close', { timeout: 60_000 }, async () => {
  const out = tempDir('sigkill-hung');
  const preload = path.join(out, 'hang.js');
  fs.writeFileSync(preload, "if (process.argv.includes('worker')) setTimeout(() => { process.stderr.write(`hanging ${process.pid}\\n`); for (;;); }, 3000);\n");
  const run = spawnCli(['local', '--workers', '1', '--steps', '100000', '--metrics-port', '-1', '--out', out], process.execPath, [], { NODE_OPTIONS: `--require ${preload}` });
  await waitFor(() => /hanging \d+/.test(run.log()), 30_000, 'the worker to hang');
  const hung = Number(/hanging (\d+)/.exec(run.log())![1]);
  // Before the coordinator would drop it (5 s heartbeat).
  run.child.kill('SIGKILL');
  await waitFor(() => !alive(hung), 15_000, 'the hung orphan to die');
  fs.rmSync(out, { recursive: true, force: true });
});

test('--no-native reaches the workers local starts: they run on XNNPACK and say so', { timeout: 60_000 }, async () => {
  const out = tempDir('nonative');
  const run = spawnCli(['local', '--workers', '1', '--steps', '5', '--backend', 'wasm', '--no-native', '--metrics-port', '-1', '--out', out]);
  const code = await run.exit;
  const log = run.log();
  assert.equal(code, 0, log);
  assert.match(log, /\[worker local-1\] backend wasm \(native matmul off \(--no-native or GANFLEET_NATIVE=0\); using XNNPACK; using wasm\)/);
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8')).steps, 5);
  fs.rmSync(out, { recursive: true, force: true });
});

test('a local run trains the same through shared-memory mailboxes as over the WebSocket alone, on a backend that copies mailed weights and one that keeps them, and leaves nothing in /dev/shm', { timeout: 120_000 }, async () => {
  const shm = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
  // Only this test's processes: another ganfleet run on the machine makes and removes its own directories meanwhile.
  const pids = new Set<number>();
  const run = async (backend: string, flags: string[]) => {
    const out = tempDir('mailbox');
    const run = spawnCli(['local', '--workers', '1', '--steps', '20', '--seed', '5', '--backend', backend, '--metrics-port', '-1', '--out', out, ...flags]);
    const code = await run.exit;
    const log = run.log();
    assert.equal(code, 0, log);
    for (const pid of [run.child.pid!, ...joinedPids(log)]) pids.add(pid);
    const result = { log, weights: fs.readFileSync(path.join(out, 'generator', 'weights.bin')), summary: JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8')) };
    fs.rmSync(out, { recursive: true, force: true });
    return result;
  };
  // wasm copies mailed weights into its heap; cpu, as tfjs-node, keeps the arrays it is given, which the next mail overwrites.
  for (const backend of ['wasm', 'cpu']) {
    const mailed = await run(backend, []);
    assert.match(mailed.log, /\[coordinator\] w1 exchanges frames through shared memory/);
    assert.match(mailed.log, /\[worker local-1\] frames travel through shared memory/);
    const socketed = await run(backend, ['--no-mailbox']);
    assert.doesNotMatch(socketed.log, /shared memory/);
    // One worker and one seed: the same run, bit for bit, whichever way the frames went.
    assert.ok(mailed.weights.equals(socketed.weights), `${backend}: the generators differ`);
    assert.deepEqual(mailed.summary.last, socketed.summary.last, backend);
    assert.ok(Math.abs(mailed.summary.bytesReceivedPerStep - socketed.summary.bytesReceivedPerStep) < 100, 'frame bytes are counted either way');
  }
  assert.equal(pids.size, 8, 'four runs, each a coordinator and a worker');
  const left = fs.readdirSync(shm).filter((n) => pids.has(Number(/^ganfleet-(?:coordinator|worker)-(\d+)-/.exec(n)?.[1])));
  assert.deepEqual(left, [], 'mailbox directories left behind');
});

test('a worker started with --no-mailbox declines the offer and trains over the WebSocket', { timeout: 60_000 }, async () => {
  const out = tempDir('nomailbox');
  const coordinator = spawnCli(['coordinator', '--port', '0', '--steps', '5', '--metrics-port', '-1', '--out', out]);
  const listening = /listening for workers on (ws:\/\/\S+)/;
  await waitFor(() => listening.test(coordinator.log()), 30_000, 'the coordinator to listen');
  const worker = spawnCli(['worker', '--coordinator', listening.exec(coordinator.log())![1], '--no-mailbox']);
  const [code, wcode] = await Promise.all([coordinator.exit, worker.exit]);
  assert.equal(code, 0, coordinator.log());
  assert.equal(wcode, 0, worker.log());
  assert.match(coordinator.log(), /finished 5 steps/);
  assert.doesNotMatch(coordinator.log() + worker.log(), /shared memory/);
  assert.match(worker.log(), /frames travel over the WebSocket \(--no-mailbox\)/);
  fs.rmSync(out, { recursive: true, force: true });
});

test(
  "a worker that cannot read the coordinator's mailbox (another user) says why and trains over the WebSocket",
  { timeout: 60_000, skip: process.getuid?.() !== 0 && 'needs root, to start the worker as another user' },
  async (t) => {
    const nobody = { uid: 65534, gid: 65534 };
    const unrunnable = nodeUnrunnableBy(nobody);
    if (unrunnable) return t.skip(unrunnable);
    const readable = (file: string) => spawnSync(process.execPath, ['-e', 'require("fs").accessSync(process.argv[1], 4)', file], nobody).status === 0;
    let cli = CLI;
    let links: string | null = null;
    if (!readable(cli)) {
      // A checkout under a private home directory (root's is 0700, and CI runs as root) is closed to nobody:
      // the worker runs from hard links to the same files, in a directory it can read.
      links = tempDir('nobody');
      fs.chmodSync(links, 0o755);
      const root = path.resolve(path.dirname(CLI), '..', '..');
      const linked = spawnSync('cp', ['-al', ...['dist', 'node_modules', 'native', 'package.json'].map((n) => path.join(root, n)), links], { encoding: 'utf8' });
      cli = path.join(links, 'dist', 'src', 'cli.js');
      if (linked.status !== 0 || !readable(cli)) {
        fs.rmSync(links, { recursive: true, force: true });
        t.skip(`${CLI} is not readable by uid 65534, nor could it be linked where it is (${linked.stderr.trim()})`);
        return;
      }
    }
    const out = tempDir('otheruser');
    const coordinator = spawnCli(['coordinator', '--port', '0', '--steps', '5', '--metrics-port', '-1', '--out', out]);
    const listening = /listening for workers on (ws:\/\/\S+)/;
    await waitFor(() => listening.test(coordinator.log()), 30_000, 'the coordinator to listen');
    // nobody: the coordinator's mailbox directory (root's, 0700) is closed to it, as another machine's would be.
    const worker = spawn(process.execPath, [cli, 'worker', '--coordinator', listening.exec(coordinator.log())![1]], { stdio: ['ignore', 'pipe', 'pipe'], ...nobody });
    let wlog = '';
    worker.stdout!.on('data', (d) => (wlog += d));
    worker.stderr!.on('data', (d) => (wlog += d));
    const [code, wcode] = await Promise.all([coordinator.exit, new Promise((r) => worker.on('exit', r))]);
    assert.equal(code, 0, coordinator.log());
    assert.equal(wcode, 0, wlog);
    assert.match(wlog, /frames travel over the WebSocket: the coordinator's mailbox is not readable here \(".*" is in a mailbox directory of another user \(uid 0\), which this process does not open\)/);
    assert.match(coordinator.log(), /finished 5 steps/);
    assert.doesNotMatch(coordinator.log(), /exchanges frames through shared memory/);
    fs.rmSync(out, { recursive: true, force: true });
    if (links) fs.rmSync(links, { recursive: true, force: true });
  },
);

test('a run resumed from a checkpoint with as many workers trains to the same bits as a run never stopped; with fewer, it trains on from the same weights', { timeout: 120_000 }, async () => {
  const root = tempDir('exact-resume');
  const local = async (out: string, workers: number, steps: number, ...flags: string[]) => {
    const run = spawnCli(['local', '--workers', String(workers), '--steps', String(steps), '--seed', '11', '--checkpoint-every', '6', '--sample-every', '1000', '--metrics-port', '-1', '--out', path.join(root, out), ...flags]);
    assert.equal(await run.exit, 0, run.log());
    return run.log();
  };
  const generator = (out: string) => fs.readFileSync(path.join(root, out, 'generator', 'weights.bin'));
  const state = (out: string, step: number) => {
    const c = decodeCheckpoint(fs.readFileSync(path.join(root, out, 'checkpoints', checkpointName(step))), out);
    return { c, arrays: [c.generator, c.discriminator, c.adamGenerator.m, c.adamGenerator.v, c.adamDiscriminator.m, c.adamDiscriminator.v].map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)) };
  };
  // Three workers, so that the order in which answers are summed matters.
  await local('whole', 3, 12);
  await local('resumed', 3, 6);
  const log = await local('resumed', 3, 12, '--resume');
  assert.match(log, /resumed from .*ckpt-000000006\.bin at step 6; the checkpoint's 3 shard slots \(images and seed\) go to the first workers to join/);
  assert.match(log, /shard plan 1: w\d+=20000 w\d+=20000 w\d+=20000; 60000 images sent; 3 slots from the checkpoint/);
  const whole = state('whole', 12);
  assert.equal(whole.c.shards.length, 3);
  assert.deepEqual(whole.c.shards.map((s) => s.indices.length), [20000, 20000, 20000]);
  state('resumed', 12).arrays.forEach((a, i) => assert.ok(a.equals(whole.arrays[i]), `array ${i} of the step-12 checkpoints differs`));
  assert.ok(generator('resumed').equals(generator('whole')), 'the exported generators differ');

  // Two workers cannot draw what three drew: the run trains on from the checkpoint, afresh in its draws.
  fs.cpSync(path.join(root, 'whole', 'checkpoints', checkpointName(6)), path.join(root, 'fewer', 'checkpoints', checkpointName(6)));
  const fewer = await local('fewer', 2, 12, '--resume');
  assert.match(fewer, /resumed from .*ckpt-000000006\.bin at step 6; /);
  assert.match(fewer, /shard plan 1: w\d+=30000 w\d+=30000; 60000 images sent; 2 slots from the checkpoint/);
  // The optimizer carried on from the checkpoint's 6 steps (a fresh start would count 6, not 12); D's makes two updates a step.
  const resumedFewer = state('fewer', 12).c;
  assert.deepEqual([resumedFewer.adamGenerator.step, resumedFewer.adamDiscriminator.step], [12, 24]);
  assert.ok(!generator('fewer').equals(generator('whole')), 'two workers drew what three did');
  fs.rmSync(root, { recursive: true, force: true });
});

test('--hang-timeout 0 never kills a worker as hung', { timeout: 60_000 }, async () => {
  const out = tempDir('hang-off');
  const run = spawnCli(['local', '--workers', '1', '--steps', '100000', '--log-every', '10', '--hang-timeout', '0', '--max-restarts', '0', '--metrics-port', '-1', '--out', out]);
  await waitFor(() => /step 10\/100000/.test(run.log()), 30_000, 'training to start');
  // Past several looks of the hang watch (one a second).
  await new Promise((r) => setTimeout(r, 3_000));
  run.child.kill('SIGINT');
  assert.equal(await run.exit, 0, run.log());
  assert.doesNotMatch(run.log(), /killing it as hung|exited with/);
  fs.rmSync(out, { recursive: true, force: true });
});

test("local's own GANFLEET_* settings do not reach its workers: GANFLEET_METRICS_PORT serves local's metrics, and no worker tries to bind it too", { timeout: 60_000 }, async () => {
  const out = tempDir('env-local');
  // Below the ephemeral range (harness.freePort): a port-0 listen of the test file running beside this one could take it.
  const port = await freePort();
  const run = spawnCli(['local', '--workers', '1', '--steps', '3', '--max-restarts', '0', '--out', out], process.execPath, [], { GANFLEET_METRICS_PORT: String(port) });
  assert.equal(await run.exit, 0, run.log());
  assert.match(run.log(), new RegExp(`\\[coordinator\\] metrics on http://127\\.0\\.0\\.1:${port}/metrics`));
  assert.doesNotMatch(run.log(), /EADDRINUSE|exited with/);
  fs.rmSync(out, { recursive: true, force: true });
});

test('--gpus hands the workers their devices round-robin, one per worker, in CUDA_VISIBLE_DEVICES', { timeout: 60_000 }, async () => {
  const out = tempDir('gpus-round-robin');
  const preload = path.join(out, 'say-device.js');
  // Each worker says which device it was given (--backend wasm: none is used, so no GPU is needed here).
  fs.writeFileSync(preload, `if (process.argv.includes('worker')) process.stderr.write('device of ' + process.argv[process.argv.indexOf('--name') + 1] + ': ' + process.env.CUDA_VISIBLE_DEVICES + '\\n');`);
  const run = spawnCli(['local', '--workers', '3', '--gpus', '0,GPU-1a2b', '--backend', 'wasm', '--steps', '2', '--metrics-port', '-1', '--out', path.join(out, 'run')], process.execPath, [], { NODE_OPTIONS: `--require ${preload}` });
  assert.equal(await run.exit, 0, run.log());
  const devices = [...run.log().matchAll(/device of (local-\d): (\S+)/g)].map((m) => `${m[1]}=${m[2]}`).sort();
  assert.deepEqual(devices, ['local-1=0', 'local-2=GPU-1a2b', 'local-3=0']);
  fs.rmSync(out, { recursive: true, force: true });
});

test('local warns of more workers than CPU cores, with what it costs and the remedy; a worker a core says nothing', () => {
  assert.equal(oversubscriptionWarning(2, 2, 5), null);
  assert.equal(oversubscriptionWarning(1, 16, 5), null);
  assert.equal(
    oversubscriptionWarning(16, 2, 5),
    '16 workers on 2 CPU cores share them: no more images/s than 2 would give, each round about 8× as long, and a worker whose round outlasts --heartbeat (5 s) is dropped, the step going on without it; use --workers 2, or a larger --heartbeat and --round-timeout (README: Single node)',
  );
  assert.match(oversubscriptionWarning(3, 1, 60) ?? '', /^3 workers on 1 CPU core share them: .* about 3× as long, .*--heartbeat \(60 s\).*; use --workers 1,/);
});

test('local warns of workers that will not fit in memory, with the numbers, what follows and the remedy; ones that fit say nothing', () => {
  const MiB = 2 ** 20;
  const GiB = 2 ** 30;
  // 8 × 2 GiB + 256 MiB: the boundary is the byte.
  assert.equal(memoryWarning(8, 2 * GiB, 256 * MiB, 16 * GiB + 256 * MiB, 3), null);
  assert.equal(
    memoryWarning(8, 2 * GiB, 256 * MiB, 16 * GiB + 256 * MiB - 1, 3),
    "8 workers at about 2.0 GiB each and the coordinator's 256 MiB need about 16.3 GiB (deploy/README.md#memory), more than the 16.2 GiB available here (MemAvailable, or the cgroup's limit less its use): the kernel's OOM killer would end workers, and local restarts them only up to --max-restarts (3); use --workers 7 or fewer, or a smaller --batch-size (README: Single node)",
  );
  assert.match(memoryWarning(1, 2840 * MiB, 288 * MiB, 900 * MiB, 0) ?? '', /^1 worker at about 2\.8 GiB each .* need about 3\.1 GiB .*more than the 900 MiB available here .*--max-restarts \(0\); not one worker fits beside the coordinator: use a smaller --batch-size/);
});

test("a worker's and the coordinator's memory estimates follow deploy/README.md's measurements, and grow with --batch-size and --eval-samples", () => {
  const MiB = 2 ** 20;
  const near = (bytes: number, mib: number, what: string) => assert.ok(Math.abs(bytes / MiB - mib) <= 0.03 * mib, `${what}: ${bytes / MiB} MiB, measured ${mib}`);
  const measured: [string, number, number][] = [
    ['mlp', 128, 202], ['mlp', 8192, 468], ['mlp', 32768, 1336], ['mlp', 65536, 2645],
    ['dcgan', 64, 341], ['dcgan', 256, 754], ['dcgan', 512, 1285], ['dcgan', 1024, 2840],
  ];
  for (const [arch, batch, mib] of measured) near(workerMemoryEstimate(arch, batch), mib, `${arch} worker at ${batch}`);
  for (const [arch, most] of [['mlp', 65536], ['dcgan', 1024]] as const) {
    let last = 0;
    for (let batch = 1; batch <= most; batch += arch === 'mlp' ? 97 : 1) {
      const bytes = workerMemoryEstimate(arch, batch);
      assert.ok(bytes > last && bytes > 100 * MiB, `${arch} at ${batch}: ${bytes} after ${last}`);
      last = bytes;
    }
  }
  near(coordinatorMemoryEstimate('mlp', 0, 10000), 207, 'mlp coordinator');
  near(coordinatorMemoryEstimate('dcgan', 0, 10000), 288, 'dcgan coordinator');
  near(coordinatorMemoryEstimate('mlp', 100, 10000), 337, 'mlp coordinator evaluating 10,000');
  near(coordinatorMemoryEstimate('mlp', 100, 200000), 900, 'mlp coordinator evaluating 200,000');
  near(coordinatorMemoryEstimate('dcgan', 100, 10000), 355, 'dcgan coordinator evaluating 10,000');
  near(coordinatorMemoryEstimate('dcgan', 100, 50000), 491, 'dcgan coordinator evaluating 50,000');
  // "About 3.4 MiB per 1,000 samples: by that, the DCGAN's 200,000 about 1 GiB."
  near(coordinatorMemoryEstimate('dcgan', 100, 200000), 1000, 'dcgan coordinator evaluating 200,000');
  assert.ok(coordinatorMemoryEstimate('dcgan', 100, 2) < coordinatorMemoryEstimate('dcgan', 100, 10000));
});

test("the memory available under a cgroup's limit counts its inactive page cache as free: a long-lived container's cache grows to its limit", (t) => {
  const MiB = 2 ** 20;
  /** A v2 cgroup level at `dir`: its limit ('max' or MiB), its use and its inactive page cache (MiB). */
  const v2Level = (dir: string, max: number | 'max', current: number, inactive?: number): Record<string, string> => ({
    [`/sys/fs/cgroup${dir}/memory.max`]: `${max === 'max' ? 'max' : max * MiB}\n`,
    [`/sys/fs/cgroup${dir}/memory.current`]: `${current * MiB}\n`,
    ...(inactive === undefined ? {} : { [`/sys/fs/cgroup${dir}/memory.stat`]: `anon ${2 * MiB}\nactive_file ${115 * MiB}\ninactive_file ${inactive * MiB}\n` }),
  });
  // This machine's own cgroup when measured: 816 MiB in use, 655 MiB of it inactive page cache; here under a 1 GiB limit.
  const v2: Record<string, string> = { '/proc/self/cgroup': '0::/\n', ...v2Level('', 1024, 816, 655) };
  // v1's memory.stat counts a cgroup's own pages apart from its children's: the total_ ones are the whole subtree's, as its usage is.
  const v1: Record<string, string> = {
    '/proc/self/cgroup': '4:memory:/job\n1:cpu:/\n',
    '/sys/fs/cgroup/memory/memory.limit_in_bytes': '9223372036854771712\n',
    '/sys/fs/cgroup/memory/memory.usage_in_bytes': `${8192 * MiB}\n`,
    '/sys/fs/cgroup/memory/job/memory.limit_in_bytes': `${1024 * MiB}\n`,
    '/sys/fs/cgroup/memory/job/memory.usage_in_bytes': `${816 * MiB}\n`,
    '/sys/fs/cgroup/memory/job/memory.stat': `cache ${120 * MiB}\ninactive_file ${100 * MiB}\ntotal_cache ${770 * MiB}\ntotal_inactive_file ${655 * MiB}\n`,
  };
  // A level without a limit ("max", a systemd slice's) is passed over, not read as a number (NaN would hide every limit).
  const v2Nested: Record<string, string> = { '/proc/self/cgroup': '0::/system.slice/job.service\n', ...v2Level('/system.slice', 'max', 8192), ...v2Level('/system.slice/job.service', 1024, 816, 655) };
  const readFileSync = fs.readFileSync;
  t.mock.method(os, 'freemem', () => 23 * 1024 * MiB);
  for (const files of [v2, v1, v2Nested]) {
    t.mock.method(fs, 'readFileSync', (file: string, ...rest: unknown[]) => {
      if (file in files) return files[file];
      if (String(file).startsWith('/sys/')) throw Object.assign(new Error(`ENOENT: ${file}`), { code: 'ENOENT' });
      return (readFileSync as (...a: unknown[]) => unknown)(file, ...rest);
    });
    assert.equal(availableMemory() / MiB, 1024 - 816 + 655, JSON.stringify(files));
  }
  // A cgroup over its limit (its cache not yet reclaimed) leaves nothing, not less than nothing.
  const over: Record<string, string> = { ...v2, ...v2Level('', 1024, 1800, 655) };
  t.mock.method(fs, 'readFileSync', (file: string, ...rest: unknown[]) => (file in over ? over[file] : (readFileSync as (...a: unknown[]) => unknown)(file, ...rest)));
  assert.equal(availableMemory(), 0);
});

test("the CPU cores counted for local's warning are a cgroup's CPU quota where it has one, at any level, a fraction counted down: Node 20 missed a container's --cpus", (t) => {
  const readFileSync = fs.readFileSync;
  t.mock.method(os, 'availableParallelism', () => 16);
  const cases: [string, Record<string, string>, number][] = [
    ['v2, no quota', { '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': 'max 100000\n' }, 16],
    ['v2, --cpus 2', { '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': '200000 100000\n' }, 2],
    ['v2, --cpus 2.5', { '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': '250000 100000\n' }, 2],
    ['v2, half a core', { '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': '50000 100000\n' }, 1],
    ['v2, the quota a level up', { '/proc/self/cgroup': '0::/kubepods/pod1/c1\n', '/sys/fs/cgroup/kubepods/pod1/cpu.max': '300000 100000\n', '/sys/fs/cgroup/kubepods/pod1/c1/cpu.max': 'max 100000\n' }, 3],
    ['v1, no quota', { '/proc/self/cgroup': '4:memory:/\n2:cpu,cpuacct:/job\n', '/sys/fs/cgroup/cpu/job/cpu.cfs_quota_us': '-1\n', '/sys/fs/cgroup/cpu/job/cpu.cfs_period_us': '100000\n' }, 16],
    ['v1, --cpus 4', { '/proc/self/cgroup': '4:memory:/\n2:cpu,cpuacct:/job\n', '/sys/fs/cgroup/cpu/job/cpu.cfs_quota_us': '400000\n', '/sys/fs/cgroup/cpu/job/cpu.cfs_period_us': '100000\n' }, 4],
    // cpuacct and cpuset are other controllers: their hierarchies hold no quota.
    ['v1, cpuacct alone', { '/proc/self/cgroup': '3:cpuacct:/job\n1:cpuset:/job\n', '/sys/fs/cgroup/cpuacct/job/cpu.cfs_quota_us': '100000\n', '/sys/fs/cgroup/cpuacct/job/cpu.cfs_period_us': '100000\n' }, 16],
  ];
  for (const [what, files, cores] of cases) {
    t.mock.method(fs, 'readFileSync', (file: string, ...rest: unknown[]) => {
      if (file in files) return files[file];
      if (String(file).startsWith('/sys/')) throw Object.assign(new Error(`ENOENT: ${file}`), { code: 'ENOENT' });
      return (readFileSync as (...a: unknown[]) => unknown)(file, ...rest);
    });
    assert.equal(availableCores(), cores, what);
  }
  // An affinity mask narrower than the quota wins.
  t.mock.method(os, 'availableParallelism', () => 2);
  assert.equal(availableCores(), 2);
});

test("local's warning of more workers than cores counts a cgroup's CPU quota: 2 workers in a container of 1 CPU", { timeout: 60_000 }, async () => {
  const out = tempDir('cpu-quota-warning');
  // local's own process sees a v2 cgroup with a quota of one core; its workers exit before they load anything.
  const preload = path.join(out, 'one-cpu.js');
  fs.writeFileSync(
    preload,
    "if (process.argv.includes('worker')) process.exit(1);\n" +
      "const fs = require('node:fs'); const read = fs.readFileSync;\n" +
      "const files = { '/proc/self/cgroup': '0::/\\n', '/sys/fs/cgroup/cpu.max': '100000 100000\\n' };\n" +
      'fs.readFileSync = (file, ...rest) => (file in files ? files[file] : read(file, ...rest));\n',
  );
  const run = spawnCli(['local', '--workers', '2', '--steps', '1', '--max-restarts', '0', '--metrics-port', '-1', '--out', path.join(out, 'run')], process.execPath, [], { NODE_OPTIONS: `--require ${preload}` });
  await waitFor(() => /share them|started 2 worker processes/.test(run.log()), 30_000, 'the oversubscription warning');
  run.child.kill('SIGINT');
  await run.exit;
  assert.match(run.log(), /\[local\] warning: 2 workers on 1 CPU core share them: no more images\/s than 1 would give, each round about 2× as long,/);
  fs.rmSync(out, { recursive: true, force: true });
});

test('local logs the memory warning before it starts anything: 64 DCGAN workers at --batch-size 1024 (about 178 GiB)', { timeout: 60_000 }, async (t) => {
  const needed = 64 * workerMemoryEstimate('dcgan', 1024) + coordinatorMemoryEstimate('dcgan', 0, 10000);
  if (availableMemory() >= needed) return t.skip(`this machine has ${availableMemory()} bytes available, enough for ${needed}`);
  const out = tempDir('memory-warning');
  // Stopped as soon as it warns. The workers may have started by then (a fast start raced the SIGINT on Node 24):
  // each exits before it loads anything, and is not restarted, so nothing is allocated.
  const preload = path.join(out, 'no-worker.js');
  fs.writeFileSync(preload, "if (process.argv.includes('worker')) process.exit(1);\n");
  const run = spawnCli(['local', '--workers', '64', '--model', 'dcgan', '--batch-size', '1024', '--steps', '1', '--max-restarts', '0', '--metrics-port', '-1', '--out', path.join(out, 'run')], process.execPath, [], { NODE_OPTIONS: `--require ${preload}` });
  await waitFor(() => /OOM killer|started 64 worker processes/.test(run.log()), 30_000, 'the memory warning');
  run.child.kill('SIGINT');
  await run.exit;
  assert.match(
    run.log(),
    /\[local\] warning: 64 workers at about 2\.8 GiB each and the coordinator's 288 MiB need about 177\.8 GiB \(deploy\/README\.md#memory\), more than the [\d.]+ [MG]iB available here \(MemAvailable, or the cgroup's limit less its use\): the kernel's OOM killer would end workers, and local restarts them only up to --max-restarts \(0\); (use --workers \d+ or fewer, or a smaller --batch-size|not one worker fits beside the coordinator: use a smaller --batch-size) \(README: Single node\)\n/,
  );
  fs.rmSync(out, { recursive: true, force: true });
});

test('workers that wait only for a slow reader to take their last log lines are no stragglers: none is signalled or killed as hung, and their lines are kept', { timeout: 120_000 }, () => {
  const out = path.join(tempDir('local-slow-reader'), 'run');
  // The reader takes nothing until the run is over and 3 s more: past the 2 s after which local signalled its workers
  // (and the 10 s after which it killed them), which the full pipe held in their exit.
  const r = spawnSync('bash', ['-c', `"$0" "$@" 2>&1 | { until [ -e "$OUT/summary.json" ]; do sleep 0.1; done; sleep 3; cat; }; exit \${PIPESTATUS[0]}`, process.execPath, CLI, 'local', '--workers', '1', '--steps', '600', '--batch-size', '8', '--log-every', '1', '--sample-every', '0', '--checkpoint-every', '0', '--metrics-port', '-1', '--out', out], {
    encoding: 'utf8',
    timeout: 110_000,
    env: { ...process.env, OUT: out },
  });
  assert.equal(r.status, 0, r.stdout.slice(-3000));
  // The lines alone: a failed match on the whole log (80 KB) took node:test minutes to report.
  assert.deepEqual(r.stdout.split('\n').filter((l) => /still running 2 s after the coordinator closed|did not exit within 10 s|SIGTERM: leaving/.test(l)), []);
  assert.ok(/\[worker local-1\] stopped by the coordinator: finished 600 steps$/m.test(r.stdout), 'the worker\'s last line is lost');
});

test("--d-updates defaults per model (the MLP the seed's two D updates a step, the DCGAN one) and is kept in the checkpoint; given, it counts for either model", { timeout: 120_000 }, async () => {
  const root = tempDir('d-updates');
  const data = blankMnistDir(64);
  try {
    const trained = async (out: string, ...flags: string[]) => {
      const run = spawnCli(['local', '--workers', '1', '--steps', '3', '--batch-size', '4', '--data-dir', data, '--metrics-port', '-1', '--out', path.join(root, out), ...flags]);
      assert.equal(await run.exit, 0, run.log());
      const c = decodeCheckpoint(fs.readFileSync(path.join(root, out, 'checkpoints', checkpointName(3))), out);
      received[out] = JSON.parse(fs.readFileSync(path.join(root, out, 'summary.json'), 'utf8')).bytesReceivedPerStep;
      dBytes[out] = 4 * c.discriminator.length;
      return [c.config.discriminatorUpdates, c.adamDiscriminator.step, c.adamGenerator.step];
    };
    const [received, dBytes]: Record<string, number>[] = [{}, {}];
    assert.deepEqual(await trained('mlp'), [2, 6, 3]);
    assert.deepEqual(await trained('mlp-1', '--d-updates', '1'), [1, 3, 3]);
    assert.deepEqual(await trained('dcgan', '--model', 'dcgan'), [1, 3, 3]);
    assert.deepEqual(await trained('dcgan-2', '--model', 'dcgan', '--d-updates', '2'), [2, 6, 3]);
    // With one update a worker sends the halves' sum: D's gradient comes up once a step, not twice (float32, 4 bytes a
    // value; the frames' other fields differ by a few bytes).
    for (const [one, two] of [['mlp-1', 'mlp'], ['dcgan', 'dcgan-2']]) {
      const saved = received[two] - received[one];
      assert.ok(Math.abs(saved - dBytes[one]) < 100, `${two}: ${received[one]} B a step from the worker with one update, ${received[two]} with two; D is ${dBytes[one]} B`);
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
    fs.rmSync(data, { recursive: true, force: true });
  }
});
