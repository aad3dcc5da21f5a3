import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { selectBackend } from '../src/backend';
import { Adam, adamDefaults, applyDiscriminatorUpdates } from '../src/coordinator/adam';
import { averageGradients } from '../src/coordinator/aggregate';
import { weightedStats } from '../src/coordinator/round';
import { loadMnist, toTanhRange } from '../src/data/mnist';
import { IMAGE_SIZE } from '../src/data/image';
import { gatherImages, planShards } from '../src/data/shards';
import { GanModel, GeneratorPass, ParameterLayout, RealPart, ResultMemory, StepOutput, createModel, discriminatorGradientSize, disposeGeneratorPass, disposeTensors } from '../src/model';
import { tf, Tensors } from '../src/model/tf';
import { decodeWorkerMessage, encode } from '../src/protocol/codec';
import { Gradients, Phase, gradientsMessage } from '../src/protocol/messages';
import { Rng } from '../src/util/rng';
import { ShardCompute } from '../src/worker/compute';

/*
 * The defining property of data-parallel training: N workers, each taking the
 * mean gradient over its own batch, averaged by the coordinator with weights
 * samples/total, give the gradient of the mean loss over the union of the
 * batches (the same real images, the same noise). Here the workers are the
 * real ShardCompute on real shards of MNIST (planned as the coordinator
 * plans them), their answers go through the wire codec, and the coordinator's
 * own averageGradients, Adam and weightedStats combine them; the reference is
 * the model's own step on the concatenated images and noise that the workers
 * drew (recorded as ShardCompute hands them to the model, not redrawn here).
 * test/gradients.test.ts holds the same invariant for the bare model steps on
 * slices of one batch; this one covers the worker's draws, its split D round
 * (real half computed ahead) and the G round that reuses the D round's pass.
 *
 * Only the MLP: in the DCGAN, BatchNorm normalises with each worker's own
 * batch statistics (PyTorch DDP without SyncBatchNorm, dcgan.ts), so a
 * worker's gradient is not the gradient on its rows of the union batch, and
 * the average differs from the union's gradient by design, not by rounding.
 */

/** Training images the shards are cut from: a few hundred keep the test fast. */
const POOL = 600;
const STEP = 7;
/**
 * max |average − union| over one tensor of the layout, relative to the
 * largest |union| gradient of that tensor. Measured: ≤ 2e-7 on cpu, ≤ 7.3e-7 on
 * wasm (with or without the native addon), float32 rounding. Averaging by
 * worker count instead of samples gives 0.11 to 0.42 with the unequal batches
 * (and nothing with equal ones, where the two agree); a gradient summed over a
 * batch instead of averaged (losses.ts outputGradient) 0.5 to 0.83; the
 * worker's real half of the D round not halved, 1.0.
 */
const TOLERANCE = 1e-5;

const train = loadMnist('train');

/** Copies of the inputs ShardCompute hands the model: the noise and real batch a worker drew for a round. */
interface Drawn {
  real?: Float32Array;
  noise?: Float32Array;
  gNoise?: Float32Array;
}

/** `model`, recording the real batch and noise each step is computed on into `record.current`. */
function recording(model: GanModel, record: { current: Drawn }): GanModel {
  const spy = Object.create(model) as GanModel;
  spy.discriminatorStep = (d: Tensors, real: tf.Tensor2D, pass: GeneratorPass, realPart?: RealPart, memory?: ResultMemory) => {
    record.current.real = real.dataSync().slice() as Float32Array;
    record.current.noise = pass.z.dataSync().slice() as Float32Array;
    return model.discriminatorStep(d, real, pass, realPart, memory);
  };
  spy.generatorStep = (g: Tensors, d: Tensors, pass: GeneratorPass, memory?: ResultMemory) => {
    record.current.gNoise = pass.z.dataSync().slice() as Float32Array;
    return model.generatorStep(g, d, pass, memory);
  };
  return spy;
}

/** The worker's answer as the coordinator decodes it (float32 on the wire). */
function overTheWire(step: number, phase: Phase, out: StepOutput & { samples: number }): Gradients {
  return decodeWorkerMessage(encode(gradientsMessage(step, phase, out, 0))) as Gradients;
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Per tensor of `layout`: max |actual − expected| / max |expected|; the worst tensor and its ratio. */
function relativeError(layout: ParameterLayout, actual: Float32Array, expected: Float32Array): { worst: number; name: string } {
  let worst = -1;
  let name = '';
  for (const e of layout.entries) {
    let diff = 0;
    let scale = 0;
    for (let i = e.offset; i < e.offset + e.size; i++) {
      diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
      scale = Math.max(scale, Math.abs(expected[i]));
    }
    assert.ok(scale > 0, `${e.name}: the union gradient is all zero, which would test nothing`);
    const rel = Number.isNaN(diff) ? Infinity : diff / scale;
    if (rel > worst) [worst, name] = [rel, e.name];
  }
  return { worst, name };
}

/** Whether each row of `real` is an image of `shard` (pixels in tanh range), so the draws came from the worker's own shard. */
function rowsFromShard(real: Float32Array, shard: Uint8Array, count: number): boolean {
  const images = toTanhRange(shard, new Float32Array(count * IMAGE_SIZE));
  const key = (a: Float32Array, i: number) => a.subarray(i * IMAGE_SIZE, (i + 1) * IMAGE_SIZE).join(',');
  const held = new Set(Array.from({ length: count }, (_, i) => key(images, i)));
  for (let r = 0; r < real.length / IMAGE_SIZE; r++) if (!held.has(key(real, r))) return false;
  return true;
}

for (const backend of ['wasm', 'cpu'] as const) {
  for (const loss of ['bce', 'lsgan'] as const) {
    describe(`data-parallel MLP (${loss}, ${backend}): the coordinator's average of the workers' gradients is the gradient on the union of their batches`, () => {
      before(async () => {
        await selectBackend(backend);
      });

      // Unequal batches: the protocol gives every worker one --batch-size, but each answer says how many
      // samples it averaged (up to that size), and averageGradients weights by them; unequal sizes are what
      // tell weighting by samples from weighting by worker.
      for (const batches of [[32, 48, 16], [40, 40]]) {
        test(`${batches.length} workers, batches ${batches.join(' + ')}`, () => {
          const tensorsBefore = tf.memory().numTensors;
          const model = createModel('mlp', loss);
          const params = model.init(new Rng(11));
          // Non-zero biases, so their gradients are exercised too.
          for (const flat of [params.generator, params.discriminator]) for (let i = 0; i < flat.length; i++) flat[i] += 0.01 * Math.sin(i);
          const dBefore = params.discriminator.slice();

          // The coordinator's plan: a seeded permutation cut into shards, a seed for each worker's draws.
          const workerIds = batches.map((_, w) => `w${w}`);
          const plan = planShards(new Rng(12).permutation(POOL), workerIds);
          const seeds = new Rng(13);
          const record = { current: {} as Drawn };
          const workers = plan.map((a, w) => {
            const compute = new ShardCompute(recording(model, record), batches[w], 2);
            const shard = gatherImages(train.images, a.indices);
            compute.setShard({ images: shard, count: a.indices.length, seed: seeds.nextUint32() });
            return { compute, shard, count: a.indices.length, drawn: {} as Drawn };
          });

          // The D round, as a worker runs it: both networks, the real half ahead (prepare), then the step.
          const dAnswers = workers.map((w) => {
            record.current = w.drawn;
            w.compute.updateWeights(params.generator, params.discriminator);
            w.compute.prepare(STEP);
            const answer = overTheWire(STEP, 'discriminator', w.compute.step(STEP, 'discriminator'));
            w.compute.readyAfter(STEP, 'discriminator');
            return answer;
          });
          const dAverage = averageGradients(dAnswers, new Float32Array(discriminatorGradientSize(model, 2)));
          const dStats = weightedStats(dAnswers);
          // The coordinator steps D with its Adam, twice; the G round runs against the new D, on the D round's noise.
          const dSize = model.discriminatorLayout.size;
          applyDiscriminatorUpdates(new Adam(dSize, adamDefaults('mlp')), params.discriminator, dAverage, 2, new Float32Array(dSize));
          const gAnswers = workers.map((w) => {
            record.current = w.drawn;
            w.compute.updateWeights(undefined, params.discriminator);
            const answer = overTheWire(STEP, 'generator', w.compute.step(STEP, 'generator'));
            w.compute.readyAfter(STEP, 'generator');
            return answer;
          });
          const gAverage = averageGradients(gAnswers, new Float32Array(model.generatorLayout.size));
          const gStats = weightedStats(gAnswers);
          for (const w of workers) w.compute.dispose();

          // What the workers drew: their own batch sizes, from their own shards, the G round on the D round's noise.
          workers.forEach((w, k) => {
            assert.equal(w.drawn.real?.length, batches[k] * IMAGE_SIZE, `worker ${k}'s real batch`);
            assert.equal(w.drawn.noise?.length, batches[k] * model.zDim, `worker ${k}'s noise`);
            assert.deepEqual(w.drawn.gNoise, w.drawn.noise, `worker ${k}'s G round draws the D round's noise`);
            assert.ok(rowsFromShard(w.drawn.real!, w.shard, w.count), `worker ${k}'s real batch comes from its shard`);
          });
          assert.notDeepEqual(workers[0].drawn.noise!.subarray(0, 100), workers[1].drawn.noise!.subarray(0, 100), 'workers draw different noise');

          // One process on the union: the same real images and noise, concatenated.
          const n = batches.reduce((a, b) => a + b, 0);
          const real = tf.tensor2d(concat(workers.map((w) => w.drawn.real!)), [n, IMAGE_SIZE]);
          const z = tf.tensor2d(concat(workers.map((w) => w.drawn.noise!)), [n, model.zDim]);
          const g = model.generatorLayout.toTensors(params.generator);
          const d0 = model.discriminatorLayout.toTensors(dBefore);
          const d1 = model.discriminatorLayout.toTensors(params.discriminator);
          const pass = model.forwardGenerator(g, z);
          const dUnion = model.discriminatorStep(d0, real, pass);
          const dUnionGradients = dUnion.gradients.slice();
          const gUnion = model.generatorStep(g, d1, pass);
          disposeGeneratorPass(pass);
          for (const t of [g, d0, d1]) disposeTensors(t);
          real.dispose();
          z.dispose();

          // Each half, the real batch's share and the generated batch's, is its share on the union.
          const halves = (a: Float32Array) => [a.subarray(0, dSize), a.subarray(dSize)];
          const dError = [0, 1].map((h) => relativeError(model.discriminatorLayout, halves(dAverage)[h], halves(dUnionGradients)[h])).sort((a, b) => b.worst - a.worst)[0];
          const gError = relativeError(model.generatorLayout, gAverage, gUnion.gradients);
          assert.ok(dError.worst <= TOLERANCE, `D round: average vs union differs by ${dError.worst.toExponential(2)} of ${dError.name}'s largest gradient`);
          assert.ok(gError.worst <= TOLERANCE, `G round: average vs union differs by ${gError.worst.toExponential(2)} of ${gError.name}'s largest gradient`);
          // The round's reported statistics are the union's too (means over the batch, weighted by samples).
          const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);
          close(dStats.loss, dUnion.loss, 'D loss');
          close(dStats.dReal, dUnion.dReal!, 'D(x)');
          close(dStats.dFake, dUnion.dFake, 'D(G(z)) in the D round');
          close(gStats.loss, gUnion.loss, 'G loss');
          close(gStats.dFake, gUnion.dFake, 'D(G(z)) in the G round');
          assert.equal(dStats.samples, n);
          assert.equal(tf.memory().numTensors, tensorsBefore, 'tensors left behind');
        });
      }
    });
  }
}
