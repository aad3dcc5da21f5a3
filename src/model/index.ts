import { GanfleetError } from '../util/errors';
import { GanModel } from './gan';
import { GanLoss, LOSSES } from './losses';
import { DcGan } from './dcgan';
import { MlpGan } from './mlp';

export const ARCHITECTURES = ['mlp', 'dcgan'] as const;

/**
 * The largest batch a step of each model is asked for; a welcome's batch
 * size sizes a worker's buffers before anything else is checked. A step of
 * more images than MNIST's 60,000 is no training anyone runs. The DCGAN's
 * bound is the wasm heap's 4 GiB: a G round at batch 1024 peaks at 2.8 GB
 * (without the native kernels), one at 2048 ran out of it.
 */
const MAX_BATCH_SIZES: Record<(typeof ARCHITECTURES)[number], number> = { mlp: 65536, dcgan: 1024 };

export function maxBatchSize(arch: string): number {
  return (MAX_BATCH_SIZES as Record<string, number>)[arch] ?? 0;
}

export function createModel(arch: string, loss: string = 'bce'): GanModel {
  if (!(LOSSES as readonly string[]).includes(loss)) {
    throw new GanfleetError('MODEL_UNKNOWN', `unknown loss "${loss}" (known: ${LOSSES.join(', ')})`);
  }
  switch (arch) {
    case 'mlp':
      return new MlpGan(loss as GanLoss);
    case 'dcgan':
      return new DcGan(loss as GanLoss);
    default:
      throw new GanfleetError('MODEL_UNKNOWN', `unknown model "${arch}" (known: ${ARCHITECTURES.join(', ')})`);
  }
}

export * from './gan';
export * from './layout';
export { LOSSES, GanLoss } from './losses';
