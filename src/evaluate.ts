import { selectBackend } from './backend';
import { BackendChoice } from './backend-choice';
import { EvalProgress, Quality, evaluateGenerator, evaluateImages, loadReference } from './eval/quality';
import { readSampleImages } from './data/sample-file';
import { GENERATE_MAX_COUNT } from './generate-output';
import { readCheckpoint } from './coordinator/checkpoint';
import { checkpointModel } from './coordinator/checkpoint-model';
import { batchProgress } from './util/batch-progress';
import { Logger, createLogger } from './util/log';
import { onStopSignals, signalExitCode, signalsDispatched } from './util/signals';

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
  return scoring(log, async (between) => {
    const { checkpoint, file } = readCheckpoint(opts.checkpoint, log);
    const model = checkpointModel(checkpoint, file);
    const backend = await selectBackend(opts.backend);
    log(`backend ${backend.name} (${backend.notes.join('; ')}); ${model.arch}/${model.loss} generator from ${file} (step ${checkpoint.step}); ${opts.samples} samples`);
    const quality = await evaluateGenerator(model, checkpoint.generator, opts.samples, opts.seed, loadReference(opts.dataDir), between);
    return { ...quality, step: checkpoint.step, checkpoint: file, model: model.arch, loss: model.loss };
  });
}

/** `ganfleet eval --images`: scores the images in a file, another trainer's samples as well as ganfleet's. */
export async function evaluateImageFile(opts: { images: string; backend: BackendChoice; dataDir?: string }, log: Logger = createLogger('eval', process.stderr)): Promise<Quality & { images: string }> {
  return scoring(log, async (between) => {
    const { images, count } = readSampleImages(opts.images, GENERATE_MAX_COUNT);
    const backend = await selectBackend(opts.backend);
    log(`backend ${backend.name} (${backend.notes.join('; ')}); ${count} images from ${opts.images}`);
    return { ...(await evaluateImages(images, count, loadReference(opts.dataDir), between)), images: opts.images };
  });
}

/**
 * Runs `score` with progress lines, and a first SIGINT or SIGTERM ending it at its next batch. Installed first:
 * as a container's pid 1, the kernel drops a signal that has no handler, and the command scored on to its end.
 */
async function scoring<T>(log: Logger, score: (between: EvalProgress) => Promise<T>): Promise<T> {
  let phase = 'loading';
  const release = onStopSignals((signal) => {
    log(`${signal} received while ${phase}: no score; exiting`);
    process.exit(signalExitCode(signal));
  });
  try {
    const progress = batchProgress(log, 'images');
    return await score(async (at, done, total) => {
      phase = at;
      progress(at, done, total);
      await signalsDispatched(); // a turn for a stop signal's handler
    });
  } finally {
    release();
  }
}
