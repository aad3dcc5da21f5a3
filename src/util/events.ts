import type { EventEmitter } from 'node:events';

/**
 * Resolves when `emitter` emits `event`. Unlike events.once it never
 * rejects: an 'error' first (a socket that errs on its way out, a failed
 * kill) must not skip the cleanup that waits on it.
 */
export function emitted(emitter: EventEmitter, event: string): Promise<void> {
  return new Promise((resolve) => emitter.once(event, () => resolve()));
}

/** Waits `ms`, or less where `abort` fires first; never rejects, so a wait cut short reads as one that ended. */
export function sleep(ms: number, abort?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (abort?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      abort?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    abort?.addEventListener('abort', done);
  });
}

/** Turns a verdict waits at most for a frame still being read: libuv reads a socket 2 MiB a turn, and 64 of them pass the largest frame (128 MiB). */
const MAX_READ_TURNS = 64;

/**
 * Runs `verdict` once the event loop has read what is waiting on the
 * sockets. A process woken from a stop (SIGSTOP, a frozen VM, a long
 * synchronous write) runs its overdue timers before it reads what arrived
 * meanwhile, so a timer that judges a peer by its silence must wait for that
 * read: the pong, the answer or the reason it was dropped may already be in
 * the buffer. `bytesRead` (the peer's connection's count): while it grows
 * from turn to turn, a frame larger than one turn's read is still coming in,
 * and the verdict waits one more turn.
 */
export function afterPendingReads(verdict: () => void, bytesRead?: () => number): void {
  let seen = bytesRead?.();
  let turns = 0;
  const judge = () => {
    const now = bytesRead?.();
    if (now !== seen && ++turns < MAX_READ_TURNS) {
      seen = now;
      return void setImmediate(judge);
    }
    verdict();
  };
  setImmediate(judge);
}
