import { afterPendingReads } from '../util/events';

/** Heartbeats the coordinator may miss before its silence ends the connection. */
const HEARTBEATS_MISSED = 3;

/**
 * Notices a coordinator that vanishes without a close (power loss,
 * partition) by its silence: it pings every heartbeat, and training sends
 * more. Monotonic: a step of the wall clock forward is no silence.
 */
export class SilenceWatchdog {
  private lastHeard = performance.now();
  private limitMs = 0;
  private timer: NodeJS.Timeout | null = null;

  /** Anything from the coordinator, or this worker busy computing: a listener, so bound. */
  readonly heard = (): void => {
    this.lastHeard = performance.now();
  };

  /**
   * From the welcome, which says how often the coordinator pings (before it,
   * the try's handshake time bounds the wait). Looks every second;
   * `onSilence` gets the silence tolerated, which has passed.
   */
  start(heartbeatSeconds: number, onSilence: (limitMs: number) => void): void {
    this.limitMs = HEARTBEATS_MISSED * heartbeatSeconds * 1000;
    this.heard();
    this.stop(); // a second welcome
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

  /**
   * How long the coordinator has said nothing, where that is longer than its
   * pings allow (one and a half heartbeats: a ping missed), and the silence
   * that ends the connection; null while it is heard, or before a welcome.
   */
  missedPings(): { silentMs: number; limitMs: number } | null {
    const silentMs = performance.now() - this.lastHeard;
    if (this.limitMs === 0 || silentMs <= (this.limitMs / HEARTBEATS_MISSED) * 1.5) return null;
    return { silentMs, limitMs: this.limitMs };
  }

  private silent(): boolean {
    return performance.now() - this.lastHeard > this.limitMs;
  }
}
