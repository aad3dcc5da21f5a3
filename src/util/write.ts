import fs from 'node:fs';

/**
 * Writes `parts` one after another from `position`, looping over short
 * writes (a full disk or /dev/shm can take part of a buffer): a caller that
 * returns has all its bytes in the file, and one that throws knows it has not.
 */
export function writeFully(fd: number, parts: readonly Uint8Array[], position = 0): number {
  let at = position;
  for (const part of parts) {
    for (let done = 0; done < part.byteLength; ) {
      const n = fs.writeSync(fd, part, done, part.byteLength - done, at);
      if (n <= 0) throw new Error(`a write of ${part.byteLength - done} bytes at ${at} wrote nothing`);
      done += n;
      at += n;
    }
  }
  return at - position;
}
