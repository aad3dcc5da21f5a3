/**
 * Imported first by the CLI. In a container the CLI is pid 1 (the images'
 * ENTRYPOINT is node itself, with no init), and the kernel drops a signal
 * that pid 1 has no handler for: a SIGTERM (kubectl delete, a node drain,
 * docker stop) that came while the CLI loaded, before onStopSignals, was lost,
 * and the coordinator trained on until the grace period's SIGKILL. Until a
 * stop handler is installed, the first such signal is kept here for it.
 */
import os from 'node:os';

let pending: NodeJS.Signals | null = null;

const keep = (signal: NodeJS.Signals) => {
  pending ??= signal;
};

// Only as pid 1: elsewhere a signal's default action still ends a CLI that has not started.
if (process.pid === 1) {
  process.on('SIGINT', keep);
  process.on('SIGTERM', keep);
}

/** The signal that came before any stop handler (null if none); removes the keeping handlers. */
export function takeEarlySignal(): NodeJS.Signals | null {
  process.off('SIGINT', keep);
  process.off('SIGTERM', keep);
  const signal = pending;
  pending = null;
  return signal;
}

/**
 * For a command without a stop handler (eval; generate until its write): a signal kept while the CLI loaded ends
 * it with 128+n, and none is kept after. Left kept, it was never answered (eval) or surfaced at generate's write,
 * after every sample was drawn, as one "received while writing". Two immediates: the poll phase between them
 * dispatches a signal that came during the synchronous load.
 */
export async function endOnEarlySignal(): Promise<void> {
  await new Promise<void>((r) => setImmediate(() => setImmediate(r)));
  const signal = takeEarlySignal();
  if (signal) process.exit(128 + os.constants.signals[signal]);
}
