import { mock, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { EncodedFrame, ProtocolError, decodeWorkerMessage, encode, encodeFrame } from '../src/protocol/codec';
import { Inbox, Outbox, mailboxNonce, makeMailboxDir, removeMailboxDir, removeMailboxDirsOf } from '../src/protocol/mailbox';
import { Gradients, Welcome, message } from '../src/protocol/messages';
import { pidNamespace } from '../src/util/process';
import { WorkerMailbox } from '../src/worker/mailbox';
import { tempDir } from './harness';

function withDir(fn: (dir: string) => void): void {
  const dir = makeMailboxDir('coordinator');
  try {
    fn(dir);
  } finally {
    removeMailboxDir(dir);
  }
}

test('a mailbox directory is private, in /dev/shm where there is one, and named after its process', () => {
  withDir((dir) => {
    if (fs.existsSync('/dev/shm')) assert.equal(path.dirname(dir), '/dev/shm');
    assert.match(path.basename(dir), new RegExp(`^ganfleet-coordinator-${process.pid}-`));
    assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
  });
});

test('a mailbox whose nonce cannot be written (a full /dev/shm) leaves neither its file nor its descriptor', () => {
  withDir((dir) => {
    const descriptors = () => fs.readdirSync('/proc/self/fd').length;
    const before = descriptors();
    const write = fs.writeSync;
    fs.writeSync = (() => {
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    }) as typeof fs.writeSync;
    try {
      for (let i = 0; i < 20; i++) assert.throws(() => Outbox.create(path.join(dir, `w${i}`), mailboxNonce()), /ENOSPC/);
    } finally {
      fs.writeSync = write;
    }
    assert.equal(descriptors(), before);
    assert.deepEqual(fs.readdirSync(dir), []);
  });
});

test('a mailed frame arrives byte for byte, in fresh aligned memory, and decodes like one from the socket', () => {
  withDir((dir) => {
    const nonce = mailboxNonce();
    const outbox = Outbox.create(path.join(dir, 'w1'), nonce);
    assert.equal(fs.statSync(outbox.path).mode & 0o777, 0o600);
    const inbox = Inbox.open(outbox.path, nonce, 'coordinator');
    const gradients = Float32Array.from({ length: 100609 }, (_, i) => Math.sin(i));
    const encoded = encodeFrame(message<Gradients>({ type: 'gradients', step: 3, phase: 'discriminator', samples: 128, gradients, loss: 0.5, dReal: 0.9, dFake: 0.1, computeSeconds: 0.002 }));
    const frame = encoded.whole;
    outbox.post(encoded);
    const first = inbox.collect(frame.length, 1 << 20);
    assert.ok(first.equals(frame));
    assert.equal(first.byteOffset % 4, 0);
    const decoded = decodeWorkerMessage(first);
    assert.ok(decoded.type === 'gradients');
    assert.deepEqual(decoded.gradients, gradients);
    // The next frame overwrites the file, not the memory an earlier frame was read into.
    outbox.post(new EncodedFrame([Buffer.alloc(frame.length, 7)]));
    assert.ok(inbox.collect(frame.length, 1 << 20).every((b) => b === 7));
    assert.deepEqual(decoded.gradients, gradients);
    // With reuse, every frame lands in the same memory: valid until the next collect.
    outbox.post(encoded);
    const reused = inbox.collect(frame.length, 1 << 20, true);
    assert.ok(reused.equals(frame));
    assert.equal(reused.byteOffset % 4, 0);
    const small = new EncodedFrame([Buffer.alloc(100, 9)]);
    outbox.post(small);
    const again = inbox.collect(100, 1 << 20, true);
    assert.equal(again.buffer, reused.buffer, 'the same memory');
    assert.ok(again.every((b) => b === 9));
    inbox.close();
    outbox.close();
  });
});

test('a frame in pieces is the frame encode makes, byte for byte, with its floats not copied', () => {
  const gradients = Float32Array.from({ length: 1001 }, (_, i) => i / 7);
  const statistics = Float32Array.from({ length: 13 }, (_, i) => i);
  const msg = message<Gradients>({ type: 'gradients', step: 1, phase: 'generator', samples: 64, gradients, statistics, loss: 1, dFake: 0.5, computeSeconds: 0.01 });
  for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
    const frame = encodeFrame(msg, dtype);
    assert.ok(Buffer.concat(frame.parts as Buffer[]).equals(encode(msg, dtype)), dtype);
    assert.equal(frame.length, encode(msg, dtype).length);
  }
  const parts = encodeFrame(msg).parts;
  assert.ok(parts.some((p) => p.buffer === gradients.buffer), 'the gradients travel as themselves');
});

test('a notice announcing more than the mailbox holds, nothing, or more than the limit is rejected', () => {
  withDir((dir) => {
    const nonce = mailboxNonce();
    const outbox = Outbox.create(path.join(dir, 'w1'), nonce);
    const inbox = Inbox.open(outbox.path, nonce, 'coordinator');
    outbox.post(new EncodedFrame([Buffer.alloc(1000, 1)]));
    const reason = (bytes: number, limit: number) => {
      try {
        inbox.collect(bytes, limit);
      } catch (e) {
        return e instanceof ProtocolError ? e.reason : String(e);
      }
      return 'accepted';
    };
    assert.equal(reason(1000, 1000), 'accepted');
    assert.equal(reason(1001, 2000), 'bad_size');
    assert.equal(reason(0, 2000), 'bad_size');
    assert.equal(reason(1000, 999), 'bad_size');
    inbox.close();
    outbox.close();
  });
});

test('a frame collected into reused memory larger than the one before it arrives whole: the memory grows', () => {
  withDir((dir) => {
    const nonce = mailboxNonce();
    const outbox = Outbox.create(path.join(dir, 'w1'), nonce);
    const inbox = Inbox.open(outbox.path, nonce, 'coordinator');
    try {
      for (const [bytes, fill] of [[100, 1], [5000, 2], [300, 3], [70_000, 4]]) {
        outbox.post(new EncodedFrame([Buffer.alloc(bytes, fill)]));
        const frame = inbox.collect(bytes, 1 << 20, true);
        assert.equal(frame.length, bytes);
        assert.ok(frame.every((b) => b === fill), `the ${bytes}-byte frame`);
      }
    } finally {
      inbox.close();
      outbox.close();
    }
  });
});

test('a peer file is refused unless it is a regular file of this user holding the nonce, a whole one', () => {
  withDir((dir) => {
    const nonce = mailboxNonce();
    const open = (file: string, n = nonce) => Inbox.open(file, n, 'coordinator');
    const real = Outbox.create(path.join(dir, 'real'), nonce);
    assert.throws(() => Outbox.create(real.path, nonce), /EEXIST/, 'an outbox is always a new file');
    assert.throws(() => open(real.path, mailboxNonce()), /does not hold this connection's nonce/);
    // A prefix of the file's nonce, or none, would match it: only a whole nonce proves anything.
    for (const short of ['', nonce.slice(0, 10), nonce.trim()]) assert.throws(() => open(real.path, short), /not one ganfleet makes/);
    fs.symlinkSync(real.path, path.join(dir, 'link'));
    assert.throws(() => open(path.join(dir, 'link')), /ELOOP/, 'a link is not followed');
    fs.mkdirSync(path.join(dir, 'sub'));
    assert.throws(() => open(path.join(dir, 'sub')), /not a regular file|EISDIR/);
    // A FIFO with no writer would block a plain open forever.
    const fifo = path.join(dir, 'fifo');
    spawnSync('mkfifo', [fifo]);
    assert.ok(fs.statSync(fifo).isFIFO());
    assert.throws(() => open(fifo), /not a regular file/);
    assert.throws(() => open(path.join(dir, 'missing')), /ENOENT/);
    const inbox = open(real.path);
    inbox.close();
    real.close();
    // Closed is closed: a descriptor's number may already belong to another file.
    assert.throws(() => real.post(new EncodedFrame([Buffer.from('x')])), /is closed/);
    assert.throws(() => inbox.collect(1, 10), /closed mailbox/);
    assert.ok(!fs.existsSync(real.path), 'a closed outbox takes its file with it');
  });
});

test('a process that exits without removing its mailbox directory (an uncaught error, process.exit) takes it with it', () => {
  const script = `const { makeMailboxDir } = require(${JSON.stringify(require.resolve('../src/protocol/mailbox'))});
    const dir = makeMailboxDir('worker'); require('fs').writeFileSync(require('path').join(dir, 'w1'), 'frame'); console.log(dir); process.exit(3);`;
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  assert.equal(child.status, 3, child.stderr);
  const dir = child.stdout.trim();
  assert.match(path.basename(dir), /^ganfleet-worker-\d+-/);
  const left = fs.existsSync(dir);
  if (left) fs.rmSync(dir, { recursive: true, force: true });
  assert.ok(!left, `${dir} was left behind`);
});

test("a killed process's mailbox directory is swept by the next one; a live one's is kept", async () => {
  // A child makes a directory and is killed before it can remove it. Seen while the child lives: once it is dead,
  // a ganfleet process of the test file running beside this one (npm test runs two at once) may sweep it first.
  const script = `const { makeMailboxDir } = require(${JSON.stringify(require.resolve('../src/protocol/mailbox'))}); console.log(makeMailboxDir('worker')); process.stdin.resume();`;
  const killed = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const orphan = String((await once(killed.stdout!, 'data'))[0]).trim();
  assert.ok(orphan && fs.existsSync(orphan), `the child made ${JSON.stringify(orphan)}`);
  killed.kill('SIGKILL');
  if (killed.exitCode === null && killed.signalCode === null) await once(killed, 'exit');
  assert.equal(killed.signalCode, 'SIGKILL');
  // Another process, alive while this one sweeps (as local's workers are while each new one starts).
  const live = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  let theirs = '';
  try {
    const [line] = await once(live.stdout!, 'data');
    theirs = String(line).trim();
    assert.ok(theirs && fs.existsSync(theirs), `the live child made ${JSON.stringify(theirs)}`);
    withDir((mine) => {
      assert.ok(!fs.existsSync(orphan), 'swept');
      assert.ok(fs.existsSync(theirs), "a live process's directory is kept");
      const second = makeMailboxDir('worker');
      assert.ok(fs.existsSync(mine), 'a live process keeps its directory');
      removeMailboxDir(second);
      assert.ok(!fs.existsSync(second));
    });
  } finally {
    live.kill('SIGKILL');
    if (live.exitCode === null && live.signalCode === null) await once(live, 'exit');
    if (theirs) fs.rmSync(theirs, { recursive: true, force: true });
  }
});

/** A mailbox directory's path for `pid` of pid namespace `namespace`, where makeMailboxDir puts them (/dev/shm, or the temp dir). */
function mailboxDirOf(role: 'worker' | 'coordinator', pid: number, namespace: string | number | null): string {
  const probe = makeMailboxDir('worker');
  removeMailboxDir(probe);
  return path.join(path.dirname(probe), `ganfleet-${role}-${pid}-${namespace === null ? '' : `${namespace}-`}abc123`);
}

test("a dead pid's directory is swept only where the pid is of this pid namespace: a container sharing /dev/shm may hold a live process of that pid", { skip: pidNamespace() === null ? 'no pid namespaces (not Linux)' : false }, () => {
  // A pid no process has here (above pid_max).
  const dead = 4_194_305;
  const ours = mailboxDirOf('worker', dead, pidNamespace());
  const theirs = mailboxDirOf('worker', dead, Number(pidNamespace()) + 1);
  for (const d of [ours, theirs]) fs.mkdirSync(d, { mode: 0o700 });
  withDir((mine) => {
    assert.match(path.basename(mine), new RegExp(`^ganfleet-coordinator-${process.pid}-${pidNamespace()}-`));
    assert.ok(!fs.existsSync(ours), "this namespace's dead pid: swept");
    assert.ok(fs.existsSync(theirs), "another namespace's: left to its owner");
  });
  fs.rmSync(theirs, { recursive: true, force: true });
});

test("a dead pid's directory of another user is left to that user: root's sweep does not remove it", { skip: process.getuid?.() !== 0 && 'needs root, to make a directory of another user' }, () => {
  // A pid no process has here (above pid_max), of this namespace: only its owner tells it from a sweepable one.
  const theirs = mailboxDirOf('worker', 4_194_305, pidNamespace());
  fs.mkdirSync(theirs, { mode: 0o700 });
  fs.chownSync(theirs, 65534, 65534);
  try {
    withDir(() => assert.ok(fs.existsSync(theirs), "another user's: left to its owner"));
  } finally {
    fs.rmSync(theirs, { recursive: true, force: true });
  }
});

test("local's removal of a killed child's directories takes only this user's of this pid namespace, and never throws", { skip: pidNamespace() === null ? 'no pid namespaces (not Linux)' : false }, () => {
  // The killed child's pid (above pid_max, so no sweep meets it as a live one).
  const child = 4_194_306;
  const ours = mailboxDirOf('worker', child, pidNamespace());
  // A container's sharing /dev/shm: that pid is another process there.
  const otherNamespace = mailboxDirOf('worker', child, Number(pidNamespace()) + 1);
  // Left by another user's killed process of that pid: theirs, and (as that user is not root) not removable.
  const otherUser = mailboxDirOf('coordinator', child, pidNamespace());
  for (const d of [ours, otherNamespace, otherUser]) fs.mkdirSync(d, { mode: 0o700 });
  const otherUid = process.getuid?.() === 0 ? 65534 : null;
  if (otherUid !== null) fs.chownSync(otherUser, otherUid, otherUid);
  try {
    removeMailboxDirsOf(child);
    assert.ok(!fs.existsSync(ours), "the child's own: removed");
    assert.ok(fs.existsSync(otherNamespace), "another namespace's: left to its owner");
    if (otherUid !== null) assert.ok(fs.existsSync(otherUser), "another user's: left to its owner");
    // A removal that fails (another user's directory, for a user who is not root) ends nothing: it ran in local's 'exit' handler.
    fs.mkdirSync(ours, { mode: 0o700 });
    const failing = mock.method(fs, 'rmSync', () => {
      throw Object.assign(new Error('EACCES: permission denied, scandir'), { code: 'EACCES' });
    });
    try {
      assert.doesNotThrow(() => removeMailboxDirsOf(child));
    } finally {
      failing.mock.restore();
    }
  } finally {
    for (const d of [ours, otherNamespace, otherUser]) fs.rmSync(d, { recursive: true, force: true });
  }
});

test('a peer can name only a file directly in a mailbox directory of its role: nothing else is opened for it', () => {
  withDir((dir) => {
    const nonce = mailboxNonce();
    const real = Outbox.create(path.join(dir, 'real'), nonce);
    const outside = `not a file in a ganfleet coordinator mailbox directory under ${path.dirname(dir)}`;
    const refused = (file: string, from: 'coordinator' | 'worker' = 'coordinator') => assert.throws(() => Inbox.open(file, nonce, from), (e: Error) => e.message.includes(from === 'coordinator' ? outside : 'ganfleet worker mailbox'), file);
    refused('/etc/passwd');
    refused('/dev/null');
    refused('relative/path');
    refused(path.dirname(dir));
    refused(`${dir}/../${path.basename(dir)}/real`);
    refused(real.path, 'worker');
    fs.mkdirSync(path.join(dir, 'sub'));
    refused(path.join(dir, 'sub', 'file'));
    // A link named like a mailbox directory, leading elsewhere.
    const decoy = path.join(path.dirname(dir), `ganfleet-coordinator-${process.pid}-decoy${process.hrtime.bigint()}`);
    fs.symlinkSync(dir, decoy);
    try {
      refused(path.join(decoy, 'real'));
    } finally {
      fs.unlinkSync(decoy);
    }
    Inbox.open(real.path, nonce, 'coordinator').close();
    real.close();
  });
});

test("a peer's file in another user's mailbox directory is not opened: that user could swap it for a link between the check and the open", { skip: process.getuid?.() !== 0 && 'needs root, to make a directory of another user' }, () => {
  withDir((dir) => {
    const nonce = mailboxNonce();
    const theirs = path.join(path.dirname(dir), `ganfleet-coordinator-${process.pid}-theirs${process.hrtime.bigint()}`);
    fs.mkdirSync(theirs);
    const planted = Outbox.create(path.join(theirs, 'real'), nonce);
    fs.chownSync(theirs, 65534, 65534);
    try {
      assert.throws(() => Inbox.open(planted.path, nonce, 'coordinator'), /is in a mailbox directory of another user \(uid 65534\), which this process does not open/);
    } finally {
      planted.close();
      fs.rmSync(theirs, { recursive: true, force: true });
    }
  });
});

test('without a writable /dev/shm, mailboxes go in the temp dir, and a TMPDIR written with extra slashes still names it', () => {
  const tmp = tempDir('tmpdir');
  // A host whose /dev/shm cannot be written (macOS, a read-only one): the child opens its own mailbox as a peer would.
  const script = `
    const fs = require('node:fs'), path = require('node:path');
    const access = fs.accessSync;
    fs.accessSync = (p, m) => { if (p === '/dev/shm') throw Object.assign(new Error('EACCES'), { code: 'EACCES' }); return access(p, m); };
    const mb = require(${JSON.stringify(require.resolve('../src/protocol/mailbox'))});
    const dir = mb.makeMailboxDir('worker');
    const nonce = mb.mailboxNonce();
    const outbox = mb.Outbox.create(path.join(dir, 'to-coordinator'), nonce);
    mb.Inbox.open(outbox.path, nonce, 'worker').close();
    console.log(dir);`;
  try {
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, TMPDIR: `${tmp}//` } });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(path.dirname(r.stdout.trim()), tmp);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test("a worker whose own mailbox file cannot take a frame (a full /dev/shm) says so once, and its gradients go over the socket from then on", () => {
  withDir((dir) => {
    const nonce = mailboxNonce();
    const toWorker = Outbox.create(path.join(dir, 'w1'), nonce);
    const lines: string[] = [];
    const box = WorkerMailbox.open({ mailbox: toWorker.path, nonce } as Welcome, (l) => lines.push(l));
    assert.ok(box, lines.join('\n'));
    const workerDir = path.dirname(box.outboxPath);
    const frame = encodeFrame(message<Gradients>({ type: 'gradients', step: 0, phase: 'discriminator', samples: 1, gradients: new Float32Array(8), loss: 0, dReal: 0, dFake: 0, computeSeconds: 0 }));
    assert.equal(box.post(frame), true);
    const write = fs.writeSync;
    fs.writeSync = (() => {
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    }) as typeof fs.writeSync;
    try {
      assert.equal(box.post(frame), false);
      assert.equal(box.post(frame), false);
    } finally {
      fs.writeSync = write;
    }
    // Space again does not bring it back: the coordinator reads this worker's answers from the socket now.
    assert.equal(box.post(frame), false);
    const failed = lines.filter((l) => /mailbox failed/.test(l));
    assert.equal(failed.length, 1, lines.join('\n'));
    assert.match(failed[0], /^mailbox failed \(ENOSPC: no space left on device, write: \S+ is full; give it room \(.+\) or pass --no-mailbox\); gradients go over the WebSocket from now on$/);
    box.close();
    toWorker.close();
    assert.equal(fs.existsSync(workerDir), false);
  });
});

test('a mailbox that runs out of room says which file system is full and what to do about it, at creation and mid-run', () => {
  withDir((dir) => {
    const base = path.dirname(dir);
    const write = fs.writeSync;
    const outbox = Outbox.create(path.join(dir, 'w1'), mailboxNonce());
    fs.writeSync = (() => {
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    }) as typeof fs.writeSync;
    try {
      const said = (f: () => void) => {
        try {
          f();
        } catch (e) {
          return (e as Error).message;
        }
        return 'no error';
      };
      for (const message of [said(() => Outbox.create(path.join(dir, 'w2'), mailboxNonce())), said(() => outbox.post(new EncodedFrame([Buffer.alloc(64)])))]) {
        assert.ok(message.startsWith('ENOSPC: no space left on device, write'), message);
        assert.ok(message.includes(`${base} is full`), message);
        assert.ok(message.includes('--no-mailbox'), message);
        if (base === '/dev/shm') assert.ok(message.includes('--shm-size'), message);
      }
    } finally {
      fs.writeSync = write;
    }
    outbox.close();
  });
});

const bigGradients = () =>
  encodeFrame(message<Gradients>({ type: 'gradients', step: 0, phase: 'discriminator', samples: 1, gradients: new Float32Array(100000), loss: 0, dReal: 0, dFake: 0, computeSeconds: 0 }));

test('a discarded outbox (it failed) gives its bytes back to /dev/shm though its reader still holds it open; a closed one leaves its frame to a reader that holds it', () => {
  const dir = makeMailboxDir('coordinator');
  try {
    const outbox = Outbox.create(path.join(dir, 'w1'), mailboxNonce());
    const reader = fs.openSync(outbox.path, 'r'); // as the worker's inbox holds it
    try {
      outbox.post(bigGradients());
      outbox.discard(); // a lost mailbox (a full /dev/shm): the peer keeps its descriptor
      assert.equal(fs.existsSync(outbox.path), false);
      assert.equal(fs.fstatSync(reader).size, 0);
      // Closed as a worker is dropped: a notice it has yet to read still finds its frame.
      const dropped = Outbox.create(path.join(dir, 'w2'), mailboxNonce());
      const holder = fs.openSync(dropped.path, 'r');
      try {
        const frame = bigGradients();
        dropped.post(frame);
        dropped.close();
        assert.equal(fs.existsSync(dropped.path), false);
        assert.equal(fs.fstatSync(holder).size, frame.length);
      } finally {
        fs.closeSync(holder);
      }
    } finally {
      fs.closeSync(reader);
    }
  } finally {
    removeMailboxDir(dir);
  }
});

test("a worker whose own mailbox file fails (a full /dev/shm) does not keep the part it wrote", () => {
  const dir = makeMailboxDir('coordinator');
  try {
    const nonce = mailboxNonce();
    const toWorker = Outbox.create(path.join(dir, 'w1'), nonce);
    const box = WorkerMailbox.open({ mailbox: toWorker.path, nonce } as Welcome, () => {});
    assert.ok(box);
    const coordinatorHolds = fs.openSync(box.outboxPath, 'r');
    const write = fs.writeSync;
    let calls = 0;
    fs.writeSync = ((...args: Parameters<typeof fs.writeSync>) => {
      if (calls++ === 0) return (write as (...a: unknown[]) => number)(...args); // the first piece fits
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    }) as typeof fs.writeSync;
    try {
      assert.equal(box.post(bigGradients()), false);
    } finally {
      fs.writeSync = write;
    }
    try {
      assert.equal(fs.fstatSync(coordinatorHolds).size, 0);
    } finally {
      fs.closeSync(coordinatorHolds);
      box.close();
      toWorker.close();
    }
  } finally {
    removeMailboxDir(dir);
  }
});
