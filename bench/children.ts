/**
 * The bench's child processes: each runs to its end or to a deadline, and a
 * SIGINT or SIGTERM to the bench kills the one running and removes the
 * temporary directories. Runs are asynchronous so that the signal is heard:
 * during a spawnSync this process runs no handler at all, and without one
 * SIGTERM left `local` training as an orphan and its --out in /tmp.
 */
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { removeMailboxDirsOf } from '../src/protocol/mailbox';

/** Time for a run to start (loading MNIST, the workers joining) on a busy 2-core machine, several times what it takes. */
const START_UP_BOUND_MS = 120_000;
/** Several times the slowest step seen here (local --workers 4 on 2 cores: about 20 ms). */
const STEP_BOUND_MS = 200;

/** The deadline of a run of `steps` steps, each of which may also wait `extraStepMs` on a shaped link. */
export function runDeadlineMs(steps: number, extraStepMs = 0): number {
  return Math.round(START_UP_BOUND_MS + steps * (STEP_BOUND_MS + extraStepMs));
}

const running = new Set<ChildProcess>();
const scratch = new Set<string>();

/** A temporary directory, removed by removeScratch or by a signal to the bench. */
export function scratchDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  scratch.add(dir);
  return dir;
}

export function removeScratch(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
  scratch.delete(dir);
}

/** The child's process group: a DDP anchor's ranks and a hung child's helpers die with it (local's workers die when their IPC channel closes). */
function killGroup(child: ChildProcess): void {
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
}

/** Not for --link: a ShapedLink removes its namespaces on the same signals, and must run before the exit. */
export function stopChildrenOnSignals(): void {
  const onSignal = (signal: NodeJS.Signals) => {
    for (const child of running) {
      killGroup(child);
      // A SIGKILLed `local` leaves its coordinator's mailbox directory in /dev/shm (its workers remove theirs as they exit).
      removeMailboxDirsOf(child.pid!);
    }
    for (const dir of scratch) fs.rmSync(dir, { recursive: true, force: true });
    process.exit(128 + os.constants.signals[signal]);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

export interface ChildRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Both, in the order they came: a log's lines in their order. */
  output: string;
  /** Killed at its deadline. */
  timedOut: boolean;
}

/** Why a child's run failed, or null: its deadline, its signal or its exit status, with the end of what it said. */
export function childFailure(what: string, r: ChildRun, deadlineMs: number): string | null {
  const said = r.output.trim().split('\n').slice(-3).join(' | ').slice(-400);
  const ended = r.timedOut ? `did not finish in ${Math.round(deadlineMs / 1000)} s` : r.signal ? `was killed by ${r.signal}` : r.status !== 0 ? `exited ${r.status}` : null;
  return ended && `${what} ${ended}${said ? `: ${said}` : ''}`;
}

/**
 * `command` in its own process group (killed whole at the deadline or on a
 * signal), its output collected; `finished` once it has exited and its
 * output is in.
 */
export function startChild(command: string, args: string[], deadlineMs: number, env: NodeJS.ProcessEnv = process.env): { child: ChildProcess; finished: Promise<ChildRun> } {
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  running.add(child);
  let stdout = '';
  let stderr = '';
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => ((stdout += d), (output += d)));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => ((stderr += d), (output += d)));
  let timedOut = false;
  const deadline = setTimeout(() => {
    timedOut = true;
    killGroup(child);
  }, deadlineMs);
  const finished = new Promise<ChildRun>((resolve) => {
    let exited: { status: number | null; signal: NodeJS.Signals | null } | null = null;
    const done = () => {
      clearTimeout(deadline);
      running.delete(child);
      resolve({ ...exited!, stdout, stderr, output, timedOut });
    };
    // A child that never started emits 'error' and no 'exit'.
    child.on('error', (e) => {
      if (child.pid !== undefined) return;
      stderr += e.message;
      exited = { status: null, signal: null };
      done();
    });
    child.on('exit', (status, signal) => {
      exited = { status, signal };
      // 'close' waits for the pipes, which a grandchild that inherited them (a local worker, dying by itself a few
      // seconds after its parent) may hold open a while; not for ever.
      const late = setTimeout(() => {
        child.stdout!.destroy();
        child.stderr!.destroy();
      }, 10_000);
      child.once('close', () => {
        clearTimeout(late);
        done();
      });
    });
  });
  return { child, finished };
}

/**
 * The first line of a `local` or coordinator log that shows a worker lost
 * while the run trained (crashed, killed as hung, dropped, restarted), or
 * null. `local` restarts a lost worker and still exits 0, with the restart's
 * join and shard in the timed steps. Lines after the coordinator's
 * "finished N steps" are the workers leaving a finished run.
 */
export function lostWorkerLine(log: string): string | null {
  for (const line of log.split('\n')) {
    if (/\[coordinator\] finished \d+ steps/.test(line)) return null;
    if (/ left \(| exited with |restarting it|no restarts left|killing it as hung/.test(line)) return line.trim();
  }
  return null;
}
