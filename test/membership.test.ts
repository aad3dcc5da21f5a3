import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { WorkerGroup } from '../src/coordinator/membership';
import { CoordinatorMetrics } from '../src/coordinator/metrics';
import { message, type Hello } from '../src/protocol/messages';

/** A socket that takes every write at once and never closes: admit and remove need no more. */
function openSocket(): WebSocket {
  const s = { readyState: WebSocket.OPEN, bufferedAmount: 0, send: (_d: unknown, _o: unknown, cb?: (e?: Error) => void) => cb?.(), close: () => {}, terminate: () => {}, pause: () => {}, resume: () => {} };
  return s as unknown as WebSocket;
}

function group(): WorkerGroup {
  return new WorkerGroup(
    { maxWorkers: 64, heartbeatSeconds: 5, mailbox: false },
    { log: () => {}, metrics: new CoordinatorMetrics(), terms: () => ({}) as never, newSeed: () => 1, countSent: () => {}, left: () => {}, changed: () => {} },
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
