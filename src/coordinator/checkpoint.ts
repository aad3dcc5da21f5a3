import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ShardSlot } from '../data/shards';
import { RngState } from '../util/rng';
import { GanfleetError } from '../util/errors';
import { makeDirectory, namesIn, naming, removeFile, writeFileAtomic } from '../util/write';
import { AdamState } from './adam';

/**
 * Everything the coordinator needs to continue a run: both networks and
 * Adam states exactly, the seed RNG (new workers' seeds), and the plan's
 * slots: each worker's images and seed, which is all of a worker's state
 * (its draws for a step depend only on the seed and the step).
 * Arrays are stored raw after a JSON header; the header carries a SHA-256 of
 * the rest of the header and the payload, so a truncated or corrupted file
 * is refused, never half-loaded.
 */
export interface Checkpoint {
  step: number;
  imagesTotal: number;
  /** The training configuration it was written under (for the log and for sanity checks). */
  config: Record<string, unknown>;
  /** Draws the seeds handed to workers, so a resumed run never repeats their noise. */
  seedRng: RngState;
  nextWorker: number;
  /** The plan's slots in its order; none in a checkpoint of format 1. */
  shards: ShardSlot[];
  generator: Float32Array;
  discriminator: Float32Array;
  adamGenerator: AdamState;
  adamDiscriminator: AdamState;
}

/** Format 2 added the shard slots; format 1 files still load, without them. */
const FORMAT = 2;
const MAGIC = Buffer.from(`GANFLEET-CHECKPOINT-${FORMAT}\n`);
const MAGIC_1 = Buffer.from('GANFLEET-CHECKPOINT-1\n');
/** 9 digits, and more from step 10⁹ on: checkpointName's padding. */
export const CHECKPOINT_FILE = /^ckpt-(\d{9,})\.bin$/;

interface Header {
  step: number;
  imagesTotal: number;
  config: Record<string, unknown>;
  seedRng: RngState;
  nextWorker: number;
  adamSteps: { generator: number; discriminator: number };
  sizes: { generator: number; discriminator: number };
  /** The slots' seeds and image counts; their indices follow the float arrays, as uint32. */
  shards?: { seed: number; images: number }[];
  sha256: string;
}

/** Covers every header field but the digest itself, then the arrays. */
function digest(header: Omit<Header, 'sha256'>, payload: Buffer): string {
  const { step, imagesTotal, config, seedRng, nextWorker, adamSteps, sizes, shards } = header;
  const fields = JSON.stringify({ step, imagesTotal, config, seedRng, nextWorker, adamSteps, sizes, shards });
  return crypto.createHash('sha256').update(fields).update(payload).digest('hex');
}

const isCount = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;

export function checkpointName(step: number): string {
  return `ckpt-${String(step).padStart(9, '0')}.bin`;
}

function bytes(a: Float32Array | Uint32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Serialises a checkpoint: magic, header length (u32 LE), header JSON, then six float32 arrays and the slots' uint32 indices. */
export function encodeCheckpoint(c: Checkpoint): Buffer {
  const arrays = [c.generator, c.discriminator, c.adamGenerator.m, c.adamGenerator.v, c.adamDiscriminator.m, c.adamDiscriminator.v, ...c.shards.map((s) => s.indices)];
  const payload = Buffer.concat(arrays.map(bytes));
  const header: Omit<Header, 'sha256'> = {
    step: c.step,
    imagesTotal: c.imagesTotal,
    config: c.config,
    seedRng: c.seedRng,
    nextWorker: c.nextWorker,
    adamSteps: { generator: c.adamGenerator.step, discriminator: c.adamDiscriminator.step },
    sizes: { generator: c.generator.length, discriminator: c.discriminator.length },
    shards: c.shards.map((s) => ({ seed: s.seed, images: s.indices.length })),
  };
  const json = Buffer.from(JSON.stringify({ ...header, sha256: digest(header, payload) }));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(json.length);
  return Buffer.concat([MAGIC, len, json, payload]);
}

export function decodeCheckpoint(buf: Buffer, file: string): Checkpoint {
  const bad = (why: string) => new GanfleetError('CHECKPOINT_INVALID', `${file}: ${why}`);
  const magic = buf.subarray(0, MAGIC.length);
  const format1 = magic.equals(MAGIC_1);
  if (buf.length < MAGIC.length + 4 || !(format1 || magic.equals(MAGIC))) {
    // Up to its newline: format 10 and later have a longer magic than this one.
    const format = /^GANFLEET-CHECKPOINT-(\d+)\n/.exec(buf.subarray(0, 40).toString('latin1'))?.[1];
    // A newer ganfleet's checkpoint is not corrupt: a resume that set it aside would rewind the run.
    if (format !== undefined && Number(format) > FORMAT) {
      throw new GanfleetError('CHECKPOINT_FORMAT_UNSUPPORTED', `${file}: a checkpoint of format ${format}, written by a newer ganfleet; this one reads formats 1 to ${FORMAT}. Run a ganfleet that reads it`);
    }
    throw bad('not a ganfleet checkpoint (bad magic)');
  }
  const jsonLen = buf.readUInt32LE(MAGIC.length);
  const start = MAGIC.length + 4 + jsonLen;
  if (start > buf.length) throw bad('truncated header');
  let h: Header;
  try {
    h = JSON.parse(buf.subarray(MAGIC.length + 4, start).toString('utf8'));
  } catch {
    throw bad('unreadable header');
  }
  if (typeof h !== 'object' || h === null) throw bad('unreadable header');
  const { generator: gs, discriminator: ds } = h.sizes ?? {};
  if (!isCount(gs) || !isCount(ds)) throw bad('header lacks sizes');
  const payload = buf.subarray(start);
  const slotsOk = format1 ? h.shards === undefined : Array.isArray(h.shards) && h.shards.every((s) => isCount(s?.seed) && s.seed < 2 ** 32 && isCount(s.images));
  if (!slotsOk) throw bad('header lists no valid shards');
  const shards = h.shards ?? [];
  const expected = 4 * (3 * gs + 3 * ds + shards.reduce((n, s) => n + s.images, 0));
  if (payload.length !== expected) throw bad(`payload is ${payload.length} bytes, expected ${expected} (truncated?)`);
  let sum: string;
  try {
    sum = digest(h, payload);
  } catch {
    // Nested too deep to serialise again (a RangeError): no file ganfleet writes.
    throw bad('unreadable header');
  }
  if (sum !== h.sha256) throw bad('checksum mismatch (corrupted)');
  // What the model's name and the training images are read from: of another shape, a bare TypeError named no file.
  const config = h.config as Record<string, unknown> | null;
  const trainingSet = config?.trainingSet as { images?: unknown; sha256?: unknown } | null | undefined;
  const configOk =
    typeof config === 'object' && config !== null && !Array.isArray(config) &&
    ['arch', 'loss'].every((k) => config[k] === undefined || typeof config[k] === 'string') &&
    (trainingSet === undefined || (typeof trainingSet === 'object' && trainingSet !== null && isCount(trainingSet.images) && typeof trainingSet.sha256 === 'string'));
  // All zeros is no xoshiro state: stuck there, it would give every new worker the seed 0, and so the same noise.
  const rngOk = Array.isArray(h.seedRng) && h.seedRng.length === 4 && h.seedRng.every((x) => isCount(x) && x < 2 ** 32) && h.seedRng.some((x) => x !== 0);
  if (!configOk || !isCount(h.step) || !isCount(h.imagesTotal) || !isCount(h.nextWorker) || !rngOk || !isCount(h.adamSteps?.generator) || !isCount(h.adamSteps?.discriminator)) {
    throw bad('header fields out of range');
  }
  // Copy into an aligned buffer; slices below are views of it.
  const floats = new Float32Array(new Uint8Array(payload).buffer);
  let at = 0;
  const take = (n: number) => floats.subarray(at, (at += n));
  const generator = take(gs);
  const discriminator = take(ds);
  const adamGenerator = { step: h.adamSteps.generator, m: take(gs), v: take(gs) };
  const adamDiscriminator = { step: h.adamSteps.discriminator, m: take(ds), v: take(ds) };
  // A run stops at divergence rather than write such a file. Resumed, every worker refuses the weights and rejoins
  // for ever (no gradient is refused, so divergence is never found); generate and eval draw NaN images.
  const finite = (a: Float32Array, nonNegative = false) => {
    for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]) || (nonNegative && a[i] < 0)) return false;
    return true;
  };
  const statesOk = [generator, discriminator, adamGenerator.m, adamDiscriminator.m].every((a) => finite(a)) && finite(adamGenerator.v, true) && finite(adamDiscriminator.v, true);
  if (!statesOk) throw bad('weights or Adam state not finite (NaN, infinite, or a negative second moment)');
  const slots: ShardSlot[] = [];
  for (const { seed, images } of shards) {
    slots.push({ seed, indices: new Uint32Array(floats.buffer, 4 * at, images) });
    at += images;
  }
  return { step: h.step, imagesTotal: h.imagesTotal, config: h.config, seedRng: h.seedRng, nextWorker: h.nextWorker, shards: slots, generator, discriminator, adamGenerator, adamDiscriminator };
}

/**
 * Atomic (writeFileAtomic): a crash leaves either the previous set of
 * checkpoints or the new complete one, never a torn file under a checkpoint
 * name. Then keeps only the newest `keep`; an old one that cannot be removed
 * goes to `onPruneFailed` (a run logs it and trains on: its new checkpoint is
 * already safe). `mayWrite` is asked before the new one takes its name and
 * before the old ones go; null when it said no.
 */
export function writeCheckpoint(dir: string, c: Checkpoint, keep: number, onPruneFailed?: (e: Error) => void): string;
export function writeCheckpoint(dir: string, c: Checkpoint, keep: number, onPruneFailed: (e: Error) => void, mayWrite: () => boolean): string | null;
export function writeCheckpoint(dir: string, c: Checkpoint, keep: number, onPruneFailed: (e: Error) => void = (e) => { throw e; }, mayWrite: () => boolean = () => true): string | null {
  makeDirectory(dir);
  const final = path.join(dir, checkpointName(c.step));
  if (!writeFileAtomic(final, [encodeCheckpoint(c)], mayWrite) || !mayWrite()) return null;
  for (const old of listCheckpoints(dir).slice(keep)) {
    if (old === path.basename(final)) continue;
    try {
      removeFile(path.join(dir, old));
    } catch (e) {
      onPruneFailed(e as Error);
    }
  }
  return final;
}

function stepOfCheckpoint(name: string): number {
  return Number(CHECKPOINT_FILE.exec(name)![1]);
}

/** Checkpoint file names, newest step first. */
export function listCheckpoints(dir: string): string[] {
  return namesIn(dir)
    .filter((f) => CHECKPOINT_FILE.test(f))
    .sort((a, b) => stepOfCheckpoint(b) - stepOfCheckpoint(a));
}

/**
 * The newest checkpoint that loads, skipping (reporting, and for a resume
 * renaming aside) any that are truncated or corrupted. Null when there is none.
 */
export function loadLatestCheckpoint(dir: string, log: (msg: string) => void, renameInvalid = true): { checkpoint: Checkpoint; file: string } | null {
  // A checkpoint listed but gone when read was pruned by a live run (generate or eval on its directory) after it
  // wrote a newer one: the names are listed again, a bounded number of times, rather than fail with ENOENT.
  for (let listing = 0; ; listing++) {
    const found = loadListed(dir, log, renameInvalid, listing < 10);
    if (found !== 'gone') return found;
  }
}

function loadListed(dir: string, log: (msg: string) => void, renameInvalid: boolean, mayListAgain: boolean): { checkpoint: Checkpoint; file: string } | null | 'gone' {
  for (const name of listCheckpoints(dir)) {
    const file = path.join(dir, name);
    try {
      return { checkpoint: decodeCheckpoint(fs.readFileSync(file), file), file };
    } catch (e) {
      if (mayListAgain && (e as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
      // Only a file that is not a valid checkpoint is set aside; a read that
      // failed (permissions, I/O) says nothing about the file and is the caller's error.
      if (!(e instanceof GanfleetError && e.code === 'CHECKPOINT_INVALID')) throw naming(e, file);
      // Renamed aside, so that it neither shadows newer checkpoints nor outlives good ones in retention.
      if (renameInvalid) fs.renameSync(file, `${file}.invalid`);
      log(`skipping checkpoint ${e.message}${renameInvalid ? `; renamed to ${name}.invalid` : ''}`);
    }
  }
  return null;
}

/** `--checkpoint` of generate and eval: a checkpoint file, or a run directory (its newest valid checkpoint, nothing renamed). */
export function readCheckpoint(where: string, log: (msg: string) => void): { checkpoint: Checkpoint; file: string } {
  if (!fs.existsSync(where)) throw new GanfleetError('NO_CHECKPOINT', `--checkpoint: no such file or directory ${where}`);
  const stat = fs.statSync(where);
  if (stat.isFile()) return { checkpoint: decodeCheckpoint(fs.readFileSync(where), where), file: where };
  if (!stat.isDirectory()) throw new GanfleetError('NO_CHECKPOINT', `--checkpoint: ${where} is neither a file nor a directory (a pipe or a device); name a checkpoint file or a run directory`);
  const sub = path.join(where, 'checkpoints');
  const subStat = fs.statSync(sub, { throwIfNoEntry: false });
  // A run directory whose checkpoints/ is something else was read as a directory: ENOTDIR from scandir.
  if (subStat && !subStat.isDirectory()) throw new GanfleetError('NO_CHECKPOINT', `--checkpoint: ${sub} is not a directory, so ${where} holds no checkpoints of a run`);
  const dir = subStat ? sub : where;
  const found = loadLatestCheckpoint(dir, log, false);
  if (!found) {
    // A run's generator/ is the likeliest directory to name by mistake: it holds G, but as a LayersModel.
    const exported = fs.existsSync(path.join(where, 'model.json')) && fs.existsSync(path.join(path.dirname(path.resolve(where)), 'checkpoints'));
    const hint = exported ? `: ${where} is the exported LayersModel; name the run directory, ${path.dirname(path.resolve(where))}` : '';
    throw new GanfleetError('NO_CHECKPOINT', `no valid checkpoint in ${dir}${hint}`);
  }
  return found;
}
