import { GanfleetError } from '../util/errors';
import { ParameterLayout } from './layout';

/** Keras BatchNormalization's defaults, which the book's models use. */
export const BN_EPSILON = 1e-3;
export const BN_MOMENTUM = 0.99;

export interface BatchStatistics {
  /** Per BN layer, the batch mean then the (biased) batch variance, in layout.statistics order. */
  statistics: Float32Array;
  samples: number;
}

export function statisticsSize(layout: ParameterLayout): number {
  return layout.statistics.reduce((a, e) => a + e.size, 0);
}

/** True if any variance in `statistics` (each BN layer's means, then its variances) is below zero. */
export function negativeVariance(layout: ParameterLayout, statistics: Float32Array): boolean {
  let at = 0;
  for (const e of layout.statistics) {
    if (e.name.endsWith('/moving_variance') && statistics.subarray(at, at + e.size).some((v) => v < 0)) return true;
    at += e.size;
  }
  return false;
}

/**
 * Folds the workers' batch statistics into the moving statistics stored in
 * `params` (Keras: moving = momentum·moving + (1 − momentum)·batch).
 *
 * The batch statistics are first pooled into those of the union of the
 * workers' batches: mean = Σ wₖ·meanₖ, variance = Σ wₖ·(varₖ + meanₖ²) − mean²,
 * wₖ the sample share. For G's first BatchNorm that is what one process
 * would measure on the whole global batch. Later BatchNorms see inputs that
 * earlier ones normalised per worker, so theirs still depend (slightly) on
 * how the global batch was split.
 */
export function updateMovingStatistics(layout: ParameterLayout, params: Float32Array, parts: readonly BatchStatistics[], momentum: number): void {
  const entries = layout.statistics;
  const size = statisticsSize(layout);
  if (size === 0) return;
  const total = parts.reduce((a, p) => a + p.samples, 0);
  for (const p of parts) {
    if (p.statistics.length !== size) {
      throw new GanfleetError('AGGREGATE_SIZE_MISMATCH', `batch statistics of length ${p.statistics.length}, expected ${size}`);
    }
  }
  if (!(total > 0)) throw new GanfleetError('AGGREGATE_EMPTY', 'no samples behind the batch statistics');
  let at = 0;
  for (let e = 0; e < entries.length; e += 2) {
    const meanEntry = entries[e];
    const varEntry = entries[e + 1];
    if (!meanEntry.name.endsWith('/moving_mean') || !varEntry?.name.endsWith('/moving_variance') || meanEntry.size !== varEntry.size) {
      throw new GanfleetError('LAYOUT_UNKNOWN_TENSOR', `statistics entries must come as moving_mean, moving_variance pairs (at ${meanEntry.name})`);
    }
    const c = meanEntry.size;
    for (let i = 0; i < c; i++) {
      let mean = 0;
      let square = 0;
      for (const p of parts) {
        const w = p.samples / total;
        const m = p.statistics[at + i];
        mean += w * m;
        square += w * (p.statistics[at + c + i] + m * m);
      }
      const variance = Math.max(0, square - mean * mean);
      const mi = meanEntry.offset + i;
      const vi = varEntry.offset + i;
      params[mi] = momentum * params[mi] + (1 - momentum) * mean;
      params[vi] = momentum * params[vi] + (1 - momentum) * variance;
    }
    at += 2 * c;
  }
}
