import { Rng } from '../util/rng';
import { IMAGE_SIZE } from '../data/image';
import { GanModel, GanParameters, GeneratorPass, RealPart, ResultMemory, StepOutput, readStep } from './gan';
import { sequentialGenerator } from './export';
import { kerasInit } from './init';
import { LEAKY_ALPHA, leakyBackward } from './leaky';
import { matMulAT, matMulBT, sumRows } from './linalg';
import { ParameterLayout } from './layout';
import { GanLoss } from './choices';
import { discriminatorLoss, generatorLoss, meanScore, outputGradient } from './losses';
import { scoped, tf, Tensors } from './tf';

const Z_DIM = 100;
const HIDDEN = 128;

/**
 * The seed's MLP GAN ("GANs in Action", ch. 3):
 *   G: z(100) → Dense(128) → LeakyReLU(0.01) → Dense(784) → tanh
 *   D: x(784) → Dense(128) → LeakyReLU(0.01) → Dense(1) → sigmoid
 *
 * The steps are backpropagated by hand rather than by autodiff: the
 * products go through linalg.ts, which picks the fast form of a transposed
 * product for the backend, and G's forward pass serves both rounds.
 * test/gradients.test.ts holds these against tf.grads of the same forward pass.
 */
export class MlpGan implements GanModel {
  readonly arch = 'mlp';

  constructor(readonly loss: GanLoss = 'bce') {}

  readonly zDim = Z_DIM;
  readonly generatorLayout = new ParameterLayout([
    { name: 'g/dense1/kernel', shape: [Z_DIM, HIDDEN] },
    { name: 'g/dense1/bias', shape: [HIDDEN] },
    { name: 'g/dense2/kernel', shape: [HIDDEN, IMAGE_SIZE] },
    { name: 'g/dense2/bias', shape: [IMAGE_SIZE] },
  ]);
  readonly discriminatorLayout = new ParameterLayout([
    { name: 'd/dense1/kernel', shape: [IMAGE_SIZE, HIDDEN] },
    { name: 'd/dense1/bias', shape: [HIDDEN] },
    { name: 'd/dense2/kernel', shape: [HIDDEN, 1] },
    { name: 'd/dense2/bias', shape: [1] },
  ]);

  init(rng: Rng): GanParameters {
    return {
      generator: kerasInit(this.generatorLayout, rng),
      discriminator: kerasInit(this.discriminatorLayout, rng),
    };
  }

  generatorTopology(): { topology: object; weightNames: Record<string, string> } {
    const denseLayer = (name: string, units: number, activation: string, extra: object = {}) => ({
      class_name: 'Dense',
      config: { name, units, activation, use_bias: true, trainable: true, dtype: 'float32', ...extra },
    });
    return sequentialGenerator(
      [
        denseLayer('dense1', HIDDEN, 'linear', { batch_input_shape: [null, Z_DIM] }),
        { class_name: 'LeakyReLU', config: { name: 'leaky1', alpha: LEAKY_ALPHA, trainable: true, dtype: 'float32' } },
        denseLayer('dense2', IMAGE_SIZE, 'tanh'),
        { class_name: 'Reshape', config: { name: 'image', target_shape: [28, 28, 1], trainable: true, dtype: 'float32' } },
      ],
      this.generatorLayout,
    );
  }

  generate(g: Tensors, z: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => tanh(dense(dense(z, g, 'g/dense1', true), g, 'g/dense2', false)));
  }

  forwardGenerator(g: Tensors, z: tf.Tensor2D): GeneratorPass {
    const hidden = tf.tidy(() => dense(z, g, 'g/dense1', true));
    const fake = tf.tidy(() => tanh(dense(hidden, g, 'g/dense2', false)));
    return { z, fake, saved: { hidden } };
  }

  discriminate(d: Tensors, x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => dense(dense(x, d, 'd/dense1', true), d, 'd/dense2', false));
  }

  discriminatorStep(d: Tensors, real: tf.Tensor2D, pass: GeneratorPass, realPart?: RealPart, memory?: ResultMemory): StepOutput {
    return scoped(() => {
      const realHalf = realPart ?? this.discriminatorHalf(d, real, 1);
      const fakeHalf = this.discriminatorHalf(d, pass.fake, 0);
      const loss = discriminatorLoss(this.loss, realHalf.logits, fakeHalf.logits);
      const gradients = [...this.discriminatorLayout.ordered(realHalf.gradients), ...this.discriminatorLayout.ordered(fakeHalf.gradients)];
      return readStep(gradients, [loss, meanScore(this.loss, realHalf.logits), meanScore(this.loss, fakeHalf.logits)], undefined, memory);
    });
  }

  discriminatorRealPart(d: Tensors, real: tf.Tensor2D): RealPart {
    return tf.tidy(() => this.discriminatorHalf(d, real, 1) as unknown as tf.TensorContainer) as unknown as RealPart;
  }

  /**
   * D's forward and backward pass on one batch x, all with target y (1 real,
   * 0 fake): its share of the D loss's gradient, which averages a real and a
   * fake batch (so half of this batch's own loss's gradient).
   */
  private discriminatorHalf(d: Tensors, x: tf.Tensor2D, y: 0 | 1): RealPart {
    const h = dense(x, d, 'd/dense1', true);
    const logits = dense(h, d, 'd/dense2', false);
    const dLogits = tf.div(outputGradient(this.loss, logits, y, 'discriminator'), 2) as tf.Tensor2D;
    const dH = hiddenGradient(dLogits, h, d);
    const gradients: Tensors = {
      'd/dense1/kernel': matMulAT(x, dH),
      'd/dense1/bias': sumRows(dH),
      'd/dense2/kernel': matMulAT(h, dLogits),
      'd/dense2/bias': sumRows(dLogits),
    };
    return { gradients, logits };
  }

  generatorStep(g: Tensors, d: Tensors, pass: GeneratorPass, memory?: ResultMemory): StepOutput {
    return scoped(() => {
      const { z, fake } = pass;
      const a1 = pass.saved.hidden;
      const h = dense(fake, d, 'd/dense1', true);
      const logits = dense(h, d, 'd/dense2', false);
      const loss = generatorLoss(this.loss, logits);
      const dLogits = outputGradient(this.loss, logits, 1, 'generator');
      // Through D to its input (D's own gradients are not needed here)...
      const dH = hiddenGradient(dLogits, h, d);
      const dFake = matMulBT(dH, d['d/dense1/kernel']);
      // ...then tanh and G's two layers.
      const dPre2 = tf.mul(dFake, tf.sub(1, tf.square(fake)));
      const grads: Tensors = {
        'g/dense2/kernel': matMulAT(a1, dPre2),
        'g/dense2/bias': sumRows(dPre2),
      };
      const dPre1 = leakyBackward(matMulBT(dPre2, g['g/dense2/kernel']), a1);
      grads['g/dense1/kernel'] = matMulAT(z, dPre1);
      grads['g/dense1/bias'] = sumRows(dPre1);
      return readStep(this.generatorLayout.ordered(grads), [loss, meanScore(this.loss, logits)], undefined, memory);
    });
  }
}

/** x·W + b, with the LeakyReLU fused in when `leaky`. */
function dense(x: tf.Tensor2D, p: Tensors, layer: string, leaky: boolean): tf.Tensor2D {
  return tf.fused.matMul({
    a: x,
    b: p[`${layer}/kernel`] as tf.Tensor2D,
    bias: p[`${layer}/bias`],
    activation: leaky ? 'leakyrelu' : 'linear',
    leakyreluAlpha: LEAKY_ALPHA,
  }) as tf.Tensor2D;
}

/**
 * tanh as 2·sigmoid(2x) − 1: the same function, but wasm's Tanh kernel is
 * scalar and ~4× slower than its Sigmoid on a 128×784 batch.
 */
function tanh(x: tf.Tensor): tf.Tensor2D {
  return tf.tidy(() => tf.sub(tf.mul(tf.sigmoid(tf.mul(x, 2)), 2), 1)) as tf.Tensor2D;
}

/** d loss / d (D's hidden pre-activation), from d loss / d logits. */
function hiddenGradient(dLogits: tf.Tensor, h: tf.Tensor, d: Tensors): tf.Tensor2D {
  return leakyBackward(matMulBT(dLogits as tf.Tensor2D, d['d/dense2/kernel']), h);
}
