import path from 'node:path';
import { tf } from './tf';

/**
 * ganfleet's own matrix product for the wasm backend (native/gemm.c, built
 * by `npm install` when a C compiler is present). tfjs-backend-wasm runs its
 * products on single-threaded XNNPACK at 128-bit SIMD; these, on one thread
 * with AVX2 FMA, run 3-4× faster, and they are nearly all of a GAN step.
 * The kernel reads and writes the tensors where the wasm backend keeps
 * them, in its heap, so nothing is copied. Anything it does not cover (other
 * dtypes, PReLU/ELU, batch shapes that broadcast unevenly) goes to the
 * backend's own kernel.
 */
export interface NativeGemm {
  supported(): boolean;
  gemm(
    heap: Float32Array,
    m: number,
    n: number,
    k: number,
    a: number,
    transA: number,
    b: number,
    transB: number,
    c: number,
    bias: number,
    biasLength: number,
    activation: number,
    alpha: number,
  ): void;
}

/** The parts of tfjs-backend-wasm's BackendWasm this kernel uses. */
interface WasmBackend {
  makeOutput(shape: number[], dtype: 'float32'): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array;
}

/** Activation codes of native/gemm.h. */
const ACTIVATIONS: Record<string, number> = { linear: 0, relu: 1, leakyrelu: 2, relu6: 3, sigmoid: 4 };

/** Where `npm run build:native` leaves the addon, from dist/src/model/. */
const ADDON = path.join(__dirname, '..', '..', '..', 'native', 'build', 'Release', 'ganfleet_gemm.node');

let state: { active: boolean; note: string } | null = null;
/** Products the native kernel has computed in this process (tests check it is really used). */
let products = 0;

export function nativeProductCount(): number {
  return products;
}

/** The addon itself, for tests of its own argument checks; null when it is not built. */
export function loadNativeAddon(): NativeGemm | null {
  try {
    return require(ADDON) as NativeGemm;
  } catch {
    return null;
  }
}

/**
 * Routes the wasm backend's BatchMatMul and _FusedMatMul through the native
 * kernel when it is built and the CPU has AVX2 and FMA. Call before the wasm
 * backend initialises. Returns what it did, for the backend line.
 * GANFLEET_NATIVE_MATMUL=0 keeps XNNPACK (to compare, or to rule the kernel out).
 */
export function registerNativeMatMul(): { active: boolean; note: string } {
  if (state) return state;
  if (process.env.GANFLEET_NATIVE_MATMUL === '0') return (state = { active: false, note: 'native matmul off (GANFLEET_NATIVE_MATMUL=0)' });
  let addon: NativeGemm;
  try {
    addon = require(ADDON) as NativeGemm;
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' ? 'not built (npm run build:native)' : (e as Error).message.split('\n')[0];
    return (state = { active: false, note: `native matmul unavailable: ${why}; using XNNPACK` });
  }
  if (!addon.supported()) return (state = { active: false, note: 'native matmul needs AVX2 and FMA, which this CPU lacks; using XNNPACK' });
  override('BatchMatMul', addon);
  override('_FusedMatMul', addon);
  return (state = { active: true, note: 'matmul on ganfleet native kernel (AVX2/FMA)' });
}

/** Whether registerNativeMatMul put the native kernel in place. */
export function nativeMatMulActive(): boolean {
  return state?.active ?? false;
}

function override(kernelName: 'BatchMatMul' | '_FusedMatMul', addon: NativeGemm): void {
  const original = tf.getKernel(kernelName, 'wasm');
  if (!original) throw new Error(`the wasm backend lacks ${kernelName}`);
  tf.unregisterKernel(kernelName, 'wasm');
  tf.registerKernel({
    kernelName,
    backendName: 'wasm',
    // The original stays the fallback, so its wasm binding must still be set up.
    setupFunc: original.setupFunc,
    kernelFunc: (args) => nativeProduct(args, addon) ?? (original.kernelFunc(args) as tf.TensorInfo),
  });
}

/** The product on the native kernel, or null when the backend's own kernel must do it. */
function nativeProduct({ inputs, backend, attrs }: Parameters<tf.KernelFunc>[0], addon: NativeGemm): tf.TensorInfo | null {
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
  if (k !== kb || m === 0 || n === 0 || k === 0) return null;
  const outerDims = tf.backend_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const batches = size(outerDims);
  const batchA = size(a.shape.slice(0, -2));
  const batchB = size(b.shape.slice(0, -2));
  // Each operand is one matrix shared by every batch, or one per batch in the output's order.
  if ((batchA !== 1 && batchA !== batches) || (batchB !== 1 && batchB !== batches)) return null;
  if (bias && bias.dtype !== 'float32') return null;
  const biasLength = bias ? size(bias.shape) : 0;
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

function size(shape: number[]): number {
  return shape.reduce((p, d) => p * d, 1);
}
