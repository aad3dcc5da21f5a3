import WebSocket from 'ws';
import { ShardAssignment } from '../data/shards';

/**
 * A connected worker as the coordinator sees it. `joined` peers have been
 * welcomed; they become `active` (get a shard, take part in rounds) at the
 * next step boundary, so a round's participants never change mid-step.
 */
export type PeerState = 'joined' | 'active';

export class WorkerPeer {
  state: PeerState = 'joined';
  shard: ShardAssignment | undefined;
  /** Versions of each network this worker holds; -1 = none. Only stale ones are sent. */
  generatorVersion = -1;
  discriminatorVersion = -1;
  offences = 0;
  lastComputeSeconds = 0;

  constructor(
    readonly id: string,
    readonly name: string,
    readonly address: string,
    readonly backend: string,
    readonly socket: WebSocket,
    private readonly countSent: (bytes: number) => void,
  ) {}

  send(frame: Buffer): void {
    if (this.socket.readyState !== WebSocket.OPEN) return;
    this.socket.send(frame);
    this.countSent(frame.length);
  }
}
