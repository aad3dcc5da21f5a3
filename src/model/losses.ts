import { tf } from './tf';

/**
 * Binary cross-entropy on logits. The seed applies a sigmoid and Keras' BCE;
 * this is the same function written as softplus, which stays finite when the
 * discriminator saturates instead of relying on Keras' 1e-7 clipping.
 * BCE(sigmoid(l), 1) = softplus(-l);  BCE(sigmoid(l), 0) = softplus(l).
 */
export function bceWithLogits(logits: tf.Tensor, target: 0 | 1): tf.Scalar {
  return tf.mean(tf.softplus(target === 1 ? tf.neg(logits) : logits));
}
