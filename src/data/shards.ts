/**
 * Data-parallel shard planning: the coordinator shuffles the training set once
 * with a seeded Rng and cuts the permutation into one contiguous chunk per
 * worker. Because the cut depends only on (permutation, worker order), every
 * coordinator restart with the same seed and workers reproduces the same plan.
 */
import { GanfleetError } from '../util/errors';
import { IMAGE_SIZE } from './mnist';

export interface ShardAssignment {
  workerId: string;
  /** Indices into the training set. */
  indices: Uint32Array;
}

/**
 * Splits `permutation` into `workerIds.length` contiguous chunks whose sizes
 * differ by at most 1 (the first `total % n` workers get the extra index).
 * If `permutation` is a permutation, the shards partition it: every index
 * lands in exactly one shard.
 */
export function planShards(permutation: Uint32Array, workerIds: readonly string[]): ShardAssignment[] {
  const n = workerIds.length;
  if (n === 0) throw new GanfleetError('SHARD_NO_WORKERS', 'cannot plan shards for zero workers');
  const seen = new Set<string>();
  for (const id of workerIds) {
    if (seen.has(id)) throw new GanfleetError('SHARD_DUPLICATE_WORKER', `worker id "${id}" appears twice`);
    seen.add(id);
  }
  const total = permutation.length;
  const base = Math.floor(total / n);
  const extra = total % n;
  const shards: ShardAssignment[] = [];
  let start = 0;
  for (let w = 0; w < n; w++) {
    const size = base + (w < extra ? 1 : 0);
    // slice, not subarray: a plan outlives the permutation buffer it came from.
    shards.push({ workerId: workerIds[w], indices: permutation.slice(start, start + size) });
    start += size;
  }
  return shards;
}

/** Copies the selected images into one contiguous buffer (the payload sent to a worker). */
export function gatherImages(images: Uint8Array, indices: Uint32Array, imageSize = IMAGE_SIZE): Uint8Array {
  const count = Math.floor(images.length / imageSize);
  const out = new Uint8Array(indices.length * imageSize);
  for (let i = 0; i < indices.length; i++) {
    const idx = indices[i];
    // subarray clamps silently, so an out-of-range index would ship zeros.
    if (idx >= count) {
      throw new GanfleetError('SHARD_INDEX_OUT_OF_RANGE', `image index ${idx} out of range (${count} images)`);
    }
    out.set(images.subarray(idx * imageSize, (idx + 1) * imageSize), i * imageSize);
  }
  return out;
}

/** True when `b`'s indices differ from `a`'s, so a rebalance resends only changed shards. */
export function shardChanged(a: ShardAssignment | undefined, b: ShardAssignment): boolean {
  if (a === undefined || a.indices.length !== b.indices.length) return true;
  for (let i = 0; i < a.indices.length; i++) {
    if (a.indices[i] !== b.indices[i]) return true;
  }
  return false;
}
