import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GanfleetError } from '../util/errors';
import { sleep } from '../util/events';
import { Logger } from '../util/log';
import { pidNamespace, processAlive } from '../util/process';
import { PATH_MAX, makeDirectory, removeFile, writeFully } from '../util/write';
import { runLayout } from './config';

/** The file in --out that names the coordinator writing there. */
export const LEASE_FILE = '.ganfleet-lease';

export interface LeaseTiming {
  /** How often the holder touches the lease. */
  refreshMs: number;
  /** A lease untouched this long (watched, not read off its date) is a dead holder's. */
  staleMs: number;
}

export const LEASE_TIMING: LeaseTiming = { refreshMs: 5_000, staleMs: 20_000 };

/** Tokens of the leases this process holds or is taking: a lease with this pid and another token is an earlier life's. */
const heldHere = new Set<string>();

interface Holder {
  pid: number;
  hostname: string;
  /** Which process table `pid` belongs to: the kernel's boot and the pid namespace (null off Linux). */
  processTable: string | null;
  token: string;
  since: string;
}

/**
 * A coordinator's hold on its --out, taken at start, before anything is
 * trained:
 * - The run's directories are made then, so an --out that cannot hold them
 *   (under a file, read-only) fails at once instead of at the first sample
 *   grid, with the training done so far lost.
 * - A lease file says which process writes there. A second coordinator on
 *   the same directory (two runs started in the same second share the
 *   default timestamp, a second --resume, another pod on the volume) is
 *   refused instead of mixing its checkpoints and outputs with this run's.
 *
 * The holder touches the lease every `refreshMs`. A lease whose holder is
 * gone is taken over: where the holder's pid is in this process table (same
 * boot, same pid namespace), once that pid is gone; otherwise once the lease
 * has been watched for `staleMs` without a touch, since another machine's
 * clock says nothing about this one's. A holder that finds its lease taken
 * calls `onLost`: two writers must not go on.
 */
export class OutputClaim {
  /** Touches the lease while this process holds it; null once it is lost or released. */
  private timer: NodeJS.Timeout | null = null;
  /** When touches began to fail (performance.now()); null while they succeed. */
  private failingSince: number | null = null;

  private constructor(
    private readonly file: string,
    private readonly token: string,
    private readonly made: string[],
    private readonly out: string,
    private readonly log: Logger,
    private readonly onLost: (why: string) => void,
    private readonly timing: LeaseTiming,
  ) {}

  /** `abort` ends a wait on another process table's lease (a signal during start): OUT_NOT_TAKEN. */
  static async take(out: string, log: Logger, onLost: (why: string) => void, timing: LeaseTiming = LEASE_TIMING, abort?: AbortSignal): Promise<OutputClaim> {
    const file = path.join(out, LEASE_FILE);
    const me: Holder = { pid: process.pid, hostname: os.hostname(), processTable: processTable(), token: crypto.randomUUID(), since: new Date().toISOString() };
    // Its directories can be made while the names written in them cannot: ENAMETOOLONG came from the first
    // checkpoint, after the steps before it were trained. The longest is a lapsed lease moved aside.
    const longest = Buffer.byteLength(path.resolve(out, `${LEASE_FILE}${LAPSED}${me.token}`));
    if (longest >= PATH_MAX) {
      throw unusable(out, new Error(`its path is ${Buffer.byteLength(path.resolve(out))} bytes, and with the names a run writes in it (up to ${longest} bytes) it must be shorter than a path's ${PATH_MAX}`));
    }
    // --out first, then the lease, then what goes in it: a start that loses the lease removes only what is still empty.
    const made = makeDirectories(out, [out]);
    heldHere.add(me.token);
    try {
      await acquire(file, me, out, log, timing, abort);
    } catch (e) {
      heldHere.delete(me.token);
      removeEmpty(made);
      throw e;
    }
    const { checkpoints, generator, samples } = runLayout(out);
    const claim = new OutputClaim(file, me.token, made, out, log, onLost, timing);
    try {
      made.push(...makeDirectories(out, [checkpoints, generator, samples]));
    } catch (e) {
      claim.release();
      throw e;
    }
    // process.exit() (local's second Ctrl-C) skips close(): the lease goes anyway, so a restart elsewhere need not wait it out.
    process.on('exit', claim.releaseOnExit);
    claim.timer = setInterval(() => claim.touch(), timing.refreshMs);
    claim.timer.unref();
    return claim;
  }

  /**
   * Whether the lease is still this process's, read now: checked before
   * each write, so that a run whose lease was taken since the last touch
   * writes nothing more. Calls onLost when it is not.
   */
  holds(): boolean {
    if (!this.timer) return false;
    const lease = readLease(this.file);
    if (isHeldBy(lease, this.token)) return true;
    if (lease.kind === 'unreadable') return true; // a passing I/O error is not a lost lease: touch() decides
    // Moved aside by a taker that found it newer than the lease it judged, and is putting it back.
    if (lease.kind === 'absent' && movedAside(this.file, this.token)) return true;
    this.lose(lease.kind === 'absent' ? `the lease file ${this.file} was removed` : `another coordinator (${describe(lease.holder)}) took over the lease on --out ${this.out}`);
    return false;
  }

  /**
   * Gives the lease up, and removes the directories take() made that are
   * still empty: a run that wrote nothing leaves nothing. It never throws: it
   * runs as a run closes, often after the error that ended it (a read-only
   * --out), and a lease left behind is only taken over by the next run.
   */
  release(): void {
    heldHere.delete(this.token);
    process.off('exit', this.releaseOnExit);
    this.stopTouching();
    try {
      if (isHeldBy(readLease(this.file), this.token)) removeFile(this.file);
    } catch (e) {
      this.log(`warning: the lease ${this.file} cannot be removed (${(e as Error).message}); the next run on --out ${this.out} takes it over`);
    }
    removeEmpty(this.made);
  }

  private readonly releaseOnExit = () => this.release();

  /** Touches the lease; an I/O error is retried until the lease would look stale to others. */
  private touch(): void {
    if (!this.holds()) return;
    try {
      const now = new Date();
      fs.utimesSync(this.file, now, now);
      this.failingSince = null;
    } catch (e) {
      // Moved aside by a taker checking it, which puts it back: nothing to touch, and nothing failing.
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' && movedAside(this.file, this.token)) return;
      this.failingSince ??= performance.now();
      this.log(`cannot touch the lease ${this.file} (${(e as Error).message}); retrying`);
      if (performance.now() - this.failingSince >= this.timing.staleMs) this.lose(`the lease on --out ${this.out} went untouched for ${this.timing.staleMs / 1000} s (${(e as Error).message})`);
    }
  }

  private lose(why: string): void {
    if (!this.timer) return;
    this.stopTouching();
    this.onLost(why);
  }

  private stopTouching(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

/** Makes `dirs` (under --out); returns those it made, parents first. Throws OUT_UNUSABLE, leaving none of them made. */
function makeDirectories(out: string, dirs: string[]): string[] {
  const made: string[] = [];
  try {
    for (const dir of dirs) {
      if (!fs.existsSync(dir)) {
        const target = path.resolve(dir);
        const first = makeDirectory(target);
        const chain: string[] = [];
        for (let d = target; first !== undefined; d = path.dirname(d)) {
          chain.unshift(d);
          if (d === first || d === path.dirname(d)) break;
        }
        made.push(...chain);
      } else if (!fs.statSync(dir).isDirectory()) {
        throw new Error(`${dir} is not a directory`);
      }
      fs.accessSync(dir, fs.constants.W_OK);
    }
  } catch (e) {
    removeEmpty(made);
    throw unusable(out, e);
  }
  return made;
}

function unusable(out: string, e: unknown): GanfleetError {
  return new GanfleetError('OUT_UNUSABLE', `--out ${out} cannot hold the run's outputs: ${(e as Error).message}`);
}

/** Removes `dirs` (parents first), deepest first, where each is empty. */
function removeEmpty(dirs: string[]): void {
  for (const dir of [...dirs].reverse()) {
    try {
      fs.rmdirSync(dir);
    } catch {
      /* not empty, or gone: leave it */
    }
  }
}

/** This process's table of pids: the kernel boot and the pid namespace, so a pid means the same process. */
export function processTable(): string | null {
  const namespace = pidNamespace();
  if (namespace === null) return null; // not Linux: no pid is taken to be in this table
  try {
    return `${fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()} pid:[${namespace}]`;
  } catch {
    return null;
  }
}

/**
 * Creates the lease if there is none; false if there is one, or if --out
 * went (a holder's release removes an empty --out) before the lease could be
 * made in it: the caller makes it again.
 */
function createLease(file: string, me: Holder, out: string): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, 'wx', 0o644);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOENT') return false;
    throw unusable(out, e);
  }
  try {
    writeFully(fd, [Buffer.from(`${JSON.stringify(me)}\n`)]);
  } catch (e) {
    try {
      removeFile(file); // an empty lease would hold the directory for staleMs
    } catch {
      /* the write's own error is the one to report */
    }
    throw unusable(out, e);
  } finally {
    fs.closeSync(fd);
  }
  return true;
}

/** Tries before a lease that keeps changing under this taker (released, taken, moved) is given up on. */
const MAX_TRIES = 50;

/** Creates the lease, taking over a lapsed one; OUT_IN_USE where its holder may be alive. */
async function acquire(file: string, me: Holder, out: string, log: Logger, timing: LeaseTiming, abort?: AbortSignal): Promise<void> {
  let tookOver: string | null = null;
  for (let tries = 1; tries <= MAX_TRIES; tries++) {
    // Its directory may have gone with a holder's release (it removes an empty --out).
    try {
      makeDirectory(out);
    } catch (e) {
      throw unusable(out, e);
    }
    if (createLease(file, me, out)) {
      if (tookOver) log(tookOver);
      return;
    }
    const lease = readLease(file);
    if (lease.kind === 'absent') {
      await sleep(10); // released meanwhile
      continue;
    }
    if (lease.kind === 'unreadable') throw new GanfleetError('OUT_UNUSABLE', `--out ${out}: its lease ${file} cannot be read (${lease.error})`);
    const { holder } = lease;
    const byPid = holder && me.processTable !== null && holder.processTable === me.processTable ? judgeByPid(holder, lease.mtimeMs, timing.staleMs) : 'watch';
    const verdict = byPid === 'watch' ? await judgeByWatching(file, lease, out, log, timing, abort) : byPid;
    if ('heldBy' in verdict) {
      throw new GanfleetError('OUT_IN_USE', `--out ${out} is in use by another coordinator (${describe(verdict.heldBy)}; lease ${file}): stop that run, or choose another --out`);
    }
    const removed = removeLapsed(file, lease, me.token, out);
    if (removed === 'removed') tookOver = `took over the lease on --out ${out} from ${describe(holder)}: ${verdict.lapsed}`;
    if (removed === 'put back') await sleep(10);
  }
  throw new GanfleetError('OUT_UNUSABLE', `--out ${out}: its lease ${file} kept changing over ${MAX_TRIES} tries`);
}

/** Why the lease is a dead holder's, or the holder that may be alive. */
type Verdict = { lapsed: string } | { heldBy: Holder | null };

/**
 * A lease of this process table's, judged at once by its pid; 'watch' where
 * only watching it can tell (a live pid whose lease's date looks stale).
 */
function judgeByPid(holder: Holder, mtimeMs: number, staleMs: number): Verdict | 'watch' {
  // This process's pid with a token it does not hold: an earlier life (pid 1 again, in a restarted container).
  if (holder.pid === process.pid) return heldHere.has(holder.token) ? { heldBy: holder } : { lapsed: `pid ${holder.pid} was an earlier process` };
  if (!processAlive(holder.pid)) return { lapsed: `pid ${holder.pid} is gone` };
  // Alive and touched lately: its holder's. A date older than staleMs, or ahead of now, says nothing by itself: the
  // wall clock may have stepped since the last touch (NTP, a resumed VM), and a network volume's server dates a new
  // lease by its own clock. So such a lease is watched, as another machine's: untouched, its pid was used again.
  const age = Date.now() - mtimeMs;
  return age >= 0 && age < staleMs ? { heldBy: holder } : 'watch';
}

/**
 * Another process table's lease (or one naming no holder), judged by
 * watching it for staleMs. The holder that may be alive is the lease's, or
 * whoever took it meanwhile (where several watched it, the winner, not the
 * dead holder they judged).
 */
async function judgeByWatching(file: string, lease: Held, out: string, log: Logger, timing: LeaseTiming, abort?: AbortSignal): Promise<Verdict> {
  log(`--out ${out} has a lease of ${describe(lease.holder)}; watching it for ${seconds(timing.staleMs)} s to see whether its holder is alive`);
  await sleep(timing.staleMs, abort);
  if (abort?.aborted) throw new GanfleetError('OUT_NOT_TAKEN', `${String(abort.reason ?? 'stopped')} while watching the lease on --out ${out}: nothing was written`);
  const now = readLease(file);
  if (now.kind === 'absent') return { lapsed: 'it was released' };
  if (unchanged(now, lease)) return { lapsed: `untouched for ${seconds(timing.staleMs)} s` };
  return { heldBy: now.kind === 'held' ? now.holder : lease.holder };
}

/**
 * Removes the lapsed lease `judged`, moved aside first under a name of this
 * taker's: of several takers, one rename finds the lease. One that moved a
 * newer lease (another taker's, made meanwhile) puts it back.
 */
function removeLapsed(file: string, judged: Held, token: string, out: string): 'removed' | 'moved by another' | 'put back' {
  const aside = `${file}${LAPSED}${token}`;
  try {
    fs.renameSync(file, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'moved by another';
    throw new GanfleetError('OUT_UNUSABLE', `--out ${out}: the lapsed lease ${file} cannot be moved aside (${(e as Error).message})`);
  }
  if (!unchanged(readLease(aside), judged)) {
    putBack(aside, file);
    return 'put back';
  }
  removeFile(aside);
  return 'removed';
}

/** Where a taker moves a lapsed lease while it checks that it is the one it judged. */
const LAPSED = '.lapsed-';

/**
 * Puts back a lease moved aside that turned out newer than the one judged
 * (another taker's). By a hard link, which fails rather than replace a lease
 * made meanwhile; where the file system has none (SMB, gcsfuse), by a rename
 * while the name is still free.
 */
export function putBack(aside: string, file: string): void {
  try {
    fs.linkSync(aside, file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST' && !fs.existsSync(file)) {
      try {
        fs.renameSync(aside, file);
        return;
      } catch {
        /* taken meanwhile: the moved lease's holder finds itself lost */
      }
    }
  }
  removeFile(aside);
}

/** Whether a taker has this token's lease moved aside right now. */
function movedAside(file: string, token: string): boolean {
  const prefix = `${path.basename(file)}${LAPSED}`;
  try {
    return fs.readdirSync(path.dirname(file)).some((name) => name.startsWith(prefix) && isHeldBy(readLease(path.join(path.dirname(file), name)), token));
  } catch {
    return false;
  }
}

interface Held {
  kind: 'held';
  /** Null where the file does not hold a lease ganfleet wrote (cut short, or something else). */
  holder: Holder | null;
  mtimeMs: number;
}

type Lease = Held | { kind: 'absent' } | { kind: 'unreadable'; error: string };

function readLease(file: string): Lease {
  let text: string;
  let mtimeMs: number;
  try {
    // lstat: a link in the lease's place (dangling or not) is no lease, and not an absent one either.
    const st = fs.lstatSync(file);
    if (!st.isFile()) return { kind: 'unreadable', error: `${file} is not a regular file` };
    mtimeMs = st.mtimeMs;
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? { kind: 'absent' } : { kind: 'unreadable', error: (e as Error).message };
  }
  try {
    const h = JSON.parse(text) as Holder;
    const ok = Number.isSafeInteger(h.pid) && typeof h.hostname === 'string' && typeof h.token === 'string';
    return { kind: 'held', holder: ok ? h : null, mtimeMs };
  } catch {
    return { kind: 'held', holder: null, mtimeMs };
  }
}

function isHeldBy(lease: Lease, token: string): boolean {
  return lease.kind === 'held' && lease.holder?.token === token;
}

/** Whether `now` is still the lease `judged`: same holder, untouched since. */
function unchanged(now: Lease, judged: Held): boolean {
  return now.kind === 'held' && now.holder?.token === judged.holder?.token && now.mtimeMs === judged.mtimeMs;
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(1);
}

function describe(holder: Holder | null): string {
  return holder ? `pid ${holder.pid} on ${holder.hostname}, since ${holder.since}` : 'a holder that left no readable lease';
}
