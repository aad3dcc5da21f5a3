import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LEASE_FILE, OutputClaim, processTable, putBack } from '../src/coordinator/output-claim';
import { GanfleetError } from '../src/util/errors';
import { makeDirectory, removeTornWrites, writeFileAtomic } from '../src/util/write';
import { tempDir } from './harness';

const FAST = { refreshMs: 50, staleMs: 400 };

function rejectsWith(code: string, pattern: RegExp) {
  return (e: unknown) => e instanceof GanfleetError && e.code === code && pattern.test(e.message);
}

interface Planted {
  pid: number;
  hostname: string;
  processTable: string | null;
}

/** A process of this machine's, and one of another: the same hostname does not make the same machine. */
const HERE = (pid: number): Planted => ({ pid, hostname: os.hostname(), processTable: processTable() });
const ELSEWHERE: Planted = { pid: 1, hostname: 'another-host', processTable: 'another-boot pid:[4026531836]' };

/** A lease as another coordinator writes it, last touched `ageMs` ago by this machine's clock. */
function plantLease(out: string, holder: Planted, ageMs = 0): string {
  fs.mkdirSync(out, { recursive: true });
  const file = path.join(out, LEASE_FILE);
  fs.writeFileSync(file, JSON.stringify({ token: 'theirs', since: '2026-11-29T00:00:00.000Z', ...holder }) + '\n');
  const then = new Date(Date.now() - ageMs);
  fs.utimesSync(file, then, then);
  return file;
}

const noLost = (why: string) => assert.fail(`lost the lease: ${why}`);

/** A pid that has exited but is not reaped: its parent became `sleep`, which never waits. */
async function unreapedChild(): Promise<{ pid: number; parent: ChildProcess }> {
  // The child outlives the exec, so bash cannot reap it first.
  const parent = spawn('bash', ['-c', 'sleep 0.3 & echo $!; exec sleep 60'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(parent.stdout!, 'data')) as [Buffer];
  const pid = Number(line.toString().trim());
  for (let i = 0; i < 500 && !/\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'latin1')); i++) await new Promise((r) => setTimeout(r, 10));
  assert.match(fs.readFileSync(`/proc/${pid}/stat`, 'latin1'), /\) Z/, 'the child is a zombie');
  return { pid, parent };
}

async function takeLogged(out: string): Promise<{ lines: string[]; ms: number }> {
  const lines: string[] = [];
  const t0 = Date.now();
  (await OutputClaim.take(out, (l) => lines.push(l), noLost, FAST)).release();
  return { lines, ms: Date.now() - t0 };
}

test('a claim makes the run directories and a lease naming this process; release takes the lease and the directories still empty', async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'runs', 'a');
  const claim = await OutputClaim.take(out, () => {}, noLost, FAST);
  for (const d of ['checkpoints', 'generator', 'samples']) assert.ok(fs.statSync(path.join(out, d)).isDirectory(), d);
  const lease = JSON.parse(fs.readFileSync(path.join(out, LEASE_FILE), 'utf8'));
  assert.equal(lease.pid, process.pid);
  assert.equal(lease.hostname, os.hostname());
  assert.equal(lease.processTable, processTable());
  assert.ok(claim.holds());
  fs.writeFileSync(path.join(out, 'checkpoints', 'ckpt-000000001.bin'), 'x');
  claim.release();
  assert.ok(!fs.existsSync(path.join(out, LEASE_FILE)));
  assert.ok(!claim.holds());
  assert.deepEqual(fs.readdirSync(out), ['checkpoints'], 'what holds a file stays; what is empty and was made goes');
  // Nothing written: nothing left, the parents it made included.
  (await OutputClaim.take(path.join(root, 'b', 'c'), () => {}, noLost, FAST)).release();
  assert.ok(!fs.existsSync(path.join(root, 'b')));
  fs.rmSync(root, { recursive: true, force: true });
});

test('a coordinator that exits without releasing its claim (process.exit after an error) takes its lease with it', () => {
  const root = tempDir('claim');
  const lease = path.join(root, 'run', LEASE_FILE);
  const script = `const { OutputClaim } = require(${JSON.stringify(require.resolve('../src/coordinator/output-claim'))});
    OutputClaim.take(${JSON.stringify(path.dirname(lease))}, () => {}, () => {}).then(() => {
      process.stdout.write(String(require('fs').existsSync(${JSON.stringify(lease)})));
      process.exit(4);
    });`;
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  assert.equal(child.status, 4, child.stderr);
  assert.equal(child.stdout, 'true', 'the claim was taken');
  assert.ok(!fs.existsSync(lease), 'the lease went with the process');
  fs.rmSync(root, { recursive: true, force: true });
});

test('a lease that cannot be written (a full disk) is not left empty, to hold --out for the stale time: nothing is left', async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'run');
  const write = fs.writeSync;
  fs.writeSync = (() => {
    throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  }) as typeof fs.writeSync;
  try {
    await assert.rejects(OutputClaim.take(out, () => {}, noLost, FAST), rejectsWith('OUT_UNUSABLE', /ENOSPC/));
  } finally {
    fs.writeSync = write;
  }
  assert.ok(!fs.existsSync(out), `${out} is left with ${fs.existsSync(out) ? fs.readdirSync(out).join(', ') : ''}`);
  // The next coordinator takes --out at once.
  (await OutputClaim.take(out, () => {}, noLost, FAST)).release();
  fs.rmSync(root, { recursive: true, force: true });
});

test('an --out that cannot hold the outputs is refused with OUT_UNUSABLE, and leaves nothing made', async () => {
  const root = tempDir('claim');
  const file = path.join(root, 'file');
  fs.writeFileSync(file, 'x');
  await assert.rejects(OutputClaim.take(path.join(file, 'run'), () => {}, noLost, FAST), rejectsWith('OUT_UNUSABLE', /ENOTDIR/));
  await assert.rejects(OutputClaim.take(file, () => {}, noLost, FAST), rejectsWith('OUT_UNUSABLE', /is not a directory/));
  const out = path.join(root, 'run');
  fs.mkdirSync(out);
  fs.writeFileSync(path.join(out, 'samples'), 'x');
  await assert.rejects(OutputClaim.take(out, () => {}, noLost, FAST), rejectsWith('OUT_UNUSABLE', /samples is not a directory/));
  assert.deepEqual(fs.readdirSync(out), ['samples'], 'the directories and the lease made before the failure are gone again');
  fs.rmSync(root, { recursive: true, force: true });
  // mkdir in /proc answers ENOENT though /proc is there: Node 20's recursive mkdir retried that for ever.
  if (process.platform === 'linux') await assert.rejects(OutputClaim.take('/proc/ganfleet-run/run', () => {}, noLost, FAST), rejectsWith('OUT_UNUSABLE', /ENOENT: no such file or directory, mkdir '\/proc\/ganfleet-run'/));
});

test('an --out under a link to nothing (a volume not mounted) is OUT_UNUSABLE naming the link, not ENOENT of a name ls shows', async () => {
  const root = tempDir('claim');
  const runs = path.join(root, 'runs');
  fs.symlinkSync(path.join(root, 'unmounted'), runs);
  for (const out of [runs, path.join(runs, 'a')]) {
    await assert.rejects(OutputClaim.take(out, () => {}, noLost, FAST), rejectsWith('OUT_UNUSABLE', new RegExp(`: ${runs} is a link to ${path.join(root, 'unmounted')}, which does not exist$`)));
  }
  assert.deepEqual(fs.readdirSync(root), ['runs']);
  fs.rmSync(root, { recursive: true, force: true });
});

test('in this process table: a live holder is refused at once; a gone one or an earlier life of this pid is taken over at once, a live pid whose lease is dated stale once watched untouched', async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'run');
  const first = await OutputClaim.take(out, () => {}, noLost, FAST);
  await assert.rejects(OutputClaim.take(out, () => {}, noLost, FAST), rejectsWith('OUT_IN_USE', new RegExp(`in use by another coordinator \\(pid ${process.pid} on ${os.hostname()}`)));
  first.release();
  const gone = spawnSync(process.execPath, ['-e', '']).pid!;
  plantLease(out, HERE(gone));
  let taken = await takeLogged(out);
  assert.match(taken.lines.join('\n'), new RegExp(`took over the lease on --out .* from pid ${gone} on .*: pid ${gone} is gone`));
  assert.doesNotMatch(taken.lines.join('\n'), /watching it/, 'taken at once, not watched');
  // Dead but not reaped (a supervisor that restarts before it waits): signal 0 still reaches a zombie.
  const zombie = await unreapedChild();
  plantLease(out, HERE(zombie.pid));
  taken = await takeLogged(out);
  zombie.parent.kill();
  assert.match(taken.lines.join('\n'), new RegExp(`took over the lease on --out .* from pid ${zombie.pid} on .*: pid ${zombie.pid} is gone`));
  // This pid, another token: an earlier process of this container (a restarted one is pid 1 again).
  plantLease(out, HERE(process.pid));
  taken = await takeLogged(out);
  assert.match(taken.lines.join('\n'), new RegExp(`took over .*: pid ${process.pid} was an earlier process`));
  // A live pid whose lease's date is old: watched (the clock may have stepped), and untouched, taken: that pid is another process now.
  plantLease(out, HERE(process.ppid), 60_000);
  taken = await takeLogged(out);
  assert.match(taken.lines.join('\n'), new RegExp(`has a lease of pid ${process.ppid} on .*watching it for 0\\.4 s[\\s\\S]*took over .*: untouched for 0\\.4 s`));
  plantLease(out, HERE(process.ppid));
  await assert.rejects(OutputClaim.take(out, () => {}, noLost, FAST), rejectsWith('OUT_IN_USE', new RegExp(`pid ${process.ppid}`)));
  fs.rmSync(root, { recursive: true, force: true });
});

test("in this process table, a lease's date is not trusted across a step of the wall clock: a live holder's lease dated an hour ago is watched and refused, a dead one's dated an hour ahead is watched and taken", async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'run');
  // The clock stepped an hour forward since the live holder's last touch: it touches again within refreshMs.
  const file = plantLease(out, HERE(process.ppid), 3_600_000);
  const toucher = setInterval(() => fs.utimesSync(file, new Date(), new Date()), FAST.refreshMs);
  try {
    await assert.rejects(OutputClaim.take(out, () => {}, noLost, FAST), rejectsWith('OUT_IN_USE', new RegExp(`pid ${process.ppid}`)));
  } finally {
    clearInterval(toucher);
  }
  // The clock stepped an hour back since a dead holder's last touch (its pid used again): not refused for the hour.
  plantLease(out, HERE(process.ppid), -3_600_000);
  const taken = await takeLogged(out);
  assert.ok(taken.ms < 60_000, `${taken.ms} ms`);
  assert.match(taken.lines.join('\n'), new RegExp(`watching it for 0\\.4 s[\\s\\S]*took over .* from pid ${process.ppid} .*: untouched for 0\\.4 s`));
  fs.rmSync(root, { recursive: true, force: true });
});

test("another machine's lease is watched for the stale time whatever its date says: taken if untouched, refused if touched", async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'run');
  // Dated a minute ago, or an hour ahead (clocks differ between machines), or by this host's name from another
  // process table (a container on the host's network): each is watched, neither taken at once nor waited on for an hour.
  for (const [holder, age] of [[ELSEWHERE, 60_000], [ELSEWHERE, -3_600_000], [{ ...HERE(1), processTable: 'another-boot pid:[1]' }, 60_000]] as const) {
    plantLease(out, holder, age);
    const taken = await takeLogged(out);
    // Watched for the stale time (a lower bound no load can break), not for the hour its date would say.
    assert.ok(taken.ms >= FAST.staleMs - 20, `${taken.ms} ms`);
    assert.match(taken.lines.join('\n'), /has a lease of pid 1 on .*watching it for 0\.4 s to see whether its holder is alive[\s\S]*took over .*: untouched for 0\.4 s/);
  }
  const file = plantLease(out, ELSEWHERE);
  const toucher = setInterval(() => fs.utimesSync(file, new Date(), new Date()), FAST.refreshMs);
  try {
    await assert.rejects(OutputClaim.take(out, () => {}, noLost, FAST), rejectsWith('OUT_IN_USE', /pid 1 on another-host/));
  } finally {
    clearInterval(toucher);
  }
  fs.rmSync(root, { recursive: true, force: true });
});

test('a lapsed lease that its rightful holder rewrites just as it is moved aside is put back, not removed: the taker is refused', async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'run');
  const gone = spawnSync(process.execPath, ['-e', '']).pid!;
  // Dated a second back: the live lease, written in the same millisecond as this one, would otherwise look unchanged.
  const file = plantLease(out, HERE(gone), 1000);
  const rename = fs.renameSync;
  let raced = false;
  fs.renameSync = ((from: fs.PathLike, to: fs.PathLike) => {
    if (!raced && from === file) {
      raced = true;
      // Between the taker's judging and its rename, a live coordinator writes the lease anew.
      plantLease(out, HERE(process.ppid));
    }
    rename(from, to);
  }) as typeof fs.renameSync;
  try {
    // A stale time a loaded machine cannot outlast between the put-back and the next look, which judges the live lease by its date.
    await assert.rejects(OutputClaim.take(out, () => {}, noLost, { ...FAST, staleMs: 5_000 }), rejectsWith('OUT_IN_USE', new RegExp(`pid ${process.ppid}`)));
  } finally {
    fs.renameSync = rename;
  }
  assert.ok(raced);
  assert.equal(JSON.parse(fs.readFileSync(file, 'utf8')).pid, process.ppid, 'the live lease is in place');
  assert.deepEqual(fs.readdirSync(out), [LEASE_FILE], 'nothing moved aside is left');
  fs.rmSync(root, { recursive: true, force: true });
});

test('of two coordinators taking a stale lease at once, one holds it and the other is refused', async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'run');
  plantLease(out, ELSEWHERE);
  const results = await Promise.allSettled([0, 1].map(() => OutputClaim.take(out, () => {}, noLost, FAST)));
  const held = results.filter((r) => r.status === 'fulfilled');
  assert.equal(held.length, 1, JSON.stringify(results.map((r) => r.status)));
  const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
  assert.ok(rejectsWith('OUT_IN_USE', /in use by another coordinator/)(refused.reason), String(refused.reason));
  const claim = (held[0] as PromiseFulfilledResult<OutputClaim>).value;
  assert.ok(claim.holds());
  claim.release();
  // One that began watching later finds the lease taken when its watch ends: it names the live winner, not the
  // dead holder both judged (which would send its user after a process that is gone).
  plantLease(out, ELSEWHERE);
  const first = OutputClaim.take(out, () => {}, noLost, FAST);
  await new Promise((r) => setTimeout(r, FAST.staleMs / 2));
  const later = OutputClaim.take(out, () => {}, noLost, FAST);
  const winner = await first;
  await assert.rejects(later, (e: unknown) => rejectsWith('OUT_IN_USE', new RegExp(`in use by another coordinator \\(pid ${process.pid} on ${os.hostname()}`))(e) || assert.fail(String(e)));
  winner.release();
  fs.rmSync(root, { recursive: true, force: true });
});

test('a holder whose lease another coordinator took is told so, writes are refused, and its release leaves the new lease alone', async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'run');
  let lost: string | null = null;
  const claim = await OutputClaim.take(out, () => {}, (why) => (lost = why), FAST);
  const file = plantLease(out, ELSEWHERE);
  assert.equal(claim.holds(), false, 'read at once, before the next touch');
  assert.match(String(lost), /another coordinator \(pid 1 on another-host, .*\) took over the lease on --out/);
  claim.release();
  assert.equal(JSON.parse(fs.readFileSync(file, 'utf8')).token, 'theirs');
  fs.rmSync(root, { recursive: true, force: true });
});

test('a lease that cannot be read for a moment (an I/O error) is still held: writes go on, and nothing is lost', async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'run');
  let lost: string | null = null;
  const claim = await OutputClaim.take(out, () => {}, (why) => (lost = why), FAST);
  const file = path.join(out, LEASE_FILE);
  const read = fs.readFileSync;
  fs.readFileSync = ((f: fs.PathOrFileDescriptor, ...rest: unknown[]) => {
    if (f === file) throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
    return (read as (...a: unknown[]) => unknown)(f, ...rest);
  }) as typeof fs.readFileSync;
  try {
    assert.equal(claim.holds(), true, 'a passing read error is no lost lease');
  } finally {
    fs.readFileSync = read;
  }
  assert.equal(lost, null);
  assert.equal(claim.holds(), true);
  claim.release();
  assert.ok(!fs.existsSync(file));
  fs.rmSync(root, { recursive: true, force: true });
});

test('a lease that cannot be touched is retried, and given up only once others would find it stale', async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'run');
  let lost: string | null = null;
  const lines: string[] = [];
  const claim = await OutputClaim.take(out, (l) => lines.push(l), (why) => (lost = why), FAST);
  const utimes = fs.utimesSync;
  fs.utimesSync = () => {
    throw Object.assign(new Error('EIO: i/o error, utime'), { code: 'EIO' });
  };
  try {
    // The first failed touch is retried, not taken for a lost lease.
    for (let i = 0; i < 100 && !lines.some((l) => /cannot touch the lease/.test(l)); i++) await new Promise((r) => setTimeout(r, 5));
    assert.match(lines.join('\n'), /cannot touch the lease .* \(EIO: i\/o error, utime\); retrying/);
    assert.equal(lost, null, 'a passing error is not a lost lease');
    for (let i = 0; i < 100 && lost === null; i++) await new Promise((r) => setTimeout(r, 20));
    assert.match(String(lost), /went untouched for 0\.4 s \(EIO/);
  } finally {
    fs.utimesSync = utimes;
  }
  claim.release();
  fs.rmSync(root, { recursive: true, force: true });
});

test('a lease that cannot be removed (a read-only --out) is left with a warning: release does not throw over the error that ended the run', async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'run');
  const lines: string[] = [];
  const claim = await OutputClaim.take(out, (l) => lines.push(l), () => {}, FAST);
  const unlink = fs.unlinkSync;
  fs.unlinkSync = () => {
    throw Object.assign(new Error(`EROFS: read-only file system, unlink '${path.join(out, LEASE_FILE)}'`), { code: 'EROFS' });
  };
  try {
    assert.doesNotThrow(() => claim.release());
  } finally {
    fs.unlinkSync = unlink;
  }
  assert.match(lines.join('\n'), /warning: the lease .* cannot be removed \(EROFS: read-only file system, unlink .*\); the next run on --out .* takes it over/);
  assert.ok(fs.existsSync(path.join(out, LEASE_FILE)));
  fs.rmSync(root, { recursive: true, force: true });
});

test('a wait on another machine\'s lease ends at a signal (abort): OUT_NOT_TAKEN, and that lease is left as it was', async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'run');
  const file = plantLease(out, ELSEWHERE);
  const aborting = new AbortController();
  setTimeout(() => aborting.abort('SIGINT received'), 100);
  // Without the abort the 30 s watch would end in a takeover, not this rejection.
  await assert.rejects(OutputClaim.take(out, () => {}, noLost, { refreshMs: 50, staleMs: 30_000 }, aborting.signal), rejectsWith('OUT_NOT_TAKEN', /^SIGINT received while watching the lease on --out .*: nothing was written$/));
  assert.equal(JSON.parse(fs.readFileSync(file, 'utf8')).token, 'theirs');
  fs.rmSync(root, { recursive: true, force: true });
});

test('an --out whose path leaves no room for the names a run writes in it is OUT_UNUSABLE at start, not ENAMETOOLONG at its first checkpoint', async () => {
  const root = tempDir('claim');
  const deep = path.join(root, ...Array(39).fill('d'.repeat(100)));
  const out = path.join(deep, 'r'.repeat(4060 - Buffer.byteLength(deep) - 1));
  assert.equal(Buffer.byteLength(out), 4060);
  await assert.rejects(OutputClaim.take(out, () => {}, noLost, FAST), rejectsWith('OUT_UNUSABLE', /its path is 4060 bytes, and with the names a run writes in it \(up to 4120 bytes\) it must be shorter than a path's 4096$/));
  assert.deepEqual(fs.readdirSync(root), [], 'nothing made');
  fs.rmSync(root, { recursive: true, force: true });
});

test('a lapsed lease that cannot be moved aside, or a link in the lease\'s place, is OUT_UNUSABLE at once, not a loop', async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'run');
  plantLease(out, HERE(spawnSync(process.execPath, ['-e', '']).pid!));
  const rename = fs.renameSync;
  fs.renameSync = () => {
    throw Object.assign(new Error('EPERM: operation not permitted, rename'), { code: 'EPERM' });
  };
  try {
    await assert.rejects(OutputClaim.take(out, () => {}, noLost, FAST), rejectsWith('OUT_UNUSABLE', /the lapsed lease .* cannot be moved aside \(EPERM/));
  } finally {
    fs.renameSync = rename;
  }
  fs.rmSync(path.join(out, LEASE_FILE));
  fs.symlinkSync(path.join(root, 'nowhere'), path.join(out, LEASE_FILE));
  await assert.rejects(OutputClaim.take(out, () => {}, noLost, FAST), rejectsWith('OUT_UNUSABLE', /is not a regular file/));
  fs.rmSync(root, { recursive: true, force: true });
});

test('a holder whose lease a taker has moved aside to check it keeps it, touching nothing meanwhile; a lease put back without hard links (SMB) is renamed back', async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'run');
  const lines: string[] = [];
  const claim = await OutputClaim.take(out, (l) => lines.push(l), noLost, FAST);
  const file = path.join(out, LEASE_FILE);
  const aside = `${file}.lapsed-another-taker`;
  fs.renameSync(file, aside);
  assert.ok(claim.holds(), 'moved aside is not lost');
  // A taker that stops while it holds the lease aside: the touches that find no file are no failure to touch it.
  await new Promise((r) => setTimeout(r, 2 * FAST.staleMs));
  assert.ok(claim.holds());
  assert.deepEqual(lines.filter((l) => l.startsWith('cannot touch')), []);
  const link = fs.linkSync;
  fs.linkSync = () => {
    throw Object.assign(new Error('EPERM: operation not permitted, link'), { code: 'EPERM' });
  };
  try {
    putBack(aside, file);
  } finally {
    fs.linkSync = link;
  }
  assert.ok(!fs.existsSync(aside) && claim.holds(), 'renamed back');
  claim.release();
  fs.rmSync(root, { recursive: true, force: true });
});

test('makeDirectory makes a parent again that another process removes meanwhile (a run releasing its empty --out), as recursive mkdir did', (t) => {
  const root = tempDir('claim');
  const parent = path.join(root, 'p');
  const child = path.join(parent, 'a');
  // The other process's removal, just before the child's mkdir (an empty parent, as a released --out is).
  const mkdir = fs.mkdirSync;
  let removed = 0;
  t.after(() => void (fs.mkdirSync = mkdir));
  fs.mkdirSync = ((p: fs.PathLike, options?: fs.MakeDirectoryOptions) => {
    if (p === child && removed++ === 0) fs.rmdirSync(parent);
    return mkdir(p, options);
  }) as typeof fs.mkdirSync;
  assert.equal(makeDirectory(path.join(child, 'b')), parent);
  assert.equal(removed, 2, 'the child was made on the second try');
  assert.ok(fs.statSync(path.join(child, 'b')).isDirectory());
  fs.rmSync(root, { recursive: true, force: true });
});

test('removeTornWrites removes the temporary files of the named writes untouched for over 5 minutes, and nothing else', () => {
  const dir = tempDir('torn');
  const minute = 60_000;
  const now = Date.now();
  const at = (name: string, minutesAgo: number) => {
    fs.writeFileSync(path.join(dir, name), 'torn');
    fs.utimesSync(path.join(dir, name), (now - minutesAgo * minute) / 1000, (now - minutesAgo * minute) / 1000);
  };
  at('summary.json.tmp-7', 6);
  // A write still under way (4 minutes is slow, not abandoned), another file's, and not a temporary file at all.
  at('summary.json.tmp-8', 4);
  at('evaluations.json.tmp-7', 6);
  at('summary.json.tmp-x', 6);
  at('summary.json.old.tmp-7', 6);
  assert.deepEqual(removeTornWrites(dir, 'summary.json', now), ['summary.json.tmp-7']);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['evaluations.json.tmp-7', 'summary.json.old.tmp-7', 'summary.json.tmp-8', 'summary.json.tmp-x']);
  assert.deepEqual(removeTornWrites(dir, /^evaluations\.json$/, now), ['evaluations.json.tmp-7']);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('writeFileAtomic writes every byte where a write takes only part of a buffer (a full disk, /dev/shm), and throws, naming the file, where one takes none', (t) => {
  const dir = tempDir('short-writes');
  const file = path.join(dir, 'summary.json');
  const writeSync = fs.writeSync;
  let takes = 3;
  t.mock.method(fs, 'writeSync', (fd: number, b: Uint8Array, offset: number, length: number, position: number) => (writeSync as (...a: unknown[]) => number)(fd, b, offset, Math.min(length, takes), position));
  assert.equal(writeFileAtomic(file, [Buffer.from('{"steps": '), Buffer.from('1000}\n')]), true);
  assert.equal(fs.readFileSync(file, 'utf8'), '{"steps": 1000}\n');
  takes = 0;
  assert.throws(() => writeFileAtomic(file, [Buffer.from('lost')]), (e: Error) => e.message.includes('wrote nothing') && e.message.includes(file));
  assert.equal(fs.readFileSync(file, 'utf8'), '{"steps": 1000}\n', 'the old file is kept whole');
  assert.deepEqual(fs.readdirSync(dir), ['summary.json'], 'no temporary file is left');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('an --out whose name is too long under parents it had to make is OUT_UNUSABLE, and leaves none of them made', async () => {
  const root = tempDir('claim');
  const out = path.join(root, 'new', 'parents', 'a'.repeat(300), 'run');
  await assert.rejects(OutputClaim.take(out, () => {}, noLost, FAST), rejectsWith('OUT_UNUSABLE', /ENAMETOOLONG/));
  assert.deepEqual(fs.readdirSync(root), [], 'the parents made before the failure are gone again');
  assert.throws(() => makeDirectory(out), /ENAMETOOLONG/);
  assert.deepEqual(fs.readdirSync(root), []);
  fs.rmSync(root, { recursive: true, force: true });
});

test("a taker whose --out goes with the holder's release just before it opens the lease makes --out again and takes it", async (t) => {
  const root = tempDir('claim');
  const out = path.join(root, 'run');
  const file = path.join(out, LEASE_FILE);
  // The holder's release between the taker's mkdir and its open: the lease removed, then the empty --out.
  const open = fs.openSync;
  let released = 0;
  t.after(() => void (fs.openSync = open));
  fs.openSync = ((p: fs.PathLike, ...rest: unknown[]) => {
    if (p === file && released++ === 0) fs.rmdirSync(out);
    return (open as (...a: unknown[]) => number)(p, ...rest);
  }) as typeof fs.openSync;
  const claim = await OutputClaim.take(out, () => {}, noLost, FAST);
  assert.equal(released, 2, 'the lease was made on the second try');
  assert.ok(claim.holds());
  claim.release();
  fs.rmSync(root, { recursive: true, force: true });
});
