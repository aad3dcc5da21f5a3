import * as zlib from 'zlib';
import { GanfleetError } from '../util/errors';

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
// PNG colour types by channel count: 0 grayscale, 2 RGB, 6 RGBA.
const COLOR_TYPE = { 1: 0, 3: 2, 4: 6 } as const;

// zlib.crc32 exists only from Node 20.15 / 22.2; engines allows Node 20.14.
const nativeCrc32 = (zlib as { crc32?: (data: Uint8Array) => number }).crc32;
let crcTable: Uint32Array | undefined;

function crc32(data: Uint8Array): number {
  if (nativeCrc32) return nativeCrc32(data) >>> 0;
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = crcTable[(crc ^ data[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** length | type | data | CRC(type + data) */
function chunk(type: string, data: Buffer): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** Encodes 8-bit interleaved pixels (row-major, `channels` bytes per pixel) as a PNG. */
export function encodePng(
  width: number,
  height: number,
  pixels: Uint8Array,
  channels: 1 | 3 | 4,
): Buffer {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new GanfleetError('PNG_BAD_SIZE', `invalid image size ${width}x${height}`);
  }
  if (pixels.length !== width * height * channels) {
    throw new GanfleetError(
      'PNG_SIZE_MISMATCH',
      `${pixels.length} bytes for ${width}x${height}x${channels}`,
    );
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = COLOR_TYPE[channels];
  // bytes 10..12: compression 0, filter method 0, no interlace

  // Each scanline is prefixed by its filter type; 0 (None) keeps this simple.
  const stride = width * channels;
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    raw.set(pixels.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  }
  return Buffer.concat([
    PNG_SIGNATURE,
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/**
 * Tiles `count` single-channel images in tanh range [-1, 1] (row-major,
 * count×height×width) into a rows×cols grayscale grid, filled row by row.
 * `padding` black pixels surround every cell, outer edges included, so
 * width = cols*w + (cols+1)*padding (and likewise for height).
 * Pixel = clamp(round((v+1)*127.5), 0, 255); empty cells stay black.
 */
export function imageGrid(
  images: Float32Array,
  count: number,
  rows: number,
  cols: number,
  height = 28,
  width = 28,
  padding = 2,
): { width: number; height: number; pixels: Uint8Array } {
  if (count > rows * cols) {
    throw new GanfleetError('IMAGE_GRID_SIZE', `${count} images do not fit ${rows}x${cols}`);
  }
  if (images.length < count * height * width) {
    throw new GanfleetError(
      'IMAGE_GRID_SIZE',
      `${images.length} values for ${count} images of ${height}x${width}`,
    );
  }
  const gridW = cols * width + (cols + 1) * padding;
  const gridH = rows * height + (rows + 1) * padding;
  const pixels = new Uint8Array(gridW * gridH); // zero = black padding/empty cells
  for (let n = 0; n < count; n++) {
    const x0 = padding + (n % cols) * (width + padding);
    const y0 = padding + Math.floor(n / cols) * (height + padding);
    const src = n * height * width;
    for (let y = 0; y < height; y++) {
      const row = (y0 + y) * gridW + x0;
      for (let x = 0; x < width; x++) {
        pixels[row + x] = tanhToByte(images[src + y * width + x]);
      }
    }
  }
  return { width: gridW, height: gridH, pixels };
}

/**
 * Every value of `images` as tanhToByte's pixel. A loop, not
 * `Uint8Array.from(images, tanhToByte)`: with a mapping function V8 first
 * copies the source into a JavaScript array, which cannot hold the 156.8 M
 * values of 200,000 images (a fatal "invalid array length" out-of-memory
 * abort, after every sample was drawn).
 */
export function tanhToBytes(images: Float32Array): Uint8Array {
  const bytes = new Uint8Array(images.length);
  for (let i = 0; i < images.length; i++) bytes[i] = tanhToByte(images[i]);
  return bytes;
}

/** A tanh-range value as an 8-bit pixel: clamp(round((v+1)·127.5), 0, 255); NaN becomes 0. */
export function tanhToByte(v: number): number {
  const p = Math.round((v + 1) * 127.5);
  return p > 0 ? (p > 255 ? 255 : p) : 0;
}
