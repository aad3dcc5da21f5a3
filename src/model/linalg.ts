import { nativeMatMulActive } from './native-matmul';
import { tf } from './tf';

/**
 * The products of backprop, written once for every backend. On wasm's own
 * kernel (XNNPACK) a transposed operand is ~10× slower than transposing
 * first, and a sum over rows transposes internally; the native kernel and
 * the other backends take transposed operands at full speed, and a row sum
 * there is cheapest as a product with a row of ones.
 */
function xnnpack(): boolean {
  return tf.getBackend() === 'wasm' && !nativeMatMulActive();
}

/** aᵀ·b (a weight gradient: inputsᵀ · output gradients). */
export function matMulAT(a: tf.Tensor, b: tf.Tensor): tf.Tensor2D {
  return (xnnpack() ? tf.matMul(tf.transpose(a), b) : tf.matMul(a, b, true, false)) as tf.Tensor2D;
}

/** a·bᵀ (an input gradient: output gradients · weightsᵀ). */
export function matMulBT(a: tf.Tensor, b: tf.Tensor): tf.Tensor2D {
  return (xnnpack() ? tf.matMul(a, tf.transpose(b)) : tf.matMul(a, b, false, true)) as tf.Tensor2D;
}

/** Column sums of x (a bias gradient: the output gradients summed over the batch). */
export function sumRows(x: tf.Tensor): tf.Tensor1D {
  if (!nativeMatMulActive() || tf.getBackend() !== 'wasm') return tf.sum(x, 0);
  const [rows, columns] = x.shape as [number, number];
  return tf.reshape(tf.matMul(tf.ones([1, rows]), x), [columns]);
}
