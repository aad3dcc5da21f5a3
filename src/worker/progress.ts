import { stepOfRound } from '../protocol/messages';
import { Logger } from '../util/log';

/**
 * A line every `everySeconds` (0 = none) of the rounds answered since the
 * last: a worker on another machine otherwise says nothing while it trains.
 */
export class ProgressLine {
  private since = performance.now();
  private rounds = 0;
  private computeSeconds = 0;

  constructor(
    private readonly everySeconds: number,
    private readonly log: Logger,
  ) {}

  /** A round answered: `step` as the weights message gives it, its gradients computed in `computeSeconds`. */
  answered(step: number, computeSeconds: number): void {
    this.rounds++;
    this.computeSeconds += computeSeconds;
    const everyMs = this.everySeconds * 1000;
    const sinceMs = performance.now() - this.since;
    if (everyMs > 0 && sinceMs >= everyMs) {
      this.log(`step ${stepOfRound(step)}: ${this.rounds} rounds in ${(sinceMs / 1000).toFixed(1)} s, ${((this.computeSeconds / this.rounds) * 1000).toFixed(1)} ms of compute each`);
      this.since = performance.now();
      this.rounds = 0;
      this.computeSeconds = 0;
    }
  }
}
