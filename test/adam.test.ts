import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { Adam, AdamConfig, KERAS_ADAM_DEFAULTS, adamDefaults, applyDiscriminatorUpdates } from '../src/coordinator/adam';
import { Rng } from '../src/util/rng';
import { GanfleetError } from '../src/util/errors';

const SIZE = 257;
const STEPS = 5;

/** Tiny deterministic LCG (Numerical Recipes constants) -> uniform in [-scale, scale). */
function lcg(seed: number): (scale: number) => number {
  let s = seed >>> 0;
  return (scale) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 - 0.5) * 2 * scale;
  };
}

function randomArray(next: (scale: number) => number, n: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = next(scale);
  return a;
}

function assertClose(actual: Float32Array, expected: Float32Array, tol = 1e-6): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < actual.length; i++) {
    const diff = Math.abs(actual[i] - expected[i]);
    assert.ok(diff <= tol + tol * Math.abs(expected[i]), `index ${i}: ${actual[i]} vs ${expected[i]}`);
  }
}

before(async () => {
  await tf.setBackend('cpu');
});

let varCounter = 0;

/** Five steps against tf.train.adam, with the addon's kernel where it is built, or (`javascript`) the JavaScript one. */
function checkAgainstTfjs(config: AdamConfig, seed: number, javascript = false): void {
  const next = lcg(seed);
  const init = randomArray(next, SIZE, 1);
  // Mix of gradient scales. Tiny ones first, where epsilon matters (after large ones the variance hides it).
  const grads = Array.from({ length: STEPS }, (_, s) => randomArray(next, SIZE, s === 0 ? 1e-6 : 0.5));

  const variable = tf.variable(tf.tensor1d(init), true, `adam_test_${varCounter++}`);
  const opt = tf.train.adam(config.learningRate, config.beta1, config.beta2, config.epsilon);
  const params = init.slice();
  const adam = javascript ? new Adam(SIZE, config, null) : new Adam(SIZE, config);

  for (let s = 0; s < STEPS; s++) {
    const g = tf.tensor1d(grads[s]);
    // The NamedTensor[] form of applyGradients; the map form is typed as taking Variables.
    opt.applyGradients([{ name: variable.name, tensor: g }]);
    g.dispose();
    adam.apply(params, grads[s]);
    assertClose(params, variable.dataSync() as Float32Array);
  }
  assert.equal(adam.step, STEPS);
  opt.dispose();
  variable.dispose();
}

test('matches tf.train.adam with Keras defaults', () => {
  checkAgainstTfjs(KERAS_ADAM_DEFAULTS, 1);
});

test('matches tf.train.adam with GAN settings (lr 2e-4, beta1 0.5)', () => {
  checkAgainstTfjs({ ...KERAS_ADAM_DEFAULTS, learningRate: 2e-4, beta1: 0.5 }, 2);
});

test('the JavaScript Adam (the GPU image has no addon) matches tf.train.adam too', () => {
  checkAgainstTfjs(KERAS_ADAM_DEFAULTS, 1, true);
  checkAgainstTfjs({ ...KERAS_ADAM_DEFAULTS, learningRate: 2e-4, beta1: 0.5 }, 2, true);
});

test('state()/restoreState() round trip continues identically', () => {
  const next = lcg(3);
  const params = randomArray(next, SIZE, 1);
  const grads = Array.from({ length: STEPS }, () => randomArray(next, SIZE, 0.5));

  const a = new Adam(SIZE, KERAS_ADAM_DEFAULTS);
  a.apply(params, grads[0]);
  a.apply(params, grads[1]);
  const saved = a.state();
  const b = new Adam(saved.m.length, KERAS_ADAM_DEFAULTS);
  b.restoreState(saved);
  assert.equal(b.step, 2);

  // state() must be a copy: mutating it cannot disturb either optimizer.
  saved.m.fill(123);
  saved.v.fill(456);

  const pa = params.slice();
  const pb = params.slice();
  for (let s = 2; s < STEPS; s++) {
    a.apply(pa, grads[s]);
    b.apply(pb, grads[s]);
  }
  assert.deepEqual(pb, pa);
  assert.deepEqual(b.state(), a.state());
});

test('copyStateInto() fills a state, step and moments, that restoreState() rolls back to; restoreState() refuses a wrong size', () => {
  const next = lcg(4);
  const params = randomArray(next, SIZE, 1);
  const a = new Adam(SIZE, KERAS_ADAM_DEFAULTS);
  a.apply(params, randomArray(next, SIZE, 0.5));
  const saved = { step: 0, m: new Float32Array(SIZE), v: new Float32Array(SIZE) };
  a.copyStateInto(saved);
  assert.deepEqual(saved, a.state());
  a.apply(params, randomArray(next, SIZE, 0.5));
  a.restoreState(saved);
  assert.equal(a.step, 1);
  assert.deepEqual(a.state(), saved);
  const isMismatch = (e: unknown) => e instanceof GanfleetError && e.code === 'ADAM_SIZE_MISMATCH';
  assert.throws(() => a.restoreState({ step: 1, m: saved.m.subarray(1), v: saved.v.subarray(1) }), isMismatch);
  assert.throws(() => a.restoreState({ step: 1, m: saved.m, v: saved.v.subarray(1) }), isMismatch);
  assert.deepEqual(a.state(), saved);
});

test('throws ADAM_SIZE_MISMATCH on wrong lengths', () => {
  const adam = new Adam(4, KERAS_ADAM_DEFAULTS);
  const isMismatch = (e: unknown) => e instanceof GanfleetError && e.code === 'ADAM_SIZE_MISMATCH';
  assert.throws(() => adam.apply(new Float32Array(4), new Float32Array(3)), isMismatch);
  assert.throws(() => adam.apply(new Float32Array(5), new Float32Array(5)), isMismatch);
  assert.equal(adam.step, 0);
});

test("per-model defaults: the MLP takes Keras' Adam(), the DCGAN Radford et al.'s lr 2e-4 and β1 0.5", () => {
  assert.deepEqual(adamDefaults('mlp'), KERAS_ADAM_DEFAULTS);
  assert.deepEqual(adamDefaults('dcgan'), { learningRate: 2e-4, beta1: 0.5, beta2: 0.999, epsilon: 1e-7 });
});

test("a D round's two halves make the seed's two updates, real then generated, each on its own batch's loss (twice its share); with one, the round's sum makes one update", () => {
  const n = 1000;
  const rng = new Rng(3);
  const halves = new Float32Array(2 * n).map(() => rng.uniform() - 0.5);
  const [real, fake] = [halves.subarray(0, n), halves.subarray(n)];
  const start = new Float32Array(n).map(() => rng.uniform());

  const two = { adam: new Adam(n, KERAS_ADAM_DEFAULTS), params: start.slice() };
  applyDiscriminatorUpdates(two.adam, two.params, halves, 2, new Float32Array(n));
  const seed = { adam: new Adam(n, KERAS_ADAM_DEFAULTS), params: start.slice() };
  seed.adam.apply(seed.params, real.map((g) => 2 * g));
  seed.adam.apply(seed.params, fake.map((g) => 2 * g));
  assert.deepEqual(two.params, seed.params);
  assert.equal(two.adam.step, 2);
  assert.deepEqual(two.adam.state(), seed.adam.state());

  // The worker sends the halves' sum (sumDiscriminatorHalves).
  const summed = real.map((g, i) => g + fake[i]);
  const one = { adam: new Adam(n, KERAS_ADAM_DEFAULTS), params: start.slice() };
  applyDiscriminatorUpdates(one.adam, one.params, summed, 1, new Float32Array(n));
  const sum = { adam: new Adam(n, KERAS_ADAM_DEFAULTS), params: start.slice() };
  sum.adam.apply(sum.params, summed);
  assert.deepEqual(one.params, sum.params);
  assert.equal(one.adam.step, 1);
  assert.notDeepEqual(two.params, one.params);
  // A gradient of the other setting's size is refused, not half-applied.
  assert.throws(() => applyDiscriminatorUpdates(one.adam, one.params, halves, 1, new Float32Array(n)), /1 D update\(s\) of 1000 parameters got a gradient of 2000/);
  assert.throws(() => applyDiscriminatorUpdates(two.adam, two.params, summed, 2, new Float32Array(n)), /2 D update\(s\) of 1000 parameters got a gradient of 1000/);
  assert.equal(one.adam.step, 1);
});
