import { GanLoss } from './choices';
import { tf } from './tf';

/**
 * The two GAN objectives on D's raw output o (no sigmoid in the network):
 *
 * bce (the seed): D: ½[BCE(σ(o_real), 1) + BCE(σ(o_fake), 0)], G: BCE(σ(o_fake), 1)
 *   (non-saturating). Written as softplus, which equals Keras' BCE on a sigmoid
 *   but stays finite when D saturates instead of relying on 1e-7 clipping:
 *   BCE(σ(o), 1) = softplus(-o), BCE(σ(o), 0) = softplus(o).
 * lsgan (Mao et al. 2017) with the 0-1 coding a = 0 (fake), b = 1 (real),
 *   c = 1 (what G wants D to say): D: ½[mean (o_real − 1)² + mean o_fake²],
 *   G: ½ mean (o_fake − 1)². With b − c = 0 and b − a = 1 this is not the
 *   Pearson χ² setting of the paper's theory (b − c = 1, b − a = 2), but the
 *   coding its experiments and most implementations use.
 *
 * Both D losses average a real and a fake batch of equal size with weight ½ each.
 */
export function discriminatorLoss(loss: GanLoss, real: tf.Tensor, fake: tf.Tensor): tf.Scalar {
  return tf.tidy(() => tf.add(discriminatorShare(loss, real, 1), discriminatorShare(loss, fake, 0)));
}

/** One batch's term of the D loss: half its own mean loss against `target` (1 real, 0 fake). */
export function discriminatorShare(loss: GanLoss, out: tf.Tensor, target: 0 | 1): tf.Scalar {
  return tf.tidy(() => tf.div(targetLoss(loss, out, target), 2));
}

export function generatorLoss(loss: GanLoss, fake: tf.Tensor): tf.Scalar {
  return tf.tidy(() => (loss === 'bce' ? targetLoss(loss, fake, 1) : tf.div(targetLoss(loss, fake, 1), 2)));
}

/**
 * d loss / d output for the hand-written backward passes, over `rows`
 * outputs with target `y` (1 real, 0 fake): for D the batch's own mean loss
 * (twice its discriminatorShare), for G generatorLoss.
 *   bce:  D (σ(o) − y) / rows          G (σ(o) − 1) / rows
 *   lsgan: D (o − y) · 2 / rows        G (o − 1) / rows
 */
export function outputGradient(loss: GanLoss, out: tf.Tensor, y: tf.Tensor | number, of: 'discriminator' | 'generator'): tf.Tensor {
  return tf.tidy(() => {
    const rows = out.shape[0] ?? 1;
    if (loss === 'bce') return tf.div(tf.sub(tf.sigmoid(out), y), rows);
    return tf.div(tf.sub(out, y), of === 'discriminator' ? rows / 2 : rows);
  });
}

/**
 * What the logs, metrics and status page call D(x) and D(G(z)): the mean
 * probability D assigns "real" under bce, D's mean raw score under lsgan
 * (trained toward 1 for real and 0 for fake, but not bounded to [0, 1]).
 */
export function meanScore(loss: GanLoss, out: tf.Tensor): tf.Scalar {
  return tf.tidy(() => tf.mean(loss === 'bce' ? tf.sigmoid(out) : out));
}

/** Mean per-sample loss of outputs against one target: BCE on logits, or the squared error. */
function targetLoss(loss: GanLoss, out: tf.Tensor, target: 0 | 1): tf.Scalar {
  if (loss === 'bce') return tf.mean(tf.softplus(target === 1 ? tf.neg(out) : out));
  return tf.mean(tf.square(tf.sub(out, target)));
}
