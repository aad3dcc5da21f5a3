import fs from 'node:fs';
import path from 'node:path';
import { envSwitch } from './env';

/**
 * ganfleet's optional native addon (native/: an AVX2/FMA matrix product for
 * the wasm backend, the coordinator's gradient average and Adam update, and
 * the 16-bit wire conversions, a real batch's pixels),
 * built by `npm install` when a C compiler is present. Every use has a
 * JavaScript or wasm fallback; this says which one is in use and why.
 */
export interface NativeAddon {
  /** Whether this CPU has AVX2, FMA and F16C; no other function may be called otherwise. */
  supported(): boolean;
  /** The matmul kernel's vector width after choosing `want`: 512 (AVX-512F, where the CPU has it) or 256 (AVX2); 0 only asks. */
  gemmWidth(want: number): number;
  gemm(
    heap: Float32Array,
    m: number,
    n: number,
    k: number,
    a: number,
    transA: number,
    b: number,
    transB: number,
    c: number,
    bias: number,
    biasLength: number,
    activation: number,
    alpha: number,
  ): void;
  adam(params: Float32Array, gradients: Float32Array, m: Float32Array, v: Float32Array, beta1: number, beta2: number, stepSize: number, invC2: number, epsilon: number): void;
  /** out = w·x, or out += w·x when `accumulate`, in float32. */
  scaleAdd(out: Float32Array, x: Float32Array, w: number, accumulate: boolean): void;
  /** Index of the first NaN or value beyond ±bound (±Infinity is beyond any bound), or -1. */
  firstOutside(values: Float32Array, bound: number): number;
  /** float32 to float16 (or bfloat16) bits, as wire-dtype.ts's JavaScript does it. */
  toHalf(src: Float32Array, dst: Uint16Array, bfloat: boolean): void;
  fromHalf(src: Uint16Array, dst: Float32Array, bfloat: boolean): void;
  /** out's rows are the rows `indices` of `images` (`row` bytes each), each pixel mapped through the 256-entry `table`. */
  gatherPixels(images: Uint8Array, indices: Int32Array, row: number, table: Float32Array, out: Float32Array): void;
}

/** Where `npm run build:native` leaves the addon, from dist/src/util/. */
const ADDON = path.join(__dirname, '..', '..', '..', 'native', 'build', 'Release', 'ganfleet_native.node');

/** Every function ganfleet calls on the addon; a build from older sources lacks some. */
const FUNCTIONS: readonly (keyof NativeAddon)[] = ['supported', 'gemmWidth', 'gemm', 'adam', 'scaleAdd', 'firstOutside', 'toHalf', 'fromHalf', 'gatherPixels'];

/** The functions `FUNCTIONS` names that `addon` lacks: a stale build, which is used for none of them. */
export function missingFunctions(addon: object): string[] {
  return FUNCTIONS.filter((name) => typeof (addon as Record<string, unknown>)[name] !== 'function');
}

/**
 * Whether `file`, a 64-bit little-endian ELF, is shorter than its headers say (a build or copy cut short).
 * dlopen maps such a file whole, and the first touch of the missing part kills the process with SIGBUS,
 * which no catch sees. Anything else is left to dlopen, which refuses it with a message.
 */
function truncatedElf(file: string): boolean {
  let head: Buffer;
  let size: number;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      size = fs.fstatSync(fd).size;
      head = Buffer.alloc(Math.min(size, 65536));
      fs.readSync(fd, head, 0, head.length, 0);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return false;
  }
  if (head.length < 64 || head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2 || head[5] !== 1) return false;
  // The section header table (at the end of a linker's output), then each loaded segment's bytes.
  let end = Number(head.readBigUInt64LE(40)) + head.readUInt16LE(58) * head.readUInt16LE(60);
  const phoff = Number(head.readBigUInt64LE(32));
  for (let i = 0; i < head.readUInt16LE(56); i++) {
    const at = phoff + i * head.readUInt16LE(54);
    // Past the end of the file: cut short; past the 64 KiB read (no linker puts them there): left to dlopen.
    if (at + 56 > head.length) return head.length === size;
    if (head.readUInt32LE(at) === 1) end = Math.max(end, Number(head.readBigUInt64LE(at + 8) + head.readBigUInt64LE(at + 32)));
  }
  return end > size;
}

let loaded: { addon: NativeAddon | null; why: string } | null = null;

/**
 * The addon when it is built, enabled and usable on this CPU, else null
 * with the reason. `--no-native` or GANFLEET_NATIVE=0 turns it off (to
 * compare, or to rule it out).
 */
export function nativeAddon(): { addon: NativeAddon | null; why: string } {
  if (loaded) return loaded;
  if (envSwitch(process.env.GANFLEET_NATIVE) === false) return (loaded = { addon: null, why: 'off (--no-native or GANFLEET_NATIVE=0)' });
  if (truncatedElf(ADDON)) return (loaded = { addon: null, why: `${ADDON} is cut short (npm run build:native)` });
  let addon: NativeAddon;
  try {
    addon = require(ADDON) as NativeAddon;
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' ? 'not built (npm run build:native)' : (e as Error).message.split('\n')[0];
    return (loaded = { addon: null, why });
  }
  const missing = missingFunctions(addon);
  if (missing.length > 0) return (loaded = { addon: null, why: `built from older sources, without ${missing.join(', ')} (npm run build:native)` });
  if (!addon.supported()) return (loaded = { addon: null, why: 'this CPU lacks AVX2, FMA or F16C' });
  // GANFLEET_NATIVE_AVX512=0 keeps the AVX2 kernel on a CPU with AVX-512 (to compare; some CPUs clock down for it).
  const width = addon.gemmWidth(envSwitch(process.env.GANFLEET_NATIVE_AVX512) === false ? 256 : 512);
  return (loaded = { addon, why: width === 512 ? 'AVX-512' : 'AVX2/FMA' });
}

/** The built addon whatever GANFLEET_NATIVE says, for tests of its own checks; null when not built. */
export function builtAddon(): NativeAddon | null {
  if (truncatedElf(ADDON)) return null;
  try {
    return require(ADDON) as NativeAddon;
  } catch {
    return null;
  }
}
