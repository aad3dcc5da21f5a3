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
  // The weights from the file the manifest names, as a loader from a URL or file:// reads them: the one written.
  assert.deepEqual(json.weightsManifest.map((group: { paths: string[] }) => group.paths), [['weights.bin']]);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['model.json', 'weights.bin']);
  const bin = fs.readFileSync(path.join(dir, json.weightsManifest[0].paths[0]));
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

/**
 * The book's generators written out with plain tf ops and literal constants (LeakyReLU slope 0.01,
 * Keras' BatchNormalization epsilon 1e-3), independent of the constants the models and the export share.
 */
function bookGenerator(arch: string, g: Record<string, tf.Tensor>, z: tf.Tensor2D): tf.Tensor {
  return tf.tidy(() => {
    if (arch === 'mlp') {
      const hidden = tf.leakyRelu(tf.add(tf.matMul(z, g['g/dense1/kernel'] as tf.Tensor2D), g['g/dense1/bias']), 0.01);
      return tf.tanh(tf.add(tf.matMul(hidden as tf.Tensor2D, g['g/dense2/kernel'] as tf.Tensor2D), g['g/dense2/bias']));
    }
    const n = z.shape[0];
    const deconv = (x: tf.Tensor4D, layer: string, stride: number, filters: number) =>
      tf.add(tf.conv2dTranspose(x, g[`${layer}/kernel`] as tf.Tensor4D, [n, x.shape[1] * stride, x.shape[2] * stride, filters], stride, 'same'), g[`${layer}/bias`]) as tf.Tensor4D;
    const bn = (x: tf.Tensor4D, layer: string) =>
      tf.batchNorm(x, g[`${layer}/moving_mean`] as tf.Tensor1D, g[`${layer}/moving_variance`] as tf.Tensor1D, g[`${layer}/beta`] as tf.Tensor1D, g[`${layer}/gamma`] as tf.Tensor1D, 1e-3);
    let h = tf.reshape(tf.add(tf.matMul(z, g['g/dense/kernel'] as tf.Tensor2D), g['g/dense/bias']), [n, 7, 7, 256]) as tf.Tensor4D;
    h = tf.leakyRelu(bn(deconv(h, 'g/deconv1', 2, 128), 'g/bn1'), 0.01);
    h = tf.leakyRelu(bn(deconv(h, 'g/deconv2', 1, 64), 'g/bn2'), 0.01);
    return tf.tanh(deconv(h, 'g/deconv3', 2, 1));
  });
}

for (const arch of ['mlp', 'dcgan']) test(`the ${arch} generator and its export are the book's: LeakyReLU slope 0.01, Keras' BatchNorm epsilon 1e-3 and momentum 0.99`, async () => {
  await selectBackend('cpu');
  const model = createModel(arch);
  const params = model.init(new Rng(4));
  // Non-zero biases (half the pre-activations below zero show the slope), and moving variances near 0, where epsilon shows.
  for (let i = 0; i < params.generator.length; i++) params.generator[i] += 0.01 * Math.cos(i);
  for (const e of model.generatorLayout.entries) if (e.name.endsWith('/moving_variance')) params.generator.fill(0.002, e.offset, e.offset + e.size);
  const g = model.generatorLayout.toTensors(params.generator);
  const z = tf.tensor2d(new Rng(8).fillNormal(new Float32Array(4 * model.zDim)), [4, model.zDim]);
  const images = model.generate(g, z).dataSync();
  assertClose(images, bookGenerator(arch, g, z).dataSync(), 1e-5, 1e-4, 'images');
  const { topology } = model.generatorTopology() as { topology: { config: { layers: { class_name: string; config: Record<string, unknown> }[] } } };
  for (const layer of topology.config.layers) {
    if (layer.class_name === 'LeakyReLU') assert.equal(layer.config.alpha, 0.01, layer.config.name as string);
    if (layer.class_name === 'BatchNormalization') assert.deepEqual([layer.config.epsilon, layer.config.momentum], [1e-3, 0.99], layer.config.name as string);
  }
  tf.dispose([z, ...Object.values(g)]);
});
