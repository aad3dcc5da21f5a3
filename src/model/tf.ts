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

/** The parts of tfjs-backend-wasm's backend that show a tensor where it lives, in the wasm heap. */
interface WasmHeap {
  dataIdMap: { has(dataId: object): boolean };
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
}

/**
 * The values of float32 `tensors`, one after another, in a new Float32Array
 * or, on wasm, in `reuse` where it has their size. On wasm each is copied
 * straight out of the heap: a concat and a dataSync cost 5× more (a 115k
 * gradient: 0.15–0.3 ms against 0.03), and fresh memory for the result
 * costs page faults (0.1–0.2 ms) that reused memory does not. Elsewhere one
 * concat and one dataSync: a GPU backend pays a device round trip per read.
 */
export function readValues(tensors: tf.Tensor[], reuse?: Float32Array): Float32Array {
  const odd = tensors.find((t) => t.dtype !== 'float32');
  if (odd) throw new TypeError(`readValues: a ${odd.dtype} tensor`);
  const heap = tf.backend() as unknown as WasmHeap;
  // A tensor made before a switch to wasm is not in its heap yet; dataSync moves it.
  if (tf.getBackend() !== 'wasm' || !tensors.every((t) => heap.dataIdMap.has(t.dataId))) {
    return scoped(() => tf.concat(tensors.map((t) => tf.reshape(t, [t.size]))).dataSync() as Float32Array);
  }
  const size = tensors.reduce((n, t) => n + t.size, 0);
  const out = reuse?.length === size ? reuse : new Float32Array(size);
  let at = 0;
  for (const t of tensors) {
    out.set(heap.typedArrayFromHeap(t), at);
    at += t.size;
  }
  return out;
}
