import fs from 'node:fs';
import path from 'node:path';
import { BackendChoice, selectBackend } from './backend';
import { readCheckpoint } from './coordinator/checkpoint';
import { encodePng, imageGrid, tanhToByte } from './data/png';
import { encodeIdx } from './data/idx';
import { encodeNpy } from './data/npy';
import { createModel } from './model';
import { generateImages } from './model/sample';
import { GanfleetError } from './util/errors';
import { Logger, createLogger } from './util/log';
import { Rng } from './util/rng';
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

export const GENERATE_FORMATS = ['.npy', '.idx', '.png'] as const;

/** The most samples one call draws: 200,000 are 627 MB as float32, held in memory twice while the file is written. */
export const GENERATE_MAX_COUNT = 200_000;

/** Why generate cannot write `count` samples to `out`, or null; `countText` is the count as the user gave it. */
export function generateProblem(out: string, count: number, countText = String(count)): string | null {
  const ext = path.extname(out).toLowerCase();
  if (!(GENERATE_FORMATS as readonly string[]).includes(ext)) {
    // path.extname() sees no extension in a bare `.npy`, which would read as "must end in .npy, got .npy".
    const bare = (GENERATE_FORMATS as readonly string[]).includes(path.basename(out).toLowerCase());
    return bare ? `--out ${out} names no file, only an extension: write e.g. samples${path.basename(out)}` : `--out must end in ${GENERATE_FORMATS.join(', ')}, got ${out}`;
  }
  if (count > GENERATE_MAX_COUNT) return `--count must be at most ${GENERATE_MAX_COUNT}, got ${countText}; draw more with further calls and other --seed values`;
  // Found here, before the checkpoint is read and the samples drawn, not as mkdir's EEXIST after.
  let at = path.resolve(out);
  if (/[\\/]$/.test(out) || (fs.existsSync(at) && fs.statSync(at).isDirectory())) return `--out ${out} is a directory; name the file to write`;
  while (!fs.existsSync(at)) {
    // A link to nothing is no more there than a missing path, but mkdir cannot make a directory under it.
    if (at !== path.resolve(out) && isLink(at)) return `--out ${out} cannot be written: ${at} is a link to ${fs.readlinkSync(at)}, which does not exist`;
    at = path.dirname(at);
  }
  if (at !== path.resolve(out) && !fs.statSync(at).isDirectory()) return `--out ${out} cannot be written: ${at} is a file, not a directory`;
  // The file is written beside --out and renamed over it: its directory, or the nearest one there is, must take files.
  try {
    fs.accessSync(at === path.resolve(out) ? path.dirname(at) : at, fs.constants.W_OK | fs.constants.X_OK);
  } catch (e) {
    return `--out ${out} cannot be written: ${(e as Error).message}`;
  }
  return null;
}

function isLink(p: string): boolean {
  return fs.lstatSync(p, { throwIfNoEntry: false })?.isSymbolicLink() ?? false;
}

/** Draws `count` samples from a checkpoint's generator and writes them in the format the extension names. */
export async function generateSamples(opts: GenerateOptions, log: Logger = createLogger('generate')): Promise<string> {
  const ext = path.extname(opts.out).toLowerCase();
  const problem = generateProblem(opts.out, opts.count);
  if (problem) throw new GanfleetError('GENERATE_OPTIONS', problem);
  const { checkpoint, file } = readCheckpoint(opts.checkpoint, log);
  const model = createModel(String(checkpoint.config.arch), String(checkpoint.config.loss ?? 'bce'));
  const backend = await selectBackend(opts.backend);
  log(`backend ${backend.name} (${backend.notes.join('; ')}); generator from ${file} (step ${checkpoint.step})`);

  const noise = new Rng(opts.seed).fillNormal(new Float32Array(opts.count * model.zDim));
  const images = await generateImages(model, checkpoint.generator, noise, opts.count);

  let bytes: Buffer;
  if (ext === '.npy') bytes = encodeNpy([opts.count, 28, 28], images);
  else if (ext === '.idx') bytes = encodeIdx([opts.count, 28, 28], Uint8Array.from(images, tanhToByte));
  else {
    const cols = Math.ceil(Math.sqrt(opts.count));
    const grid = imageGrid(images, opts.count, Math.ceil(opts.count / cols), cols);
    bytes = encodePng(grid.width, grid.height, grid.pixels, 1);
  }
  const dir = path.dirname(path.resolve(opts.out));
  makeDirectory(dir);
  // What a generate killed mid-write left (up to 627 MB), once it is surely abandoned.
  for (const torn of removeTornWrites(dir, path.basename(opts.out))) log(`removed ${path.join(dir, torn)}: a write that a killed generate left unfinished`);
  // A full disk or a kill mid-write leaves the file that was there, not a cut-off one under its name.
  writeFileAtomic(opts.out, [bytes]);
  log(`wrote ${opts.count} samples to ${opts.out}`);
  return opts.out;
}
