import { GanfleetError } from '../util/errors';
import { GanModel } from './gan';
import { ARCHITECTURES, GanLoss, LOSSES } from './choices';
import { DcGan } from './dcgan';
import { MlpGan } from './mlp';

export function createModel(arch: string, loss: string = 'bce'): GanModel {
  if (!(LOSSES as readonly string[]).includes(loss)) {
    throw new GanfleetError('MODEL_UNKNOWN', `unknown loss "${loss}" (known: ${LOSSES.join(', ')})`);
  }
  switch (arch) {
    case 'mlp':
      return new MlpGan(loss as GanLoss);
    case 'dcgan':
      return new DcGan(loss as GanLoss);
    default:
      throw new GanfleetError('MODEL_UNKNOWN', `unknown model "${arch}" (known: ${ARCHITECTURES.join(', ')})`);
  }
}

export * from './gan';
export * from './layout';
export * from './choices';
