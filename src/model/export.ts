import path from 'node:path';
import { makeDirectory, writeFileAtomic, writeJsonAtomic } from '../util/write';
import { GanModel } from './gan';
import { ParameterLayout } from './layout';

/**
 * G's topology as a Keras Sequential model (model.json's modelTopology),
 * with the LayersModel weight name of each layout entry: the entry's name
 * without its network prefix ("g/dense1/kernel" → "dense1/kernel").
 */
export function sequentialGenerator(layers: object[], layout: ParameterLayout): { topology: object; weightNames: Record<string, string> } {
  return {
    topology: {
      class_name: 'Sequential',
      config: { name: 'generator', layers },
      keras_version: 'tfjs-layers 4.22.0',
      backend: 'tensor_flow.js',
    },
    weightNames: Object.fromEntries(layout.entries.map((e) => [e.name, e.name.replace(/^g\//, '')])),
  };
}

/**
 * Writes G as a TensorFlow.js LayersModel: `model.json` plus `weights.bin`
 * (little-endian float32 in manifest order, which is the layout order),
 * each replaced whole, so a run killed while exporting leaves no torn file.
 */
export function exportGenerator(model: GanModel, generator: Float32Array, dir: string): void {
  model.generatorLayout.checkLength(generator);
  const { topology, weightNames } = model.generatorTopology();
  const weights = model.generatorLayout.entries.map((e) => ({ name: weightNames[e.name], shape: [...e.shape], dtype: 'float32' }));
  makeDirectory(dir);
  writeFileAtomic(path.join(dir, 'weights.bin'), [new Uint8Array(generator.buffer, generator.byteOffset, generator.byteLength)]);
  const modelJson = {
    format: 'layers-model',
    generatedBy: 'ganfleet',
    convertedBy: null,
    modelTopology: topology,
    weightsManifest: [{ paths: ['weights.bin'], weights }],
  };
  writeJsonAtomic(path.join(dir, 'model.json'), modelJson);
}
