import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planShards, gatherImages, type ShardAssignment } from '../src/data/shards';
import { WorkerGroup } from '../src/coordinator/membership';
import { MAX_COORDINATOR_FRAME_BYTES } from '../src/protocol/messages';
import { GanfleetError } from '../src/util/errors';
import { Rng } from '../src/util/rng';

const TOTAL = 60000;
const perm = new Rng(1234).permutation(TOTAL);
const ids = (n: number) => Array.from({ length: n }, (_, i) => `w${i}`);

/** Asserts the shards partition 0..total-1 and are balanced to within 1, bigger ones first. */
function assertPartition(shards: ShardAssignment[], total: number): void {
  const seen = new Uint8Array(total);
  for (const s of shards) {
    for (const idx of s.indices) {
      assert.ok(idx < total);
      assert.equal(seen[idx], 0, `index ${idx} assigned twice`);
      seen[idx] = 1;
    }
  }
  assert.ok(seen.every((v) => v === 1), 'some index not assigned');
  const sizes = shards.map((s) => s.indices.length);
  assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1);
  const extra = total % shards.length;
  sizes.forEach((sz, w) => assert.equal(sz, Math.floor(total / shards.length) + (w < extra ? 1 : 0)));
}

test('1..8 workers over 60000 shuffled indices partition the set', () => {
  for (let n = 1; n <= 8; n++) {
    const shards = planShards(perm, ids(n));
    assert.deepEqual(shards.map((s) => s.workerId), ids(n));
    assertPartition(shards, TOTAL);
  }
});

test('uneven split: first total % n workers get the extra index', () => {
  const shards = planShards(new Rng(7).permutation(10), ids(4));
  assert.deepEqual(shards.map((s) => s.indices.length), [3, 3, 2, 2]);
  assertPartition(shards, 10);
  // More workers than indices: some shards are empty but it is still a partition.
  assertPartition(planShards(new Rng(7).permutation(3), ids(5)), 3);
});

test('with no shards held, the plan is the permutation cut in order (a restart with the same seed and workers plans the same)', () => {
  for (let n = 1; n <= 8; n++) {
    const shards = planShards(perm, ids(n));
    assert.deepEqual(Buffer.from(Uint32Array.from(shards.flatMap((s) => [...s.indices])).buffer), Buffer.from(perm.buffer));
    assert.ok(shards.every((s) => s.kept === 0));
  }
});

test('a join or a leave moves only the images that change hands, and the plan still partitions the set', () => {
  const held = (shards: ShardAssignment[]) => new Map(shards.map((s) => [s.workerId, s.indices]));
  /** Images a plan sends: what each worker does not keep. */
  const moved = (shards: ShardAssignment[]) => shards.reduce((sum, s) => sum + s.indices.length - s.kept, 0);
  for (let n = 1; n <= 8; n++) {
    const before = planShards(perm, ids(n));
    const same = planShards(perm, ids(n), held(before));
    assert.equal(moved(same), 0, 'the same workers keep everything');
    assert.deepEqual(same.map((s) => [...s.indices]), before.map((s) => [...s.indices]));

    // A join: every worker keeps the start of its shard; the newcomer gets the ends cut from the others.
    const grown = planShards(perm, [...ids(n), 'new'], held(before));
    assertPartition(grown, TOTAL);
    assert.equal(moved(grown), grown[n].indices.length, `n=${n}: only the newcomer is sent images`);
    grown.slice(0, n).forEach((s, w) => assert.deepEqual([...s.indices], [...before[w].indices.subarray(0, s.indices.length)]));

    // A leave: the others keep their whole shards and share out the leaver's.
    for (let gone = 0; gone < n && n > 1; gone++) {
      const rest = ids(n).filter((_, w) => w !== gone);
      const shrunk = planShards(perm, rest, held(before));
      assertPartition(shrunk, TOTAL);
      assert.equal(moved(shrunk), before[gone].indices.length, `n=${n}, w${gone} left: only its images move`);
      shrunk.forEach((s) => assert.equal(s.kept, held(before).get(s.workerId)!.length));
    }
  }
  // The sizes that come out of a join then a leave of another worker are still balanced.
  const three = planShards(perm, ids(3));
  const four = planShards(perm, [...ids(3), 'x'], held(three));
  const again = planShards(perm, ['w0', 'w2', 'x'], held(four));
  assertPartition(again, TOTAL);
  assert.ok(again.every((s) => s.kept === held(four).get(s.workerId)!.length), 'growing shards keep all they held');
});

test('held shards outside the training set, or held twice, are refused', () => {
  const fails = (held: Map<string, Uint32Array>, why: RegExp) =>
    assert.throws(
      () => planShards(new Rng(1).permutation(10), ['a', 'b'], held),
      (e: unknown) => e instanceof GanfleetError && e.code === 'SHARD_HELD_INVALID' && why.test(e.message),
    );
  // Image 10 of 10 is the first past the end: the error says so, not that it is held twice.
  fails(new Map([['a', Uint32Array.of(10)]]), /worker "a" holds image 10, outside the training set/);
  fails(new Map([['a', Uint32Array.of(3)], ['b', Uint32Array.of(3)]]), /worker "b" holds image 3, held twice/);
});

test('plans do not alias the permutation buffer', () => {
  const p = new Rng(3).permutation(100);
  const [s] = planShards(p, ['a']);
  p[0] ^= 1;
  assert.notEqual(s.indices[0], p[0]);
});

test('gatherImages copies the selected images contiguously', () => {
  const size = 784;
  const count = 50;
  const images = new Uint8Array(count * size);
  for (let i = 0; i < count; i++) {
    for (let j = 0; j < size; j++) images[i * size + j] = (i * 7 + j) & 0xff;
  }
  const indices = Uint32Array.of(49, 0, 17, 17);
  const out = gatherImages(images, indices);
  assert.equal(out.length, indices.length * size);
  indices.forEach((idx, k) => {
    assert.deepEqual(out.subarray(k * size, (k + 1) * size), images.subarray(idx * size, (idx + 1) * size));
  });
  // Custom image size.
  assert.deepEqual(gatherImages(Uint8Array.of(1, 2, 3, 4, 5, 6), Uint32Array.of(2, 0), 2), Uint8Array.of(5, 6, 1, 2));
  assert.equal(gatherImages(images, new Uint32Array(0)).length, 0);
  assert.throws(
    () => gatherImages(images, Uint32Array.of(count)),
    (e: unknown) => e instanceof GanfleetError && e.code === 'SHARD_INDEX_OUT_OF_RANGE',
  );
  // A buffer that ends partway through an image: that image is refused, not shipped cut short and padded with zeros.
  assert.throws(
    () => gatherImages(Uint8Array.of(1, 2, 3, 4, 5), Uint32Array.of(2), 2),
    (e: unknown) => e instanceof GanfleetError && e.code === 'SHARD_INDEX_OUT_OF_RANGE',
  );
});

test('zero or duplicate workers are rejected', () => {
  assert.throws(
    () => planShards(perm, []),
    (e: unknown) => e instanceof GanfleetError && e.code === 'SHARD_NO_WORKERS',
  );
  assert.throws(
    () => planShards(perm, ['a', 'b', 'a']),
    (e: unknown) => e instanceof GanfleetError && e.code === 'SHARD_DUPLICATE_WORKER' && e.message.includes('"a"'),
  );
});

test('every shard fits in a frame a worker accepts: a larger training set needs more workers; fewer images than workers is refused', () => {
  const group = (maxWorkers: number) =>
    new WorkerGroup({ maxWorkers, heartbeatSeconds: 5, mailbox: false }, { log: () => {}, metrics: {} as never, terms: () => ({}) as never, newSeed: () => 1, countSent: () => {}, left: () => {}, changed: () => {}, cameBackOverdue: () => {} });
  const perShard = Math.floor((MAX_COORDINATOR_FRAME_BYTES - 64 * 1024) / 784);
  assert.equal(group(64).fitToImages(60000, 2), 1, 'MNIST fits one worker');
  assert.equal(group(64).fitToImages(perShard, 1), 1);
  assert.equal(group(64).fitToImages(perShard + 1, 1), 2);
  // EMNIST ByClass, 697,932 images: 5 workers at least.
  assert.equal(group(64).fitToImages(697932, 1), 5);
  const fails = (fn: () => unknown, code: string, re: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof GanfleetError && e.code === code && re.test(e.message));
  fails(() => group(4).fitToImages(697932, 1), 'DATA_NEEDS_WORKERS', /697932 training images need at least 5 workers .* above --max-workers 4 \(local: --workers\)/);
  fails(() => group(64).fitToImages(1, 2), 'DATA_TOO_SMALL', /1 training images cannot give each of 2 workers a shard/);
});
