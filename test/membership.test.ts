import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import { heartbeatVerdict } from '../src/coordinator/heartbeat';
import { WorkerGroup } from '../src/coordinator/membership';
import { CoordinatorMetrics } from '../src/coordinator/metrics';
import { decodeCoordinatorMessage } from '../src/protocol/codec';
import { message, type Hello } from '../src/protocol/messages';

/** A socket that takes every write at once and stays open until closed: admit and remove need no more. `sent` collects what it was sent. */
function openSocket(sent: Buffer[] = []): WebSocket {
  const s = Object.assign(new EventEmitter(), {
    readyState: WebSocket.OPEN as number,
    bufferedAmount: 0,
    terminated: false,
    send: (d: Buffer, _o?: unknown, cb?: (e?: Error) => void) => (sent.push(d), typeof _o === 'function' ? _o() : cb?.()),
    close: () => {},
    terminate: () => (s.terminated = true),
    pinged: [] as ((err?: Error) => void)[],
    ping: (_d: unknown, _m: unknown, cb: (err?: Error) => void) => s.pinged.push(cb),
    pause: () => {},
    resume: () => {},
  });
  return s as unknown as WebSocket;
}

interface Heard {
  left: string[];
  changed: number;
}

function group(cameBackOverdue: (round: number, seconds: number) => void = () => {}, maxWorkers = 64, heard: Heard = { left: [], changed: 0 }): WorkerGroup {
  return new WorkerGroup(
    { maxWorkers, heartbeatSeconds: 5, mailbox: false },
    { log: () => {}, metrics: new CoordinatorMetrics(), terms: () => ({}) as never, newSeed: () => 1, countSent: () => {}, left: (id) => heard.left.push(id), changed: () => heard.changed++, cameBackOverdue },
  );
}

const hello = (pid: number, hostname = 'host-a', instance?: string): Hello => message<Hello>({ type: 'hello', name: `${hostname}:${pid}`, backend: 'wasm', pid, hostname, ...(instance === undefined ? {} : { instance }) });
const remembered = (g: WorkerGroup) => (g as unknown as { joined: Set<string> }).joined.size;

test('the group forgets worker processes that left on their own, and still counts every process once', () => {
  const g = group();
  // An elastic run: a thousand worker processes come, train, and leave (SIGTERM: a clean close, code 1000).
  for (let pid = 1; pid <= 1000; pid++) {
    const peer = g.admit(hello(pid), openSocket(), '127.0.0.1:1')!;
    g.remove(peer, 'disconnected', true);
  }
  assert.equal(g.processesJoined(), 1000);
  assert.equal(remembered(g), 0, 'a process that left on its own exits: nothing of it is kept');
  assert.deepEqual(g.untoldWorkers(), []);

  // One dropped (or crashed: the coordinator cannot tell) may come back as the same process: kept, and counted once.
  const first = g.admit(hello(5000), openSocket(), '127.0.0.1:1')!;
  g.remove(first, 'no heartbeat');
  assert.equal(g.untoldWorkers().length, 1);
  const again = g.admit(hello(5000), openSocket(), '127.0.0.1:1')!;
  assert.equal(g.processesJoined(), 1001, 'a rejoin is not another process');
  assert.deepEqual(g.untoldWorkers(), []);
  g.remove(again, 'disconnected', true);
  assert.equal(remembered(g), 0);
  // A pid reused later on the same host is another process.
  g.admit(hello(5000), openSocket(), '127.0.0.1:1');
  assert.equal(g.processesJoined(), 1002);
  assert.equal(remembered(g), 1, 'a connected process is kept');
  g.stopHeartbeats();
});

test('a worker process dropped at a deadline while asked a round is told of when it comes back, once, with that round and the time since it was asked; not one dropped for offences, cut off, asked nothing, or another process', () => {
  const back: [number, number][] = [];
  const g = group((round, seconds) => back.push([round, seconds]));
  const asked = (pid: number, hostname?: string) => {
    const peer = g.admit(hello(pid, hostname), openSocket(), '127.0.0.1:1')!;
    peer.asked.push(2, 3);
    peer.lastAskedAt = performance.now() - 2_000;
    return peer;
  };
  g.drop(asked(1), 'no heartbeat for 5.0 s (--heartbeat 5)', true);
  g.drop(asked(2), 'too many errors');
  g.cutOff(asked(3), 'its link took no write for 6.0 s');
  g.drop(g.admit(hello(4), openSocket(), '127.0.0.1:1')!, 'no heartbeat for 5.0 s (--heartbeat 5)', true);
  for (const pid of [2, 3, 4]) g.admit(hello(pid), openSocket(), '127.0.0.1:1');
  g.admit(hello(1, 'host-b'), openSocket(), '127.0.0.1:1');
  assert.deepEqual(back, []);
  g.admit(hello(1), openSocket(), '127.0.0.1:1');
  assert.equal(back.length, 1);
  assert.equal(back[0][0], 3, 'the newest request');
  assert.ok(back[0][1] >= 2 && back[0][1] < 60, String(back[0][1]));
  g.admit(hello(1), openSocket(), '127.0.0.1:1');
  assert.equal(back.length, 1);
  g.stopHeartbeats();
});

test('a restarted container (the same hostname and pid 1, another instance) is a new process: not told of as one that came back from a deadline, and counted again', () => {
  const back: number[] = [];
  const g = group((round) => back.push(round));
  const peer = g.admit(hello(1, 'pod-0', 'aaaa'), openSocket(), '127.0.0.1:1')!;
  peer.asked.push(7);
  g.drop(peer, 'no heartbeat for 5.0 s (--heartbeat 5)', true);
  g.admit(hello(1, 'pod-0', 'bbbb'), openSocket(), '127.0.0.1:1');
  assert.deepEqual(back, [], 'another process with the same hostname and pid');
  assert.equal(g.processesJoined(), 2);
  g.admit(hello(1, 'pod-0', 'aaaa'), openSocket(), '127.0.0.1:1');
  assert.deepEqual(back, [7], 'the same process, back');
  assert.equal(g.processesJoined(), 2);
  g.stopHeartbeats();
});

test("a peer's heartbeat verdict: nothing while its pong is fresh, a ping half an interval on, a drop an interval past its ping (after its shard's intake)", () => {
  const g = group();
  const socket = openSocket();
  const peer = g.admit(hello(1), socket, '127.0.0.1:1')!;
  const now = performance.now();
  assert.equal(heartbeatVerdict(peer, 5), null);
  // No ping written yet: nothing to drop it for, however short the interval (10 ms here, long since passed in this process).
  assert.equal(heartbeatVerdict(peer, 0.01), null);
  peer.lastPongAt = now - 2_400;
  assert.equal(heartbeatVerdict(peer, 5), null, 'no ping before half an interval');
  peer.lastPongAt = now - 2_600;
  assert.equal(heartbeatVerdict(peer, 5), 'ping');
  // A closing socket is not pinged.
  (socket as unknown as { readyState: number }).readyState = WebSocket.CLOSING;
  assert.equal(heartbeatVerdict(peer, 5), null, 'closing');
  (socket as unknown as { readyState: number }).readyState = WebSocket.OPEN;
  peer.pingInFlight = true;
  peer.intakeEndsAt = now - 6_000; // its shard taken in before the ping (times this early in a process are negative)
  peer.pingWrittenAt = now - 4_900;
  assert.equal(heartbeatVerdict(peer, 5), null, 'no drop before an interval has passed since the ping');
  peer.pingWrittenAt = now - 5_100;
  peer.lastPongAt = now - 7_600;
  assert.match((heartbeatVerdict(peer, 5) as { drop: string }).drop, /^no heartbeat for 7\.\d s \(--heartbeat 5\)$/);
  // Still taking in its shard: the ping counts from the intake's end.
  peer.intakeEndsAt = now;
  assert.equal(heartbeatVerdict(peer, 5), null);
  g.stopHeartbeats();
});

test("a peer's link that takes no write is cut after --heartbeat and the time the slowest link takes for a fragment, not before", () => {
  const g = group();
  const peer = g.admit(hello(1), openSocket(), '127.0.0.1:1')!;
  const now = performance.now();
  // A write queued and not taken: what a frozen worker's link shows (the fields stalledForMs reads).
  const stalled = (ms: number) => Object.assign(peer as unknown as { unwritten: number; waitingSince: number }, { unwritten: 1, waitingSince: now - ms });
  // 5 s of --heartbeat and 1.05 s for a 1 MiB fragment at 1 MB/s: a slow link still writing is not dead.
  stalled(5_900);
  assert.equal(heartbeatVerdict(peer, 5), null);
  stalled(6_200);
  assert.match((heartbeatVerdict(peer, 5) as { cut: string }).cut, /^its link took no write for 6\.\d s \(dead, or slower than 1 MiB in --heartbeat \+ 1 s\)$/);
  g.stopHeartbeats();
});

const typeOf = (frame: Buffer) => decodeCoordinatorMessage(frame).type;

test('a group at --max-workers refuses the next hello as a spare, and not a process it admitted before; a spare admitted later is no longer one', () => {
  const g = group(undefined, 2);
  const first = g.admit(hello(1), openSocket(), '127.0.0.1:1')!;
  assert.ok(g.admit(hello(2), openSocket(), '127.0.0.1:1'));
  const refused: Buffer[] = [];
  assert.equal(g.admit(hello(3), openSocket(refused), '127.0.0.1:1'), null, 'the group holds --max-workers 2');
  assert.deepEqual(refused.map((f) => decodeCoordinatorMessage(f)).map((m) => m.type === 'error' && [m.code, m.message]), [['COORDINATOR_FULL', 'the coordinator already has --max-workers 2 workers']]);
  assert.deepEqual(g.sparesTurnedAway(), ['"host-a:3"']);
  // Dropped, it is untold; refused on its return, it is still that, not a spare.
  g.remove(first, 'no heartbeat');
  assert.ok(g.admit(hello(3), openSocket(), '127.0.0.1:1'), 'a place came free');
  assert.deepEqual(g.sparesTurnedAway(), [], 'admitted: it hears the end of the run with the others');
  assert.equal(g.admit(hello(1), openSocket(), '127.0.0.1:1'), null);
  assert.deepEqual(g.sparesTurnedAway(), []);
  assert.deepEqual(g.untoldWorkers(), ['w1 "host-a:1"']);
  g.stopHeartbeats();
});

test('a peer removed twice (dropped, then its close) leaves once; each departure is heard, and re-plans the shards', () => {
  const heard: Heard = { left: [], changed: 0 };
  const g = group(undefined, 64, heard);
  const peer = g.admit(hello(1), openSocket(), '127.0.0.1:1')!;
  g.rebalanceIfChanged(new Uint32Array([0, 1, 2, 3]), new Uint8Array(4 * 784));
  assert.equal(heard.changed, 1);
  g.drop(peer, 'too many errors');
  g.remove(peer, 'closed (4000)', true);
  assert.deepEqual(heard.left, ['w1']);
  assert.equal(heard.changed, 2);
  assert.deepEqual(g.untoldWorkers(), ['w1 "host-a:1"'], 'the second remove is not a leaving on its own');
  assert.equal(g.processesJoined(), 1);
  g.stopHeartbeats();
});

test("a peer cut off is removed and its socket terminated; a heartbeat's drop is one at a deadline (it is told when it comes back), its cut is not", () => {
  const back: number[] = [];
  const g = group((round) => back.push(round));
  const act = (peer: unknown, verdict: unknown) => (g as unknown as { act(p: unknown, v: unknown): void }).act(peer, verdict);
  const socket = openSocket();
  const cut = g.admit(hello(1), socket, '127.0.0.1:1')!;
  cut.asked.push(4);
  act(cut, { cut: 'its link took no write for 6.0 s' });
  assert.equal((socket as unknown as { terminated: boolean }).terminated, true);
  assert.equal(g.get(cut.id), undefined);
  const dropped = g.admit(hello(2), openSocket(), '127.0.0.1:1')!;
  dropped.asked.push(7);
  act(dropped, { drop: 'no heartbeat for 7.6 s (--heartbeat 5)' });
  assert.equal(g.get(dropped.id), undefined);
  g.admit(hello(1), openSocket(), '127.0.0.1:1');
  g.admit(hello(2), openSocket(), '127.0.0.1:1');
  assert.deepEqual(back, [7]);
  g.stopHeartbeats();
});

test('a finished run tells the workers that left untold, and the spares it refused, to stop as they come back; one that leaves after the stop is not awaited', async () => {
  const g = group(undefined, 2);
  const staying = openSocket();
  g.admit(hello(1), openSocket(), '127.0.0.1:1');
  const stays = g.admit(hello(2), staying, '127.0.0.1:1')!;
  g.admit(hello(3), openSocket(), '127.0.0.1:1');
  g.remove(g.get('w1')!, 'no heartbeat');
  assert.deepEqual([g.untoldWorkers(), g.sparesTurnedAway()], [['w1 "host-a:1"'], ['"host-a:3"']]);
  const dismissed = g.dismiss('finished 10 steps', false);
  // It closes as it was told to: no reconnect to wait for.
  g.remove(stays, 'closed (1000)');
  staying.emit('close');
  await dismissed;
  assert.deepEqual(g.untoldWorkers(), ['w1 "host-a:1"']);
  const late = g.tellLateWorkers(60_000, false, new AbortController().signal);
  let waitEnded = false;
  void late.then(() => (waitEnded = true));
  const told: Buffer[] = [];
  assert.equal(g.admit(hello(1), openSocket(told), '127.0.0.1:1'), null);
  assert.deepEqual(g.untoldWorkers(), []);
  await new Promise((r) => setImmediate(r));
  assert.equal(waitEnded, false, 'the spare is still to be told');
  assert.equal(g.admit(hello(3), openSocket(told), '127.0.0.1:1'), null);
  assert.deepEqual(g.sparesTurnedAway(), []);
  assert.deepEqual(told.map(typeOf), ['stop', 'stop']);
  // Both told: the wait ends at once, not after its minute.
  assert.deepEqual(await late, []);
  g.stopHeartbeats();
});

test("a new shard plan sends each peer only what changed: a shrunk or grown shard keeps what it holds, a restored slot's seed and start go to a peer holding none, and a plan is made only after a change", () => {
  const logged: string[] = [];
  let seeds = 100;
  const g = new WorkerGroup(
    { maxWorkers: 64, heartbeatSeconds: 5, mailbox: false },
    { log: (l) => logged.push(l), metrics: new CoordinatorMetrics(), terms: () => ({}) as never, newSeed: () => seeds++, countSent: () => {}, left: () => {}, changed: () => {}, cameBackOverdue: () => {} },
  );
  const permutation = Uint32Array.from({ length: 8 }, (_, i) => 7 - i);
  const images = new Uint8Array(8 * 784);
  const sentTo: Buffer[][] = [[], []];
  // What each peer was sent since the last look: plan, count, keep, seed and images of each shard.
  const shards = (i: number) =>
    sentTo[i].splice(0).flatMap((f) => {
      const m = decodeCoordinatorMessage(f);
      return m.type === 'shard' ? [[m.plan, m.count, m.keep, m.seed, m.images.length / 784]] : [];
    });
  // Its welcome, with this test's empty terms, is not what is looked at.
  const admit = (pid: number) => {
    const peer = g.admit(hello(pid), openSocket(sentTo[pid - 1]), '127.0.0.1:1')!;
    sentTo[pid - 1].length = 0;
    return peer;
  };
  const a = admit(1);
  g.rebalanceIfChanged(permutation, images);
  assert.deepEqual(shards(0), [[1, 8, 0, 100, 8]]);
  g.rebalanceIfChanged(permutation, images);
  assert.deepEqual(shards(0), [], 'nothing changed: no plan');
  // A restored slot goes to the peer that holds no shard, not to the one holding its own; the other slot is left over.
  g.restoreSlots([{ indices: permutation.slice(4), seed: 77 }, { indices: permutation.slice(0, 4), seed: 78 }]);
  const b = admit(2);
  g.rebalanceIfChanged(permutation, images);
  assert.deepEqual(shards(0), [[2, 4, 4, 100, 0]], 'shrunk: it keeps half of what it holds, and is sent nothing new');
  assert.deepEqual(shards(1), [[2, 4, 0, 77, 4]], 'the restored slot: where its shard starts, but it holds none of it');
  assert.deepEqual([...b.shard!.indices], [...permutation.slice(4)]);
  assert.match(logged.at(-1)!, /^shard plan 2: w1=4 w2=4; 4 images sent; 1 slot from the checkpoint$/);
  // b leaves: a's shard grows back, keeping what it holds.
  g.remove(b, 'disconnected', true);
  g.rebalanceIfChanged(permutation, images);
  assert.deepEqual(shards(0), [[3, 8, 4, 100, 4]]);
  assert.equal(a.shard!.indices.length, 8);
  g.stopHeartbeats();
});

test("a ping counts from its write, unless its pong came first: a pong read before the ping's write completed leaves nothing awaited", () => {
  const g = group();
  const act = (peer: unknown, verdict: unknown) => (g as unknown as { act(p: unknown, v: unknown): void }).act(peer, verdict);
  const socket = openSocket() as unknown as WebSocket & { pinged: ((err?: Error) => void)[] };
  const peer = g.admit(hello(1), socket, '127.0.0.1:1')!;
  act(peer, 'ping');
  assert.equal(peer.pingInFlight, true);
  assert.equal(peer.pingWrittenAt, null, 'not written yet');
  socket.pinged.shift()!();
  assert.equal(typeof peer.pingWrittenAt, 'number');
  g.receivedPong(peer);
  act(peer, 'ping');
  g.receivedPong(peer);
  socket.pinged.shift()!();
  assert.equal(peer.pingWrittenAt, null, 'its pong came: no ping is awaited');
  g.stopHeartbeats();
});

test('a heartbeat verdict is acted on after pending reads only for a peer still in the group: one gone meanwhile is left alone', async () => {
  const g = group();
  const check = () => (g as unknown as { checkHeartbeats(): void }).checkHeartbeats();
  const stall = (peer: unknown) => Object.assign(peer as { unwritten: number; waitingSince: number }, { unwritten: 1, waitingSince: performance.now() - 10_000 });
  const goneSocket = openSocket();
  const stayingSocket = openSocket();
  const gone = g.admit(hello(1), goneSocket, '127.0.0.1:1')!;
  stall(gone);
  stall(g.admit(hello(2), stayingSocket, '127.0.0.1:1'));
  check();
  g.remove(gone, 'closed (1000)', true);
  await new Promise((r) => setImmediate(r));
  assert.equal((goneSocket as unknown as { terminated: boolean }).terminated, false);
  assert.equal((stayingSocket as unknown as { terminated: boolean }).terminated, true, 'its link took no write: cut off');
  assert.deepEqual(g.list(), []);
  g.stopHeartbeats();
});

test('a training set with fewer images than --max-workers admits one worker per image, and says so to the next', () => {
  const g = group(undefined, 64);
  g.fitToImages(2, 1);
  assert.ok(g.admit(hello(1), openSocket(), '127.0.0.1:1'));
  assert.ok(g.admit(hello(2), openSocket(), '127.0.0.1:1'));
  const refused: Buffer[] = [];
  assert.equal(g.admit(hello(3), openSocket(refused), '127.0.0.1:1'), null);
  assert.deepEqual(refused.map((f) => decodeCoordinatorMessage(f)).map((m) => m.type === 'error' && m.message), ["the training set's 2 images give at most 2 workers a shard"]);
  g.stopHeartbeats();
});

test('a round asks only the peers holding a shard whose socket is still open', () => {
  const g = group();
  const closing = openSocket();
  g.admit(hello(1), closing, '127.0.0.1:1');
  g.rebalanceIfChanged(Uint32Array.of(0, 1, 2, 3), new Uint8Array(4 * 784));
  g.admit(hello(2), openSocket(), '127.0.0.1:1');
  g.admit(hello(3), openSocket(), '127.0.0.1:1');
  g.rebalanceIfChanged(Uint32Array.of(0, 1, 2, 3), new Uint8Array(4 * 784));
  g.admit(hello(4), openSocket(), '127.0.0.1:1');
  (closing as unknown as { readyState: number }).readyState = WebSocket.CLOSING;
  assert.deepEqual(g.participants().map((p) => p.id), ['w2', 'w3'], 'w1 is closing, w4 holds no shard yet');
  assert.equal(g.openCount(), 3);
  g.stopHeartbeats();
});
