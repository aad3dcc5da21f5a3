import fs from 'node:fs';
import path from 'node:path';
import { IMAGE_SIZE } from '../data/image';
import { kerasInit } from '../model/init';
import { ParameterLayout, disposeTensors } from '../model/layout';
import { scoped, tf, Tensors } from '../model/tf';
import { GanfleetError } from '../util/errors';
import { Rng } from '../util/rng';

/** Width of the penultimate layer, the features FID compares. */
export const FEATURES = 64;
export const CLASSES = 10;

/**
 * The small MNIST classifier behind ganfleet's quality metrics (quality.ts):
 *   x (28×28, tanh range) → Conv(16, 5, s2) ReLU → Conv(32, 5, s2) ReLU
 *   → Flatten → Dense(64) ReLU [the features] → Dense(10) [logits]
 * Trained by scripts/train-classifier.ts; its weights ship in assets/.
 */
export const CLASSIFIER_LAYOUT = new ParameterLayout([
  { name: 'conv1/kernel', shape: [5, 5, 1, 16] },
  { name: 'conv1/bias', shape: [16] },
  { name: 'conv2/kernel', shape: [5, 5, 16, 32] },
  { name: 'conv2/bias', shape: [32] },
  { name: 'features/kernel', shape: [7 * 7 * 32, FEATURES] },
  { name: 'features/bias', shape: [FEATURES] },
  { name: 'logits/kernel', shape: [FEATURES, CLASSES] },
  { name: 'logits/bias', shape: [CLASSES] },
]);

export const CLASSIFIER_FILE = path.join(__dirname, '..', '..', '..', 'assets', 'mnist-classifier.bin');

export function initClassifier(rng: Rng): Float32Array {
  return kerasInit(CLASSIFIER_LAYOUT, rng);
}

/** Features (N×64) and logits (N×10) of N images in tanh range, N×784. */
export function classify(p: Tensors, x: tf.Tensor2D): { features: tf.Tensor2D; logits: tf.Tensor2D } {
  return tf.tidy(() => {
    const conv = (h: tf.Tensor4D, layer: string) =>
      tf.relu(tf.add(tf.conv2d(h, p[`${layer}/kernel`] as tf.Tensor4D, 2, 'same'), p[`${layer}/bias`])) as tf.Tensor4D;
    const h = conv(conv(tf.reshape(x, [-1, 28, 28, 1]), 'conv1'), 'conv2');
    const features = tf.relu(tf.add(tf.matMul(tf.reshape(h, [-1, 7 * 7 * 32]) as tf.Tensor2D, p['features/kernel'] as tf.Tensor2D), p['features/bias'])) as tf.Tensor2D;
    const logits = tf.add(tf.matMul(features, p['logits/kernel'] as tf.Tensor2D), p['logits/bias']) as tf.Tensor2D;
    return { features, logits };
  });
}

/** Reads the shipped weights (raw little-endian float32 in layout order). */
export function loadClassifier(file: string = CLASSIFIER_FILE): Float32Array {
  if (!fs.existsSync(file)) {
    throw new GanfleetError('EVAL_NO_CLASSIFIER', `classifier weights not found at ${file}; run npm run train-classifier`);
  }
  const buf = fs.readFileSync(file);
  if (buf.length !== CLASSIFIER_LAYOUT.size * 4) {
    throw new GanfleetError('EVAL_NO_CLASSIFIER', `${file} holds ${buf.length} bytes, expected ${CLASSIFIER_LAYOUT.size * 4}`);
  }
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
}

/**
 * Runs the classifier over `count` images (tanh range, count×784) in
 * batches: features (count×64) and class probabilities (count×10).
 * `between` is awaited after each batch, with the count classified so far.
 * 250 a batch: as fast as 1,000, whose convolutions grew the wasm heap, which
 * never shrinks, by 105 MiB for the life of a coordinator that evaluates (250: 15).
 */
export async function classifyImages(
  weights: Float32Array,
  images: Float32Array,
  count: number,
  between: (done: number) => Promise<void> | void = () => {},
  batch = 250,
): Promise<{ features: Float32Array; probabilities: Float32Array }> {
  const features = new Float32Array(count * FEATURES);
  const probabilities = new Float32Array(count * CLASSES);
  const p = CLASSIFIER_LAYOUT.toTensors(weights);
  try {
    for (let start = 0; start < count; start += batch) {
      const n = Math.min(batch, count - start);
      scoped(() => {
        const x = tf.tensor2d(images.subarray(start * IMAGE_SIZE, (start + n) * IMAGE_SIZE), [n, IMAGE_SIZE]);
        const out = classify(p, x);
        features.set(out.features.dataSync() as Float32Array, start * FEATURES);
        probabilities.set(tf.softmax(out.logits).dataSync() as Float32Array, start * CLASSES);
      });
      // A coordinator evaluating mid-run still answers heartbeats and scrapes between batches.
      await between(start + n);
    }
  } finally {
    disposeTensors(p);
  }
  return { features, probabilities };
}
