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

/** Reads what encodeNpy writes (format 1.0, little-endian float32, C order); throws on anything else, or a cut-off file. */
export function decodeNpy(buf: Buffer): { shape: number[]; data: Float32Array } {
  if (buf.length < 10 || buf.subarray(0, 6).toString('latin1') !== '\x93NUMPY') throw new Error('not a .npy file');
  if (buf[6] !== 1) throw new Error(`.npy format ${buf[6]}.${buf[7]}, not 1.0`);
  const headerLength = buf.readUInt16LE(8);
  if (buf.length < 10 + headerLength) throw new Error(`.npy header of ${headerLength} bytes, but the file ends at ${buf.length}`);
  const header = buf.subarray(10, 10 + headerLength).toString('latin1');
  if (!header.includes("'descr': '<f4'")) throw new Error(`not little-endian float32: ${header.trim()}`);
  const shape = (/'shape': \(([^)]*)\)/.exec(header)?.[1] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  if (!header.includes("'fortran_order': False")) throw new Error(`not C order: ${header.trim()}`);
  const body = buf.subarray(10 + headerLength);
  const values = shape.reduce((a, b) => a * b, 1);
  if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0) || body.length !== 4 * values) {
    throw new Error(`.npy of shape (${shape.join(', ')}) needs ${4 * values} bytes of data, the file holds ${body.length}`);
  }
  return { shape, data: new Float32Array(new Uint8Array(body).buffer) };
}
