import fs from 'node:fs';
import path from 'node:path';
import { processAlive } from './process';

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

/**
 * Replaces `file` whole or not at all: a temporary file beside it, fsync,
 * rename over the name, fsync the directory. A crash at any point leaves the
 * old file or the new one under the name, never a torn one, and a write that
 * fails (a full disk) removes its temporary file and throws.
 */
export function writeFileAtomic(file: string, parts: readonly Uint8Array[]): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    try {
      writeFully(fd, parts);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  const dfd = fs.openSync(path.dirname(file), 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}

/**
 * Removes the temporary files of writeFileAtomic for the files named by
 * `names` that a killed process left in `dir` (this process's own pid can
 * only be an earlier incarnation's: a container's processes reuse it), and
 * returns their names. Anything else in `dir` is left alone.
 */
export function removeTornWrites(dir: string, names: RegExp): string[] {
  if (!fs.existsSync(dir)) return [];
  const torn = fs.readdirSync(dir).filter((name) => {
    const [, final, pid] = /^(.*)\.tmp-(\d+)$/.exec(name) ?? [];
    return final !== undefined && names.test(final) && (Number(pid) === process.pid || !processAlive(Number(pid)));
  });
  for (const name of torn) fs.rmSync(path.join(dir, name), { force: true });
  return torn;
}
