import { GanfleetError } from '../util/errors';
import { nativeAddon } from '../util/native';

export interface GradientContribution {
  /** Mean gradient over this worker's own batch. */
  gradients: Float32Array;
  /** Batch size that mean was taken over. */
  samples: number;
}

/**
 * The sample-weighted mean of a round's gradients, summed as they arrive so
 * that closing the round adds only the last one (in `mean`): the others were
 * added while the coordinator waited for it. Each contribution is a per-batch mean, so
 * weighting by batch size yields the gradient of the mean loss over the
 * union of all batches. The mean is Σ samples·gradients, then one scaling
 * by 1/Σ samples (float32 accumulation: relative error ~1e-7 per worker;
 * eight lanes at a time with the native addon). One contribution is copied
 * bit-exact.
 *
 * A contribution is read when added while more are expected, else when
 * `mean` is called: it must stay unchanged until then.
 */
export class GradientMean {
  private first: Float32Array | null = null;
  /** Contributions added but not yet summed into `out`: the last, which may also be the only one. */
  private pending: GradientContribution[] = [];
  private summed = 0;
  private count = 0;
  private total = 0;

  constructor(private readonly out: Float32Array) {}

  /** `moreExpected`: another contribution is awaited, so this one is summed now, while the caller waits anyway. */
  add(c: GradientContribution, moreExpected: boolean): void {
    if (c.gradients.length !== this.out.length) {
      throw new GanfleetError('AGGREGATE_SIZE_MISMATCH', `gradient length ${c.gradients.length}, expected ${this.out.length}`);
    }
    if (!(c.samples >= 0) || !Number.isFinite(c.samples)) {
      throw new GanfleetError('AGGREGATE_BAD_SAMPLES', `invalid sample count ${c.samples}`);
    }
    if (this.count === 0) this.first = c.gradients;
    this.count++;
    this.total += c.samples;
    this.pending.push(c);
    if (moreExpected) this.sumPending();
  }

  /** The mean of everything added, written into `out`; throws AGGREGATE_EMPTY when nothing (or no sample) was. */
  mean(): Float32Array {
    if (this.count === 0) throw new GanfleetError('AGGREGATE_EMPTY', 'no gradient contributions');
    if (this.total === 0) throw new GanfleetError('AGGREGATE_EMPTY', 'contributions hold zero samples in total');
    if (this.count === 1) {
      this.out.set(this.first!);
      return this.out;
    }
    this.sumPending();
    scaleAdd(this.out, this.out, 1 / this.total, false);
    return this.out;
  }

  private sumPending(): void {
    for (const c of this.pending) scaleAdd(this.out, c.gradients, c.samples, this.summed++ > 0);
    this.pending = [];
  }
}

/** out = (accumulate ? out : 0) + w·x, element by element; `out` may be `x`. */
function scaleAdd(out: Float32Array, x: Float32Array, w: number, accumulate: boolean): void {
  const native = nativeAddon().addon;
  if (native) return native.scaleAdd(out, x, w, accumulate);
  const n = out.length;
  if (accumulate) for (let i = 0; i < n; i++) out[i] += x[i] * w;
  else for (let i = 0; i < n; i++) out[i] = x[i] * w;
}

/** GradientMean over contributions that are all at hand, written into `out`, which may alias one of them. */
export function averageGradients(contributions: readonly GradientContribution[], out: Float32Array): Float32Array {
  const mean = new GradientMean(out);
  // An input that is `out` is read from a copy: summing writes `out` before the last input is read.
  contributions.forEach((c, k) => mean.add(c.gradients === out ? { ...c, gradients: c.gradients.slice() } : c, k < contributions.length - 1));
  return mean.mean();
}
