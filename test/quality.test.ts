import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { selectBackend } from '../src/backend';
import { Adam, KERAS_ADAM_DEFAULTS } from '../src/coordinator/adam';
import { writeCheckpoint } from '../src/coordinator/checkpoint';
import { encodeIdx } from '../src/data/idx';
import { loadMnist, toTanhRange } from '../src/data/mnist';
import { decodeNpy, encodeNpy } from '../src/data/npy';
import { CLASSIFIER_FILE, classifyImages, loadClassifier } from '../src/eval/classifier';
import { FeatureMoments, accuracy, evaluateImages, frechetDistance, loadReference, mnistScore } from '../src/eval/quality';
import { createModel } from '../src/model';
import { Rng } from '../src/util/rng';
import { ClassifierAdam } from '../scripts/classifier-adam';
import { tempDir } from './harness';
import { CLI } from './helpers';

test('the shipped classifier reaches 98.5% on the MNIST test set, and is the file its manifest describes', async () => {
  await selectBackend('wasm');
  const test10k = loadMnist('test');
  const weights = loadClassifier();
  const { probabilities } = await classifyImages(weights, toTanhRange(test10k.images, new Float32Array(test10k.images.length)), test10k.count);
  const acc = accuracy(probabilities, test10k.labels, test10k.count);
  assert.ok(acc >= 0.985, `test accuracy ${acc}`);
  const manifest = JSON.parse(fs.readFileSync(CLASSIFIER_FILE.replace(/\.bin$/, '.json'), 'utf8'));
  assert.equal(crypto.createHash('sha256').update(fs.readFileSync(CLASSIFIER_FILE)).digest('hex'), manifest.sha256);
  assert.ok(Math.abs(manifest.testAccuracy - acc) < 1e-3, `manifest says ${manifest.testAccuracy}, measured ${acc}`);
});

test('FID and MNIST score: real training images score near the test set, uniform noise far from it', async (t) => {
  await selectBackend('wasm');
  const train = loadMnist('train');
  const n = 10000;
  const reference = loadReference();
  const real = await evaluateImages(toTanhRange(train.images.subarray(0, n * 784), new Float32Array(n * 784)), n, reference);
  const rng = new Rng(3);
  const noise = await evaluateImages(Float32Array.from({ length: n * 784 }, () => rng.uniform() * 2 - 1), n, reference);
  t.diagnostic(`real train vs test: fid ${real.fid.toFixed(3)}, mnist score ${real.mnistScore.toFixed(3)}; uniform noise: fid ${noise.fid.toFixed(1)}, mnist score ${noise.mnistScore.toFixed(3)}`);
  assert.ok(real.fid < 2, `real fid ${real.fid}`);
  assert.ok(noise.fid > 50 * real.fid && noise.fid > 50, `noise fid ${noise.fid} vs real ${real.fid}`);
  assert.ok(real.mnistScore > 9, `real mnist score ${real.mnistScore}`);
  assert.ok(noise.mnistScore < 3, `noise mnist score ${noise.mnistScore}`);
  // MNIST's classes are roughly balanced (8.9% to 11.2% of the training set).
  assert.ok(real.classShares.every((s) => s > 0.08 && s < 0.13), `class shares ${real.classShares}`);
  assert.ok(Math.abs(real.classShares.reduce((a, b) => a + b, 0) - 1) < 1e-9);
});

test('evaluation computes the reference statistics again for another test set (they were kept from the first), and scores against the set it was given whatever its files become', async () => {
  await selectBackend('wasm');
  const n = 1000;
  const test = loadMnist('test');
  const dir = tempDir('small-test-set');
  fs.writeFileSync(path.join(dir, 't10k-images-idx3-ubyte'), encodeIdx([n, 28, 28], test.images.subarray(0, n * 784)));
  fs.writeFileSync(path.join(dir, 't10k-labels-idx1-ubyte'), encodeIdx([n], test.labels.subarray(0, n)));
  const images = toTanhRange(test.images.subarray(0, n * 784), new Float32Array(n * 784));
  const againstAll = await evaluateImages(images, n, loadReference());
  const small = loadReference(dir);
  // Read once, as a coordinator reads it at start: removing the files changes nothing.
  fs.rmSync(dir, { recursive: true, force: true });
  // A coordinator evaluating mid-run yields after each classifier batch (250 images), so it still answers
  // heartbeats and scrapes: here 4 times for the new reference set and 4 for the images.
  const yields: string[] = [];
  const againstThemselves = await evaluateImages(images, n, small, async (phase, done, total) => {
    yields.push(`${phase} ${done}/${total}`);
  });
  // Each says how far its phase has come (the progress line shows it), not the size of the last batch.
  assert.deepEqual(yields, [
    ...[250, 500, 750, 1000].map((done) => `classifying the test set ${done}/1000`),
    ...[250, 500, 750, 1000].map((done) => `classifying the samples ${done}/1000`),
  ]);
  assert.ok(againstThemselves.fid < 1e-3, `the same ${n} images scored ${againstThemselves.fid} against themselves`);
  assert.ok(againstAll.fid > 0.1, `${n} test images scored ${againstAll.fid} against all 10,000`);
});

test('the FID fits the Gaussians with unbiased covariances (divided by n − 1), on each side', async () => {
  await selectBackend('wasm');
  const test = loadMnist('test');
  const train = loadMnist('train');
  // Few images on each side (and a different count on each), where n and n − 1 differ by 10% and 2%.
  const [n, m] = [10, 50];
  const dir = tempDir('unbiased-test-set');
  fs.writeFileSync(path.join(dir, 't10k-images-idx3-ubyte'), encodeIdx([m, 28, 28], test.images.subarray(0, m * 784)));
  fs.writeFileSync(path.join(dir, 't10k-labels-idx1-ubyte'), encodeIdx([m], test.labels.subarray(0, m)));
  const reference = loadReference(dir);
  fs.rmSync(dir, { recursive: true, force: true });
  const images = toTanhRange(train.images.subarray(0, n * 784), new Float32Array(n * 784));
  const moments = async (x: Float32Array, count: number): Promise<FeatureMoments> => {
    const { features } = await classifyImages(reference.classifier, x, count);
    const dim = features.length / count;
    const mean = new Float64Array(dim);
    for (let i = 0; i < count; i++) for (let j = 0; j < dim; j++) mean[j] += features[i * dim + j] / count;
    const covariance = new Float64Array(dim * dim);
    for (let i = 0; i < count; i++) {
      for (let a = 0; a < dim; a++) {
        for (let b = 0; b < dim; b++) covariance[a * dim + b] += ((features[i * dim + a] - mean[a]) * (features[i * dim + b] - mean[b])) / (count - 1);
      }
    }
    return { mean, covariance, dim };
  };
  const expected = frechetDistance(await moments(images, n), await moments(toTanhRange(reference.set.images, new Float32Array(m * 784)), m));
  const { fid } = await evaluateImages(images, n, reference);
  assert.ok(Math.abs(fid - expected) < 1e-6 * expected, `fid ${fid}, from unbiased covariances ${expected}`);
});

test('a test set of one image is refused (EVAL_TOO_FEW): its covariance is not defined, and an FID against it would mean nothing', async () => {
  await selectBackend('wasm');
  const test = loadMnist('test');
  const dir = tempDir('one-image-test-set');
  fs.writeFileSync(path.join(dir, 't10k-images-idx3-ubyte'), encodeIdx([1, 28, 28], test.images.subarray(0, 784)));
  fs.writeFileSync(path.join(dir, 't10k-labels-idx1-ubyte'), encodeIdx([1], test.labels.subarray(0, 1)));
  assert.throws(() => loadReference(dir), (e: Error & { code?: string }) => e.code === 'EVAL_TOO_FEW' && /holds 1 image; an FID needs at least 2/.test(e.message));
  fs.rmSync(dir, { recursive: true, force: true });
});

test('decodeNpy refuses a cut-off file and other formats instead of returning fewer values than its shape', () => {
  const good = encodeNpy([2, 3], Float32Array.from([1, 2, 3, 4, 5, 6]));
  assert.deepEqual(Array.from(decodeNpy(good).data), [1, 2, 3, 4, 5, 6]);
  assert.throws(() => decodeNpy(good.subarray(0, good.length - 4)), /needs 24 bytes of data, the file holds 20/);
  assert.throws(() => decodeNpy(good.subarray(0, 8)), /not a \.npy file/);
  assert.throws(() => decodeNpy(good.subarray(0, 40)), /header of \d+ bytes, but the file ends at 40/);
});

/** Moments of N(mean, Q·diag(d)·Qᵀ) for a fixed rotation Q. */
function rotated(mean: number[], d: number[], angle: number): FeatureMoments {
  const n = d.length;
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  const [c, s] = [Math.cos(angle), Math.sin(angle)];
  // A rotation in the (0, 1) and (1, 2) planes: not diagonal, not block-trivial.
  const rot = (a: number, b: number, m: Float64Array) => {
    for (let k = 0; k < n; k++) {
      const [x, y] = [m[k * n + a], m[k * n + b]];
      m[k * n + a] = c * x - s * y;
      m[k * n + b] = s * x + c * y;
    }
  };
  rot(0, 1, q);
  rot(1, 2, q);
  const covariance = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < n; k++) covariance[i * n + j] += q[i * n + k] * d[k] * q[j * n + k];
  return { mean: Float64Array.from(mean), covariance, dim: n };
}

test('the Fréchet distance matches its closed form for covariances that share eigenvectors', () => {
  const a = rotated([0, 1, 2, 3], [4, 1, 0.25, 9], 0.7);
  const b = rotated([1, 1, 0, 3], [1, 1, 1, 16], 0.7);
  // |Δμ|² + Σ (√dₐ − √d_b)²
  const expected = 1 + 4 + (2 - 1) ** 2 + 0 + (0.5 - 1) ** 2 + (3 - 4) ** 2;
  assert.ok(Math.abs(frechetDistance(a, b) - expected) < 1e-9, `${frechetDistance(a, b)} vs ${expected}`);
  assert.ok(Math.abs(frechetDistance(a, a)) < 1e-9);
  assert.ok(Math.abs(frechetDistance(a, b) - frechetDistance(b, a)) < 1e-9, 'symmetric');
});

test('the MNIST score is 1 for uninformative predictions and 10 for confident, balanced ones', () => {
  const n = 50;
  assert.ok(Math.abs(mnistScore(new Float32Array(n * 10).fill(0.1), n) - 1) < 1e-6);
  const oneHot = new Float32Array(n * 10);
  for (let i = 0; i < n; i++) oneHot[i * 10 + (i % 10)] = 1;
  assert.ok(Math.abs(mnistScore(oneHot, n) - 10) < 1e-4);
  const oneClass = new Float32Array(n * 10);
  for (let i = 0; i < n; i++) oneClass[i * 10 + 3] = 1;
  assert.ok(Math.abs(mnistScore(oneClass, n) - 1) < 1e-6, 'mode collapse scores 1');
});

test('ganfleet eval prints the same FID and MNIST score for the same checkpoint and seed, and another for another seed', { timeout: 120_000 }, () => {
  const dir = tempDir('eval');
  const model = createModel('mlp');
  const p = model.init(new Rng(2));
  const adam = (n: number) => new Adam(n, KERAS_ADAM_DEFAULTS).state();
  writeCheckpoint(path.join(dir, 'checkpoints'), { step: 9, imagesTotal: 0, config: { arch: 'mlp', loss: 'bce' }, seedRng: new Rng(1).state(), nextWorker: 1, shards: [], generator: p.generator, discriminator: p.discriminator, adamGenerator: adam(p.generator.length), adamDiscriminator: adam(p.discriminator.length) }, 3);
  const run = (...seed: string[]) => spawnSync(process.execPath, [CLI, 'eval', '--checkpoint', dir, '--samples', '500', '--json', ...seed], { encoding: 'utf8' });
  const [a, b, other] = [run(), run(), run('--seed', '7')];
  assert.equal(a.status, 0, a.stderr);
  const r = JSON.parse(a.stdout);
  assert.deepEqual(JSON.parse(b.stdout), r);
  // The seed draws the noise: another seed, other samples, another score.
  assert.notEqual(JSON.parse(other.stdout).fid, r.fid, 'eval --seed 7 scored as --seed 1');
  assert.equal(r.step, 9);
  assert.equal(r.samples, 500);
  assert.ok(r.fid > 50, `an untrained G is far from MNIST (fid ${r.fid})`);
  assert.ok(r.mnistScore >= 1 && r.mnistScore <= 10);
  const bad = spawnSync(process.execPath, [CLI, 'eval', '--checkpoint', path.join(dir, 'nothing-here')], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /no such file or directory .*\[NO_CHECKPOINT\]/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('train-classifier refuses flags it cannot read before training, leaving the shipped weights as they are (--epochs abc wrote untrained weights, exit 0)', (t) => {
  const script = path.join(__dirname, '..', 'scripts', 'train-classifier.js');
  const before = fs.readFileSync(CLASSIFIER_FILE);
  const manifest = CLASSIFIER_FILE.replace(/\.bin$/, '.json');
  const manifestBefore = fs.readFileSync(manifest);
  // Should a refusal ever fail, the shipped weights are put back, not left untrained for every later test.
  t.after(() => {
    fs.writeFileSync(CLASSIFIER_FILE, before);
    fs.writeFileSync(manifest, manifestBefore);
  });
  for (const [args, said] of [
    [['--epochs', 'abc'], /--epochs must be an integer >= 1, got "abc"/],
    [['--epochs=0'], /--epochs must be an integer >= 1, got 0/],
    [['--epochs'], /Not enough arguments following: epochs/],
    [['--epoch', '2'], /Unknown argument: epoch/],
    [['--seed', '-1'], /--seed must be an integer from 0 to 4294967295, got -1/],
  ] as const) {
    const r = spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, said);
    assert.doesNotMatch(r.stdout, /epoch 1|wrote/);
  }
  assert.ok(fs.readFileSync(CLASSIFIER_FILE).equals(before));
});

test('train-classifier\'s Adam is the float64 one that trained the shipped classifier, not ganfleet\'s float32 one (which trains another from the same seed: 98.71%, not the shipped file)', () => {
  const config = { learningRate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 };
  const size = 4096;
  const rng = new Rng(3);
  const [shipped, float32] = [new Float32Array(size).fill(0.25), new Float32Array(size).fill(0.25)];
  const expected = new Float32Array(size).fill(0.25);
  const [m, v] = [new Float32Array(size), new Float32Array(size)];
  const adam = new ClassifierAdam(size, config);
  const adam32 = new Adam(size, config, null);
  for (let t = 1; t <= 5; t++) {
    const gradients = rng.fillNormal(new Float32Array(size)).map((g, i) => g * 10 ** -(i % 6));
    adam.apply(shipped, gradients);
    adam32.apply(float32, gradients);
    // Keras' update in float64 (ganfleet's Adam before it took the native kernel's float32 bits), m and v stored as float32.
    for (let i = 0; i < size; i++) {
      const g = gradients[i];
      const mi = 0.9 * m[i] + (1 - 0.9) * g;
      const vi = 0.999 * v[i] + (1 - 0.999) * g * g;
      [m[i], v[i]] = [mi, vi];
      expected[i] -= ((1e-3 / (1 - 0.9 ** t)) * mi) / (Math.sqrt(vi * (1 / (1 - 0.999 ** t))) + 1e-7);
    }
  }
  assert.deepEqual(shipped, expected);
  assert.notDeepEqual(float32, expected);
});
