/**
 * The most `local` could reach on this machine: the same training (the
 * workers' ShardCompute, the coordinator's averageGradients and Adam, the
 * same schedule of a D round then a G round a step) with no protocol at all.
 * Workers are threads of this process; weights and gradients lie in
 * SharedArrayBuffers that each side reads in place; a worker waits for its
 * round blocked in Atomics.wait, and the coordinator (this thread) for the
 * workers with Atomics.waitAsync. No frame is encoded, validated, copied or
 * sent, and nothing wakes an event loop on the workers' side.
 *
 * Not a mode of ganfleet: a worker here trusts its peer's memory and shares
 * its process, which a worker that can be anywhere cannot. It measures what
 * the machine itself allows (two cores for the workers and the optimizer),
 * so that ratios 2 and 3 of #6 can be read against it (docs/performance.md).
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { selectBackend } from '../src/backend';
import { Adam, KERAS_ADAM_DEFAULTS, applyDiscriminatorUpdates } from '../src/coordinator/adam';
import { averageGradients } from '../src/coordinator/aggregate';
import { loadMnist } from '../src/data/mnist';
import { createModel } from '../src/model';
import { Rng } from '../src/util/rng';
import { ShardCompute } from '../src/worker/compute';

const ROLE = 'ganfleet-bench-ceiling-worker';
/** ctl[0]: the round now asked for (-1: stop); ctl[1]: its phase, 0 = discriminator, 1 = generator. */
const CONTROL_BYTES = 16;

interface CeilingWorkerData {
  role: typeof ROLE;
  weights: SharedArrayBuffer;
  results: SharedArrayBuffer;
  control: SharedArrayBuffer;
  batch: number;
  seed: number;
}

/** Node 20 has Atomics.waitAsync; TypeScript's es2022 library does not declare it. */
const waitAsync = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number, timeoutMs: number): { async: boolean; value: Promise<string> | string } }).waitAsync;

function weightViews(weights: SharedArrayBuffer, sizes: { g: number; d: number }) {
  return { generator: new Float32Array(weights, 0, sizes.g), discriminator: new Float32Array(weights, 4 * sizes.g, sizes.d) };
}

/** One worker's results: the round it last finished, its gradients of G and of D (two halves, as a worker sends them). */
function resultViews(results: SharedArrayBuffer, sizes: { g: number; d: number }) {
  return {
    done: new Int32Array(results, 0, 1),
    generatorGradients: new Float32Array(results, 16, sizes.g),
    discriminatorGradients: new Float32Array(results, 16 + 4 * sizes.g, 2 * sizes.d),
  };
}

/** Ms per step over `steps` timed steps after `warmup`, with `workers` threads, `batch` images each. */
export async function sharedMemoryCeiling(workers: number, steps: number, warmup: number, batch: number): Promise<{ workers: number; msPerStep: number; imagesPerSecond: number }> {
  const { msPerStep } = await sharedMemoryTraining(workers, steps, warmup, batch);
  return { workers, msPerStep: Math.round(msPerStep * 1000) / 1000, imagesPerSecond: Math.round((workers * batch * 1000) / msPerStep) };
}

/**
 * Trains the MLP GAN (seed 1, worker k seeded k + 1, each drawing from the
 * whole training set) for `warmup` + `steps` steps; the time of the last
 * `steps`, and the weights at the end.
 */
export async function sharedMemoryTraining(workers: number, steps: number, warmup: number, batch: number): Promise<{ msPerStep: number; generator: Float32Array; discriminator: Float32Array }> {
  const model = createModel('mlp');
  const init = model.init(new Rng(1));
  const sizes = { g: init.generator.length, d: init.discriminator.length };
  const weights = new SharedArrayBuffer(4 * (sizes.g + sizes.d));
  const control = new Int32Array(new SharedArrayBuffer(CONTROL_BYTES));
  const shared = weightViews(weights, sizes);
  shared.generator.set(init.generator);
  shared.discriminator.set(init.discriminator);
  const threads: Worker[] = [];
  let failure: Error | null = null;
  const outputs: ReturnType<typeof resultViews>[] = [];
  const adam = { d: new Adam(sizes.d, KERAS_ADAM_DEFAULTS), g: new Adam(sizes.g, KERAS_ADAM_DEFAULTS) };
  const average = { d: new Float32Array(2 * sizes.d), g: new Float32Array(sizes.g) };
  const dUpdate = new Float32Array(sizes.d);
  let round = 0;
  const ask = async (phase: 0 | 1) => {
    round++;
    Atomics.store(control, 1, phase);
    Atomics.store(control, 0, round);
    Atomics.notify(control, 0);
    for (const out of outputs) {
      for (let seen = Atomics.load(out.done, 0); seen !== round; seen = Atomics.load(out.done, 0)) {
        // Waits only while the value is still the one seen: a notify in between is not missed.
        const wait = waitAsync(out.done, 0, seen, 1000);
        if (wait.async) await wait.value;
        if (failure) throw failure;
      }
    }
  };
  const step = async () => {
    await ask(0);
    averageGradients(outputs.map((o) => ({ gradients: o.discriminatorGradients, samples: batch })), average.d);
    applyDiscriminatorUpdates(adam.d, shared.discriminator, average.d, 2, dUpdate);
    await ask(1);
    averageGradients(outputs.map((o) => ({ gradients: o.generatorGradients, samples: batch })), average.g);
    adam.g.apply(shared.generator, average.g);
  };
  try {
    for (let k = 0; k < workers; k++) {
      const results = new SharedArrayBuffer(16 + 4 * (sizes.g + 2 * sizes.d));
      outputs.push(resultViews(results, sizes));
      const data: CeilingWorkerData = { role: ROLE, weights, results, control: control.buffer as SharedArrayBuffer, batch, seed: k + 1 };
      const thread = new Worker(__filename, { workerData: data });
      threads.push(thread);
      thread.on('error', (e) => (failure ??= e));
      thread.on('exit', (code) => {
        if (code !== 0) failure ??= new Error(`a ceiling worker exited with code ${code}`);
      });
      await new Promise((resolve, reject) =>
        thread
          .once('message', resolve)
          .once('error', reject)
          .once('exit', (code) => reject(new Error(`a ceiling worker exited with code ${code} before it was ready`))),
      );
    }
    for (let i = 0; i < warmup; i++) await step();
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) await step();
    const msPerStep = (performance.now() - t0) / steps;
    return { msPerStep, generator: shared.generator.slice(), discriminator: shared.discriminator.slice() };
  } finally {
    // Also when a thread failed to start: the others would wait for their first round forever.
    Atomics.store(control, 0, -1);
    Atomics.notify(control, 0);
    await Promise.all(threads.map((t) => (t.threadId === -1 ? null : new Promise((r) => t.once('exit', r)))));
  }
}

/** A worker thread: each round, the weights that changed into its networks, a step, its gradients out, the next step readied. */
async function ceilingWorker(data: CeilingWorkerData): Promise<void> {
  await selectBackend('wasm');
  const model = createModel('mlp');
  const sizes = { g: model.generatorLayout.size, d: model.discriminatorLayout.size };
  const shared = { ...weightViews(data.weights, sizes), ...resultViews(data.results, sizes) };
  const control = new Int32Array(data.control);
  const train = loadMnist('train');
  const compute = new ShardCompute(model, data.batch, 2);
  compute.setShard({ images: train.images, count: train.count, seed: data.seed });
  parentPort!.postMessage('ready');
  let step = 0;
  for (let round = 1; ; round++) {
    Atomics.wait(control, 0, round - 1);
    if (Atomics.load(control, 0) < 0) break;
    const phase = Atomics.load(control, 1) === 0 ? 'discriminator' : 'generator';
    // As the coordinator sends them: a D round brings G (and D at the start), a G round brings D.
    if (phase === 'discriminator') compute.updateWeights(shared.generator, step === 0 ? shared.discriminator : undefined, true);
    else compute.updateWeights(undefined, shared.discriminator, true);
    (phase === 'discriminator' ? shared.discriminatorGradients : shared.generatorGradients).set(compute.step(step, phase).gradients);
    Atomics.store(shared.done, 0, round);
    Atomics.notify(shared.done, 0);
    compute.readyAfter(step, phase);
    if (phase === 'generator') step++;
  }
  compute.dispose();
}

if (!isMainThread && (workerData as CeilingWorkerData | undefined)?.role === ROLE) {
  ceilingWorker(workerData as CeilingWorkerData).catch((e) => {
    process.stderr.write(`ceiling worker failed: ${(e as Error).stack}\n`);
    process.exit(1);
  });
}
