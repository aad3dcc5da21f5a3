import { GanfleetError } from '../util/errors';

/** Why a frame was rejected; also the `reason` label of ganfleet_rejected_messages_total. */
export type RejectReason =
  | 'bad_frame'
  | 'bad_version'
  | 'bad_type'
  | 'bad_field'
  | 'bad_size'
  | 'not_finite'
  | 'wrong_step'
  | 'out_of_range'
  | 'unexpected'
  | 'too_large';

export class ProtocolError extends GanfleetError {
  constructor(
    readonly reason: RejectReason,
    message: string,
  ) {
    super(`PROTOCOL_${reason.toUpperCase()}`, message);
  }
}

