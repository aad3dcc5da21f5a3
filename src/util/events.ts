import type { EventEmitter } from 'node:events';

/**
 * Resolves when `emitter` emits `event`. Unlike events.once it never
 * rejects: an 'error' first (a socket that errs on its way out, a failed
 * kill) must not skip the cleanup that waits on it.
 */
export function emitted(emitter: EventEmitter, event: string): Promise<void> {
  return new Promise((resolve) => emitter.once(event, () => resolve()));
}
