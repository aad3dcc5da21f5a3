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
 * G as a TensorFlow.js LayersModel: the `model.json` whose manifest names
 * one `weights.bin`, the flat generator as little-endian float32 in layout
 * order (which is the manifest's order).
 */
export function generatorModelJson(model: GanModel, generator: Float32Array): object {
  model.generatorLayout.checkLength(generator);
  const { topology, weightNames } = model.generatorTopology();
  const weights = model.generatorLayout.entries.map((e) => ({ name: weightNames[e.name], shape: [...e.shape], dtype: 'float32' }));
  return {
    format: 'layers-model',
    generatedBy: 'ganfleet',
    convertedBy: null,
    modelTopology: topology,
    weightsManifest: [{ paths: [GENERATOR_WEIGHTS_FILE], weights }],
  };
}

export const GENERATOR_WEIGHTS_FILE = 'weights.bin';
