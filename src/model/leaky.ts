import { tf } from './tf';

/** LeakyReLU's slope below zero in both of the book's models. */
export const LEAKY_ALPHA = 0.01;

/** Gradient through LeakyReLU, read off its output (same sign as its input). */
export function leakyBackward<T extends tf.Tensor>(dOut: T, out: tf.Tensor): T {
  return tf.where(tf.greater(out, 0), dOut, tf.mul(dOut, LEAKY_ALPHA)) as T;
}
