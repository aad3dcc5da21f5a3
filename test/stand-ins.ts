import fs from 'node:fs';
import path from 'node:path';
import { tf } from '../src/model/tf';
import { tempDir } from './harness';

/**
 * Stand-ins for the optional native packages, which cannot be installed here:
 * a folder to put in NODE_PATH, holding a package.json and an index.js for each.
 */
export type StandIns = Record<string, { version: string; index: string; files?: string[] }>;

/** The real 4.22.0 packages' node-pre-gyp entry: their loader looks for lib/napi-v8/tfjs_binding.node on Node 20. */
const BINARY = { module_name: 'tfjs_binding', module_path: './lib/napi-v{napi_build_version}', napi_versions: [3, 4, 5, 6, 7, 8] };

/** A new folder holding `packages`, for NODE_PATH. */
export function standInDir(packages: StandIns): string {
  const dir = tempDir('native-stand-ins');
  for (const [name, p] of Object.entries(packages)) {
    const at = path.join(dir, ...name.split('/'));
    fs.mkdirSync(at, { recursive: true });
    fs.writeFileSync(path.join(at, 'package.json'), JSON.stringify({ name, version: p.version, main: 'index.js', binary: BINARY }));
    fs.writeFileSync(path.join(at, 'index.js'), p.index);
    for (const f of p.files ?? []) {
      fs.mkdirSync(path.dirname(path.join(at, f)), { recursive: true });
      fs.writeFileSync(path.join(at, f), '');
    }
  }
  return dir;
}

/**
 * What the real tfjs-node-gpu 4.22 does at require time: it creates TensorFlow's context (which reads
 * TF_FORCE_GPU_ALLOW_GROWTH), falls back to the host CPU when no GPU device registers, and registers its
 * backend either way, with `isUsingGpuDevice` saying which (tfjs-node binding/tfjs_backend.cc).
 */
export function tensorflowStandIn(onGpu: boolean) {
  const core = JSON.stringify(require.resolve('@tensorflow/tfjs-core'));
  const cpu = JSON.stringify(require.resolve('@tensorflow/tfjs-backend-cpu'));
  return {
    version: tf.version_core,
    files: ['lib/napi-v8/tfjs_binding.node'],
    index: `globalThis.allowGrowthAtLoad = process.env.TF_FORCE_GPU_ALLOW_GROWTH;
      const { MathBackendCPU } = require(${cpu});
      require(${core}).registerBackend('tensorflow', () => Object.assign(new MathBackendCPU(), { isUsingGpuDevice: ${onGpu} }), 3);`,
  };
}
