import { MnistSet, loadMnist, toTanhRange } from '../data/mnist';
import { IMAGE_SIZE } from '../data/image';
import { GanModel } from '../model';
import { generateImages } from '../model/sample';
import { GanfleetError } from '../util/errors';
import { Rng } from '../util/rng';
import { CLASSES, FEATURES, classifyImages, loadClassifier } from './classifier';

/**
 * ganfleet's sample-quality numbers, both from the MNIST classifier in
 * classifier.ts (not Inception, so comparable only between ganfleet runs,
 * never with the FIDs of papers):
 *   FID: the Fréchet distance between Gaussians fitted to the classifier's
 *     64 penultimate features of the generated images and of the 10k MNIST
 *     test images: |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½). Lower is better;
 *     0 for identical feature statistics.
 *   MNIST score: the Inception score's formula with this classifier,
 *     exp(E_x KL(p(y|x) ‖ p(y))), over all samples at once (no splits).
 *     1 (one class, or no confident class) to 10 (confident, balanced classes).
 */
export interface Quality {
  fid: number;
  mnistScore: number;
  /** Share of the samples the classifier puts in each digit class (argmax): mode collapse shows here. */
  classShares: number[];
  samples: number;
}

export interface FeatureMoments {
  mean: Float64Array;
  /** Row-major dim×dim covariance (unbiased). */
  covariance: Float64Array;
  dim: number;
}

function predictedClass(probabilities: Float32Array, i: number): number {
  let best = 0;
  for (let c = 1; c < CLASSES; c++) if (probabilities[i * CLASSES + c] > probabilities[i * CLASSES + best]) best = c;
  return best;
}

export function accuracy(probabilities: Float32Array, labels: Uint8Array, count: number): number {
  let right = 0;
  for (let i = 0; i < count; i++) if (predictedClass(probabilities, i) === labels[i]) right++;
  return right / count;
}

function classShares(probabilities: Float32Array, count: number): number[] {
  const counts = new Array<number>(CLASSES).fill(0);
  for (let i = 0; i < count; i++) counts[predictedClass(probabilities, i)]++;
  return counts.map((c) => c / count);
}

function featureMoments(features: Float32Array, count: number, dim: number): FeatureMoments {
  const mean = new Float64Array(dim);
  for (let i = 0; i < count; i++) for (let j = 0; j < dim; j++) mean[j] += features[i * dim + j];
  for (let j = 0; j < dim; j++) mean[j] /= count;
  const covariance = new Float64Array(dim * dim);
  const centred = new Float64Array(dim);
  for (let i = 0; i < count; i++) {
    for (let j = 0; j < dim; j++) centred[j] = features[i * dim + j] - mean[j];
    for (let a = 0; a < dim; a++) {
      const ca = centred[a];
      if (ca === 0) continue;
      for (let b = a; b < dim; b++) covariance[a * dim + b] += ca * centred[b];
    }
  }
  for (let a = 0; a < dim; a++) {
    for (let b = a; b < dim; b++) {
      const v = covariance[a * dim + b] / Math.max(1, count - 1);
      covariance[a * dim + b] = covariance[b * dim + a] = v;
    }
  }
  return { mean, covariance, dim };
}

/**
 * tr(Σ₁Σ₂)^½ is the sum of the square roots of the eigenvalues of
 * Σ₁^½ Σ₂ Σ₁^½, which is symmetric positive semi-definite, so both steps
 * are symmetric eigendecompositions (Jacobi, in float64).
 */
export function frechetDistance(a: FeatureMoments, b: FeatureMoments): number {
  const n = a.dim;
  let meanTerm = 0;
  for (let i = 0; i < n; i++) meanTerm += (a.mean[i] - b.mean[i]) ** 2;
  let trace = 0;
  for (let i = 0; i < n; i++) trace += a.covariance[i * n + i] + b.covariance[i * n + i];
  const rootA = symmetricFunction(a.covariance, n, Math.sqrt);
  const product = multiply(multiply(rootA, b.covariance, n), rootA, n);
  const { values } = symmetricEigen(product, n);
  let rootTrace = 0;
  for (const v of values) rootTrace += Math.sqrt(Math.max(0, v));
  return Math.max(0, meanTerm + trace - 2 * rootTrace);
}

export function mnistScore(probabilities: Float32Array, count: number): number {
  const marginal = new Float64Array(CLASSES);
  for (let i = 0; i < count; i++) for (let c = 0; c < CLASSES; c++) marginal[c] += probabilities[i * CLASSES + c] / count;
  let kl = 0;
  for (let i = 0; i < count; i++) {
    for (let c = 0; c < CLASSES; c++) {
      const p = probabilities[i * CLASSES + c];
      if (p > 0) kl += p * (Math.log(p) - Math.log(marginal[c]));
    }
  }
  return Math.exp(kl / count);
}

/** What an evaluation scores against: the MNIST test set and the classifier whose features and classes it compares. */
export interface Reference {
  set: MnistSet;
  classifier: Float32Array;
}

/**
 * The test set FIDs compare with, and the classifier's weights. With fewer
 * than 2 images the set's covariance is not defined, and the FID would be a
 * number that means nothing. The coordinator loads both at start when it
 * will evaluate and keeps them, so a missing or unusable one stops the run
 * before training (not at the first evaluation, with the steps since the
 * last checkpoint lost), and files changed or removed during the run change
 * no evaluation.
 */
export function loadReference(dataDir?: string, classifierFile?: string): Reference {
  const set = loadMnist('test', dataDir);
  if (set.count < 2) throw new GanfleetError('EVAL_TOO_FEW', `the MNIST test set${dataDir === undefined ? '' : ` in ${dataDir}`} holds ${set.count} image; an FID needs at least 2`);
  return { set, classifier: loadClassifier(classifierFile) };
}

/** What an evaluation is doing: its phases, in order (the test set's only on a reference's first use). */
export type EvalPhase = 'drawing' | 'classifying the test set' | 'classifying the samples';

/** Awaited after each batch of an evaluation: its phase, and how many of the phase's `total` images are done. */
export type EvalProgress = (phase: EvalPhase, done: number, total: number) => Promise<void> | void;

/** A reference's test-set feature moments, computed once per process and reference. */
let moments: { of: Reference; test: FeatureMoments } | null = null;

async function testMoments(reference: Reference, between?: EvalProgress): Promise<FeatureMoments> {
  if (moments?.of !== reference) {
    const { set, classifier } = reference;
    const { features } = await classifyImages(classifier, toTanhRange(set.images), set.count, (done) =>
      between?.('classifying the test set', done, set.count),
    );
    moments = { of: reference, test: featureMoments(features, set.count, FEATURES) };
  }
  return moments.test;
}

/**
 * FID against `reference` (loadReference) and MNIST score of `count`
 * images (tanh range, count×784); `between` is awaited after each batch of
 * the classifier.
 */
export async function evaluateImages(images: Float32Array, count: number, reference: Reference, between?: EvalProgress): Promise<Quality> {
  if (images.length !== count * IMAGE_SIZE) throw new Error(`expected ${count} images of ${IMAGE_SIZE} values`);
  const test = await testMoments(reference, between);
  const { features, probabilities } = await classifyImages(reference.classifier, images, count, (done) => between?.('classifying the samples', done, count));
  return {
    fid: frechetDistance(featureMoments(features, count, FEATURES), test),
    mnistScore: mnistScore(probabilities, count),
    classShares: classShares(probabilities, count),
    samples: count,
  };
}

function multiply(a: Float64Array, b: Float64Array, n: number): Float64Array {
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) {
      const aik = a[i * n + k];
      if (aik === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j] += aik * b[k * n + j];
    }
  }
  return out;
}

/** V·f(Λ)·Vᵀ for a symmetric matrix VΛVᵀ (negative eigenvalues, numerical noise, are clipped to 0). */
function symmetricFunction(m: Float64Array, n: number, f: (x: number) => number): Float64Array {
  const { values, vectors } = symmetricEigen(m, n);
  const out = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    const fk = f(Math.max(0, values[k]));
    for (let i = 0; i < n; i++) {
      const vik = vectors[i * n + k] * fk;
      for (let j = 0; j < n; j++) out[i * n + j] += vik * vectors[j * n + k];
    }
  }
  return out;
}

/** Cyclic Jacobi eigendecomposition of a symmetric n×n matrix: eigenvalues and column eigenvectors. */
function symmetricEigen(m: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(m);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    let diag = 0;
    for (let i = 0; i < n; i++) {
      diag += a[i * n + i] ** 2;
      for (let j = i + 1; j < n; j++) off += a[i * n + j] ** 2;
    }
    if (off <= 1e-30 * Math.max(diag, 1e-300)) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (apq === 0) continue;
        const theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p];
          const akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k];
          const aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p];
          const vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = a[i * n + i];
  return { values, vectors: v };
}

/**
 * FID and MNIST score of `samples` images from G. The noise
 * comes from `seed`, so two evaluations of one generator agree exactly.
 */
export async function evaluateGenerator(model: GanModel, generator: Float32Array, samples: number, seed: number, reference: Reference, between?: EvalProgress): Promise<Quality> {
  const noise = new Rng(seed).fillNormal(new Float32Array(samples * model.zDim));
  const images = await generateImages(model, generator, noise, samples, 500, (done) => between?.('drawing', done, samples));
  return evaluateImages(images, samples, reference, between);
}
