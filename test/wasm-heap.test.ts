import { test } from 'node:test';
import assert from 'node:assert/strict';
import { selectBackend } from '../src/backend';
import { classifyImages, loadClassifier } from '../src/eval/classifier';
import { IMAGE_SIZE } from '../src/data/image';
import { createModel } from '../src/model';
import { generateImages } from '../src/model/sample';
import { scoped, tf } from '../src/model/tf';
import { Rng } from '../src/util/rng';

/** The wasm module's heap, which grows to a batch's high-water mark and never shrinks. */
function wasmHeapBytes(): number {
  return (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.length;
}

/*
 * Their own file, in this order: the heap's size is the process's history, and a larger batch run before a test
 * would leave room for the one it measures. The classifier's batches are the smaller.
 */
test("classifying an evaluation's images leaves the wasm heap small, and batches do not change the scores", async () => {
  await selectBackend('wasm');
  const weights = loadClassifier();
  const count = 2000;
  const images = new Float32Array(count * IMAGE_SIZE).map((_, i) => Math.sin(0.37 * i));
  const before = wasmHeapBytes();
  const { features, probabilities } = await classifyImages(weights, images, count);
  const grown = (wasmHeapBytes() - before) / 2 ** 20;
  // At 1,000 images a batch the heap grew by 105 MiB (at 250, 15), for the life of a coordinator that evaluates.
  assert.ok(grown < 50, `the wasm heap grew by ${grown.toFixed(0)} MiB`);
  assert.equal(tf.memory().numTensors, 0);
  const small = await classifyImages(weights, images, count, undefined, 7);
  assert.deepEqual(small.features, features);
  assert.deepEqual(small.probabilities, probabilities);
});

test('drawing an evaluation of DCGAN images (500 a batch, as --eval-every and generate ask) leaves the wasm heap small', async () => {
  await selectBackend('wasm');
  const model = createModel('dcgan');
  const { generator } = model.init(new Rng(3));
  const count = 500;
  const noise = new Rng(4).fillNormal(new Float32Array(count * model.zDim));
  const before = wasmHeapBytes();
  const images = await generateImages(model, generator, noise, count, 500);
  const grown = (wasmHeapBytes() - before) / 2 ** 20;
  // Unbounded, the transposed convolutions of 500 images took the heap from 16 MiB to 577 MiB, for the coordinator's life.
  assert.ok(grown < 200, `the wasm heap grew by ${grown.toFixed(0)} MiB`);
  assert.equal(tf.memory().numTensors, 0);
  // Smaller batches draw the same images (inference BatchNorm is per image).
  const g = model.generatorLayout.toTensors(generator);
  // The first images and the last (of the last, shorter batch): each from its own noise, in its own place.
  for (const from of [0, count - 3]) {
    const alone = scoped(() => model.generate(g, tf.tensor2d(noise.subarray(from * model.zDim, (from + 3) * model.zDim), [3, model.zDim])).dataSync() as Float32Array);
    for (let i = 0; i < alone.length; i++) assert.ok(Math.abs(alone[i] - images[from * IMAGE_SIZE + i]) < 1e-5, `image ${from + Math.floor(i / IMAGE_SIZE)}, pixel ${i % IMAGE_SIZE}: ${alone[i]} vs ${images[from * IMAGE_SIZE + i]}`);
  }
  tf.dispose(Object.values(g));
  assert.equal(images.length, count * IMAGE_SIZE);
});
