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

/**
 * A frame larger than this (a shard) goes out as a fragmented WebSocket
 * message, one fragment handed to the socket at a time. Each write then
 * completes within seconds on any link ganfleet accepts, so a write that
 * does not complete shows a dead link (unwrittenForMs), and heartbeat pings
 * go out between fragments instead of behind the whole shard.
 */
export const FRAGMENT_BYTES = 1 << 20;
/** A link slower than this, with data queued for it, is treated as dead (1 MB/s: a 47 MB shard gets 47 s). */
export const MIN_LINK_BYTES_PER_SECOND = 1e6;

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
  /** When each write now in the socket was handed to it, oldest first; a write leaves once the operating system has taken it. */
  private readonly unwritten: number[] = [];
  /**
   * While a fragmented frame goes out, what was sent after it waits here:
   * no other message may go between a message's fragments (pings may).
   */
  private held: { frame: Buffer; written?: () => void }[] | null = null;
  /** The fragmented frame's bytes not yet handed to the socket, and the held frames'. */
  private heldBytes = 0;

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
    this.countSent(frame.length);
    this.dispatch(frame, written);
    return true;
  }

  /** Bytes sent to this peer that the operating system has not taken yet. */
  get queuedBytes(): number {
    return this.socket.bufferedAmount + this.heldBytes;
  }

  /** How long the oldest write in the socket has waited for the operating system to take it (0: none waits). */
  unwrittenForMs(now: number): number {
    return this.unwritten.length === 0 ? 0 : now - this.unwritten[0];
  }

  private dispatch(frame: Buffer, written?: () => void): void {
    if (this.held) {
      this.held.push({ frame, written });
      this.heldBytes += frame.length;
    } else if (frame.length > FRAGMENT_BYTES) {
      this.sendFragments(frame, written);
    } else {
      this.write(frame, true, written);
    }
  }

  private write(data: Buffer, fin: boolean, written?: () => void): void {
    this.unwritten.push(Date.now());
    this.socket.send(data, { binary: true, fin }, (err) => {
      this.unwritten.shift();
      if (!err) written?.();
    });
  }

  /** Hands `frame` to the socket a fragment at a time, each once the one before has been written, then what was held meanwhile. */
  private sendFragments(frame: Buffer, written?: () => void): void {
    this.held = [];
    this.heldBytes += frame.length;
    let at = 0;
    const next = () => {
      if (!this.open) return;
      const end = Math.min(at + FRAGMENT_BYTES, frame.length);
      const fragment = frame.subarray(at, end);
      this.heldBytes -= end - at;
      at = end;
      if (end < frame.length) return this.write(fragment, false, next);
      this.write(fragment, true, written);
      const held = this.held!;
      this.held = null;
      for (const h of held) {
        this.heldBytes -= h.frame.length;
        this.dispatch(h.frame, h.written);
      }
    };
    next();
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
