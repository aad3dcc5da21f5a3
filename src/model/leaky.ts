import { tf } from './tf';

/** LeakyReLU's slope below zero in both of the book's models. */
export const LEAKY_ALPHA = 0.01;

/**
 * Gradient through LeakyReLU, read off its output (same sign as its input):
 * dOut · step(out), step being 1 above zero and the slope elsewhere. Two
 * element-wise kernels; a comparison and a select with a broadcast scalar
 * cost three times as much on wasm.
 */
export function leakyBackward<T extends tf.Tensor>(dOut: T, out: tf.Tensor): T {
  return tf.mul(dOut, tf.step(out, LEAKY_ALPHA)) as T;
}
