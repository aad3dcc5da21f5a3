import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { RngState } from '../util/rng';
import { GanfleetError } from '../util/errors';
import { writeFileAtomic } from '../util/write';
import { AdamState } from './adam';

/**
 * Everything the coordinator needs to continue a run: both networks and
 * Adam states exactly, and the seed RNG, so resumed workers draw new noise
 * rather than repeat the run's. (Workers' streams are not saved, so a
 * resumed run is the same training, not the same bits; see the README.)
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
  generator: Float32Array;
  discriminator: Float32Array;
  adamGenerator: AdamState;
  adamDiscriminator: AdamState;
}

const MAGIC = Buffer.from('GANFLEET-CHECKPOINT-1\n');
export const CHECKPOINT_FILE = /^ckpt-(\d{9})\.bin$/;

interface Header {
  step: number;
  imagesTotal: number;
  config: Record<string, unknown>;
  seedRng: RngState;
  nextWorker: number;
  adamSteps: { generator: number; discriminator: number };
  sizes: { generator: number; discriminator: number };
  sha256: string;
}

/** Covers every header field but the digest itself, then the arrays. */
function digest(header: Omit<Header, 'sha256'>, payload: Buffer): string {
  const { step, imagesTotal, config, seedRng, nextWorker, adamSteps, sizes } = header;
  const fields = JSON.stringify({ step, imagesTotal, config, seedRng, nextWorker, adamSteps, sizes });
  return crypto.createHash('sha256').update(fields).update(payload).digest('hex');
}

const isCount = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;

export function checkpointName(step: number): string {
  return `ckpt-${String(step).padStart(9, '0')}.bin`;
}

function bytes(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Serialises a checkpoint: magic, header length (u32 LE), header JSON, then six float32 arrays. */
export function encodeCheckpoint(c: Checkpoint): Buffer {
  const arrays = [c.generator, c.discriminator, c.adamGenerator.m, c.adamGenerator.v, c.adamDiscriminator.m, c.adamDiscriminator.v];
  const payload = Buffer.concat(arrays.map(bytes));
  const header: Omit<Header, 'sha256'> = {
    step: c.step,
    imagesTotal: c.imagesTotal,
    config: c.config,
    seedRng: c.seedRng,
    nextWorker: c.nextWorker,
    adamSteps: { generator: c.adamGenerator.step, discriminator: c.adamDiscriminator.step },
    sizes: { generator: c.generator.length, discriminator: c.discriminator.length },
  };
  const json = Buffer.from(JSON.stringify({ ...header, sha256: digest(header, payload) }));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(json.length);
  return Buffer.concat([MAGIC, len, json, payload]);
}

export function decodeCheckpoint(buf: Buffer, file: string): Checkpoint {
  const bad = (why: string) => new GanfleetError('CHECKPOINT_INVALID', `${file}: ${why}`);
  if (buf.length < MAGIC.length + 4 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) throw bad('not a ganfleet checkpoint (bad magic)');
  const jsonLen = buf.readUInt32LE(MAGIC.length);
  const start = MAGIC.length + 4 + jsonLen;
  if (start > buf.length) throw bad('truncated header');
  let h: Header;
  try {
    h = JSON.parse(buf.subarray(MAGIC.length + 4, start).toString('utf8'));
  } catch {
    throw bad('unreadable header');
  }
  const { generator: gs, discriminator: ds } = h.sizes ?? {};
  if (!Number.isSafeInteger(gs) || !Number.isSafeInteger(ds)) throw bad('header lacks sizes');
  const payload = buf.subarray(start);
  const expected = 4 * (3 * gs + 3 * ds);
  if (payload.length !== expected) throw bad(`payload is ${payload.length} bytes, expected ${expected} (truncated?)`);
  if (digest(h, payload) !== h.sha256) throw bad('checksum mismatch (corrupted)');
  const rngOk = Array.isArray(h.seedRng) && h.seedRng.length === 4 && h.seedRng.every((x) => isCount(x) && x < 2 ** 32);
  if (!isCount(h.step) || !isCount(h.imagesTotal) || !isCount(h.nextWorker) || !rngOk || !isCount(h.adamSteps?.generator) || !isCount(h.adamSteps?.discriminator)) {
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
  return { step: h.step, imagesTotal: h.imagesTotal, config: h.config, seedRng: h.seedRng, nextWorker: h.nextWorker, generator, discriminator, adamGenerator, adamDiscriminator };
}

/**
 * Atomic (writeFileAtomic): a crash leaves either the previous set of
 * checkpoints or the new complete one, never a torn file under a checkpoint
 * name. Then keeps only the newest `keep`.
 */
export function writeCheckpoint(dir: string, c: Checkpoint, keep: number): string {
  fs.mkdirSync(dir, { recursive: true });
  const final = path.join(dir, checkpointName(c.step));
  writeFileAtomic(final, [encodeCheckpoint(c)]);
  for (const old of listCheckpoints(dir).slice(keep)) {
    if (old !== path.basename(final)) fs.rmSync(path.join(dir, old), { force: true });
  }
  return final;
}

/** Checkpoint file names, newest step first. */
export function listCheckpoints(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => CHECKPOINT_FILE.test(f))
    .sort()
    .reverse();
}

/**
 * The newest checkpoint that loads, skipping (reporting, and for a resume
 * renaming aside) any that are truncated or corrupted. Null when there is none.
 */
export function loadLatestCheckpoint(dir: string, log: (msg: string) => void, renameInvalid = true): { checkpoint: Checkpoint; file: string } | null {
  for (const name of listCheckpoints(dir)) {
    const file = path.join(dir, name);
    try {
      return { checkpoint: decodeCheckpoint(fs.readFileSync(file), file), file };
    } catch (e) {
      // Only a file that is not a valid checkpoint is set aside; a read that
      // failed (permissions, I/O) says nothing about the file and is the caller's error.
      if (!(e instanceof GanfleetError && e.code === 'CHECKPOINT_INVALID')) throw e;
      if (!renameInvalid) {
        log(`skipping checkpoint ${(e as Error).message}`);
        continue;
      }
      // Renamed aside, so that it neither shadows newer checkpoints nor outlives good ones in retention.
      fs.renameSync(file, `${file}.invalid`);
      log(`skipping checkpoint ${(e as Error).message}; renamed to ${name}.invalid`);
    }
  }
  return null;
}

/** `--checkpoint` of generate and eval: a checkpoint file, or a run directory (its newest valid checkpoint, nothing renamed). */
export function readCheckpoint(where: string, log: (msg: string) => void): { checkpoint: Checkpoint; file: string } {
  if (!fs.existsSync(where)) throw new GanfleetError('NO_CHECKPOINT', `--checkpoint: no such file or directory ${where}`);
  if (fs.statSync(where).isFile()) return { checkpoint: decodeCheckpoint(fs.readFileSync(where), where), file: where };
  const dir = fs.existsSync(path.join(where, 'checkpoints')) ? path.join(where, 'checkpoints') : where;
  const found = loadLatestCheckpoint(dir, log, false);
  if (!found) throw new GanfleetError('NO_CHECKPOINT', `no valid checkpoint in ${dir}`);
  return found;
}
