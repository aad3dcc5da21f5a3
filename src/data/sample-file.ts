/**
 * Images to score from a file, whoever made them: a .npy of float32 in
 * tanh range (what `generate` and the PyTorch anchor write), or an IDX of
 * uint8 pixels (MNIST's own format, which `generate` also writes). Told
 * apart by content, not by name: MNIST's files have no extension.
 */
import fs from 'node:fs';
import { IMAGE_SIZE } from './image';
import { readIdx } from './idx';
import { toTanhRange } from './mnist';
import { decodeNpy } from './npy';
import { GanfleetError } from '../util/errors';

export interface SampleImages {
  /** count×784 values in [−1, 1]. */
  images: Float32Array;
  count: number;
}

/** Reads `file`'s images, at least 2 and at most `max`; throws IMAGES_UNREADABLE with what is wrong and what is taken. */
export function readSampleImages(file: string, max: number): SampleImages {
  const refuse = (why: string) => new GanfleetError('IMAGES_UNREADABLE', `${file}: ${why}`);
  let head: Buffer;
  try {
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    try {
      if (!fs.fstatSync(fd).isFile()) throw refuse('not a regular file');
      head = Buffer.alloc(6);
      fs.readSync(fd, head, 0, 6, 0);
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    if (e instanceof GanfleetError) throw e;
    throw refuse((e as Error).message);
  }
  const { shape, images } = head.toString('latin1') === '\x93NUMPY' ? npyImages(file, refuse) : idxImages(file, refuse);
  const count = shape[0];
  if (shape.length < 2 || shape.slice(1).reduce((a, b) => a * b, 1) !== IMAGE_SIZE || (shape.length > 2 && (shape[1] !== 28 || shape[2] !== 28))) {
    throw refuse(`images of shape (${shape.join(', ')}); MNIST's are (N, 28, 28), (N, 784) or (N, 28, 28, 1)`);
  }
  if (count < 2 || count > max) throw refuse(`${count} images; 2 to ${max} are scored`);
  return { images, count };
}

function npyImages(file: string, refuse: (why: string) => Error): { shape: number[]; images: Float32Array } {
  let npy: { shape: number[]; data: Float32Array };
  try {
    npy = decodeNpy(fs.readFileSync(file));
  } catch (e) {
    throw refuse(`${(e as Error).message} (a .npy must hold float32 images in tanh range)`);
  }
  const at = npy.data.findIndex((v) => !(v >= -1 && v <= 1));
  if (at >= 0) {
    throw refuse(`value ${npy.data[at]} at index ${at} is outside [-1, 1]: a .npy is read in tanh range, as G writes it (pixels p in 0..255 are p / 127.5 - 1)`);
  }
  return { shape: npy.shape, images: npy.data };
}

function idxImages(file: string, refuse: (why: string) => Error): { shape: number[]; images: Float32Array } {
  let idx: { dims: number[]; data: Uint8Array };
  try {
    idx = readIdx(file);
  } catch (e) {
    throw refuse(`neither a .npy nor an IDX file of uint8 images (${(e as Error).message.replace(`${file}: `, '')})`);
  }
  return { shape: idx.dims, images: toTanhRange(idx.data) };
}
