import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sharedMemoryCeiling, sharedMemoryTraining } from '../bench/ceiling';
import { selectBackend } from '../src/backend';
import { Adam, KERAS_ADAM_DEFAULTS, applyDiscriminatorUpdates } from '../src/coordinator/adam';
import { averageGradients } from '../src/coordinator/aggregate';
import { loadMnist } from '../src/data/mnist';
import { createModel, discriminatorGradientSize } from '../src/model';
import { Rng } from '../src/util/rng';
import { ShardCompute } from '../src/worker/compute';
import { stepCountingClock } from './helpers';

const BATCH = 16;
const STEPS = 6;

/** The bench's ceiling in one thread: each worker's ShardCompute, the average, Adam, a D round then a G round. */
async function reference(workers: number) {
  await selectBackend('wasm');
  const model = createModel('mlp');
  const params = model.init(new Rng(1));
  const train = loadMnist('train');
  const computes = Array.from({ length: workers }, () => new ShardCompute(model, BATCH, 2));
  computes.forEach((c, k) => c.setShard({ images: train.images, count: train.count, seed: k + 1 }));
  const adam = { d: new Adam(params.discriminator.length, KERAS_ADAM_DEFAULTS), g: new Adam(params.generator.length, KERAS_ADAM_DEFAULTS) };
  const average = { d: new Float32Array(discriminatorGradientSize(model, 2)), g: new Float32Array(params.generator.length) };
  const dUpdate = new Float32Array(params.discriminator.length);
  // As a worker does it: a D round brings only G (after the first), and each round is followed by readying the next.
  const round = (step: number, phase: 'discriminator' | 'generator') =>
    computes.map((c) => {
      const gradients = c.step(step, phase).gradients.slice();
      c.readyAfter(step, phase);
      return { gradients, samples: BATCH };
    });
  for (let step = 0; step < STEPS; step++) {
    for (const c of computes) c.updateWeights(params.generator, step === 0 ? params.discriminator : undefined);
    averageGradients(round(step, 'discriminator'), average.d);
    applyDiscriminatorUpdates(adam.d, params.discriminator, average.d, 2, dUpdate);
    for (const c of computes) c.updateWeights(undefined, params.discriminator);
    averageGradients(round(step, 'generator'), average.g);
    adam.g.apply(params.generator, average.g);
  }
  for (const c of computes) c.dispose();
  return params;
}

// The bench's shared-memory ceiling (bench/ceiling.ts) is only a bound on `local` if it does local's work.
for (const workers of [1, 2]) {
  test(`the bench's shared-memory ceiling trains exactly as ${workers} worker(s) in one thread would`, { timeout: 60_000 }, async () => {
    // Warm-up steps train too: the weights at the end are those of all STEPS.
    const threaded = await sharedMemoryTraining(workers, STEPS - 2, 2, BATCH);
    const expected = await reference(workers);
    assert.ok(Buffer.from(threaded.generator.buffer).equals(Buffer.from(expected.generator.buffer)), 'generators differ');
    assert.ok(Buffer.from(threaded.discriminator.buffer).equals(Buffer.from(expected.discriminator.buffer)), 'discriminators differ');
  });
}

test("the ceiling's ms/step is its timed steps' alone, and its images/s count every worker's batch", { timeout: 60_000 }, async (t) => {
  stepCountingClock(t);
  // 2 warm-up steps, then 3 timed: the warm-up's would make it 5/3.
  assert.deepEqual(await sharedMemoryCeiling(2, 3, 2, BATCH), { workers: 2, msPerStep: 1, imagesPerSecond: 2 * BATCH * 1000 });
});
