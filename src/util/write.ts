import fs from 'node:fs';
import path from 'node:path';

/** The longest path, in bytes with its terminating NUL, that Linux's system calls take. */
export const PATH_MAX = 4096;

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
 * fails (a full disk) removes its temporary file and throws, naming `file`.
 * `mayCommit` is asked once the data is on disk, just before the rename:
 * false abandons the write (a coordinator that lost its lease on --out while
 * a slow write took) and returns false.
 */
export function writeFileAtomic(file: string, parts: readonly Uint8Array[], mayCommit: () => boolean = () => true): boolean {
  const tmp = `${file}.tmp-${process.pid}`;
  const replaced = modeOf(file);
  const fd = fs.openSync(tmp, 'w');
  try {
    try {
      // A file replaced keeps its permissions, as an editor's save does: a 0600 output stays private.
      if (replaced !== null) fs.fchmodSync(fd, replaced);
      writeFully(fd, parts);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    if (!mayCommit()) {
      removeFile(tmp);
      return false;
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    try {
      removeFile(tmp);
    } catch {
      /* the write's own error is the one to report */
    }
    throw naming(e, file, tmp);
  }
  try {
    const dfd = fs.openSync(path.dirname(file), 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch (e) {
    throw naming(e, file);
  }
  return true;
}

/** A failed read, write or fsync names no file ("EIO: i/o error, fsync"): `e`, saying which file it was. */
export function naming(e: unknown, file: string, ...named: string[]): unknown {
  if (e instanceof Error && ![file, ...named].some((f) => e.message.includes(f))) e.message = `${e.message} (${file})`;
  return e;
}

/** The permission bits of `file`, or null where there is none to keep. */
function modeOf(file: string): number | null {
  try {
    return fs.statSync(file).mode & 0o7777;
  } catch {
    return null;
  }
}

/** writeFileAtomic of `value` as indented JSON and a newline: summary.json, evaluations.json, model.json. */
export function writeJsonAtomic(file: string, value: unknown, mayCommit?: () => boolean): boolean {
  return writeFileAtomic(file, [Buffer.from(JSON.stringify(value, null, 2) + '\n')], mayCommit);
}

/**
 * A temporary file of writeFileAtomic that has not changed for this long is
 * abandoned: a write holds one for the seconds it takes to write, fsync and
 * rename. (Its pid says nothing across containers or hosts sharing a volume.)
 */
const TORN_WRITE_AGE_MS = 5 * 60_000;

/**
 * Removes the abandoned temporary files of writeFileAtomic for the files
 * named by `names` (a pattern, or one name) in `dir`, and returns their names. Anything else in `dir`,
 * and a write still under way (another process's on the same volume), is
 * left alone.
 */
export function removeTornWrites(dir: string, names: RegExp | string, now = Date.now()): string[] {
  const torn = namesIn(dir).filter((name) => {
    const final = /^(.*)\.tmp-\d+$/.exec(name)?.[1];
    if (final === undefined || !(typeof names === 'string' ? final === names : names.test(final))) return false;
    try {
      return now - fs.statSync(path.join(dir, name)).mtimeMs > TORN_WRITE_AGE_MS;
    } catch {
      return false; // renamed or removed meanwhile: its write finished
    }
  });
  for (const name of torn) removeFile(path.join(dir, name));
  return torn;
}

/**
 * The names in `dir`, none where it does not exist. Any other error (EACCES,
 * EIO) is thrown: a directory that cannot be listed is not an empty one, and
 * taken for one, a run's checkpoints would be written over.
 */
export function namesIn(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/**
 * Removes `file`; one already gone is not an error. (Not `fs.rmSync` with
 * `force`: an unlink refused with EPERM, on an immutable file, is retried as
 * a directory and reported as "ENOTDIR ... scandir", hiding the reason.)
 */
export function removeFile(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

/**
 * `mkdir -p`: makes `dir` and its missing parents, and returns the first it
 * made, as fs.mkdirSync's recursive form does. That form, in Node 20, loops
 * for ever where mkdir answers ENOENT under a parent that is there
 * (`--out /proc/run`); here such an answer is thrown. A parent that another
 * process removed meanwhile (a run releasing its empty --out) is made again,
 * a bounded number of times.
 */
export function makeDirectory(dir: string): string | undefined {
  const target = path.resolve(dir);
  let first: string | undefined;
  // Taken back where a deeper one fails (a name too long for a directory entry): a refused --out leaves nothing made.
  const made: string[] = [];
  for (let tries = 1; ; tries++) {
    const missing: string[] = [];
    for (let d = target; !fs.existsSync(d) && d !== path.dirname(d); d = path.dirname(d)) missing.unshift(d);
    if (missing.length === 0) {
      if (!fs.statSync(target).isDirectory()) throw Object.assign(new Error(`EEXIST: file already exists, mkdir '${target}'`), { code: 'EEXIST', syscall: 'mkdir', path: target });
      return first;
    }
    try {
      for (const d of missing) {
        try {
          fs.mkdirSync(d);
          first ??= d;
          made.push(d);
        } catch (e) {
          // A link to nothing (a volume not mounted) takes no mkdir, and stat would say only ENOENT of a name ls shows.
          if ((e as NodeJS.ErrnoException).code === 'EEXIST' && fs.lstatSync(d).isSymbolicLink() && !fs.existsSync(d)) {
            throw new Error(`${d} is a link to ${fs.readlinkSync(d)}, which does not exist`);
          }
          // Made meanwhile by someone else: as good.
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !fs.statSync(d).isDirectory()) throw e;
        }
      }
    } catch (e) {
      const parentGone = (e as NodeJS.ErrnoException).code === 'ENOENT' && !fs.existsSync(path.dirname((e as NodeJS.ErrnoException).path ?? target));
      if (!parentGone || tries >= 100) {
        for (const d of made.reverse()) {
          try {
            fs.rmdirSync(d);
          } catch {
            /* not empty (another process's meanwhile), or gone: leave it */
          }
        }
        throw e;
      }
    }
  }
}
