/** What one step did, as the progress line, metrics and the status page show it. */
export interface StepStats {
  dLoss: number;
  gLoss: number;
  dReal: number;
  dFake: number;
  /** Real images consumed this step, summed over workers. */
  images: number;
  workers: number;
}

/** Wall time in seconds from the first step, and the parts of it paused and evaluating. */
export interface Elapsed {
  seconds: number;
  pausedSeconds: number;
  evaluationSeconds: number;
}

/** Steps behind the status page's images/s. */
const RECENT_STEPS = 32;

/** A moment of the run: the wall clock, and the time paused and evaluating until then. */
interface Mark {
  at: number;
  paused: number;
  evaluating: number;
}

/**
 * A run's pace. Waiting for workers is not the pace of training, so every
 * rate and ETA leaves the time paused out. Scoring G (--eval-every) is not
 * training either: rates leave it out, but ETAs count it, since the run
 * still has to do it. The clock starts at the first round, not while the
 * first workers connect.
 */
export class RunClock {
  /** `now`: milliseconds, as performance.now gives them (a test drives its own). */
  constructor(private readonly now: () => number = () => performance.now()) {}

  private pausedSeconds = 0;
  private evaluatingSeconds = 0;
  private first: Mark | null = null;
  /** A step has started: until then, a clock begun by an evaluation leaves out the wait after it. */
  private stepped = false;
  private readonly window: Mark = { at: 0, paused: 0, evaluating: 0 };
  /** Where the step in progress started. */
  private readonly step: Mark = { at: 0, paused: 0, evaluating: 0 };
  private windowImages = 0;
  /** The run's first step's images, while the window still holds that step; null after. */
  private firstStepImages: number | null = null;
  /** Steps this run and their time, evaluations and checkpoints in: the pace behind every ETA. */
  private paceSteps = 0;
  private paceSeconds = 0;
  /**
   * The end of the first step, where the pace starts once a second step is
   * done: the first carries the start-up (shards sent, kernels compiled),
   * which would stretch early ETAs.
   */
  private afterFirst: Mark | null = null;
  /**
   * The last RECENT_STEPS steps' own times, for the status page's images/s:
   * their median, so one step that waited out a dropped worker's deadline
   * does not pull the figure down for a hundred steps, as an average did.
   */
  private readonly recent = new Float64Array(RECENT_STEPS);
  private recentCount = 0;

  /** Time spent waiting for workers, at a step boundary or mid-step. */
  addPause(seconds: number): void {
    this.pausedSeconds += seconds;
  }

  /** Time spent evaluating G, between steps. */
  addEvaluation(seconds: number): void {
    this.evaluatingSeconds += seconds;
  }

  /**
   * The run's clock starts at its first step, or at an evaluation before it (a resume that scores its
   * checkpoint's step first): that evaluation is the run's work too, and where no step follows (a finished
   * run resumed) it is the run's last, which summary.json's seconds and evaluationSeconds count.
   */
  begin(): void {
    if (!this.first) {
      this.first = this.mark({ at: 0, paused: 0, evaluating: 0 });
      this.mark(this.window);
    }
  }

  stepStarted(): void {
    this.mark(this.step);
    if (this.first && !this.stepped) {
      // Begun by an evaluation: the wait for the first workers that followed it is left out, as in a run whose
      // clock starts at its first step, instead of counting (minutes, hours) in seconds and pausedSeconds.
      this.first.at += (this.pausedSeconds - this.first.paused) * 1000;
      this.first.paused = this.pausedSeconds;
    }
    this.stepped = true;
    this.begin();
  }

  /** The step's training time in seconds: neither paused nor evaluating. */
  stepFinished(images: number): number {
    const seconds = this.since(this.step);
    if (this.recentCount === 0) this.firstStepImages = images;
    this.recent[this.recentCount++ % RECENT_STEPS] = seconds;
    this.windowImages += images;
    return seconds;
  }

  /** After the step's sample grid, checkpoint and evaluation, which the pace counts in. */
  paceAfter(stepsThisRun: number): void {
    if (!this.first) return;
    const from = stepsThisRun > 1 && this.afterFirst ? this.afterFirst : this.first;
    this.paceSteps = from === this.first ? stepsThisRun : stepsThisRun - 1;
    this.paceSeconds = this.since(from) + (this.evaluatingSeconds - from.evaluating);
    if (stepsThisRun === 1) this.afterFirst = this.mark({ at: 0, paused: 0, evaluating: 0 });
  }

  /**
   * Images a second since the last call. The first call's window leaves out the run's first step where
   * it holds later ones, as the ETA's pace does: that step carries the start-up.
   */
  windowRate(): number {
    const first = this.firstStepImages;
    const rate =
      first !== null && this.afterFirst && this.windowImages > first
        ? (this.windowImages - first) / this.since(this.afterFirst)
        : this.windowImages / this.since(this.window);
    this.mark(this.window);
    this.windowImages = 0;
    this.firstStepImages = null;
    return rate;
  }

  /** Null before the first step. */
  etaSeconds(remainingSteps: number): number | null {
    return this.paceSteps > 0 ? (remainingSteps * this.paceSeconds) / this.paceSteps : null;
  }

  /** At the median time of the recent steps; 0 before the first. */
  imagesPerSecond(imagesPerStep: number): number {
    const times = this.recent.slice(0, Math.min(this.recentCount, RECENT_STEPS)).sort();
    if (times.length === 0) return 0;
    const mid = times.length >> 1;
    const median = times.length % 2 ? times[mid] : (times[mid - 1] + times[mid]) / 2;
    return median > 0 ? imagesPerStep / median : 0;
  }

  /** Wall time from the first step until now, and the parts of it paused and evaluating. */
  elapsed(): Elapsed {
    if (!this.first) return { seconds: 0, pausedSeconds: 0, evaluationSeconds: 0 };
    return {
      seconds: (this.now() - this.first.at) / 1000,
      pausedSeconds: this.pausedSeconds - this.first.paused,
      evaluationSeconds: this.evaluatingSeconds - this.first.evaluating,
    };
  }

  private mark(m: Mark): Mark {
    m.at = this.now();
    m.paused = this.pausedSeconds;
    m.evaluating = this.evaluatingSeconds;
    return m;
  }

  /** Training time since `m`: neither paused nor evaluating. */
  private since(m: Mark): number {
    return (this.now() - m.at) / 1000 - (this.pausedSeconds - m.paused) - (this.evaluatingSeconds - m.evaluating);
  }
}

export function progressLine(step: number, steps: number, s: StepStats, imagesPerSecond: number, etaSeconds: number): string {
  const f = (x: number) => x.toFixed(4);
  return (
    `step ${step}/${steps} d_loss=${f(s.dLoss)} g_loss=${f(s.gLoss)} D(x)=${f(s.dReal)} D(G(z))=${f(s.dFake)} ` +
    `images/s=${imagesPerSecond.toFixed(0)} workers=${s.workers} eta=${formatDuration(etaSeconds)}`
  );
}

/** Seconds a run trains without a progress line before it says when the first comes. */
export const FIRST_LINE_NOTICE_SECONDS = 5;

/**
 * Says when the first progress line comes, at `step` of a run that has trained FIRST_LINE_NOTICE_SECONDS without
 * one. The DCGAN at the default --log-every 100 took two minutes (more on wasm without the native kernels) from its
 * shard plan to its first line, with nothing said, and looked hung. `etaSeconds`: the time a number of steps takes at the run's pace.
 */
export function firstLineNotice(step: number, steps: number, logEvery: number, etaSeconds: (steps: number) => number | null): string {
  const next = Math.min(steps, (Math.floor(step / logEvery) + 1) * logEvery);
  return `no progress line yet at step ${step}/${steps}: the first comes at step ${next} (--log-every ${logEvery}), in about ${formatDuration(etaSeconds(next - step) ?? 0)}`;
}

function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(s % 60).padStart(2, '0')}s`;
}
