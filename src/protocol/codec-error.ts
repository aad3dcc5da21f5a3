import { GanfleetError } from '../util/errors';

/** Why a frame was rejected; also the `reason` label of ganfleet_rejected_messages_total. */
export const REJECT_REASONS = [
  'bad_frame',
  'bad_version',
  'bad_type',
  'bad_field',
  'bad_size',
  'not_finite',
  'wrong_step',
  'out_of_range',
  'unexpected',
  'too_large',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

export class ProtocolError extends GanfleetError {
  constructor(
    readonly reason: RejectReason,
    message: string,
  ) {
    super(`PROTOCOL_${reason.toUpperCase()}`, message);
  }
}

