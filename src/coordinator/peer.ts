import WebSocket from 'ws';
import { ShardSlot } from '../data/shards';
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
 * A frame larger than this (a shard) goes out as a fragmented WebSocket
 * message, one fragment handed to the socket at a time. Each write then
 * completes within about a second on any link ganfleet accepts, so a socket
 * that takes no write for longer shows a dead link (stalledForMs), and
 * heartbeat pings go out between fragments instead of behind the whole shard.
 */
export const FRAGMENT_BYTES = 1 << 20;
/** A link slower than this, with data queued for it, is treated as dead (1 MB/s: a 47 MB shard gets 47 s). */
export const MIN_LINK_BYTES_PER_SECOND = 1e6;
/** What the largest write (a fragment) may take at the slowest link: the allowance, beyond the heartbeat, before a socket that takes no write is a dead link. */
export const FRAGMENT_WRITE_MS = (FRAGMENT_BYTES / MIN_LINK_BYTES_PER_SECOND) * 1000;
/**
 * The slowest a worker is taken to absorb a shard that has arrived (join its
 * fragments, decode, store), answering no ping meanwhile: 8 MB/s, some 20
 * times slower than here, gives MNIST's 47 MB 5.9 s beyond the heartbeat.
 */
export const MIN_INTAKE_BYTES_PER_SECOND = 8e6;
/** ws's own wait for a closing handshake. */
const CLOSE_TIMEOUT_MS = 30_000;

export class WorkerPeer {
  /**
   * From the first shard plan after the peer joined (the next step boundary,
   * or mid-step, where a round lost every worker and is asked again of
   * whoever has joined): only a peer that holds a shard takes part in rounds,
   * so an open round gains no participant.
   */
  shard: ShardSlot | undefined;
  /** Version of each network this worker holds; -1 = none. Only stale ones are sent. */
  readonly holds: Record<Phase, number> = { generator: -1, discriminator: -1 };
  offences = 0;
  /** Round indices (coordinator's roundIndex) this peer was sent weights for and has not answered, oldest first. */
  readonly asked: number[] = [];
  /** When its newest request left (performance.now()): how long one dropped at a deadline took to come back. */
  lastAskedAt = 0;
  lastComputeSeconds = 0;
  /** A heartbeat ping is queued or on the wire, awaiting its pong. */
  pingInFlight = false;
  /**
   * When that ping left this process. The pong is due an interval after
   * this, not after the ping was queued: behind a shard on a slow link the
   * ping can wait seconds to be sent.
   */
  pingWrittenAt: number | null = null;
  lastPongAt = performance.now();
  /**
   * Until when the worker may still be taking in the shard it was sent last
   * (MIN_INTAKE_BYTES_PER_SECOND from when it left this process): a pong is
   * due an interval after this, where that is later than its ping's leaving.
   * 0 once the worker has answered a request (Receiver.onGradients).
   */
  intakeEndsAt = 0;
  mailbox: PeerMailbox | null = null;
  /** Writes handed to the socket that the operating system has not taken yet. */
  private unwritten = 0;
  /** Since when the socket has taken no write while one waits: the first write's handover, or the last write's completion. */
  private waitingSince = 0;
  /**
   * While a fragmented frame goes out, what was sent after it waits here:
   * no other message may go between a message's fragments (pings may).
   */
  private held: ({ frame: Buffer | EncodedFrame; written?: () => void } | { close: [code?: number, reason?: string | Buffer] })[] | null = null;
  /** The fragmented frame's bytes not yet handed to the socket, and the held frames'. */
  private heldBytes = 0;
  /** ws's own close, which `close` calls once nothing is held. */
  private readonly closeSocket: WebSocket['close'];
  /** A close waits behind held frames: nothing more is sent, nor read. */
  private closing = false;

  constructor(
    readonly id: string,
    readonly name: string,
    /** The worker process (its hostname and pid), the same across its connections. */
    readonly origin: string,
    readonly address: string,
    readonly backend: string,
    readonly socket: WebSocket,
    private readonly countSent: (bytes: number) => void,
    /** The mailbox failed (a full /dev/shm, say) and was closed: frames go over the socket from now on. */
    private readonly mailboxLost: (why: string) => void,
  ) {
    // ws answers a peer's close frame at once, between the fragments of a
    // frame; RFC 6455 (5.5.1) lets an endpoint first finish the message it is
    // sending, which keeps what was held behind it (the answers to the peer's last messages).
    this.closeSocket = socket.close.bind(socket);
    socket.close = (code?: number, reason?: string | Buffer) => this.close(code, reason);
  }

  /** Open, and not waiting to close. */
  get open(): boolean {
    return this.socket.readyState === WebSocket.OPEN && !this.closing;
  }

  /**
   * False when the socket is no longer open and nothing was sent.
   * `written` runs once the frame has been handed to the operating system.
   * A frame in pieces (a shard: its images are one) goes out without joining
   * them, read as its fragments go: its arrays must not change meanwhile.
   */
  send(frame: Buffer | EncodedFrame, written?: () => void): boolean {
    if (!this.open) return false;
    this.countSent(frame.length);
    this.dispatch(frame, written);
    return true;
  }

  /**
   * Closes the connection once everything sent before has gone, as when a
   * shard was one write: a close frame may not overtake held frames. Until
   * then the peer is not open: nothing more is sent, and it is not read.
   */
  close(code?: number, reason?: string | Buffer): void {
    if (!this.held) {
      if (this.closing) this.socket.resume();
      return this.closeSocket(code, reason);
    }
    if (this.closing) return;
    this.closing = true;
    this.held.push({ close: [code, reason] });
    this.socket.pause();
    // As ws's own closing handshake does, a peer that never takes what is queued is cut off.
    setTimeout(() => this.socket.terminate(), CLOSE_TIMEOUT_MS).unref();
  }

  /** Bytes read from this peer's connection so far. */
  get bytesRead(): number {
    return bytesReadOf(this.socket);
  }

  /** Bytes sent to this peer that the operating system has not taken yet. */
  get queuedBytes(): number {
    return this.socket.bufferedAmount + this.heldBytes;
  }

  /**
   * How long the socket has gone without the operating system taking a
   * write while one waits (0: none waits). No write is larger than a
   * fragment, so on a live link of 1 MB/s this stays near a second.
   */
  stalledForMs(now: number): number {
    return this.unwritten === 0 ? 0 : now - this.waitingSince;
  }

  private dispatch(frame: Buffer | EncodedFrame, written?: () => void): void {
    if (this.socket.readyState !== WebSocket.OPEN) return;
    if (this.held) {
      this.held.push({ frame, written });
      this.heldBytes += frame.length;
    } else if (frame.length > FRAGMENT_BYTES) {
      this.sendFragments(frame instanceof EncodedFrame ? frame.parts : [frame], written);
    } else {
      this.write(frame instanceof EncodedFrame ? frame.whole : frame, true, written);
    }
  }

  private write(data: Buffer, fin: boolean, written?: () => void): void {
    if (this.unwritten++ === 0) this.waitingSince = performance.now();
    this.socket.send(data, { binary: true, fin }, (err) => {
      this.unwritten--;
      this.waitingSince = performance.now();
      if (!err) written?.();
    });
  }

  /**
   * Hands a frame's `pieces` to the socket a fragment at a time (at most
   * FRAGMENT_BYTES, never spanning two pieces), each once the one before has
   * been written, then what was held meanwhile. A socket that closes midway
   * takes the rest with it.
   */
  private sendFragments(pieces: readonly Buffer[], written?: () => void): void {
    this.held = [];
    this.heldBytes += pieces.reduce((n, p) => n + p.length, 0);
    let piece = 0;
    let at = 0;
    const next = () => {
      if (this.socket.readyState !== WebSocket.OPEN) return;
      const end = Math.min(at + FRAGMENT_BYTES, pieces[piece].length);
      const fragment = pieces[piece].subarray(at, end);
      this.heldBytes -= end - at;
      at = end;
      if (at === pieces[piece].length) [piece, at] = [piece + 1, 0];
      if (piece < pieces.length) return this.write(fragment, false, next);
      this.write(fragment, true, () => {
        written?.();
        this.releaseHeld();
      });
    };
    next();
  }

  private releaseHeld(): void {
    const held = this.held!;
    this.held = null;
    for (const h of held) {
      if ('close' in h) {
        // A frame of this batch that went out in fragments holds again what follows it, the close too.
        const heldAgain = this.held as typeof held | null;
        if (heldAgain) heldAgain.push(h);
        else this.close(...h.close);
        continue;
      }
      this.heldBytes -= h.frame.length;
      this.dispatch(h.frame, h.written);
    }
  }

  /**
   * Like send, but through the mailbox, with a notice on the socket, once
   * both ends have confirmed it. Not while a request is unanswered (a round
   * asked again after the peer lost its answer to an offence): its notice may
   * still be unread, and rewriting the file would tear the frame it announces.
   */
  deliver(frame: EncodedFrame, written?: () => void): boolean {
    if (!this.mailbox?.inbox || this.asked.length > 0) return this.send(frame.whole, written);
    if (!this.open) return false;
    try {
      this.mailbox.outbox.post(frame);
    } catch (e) {
      this.loseMailbox((e as Error).message);
      return this.send(frame.whole, written);
    }
    this.countSent(frame.length);
    return this.send(encode(message<Mail>({ type: 'mail', bytes: frame.length })), written);
  }

  /**
   * This side's file failed (a full /dev/shm, a read error): frames go over the socket from now on, both ways.
   * No notice of the outbox is unread then (deliver mails only when every request was answered), so it is emptied.
   */
  loseMailbox(why: string): void {
    this.mailbox?.outbox.discard();
    this.closeMailbox();
    this.mailboxLost(why);
  }

  closeMailbox(): void {
    this.mailbox?.outbox.close();
    this.mailbox?.inbox?.close();
    this.mailbox = null;
  }
}

/** Bytes read from a WebSocket's connection so far (ws keeps the connection as `_socket`); 0 once it is gone. */
export function bytesReadOf(socket: WebSocket): number {
  return (socket as unknown as { _socket?: { bytesRead: number } | null })._socket?.bytesRead ?? 0;
}
