import fs from 'node:fs';

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
 * A first SIGINT/SIGTERM that comes while something starts (a coordinator
 * loading, binding, watching a lease): it aborts `abort`, so a wait may end
 * early, and `received()` names it, so the caller stops once started instead
 * of being killed half way. `release()` hands the signals back.
 */
export function holdStopSignals(): { abort: AbortSignal; received: () => NodeJS.Signals | null; release: () => void } {
  let first: NodeJS.Signals | null = null;
  const aborting = new AbortController();
  const release = onStopSignals((signal) => {
    first ??= signal;
    aborting.abort(`${signal} received`);
  });
  return { abort: aborting.signal, received: () => first, release };
}

/** Whether a process of this pid exists: signal 0 checks without sending anything. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: alive, under another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The inode number of this process's pid namespace (Linux), or null: a pid names one process only within its namespace. */
export function pidNamespace(): string | null {
  try {
    return /^pid:\[(\d+)\]$/.exec(fs.readlinkSync('/proc/self/ns/pid'))?.[1] ?? null;
  } catch {
    return null;
  }
}
