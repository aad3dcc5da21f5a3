import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Adam, KERAS_ADAM_DEFAULTS } from '../src/coordinator/adam';
import { Checkpoint, decodeCheckpoint, encodeCheckpoint, listCheckpoints, loadLatestCheckpoint, writeCheckpoint } from '../src/coordinator/checkpoint';
import { createModel } from '../src/model';
import { Rng } from '../src/util/rng';
import { checkpointToResume, resumeWarnings, shardsToResume } from '../src/coordinator/resume';
import { tempDir } from './harness';
import { generateSamples } from '../src/generate';
import { evaluateCheckpoint } from '../src/evaluate';

function checkpointAt(step: number): Checkpoint {
  const model = createModel('mlp');
  const p = model.init(new Rng(step));
  const adamG = new Adam(p.generator.length, KERAS_ADAM_DEFAULTS);
  const adamD = new Adam(p.discriminator.length, KERAS_ADAM_DEFAULTS);
  adamG.apply(p.generator, p.generator.map((x) => x * 0.1));
  adamD.apply(p.discriminator, p.discriminator.map((x) => -x));
  return {
    step, imagesTotal: step * 256, config: { arch: 'mlp', steps: 1000 }, seedRng: new Rng(5).state(), nextWorker: 4, shards: [],
    generator: p.generator, discriminator: p.discriminator, adamGenerator: adamG.state(), adamDiscriminator: adamD.state(),
  };
}

test('a checkpoint round-trips bit for bit', () => {
  const c = checkpointAt(7);
  const back = decodeCheckpoint(encodeCheckpoint(c), 'mem');
  assert.deepEqual(back, c);
});

test('the plan\'s slots (each worker\'s images and seed) round-trip, and a checkpoint of format 1 (written before them) still loads, with none', () => {
  const c = { ...checkpointAt(5), shards: [{ indices: Uint32Array.from([9, 2, 7]), seed: 2 ** 32 - 1 }, { indices: Uint32Array.from([0, 4]), seed: 0 }] };
  const buf = encodeCheckpoint(c);
  assert.deepEqual(decodeCheckpoint(buf, 'mem'), c);
  assert.equal(buf.subarray(0, 22).toString(), 'GANFLEET-CHECKPOINT-2\n');
  // Written by ganfleet at 5cfc69d (protocol 2).
  const format1 = Buffer.from(
    'R0FORkxFRVQtQ0hFQ0tQT0lOVC0xCvwAAAB7InN0ZXAiOjcsImltYWdlc1RvdGFsIjoxNzkyLCJjb25maWciOnsiYXJjaCI6Im1scCJ9LCJzZWVkUm5nIjpbMSwyLDMsNF0sIm5leHRXb3JrZXIiOjMsImFkYW1TdGVwcyI6eyJnZW5lcmF0b3IiOjcsImRpc2NyaW1pbmF0b3IiOjd9LCJzaXplcyI6eyJnZW5lcmF0b3IiOjIsImRpc2NyaW1pbmF0b3IiOjN9LCJzaGEyNTYiOiJjMDc5NWQyYTRlZmVjMGY0NTlmOWVlYjdlMWViNTM3MWJhMzgzMjU2YTRhMjI0NDA1YWRjMTM4OTdiM2Q2YmQ2In0AAAA/AACAvwAAgD8AAABAAABAQM3MzD3NzEw+mpmZPs3MzD4AAIA/AACAPwAAgD8AAABAAAAAQAAAAEA=',
    'base64',
  );
  const old = decodeCheckpoint(format1, 'old');
  assert.deepEqual(old.shards, []);
  assert.deepEqual([old.step, old.nextWorker, [...old.generator], [...old.adamDiscriminator.v]], [7, 3, [0.5, -1], [2, 2, 2]]);
  const future = Buffer.concat([Buffer.from('GANFLEET-CHECKPOINT-3\n'), buf.subarray(22)]);
  assert.throws(() => decodeCheckpoint(future, 'f'), { code: 'CHECKPOINT_FORMAT_UNSUPPORTED', message: /^f: a checkpoint of format 3, written by a newer ganfleet; this one reads formats 1 to 2/ });
  // Two digits make a longer magic.
  const farFuture = Buffer.concat([Buffer.from('GANFLEET-CHECKPOINT-10\n'), buf.subarray(22)]);
  assert.throws(() => decodeCheckpoint(farFuture, 'f'), { code: 'CHECKPOINT_FORMAT_UNSUPPORTED', message: /format 10, written by a newer ganfleet/ });
});

test('a resume stops at a newer format\'s checkpoint, leaving it in place, instead of setting it aside and rewinding to an older one', () => {
  const dir = tempDir('ckpt-newer');
  writeCheckpoint(dir, checkpointAt(10), 3);
  const newest = writeCheckpoint(dir, checkpointAt(20), 3);
  const bytes = fs.readFileSync(newest);
  fs.writeFileSync(newest, Buffer.concat([Buffer.from('GANFLEET-CHECKPOINT-3\n'), bytes.subarray(22)]));
  const lines: string[] = [];
  assert.throws(() => loadLatestCheckpoint(dir, (m) => lines.push(m)), { code: 'CHECKPOINT_FORMAT_UNSUPPORTED' });
  assert.deepEqual(listCheckpoints(dir), ['ckpt-000000020.bin', 'ckpt-000000010.bin']);
  assert.equal(lines.length, 0);
  // An older magic that no ganfleet wrote is no newer format: set aside like any foreign file.
  fs.writeFileSync(newest, Buffer.concat([Buffer.from('GANFLEET-CHECKPOINT-0\n'), bytes.subarray(22)]));
  assert.equal(loadLatestCheckpoint(dir, (m) => lines.push(m))?.checkpoint.step, 10);
  assert.match(lines[0], /ckpt-000000020\.bin: not a ganfleet checkpoint \(bad magic\); renamed to ckpt-000000020\.bin\.invalid/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('truncated, corrupted and foreign files are refused with the reason', () => {
  const buf = encodeCheckpoint(checkpointAt(3));
  assert.throws(() => decodeCheckpoint(buf.subarray(0, buf.length - 4), 'f'), /f: payload is \d+ bytes, expected \d+ \(truncated\?\)/);
  const flipped = Buffer.from(buf);
  flipped[flipped.length - 100] ^= 0x40;
  assert.throws(() => decodeCheckpoint(flipped, 'f'), /checksum mismatch \(corrupted\)/);
  assert.throws(() => decodeCheckpoint(Buffer.from('PK\x03\x04 zip'), 'f'), /bad magic/);
  // The digest covers the header too: a changed step is refused, not loaded as another step.
  const forged = Buffer.from(buf.toString('latin1').replace('"step":3,', '"step":9,'), 'latin1');
  assert.equal(forged.length, buf.length);
  assert.throws(() => decodeCheckpoint(forged, 'f'), /checksum mismatch/);
  assert.throws(() => decodeCheckpoint(buf.subarray(0, 30), 'f'), /truncated header|unreadable header/);
});

test('a header out of range is refused though its checksum holds (a file made by hand or by a broken build): a seed beyond 32 bits, a short or all-zero RNG state, shards under format 1', () => {
  const good = checkpointAt(4);
  const refused = (c: Checkpoint, why: RegExp) => assert.throws(() => decodeCheckpoint(encodeCheckpoint(c), 'f'), { code: 'CHECKPOINT_INVALID', message: why });
  refused({ ...good, shards: [{ indices: Uint32Array.from([1, 2]), seed: 2 ** 32 }] }, /^f: header lists no valid shards$/);
  refused({ ...good, seedRng: good.seedRng.slice(0, 3) as typeof good.seedRng }, /^f: header fields out of range$/);
  refused({ ...good, seedRng: [1, 2, 3, 2 ** 32] as unknown as typeof good.seedRng }, /^f: header fields out of range$/);
  refused({ ...good, seedRng: [0, 0, 0, 0] }, /^f: header fields out of range$/);
  refused({ ...good, nextWorker: -1 }, /^f: header fields out of range$/);
  // Adam's step counts bias-correct the next update: one negative or fractional is no count ganfleet wrote.
  refused({ ...good, adamGenerator: { ...good.adamGenerator, step: 1.5 } }, /^f: header fields out of range$/);
  refused({ ...good, adamDiscriminator: { ...good.adamDiscriminator, step: -1 } }, /^f: header fields out of range$/);
  // Format 1 had no slots: one that lists them is no file ganfleet wrote.
  const withSlots = encodeCheckpoint({ ...good, shards: [{ indices: Uint32Array.from([1, 2]), seed: 3 }] });
  const asFormat1 = Buffer.concat([Buffer.from('GANFLEET-CHECKPOINT-1\n'), withSlots.subarray(22)]);
  assert.throws(() => decodeCheckpoint(asFormat1, 'f'), { code: 'CHECKPOINT_INVALID', message: /^f: header lists no valid shards$/ });
});

test('weights or Adam state that are not finite are refused though the checksum holds: resumed, every worker refused the weights and rejoined for ever; generate wrote NaN images', () => {
  const good = checkpointAt(4);
  const refused = (c: Checkpoint) => assert.throws(() => decodeCheckpoint(encodeCheckpoint(c), 'f'), { code: 'CHECKPOINT_INVALID', message: /^f: weights or Adam state not finite/ });
  const withNaN = (a: Float32Array) => Float32Array.from(a, (x, i) => (i === 3 ? NaN : x));
  refused({ ...good, generator: withNaN(good.generator) });
  refused({ ...good, discriminator: Float32Array.from(good.discriminator, (x, i) => (i === 0 ? Infinity : x)) });
  refused({ ...good, adamGenerator: { ...good.adamGenerator, m: withNaN(good.adamGenerator.m) } });
  // A second moment below zero makes the next update's square root NaN.
  refused({ ...good, adamDiscriminator: { ...good.adamDiscriminator, v: Float32Array.from(good.adamDiscriminator.v, (x, i) => (i === 1 ? -1 : x)) } });
  refused({ ...good, adamGenerator: { ...good.adamGenerator, v: Float32Array.from(good.adamGenerator.v, (x, i) => (i === 1 ? -1 : x)) } });
  // A resume sets it aside and takes the one before.
  const dir = tempDir('ckpt-not-finite');
  writeCheckpoint(dir, checkpointAt(2), 3);
  writeCheckpoint(dir, { ...checkpointAt(4), generator: withNaN(good.generator) }, 3);
  const logs: string[] = [];
  assert.equal(loadLatestCheckpoint(dir, (m) => logs.push(m))!.checkpoint.step, 2);
  assert.match(logs.join('\n'), /ckpt-000000004\.bin: weights or Adam state not finite.*renamed to ckpt-000000004\.bin\.invalid/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a config section of the wrong shape is refused though the checksum holds, not failed later with a bare TypeError that names no file', async () => {
  const good = checkpointAt(4);
  const refused = (config: unknown) => assert.throws(() => decodeCheckpoint(encodeCheckpoint({ ...good, config: config as Checkpoint['config'] }), 'f'), { code: 'CHECKPOINT_INVALID', message: /^f: header fields out of range$/ });
  refused(null);
  refused([1, 2]);
  refused({ arch: { toString: 1 } });
  refused({ arch: 'mlp', loss: 7 });
  refused({ arch: 'mlp', trainingSet: 'x' });
  refused({ arch: 'mlp', trainingSet: { images: 60000, sha256: 5 } });
  // A run directory's newest such file is passed over by generate, and set aside by a resume.
  const out = tempDir('ckpt-config-shape');
  writeCheckpoint(path.join(out, 'checkpoints'), { ...checkpointAt(2), config: { arch: 'mlp', loss: 'bce' } }, 3);
  writeCheckpoint(path.join(out, 'checkpoints'), { ...good, config: null as unknown as Checkpoint['config'] }, 3);
  await generateSamples({ checkpoint: out, count: 2, out: path.join(out, 'x.npy'), seed: 1, backend: 'cpu' }, () => {});
  assert.equal(checkpointToResume({ out, arch: 'mlp', loss: 'bce' }, () => {})!.checkpoint.step, 2);
  fs.rmSync(out, { recursive: true, force: true });
});

test('a header nested too deep to hash is refused as unreadable, with the file named, not a bare "Maximum call stack size exceeded"', () => {
  const file = encodeCheckpoint(checkpointAt(4));
  const at = 'GANFLEET-CHECKPOINT-2\n'.length;
  const header = file.subarray(at + 4, at + 4 + file.readUInt32LE(at)).toString();
  const deep = Buffer.from(header.replace('"config":{', `"config":{"deep":${'['.repeat(20000)}${']'.repeat(20000)},`));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(deep.length);
  const crafted = Buffer.concat([file.subarray(0, at), len, deep, file.subarray(at + 4 + file.readUInt32LE(at))]);
  assert.throws(() => decodeCheckpoint(crafted, 'f'), { code: 'CHECKPOINT_INVALID', message: /^f: unreadable header$/ });
});

test('writes are atomic, keep the newest K, and resume falls back past broken files', () => {
  const dir = tempDir('ckpt');
  for (const step of [10, 20, 30, 40]) writeCheckpoint(dir, checkpointAt(step), 3);
  assert.deepEqual(listCheckpoints(dir), ['ckpt-000000040.bin', 'ckpt-000000030.bin', 'ckpt-000000020.bin']);
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('.tmp')), [], 'no temporary file left behind');

  // A crash mid-write leaves only a temporary file, which is never read as a checkpoint.
  fs.writeFileSync(path.join(dir, 'ckpt-000000050.bin.tmp-123'), 'partial');
  fs.truncateSync(path.join(dir, 'ckpt-000000040.bin'), 1000);
  const corrupt = path.join(dir, 'ckpt-000000030.bin');
  const bytes = fs.readFileSync(corrupt);
  bytes[bytes.length - 1] ^= 1;
  fs.writeFileSync(corrupt, bytes);
  const lines: string[] = [];
  const found = loadLatestCheckpoint(dir, (m) => lines.push(m));
  assert.equal(found?.checkpoint.step, 20);
  assert.equal(lines.length, 2);
  assert.match(lines[0], /skipping checkpoint .*ckpt-000000040\.bin: payload is/);
  assert.match(lines[1], /skipping checkpoint .*ckpt-000000030\.bin: checksum mismatch/);
  const empty = tempDir('empty');
  assert.equal(loadLatestCheckpoint(empty, () => {}), null);
  fs.rmSync(empty, { recursive: true, force: true });
  // Broken files were renamed aside: retention after the resume keeps the new good one, not a torn one.
  writeCheckpoint(dir, checkpointAt(21), 1);
  assert.deepEqual(listCheckpoints(dir), ['ckpt-000000021.bin']);
  assert.ok(fs.existsSync(path.join(dir, 'ckpt-000000040.bin.invalid')));
  fs.rmSync(dir, { recursive: true, force: true });
});

test('retention never removes the checkpoint just written, though newer ones outnumber --keep-checkpoints', () => {
  const dir = tempDir('ckpt-older');
  for (const step of [20, 30]) writeCheckpoint(dir, checkpointAt(step), 3);
  const written = writeCheckpoint(dir, checkpointAt(5), 1);
  assert.ok(fs.existsSync(written), `${written} was pruned as it was written`);
  assert.deepEqual(listCheckpoints(dir), ['ckpt-000000030.bin', 'ckpt-000000005.bin']);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a lease lost just after the checkpoint takes its name prunes nothing: the older checkpoints may be the new holder\'s to keep', () => {
  const dir = tempDir('ckpt-lost');
  for (const step of [1, 2, 3]) writeCheckpoint(dir, checkpointAt(step), 3);
  let asked = 0;
  const mayWrite = () => ++asked === 1; // yes before the rename, no after it
  assert.equal(writeCheckpoint(dir, checkpointAt(4), 1, (e) => assert.fail(e), mayWrite), null);
  assert.deepEqual(listCheckpoints(dir), ['ckpt-000000004.bin', 'ckpt-000000003.bin', 'ckpt-000000002.bin', 'ckpt-000000001.bin']);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a write that fails leaves neither a checkpoint nor its temporary file, and keeps the older ones', () => {
  const dir = tempDir('ckpt-fail');
  writeCheckpoint(dir, checkpointAt(10), 3);
  // Something that is not a file already holds step 20's name, so the rename into place fails.
  fs.mkdirSync(path.join(dir, 'ckpt-000000020.bin', 'in-the-way'), { recursive: true });
  assert.throws(() => writeCheckpoint(dir, checkpointAt(20), 1));
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('.tmp')), []);
  assert.ok(fs.existsSync(path.join(dir, 'ckpt-000000010.bin')), 'the previous checkpoint is not pruned by a failed write');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('an old checkpoint that cannot be pruned is reported, and the new one is kept', () => {
  const dir = tempDir('ckpt-prune');
  writeCheckpoint(dir, checkpointAt(20), 3);
  // Something that unlink refuses (EISDIR) under an older checkpoint's name.
  fs.mkdirSync(path.join(dir, 'ckpt-000000010.bin', 'in-the-way'), { recursive: true });
  const failures: string[] = [];
  const newest = writeCheckpoint(dir, checkpointAt(30), 1, (e) => failures.push(e.message));
  assert.equal(failures.length, 1);
  assert.match(failures[0], /ckpt-000000010\.bin/);
  assert.deepEqual(listCheckpoints(dir), ['ckpt-000000030.bin', 'ckpt-000000010.bin']);
  assert.equal(path.basename(newest), 'ckpt-000000030.bin');
  // Without a handler the failure is the caller's.
  assert.throws(() => writeCheckpoint(dir, checkpointAt(40), 1), /ckpt-000000010\.bin/);
  assert.ok(fs.existsSync(path.join(dir, 'ckpt-000000040.bin')));
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a checkpoint that cannot be read is an error, not a file renamed aside as invalid', () => {
  const dir = tempDir('ckpt-unreadable');
  writeCheckpoint(dir, checkpointAt(10), 3);
  // A read that fails (here: a directory under a checkpoint's name, EISDIR) says nothing about the data.
  fs.mkdirSync(path.join(dir, 'ckpt-000000020.bin'));
  // Named: "EIO: i/o error, read" alone would not tell the operator which checkpoint to deal with.
  assert.throws(() => loadLatestCheckpoint(dir, () => {}), /EISDIR.*\(\S+ckpt-000000020\.bin\)$/);
  assert.ok(fs.statSync(path.join(dir, 'ckpt-000000020.bin')).isDirectory());
  assert.ok(!fs.existsSync(path.join(dir, 'ckpt-000000020.bin.invalid')));
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a checkpoint directory that cannot be listed is an error, not an empty one: a resume would start from step 0 and write over the run', () => {
  const dir = tempDir('ckpt-unlistable');
  assert.deepEqual(listCheckpoints(path.join(dir, 'missing')), []);
  // A path whose existence cannot be told (here a symlink loop, ELOOP; an EIO or EACCES on the way does the
  // same) was taken for a missing one: a resume then started from step 0 and wrote over the run's checkpoints.
  fs.symlinkSync('loop', path.join(dir, 'loop'));
  const unknown = path.join(dir, 'loop', 'checkpoints');
  assert.throws(() => listCheckpoints(unknown), /ELOOP: too many symbolic links encountered, scandir '\S+checkpoints'/);
  assert.throws(() => loadLatestCheckpoint(unknown, () => {}), /ELOOP/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a resume gives the checkpoint its slots back only with the same --seed and images, and slots that partition part of them', () => {
  const trainingSet = { images: 10, sha256: 'a'.repeat(64) };
  const c = { ...checkpointAt(5), config: { arch: 'mlp', seed: 3, trainingSet }, shards: [{ indices: Uint32Array.from([9, 2]), seed: 1 }, { indices: Uint32Array.from([0]), seed: 2 }] };
  const now = { arch: 'mlp', seed: 3, trainingSet };
  assert.equal(shardsToResume(c, now).slots, c.shards);
  assert.match(shardsToResume(c, now).note, /the checkpoint's 2 shard slots \(images and seed\) go to the first workers to join/);
  const afresh = (checkpoint: typeof c, settings: typeof now, why: RegExp) => {
    const r = shardsToResume(checkpoint, settings);
    assert.deepEqual(r.slots, []);
    assert.match(r.note, why);
    assert.match(r.note, /so the run continues the same training, not the same bits/);
  };
  afresh(c, { ...now, seed: 4 }, /planned afresh \(--seed differs from the checkpoint's\)/);
  afresh(c, { ...now, trainingSet: { images: 10, sha256: 'b'.repeat(64) } }, /the training images differ/);
  afresh({ ...c, shards: [] }, now, /the checkpoint holds none: it was written while no worker held a shard \(all had left\), or by ganfleet before protocol 3/);
  afresh({ ...c, shards: [...c.shards, { indices: Uint32Array.from([2]), seed: 5 }] }, now, /its slot 3 holds image 2, held twice/);
  afresh({ ...c, shards: [{ indices: Uint32Array.from([10]), seed: 5 }] }, now, /its slot 1 holds image 10, outside the training set/);
});

test('checkpoints from step 10⁹ on (10 digits) are found, ordered by step, and kept as the newest', () => {
  const dir = tempDir('ckpt-billion');
  writeCheckpoint(dir, checkpointAt(999_999_995), 2);
  writeCheckpoint(dir, checkpointAt(1_000_000_000), 2);
  writeCheckpoint(dir, checkpointAt(1_000_000_003), 2);
  // Pruned by step: by name, the 9-digit one sorts after the 10-digit ones and would be kept as the newest.
  assert.deepEqual(listCheckpoints(dir), ['ckpt-1000000003.bin', 'ckpt-1000000000.bin']);
  assert.equal(loadLatestCheckpoint(dir, () => {})?.checkpoint.step, 1_000_000_003);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('the newest checkpoint of a run directory that a live run prunes between the listing and the read (generate, eval) is found again, not an ENOENT', (t) => {
  const dir = tempDir('ckpt-pruned');
  writeCheckpoint(dir, checkpointAt(2), 1);
  writeCheckpoint(dir, checkpointAt(4), 1);
  const read = fs.readFileSync;
  let raced = false;
  // The run writes step 6 and prunes step 4 (--keep-checkpoints 1) just as step 4 is opened.
  t.mock.method(fs, 'readFileSync', (file: fs.PathOrFileDescriptor, ...rest: unknown[]) => {
    if (!raced && String(file).endsWith('ckpt-000000004.bin')) {
      raced = true;
      writeCheckpoint(dir, checkpointAt(6), 1);
    }
    return (read as (...a: unknown[]) => unknown)(file, ...rest);
  });
  const found = loadLatestCheckpoint(dir, () => {}, false);
  assert.ok(raced);
  assert.equal(found?.checkpoint.step, 6);
  assert.deepEqual(listCheckpoints(dir), ['ckpt-000000006.bin']);
});

test('--resume --loss lsgan on a checkpoint written before --loss existed names the loss it needs (bce), not "undefined"', () => {
  const out = tempDir('resume-loss');
  // An older ganfleet kept no `loss` in the checkpoint's config (checkpointAt's has none): its runs were all bce.
  writeCheckpoint(path.join(out, 'checkpoints'), checkpointAt(4), 3);
  assert.equal(checkpointToResume({ out, arch: 'mlp', loss: 'bce' }, () => {})?.checkpoint.step, 4);
  assert.throws(
    () => checkpointToResume({ out, arch: 'mlp', loss: 'lsgan' }, () => {}),
    (e: Error & { code?: string }) => e.code === 'CHECKPOINT_MISMATCH' && /trained with --loss bce, not lsgan: pass --loss bce to resume it/.test(e.message),
  );
  fs.rmSync(out, { recursive: true, force: true });
});

test('--resume with both another --model and another --loss names both in one refusal, not the model first and the loss on the next try', () => {
  const out = tempDir('resume-model-and-loss');
  const file = writeCheckpoint(path.join(out, 'checkpoints'), checkpointAt(4), 3);
  assert.throws(
    () => checkpointToResume({ out, arch: 'dcgan', loss: 'lsgan' }, () => {}),
    (e: Error & { code?: string }) =>
      e.code === 'CHECKPOINT_MISMATCH' && e.message === `${file} was trained with --model mlp, not dcgan and --loss bce, not lsgan: pass --model mlp --loss bce to resume it`,
  );
  fs.rmSync(out, { recursive: true, force: true });
});

test("a checkpoint of a model this ganfleet lacks (a newer ganfleet's) is refused as such, by --resume, generate and eval, with the file named", async () => {
  const out = tempDir('resume-newer-model');
  const file = writeCheckpoint(path.join(out, 'checkpoints'), { ...checkpointAt(4), config: { arch: 'wgan', loss: 'hinge' } }, 3);
  const unknown = (e: Error & { code?: string }) =>
    e.code === 'MODEL_UNKNOWN' && e.message.startsWith(`${file}: a checkpoint of --model wgan --loss hinge, which this ganfleet lacks`) && /written by a newer ganfleet/.test(e.message);
  // Not "pass --model wgan to resume it", which the command line refuses.
  assert.throws(() => checkpointToResume({ out, arch: 'mlp', loss: 'bce' }, () => {}), unknown);
  await assert.rejects(generateSamples({ checkpoint: out, count: 2, out: path.join(out, 'x.npy'), seed: 1, backend: 'cpu' }, () => {}), unknown);
  await assert.rejects(evaluateCheckpoint({ checkpoint: out, samples: 2, seed: 1, backend: 'cpu' }, () => {}), unknown);
  fs.rmSync(out, { recursive: true, force: true });
});

test("a checkpoint's unknown model or loss is quoted in the error, not echoed raw: a name with newlines and terminal escapes forged log lines, a long one filled the log", () => {
  const out = tempDir('resume-hostile-model');
  writeCheckpoint(path.join(out, 'checkpoints'), { ...checkpointAt(4), config: { arch: 'x\n2026-01-01T00:00:00.000Z [coordinator] finished \x1b[31m', loss: 'l'.repeat(5000) } }, 3);
  assert.throws(
    () => checkpointToResume({ out, arch: 'mlp', loss: 'bce' }, () => {}),
    (e: Error & { code?: string }) => e.code === 'MODEL_UNKNOWN' && !/[\x00-\x1f\x7f]/.test(e.message) && e.message.length < 1000 && /--model "x\\n2026/.test(e.message),
  );
  fs.rmSync(out, { recursive: true, force: true });
});

test("a checkpoint whose networks have other sizes than this ganfleet's model of that name (another version's) is refused with the file named", async () => {
  const out = tempDir('resume-other-sizes');
  // mlp-sized networks under the name dcgan: what a ganfleet whose dcgan had other layers would have written.
  const file = writeCheckpoint(path.join(out, 'checkpoints'), { ...checkpointAt(4), config: { arch: 'dcgan', loss: 'bce' } }, 3);
  const sizes = createModel('mlp').generatorLayout.size;
  const other = (e: Error & { code?: string }) =>
    e.code === 'CHECKPOINT_MISMATCH' && e.message.startsWith(`${file}: its dcgan generator has ${sizes} parameters, this ganfleet's dcgan generator ${createModel('dcgan').generatorLayout.size}`);
  assert.throws(() => checkpointToResume({ out, arch: 'dcgan', loss: 'bce' }, () => {}), other);
  await assert.rejects(generateSamples({ checkpoint: out, count: 2, out: path.join(out, 'x.npy'), seed: 1, backend: 'cpu' }, () => {}), other);
  await assert.rejects(evaluateCheckpoint({ checkpoint: out, samples: 2, seed: 1, backend: 'cpu' }, () => {}), other);
  fs.rmSync(out, { recursive: true, force: true });
});

test('a resume warns of each setting that differs from the checkpoint, naming the flag and both values', () => {
  const then = { seed: 1, batchSize: 128, adam: { learningRate: 0.001, beta1: 0.9, beta2: 0.999 }, discriminatorUpdates: 1, wireDtype: 'float32' };
  const now = { seed: 2, batchSize: 64, adam: { learningRate: 0.0002, beta1: 0.5, beta2: 0.99 }, discriminatorUpdates: 2, wireDtype: 'bfloat16' };
  const used = "; this run's value is used from here on";
  assert.deepEqual(resumeWarnings(now, then), [
    `--seed is 2 in this run, the checkpoint was written with 1${used} for the shard order, the sample grids and the --eval-every noise (the shards and worker seeds are then planned afresh)`,
    `--batch-size is 64 in this run, the checkpoint was written with 128${used}`,
    `--lr is 0.0002 in this run, the checkpoint was written with 0.001${used}`,
    `--beta1 is 0.5 in this run, the checkpoint was written with 0.9${used}`,
    `--beta2 is 0.99 in this run, the checkpoint was written with 0.999${used}`,
    `--d-updates is 2 in this run, the checkpoint was written with 1${used}`,
    `--wire-dtype is "bfloat16" in this run, the checkpoint was written with "float32"${used}`,
  ]);
  // A checkpoint from before --wire-dtype was recorded was written with float32, one from before --d-updates with 1.
  assert.deepEqual(resumeWarnings(then, { ...then, wireDtype: undefined, discriminatorUpdates: undefined }), []);
});

test('a resume that scores G with another --eval-samples than the checkpoint had says its FIDs do not compare; one that does not score says nothing of it', () => {
  const then = { seed: 1, batchSize: 128, evalEvery: 1000, evalSamples: 10_000 };
  assert.deepEqual(resumeWarnings({ ...then, evalSamples: 500 }, then), [
    "--eval-samples is 500 in this run, the checkpoint was written with 10000; this run's value is used from here on: evaluations.json then holds FIDs of both counts, which do not compare (an FID falls as the samples grow)",
  ]);
  assert.deepEqual(resumeWarnings({ ...then, evalEvery: 0, evalSamples: 500 }, then), []);
  // The checkpoint's run scored nothing: evaluations.json holds no FIDs of its count.
  assert.deepEqual(resumeWarnings({ ...then, evalSamples: 500 }, { ...then, evalEvery: 0 }), []);
  assert.deepEqual(resumeWarnings(then, then), []);
});
