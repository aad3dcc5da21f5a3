import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

const SRC = path.join(__dirname, '..', '..', 'src');

/** The modules each file under src/<dir> imports, as written, from `import … from`, `import '…'` (for its side effects) and `require(…)`. */
function importsOf(dir: string): { file: string; from: string }[] {
  return fs.readdirSync(path.join(SRC, dir)).filter((name) => name.endsWith('.ts')).flatMap((name) => {
    const source = fs.readFileSync(path.join(SRC, dir, name), 'utf8');
    // A bare import loads its module as surely as one that names what it takes; tsc takes double quotes as well as single.
    return [...source.matchAll(/(?:\bfrom\s+|\brequire\(\s*|\bimport\(\s*|^import\s+)(['"])([^'"]+)\1/gm)].map((m) => ({ file: `${dir}/${name}`, from: m[2] }));
  });
}

/** Imports outside `dir` that `allowed` does not take: another src folder by its path, or a package by its name. */
function outside(dir: string, allowed: (from: string) => boolean): string[] {
  return importsOf(dir).filter(({ from }) => !from.startsWith('./') && !allowed(from)).map(({ file, from }) => `${file} imports ${from}`);
}

const SHARED_UTIL = /^\.\.\/util\/(errors|rng|native|text|process|write)$/;

test('the model is pure math: it imports tfjs, an image shape and a few utilities, nothing of the network, files or the processes', () => {
  // The @tensorflow/tfjs bundle registers the gradients tfjs-core leaves out (model/tf.ts).
  assert.deepEqual(outside('model', (from) => from === '@tensorflow/tfjs-core' || from === '@tensorflow/tfjs' || from === '../data/image' || /^\.\.\/util\/(errors|rng|native)$/.test(from)), []);
});

test('the protocol is shared by both sides: it imports neither the coordinator nor the worker, nor the model', () => {
  assert.deepEqual(outside('protocol', (from) => from.startsWith('node:') || from === 'msgpackr' || SHARED_UTIL.test(from)), []);
});

test('data and util sit below everything else: they import no other src folder but util', () => {
  assert.deepEqual(outside('data', (from) => from.startsWith('node:') || from === 'zlib' || SHARED_UTIL.test(from)), []);
  assert.deepEqual(outside('util', (from) => !from.startsWith('../')), []);
});

test("a worker loads nothing of the coordinator: it may run on a machine that has only the worker's part", () => {
  assert.deepEqual(outside('worker', (from) => !from.startsWith('../coordinator')), []);
});
