import { ProtocolError } from './codec-error';

/** Deeper than any ganfleet message (which is a flat map); refuses nesting bombs. */
const MAX_DEPTH = 8;

/**
 * Walks a msgpack frame's structure without building it, and refuses frames
 * that could make the decoder misbehave: msgpackr allocates an array of a
 * container's declared length before reading its elements, so a 5-byte
 * header claiming 2^32 elements, nested, exhausts the heap. Here every
 * declared count and length must fit in the bytes that remain (each element
 * takes at least one), nesting is bounded, and exactly one value fills the frame.
 *
 * Extension types are refused: ganfleet sends none, and msgpackr acts on
 * some of them whatever its options (a record, 0x72, reads on from inside
 * its own payload), so a walk that skipped their bytes would stop checking
 * what msgpackr goes on to decode: a 268-byte frame hid nested 16M-element
 * arrays that way and killed the coordinator before any hello.
 */
export function checkFrameShape(b: Uint8Array): void {
  const len = b.length;
  let pos = 0;
  const bad = (why: string) => new ProtocolError('bad_frame', `malformed msgpack at byte ${pos}: ${why}`);
  const uint = (bytes: number): number => {
    if (pos + bytes > len) throw bad('truncated length');
    let v = 0;
    for (let i = 0; i < bytes; i++) v = v * 256 + b[pos++];
    return v;
  };
  const pending: number[] = [1]; // values still to read, per open container
  while (pending.length > 0) {
    const top = pending.length - 1;
    if (pending[top] === 0) {
      pending.pop();
      continue;
    }
    pending[top]--;
    if (pos >= len) throw bad('truncated');
    const t = b[pos++];
    let skip = 0;
    let items = -1;
    if (t <= 0x7f || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) skip = 0;
    else if (t <= 0x8f) items = (t & 0x0f) * 2;
    else if (t <= 0x9f) items = t & 0x0f;
    else if (t <= 0xbf) skip = t & 0x1f;
    else {
      switch (t) {
        case 0xc4: case 0xd9: skip = uint(1); break; // bin8, str8
        case 0xc5: case 0xda: skip = uint(2); break;
        case 0xc6: case 0xdb: skip = uint(4); break;
        case 0xca: skip = 4; break;
        case 0xcb: skip = 8; break;
        case 0xcc: case 0xd0: skip = 1; break;
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xce: case 0xd2: skip = 4; break;
        case 0xcf: case 0xd3: skip = 8; break;
        case 0xc7: case 0xc8: case 0xc9: case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
          throw bad(`extension type 0x${t.toString(16)}: the protocol has none`);
        case 0xdc: items = uint(2); break;
        case 0xdd: items = uint(4); break;
        case 0xde: items = 2 * uint(2); break;
        case 0xdf: items = 2 * uint(4); break;
        default: throw bad(`invalid type byte 0x${t.toString(16)}`);
      }
    }
    if (items >= 0) {
      if (items > len - pos) throw bad(`a container claims ${items} elements with ${len - pos} bytes left`);
      if (pending.length > MAX_DEPTH) throw bad(`nested deeper than ${MAX_DEPTH}`);
      pending.push(items);
    } else {
      if (skip > len - pos) throw bad(`a value claims ${skip} bytes with ${len - pos} left`);
      pos += skip;
    }
  }
  if (pos !== len) throw bad(`${len - pos} bytes after the message`);
}
