import path from 'node:path';
import { GanModel } from '../model';
import { GENERATOR_WEIGHTS_FILE, generatorModelJson } from '../model/export';
import { makeDirectory, writeFileAtomic, writeJsonAtomic } from '../util/write';

/**
 * Writes G as a TensorFlow.js LayersModel, `model.json` plus its weights,
 * each replaced whole, so a run killed while exporting leaves no torn file.
 * `mayCommit` is asked before each file takes its name (writeFileAtomic).
 */
export function exportGenerator(model: GanModel, generator: Float32Array, dir: string, mayCommit?: () => boolean): void {
  const modelJson = generatorModelJson(model, generator);
  makeDirectory(dir);
  if (!writeFileAtomic(path.join(dir, GENERATOR_WEIGHTS_FILE), [new Uint8Array(generator.buffer, generator.byteOffset, generator.byteLength)], mayCommit)) return;
  writeJsonAtomic(path.join(dir, 'model.json'), modelJson, mayCommit);
}
