import WebSocket from 'ws';
import { ShardAssignment } from '../data/shards';
import { EncodedFrame, encode } from '../protocol/codec';
import { Inbox, Outbox } from '../protocol/mailbox';
import { Mail, Phase, message } from '../protocol/messages';

/**
 * A shared-memory mailbox offered to a worker (protocol/mailbox.ts). Frames
 * go through it once the worker has shown it reads `outbox` and the
 * coordinator has opened the worker's file as `inbox`.
 */
export interface PeerMailbox {
  outbox: Outbox;
  nonce: string;
  inbox: Inbox | null;
}

/**
 * A connected worker as the coordinator sees it. `joined` peers have been
 * welcomed; they become `active` (get a shard, take part in rounds) at the
 * next step boundary, so a round's participants never change mid-step.
 */
export type PeerState = 'joined' | 'active';

export class WorkerPeer {
  state: PeerState = 'joined';
  shard: ShardAssignment | undefined;
  /** Version of each network this worker holds; -1 = none. Only stale ones are sent. */
  readonly holds: Record<Phase, number> = { generator: -1, discriminator: -1 };
  offences = 0;
  /** Round indices (coordinator's roundIndex) this peer was sent weights for and has not answered, oldest first. */
  readonly asked: number[] = [];
  lastComputeSeconds = 0;
  /** A heartbeat ping is queued or on the wire, awaiting its pong. */
  pingInFlight = false;
  /**
   * When that ping left this process. The pong is due an interval after
   * this, not after the ping was queued: behind a shard on a slow link the
   * ping can wait seconds to be sent.
   */
  pingWrittenAt: number | null = null;
  lastPongAt = Date.now();
  mailbox: PeerMailbox | null = null;

  constructor(
    readonly id: string,
    readonly name: string,
    readonly address: string,
    readonly backend: string,
    readonly socket: WebSocket,
    private readonly countSent: (bytes: number) => void,
    /** The mailbox failed (a full /dev/shm, say) and was closed: frames go over the socket from now on. */
    private readonly mailboxLost: (why: string) => void,
  ) {}

  get open(): boolean {
    return this.socket.readyState === WebSocket.OPEN;
  }

  /**
   * False when the socket is no longer open and nothing was sent.
   * `written` runs once the frame has been handed to the operating system.
   */
  send(frame: Buffer, written?: () => void): boolean {
    if (!this.open) return false;
    this.socket.send(frame, written && ((err) => !err && written()));
    this.countSent(frame.length);
    return true;
  }

  /** Like send, but through the mailbox, with a notice on the socket, once both ends have confirmed it. */
  deliver(frame: EncodedFrame, written?: () => void): boolean {
    if (!this.mailbox?.inbox) return this.send(frame.whole, written);
    if (!this.open) return false;
    try {
      this.mailbox.outbox.post(frame);
    } catch (e) {
      this.closeMailbox();
      this.mailboxLost((e as Error).message);
      return this.send(frame.whole, written);
    }
    this.countSent(frame.length);
    return this.send(encode(message<Mail>({ type: 'mail', bytes: frame.length })), written);
  }

  closeMailbox(): void {
    this.mailbox?.outbox.close();
    this.mailbox?.inbox?.close();
    this.mailbox = null;
  }
}
