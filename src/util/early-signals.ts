/**
 * Imported first by the CLI. In a container the CLI is pid 1 (the images'
 * ENTRYPOINT is node itself, with no init), and the kernel drops a signal
 * that pid 1 has no handler for: a SIGTERM (kubectl delete, a node drain,
 * docker stop) that came while the CLI loaded, before onStopSignals, was lost,
 * and the coordinator trained on until the grace period's SIGKILL. Until a
 * stop handler is installed, the first such signal is kept here for it.
 */
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

