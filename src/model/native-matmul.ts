import { NativeAddon, nativeAddon } from '../util/native';
import { tf } from './tf';
import { replaceWasmKernel } from './wasm-registry';

/**
 * ganfleet's own matrix product for the wasm backend (native/gemm.c).
 * tfjs-backend-wasm runs its products on single-threaded XNNPACK at 128-bit
 * SIMD; the native kernel, on one thread with AVX2 FMA, runs them 3-4×
 * faster, and they are nearly all of a GAN step. It reads and writes the
 * tensors where the wasm backend keeps them, in its heap, so nothing is
 * copied. Anything it does not cover (other dtypes, PReLU/ELU, batch shapes
 * that broadcast unevenly) goes to the backend's own kernel.
 */

/** The parts of tfjs-backend-wasm's BackendWasm this kernel uses. */
interface WasmBackend {
  makeOutput(shape: number[], dtype: 'float32'): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array;
}

/** Activation codes of native/gemm.h. */
const ACTIVATIONS: Record<string, number> = { linear: 0, relu: 1, leakyrelu: 2, relu6: 3, sigmoid: 4 };

let state: { active: boolean; note: string } | null = null;
/** Products the native kernel has computed in this process (tests check it is really used). */
let products = 0;

export function nativeProductCount(): number {
  return products;
}

/**
 * Routes the wasm backend's BatchMatMul and _FusedMatMul through the native
 * kernel when it is built and the CPU has AVX2 and FMA. Call before the wasm
 * backend initialises. Returns what it did, for the backend line.
 * `--no-native` keeps XNNPACK (to compare, or to rule the kernel out).
 */
export function registerNativeMatMul(): { active: boolean; note: string } {
  if (state) return state;
  const { addon, why } = nativeAddon();
  if (!addon) return (state = { active: false, note: `native matmul ${why}; using XNNPACK` });
  override('BatchMatMul', addon);
  override('_FusedMatMul', addon);
  return (state = { active: true, note: `matmul on the native kernel (${why})` });
}

/** Whether registerNativeMatMul put the native kernel in place. */
export function nativeMatMulActive(): boolean {
  return state?.active ?? false;
}

function override(kernelName: 'BatchMatMul' | '_FusedMatMul', addon: NativeAddon): void {
  const original = replaceWasmKernel(kernelName, (args) => nativeProduct(args, addon) ?? (original.kernelFunc(args) as tf.TensorInfo));
}

/** The product on the native kernel, or null when the backend's own kernel must do it. */
function nativeProduct({ inputs, backend, attrs }: Parameters<tf.KernelFunc>[0], addon: NativeAddon): tf.TensorInfo | null {
  const { a, b, bias, preluActivationWeights } = inputs as Record<string, tf.TensorInfo | undefined>;
  const { transposeA, transposeB, activation, leakyreluAlpha } = attrs as unknown as {
    transposeA: boolean;
    transposeB: boolean;
    activation?: string;
    leakyreluAlpha?: number;
  };
  if (!a || !b || a.dtype !== 'float32' || b.dtype !== 'float32' || preluActivationWeights) return null;
  const act = ACTIVATIONS[activation ?? 'linear'];
  if (act === undefined) return null;
  const ra = a.shape.length;
  const rb = b.shape.length;
  const m = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
  const k = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
  const kb = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
  const n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  // Not k = 0: the backend's own kernel leaves such a product's output unwritten (heap garbage), where gemm writes the bias or zeros.
  if (k !== kb || m === 0 || n === 0) return null;
  const outerDims = tf.backend_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const batches = tf.util.sizeFromShape(outerDims);
  const batchA = tf.util.sizeFromShape(a.shape.slice(0, -2));
  const batchB = tf.util.sizeFromShape(b.shape.slice(0, -2));
  // Each operand is one matrix shared by every batch, or one per batch in the output's order.
  if ((batchA !== 1 && batchA !== batches) || (batchB !== 1 && batchB !== batches)) return null;
  if (bias && bias.dtype !== 'float32') return null;
  const biasLength = bias ? tf.util.sizeFromShape(bias.shape) : 0;
  if (bias && (bias.shape.length !== 1 || (biasLength !== n && biasLength !== 1))) return null;
  const wasm = backend as unknown as WasmBackend;
  const out = wasm.makeOutput([...outerDims, m, n], 'float32');
  // Views after the allocation: it may have grown (and so replaced) the heap.
  const outView = wasm.typedArrayFromHeap(out);
  const heap = new Float32Array(outView.buffer);
  const at = (t: tf.TensorInfo) => wasm.typedArrayFromHeap(t).byteOffset / 4;
  const aAt = at(a);
  const bAt = at(b);
  const cAt = outView.byteOffset / 4;
  const biasAt = bias ? at(bias) : -1;
  for (let i = 0; i < batches; i++) {
    addon.gemm(
      heap,
      m,
      n,
      k,
      aAt + (batchA === 1 ? 0 : i * m * k),
      transposeA ? 1 : 0,
      bAt + (batchB === 1 ? 0 : i * k * n),
      transposeB ? 1 : 0,
      cAt + i * m * n,
      biasAt,
      biasLength,
      act,
      leakyreluAlpha ?? 0,
    );
  }
  products += batches;
  return out;
}
