import { GanModel, StepOutput, readStep } from './gan';
import { ParameterLayout } from './layout';
import { discriminatorLoss, discriminatorShare, generatorLoss, meanScore } from './losses';
import { scoped, tf, Tensors } from './tf';

/**
 * The same two steps as GanModel's, by tf.grads over the plain forward pass
 * (D's as its two halves, each the gradient of its batch's share of the loss).
 * This is the definition the fast hand-written steps are tested against.
 */
export function autodiffDiscriminatorStep(
  model: GanModel,
  g: Tensors,
  d: Tensors,
  real: tf.Tensor2D,
  z: tf.Tensor2D,
): StepOutput {
  return scoped(() => {
    const fake = model.generate(g, z, true);
    const share = (x: tf.Tensor2D, target: 0 | 1) => gradientOf(model.discriminatorLayout, d, (dp) => discriminatorShare(model.loss, model.discriminate(dp, x), target));
    const loss = discriminatorLoss(model.loss, model.discriminate(d, real), model.discriminate(d, fake));
    const pReal = meanScore(model.loss, model.discriminate(d, real));
    const pFake = meanScore(model.loss, model.discriminate(d, fake));
    return readStep([...share(real, 1), ...share(fake, 0)], [loss, pReal, pFake]);
  });
}

export function autodiffGeneratorStep(model: GanModel, g: Tensors, d: Tensors, z: tf.Tensor2D): StepOutput {
  return scoped(() => {
    const loss = (gp: Tensors) => generatorLoss(model.loss, model.discriminate(d, model.generate(gp, z, true)));
    const grads = gradientOf(model.generatorLayout, g, loss);
    const pFake = meanScore(model.loss, model.discriminate(d, model.generate(g, z, true)));
    return readStep(grads, [loss(g), pFake]);
  });
}

/** d loss / d parameters, flat, in layout order (zero for non-trainable entries). */
export function gradientOf(layout: ParameterLayout, params: Tensors, loss: (p: Tensors) => tf.Scalar): tf.Tensor1D[] {
  const names = layout.entries.filter((e) => e.trainable).map((e) => e.name);
  const f = (...xs: tf.Tensor[]) => loss({ ...params, ...Object.fromEntries(names.map((n, i) => [n, xs[i]])) });
  const grads = tf.grads(f)(names.map((n) => params[n]));
  return layout.ordered(Object.fromEntries(names.map((n, i) => [n, grads[i]])));
}
