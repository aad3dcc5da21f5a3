/**
 * Data-parallel shard planning: the coordinator shuffles the training set once
 * with a seeded Rng and splits the permutation into one shard per worker.
 * With no shards held, the split is the permutation cut into contiguous
 * chunks, so every coordinator restart with the same seed and workers
 * reproduces the same plan. At a join or a leave, workers keep what they hold
 * where their new size allows, so only the images that change hands move.
 */
import { GanfleetError } from '../util/errors';
import { IMAGE_SIZE } from './image';

export interface ShardAssignment {
  workerId: string;
  /** Indices into the training set. */
  indices: Uint32Array;
  /** How many of `indices`, from the first, the worker already holds (the start of its previous shard). */
  kept: number;
}

/**
 * A worker's place in the plan: its images, and the seed its batches and
 * noise are drawn with. Both stay with the slot while the worker does, and a
 * checkpoint keeps them, so that a resumed run can hand them to its workers.
 */
export interface ShardSlot {
  indices: Uint32Array;
  seed: number;
}

/**
 * Splits `permutation` into `workerIds.length` shards whose sizes differ by
 * at most 1 (the first `total % n` workers get the extra index). A worker in
 * `held` keeps the start of its shard, as much as its new size allows; the
 * rest of each shard comes from the pool of indices nobody keeps (the shards
 * of workers that left, the ends cut from the others), in permutation order.
 * If `permutation` is a permutation and the held shards are disjoint parts
 * of it, the shards partition it: every index lands in exactly one shard.
 */
export function planShards(permutation: Uint32Array, workerIds: readonly string[], held: ReadonlyMap<string, Uint32Array> = new Map()): ShardAssignment[] {
  const n = workerIds.length;
  if (n === 0) throw new GanfleetError('SHARD_NO_WORKERS', 'cannot plan shards for zero workers');
  const seen = new Set<string>();
  for (const id of workerIds) {
    if (seen.has(id)) throw new GanfleetError('SHARD_DUPLICATE_WORKER', `worker id "${id}" appears twice`);
    seen.add(id);
  }
  const total = permutation.length;
  const sizes = workerIds.map((_, w) => Math.floor(total / n) + (w < total % n ? 1 : 0));
  const keeps = workerIds.map((id, w) => held.get(id)?.subarray(0, sizes[w]) ?? new Uint32Array(0));
  const kept = markDisjoint(total, workerIds.map((id, w) => [`worker "${id}"`, keeps[w]]));
  let next = 0;
  return workerIds.map((workerId, w) => {
    const indices = new Uint32Array(sizes[w]);
    indices.set(keeps[w]);
    for (let i = keeps[w].length; i < sizes[w]; i++) {
      while (kept[permutation[next]]) next++;
      indices[i] = permutation[next++];
    }
    return { workerId, indices, kept: keeps[w].length };
  });
}

/**
 * Marks the images that `parts` hold, each part named by its owner; throws
 * SHARD_HELD_INVALID where an index lies outside the `total` images or two
 * parts hold the same one.
 */
export function markDisjoint(total: number, parts: readonly (readonly [string, Uint32Array])[]): Uint8Array {
  const marked = new Uint8Array(total);
  for (const [owner, indices] of parts) {
    for (const idx of indices) {
      if (idx >= total || marked[idx]) throw new GanfleetError('SHARD_HELD_INVALID', `${owner} holds image ${idx}, ${idx >= total ? 'outside the training set' : 'held twice'}`);
      marked[idx] = 1;
    }
  }
  return marked;
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
