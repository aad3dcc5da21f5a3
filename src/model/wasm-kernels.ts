import { nativeMatMulActive } from './native-matmul';
import { tf } from './tf';
import { replaceWasmKernel, wasmKernel } from './wasm-registry';

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
 * product: dW[k, o] = Σ_m P[m, k] · dy[m, o], where m runs over (image,
 * output row, output column), k over (filter row, filter column, input
 * channel), and P (im2col) holds the input pixel each tap saw, zero in the
 * padding. P is written straight into the wasm heap; the product is the
 * backend's BatchMatMul. With the native matmul (native-matmul.ts) the
 * forward Conv2D takes the same road, P · W, which is then faster than
 * XNNPACK's own convolution.
 */
export function registerWasmKernels(): void {
  if (registered) return;
  registered = true;
  registerBackpropFilter();
  registerBackpropInput();
  if (nativeMatMulActive()) registerConv2D();
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

/**
 * Both backprop kernels read dy as the n×oh×ow×co their other operand implies. tfjs checks
 * neither (conv2dTranspose's outputShape is taken as given), and a dy of another size would
 * have the product read whatever lies past it on the wasm heap.
 */
function requireDyShape(kernel: string, dy: tf.TensorInfo, g: ReturnType<typeof geometry>): void {
  const expected = [g.n, g.oh, g.ow, g.co];
  if (dy.shape.length !== 4 || dy.shape.some((d, i) => d !== expected[i])) {
    throw new Error(`${kernel}: dy has shape [${dy.shape.join(',')}], and the conv's shapes make it [${expected.join(',')}] (a conv2dTranspose outputShape that its input does not give?)`);
  }
}

function registerBackpropFilter(): void {
  const batchMatMul = wasmKernel('BatchMatMul');
  const transpose = wasmKernel('Transpose');
  tf.registerKernel({
    kernelName: 'Conv2DBackpropFilter',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
      const { filterShape } = attrs as unknown as { filterShape: Shape4D };
      const g = geometry('Conv2DBackpropFilter', attrs, x.shape as Shape4D, filterShape);
      requireDyShape('Conv2DBackpropFilter', dy, g);
      const wasm = backend as unknown as WasmBackend;
      const patches = im2col(wasm, x, g);
      const dyMatrix = { dataId: dy.dataId, shape: [1, g.positions, g.co], dtype: dy.dtype };
      // Pᵀ·dy: the native kernel takes the transposed operand as it is; XNNPACK wants it transposed first.
      const pT = nativeMatMulActive() ? patches : (transpose.kernelFunc({ inputs: { x: patches }, backend, attrs: { perm: [0, 2, 1] } }) as tf.TensorInfo);
      const out = batchMatMul.kernelFunc({
        inputs: { a: pT, b: dyMatrix },
        backend,
        attrs: { transposeA: pT === patches, transposeB: false },
      }) as tf.TensorInfo;
      if (pT !== patches) wasm.disposeData(pT.dataId);
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
  replaceWasmKernel('Conv2DBackpropInput', ({ inputs, backend, attrs }) => {
    const { dy, filter } = inputs as { dy: tf.TensorInfo; filter: tf.TensorInfo };
    const { inputShape } = attrs as unknown as { inputShape: Shape4D };
    const g = geometry('Conv2DBackpropInput', attrs, inputShape, filter.shape as Shape4D);
    requireDyShape('Conv2DBackpropInput', dy, g);
    const { n, h, w, c, oh, ow, co, sh, sw, fh, fw, top, left, taps, positions } = g;
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
  });
}

type Geometry = ReturnType<typeof geometry>;

/**
 * P (im2col) in the wasm heap, positions × taps: row m holds, for output
 * position m, the c input channels under each filter tap in (row, column)
 * order, zero where the tap falls in the padding; so each tap is one
 * contiguous copy of c values. The caller disposes it.
 */
function im2col(wasm: WasmBackend, x: tf.TensorInfo, g: Geometry): tf.TensorInfo {
  const { n, h, w, c, oh, ow, sh, sw, fh, fw, top, left, taps, positions } = g;
  const patches = wasm.makeOutput([1, positions, taps], 'float32');
  // Views after the allocation: it may have grown (and so replaced) the heap.
  const p = wasm.typedArrayFromHeap(patches);
  const xs = wasm.typedArrayFromHeap(x);
  let at = 0;
  for (let b = 0; b < n; b++) {
    for (let y = 0; y < oh; y++) {
      for (let xo = 0; xo < ow; xo++) {
        for (let kh = 0; kh < fh; kh++) {
          const iy = y * sh + kh - top;
          for (let kw = 0; kw < fw; kw++, at += c) {
            const ix = xo * sw + kw - left;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) {
              p.fill(0, at, at + c);
              continue;
            }
            const from = ((b * h + iy) * w + ix) * c;
            if (c === 1) p[at] = xs[from];
            else p.set(xs.subarray(from, from + c), at);
          }
        }
      }
    }
  }
  return patches;
}

/** y = P · W: the forward conv as one product on the native kernel (registered only where it is active). */
function registerConv2D(): void {
  const batchMatMul = wasmKernel('BatchMatMul');
  const original = replaceWasmKernel('Conv2D', (args) => {
    const { x, filter } = args.inputs as { x: tf.TensorInfo; filter: tf.TensorInfo };
    const { dilations } = args.attrs as unknown as { dilations: [number, number] | number };
    const dilated = Array.isArray(dilations) ? dilations[0] !== 1 || dilations[1] !== 1 : dilations !== 1;
    if (dilated || x.dtype !== 'float32') return original.kernelFunc(args) as tf.TensorInfo;
    const g = geometry('Conv2D', args.attrs, x.shape as Shape4D, filter.shape as Shape4D);
    const wasm = args.backend as unknown as WasmBackend;
    const patches = im2col(wasm, x, g);
    const out = batchMatMul.kernelFunc({
      inputs: { a: patches, b: { dataId: filter.dataId, shape: [1, g.taps, g.co], dtype: 'float32' } },
      backend: args.backend,
      attrs: { transposeA: false, transposeB: false },
    }) as tf.TensorInfo;
    wasm.disposeData(patches.dataId);
    return { dataId: out.dataId, shape: [g.n, g.oh, g.ow, g.co], dtype: 'float32' };
  });
}
