import fs from 'node:fs';
import { Worker } from 'node:worker_threads';

/**
 * Whether a process of this pid runs: signal 0 checks without sending
 * anything. A zombie, dead but not yet reaped by its parent (a supervisor
 * that restarts before it waits), takes signal 0 too, so its state is read.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    // EPERM: there, under another user, unless /proc shows it a zombie. A /proc that hides other users'
    // processes (hidepid) shows nothing: alive, then.
    return (e as NodeJS.ErrnoException).code === 'EPERM' && !isZombie(pid, false);
  }
  return !isZombie(pid, true);
}

/**
 * Whether /proc says `pid` has exited (Z, or X while it goes). A pid with no
 * entry is gone where `missingIsGone` (signal 0 just reached it); false
 * where there is no /proc at all.
 */
function isZombie(pid: number, missingIsGone: boolean): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // "pid (comm) S …": the command may hold spaces and parentheses, the state follows the last ")".
    return /^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch (e) {
    return missingIsGone && (e as NodeJS.ErrnoException).code === 'ENOENT' && fs.existsSync('/proc/self/stat');
  }
}

/** This process's soft limit `name`, as /proc/self/limits names it; null where it is unlimited or cannot be read (not Linux). */
export function softLimit(name: 'Max open files' | 'Max address space'): number | null {
  try {
    const line = new RegExp(`^${name}\\s+(\\d+|unlimited)`, 'm').exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    return line && line[1] !== 'unlimited' ? Number(line[1]) : null;
  } catch {
    return null;
  }
}

/** The inode number of this process's pid namespace (Linux), or null: a pid names one process only within its namespace. */
export function pidNamespace(): string | null {
  try {
    return /^pid:\[(\d+)\]$/.exec(fs.readlinkSync('/proc/self/ns/pid'))?.[1] ?? null;
  } catch {
    return null;
  }
}

/**
 * SIGKILLs this process a few seconds after its parent is gone, from a
 * thread of its own: a main thread stuck in a loop or a native call never
 * hears its IPC channel close, and would run on as an orphan (a `local`
 * worker whose parent was SIGKILLed). The seconds leave the main thread
 * time to exit by itself, saying why.
 */
export function dieWithParent(): void {
  const source = `const { workerData: parent } = require('node:worker_threads');
let gone = 0;
setInterval(() => {
  gone = process.ppid === parent ? 0 : gone + 1;
  if (gone >= 3) process.kill(process.pid, 'SIGKILL');
}, 1000);`;
  new Worker(source, { eval: true, workerData: process.ppid }).unref();
}
