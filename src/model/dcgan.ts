import { Rng } from '../util/rng';
import { gradientOf } from './autodiff';
import { BN_EPSILON, BN_MOMENTUM } from './batchnorm';
import { GanModel, GanParameters, GeneratorPass, RealPart, ResultMemory, StepOutput, readStep } from './gan';
import { sequentialGenerator } from './export';
import { kerasInit } from './init';
import { LEAKY_ALPHA, leakyBackward } from './leaky';
import { matMulAT, matMulBT, sumRows } from './linalg';
import { ParameterLayout, TensorSpec } from './layout';
import { GanLoss } from './choices';
import { discriminatorLoss, discriminatorShare, generatorLoss, meanScore } from './losses';
import { scoped, tf, Tensors } from './tf';

const Z_DIM = 100;

type Image4D = tf.Tensor4D;

/**
 * The 28×28×1 DCGAN of "GANs in Action", ch. 4:
 *   G: z(100) → Dense(7·7·256) → Reshape → Conv2DTranspose(128, 3, s2) BN LReLU
 *      → Conv2DTranspose(64, 3, s1) BN LReLU → Conv2DTranspose(1, 3, s2) → tanh
 *   D: x → Conv(32, 3, s2) LReLU → Conv(64, 3, s2) BN LReLU
 *      → Conv(128, 3, s2) BN LReLU → Flatten → Dense(1) (sigmoid in the loss)
 * All convolutions pad 'same' (28 → 14 → 7 → 4 in D, 7 → 14 → 14 → 28 in G).
 *
 * BatchNorm under data parallelism is that of PyTorch DDP without SyncBN:
 * in training each worker normalises with its own batch's statistics (D sees
 * its real and its fake batch as two batches, as the book's two
 * train_on_batch calls and PyTorch's DCGAN do). G's moving statistics, which
 * the coordinator's samples, exports and evaluations use, are not learnt
 * per worker: workers return their batch statistics with the G gradients,
 * the coordinator pools them into the statistics of the union batch and
 * folds those into the moving averages (batchnorm.ts). D is only ever
 * evaluated in training, so it keeps no moving statistics.
 *
 * D's gradients are tf.grads of the forward pass; G's are tf.grads through D
 * to its input, then G's own layers by hand (generatorStep). The wasm backend
 * trains it through the Conv2DBackpropFilter kernel in wasm-kernels.ts.
 */
export class DcGan implements GanModel {
  readonly arch = 'dcgan';
  readonly zDim = Z_DIM;
  /** ~0.1 GB of wasm heap (500 at once: 0.7 GB, kept for the process's life), about as fast per image. */
  readonly generateBatch = 64;
  readonly generatorLayout = new ParameterLayout([
    { name: 'g/dense/kernel', shape: [Z_DIM, 7 * 7 * 256] },
    { name: 'g/dense/bias', shape: [7 * 7 * 256] },
    { name: 'g/deconv1/kernel', shape: [3, 3, 128, 256] },
    { name: 'g/deconv1/bias', shape: [128] },
    ...batchNormSpecs('g/bn1', 128, true),
    { name: 'g/deconv2/kernel', shape: [3, 3, 64, 128] },
    { name: 'g/deconv2/bias', shape: [64] },
    ...batchNormSpecs('g/bn2', 64, true),
    { name: 'g/deconv3/kernel', shape: [3, 3, 1, 64] },
    { name: 'g/deconv3/bias', shape: [1] },
  ]);
  readonly discriminatorLayout = new ParameterLayout([
    { name: 'd/conv1/kernel', shape: [3, 3, 1, 32] },
    { name: 'd/conv1/bias', shape: [32] },
    { name: 'd/conv2/kernel', shape: [3, 3, 32, 64] },
    { name: 'd/conv2/bias', shape: [64] },
    ...batchNormSpecs('d/bn2', 64, false),
    { name: 'd/conv3/kernel', shape: [3, 3, 64, 128] },
    { name: 'd/conv3/bias', shape: [128] },
    ...batchNormSpecs('d/bn3', 128, false),
    { name: 'd/dense/kernel', shape: [4 * 4 * 128, 1] },
    { name: 'd/dense/bias', shape: [1] },
  ]);

  constructor(readonly loss: GanLoss = 'bce') {}

  init(rng: Rng): GanParameters {
    return { generator: kerasInit(this.generatorLayout, rng), discriminator: kerasInit(this.discriminatorLayout, rng) };
  }

  generate(g: Tensors, z: tf.Tensor2D, training = false): tf.Tensor2D {
    return tf.tidy(() => this.generatorForward(g, z, training ? {} : null));
  }

  discriminate(d: Tensors, x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      const layer = (h: Image4D, n: number) =>
        leaky(batchNorm(conv(h, d, `d/conv${n}`), d, `d/bn${n}`, {}));
      let h = leaky(conv(tf.reshape(x, [-1, 28, 28, 1]), d, 'd/conv1'));
      h = layer(layer(h, 2), 3);
      return tf.add(matMul(tf.reshape(h, [-1, 4 * 4 * 128]) as tf.Tensor2D, d['d/dense/kernel'] as tf.Tensor2D), d['d/dense/bias']);
    });
  }

  forwardGenerator(g: Tensors, z: tf.Tensor2D): GeneratorPass {
    return tf.tidy(() => {
      const record: Recording = { statistics: [], saved: {} };
      const fake = this.generatorForward(g, z, { record });
      return { z, fake, saved: record.saved, statistics: tf.concat(record.statistics) as tf.Tensor1D };
    });
  }

  discriminatorStep(d: Tensors, real: tf.Tensor2D, pass: GeneratorPass, _realPart?: RealPart, memory?: ResultMemory): StepOutput {
    return scoped(() => {
      // Each half's logits leave its gradient computation by tf.keep (readAndDispose disposes them), so D runs
      // once per batch. D's BatchNorm normalises each batch by its own statistics either way.
      const logits: tf.Tensor[] = [];
      const share = (x: tf.Tensor2D, target: 0 | 1) =>
        gradientOf(this.discriminatorLayout, d, (p) => {
          const out = this.discriminate(p, x);
          logits.push(tf.keep(out));
          return discriminatorShare(this.loss, out, target);
        });
      const grads = [...share(real, 1), ...share(pass.fake, 0)];
      const [r, f] = logits;
      const kept = [discriminatorLoss(this.loss, r, f), meanScore(this.loss, r), meanScore(this.loss, f)].map((t) => tf.keep(t));
      tf.dispose(logits);
      return readAndDispose(grads, kept, undefined, memory);
    });
  }

  /**
   * Autodiff through D to its input, then G backpropagated by hand from the
   * D round's forward pass: autodiff would have to run G forward again (a
   * quarter of the step). test/gradients.test.ts holds it against tf.grads.
   */
  generatorStep(g: Tensors, d: Tensors, pass: GeneratorPass, memory?: ResultMemory): StepOutput {
    return scoped(() => {
      const s = pass.saved;
      let out: tf.Tensor[] = [];
      const dFake = tf.grad((x: tf.Tensor) => {
        const logits = this.discriminate(d, x as tf.Tensor2D);
        const loss = generatorLoss(this.loss, logits);
        out = [loss, meanScore(this.loss, logits)].map((t) => tf.keep(t));
        return loss;
      })(pass.fake);
      const grads: Tensors = {};
      const dOut = tf.reshape(tf.mul(dFake, tf.sub(1, tf.square(pass.fake))), [-1, 28, 28, 1]) as Image4D;
      let dAct = deconvBackward(dOut, s['g/bn2/act'] as Image4D, g, 'g/deconv3', 2, grads);
      dAct = deconvBackward(batchNormBackward(leakyBackward(dAct, s['g/bn2/act']), s, g, 'g/bn2', grads), s['g/bn1/act'] as Image4D, g, 'g/deconv2', 1, grads);
      const dDense = tf.reshape(deconvBackward(batchNormBackward(leakyBackward(dAct, s['g/bn1/act']), s, g, 'g/bn1', grads), s['g/dense'] as Image4D, g, 'g/deconv1', 2, grads), [-1, 7 * 7 * 256]);
      grads['g/dense/kernel'] = matMulAT(pass.z, dDense);
      grads['g/dense/bias'] = sumRows(dDense);
      return readAndDispose(this.generatorLayout.ordered(grads), out, pass.statistics, memory);
    });
  }

  generatorTopology(): { topology: object; weightNames: Record<string, string> } {
    const common = { trainable: true, dtype: 'float32' };
    const deconv = (name: string, filters: number, strides: number, activation = 'linear') => ({
      class_name: 'Conv2DTranspose',
      config: { name, filters, kernel_size: [3, 3], strides: [strides, strides], padding: 'same', data_format: 'channels_last', dilation_rate: [1, 1], activation, use_bias: true, ...common },
    });
    const bn = (name: string) => ({
      class_name: 'BatchNormalization',
      config: { name, axis: -1, momentum: BN_MOMENTUM, epsilon: BN_EPSILON, center: true, scale: true, ...common },
    });
    const lrelu = (name: string) => ({ class_name: 'LeakyReLU', config: { name, alpha: LEAKY_ALPHA, ...common } });
    return sequentialGenerator(
      [
        { class_name: 'Dense', config: { name: 'dense', units: 7 * 7 * 256, activation: 'linear', use_bias: true, batch_input_shape: [null, Z_DIM], ...common } },
        { class_name: 'Reshape', config: { name: 'reshape', target_shape: [7, 7, 256], ...common } },
        deconv('deconv1', 128, 2),
        bn('bn1'),
        lrelu('leaky1'),
        deconv('deconv2', 64, 1),
        bn('bn2'),
        lrelu('leaky2'),
        deconv('deconv3', 1, 2, 'tanh'),
      ],
      this.generatorLayout,
    );
  }

  /**
   * G(z) as N×784; `stats` as batchNorm's (collected in layout.statistics
   * order: each BN layer's mean, then variance).
   */
  private generatorForward(g: Tensors, z: tf.Tensor2D, stats: Statistics | null): tf.Tensor2D {
    const dense = tf.add(matMul(z, g['g/dense/kernel'] as tf.Tensor2D), g['g/dense/bias']);
    let h = tf.reshape(dense, [-1, 7, 7, 256]) as Image4D;
    if (stats?.record) stats.record.saved['g/dense'] = h;
    for (const [n, stride, filters] of [[1, 2, 128], [2, 1, 64]]) {
      h = leaky(batchNorm(deconv(h, g, `g/deconv${n}`, stride, filters), g, `g/bn${n}`, stats));
      if (stats?.record) stats.record.saved[`g/bn${n}/act`] = h;
    }
    return tf.reshape(tf.tanh(deconv(h, g, 'g/deconv3', 2, 1)), [-1, 28 * 28]) as tf.Tensor2D;
  }
}

/** readStep, then disposes the tf.keep'd values (kept tensors outlive every scope). */
function readAndDispose(grads: tf.Tensor[], kept: tf.Tensor[], statistics?: tf.Tensor1D, memory?: ResultMemory): StepOutput {
  try {
    return readStep(grads, kept, statistics, memory);
  } finally {
    tf.dispose(kept);
  }
}

function batchNormSpecs(layer: string, channels: number, moving: boolean): TensorSpec[] {
  const specs: TensorSpec[] = [
    { name: `${layer}/gamma`, shape: [channels] },
    { name: `${layer}/beta`, shape: [channels] },
  ];
  if (moving) {
    specs.push({ name: `${layer}/moving_mean`, shape: [channels], trainable: false });
    specs.push({ name: `${layer}/moving_variance`, shape: [channels], trainable: false });
  }
  return specs;
}

function conv(x: Image4D, p: Tensors, layer: string): Image4D {
  return tf.add(tf.conv2d(x, p[`${layer}/kernel`] as tf.Tensor4D, 2, 'same'), p[`${layer}/bias`]) as Image4D;
}

function deconv(x: Image4D, p: Tensors, layer: string, stride: number, filters: number): Image4D {
  const [n, h, w] = x.shape;
  const y = tf.conv2dTranspose(x, p[`${layer}/kernel`] as tf.Tensor4D, [n, h * stride, w * stride, filters], stride, 'same');
  return tf.add(y, p[`${layer}/bias`]) as Image4D;
}

/**
 * `stats` null: inference, on the moving statistics. Otherwise training, on
 * the batch's: under autodiff (no `record`), or in the forward pass that
 * G's hand-written backward pass starts from, which records the batch
 * statistics and what batchNormBackward needs.
 */
function batchNorm(x: Image4D, p: Tensors, layer: string, stats: Statistics | null): Image4D {
  const gamma = p[`${layer}/gamma`] as tf.Tensor1D;
  const beta = p[`${layer}/beta`] as tf.Tensor1D;
  if (!stats) return tf.batchNorm(x, p[`${layer}/moving_mean`] as tf.Tensor1D, p[`${layer}/moving_variance`] as tf.Tensor1D, beta, gamma, BN_EPSILON);
  if (!stats.record) return trainingBatchNorm(x, gamma, beta);
  const { mean, variance, invStd, xHat } = normalise(x);
  stats.record.statistics.push(mean, variance);
  Object.assign(stats.record.saved, { [`${layer}/xhat`]: xHat, [`${layer}/inv_std`]: invStd });
  return tf.add(tf.mul(xHat, gamma), beta) as Image4D;
}

/** x normalised by its batch's statistics (over N, H, W), and those statistics: one forward pass for both of batchNorm's training modes. */
function normalise(x: tf.Tensor): { mean: tf.Tensor; variance: tf.Tensor; invStd: tf.Tensor; xHat: tf.Tensor } {
  const { mean, variance } = tf.moments(x, [0, 1, 2]);
  const invStd = tf.rsqrt(tf.add(variance, BN_EPSILON));
  return { mean, variance, invStd, xHat: tf.mul(tf.sub(x, mean), invStd) };
}

/** Training mode; `record` when the pass is kept for a hand-written backward pass. */
interface Statistics {
  record?: Recording;
}

interface Recording {
  /** Each BN layer's batch mean, then variance (layout.statistics order). */
  statistics: tf.Tensor[];
  saved: Tensors;
}

/** The textbook BatchNorm backward pass (see trainingBatchNorm); fills dγ and dβ into `grads`, returns dx. */
function batchNormBackward(dy: tf.Tensor, saved: Tensors, p: Tensors, layer: string, grads: Tensors): Image4D {
  const [dx, dGamma, dBeta] = batchNormGradients(dy, saved[`${layer}/xhat`], saved[`${layer}/inv_std`], p[`${layer}/gamma`]);
  grads[`${layer}/gamma`] = dGamma;
  grads[`${layer}/beta`] = dBeta;
  return dx as Image4D;
}

function batchNormGradients(dy: tf.Tensor, xHat: tf.Tensor, invStd: tf.Tensor, gamma: tf.Tensor): tf.Tensor[] {
  const axes = [0, 1, 2];
  const dBeta = tf.sum(dy, axes);
  const dGamma = tf.sum(tf.mul(dy, xHat), axes);
  const count = dy.size / dBeta.size;
  const centred = tf.sub(tf.sub(dy, tf.div(dBeta, count)), tf.mul(xHat, tf.div(dGamma, count)));
  return [tf.mul(centred, tf.mul(gamma, invStd)), dGamma, dBeta];
}

/**
 * y = conv2dTranspose(x, W) + b backwards (as tfjs' Conv2DBackpropInput
 * gradient): dW by Conv2DBackpropFilter with the roles of x and dy swapped,
 * dx by a plain conv2d. Fills dW and db into `grads`, returns dx.
 */
function deconvBackward(dy: Image4D, x: Image4D, p: Tensors, layer: string, stride: number, grads: Tensors): Image4D {
  const kernel = p[`${layer}/kernel`] as tf.Tensor4D;
  grads[`${layer}/bias`] = tf.sum(dy, [0, 1, 2]);
  grads[`${layer}/kernel`] = tf.engine().runKernel('Conv2DBackpropFilter', { x: dy, dy: x }, {
    strides: [stride, stride],
    pad: 'same',
    dataFormat: 'NHWC',
    filterShape: kernel.shape,
  } as unknown as tf.NamedAttrMap) as tf.Tensor;
  return tf.conv2d(dy, kernel, stride, 'same');
}

/**
 * BatchNorm on the batch's own statistics, with the textbook backward pass:
 *   dx = γ·σ⁻¹·(dy − mean(dy) − x̂·mean(dy·x̂)),  dγ = Σ dy·x̂,  dβ = Σ dy
 * (means and sums over N, H, W). tf.batchNorm's own gradient tiles its
 * per-channel terms to the input's full size: a third of G's step on wasm.
 */
export const trainingBatchNorm = tf.customGrad(((x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, save: tf.GradSaveFunc) => {
  const { invStd, xHat } = normalise(x);
  save([xHat, invStd, gamma]);
  return {
    value: tf.add(tf.mul(xHat, gamma), beta),
    gradFunc: (dy: tf.Tensor, [xh, inv, g]: tf.Tensor[]) => batchNormGradients(dy, xh, inv, g),
  };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
}) as any) as unknown as (x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor) => Image4D;

/**
 * a·b whose gradients take the backend's fast transposed products
 * (linalg.ts): autodiff's own matMul gradient is ~10× slower on XNNPACK.
 */
const matMul = tf.customGrad(((a: tf.Tensor2D, b: tf.Tensor2D, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a, b),
    gradFunc: (dy: tf.Tensor2D, [sa, sb]: tf.Tensor2D[]) => [matMulBT(dy, sb), matMulAT(sa, dy)],
  };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
}) as any) as unknown as (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D;

function leaky(x: Image4D): Image4D {
  return tf.leakyRelu(x, LEAKY_ALPHA);
}
