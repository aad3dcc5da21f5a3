import { afterPendingReads } from '../util/events';

/** Silence tolerated before the welcome says how often the coordinator pings. */
const SILENCE_BEFORE_WELCOME_MS = 30_000;
/** Heartbeats the coordinator may miss before its silence ends the connection. */
const HEARTBEATS_MISSED = 3;

/**
 * Notices a coordinator that vanishes without a close (power loss,
 * partition) by its silence: it pings every heartbeat, and training sends
 * more. Monotonic: a step of the wall clock forward is no silence.
 */
export class SilenceWatchdog {
  private lastHeard = performance.now();
  private limitMs = SILENCE_BEFORE_WELCOME_MS;
  private timer: NodeJS.Timeout | null = null;

  /** Anything from the coordinator, or this worker busy computing: a listener, so bound. */
  readonly heard = (): void => {
    this.lastHeard = performance.now();
  };

  /** The welcome's heartbeat: from now on the coordinator pings this often. */
  expectHeartbeat(seconds: number): void {
    this.limitMs = HEARTBEATS_MISSED * seconds * 1000;
  }

  /** Looks every second; `onSilence` gets the silence tolerated, which has passed. */
  start(onSilence: (limitMs: number) => void): void {
    this.timer = setInterval(() => {
      if (!this.silent()) return;
      // What arrived while this process was stopped, such as why it was dropped, is read first.
      afterPendingReads(() => {
        if (this.silent()) onSilence(this.limitMs);
      });
    }, 1000);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private silent(): boolean {
    return performance.now() - this.lastHeard > this.limitMs;
  }
}
