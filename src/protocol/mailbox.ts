/**
 * Frames between a coordinator and a worker on the same machine, through a
 * file in shared memory (/dev/shm) instead of the WebSocket: the sender
 * writes the frame into its own file and sends a `mail` notice of a few
 * bytes; the receiver reads the frame and decodes it as if it had come over
 * the socket. Over loopback TCP each 0.45 MB frame costs both processes CPU:
 * the kernel's TCP path on both sides, ws reassembling it from 64 KB reads
 * into a fresh buffer. Here the kernel copies it once each way, the sender
 * writes it from its pieces (codec's EncodedFrame) and the receiver can read
 * it into reused memory: with two workers the coordinator's CPU per step
 * halves (docs/performance.md).
 *
 * Each side writes only a file it created itself (mode 0600, in a 0700
 * directory of its own) and only reads the other's, so neither can be made
 * to write where its peer chooses. A mailbox is used only after the worker
 * has found the coordinator's nonce in the coordinator's file and the
 * coordinator has found it in the worker's: both sides see the same files,
 * so they share a machine (and a /dev/shm, which containers do not).
 *
 * A file is rewritten only after its reader has answered the frame before
 * (the coordinator writes the next weights after the worker's gradients; the
 * worker writes gradients only in answer to weights), so a read never meets
 * a write. A peer that breaks that rule can only change its own frames,
 * which are validated like any other.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { EncodedFrame } from './codec';
import { removeFile, writeFully } from '../util/write';
import { ProtocolError } from './codec-error';
import { GanfleetError } from '../util/errors';
import { pidNamespace, processAlive } from '../util/process';

/** A file descriptor closed at most once: once closed, its number may already belong to another file. */
class Descriptor {
  private closed = false;

  constructor(private readonly fd: number) {}

  get open(): boolean {
    return !this.closed;
  }

  /** The number, for one call; only while open. */
  get number(): number {
    if (this.closed) throw new Error('descriptor used after close');
    return this.fd;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already gone */
    }
  }
}

export class Outbox {
  private readonly file: Descriptor;

  private constructor(
    readonly path: string,
    fd: number,
  ) {
    this.file = new Descriptor(fd);
  }

  /**
   * Creates `file` (which must not exist) holding `nonce`. When that fails
   * (a full /dev/shm), it leaves neither the file nor its descriptor behind:
   * the coordinator tries once per joining worker, for the whole run.
   */
  static create(file: string, nonce: string): Outbox {
    const fd = fs.openSync(file, 'wx', 0o600);
    try {
      writeFully(fd, [Buffer.from(nonce, 'latin1')]);
    } catch (e) {
      new Descriptor(fd).close();
      try {
        removeFile(file);
      } catch {
        /* the write's own error is the one to report */
      }
      throw withRemedy(e, file);
    }
    return new Outbox(file, fd);
  }

  /** Replaces the file's frame; its pieces are written where they lie, not joined first. */
  post(frame: EncodedFrame): void {
    if (!this.file.open) throw new Error(`${this.path} is closed`);
    try {
      writeFully(this.file.number, frame.parts);
    } catch (e) {
      throw withRemedy(e, this.path);
    }
  }

  /**
   * Closes and removes the file. A peer that holds it open can still read the frame last announced to it
   * (a dropped worker, frozen before it read its notice, reads it and then the reason it was dropped).
   */
  close(): void {
    if (!this.file.open) return;
    this.file.close();
    removeFile(this.path);
  }

  /**
   * Closes a file that failed to take a frame (a full /dev/shm), emptied first: the peer's inbox holds it
   * open for the rest of its connection, and the removed file's bytes would stay in shared memory until then.
   * Only where no notice of it is unread: the failed frame was never announced, and the ones before were answered.
   */
  discard(): void {
    if (!this.file.open) return;
    try {
      fs.ftruncateSync(this.file.number, 0);
    } catch {
      /* removed all the same */
    }
    this.close();
  }
}

/**
 * A write that failed for want of room ("ENOSPC: no space left on device, write") names neither the
 * file system that is full nor what to do: `e`, saying both (Docker's /dev/shm is 64 MB, a DCGAN
 * worker's two mailboxes take some 13 MB).
 */
function withRemedy(e: unknown, file: string): unknown {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (!(e instanceof Error) || (code !== 'ENOSPC' && code !== 'EDQUOT')) return e;
  const base = path.dirname(path.dirname(file));
  const room = base === '/dev/shm' ? 'docker run --shm-size, or an emptyDir with medium: Memory mounted on /dev/shm' : 'free space there';
  e.message = `${e.message}: ${base} is full; give it room (${room}) or pass --no-mailbox`;
  return e;
}

export class Inbox {
  private readonly file: Descriptor;

  private constructor(fd: number) {
    this.file = new Descriptor(fd);
  }

  /**
   * Opens the file of a peer in role `from` and checks that it starts with
   * `nonce`. Throws with the reason when it is not in a mailbox directory of
   * such a peer, cannot be opened, is not a regular file of this user, or
   * holds something else. The peer names the file, so nothing outside the
   * mailbox directories is ever opened for it: not a device, whose open alone
   * may act, nor a path whose errors would tell the peer what this machine holds.
   */
  static open(file: string, nonce: string, from: MailboxRole): Inbox {
    checkPeerPath(file, from);
    if (!NONCE.test(nonce)) throw new Error('the nonce offered is not one ganfleet makes');
    // O_NOFOLLOW: the last part must be the file itself, not a link elsewhere; O_NONBLOCK: a FIFO
    // named here fails the regular-file check below instead of blocking the open.
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new Error(`${file} is not a regular file`);
      if (typeof process.getuid === 'function' && st.uid !== process.getuid()) throw new Error(`${file} belongs to another user`);
      const expected = Buffer.from(nonce, 'latin1');
      const found = Buffer.alloc(expected.length);
      fs.readSync(fd, found, 0, found.length, 0);
      if (!found.equals(expected)) throw new Error(`${file} does not hold this connection's nonce`);
      return new Inbox(fd);
    } catch (e) {
      new Descriptor(fd).close();
      throw e;
    }
  }

  /** Memory that `collect` with `reuse` reads frames into; grown as needed. */
  private reused: Buffer | null = null;

  /**
   * The frame the peer announced, `bytes` long. In fresh memory of its own by
   * default: the decoded floats are views of it, and may outlive the next
   * frame. With `reuse`, in memory this inbox reads every frame into, so the
   * frame and its views are valid only until the next `collect`; that spares
   * a fresh 0.45 MB buffer (its page faults, its garbage) per frame.
   */
  collect(bytes: number, limit: number, reuse = false): Buffer {
    if (!this.file.open) throw new ProtocolError('unexpected', 'mail to a closed mailbox');
    if (!Number.isSafeInteger(bytes) || bytes < 1 || bytes > limit) {
      throw new ProtocolError('bad_size', `a mailed frame of ${bytes} bytes is outside 1..${limit}`);
    }
    let frame: Buffer;
    if (reuse) {
      // Its own ArrayBuffer (allocUnsafeSlow), so every frame starts 4-byte aligned.
      if (!this.reused || this.reused.length < bytes) this.reused = Buffer.allocUnsafeSlow(bytes);
      frame = this.reused.subarray(0, bytes);
    } else {
      frame = Buffer.allocUnsafeSlow(bytes);
    }
    const fd = this.file.number;
    let at = 0;
    while (at < bytes) {
      let n: number;
      try {
        n = fs.readSync(fd, frame, at, bytes - at, at);
      } catch (e) {
        // This side's read failed (EIO, say), not the peer: no offence of the peer's, unlike a short file.
        throw new GanfleetError('MAILBOX_READ_FAILED', `reading the mailbox failed: ${(e as Error).message}`);
      }
      if (n === 0) throw new ProtocolError('bad_size', `the mailbox holds ${at} bytes, the notice announced ${bytes}`);
      at += n;
    }
    return frame;
  }

  close(): void {
    this.file.close();
  }
}

/** A fresh random nonce for one connection's mailboxes. */
export function mailboxNonce(): string {
  return `ganfleet-mailbox-${crypto.randomBytes(16).toString('hex')}\n`;
}

/** What mailboxNonce makes: a peer's shorter "nonce" (an empty one matches every file) proves nothing. */
const NONCE = /^ganfleet-mailbox-[0-9a-f]{32}\n$/;

export type MailboxRole = 'coordinator' | 'worker';

/** ganfleet-<role>-<pid>-<pid namespace>-<random>; directories of builds before the namespace lack it. */
const DIR_NAME = /^ganfleet-(coordinator|worker)-(\d+)-(?:(\d+)-)?[^/]+$/;

/** Where mailbox directories go: /dev/shm where there is one, so the frames never touch a disk, else the temp dir. */
function mailboxBase(): string {
  try {
    fs.accessSync('/dev/shm', fs.constants.W_OK);
    return '/dev/shm';
  } catch {
    // No /dev/shm (macOS) or not writable: the temp dir serves, at a disk's page cache. Resolved, as the
    // directories made in it are, so that TMPDIR=/tmp//x still names the parent checkPeerPath compares.
    return path.resolve(os.tmpdir());
  }
}

/** What the log calls the mailboxes' medium: shared memory, or files where /dev/shm cannot be written (the page cache of a disk). */
export function mailboxMedium(): string {
  const base = mailboxBase();
  return base === '/dev/shm' ? 'shared memory' : `files in ${base}`;
}

/** Throws unless `file` is a file directly in a real directory that makeMailboxDir(`from`) would make. */
function checkPeerPath(file: string, from: MailboxRole): void {
  const dir = path.dirname(file);
  const where = `not a file in a ganfleet ${from} mailbox directory under ${mailboxBase()}`;
  if (!path.isAbsolute(file) || path.normalize(file) !== file || path.dirname(dir) !== mailboxBase() || DIR_NAME.exec(path.basename(dir))?.[1] !== from) {
    throw new Error(`${JSON.stringify(file)} is ${where}`);
  }
  // lstat: the directory itself, not a link named like one that leads elsewhere. Ours: in sticky /dev/shm no
  // other user can swap it for a link between this check and the open (the file must be ours anyway).
  const stat = fs.lstatSync(dir);
  if (!stat.isDirectory()) throw new Error(`${JSON.stringify(file)} is ${where}`);
  if (process.getuid && stat.uid !== process.getuid()) throw new Error(`${JSON.stringify(file)} is in a mailbox directory of another user (uid ${stat.uid}), which this process does not open`);
}

/**
 * A new private directory (0700) for this process's outboxes, in
 * mailboxBase(). It is removed when the process exits; directories left by
 * processes that were killed (their pid and pid namespace are in the name)
 * are swept away here, by processes of the same namespace.
 */
export function makeMailboxDir(role: MailboxRole): string {
  const base = mailboxBase();
  sweepDeadMailboxDirs(base);
  const namespace = pidNamespace();
  const dir = fs.mkdtempSync(path.join(base, `ganfleet-${role}-${process.pid}-${namespace === null ? '' : `${namespace}-`}`));
  const atExit = () => removeMailboxDir(dir);
  process.once('exit', atExit);
  liveDirs.set(dir, atExit);
  return dir;
}

const liveDirs = new Map<string, () => void>();

export function removeMailboxDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
  const atExit = liveDirs.get(dir);
  if (atExit) process.off('exit', atExit);
  liveDirs.delete(dir);
}

/**
 * Removes the mailbox directories of `pid`, a child this process has just
 * SIGKILLed (the bench's `local` on a signal): its exit handler never ran, and
 * the sweep above spares it while it is an unreaped zombie, which it is until
 * this process exits too.
 */
export function removeMailboxDirsOf(pid: number): void {
  removeMailboxDirs(mailboxBase(), (owner) => owner === pid);
}

/** Removes the mailbox directories in `base` of this pid namespace whose owning pid `remove` picks. */
function removeMailboxDirs(base: string, remove: (owner: number) => boolean): void {
  let names: string[];
  try {
    names = fs.readdirSync(base);
  } catch {
    return;
  }
  const mine = pidNamespace();
  for (const name of names) {
    const [, , owner, namespace] = DIR_NAME.exec(name) ?? [];
    // Its pid says nothing here when it was another namespace's (a container sharing /dev/shm): that one removes its own.
    if (owner === undefined || (namespace !== undefined && namespace !== mine) || !remove(Number(owner))) continue;
    removeDirOfThisUser(path.join(base, name));
  }
}

/**
 * Removes `dir` where this user owns it. Another user's (left by a killed process of theirs whose pid this
 * one's child has reused) is theirs to remove, and could not be: an error thrown from here would end `local`.
 */
function removeDirOfThisUser(dir: string): void {
  try {
    if (typeof process.getuid === 'function' && fs.lstatSync(dir).uid !== process.getuid()) return;
    fs.rmSync(dir, { recursive: true, force: true });
  } catch {
    /* another process swept it first, or it is not ours to remove */
  }
}

function sweepDeadMailboxDirs(base: string): void {
  removeMailboxDirs(base, (owner) => !processAlive(owner));
}
