/**
 * Fuzz: a rogue client with the right token throws thousands of random and
 * mutated frames at a live coordinator while two honest workers train, and
 * other clients knock with no token or a wrong one. The coordinator must stay
 * up, the honest workers must finish the run, the final weights must be
 * finite, and every rejection must show up in the metrics.
 *
 * Everything random comes from a seeded PRNG, so each lane of the fuzzer
 * sends the same frames in the same order on every run; only the
 * interleaving with the training (which step is open when a frame lands)
 * varies, and no assertion depends on it. The frame-by-frame bookkeeping
 * (ConnectionModel) predicts, with the coordinator's own codec, what each
 * frame must cost the sender and which error code must come back.
 *
 * Also here, each failing against the coordinator as of 282ca73:
 *  - a hello already in flight when the coordinator closes an unidentified
 *    socket for a bad first frame still gets that socket welcomed as a worker;
 *  - the protocol version of a rejected frame is written to the log verbatim,
 *    so a rogue can write whole log lines of its own;
 *  - a frame of a few hundred bytes whose msgpack headers declare huge nested
 *    arrays makes the decoder allocate gigabytes: the coordinator dies.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { Packr } from 'msgpackr';
import { loadLatestCheckpoint } from '../src/coordinator/checkpoint';
import { ProtocolError, RejectReason, decodeCoordinatorMessage, decodeWorkerMessage, encode } from '../src/protocol/codec';
import { CoordinatorMessage, ErrorMessage, Gradients, Hello, MAX_LOSS, PROTOCOL_VERSION, Phase, message } from '../src/protocol/messages';
import { GanfleetProcess, metricTotal, scrape, sleep, startCoordinator, startWorker, tempDir } from './harness';
import { metricValue } from './helpers';

const TOKEN = 'fuzz-token-5b41648-honest-workers-only';
/**
 * Long enough that the fuzz spends its budget well before STOP_FUZZ_AT_STEP: it took 7.9-17 s, while training
 * reached step 64-104, and with another test file beside it (npm test runs two at once) once past 125 of 150.
 */
const STEPS = 300;
const BATCH = 128;
const G_SIZE = 114064;
const D_SIZE = 100609;
/** A D round's answer: D's gradient in two halves. */
const D_GRADIENTS = 2 * D_SIZE;
/** The coordinator's ws maxPayload: the larger round's gradients plus 64 KiB of envelope. */
const MAX_PAYLOAD = 4 * Math.max(G_SIZE, D_GRADIENTS) + 64 * 1024;
/** Mirrors MAX_OFFENCES in coordinator.ts: the third rejected message from a welcomed peer disconnects it. */
const MAX_OFFENCES = 3;
/** The fuzz starts only once step FUZZ_FROM_STEP is logged, so gradients for steps 0..STALE_MAX are always stale. */
const FUZZ_FROM_STEP = 10;
const STALE_MAX = 5;
/** No round of the run is ever at or beyond this step, so gradients for it are always ahead. */
const FUTURE_MIN = STEPS + 1;
/** Stop fuzzing if the run gets this far, so the quiesced metrics can still be scraped before it ends. */
const STOP_FUZZ_AT_STEP = STEPS - 25;
const LANES = 8;
const FRAMES_PER_LANE = 310;
const PARTICIPANTS_PER_LANE = 1;
const SEED = 0x5eed_f022;
/** A protocol version that is a whole log line of its own. */
const FORGED_VERSION = `1\nFORGED [coordinator] finished ${STEPS} steps: forged`;

const packr = new Packr({ useRecords: false, mapsAsObjects: true });

/**
 * A coordinator's frame as its codec reads it, except the refusal of a frame of an older protocol version sent
 * before a hello: that goes out in the older version, for an older ganfleet's worker to read.
 */
function decodeOrOlderRefusal(data: Buffer): CoordinatorMessage {
  const raw = packr.unpack(data) as Record<string, unknown> | null;
  const older = raw !== null && typeof raw === 'object' && Number.isSafeInteger(raw.v) && (raw.v as number) >= 1 && (raw.v as number) < PROTOCOL_VERSION;
  if (older && raw.type === 'error' && raw.code === 'PROTOCOL_BAD_VERSION') return decodeCoordinatorMessage(packr.pack({ ...raw, v: PROTOCOL_VERSION }));
  return decodeCoordinatorMessage(data);
}

// ---------------------------------------------------------------------------
// Seeded randomness (mulberry32): never Math.random.

class Prng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  float(): number {
    return this.u32() / 2 ** 32;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }
  /** Integer in [a, b]. */
  range(a: number, b: number): number {
    return a + this.int(b - a + 1);
  }
  chance(p: number): boolean {
    return this.float() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 4) {
      const x = this.u32();
      for (let k = 0; k < 4 && i + k < n; k++) b[i + k] = (x >>> (8 * k)) & 0xff;
    }
    return b;
  }
  string(max: number): string {
    const alphabet = 'abcxyz_-.:/ \n\t"\'\\{}[]0123456789é€😀\u0000\u2028';
    const chars = [...alphabet];
    let s = '';
    for (let i = this.int(max + 1); i > 0; i--) s += this.pick(chars);
    return s;
  }
}

// ---------------------------------------------------------------------------
// Frames and what the coordinator must make of them.

interface Frame {
  kind: string;
  data: Buffer | string;
  /** Over the coordinator's maxPayload: ws closes the socket with 1009 before any message exists. */
  oversized?: boolean;
  /** For a participant's reply to an open round: the reason its one planted defect must be rejected for. */
  reason?: RejectReason;
}

type Outcome = { kind: 'rejected'; reason: RejectReason } | { kind: 'hello' } | { kind: 'oversized' };

/**
 * What the coordinator must do with `f` from a peer that has (or has not)
 * been welcomed, predicted with the same codec the coordinator runs. Throws
 * for a frame the generators must never produce: one the coordinator could
 * legitimately accept or leave uncounted.
 */
function classify(f: Frame, welcomed: boolean): Outcome {
  if (f.oversized) return { kind: 'oversized' };
  if (typeof f.data === 'string') return { kind: 'rejected', reason: 'bad_frame' };
  let msg;
  try {
    msg = decodeWorkerMessage(f.data);
  } catch (e) {
    return { kind: 'rejected', reason: e instanceof ProtocolError ? e.reason : 'bad_frame' };
  }
  if (!welcomed) return msg.type === 'hello' ? { kind: 'hello' } : { kind: 'rejected', reason: 'unexpected' };
  switch (msg.type) {
    case 'hello':
      return { kind: 'rejected', reason: 'unexpected' };
    case 'error':
      throw new Error(`fuzzer bug: ${f.kind} is a valid error message (an offence, but no rejection)`);
    case 'mail':
      // Nothing the fuzzer sends confirms a mailbox.
      return { kind: 'rejected', reason: 'unexpected' };
    case 'mailbox':
      // Offered to every welcomed peer; no file the fuzzer names holds the nonce.
      return { kind: 'rejected', reason: 'bad_field' };
    case 'gradients':
      if (f.reason) return { kind: 'rejected', reason: f.reason };
      if (msg.step >= FUTURE_MIN) return { kind: 'rejected', reason: 'wrong_step' };
      // Rounds this early closed before any rogue connected: a stale frame answers no request of its sender.
      if (msg.step <= STALE_MAX) return { kind: 'rejected', reason: 'wrong_step' };
      throw new Error(`fuzzer bug: ${f.kind} carries gradients for step ${msg.step}, which may be the open round`);
  }
}

/**
 * Bytes msgpackr would allocate up front for the arrays in `b`: it sizes an
 * array by its declared length before reading a single element, and V8 backs
 * `new Array(n)` densely up to 2^25 elements. Walks the frame as msgpack
 * (skipping str, bin and ext payloads) as far as it goes. Frames that can make
 * the decoder allocate a lot are the subject of their own test below (they
 * take the coordinator down), so the main fuzz leaves them out.
 */
function arrayPrealloc(b: Buffer | string): number {
  if (typeof b === 'string') return 0;
  let pos = 0;
  let total = 0;
  const left = [1]; // values still to read at each open level
  const uint = (bytes: number) => {
    if (pos + bytes > b.length) return -1;
    const v = bytes === 1 ? b[pos] : bytes === 2 ? b.readUInt16BE(pos) : b.readUInt32BE(pos);
    pos += bytes;
    return v;
  };
  while (left.length > 0 && pos < b.length) {
    if (left[left.length - 1] === 0) {
      left.pop();
      continue;
    }
    left[left.length - 1]--;
    const t = b[pos++];
    let skip = 0;
    let array = -1;
    let map = -1;
    if (t <= 0x7f || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) skip = 0;
    else if (t <= 0x8f) map = t & 0x0f;
    else if (t <= 0x9f) array = t & 0x0f;
    else if (t <= 0xbf) skip = t & 0x1f;
    else if (t === 0xc4 || t === 0xd9) skip = uint(1);
    else if (t === 0xc5 || t === 0xda) skip = uint(2);
    else if (t === 0xc6 || t === 0xdb) skip = uint(4);
    else if (t >= 0xc7 && t <= 0xc9) skip = uint(1 << (t - 0xc7)) + 1;
    else if (t >= 0xca && t <= 0xd3) skip = [4, 8, 1, 2, 4, 8, 1, 2, 4, 8][t - 0xca];
    else if (t >= 0xd4 && t <= 0xd8) skip = 1 + (1 << (t - 0xd4));
    else if (t === 0xdc || t === 0xdd) array = uint(t === 0xdc ? 2 : 4);
    else if (t === 0xde || t === 0xdf) map = uint(t === 0xde ? 2 : 4);
    else break; // 0xc1: never used
    if (skip < 0) break;
    pos += skip;
    if (array > 0) {
      if (array <= 2 ** 25) total += 8 * array;
      left.push(array);
    } else if (map > 0) {
      left.push(2 * map);
    }
  }
  return total;
}

/** A garbage frame is acceptable when the coordinator must count it whether or not the sender was welcomed. */
function isGarbage(f: Frame): boolean {
  if (arrayPrealloc(f.data) > 8 * 1024 * 1024) return false;
  try {
    return classify(f, false).kind !== 'hello' && classify(f, true).kind !== 'hello';
  } catch {
    return false;
  }
}

function smallValues(rng: Prng, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rng.float() - 0.5) * 0.02;
  return a;
}

/** Reference gradients, each at most 0.01 in magnitude: the payload of every well-formed gradients frame. */
const REF: Record<Phase, Float32Array> = { discriminator: smallValues(new Prng(SEED ^ 1), D_GRADIENTS), generator: smallValues(new Prng(SEED ^ 2), G_SIZE) };
const sizeOf = (phase: Phase) => (phase === 'generator' ? G_SIZE : D_GRADIENTS);

function gradientsBody(step: number, phase: Phase, gradients: Float32Array = REF[phase]): Omit<Gradients, 'v'> {
  const body: Omit<Gradients, 'v'> = { type: 'gradients', step, phase, samples: BATCH, gradients, loss: 0.69, dFake: 0.5, computeSeconds: 0.02 };
  if (phase === 'discriminator') body.dReal = 0.5;
  return body;
}

function gradientsFrame(step: number, phase: Phase, gradients?: Float32Array): Buffer {
  return encode(message<Gradients>(gradientsBody(step, phase, gradients)));
}

function helloFrame(name: string): Buffer {
  return encode(message<Hello>({ type: 'hello', name, backend: 'rogue', pid: 4242, hostname: 'fuzz' }));
}

/** Bases for mutation: valid frames (the gradients ones for a step that is always ahead). */
const BASES = {
  discriminator: gradientsFrame(1_000_000, 'discriminator'),
  generator: gradientsFrame(1_000_000, 'generator'),
  short: encode(message<Gradients>({ ...gradientsBody(1_000_000, 'generator'), gradients: new Float32Array([0.001, -0.002, 0.003, 0]) })),
  hello: helloFrame('mutant'),
};

/** A msgpack map whose values are given already encoded, so a header can lie about its length. */
function rawMap(entries: [string, Buffer][]): Buffer {
  const parts: Buffer[] = [Buffer.from([0x80 | entries.length])];
  for (const [k, v] of entries) parts.push(packr.pack(k), v);
  return Buffer.concat(parts);
}

function u32be(x: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(x >>> 0);
  return b;
}

function randomValue(rng: Prng, depth: number): unknown {
  switch (rng.int(depth > 0 ? 14 : 11)) {
    case 0: return null;
    case 1: return rng.chance(0.5);
    case 2: return rng.range(-40, 200);
    case 3: return rng.pick([-1, 0, 1, 2, 127, 128, 255, 65535, 2 ** 31, 2 ** 32, 2 ** 53 - 1, -(2 ** 53)]);
    case 4: return rng.pick([NaN, Infinity, -Infinity, -0, 1e308, 5e-324, 0.5, 1.5]);
    case 5: return rng.string(24);
    case 6: return rng.bytes(rng.int(64));
    case 7: return BigInt(rng.u32()) * 4294967296n + BigInt(rng.u32());
    case 8: return rng.pick(['hello', 'gradients', 'error', 'discriminator', 'generator', '__proto__', 'constructor']);
    case 9: return new Date(rng.u32() * 1000);
    case 10: return undefined;
    case 11: return Array.from({ length: rng.int(6) }, () => randomValue(rng, depth - 1));
    case 12: {
      const o: Record<string, unknown> = {};
      for (let i = rng.int(6); i > 0; i--) o[rng.pick(['v', 'type', 'step', 'phase', 'name', 'gradients', rng.string(6)])] = randomValue(rng, depth - 1);
      return o;
    }
    default: {
      const m = new Map<unknown, unknown>();
      for (let i = rng.int(5); i > 0; i--) m.set(rng.pick<unknown>([rng.range(-5, 5), '__proto__', 'constructor', 'v', null, rng.string(4)]), randomValue(rng, depth - 1));
      return m;
    }
  }
}

/** One garbage frame: never acceptable, never a hello, never a valid error. */
function garbage(rng: Prng): Frame {
  for (;;) {
    const f = garbageCandidate(rng);
    if (isGarbage(f)) return f;
  }
}

function garbageCandidate(rng: Prng): Frame {
  const phase: Phase = rng.chance(0.5) ? 'discriminator' : 'generator';
  const future = rng.pick([FUTURE_MIN, FUTURE_MIN + 1, 200, 1000, 1_000_000, 2 ** 32, Number.MAX_SAFE_INTEGER]);
  switch (rng.int(17)) {
    case 0:
      return { kind: 'random bytes', data: rng.bytes(rng.pick([0, 1, 2, 3, 7, 16, 64, 512, 2048, rng.int(4096)])) };
    case 1:
      return { kind: 'random msgpack', data: packr.pack(randomValue(rng, 3)) };
    case 2: {
      // Looks like a message: a real type and real field names, with random values.
      const o: Record<string, unknown> = { v: rng.pick([1, 1, 1, 0, 2]), type: rng.pick(['hello', 'gradients', 'error', 'weights', 'welcome']) };
      for (const k of ['name', 'backend', 'pid', 'hostname', 'step', 'phase', 'samples', 'gradients', 'loss', 'dReal', 'dFake', 'computeSeconds', 'code', 'message']) {
        if (rng.chance(0.6)) o[k] = randomValue(rng, 1);
      }
      return { kind: 'random message', data: packr.pack(o) };
    }
    case 3: {
      // The last one is text a coordinator must not write into its log verbatim.
      const v = rng.pick<unknown>([0, 2, -1, 1.5, '1', null, true, 2 ** 53, [1], { major: 1 }, { toString: 'x' }, FORGED_VERSION]);
      const body: Record<string, unknown> = rng.chance(0.5) ? { ...gradientsBody(rng.range(0, 2 * STEPS), phase) } : { type: 'hello', name: 'old', backend: 'x', pid: 1, hostname: 'h' };
      if (rng.chance(0.1)) delete body.v;
      else body.v = v;
      if (body.gradients instanceof Float32Array) body.gradients = new Uint8Array(body.gradients.buffer, body.gradients.byteOffset, body.gradients.byteLength);
      return { kind: body.v === FORGED_VERSION ? 'wrong version (log line)' : 'wrong version', data: packr.pack(body) };
    }
    case 4: {
      const type = rng.pick<unknown>(['welcome', 'shard', 'weights', 'stop', 'gradient', 'HELLO', 'Gradients', '', '__proto__', 'constructor', 'hasOwnProperty', 'toString', 42, null, ['hello'], { type: 'hello' }]);
      return { kind: 'unknown type', data: packr.pack({ v: PROTOCOL_VERSION, type, step: 1, phase, name: 'x' }) };
    }
    case 5: {
      // A float32 payload that is not a whole number of floats.
      const bytes = rng.bytes(rng.pick([1, 2, 3, 5, 401, 4 * D_GRADIENTS - 1, 4 * G_SIZE + 2]));
      return { kind: 'ragged gradients', data: packr.pack({ ...gradientsBody(future, phase), v: PROTOCOL_VERSION, gradients: bytes }) };
    }
    case 6: {
      // Whole float32s, but the wrong count for the phase (and a step that is ahead).
      const n = rng.pick([0, 1, D_SIZE, D_GRADIENTS - 1, D_GRADIENTS + 1, G_SIZE - 1, G_SIZE + 1, sizeOf(phase === 'generator' ? 'discriminator' : 'generator')]);
      const g = n <= G_SIZE ? REF.generator.subarray(0, n) : new Float32Array(n);
      return { kind: 'wrong length', data: gradientsFrame(future, phase, g) };
    }
    case 7: {
      // NaN and infinities as raw float32 bits in the gradients, quiet, signalling and negative.
      const n = rng.chance(0.3) ? sizeOf(phase) : rng.range(1, 64);
      const g = Float32Array.from(REF[phase].subarray(0, Math.min(n, sizeOf(phase))));
      const bits = new Uint32Array(g.buffer);
      const bad = rng.range(1, 3);
      for (let i = 0; i < bad; i++) bits[rng.int(g.length)] = rng.pick([0x7fc00000, 0x7f800001, 0xffc00000, 0xffffffff, 0x7f800000, 0xff800000]);
      return { kind: 'non-finite gradients', data: gradientsFrame(rng.range(0, 1_000_000), phase, g) };
    }
    case 8: {
      const body: Record<string, unknown> = { ...gradientsBody(rng.range(0, 1_000_000), phase), v: PROTOCOL_VERSION };
      body[rng.pick(['loss', 'dFake', 'dReal', 'computeSeconds'])] = rng.pick([NaN, Infinity, -Infinity]);
      body.gradients = new Uint8Array(4 * 8);
      return { kind: 'non-finite scalar', data: packr.pack(body) };
    }
    case 9: {
      // Absurd values: what the codec catches is rejected here, the rest is ahead of the open round.
      const body: Record<string, unknown> = { ...gradientsBody(future, phase), v: PROTOCOL_VERSION, gradients: new Uint8Array(4 * 16) };
      const [k, v] = rng.pick<[string, unknown]>([
        ['samples', -1], ['samples', 1.5], ['samples', 2 ** 60], ['samples', '128'], ['samples', 1e9], ['samples', 0],
        ['computeSeconds', 1e300], ['computeSeconds', -1e9], ['computeSeconds', '0.1'], ['loss', -1e30], ['dFake', 7],
        ['step', -1], ['step', 0.5], ['step', '3'], ['step', 2 ** 64], ['phase', 'both'], ['phase', 0], ['gradients', [0.1, 0.2]], ['gradients', 'AAAA'],
      ]);
      body[k] = v;
      return { kind: 'absurd field', data: packr.pack(body) };
    }
    case 10: {
      // Length headers that promise far more than the frame holds.
      const huge = rng.pick([0xffffffff, 0x7fffffff, 0x80000000, MAX_PAYLOAD, 2 ** 30]);
      const tail = rng.bytes(rng.int(32));
      const header = rng.pick([0xc6, 0xdb, 0xdd, 0xdf, 0xc9]); // bin32, str32, array32, map32, ext32
      if (rng.chance(0.5)) return { kind: 'huge length', data: Buffer.concat([Buffer.from([header]), u32be(huge), tail]) };
      const entries: [string, Buffer][] = Object.entries(gradientsBody(future, phase))
        .filter(([k]) => k !== 'gradients')
        .map(([k, v]) => [k, packr.pack(v)]);
      entries.unshift(['v', packr.pack(1)]);
      entries.push(['gradients', Buffer.concat([Buffer.from([header === 0xc9 ? 0xc9 : 0xc6]), u32be(huge), header === 0xc9 ? Buffer.from([0x01]) : Buffer.alloc(0), tail])]);
      return { kind: 'huge length', data: rawMap(entries) };
    }
    case 11:
    case 12: {
      const base = rng.pick([BASES.discriminator, BASES.generator, BASES.short, BASES.short, BASES.short, BASES.short, BASES.hello, BASES.hello]);
      return { kind: 'mutated', data: mutate(rng, base) };
    }
    case 13:
      return { kind: 'text frame', data: rng.pick(['hello', '{"v":1,"type":"hello"}', '', rng.string(64)]) };
    case 14:
      return { kind: 'deep nesting', data: Buffer.concat([Buffer.alloc(rng.pick([1000, 50_000, 200_000]), rng.pick([0x91, 0x81])), Buffer.from([0xc0])]) };
    case 15: {
      const m = new Map<unknown, unknown>([['v', 1], ['type', rng.pick(['hello', 'gradients'])], ['__proto__', { v: PROTOCOL_VERSION, type: 'hello', name: 'p' }], ['constructor', { prototype: { v: PROTOCOL_VERSION } }]]);
      if (rng.chance(0.5)) m.set('name', 7);
      else m.delete('type');
      return { kind: 'prototype keys', data: packr.pack(m) };
    }
    default:
      // Valid in every way but the step (the size is checked only for the open round, so most are short).
      return { kind: 'future step', data: gradientsFrame(future, phase, rng.chance(0.2) ? REF[phase] : REF[phase].subarray(0, rng.range(1, 256))) };
  }
}

/** Bit flips (mostly in the envelope), truncation, trailing junk, overwritten or repeated spans. */
function mutate(rng: Prng, base: Buffer): Buffer {
  let b = Buffer.from(base);
  switch (rng.int(5)) {
    case 0:
      for (let i = rng.range(1, 8); i > 0; i--) {
        const at = rng.chance(0.7) ? rng.int(Math.min(b.length, 160)) : rng.int(b.length);
        b[at] ^= 1 << rng.int(8);
      }
      break;
    case 1:
      b = b.subarray(0, rng.int(b.length));
      break;
    case 2:
      b = Buffer.concat([b, rng.bytes(rng.range(1, 16))]);
      break;
    case 3: {
      const at = rng.int(Math.min(b.length, 200));
      rng.bytes(rng.range(1, 12)).copy(b, at);
      break;
    }
    default: {
      const at = rng.int(Math.min(b.length, 200));
      b = Buffer.concat([b.subarray(0, at), b.subarray(0, rng.range(1, 40)), b.subarray(at)]);
    }
  }
  return b;
}

/** Gradients, some cut short, for a round that closed before its sender connected: an offence (wrong_step). */
function staleFrame(rng: Prng): Frame {
  const phase: Phase = rng.chance(0.5) ? 'discriminator' : 'generator';
  const g = rng.chance(0.1) ? REF[phase] : REF[phase].subarray(0, rng.range(1, 256));
  return { kind: 'stale step', data: gradientsFrame(rng.range(0, STALE_MAX), phase, g) };
}

function oversizedFrame(rng: Prng): Frame {
  const n = Math.ceil((MAX_PAYLOAD - 4 * G_SIZE) / 4) + G_SIZE + rng.range(1, 4096);
  return { kind: 'oversized', data: gradientsFrame(1_000_000, 'generator', new Float32Array(n)), oversized: true };
}

/**
 * A participant's reply to weights for (step, phase): a frame for the open
 * round with exactly one defect, each one a different check of the coordinator.
 */
function poisonFrame(rng: Prng, step: number, phase: Phase, index: number): Frame {
  const size = sizeOf(phase);
  const g = () => Float32Array.from(REF[phase]);
  const body = gradientsBody(step, phase, REF[phase]);
  // Defect `index`, round-robin: the last two are about dReal, which only D rounds carry.
  const choice = index % (phase === 'discriminator' ? 14 : 12);
  const set = (kind: string, reason: RejectReason, patch: Partial<Gradients>): Frame => ({
    kind: `poison: ${kind}`,
    data: encode(message<Gradients>({ ...body, ...patch } as Gradients)),
    reason,
  });
  switch (choice) {
    case 0: return set('one value short', 'bad_size', { gradients: REF[phase].subarray(0, size - 1) });
    case 1: return set('one value over', 'bad_size', { gradients: new Float32Array(size + 1) });
    case 2: return set('the other network', 'bad_size', { gradients: new Float32Array(sizeOf(phase === 'generator' ? 'discriminator' : 'generator')) });
    case 3: {
      const x = g();
      x[rng.int(size)] = rng.pick([NaN, Infinity, -Infinity]);
      return set('non-finite value', 'not_finite', { gradients: x });
    }
    case 4: return set('samples', 'bad_field', { samples: rng.pick([0, BATCH + 1, 1_000_000]) });
    case 5: return set('loss', 'out_of_range', { loss: rng.pick([-0.5, -1e30, MAX_LOSS * 2, 1e308]) });
    case 6: return set('dFake', 'out_of_range', { dFake: rng.pick([-0.01, 1.5, 1e9]) });
    case 7: return set('computeSeconds', 'out_of_range', { computeSeconds: rng.pick([-1, 3601, 1e12]) });
    case 8: {
      const x = g();
      x[rng.int(size)] = rng.pick([2e6, -2e6, 3e38]);
      return set('huge value', 'out_of_range', { gradients: x });
    }
    case 9: return set('loss NaN', 'not_finite', { loss: NaN });
    case 10: {
      // The next round of the same step (or the next step): ahead of the open round.
      const next = phase === 'discriminator' ? { step, phase: 'generator' as Phase } : { step: step + 1, phase: 'discriminator' as Phase };
      return { kind: 'poison: next round', data: gradientsFrame(next.step, next.phase), reason: 'wrong_step' };
    }
    case 11: return set('far future step', 'wrong_step', { step: step + rng.range(2, 1000) });
    case 12: {
      const { dReal: _omit, ...rest } = body;
      return { kind: 'poison: no dReal', data: encode(message<Gradients>(rest as Gradients)), reason: 'bad_field' };
    }
    default: return set('dReal', 'out_of_range', { dReal: rng.pick([-0.5, 1.0001]) });
  }
}

// ---------------------------------------------------------------------------
// Connection plans.

type Plan =
  | { mode: 'frames'; name: string; frames: Frame[]; pace: boolean }
  | { mode: 'participant'; name: string };

function planConnection(rng: Prng, lane: number, n: number, participantsLeft: number): Plan {
  const name = `rogue-${lane}-${n}`;
  const r = rng.float();
  if (participantsLeft > 0 && r < 0.04) return { mode: 'participant', name };
  const pace = rng.chance(0.25);
  if (r < 0.07) {
    // Oversized, as the first violation: straight away, after hello, or after a stale frame.
    const frames: Frame[] = [];
    if (rng.chance(0.5)) {
      frames.push({ kind: 'hello', data: helloFrame(name) });
      if (rng.chance(0.5)) frames.push(staleFrame(rng));
    }
    frames.push(oversizedFrame(rng));
    return { mode: 'frames', name, frames, pace };
  }
  if (r < 0.58) {
    // Garbage before any hello: the first frame gets the socket closed, whatever follows is in flight.
    const first: Frame = rng.chance(0.1)
      ? { kind: 'error before hello', data: encode(message<ErrorMessage>({ type: 'error', code: 'ROGUE', message: 'not a worker' })) }
      : rng.chance(0.1)
        ? staleFrame(rng)
        : garbage(rng);
    const frames = [first];
    for (let i = rng.int(5); i > 0; i--) frames.push(garbage(rng));
    // A hello already in flight when the socket is being closed for the first frame.
    if (rng.chance(0.06)) frames.splice(rng.range(1, frames.length), 0, { kind: 'hello after rejection', data: helloFrame(`late-hello-${lane}-${n}`) });
    return { mode: 'frames', name, frames, pace: pace && frames.every((f) => f.kind !== 'hello after rejection') };
  }
  // Welcomed first, then a mix of offences; some stop short of three.
  const frames: Frame[] = [{ kind: 'hello', data: helloFrame(name) }];
  for (let i = rng.range(1, 9); i > 0; i--) {
    const x = rng.float();
    frames.push(x < 0.4 ? staleFrame(rng) : x < 0.47 ? { kind: 'hello again', data: helloFrame(name) } : garbage(rng));
  }
  return { mode: 'frames', name, frames, pace };
}

// ---------------------------------------------------------------------------
// Bookkeeping.

class Tally {
  /** Frames handed to ws.send on a socket that was OPEN at the time. */
  sentOpen = 0;
  /** Planned frames not sent because the socket was no longer open. */
  notSent = 0;
  /**
   * Frames the coordinator must count as rejected: sent
   * on an OPEN socket no later than the frame that gets the socket closed. The
   * client learns of that close only when the close frame arrives, and until
   * then ws on the coordinator keeps reading, so every one of these reaches
   * the coordinator's message handler as a complete message.
   */
  guaranteed = 0;
  guaranteedByReason = new Map<string, number>();
  /**
   * Everything that may be counted: `guaranteed`, plus frames still in flight
   * after the frame that closes the socket (today's coordinator reads and
   * counts them; one that stopped reading a socket it is closing would be just
   * as right not to), plus oversized frames (not counted today: ws drops them
   * before they become messages).
   */
  possible = 0;
  kinds = new Map<string, number>();
  connections = 0;
  welcomedNames = new Set<string>();
  lateHellos = 0;
  oversized = 0;
  participants = 0;
  poisons = 0;
  welcomesReceived = 0;
  shardsReceived = 0;
  weightsReceived = 0;
  problems: string[] = [];
  socketErrors: string[] = [];

  bump(map: Map<string, number>, key: string, by = 1): void {
    map.set(key, (map.get(key) ?? 0) + by);
  }

  merge(o: Tally): void {
    for (const k of ['sentOpen', 'notSent', 'guaranteed', 'possible', 'connections', 'lateHellos', 'oversized', 'participants', 'poisons', 'welcomesReceived', 'shardsReceived', 'weightsReceived'] as const) {
      this[k] += o[k];
    }
    for (const [k, v] of o.guaranteedByReason) this.bump(this.guaranteedByReason, k, v);
    for (const [k, v] of o.kinds) this.bump(this.kinds, k, v);
    for (const n of o.welcomedNames) this.welcomedNames.add(n);
    this.problems.push(...o.problems);
    this.socketErrors.push(...o.socketErrors);
  }
}

/** Predicts, frame by frame, what the coordinator does with one connection's traffic. */
class ConnectionModel {
  welcomed = false;
  closing = false;
  offences = 0;
  expectedClose = 1000;
  /** Error codes the coordinator must send back, in order: one per rejection while the socket is open. */
  readonly expectedErrors: string[] = [];

  constructor(
    private readonly name: string,
    private readonly tally: Tally,
  ) {}

  sent(f: Frame, index: number): void {
    const t = this.tally;
    t.sentOpen++;
    t.bump(t.kinds, f.kind);
    const o = classify(f, this.welcomed);
    if (o.kind === 'oversized') {
      t.oversized++;
      t.possible++;
      if (!this.closing) {
        this.closing = true;
        this.expectedClose = 1009;
      }
      return;
    }
    if (o.kind === 'hello') {
      if (index === 0) {
        this.welcomed = true;
        t.welcomedNames.add(this.name);
      } else {
        // Sent before the client could know the socket was being closed for its first frame.
        t.lateHellos++;
        t.possible++;
      }
      return;
    }
    t.possible++;
    if (this.closing) return;
    t.guaranteed++;
    t.bump(t.guaranteedByReason, o.reason);
    this.expectedErrors.push(`PROTOCOL_${o.reason.toUpperCase()}`);
    if (!this.welcomed || ++this.offences >= MAX_OFFENCES) {
      this.closing = true;
      this.expectedClose = 1008;
    }
  }
}

const openSockets = new Set<WebSocket>();

/** Opens a rogue connection with the right token; null if it never opens (recorded as a problem). */
async function connect(url: string, tally: Tally, onMessage: (m: CoordinatorMessage) => void) {
  const ws = new WebSocket(url, { headers: { authorization: `Bearer ${TOKEN}` } });
  openSockets.add(ws);
  ws.on('error', (e) => tally.socketErrors.push(e.message));
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    try {
      if (!isBinary) throw new Error('a text frame');
      const m = decodeOrOlderRefusal(data);
      if (m.type === 'welcome') {
        tally.welcomesReceived++;
        if (m.generatorSize !== G_SIZE || m.discriminatorSize !== D_SIZE) tally.problems.push(`welcome with sizes ${m.generatorSize}/${m.discriminatorSize}`);
      }
      if (m.type === 'shard') tally.shardsReceived++;
      if (m.type === 'weights') tally.weightsReceived++;
      onMessage(m);
    } catch (e) {
      tally.problems.push(`the coordinator sent a frame its own codec rejects: ${(e as Error).message}`);
    }
  });
  const closed = new Promise<number>((resolve) => ws.on('close', (code) => (openSockets.delete(ws), resolve(code))));
  const opened = await Promise.race([new Promise<boolean>((r) => ws.once('open', () => r(true))), closed.then(() => false)]);
  if (!opened) {
    tally.problems.push('a rogue connection with the right token never opened');
    return null;
  }
  return { ws, closed };
}

async function closedWithin(closed: Promise<number>, ws: WebSocket, ms: number, what: string, tally: Tally): Promise<number> {
  const code = await within<number | null>(closed, ms, null);
  if (code !== null) return code;
  tally.problems.push(`${what}: socket not closed within ${ms} ms`);
  ws.terminate();
  return closed;
}

async function runFrames(url: string, plan: Extract<Plan, { mode: 'frames' }>, tally: Tally): Promise<void> {
  const errors: string[] = [];
  const conn = await connect(url, tally, (m) => {
    if (m.type === 'error') errors.push(m.code);
  });
  if (!conn) return;
  const { ws, closed } = conn;
  const model = new ConnectionModel(plan.name, tally);
  for (let i = 0; i < plan.frames.length; i++) {
    if (ws.readyState !== WebSocket.OPEN) {
      tally.notSent += plan.frames.length - i;
      break;
    }
    ws.send(plan.frames[i].data);
    model.sent(plan.frames[i], i);
    if (plan.pace) await new Promise((r) => setImmediate(r));
  }
  if (ws.readyState === WebSocket.OPEN) ws.close(1000);
  const code = await closedWithin(closed, ws, 20_000, plan.name, tally);
  const kinds = plan.frames.map((f) => f.kind).join(', ');
  if (code !== model.expectedClose) tally.problems.push(`${plan.name} [${kinds}]: closed with ${code}, expected ${model.expectedClose}`);
  if (errors.join() !== model.expectedErrors.join()) {
    tally.problems.push(`${plan.name} [${kinds}]: the coordinator answered ${JSON.stringify(errors)}, expected ${JSON.stringify(model.expectedErrors)}`);
  }
}

/**
 * A rogue that joins, waits to be given a shard and weights like any worker,
 * and answers each round it is asked into with a frame for exactly that
 * round carrying one defect, until the third one gets it disconnected.
 */
async function runParticipant(url: string, plan: Extract<Plan, { mode: 'participant' }>, lane: number, rng: Prng, tally: Tally): Promise<void> {
  tally.participants++;
  // Each lane starts at its own place in the list of defects, so that the lanes' participants
  // together (typically D, G, D rounds each) try every one.
  const asked: Record<Phase, number> = { discriminator: 0, generator: 0 };
  const start: Record<Phase, number> = { discriminator: 2 * lane, generator: lane };
  const model = new ConnectionModel(plan.name, tally);
  const errors: string[] = [];
  let replies = 0;
  let lastMessage = Date.now();
  let wsRef: WebSocket | null = null;
  const conn = await connect(url, tally, (m) => {
    lastMessage = Date.now();
    if (m.type === 'error') errors.push(m.code);
    if (m.type !== 'weights' || replies >= MAX_OFFENCES || wsRef?.readyState !== WebSocket.OPEN) return;
    const f = poisonFrame(rng, m.step, m.phase, start[m.phase] + asked[m.phase]++);
    replies++;
    tally.poisons++;
    wsRef.send(f.data);
    model.sent(f, replies);
  });
  if (!conn) return;
  const { ws, closed } = conn;
  wsRef = ws;
  const hello: Frame = { kind: 'hello', data: helloFrame(plan.name) };
  ws.send(hello.data);
  model.sent(hello, 0);
  // Rounds come every few tens of milliseconds; a participant left waiting this long was never asked.
  while (ws.readyState === WebSocket.OPEN && Date.now() - lastMessage < 8000) await sleep(20);
  if (ws.readyState === WebSocket.OPEN) {
    tally.problems.push(`${plan.name}: asked into ${replies} rounds, then nothing for 8 s`);
    ws.close(1000);
  }
  const code = await closedWithin(closed, ws, 20_000, plan.name, tally);
  if (replies !== MAX_OFFENCES || code !== 1008) tally.problems.push(`${plan.name}: ${replies} poisoned replies, closed with ${code}; expected ${MAX_OFFENCES} and 1008`);
  if (errors.join() !== model.expectedErrors.join()) {
    tally.problems.push(`${plan.name}: the coordinator answered ${JSON.stringify(errors)}, expected ${JSON.stringify(model.expectedErrors)}`);
  }
}

/** One fuzzer lane: connections one after another until its frame budget is spent or the run nears its end. */
async function runLane(url: string, lane: number, shouldStop: () => boolean): Promise<Tally> {
  const rng = new Prng(SEED + 7919 * lane);
  const tally = new Tally();
  let planned = 0;
  let participantsLeft = PARTICIPANTS_PER_LANE;
  for (let n = 0; planned < FRAMES_PER_LANE && !shouldStop(); n++) {
    const plan = planConnection(rng, lane, n, participantsLeft);
    tally.connections++;
    if (plan.mode === 'participant') {
      participantsLeft--;
      planned += 1 + MAX_OFFENCES;
      await runParticipant(url, plan, lane, rng, tally);
    } else {
      planned += plan.frames.length;
      await runFrames(url, plan, tally);
    }
  }
  return tally;
}

interface KnockResult {
  what: string;
  status: number | undefined;
  opened: boolean;
}

/** A connect without the right token: the upgrade must be answered 401 and never open. */
function knock(url: string, what: string, headers: Record<string, string>, suffix = ''): Promise<KnockResult> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url + suffix, { headers });
    let status: number | undefined;
    let opened = false;
    const timer = setTimeout(() => ws.terminate(), 10_000);
    ws.on('unexpected-response', (_req, res) => {
      status = res.statusCode;
      res.resume();
      ws.terminate();
    });
    ws.on('open', () => {
      opened = true;
      ws.terminate();
    });
    ws.on('error', () => {});
    ws.on('close', () => {
      clearTimeout(timer);
      resolve({ what, status, opened });
    });
  });
}

const KNOCKS: [string, Record<string, string>, string?][] = [
  ['no token', {}],
  ['no token, token in the query string', {}, `/?token=${TOKEN}`],
  ['no token, token in another header', { 'x-ganfleet-token': TOKEN }],
  ['wrong token', { authorization: 'Bearer wrong' }],
  ['token plus a character', { authorization: `Bearer ${TOKEN}x` }],
  ['token minus a character', { authorization: `Bearer ${TOKEN.slice(0, -1)}` }],
  ['token in upper case', { authorization: `Bearer ${TOKEN.toUpperCase()}` }],
  ['token without a scheme', { authorization: TOKEN }],
  ['token as Basic credentials', { authorization: `Basic ${Buffer.from(`worker:${TOKEN}`).toString('base64')}` }],
  ['empty Bearer', { authorization: 'Bearer ' }],
  ['token after two spaces', { authorization: `Bearer  ${TOKEN}` }],
];

/** `p`, or `fallback` after `ms`, leaving no timer behind either way. */
async function within<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((r) => (timer = setTimeout(() => r(fallback), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** ganfleet_rejected_messages_total for one reason label (0 when that reason never occurred). */
function rejectedFor(text: string, reason: string): number {
  const m = new RegExp(`^ganfleet_rejected_messages_total\\{reason="${reason}"\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

// ---------------------------------------------------------------------------

describe('fuzzing a live coordinator with rogue frames and bad tokens', () => {
  let dir = '';
  let coordinator: GanfleetProcess | null = null;
  const workers: GanfleetProcess[] = [];
  const tally = new Tally();
  const knocks: KnockResult[] = [];
  let quiesced = '';
  let coordinatorCode: number | null = null;
  const workerCodes: (number | null)[] = [];
  let fuzzSeconds = 0;
  let stoppedEarlyAt: number | null = null;

  before(async () => {
    dir = tempDir('fuzz');
    const started = await startCoordinator(
      ['--steps', String(STEPS), '--log-every', '10', '--sample-every', '1000', '--checkpoint-every', '0', '--min-workers', '2', '--out', dir, '--round-timeout', '10'],
      { GANFLEET_TOKEN: TOKEN },
    );
    coordinator = started.proc;
    const c = coordinator;
    for (const name of ['honest-a', 'honest-b']) workers.push(startWorker(started.url, name, [], { GANFLEET_TOKEN: TOKEN }));
    await c.waitFor(new RegExp(`\\] step ${FUZZ_FROM_STEP}/${STEPS} `), 90_000);

    let logScan = 0;
    let loggedStep = FUZZ_FROM_STEP;
    const shouldStop = () => {
      if (c.child.exitCode !== null) return true;
      const log = c.log;
      for (const m of log.slice(logScan).matchAll(/\] step (\d+)\/\d+ /g)) loggedStep = Math.max(loggedStep, Number(m[1]));
      logScan = Math.max(0, log.length - 200);
      if (loggedStep >= STOP_FUZZ_AT_STEP) stoppedEarlyAt ??= loggedStep;
      return loggedStep >= STOP_FUZZ_AT_STEP;
    };
    const t0 = performance.now();
    const knocking = (async () => {
      for (let round = 0; round < 4; round++) {
        for (const [what, headers, suffix] of KNOCKS) {
          if (c.child.exitCode !== null) return;
          knocks.push(await knock(started.url, what, headers, suffix));
          await sleep(40);
        }
      }
    })();
    const lanes = await Promise.all(Array.from({ length: LANES }, (_, lane) => runLane(started.url, lane, shouldStop)));
    await knocking;
    fuzzSeconds = (performance.now() - t0) / 1000;
    for (const l of lanes) tally.merge(l);

    // Every rogue socket is closed (so everything sent on it was read) and every knock answered:
    // the counters are final. Scrape them while the run is still going.
    assert.equal(openSockets.size, 0, 'rogue sockets still open');
    assert.equal(c.child.exitCode ?? c.child.signalCode, null, `the coordinator exited (${c.child.exitCode ?? c.child.signalCode}) during the fuzz:\n${c.log.slice(-4000)}`);
    quiesced = await scrape(started.metrics);

    coordinatorCode = await within(c.exited, 90_000, -1);
    for (const w of workers) workerCodes.push(await within(w.exited, 30_000, -1));
  }, { timeout: 240_000 });

  after(() => {
    for (const ws of openSockets) ws.terminate();
    coordinator?.kill();
    for (const w of workers) w.kill();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the fuzz ran at scale while training was under way', (t) => {
    t.diagnostic(`${tally.sentOpen} frames on ${tally.connections} connections in ${fuzzSeconds.toFixed(1)} s (${tally.notSent} not sent on sockets already closed); ` +
      `${tally.participants} participants sent ${tally.poisons} poisoned replies; ${tally.oversized} oversized; ${knocks.length} bad-token connects`);
    t.diagnostic(`kinds: ${[...tally.kinds].sort().map(([k, v]) => `${k}=${v}`).join(' ')}`);
    t.diagnostic(`counted: guaranteed ${tally.guaranteed} <= rejected ${metricTotal(quiesced, 'ganfleet_rejected_messages_total')} <= possible ${tally.possible} ` +
      `(of which ${tally.lateHellos} hellos after a rejection and ${tally.oversized} oversized); scraped at step ${metricValue(quiesced, 'ganfleet_steps_total')}`);
    assert.equal(stoppedEarlyAt, null, `the run reached step ${stoppedEarlyAt} before the fuzzer spent its budget`);
    assert.ok(tally.sentOpen >= 2000, `only ${tally.sentOpen} frames sent`);
    const steps = metricValue(quiesced, 'ganfleet_steps_total') ?? NaN;
    assert.ok(steps > FUZZ_FROM_STEP && steps < STEPS, `metrics scraped at step ${steps}, not mid-run`);
    for (const kind of ['random bytes', 'random msgpack', 'mutated', 'wrong version', 'unknown type', 'wrong length', 'ragged gradients', 'non-finite gradients', 'absurd field', 'huge length', 'stale step', 'future step', 'oversized', 'text frame', 'hello again']) {
      assert.ok((tally.kinds.get(kind) ?? 0) > 0, `no ${kind} frame was sent`);
    }
    assert.ok(tally.participants >= 2 && tally.poisons >= 2 * MAX_OFFENCES, `${tally.participants} participants, ${tally.poisons} poisoned replies`);
    assert.ok(tally.shardsReceived > 0 && tally.weightsReceived > 0, 'some rogue was admitted into training');
  });

  test('the coordinator stays up, finishes the run, and the honest workers finish it too', () => {
    const log = coordinator!.log;
    assert.equal(coordinatorCode, 0, `coordinator exit ${coordinatorCode}:\n${log.slice(-4000)}`);
    assert.match(log, new RegExp(`\\[coordinator\\] finished ${STEPS} steps: step ${STEPS} \\(${STEPS} this run\\)`));
    workers.forEach((w, i) => {
      assert.equal(workerCodes[i], 0, `worker ${i} exit ${workerCodes[i]}:\n${w.log.slice(-3000)}`);
      assert.match(w.log, /stopped by the coordinator/);
      assert.doesNotMatch(w.log, /reconnecting/, 'an honest worker lost its connection');
    });
    const summary = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8'));
    assert.equal(summary.steps, STEPS);
    assert.equal(summary.ok, true);
    assert.equal(summary.last.workers, 2, 'only the two honest workers contributed to the last step');
    for (const k of ['dLoss', 'gLoss', 'dReal', 'dFake']) assert.ok(Number.isFinite(summary.last[k]), `${k} = ${summary.last[k]}`);
  });

  test('the final weights and the checkpoint are finite', () => {
    const bytes = fs.readFileSync(path.join(dir, 'generator', 'weights.bin'));
    assert.equal(bytes.length, 4 * G_SIZE);
    const weights = new Float32Array(bytes.buffer, bytes.byteOffset, G_SIZE);
    const bad = weights.findIndex((x) => !Number.isFinite(x));
    assert.equal(bad, -1, `generator weight ${bad} is ${weights[bad]}`);
    const found = loadLatestCheckpoint(path.join(dir, 'checkpoints'), () => {});
    assert.ok(found, `no valid checkpoint in ${dir}/checkpoints`);
    assert.equal(found.checkpoint.step, STEPS);
    for (const k of ['generator', 'discriminator'] as const) assert.ok(found.checkpoint[k].every(Number.isFinite), `checkpoint ${k} not finite`);
  });

  test('no rogue gradient was ever averaged in, and no honest worker was dropped', () => {
    const steps = metricValue(quiesced, 'ganfleet_steps_total')!;
    // Each D round's images are the samples of the gradients it averaged: two honest workers, BATCH each.
    assert.equal(metricValue(quiesced, 'ganfleet_images_total'), steps * 2 * BATCH, 'images counted beyond the honest workers\' batches');
    assert.equal(metricValue(quiesced, 'ganfleet_round_timeouts_total'), 0);
    assert.equal(metricValue(quiesced, 'ganfleet_heartbeat_timeouts_total'), 0);
    assert.equal(metricValue(quiesced, 'ganfleet_workers_connected'), 2, 'only the honest workers are left once the rogues are gone');
  });

  test('every rejected frame is counted, and the coordinator answers each with its reason', () => {
    const rejected = metricTotal(quiesced, 'ganfleet_rejected_messages_total');
    // Honest workers are never rejected and never late here (no round times out), so the counter
    // holds the rogues' frames only: at least every frame the coordinator must have read, at most
    // every frame that reached it at all. A rogue's stale frame is an offence, not a straggler.
    assert.ok(rejected >= tally.guaranteed, `rejected ${rejected} < ${tally.guaranteed} frames the coordinator received`);
    assert.ok(rejected <= tally.possible, `rejected ${rejected} > ${tally.possible} frames sent`);
    assert.equal(metricValue(quiesced, 'ganfleet_late_gradients_total') ?? 0, 0, 'no frame counted as late');
    for (const [reason, n] of tally.guaranteedByReason) {
      const counted = rejectedFor(quiesced, reason);
      assert.ok(counted >= n, `${reason}: counted ${counted}, but ${n} such frames must have been rejected`);
    }
    // Oversized frames never become messages: ws closes with 1009 and the coordinator counts the socket error
    // (and logs it: each for a worker, once a minute per address for a peer that is not yet one).
    assert.equal(rejectedFor(quiesced, 'too_large'), tally.oversized, 'one counted payload error per oversized frame');
    assert.ok(/Max payload size exceeded/.test(coordinator!.log) === tally.oversized > 0, 'the payload errors are logged');
    assert.deepEqual(tally.problems.slice(0, 10), [], `${tally.problems.length} connections did not go as the protocol says`);
    // Every hello-first rogue was welcomed exactly once, and nothing else joined.
    const joined = [...coordinator!.log.matchAll(/joined from \S+ \("(rogue-[^"]+)"/g)].map((m) => m[1]);
    assert.equal(new Set(joined).size, joined.length, 'a rogue joined twice');
    assert.deepEqual(new Set(joined), tally.welcomedNames);
  });

  test('connects with no token or a wrong token get 401, never open, and are counted', () => {
    assert.equal(knocks.length, 4 * KNOCKS.length);
    for (const k of knocks) {
      assert.equal(k.status, 401, `${k.what}: HTTP ${k.status}`);
      assert.equal(k.opened, false, `${k.what}: the socket opened`);
    }
    assert.equal(metricValue(quiesced, 'ganfleet_unauthorized_connections_total'), knocks.length);
  });

  test('a socket being closed for a protocol violation is never welcomed by a hello already in flight', (t) => {
    t.diagnostic(`${tally.lateHellos} hellos sent after a rejected first frame`);
    assert.ok(tally.lateHellos > 0, 'the fuzzer sent no hello after a rejected first frame');
    const ghosts = [...coordinator!.log.matchAll(/(w\d+) joined from \S+ \("(late-hello-[^"]+)"/g)].map((m) => `${m[1]} (${m[2]})`);
    assert.deepEqual(ghosts, [], `${ghosts.length} of ${tally.lateHellos} peers were welcomed on a socket already closed with 1008`);
  });

  test('rogue text cannot forge coordinator log lines', (t) => {
    const sent = tally.kinds.get('wrong version (log line)') ?? 0;
    t.diagnostic(`${sent} frames with v = ${JSON.stringify(FORGED_VERSION)}`);
    assert.ok(sent > 0, 'no frame tried to forge a log line');
    const stamp = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[coordinator\] /;
    const lines = coordinator!.log.split('\n');
    t.diagnostic(`${lines.filter((l) => l !== '' && !stamp.test(l)).length} coordinator output lines without a timestamp`);
    const forged = lines.filter((l) => l.startsWith('FORGED'));
    assert.deepEqual(forged.slice(0, 3), [], `${forged.length} log lines written by a rogue peer`);
  });
});

describe('frames whose headers declare huge nested arrays', () => {
  const dirs: string[] = [];
  const procs: GanfleetProcess[] = [];

  after(() => {
    for (const p of procs) p.kill();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  const bombs: [string, Buffer][] = [
    // 501 bytes: 100 nested array32 headers of 2^24 elements, 128 MiB of backing store per level.
    ['100 nested array32 headers of 2^24 elements', Buffer.concat([...Array.from({ length: 100 }, () => Buffer.from([0xdd, 0x01, 0x00, 0x00, 0x00])), Buffer.from([0xc0])])],
    // 60 KB: 20,000 nested array16 headers of 65,535 elements, 512 KiB per level.
    ['20000 nested array16 headers of 65535 elements', Buffer.concat([...Array.from({ length: 20_000 }, () => Buffer.from([0xdc, 0xff, 0xff])), Buffer.from([0xc0])])],
  ];

  for (const [what, bomb] of bombs) {
    test(`${what} (${bomb.length} bytes) is rejected at once as a bad frame, and the coordinator survives it`, { timeout: 60_000 }, async (t) => {
      assert.ok(bomb.length < MAX_PAYLOAD);
      const dir = tempDir('fuzz-bomb');
      dirs.push(dir);
      // A bounded heap, as any real deployment has: it makes an allocation bomb fail within a second
      // instead of after eating gigabytes; a coordinator that rejects such frames never comes near it.
      const started = await startCoordinator(['--steps', '1', '--min-workers', '1', '--out', dir], {
        GANFLEET_TOKEN: TOKEN,
        NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --max-old-space-size=384`.trim(),
      });
      const c = started.proc;
      procs.push(c);
      const tally = new Tally();
      const errors: string[] = [];
      const conn = await connect(started.url, tally, (m) => {
        if (m.type === 'error') errors.push(m.code);
      });
      assert.ok(conn, 'could not connect');
      const t0 = performance.now();
      // Before any hello: one frame, and the token is all it takes.
      conn.ws.send(bomb);
      const code = await within(conn.closed, 10_000, null);
      const ms = performance.now() - t0;
      if (code === null) conn.ws.terminate();
      t.diagnostic(`closed ${code} after ${ms.toFixed(0)} ms`);
      // A socket dropped without a close frame (1006) is what a crash looks like from here: give the exit a moment to show.
      if (code !== 1008) await within(c.exited, 3000, null);
      const died = c.child.exitCode ?? c.child.signalCode;
      assert.equal(died, null, `the coordinator died (${died}): ${/FATAL ERROR[^\n]*/.exec(c.log)?.[0] ?? c.log.slice(-800)}`);
      assert.equal(code, 1008, `socket closed with ${code}`);
      assert.deepEqual(errors, ['PROTOCOL_BAD_FRAME']);
      assert.ok(ms < 5000, `rejected only after ${ms.toFixed(0)} ms`);
      assert.equal(rejectedFor(await scrape(started.metrics), 'bad_frame'), 1);
      c.kill('SIGINT');
      assert.equal(await within(c.exited, 15_000, -1), 0);
    });
  }
});
