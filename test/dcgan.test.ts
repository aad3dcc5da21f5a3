import { test } from 'node:test';
import assert from 'node:assert/strict';
import { selectBackend } from '../src/backend';
import { loadMnist, toTanhRange } from '../src/data/mnist';
import { IMAGE_SIZE } from '../src/data/image';
import { autodiffDiscriminatorStep, autodiffGeneratorStep } from '../src/model/autodiff';
import { BN_EPSILON, statisticsSize, updateMovingStatistics } from '../src/model/batchnorm';
import { Gradients, MAX_GRADIENT_ABS, MAX_STATISTIC_ABS, PROTOCOL_VERSION } from '../src/protocol/messages';
import { implausibleGradients } from '../src/coordinator/round';
import { trainingBatchNorm } from '../src/model/dcgan';
import { GanModel, GeneratorPass, StepOutput, createModel, discriminatorGradientSize, disposeGeneratorPass, disposeTensors } from '../src/model';
import { tf, Tensors } from '../src/model/tf';
import { Rng } from '../src/util/rng';
import { GanfleetError } from '../src/util/errors';
import { assertClose } from './helpers';

const BATCH = 8;
const train = loadMnist('train');

function random(shape: number[], seed: number, scale = 1): tf.Tensor {
  const rng = new Rng(seed);
  const v = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < v.length; i++) v[i] = (rng.uniform() * 2 - 1) * scale;
  return tf.tensor(v, shape);
}

/** One D step and one G step on fixed weights and data, through the model's own (fast) paths. */
function steps(model: GanModel, g: Tensors, d: Tensors, real: tf.Tensor2D, z: tf.Tensor2D): { d: StepOutput; g: StepOutput; pass: Float32Array } {
  const pass: GeneratorPass = model.forwardGenerator(g, z);
  try {
    return { d: model.discriminatorStep(d, real, pass), g: model.generatorStep(g, d, pass), pass: pass.statistics!.dataSync() as Float32Array };
  } finally {
    disposeGeneratorPass(pass);
  }
}

function setup(model: GanModel, batch: number): { g: Tensors; d: Tensors; real: tf.Tensor2D; z: tf.Tensor2D } {
  const rng = new Rng(11);
  const p = model.init(rng);
  // Off the initial values (γ = 1, β = 0, zero biases), so every gradient is exercised.
  for (const [flat, layout] of [[p.generator, model.generatorLayout], [p.discriminator, model.discriminatorLayout]] as const) {
    for (const e of layout.entries) if (e.trainable) for (let i = e.offset; i < e.offset + e.size; i++) flat[i] += 0.05 * Math.sin(i);
  }
  const x = toTanhRange(train.images.subarray(0, batch * IMAGE_SIZE), new Float32Array(batch * IMAGE_SIZE));
  return {
    g: model.generatorLayout.toTensors(p.generator),
    d: model.discriminatorLayout.toTensors(p.discriminator),
    real: tf.tensor2d(x, [batch, IMAGE_SIZE]),
    z: tf.tensor2d(rng.fillNormal(new Float32Array(batch * model.zDim)), [batch, model.zDim]),
  };
}

function maxAbs(v: Float32Array): number {
  return v.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
}

function assertSameStep(actual: StepOutput, expected: StepOutput, atol: number, rtol: number, what: string): void {
  assertClose(actual.gradients, expected.gradients, atol, rtol, `${what} gradients`);
  assertClose([actual.loss, actual.dFake, actual.dReal ?? 0], [expected.loss, expected.dFake, expected.dReal ?? 0], 1e-4, 1e-4, `${what} loss and scores`);
}

for (const loss of ['bce', 'lsgan'] as const) {
  test(`DCGAN, ${loss} loss, on wasm: the hand-written G step and the D step equal plain autodiff`, async () => {
    await selectBackend('wasm');
    const model = createModel('dcgan', loss);
    const { g, d, real, z } = setup(model, BATCH);
    const fast = steps(model, g, d, real, z);
    assertSameStep(fast.d, autodiffDiscriminatorStep(model, g, d, real, z), 1e-5, 1e-3, 'D');
    assertSameStep(fast.g, autodiffGeneratorStep(model, g, d, z), 1e-5, 1e-3, 'G');
    assert.ok(fast.g.gradients.some((v) => v !== 0), 'G gradients are all zero');
    // The moving statistics are not learnt by gradient.
    for (const e of model.generatorLayout.statistics) assert.ok(fast.g.gradients.subarray(e.offset, e.offset + e.size).every((v) => v === 0), e.name);
    // G's batch statistics, per BN layer the channel means then the (positive) biased variances.
    const stats = fast.g.statistics!;
    assert.deepEqual(fast.pass, stats);
    assert.equal(model.generatorLayout.statistics.map((e) => e.name).join(), 'g/bn1/moving_mean,g/bn1/moving_variance,g/bn2/moving_mean,g/bn2/moving_variance');
    assert.equal(stats.length, 2 * (128 + 64));
    for (const [at, c] of [[128, 128], [2 * 128 + 64, 64]]) assert.ok(stats.subarray(at, at + c).every((v) => v > 0));
    const before = tf.memory().numTensors;
    steps(model, g, d, real, z);
    assert.equal(tf.memory().numTensors, before, 'tensors leaked by a step');
    [g, d].forEach(disposeTensors);
    tf.dispose([real, z]);
  });
}

test('DCGAN on wasm (with the conv gradient kernels of wasm-kernels.ts) matches the cpu backend', async () => {
  // Batch 2: the cpu backend's conv gradients are direct loops, ~10 s per image for G.
  const run = async (backend: 'cpu' | 'wasm') => {
    await selectBackend(backend);
    const model = createModel('dcgan');
    const { g, d, real, z } = setup(model, 2);
    try {
      return steps(model, g, d, real, z);
    } finally {
      [g, d].forEach(disposeTensors);
      tf.dispose([real, z]);
    }
  };
  const cpu = await run('cpu');
  const wasm = await run('wasm');
  // Gradients that are zero in exact arithmetic (conv biases in front of a
  // BatchNorm) are rounding noise on both backends, so the absolute
  // tolerance scales with the largest gradient.
  assertSameStep(wasm.d, cpu.d, 1e-4 * maxAbs(cpu.d.gradients), 2e-3, 'D');
  assertSameStep(wasm.g, cpu.g, 1e-4 * maxAbs(cpu.g.gradients), 2e-3, 'G');
  assertClose(wasm.g.statistics!, cpu.g.statistics!, 1e-5, 1e-4, 'batch statistics');
});

for (const backend of ['cpu', 'wasm'] as const) {
  test(`on ${backend}: BatchNorm's textbook backward pass equals autodiff of tf.moments + tf.batchNorm`, async () => {
    await selectBackend(backend);
    const x = random([4, 5, 5, 6], 1, 2);
    const gamma = random([6], 2);
    const beta = random([6], 3);
    const w = random([4, 5, 5, 6], 4);
    const plain = (xx: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => {
      const { mean, variance } = tf.moments(xx, [0, 1, 2]);
      return tf.sum(tf.mul(tf.batchNorm(xx as tf.Tensor4D, mean, variance, bb as tf.Tensor1D, gg as tf.Tensor1D, BN_EPSILON), w)) as tf.Scalar;
    };
    const custom = (xx: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => tf.sum(tf.mul(trainingBatchNorm(xx, gg, bb), w)) as tf.Scalar;
    const expected = tf.grads(plain)([x, gamma, beta]);
    const actual = tf.grads(custom)([x, gamma, beta]);
    assertClose(custom(x, gamma, beta).dataSync(), plain(x, gamma, beta).dataSync(), 1e-5, 1e-5, 'value');
    for (const [i, name] of ['dx', 'dγ', 'dβ'].entries()) assertClose(actual[i].dataSync(), expected[i].dataSync(), 1e-5, 1e-4, name);
  });
}

test('moving statistics pooled from batch statistics at the protocol bound stay finite in float32', () => {
  const model = createModel('dcgan');
  const layout = model.generatorLayout;
  const params = model.init(new Rng(1)).generator;
  const size = statisticsSize(layout);
  // One worker's means at +bound, another's at -bound, variances at the bound: the pooled variance is the largest it can be.
  const high = new Float32Array(size).fill(MAX_STATISTIC_ABS);
  const low = Float32Array.from(high, (v, i) => (isMeanIndex(layout, i) ? -v : v));
  updateMovingStatistics(layout, params, [{ statistics: high, samples: 64 }, { statistics: low, samples: 64 }], 0.99);
  for (const e of layout.statistics) {
    const values = params.subarray(e.offset, e.offset + e.size);
    assert.ok(values.every(Number.isFinite), `${e.name} holds ${values.find((v) => !Number.isFinite(v))}`);
  }
});

test("a layout refuses a flat vector one value short or over, and a gradient without a learnt tensor; only a moving statistic's may be left out, as zeros", () => {
  const layout = createModel('dcgan').generatorLayout;
  for (const n of [layout.size - 1, layout.size + 1]) {
    assert.throws(() => layout.checkLength(new Float32Array(n)), (e: GanfleetError) => e.code === 'LAYOUT_SIZE_MISMATCH' && e.message === `expected ${layout.size} parameters, got ${n}`);
    assert.throws(() => layout.toTensors(new Float32Array(n)), (e: GanfleetError) => e.code === 'LAYOUT_SIZE_MISMATCH');
  }
  const statistic = layout.statistics[0];
  const learnt = layout.entries.find((e) => e.trainable)!;
  const tensors = layout.toTensors(new Float32Array(layout.size).fill(1));
  try {
    const withoutStatistic = { ...tensors };
    delete withoutStatistic[statistic.name];
    const ordered = layout.ordered(withoutStatistic);
    const flat = tf.tidy(() => tf.concat(ordered).dataSync() as Float32Array);
    for (const t of ordered) t.dispose();
    assert.ok(flat.subarray(statistic.offset, statistic.offset + statistic.size).every((v) => v === 0), statistic.name);
    assert.ok(flat.subarray(learnt.offset, learnt.offset + learnt.size).every((v) => v === 1), learnt.name);
    const withoutLearnt = { ...tensors };
    delete withoutLearnt[learnt.name];
    assert.throws(() => layout.ordered(withoutLearnt), (e: GanfleetError) => e.code === 'LAYOUT_UNKNOWN_TENSOR' && e.message === `missing tensor ${learnt.name}`);
  } finally {
    disposeTensors(tensors);
  }
});

test('the coordinator refuses a gradient for a moving statistic: Adam would move it past the checks on batch statistics', () => {
  const model = createModel('dcgan');
  const layout = model.generatorLayout;
  const statistics = new Float32Array(statisticsSize(layout)).fill(1);
  const answer = (gradients: Float32Array): Gradients => ({
    v: PROTOCOL_VERSION, type: 'gradients', step: 0, phase: 'generator', samples: 8, gradients, loss: 1, dFake: 0.5, statistics, computeSeconds: 0.1,
  });
  const honest = new Float32Array(layout.size).fill(0.01);
  for (const e of layout.statistics) honest.fill(0, e.offset, e.offset + e.size);
  assert.equal(implausibleGradients(answer(honest), model, { batchSize: 8, discriminatorUpdates: 1 }), null);
  for (const e of layout.statistics) {
    const poisoned = honest.slice();
    poisoned[e.offset + e.size - 1] = 1e-6;
    assert.deepEqual(implausibleGradients(answer(poisoned), model, { batchSize: 8, discriminatorUpdates: 1 }), ['out_of_range', `${e.name} is not learnt by gradient: its gradient must be 0`]);
  }
});

test("the coordinator refuses batch statistics of the wrong count (G's answer carries them, D's none) or with a variance below 0, which leaves G's inference NaN", () => {
  const model = createModel('dcgan');
  const layout = model.generatorLayout;
  const size = statisticsSize(layout);
  const answer = (phase: 'generator' | 'discriminator', statistics?: Float32Array): Gradients => ({
    v: PROTOCOL_VERSION, type: 'gradients', step: 0, phase, samples: 8, loss: 1, dFake: 0.5, computeSeconds: 0.1,
    gradients: new Float32Array(phase === 'generator' ? layout.size : discriminatorGradientSize(model, 1)),
    ...(phase === 'discriminator' && { dReal: 0.5 }),
    ...(statistics && { statistics }),
  });
  const ones = (n: number) => new Float32Array(n).fill(1);
  assert.equal(implausibleGradients(answer('generator', ones(size)), model, { batchSize: 8, discriminatorUpdates: 1 }), null);
  assert.equal(implausibleGradients(answer('discriminator'), model, { batchSize: 8, discriminatorUpdates: 1 }), null);
  for (const [phase, statistics] of [['generator', undefined], ['generator', ones(size - 1)], ['generator', ones(size + 1)], ['discriminator', ones(size)]] as const) {
    assert.equal(implausibleGradients(answer(phase, statistics), model, { batchSize: 8, discriminatorUpdates: 1 })?.[0], 'bad_size', `${phase} with ${statistics?.length ?? 0} statistics`);
  }
  const variance = Array.from({ length: size }, (_, i) => i).find((i) => !isMeanIndex(layout, i))!;
  // Any value below 0, not only one below some tolerance.
  for (const below of [-1e-3, -1e-7]) {
    const negativeVariance = ones(size);
    negativeVariance[variance] = below;
    assert.deepEqual(implausibleGradients(answer('generator', negativeVariance), model, { batchSize: 8, discriminatorUpdates: 1 }), ['out_of_range', 'a batch variance is negative'], `variance ${below}`);
  }
  // A mean below 0 is a mean.
  const negativeMean = ones(size);
  negativeMean[0] = -1e-3;
  assert.ok(isMeanIndex(layout, 0));
  assert.equal(implausibleGradients(answer('generator', negativeMean), model, { batchSize: 8, discriminatorUpdates: 1 }), null);
});

test("under lsgan D's scores are raw, not probabilities: the coordinator takes them outside 0..1, up to the gradients' bound", () => {
  const model = createModel('mlp', 'lsgan');
  const answer = (dReal: number, dFake: number): Gradients => ({
    v: PROTOCOL_VERSION, type: 'gradients', step: 0, phase: 'discriminator', samples: 8, loss: 1, dReal, dFake, computeSeconds: 0.1,
    gradients: new Float32Array(discriminatorGradientSize(model, 1)),
  });
  assert.equal(implausibleGradients(answer(-3, 7), model, { batchSize: 8, discriminatorUpdates: 1 }), null);
  assert.equal(implausibleGradients(answer(MAX_GRADIENT_ABS, -MAX_GRADIENT_ABS), model, { batchSize: 8, discriminatorUpdates: 1 }), null);
  assert.equal(implausibleGradients(answer(MAX_GRADIENT_ABS * 2, 0.5), model, { batchSize: 8, discriminatorUpdates: 1 })?.[0], 'out_of_range');
  assert.equal(implausibleGradients(answer(0.5, -MAX_GRADIENT_ABS * 2), model, { batchSize: 8, discriminatorUpdates: 1 })?.[0], 'out_of_range');
  // Under bce the same scores are probabilities.
  assert.equal(implausibleGradients(answer(-3, 7), createModel('mlp', 'bce'), { batchSize: 8, discriminatorUpdates: 1 })?.[0], 'out_of_range');
});

/** Whether position i of a statistics vector (laid out as the layout's statistics entries) is a mean. */
function isMeanIndex(layout: ReturnType<typeof createModel>['generatorLayout'], i: number): boolean {
  let at = 0;
  for (const e of layout.statistics) {
    if (i < (at += e.size)) return e.name.endsWith('/moving_mean');
  }
  throw new Error(`${i} is past the statistics`);
}

test('moving statistics pool the workers\' batches into the statistics of their union', () => {
  const model = createModel('dcgan');
  const layout = model.generatorLayout;
  const rng = new Rng(5);
  const channels = [128, 64];
  // Per-channel samples from three "workers" of different batch sizes.
  const sizes = [3, 5, 8];
  const data = sizes.map((n) => channels.map((c) => Array.from({ length: c }, (_, k) => Array.from({ length: n }, () => rng.uniform() * 4 + k * 0.01))));
  const moments = (xs: number[]) => {
    const m = xs.reduce((a, b) => a + b, 0) / xs.length;
    return [m, xs.reduce((a, b) => a + (b - m) ** 2, 0) / xs.length];
  };
  const statsOf = (perLayer: number[][][]) => {
    const out: number[] = [];
    for (const layer of perLayer) {
      const ms = layer.map(moments);
      out.push(...ms.map((m) => m[0]), ...ms.map((m) => m[1]));
    }
    return Float32Array.from(out);
  };
  const union = channels.map((c, l) => Array.from({ length: c }, (_, k) => data.flatMap((w) => w[l][k])));
  const momentum = 0.9;
  const initial = () => {
    const p = model.init(new Rng(1)).generator;
    for (const e of layout.statistics) p.fill(0.5, e.offset, e.offset + e.size);
    return p;
  };
  const pooled = initial();
  updateMovingStatistics(layout, pooled, data.map((w, i) => ({ statistics: statsOf(w), samples: sizes[i] })), momentum);
  const single = initial();
  updateMovingStatistics(layout, single, [{ statistics: statsOf(union), samples: 16 }], momentum);
  assertClose(pooled, single, 1e-6, 1e-5, 'pooled vs union');
  const [meanEntry, varianceEntry] = layout.statistics;
  assertClose([single[meanEntry.offset]], [0.9 * 0.5 + 0.1 * moments(union[0][0])[0]], 1e-6, 1e-6, 'momentum update of the mean');
  assertClose([single[varianceEntry.offset]], [0.9 * 0.5 + 0.1 * moments(union[0][0])[1]], 1e-6, 1e-6, 'momentum update of the variance');
  // Only the moving statistics change.
  const untouched = initial();
  for (const entry of layout.entries) if (entry.trainable) assert.deepEqual(single.subarray(entry.offset, entry.offset + entry.size), untouched.subarray(entry.offset, entry.offset + entry.size));
});

test("kerasInit draws Keras' glorot-uniform kernels (fans over the receptive field) and sets γ and moving variances to 1, the rest to 0", () => {
  const model = createModel('dcgan');
  const p = model.init(new Rng(5)).generator;
  const entry = (name: string) => model.generatorLayout.entries.find((e) => e.name === name)!;
  const values = (name: string) => p.subarray(entry(name).offset, entry(name).offset + entry(name).size);
  // Dense [100, 12544]: fans 100 and 12544. Conv2DTranspose [3, 3, 128, 256]: fans 9·128 and 9·256.
  for (const [name, limit] of [['g/dense/kernel', Math.sqrt(6 / (100 + 12544))], ['g/deconv1/kernel', Math.sqrt(6 / (9 * 128 + 9 * 256))]] as const) {
    const v = values(name);
    const max = v.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    const variance = v.reduce((a, x) => a + x * x, 0) / v.length;
    assert.ok(max <= limit && max > 0.99 * limit, `${name}: max |w| ${max}, limit ${limit}`);
    assert.ok(Math.abs(variance / (limit * limit / 3) - 1) < 0.05, `${name}: variance ${variance}, uniform(±${limit}) has ${(limit * limit) / 3}`);
    // Centred on zero: uniform(0, limit) has the same largest |w| and mean square, and every weight positive.
    const mean = v.reduce((a, x) => a + x, 0) / v.length;
    assert.ok(Math.abs(mean) < 0.01 * limit, `${name}: mean ${mean}, limit ${limit}`);
  }
  for (const name of ['g/bn1/gamma', 'g/bn1/moving_variance']) assert.ok(values(name).every((x) => x === 1), name);
  for (const name of ['g/dense/bias', 'g/deconv1/bias', 'g/bn1/beta', 'g/bn1/moving_mean']) assert.ok(values(name).every((x) => x === 0), name);
});
