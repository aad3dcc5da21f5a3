import { gatherTanhRange } from '../data/mnist';
import { IMAGE_SIZE } from '../data/image';
import { DiscriminatorUpdates, GanModel, GeneratorPass, RealPart, ResultMemory, StepOutput, disposeGeneratorPass, disposeTensors, sumDiscriminatorHalves } from '../model';
import { tf, Tensors } from '../model/tf';
import { Phase, stepOfRound } from '../protocol/messages';
import { GanfleetError } from '../util/errors';
import { Rng } from '../util/rng';

/**
 * A worker's compute state: its shard and the shard's seed, and the networks
 * as it last received them. One step draws one real batch and one noise
 * batch, from the seed's stream for that step (Rng.keyed), so what a step
 * draws depends only on the seed, the step and the shard, not on what this
 * process drew before. The G round reuses the D round's noise (as the
 * PyTorch anchor does) and, while G is unchanged, its forward pass. Where the
 * model allows it, the D round is computed in two halves, the real one ahead
 * while the coordinator steps G (D does not change in between); always in
 * two halves, so that a worker that just joined computes the same bits.
 */
export class ShardCompute {
  private shard: Uint8Array | null = null;
  private shardCount = 0;
  private seed = 0;
  private generator: Tensors | null = null;
  private discriminator: Tensors | null = null;
  /**
   * The step's random draws: noise and a real batch. Drawn ahead, while the
   * worker would otherwise wait for the coordinator (drawAhead, prepare), or on demand.
   */
  private drawn: Draws | null = null;
  /** The next step's draws, made during the G round's wait while this step's are still in use. */
  private ahead: Draws | null = null;
  /** G's forward pass on the drawn noise with the current G; dropped when either changes. */
  private pass: GeneratorPass | null = null;
  /** The D step's real half on the drawn batch with the current D; dropped when either changes. */
  private realPart: RealPart | null = null;
  /** Where each round kind's results are read; a step's gradients are valid until the next step of its kind. */
  private readonly results: Record<Phase, ResultMemory> = { discriminator: {}, generator: {} };
  private readonly indices: Int32Array;
  /**
   * Two sets of arrays behind the draws' tensors, one per live draw (this
   * step's and the one drawn ahead): the cpu backend keeps the array a
   * tensor was made from, so refilling it would change a draw in use.
   */
  private readonly drawBuffers: { real: Float32Array; noise: Float32Array }[];

  constructor(
    private readonly model: GanModel,
    private readonly batchSize: number,
    /** The coordinator's D updates a step: a D round answers with the two halves (2) or their sum (1). */
    private readonly discriminatorUpdates: DiscriminatorUpdates,
  ) {
    this.indices = new Int32Array(batchSize);
    this.drawBuffers = [0, 1].map(() => ({ real: new Float32Array(batchSize * IMAGE_SIZE), noise: new Float32Array(batchSize * model.zDim) }));
  }

  /** A shard of `count` images: the first `keep` of the current one, then `images` (pixels of count − keep images); batches are drawn with `seed`. */
  setShard({ images: added, count, keep = 0, seed }: ShardContent): void {
    if (count === 0 || keep > Math.min(count, this.shardCount) || added.length !== (count - keep) * IMAGE_SIZE) {
      throw new GanfleetError('WORKER_BAD_SHARD', `a shard of ${count} images that keeps ${keep} of the ${this.shardCount} held has ${added.length} new bytes`);
    }
    let images = added;
    if (keep > 0) {
      images = new Uint8Array(count * IMAGE_SIZE);
      images.set(this.shard!.subarray(0, keep * IMAGE_SIZE));
      images.set(added, keep * IMAGE_SIZE);
    }
    this.shard = images;
    this.shardCount = count;
    this.seed = seed;
    // Batches drawn ahead came from the old shard.
    this.dropDrawn();
    this.dropAhead();
  }

  /** Draws step `step`'s noise and real batch while the worker waits for the current step's G round (the current draws stay, for that round). */
  drawAhead(step: number): void {
    if (!this.shard || this.drawn?.step === step || this.ahead?.step === step) return;
    this.dropAhead();
    this.ahead = this.makeDraws(step);
  }

  /**
   * Readies step `step`'s D round while the worker would otherwise wait for
   * the coordinator: its noise and real batch (if not drawn ahead), and the
   * D step's real half where the model can split it.
   */
  prepare(step: number): void {
    if (!this.shard) return;
    this.draw(step);
    this.computeRealPart();
  }

  /** The D step's real half on the drawn batch, where the model can split the step and D is held. */
  private computeRealPart(): void {
    if (!this.realPart && this.discriminator && this.model.discriminatorRealPart) {
      this.realPart = this.model.discriminatorRealPart(this.discriminator, this.drawn!.real);
    }
  }

  /**
   * What a worker does after answering round `phase` of step `step`, while
   * the coordinator averages and steps Adam: after D, the next step's draws
   * (drawAhead); after G, the next D round (prepare).
   */
  readyAfter(step: number, phase: Phase): void {
    if (phase === 'discriminator') this.drawAhead(step + 1);
    else this.prepare(step + 1);
  }

  /**
   * Replaces whichever networks the coordinator sent; the other stays as it
   * was. `transient`: the arrays' memory is reused once this returns, so a
   * backend that keeps the arrays it is given (cpu; tfjs-node until first
   * use) gets copies. wasm copies them into its heap at once.
   */
  updateWeights(generator?: Float32Array, discriminator?: Float32Array, transient = false): void {
    if (transient && tf.getBackend() !== 'wasm') {
      generator = generator?.slice();
      discriminator = discriminator?.slice();
    }
    if (generator) {
      const next = this.model.generatorLayout.toTensors(generator);
      if (this.generator) disposeTensors(this.generator);
      this.generator = next;
      this.dropPass();
    }
    if (discriminator) {
      const next = this.model.discriminatorLayout.toTensors(discriminator);
      if (this.discriminator) disposeTensors(this.discriminator);
      this.discriminator = next;
      this.dropRealPart();
    }
  }

  /** The round's results; their arrays are reused, and valid until the next step of the same phase. */
  step(step: number, phase: Phase): StepOutput & { samples: number } {
    if (!this.shard) throw new GanfleetError('WORKER_NO_SHARD', 'asked to compute before receiving a shard');
    if (!this.generator || !this.discriminator) {
      throw new GanfleetError('WORKER_NO_WEIGHTS', `asked for step ${stepOfRound(step)} before receiving both networks`);
    }
    this.draw(step);
    const drawn = this.drawn!;
    this.pass ??= this.model.forwardGenerator(this.generator, drawn.noise);
    let out: StepOutput;
    if (phase === 'discriminator') {
      this.computeRealPart();
      out = this.model.discriminatorStep(this.discriminator, drawn.real, this.pass, this.realPart ?? undefined, this.results.discriminator);
      // Summed here, not by the coordinator: one update needs only the sum, and D's gradient then travels once.
      if (this.discriminatorUpdates === 1) out = { ...out, gradients: sumDiscriminatorHalves(out.gradients) };
    } else {
      out = this.model.generatorStep(this.generator, this.discriminator, this.pass, this.results.generator);
    }
    return { ...out, samples: this.batchSize };
  }

  dispose(): void {
    if (this.generator) disposeTensors(this.generator);
    if (this.discriminator) disposeTensors(this.discriminator);
    this.dropDrawn();
    this.dropAhead();
    this.generator = this.discriminator = null;
  }

  /** Step `step`'s noise and real batch, drawn once. */
  private draw(step: number): void {
    if (this.drawn?.step === step) return;
    this.dropDrawn();
    if (this.ahead?.step === step) [this.drawn, this.ahead] = [this.ahead, null];
    else this.drawn = this.makeDraws(step);
  }

  private makeDraws(step: number): Draws {
    // At most one other draw is alive when a new one is made, so one buffer is free.
    const buffer = this.drawn?.buffer === 0 || this.ahead?.buffer === 0 ? 1 : 0;
    const { real, noise } = this.drawBuffers[buffer];
    const rng = Rng.keyed(this.seed, step);
    return { step, buffer, noise: tf.tensor2d(rng.fillNormal(noise), [this.batchSize, this.model.zDim]), real: this.realBatch(rng, real) };
  }

  private dropAhead(): void {
    disposeDraws(this.ahead);
    this.ahead = null;
  }

  private dropDrawn(): void {
    this.dropPass();
    this.dropRealPart();
    disposeDraws(this.drawn);
    this.drawn = null;
  }

  private dropRealPart(): void {
    if (this.realPart) {
      disposeTensors(this.realPart.gradients);
      this.realPart.logits.dispose();
    }
    this.realPart = null;
  }

  private dropPass(): void {
    if (this.pass) disposeGeneratorPass(this.pass);
    this.pass = null;
  }

  /** Uniform with replacement from the shard, as the seed's np.random.randint. */
  private realBatch(rng: Rng, into: Float32Array): tf.Tensor2D {
    for (let i = 0; i < this.batchSize; i++) this.indices[i] = rng.int(this.shardCount);
    return tf.tensor2d(gatherTanhRange(this.shard!, this.indices, into), [this.batchSize, IMAGE_SIZE]);
  }
}

/** What a shard message gives a worker (Shard, less the envelope). */
export interface ShardContent {
  images: Uint8Array;
  count: number;
  /** How many images of the shard held come first; 0 when absent. */
  keep?: number;
  /** The seed of the stream each step's batch and noise are drawn from. */
  seed: number;
}

interface Draws {
  step: number;
  /** Which of ShardCompute's array sets backs the tensors. */
  buffer: 0 | 1;
  noise: tf.Tensor2D;
  real: tf.Tensor2D;
}

function disposeDraws(d: Draws | null): void {
  d?.noise.dispose();
  d?.real.dispose();
}
