import { tf } from './tf';

/** The parts of tfjs-backend-wasm's BackendWasm this kernel uses. */
interface WasmBackend {
  makeOutput(shape: number[], dtype: 'float32'): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array;
  disposeData(dataId: object): void;
}

/**
 * tfjs-backend-wasm 4.22 has no Conv2DBackpropFilter kernel, so no conv
 * layer (conv2d's filter gradient, conv2dTranspose's too) could train on
 * wasm. Its Conv3DBackpropFilterV2 would serve on a depth-1 volume, but it
 * is wrong for strides above 1 (test/wasm-kernels.test.ts shows it), and
 * DCGAN strides by 2. So this kernel lowers the gradient to one matrix
 * product: dW[k, o] = Σ_m P[k, m] · dy[m, o], where m runs over (image,
 * output row, output column), k over (filter row, filter column, input
 * channel), and P (im2col) holds the input pixel each tap saw, zero in the
 * padding. P is written straight into the wasm heap; the product is the
 * backend's own BatchMatMul (XNNPACK).
 */
export function registerWasmKernels(): void {
  if (tf.getKernel('Conv2DBackpropFilter', 'wasm')) return;
  const batchMatMul = tf.getKernel('BatchMatMul', 'wasm');
  if (!batchMatMul) throw new Error('the wasm backend lacks BatchMatMul: cannot provide Conv2DBackpropFilter');
  tf.registerKernel({
    kernelName: 'Conv2DBackpropFilter',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
      const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as {
        strides: [number, number] | number;
        pad: 'same' | 'valid' | number;
        dataFormat: 'NHWC' | 'NCHW';
        dimRoundingMode?: 'floor' | 'round' | 'ceil';
        filterShape: [number, number, number, number];
      };
      if (dataFormat !== 'NHWC') throw new Error(`Conv2DBackpropFilter on wasm supports NHWC only, got ${dataFormat}`);
      const conv = tf.backend_util.computeConv2DInfo(x.shape as [number, number, number, number], filterShape, strides, 1, pad, dimRoundingMode);
      const { batchSize: n, inHeight: h, inWidth: w, inChannels: c, outHeight: oh, outWidth: ow, outChannels: co } = conv;
      const { strideHeight: sh, strideWidth: sw, filterHeight: fh, filterWidth: fw } = conv;
      const { top, left } = conv.padInfo;
      const wasm = backend as unknown as WasmBackend;
      const taps = fh * fw * c;
      const positions = n * oh * ow;
      const patches = wasm.makeOutput([1, taps, positions], 'float32');
      // Views after the allocation: it may have grown (and so replaced) the heap.
      const p = wasm.typedArrayFromHeap(patches);
      const xs = wasm.typedArrayFromHeap(x);
      for (let kh = 0; kh < fh; kh++) {
        for (let kw = 0; kw < fw; kw++) {
          for (let ci = 0; ci < c; ci++) {
            let at = ((kh * fw + kw) * c + ci) * positions;
            for (let b = 0; b < n; b++) {
              for (let y = 0; y < oh; y++) {
                const iy = y * sh + kh - top;
                const rowOk = iy >= 0 && iy < h;
                const rowBase = (b * h + iy) * w;
                for (let xo = 0; xo < ow; xo++) {
                  const ix = xo * sw + kw - left;
                  p[at++] = rowOk && ix >= 0 && ix < w ? xs[(rowBase + ix) * c + ci] : 0;
                }
              }
            }
          }
        }
      }
      const out = batchMatMul.kernelFunc({
        inputs: { a: patches, b: { dataId: dy.dataId, shape: [1, positions, co], dtype: dy.dtype } },
        backend,
        attrs: { transposeA: false, transposeB: false },
      }) as tf.TensorInfo;
      wasm.disposeData(patches.dataId);
      return { dataId: out.dataId, shape: filterShape, dtype: out.dtype };
    },
  });
}
