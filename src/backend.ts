import fs from 'node:fs';
import path from 'node:path';
import { BackendChoice, requireGpuProblem } from './backend-choice';
import { tf } from './model/tf';
import { registerNativeMatMul } from './model/native-matmul';
import { registerWasmKernels } from './model/wasm-kernels';
import { GanfleetError } from './util/errors';
import { nativeAddon } from './util/native';
import { softLimit } from './util/process';

export interface BackendSelection {
  /** The tfjs backend name now active: 'tensorflow', 'wasm' or 'cpu'. */
  name: string;
  /** Where TensorFlow computes: a GPU only when tfjs-node-gpu found a usable one. */
  device: 'gpu' | 'cpu';
  /** Which package provided it, and why the ones before it were skipped. */
  notes: string[];
}

/** What a worker reports to its coordinator: the backend, and for TensorFlow the device, since tfjs-node-gpu without a usable GPU computes on the CPU. */
export function backendLabel(b: BackendSelection): string {
  return b.name === 'tensorflow' ? `tensorflow (${b.device.toUpperCase()})` : b.name;
}

/**
 * What libtensorflow 2.9 (the one tfjs-node 4.22 downloads) loads to use a GPU.
 * Without them tfjs-node-gpu still registers its backend, on the CPU.
 */
const GPU_LIBRARIES = "a visible CUDA device, CUDA 11's libcudart.so.11.0 and libcublas.so.11, and cuDNN 8's libcudnn.so.8";

/**
 * The native TensorFlow bindings are optional peers: this repo never installs
 * them (their install script downloads libtensorflow). A GPU user runs
 * `npm i --no-save --save-optional @tensorflow/tfjs-node-gpu@<our tfjs-core
 * version>` (README: GPU says why those flags). A different
 * version would bring its own tfjs-core, whose code would share this
 * process's engine and kernel registry (tfjs keeps both on the global
 * object), a pairing nothing tests, so that is refused with the fix.
 */
const NATIVE_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'];

/** Why `pkg` cannot serve as this process's backend without loading it (not installed, another version), or null. */
function installProblem(pkg: string): string | null {
  let version: string;
  try {
    version = require(`${pkg}/package.json`).version;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') return `${pkg} is not installed`;
    // There, but its package.json does not parse (an install cut short): "not installed" would hide it.
    return `${pkg}'s package.json cannot be read (${(e as Error).message.split('\n')[0].trim()}); reinstall it: npm i --no-save --save-optional ${pkg}@${tf.version_core}`;
  }
  if (version !== tf.version_core) {
    return `${pkg}@${version} does not match @tensorflow/tfjs-core@${tf.version_core}; run npm i --no-save --save-optional ${pkg}@${tf.version_core}`;
  }
  return null;
}

/** Why workers handed GPUs would compute on the CPU instead, or null; the GPU binding is not loaded here. */
export function gpuBackendProblem(): string | null {
  return installProblem(NATIVE_PACKAGES[0]) ?? missingBinding(NATIVE_PACKAGES[0]);
}

/**
 * Where `pkg`'s loader looks for its binding, as node-pre-gyp finds it: the package's module_path for the newest
 * Node-API version that both it and this Node support (lib/napi-v8 on Node 20), or null where there is none.
 */
function bindingFile(pkg: string): string | null {
  const manifest = require.resolve(`${pkg}/package.json`);
  const binary = (require(manifest) as { binary?: { module_path?: string; napi_versions?: number[] } }).binary;
  const usable = (binary?.napi_versions ?? []).filter((v) => v <= Number(process.versions.napi));
  if (!binary?.module_path || usable.length === 0) return null;
  const dir = binary.module_path.replace('{napi_build_version}', String(Math.max(...usable)));
  return path.join(path.dirname(manifest), dir, 'tfjs_binding.node');
}

/**
 * Why `pkg`, installed at our version, has no binding to load, or null. The npm tarball has none: tfjs-node's
 * install script downloads libtensorflow and puts the binding where bindingFile looks.
 */
function missingBinding(pkg: string): string | null {
  const file = bindingFile(pkg);
  if (file && fs.existsSync(file)) return null;
  return `${pkg}'s install script, which downloads libtensorflow and its binding, has not run: npm 12 runs a dependency's install script only where package.json's allowScripts approves it, and --ignore-scripts never does; run npm rebuild ${pkg} where the network is reachable`;
}

/**
 * tfjs-node(-gpu) 4.22's kernels call util.isNullOrUndefined (nodejs_kernel_backend.js's createTensorsTypeOpAttr, on
 * every op) and util.isArray, which Node 23 removed (isNullOrUndefined; isArray is only deprecated). Without them the
 * backend loads and reports its GPU, and then every op throws "(0 , util_1.isNullOrUndefined) is not a function".
 * They read the functions off node:util at each call, so putting them back before any op is enough.
 */
function restoreUtilForTfjsNode(): void {
  const util = require('node:util') as Record<string, unknown>;
  if (typeof util.isNullOrUndefined !== 'function') util.isNullOrUndefined = (v: unknown) => v === null || v === undefined;
  if (typeof util.isArray !== 'function') util.isArray = Array.isArray;
}

function tryNative(pkg: string): string | null {
  const problem = installProblem(pkg);
  if (problem) return problem;
  restoreUtilForTfjsNode();
  try {
    require(pkg);
  } catch (e) {
    // Installed at our version, as installProblem has just checked.
    const failed = `${pkg}@${tf.version_core} failed to load: ${(e as Error).message.split('\n')[0].trim()}`;
    const missing = missingBinding(pkg);
    return missing ? `${failed} (${missing})` : failed;
  }
  return null;
}

async function activate(name: string, notes: string[]): Promise<boolean> {
  if (name === 'wasm') {
    require('@tensorflow/tfjs-backend-wasm');
    // Before the conv kernels: they take whichever BatchMatMul is registered.
    notes.push(registerNativeMatMul().note);
    registerWasmKernels();
  }
  if (name === 'cpu') require('@tensorflow/tfjs-backend-cpu');
  return tf.setBackend(name);
}

/**
 * Off wasm, whose matmul note says it, whether the addon runs Adam, the average and the wire's conversions (a
 * coordinator's step: about 0.1 ms against 3 ms in JavaScript).
 */
export function addonNote(): string {
  const { addon, why } = nativeAddon();
  return addon ? `native kernels (${why}) for Adam, averaging and the wire; matmul is the backend's` : `no native kernels (Adam, averaging and the wire in JavaScript): ${why}`;
}

/**
 * Below this address-space limit (`ulimit -v`, RLIMIT_AS), a wasm backend that did not start is put down to the
 * limit. V8 reserves about 10 GiB of address space for each wasm memory (its bounds are checked by guard pages), so
 * under a lower limit the wasm backend cannot start, and tfjs says no more than that it did not (PROD silences its warning).
 */
const WASM_ADDRESS_SPACE = 16 * 2 ** 30;

/** Null once `name` is the active backend, else why it is not. */
async function activateOrWhy(name: string, notes: string[]): Promise<string | null> {
  try {
    if (await activate(name, notes)) return null;
    const limit = name === 'wasm' ? softLimit('Max address space') : null;
    if (limit === null || limit >= WASM_ADDRESS_SPACE) return 'it did not initialise';
    return `it did not initialise: ulimit -v ${Math.floor(limit / 1024)} (KiB) leaves too little address space for its memory, for which V8 reserves about 10 GiB; raise the limit above about 12 GiB, remove it, or run on Node 24, which does without the reservation`;
  } catch (e) {
    return (e as Error).message.split('\n')[0];
  }
}

/**
 * Activates the backend `choice` names, trying each candidate in turn. With
 * `requireGpu`, anything but TensorFlow on a GPU is an error: a GPU
 * deployment that silently trains on the CPU wastes the GPU it holds.
 */
export async function selectBackend(choice: BackendChoice, requireGpu = false): Promise<BackendSelection> {
  // ganfleet logs its own backend choice and why; PROD silences tfjs's
  // "install our node backend" banner, which would only repeat that.
  tf.env().set('PROD', true);
  const notes: string[] = [];
  const native = choice === 'auto' || choice === 'tensorflow';
  const refused = requireGpu ? requireGpuProblem(choice) : null;
  if (refused) throw new GanfleetError('GPU_REQUIRED', refused);
  if (native) {
    // TensorFlow otherwise maps nearly all of every visible GPU's memory when it starts, and a second process on
    // the same GPU (local --gpus 0 --workers 2, a coordinator on auto) runs out. The user's own setting wins.
    process.env.TF_FORCE_GPU_ALLOW_GROWTH ??= 'true';
    for (const pkg of NATIVE_PACKAGES) {
      let why = tryNative(pkg);
      if (why === null) {
        const failed = await activateOrWhy('tensorflow', notes);
        if (failed === null) {
          // tfjs-node's backend says whether TensorFlow registered a GPU device (false for tfjs-node itself).
          const device = (tf.backend() as { isUsingGpuDevice?: boolean }).isUsingGpuDevice ? 'gpu' : 'cpu';
          if (pkg === NATIVE_PACKAGES[0] && device === 'cpu') {
            notes.push(`${pkg} found no usable GPU and computes on the CPU: TensorFlow 2.9 needs ${GPU_LIBRARIES}; its log above names what it could not load`);
          }
          notes.push(addonNote(), `using ${pkg}`);
          if (requireGpu && device === 'cpu') throw new GanfleetError('GPU_REQUIRED', `--require-gpu: TensorFlow computes on the CPU here (${notes.join('; ')})`);
          return { name: 'tensorflow', device, notes };
        }
        why = `${pkg} loaded, but its tensorflow backend did not start (${failed})`;
      }
      notes.push(`skipped ${why}`);
    }
    if (requireGpu) throw new GanfleetError('GPU_REQUIRED', `--require-gpu: no native backend could be loaded (${notes.join('; ')})`);
    if (choice === 'tensorflow') {
      // A refusal, not a crash: under `local --gpus` (its coordinator on wasm, so nothing fails before the workers) a restart fails the same way.
      throw new GanfleetError('BACKEND_UNAVAILABLE', `--backend tensorflow: no native backend could be loaded (${notes.join('; ')})`);
    }
  }
  for (const name of choice === 'auto' ? ['wasm', 'cpu'] : [choice]) {
    const why = await activateOrWhy(name, notes);
    if (why === null) {
      if (name !== 'wasm') notes.push(addonNote());
      notes.push(`using ${name}`);
      return { name, device: 'cpu', notes };
    }
    notes.push(`skipped ${name}: ${why}`);
  }
  throw new Error(`no TensorFlow.js backend could be started (${notes.join('; ')})`);
}
