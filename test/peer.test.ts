import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import WebSocket, { WebSocketServer } from 'ws';
import { FRAGMENT_BYTES, WorkerPeer } from '../src/coordinator/peer';

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
