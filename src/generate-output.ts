import fs from 'node:fs';
import path from 'node:path';
import { IMAGE_SIZE } from './data/image';
import { PATH_MAX } from './util/write';

/*
 * What `generate` can write. Kept apart from generate.ts, which loads
 * TensorFlow.js, so that the command line checks --out and --count (and
 * answers --help) without loading it.
 */

export const GENERATE_FORMATS = ['.npy', '.idx', '.png'] as const;

/** The most samples one call draws: 200,000 are 627 MB as float32, held in memory twice while the file is written. */
export const GENERATE_MAX_COUNT = 200_000;

/** The longest name of a directory entry, in bytes, on ext4, xfs, btrfs and tmpfs. */
const NAME_MAX = 255;

/** The most links followed to the file, as Linux's open() follows (its ELOOP limit). */
const MAX_LINK_HOPS = 40;

/**
 * The file that --out names: a link's target (through a chain of links), so
 * that the samples are written where the link points and the link is kept, as
 * a shell's `>` or numpy.save writes, not replaced by the rename. A loop, or a
 * chain too long to follow, is the path itself, and generateProblem refuses it.
 */
export function outputFile(out: string): string {
  let at = path.resolve(out);
  for (let hops = 0; isLink(at) && !foreignLink(at); hops++) {
    if (hops === MAX_LINK_HOPS) return path.resolve(out);
    // From the directory the link is really in, as open() resolves it: a `..` in the target climbs out of that
    // directory, not out of a linked path to it.
    at = path.resolve(fs.realpathSync(path.dirname(at)), fs.readlinkSync(at));
  }
  return at;
}

/**
 * Whether `link` is another user's link in a sticky, world-writable directory (/tmp), which Linux does not
 * follow (fs.protected_symlinks): followed here, anyone could point a --out in /tmp at a file of ours.
 */
function foreignLink(link: string): boolean {
  const uid = process.geteuid?.();
  if (uid === undefined) return false;
  const owner = fs.lstatSync(link).uid;
  const dir = fs.statSync(path.dirname(link));
  return (dir.mode & 0o1002) === 0o1002 && owner !== uid && owner !== dir.uid;
}

/**
 * Why generate cannot write `count` samples to `out`, or null; `countText` is the count as the user gave it.
 * `freeOn` gives the bytes free on a directory's file system (a test's own, where it cannot mount a small one).
 */
export function generateProblem(out: string, count: number, countText = String(count), freeOn: (dir: string) => number | null = freeBytes): string | null {
  const ext = path.extname(out).toLowerCase();
  if (!(GENERATE_FORMATS as readonly string[]).includes(ext)) {
    // path.extname() sees no extension in a bare `.npy`, which would read as "must end in .npy, got .npy".
    const bare = (GENERATE_FORMATS as readonly string[]).includes(path.basename(out).toLowerCase());
    return bare ? `--out ${out} names no file, only an extension: write e.g. samples${path.basename(out)}` : `--out must end in ${GENERATE_FORMATS.join(', ')}, got ${out}`;
  }
  if (count > GENERATE_MAX_COUNT) return `--count must be at most ${GENERATE_MAX_COUNT}, got ${countText}; draw more with further calls and other --seed values`;
  const file = outputFile(out);
  if (isLink(file)) {
    if (foreignLink(file)) return `--out ${out} cannot be written: ${file} is a link of another user (uid ${fs.lstatSync(file).uid}) in a sticky directory, which Linux does not follow`;
    return `--out ${out} cannot be written: it is a loop of links, or a chain longer than ${MAX_LINK_HOPS}`;
  }
  // The file is written as `<name>.tmp-<pid>` and renamed: that name, too, must fit a directory entry (255 bytes on
  // Linux's file systems), or the write fails with ENAMETOOLONG after every sample was drawn.
  const name = Buffer.byteLength(path.basename(file));
  const suffix = `.tmp-${process.pid}`.length;
  if (name + suffix > NAME_MAX) return `--out ${out} cannot be written: its name is ${name} bytes, and with the temporary file's suffix (${suffix}) it must fit a directory entry's ${NAME_MAX}`;
  // So must the whole path, however short each name in it.
  const whole = Buffer.byteLength(file);
  if (whole + suffix >= PATH_MAX) return `--out ${out} cannot be written: its path is ${whole} bytes, and with the temporary file's suffix (${suffix}) it must be shorter than a path's ${PATH_MAX}`;
  // Found here, before the checkpoint is read and the samples drawn, not as mkdir's EEXIST after.
  let at = file;
  if (/[\\/]$/.test(out) || (fs.existsSync(at) && fs.statSync(at).isDirectory())) return `--out ${out} is a directory; name the file to write`;
  while (!fs.existsSync(at)) {
    // A link to nothing is no more there than a missing path, but mkdir cannot make a directory under it.
    if (at !== file && isLink(at)) return `--out ${out} cannot be written: ${at} is a link to ${fs.readlinkSync(at)}, which does not exist`;
    // A directory still to make has the same limit, found otherwise as mkdir's ENAMETOOLONG after every sample was drawn.
    const dirName = Buffer.byteLength(path.basename(at));
    if (at !== file && dirName > NAME_MAX) return `--out ${out} cannot be written: the directory name ${path.basename(at)} is ${dirName} bytes, more than a directory entry's ${NAME_MAX}`;
    at = path.dirname(at);
  }
  if (at !== file && !fs.statSync(at).isDirectory()) return `--out ${out} cannot be written: ${at} is a file, not a directory`;
  // The file is written beside --out and renamed over it: its directory, or the nearest one there is, must take files.
  const writtenIn = at === file ? path.dirname(at) : at;
  try {
    fs.accessSync(writtenIn, fs.constants.W_OK | fs.constants.X_OK);
  } catch (e) {
    return `--out ${out} cannot be written: ${(e as Error).message}`;
  }
  // Root may write into /proc's directories by their modes; the kernel refuses the file only at the write.
  const pseudo = pseudoFileSystem(writtenIn);
  if (pseudo) return `--out ${out} cannot be written: ${writtenIn} is on ${pseudo}, which takes no files`;
  // A full file system was found only as ENOSPC from the write, after every sample was drawn (minutes for dcgan).
  // The temporary file needs all its bytes while a file it replaces still holds its own.
  const bytes = outputBytes(ext, count);
  const free = freeOn(writtenIn);
  if (free !== null && free < bytes) return `--out ${out} cannot be written: ${count} samples as ${ext} take ${megabytes(bytes)}, and ${writtenIn} has ${megabytes(free)} free`;
  // In a sticky directory (/tmp), only the owner of a file or of the directory may rename over it: another user's
  // file there would be found only by the rename, after every sample was drawn.
  if (at === file) {
    const dir = fs.statSync(path.dirname(at));
    const existing = fs.lstatSync(at);
    const uid = process.geteuid?.();
    if (uid !== undefined && uid !== 0 && dir.mode & 0o1000 && existing.uid !== uid && dir.uid !== uid) {
      return `--out ${out} cannot be written: it belongs to another user (uid ${existing.uid}), in a sticky directory where only its owner may replace it`;
    }
  }
  return null;
}

/** The size of `count` samples as `ext`: exact for .npy (its header is at most 128 bytes) and .idx, a floor for .png. */
function outputBytes(ext: string, count: number): number {
  if (ext === '.npy') return 128 + count * IMAGE_SIZE * 4;
  if (ext === '.idx') return 16 + count * IMAGE_SIZE;
  return 0; // deflated: no size to know before it is drawn
}

/** The kernel's file systems that hold no files of ours, by statfs's f_type (linux/magic.h). */
const PSEUDO_FILE_SYSTEMS = new Map([
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
  [0x1cd1, 'devpts'],
  [0x27e0eb, 'cgroup'],
  [0x63677270, 'cgroup2'],
  [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'],
  [0x73636673, 'securityfs'],
]);

/** `dir`'s file system where it is one of the kernel's that holds no files ("a proc file system"), or null. */
function pseudoFileSystem(dir: string): string | null {
  try {
    const name = PSEUDO_FILE_SYSTEMS.get(fs.statfsSync(dir).type);
    return name ? `a ${name} file system` : null;
  } catch {
    return null;
  }
}

/** Bytes this process may still write on `dir`'s file system (root: the reserved blocks too), or null where unknown. */
function freeBytes(dir: string): number | null {
  try {
    const s = fs.statfsSync(dir);
    return (process.geteuid?.() === 0 ? s.bfree : s.bavail) * s.bsize;
  } catch {
    return null; // a file system statfs cannot answer for: the write says what it finds
  }
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

function isLink(p: string): boolean {
  try {
    return fs.lstatSync(p, { throwIfNoEntry: false })?.isSymbolicLink() ?? false;
  } catch {
    return false; // ENOTDIR under a file, EACCES: no link there to follow, and the checks below name the cause
  }
}
