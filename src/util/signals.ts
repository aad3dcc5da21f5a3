/**
 * First SIGINT/SIGTERM: `onFirst` (finish the step, write outputs, stop
 * workers). Second: exit at once with 130. Returns a function that removes
 * the handlers.
 */
export function onStopSignals(onFirst: (signal: NodeJS.Signals) => void, onSecond: () => void = () => process.exit(130)): () => void {
  let count = 0;
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
  const started = await start(aborting.signal).finally(release);
  const removeSignals = onStopSignals((signal) => stop(started, `${signal} received`), onSecond);
  if (early) stop(started, `${early} received`);
  return { started, removeSignals };
}
