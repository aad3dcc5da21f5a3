import { test } from 'node:test';
import assert from 'node:assert/strict';
import { selectBackend } from '../src/backend';
import { loadMnist } from '../src/data/mnist';
import { IMAGE_SIZE } from '../src/data/image';
import { createModel } from '../src/model';
import { tf } from '../src/model/tf';
import { Rng } from '../src/util/rng';
import { ShardCompute } from '../src/worker/compute';

test('a worker holds a constant number of tensors across steps (no leak)', async () => {
  await selectBackend('wasm');
  const model = createModel('mlp');
  const train = loadMnist('train');
  const compute = new ShardCompute(model, 32, 2);
  compute.setShard({ images: train.images.subarray(0, 500 * IMAGE_SIZE), count: 500, seed: 5 });
  const params = model.init(new Rng(2));
  const counts: number[] = [];
  for (let step = 0; step < 6; step++) {
    // As the coordinator sends them: G before a D round, D before a G round.
    compute.updateWeights(params.generator, step === 0 ? params.discriminator : undefined);
    const d = compute.step(step, 'discriminator');
    compute.drawAhead(step + 1); // as the worker does while the coordinator steps D
    compute.updateWeights(undefined, params.discriminator);
    const g = compute.step(step, 'generator');
    compute.prepare(step + 1); // and while it steps G
    assert.ok(Number.isFinite(d.loss) && Number.isFinite(g.loss));
    assert.equal(d.samples, 32);
    counts.push(tf.memory().numTensors);
  }
  assert.deepEqual(counts, counts.map(() => counts[0]), `tensor counts per step: ${counts}`);
  compute.dispose();
});

/** An MLP worker's compute on the first `images` training images, holding both networks of `init(Rng(paramSeed))`. */
function readyCompute(batch: number, seed: number, images: number, paramSeed: number): ShardCompute {
  const model = createModel('mlp');
  const params = model.init(new Rng(paramSeed));
  const compute = new ShardCompute(model, batch, 2);
  compute.setShard({ images: loadMnist('train').images.subarray(0, images * IMAGE_SIZE), count: images, seed });
  compute.updateWeights(params.generator, params.discriminator);
  return compute;
}

test("with one D update a step, a D round's answer is the sum of the two halves that two updates take, in D's size, for either model", async () => {
  await selectBackend('wasm');
  const shard = loadMnist('train').images.subarray(0, 64 * IMAGE_SIZE);
  for (const arch of ['mlp', 'dcgan'] as const) {
    const model = createModel(arch);
    const params = model.init(new Rng(3));
    const [halves, sum] = ([2, 1] as const).map((updates) => {
      const compute = new ShardCompute(model, 8, updates);
      compute.setShard({ images: shard, count: 64, seed: 6 });
      compute.updateWeights(params.generator, params.discriminator);
      const out = compute.step(4, 'discriminator');
      const gradients = out.gradients.slice();
      compute.dispose();
      return { ...out, gradients };
    });
    const n = model.discriminatorLayout.size;
    assert.equal(halves.gradients.length, 2 * n);
    assert.equal(sum.gradients.length, n);
    const expected = halves.gradients.subarray(0, n).map((real, i) => Math.fround(real + halves.gradients[n + i]));
    assert.deepEqual(sum.gradients, expected, arch);
    assert.ok(expected.some((v, i) => v !== halves.gradients[i]), 'the fake half adds something');
    assert.deepEqual([sum.loss, sum.dReal, sum.dFake], [halves.loss, halves.dReal, halves.dFake], arch);
  }
});

test('weights whose memory is reused once handed over (a mailed frame) are copied where the backend keeps arrays', async () => {
  for (const backend of ['cpu', 'wasm'] as const) {
    await selectBackend(backend);
    const model = createModel('mlp');
    const params = model.init(new Rng(4));
    const shard = loadMnist('train').images.subarray(0, 300 * IMAGE_SIZE);
    const reference = new ShardCompute(model, 16, 2);
    reference.setShard({ images: shard, count: 300, seed: 9 });
    reference.updateWeights(params.generator, params.discriminator);
    const mailed = new ShardCompute(model, 16, 2);
    mailed.setShard({ images: shard, count: 300, seed: 9 });
    const g = params.generator.slice();
    const d = params.discriminator.slice();
    mailed.updateWeights(g, d, true);
    // The next frame lands in the same memory.
    g.fill(0.5);
    d.fill(-0.5);
    const want = reference.step(0, 'discriminator');
    const got = mailed.step(0, 'discriminator');
    assert.deepEqual(got.gradients, want.gradients, backend);
    reference.dispose();
    mailed.dispose();
  }
});

test('a D round whose real half was computed ahead (prepare) returns the same bits as one that was not (a worker that just joined)', async () => {
  await selectBackend('wasm');
  const ahead = readyCompute(32, 11, 300, 3);
  const late = readyCompute(32, 11, 300, 3);
  ahead.prepare(0);
  const a = ahead.step(0, 'discriminator');
  const l = late.step(0, 'discriminator');
  assert.deepEqual(a.gradients, l.gradients, 'D gradients');
  assert.deepEqual([a.loss, a.dReal, a.dFake], [l.loss, l.dReal, l.dFake], 'loss, D(x), D(G(z))');
  ahead.dispose();
  late.dispose();
});

test('what a step draws depends only on the seed, the step and the shard: a worker that starts at step 3 computes what one that ran from step 0 does', async () => {
  for (const backend of ['cpu', 'wasm'] as const) {
    await selectBackend(backend);
    const params = createModel('mlp').init(new Rng(6));
    const all = readyCompute(16, 31, 200, 6);
    const late = readyCompute(16, 31, 200, 6);
    const other = readyCompute(16, 32, 200, 6);
    // As the coordinator sends them (both networks to a worker that holds none, then only the one that changed),
    // so that a worker that ran along has computed D's real half ahead, and one that starts late has not.
    const rounds = (c: ShardCompute, step: number, first = false) => {
      c.updateWeights(params.generator, first ? params.discriminator : undefined);
      const d = Array.from(c.step(step, 'discriminator').gradients);
      c.readyAfter(step, 'discriminator');
      c.updateWeights(undefined, params.discriminator);
      const g = Array.from(c.step(step, 'generator').gradients);
      c.readyAfter(step, 'generator');
      return { d, g };
    };
    for (let step = 0; step < 3; step++) rounds(all, step, step === 0);
    const want = rounds(all, 3);
    assert.deepEqual(rounds(late, 3, true), want, backend);
    assert.notDeepEqual(rounds(other, 3, true).d, want.d, `${backend}: another seed drew the same`);
    for (const c of [all, late, other]) c.dispose();
  }
});

test('drawing the next step ahead, during the G round, keeps every draw and result the same', async () => {
  await selectBackend('cpu');
  const model = createModel('mlp');
  const params = model.init(new Rng(4));
  const ahead = readyCompute(16, 21, 200, 4);
  const plain = readyCompute(16, 21, 200, 4);
  for (let step = 0; step < 3; step++) {
    const dA = ahead.step(step, 'discriminator');
    ahead.drawAhead(step + 1);
    const gA = ahead.step(step, 'generator');
    const dP = plain.step(step, 'discriminator');
    const gP = plain.step(step, 'generator');
    // The G round still sees this step's noise, not the one drawn ahead.
    assert.equal(gA.dFake, dA.dFake);
    assert.deepEqual([dA.loss, dA.dReal, gA.loss], [dP.loss, dP.dReal, gP.loss], `step ${step}`);
    assert.deepEqual(Array.from(gA.gradients), Array.from(gP.gradients), `step ${step} G gradients`);
    for (const c of [ahead, plain]) {
      params.generator[step] += 0.01; // the coordinator's update, the same for both
      c.updateWeights(params.generator, params.discriminator);
    }
  }
  ahead.dispose();
  plain.dispose();
});

test('on wasm each round kind reads its results into its own reused memory: a G step leaves the D results alone', async () => {
  await selectBackend('wasm');
  const compute = readyCompute(16, 9, 100, 2);
  const d0 = compute.step(0, 'discriminator');
  const kept = d0.gradients.slice();
  const g0 = compute.step(0, 'generator');
  assert.notEqual(g0.gradients.buffer, d0.gradients.buffer);
  assert.deepEqual(d0.gradients, kept, 'the G step wrote into the D results');
  const d1 = compute.step(1, 'discriminator');
  assert.equal(d1.gradients.buffer, d0.gradients.buffer, 'the next D step reuses the D memory');
  assert.equal(compute.step(1, 'generator').gradients.buffer, g0.gradients.buffer);
  compute.dispose();
});

test('the G round reuses the D round noise of the same step, and a new step draws new noise', async () => {
  await selectBackend('cpu');
  const compute = readyCompute(16, 9, 100, 2);
  const d0 = compute.step(0, 'discriminator');
  const g0 = compute.step(0, 'generator');
  // Same weights and same noise: D(G(z)) seen by both rounds is identical.
  assert.equal(g0.dFake, d0.dFake);
  const g0again = compute.step(0, 'generator');
  assert.equal(g0again.dFake, g0.dFake);
  compute.step(1, 'discriminator');
  assert.notEqual(compute.step(1, 'generator').dFake, g0.dFake);
  compute.dispose();
});

test('weights that arrive within a step replace what was computed with the old ones: the step computes as on a worker that held the new ones all along', async () => {
  await selectBackend('wasm');
  const next = createModel('mlp').init(new Rng(9));
  for (const phase of ['discriminator', 'generator'] as const) {
    const changed = readyCompute(16, 11, 200, 3);
    changed.prepare(0); // D's real half, with the old D
    changed.step(0, phase); // G's pass, with the old G
    changed.updateWeights(next.generator, next.discriminator);
    const got = changed.step(0, phase);
    const fresh = readyCompute(16, 11, 200, 3);
    fresh.updateWeights(next.generator, next.discriminator);
    const want = fresh.step(0, phase);
    assert.deepEqual(Array.from(got.gradients), Array.from(want.gradients), `${phase} gradients`);
    assert.deepEqual([got.loss, got.dReal, got.dFake], [want.loss, want.dReal, want.dFake], `${phase} loss, D(x), D(G(z))`);
    changed.dispose();
    fresh.dispose();
  }
});

test('a new shard within a step (a rebalance) is drawn from at once, for this step and the one drawn ahead, as on a worker that held it all along', async () => {
  await selectBackend('wasm');
  const other = { images: loadMnist('train').images.subarray(200 * IMAGE_SIZE, 400 * IMAGE_SIZE), count: 200, seed: 12 };
  const moved = readyCompute(16, 11, 200, 3);
  moved.prepare(0);
  moved.step(0, 'discriminator');
  moved.readyAfter(0, 'discriminator'); // step 1 drawn ahead, from the old shard
  moved.setShard(other);
  const fresh = readyCompute(16, 11, 200, 3);
  fresh.setShard(other);
  for (const step of [0, 1]) {
    const got = Array.from(moved.step(step, 'discriminator').gradients);
    assert.deepEqual(got, Array.from(fresh.step(step, 'discriminator').gradients), `step ${step}`);
  }
  moved.dispose();
  fresh.dispose();
});

test("every image of the shard is drawn, its last one too: with two, a batch of one sees both within 20 steps", async () => {
  await selectBackend('wasm');
  const model = createModel('mlp');
  const params = model.init(new Rng(4));
  const compute = new ShardCompute(model, 1, 2);
  // A black image and a white one: D(x) tells which was drawn.
  compute.setShard({ images: Uint8Array.from([...new Uint8Array(IMAGE_SIZE), ...new Uint8Array(IMAGE_SIZE).fill(255)]), count: 2, seed: 8 });
  compute.updateWeights(params.generator, params.discriminator);
  const seen = new Set<number>();
  for (let step = 0; step < 20; step++) seen.add(compute.step(step, 'discriminator').dReal!);
  assert.equal(seen.size, 2, `D(x) took ${[...seen].join(', ')}`);
  compute.dispose();
});

test('a worker refuses to compute without a shard or weights', () => {
  const compute = new ShardCompute(createModel('mlp'), 8, 2);
  assert.throws(() => compute.step(0, 'discriminator'), /before receiving a shard/);
  compute.setShard({ images: new Uint8Array(IMAGE_SIZE), count: 1, seed: 1 });
  assert.throws(() => compute.step(0, 'discriminator'), /before receiving both networks/);
  assert.throws(() => compute.setShard({ images: new Uint8Array(10), count: 1, seed: 1 }), /a shard of 1 images that keeps 0 of the 1 held has 10 new bytes/);
  // Too many bytes are refused too: the images past `count` would never be drawn, and the rest may be misaligned.
  assert.throws(() => compute.setShard({ images: new Uint8Array(2 * IMAGE_SIZE), count: 1, seed: 1 }), /a shard of 1 images that keeps 0 of the 1 held has 1568 new bytes/);
  assert.throws(() => compute.setShard({ images: new Uint8Array(IMAGE_SIZE), count: 3, keep: 2, seed: 1 }), /keeps 2 of the 1 held/);
});

test('a shard of no images is refused, not held to draw batches from later', () => {
  const compute = new ShardCompute(createModel('mlp'), 8, 2);
  assert.throws(() => compute.setShard({ images: new Uint8Array(0), count: 0, seed: 1 }), { code: 'WORKER_BAD_SHARD', message: /a shard of 0 images/ });
  compute.setShard({ images: new Uint8Array(IMAGE_SIZE), count: 1, seed: 1 });
  assert.throws(() => compute.setShard({ images: new Uint8Array(0), count: 0, keep: 0, seed: 1 }), { code: 'WORKER_BAD_SHARD' });
  compute.dispose();
});

test('a worker holding one network only (its first weights carried just G, or just D) refuses the step by name, for either network missing', () => {
  const model = createModel('mlp');
  const params = model.init(new Rng(2));
  for (const [g, d] of [[params.generator, undefined], [undefined, params.discriminator]] as const) {
    const compute = new ShardCompute(model, 8, 2);
    compute.setShard({ images: new Uint8Array(IMAGE_SIZE), count: 1, seed: 1 });
    compute.updateWeights(g, d);
    for (const phase of ['discriminator', 'generator'] as const) assert.throws(() => compute.step(0, phase), { code: 'WORKER_NO_WEIGHTS', message: /before receiving both networks/ });
    compute.dispose();
  }
});

test('a new shard keeps the start of the one held and appends what was sent, or cuts it short', () => {
  const image = (i: number) => new Uint8Array(IMAGE_SIZE).fill(i);
  const concat = (...parts: Uint8Array[]) => Uint8Array.from(parts.flatMap((p) => [...p]));
  const compute = new ShardCompute(createModel('mlp'), 8, 2);
  const held = () => (compute as unknown as { shard: Uint8Array; shardCount: number });
  compute.setShard({ images: concat(image(1), image(2), image(3)), count: 3, seed: 1 });
  compute.setShard({ images: concat(image(7), image(8)), count: 4, keep: 2, seed: 1 });
  assert.equal(held().shardCount, 4);
  assert.deepEqual(held().shard, concat(image(1), image(2), image(7), image(8)));
  compute.setShard({ images: new Uint8Array(0), count: 1, keep: 1, seed: 1 });
  assert.deepEqual(held().shard, image(1));
  compute.dispose();
});
