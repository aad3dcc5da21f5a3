import os from 'node:os';
import { GanfleetError } from './errors';

/**
 * Frames, checkpoints, exported weights and .npy files hold float arrays as
 * little-endian bytes, written and read as the host's own typed arrays. On a
 * big-endian host every one of them would be silently wrong, so ganfleet
 * refuses to start there instead.
 */
export function assertLittleEndianHost(endianness: 'BE' | 'LE' = os.endianness()): void {
  if (endianness !== 'LE') {
    throw new GanfleetError('BIG_ENDIAN_HOST', 'ganfleet needs a little-endian host: its frames and files hold float arrays as little-endian bytes (x86-64, arm64 and every platform tfjs-node supports are little-endian)');
  }
}
