import { tf } from './tf';

/** A kernel tfjs-backend-wasm registered, which ganfleet's kernels build on or stand in for. */
export function wasmKernel(name: string): tf.KernelConfig {
  const k = tf.getKernel(name, 'wasm');
  if (!k) throw new Error(`the wasm backend lacks ${name}`);
  return k;
}

/**
 * Puts `kernelFunc` in place of the wasm backend's `name` and returns the
 * original, which may stay the fallback: its wasm binding is still set up
 * when the backend starts, because the replacement carries its setupFunc.
 */
export function replaceWasmKernel(name: string, kernelFunc: tf.KernelFunc): tf.KernelConfig {
  const original = wasmKernel(name);
  tf.unregisterKernel(name, 'wasm');
  tf.registerKernel({ kernelName: name, backendName: 'wasm', setupFunc: original.setupFunc, kernelFunc });
  return original;
}
