import { GanfleetError } from '../util/errors';

export interface GradientContribution {
  /** Mean gradient over this worker's own batch. */
  gradients: Float32Array;
  /** Batch size that mean was taken over. */
  samples: number;
}

/**
 * Sample-weighted mean of the workers' gradients, written into `out`.
 * Each contribution is a per-batch mean, so weighting by batch size yields
 * the gradient of the mean loss over the union of all batches.
 * Sums in float64 per element and divides once, so a single contribution
 * comes back bit-exact. Reads every input at index i before writing out[i],
 * so `out` may alias one of the inputs.
 */
export function averageGradients(
  contributions: readonly GradientContribution[],
  out: Float32Array,
): Float32Array {
  if (contributions.length === 0) {
    throw new GanfleetError('AGGREGATE_EMPTY', 'no gradient contributions');
  }
  let total = 0;
  for (const c of contributions) {
    if (c.gradients.length !== out.length) {
      throw new GanfleetError(
        'AGGREGATE_SIZE_MISMATCH',
        `gradient length ${c.gradients.length}, expected ${out.length}`,
      );
    }
    if (!(c.samples >= 0) || !Number.isFinite(c.samples)) {
      throw new GanfleetError('AGGREGATE_BAD_SAMPLES', `invalid sample count ${c.samples}`);
    }
    total += c.samples;
  }
  if (total === 0) {
    throw new GanfleetError('AGGREGATE_EMPTY', 'contributions hold zero samples in total');
  }
  const n = contributions.length;
  for (let i = 0; i < out.length; i++) {
    let acc = 0;
    for (let k = 0; k < n; k++) {
      const c = contributions[k];
      acc += c.gradients[i] * c.samples;
    }
    out[i] = acc / total;
  }
  return out;
}
