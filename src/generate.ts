import path from 'node:path';
import { selectBackend } from './backend';
import { BackendChoice } from './backend-choice';
import { readCheckpoint } from './coordinator/checkpoint';
import { checkpointModel } from './coordinator/checkpoint-model';
import { encodePng, imageGrid, tanhToBytes } from './data/png';
import { encodeIdx } from './data/idx';
import { IMAGE_COLS, IMAGE_ROWS } from './data/image';
import { encodeNpy } from './data/npy';
import { generateProblem, outputFile } from './generate-output';
import { plural } from './util/text';
import { generateImages } from './model/sample';
import { batchProgress } from './util/batch-progress';
import { GanfleetError } from './util/errors';
import { Logger, createLogger } from './util/log';
import { Rng } from './util/rng';
import { onStopSignals, signalExitCode, signalsDispatched } from './util/signals';
import { makeDirectory, removeTornWrites, writeFileAtomic } from './util/write';

export interface GenerateOptions {
  /** A checkpoint file, or a run directory (its newest valid checkpoint). */
  checkpoint: string;
  count: number;
  /** .npy (float32 N×28×28, tanh range), .idx (uint8 N×28×28, MNIST format) or .png (a grid). */
  out: string;
  seed: number;
  backend: BackendChoice;
}

/** Draws `count` samples from a checkpoint's generator and writes them in the format the extension names. */
export async function generateSamples(opts: GenerateOptions, log: Logger = createLogger('generate')): Promise<string> {
  // A first SIGINT or SIGTERM ends the drawing at its next batch, with nothing written, and is held through the
  // write (seconds for 627 MB), which would otherwise leave the temporary file. Installed first: as a container's
  // pid 1, the kernel drops a signal that has no handler, and the command drew and wrote on to its end.
  let drawn = 0;
  let writing = false;
  let stopped: NodeJS.Signals | null = null;
  const release = onStopSignals(
    (signal) => {
      if (writing) stopped ??= signal;
      else {
        log(`${signal} received after ${drawn} of ${opts.count} samples: nothing written; exiting`);
        process.exit(signalExitCode(signal));
      }
    },
    () => undefined,
  );
  let target: string;
  try {
    const ext = path.extname(opts.out).toLowerCase();
    const problem = generateProblem(opts.out, opts.count);
    if (problem) throw new GanfleetError('GENERATE_OPTIONS', problem);
    const { checkpoint, file } = readCheckpoint(opts.checkpoint, log);
    const model = checkpointModel(checkpoint, file);
    const backend = await selectBackend(opts.backend);
    log(`backend ${backend.name} (${backend.notes.join('; ')}); generator from ${file} (step ${checkpoint.step})`);

    const noise = new Rng(opts.seed).fillNormal(new Float32Array(opts.count * model.zDim));
    const progress = batchProgress(log, 'samples');
    const images = await generateImages(model, checkpoint.generator, noise, opts.count, 500, async (done) => {
      drawn = done;
      progress('drawing', done, opts.count);
      await signalsDispatched(); // a turn for a stop signal's handler
    });

    let bytes: Buffer;
    if (ext === '.npy') bytes = encodeNpy([opts.count, IMAGE_ROWS, IMAGE_COLS], images);
    else if (ext === '.idx') bytes = encodeIdx([opts.count, IMAGE_ROWS, IMAGE_COLS], tanhToBytes(images));
    else {
      const cols = Math.ceil(Math.sqrt(opts.count));
      const grid = imageGrid(images, opts.count, Math.ceil(opts.count / cols), cols);
      bytes = encodePng(grid.width, grid.height, grid.pixels, 1);
    }
    target = outputFile(opts.out);
    const dir = path.dirname(target);
    makeDirectory(dir);
    // What a generate killed mid-write left (up to 627 MB), once it is surely abandoned.
    for (const torn of removeTornWrites(dir, path.basename(target))) log(`removed ${path.join(dir, torn)}: a write that a killed generate left unfinished`);
    // A full disk or a kill mid-write leaves the file that was there, not a cut-off one under its name. The write
    // is synchronous, so a signal's handler runs once it is done.
    writing = true;
    writeFileAtomic(target, [bytes]);
    await signalsDispatched(); // a signal held during the write, before its handlers go
  } finally {
    if (stopped === null) release(); // else kept until the process ends: released, a signal kills it anew
  }
  if (stopped !== null) {
    log(`${stopped} received while writing: ${opts.out} was written whole (${opts.count} samples); exiting`);
    process.exitCode = signalExitCode(stopped);
    return opts.out;
  }
  log(`wrote ${plural(opts.count, 'sample')} to ${opts.out}${target === path.resolve(opts.out) ? '' : ` (the link's target, ${target})`}`);
  return opts.out;
}
