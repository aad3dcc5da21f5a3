import { GanfleetError } from '../util/errors';
import { tf, Tensors } from './tf';

export interface TensorSpec {
  name: string;
  shape: readonly number[];
  /**
   * False for state that travels with the network but is not learnt by
   * gradient (BatchNorm moving statistics): its gradient is always zero, so
   * Adam leaves it alone, and the coordinator sets it from the workers' batch
   * statistics instead.
   */
  trainable?: boolean;
}

export interface LayoutEntry extends TensorSpec {
  trainable: boolean;
  offset: number;
  size: number;
}

/**
 * A network's parameters travel, average and optimise as ONE flat
 * Float32Array; the layout names the tensors inside it. Gradients use the
 * same layout, so averaging and Adam never need to know the architecture.
 */
export class ParameterLayout {
  readonly entries: readonly LayoutEntry[];
  readonly size: number;

  constructor(specs: readonly TensorSpec[]) {
    let offset = 0;
    this.entries = specs.map((s) => {
      const size = s.shape.reduce((a, b) => a * b, 1);
      const e = { name: s.name, shape: s.shape, trainable: s.trainable ?? true, offset, size };
      offset += size;
      return e;
    });
    this.size = offset;
  }

  /** Uploads a flat vector as one tensor per entry. The caller owns (disposes) them. */
  toTensors(flat: Float32Array): Tensors {
    this.checkLength(flat);
    const out: Tensors = {};
    for (const e of this.entries) {
      out[e.name] = tf.tensor(flat.subarray(e.offset, e.offset + e.size), e.shape as number[], 'float32');
    }
    return out;
  }

  /**
   * The tensors in layout order, each flat, so a whole gradient can be read
   * as one run of values. Non-trainable entries may be left out of a
   * gradient: they are zero.
   */
  ordered(tensors: Tensors): tf.Tensor1D[] {
    return this.entries.map((e) => {
      const t = tensors[e.name];
      if (!t && !e.trainable) return tf.zeros([e.size]);
      if (!t) throw new GanfleetError('LAYOUT_UNKNOWN_TENSOR', `missing tensor ${e.name}`);
      return tf.reshape(t, [e.size]);
    });
  }

  /** The entries the workers' batch statistics update, in the order those statistics travel. */
  get statistics(): readonly LayoutEntry[] {
    return this.entries.filter((e) => !e.trainable);
  }

  checkLength(flat: Float32Array): void {
    if (flat.length !== this.size) {
      throw new GanfleetError('LAYOUT_SIZE_MISMATCH', `expected ${this.size} parameters, got ${flat.length}`);
    }
  }
}

export function disposeTensors(t: Tensors): void {
  for (const k of Object.keys(t)) t[k].dispose();
}
