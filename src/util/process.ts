import fs from 'node:fs';
import os from 'node:os';
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

/**
 * Bytes of memory that this process and its children could still take: the
 * kernel's estimate of what it can give without swapping (MemAvailable, which
 * os.freemem() reads on Linux), or less where a memory cgroup this process is
 * in, or one above it, leaves less below its limit (a container's, a systemd
 * unit's MemoryMax), its inactive page cache counted as free, as MemAvailable
 * counts it.
 */
export function availableMemory(): number {
  let bytes = os.freemem();
  const { v2, v1 } = cgroupLevels('memory');
  // Each with the key of its memory.stat's inactive page cache: counted in its use, yet the kernel reclaims it before
  // it kills anything, and a long-lived container's cache grows to its limit. v2's limit "max" is none; v1's no limit
  // is a huge number.
  const levels: [string, string, string, string][] = [
    ...v2.map((d): [string, string, string, string] => [d, 'memory.max', 'memory.current', 'inactive_file']),
    ...v1.map((d): [string, string, string, string] => [d, 'memory.limit_in_bytes', 'memory.usage_in_bytes', 'total_inactive_file']),
  ];
  for (const [dir, max, current, inactive] of levels) {
    try {
      const limit = fs.readFileSync(`${dir}/${max}`, 'utf8').trim();
      if (limit === 'max') continue;
      const used = Number(fs.readFileSync(`${dir}/${current}`, 'utf8').trim()) - inactiveFileBytes(`${dir}/memory.stat`, inactive);
      bytes = Math.min(bytes, Math.max(0, Number(limit) - used));
    } catch {
      // Not this hierarchy, or a level not visible here.
    }
  }
  return bytes;
}

/**
 * CPU cores that this process and its children can keep busy: the affinity
 * mask's (os.availableParallelism), or fewer where a cgroup this process is
 * in, or one above it, has a CPU quota (a container's --cpus, a Pod's CPU
 * limit), a fraction of a core counted down, at least 1. Node 22 and later
 * count the quota themselves (libuv 1.49); Node 20's libuv does not, and
 * gave a 2-CPU container on a 16-core host 16.
 */
export function availableCores(): number {
  let cores = os.availableParallelism();
  const { v2, v1 } = cgroupLevels('cpu');
  // v2's cpu.max: "quota period", the quota "max" where there is none; v1's quota is -1 where there is none.
  const cpuMax = (dir: string) => fs.readFileSync(`${dir}/cpu.max`, 'utf8').trim().split(/\s+/);
  const cfs = (dir: string) => ['cpu.cfs_quota_us', 'cpu.cfs_period_us'].map((f) => fs.readFileSync(`${dir}/${f}`, 'utf8').trim());
  for (const readQuota of [...v2.map((d) => () => cpuMax(d)), ...v1.map((d) => () => cfs(d))]) {
    try {
      const [quota, period] = readQuota().map(Number);
      if (quota > 0 && period > 0) cores = Math.min(cores, Math.max(1, Math.floor(quota / period)));
    } catch {
      // Not this hierarchy, or a level not visible here.
    }
  }
  return cores;
}

/**
 * The directories of this process's cgroup and each one above it: in the v2
 * hierarchy, and in the v1 hierarchy of `controller`; none where
 * /proc/self/cgroup cannot be read (not Linux).
 */
function cgroupLevels(controller: 'memory' | 'cpu'): { v2: string[]; v1: string[] } {
  let cgroups: string;
  try {
    cgroups = fs.readFileSync('/proc/self/cgroup', 'utf8');
  } catch {
    return { v2: [], v1: [] };
  }
  // v2: "0::/path"; v1: "N:…controller…:/path", the controller one of a comma-separated list (cpu, not cpuacct or cpuset).
  const v2 = /^0::(\/.*)$/m.exec(cgroups)?.[1];
  const v1 = new RegExp(`^\\d+:(?:[^:]*,)?${controller}(?:,[^:]*)?:(\\/.*)$`, 'm').exec(cgroups)?.[1];
  return { v2: v2 === undefined ? [] : cgroupDirs('/sys/fs/cgroup', v2), v1: v1 === undefined ? [] : cgroupDirs(`/sys/fs/cgroup/${controller}`, v1) };
}

/** The bytes of inactive page cache that memory.stat `file` gives for `key`; 0 where it cannot be read. */
function inactiveFileBytes(file: string, key: string): number {
  try {
    return Number(new RegExp(`^${key} (\\d+)$`, 'm').exec(fs.readFileSync(file, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/**
 * The directories of cgroup `cgroup` and each one above it under `mount`. In a
 * container with a cgroup namespace, `mount` itself is its own cgroup (the path
 * reads "/"); without one, the path is the host's, absent under `mount`.
 */
function cgroupDirs(mount: string, cgroup: string): string[] {
  const dirs = [mount];
  const parts = cgroup.split('/').filter(Boolean);
  for (let i = 1; i <= parts.length; i++) dirs.push(`${mount}/${parts.slice(0, i).join('/')}`);
  return dirs;
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
