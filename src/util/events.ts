import type { EventEmitter } from 'node:events';

/**
 * Resolves when `emitter` emits `event`. Unlike events.once it never
 * rejects: an 'error' first (a socket that errs on its way out, a failed
 * kill) must not skip the cleanup that waits on it.
 */
export function emitted(emitter: EventEmitter, event: string): Promise<void> {
  return new Promise((resolve) => emitter.once(event, () => resolve()));
}

/**
 * Runs `verdict` once this turn of the event loop has read its sockets. A
 * process woken from a stop (SIGSTOP, a frozen VM, a long synchronous write)
 * runs its overdue timers before it reads what arrived meanwhile, so a timer
 * that judges a peer by its silence must wait for that read: the pong, the
 * answer or the reason it was dropped may already be in the buffer.
 */
export function afterPendingReads(verdict: () => void): void {
  setImmediate(verdict);
}
