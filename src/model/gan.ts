import { Rng } from '../util/rng';
import { ParameterLayout, disposeTensors } from './layout';
import { GanLoss } from './choices';
import { readValues, tf, Tensors } from './tf';

/** What one worker returns for one round: the mean gradient over its batch and the batch's statistics. */
export interface StepOutput {
  gradients: Float32Array;
  /** Mean loss over the batch (the D loss averages the real and the fake half). */
  loss: number;
  /** D(x) on the real batch (losses.ts meanScore); only the discriminator step has it. */
  dReal?: number;
  /** D(G(z)) on the generated batch. */
  dFake: number;
  /**
   * G's BatchNorm batch statistics (layout.statistics order), with the G
   * gradients of a model that has them; the coordinator pools them into G's
   * moving statistics.
   */
  statistics?: Float32Array;
}

export interface GanParameters {
  generator: Float32Array;
  discriminator: Float32Array;
}

/**
 * A GAN architecture as pure math: parameters in, gradients out. It knows
 * nothing of workers or sockets; the worker feeds it uploaded tensors, the
 * coordinator uses `generate` for sample grids.
 */
export interface GanModel {
  readonly arch: string;
  readonly loss: GanLoss;
  readonly zDim: number;
  /**
   * The most noise vectors `generate` should get at once when many images
   * are drawn (sampling, evaluation); absent: no limit. On wasm a large
   * batch grows the heap for good (it never shrinks): DCGAN's transposed
   * convolutions hold n·14·14×576 floats, 500 images a 0.6 GB heap.
   */
  readonly generateBatch?: number;
  readonly generatorLayout: ParameterLayout;
  readonly discriminatorLayout: ParameterLayout;

  init(rng: Rng): GanParameters;

  /**
   * G(z): N×784 images in tanh range. BatchNorm, where G has it, uses the
   * moving statistics unless `training` (then the batch's).
   */
  generate(g: Tensors, z: tf.Tensor2D, training?: boolean): tf.Tensor2D;
  /** D(x) as logits, N×1 (the sigmoid lives in the loss). */
  discriminate(d: Tensors, x: tf.Tensor2D): tf.Tensor2D;

  /**
   * G as a Keras/TensorFlow.js layers topology (model.json's modelTopology),
   * and the manifest name of each generator layout entry, so the trained G
   * loads with tf.loadLayersModel without ganfleet.
   */
  generatorTopology(): { topology: object; weightNames: Record<string, string> };

  /**
   * G's forward pass on z, keeping what its backward pass needs. G does not
   * change between the D and the G round of a step, so one pass serves both.
   * The caller owns the tensors (disposeGeneratorPass).
   */
  forwardGenerator(g: Tensors, z: tf.Tensor2D): GeneratorPass;
  /**
   * Gradient of the D loss (real labelled 1, G(z) labelled 0) w.r.t. D's
   * parameters, in two halves (discriminatorGradientSize): the real batch's
   * share, then the generated batch's. They sum to the D loss's gradient;
   * each is half its own batch's loss's gradient, so that the coordinator can
   * also apply them as the seed's two updates (real, then fake). With
   * `realPart` (from discriminatorRealPart on the same D and real batch) only
   * the fake half is computed here.
   */
  discriminatorStep(d: Tensors, real: tf.Tensor2D, pass: GeneratorPass, realPart?: RealPart, memory?: ResultMemory): StepOutput;
  /**
   * The real batch's share of the D step. It needs only D and the real
   * batch, not G, so a worker computes it while it waits for the step's G.
   * Absent where D couples the two halves (BatchNorm over real and fake
   * together, as in the DCGAN). The caller owns the tensors (disposeTensors).
   */
  discriminatorRealPart?(d: Tensors, real: tf.Tensor2D): RealPart;
  /** Gradient of the non-saturating G loss (G(z) labelled 1) w.r.t. G's parameters. */
  generatorStep(g: Tensors, d: Tensors, pass: GeneratorPass, memory?: ResultMemory): StepOutput;
}

/**
 * Memory a caller lends the steps of one kind (D or G) for their results, so
 * that they do not need fresh memory each time. A StepOutput read into it is
 * valid until the next step given the same memory.
 */
export interface ResultMemory {
  values?: Float32Array;
}

/** How many updates a step makes of D: the seed's two (one per half of the D step's gradient), or one (their sum). */
export type DiscriminatorUpdates = 1 | 2;

/**
 * Values in a D round's gradient: D's layout once per update. Two: the real
 * batch's share and then the generated batch's (discriminatorStep). One:
 * their sum (sumDiscriminatorHalves), which is all that one update needs.
 */
export function discriminatorGradientSize(model: Pick<GanModel, 'discriminatorLayout'>, updates: DiscriminatorUpdates): number {
  return updates * model.discriminatorLayout.size;
}

/**
 * The D loss's gradient from discriminatorStep's two halves, summed in
 * float32 into the first half, which is returned (a view of `halves`).
 */
export function sumDiscriminatorHalves(halves: Float32Array): Float32Array {
  const n = halves.length / 2;
  for (let i = 0; i < n; i++) halves[i] += halves[n + i];
  return halves.subarray(0, n);
}

/** The D step's real half: D's gradients from it (already weighted for the whole step) and its logits. */
export interface RealPart {
  gradients: Tensors;
  logits: tf.Tensor2D;
}

export interface GeneratorPass {
  z: tf.Tensor2D;
  /** G(z), N×784 in tanh range. */
  fake: tf.Tensor2D;
  /** Architecture-specific activations for the backward pass. */
  saved: Tensors;
  /** G's BatchNorm batch statistics on this z, flat in layout.statistics order. */
  statistics?: tf.Tensor1D;
}

export function disposeGeneratorPass(pass: GeneratorPass): void {
  pass.fake.dispose();
  disposeTensors(pass.saved);
  pass.statistics?.dispose();
}

/**
 * Reads a gradient (its parts in layout order: layout.ordered, or one flat
 * tensor) and the step's scalars back ([loss, dReal, dFake] for the D step,
 * [loss, dFake] for the G step); readValues makes it one synchronous read
 * where that is a device round trip.
 */
export function readStep(gradients: tf.Tensor[], stats: tf.Tensor[], statistics?: tf.Tensor1D, memory?: ResultMemory): StepOutput {
  const n = gradients.reduce((size, t) => size + t.size, 0);
  const m = statistics?.size ?? 0;
  const all = readValues([...gradients, ...(statistics ? [statistics] : []), ...stats], memory?.values);
  if (memory) memory.values = all;
  const s = all.subarray(n + m);
  const out: StepOutput = { gradients: all.subarray(0, n), loss: s[0], dFake: s[stats.length - 1] };
  if (stats.length === 3) out.dReal = s[1];
  if (statistics) out.statistics = all.subarray(n, n + m);
  return out;
}
