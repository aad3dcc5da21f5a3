import { test } from 'node:test';
import assert from 'node:assert/strict';
import { averageGradients } from '../src/coordinator/aggregate';
import { HOPELESS_TRIES, Round, RoundRetries } from '../src/coordinator/round';
import { Gradients } from '../src/protocol/messages';
import { GanfleetError } from '../src/util/errors';
import { nativeAddon } from '../src/util/native';

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

test('out may alias an input after the first, with the addon and without: that input is read as it was, not as the first pass left out', () => {
  for (const native of [nativeAddon().addon, null]) {
    const b = Float32Array.of(4, 8);
    averageGradients([{ gradients: Float32Array.of(2, 4), samples: 1 }, { gradients: b, samples: 3 }], b, native);
    // (1*2 + 3*4)/4, (1*4 + 3*8)/4
    assert.deepEqual(b, Float32Array.of(3.5, 7), native ? 'native addon' : 'JavaScript');
  }
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

test("a round gives its answers in the participants' order, whatever order they arrived in, so that their sum does not depend on it", () => {
  const answer = (value: number) => ({ gradients: Float32Array.of(value), samples: 1 }) as unknown as Gradients;
  const values = [1e8, 1, -1e8];
  const sums = ['abc', 'cba', 'bca'].map((arrival) => {
    const round = new Round(0, 'discriminator', ['a', 'b', 'c']);
    for (const id of arrival) round.accept(id, answer(values['abc'.indexOf(id)]));
    assert.deepEqual(round.answers().map((g) => g.gradients[0]), values);
    return averageGradients(round.answers(), new Float32Array(1))[0];
  });
  assert.deepEqual(sums, [sums[0], sums[0], sums[0]]);
  // The order matters: summed in another order, the same answers give another mean.
  const other = averageGradients([answer(1e8), answer(-1e8), answer(1)], new Float32Array(1))[0];
  assert.notEqual(other, sums[0]);
});

test("a round's deadlines end with it: once every participant has answered or left, none fires", async () => {
  const fired: string[] = [];
  const round = new Round(0, 'generator', ['a', 'b']);
  round.after(30, () => fired.push('a'));
  round.after(30, () => fired.push('b'));
  round.accept('a', { gradients: Float32Array.of(1), samples: 1 } as unknown as Gradients);
  round.drop('b');
  await round.done;
  // Armed after it settled (a write that completes late): never set.
  round.after(1, () => fired.push('late'));
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(fired.length, 0);
  const open = new Round(1, 'discriminator', ['c']);
  open.after(1, () => fired.push('c'));
  await new Promise((r) => setTimeout(r, 40));
  assert.deepEqual(fired, ['c']);
  open.drop('c');
});

test('a round none of whose participants is left when it opens is done at once: it waits on no one', async () => {
  const round = new Round(0, 'discriminator', []);
  const settled = await Promise.race([round.done.then(() => true), new Promise((r) => setTimeout(() => r(false), 200))]);
  assert.equal(settled, true);
  assert.deepEqual(round.answers(), []);
});

test("a round takes one answer per participant: a second answer, or one from a worker it did not ask, is not taken", () => {
  const answer = (value: number) => ({ gradients: Float32Array.of(value), samples: 1 }) as unknown as Gradients;
  const round = new Round(0, 'discriminator', ['a', 'b']);
  round.accept('a', answer(1));
  round.accept('a', answer(2));
  round.accept('x', answer(3));
  assert.ok(round.isAwaiting('b'));
  assert.deepEqual([...round.received.keys()], ['a']);
  assert.deepEqual(round.answers().map((g) => g.gradients[0]), [1]);
  round.drop('b');
});

test('retries of a round are hopeless only after as many unanswered tries as returns of its overdue workers; a newer round starts the tally afresh, an older one counts for nothing', () => {
  assert.equal(HOPELESS_TRIES, 3);
  const retries = new RoundRetries();
  for (let i = 0; i < 3; i++) retries.unanswered(5);
  retries.overdueCameBack(5, 2.5);
  retries.overdueCameBack(5, 4);
  assert.equal(retries.hopeless, false, 'two returns');
  retries.overdueCameBack(5, 3);
  assert.deepEqual([retries.tries, retries.cameBack, retries.slowestSeconds, retries.hopeless], [3, 3, 4, true]);
  // A late return of an older round's worker, and its try: neither is this round's.
  retries.overdueCameBack(4, 60);
  retries.unanswered(4);
  assert.deepEqual([retries.tries, retries.cameBack, retries.slowestSeconds], [3, 3, 4]);
  // The next round has had no try yet: returns alone are not hopeless.
  for (let i = 0; i < 3; i++) retries.overdueCameBack(6, 1);
  assert.deepEqual([retries.tries, retries.cameBack, retries.slowestSeconds, retries.hopeless], [0, 3, 1, false]);
  retries.unanswered(6);
  retries.unanswered(6);
  assert.equal(retries.hopeless, false, 'two tries');
  retries.unanswered(6);
  assert.equal(retries.hopeless, true);
  // Tries alone (workers that crash) are never hopeless.
  for (let i = 0; i < 10; i++) retries.unanswered(8);
  assert.deepEqual([retries.tries, retries.cameBack, retries.hopeless], [10, 0, false]);
});
