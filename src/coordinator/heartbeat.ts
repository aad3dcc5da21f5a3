import { FRAGMENT_WRITE_MS, WorkerPeer } from './peer';

/** A peer's link cut, the peer dropped, a ping sent, or nothing due. */
export type HeartbeatVerdict = { cut: string } | { drop: string } | 'ping' | null;

/**
 * What is due for a peer's heartbeat, if anything. The monotonic clock, as
 * for every time a peer is judged by: a step of the wall clock (NTP) would
 * stop the pings for as long as it stepped back.
 */
export function heartbeatVerdict(peer: WorkerPeer, heartbeatSeconds: number): HeartbeatVerdict {
  const now = performance.now();
  const intervalMs = heartbeatSeconds * 1000;
  // A ping waits behind a write the link does not take, so a dead link
  // (a frozen or vanished worker with data queued for it) is seen by its writes.
  const stalledMs = peer.stalledForMs(now);
  if (stalledMs > intervalMs + FRAGMENT_WRITE_MS) {
    return { cut: `its link took no write for ${(stalledMs / 1000).toFixed(1)} s (dead, or slower than 1 MiB in --heartbeat + 1 s)` };
  }
  // A worker taking in its shard answers no ping: the time allowed for that comes first.
  if (peer.pingWrittenAt !== null && now - Math.max(peer.pingWrittenAt, peer.intakeEndsAt) > intervalMs) {
    // The time since its last pong: the ping leaves half an interval or more after it, so 1.5 to 2 intervals.
    return { drop: `no heartbeat for ${((now - peer.lastPongAt) / 1000).toFixed(1)} s (--heartbeat ${heartbeatSeconds})` };
  }
  return !peer.pingInFlight && peer.open && now - peer.lastPongAt >= intervalMs / 2 ? 'ping' : null;
}
