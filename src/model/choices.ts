/**
 * The models and losses a run can name, and each model's batch cap. Kept
 * apart from the model code, which loads TensorFlow.js, so that the command
 * line checks its flags (and answers --help) without loading it.
 */

export const ARCHITECTURES = ['mlp', 'dcgan'] as const;

export const LOSSES = ['bce', 'lsgan'] as const;
export type GanLoss = (typeof LOSSES)[number];

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
