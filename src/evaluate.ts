import { selectBackend } from './backend';
import { BackendChoice } from './backend-choice';
import { Quality, evaluateGenerator, loadReference } from './eval/quality';
import { readCheckpoint } from './coordinator/checkpoint';
import { checkpointModel } from './coordinator/checkpoint-model';
import { batchProgress } from './util/batch-progress';
import { Logger, createLogger } from './util/log';

export interface EvaluateOptions {
  /** A checkpoint file, or a run directory (its newest valid checkpoint). */
  checkpoint: string;
  samples: number;
  seed: number;
  backend: BackendChoice;
  dataDir?: string;
}

/** `ganfleet eval`: loads a checkpoint's G and scores it. Logs go to stderr: stdout is the result. */
export async function evaluateCheckpoint(opts: EvaluateOptions, log: Logger = createLogger('eval', process.stderr)): Promise<Quality & { step: number; checkpoint: string; model: string; loss: string }> {
  const { checkpoint, file } = readCheckpoint(opts.checkpoint, log);
  const model = checkpointModel(checkpoint, file);
  const backend = await selectBackend(opts.backend);
  log(`backend ${backend.name} (${backend.notes.join('; ')}); ${model.arch}/${model.loss} generator from ${file} (step ${checkpoint.step}); ${opts.samples} samples`);
  const quality = await evaluateGenerator(model, checkpoint.generator, opts.samples, opts.seed, loadReference(opts.dataDir), batchProgress(log, 'images'));
  return { ...quality, step: checkpoint.step, checkpoint: file, model: model.arch, loss: model.loss };
}
