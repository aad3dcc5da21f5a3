import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tfl from '@tensorflow/tfjs';
import { selectBackend } from '../src/backend';
import { createModel } from '../src/model';
import { exportGenerator } from '../src/coordinator/export';
import { tf } from '../src/model/tf';
import { Rng } from '../src/util/rng';
import { assertClose } from './helpers';
import { tempDir } from './harness';

for (const arch of ['mlp', 'dcgan']) test(`the exported ${arch} generator loads as a TensorFlow.js LayersModel and draws the same images`, async () => {
  await selectBackend('cpu');
  const model = createModel(arch);
  const params = model.init(new Rng(4));
  // Non-zero biases and BatchNorm statistics away from 0 and 1, so each weight is placed where it belongs.
  for (let i = 0; i < params.generator.length; i++) params.generator[i] += 0.01 * Math.cos(i);
  const dir = tempDir('export');
  exportGenerator(model, params.generator, dir);

  const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const bin = fs.readFileSync(path.join(dir, 'weights.bin'));
  const loaded = await tfl.loadLayersModel(
    tfl.io.fromMemory({
      modelTopology: json.modelTopology,
      weightSpecs: json.weightsManifest[0].weights,
      weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength),
    }),
  );
  const z = tf.tensor2d(new Rng(8).fillNormal(new Float32Array(6 * model.zDim)), [6, model.zDim]);
  const fromLayers = loaded.predict(z) as tf.Tensor;
  assert.deepEqual(fromLayers.shape, [6, 28, 28, 1]);
  const g = model.generatorLayout.toTensors(params.generator);
  assertClose(fromLayers.dataSync(), model.generate(g, z).dataSync(), 1e-5, 1e-4, 'images');
  fs.rmSync(dir, { recursive: true, force: true });
});
