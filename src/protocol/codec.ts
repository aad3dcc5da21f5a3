import { Packr } from 'msgpackr';
import { nativeAddon } from '../util/native';
import { ProtocolError, REJECT_REASONS, RejectReason, protocolErrorCode } from './codec-error';
import { checkFrameShape } from './shape';
import { WIRE_DTYPES, WireDtype, decodeFloats, encodeFloats, wireDtypeBytes } from './wire-dtype';
import { CoordinatorMessage, MAX_GRADIENT_ABS, MAX_STATISTIC_ABS, MAX_STRING_LENGTH, Message, PROTOCOL_VERSION, WorkerMessage } from './messages';

export { ProtocolError, REJECT_REASONS, RejectReason, protocolErrorCode };

// Records (msgpackr's extension for repeated object shapes) would make the
// stream stateful; plain maps keep every frame self-describing.
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

/**
 * A message as one msgpack frame. Float arrays travel as raw little-endian
 * bytes of `floats` (wire-dtype.ts); a 16-bit choice is named in the frame's
 * `dtype`, so every frame decodes on its own.
 *
 * The frame is the other fields as one msgpack map, then each float or byte
 * array as a bin entry whose bytes start at a multiple of 4 from the frame's start
 * (a `pad.<field>` string before it takes up the slack). A receiver whose
 * frame starts aligned, as ws delivers any frame it had to reassemble, reads
 * the floats in place instead of copying them.
 */
export function encode(msg: Message, floats: WireDtype = 'float32'): Buffer {
  return encodeFrame(msg, floats).whole;
}

/**
 * A frame as the pieces `encode` joins: the arrays' bytes are the arrays
 * themselves, not copies. A mailbox writes the pieces straight into its
 * file, so the floats are copied once, by the kernel; a socket gets them
 * joined (`whole`), read before send/post returns, which senders rely on: a
 * worker's gradients live in memory its next step reuses. The exception is
 * WorkerPeer.send given the frame itself (a shard): it reads the pieces
 * fragment by fragment after it returns, so their arrays must not change.
 * A frame always has a header piece, so `whole` is a copy.
 */
export class EncodedFrame {
  private joined: Buffer | null = null;
  readonly length: number;

  constructor(readonly parts: readonly Buffer[]) {
    this.length = parts.reduce((n, p) => n + p.length, 0);
  }

  get whole(): Buffer {
    return (this.joined ??= this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts as Buffer[], this.length));
  }
}

export function encodeFrame(msg: Message, floats: WireDtype = 'float32'): EncodedFrame {
  const fields: Record<string, unknown> = {};
  const arrays: [string, Uint8Array][] = [];
  for (const [k, v] of Object.entries(msg)) {
    // msgpackr writes undefined as an extension type, which receivers refuse: an absent field is left out.
    if (v === undefined) continue;
    if (v instanceof Float32Array) {
      const data = floats === 'float32' || ALWAYS_FLOAT32.has(k) ? v : wireFloats(msg.type, k, v, floats);
      arrays.push([k, new Uint8Array(data.buffer, data.byteOffset, data.byteLength)]);
    } else if (v instanceof Uint8Array) {
      // A shard's images (47 MB for all of MNIST): msgpackr would copy them into its buffer, growing it step by step.
      arrays.push([k, v]);
    } else {
      fields[k] = v;
    }
  }
  if (arrays.length === 0) return new EncodedFrame([packr.pack(fields)]);
  if (floats !== 'float32') fields.dtype = floats;
  const head = Buffer.from(packr.pack(fields));
  if (head[0] !== 0xde) throw new Error(`msgpackr wrote a map header 0x${head[0].toString(16)}, not map16`);
  head.writeUInt16BE(head.readUInt16BE(1) + 2 * arrays.length, 1);
  const parts: Buffer[] = [head];
  let at = head.length;
  for (const [k, bytes] of arrays) {
    const padKey = packr.pack(`pad.${k}`);
    const key = packr.pack(k);
    const pad = (4 - ((at + padKey.length + 1 + key.length + 5) % 4)) % 4;
    // The pad entry (key, then a fixstr of `pad` spaces), the array's key, and its bin32 header.
    const header = Buffer.alloc(padKey.length + 1 + pad + key.length + 5, 0x20);
    let h = padKey.copy(header);
    header[h++] = 0xa0 | pad;
    h += pad;
    h += key.copy(header, h);
    header[h++] = 0xc6;
    header.writeUInt32BE(bytes.byteLength, h);
    parts.push(header, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    at += header.length + bytes.byteLength;
  }
  return new EncodedFrame(parts);
}

/** `f32`: floats at the frame's wire dtype; `float32`: floats at full precision whatever the wire dtype. */
type FieldKind = 'string' | 'count' | 'uint32' | 'number' | 'boolean' | 'phase' | 'f32' | 'float32' | 'u8';
/** A field's kind, whether it must be there, and for float arrays the largest magnitude allowed. */
type Schema = Record<string, [FieldKind, 'required' | 'optional', number?]>;

/** What each side accepts, field by field; README's Protocol section lists the same (a test compares them). */
export const WORKER_SCHEMAS: Record<WorkerMessage['type'], Schema> = {
  hello: { name: ['string', 'required'], backend: ['string', 'required'], pid: ['count', 'required'], hostname: ['string', 'required'], instance: ['string', 'optional'] },
  gradients: {
    step: ['count', 'required'],
    phase: ['phase', 'required'],
    samples: ['count', 'required'],
    // Bounded here, in the one pass that also finds NaN and ±Infinity.
    gradients: ['f32', 'required', MAX_GRADIENT_ABS],
    loss: ['number', 'required'],
    dReal: ['number', 'optional'],
    dFake: ['number', 'required'],
    // Full precision: 384 floats, and float16 would cap a variance at 65504 without a word.
    statistics: ['float32', 'optional', MAX_STATISTIC_ABS],
    computeSeconds: ['number', 'required'],
  },
  mailbox: { path: ['string', 'required'] },
  mail: { bytes: ['count', 'required'] },
  error: { code: ['string', 'required'], message: ['string', 'required'] },
};

export const COORDINATOR_SCHEMAS: Record<CoordinatorMessage['type'], Schema> = {
  welcome: {
    workerId: ['string', 'required'],
    arch: ['string', 'required'],
    loss: ['string', 'required'],
    generatorSize: ['count', 'required'],
    discriminatorSize: ['count', 'required'],
    batchSize: ['count', 'required'],
    heartbeatSeconds: ['number', 'required'],
    wireDtype: ['string', 'optional'],
    discriminatorUpdates: ['count', 'required'],
    mailbox: ['string', 'optional'],
    nonce: ['string', 'optional'],
  },
  shard: { plan: ['count', 'required'], count: ['count', 'required'], keep: ['count', 'required'], seed: ['uint32', 'required'], images: ['u8', 'required'] },
  weights: {
    step: ['count', 'required'],
    phase: ['phase', 'required'],
    generator: ['f32', 'optional'],
    discriminator: ['f32', 'optional'],
  },
  mail: { bytes: ['count', 'required'] },
  stop: { reason: ['string', 'required'], resumable: ['boolean', 'optional'] },
  error: { code: ['string', 'required'], message: ['string', 'required'] },
};

/**
 * `values` at a 16-bit wire dtype. float16 saturates beyond 65504, so that an
 * honest gradient of 70,000 is not sent as Infinity; but a gradient beyond the
 * ±MAX_GRADIENT_ABS the receiver checks (a diverged step's) would then arrive
 * as 65504 and pass, and bfloat16 can round one just beyond it back inside.
 * The first such value goes as ±Infinity instead, so that the answer is
 * refused as under float32, and the coordinator checks for divergence.
 */
function wireFloats(type: string, field: string, values: Float32Array, floats: Exclude<WireDtype, 'float32'>): Uint16Array {
  const halves = encodeFloats(values, floats);
  const bound = type === 'gradients' ? WORKER_SCHEMAS.gradients[field]?.[2] : undefined;
  if (bound !== undefined) {
    const at = firstOutside(values, bound);
    // ±Infinity: float16's 0x7c00, bfloat16's (float32's upper half) 0x7f80; the sign bit on top. A NaN
    // already travels as NaN (encodeFloats keeps it), and is refused as one.
    if (at >= 0 && !Number.isNaN(values[at])) halves[at] = (values[at] < 0 ? 0x8000 : 0) | (floats === 'float16' ? 0x7c00 : 0x7f80);
  }
  return halves;
}

/** The float fields `encodeFrame` leaves at float32 under any wire dtype. */
const ALWAYS_FLOAT32 = new Set(
  [WORKER_SCHEMAS, COORDINATOR_SCHEMAS].flatMap((schemas) => Object.values(schemas).flatMap((schema) => Object.keys(schema).filter((field) => schema[field][0] === 'float32'))),
);

/** Decodes and structurally validates a frame from a worker. Throws ProtocolError. */
export function decodeWorkerMessage(frame: Uint8Array): WorkerMessage {
  return decode(frame, WORKER_SCHEMAS) as WorkerMessage;
}

/** Decodes and structurally validates a frame from the coordinator. Throws ProtocolError. */
export function decodeCoordinatorMessage(frame: Uint8Array): CoordinatorMessage {
  return decode(frame, COORDINATOR_SCHEMAS) as CoordinatorMessage;
}

function decode(frame: Uint8Array, schemas: Record<string, Schema>): Message {
  checkFrameShape(frame);
  let raw: unknown;
  try {
    raw = packr.unpack(frame);
  } catch (e) {
    throw new ProtocolError('bad_frame', `not a msgpack frame: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ProtocolError('bad_frame', 'a message must be a msgpack map');
  }
  const obj = raw as Record<string, unknown>;
  // Every ganfleet version sends `v`; a map without one is another service's message, not another version's.
  if (!Object.prototype.hasOwnProperty.call(obj, 'v')) {
    throw new ProtocolError('bad_frame', 'a message must carry its protocol version v');
  }
  if (obj.v !== PROTOCOL_VERSION) {
    // Versions only grow, so a number says which side runs the older ganfleet, the one to upgrade.
    const v = Number.isSafeInteger(obj.v) && (obj.v as number) >= 1 ? (obj.v as number) : null;
    const side = v === null ? '' : `: the sender runs ${v < PROTOCOL_VERSION ? 'an older' : 'a newer'} ganfleet than this one`;
    throw new ProtocolError('bad_version', `protocol version ${quote(obj.v)} is not this ganfleet's ${PROTOCOL_VERSION}${side}`, v !== null && v < PROTOCOL_VERSION ? v : undefined);
  }
  const type = obj.type;
  if (typeof type !== 'string' || !Object.prototype.hasOwnProperty.call(schemas, type)) {
    throw new ProtocolError('bad_type', `unexpected message type ${quote(type)}`);
  }
  const schema = schemas[type];
  const dtype = obj.dtype ?? 'float32';
  if (!(WIRE_DTYPES as readonly unknown[]).includes(dtype)) {
    throw new ProtocolError('bad_field', `${type}.dtype ${quote(dtype)} is not one of ${WIRE_DTYPES.join(', ')}`);
  }
  const out: Record<string, unknown> = { v: obj.v, type };
  for (const [field, [kind, presence, bound]] of Object.entries(schema)) {
    const value = obj[field];
    if (value === undefined || value === null) {
      if (presence === 'required') throw new ProtocolError('bad_field', `${type}.${field} is missing`);
      continue;
    }
    out[field] = checkField(type, field, kind, value, dtype as WireDtype, bound);
  }
  return out as unknown as Message;
}

function checkField(type: string, field: string, kind: FieldKind, value: unknown, dtype: WireDtype, bound = Number.MAX_VALUE): unknown {
  const bad = (what: string) => new ProtocolError('bad_field', `${type}.${field} must be ${what}`);
  switch (kind) {
    case 'string':
      if (typeof value !== 'string' || value.length > MAX_STRING_LENGTH) throw bad(`a string of at most ${MAX_STRING_LENGTH} characters`);
      return value;
    case 'count':
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw bad('a non-negative integer');
      return value;
    case 'uint32':
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value >= 2 ** 32) throw bad('an integer from 0 to 2^32 − 1');
      return value;
    case 'number':
      if (typeof value !== 'number') throw bad('a number');
      if (!Number.isFinite(value)) throw new ProtocolError('not_finite', `${type}.${field} is not finite`);
      return value;
    case 'boolean':
      if (typeof value !== 'boolean') throw bad('true or false');
      return value;
    case 'phase':
      if (value !== 'discriminator' && value !== 'generator') throw bad('"discriminator" or "generator"');
      return value;
    case 'u8':
      if (!(value instanceof Uint8Array)) throw bad('binary');
      return value;
    case 'float32':
      return checkField(type, field, 'f32', value, 'float32', bound);
    case 'f32': {
      if (!(value instanceof Uint8Array)) throw bad(`binary ${dtype} data`);
      const width = wireDtypeBytes(dtype);
      if (value.byteLength % width !== 0) throw new ProtocolError('bad_size', `${type}.${field} has ${value.byteLength} bytes, not a whole number of ${dtype}s`);
      const floats = dtype === 'float32' ? float32View(value) : decodeFloats(uint16View(value), dtype);
      const at = firstOutside(floats, bound);
      if (at >= 0 && !Number.isFinite(floats[at])) throw new ProtocolError('not_finite', `${type}.${field}[${at}] is ${floats[at]}`);
      if (at >= 0) throw new ProtocolError('out_of_range', `${type}.${field}[${at}] is ${floats[at]}, beyond ±${bound}`);
      return floats;
    }
  }
}

/** A peer's value, made safe to log: one line, bounded, never throwing. */
function quote(v: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(v) ?? typeof v;
  } catch {
    text = typeof v;
  }
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}

/** Zero-copy when the bytes are 4-byte aligned (the usual case), one copy otherwise. */
function float32View(bytes: Uint8Array): Float32Array {
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  // A fresh Uint8Array copy (Buffer#slice would be a view of the same pool).
  return new Float32Array(new Uint8Array(bytes).buffer);
}

/** In place when 2-byte aligned, one copy otherwise (decodeFloats copies into float32 either way). */
function uint16View(bytes: Uint8Array): Uint16Array {
  if (bytes.byteOffset % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  return new Uint16Array(new Uint8Array(bytes).buffer);
}

/** The largest finite float32: as a bound, `firstOutside` finds the first NaN or ±Infinity. */
export const FLOAT32_MAX = 3.4028234663852886e38;

/**
 * Index of the first value that is NaN or beyond ±bound (±Infinity is beyond
 * any finite bound), or -1. Every float that arrives passes here: 8 lanes on
 * the native addon (0.01 ms for a 114k gradient against 0.1 ms below).
 */
export function firstOutside(values: Float32Array, bound: number): number {
  const native = nativeAddon().addon;
  if (native) return native.firstOutside(values, bound);
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    if (!(x <= bound && x >= -bound)) return i;
  }
  return -1;
}
