/**
 * Reader for the IDX format used by the MNIST distribution:
 *   bytes 0-1  zero
 *   byte  2    dtype (only 0x08 = unsigned byte is supported)
 *   byte  3    number of dims
 *   then one big-endian uint32 per dim, then the payload, row-major.
 * Files ending in `.gz` are gunzipped first.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { GanfleetError } from '../util/errors';

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

const DTYPE_UBYTE = 0x08;

export function readIdx(path: string): IdxArray {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(path);
  } catch (err) {
    // Read-and-catch rather than exists-then-read: no race, one syscall.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new GanfleetError('IDX_MISSING', `IDX file not found: ${path}`);
    }
    throw err;
  }
  if (path.endsWith('.gz')) {
    try {
      buf = zlib.gunzipSync(buf);
    } catch (err) {
      throw new GanfleetError('IDX_BAD_GZIP', `${path}: not valid gzip (${(err as Error).message})`);
    }
  }
  return parseIdx(buf, path);
}

function parseIdx(buf: Buffer, path: string): IdxArray {
  if (buf.length < 4) {
    throw new GanfleetError('IDX_TRUNCATED', `${path}: ${buf.length} bytes, shorter than the 4-byte magic`);
  }
  const ndims = buf[3];
  if (buf[0] !== 0 || buf[1] !== 0 || ndims === 0) {
    const magic = buf.subarray(0, 4).toString('hex');
    throw new GanfleetError('IDX_BAD_MAGIC', `${path}: bad IDX magic 0x${magic}`);
  }
  if (buf[2] !== DTYPE_UBYTE) {
    const dtype = buf[2].toString(16).padStart(2, '0');
    throw new GanfleetError(
      'IDX_UNSUPPORTED_DTYPE',
      `${path}: IDX dtype 0x${dtype} is not supported (only 0x08, unsigned byte)`,
    );
  }
  const headerLen = 4 + 4 * ndims;
  if (buf.length < headerLen) {
    throw new GanfleetError(
      'IDX_TRUNCATED',
      `${path}: header needs ${headerLen} bytes for ${ndims} dims, file has ${buf.length}`,
    );
  }
  const dims: number[] = [];
  let size = 1;
  for (let i = 0; i < ndims; i++) {
    const d = buf.readUInt32BE(4 + 4 * i);
    dims.push(d);
    size *= d;
  }
  const payload = buf.length - headerLen;
  // Exact size: a short payload means a cut download, a long one means the
  // header and data disagree; either way the shape can't be trusted.
  if (payload < size) {
    throw new GanfleetError(
      'IDX_TRUNCATED',
      `${path}: dims [${dims.join(',')}] need ${size} payload bytes, file has ${payload}`,
    );
  }
  if (payload > size) {
    throw new GanfleetError(
      'IDX_SIZE_MISMATCH',
      `${path}: dims [${dims.join(',')}] need ${size} payload bytes, file has ${payload} (${payload - size} trailing)`,
    );
  }
  // A view over the file buffer: the 47 MB training set is never copied.
  return { dims, data: new Uint8Array(buf.buffer, buf.byteOffset + headerLen, size) };
}

/** Writes an unsigned-byte IDX file (the MNIST format): magic 0x0000080N, N big-endian dims, then the bytes. */
export function encodeIdx(dims: readonly number[], data: Uint8Array): Buffer {
  const size = dims.reduce((a, b) => a * b, 1);
  if (size !== data.length) throw new GanfleetError('IDX_SIZE_MISMATCH', `dims ${dims.join('×')} need ${size} bytes, got ${data.length}`);
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt32BE(0x0800 + dims.length, 0);
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, data]);
}
