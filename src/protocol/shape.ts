import { ProtocolError } from './codec-error';

/** More fields than any ganfleet message has (a gradients message with its pads has 14). */
const MAX_FIELDS = 32;

const EXTENSIONS = new Set([0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8]);

/**
 * Walks a msgpack frame's structure without building it, and refuses any
 * frame that is not what every ganfleet message is: one map of at most
 * MAX_FIELDS fields whose values are numbers, strings, booleans, nil or
 * bytes, filling the frame. msgpackr builds whatever it is given before the
 * schema can look at it, and it allocates an array of a container's declared
 * length before reading its elements: a 5-byte header claiming 2^32
 * elements, nested, exhausts the heap, and a frame of one-byte empty maps
 * (6.6 MB, within a DCGAN gradient's maxPayload) took 4 to 10 s and 425 MB
 * to build, and so froze the coordinator before any hello.
 *
 * Extension types are refused: ganfleet sends none, and msgpackr acts on
 * some of them whatever its options (a record, 0x72, reads on from inside
 * its own payload), so a walk that skipped their bytes would stop checking
 * what msgpackr goes on to decode.
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
  const isMap = (t: number) => (t >= 0x80 && t <= 0x8f) || t === 0xde || t === 0xdf;
  const isArray = (t: number) => (t >= 0x90 && t <= 0x9f) || t === 0xdc || t === 0xdd;
  const extension = (t: number) => bad(`extension type 0x${t.toString(16)}: the protocol has none`);
  /** Steps over one field's key or value, which is never a container. */
  const scalar = (): void => {
    if (pos >= len) throw bad('truncated');
    const t = b[pos++];
    let skip = 0;
    if (t <= 0x7f || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) skip = 0;
    else if (isMap(t) || isArray(t)) throw bad(`${isMap(t) ? 'a map' : 'an array'} inside the message, whose fields are numbers, strings and bytes`);
    else if (t <= 0xbf) skip = t & 0x1f;
    else if (EXTENSIONS.has(t)) throw extension(t);
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
        default: throw bad(`invalid type byte 0x${t.toString(16)}`);
      }
    }
    if (skip > len - pos) throw bad(`a value claims ${skip} bytes with ${len - pos} left`);
    pos += skip;
  };
  if (len === 0) throw bad('truncated');
  const t = b[pos++];
  if (EXTENSIONS.has(t)) throw extension(t);
  if (!isMap(t)) throw bad('a message must be a msgpack map');
  const fields = t <= 0x8f ? t & 0x0f : uint(t === 0xde ? 2 : 4);
  if (fields > MAX_FIELDS) throw bad(`a map of ${fields} fields: no message has more than ${MAX_FIELDS}`);
  for (let i = 0; i < 2 * fields; i++) scalar();
  if (pos !== len) throw bad(`${len - pos} bytes after the message`);
}
