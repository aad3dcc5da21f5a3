/**
 * Trains the MNIST classifier behind `ganfleet eval` (src/eval/classifier.ts)
 * on the 60k training images and writes its weights to assets/. Seeded:
 * rerunning it with the defaults reproduces the shipped file, bit for bit.
 *
 *   npm run train-classifier [-- --epochs 6 --seed 1 --backend wasm]
 */
import crypto from 'node:crypto';
import path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { selectBackend } from '../src/backend';
import { BACKEND_CHOICES } from '../src/backend-choice';
import { loadMnist, toTanhRange } from '../src/data/mnist';
import { IMAGE_SIZE } from '../src/data/image';
import { CLASSES, CLASSIFIER_FILE, CLASSIFIER_LAYOUT, classify, classifyImages, initClassifier } from '../src/eval/classifier';
import { accuracy } from '../src/eval/quality';
import { gradientOf } from '../src/model/autodiff';
import { readValues, scoped, tf } from '../src/model/tf';
import { MAX_SEED, integerInRange } from '../src/util/flags';
import { Rng } from '../src/util/rng';
import { makeDirectory, writeFileAtomic } from '../src/util/write';
import { ClassifierAdam } from './classifier-adam';

/** A flag it misread (--epochs abc ran no epoch) would replace the shipped weights with untrained ones. */
function parseFlags() {
  return yargs(hideBin(process.argv))
    .scriptName('npm run train-classifier --')
    .usage('$0 [--epochs N] [--seed N] [--backend wasm]\n\nTrains the classifier behind ganfleet eval and --eval-every, and replaces assets/mnist-classifier.bin and .json.')
    .option('epochs', { type: 'number', default: 6, describe: 'Passes over the 60,000 training images (>= 1)' })
    .option('seed', { type: 'number', default: 1, describe: `Seed for the initial weights and the batch order (0 to ${MAX_SEED})` })
    .option('backend', { choices: BACKEND_CHOICES, default: 'wasm' as const, describe: 'TensorFlow.js backend (the shipped weights: wasm)' })
    .nargs({ epochs: 1, seed: 1, backend: 1 })
    .check((a) => {
      integerInRange('epochs', a.epochs);
      integerInRange('seed', a.seed, 0, MAX_SEED);
      if (a._.length > 0) throw new Error(`Unexpected argument: ${a._.join(' ')}`);
      return true;
    })
    .strict()
    .version(false)
    .parseSync();
}

async function main(): Promise<void> {
  const { epochs, seed, backend } = parseFlags();
  const batch = 128;
  // The shipped weights' products ran on XNNPACK; ganfleet's native kernels sum in another order, and so
  // train another classifier (and another FID scale) from the same seed.
  process.env.GANFLEET_NATIVE = '0';
  await selectBackend(backend);
  const train = loadMnist('train');
  const test = loadMnist('test');
  const trainX = toTanhRange(train.images);
  const testX = toTanhRange(test.images);
  const rng = new Rng(seed);
  const weights = initClassifier(rng);
  const adam = new ClassifierAdam(weights.length, { learningRate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 });
  const x = new Float32Array(batch * IMAGE_SIZE);
  const y = new Float32Array(batch * CLASSES);
  let testAccuracy = 0;
  for (let epoch = 1; epoch <= epochs; epoch++) {
    const order = rng.permutation(train.count);
    const t0 = performance.now();
    let lossSum = 0;
    const steps = Math.floor(train.count / batch);
    for (let s = 0; s < steps; s++) {
      y.fill(0);
      for (let i = 0; i < batch; i++) {
        const k = order[s * batch + i];
        x.set(trainX.subarray(k * IMAGE_SIZE, (k + 1) * IMAGE_SIZE), i * IMAGE_SIZE);
        y[i * CLASSES + train.labels[k]] = 1;
      }
      const { grads, loss } = scoped(() => {
        const p = CLASSIFIER_LAYOUT.toTensors(weights);
        const xs = tf.tensor2d(x, [batch, IMAGE_SIZE]);
        const ys = tf.tensor2d(y, [batch, CLASSES]);
        let lossValue = 0;
        const g = gradientOf(CLASSIFIER_LAYOUT, p, (q) => {
          const l = tf.losses.softmaxCrossEntropy(ys, classify(q, xs).logits) as tf.Scalar;
          lossValue = l.dataSync()[0];
          return l;
        });
        return { grads: readValues(g), loss: lossValue };
      });
      adam.apply(weights, grads);
      lossSum += loss;
    }
    const { probabilities } = await classifyImages(weights, testX, test.count);
    testAccuracy = accuracy(probabilities, test.labels, test.count);
    console.log(`epoch ${epoch}/${epochs}: train loss ${(lossSum / steps).toFixed(4)}, test accuracy ${(100 * testAccuracy).toFixed(2)}% (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  }
  const bytes = Buffer.from(weights.buffer, weights.byteOffset, weights.byteLength);
  makeDirectory(path.dirname(CLASSIFIER_FILE));
  // Whole or not at all: a torn file would stop every evaluation (EVAL_NO_CLASSIFIER), or, cut at the right size, score with garbage.
  writeFileAtomic(CLASSIFIER_FILE, [bytes]);
  const info = { parameters: weights.length, epochs, batch, seed, optimizer: 'adam lr 1e-3', testAccuracy, sha256: crypto.createHash('sha256').update(bytes).digest('hex') };
  writeFileAtomic(CLASSIFIER_FILE.replace(/\.bin$/, '.json'), [Buffer.from(JSON.stringify(info, null, 2) + '\n')]);
  console.log(`wrote ${CLASSIFIER_FILE} (${bytes.length} bytes)`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
