import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { selectBackend } from '../src/backend';
import { averageGradients } from '../src/coordinator/aggregate';
import { loadMnist, toTanhRange } from '../src/data/mnist';
import { IMAGE_SIZE } from '../src/data/image';
import { autodiffDiscriminatorStep, autodiffGeneratorStep } from '../src/model/autodiff';
import { GanModel, GeneratorPass, StepOutput, createModel, disposeGeneratorPass, disposeTensors } from '../src/model';
import { tf, Tensors } from '../src/model/tf';
import { Rng } from '../src/util/rng';
import { nativeAddon } from '../src/util/native';
import { assertClose } from './helpers';

const UNION = 96;
const train = loadMnist('train');

function realBatch(start: number, n: number): tf.Tensor2D {
  const x = toTanhRange(train.images.subarray(start * IMAGE_SIZE, (start + n) * IMAGE_SIZE), new Float32Array(n * IMAGE_SIZE));
  return tf.tensor2d(x, [n, IMAGE_SIZE]);
}

/** Rows [start, start+n) of a 2-D tensor, as its own tensor. */
function rows(t: tf.Tensor2D, start: number, n: number): tf.Tensor2D {
  return tf.slice(t, [start, 0], [n, t.shape[1]]);
}

for (const [backend, loss] of [['cpu', 'bce'], ['wasm', 'bce'], ['cpu', 'lsgan'], ['wasm', 'lsgan']] as const) {
  describe(`MLP gradients, ${loss} loss, on ${backend}`, () => {
    let model: GanModel;
    let g: Tensors;
    let d: Tensors;
    let real: tf.Tensor2D;
    let z: tf.Tensor2D;

    before(async () => {
      await selectBackend(backend);
      model = createModel('mlp', loss);
      const rng = new Rng(7);
      const p = model.init(rng);
      // Non-zero biases, so their gradients are exercised too.
      for (const flat of [p.generator, p.discriminator]) for (let i = 0; i < flat.length; i++) flat[i] += 0.01 * Math.sin(i);
      g = model.generatorLayout.toTensors(p.generator);
      d = model.discriminatorLayout.toTensors(p.discriminator);
      real = realBatch(0, UNION);
      z = tf.tensor2d(rng.fillNormal(new Float32Array(UNION * model.zDim)), [UNION, model.zDim]);
    });

    /** Runs a step on a fresh generator pass over z, then frees the pass. */
    function withPass(zz: tf.Tensor2D, step: (p: GeneratorPass) => StepOutput): StepOutput {
      const pass = model.forwardGenerator(g, zz);
      try {
        return step(pass);
      } finally {
        disposeGeneratorPass(pass);
      }
    }

    function assertSameStep(actual: StepOutput, expected: StepOutput, what: string): void {
      assertClose(actual.gradients, expected.gradients, 2e-6, 2e-4, `${what} gradients`);
      assertClose([actual.loss, actual.dFake, actual.dReal ?? 0], [expected.loss, expected.dFake, expected.dReal ?? 0], 1e-5, 1e-5, `${what} stats`);
    }

    test('the D step from its real half (computed ahead, as a worker does) and its fake half equals the whole step', () => {
      const realPart = model.discriminatorRealPart!(d, real);
      try {
        const split = withPass(z, (p) => model.discriminatorStep(d, real, p, realPart));
        assertSameStep(split, withPass(z, (p) => model.discriminatorStep(d, real, p)), 'D split');
        assertSameStep(split, autodiffDiscriminatorStep(model, g, d, real, z), 'D split vs autodiff');
      } finally {
        disposeTensors(realPart.gradients);
        realPart.logits.dispose();
      }
    });

    test("the D step reports D's mean score on the real and on the fake batch (dReal, dFake), each its own", () => {
      const step = withPass(z, (p) => model.discriminatorStep(d, real, p));
      const fake = model.generate(g, z);
      // D(x) is a probability under bce, a raw score under lsgan.
      const score = (x: tf.Tensor2D) =>
        tf.tidy(() => {
          const logits = model.discriminate(d, x);
          return tf.mean(loss === 'bce' ? tf.sigmoid(logits) : logits).dataSync()[0];
        });
      assertClose([step.dReal!, step.dFake], [score(real), score(fake)], 1e-5, 1e-5, 'dReal, dFake');
      fake.dispose();
    });

    test('hand-written D step equals autodiff', () => {
      assertSameStep(withPass(z, (p) => model.discriminatorStep(d, real, p)), autodiffDiscriminatorStep(model, g, d, real, z), 'D');
    });

    test('hand-written G step equals autodiff', () => {
      assertSameStep(withPass(z, (p) => model.generatorStep(g, d, p)), autodiffGeneratorStep(model, g, d, z), 'G');
    });

    // The data-parallel invariant: each worker's gradient is its batch mean, so the
    // sample-weighted average over workers is the gradient of the mean over the union.
    for (const split of [[48, 48], [32, 40, 24]]) {
      test(`average over ${split.length} workers (${split.join('+')}) equals the gradient on the union`, () => {
        const parts = (step: (real: tf.Tensor2D, z: tf.Tensor2D) => StepOutput) => {
          let at = 0;
          return split.map((n) => {
            const [r, zz] = [rows(real, at, n), rows(z, at, n)];
            at += n;
            const out = step(r, zz);
            r.dispose();
            zz.dispose();
            return { gradients: out.gradients, samples: n };
          });
        };
        const dUnion = withPass(z, (p) => model.discriminatorStep(d, real, p)).gradients;
        const dParts = parts((r, zz) => withPass(zz, (p) => model.discriminatorStep(d, r, p)));
        assertClose(averageGradients(dParts, new Float32Array(dUnion.length)), dUnion, 2e-6, 2e-4, 'D average');
        const gUnion = withPass(z, (p) => model.generatorStep(g, d, p)).gradients;
        const gParts = parts((_r, zz) => withPass(zz, (p) => model.generatorStep(g, d, p)));
        assertClose(averageGradients(gParts, new Float32Array(gUnion.length)), gUnion, 2e-6, 2e-4, 'G average');
      });
    }

    test('steps leave no tensors behind', () => {
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) {
        withPass(z, (p) => model.discriminatorStep(d, real, p));
        withPass(z, (p) => model.generatorStep(g, d, p));
      }
      if (tf.memory().numTensors !== before) throw new Error(`${tf.memory().numTensors - before} tensors leaked`);
    });

    after(() => {
      disposeTensors(g);
      disposeTensors(d);
      real.dispose();
      z.dispose();
    });
  });
}

// Where the addon is built (CI requires it), wasm's products run on the native kernel, and linalg.ts's XNNPACK forms,
// which --no-native and a machine without a C compiler use, are never run above: the wasm cases again without it.
test('the wasm cases hold on XNNPACK too (GANFLEET_NATIVE=0)', { skip: !nativeAddon().addon && 'the wasm cases above already ran on XNNPACK' }, () => {
  const r = spawnSync(process.execPath, ['--test', '--test-force-exit', '--test-name-pattern=on wasm', __filename], {
    // Without NODE_TEST_CONTEXT, which this runner sets and which would send the child's report elsewhere than stdout.
    env: { ...process.env, GANFLEET_NATIVE: '0', NODE_TEST_CONTEXT: undefined },
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const passed = Number(/^# pass (\d+)$/m.exec(r.stdout)?.[1] ?? 0);
  assert.ok(passed > 0 && /^# fail 0$/m.test(r.stdout), r.stdout);
});
