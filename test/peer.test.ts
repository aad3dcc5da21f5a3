import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import WebSocket, { WebSocketServer } from 'ws';
import { FRAGMENT_BYTES, WorkerPeer } from '../src/coordinator/peer';
import { EncodedFrame } from '../src/protocol/codec';
import { afterPendingReads } from '../src/util/events';

/** A WorkerPeer around the server end of a real loopback WebSocket, and the client end. */
async function peerPair(): Promise<{ peer: WorkerPeer; client: WebSocket; server: WebSocketServer }> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  const client = new WebSocket(`ws://127.0.0.1:${(server.address() as { port: number }).port}`);
  const [socket] = (await once(server, 'connection')) as [WebSocket];
  await once(client, 'open');
  return { peer: new WorkerPeer('w1', 'test', 'test-host\0' + process.pid, '127.0.0.1', 'none', socket, () => {}, () => {}), client, server };
}

test('a close queued behind two fragmented frames goes out after both: it was lost behind the second until a 30 s cut-off', async () => {
  const { peer, client, server } = await peerPair();
  const got: number[] = [];
  client.on('message', (d: Buffer) => got.push(d.length));
  const closed = once(client, 'close');
  const shard = Buffer.alloc(2 * FRAGMENT_BYTES + 1, 1);
  const weights = Buffer.alloc(FRAGMENT_BYTES + 7, 2);
  assert.ok(peer.send(shard));
  assert.ok(peer.send(weights));
  peer.close(1008, 'protocol violation');
  assert.equal(peer.open, false, 'a closing peer takes part in nothing more');
  // Lost, the close would come as the 30 s cut-off: 1006, without this code and reason.
  const [code, reason] = (await closed) as [number, Buffer];
  assert.deepEqual(got, [shard.length, weights.length], 'both frames, whole and in order, before the close');
  assert.equal(code, 1008);
  assert.equal(reason.toString(), 'protocol violation');
  server.close();
});

test('a frame in pieces (a shard: a header, then its images) goes out in fragments and arrives whole, in order, ahead of what was sent after it', async () => {
  const { peer, client, server } = await peerPair();
  const got: Buffer[] = [];
  client.on('message', (d: Buffer) => got.push(d));
  const filled = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));
  // Pieces shorter than a fragment, one empty, one of exactly a fragment, one spanning several.
  const pieces = [filled(37, 1), filled(2 * FRAGMENT_BYTES + 5, 2), Buffer.alloc(0), filled(FRAGMENT_BYTES, 3), filled(11, 4)];
  const frame = new EncodedFrame(pieces);
  const after = Buffer.from('after');
  const received = new Promise<void>((r) => client.on('message', () => got.length === 2 && r()));
  assert.ok(peer.send(frame));
  assert.ok(peer.send(after));
  await received;
  assert.equal(got[0].length, frame.length);
  assert.ok(got[0].equals(Buffer.concat(pieces)), 'the pieces, byte for byte');
  assert.ok(got[1].equals(after));
  assert.equal(peer.queuedBytes, 0);
  client.close();
  server.close();
});

test("a verdict after a freeze waits until an answer larger than one turn's read, already in the socket's buffers, has been read whole (afterPendingReads)", async (t) => {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  // A worker in its own process: it answers each message with 4 MB, more than libuv's 2 MiB read a turn.
  const worker = spawn(process.execPath, ['-e', `const ws = new (require(${JSON.stringify(require.resolve('ws'))}))(process.argv[1]); ws.on('message', () => ws.send(Buffer.alloc(4e6, 3)));`, `ws://127.0.0.1:${(server.address() as { port: number }).port}`], { stdio: 'inherit' });
  t.after(() => {
    worker.kill();
    server.close();
  });
  const [socket] = (await once(server, 'connection')) as [WebSocket];
  const peer = new WorkerPeer('w1', 'test', 'test-host\0' + worker.pid, '127.0.0.1', 'none', socket, () => {}, () => {});
  let answers = 0;
  let received = 0;
  socket.on('message', (d: Buffer) => {
    answers++;
    received = d.length;
  });
  // Rounds at full speed first, as in a run: the kernel grows the connection's buffers to hold a whole answer.
  for (let round = 1; round <= 8; round++) {
    socket.send('weights');
    while (answers < round) await new Promise((r) => setTimeout(r, 5));
  }
  received = 0;
  socket.send('weights');
  // This process frozen (SIGSTOP, a paused VM) while the answer comes in, past its deadline.
  for (const until = performance.now() + 1000; performance.now() < until; );
  const seen = await new Promise<number>((resolve) => afterPendingReads(() => resolve(received), () => peer.bytesRead));
  assert.equal(seen, 4e6, 'the verdict saw the whole answer');
});
