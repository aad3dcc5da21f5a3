import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { selectBackend } from '../src/backend';
import { nativeMatMulActive, nativeProductCount } from '../src/model/native-matmul';
import { builtAddon, nativeAddon } from '../src/util/native';
import { Adam, KERAS_ADAM_DEFAULTS } from '../src/coordinator/adam';
import { averageGradients } from '../src/coordinator/aggregate';
import { decodeFloatsPortable, encodeFloatsPortable } from '../src/protocol/wire-dtype';
import { tf } from '../src/model/tf';
import { Rng } from '../src/util/rng';
import { assertClose } from './helpers';

/**
 * The native addon (native/): its matmul against the cpu backend, its Adam
 * against the float64 formula, and its argument checks. Where it is not
 * built the tests say so and skip; CI sets GANFLEET_EXPECT_NATIVE=1, where a
 * missing addon fails instead of skipping.
 */
const addon = builtAddon();
const expectNative = process.env.GANFLEET_EXPECT_NATIVE === '1';
const skip =
  process.env.GANFLEET_NATIVE === '0'
    ? 'GANFLEET_NATIVE=0 turns the native addon off'
    : addon || expectNative
      ? false
      : 'the native matmul is not built (npm run build:native)';

type Case = {
  a: number[];
  b: number[];
  transposeA?: boolean;
  transposeB?: boolean;
  bias?: number[];
  activation?: 'linear' | 'relu' | 'leakyrelu' | 'relu6' | 'sigmoid' | 'prelu' | 'elu';
};

// The MLP step's products, the micro-kernels' edges (6 rows × 16 columns; 8 × 32), transposes, batches, bias and activations.
const CASES: Case[] = [
  { a: [256, 784], b: [784, 128], bias: [128], activation: 'leakyrelu' },
  { a: [16, 40], b: [40, 64], bias: [64], activation: 'relu6' },
  { a: [24, 7], b: [7, 96], bias: [96], activation: 'relu' },
  { a: [256, 784], b: [256, 128], transposeA: true },
  { a: [128, 128], b: [784, 128], transposeB: true },
  { a: [128, 100], b: [784, 128], transposeA: true, transposeB: true },
  { a: [1, 1], b: [1, 1] },
  { a: [7, 5], b: [5, 13], bias: [1], activation: 'relu' },
  { a: [130, 33], b: [17, 33], transposeB: true, bias: [17], activation: 'relu6' },
  { a: [6, 16], b: [16, 16], bias: [16], activation: 'sigmoid' },
  { a: [3, 9, 11], b: [3, 11, 20] },
  { a: [3, 9, 11], b: [11, 20], transposeA: false, bias: [20], activation: 'leakyrelu' },
  { a: [2, 11, 9], b: [1, 20, 11], transposeA: true, transposeB: true },
  { a: [5, 8], b: [8, 3], bias: [3], activation: 'elu' }, // not native: the backend's own kernel
  // An empty inner dimension: zeros, or the bias. The backend's own kernel gave whatever was on the heap.
  { a: [4, 0], b: [0, 5] },
  { a: [4, 0], b: [0, 5], bias: [5], activation: 'relu' },
];

/**
 * Runs `check` with the AVX2 kernel, then the AVX-512 one where the CPU has it (gemmWidth(512) falls back to
 * 256 elsewhere), and puts back the kernel chosen before.
 */
function onEachKernel(check: (width: number) => void): void {
  const chosen = addon!.gemmWidth(0);
  try {
    for (const width of [...new Set([256, addon!.gemmWidth(512)])]) {
      assert.equal(addon!.gemmWidth(width), width);
      check(width);
    }
  } finally {
    addon!.gemmWidth(chosen);
  }
}

function random(shape: number[], seed: number): tf.Tensor {
  const rng = new Rng(seed);
  const v = new Float32Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < v.length; i++) v[i] = rng.uniform() * 2 - 1;
  return tf.tensor(v, shape);
}

function product(c: Case): Float32Array {
  const a = random(c.a, 1);
  const b = random(c.b, 2);
  const out =
    c.bias || c.activation
      ? tf.fused.matMul({ a, b, transposeA: c.transposeA, transposeB: c.transposeB, bias: c.bias && random(c.bias, 3), activation: c.activation, leakyreluAlpha: 0.01 })
      : tf.matMul(a, b, c.transposeA, c.transposeB);
  return out.dataSync() as Float32Array;
}

test('the native matmul on wasm matches the cpu backend (shapes, transposes, batches, bias, activations), with each kernel this CPU runs', { skip }, async () => {
  await selectBackend('cpu');
  const expected = CASES.map(product);
  await selectBackend('wasm');
  assert.ok(nativeMatMulActive(), 'the native matmul is built but not in use');
  onEachKernel((width) => {
    const before = nativeProductCount();
    CASES.forEach((c, i) => {
      const name = `${width}-bit kernel: ${c.a}·${c.b}${c.transposeA ? ' Aᵀ' : ''}${c.transposeB ? ' Bᵀ' : ''} ${c.activation ?? ''}`;
      assertClose(product(c), expected[i], 1e-5, 1e-5, name);
    });
    // Every case but the ELU one ran natively (a batch counts once per matrix).
    assert.equal(nativeProductCount() - before, 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 3 + 3 + 2 + 1 + 1);
  });
});

test('the native matmul refuses operands outside its heap', { skip }, () => {
  assert.ok(addon, 'GANFLEET_EXPECT_NATIVE=1 but native/build has no addon');
  const heap = new Float32Array(64);
  // 4×4 · 4×4 fits at offsets 0, 16, 32; a C at 50 would run past the end.
  addon.gemm(heap, 4, 4, 4, 0, 0, 16, 0, 32, -1, 0, 0, 0);
  assert.throws(() => addon.gemm(heap, 4, 4, 4, 0, 0, 16, 0, 50, -1, 0, 0, 0), /outside the heap/);
  assert.throws(() => addon.gemm(heap, 4, 4, 4, -1, 0, 16, 0, 32, -1, 0, 0, 0), /outside the heap/);
  assert.throws(() => addon.gemm(heap, 4, 4, 4, 0, 0, 16, 0, 32, 62, 4, 0, 0), /outside the heap/);
  assert.throws(() => addon.gemm(heap, 4, 4, 4, 0, 0, 16, 0, 32, 0, 3, 0, 0), /bias must hold 1 or n/);
  assert.throws(() => addon.gemm(new Float64Array(64) as unknown as Float32Array, 1, 1, 1, 0, 0, 0, 0, 0, -1, 0, 0, 0), /Float32Array/);
});

test('the native Adam equals the float64 formula to float32 rounding, and the coordinator uses it', { skip }, () => {
  assert.ok(addon, 'GANFLEET_EXPECT_NATIVE=1 but native/build has no addon');
  assert.equal(nativeAddon().addon, addon, `the built addon is not in use: ${nativeAddon().why}`);
  const n = 1003; // not a multiple of the 8 lanes: the scalar tail runs too
  const rng = new Rng(7);
  // A β this close to 1 is 1 in float32: 1 - β must come from float64, or the update is 0 (β1) or blows up (β2).
  for (const config of [KERAS_ADAM_DEFAULTS, { ...KERAS_ADAM_DEFAULTS, beta1: 0.99999999, beta2: 0.99999999 }]) {
    const params = new Float32Array(n).map(() => rng.uniform() * 2 - 1);
    const expected = Float64Array.from(params);
    const [direct, directM, directV] = [params.slice(), new Float32Array(n), new Float32Array(n)];
    const m = new Float64Array(n);
    const v = new Float64Array(n);
    const adam = new Adam(n, config);
    const { learningRate: lr, beta1, beta2, epsilon } = config;
    for (let t = 1; t <= 5; t++) {
      const g = new Float32Array(n).map(() => (rng.uniform() - 0.5) * (t === 3 ? 1e-6 : 1));
      adam.apply(params, g);
      // The bits of the addon called directly.
      addon.adam(direct, g, directM, directV, beta1, beta2, lr / (1 - beta1 ** t), 1 / (1 - beta2 ** t), epsilon);
      assert.deepEqual(params, direct, `β ${beta1}/${beta2}, update ${t}`);
      for (let i = 0; i < n; i++) {
        m[i] = beta1 * m[i] + (1 - beta1) * g[i];
        v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
        expected[i] -= (lr * (m[i] / (1 - beta1 ** t))) / (Math.sqrt(v[i] / (1 - beta2 ** t)) + epsilon);
      }
      assertClose(params, expected, 1e-6, 1e-5, `β ${beta1}/${beta2}, update ${t}`);
    }
  }
  const params = new Float32Array(n);
  assert.throws(() => addon.adam(params, new Float32Array(n - 1), new Float32Array(n), new Float32Array(n), 0.9, 0.999, 1e-3, 1, 1e-7), /one length/);
});

/**
 * native/adam.c writes its update as separate float32 products and sums, and its scalar tail as the same
 * formula as its 8-lane loop. GCC's default -ffp-contract=fast fused some of them into FMAs, differently in the
 * loop and in the tail, so that one parameter's update depended on its index (i % 8 and the vector's length).
 */
test('the native Adam gives the bits of op-by-op float32 arithmetic, in a vector lane and in the scalar tail alike', { skip }, () => {
  assert.ok(addon, 'GANFLEET_EXPECT_NATIVE=1 but native/build has no addon');
  const f = Math.fround;
  const rng = new Rng(3);
  const [b1, b2, step, invC2, eps] = [0.5, 0.999, 2e-4 / 0.5, 1 / 0.001, 1e-8];
  const [gain1, gain2] = [f(1 - b1), f(1 - b2)];
  for (let it = 0; it < 2000; it++) {
    const [g, m0, v0, p0] = [f(rng.uniform() * 2 - 1), f((rng.uniform() * 2 - 1) * 0.1), f(rng.uniform() * 0.01), f(rng.uniform() * 2 - 1)];
    // Elements 0–7 take the vector loop, element 8 the scalar tail.
    const [p, gs, m, v] = [p0, g, m0, v0].map((x) => new Float32Array(9).fill(x));
    addon.adam(p, gs, m, v, b1, b2, step, invC2, eps);
    const mi = f(f(f(b1) * m0) + f(gain1 * g));
    const vi = f(f(f(b2) * v0) + f(f(gain2 * g) * g));
    const pi = f(p0 - f(f(f(step) * mi) / f(f(Math.sqrt(f(vi * f(invC2)))) + f(eps))));
    for (const i of [0, 8]) {
      assert.ok(Object.is(m[i], mi) && Object.is(v[i], vi) && Object.is(p[i], pi), `element ${i}, inputs g=${g} m=${m0} v=${v0} p=${p0}: got m=${m[i]} v=${v[i]} p=${p[i]}, want ${mi} ${vi} ${pi}`);
    }
  }
});

/**
 * The coordinator's Adam and average fall back to JavaScript without the addon (the GPU image, --no-native).
 * They rounded in float64 there, so a run resumed across the two went on with other bits; now both are float32
 * one operation at a time.
 */
test('the JavaScript Adam and gradient average give the native addon\'s bits', { skip }, () => {
  assert.ok(addon, 'GANFLEET_EXPECT_NATIVE=1 but native/build has no addon');
  const n = 1003; // not a multiple of the 8 lanes: the scalar tail runs too
  const rng = new Rng(13);
  for (const config of [KERAS_ADAM_DEFAULTS, { ...KERAS_ADAM_DEFAULTS, learningRate: 2e-4, beta1: 0.5, epsilon: 1e-8 }, { ...KERAS_ADAM_DEFAULTS, beta1: 0.99999999, beta2: 0.99999999 }]) {
    const native: Adam = new Adam(n, config, addon);
    const script: Adam = new Adam(n, config, null);
    const params = new Float32Array(n).map(() => rng.uniform() * 2 - 1);
    const [p1, p2] = [params.slice(), params.slice()];
    for (let t = 1; t <= 20; t++) {
      const g = new Float32Array(n).map(() => (rng.uniform() - 0.5) * 10 ** (rng.uniform() * 8 - 6));
      native.apply(p1, g);
      script.apply(p2, g);
      assert.deepEqual(p2, p1, `β ${config.beta1}/${config.beta2}, update ${t}`);
    }
    assert.deepEqual(script.state(), native.state());
  }
  // Shares such as 1/3 that float32 cannot hold, and magnitudes far apart.
  for (const samples of [[1, 1, 1], [128, 37, 1], [64, 64], [5, 7, 11, 13]]) {
    const gradients = samples.map(() => new Float32Array(n).map(() => (rng.uniform() - 0.5) * 10 ** (rng.uniform() * 8 - 4)));
    const contributions = gradients.map((g, k) => ({ gradients: g, samples: samples[k] }));
    assert.deepEqual(averageGradients(contributions, new Float32Array(n), null), averageGradients(contributions, new Float32Array(n), addon), `samples ${samples}`);
  }
  // Products of -0 (a gradient of -0, or a negative one that underflows), in a vector lane and in the scalar tail:
  // the sum stays -0 both ways, not 0 + -0 = +0 in the tail.
  for (const x of [-0, -1e-45]) {
    const contributions = [3, 5].map((samples) => ({ gradients: new Float32Array(n).fill(x), samples }));
    assert.deepEqual(averageGradients(contributions, new Float32Array(n), null), averageGradients(contributions, new Float32Array(n), addon), `gradients of ${Object.is(x, -0) ? '-0' : x}`);
  }
});

test('the native gradient average equals the float64 sample-weighted mean to float32 rounding, and the coordinator uses it', { skip }, () => {
  assert.ok(addon, 'GANFLEET_EXPECT_NATIVE=1 but native/build has no addon');
  assert.equal(nativeAddon().addon, addon, `the built addon is not in use: ${nativeAddon().why}`);
  const n = 1003; // not a multiple of the 8 lanes: the scalar tail runs too
  const rng = new Rng(11);
  const samples = [128, 37, 1];
  const gradients = samples.map(() => new Float32Array(n).map(() => (rng.uniform() - 0.5) * 2e3));
  const out = averageGradients(gradients.map((g, k) => ({ gradients: g, samples: samples[k] })), new Float32Array(n));
  // The bits of the addon called directly.
  const direct = new Float32Array(n);
  gradients.forEach((g, k) => addon.scaleAdd(direct, g, samples[k] / 166, k > 0));
  assert.deepEqual(out, direct);
  const total = samples.reduce((a, b) => a + b, 0);
  const expected = new Float64Array(n);
  gradients.forEach((g, k) => g.forEach((x, i) => (expected[i] += (x * samples[k]) / total)));
  assertClose(out, expected, 1e-6, 1e-4, 'three contributions');
  // The average may be written over one of its inputs (the coordinator's reused memory).
  const first = gradients[0].slice();
  averageGradients([{ gradients: first, samples: 1 }, { gradients: gradients[1], samples: 3 }], first);
  gradients[0].forEach((x, i) => assert.ok(Math.abs(first[i] - (x + 3 * gradients[1][i]) / 4) <= 1e-4 * (1 + Math.abs(first[i])), `aliased output at ${i}`));
  assert.throws(() => addon.scaleAdd(new Float32Array(n), new Float32Array(n - 1), 0.5, true), /length/);
});

test('the native 16-bit wire conversions give the bits of the JavaScript ones (float16 and bfloat16, both ways)', { skip }, () => {
  assert.ok(addon, 'GANFLEET_EXPECT_NATIVE=1 but native/build has no addon');
  const rng = new Rng(5);
  const special = [0, -0, 1, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 65504, -65504, 65505, 65519.99, 65520, -65536, 1e10, -3e38,
    Infinity, -Infinity, NaN, 6.1e-5, 6e-8, 3e-8, 2.98e-8, -2.98e-8, 1e-40, -1e-45, 5.96e-8];
  const values = new Float32Array(special.length + 20000);
  values.set(special);
  // Magnitudes from 2^-30 to 2^20, both signs: subnormal float16s, normal ones, saturation.
  for (let i = special.length; i < values.length; i++) values[i] = (rng.uniform() < 0.5 ? -1 : 1) * 2 ** (rng.uniform() * 50 - 30);
  const isNaN16 = (h: number, bfloat: boolean) => (bfloat ? (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0 : (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0);
  for (const dtype of ['float16', 'bfloat16'] as const) {
    const bfloat = dtype === 'bfloat16';
    const expected = encodeFloatsPortable(values, dtype);
    const actual = new Uint16Array(values.length);
    addon.toHalf(values, actual, bfloat);
    for (let i = 0; i < values.length; i++) {
      if (Number.isNaN(values[i])) assert.ok(isNaN16(actual[i], bfloat), `${dtype}: NaN became 0x${actual[i].toString(16)}`);
      else assert.equal(actual[i], expected[i], `${dtype}(${values[i]}): 0x${actual[i].toString(16)}, JavaScript 0x${expected[i].toString(16)}`);
    }
    const every = new Uint16Array(65536).map((_, i) => i);
    const back = new Float32Array(65536);
    addon.fromHalf(every, back, bfloat);
    const reference = decodeFloatsPortable(every, dtype);
    for (let h = 0; h < 65536; h++) {
      assert.ok(Object.is(back[h], reference[h]) || (Number.isNaN(back[h]) && Number.isNaN(reference[h])), `${dtype} 0x${h.toString(16)}: ${back[h]} vs ${reference[h]}`);
    }
  }
  assert.throws(() => addon.toHalf(values, new Uint16Array(3), false), /one length/);
  assert.throws(() => addon.fromHalf(values as unknown as Uint16Array, new Float32Array(values.length), false), /Float32Array and a Uint16Array/);
});

test('the native range check finds the first NaN, ±Infinity or value beyond the bound', { skip }, () => {
  assert.ok(addon, 'GANFLEET_EXPECT_NATIVE=1 but native/build has no addon');
  const reference = (x: Float32Array, bound: number) => x.findIndex((v) => !(v <= bound && v >= -bound));
  const rng = new Rng(13);
  const x = new Float32Array(1001).map(() => rng.uniform() * 2 - 1); // not a multiple of 8: the tail runs too
  assert.equal(addon.firstOutside(x, 1e6), -1);
  for (const at of [0, 7, 8, 500, 999, 1000]) {
    for (const bad of [NaN, Infinity, -Infinity, 1e6 * 1.5, -2e6]) {
      const y = x.slice();
      y[at] = bad;
      y[Math.min(at + 3, 1000)] = NaN; // a later one must not win
      assert.equal(addon.firstOutside(y, 1e6), reference(y, 1e6), `${bad} at ${at}`);
    }
  }
  const edge = x.slice();
  edge[3] = 1e6;
  edge[4] = -1e6;
  assert.equal(addon.firstOutside(edge, 1e6), -1, 'the bound itself is inside');
  // No bound but finiteness: Number.MAX_VALUE, as the codec passes for most fields.
  edge[9] = 3.4e38;
  assert.equal(addon.firstOutside(edge, Number.MAX_VALUE), -1);
  edge[10] = Infinity;
  assert.equal(addon.firstOutside(edge, Number.MAX_VALUE), 10);
});

test('the native pixel gather maps each picked row through the table, and refuses indices outside the images', { skip }, () => {
  assert.ok(addon, 'GANFLEET_EXPECT_NATIVE=1 but native/build has no addon');
  const row = 5;
  const images = Uint8Array.from({ length: 4 * row }, (_, i) => (i * 37) & 255);
  const table = Float32Array.from({ length: 256 }, (_, p) => p / 127.5 - 1);
  const indices = Int32Array.from([3, 0, 3]);
  const out = new Float32Array(indices.length * row);
  addon.gatherPixels(images, indices, row, table, out);
  assert.deepEqual(out, Float32Array.from({ length: out.length }, (_, i) => table[images[indices[Math.floor(i / row)]! * row + (i % row)]!]));
  assert.throws(() => addon.gatherPixels(images, Int32Array.from([4]), row, table, out), /outside the images/);
  assert.throws(() => addon.gatherPixels(images, Int32Array.from([-1]), row, table, out), /outside the images/);
  assert.throws(() => addon.gatherPixels(images, indices, row, table.subarray(1), out), /256-entry table/);
  assert.throws(() => addon.gatherPixels(images, indices, row, table, out.subarray(1)), /count·row slots/);
  assert.throws(() => addon.gatherPixels(images, Uint32Array.from([0]) as unknown as Int32Array, row, table, out), /gatherPixels\(/);
});

test('the native matmul refuses offsets whose sum with the operand size overflows int64 (2**63 saturates to INT64_MAX)', { skip }, () => {
  assert.ok(addon, 'GANFLEET_EXPECT_NATIVE=1 but native/build has no addon');
  const big = new Float32Array([111, 2, 3, 444]);
  const heap = big.subarray(1, 3);
  for (const args of [
    [1, 1, 1, 2 ** 63, 0, 1, 0, 0, -1, 0, 0, 0], // A at heap[-1] before the fix: an out-of-bounds read
    [1, 1, 1, 0, 0, 2 ** 63, 0, 0, -1, 0, 0, 0],
    [1, 1, 1, 0, 0, 1, 0, 2 ** 63, -1, 0, 0, 0], // C at heap[-1]: an out-of-bounds write
    [1, 1, 1, 0, 0, 1, 0, 0, 2 ** 63, 1, 0, 0], // the bias
    [1 << 20, 1, 1 << 20, 2 ** 63 - 2 ** 40, 0, 0, 0, 0, -1, 0, 0, 0], // a wild pointer: SIGSEGV before the fix
  ]) {
    assert.throws(() => (addon.gemm as (...a: unknown[]) => void)(heap, ...args), /outside the heap/, String(args));
  }
  assert.deepEqual([...big], [111, 2, 3, 444]);
});

test('the native relu6 maps a NaN product to 0 in full and edge tiles alike, as XNNPACK does', { skip }, () => {
  assert.ok(addon, 'GANFLEET_EXPECT_NATIVE=1 but native/build has no addon');
  onEachKernel((width) => {
    const [m, n] = [9, 33];
    const heap = new Float32Array(m + n + m * n);
    heap.fill(NaN, 0, m);
    heap.fill(1, m, m + n);
    addon.gemm(heap, m, n, 1, 0, 0, m, 0, m + n, -1, 0, 3, 0);
    assert.deepEqual([...new Set(heap.subarray(m + n))], [0], `${width}-bit kernel`);
  });
});

test('the native range check agrees with the float64 one for a bound that float32 rounds up', { skip }, () => {
  assert.ok(addon, 'GANFLEET_EXPECT_NATIVE=1 but native/build has no addon');
  for (const bound of [0.1, 1e-45, 1e6, 1e15]) {
    for (const at of [3, 8]) {
      const x = new Float32Array(9);
      x[at] = Math.fround(bound);
      assert.equal(addon.firstOutside(x, bound), x.findIndex((v) => !(v <= bound && v >= -bound)), `bound ${bound}, at ${at}`);
    }
  }
});

/**
 * A bias of one value broadcast over every column must take the scalar epilogue even where the tile is whole:
 * the kernels' in-register epilogue reads a whole row of bias values from the heap.
 */
test('the native matmul broadcasts a one-value bias over whole tiles too, with each kernel this CPU runs', { skip }, () => {
  assert.ok(addon, 'GANFLEET_EXPECT_NATIVE=1 but native/build has no addon');
  onEachKernel((width) => {
    // Whole tiles of either kernel: 6×16 (AVX2), 8×32 (AVX-512); and several of them.
    for (const [m, n, k] of [[6, 16, 3], [8, 32, 3], [24, 64, 5]]) {
      const rng = new Rng(m * n + k);
      // heap: A (m×k), B (k×n), the bias (one value, then values that must not be read), C (m×n)
      const heap = new Float32Array(m * k + k * n + n + m * n);
      for (let i = 0; i < m * k + k * n; i++) heap[i] = rng.uniform() * 2 - 1;
      const biasAt = m * k + k * n;
      heap[biasAt] = 0.25;
      heap.fill(100, biasAt + 1, biasAt + n);
      const cAt = biasAt + n;
      addon.gemm(heap, m, n, k, 0, 0, m * k, 0, cAt, biasAt, 1, 0, 0);
      const expected = new Float64Array(m * n);
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
        let s = 0.25;
        for (let p = 0; p < k; p++) s += heap[i * k + p] * heap[m * k + p * n + j];
        expected[i * n + j] = s;
      }
      assertClose(heap.subarray(cAt), expected, 1e-5, 1e-5, `${width}-bit kernel, ${m}×${n}·${k}, bias of 1 value`);
    }
  });
});

/**
 * The conversions' scalar tails (the last n % 8 values) must give what their 8-lane loops give: the test above
 * converts 20026 random values, whose two-value tail rarely holds a case that matters, and 65536 halves, with no tail.
 */
test('the native 16-bit wire conversions give the JavaScript bits in the scalar tail too (rounding, saturation, NaN)', { skip }, () => {
  assert.ok(addon, 'GANFLEET_EXPECT_NATIVE=1 but native/build has no addon');
  // As bit patterns: reading a signalling NaN into a JavaScript number quiets it, so the NaNs are written as bits.
  const bitsOf = (x: number) => new Uint32Array(Float32Array.of(x).buffer)[0]!;
  // Ties both ways for float16 (1 + 2^-11, 1 + 3·2^-11) and bfloat16 (1 + 2^-8, 1 + 3·2^-8), values just off a tie,
  // saturation beyond 65504, ±Infinity, float16 subnormals, and NaNs: quiet, and signalling ones whose payload
  // lies only in the low 16 bits (0x7f800001: truncated, an Infinity).
  const special = [1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1.0009, -1.0041, 3.14159, 65519, 70000, -70000, 1e10, -3e38,
    Infinity, -Infinity, 6e-8, 3e-8, -2.98e-8, 1e-6, NaN].map(bitsOf).concat([0x7f800001, 0xff800001, 0x7fa00000]);
  const isNaN16 = (h: number, bfloat: boolean) => (bfloat ? (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0 : (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0);
  for (const dtype of ['float16', 'bfloat16'] as const) {
    const bfloat = dtype === 'bfloat16';
    for (const pattern of special) {
      // Length 9: one vector of 8 lanes, then the value once more alone in the tail.
      const values = new Float32Array(9);
      new Uint32Array(values.buffer).fill(pattern);
      const x = values[0]!;
      const expected = encodeFloatsPortable(values, dtype);
      const actual = new Uint16Array(9);
      addon.toHalf(values, actual, bfloat);
      for (const i of [0, 8]) {
        if (Number.isNaN(x)) assert.ok(isNaN16(actual[i]!, bfloat), `${dtype}: NaN 0x${pattern.toString(16)} at ${i} became 0x${actual[i]!.toString(16)}`);
        else assert.equal(actual[i], expected[i], `${dtype}(${x}) at ${i}: 0x${actual[i]!.toString(16)}, JavaScript 0x${expected[i]!.toString(16)}`);
      }
    }
    // Back: every 16-bit pattern through the tail, in calls of 7.
    const every = new Uint16Array(65536).map((_, i) => i);
    const reference = decodeFloatsPortable(every, dtype);
    const back = new Float32Array(7);
    for (let h0 = 0; h0 < 65536; h0 += 7) {
      const src = every.subarray(h0, h0 + 7);
      const dst = back.subarray(0, src.length);
      addon.fromHalf(src, dst, bfloat);
      dst.forEach((v, j) => {
        const r = reference[h0 + j]!;
        assert.ok(Object.is(v, r) || (Number.isNaN(v) && Number.isNaN(r)), `${dtype} 0x${(h0 + j).toString(16)} in the tail: ${v} vs ${r}`);
      });
    }
  }
});

test('the native matmul refuses an operand that runs one float past the end of its heap', { skip }, () => {
  assert.ok(addon, 'GANFLEET_EXPECT_NATIVE=1 but native/build has no addon');
  const heap = new Float32Array(64);
  // 4×4 operands: an offset of 48 ends exactly at the heap's end, 49 one float past it.
  addon.gemm(heap, 4, 4, 4, 48, 0, 0, 0, 16, -1, 0, 0, 0);
  addon.gemm(heap, 4, 4, 4, 0, 0, 48, 0, 16, -1, 0, 0, 0);
  addon.gemm(heap, 4, 4, 4, 0, 0, 16, 0, 48, -1, 0, 0, 0);
  addon.gemm(heap, 4, 4, 4, 0, 0, 16, 0, 32, 60, 4, 0, 0);
  assert.throws(() => addon.gemm(heap, 4, 4, 4, 49, 0, 0, 0, 16, -1, 0, 0, 0), /outside the heap/, 'A');
  assert.throws(() => addon.gemm(heap, 4, 4, 4, 0, 0, 49, 0, 16, -1, 0, 0, 0), /outside the heap/, 'B');
  assert.throws(() => addon.gemm(heap, 4, 4, 4, 0, 0, 16, 0, 49, -1, 0, 0, 0), /outside the heap/, 'C');
  assert.throws(() => addon.gemm(heap, 4, 4, 4, 0, 0, 16, 0, 32, 61, 4, 0, 0), /outside the heap/, 'bias');
});

test('an addon file cut short is reported and not loaded, instead of killing the process with SIGBUS', { skip }, () => {
  // A copy of native.ts (as built) beside an addon cut short, where it looks for native/build/Release.
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ganfleet-cut-'));
  try {
    const util = path.join(root, 'dist', 'src', 'util');
    const release = path.join(root, 'native', 'build', 'Release');
    fs.mkdirSync(release, { recursive: true });
    // The whole of util/: native.js and what it imports, whatever that comes to.
    fs.cpSync(path.join(__dirname, '..', 'src', 'util'), util, { recursive: true });
    const built = fs.readFileSync(path.join(__dirname, '..', '..', 'native', 'build', 'Release', 'ganfleet_native.node'));
    const file = path.join(release, 'ganfleet_native.node');
    fs.writeFileSync(file, built.subarray(0, Math.floor(built.length * 0.7)));
    const r = spawnSync(process.execPath, ['-e', `console.log(require(${JSON.stringify(path.join(util, 'native.js'))}).nativeAddon().why)`], { encoding: 'utf8', env: { ...process.env, GANFLEET_NATIVE: '' } });
    assert.equal(r.signal, null, `killed by ${r.signal}`);
    assert.equal(r.stdout.trim(), `${file} is cut short (npm run build:native)`);
    fs.writeFileSync(file, built);
    assert.equal(spawnSync(process.execPath, ['-e', `console.log(require(${JSON.stringify(path.join(util, 'native.js'))}).nativeAddon().addon !== null)`], { encoding: 'utf8' }).stdout.trim(), 'true');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
