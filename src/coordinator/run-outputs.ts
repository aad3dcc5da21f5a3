import fs from 'node:fs';
import path from 'node:path';
import { GanModel } from '../model';
import { Logger } from '../util/log';
import { GanfleetError } from '../util/errors';
import { removeFile, writeJsonAtomic } from '../util/write';
import { Checkpoint, writeCheckpoint } from './checkpoint';
import { CoordinatorConfig, runLayout } from './config';
import { exportGenerator } from './export';
import { LEASE_TIMING, OutputClaim } from './output-claim';
import { earlierSummary, evaluationsUpTo, prepareOutputs, summarisedStep } from './resume';
import { SampleWriter, gridName, gridsAround } from './samples';
import type { Stop, TrainingSummary } from './coordinator';
import type { Evaluation } from './evaluation';

/**
 * What a run keeps under --out: the sample grids, evaluations.json, the
 * checkpoints, the exported generator and summary.json, and the lease that
 * lets it write them. Every write is asked of `mayWrite` first, and each file
 * takes its name only while the lease still holds: a run whose --out another
 * coordinator took over writes nothing more there.
 */
export class RunOutputs {
  readonly layout: ReturnType<typeof runLayout>;
  readonly samples: SampleWriter;
  /** The grids of this run's history, oldest first: those up to the checkpoint it resumed from, then its own. */
  private grids: string[] = [];
  /** Every evaluation of this run's history, oldest first. */
  readonly evaluations: Evaluation[] = [];
  /** Steps of the evaluations the resume found after its checkpoint: removed from evaluations.json once started. */
  private evaluationsDiscarded: number[] = [];
  private newestCheckpoint: string | null = null;
  private claim: OutputClaim | null = null;
  private forfeitedBecause: string | null = null;

  constructor(
    private readonly config: CoordinatorConfig,
    private readonly model: GanModel,
    private readonly log: Logger,
  ) {
    this.layout = runLayout(config.out);
    this.samples = new SampleWriter(model, this.layout.samples, config.seed + 2);
  }

  /** The newest checkpoint written, or resumed from. */
  get lastCheckpoint(): string | null {
    return this.newestCheckpoint;
  }

  /** Why this run may no longer write to --out (another coordinator took it over); null while it may. */
  get forfeited(): string | null {
    return this.forfeitedBecause;
  }

  /** Takes the lease on --out; `lost` hears why, once another coordinator has taken it over. `abort` ends a wait for another machine's lease. */
  async claimLease(lost: (why: string) => void, abort?: AbortSignal): Promise<void> {
    this.claim = await OutputClaim.take(
      this.config.out,
      this.log,
      (why) => {
        this.forfeitedBecause = why;
        lost(why);
      },
      LEASE_TIMING,
      abort,
    );
  }

  releaseLease(): void {
    this.claim?.release();
    this.claim = null;
  }

  /** Refuses an --out that holds another run's checkpoints (without --resume), and removes its torn writes. */
  prepare(): void {
    prepareOutputs(this.config, this.log);
  }

  /** The step summary.json says a finished run reached, or null where there is none (or it holds no generator). */
  summarisedStep(): number | null {
    return summarisedStep(this.config.out);
  }

  /** Whether this run may still write to --out: not once another coordinator has taken its lease, read before each write. */
  mayWrite(): boolean {
    return !this.forfeited && (this.claim?.holds() ?? true);
  }

  /**
   * mayWrite, asked again as each file under --out takes its name, after its data is on disk: a write
   * that stalled (a slow fsync on a network volume, a frozen process) past a takeover is abandoned.
   */
  private readonly mayCommit = (): boolean => this.mayWrite();

  /** At start, before setting files aside or removing outputs: a lease lost by then ends the start first. */
  assertStillHeld(): void {
    if (!this.mayWrite()) throw new GanfleetError('OUT_IN_USE', `${this.forfeited} while this coordinator started; it stopped before removing anything there`);
  }

  /** The grids to list, by file name, oldest first. */
  get gridNames(): readonly string[] {
    return this.grids;
  }

  /** Absolute: a relative --out (the default runs/<time>) would name them from where training started. */
  gridPaths(): string[] {
    return this.grids.map((name) => path.resolve(this.samples.dir, name));
  }

  hasGrid(step: number): boolean {
    return this.grids.includes(gridName(step));
  }

  writeGrid(step: number, generator: Float32Array): void {
    if (!this.mayWrite()) return;
    const file = this.samples.write(step, generator, this.mayCommit);
    if (file) this.grids.push(path.basename(file));
  }

  /** A grid this run lists, for the status page; null for any other name, or one removed since (an operator cleaning up). */
  readGrid(name: string): Buffer | null {
    // Only names this run wrote: nothing else on disk is reachable.
    if (!this.grids.includes(name)) return null;
    try {
      return fs.readFileSync(path.join(this.samples.dir, name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  /** Kept beside the checkpoints, so that a resumed run's summary still holds the evaluations before it. */
  addEvaluation(e: Evaluation): void {
    this.evaluations.push(e);
    this.writeEvaluations();
  }

  private writeEvaluations(): void {
    if (this.mayWrite()) writeJsonAtomic(this.layout.evaluations, this.evaluations, this.mayCommit);
  }

  /** The checkpoint's file, or null where this run may not write (or lost --out while writing it). */
  writeCheckpoint(c: Checkpoint): string | null {
    if (!this.mayWrite()) return null;
    const { keepCheckpoints } = this.config;
    const warn = (e: Error) => this.log(`warning: an old checkpoint cannot be removed (--keep-checkpoints ${keepCheckpoints}): ${e.message}`);
    const file = writeCheckpoint(this.layout.checkpoints, c, keepCheckpoints, warn, this.mayCommit);
    if (file === null) return null;
    this.log(`checkpoint ${file}`);
    this.newestCheckpoint = file;
    return file;
  }

  writeGenerator(generator: Float32Array): void {
    if (this.mayWrite()) exportGenerator(this.model, generator, this.layout.generator, this.mayCommit);
  }

  /** False where this run may not write it (or lost --out while writing it). */
  writeSummary(summary: TrainingSummary): boolean {
    return this.mayWrite() && writeJsonAtomic(this.layout.summary, summary, this.mayCommit);
  }

  /**
   * What the run resumed from checkpoint `file`, at `step`, kept: the checkpoint itself, and the grids and
   * evaluations up to `step`, this run's history too, for the status page and summary.json. Those after it are
   * only noted here: forgetLaterOutputs removes them once the coordinator has started. `missedEvaluation`: one
   * was due at `step` (or the run's end) and not recorded, since a kill or a stop cut it short.
   */
  resumeFrom(file: string, step: number): { missedEvaluation: boolean } {
    this.newestCheckpoint = file;
    this.grids = gridsAround(this.samples.dir, step).upTo;
    const recorded = evaluationsUpTo(this.config.out, step, this.log);
    this.evaluations.push(...recorded.kept);
    this.evaluationsDiscarded = recorded.after;
    const { evalEvery, steps } = this.config;
    const due = evalEvery > 0 && (step % evalEvery === 0 || step >= steps);
    return { missedEvaluation: due && !recorded.kept.some((e) => e.step === step) };
  }

  /**
   * The grids, evaluations and summary after `from`, the step this run
   * starts from (null: a run from step 0), are not its history: they show
   * weights the resume throws away (a newer checkpoint was set aside as torn,
   * or removed to rewind), or come from an earlier run that left no
   * checkpoint. Left, a later resume would list them as this run's; a
   * summary.json at the step this run goes on to reach would even be kept as
   * its result.
   */
  forgetLaterOutputs(from: number | null): void {
    const summarised = this.summarisedStep();
    const summary = this.layout.summary;
    if (summarised !== null && summarised > (from ?? 0)) {
      removeFile(summary);
      this.log(`removed ${summary}: it summarised step ${summarised}, ${from === null ? 'trained by an earlier run that left no checkpoint' : `after this checkpoint's step ${from}`}`);
    } else if (from === null && fs.existsSync(summary)) {
      // Any other summary (a run that diverged before its first checkpoint: no generator) is no history of a run
      // from step 0 either: left, a resume of this run would take its evaluations for this run's (evaluationsUpTo).
      removeFile(summary);
      this.log(`removed ${summary}: the summary of an earlier run that left no checkpoint`);
    }
    const { after } = gridsAround(this.samples.dir, from ?? 0);
    for (const name of after) removeFile(path.join(this.samples.dir, name));
    if (after.length > 0) {
      this.log(`removed ${after.join(', ')} from ${this.samples.dir}: ${from === null ? 'an earlier run that left no checkpoint drew them' : 'they show weights after this checkpoint'}`);
    }
    const file = this.layout.evaluations;
    if (from === null && fs.existsSync(file)) {
      removeFile(file);
      this.log(`removed ${file}: the evaluations of an earlier run that left no checkpoint`);
    } else if (this.evaluationsDiscarded.length > 0) {
      this.writeEvaluations();
      this.log(`evaluations at step ${this.evaluationsDiscarded.join(', ')} scored weights after this checkpoint; removed from ${file}`);
    }
  }

  /**
   * The end of a resumed run that trained nothing, at `step`: the summary's figures stay the earlier run's. An
   * evaluation scored on resume (`scored`: one a stop or a kill cut short) joins them, and `ok` says how the
   * latest run ended: false after a failure (it diverged at once, say), or a script reading it would see
   * success; true again once a run finds the training finished.
   */
  leaveAsTheyWere(step: number, stop: Stop, scored: boolean): void {
    const { steps, out } = this.config;
    const file = this.layout.summary;
    const kept = earlierSummary(out)!;
    const finishedAgain = !stop.failed && step >= steps && kept.ok === false;
    const okChanged = stop.failed || finishedAgain;
    const needsRewrite = scored || okChanged;
    const rewritten = needsRewrite && this.mayWrite() && writeJsonAtomic(file, { ...kept, evaluations: this.evaluations, ...(okChanged ? { ok: !stop.failed, stopReason: stop.reason } : {}) }, this.mayCommit);
    if (rewritten && scored) this.log(`added the evaluation of step ${step} to ${file}`);
    if (needsRewrite && !rewritten) this.log(`${this.forfeited}: ${file} was not rewritten`);
    const why = step >= steps ? `the run is at step ${step} of --steps ${steps} (raise --steps to train on)` : 'no step was trained';
    const marked = !rewritten ? '' : stop.failed ? ` (${file} says ok: false)` : finishedAgain ? ` (${file} says ok: true again)` : '';
    this.log(`${stop.reason}: ${why}; the outputs in ${out} are left as they were${marked}`);
  }

  /**
   * An error out of training (a write that failed on a full disk, say) ends the run with no summary of its own.
   * An earlier run's summary.json (this one resumed it) is marked failed, or a script reading it would see success.
   */
  markSummaryFailed(e: unknown): void {
    const file = this.layout.summary;
    let kept: Partial<TrainingSummary> | null;
    try {
      kept = earlierSummary(this.config.out);
    } catch {
      return; // the error that ended this run is the one to report
    }
    if (!kept || kept.ok === false || !this.mayWrite()) return;
    try {
      if (writeJsonAtomic(file, { ...kept, ok: false, stopReason: `failed: ${(e as Error).message}` }, this.mayCommit)) this.log(`${file} says ok: false`);
    } catch (e2) {
      // Left as it was, it would say ok: true for a run that failed. The disk that failed the run (full, say) often
      // takes no rewrite either, but a rename needs no space: set aside, it is no longer taken for this run's.
      try {
        fs.renameSync(file, `${file}.invalid`);
        this.log(`${file} could not be marked ok: false (${(e2 as Error).message}); set aside as ${path.basename(file)}.invalid, so that it does not say ok: true`);
      } catch (e3) {
        this.log(`${file} could not be marked ok: false (${(e2 as Error).message}), nor set aside (${(e3 as Error).message}): it still says ok: true`);
      }
    }
  }
}
