import { stepOfRound } from '../protocol/messages';
import { afterPendingReads } from '../util/events';
import { Logger } from '../util/log';

/**
 * A line every `everySeconds` (0 = none) of the rounds answered since the
 * last: a worker on another machine otherwise says nothing while it trains.
 * A connection with no round for that long says so instead: a worker whose
 * coordinator waits for more workers would otherwise look hung.
 */
export class ProgressLine {
  private since = performance.now();
  private rounds = 0;
  private computeSeconds = 0;
  /** When the last round was answered, or the connection joined; the step of that round, or null before one. */
  private lastRound = { at: performance.now(), step: null as number | null };
  private idleTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly everySeconds: number,
    private readonly log: Logger,
    /** The connection's bytes read: a round's frame larger than one turn's read (a DCGAN's weights) is still a round coming. */
    private readonly bytesRead?: () => number,
    /** The coordinator's silence where a ping was missed (SilenceWatchdog.missedPings): then the link is the likelier cause. */
    private readonly missedPings?: () => { silentMs: number; limitMs: number } | null,
  ) {}

  /** Joined: idle time counts from here until stop(). */
  start(): void {
    this.lastRound = { at: performance.now(), step: null };
    const everyMs = this.everySeconds * 1000;
    if (everyMs <= 0 || this.idleTimer) return;
    // Re-armed by each round: it fires only after a whole interval without one, then once an interval.
    this.idleTimer = setTimeout(() => {
      // Woken from a stop (SIGSTOP, a paused VM), this timer runs before the round that came meanwhile is read:
      // then the coordinator was waiting on this worker, not this worker on it.
      const idleSince = this.lastRound.at;
      afterPendingReads(() => {
        if (!this.idleTimer || this.lastRound.at !== idleSince) return; // stopped, or a round came and re-armed the timer
        const idleMs = performance.now() - this.lastRound.at;
        const since = this.lastRound.step === null ? 'since joining' : `since step ${stepOfRound(this.lastRound.step)}`;
        const silence = this.missedPings?.() ?? null;
        const why =
          silence === null
            ? 'the coordinator is waiting for workers, paused, or busy (evaluating, or waiting on a slower worker); its log says which'
            : `nothing at all from the coordinator for ${seconds(silence.silentMs)} s, not even a ping: the link or the coordinator is down, or it is stopped; the connection is given up after ${seconds(silence.limitMs)} s of that`;
        this.log(`no round for ${seconds(idleMs)} s ${since}: ${why}`);
        this.idleTimer.refresh();
      }, this.bytesRead);
    }, everyMs);
  }

  stop(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  /** A round answered: `step` as the weights message gives it, its gradients computed in `computeSeconds`. */
  answered(step: number, computeSeconds: number): void {
    this.rounds++;
    this.computeSeconds += computeSeconds;
    this.lastRound = { at: performance.now(), step };
    this.idleTimer?.refresh();
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

const seconds = (ms: number): string => (ms / 1000).toFixed(ms < 10_000 ? 1 : 0);
