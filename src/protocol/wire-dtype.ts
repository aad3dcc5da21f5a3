import { nativeAddon } from '../util/native';

/**
 * 16-bit float encodings for the float arrays on the wire (--wire-dtype).
 * The coordinator's weights and Adam state stay float32: only what travels
 * is rounded, once per hop, to the nearest representable value (ties to even).
 *
 * float16 (IEEE binary16): 11 significant bits (relative error ≤ 2⁻¹¹ ≈
 *   4.9e-4), but a narrow range: magnitudes above 65504 saturate to ±65504,
 *   below 6.1e-5 lose precision, up to 2⁻²⁵ ≈ 2.98e-8 become 0.
 * bfloat16: float32's 8-bit exponent with 8 significant bits (relative error
 *   ≤ 2⁻⁸ ≈ 3.9e-3) and float32's range, but magnitudes from (2 − 2⁻⁸)·2¹²⁷ ≈ 3.396e38 up round to
 *   ±Infinity and are refused as not finite; the protocol's bounds keep far
 *   below them.
 */
export const WIRE_DTYPES = ['float32', 'float16', 'bfloat16'] as const;
export type WireDtype = (typeof WIRE_DTYPES)[number];

/** Bytes one value takes on the wire. */
export function wireDtypeBytes(dtype: WireDtype): number {
  return dtype === 'float32' ? 4 : 2;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function toFloat16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  const sign = (bits >>> 16) & 0x8000;
  const biased = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (biased === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  const exp = biased - 127 + 15;
  if (exp >= 0x1f) return sign | 0x7bff;
  if (exp <= 0) {
    const shift = 14 - exp;
    if (shift > 24) return sign;
    const m = mantissa | 0x800000;
    let half = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (exp << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++;
  return sign | Math.min(half, 0x7bff);
}

let float16Table: Float32Array | null = null;

/** All 65536 float16 values as float32: decoding is one lookup per element. */
function float16Values(): Float32Array {
  if (!float16Table) {
    float16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1;
      const exp = (h >>> 10) & 0x1f;
      const m = h & 0x3ff;
      float16Table[h] = exp === 0 ? sign * m * 2 ** -24 : exp === 0x1f ? (m ? NaN : sign * Infinity) : sign * (1 + m / 1024) * 2 ** (exp - 15);
    }
  }
  return float16Table;
}

/**
 * Rounds float32 values to a 16-bit dtype; the result's bytes are what
 * travels. On the native addon (8 lanes, F16C for float16) where it is
 * built: the JavaScript conversions cost more than half the bytes save on
 * loopback. test/native.test.ts holds the two to the same bits for every
 * value but NaN, whose payload bits may differ (NaN stays NaN; a receiver
 * refuses it anyway).
 */
export function encodeFloats(values: Float32Array, dtype: Exclude<WireDtype, 'float32'>): Uint16Array {
  const native = nativeAddon().addon;
  if (!native) return encodeFloatsPortable(values, dtype);
  const out = new Uint16Array(values.length);
  native.toHalf(values, out, dtype === 'bfloat16');
  return out;
}

export function decodeFloats(halves: Uint16Array, dtype: Exclude<WireDtype, 'float32'>): Float32Array {
  const native = nativeAddon().addon;
  if (!native) return decodeFloatsPortable(halves, dtype);
  const out = new Float32Array(halves.length);
  native.fromHalf(halves, out, dtype === 'bfloat16');
  return out;
}

/** encodeFloats in JavaScript: the reference, and the path without the addon. */
export function encodeFloatsPortable(values: Float32Array, dtype: Exclude<WireDtype, 'float32'>): Uint16Array {
  const out = new Uint16Array(values.length);
  if (dtype === 'float16') {
    for (let i = 0; i < values.length; i++) out[i] = toFloat16Bits(values[i]);
    return out;
  }
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) {
    const b = bits[i];
    // NaN stays NaN (the receiver rejects it); others round to nearest, ties to even.
    out[i] = (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** decodeFloats in JavaScript: the reference, and the path without the addon. */
export function decodeFloatsPortable(halves: Uint16Array, dtype: Exclude<WireDtype, 'float32'>): Float32Array {
  const out = new Float32Array(halves.length);
  if (dtype === 'float16') {
    const table = float16Values();
    for (let i = 0; i < halves.length; i++) out[i] = table[halves[i]];
    return out;
  }
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < halves.length; i++) bits[i] = halves[i] << 16;
  return out;
}
