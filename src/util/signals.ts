/**
 * First SIGINT/SIGTERM: `onFirst` (finish the step, write outputs, stop
 * workers). Second: exit at once with 130. `seen` signals were already
 * handled elsewhere (so with 1 the next one is the second). Returns a
 * function that removes the handlers.
 */
export function onStopSignals(onFirst: (signal: NodeJS.Signals) => void, onSecond: () => void = () => process.exit(130), seen = 0): () => void {
  let count = seen;
  const handler = (signal: NodeJS.Signals) => (++count > 1 ? onSecond() : onFirst(signal));
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}

/**
 * Starts what a first SIGINT/SIGTERM stops (`stop`, with the reason), also
 * while it starts (a coordinator loading, binding, watching a lease): such a
 * signal aborts the start's waits and stops it once started, instead of
 * killing the process half way. A second signal runs `onSecond`. Returns what
 * started, and a function that removes the handlers.
 */
export async function startStoppable<T>(
  start: (abort: AbortSignal) => Promise<T>,
  stop: (started: T, reason: string) => void,
  onSecond?: () => void,
): Promise<{ started: T; removeSignals: () => void }> {
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
  const removeSignals = onStopSignals((signal) => stop(started, `${signal} received`), onSecond, early ? 1 : 0);
  release();
  if (early) stop(started, `${early} received`);
  return { started, removeSignals };
}
