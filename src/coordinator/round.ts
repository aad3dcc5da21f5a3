import { Gradients, Phase } from '../protocol/messages';

/**
 * One synchronous round: the set of workers asked for gradients and what
 * each returned. It completes when every participant has either answered or
 * left; a worker that leaves simply contributes nothing, so a round never
 * waits on the dead.
 */
export class Round {
  readonly received = new Map<string, Gradients>();
  private readonly waiting: Set<string>;
  private finish!: () => void;
  readonly done = new Promise<void>((resolve) => (this.finish = resolve));
  readonly startedAt = performance.now();

  constructor(
    readonly step: number,
    readonly phase: Phase,
    participants: readonly string[],
  ) {
    this.waiting = new Set(participants);
    this.settleIfDone();
  }

  isAwaiting(workerId: string): boolean {
    return this.waiting.has(workerId);
  }

  accept(workerId: string, gradients: Gradients): void {
    if (!this.waiting.delete(workerId)) return;
    this.received.set(workerId, gradients);
    this.settleIfDone();
  }

  /** The worker left or its answer was rejected: stop waiting for it. */
  drop(workerId: string): void {
    if (this.waiting.delete(workerId)) this.settleIfDone();
  }

  private settleIfDone(): void {
    if (this.waiting.size === 0) this.finish();
  }
}
