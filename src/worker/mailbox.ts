import path from 'node:path';
import { EncodedFrame } from '../protocol/codec';
import { Inbox, Outbox, mailboxMedium, makeMailboxDir, removeMailboxDir } from '../protocol/mailbox';
import { Welcome } from '../protocol/messages';
import { Logger } from '../util/log';

/** Both ends of a worker's mailbox: the coordinator's file it reads, and its own. */
export class WorkerMailbox {
  /** Set once this worker's file could not take a frame: gradients then go over the socket. */
  private outboxFailed = false;

  private constructor(
    readonly inbox: Inbox,
    private readonly outbox: Outbox,
    private readonly dir: string,
    private readonly log: Logger,
  ) {}

  /** The path the coordinator reads this worker's frames from. */
  get outboxPath(): string {
    return this.outbox.path;
  }

  /** Null, with the reason logged, where the coordinator's file cannot be read here (another machine or container). */
  static open(welcome: Welcome, log: Logger): WorkerMailbox | null {
    let inbox: Inbox;
    try {
      inbox = Inbox.open(welcome.mailbox!, welcome.nonce!, 'coordinator');
    } catch (e) {
      log(`frames travel over the WebSocket: the coordinator's mailbox is not readable here (${(e as Error).message})`);
      return null;
    }
    let dir: string | null = null;
    try {
      dir = makeMailboxDir('worker');
      const outbox = Outbox.create(path.join(dir, 'to-coordinator'), welcome.nonce!);
      log(`frames travel through ${mailboxMedium()} (${dir})`);
      return new WorkerMailbox(inbox, outbox, dir, log);
    } catch (e) {
      inbox.close();
      if (dir) removeMailboxDir(dir);
      log(`frames travel over the WebSocket: no mailbox of this worker's own (${(e as Error).message})`);
      return null;
    }
  }

  /**
   * False when this worker's file cannot take the frame (a full /dev/shm,
   * say): gradients go over the socket from then on, which the coordinator
   * accepts, while weights may still come by mail.
   */
  post(frame: EncodedFrame): boolean {
    if (this.outboxFailed) return false;
    try {
      this.outbox.post(frame);
      return true;
    } catch (e) {
      this.outboxFailed = true;
      // Its partial frame would hold /dev/shm full for the rest of the connection (the coordinator keeps the file open).
      this.outbox.discard();
      this.log(`mailbox failed (${(e as Error).message}); gradients go over the WebSocket from now on`);
      return false;
    }
  }

  close(): void {
    this.inbox.close();
    this.outbox.close();
    removeMailboxDir(this.dir);
  }
}
