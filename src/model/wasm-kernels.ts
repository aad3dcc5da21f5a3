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
  if (registered) return;
  registered = true;
  registerBackpropFilter();
  registerBackpropInput();
}

let registered = false;

type Shape4D = [number, number, number, number];

/**
 * A conv's sizes from the kernel's attributes: input n×h×w×c, output
 * n×oh×ow×co, strides, filter size, the top/left padding, the taps of one
 * output pixel (fh·fw·c) and the output positions (n·oh·ow).
 */
function geometry(kernel: string, attrs: tf.NamedAttrMap | undefined, inputShape: Shape4D, filterShape: Shape4D) {
  const { strides, pad, dataFormat, dimRoundingMode } = attrs as unknown as {
    strides: [number, number] | number;
    pad: 'same' | 'valid' | number;
    dataFormat: 'NHWC' | 'NCHW';
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
  };
  if (dataFormat !== 'NHWC') throw new Error(`${kernel} on wasm supports NHWC only, got ${dataFormat}`);
  const conv = tf.backend_util.computeConv2DInfo(inputShape, filterShape, strides, 1, pad, dimRoundingMode);
  const { batchSize: n, inHeight: h, inWidth: w, inChannels: c, outHeight: oh, outWidth: ow, outChannels: co } = conv;
  const { strideHeight: sh, strideWidth: sw, filterHeight: fh, filterWidth: fw } = conv;
  return { n, h, w, c, oh, ow, co, sh, sw, fh, fw, top: conv.padInfo.top, left: conv.padInfo.left, taps: fh * fw * c, positions: n * oh * ow };
}

function wasmKernel(name: string): tf.KernelConfig {
  const k = tf.getKernel(name, 'wasm');
  if (!k) throw new Error(`the wasm backend lacks ${name}: cannot provide the conv gradient kernels`);
  return k;
}

function registerBackpropFilter(): void {
  const batchMatMul = wasmKernel('BatchMatMul');
  tf.registerKernel({
    kernelName: 'Conv2DBackpropFilter',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
      const { filterShape } = attrs as unknown as { filterShape: Shape4D };
      const { n, h, w, c, oh, ow, co, sh, sw, fh, fw, top, left, taps, positions } = geometry('Conv2DBackpropFilter', attrs, x.shape as Shape4D, filterShape);
      const wasm = backend as unknown as WasmBackend;
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

/**
 * wasm's own Conv2DBackpropInput is a direct loop: 2.9 s for DCGAN's G
 * forward pass at batch 128 (conv2dTranspose is this kernel), 90% of a
 * step. This one is a matrix product plus col2im: cols[m, k] = Σ_o dy[m, o]
 * · W[k, o] for every output position m and filter tap k = (row, column,
 * input channel), by the backend's BatchMatMul on an explicitly transposed
 * W (a transposed operand is ~10× slower on wasm); then each tap's column
 * is added into the input pixel it came from.
 */
function registerBackpropInput(): void {
  const batchMatMul = wasmKernel('BatchMatMul');
  const transpose = wasmKernel('Transpose');
  tf.unregisterKernel('Conv2DBackpropInput', 'wasm');
  tf.registerKernel({
    kernelName: 'Conv2DBackpropInput',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { dy, filter } = inputs as { dy: tf.TensorInfo; filter: tf.TensorInfo };
      const { inputShape } = attrs as unknown as { inputShape: Shape4D };
      const { n, h, w, c, oh, ow, co, sh, sw, fh, fw, top, left, taps, positions } = geometry('Conv2DBackpropInput', attrs, inputShape, filter.shape as Shape4D);
      const wasm = backend as unknown as WasmBackend;
      const filterT = transpose.kernelFunc({
        inputs: { x: { dataId: filter.dataId, shape: [taps, co], dtype: 'float32' } },
        backend,
        attrs: { perm: [1, 0] },
      }) as tf.TensorInfo;
      const cols = batchMatMul.kernelFunc({
        inputs: { a: { dataId: dy.dataId, shape: [1, positions, co], dtype: dy.dtype }, b: { dataId: filterT.dataId, shape: [1, co, taps], dtype: 'float32' } },
        backend,
        attrs: { transposeA: false, transposeB: false },
      }) as tf.TensorInfo;
      wasm.disposeData(filterT.dataId);
      const out = wasm.makeOutput([n, h, w, c], 'float32');
      const dx = wasm.typedArrayFromHeap(out);
      const cs = wasm.typedArrayFromHeap(cols);
      dx.fill(0);
      let m = 0;
      for (let b = 0; b < n; b++) {
        for (let y = 0; y < oh; y++) {
          for (let xo = 0; xo < ow; xo++, m++) {
            for (let kh = 0; kh < fh; kh++) {
              const iy = y * sh + kh - top;
              if (iy < 0 || iy >= h) continue;
              for (let kw = 0; kw < fw; kw++) {
                const ix = xo * sw + kw - left;
                if (ix < 0 || ix >= w) continue;
                const to = ((b * h + iy) * w + ix) * c;
                const from = m * taps + (kh * fw + kw) * c;
                for (let ci = 0; ci < c; ci++) dx[to + ci] += cs[from + ci];
              }
            }
          }
        }
      }
      wasm.disposeData(cols.dataId);
      return out;
    },
  });
}
