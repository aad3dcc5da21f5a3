import os from 'node:os';
import { takeEarlySignal } from './early-signals';

/**
 * A signal this soon after the first is that one delivered twice, not a second request: timeout(1) signals
 * its child and then its process group, the child again, and where the child takes the first before the
 * second comes (another CPU) both reach the handlers, which exited at once, without a checkpoint and with
 * the workers left retrying. The two come under 2 ms apart (0.3 to 1.5 ms measured); no one presses Ctrl-C
 * twice within 20 ms.
 */
const DUPLICATE_SIGNAL_MS = 20;
/** When the process's first stop signal came (process-wide: startStoppable hands it from one set of handlers to the next). */
let firstSignalAt = -Infinity;

/**
 * First SIGINT/SIGTERM: `onFirst` (finish the step, write outputs, stop
 * workers). Second, from DUPLICATE_SIGNAL_MS after the first: exit at once
 * with 130. `seen` signals were already handled elsewhere (so with 1 the
 * next one is the second). Returns a function that removes the handlers.
 */
export function onStopSignals(onFirst: (signal: NodeJS.Signals) => void, onSecond: () => void = () => process.exit(130), seen = 0): () => void {
  let count = seen;
  const handler = (signal: NodeJS.Signals) => {
    if (count > 0 && performance.now() - firstSignalAt < DUPLICATE_SIGNAL_MS) return;
    if (++count > 1) return onSecond();
    firstSignalAt = performance.now();
    onFirst(signal);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  // One that came while the CLI loaded, before any handler (dropped by the kernel for a pid 1 without one).
  const early = takeEarlySignal();
  if (early) process.nextTick(() => handler(early));
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}

/**
 * Resolves once the event loop has passed a poll phase, which is where a
 * signal that came during synchronous work is dispatched to its handlers.
 * One setImmediate is not enough from a poll-phase callback: its check phase
 * comes before the next poll.
 */
export function signalsDispatched(): Promise<void> {
  return new Promise((r) => setImmediate(() => setImmediate(r)));
}

/** The status a shell gives a process that `signal` ended: 128 + its number (130 for SIGINT, 143 for SIGTERM). */
export function signalExitCode(signal: NodeJS.Signals): number {
  return 128 + os.constants.signals[signal];
}

/**
 * Starts what a first SIGINT/SIGTERM stops (`stop`, with the reason), also
 * while it starts (a coordinator loading, binding, watching a lease): such a
 * signal aborts the start's waits and stops it once started, instead of
 * killing the process half way. A second signal runs `onSecond`. Returns what
 * started. The handlers stay on for the rest of the process's life (see
 * exitWhenWritten).
 */
export async function startStoppable<T>(
  start: (abort: AbortSignal) => Promise<T>,
  stop: (started: T, reason: string) => void,
  onSecond?: () => void,
): Promise<T> {
  let early: NodeJS.Signals | null = null;
  const aborting = new AbortController();
  const release = onStopSignals((signal) => {
    early ??= signal;
    aborting.abort(`${signal} received`);
  });
  let started: T;
  try {
    started = await start(aborting.signal);
  } catch (e) {
    release();
    throw e;
  }
  // On before the holding handlers go: with no listener left for a moment, Node drops a signal that came
  // during the start's synchronous work (loading MNIST) and is not yet dispatched.
  onStopSignals((signal) => stop(started, `${signal} received`), onSecond, early ? 1 : 0);
  release();
  if (early) stop(started, `${early} received`);
  return started;
}

/**
 * Ends the process once stdout and stderr have taken what was written, with
 * the stop handlers still installed: removing them first hands SIGINT and
 * SIGTERM back to their default action for the rest of the process's life,
 * Node's own teardown included (tens of ms with TensorFlow.js loaded), so a
 * signal then ended a finished run with 130 or 143 instead of its status.
 * process.exit() closes no signal handle: a signal that comes now is dropped.
 */
export async function exitWhenWritten(): Promise<never> {
  for (const stream of [process.stdout, process.stderr]) {
    // Heard here: one that failed already (a result /dev/full refused) fails this write too, and its 'error', heard by
    // no one, would end the process with the wasm backend's exit 7 instead of its status.
    await new Promise<void>((r) => stream.once('error', () => r()).write('', () => r()));
  }
  process.exit();
}
