import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import WebSocket, { WebSocketServer } from 'ws';
import { FRAGMENT_BYTES, WorkerPeer } from '../src/coordinator/peer';
import { EncodedFrame } from '../src/protocol/codec';
import { Outbox, mailboxNonce, makeMailboxDir, removeMailboxDir } from '../src/protocol/mailbox';
import { afterPendingReads, sleep as sleepUnless } from '../src/util/events';

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
  const serverClosed = once(peer.socket, 'close');
  const started = performance.now();
  peer.close(1008, 'protocol violation');
  assert.equal(peer.open, false, 'a closing peer takes part in nothing more');
  // Lost, the close would come as the 30 s cut-off: 1006, without this code and reason.
  const [code, reason] = (await closed) as [number, Buffer];
  // The paused socket is read again for the worker's answering close frame: the handshake ends at once, not at ws's 30 s wait.
  await serverClosed;
  assert.ok(performance.now() - started < 5000, `the closing handshake took ${Math.round(performance.now() - started)} ms`);
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
  // `written`, once the last fragment is with the operating system: the coordinator times a shard's intake from it.
  let written = 0;
  assert.ok(peer.send(frame, () => written++));
  assert.ok(peer.send(after));
  await received;
  assert.equal(written, 1, 'the fragmented frame reported written');
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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The client stops reading: what the peer sends fills the kernel's buffers, and then its writes wait. */
function stopReading(client: WebSocket): void {
  (client as unknown as { _socket: import('node:net').Socket })._socket.pause();
}

/** Waits until the link has taken no more of what is queued for `ms` on end: the kernel's buffers are full. */
async function untilLinkFull(peer: WorkerPeer, ms = 200): Promise<void> {
  let last = -1;
  while (peer.queuedBytes !== last) {
    last = peer.queuedBytes;
    await sleep(ms);
  }
}

test('the stall clock runs from the last write the link took: frames still handed to a link that takes none do not hide it (it was cut late, or never)', async () => {
  const { peer, client, server } = await peerPair();
  stopReading(client);
  // Frames of one fragment each, far more than loopback's buffers hold: the link stops taking them.
  const frame = Buffer.alloc(FRAGMENT_BYTES, 1);
  for (let i = 0; i < 64; i++) assert.ok(peer.send(frame));
  await untilLinkFull(peer);
  assert.ok(peer.queuedBytes > 0, 'writes wait');
  const stalledBefore = peer.stalledForMs(performance.now());
  await sleep(400);
  // A small frame (a request, an error) handed to the dead link is no write it took.
  assert.ok(peer.send(Buffer.from('weights')));
  const stalled = peer.stalledForMs(performance.now());
  // Less a margin: a timer's start is the event loop's cached time, so by performance.now a sleep can end a little
  // (on a loaded machine, a few ms) short of 400 ms. A clock restarted by the frame would read about 0.
  assert.ok(stalled >= stalledBefore + 350, `stalled for ${stalled.toFixed(0)} ms, ${stalledBefore.toFixed(0)} ms before the last 400 ms`);
  // The link takes a write again (the client reads a little), more still waiting: the clock starts over from that write.
  const socket = (client as unknown as { _socket: import('node:net').Socket })._socket;
  let read = 0;
  const readSome = (chunk: Buffer) => {
    if ((read += chunk.length) < 3 * FRAGMENT_BYTES) return;
    socket.pause();
    socket.off('data', readSome);
  };
  socket.on('data', readSome);
  socket.resume();
  await sleep(100);
  assert.ok(peer.queuedBytes > 0, 'writes still wait');
  const restarted = peer.stalledForMs(performance.now());
  assert.ok(restarted < 300, `stalled for ${restarted.toFixed(0)} ms after the link took a write`);
  client.terminate();
  server.close();
});

test('what is queued for a peer counts the fragments of a shard not yet handed to the socket, and the frames held behind it', async () => {
  const { peer, client, server } = await peerPair();
  stopReading(client);
  const shard = Buffer.alloc(8 * FRAGMENT_BYTES, 1);
  const weights = Buffer.alloc(1000, 2);
  assert.ok(peer.send(shard));
  assert.ok(peer.send(weights));
  // One fragment is with the socket (or the kernel); the other seven and the weights wait here.
  assert.ok(peer.queuedBytes >= 7 * FRAGMENT_BYTES + weights.length, `${peer.queuedBytes} bytes queued`);
  await untilLinkFull(peer);
  // Loopback's buffers hold less than the shard: the rest still counts.
  assert.ok(peer.queuedBytes >= weights.length + FRAGMENT_BYTES, `${peer.queuedBytes} bytes queued once the link is full`);
  client.terminate();
  server.close();
});

test("a mailbox lost to a failed write is emptied before it is closed: the worker's inbox, which holds the file open, no longer keeps a stale frame in /dev/shm", (t) => {
  const dir = makeMailboxDir('coordinator');
  t.after(() => removeMailboxDir(dir));
  const outbox = Outbox.create(path.join(dir, 'w1'), mailboxNonce());
  outbox.post(new EncodedFrame([Buffer.alloc(500_000, 7)]));
  // The worker's inbox: the file open for reading, for the rest of its connection.
  const held = fs.openSync(outbox.path, 'r');
  t.after(() => fs.closeSync(held));
  assert.ok(fs.fstatSync(held).size >= 500_000);
  const lost: string[] = [];
  const socket = { close() {}, readyState: WebSocket.OPEN } as unknown as WebSocket;
  const peer = new WorkerPeer('w1', 'test', 'test-host\0' + process.pid, '127.0.0.1', 'none', socket, () => {}, (why) => lost.push(why));
  peer.mailbox = { outbox, nonce: 'n', inbox: null };
  peer.loseMailbox('ENOSPC: no space left on device');
  assert.deepEqual(lost, ['ENOSPC: no space left on device']);
  assert.equal(peer.mailbox, null);
  assert.ok(!fs.existsSync(outbox.path), 'the file is removed');
  assert.equal(fs.fstatSync(held).size, 0, 'and its bytes freed, though the worker still holds it open');
});

test('sleep ends at once on an abort already fired, and on one fired meanwhile, not at its time', async () => {
  const t0 = performance.now();
  await sleepUnless(5000, AbortSignal.abort());
  const aborted = new AbortController();
  setTimeout(() => aborted.abort(), 50);
  await sleepUnless(5000, aborted.signal);
  assert.ok(performance.now() - t0 < 2000, `slept ${performance.now() - t0} ms`);
  // Without one, it waits its time.
  const t1 = performance.now();
  await sleepUnless(100);
  assert.ok(performance.now() - t1 >= 95, `slept ${performance.now() - t1} ms`);
});
