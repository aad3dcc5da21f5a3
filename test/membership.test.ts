import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { heartbeatVerdict } from '../src/coordinator/heartbeat';
import { WorkerGroup } from '../src/coordinator/membership';
import { CoordinatorMetrics } from '../src/coordinator/metrics';
import { message, type Hello } from '../src/protocol/messages';

/** A socket that takes every write at once and never closes: admit and remove need no more. */
function openSocket(): WebSocket {
  const s = { readyState: WebSocket.OPEN, bufferedAmount: 0, send: (_d: unknown, _o: unknown, cb?: (e?: Error) => void) => cb?.(), close: () => {}, terminate: () => {}, pause: () => {}, resume: () => {} };
  return s as unknown as WebSocket;
}

function group(cameBackOverdue: (round: number, seconds: number) => void = () => {}): WorkerGroup {
  return new WorkerGroup(
    { maxWorkers: 64, heartbeatSeconds: 5, mailbox: false },
    { log: () => {}, metrics: new CoordinatorMetrics(), terms: () => ({}) as never, newSeed: () => 1, countSent: () => {}, left: () => {}, changed: () => {}, cameBackOverdue },
  );
}

const hello = (pid: number, hostname = 'host-a'): Hello => message<Hello>({ type: 'hello', name: `${hostname}:${pid}`, backend: 'wasm', pid, hostname });
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

test("a peer's heartbeat verdict: nothing while its pong is fresh, a ping half an interval on, a drop an interval past its ping (after its shard's intake)", () => {
  const g = group();
  const peer = g.admit(hello(1), openSocket(), '127.0.0.1:1')!;
  const now = performance.now();
  assert.equal(heartbeatVerdict(peer, 5), null);
  // No ping written yet: nothing to drop it for, however short the interval (10 ms here, long since passed in this process).
  assert.equal(heartbeatVerdict(peer, 0.01), null);
  peer.lastPongAt = now - 2_400;
  assert.equal(heartbeatVerdict(peer, 5), null, 'no ping before half an interval');
  peer.lastPongAt = now - 2_600;
  assert.equal(heartbeatVerdict(peer, 5), 'ping');
  peer.pingInFlight = true;
  peer.pingWrittenAt = now - 4_900;
  assert.equal(heartbeatVerdict(peer, 5), null, 'no drop before an interval has passed since the ping');
  peer.pingWrittenAt = now - 5_100;
  peer.lastPongAt = now - 7_600;
  peer.intakeEndsAt = now - 6_000; // its shard taken in before the ping (times this early in a process are negative)
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
