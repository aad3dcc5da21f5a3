import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GanfleetError } from '../util/errors';
import { Logger } from '../util/log';
import { processAlive } from '../util/signals';
import { runLayout } from './config';

/** The file in --out that names the coordinator writing there. */
export const LEASE_FILE = '.ganfleet-lease';

export interface LeaseTiming {
  /** How often the holder touches the lease. */
  refreshMs: number;
  /** A lease from another host untouched this long is a dead holder's. */
  staleMs: number;
}

export const LEASE_TIMING: LeaseTiming = { refreshMs: 5_000, staleMs: 20_000 };

/** Tokens of the leases this process holds: a lease with this pid and another token is an earlier life's. */
const heldHere = new Set<string>();

interface Holder {
  pid: number;
  hostname: string;
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
 * gone is taken over: at once where the holder ran on this host, and from
 * another host (a pod rescheduled elsewhere) once the lease has gone
 * `staleMs` without a touch. A holder that finds its lease taken calls
 * `onLost`: two writers must not go on.
 */
export class OutputClaim {
  private timer: NodeJS.Timeout | null = null;

  private constructor(
    private readonly file: string,
    private readonly token: string,
    private readonly made: string[],
  ) {}

  static async take(out: string, log: Logger, onLost: (why: string) => void, timing: LeaseTiming = LEASE_TIMING): Promise<OutputClaim> {
    const made = makeRunDirectories(out);
    const file = path.join(out, LEASE_FILE);
    const me: Holder = { pid: process.pid, hostname: os.hostname(), token: crypto.randomUUID(), since: new Date().toISOString() };
    try {
      await acquire(file, me, out, log, timing);
    } catch (e) {
      removeEmpty(made);
      throw e;
    }
    const claim = new OutputClaim(file, me.token, made);
    heldHere.add(me.token);
    // process.exit() (local's second Ctrl-C) skips close(): the lease goes anyway, so a restart elsewhere need not wait it out.
    process.on('exit', claim.releaseOnExit);
    claim.timer = setInterval(() => {
      const now = new Date();
      const held = readLease(file);
      if (held?.holder?.token !== me.token) {
        claim.stopRefreshing();
        onLost(held ? `another coordinator (${describe(held.holder)}) took over the lease on --out ${out}` : `the lease file ${file} was removed`);
        return;
      }
      fs.utimesSync(file, now, now);
    }, timing.refreshMs);
    claim.timer.unref();
    return claim;
  }

  /** Gives the lease up, and removes the directories take() made that are still empty: a run that wrote nothing leaves nothing. */
  release(): void {
    heldHere.delete(this.token);
    process.off('exit', this.releaseOnExit);
    this.stopRefreshing();
    if (readLease(this.file)?.holder?.token === this.token) fs.rmSync(this.file, { force: true });
    removeEmpty(this.made);
  }

  private readonly releaseOnExit = () => this.release();

  private stopRefreshing(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

/** Makes --out and its run directories; returns those it made, parents first. Throws OUT_UNUSABLE, leaving none made. */
function makeRunDirectories(out: string): string[] {
  const { checkpoints, generator, samples } = runLayout(out);
  const made: string[] = [];
  try {
    for (const dir of [out, checkpoints, generator, samples]) {
      if (!fs.existsSync(dir)) {
        const target = path.resolve(dir);
        const first = fs.mkdirSync(target, { recursive: true });
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
    throw new GanfleetError('OUT_UNUSABLE', `--out ${out} cannot hold the run's outputs: ${(e as Error).message}`);
  }
  return made;
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

async function acquire(file: string, me: Holder, out: string, log: Logger, timing: LeaseTiming): Promise<void> {
  const text = `${JSON.stringify(me)}\n`;
  for (;;) {
    try {
      fs.writeFileSync(file, text, { flag: 'wx', mode: 0o644 });
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new GanfleetError('OUT_UNUSABLE', `--out ${out} cannot hold the run's outputs: ${(e as Error).message}`);
    }
    const held = readLease(file);
    if (!held) continue; // released meanwhile
    const why = await lapsedBecause(file, held, out, log, timing);
    if (why === null) {
      throw new GanfleetError('OUT_IN_USE', `--out ${out} is in use by another coordinator (${describe(held.holder)}; lease ${file}, touched ${ago(held.mtimeMs)} ago): stop that run, or choose another --out`);
    }
    // Replaced whole, so no reader meets half a lease; a taker that lost a race to another finds the other's token.
    const tmp = `${file}.${me.token}`;
    fs.writeFileSync(tmp, text, { mode: 0o644 });
    fs.renameSync(tmp, file);
    if (readLease(file)?.holder?.token !== me.token) continue;
    log(`took over the lease on --out ${out} from ${describe(held.holder)}: ${why}`);
    return;
  }
}

/** Why the lease `held` is a dead holder's, or null while its holder may be alive. Waits up to `staleMs` for a lease from another host. */
async function lapsedBecause(file: string, held: Lease, out: string, log: Logger, timing: LeaseTiming): Promise<string | null> {
  const { holder, mtimeMs } = held;
  if (holder && holder.hostname === os.hostname()) {
    // This process's pid with a token it does not hold: an earlier life of this container (pid 1 again).
    if (holder.pid === process.pid) return heldHere.has(holder.token) ? null : `pid ${holder.pid} was an earlier process`;
    return processAlive(holder.pid) ? null : `pid ${holder.pid} is gone`;
  }
  const age = Date.now() - mtimeMs;
  if (age < timing.staleMs) {
    const wait = timing.staleMs - age;
    log(`--out ${out} has a lease of ${describe(holder)}, touched ${ago(mtimeMs)} ago; waiting ${(wait / 1000).toFixed(1)} s to see whether its holder is alive`);
    await new Promise((r) => setTimeout(r, wait));
    const now = readLease(file);
    if (!now) return 'it was released';
    if (now.holder?.token !== holder?.token || now.mtimeMs !== mtimeMs) return null;
  }
  return `untouched for ${ago(mtimeMs)}`;
}

interface Lease {
  /** Null where the file does not hold a lease ganfleet wrote (cut short, or something else). */
  holder: Holder | null;
  mtimeMs: number;
}

function readLease(file: string): Lease | null {
  let text: string;
  let mtimeMs: number;
  try {
    mtimeMs = fs.statSync(file).mtimeMs;
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  try {
    const h = JSON.parse(text) as Holder;
    const ok = Number.isSafeInteger(h.pid) && typeof h.hostname === 'string' && typeof h.token === 'string';
    return { holder: ok ? h : null, mtimeMs };
  } catch {
    return { holder: null, mtimeMs };
  }
}

function describe(holder: Holder | null): string {
  return holder ? `pid ${holder.pid} on ${holder.hostname}, since ${holder.since}` : 'a holder that left no readable lease';
}

function ago(mtimeMs: number): string {
  return `${Math.max(0, (Date.now() - mtimeMs) / 1000).toFixed(1)} s`;
}
