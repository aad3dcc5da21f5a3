import { DiscriminatorUpdates, GanModel, discriminatorGradientSize } from '../model';
import { negativeVariance, statisticsSize } from '../model/batchnorm';
import { RejectReason } from '../protocol/codec';
import { Gradients, MAX_GRADIENT_ABS, MAX_LOSS, Phase, stepOfRound } from '../protocol/messages';

/**
 * One synchronous round: the set of workers asked for gradients and what
 * each returned. It completes when every participant has either answered or
 * left; a worker that leaves simply contributes nothing, so a round never
 * waits on the dead.
 */
export class Round {
  readonly received = new Map<string, Gradients>();
  private readonly waiting: Set<string>;
  private readonly timers: NodeJS.Timeout[] = [];
  private finish!: () => void;
  readonly done = new Promise<void>((resolve) => (this.finish = resolve));
  readonly startedAt = performance.now();

  constructor(
    readonly step: number,
    readonly phase: Phase,
    private readonly participants: readonly string[],
  ) {
    this.waiting = new Set(participants);
    this.settleIfDone();
  }

  isAwaiting(workerId: string): boolean {
    return this.waiting.has(workerId);
  }

  /** The participants that have neither answered nor left, in the participants' order. */
  awaited(): string[] {
    return this.participants.filter((id) => this.waiting.has(id));
  }

  get size(): number {
    return this.participants.length;
  }

  accept(workerId: string, gradients: Gradients): void {
    if (!this.waiting.delete(workerId)) return;
    this.received.set(workerId, gradients);
    this.settleIfDone();
  }

  /**
   * The answers in the participants' order, not their arrival's: float sums
   * depend on the order of their terms, and a run should not depend on
   * which worker answered first.
   */
  answers(): Gradients[] {
    return this.participants.flatMap((id) => this.received.get(id) ?? []);
  }

  /** A deadline of this round: it is cleared when the round settles, so none outlives its round. */
  after(ms: number, fn: () => void): void {
    if (this.waiting.size > 0) this.timers.push(setTimeout(fn, ms));
  }

  /** The worker left or its answer was rejected: stop waiting for it. */
  drop(workerId: string): void {
    if (this.waiting.delete(workerId)) this.settleIfDone();
  }

  private settleIfDone(): void {
    if (this.waiting.size > 0) return;
    this.timers.forEach(clearTimeout);
    this.finish();
  }
}

/** Tries of one round that end the run when each went unanswered and as many workers dropped at a deadline came back alive. */
export const HOPELESS_TRIES = 3;

/**
 * The round being asked again: its unanswered tries, and the workers dropped
 * at a deadline while asked it that came back, each alive but slower than
 * --heartbeat or --round-timeout on this machine. Asked again
 * with the same deadlines, such a round never ends (a DCGAN on the cpu
 * backend, whose rounds outlast --heartbeat, went round 334 times).
 */
export class RoundRetries {
  private round = -1;
  tries = 0;
  cameBack = 0;
  /** The longest from a request to its worker's return: at least the round's time on that worker. */
  slowestSeconds = 0;

  /** A try of `round` went unanswered. */
  unanswered(round: number): void {
    if (this.follow(round)) this.tries++;
  }

  /** A worker dropped at a deadline while asked `round` came back `seconds` after it was asked. Older rounds' do not count. */
  overdueCameBack(round: number, seconds: number): void {
    if (!this.follow(round)) return;
    this.cameBack++;
    this.slowestSeconds = Math.max(this.slowestSeconds, seconds);
  }

  /** Asking again would only drop the same live workers again. */
  get hopeless(): boolean {
    return this.tries >= HOPELESS_TRIES && this.cameBack >= HOPELESS_TRIES;
  }

  /** Starts the tally afresh at a newer round; false for an older one. */
  private follow(round: number): boolean {
    if (round < this.round) return false;
    if (round > this.round) Object.assign(this, { round, tries: 0, cameBack: 0, slowestSeconds: 0 });
    return true;
  }
}

/** What a closed round reports for the progress line and the metrics. */
export interface RoundResult {
  loss: number;
  dReal: number;
  dFake: number;
  samples: number;
  contributors: number;
}

/** Rounds in order: step 0's D round is 0, its G round 1, step 1's D round 2, … */
export function roundIndex(step: number, phase: Phase): number {
  return step * 2 + (phase === 'generator' ? 1 : 0);
}

/** What logs call the round of a `roundIndex`: "generator gradients for step 65". */
export function roundName(index: number): string {
  const phase: Phase = index % 2 === 1 ? 'generator' : 'discriminator';
  return `${phase} gradients for step ${stepOfRound(Math.floor(index / 2))}`;
}

/** The round's losses and scores averaged by sample count, as one batch of all the samples would give them. */
export function weightedStats(replies: Gradients[]): RoundResult {
  let samples = 0;
  let loss = 0;
  let dReal = 0;
  let dFake = 0;
  for (const r of replies) {
    samples += r.samples;
    loss += r.loss * r.samples;
    dReal += (r.dReal ?? 0) * r.samples;
    dFake += r.dFake * r.samples;
  }
  return { loss: loss / samples, dReal: dReal / samples, dFake: dFake / samples, samples, contributors: replies.length };
}

/** What a run's answers are checked against besides its model: the welcome's terms that set their sizes. */
export interface AnswerTerms {
  batchSize: number;
  discriminatorUpdates: DiscriminatorUpdates;
}

/** What the codec cannot know about an answer: sizes for this model and run, and plausible ranges. */
export function implausibleGradients(msg: Gradients, model: GanModel, { batchSize, discriminatorUpdates }: AnswerTerms): [RejectReason, string] | null {
  const layout = msg.phase === 'generator' ? model.generatorLayout : model.discriminatorLayout;
  // D's come in D's layout once per update (discriminatorGradientSize).
  const size = msg.phase === 'generator' ? layout.size : discriminatorGradientSize(model, discriminatorUpdates);
  if (msg.gradients.length !== size) return ['bad_size', `${msg.phase} gradients have ${msg.gradients.length} values, expected ${size}`];
  // Adam would move a moving statistic by a nonzero "gradient" past the checks on batch statistics (a variance
  // below zero leaves G's inference NaN), so what is not learnt by gradient must arrive as 0.
  for (let at = 0; at < size; at += layout.size) {
    for (const e of layout.statistics) {
      if (msg.gradients.subarray(at + e.offset, at + e.offset + e.size).some((v) => v !== 0)) return ['out_of_range', `${e.name} is not learnt by gradient: its gradient must be 0`];
    }
  }
  if (msg.samples < 1 || msg.samples > batchSize) return ['bad_field', `samples ${msg.samples} is outside 1..${batchSize}`];
  if (msg.phase === 'discriminator' && msg.dReal === undefined) return ['bad_field', 'discriminator gradients need dReal'];
  const statistics = msg.phase === 'generator' ? statisticsSize(model.generatorLayout) : 0;
  if ((msg.statistics?.length ?? 0) !== statistics) return ['bad_size', `${msg.phase} gradients carry ${msg.statistics?.length ?? 0} batch statistics, expected ${statistics}`];
  if (msg.statistics && negativeVariance(model.generatorLayout, msg.statistics)) return ['out_of_range', 'a batch variance is negative'];
  if (!(msg.loss >= 0 && msg.loss <= MAX_LOSS)) return ['out_of_range', `loss ${msg.loss} is outside 0..${MAX_LOSS}`];
  for (const [k, v] of [['dReal', msg.dReal ?? 0], ['dFake', msg.dFake]] as const) {
    // A probability under bce; lsgan's raw scores are only bounded like gradients.
    const ok = model.loss === 'bce' ? v >= 0 && v <= 1 : Math.abs(v) <= MAX_GRADIENT_ABS;
    if (!ok) return ['out_of_range', `${k} ${v} is out of range for ${model.loss}`];
  }
  if (msg.computeSeconds < 0 || msg.computeSeconds > 3600) return ['out_of_range', `computeSeconds ${msg.computeSeconds} is implausible`];
  // Each gradient's magnitude is bounded by the codec (MAX_GRADIENT_ABS), in its pass over the floats.
  return null;
}
