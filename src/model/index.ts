import { GanfleetError } from '../util/errors';
import { GanModel } from './gan';
import { MlpGan } from './mlp';

export const ARCHITECTURES = ['mlp'] as const;

export function createModel(arch: string): GanModel {
  switch (arch) {
    case 'mlp':
      return new MlpGan();
    default:
      throw new GanfleetError('MODEL_UNKNOWN', `unknown model "${arch}" (known: ${ARCHITECTURES.join(', ')})`);
  }
}

export * from './gan';
export * from './layout';
