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

/** The stable code a rejection carries, as a GanfleetError and in the error message sent to the peer. */
export function protocolErrorCode(reason: RejectReason): string {
  return `PROTOCOL_${reason.toUpperCase()}`;
}

export class ProtocolError extends GanfleetError {
  constructor(
    readonly reason: RejectReason,
    message: string,
    /** For bad_version: the sender's protocol version where it is an older one (1 up to this one's), whose own error message the sender can read. */
    readonly olderVersion?: number,
  ) {
    super(protocolErrorCode(reason), message);
  }
}

