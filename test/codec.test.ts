import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Packr } from 'msgpackr';
import { ProtocolError, decodeCoordinatorMessage, decodeWorkerMessage, encode } from '../src/protocol/codec';
import { decodeFloatsPortable, encodeFloatsPortable } from '../src/protocol/wire-dtype';
import { recordExtensionBomb } from './helpers';
import { ErrorMessage, Gradients, Hello, MAX_GRADIENT_ABS, MAX_STRING_LENGTH, errorMessage, MAX_STATISTIC_ABS, Mail, MailboxReady, PROTOCOL_VERSION, Shard, Stop, Weights, Welcome, message } from '../src/protocol/messages';

const raw = new Packr({ useRecords: false });

function floats(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sin(seed + i) * 10 ** ((i % 7) - 3);
  return a;
}

function assertRejected(fn: () => unknown, reason: string): void {
  assert.throws(fn, (e: unknown) => e instanceof ProtocolError && e.reason === reason);
}

describe('codec round trip', () => {
  test('a field set to undefined is left out of the frame (msgpackr would write an extension type, which receivers refuse)', () => {
    const back = decodeCoordinatorMessage(encode(message<Stop>({ type: 'stop', reason: 'done', resumable: undefined })));
    assert.ok(back.type === 'stop' && back.reason === 'done' && !('resumable' in back), JSON.stringify(back));
  });
  test('an error whose text is longer than the peer accepts is cut to fit, not refused there with its reason lost', () => {
    const long = errorMessage('WORKER_MODEL_UNKNOWN', `unknown model "${'x'.repeat(3000)}"`);
    for (const decode of [decodeWorkerMessage, decodeCoordinatorMessage]) {
      const back = decode(encode(long));
      assert.ok(back.type === 'error' && back.code === 'WORKER_MODEL_UNKNOWN');
      assert.equal(back.message.length, MAX_STRING_LENGTH);
      assert.ok(back.message.startsWith('unknown model "xxx') && back.message.endsWith('…'));
    }
    assert.equal(errorMessage('CODE', 'short').message, 'short');
    // The boundary is the character: one that just fits is kept whole, one a character over is cut.
    assert.equal(errorMessage('CODE', 'x'.repeat(MAX_STRING_LENGTH)).message, 'x'.repeat(MAX_STRING_LENGTH));
    assert.equal(errorMessage('CODE', 'x'.repeat(MAX_STRING_LENGTH + 1)).message, `${'x'.repeat(MAX_STRING_LENGTH - 1)}…`);
  });
  test('weights: float arrays come back bit for bit, as raw bytes on the wire', () => {
    const generator = floats(114064, 1);
    const discriminator = floats(100609, 2);
    discriminator[5] = -0;
    discriminator[6] = 1e-40; // subnormal
    const frame = encode(message<Weights>({ type: 'weights', step: 7, phase: 'discriminator', generator, discriminator }));
    // Raw float bytes plus a small envelope: never a JSON-like array of numbers.
    assert.ok(frame.length < 4 * (generator.length + discriminator.length) + 200, `frame is ${frame.length} bytes`);
    const m = decodeCoordinatorMessage(frame);
    assert.equal(m.type, 'weights');
    if (m.type !== 'weights') return;
    assert.equal(m.step, 7);
    assert.ok(m.generator instanceof Float32Array && m.discriminator instanceof Float32Array);
    assert.deepEqual(new Uint8Array(m.generator.buffer, m.generator.byteOffset, m.generator.byteLength), new Uint8Array(generator.buffer));
    assert.deepEqual(new Uint8Array(m.discriminator.buffer, m.discriminator.byteOffset, m.discriminator.byteLength), new Uint8Array(discriminator.buffer));
  });

  test('a float array at an unaligned offset is copied, not misread', () => {
    // A 1-character name shifts the payload to an odd offset inside the frame.
    const gradients = floats(33, 3);
    const frame = encode(message<Gradients>({ type: 'gradients', step: 1, phase: 'generator', samples: 3, gradients, loss: 0.5, dFake: 0.25, computeSeconds: 0.01 }));
    for (const shift of [0, 1, 2, 3]) {
      const shifted = Buffer.alloc(frame.length + shift);
      frame.copy(shifted, shift);
      const m = decodeWorkerMessage(shifted.subarray(shift));
      assert.equal(m.type, 'gradients');
      if (m.type === 'gradients') assert.deepEqual([...m.gradients], [...gradients]);
    }
  });

  test('every message type survives', () => {
    const hello = message<Hello>({ type: 'hello', name: 'n', backend: 'wasm', pid: 12, hostname: 'h', instance: '3f2a9c' });
    assert.deepEqual(decodeWorkerMessage(encode(hello)), hello);
    const welcome = message<Welcome>({ type: 'welcome', workerId: 'w1', arch: 'mlp', loss: 'bce', generatorSize: 3, discriminatorSize: 4, batchSize: 128, heartbeatSeconds: 5, discriminatorUpdates: 2 });
    assert.deepEqual(decodeCoordinatorMessage(encode(welcome)), welcome);
    const images = new Uint8Array(784 * 2).map((_, i) => i % 256);
    const shard = decodeCoordinatorMessage(encode(message<Shard>({ type: 'shard', plan: 1, count: 2, keep: 0, seed: 2 ** 32 - 1, images })));
    assert.equal(shard.type, 'shard');
    if (shard.type === 'shard') {
      assert.deepEqual(new Uint8Array(shard.images), images);
      assert.equal(shard.seed, 2 ** 32 - 1);
    }
    const stop = message<Stop>({ type: 'stop', reason: 'done' });
    assert.deepEqual(decodeCoordinatorMessage(encode(stop)), stop);
    const early = message<Stop>({ type: 'stop', reason: 'SIGTERM received', resumable: true });
    assert.deepEqual(decodeCoordinatorMessage(encode(early)), early);
    const final = message<Stop>({ type: 'stop', reason: 'done', resumable: false });
    assert.deepEqual(decodeCoordinatorMessage(encode(final)), final);
    assert.throws(() => decodeCoordinatorMessage(encode({ ...early, resumable: 'yes' } as unknown as Stop)), /stop\.resumable must be true or false/);
    const error = message<ErrorMessage>({ type: 'error', code: 'X', message: 'y' });
    assert.deepEqual(decodeWorkerMessage(encode(error)), error);
  });
});

describe('mailbox messages', () => {
  test('mail notices and mailbox confirmations round-trip, and each side accepts only its own', () => {
    assert.deepEqual(decodeWorkerMessage(encode(message<MailboxReady>({ type: 'mailbox', path: '/dev/shm/x/to-coordinator' }))), { v: PROTOCOL_VERSION, type: 'mailbox', path: '/dev/shm/x/to-coordinator' });
    assert.deepEqual(decodeWorkerMessage(encode(message<Mail>({ type: 'mail', bytes: 458000 }))), { v: PROTOCOL_VERSION, type: 'mail', bytes: 458000 });
    assert.deepEqual(decodeCoordinatorMessage(encode(message<Mail>({ type: 'mail', bytes: 12 }))), { v: PROTOCOL_VERSION, type: 'mail', bytes: 12 });
    assertRejected(() => decodeCoordinatorMessage(encode(message<MailboxReady>({ type: 'mailbox', path: '/x' }))), 'bad_type');
  });

  test('a notice must give a byte count, and a confirmation a path', () => {
    for (const bytes of [-1, 1.5, '100', null]) assertRejected(() => decodeWorkerMessage(raw.pack({ v: PROTOCOL_VERSION, type: 'mail', bytes })), 'bad_field');
    assertRejected(() => decodeWorkerMessage(raw.pack({ v: PROTOCOL_VERSION, type: 'mailbox' })), 'bad_field');
    assertRejected(() => decodeWorkerMessage(raw.pack({ v: PROTOCOL_VERSION, type: 'mailbox', path: 'x'.repeat(2000) })), 'bad_field');
  });
});

describe('codec rejects malformed frames', () => {
  const good = { v: PROTOCOL_VERSION, type: 'gradients', step: 1, phase: 'generator', samples: 2, gradients: new Uint8Array(8), loss: 1, dFake: 0.5, computeSeconds: 0 };

  test('bytes that are not msgpack', () => {
    assertRejected(() => decodeWorkerMessage(Buffer.from([0xc1, 0xff, 0x00])), 'bad_frame');
    assertRejected(() => decodeWorkerMessage(Buffer.alloc(0)), 'bad_frame');
  });
  test('msgpack that is not a map', () => {
    assertRejected(() => decodeWorkerMessage(raw.pack([1, 2, 3])), 'bad_frame');
    assertRejected(() => decodeWorkerMessage(raw.pack('hello')), 'bad_frame');
  });
  test('another version, or none (no ganfleet message)', () => {
    assertRejected(() => decodeWorkerMessage(raw.pack({ ...good, v: PROTOCOL_VERSION + 1 })), 'bad_version');
    assertRejected(() => decodeWorkerMessage(raw.pack({ ...good, v: null })), 'bad_version');
    const { v: _v, ...noVersion } = good;
    assertRejected(() => decodeWorkerMessage(raw.pack(noVersion)), 'bad_frame');
  });
  test('another version says whether the sender runs an older or a newer ganfleet, the side to upgrade', () => {
    const said = (v: unknown) => {
      try {
        decodeWorkerMessage(raw.pack({ ...good, v }));
      } catch (e) {
        return e as ProtocolError;
      }
      assert.fail('accepted');
    };
    assert.match(said(PROTOCOL_VERSION - 1).message, new RegExp(`^protocol version ${PROTOCOL_VERSION - 1} is not this ganfleet's ${PROTOCOL_VERSION}: the sender runs an older ganfleet than this one$`));
    assert.equal(said(PROTOCOL_VERSION - 1).olderVersion, PROTOCOL_VERSION - 1);
    assert.match(said(PROTOCOL_VERSION + 1).message, /: the sender runs a newer ganfleet than this one$/);
    assert.equal(said(PROTOCOL_VERSION + 1).olderVersion, undefined);
    assert.doesNotMatch(said('4').message, /older|newer/);
    assert.doesNotMatch(said(0).message, /older|newer/);
  });
  test("unknown type, or the other side's type", () => {
    assertRejected(() => decodeWorkerMessage(raw.pack({ ...good, type: 'launch' })), 'bad_type');
    assertRejected(() => decodeWorkerMessage(raw.pack({ ...good, type: 'weights' })), 'bad_type');
    assertRejected(() => decodeCoordinatorMessage(raw.pack({ ...good })), 'bad_type');
    assertRejected(() => decodeWorkerMessage(raw.pack({ ...good, type: '__proto__' })), 'bad_type');
  });
  test('missing or mistyped fields', () => {
    const { loss: _l, ...noLoss } = good;
    assertRejected(() => decodeWorkerMessage(raw.pack(noLoss)), 'bad_field');
    assertRejected(() => decodeWorkerMessage(raw.pack({ ...good, step: -1 })), 'bad_field');
    assertRejected(() => decodeWorkerMessage(raw.pack({ ...good, step: 1.5 })), 'bad_field');
    // Beyond 2^53 − 1 integers are no longer exact: step 2^53 and 2^53 + 1 would be the same step.
    assertRejected(() => decodeWorkerMessage(raw.pack({ ...good, step: 2 ** 53 })), 'bad_field');
    // A 64-bit integer (msgpackr reads it as a BigInt) is a mistyped field, not a malformed frame.
    assert.throws(() => decodeWorkerMessage(raw.pack({ ...good, samples: 5n })), (e: unknown) => e instanceof ProtocolError && e.reason === 'bad_field' && /gradients\.samples must be/.test(e.message));
    assertRejected(() => decodeWorkerMessage(raw.pack({ ...good, phase: 'both' })), 'bad_field');
    assertRejected(() => decodeWorkerMessage(raw.pack({ ...good, loss: '1' })), 'bad_field');
  });
  test('a string field takes exactly MAX_STRING_LENGTH characters, and not one more', () => {
    const hello = (name: string) => raw.pack({ v: PROTOCOL_VERSION, type: 'hello', name, backend: 'cpu', pid: 1, hostname: 'h' });
    assert.equal((decodeWorkerMessage(hello('x'.repeat(MAX_STRING_LENGTH))) as Hello).name.length, MAX_STRING_LENGTH);
    assertRejected(() => decodeWorkerMessage(hello('x'.repeat(MAX_STRING_LENGTH + 1))), 'bad_field');
  });
  test("a shard's seed is a uint32: 2^32 − 1 is one, 2^32 is refused, not wrapped", () => {
    const shard = (seed: number) => raw.pack({ v: PROTOCOL_VERSION, type: 'shard', plan: 1, count: 1, keep: 0, seed, images: new Uint8Array(784) });
    assert.equal((decodeCoordinatorMessage(shard(2 ** 32 - 1)) as Shard).seed, 2 ** 32 - 1);
    assertRejected(() => decodeCoordinatorMessage(shard(2 ** 32)), 'bad_field');
    assertRejected(() => decodeCoordinatorMessage(shard(2 ** 40)), 'bad_field');
    assertRejected(() => decodeCoordinatorMessage(shard(-1)), 'bad_field');
    assertRejected(() => decodeCoordinatorMessage(shard(7.5)), 'bad_field');
  });
  test("a shard's images must be binary: a string, a number or a boolean is refused", () => {
    const shard = (images: unknown) => raw.pack({ v: PROTOCOL_VERSION, type: 'shard', plan: 1, count: 1, keep: 0, seed: 7, images });
    assert.ok((decodeCoordinatorMessage(shard(new Uint8Array(784))) as Shard).images instanceof Uint8Array);
    for (const images of ['x'.repeat(784), 784, true]) assertRejected(() => decodeCoordinatorMessage(shard(images)), 'bad_field');
  });
  test('float data that is not whole float32s', () => {
    assertRejected(() => decodeWorkerMessage(raw.pack({ ...good, gradients: new Uint8Array(7) })), 'bad_size');
  });
  test('non-finite statistics', () => {
    assertRejected(() => decodeWorkerMessage(raw.pack({ ...good, loss: NaN })), 'not_finite');
    assertRejected(() => decodeWorkerMessage(raw.pack({ ...good, dFake: Infinity })), 'not_finite');
  });
  test('containers that claim more elements than the frame holds (allocation bombs)', () => {
    const nested = Buffer.concat([...Array(100)].map(() => Buffer.from([0xdd, 1, 0, 0, 0])).concat([Buffer.from([0xc0])]));
    assertRejected(() => decodeWorkerMessage(nested), 'bad_frame');
    assertRejected(() => decodeWorkerMessage(Buffer.from([0xdc, 0xff, 0xff])), 'bad_frame');
    assertRejected(() => decodeWorkerMessage(Buffer.from([0xc6, 0xff, 0xff, 0xff, 0xff, 0x00])), 'bad_frame');
    assertRejected(() => decodeWorkerMessage(Buffer.from([0xdf, 0x7f, 0xff, 0xff, 0xff])), 'bad_frame');
    // A length cut off by the frame's end.
    assert.throws(() => decodeWorkerMessage(Buffer.from([0xde, 0x00])), /malformed msgpack at byte 1: truncated length$/);
  });
  test('extension types, which the protocol never sends and msgpackr acts on (a record once hid an allocation bomb from the shape check)', () => {
    assertRejected(() => decodeWorkerMessage(recordExtensionBomb(50)), 'bad_frame');
    assertRejected(() => decodeCoordinatorMessage(recordExtensionBomb(50)), 'bad_frame');
    for (const ext of [[0xd4, 0x01, 0x00], [0xd5, 0x72, 0x20, 0x00], [0xd6, 0xff, 0, 0, 0, 0], [0xd7, 0xff, 0, 0, 0, 0, 0, 0, 0, 0], [0xd8, 0x01, ...Array(16).fill(0)], [0xc7, 0x01, 0x01, 0x00], [0xc8, 0x00, 0x01, 0x01, 0x00], [0xc9, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00]]) {
      // As a field's value in an otherwise good message, and as the whole frame.
      const marked = raw.pack({ ...good, loss: 'EXT_HERE' });
      const at = marked.indexOf(Buffer.from('\xa8EXT_HERE', 'latin1'));
      assert.ok(at > 0);
      const field = Buffer.concat([marked.subarray(0, at), Buffer.from(ext), marked.subarray(at + 9)]);
      assert.throws(() => decodeWorkerMessage(field), (e: unknown) => e instanceof ProtocolError && e.reason === 'bad_frame' && /extension type/.test(e.message));
      assert.throws(() => decodeWorkerMessage(Buffer.from(ext)), (e: unknown) => e instanceof ProtocolError && e.reason === 'bad_frame' && /extension type/.test(e.message));
    }
  });
  test('anything but one flat map: a container in a field, a frame of many small containers, more fields than any message has', () => {
    const refused = (frame: Uint8Array, why: RegExp) =>
      assert.throws(() => decodeWorkerMessage(frame), (e: unknown) => e instanceof ProtocolError && e.reason === 'bad_frame' && why.test(e.message));
    refused(raw.pack({ ...good, gradients: [1, 2] }), /an array inside the message/);
    refused(raw.pack({ ...good, loss: { x: 1 } }), /a map inside the message/);
    // One byte per element, so within the bytes left: msgpackr built all 6.6 million empty maps (4 to 10 s, 425 MB).
    const wide = Buffer.alloc(6_614_020, 0x80);
    wide.set([0xdd, 0x00, 0x64, 0xec, 0xff]);
    refused(wide, /^malformed msgpack at byte 1: a message must be a msgpack map$/);
    refused(Buffer.concat([Buffer.from([0x81]), raw.pack('type'), Buffer.from([0xdd, 0x00, 0x01, 0x00, 0x00]), Buffer.alloc(65_536, 0x90)]), /an array inside the message/);
    refused(raw.pack(Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`f${i}`, i]))), /a map of 33 fields: no message has more than 32/);
    const thirtyTwo = { ...good, ...Object.fromEntries(Array.from({ length: 32 - Object.keys(good).length }, (_, i) => [`f${i}`, i])) };
    assert.equal(decodeWorkerMessage(raw.pack(thirtyTwo)).type, 'gradients', '32 fields is within the limit');
    // A map that claims one more field than it holds ends after a key: refused, not a TypeError from reading past the end.
    const short = raw.pack({ ...good, last: 1 });
    refused(short.subarray(0, short.length - 1), /malformed msgpack at byte \d+: truncated$/);
    // What the codec itself writes passes: the largest message, with its pads and 16-bit floats.
    assert.equal(decodeWorkerMessage(encode({ ...good, gradients: new Float32Array(4), statistics: new Float32Array(2), dReal: 0.5 } as never, 'bfloat16')).type, 'gradients');
  });
  test('nesting beyond any message, and bytes after the message', () => {
    const deep = Buffer.concat([Buffer.alloc(20, 0x91), Buffer.from([0xc0])]);
    assertRejected(() => decodeWorkerMessage(deep), 'bad_frame');
    assertRejected(() => decodeWorkerMessage(Buffer.concat([raw.pack(good), Buffer.from([0x01])])), 'bad_frame');
  });
  test('peer text in errors is quoted onto one line', () => {
    assert.throws(
      () => decodeWorkerMessage(raw.pack({ ...good, v: '1\nFORGED [coordinator] finished' })),
      (e: unknown) => e instanceof ProtocolError && !e.message.includes('\n') && e.message.length < 120,
    );
    // A long value is cut, so that a peer cannot fill the log with one frame.
    assert.throws(() => decodeWorkerMessage(raw.pack({ ...good, type: 'x'.repeat(4000) })), (e: unknown) => e instanceof ProtocolError && e.message.length < 120);
  });
  test('an optional field sent as nil is taken as absent, not refused; a required one sent as nil is missing', () => {
    const m = decodeWorkerMessage(raw.pack({ ...good, dReal: null, statistics: null })) as Gradients;
    assert.equal(m.type, 'gradients');
    assert.ok(!('dReal' in m) && !('statistics' in m));
    assert.throws(() => decodeWorkerMessage(raw.pack({ ...good, loss: null })), /gradients\.loss is missing/);
  });
  test('other encodings of the same message pass the shape check: a map32 header, float32 numbers', () => {
    const map16 = raw.pack(good);
    assert.equal(map16[0], 0xde);
    const map32 = Buffer.concat([Buffer.from([0xdf, 0, 0]), map16.subarray(1)]);
    assert.equal((decodeWorkerMessage(map32) as Gradients).loss, 1);
    const float32s = new Packr({ useRecords: false, useFloat32: 1 }).pack({ ...good, loss: 0.5, dFake: 0.25 });
    assert.ok(float32s.includes(0xca));
    assert.deepEqual([(decodeWorkerMessage(float32s) as Gradients).loss, (decodeWorkerMessage(float32s) as Gradients).dFake], [0.5, 0.25]);
  });
  test('unknown fields are dropped, not passed on', () => {
    const m = decodeWorkerMessage(raw.pack({ ...good, extra: 'x' })) as unknown as Record<string, unknown>;
    assert.equal(m.extra, undefined);
  });
});

test('gradients: one pass rejects NaN and ±Infinity as not_finite and magnitudes beyond MAX_GRADIENT_ABS as out_of_range', () => {
  const frame = (g: Float32Array) => encode(message<Gradients>({ type: 'gradients', step: 1, phase: 'generator', samples: 8, gradients: g, loss: 0.5, dFake: 0.4, computeSeconds: 0.01 }));
  const g = floats(1000, 9);
  assert.deepEqual(decodeWorkerMessage(frame(g)).type, 'gradients');
  for (const [value, reason] of [[NaN, 'not_finite'], [-Infinity, 'not_finite'], [MAX_GRADIENT_ABS * 2, 'out_of_range'], [-MAX_GRADIENT_ABS * 1.01, 'out_of_range']] as const) {
    const bad = g.slice();
    bad[777] = value;
    assertRejected(() => decodeWorkerMessage(frame(bad)), reason);
  }
  const edge = g.slice();
  edge[3] = -MAX_GRADIENT_ABS;
  assert.equal((decodeWorkerMessage(frame(edge)) as Gradients).gradients[3], -MAX_GRADIENT_ABS);
});

test("G's batch statistics are bounded like gradients, at MAX_STATISTIC_ABS: a finite 3e38 mean is refused", () => {
  const frame = (statistics: Float32Array) =>
    encode(message<Gradients>({ type: 'gradients', step: 1, phase: 'generator', samples: 8, gradients: floats(10, 3), statistics, loss: 0.5, dFake: 0.4, computeSeconds: 0.01 }));
  const ok = Float32Array.from([0.1, -MAX_STATISTIC_ABS, 2, MAX_STATISTIC_ABS]);
  assert.deepEqual((decodeWorkerMessage(frame(ok)) as Gradients).statistics, ok);
  assertRejected(() => decodeWorkerMessage(frame(Float32Array.from([3e38, 1, 1, 1]))), 'out_of_range');
  assertRejected(() => decodeWorkerMessage(frame(Float32Array.from([0, 1, 1, -MAX_STATISTIC_ABS * 1.01]))), 'out_of_range');
  assertRejected(() => decodeWorkerMessage(frame(Float32Array.from([0, NaN, 1, 1]))), 'not_finite');
});

test("under a 16-bit wire dtype, G's batch statistics still travel as float32: float16 would cap a variance of 70000 at 65504", () => {
  const statistics = Float32Array.from([1234.567, 70000, 3e-6, -0.1]);
  const gradients = Float32Array.from([1234.567, 0.1, 3e-6, -0.1]);
  for (const dtype of ['float16', 'bfloat16'] as const) {
    const frame = encode(message<Gradients>({ type: 'gradients', step: 1, phase: 'generator', samples: 8, gradients, statistics, loss: 0.5, dFake: 0.4, computeSeconds: 0.01 }), dtype);
    const back = decodeWorkerMessage(frame) as Gradients;
    assert.deepEqual(back.statistics, statistics, dtype);
    assert.notDeepEqual(back.gradients, gradients, `${dtype} rounds the gradients`);
  }
});

test('float arrays start 4-byte aligned in the frame and decode in place, with no copy', () => {
  for (const step of [1, 300, 70000]) {
    const frame = encode(message<Weights>({ type: 'weights', step, phase: 'generator', generator: floats(7, 1), discriminator: floats(5, 2) }));
    const m = decodeCoordinatorMessage(frame) as Weights;
    for (const f of [m.generator!, m.discriminator!]) {
      assert.equal(f.buffer, frame.buffer, 'a view of the frame');
      assert.equal((f.byteOffset - frame.byteOffset) % 4, 0);
    }
    assert.deepEqual(Array.from(m.generator!), Array.from(floats(7, 1)));
  }
  // After 3 float16 gradients (6 bytes), G's float32 statistics are still aligned and read in place.
  const frame = encode(message<Gradients>({ type: 'gradients', step: 1, phase: 'generator', samples: 8, gradients: floats(3, 1), statistics: floats(4, 2), loss: 0.5, dFake: 0.4, computeSeconds: 0.01 }), 'float16');
  const statistics = (decodeWorkerMessage(frame) as Gradients).statistics!;
  assert.equal(statistics.buffer, frame.buffer, 'a view of the frame');
  assert.equal((statistics.byteOffset - frame.byteOffset) % 4, 0);
});

describe('--wire-dtype float16 and bfloat16', () => {
  const values = floats(50000, 3);
  const gradients = (g: Float32Array) => message<Gradients>({ type: 'gradients', step: 1, phase: 'generator', samples: 8, gradients: g, loss: 0.5, dFake: 0.4, computeSeconds: 0.01 });

  for (const [dtype, relative, smallest] of [['float16', 2 ** -11, 6.2e-5], ['bfloat16', 2 ** -8, 1e-37]] as const) {
    test(`${dtype}: half the bytes, each value rounded to nearest (relative error ≤ ${relative.toExponential(1)} in range)`, () => {
      const wide = encode(gradients(values));
      const frame = encode(gradients(values), dtype);
      assert.ok(Math.abs(frame.length - wide.length / 2) < 200, `${frame.length} vs ${wide.length}`);
      const m = decodeWorkerMessage(frame);
      assert.ok(m.type === 'gradients');
      if (m.type !== 'gradients') return;
      for (let i = 0; i < values.length; i++) {
        const [v, got] = [values[i], m.gradients[i]];
        const bound = Math.abs(v) >= smallest ? relative * Math.abs(v) : 2 ** -24; // float16's subnormal spacing
        assert.ok(Math.abs(got - v) <= bound * 1.0001, `${dtype} [${i}]: ${v} → ${got}`);
      }
      // Exactly representable values survive unchanged; the scalar fields are never rounded.
      const exact = Float32Array.from([0, -0, 1, -2, 0.5, 1024, -0.375]);
      assert.deepEqual(Array.from((decodeWorkerMessage(encode(gradients(exact), dtype)) as Gradients).gradients), Array.from(exact));
      assert.equal((m as Gradients).loss, 0.5);
    });
  }

  // Without the addon (the GPU image, --no-native) these are the conversions in use, and native.test.ts, which
  // holds the addon to their bits, is skipped: their rounding is checked here, by value.
  test('the JavaScript 16-bit conversions round to nearest, ties to even, in normal and subnormal float16 and in bfloat16', () => {
    // float16 near 1 (ulp 2^-10): 1 + 2^-11 is halfway between 0x3c00 and 0x3c01, 1 + 3·2^-11 between 0x3c01 and 0x3c02.
    const f16 = encodeFloatsPortable(Float32Array.of(1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -11 + 2 ** -20, -(1 + 2 ** -11), 2 ** -25, 3 * 2 ** -25, 2 ** -25 + 2 ** -40), 'float16');
    assert.deepEqual(Array.from(f16, (h) => h.toString(16)), ['3c00', '3c02', '3c01', 'bc00', '0', '2', '1']);
    // bfloat16 near 1 (ulp 2^-7).
    const bf16 = encodeFloatsPortable(Float32Array.of(1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -(1 + 3 * 2 ** -8)), 'bfloat16');
    assert.deepEqual(Array.from(bf16, (h) => h.toString(16)), ['3f80', '3f82', '3f81', 'bf82']);
    // Just below float16's overflow threshold (65520) rounds to 65504, not up to infinity; from it on it saturates too.
    assert.deepEqual(Array.from(encodeFloatsPortable(Float32Array.of(65519.99, 65520, -65535, 70000), 'float16'), (h) => h.toString(16)), ['7bff', '7bff', 'fbff', '7bff']);
    // A NaN whose payload lies only in the low 16 bits stays NaN, not the Infinity its upper bits alone are.
    const nan = new Float32Array(new Uint32Array([0x7f800001, 0xff800001]).buffer);
    assert.deepEqual(Array.from(encodeFloatsPortable(nan, 'bfloat16'), (h) => h.toString(16)), ['7fc0', 'ffc0']);
    // And back: subnormal and normal float16s, and the largest, at their exact values.
    assert.deepEqual(Array.from(decodeFloatsPortable(Uint16Array.of(0x0001, 0x03ff, 0x8400, 0x3555, 0x7bff, 0xfc00), 'float16')), [2 ** -24, 1023 * 2 ** -24, -(2 ** -14), 0.333251953125, 65504, -Infinity]);
  });

  test('float16 saturates beyond its range instead of sending infinity', () => {
    const m = decodeWorkerMessage(encode(gradients(Float32Array.from([1e6, -7e4, 65504])), 'float16')) as Gradients;
    assert.deepEqual(Array.from(m.gradients), [65504, -65504, 65504]);
  });

  test('a 16-bit gradient beyond ±MAX_GRADIENT_ABS is refused, as under float32, not saturated or rounded into range', () => {
    for (const v of [-2e6, 4.1e6, 1e30]) {
      const values = Float32Array.from([0.5, v, 7e4]);
      assertRejected(() => decodeWorkerMessage(encode(gradients(values), 'float32')), 'out_of_range');
      // Saturated to ±65504 it would pass, and a diverged step would be applied; it goes as ±Infinity instead.
      assertRejected(() => decodeWorkerMessage(encode(gradients(values), 'float16')), 'not_finite');
      assertRejected(() => decodeWorkerMessage(encode(gradients(values), 'bfloat16')), 'not_finite');
    }
    // The sign survives: a diverged step's error names the direction it ran off in.
    assert.throws(() => decodeWorkerMessage(encode(gradients(Float32Array.from([0.5, -2e6])), 'float16')), /gradients\[1\] is -Infinity/);
    // A NaN still arrives as NaN, not as the Infinity a value beyond the bound becomes.
    for (const dtype of ['float16', 'bfloat16'] as const) {
      assert.throws(() => decodeWorkerMessage(encode(gradients(Float32Array.from([0.5, NaN, 2e6])), dtype)), /gradients\[1\] is NaN/);
    }
    // bfloat16 would round 1,001,000 to 999,424, back inside the bound.
    assertRejected(() => decodeWorkerMessage(encode(gradients(Float32Array.from([1.001e6])), 'bfloat16')), 'not_finite');
  });

  test('16-bit frames are validated like float32 ones', () => {
    const nan16 = raw.pack({ v: PROTOCOL_VERSION, type: 'gradients', step: 1, phase: 'generator', samples: 8, loss: 0.5, dFake: 0.4, computeSeconds: 0.01, dtype: 'float16', gradients: new Uint8Array([0x00, 0x7e]) });
    assertRejected(() => decodeWorkerMessage(nan16), 'not_finite');
    const inf16 = raw.pack({ v: PROTOCOL_VERSION, type: 'gradients', step: 1, phase: 'generator', samples: 8, loss: 0.5, dFake: 0.4, computeSeconds: 0.01, dtype: 'bfloat16', gradients: new Uint8Array([0x80, 0x7f]) });
    assertRejected(() => decodeWorkerMessage(inf16), 'not_finite');
    const odd = raw.pack({ v: PROTOCOL_VERSION, type: 'gradients', step: 1, phase: 'generator', samples: 8, loss: 0.5, dFake: 0.4, computeSeconds: 0.01, dtype: 'float16', gradients: new Uint8Array(3) });
    assertRejected(() => decodeWorkerMessage(odd), 'bad_size');
    const unknown = raw.pack({ v: PROTOCOL_VERSION, type: 'gradients', step: 1, phase: 'generator', samples: 8, loss: 0.5, dFake: 0.4, computeSeconds: 0.01, dtype: 'float8', gradients: new Uint8Array(4) });
    assertRejected(() => decodeWorkerMessage(unknown), 'bad_field');
  });
});
