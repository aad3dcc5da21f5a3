import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/util/rng';

test('a seed gives the stream it always gave (checkpoints and quoted runs depend on it)', () => {
  const r = new Rng(5);
  assert.deepEqual([r.nextUint32(), r.nextUint32(), r.nextUint32()], [3616982058, 3568987857, 2681310436]);
  assert.deepEqual(new Rng(0).state(), [2462723854, 1020716019, 454327756, 1275600319]);
});

test('keyed streams: the same (seed, counter) gives the same stream; neighbouring counters and seeds give unrelated ones', () => {
  const first = (seed: number, counter: number) => Rng.keyed(seed, counter).nextUint32();
  assert.deepEqual(Rng.keyed(7, 1234).state(), Rng.keyed(7, 1234).state());
  const n = 1 << 14;
  const seen = new Set<number>();
  const bins = new Array(16).fill(0);
  for (let step = 0; step < n; step++) {
    const x = first(7, step);
    seen.add(x);
    bins[x >>> 28]++;
  }
  // 2^14 uniform draws from 2^32 values collide with probability about 3%; the set is fixed, so this cannot flake.
  assert.ok(seen.size >= n - 1, `${n - seen.size} repeated first draws`);
  const expected = n / 16;
  const chi2 = bins.reduce((s, b) => s + (b - expected) ** 2 / expected, 0);
  assert.ok(chi2 < 37.7, `first draws over 16 bins: chi-square ${chi2.toFixed(1)} (15 degrees of freedom, p = 0.001 at 37.7)`);
  // A neighbouring seed's stream at the same step, and a counter 2^32 apart, are other streams.
  assert.notEqual(first(8, 100), first(7, 100));
  // The two numbers play different parts: swapped, or equal, they give other streams.
  assert.notDeepEqual(Rng.keyed(5, 1000).state(), Rng.keyed(1000, 5).state());
  assert.notDeepEqual(Rng.keyed(7, 7).state(), Rng.keyed(123456, 123456).state());
  assert.notDeepEqual(Rng.keyed(7, 100 + 2 ** 32).state(), Rng.keyed(7, 100).state());
  // Adjacent steps' uniforms are not correlated: the mean product of centred pairs is near 0.
  let sum = 0;
  for (let step = 0; step < n; step++) sum += (Rng.keyed(3, step).uniform() - 0.5) * (Rng.keyed(3, step + 1).uniform() - 0.5);
  assert.ok(Math.abs(sum / n) < 0.005, `mean product ${sum / n}`);
});

test('permutation draws every order: all 6 of 3 elements, each about as often, and 2 elements both ways', () => {
  const counts = new Map<string, number>();
  const n = 6000;
  for (let seed = 0; seed < n; seed++) {
    const key = Array.from(new Rng(seed).permutation(3)).join('');
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  assert.deepEqual([...counts.keys()].sort(), ['012', '021', '102', '120', '201', '210']);
  // 1,000 expected each; 5 degrees of freedom, p = 0.001 at 20.5.
  const chi2 = [...counts.values()].reduce((s, c) => s + (c - n / 6) ** 2 / (n / 6), 0);
  assert.ok(chi2 < 20.5, `chi-square ${chi2.toFixed(1)}: ${JSON.stringify([...counts])}`);
  const swapped = Array.from({ length: 200 }, (_, seed) => new Rng(seed).permutation(2)[0]).filter((x) => x === 1).length;
  assert.ok(swapped > 50 && swapped < 150, `${swapped} of 200 permutations of 2 swapped`);
});

test('fillNormal draws standard normals: mean 0, variance 1, and the two values of each pair uncorrelated', () => {
  const out = new Rng(11).fillNormal(new Float32Array(1_000_001)); // odd: the last pair's second value is dropped
  let sum = 0;
  let squares = 0;
  let pairs = 0;
  for (let i = 0; i < out.length; i++) {
    sum += out[i];
    squares += out[i] * out[i];
    if (i % 2 === 1) pairs += out[i - 1] * out[i];
  }
  const mean = sum / out.length;
  // Standard errors: 0.001 for the mean, about 0.0014 for the variance and for the pairs' mean product.
  assert.ok(Math.abs(mean) < 0.004, `mean ${mean}`);
  assert.ok(Math.abs(squares / out.length - mean * mean - 1) < 0.006, `variance ${squares / out.length - mean * mean}`);
  assert.ok(Math.abs(pairs / ((out.length - 1) / 2)) < 0.006, `mean product of pairs ${pairs / ((out.length - 1) / 2)}`);
  assert.ok(Number.isFinite(out[out.length - 1]) && out[out.length - 1] !== 0);
});

/** A state whose next draw is `x`: the output is rotl(s1·5, 7)·9, each step a bijection of uint32. */
function stateDrawing(x: number): [number, number, number, number] {
  // a⁻¹ mod 2^32 for odd a by Newton's iteration: a·a ≡ 1 mod 8, and each step doubles the bits that are right.
  const inverse = (a: number) => {
    let y = a;
    for (let i = 0; i < 4; i++) y = Math.imul(y, 2 - Math.imul(a, y));
    return y >>> 0;
  };
  const r = Math.imul(x, inverse(9)) >>> 0;
  return [1, Math.imul(((r >>> 7) | (r << 25)) >>> 0, inverse(5)) >>> 0, 2, 3];
}

test('fromState continues the stream state() saved; the extreme draws stay in range: uniform below 1, a normal from a 0 draw finite', () => {
  const r = new Rng(9);
  r.nextUint32();
  const copy = Rng.fromState(r.state());
  assert.deepEqual(copy.state(), r.state());
  assert.deepEqual([1, 2, 3, 4].map(() => copy.nextUint32()), [1, 2, 3, 4].map(() => r.nextUint32()));
  assert.equal(Rng.fromState(stateDrawing(0xffffffff)).nextUint32(), 0xffffffff);
  assert.ok(Rng.fromState(stateDrawing(0xffffffff)).uniform() < 1);
  assert.equal(Rng.fromState(stateDrawing(0xffffffff)).int(3), 2);
  // A first uniform of 0 would be ln 0: it is drawn again.
  assert.equal(Rng.fromState(stateDrawing(0)).nextUint32(), 0);
  const normals = Rng.fromState(stateDrawing(0)).fillNormal(new Float32Array(2));
  assert.ok(normals.every(Number.isFinite), `${normals}`);
});
