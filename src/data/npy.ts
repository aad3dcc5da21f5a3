/**
 * NumPy .npy (format 1.0) for little-endian float32 arrays: what numpy.load
 * reads, and what the PyTorch anchor writes for its samples.
 */
export function encodeNpy(shape: readonly number[], data: Float32Array): Buffer {
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64, ending in \n.
  const unpadded = 10 + dict.length + 1;
  const header = dict + ' '.repeat((64 - (unpadded % 64)) % 64) + '\n';
  const prefix = Buffer.alloc(10);
  prefix.write('\x93NUMPY', 0, 'latin1');
  prefix[6] = 1;
  prefix[7] = 0;
  prefix.writeUInt16LE(header.length, 8);
  return Buffer.concat([prefix, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

/** Reads what encodeNpy writes (little-endian float32, C order). */
export function decodeNpy(buf: Buffer): { shape: number[]; data: Float32Array } {
  if (buf.subarray(0, 6).toString('latin1') !== '\x93NUMPY') throw new Error('not a .npy file');
  const headerLength = buf.readUInt16LE(8);
  const header = buf.subarray(10, 10 + headerLength).toString('latin1');
  if (!header.includes("'descr': '<f4'")) throw new Error(`not little-endian float32: ${header.trim()}`);
  const shape = (/'shape': \(([^)]*)\)/.exec(header)?.[1] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  const body = buf.subarray(10 + headerLength);
  return { shape, data: new Float32Array(new Uint8Array(body).buffer) };
}
