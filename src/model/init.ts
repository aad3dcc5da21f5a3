import { Rng } from '../util/rng';
import { ParameterLayout } from './layout';

/**
 * Keras' default initialisers, chosen by the entry's role (the last part of
 * its name): glorot-uniform kernels, with fans counted over the receptive
 * field as Keras does for conv kernels; BatchNorm gammas and moving variances
 * at one; everything else (biases, betas, moving means) at zero.
 */
export function kerasInit(layout: ParameterLayout, rng: Rng): Float32Array {
  const flat = new Float32Array(layout.size);
  for (const e of layout.entries) {
    const v = flat.subarray(e.offset, e.offset + e.size);
    const role = e.name.slice(e.name.lastIndexOf('/') + 1);
    if (role === 'kernel') {
      const receptive = e.shape.slice(0, -2).reduce((a, b) => a * b, 1);
      const fanIn = e.shape[e.shape.length - 2] * receptive;
      const fanOut = e.shape[e.shape.length - 1] * receptive;
      const limit = Math.sqrt(6 / (fanIn + fanOut));
      for (let i = 0; i < v.length; i++) v[i] = (rng.uniform() * 2 - 1) * limit;
    } else if (role === 'gamma' || role === 'moving_variance') {
      v.fill(1);
    }
  }
  return flat;
}
