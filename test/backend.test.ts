import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { addonNote } from '../src/backend';
import { tf } from '../src/model/tf';
import { installedNativePackage } from './harness';
import { StandIns, standInDir, tensorflowStandIn } from './stand-ins';

/** A real package in node_modules is found before the stand-ins in NODE_PATH. */
const standInTest = (name: string, fn: () => void) =>
  test(name, { skip: installedNativePackage && `${installedNativePackage} is installed, and it would be loaded in place of the stand-ins` }, fn);

/**
 * selectBackend in a child whose NODE_PATH holds stand-ins for the optional
 * native packages (they cannot be installed here): what it picks, and the
 * notes that say why it skipped the others.
 */
function select(choice: string, packages: StandIns): { status: number | null; out: string } {
  return withStandIns(packages, `backend.selectBackend(${JSON.stringify(choice)})`);
}

/** Logs what `expression` (over `backend`, the module) resolves to, as JSON, or its error's message and [code] with exit 1. */
function withStandIns(packages: StandIns, expression: string, env: NodeJS.ProcessEnv = {}): { status: number | null; out: string } {
  const dir = standInDir(packages);
  const backend = path.join(__dirname, '..', 'src', 'backend');
  const script = `const backend = require(${JSON.stringify(backend)}); Promise.resolve().then(() => ${expression}).then((r) => console.log(JSON.stringify(r)), (e) => { console.log(e.message + (e.code ? ' [' + e.code + ']' : '')); process.exit(1); })`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env, NODE_PATH: dir } });
  fs.rmSync(dir, { recursive: true, force: true });
  return { status: r.status, out: r.stdout + r.stderr };
}

standInTest('--backend auto skips a native package that loads but registers no backend here (a second tfjs-core), saying so, and falls back to wasm', () => {
  const empty = { version: tf.version_core, index: 'module.exports = {};' };
  const auto = select('auto', { '@tensorflow/tfjs-node-gpu': empty, '@tensorflow/tfjs-node': { version: '0.0.1', index: '' } });
  assert.equal(auto.status, 0, auto.out);
  const chosen = JSON.parse(auto.out);
  assert.equal(chosen.name, 'wasm');
  assert.match(chosen.notes[0], /skipped @tensorflow\/tfjs-node-gpu loaded, but its tensorflow backend did not start \(Backend name 'tensorflow' not found in registry\)$/);
  assert.match(chosen.notes[1], new RegExp(`skipped @tensorflow/tfjs-node@0\\.0\\.1 does not match @tensorflow/tfjs-core@${tf.version_core.replace(/\./g, '\\.')}; run npm i --no-save --save-optional @tensorflow/tfjs-node@`));
  const strict = select('tensorflow', { '@tensorflow/tfjs-node-gpu': empty });
  assert.equal(strict.status, 1, strict.out);
  assert.match(strict.out, /--backend tensorflow: no native backend could be loaded \(.*loaded, but its tensorflow backend did not start/);
  const broken = select('auto', {
    '@tensorflow/tfjs-node-gpu': { version: tf.version_core, index: "throw new Error('libcudart.so.11.0: cannot open shared object file');", files: ['lib/napi-v8/tfjs_binding.node'] },
  });
  assert.match(JSON.parse(broken.out).notes[0], /failed to load: libcudart\.so\.11\.0: cannot open shared object file$/);
});

standInTest('--backend auto says that a native package whose package.json does not parse is broken, not that it is not installed', () => {
  const dir = standInDir({ '@tensorflow/tfjs-node': { version: tf.version_core, index: '' } });
  fs.writeFileSync(path.join(dir, '@tensorflow', 'tfjs-node', 'package.json'), '{"name": "@tensorflow/tfjs-node", "vers');
  const script = `require(${JSON.stringify(path.join(__dirname, '..', 'src', 'backend'))}).selectBackend('auto').then((r) => console.log(JSON.stringify(r)))`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_PATH: dir } });
  fs.rmSync(dir, { recursive: true, force: true });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const chosen = JSON.parse(r.stdout);
  assert.equal(chosen.name, 'wasm');
  assert.match(chosen.notes[1], new RegExp(`^skipped @tensorflow/tfjs-node's package\\.json cannot be read \\(.*\\); reinstall it: npm i --no-save --save-optional @tensorflow/tfjs-node@${tf.version_core.replace(/\./g, '\\.')}$`));
});

standInTest('--backend auto says when a native package is installed without running its install script (npm 12 without allowScripts, --ignore-scripts)', () => {
  // What the real 4.22.0 package throws when its install script never ran: the tarball has no lib/.
  const unbuilt = {
    version: tf.version_core,
    index: "throw new Error('The Node.js native addon module (tfjs_binding.node) can not be found at path: ' + __dirname + '/lib/napi-v8/tfjs_binding.node. \\nPlease run command npm rebuild');",
  };
  const auto = select('auto', { '@tensorflow/tfjs-node-gpu': unbuilt });
  assert.equal(auto.status, 0, auto.out);
  const chosen = JSON.parse(auto.out);
  assert.equal(chosen.name, 'wasm');
  const why = /@tensorflow\/tfjs-node-gpu's install script, which downloads libtensorflow and its binding, has not run: npm 12 runs a dependency's install script only where package\.json's allowScripts approves it, and --ignore-scripts never does; run npm rebuild @tensorflow\/tfjs-node-gpu where the network is reachable/;
  // What local --gpus says before it starts the workers, without loading the binding.
  assert.match(JSON.parse(withStandIns({ '@tensorflow/tfjs-node-gpu': unbuilt }, 'backend.gpuBackendProblem()').out), why);
  assert.equal(withStandIns({ '@tensorflow/tfjs-node-gpu': { ...unbuilt, files: ['lib/napi-v8/tfjs_binding.node'] } }, 'backend.gpuBackendProblem()').out.trim(), 'null');
  // A binding built for another Node-API version is not the one the package loads on this Node.
  assert.match(JSON.parse(withStandIns({ '@tensorflow/tfjs-node-gpu': { ...unbuilt, files: ['lib/napi-v3/tfjs_binding.node'] } }, 'backend.gpuBackendProblem()').out), why);
  assert.match(chosen.notes[0], new RegExp(String.raw`failed to load: The Node\.js native addon module \(tfjs_binding\.node\) can not be found at path: .*tfjs_binding\.node\. \(` + why.source + String.raw`\)$`));
});

test('package.json says which dependencies may run install scripts, for every one the lockfile marks, and approves the native TensorFlow packages', () => {
  // npm 12 skips a dependency's install script unless allowScripts approves it; the TensorFlow ones download
  // libtensorflow, and without them a GPU worker silently computes on wasm.
  const root = path.join(__dirname, '..', '..');
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const lock = JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8'));
  const reviewed = pkg.allowScripts as Record<string, boolean>;
  assert.equal(reviewed['@tensorflow/tfjs-node-gpu'], true);
  assert.equal(reviewed['@tensorflow/tfjs-node'], true);
  const unreviewed = Object.entries(lock.packages as Record<string, { hasInstallScript?: boolean }>)
    .filter(([where, p]) => where !== '' && p.hasInstallScript)
    .map(([where]) => where.slice(where.lastIndexOf('node_modules/') + 'node_modules/'.length))
    .filter((name) => typeof reviewed[name] !== 'boolean');
  assert.deepEqual(unreviewed, [], 'add each to allowScripts in package.json (npm install-scripts approve|deny), after reading what its script does');
});

const selectedWithGrowth = (choice: string, requireGpu: boolean) =>
  `backend.selectBackend(${JSON.stringify(choice)}, ${requireGpu}).then((r) => ({ ...r, label: backend.backendLabel(r), growth: globalThis.allowGrowthAtLoad }))`;

standInTest('tfjs-node-gpu that finds no usable GPU is reported as TensorFlow on the CPU, and --require-gpu refuses it (GPU_REQUIRED)', () => {
  const cpuOnly = { '@tensorflow/tfjs-node-gpu': tensorflowStandIn(false) };
  const auto = withStandIns(cpuOnly, selectedWithGrowth('auto', false));
  assert.equal(auto.status, 0, auto.out);
  const chosen = JSON.parse(auto.out);
  assert.equal(chosen.name, 'tensorflow');
  assert.equal(chosen.device, 'cpu');
  assert.equal(chosen.label, 'tensorflow (CPU)');
  assert.match(chosen.notes.join('; '), /@tensorflow\/tfjs-node-gpu found no usable GPU and computes on the CPU: TensorFlow 2\.9 needs a visible CUDA device, CUDA 11's libcudart\.so\.11\.0 .* cuDNN 8's libcudnn\.so\.8/);
  const required = withStandIns(cpuOnly, selectedWithGrowth('tensorflow', true));
  assert.equal(required.status, 1, required.out);
  assert.match(required.out, /^--require-gpu: TensorFlow computes on the CPU here \(.*found no usable GPU/);
  const onGpu = withStandIns({ '@tensorflow/tfjs-node-gpu': tensorflowStandIn(true) }, selectedWithGrowth('auto', true));
  assert.equal(onGpu.status, 0, onGpu.out);
  assert.deepEqual(JSON.parse(onGpu.out), { name: 'tensorflow', device: 'gpu', notes: [addonNote(), 'using @tensorflow/tfjs-node-gpu'], label: 'tensorflow (GPU)', growth: 'true' });
  // Not installed at all: --require-gpu fails rather than fall back to wasm.
  const none = withStandIns({}, selectedWithGrowth('auto', true));
  assert.equal(none.status, 1, none.out);
  assert.match(none.out, /^--require-gpu: no native backend could be loaded \(skipped @tensorflow\/tfjs-node-gpu is not installed/);
  // GPU_REQUIRED, which local does not restart a worker for, in each refusal.
  for (const refusal of [required, none]) assert.match(refusal.out, /\[GPU_REQUIRED\]$/m);
});

standInTest('tfjs-node 4.22 kernels, which call util.isNullOrUndefined (removed in Node 23), run on Node 23 and later', () => {
  const cpu = JSON.stringify(require.resolve('@tensorflow/tfjs-backend-cpu'));
  const core = JSON.stringify(require.resolve('@tensorflow/tfjs-core'));
  // As tfjs-node-gpu 4.22's kernels/Add.js: createTensorsTypeOpAttr calls (0, util_1.isNullOrUndefined)(dtype) first.
  const gpu = tensorflowStandIn(true);
  gpu.index += `
      const util_1 = require('util');
      const cpuAdd = require(${core}).getKernel('Add', 'cpu');
      require(${core}).registerKernel({ kernelName: 'Add', backendName: 'tensorflow', kernelFunc: (args) => {
        if ((0, util_1.isNullOrUndefined)(args.inputs.a.dtype) || !(0, util_1.isArray)([])) throw new Error('Invalid input tensors value.');
        return cpuAdd.kernelFunc(args);
      } });
      require(${cpu});`;
  // Node 20 and 22 still have them: take them away, as Node 23 and later do.
  const r = withStandIns(
    { '@tensorflow/tfjs-node-gpu': gpu },
    `(delete require('util').isNullOrUndefined, backend.selectBackend('tensorflow', true)).then(() => Array.from(require('@tensorflow/tfjs-core').add([1, 2], [3, 4]).dataSync()))`,
  );
  assert.equal(r.status, 0, r.out);
  assert.deepEqual(JSON.parse(r.out.split('\n')[0]), [4, 6], r.out);
});

standInTest('TensorFlow is told to grow its GPU memory unless the environment says otherwise, so processes can share a GPU', () => {
  const gpu = { '@tensorflow/tfjs-node-gpu': tensorflowStandIn(true) };
  assert.equal(JSON.parse(withStandIns(gpu, selectedWithGrowth('auto', false), { TF_FORCE_GPU_ALLOW_GROWTH: undefined }).out).growth, 'true');
  assert.equal(JSON.parse(withStandIns(gpu, selectedWithGrowth('auto', false), { TF_FORCE_GPU_ALLOW_GROWTH: 'false' }).out).growth, 'false');
});

test('a wasm backend that cannot reserve its memory under `ulimit -v` says so, rather than only that it did not initialise', { skip: process.platform !== 'linux' && 'ulimit -v and /proc/self/limits are Linux' }, () => {
  const backend = path.join(__dirname, '..', 'src', 'backend');
  const script = `require(${JSON.stringify(backend)}).selectBackend(process.argv[1]).then((r) => console.log(JSON.stringify(r.notes)), (e) => { console.log(e.message); process.exit(1); })`;
  // Node 24's V8 gives a wasm memory without its guard region where the reservation fails; Node 20's and 22's cannot.
  const reserves = Number(process.versions.node.split('.')[0]) < 24;
  for (const [choice, status] of [['wasm', 1], ['auto', 0]] as const) {
    // 8 GB: room for Node and the cpu backend, not for a wasm memory's reservation.
    const r = spawnSync('bash', ['-c', 'ulimit -v 8000000 && exec "$0" -e "$1" "$2"', process.execPath, script, choice], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, reserves ? status : 0, r.stdout + r.stderr);
    if (reserves) assert.match(r.stdout, /skipped wasm: it did not initialise: ulimit -v 8000000 \(KiB\) leaves too little address space for its memory, for which V8 reserves about 10 GiB; raise the limit above about 12 GiB, remove it, or run on Node 24, which does without the reservation\b/);
    else assert.equal(JSON.parse(r.stdout).at(-1), 'using wasm', r.stdout);
  }
});
