import { ChildProcess, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { gpuBackendProblem } from './backend';
import { BackendChoice } from './backend-choice';
import { ARCHITECTURES } from './model/choices';
import { Coordinator, TrainingSummary } from './coordinator/coordinator';
import { CoordinatorConfig } from './coordinator/config';
import { Logger, createLogger } from './util/log';
import { plural } from './util/text';
import { emitted } from './util/events';
import { startStoppable } from './util/signals';
import { GanfleetError } from './util/errors';
import { availableCores, availableMemory } from './util/process';
import { removeMailboxDirsOf } from './protocol/mailbox';
import { ALIVE_EVERY_MS, WorkerRefusal, isWorkerAlive, isWorkerRefusal } from './worker/local-child';

export interface LocalOptions {
  workers: number;
  /** CUDA device ids, handed out round-robin, one per worker child. */
  gpus: string[];
  workerBackend: BackendChoice;
  /** false: the workers run without the native kernels (--no-native). */
  workerNative: boolean;
  /** The workers refuse to start off a GPU (worker --require-gpu). */
  requireGpu?: boolean;
  /** Crashed children are restarted, up to this many restarts in all. */
  maxRestarts: number;
  /** A child whose main thread has been busy this long without a break is killed as hung (0 = never). */
  hangTimeoutSeconds: number;
}

/**
 * Why `workers` CPU workers crowd `cores` cores, or null. Each is one busy
 * process: past a core each they only share the CPU, and a round can stretch
 * past --heartbeat (a DCGAN's first rounds with 16 workers on 2 cores did),
 * so the first steps trained on the one or two workers that kept up.
 */
export function oversubscriptionWarning(workers: number, cores: number, heartbeatSeconds: number): string | null {
  if (workers <= cores) return null;
  return (
    `${workers} workers on ${cores} CPU ${cores === 1 ? 'core' : 'cores'} share them: no more images/s than ${cores} would give, each round about ${Math.ceil(workers / cores)}× as long, ` +
    `and a worker whose round outlasts --heartbeat (${heartbeatSeconds} s) is dropped, the step going on without it; use --workers ${cores}, or a larger --heartbeat and --round-timeout (README: Single node)`
  );
}

/**
 * Peak resident memory (MiB) of one worker at each --batch-size, and of the
 * coordinator, as measured in deploy/README.md#memory (wasm, one worker
 * holding all 60,000 images, `/usr/bin/time -v`). The coordinator's grows
 * with --eval-every's samples; the batch it computes for a refused answer
 * (up to a worker's peak) is left out: that happens only on a fault.
 */
const WORKER_PEAK_MIB: Record<(typeof ARCHITECTURES)[number], [batch: number, mib: number][]> = {
  mlp: [[128, 202], [8192, 468], [32768, 1336], [65536, 2645]],
  dcgan: [[64, 341], [256, 754], [512, 1285], [1024, 2840]],
};
const COORDINATOR_PEAK_MIB: Record<(typeof ARCHITECTURES)[number], { training: number; evaluating: [samples: number, mib: number][] }> = {
  mlp: { training: 207, evaluating: [[10_000, 337], [200_000, 900]] },
  dcgan: { training: 288, evaluating: [[10_000, 355], [50_000, 491]] },
};
const MIB = 2 ** 20;

/** The piecewise-linear curve through `points` (ascending in x) at `x`; past either end, its end segment extended. */
function throughPoints(points: [number, number][], x: number): number {
  let i = 1;
  while (i < points.length - 1 && x > points[i][0]) i++;
  const [[x0, y0], [x1, y1]] = [points[i - 1], points[i]];
  return y0 + ((x - x0) * (y1 - y0)) / (x1 - x0);
}

/** About the peak RSS, in bytes, of one CPU worker of `arch` at `batchSize` (deploy/README.md#memory). */
export function workerMemoryEstimate(arch: string, batchSize: number): number {
  return throughPoints(WORKER_PEAK_MIB[arch as keyof typeof WORKER_PEAK_MIB] ?? WORKER_PEAK_MIB.mlp, batchSize) * MIB;
}

/** About the peak RSS, in bytes, of the coordinator of `arch`, with `evalSamples` per evaluation where `evalEvery` > 0. */
export function coordinatorMemoryEstimate(arch: string, evalEvery: number, evalSamples: number): number {
  const peak = COORDINATOR_PEAK_MIB[arch as keyof typeof COORDINATOR_PEAK_MIB] ?? COORDINATOR_PEAK_MIB.mlp;
  return (evalEvery > 0 ? throughPoints(peak.evaluating, evalSamples) : peak.training) * MIB;
}

/** `bytes` as a person reads it: MiB below 1 GiB, else GiB to a tenth. */
function formatBytes(bytes: number): string {
  return bytes < 1024 * MIB ? `${Math.round(bytes / MIB)} MiB` : `${(bytes / (1024 * MIB)).toFixed(1)} GiB`;
}

/**
 * Why `workers` workers of about `workerBytes` each and a coordinator of
 * about `coordinatorBytes` overfill `availableBytes`, or null. Past it the
 * kernel's OOM killer ends workers, local restarts them, and the run thrashes
 * with no word of why. An estimate, so a warning, not a refusal.
 */
export function memoryWarning(workers: number, workerBytes: number, coordinatorBytes: number, availableBytes: number, maxRestarts: number): string | null {
  const needed = workers * workerBytes + coordinatorBytes;
  if (needed <= availableBytes) return null;
  const fit = Math.floor((availableBytes - coordinatorBytes) / workerBytes);
  return (
    `${plural(workers, 'worker')} at about ${formatBytes(workerBytes)} each and the coordinator's ${formatBytes(coordinatorBytes)} need about ${formatBytes(needed)} (deploy/README.md#memory), ` +
    `more than the ${formatBytes(Math.max(0, availableBytes))} available here (MemAvailable, or the cgroup's limit less its use): the kernel's OOM killer would end workers, and local restarts them only up to --max-restarts (${maxRestarts}); ` +
    `${fit >= 1 ? `use --workers ${fit} or fewer, or a smaller --batch-size` : 'not one worker fits beside the coordinator: use a smaller --batch-size'} (README: Single node)`
  );
}

/** The --name of worker slot `i`: the coordinator shows it, and `local` finds its own children among the joined by it. */
function workerName(i: number): string {
  return `local-${i + 1}`;
}

/**
 * Single-node mode: the same Coordinator as `ganfleet coordinator`, on an
 * ephemeral loopback port, and N child processes running `ganfleet worker`.
 * Children run in their own process group, so a terminal's Ctrl-C reaches
 * only this process, which stops them in order; each child also exits when
 * its IPC channel to this process closes, so none outlive it even if it is
 * SIGKILLed (one stopped then, by SIGSTOP, exits once it is continued).
 */
export async function runLocal(config: CoordinatorConfig, opts: LocalOptions, log: Logger = createLogger('local')): Promise<TrainingSummary> {
  // Whether the GPU package can load at all is known here; whether it finds a GPU, only in the workers.
  if (opts.requireGpu) {
    const problem = gpuBackendProblem();
    if (problem) throw new GanfleetError('GPU_REQUIRED', `--require-gpu: the workers cannot compute on a GPU: ${problem} (README: GPU)`);
  } else if (opts.gpus.length > 0) {
    const problem = opts.workerBackend === 'wasm' || opts.workerBackend === 'cpu' ? `--backend ${opts.workerBackend} does not use them` : gpuBackendProblem();
    if (problem) log(`--gpus ${opts.gpus.join(',')} given, but the workers will compute on the CPU: ${problem} (README: GPU)`);
  }
  const crowded = opts.gpus.length > 0 ? null : oversubscriptionWarning(opts.workers, availableCores(), config.heartbeatSeconds);
  if (crowded) log(`warning: ${crowded}`);
  const overfilled =
    opts.gpus.length > 0
      ? null
      : memoryWarning(opts.workers, workerMemoryEstimate(config.arch, config.batchSize), coordinatorMemoryEstimate(config.arch, config.evalEvery, config.evalSamples), availableMemory(), opts.maxRestarts);
  if (overfilled) log(`warning: ${overfilled}`);
  const children = new Map<number, ChildProcess>();
  const killAll = () => children.forEach((c) => c.kill('SIGKILL'));
  // Loopback is no boundary between the users of a machine: without a token, any of them could join the run on
  // its port, take a worker's slot, read the shard and the weights and answer with gradients of their choosing.
  const token = crypto.randomBytes(32).toString('hex');
  // A signal while the coordinator starts stops it at once, with its lease released, instead of killing this process.
  const coordinator = await startStoppable(
    // With GPUs handed to the workers, the coordinator (which only renders sample grids) stays off them.
    (abort) => Coordinator.start({ ...config, token, backend: opts.gpus.length > 0 ? 'wasm' : config.backend }, undefined, abort),
    (c, reason) => c.requestStop(reason),
    () => {
      log('second signal: killing workers');
      killAll();
      process.exit(130);
    },
  );
  const url = `ws://127.0.0.1:${coordinator.port}`;
  let restarts = 0;
  let finishing = false;
  process.on('exit', killAll);

  // Flags travel explicitly; GANFLEET_* meant for the coordinator must not reach the workers. The kernel choice,
  // which is no flag but this machine's, does.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GANFLEET_') || k === 'GANFLEET_NATIVE_AVX512'));
  /** Slot `i` has no worker process (it exited, or never started): restart one, or fail the run if it can no longer train. */
  const slotLost = (i: number, what: string, refusal: WorkerRefusal | null) => {
    // After the last step (its grid, checkpoint, evaluation and export) a lost worker fails nothing.
    if (finishing || coordinator.trainingOver) return;
    let why: string;
    if (refusal) {
      why = `worker ${i + 1} refused to train: ${refusal.message} [${refusal.code}]`;
      log(`${what}; not restarting it: it would refuse again`);
    } else if (restarts < opts.maxRestarts) {
      restarts++;
      log(`${what}; restarting it (${restarts}/${opts.maxRestarts})`);
      startWorker(i);
      return;
    } else {
      why = `worker ${i + 1} was lost and no restarts are left (--max-restarts ${opts.maxRestarts})`;
      log(`${what}; no restarts left`);
    }
    // Training starts only with all N workers, and continues with any.
    if (children.size === 0 || coordinator.waitingToStart) coordinator.requestStop(why, true);
  };
  const startWorker = (i: number) => {
    // In the environment, where other users' ps does not show it.
    const childEnv: NodeJS.ProcessEnv = { ...env, GANFLEET_TOKEN: token };
    if (opts.gpus.length > 0) childEnv.CUDA_VISIBLE_DEVICES = opts.gpus[i % opts.gpus.length];
    // The coordinator's progress lines speak for its workers here.
    const args = [require.resolve('./cli'), 'worker', '--coordinator', url, '--backend', opts.workerBackend, '--name', workerName(i), '--progress-every', '0'];
    if (!opts.workerNative) args.push('--no-native');
    if (opts.requireGpu) args.push('--require-gpu');
    let child: ChildProcess;
    try {
      // A worker takes no path, but Node needs a working directory that exists: this one removed mid-run (rm -rf
      // of the directory the shell sat in) would fail every restart before its first line, --max-restarts spent at once.
      child = spawn(process.execPath, args, { env: childEnv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true, cwd: workerCwd() });
    } catch (e) {
      // spawn throws, instead of emitting 'error', for errors other than EACCES, EAGAIN, EMFILE, ENFILE and ENOENT
      // (ENOMEM, say): the same worker that could not be started. Thrown from a 'close' handler (a restart), it
      // would end this process with no checkpoint. After this turn, so that a restart loop cannot recurse.
      setImmediate(() => slotLost(i, `worker ${i + 1} could not be started (${(e as Error).message})`, null));
      return;
    }
    children.set(i, child);
    lastAlive.set(child, performance.now());
    let refusal: WorkerRefusal | null = null;
    child.on('message', (m) => {
      if (isWorkerAlive(m)) lastAlive.set(child, performance.now());
      else if (isWorkerRefusal(m)) refusal = m;
    });
    // Before the stop, any exit (even 0) is a worker lost: restart it, or fail the run if it can no longer train.
    // Once: a process that never started emits 'error', then 'close'.
    let gone = false;
    const lost = (what: string) => {
      if (gone) return;
      gone = true;
      lastAlive.delete(child);
      if (children.get(i) === child) children.delete(i);
      slotLost(i, what, refusal);
    };
    child.on('error', (e) => {
      // A process that never started (EAGAIN under a pids limit, EMFILE, ENOENT) emits no 'exit': the run would wait for it for ever.
      if (child.pid === undefined) lost(`worker ${i + 1} could not be started (${e.message})`);
      else log(`worker ${i + 1}: ${e.message}`);
    });
    // Killed, it ran no exit handler: its mailbox directory would hold /dev/shm until some later ganfleet process
    // sweeps it, and none may follow (no restarts left, the run's end). On 'exit', which the end's wait awaits.
    child.on('exit', (_code, signal) => signal && removeMailboxDirsOf(child.pid!));
    // 'close', not 'exit': it comes after the IPC channel has delivered everything the child sent (its refusal).
    child.on('close', (code, signal) => lost(`worker ${i + 1} (pid ${child.pid}) exited with ${signal ?? `code ${code}`}`));
  };
  // A hung worker (a loop, a stuck native call) holds its slot, and would stall a run of --workers 1 for ever: one
  // silent past --hang-timeout is killed, and restarted as a crash is. Being dropped by the coordinator is no sign:
  // a live worker busy with a long round (a GPU's first kernels) is dropped too, and rejoins warm once it is done.
  const lastAlive = new Map<ChildProcess, number>();
  let lastLook = performance.now();
  const hangWatch = setInterval(() => {
    const now = performance.now();
    // This thread was busy itself (the coordinator's evaluation, say): the children's messages wait behind this timer.
    const late = now - lastLook > 2 * ALIVE_EVERY_MS;
    lastLook = now;
    if (late || opts.hangTimeoutSeconds === 0) return;
    for (const [i, child] of children) {
      const silent = now - (lastAlive.get(child) ?? now);
      if (silent < opts.hangTimeoutSeconds * 1000) continue;
      lastAlive.delete(child);
      log(`worker ${i + 1} (pid ${child.pid}) has not had its main thread free for ${(silent / 1000).toFixed(0)} s (--hang-timeout ${opts.hangTimeoutSeconds}): killing it as hung`);
      child.kill('SIGKILL');
    }
  }, ALIVE_EVERY_MS).unref();
  // A resumed run already at --steps trains nothing: no worker would find a coordinator to join.
  const { step, steps } = coordinator.status();
  if (step < steps && !coordinator.stopping) {
    for (let i = 0; i < opts.workers; i++) startWorker(i);
    log(`started ${plural(opts.workers, 'worker process', 'worker processes')} against ${url}`);
  }

  try {
    return await coordinator.run();
  } finally {
    finishing = true;
    clearInterval(hangWatch);
    const joined = new Set(coordinator.status().workers.map((w) => w.name));
    await coordinator.close();
    // Workers that were connected were told to stop. One that was not (still starting, or between tries) cannot be
    // told: it would retry a closed port, logging each refusal, until the stragglers' timer.
    const running = () => [...children].filter(([, c]) => c.exitCode === null && c.signalCode === null);
    const unjoined = running().filter(([i]) => !joined.has(workerName(i)));
    if (unjoined.length > 0) {
      // Not only those still starting: one the coordinator dropped (frozen, hung, or between its tries to rejoin) too.
      log(`stopping the workers that were not connected to hear the stop (not joined yet, or dropped and not back): ${unjoined.map(([i]) => workerName(i)).join(', ')}`);
      for (const [, c] of unjoined) c.kill('SIGTERM');
    }
    // A worker that does not exit (hung in a native call, stopped) holds the exit for up to 10 s: say whom it waits for.
    const named = (list: [number, ChildProcess][]) => list.map(([i, c]) => `${workerName(i)} (pid ${c.pid})`).join(', ');
    // One that closed its IPC channel has done its work, and waits only for a slow reader (a paused `| less`) to take
    // its last log lines, as this process will: no straggler. Killed, its lines were lost, and it was named hung.
    const straggling = () => running().filter(([, c]) => c.connected);
    const stragglers = setTimeout(() => {
      const left = straggling();
      if (left.length > 0) log(`waiting for ${named(left)} to exit: still running 2 s after the coordinator closed; sending SIGTERM, and SIGKILL at 10 s`);
      for (const [, c] of left) c.kill('SIGTERM');
    }, 2_000);
    const deadline = setTimeout(() => {
      const left = straggling();
      if (left.length > 0) log(`${named(left)} did not exit within 10 s of the coordinator's close (hung, or stopped): killing ${left.length === 1 ? 'it' : 'them'} (SIGKILL)`);
      for (const [, c] of left) c.kill('SIGKILL');
    }, 10_000);
    await Promise.all(running().map(([, c]) => emitted(c, 'exit')));
    clearTimeout(stragglers);
    clearTimeout(deadline);
    // The stop handlers stay on: the command exits next (exitWhenWritten), and without them a signal in the
    // process's last milliseconds would end a finished run with 130.
    process.off('exit', killAll);
  }
}

/** Where local's workers start: this process's working directory while it exists, else the root. */
function workerCwd(): string | undefined {
  try {
    // realpath(3) asks the kernel for this process's own directory (getcwd), which a child inherits. Not
    // process.cwd(): Node keeps the path it last read, and a directory made again at that path (a CI workspace
    // cleaned and checked out anew) exists there, while the one this process sits in, and a child would, is gone.
    fs.realpathSync.native('.');
    return undefined;
  } catch {
    return '/';
  }
}
