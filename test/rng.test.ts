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
