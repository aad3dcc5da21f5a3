import { MnistSet } from '../data/mnist';
import { IMAGE_SIZE } from '../data/image';
import { GanModel, GanParameters } from '../model';
import { ProtocolError, decodeWorkerMessage, encode } from '../protocol/codec';
import { Gradients, Phase, gradientsMessage } from '../protocol/messages';
// A worker's step, which the coordinator computes itself only to tell divergence from a faulty worker.
import { ShardCompute } from '../worker/compute';
import { AnswerTerms, implausibleGradients } from './round';

/**
 * Why the coordinator's own answer to round (`step`, `phase`), computed from
 * `params` on the first batch of `train`, would be refused as a worker's
 * is, or null. Refused too, it shows that training diverged rather than
 * that a worker is faulty.
 */
export function ownAnswerProblem(model: GanModel, params: GanParameters, train: MnistSet, terms: AnswerTerms, seed: number, step: number, phase: Phase): string | null {
  const { batchSize } = terms;
  const compute = new ShardCompute(model, batchSize, terms.discriminatorUpdates);
  try {
    const count = Math.min(train.count, batchSize);
    compute.setShard({ images: train.images.subarray(0, count * IMAGE_SIZE), count, seed });
    compute.updateWeights(params.generator, params.discriminator, true);
    const answer = decodeWorkerMessage(encode(gradientsMessage(step, phase, compute.step(step, phase), 0))) as Gradients;
    return implausibleGradients(answer, model, terms)?.[1] ?? null;
  } catch (e) {
    if (e instanceof ProtocolError) return e.message;
    throw e;
  } finally {
    compute.dispose();
  }
}
