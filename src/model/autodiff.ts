import { GanModel, StepOutput, readStep } from './gan';
import { ParameterLayout } from './layout';
import { bceWithLogits } from './losses';
import { scoped, tf, Tensors } from './tf';

/**
 * The same two steps as GanModel's, by tf.grads over the plain forward pass.
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
    const fake = model.generate(g, z);
    const loss = (dp: Tensors) =>
      tf.div(
        tf.add(bceWithLogits(model.discriminate(dp, real), 1), bceWithLogits(model.discriminate(dp, fake), 0)),
        2,
      ) as tf.Scalar;
    const grads = gradsOf(model.discriminatorLayout, d, loss);
    const pReal = tf.mean(tf.sigmoid(model.discriminate(d, real)));
    const pFake = tf.mean(tf.sigmoid(model.discriminate(d, fake)));
    return readStep(grads, [loss(d), pReal, pFake], true);
  });
}

export function autodiffGeneratorStep(model: GanModel, g: Tensors, d: Tensors, z: tf.Tensor2D): StepOutput {
  return scoped(() => {
    const loss = (gp: Tensors) => bceWithLogits(model.discriminate(d, model.generate(gp, z)), 1);
    const grads = gradsOf(model.generatorLayout, g, loss);
    const pFake = tf.mean(tf.sigmoid(model.discriminate(d, model.generate(g, z))));
    return readStep(grads, [loss(g), pFake], false);
  });
}

function gradsOf(layout: ParameterLayout, params: Tensors, loss: (p: Tensors) => tf.Scalar): tf.Tensor1D {
  const names = layout.entries.map((e) => e.name);
  const f = (...xs: tf.Tensor[]) => loss(Object.fromEntries(names.map((n, i) => [n, xs[i]])));
  const grads = tf.grads(f)(names.map((n) => params[n]));
  return layout.concat(Object.fromEntries(names.map((n, i) => [n, grads[i]])));
}
