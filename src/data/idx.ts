/**
 * Reader for the IDX format used by the MNIST distribution:
 *   bytes 0-1  zero
 *   byte  2    dtype (only 0x08 = unsigned byte is supported)
 *   byte  3    number of dims
 *   then one big-endian uint32 per dim, then the payload, row-major.
 * Files ending in `.gz` are gunzipped first.
 */
import * as buffer from 'node:buffer';
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { GanfleetError } from '../util/errors';

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

const DTYPE_UBYTE = 0x08;

/**
 * Reads an IDX file, raw or gzipped. The header is checked against the
 * file's size before the payload is held in memory, so a file whose header
 * and length disagree (a cut download, a gzip bomb) costs no more memory
 * than its header declares.
 */
export function readIdx(path: string): IdxArray {
  const buf = path.endsWith('.gz') ? readGzipped(path) : readRaw(path);
  const header = parseHeader(buf, path);
  checkPayload(header, buf.length - header.length, path);
  // A view over the file buffer: the 47 MB training set is never copied.
  return { dims: header.dims, data: new Uint8Array(buf.buffer, buf.byteOffset + header.length, header.size) };
}

/** The largest header: the magic and 255 dims. */
const MAX_HEADER = 4 + 4 * 255;

/**
 * Opens `path` for reading, refusing anything but a regular file: a pipe or
 * a device has no length to check a header against (and /dev/zero never ends).
 */
function openRegular(path: string): { fd: number; length: number } {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO is refused below instead of blocking the open until something writes to it.
    fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    throw fileError(err, path);
  }
  const st = fs.fstatSync(fd);
  if (st.isFile() && st.size <= buffer.constants.MAX_LENGTH) return { fd, length: st.size };
  fs.closeSync(fd);
  if (st.isDirectory()) throw Object.assign(new Error(`${path}: is a directory, not an IDX file`), { code: 'EISDIR' });
  if (!st.isFile()) throw new GanfleetError('IDX_NOT_A_FILE', `${path}: not a regular file (a pipe or a device), so its length cannot be checked`);
  throw Object.assign(new Error(`${path}: ${st.size} bytes, more than one buffer holds (${buffer.constants.MAX_LENGTH})`), { code: 'ERR_FS_FILE_TOO_LARGE' });
}

function readRaw(path: string): Buffer {
  const { fd, length } = openRegular(path);
  try {
    const head = Buffer.alloc(Math.min(length, MAX_HEADER));
    readFully(fd, head, path);
    const header = parseHeader(head, path);
    checkPayload(header, length - header.length, path);
    const buf = Buffer.allocUnsafe(length);
    readFully(fd, buf, path);
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

/** The most one read asks for: `fs.readSync` takes its length as a 32-bit int, which a file over 2 GiB overflows. */
const READ_CHUNK = 1 << 30;

function readFully(fd: number, into: Buffer, path: string): void {
  for (let at = 0; at < into.length; ) {
    let n: number;
    try {
      n = fs.readSync(fd, into, at, Math.min(into.length - at, READ_CHUNK), at);
    } catch (err) {
      throw fileError(err, path);
    }
    if (n === 0) throw new GanfleetError('IDX_TRUNCATED', `${path}: ended after ${at} of ${into.length} bytes while being read`);
    at += n;
  }
}

function readGzipped(path: string): Buffer {
  const { fd, length } = openRegular(path);
  try {
    const prefix = (bytes: number) => {
      const into = Buffer.allocUnsafe(bytes);
      readFully(fd, into, path);
      return into;
    };
    // The header from the stream's start; then the whole file, only if the dims could take that many compressed bytes.
    const header = parseHeader(inflatedHead(prefix, length, path), path);
    const declared = header.length + header.size;
    const most = mostCompressed(declared);
    if (length > most) {
      throw new GanfleetError('IDX_SIZE_MISMATCH', `${path}: dims [${header.dims.join(',')}] need ${header.size} payload bytes, which no gzip file of ${length} bytes holds (${most} at most)`);
    }
    const packed = prefix(length);
    try {
      return zlib.gunzipSync(packed, { maxOutputLength: Math.min(declared, buffer.constants.MAX_LENGTH) });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
        throw new GanfleetError('IDX_SIZE_MISMATCH', `${path}: dims [${header.dims.join(',')}] need ${header.size} payload bytes, and it inflates to more`);
      }
      throw badGzip(err, path);
    }
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The most bytes a gzip file of `inflated` bytes takes: deflate's worst case
 * (stored blocks) adds 5 bytes per 64 KiB, zlib's deflateBound about 0.03%;
 * this allows 0.4%, and 1 MiB for gzip headers' names and comments, empty
 * members and trailing padding.
 */
function mostCompressed(inflated: number): number {
  return inflated + Math.ceil(inflated / 256) + (1 << 20);
}

/** What a head is inflated to at most: far more than a header, and little memory. */
const HEAD_LIMIT = 64 * 1024;

/** How far into a .gz its IDX header is looked for: past mostCompressed's allowance for what may come before it. */
const HEAD_SEARCH = 2 << 20;

/**
 * The start of what the file of `length` bytes inflates to, at least a whole
 * IDX header where the stream holds one, and at most HEAD_LIMIT bytes: a
 * bomb's head costs no more. Inflates growing prefixes of the file (a gzip
 * header can carry a long file name, and empty members can come first), read
 * by `prefixOf`, halving back towards the last one that gave too little
 * whenever one gives more than the limit.
 */
function inflatedHead(prefixOf: (bytes: number) => Buffer, length: number, path: string): Buffer {
  const inflate = (prefix: number): Buffer | 'too much' => {
    try {
      return zlib.gunzipSync(prefixOf(prefix), { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: HEAD_LIMIT });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') return 'too much';
      throw badGzip(err, path);
    }
  };
  const whole = (b: Buffer) => b.length >= 4 && b.length >= 4 + 4 * b[3];
  let short = 0; // a prefix that inflates to less than a header
  let prefix = Math.min(length, 4096);
  // Each try at least quadruples the prefix or halves the gap to `short`: a few dozen at most.
  for (let tries = 0; tries < 100; tries++) {
    const head = inflate(prefix);
    if (head === 'too much') {
      prefix = short + Math.max(1, Math.floor((prefix - short) / 2));
    } else if (whole(head)) {
      return head;
    } else if (prefix === length) {
      // The whole file and still no header: a cut or empty stream says why as gzip; a whole one is an IDX file too short.
      try {
        zlib.gunzipSync(prefixOf(length), { maxOutputLength: HEAD_LIMIT });
      } catch (err) {
        throw badGzip(err, path);
      }
      return head;
    } else if (prefix >= HEAD_SEARCH) {
      throw new GanfleetError('IDX_BAD_GZIP', `${path}: its first ${prefix} bytes inflate to no IDX header`);
    } else {
      short = prefix;
      prefix = Math.min(length, prefix * 4, HEAD_SEARCH);
    }
  }
  throw new GanfleetError('IDX_BAD_GZIP', `${path}: its start would not inflate to an IDX header`);
}

function badGzip(err: unknown, path: string): GanfleetError {
  return new GanfleetError('IDX_BAD_GZIP', `${path}: not valid gzip (${(err as Error).message})`);
}

/** A file that is missing is IDX_MISSING; any other failure keeps its code and names the file. */
export function fileError(err: unknown, path: string): Error {
  const e = err as NodeJS.ErrnoException;
  // Read-and-catch rather than exists-then-read: no race, one syscall.
  if (e.code === 'ENOENT') return new GanfleetError('IDX_MISSING', `IDX file not found: ${path}`);
  return Object.assign(new Error(`${path}: ${e.message}`), { code: e.code });
}

interface IdxHeader {
  dims: number[];
  /** Bytes of the header itself. */
  length: number;
  /** Payload bytes the dims declare. */
  size: number;
}

/** Whose size an error gives: a .gz's counts are of what it unzips to, not of the file on disk. */
function holder(path: string): string {
  return path.endsWith('.gz') ? 'its content has' : 'file has';
}

function parseHeader(buf: Buffer, path: string): IdxHeader {
  if (buf.length < 4) {
    throw new GanfleetError('IDX_TRUNCATED', `${path}: ${buf.length} bytes${path.endsWith('.gz') ? ' unzipped' : ''}, shorter than the 4-byte magic`);
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
  const length = 4 + 4 * ndims;
  if (buf.length < length) {
    throw new GanfleetError(
      'IDX_TRUNCATED',
      `${path}: header needs ${length} bytes for ${ndims} dims, ${holder(path)} ${buf.length}`,
    );
  }
  const dims: number[] = [];
  let size = 1;
  for (let i = 0; i < ndims; i++) {
    const d = buf.readUInt32BE(4 + 4 * i);
    dims.push(d);
    size *= d;
  }
  return { dims, length, size };
}

/**
 * Exact size: a short payload means a cut download, a long one means the
 * header and data disagree; either way the shape can't be trusted.
 */
function checkPayload({ dims, size }: IdxHeader, payload: number, path: string): void {
  if (payload < size) {
    throw new GanfleetError(
      'IDX_TRUNCATED',
      `${path}: dims [${dims.join(',')}] need ${size} payload bytes, ${holder(path)} ${payload}`,
    );
  }
  if (payload > size) {
    throw new GanfleetError(
      'IDX_SIZE_MISMATCH',
      `${path}: dims [${dims.join(',')}] need ${size} payload bytes, ${holder(path)} ${payload} (${payload - size} trailing)`,
    );
  }
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
