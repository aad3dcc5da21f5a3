import type { DiscriminatorUpdates } from '../model';
import { GanfleetError } from '../util/errors';
import { NativeAddon, nativeAddon } from '../util/native';
import { scaleAdd } from './aggregate';

export interface AdamConfig {
  learningRate: number;
  beta1: number;
  beta2: number;
  epsilon: number;
}

/**
 * Keras/tfjs defaults (tfjs-core's cpu backend epsilon is 1e-7, not Kingma's 1e-8). ε is added to the
 * bias-corrected √v̂, as PyTorch and tfjs do; Keras adds it to the uncorrected √v (README: Training semantics).
 */
export const KERAS_ADAM_DEFAULTS: AdamConfig = {
  learningRate: 1e-3,
  beta1: 0.9,
  beta2: 0.999,
  epsilon: 1e-7,
};

/**
 * Per-model defaults: the seed's MLP uses Keras' Adam(); the DCGAN uses
 * Radford et al.'s lr 2e-4 and β1 0.5 (β1 0.9 made their training oscillate).
 */
export function adamDefaults(arch: string): AdamConfig {
  return arch === 'dcgan' ? { ...KERAS_ADAM_DEFAULTS, learningRate: 2e-4, beta1: 0.5 } : KERAS_ADAM_DEFAULTS;
}

/** Checkpointable optimizer state; `m`/`v` are copies, never the live buffers. */
export interface AdamState {
  step: number;
  m: Float32Array;
  v: Float32Array;
}

/**
 * Adam over one flat parameter vector, formula-identical to tfjs-core 4.22's
 * `tf.train.adam(lr, beta1, beta2, epsilon)`:
 *   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g²
 *   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * where t is the 1-based index of the update being applied (tfjs starts
 * accBeta at beta and multiplies it by beta only *after* the update).
 * m and v are preallocated so apply() allocates nothing. The update is
 * float32 arithmetic, as tfjs' own Adam computes it: eight lanes at a time
 * with the native addon (native/adam.c), one parameter at a time here, with
 * the same bits, so a coordinator resumed with or without the addon (the
 * GPU image has none) continues the same run. The result matches
 * tf.train.adam to float32 rounding.
 */
export class Adam {
  private readonly m: Float32Array;
  private readonly v: Float32Array;
  private t = 0;
  constructor(
    readonly size: number,
    readonly config: AdamConfig,
    /** The addon's kernel, or null for the JavaScript one: the same bits either way, the addon's faster. */
    private readonly native: NativeAddon | null = nativeAddon().addon,
  ) {
    this.m = new Float32Array(size);
    this.v = new Float32Array(size);
  }

  /** Number of updates applied so far. */
  get step(): number {
    return this.t;
  }

  apply(params: Float32Array, gradients: Float32Array): void {
    if (params.length !== this.size || gradients.length !== this.size) {
      throw new GanfleetError(
        'ADAM_SIZE_MISMATCH',
        `Adam sized ${this.size} got params ${params.length}, gradients ${gradients.length}`,
      );
    }
    const { learningRate, beta1, beta2, epsilon } = this.config;
    const t = this.t + 1;
    // Bias corrections from beta^t in float64: the state is then just `step`,
    // and a restored optimizer continues bit-identically.
    const c1 = 1 - Math.pow(beta1, t);
    const c2 = 1 - Math.pow(beta2, t);
    // lr·(m/c1)/(sqrt(v/c2)+ε) with the divisions by c1 and c2 hoisted out of
    // the loop: one sqrt and one division per parameter instead of three
    // divisions (the same value up to float64 rounding, far below float32's).
    const stepSize = learningRate / c1;
    const invC2 = 1 / c2;
    const m = this.m;
    const v = this.v;
    this.t = t;
    if (this.native) return this.native.adam(params, gradients, m, v, beta1, beta2, stepSize, invC2, epsilon);
    this.update(params, gradients, m, v, stepSize, invC2);
  }

  /** The update without the addon; `stepSize` = lr / (1 - beta1^t), `invC2` = 1 / (1 - beta2^t). */
  protected update(params: Float32Array, gradients: Float32Array, m: Float32Array, v: Float32Array, stepSize: number, invC2: number): void {
    const { beta1, beta2, epsilon } = this.config;
    const g1 = 1 - beta1;
    const g2 = 1 - beta2;
    // native/adam.c's float32 arithmetic, one rounding per operation: a float64 result rounded to float32 is the
    // float32 one for +, ×, ÷ and √ of float32 operands, so both give the same bits.
    const f = Math.fround;
    const [b1, b2, gain1, gain2, step, scaleV, eps] = [f(beta1), f(beta2), f(g1), f(g2), f(stepSize), f(invC2), f(epsilon)];
    const n = params.length;
    for (let i = 0; i < n; i++) {
      const g = gradients[i];
      const mi = f(f(b1 * m[i]) + f(gain1 * g));
      const vi = f(f(b2 * v[i]) + f(f(gain2 * g) * g));
      m[i] = mi;
      v[i] = vi;
      params[i] -= f(f(step * mi) / f(f(Math.sqrt(f(vi * scaleV))) + eps));
    }
  }

  state(): AdamState {
    return { step: this.t, m: this.m.slice(), v: this.v.slice() };
  }

  /** Copies the state into preallocated arrays, allocating nothing (per-step rollback). */
  copyStateInto(target: AdamState): void {
    target.step = this.t;
    target.m.set(this.m);
    target.v.set(this.v);
  }

  restoreState(state: AdamState): void {
    if (state.m.length !== this.size || state.v.length !== this.size) {
      throw new GanfleetError('ADAM_SIZE_MISMATCH', `Adam sized ${this.size} cannot restore state of ${state.m.length}`);
    }
    this.m.set(state.m);
    this.v.set(state.v);
    this.t = state.step;
  }

}

export type { DiscriminatorUpdates };

/**
 * Per model, what trained better: the MLP the seed's two (FID 142-174 at 10,000 steps against 391-677 with
 * one); the DCGAN one, which README's quality table was measured with (47.0 at 1,000 steps against 55.2 with two).
 */
export function discriminatorUpdatesDefault(arch: string): DiscriminatorUpdates {
  return arch === 'dcgan' ? 1 : 2;
}

/**
 * Applies a D round's averaged gradient (discriminatorGradientSize) to
 * `params`. With 2 updates it comes in two halves, the real batch's share of
 * the D loss's gradient and then the generated batch's, applied as the
 * seed's two train_on_batch calls: one on the real batch's own loss (twice
 * its share), then one on the generated batch's; one round carries both
 * halves, so the second was taken at D before the first update. With 1 it is
 * their sum, the D loss's gradient, applied once. `scratch` has D's size.
 */
export function applyDiscriminatorUpdates(adam: Adam, params: Float32Array, gradient: Float32Array, updates: DiscriminatorUpdates, scratch: Float32Array): void {
  const n = params.length;
  if (gradient.length !== updates * n) {
    throw new GanfleetError('ADAM_SIZE_MISMATCH', `${updates} D update(s) of ${n} parameters got a gradient of ${gradient.length}`);
  }
  if (updates === 1) return adam.apply(params, gradient);
  for (const half of [gradient.subarray(0, n), gradient.subarray(n, 2 * n)]) {
    scaleAdd(scratch, half, 2, false);
    adam.apply(params, scratch);
  }
}
