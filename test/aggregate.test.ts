import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GradientMean, averageGradients } from '../src/coordinator/aggregate';
import { GanfleetError } from '../src/util/errors';

const hasCode = (code: string) => (e: unknown) => e instanceof GanfleetError && e.code === code;

test('weights each worker by its sample count', () => {
  const out = new Float32Array(3);
  const result = averageGradients(
    [
      { gradients: Float32Array.of(4, 0, -2), samples: 1 },
      { gradients: Float32Array.of(0, 8, 2), samples: 3 },
    ],
    out,
  );
  assert.equal(result, out);
  // (1*4 + 3*0)/4, (1*0 + 3*8)/4, (1*-2 + 3*2)/4
  assert.deepEqual(out, Float32Array.of(1, 6, 1));
});

test('a single contribution comes back as an exact copy', () => {
  const g = Float32Array.of(0.1, -3.7, 1e-30, 12345.678);
  const out = new Float32Array(4);
  averageGradients([{ gradients: g, samples: 7 }], out);
  assert.notEqual(out, g);
  assert.deepEqual(out, g);
});

test('out may alias an input', () => {
  const a = Float32Array.of(2, 4);
  averageGradients([{ gradients: a, samples: 1 }, { gradients: Float32Array.of(4, 8), samples: 1 }], a);
  assert.deepEqual(a, Float32Array.of(3, 6));
});

test('throws AGGREGATE_EMPTY without contributions or samples', () => {
  assert.throws(() => averageGradients([], new Float32Array(2)), hasCode('AGGREGATE_EMPTY'));
  assert.throws(
    () => averageGradients([{ gradients: new Float32Array(2), samples: 0 }], new Float32Array(2)),
    hasCode('AGGREGATE_EMPTY'),
  );
});

test('throws AGGREGATE_SIZE_MISMATCH on a wrong length', () => {
  assert.throws(
    () =>
      averageGradients(
        [
          { gradients: new Float32Array(2), samples: 1 },
          { gradients: new Float32Array(3), samples: 1 },
        ],
        new Float32Array(2),
      ),
    hasCode('AGGREGATE_SIZE_MISMATCH'),
  );
});

test('throws AGGREGATE_BAD_SAMPLES on negative or non-finite counts', () => {
  for (const samples of [-1, NaN, Infinity]) {
    assert.throws(
      () => averageGradients([{ gradients: new Float32Array(1), samples }], new Float32Array(1)),
      hasCode('AGGREGATE_BAD_SAMPLES'),
    );
  }
});

function seeded(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = (x / 2 ** 32 - 0.5) * 10 ** ((x % 7) - 3);
  }
  return out;
}

test('GradientMean sums each contribution as it arrives: the same bits as averageGradients', () => {
  const parts = [1, 2, 3].map((s) => ({ gradients: seeded(1001, s), samples: 100 + 14 * s }));
  const expected = averageGradients(parts, new Float32Array(1001));
  const mean = new GradientMean(new Float32Array(1001));
  const copies = parts.map((p) => ({ ...p, gradients: p.gradients.slice() }));
  mean.add(copies[0], true);
  mean.add(copies[1], true);
  // Summed on arrival: changing what was added while more were expected changes nothing.
  copies[0].gradients.fill(1e9);
  copies[1].gradients.fill(1e9);
  mean.add(copies[2], false);
  assert.deepEqual(mean.mean(), expected);
});

test('GradientMean: the one contribution of a round whose others left is copied bit-exact', () => {
  const g = seeded(64, 9);
  const mean = new GradientMean(new Float32Array(64));
  // Added while another was still awaited (so summed, scaled by its samples); that one then left.
  mean.add({ gradients: g, samples: 100 }, true);
  assert.deepEqual(mean.mean(), g);
});

test('GradientMean without contributions throws AGGREGATE_EMPTY', () => {
  assert.throws(() => new GradientMean(new Float32Array(2)).mean(), hasCode('AGGREGATE_EMPTY'));
});
