import { ARCHITECTURES, GanModel, LOSSES, createModel } from '../model';
import { GanfleetError } from '../util/errors';
import { peerString } from '../util/log';
import { Checkpoint } from './checkpoint';

/** A name read from a checkpoint, for a message: quoted and cut short unless plain, so that a made-up one forges no log lines. */
function shown(name: string): string {
  return /^[\w.-]{1,40}$/.test(name) ? name : peerString(name, 40);
}

/**
 * The model a checkpoint was trained with. A checkpoint of a model or loss
 * this ganfleet lacks, or whose networks have other sizes than this
 * ganfleet's of that name, was written by another ganfleet version (same
 * file format, other models): it is refused with the file named, rather
 * than advised to pass a --model the command line then refuses, or failed
 * with a bare count of parameters.
 */
export function checkpointModel(c: Checkpoint, file: string): GanModel {
  const arch = String(c.config.arch);
  // A checkpoint written before --loss existed keeps none: that run's loss was bce.
  const loss = String(c.config.loss ?? 'bce');
  if (!(ARCHITECTURES as readonly string[]).includes(arch) || !(LOSSES as readonly string[]).includes(loss)) {
    throw new GanfleetError(
      'MODEL_UNKNOWN',
      `${file}: a checkpoint of --model ${shown(arch)} --loss ${shown(loss)}, which this ganfleet lacks (models ${ARCHITECTURES.join(', ')}; losses ${LOSSES.join(', ')}): ` +
        'it was written by a newer ganfleet; run one that has them',
    );
  }
  const model = createModel(arch, loss);
  const sizes = [
    ['generator', c.generator.length, model.generatorLayout.size],
    ['discriminator', c.discriminator.length, model.discriminatorLayout.size],
  ] as const;
  for (const [network, has, wants] of sizes) {
    if (has !== wants) {
      throw new GanfleetError(
        'CHECKPOINT_MISMATCH',
        `${file}: its ${arch} ${network} has ${has} parameters, this ganfleet's ${arch} ${network} ${wants}: it was written by a ganfleet version with another ${arch}; run that version to use it`,
      );
    }
  }
  return model;
}
