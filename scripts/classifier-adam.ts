import { Adam, AdamConfig } from '../src/coordinator/adam';

/**
 * The Adam that trained the shipped classifier (assets/mnist-classifier.bin):
 * ganfleet's Adam as it was then, Keras' update computed in float64 and m, v
 * and the weights kept in float32. ganfleet's Adam now computes in float32,
 * one rounding per operation (the native kernel's bits, for the
 * coordinator's resumes); from the same seed that trains another classifier
 * (98.71% rather than 98.96%, and another FID scale), so train-classifier
 * keeps this one, and its defaults still give back the shipped file.
 */
export class ClassifierAdam extends Adam {
  constructor(size: number, config: AdamConfig) {
    super(size, config, null);
  }

  protected override update(params: Float32Array, gradients: Float32Array, m: Float32Array, v: Float32Array, stepSize: number, invC2: number): void {
    const { beta1, beta2, epsilon } = this.config;
    const g1 = 1 - beta1;
    const g2 = 1 - beta2;
    for (let i = 0; i < params.length; i++) {
      const g = gradients[i];
      const mi = beta1 * m[i] + g1 * g;
      const vi = beta2 * v[i] + g2 * g * g;
      m[i] = mi;
      v[i] = vi;
      params[i] -= (stepSize * mi) / (Math.sqrt(vi * invC2) + epsilon);
    }
  }
}
