/**
 * The one place ganfleet imports TensorFlow.js. Importing tfjs-core alone
 * registers no gradients, and the autodiff paths (the reference gradients the
 * fast paths are tested against, and conv models) need them. tfjs-core's own
 * register_all_gradients is ESM-only; the @tensorflow/tfjs bundle registers
 * them (into the process-global registry) from CommonJS, and is the same
 * package @tensorflow/tfjs-node(-gpu) loads, so one copy of tfjs-core serves both.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs';

export { tf };
export type Tensors = Record<string, tf.Tensor>;

/**
 * tf.tidy for functions that return plain data. tf.tidy walks whatever it
 * returns looking for tensors, element by element through a Float32Array
 * (~25 ms for a 100k gradient); this disposes every tensor made inside `fn`
 * and returns its result untouched.
 */
export function scoped<T>(fn: () => T): T {
  tf.engine().startScope();
  try {
    return fn();
  } finally {
    tf.engine().endScope();
  }
}
