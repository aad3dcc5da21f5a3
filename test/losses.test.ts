import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { selectBackend } from '../src/backend';
import { discriminatorLoss, generatorLoss, meanScore, outputGradient } from '../src/model/losses';
import { tf } from '../src/model/tf';
import { assertClose } from './helpers';

before(async () => {
  await selectBackend('cpu');
});

const col = (xs: number[]) => tf.tensor2d(xs, [xs.length, 1]);

test('lsgan (a=0, b=c=1) on known outputs', () => {
  const real = col([1, 0.5]);
  const fake = col([0, 0.5]);
  // D: ½[mean((1−1)², (0.5−1)²) + mean(0², 0.5²)] = ½[0.125 + 0.125]
  assertClose([discriminatorLoss('lsgan', real, fake).dataSync()[0]], [0.125], 1e-7);
  // G: ½ mean((0−1)², (0.5−1)²) = ½ · 0.625
  assertClose([generatorLoss('lsgan', fake).dataSync()[0]], [0.3125], 1e-7);
  // A perfect D and a perfect G cost nothing.
  assert.equal(discriminatorLoss('lsgan', col([1, 1]), col([0, 0])).dataSync()[0], 0);
  assert.equal(generatorLoss('lsgan', col([1, 1])).dataSync()[0], 0);
  // Raw scores, not probabilities.
  assertClose([meanScore('lsgan', col([2, 0])).dataSync()[0]], [1], 1e-7);
});

test('bce on known outputs', () => {
  const ln2 = Math.log(2);
  // D(x) = D(G(z)) = ½: every term is ln 2.
  assertClose([discriminatorLoss('bce', col([0, 0]), col([0, 0])).dataSync()[0]], [ln2], 1e-6);
  // softplus(-3) and softplus(3), each half weighted.
  const expected = 0.5 * (Math.log1p(Math.exp(-3)) + Math.log1p(Math.exp(3)));
  assertClose([discriminatorLoss('bce', col([3]), col([3])).dataSync()[0]], [expected], 1e-6);
  assertClose([generatorLoss('bce', col([-3])).dataSync()[0]], [Math.log1p(Math.exp(3))], 1e-6);
  assertClose([meanScore('bce', col([0])).dataSync()[0]], [0.5], 1e-7);
  // The mean of the probabilities, not the probability of the mean logit.
  assertClose([meanScore('bce', col([0, 2])).dataSync()[0]], [(0.5 + 1 / (1 + Math.exp(-2))) / 2], 1e-7);
});

test('the hand-written output gradients are the derivatives of the losses', () => {
  const out = col([0.3, -1.2, 2.0, 0.7]); // two real rows, then two fake
  const y = col([1, 1, 0, 0]);
  for (const loss of ['bce', 'lsgan'] as const) {
    const d = tf.grad((o: tf.Tensor) => discriminatorLoss(loss, tf.slice(o, [0, 0], [2, 1]), tf.slice(o, [2, 0], [2, 1])))(out);
    assertClose(outputGradient(loss, out, y, 'discriminator').dataSync(), d.dataSync(), 1e-6, 1e-5, `${loss} D`);
    const g = tf.grad((o: tf.Tensor) => generatorLoss(loss, o))(out);
    assertClose(outputGradient(loss, out, 1, 'generator').dataSync(), g.dataSync(), 1e-6, 1e-5, `${loss} G`);
  }
});
