import { Quality, Reference, evaluateGenerator, loadReference } from '../eval/quality';
import { GanModel } from '../model';
import { batchProgress } from '../util/batch-progress';
import { Logger } from '../util/log';
import { CoordinatorMetrics } from './metrics';
import { RunClock } from './progress';
import { RunOutputs } from './run-outputs';

export interface Evaluation extends Quality {
  step: number;
}

/** Ends an evaluation that a stop overtook: the stop's checkpoint must not wait for it. */
class EvaluationCut extends Error {}

export interface EvaluatorParts {
  log: Logger;
  metrics: CoordinatorMetrics;
  /** Takes each evaluation's seconds out of the training pace. */
  clock: RunClock;
  /** Records each result (evaluations.jsonl, summary.json, the status page). */
  outputs: RunOutputs;
  /** A stop was asked for: it cuts short an evaluation started with `cutByStop`. */
  stopping: () => boolean;
}

/**
 * --eval-every: scores G between steps (no round is open), against the MNIST
 * test set read when the coordinator starts, so that files changed during the
 * run change no evaluation. Sampling yields to the event loop after every
 * batch, so heartbeats keep flowing while it runs.
 */
export class Evaluator {
  /** Scoring G: the status page says so rather than the coordinator's state, which an evaluation leaves as it was. */
  running = false;
  private readonly reference: Reference;

  constructor(
    private readonly model: GanModel,
    private readonly config: { dataDir?: string; evalSamples: number; seed: number },
    private readonly parts: EvaluatorParts,
  ) {
    this.reference = loadReference(config.dataDir);
  }

  /** Scores G as `generator` holds it at `step`; `cutByStop`: a stop asked for meanwhile ends it unrecorded. */
  async score(step: number, generator: Float32Array, cutByStop: boolean): Promise<void> {
    const { log, metrics, clock, outputs, stopping } = this.parts;
    clock.begin();
    const t = performance.now();
    // Nothing trains meanwhile, for seconds or minutes (a DCGAN's 10,000 samples on a CPU): the log and the status
    // page say so, and the workers' "no round" lines point here.
    this.running = true;
    log(`evaluating G at step ${step} (${this.config.evalSamples} samples): training waits meanwhile`);
    // A DCGAN's takes minutes: lines every 10 s or more say how far it is. An MLP's few seconds show none.
    const progress = batchProgress(log, 'images', 10);
    const between = async (phase: string, done: number, total: number) => {
      progress(`eval step ${step}: ${phase}`, done, total);
      await new Promise((r) => setImmediate(r));
      if (cutByStop && stopping()) throw new EvaluationCut();
    };
    const quality = await evaluateGenerator(this.model, generator, this.config.evalSamples, this.config.seed + 4, this.reference, between)
      .catch((e) => {
        if (e instanceof EvaluationCut) return null;
        throw e;
      })
      .finally(() => (this.running = false));
    const seconds = (performance.now() - t) / 1000;
    clock.addEvaluation(seconds);
    metrics.evalSeconds.inc(seconds);
    if (!quality) return log(`eval step ${step}: left unfinished after ${seconds.toFixed(1)} s, so that the stop's checkpoint need not wait for it`);
    outputs.addEvaluation({ step, ...quality });
    showEvaluation(metrics, quality);
    log(`eval step ${step}: fid=${quality.fid.toFixed(3)} mnist_score=${quality.mnistScore.toFixed(3)} (${quality.samples} samples, ${seconds.toFixed(1)} s)`);
  }
}

/** The gauges of the newest evaluation (one a resumed run recorded before, too). */
export function showEvaluation(metrics: CoordinatorMetrics, e: { fid: number; mnistScore: number }): void {
  metrics.fid.set(e.fid);
  metrics.mnistScore.set(e.mnistScore);
}
