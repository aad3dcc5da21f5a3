import { IMAGE_SIZE } from '../data/image';
import { GanModel } from './gan';
import { disposeTensors } from './layout';
import { scoped, tf } from './tf';

/**
 * G(z) for `count` noise vectors (count×zDim, in order) as count×784 images
 * in tanh range, `batch` at a time (at most the model's generateBatch).
 * BatchNorm uses the moving statistics.
 * `between` runs after each batch with the count drawn so far, so a long
 * sampling (an evaluation on the coordinator) can let its event loop answer
 * heartbeats, and a command can show its progress.
 */
export async function generateImages(
  model: GanModel,
  generator: Float32Array,
  noise: Float32Array,
  count: number,
  batch = 500,
  between?: (done: number) => Promise<void> | void,
): Promise<Float32Array> {
  if (noise.length !== count * model.zDim) throw new Error(`expected ${count}×${model.zDim} noise values, got ${noise.length}`);
  const images = new Float32Array(count * IMAGE_SIZE);
  batch = Math.max(1, Math.min(batch, model.generateBatch ?? batch));
  const g = model.generatorLayout.toTensors(generator);
  try {
    for (let start = 0; start < count; start += batch) {
      const n = Math.min(batch, count - start);
      const z = noise.subarray(start * model.zDim, (start + n) * model.zDim);
      images.set(scoped(() => model.generate(g, tf.tensor2d(z, [n, model.zDim])).dataSync() as Float32Array), start * IMAGE_SIZE);
      await between?.(start + n);
    }
  } finally {
    disposeTensors(g);
  }
  return images;
}
