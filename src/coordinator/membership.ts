import path from 'node:path';
import WebSocket from 'ws';
import { ShardSlot, gatherImages, planShards } from '../data/shards';
import { RejectReason, encode, encodeFrame } from '../protocol/codec';
import { Inbox, Outbox, mailboxMedium, mailboxNonce, makeMailboxDir, removeMailboxDir } from '../protocol/mailbox';
import { Hello, MAX_COORDINATOR_FRAME_BYTES, MAX_STRING_LENGTH, MailboxReady, Shard, Stop, Welcome, errorMessage, message } from '../protocol/messages';
import { IMAGE_SIZE } from '../data/image';
import { GanfleetError } from '../util/errors';
import { afterPendingReads, emitted, sleep } from '../util/events';
import { Logger, hostOf, peerString, throttledLogger } from '../util/log';
import { plural, truncate } from '../util/text';
import { CoordinatorConfig } from './config';
import { CoordinatorMetrics } from './metrics';
import { HeartbeatVerdict, heartbeatVerdict } from './heartbeat';
import { MIN_INTAKE_BYTES_PER_SECOND, WorkerPeer } from './peer';

/** How long a coordinator's close waits for the workers it told to stop to close their connections. */
const DISMISS_WAIT_MS = 5000;

/** The most images a shard may hold: its frame, with a little room for the message around them, is one a worker accepts. */
export const MAX_SHARD_IMAGES = Math.floor((MAX_COORDINATOR_FRAME_BYTES - 64 * 1024) / IMAGE_SIZE);

/** What a welcome tells every worker, besides its id and its mailbox. */
export type WelcomeTerms = Omit<Welcome, 'v' | 'type' | 'workerId' | 'mailbox' | 'nonce'>;

/** What the group needs from the coordinator that runs it. */
export interface GroupHooks {
  log: Logger;
  metrics: CoordinatorMetrics;
  /** What every welcome tells a worker. */
  terms(): WelcomeTerms;
  /** A seed for a new slot of the plan (drawn from a checkpointed RNG, so a resumed run draws new ones). */
  newSeed(): number;
  /** Bytes handed to a peer's socket or mailbox. */
  countSent(bytes: number): void;
  /** A peer left: the open round must stop awaiting it. */
  left(workerId: string): void;
  /** A peer joined or left: wakes whoever waits for workers. */
  changed(): void;
  /**
   * A worker process dropped at a deadline while asked the round of this
   * roundIndex came back `seconds` after it was asked: alive, only slower
   * than --heartbeat or --round-timeout.
   */
  cameBackOverdue(round: number, seconds: number): void;
}

/**
 * The connected workers, kept as torchrun's elastic agent keeps its worker
 * group: admission up to --max-workers, liveness by heartbeat, departure
 * (which the open round hears of, so a failed worker is a state, not an
 * exception), and at a step boundary a new shard plan if anyone joined or
 * left. Peers that joined take part only from that plan on.
 */
export class WorkerGroup {
  private readonly peers = new Map<string, WorkerPeer>();
  /** Worker processes dropped at a deadline with a request unanswered, by origin: that round, and when it was asked. */
  private readonly overdue = new Map<string, { round: number; askedAt: number }>();
  /** The number in the next worker's id; checkpointed, so a resumed run does not hand out the ids of the checkpoint's run again (those after it, it may). */
  nextWorker = 1;
  private plan = 0;
  private membershipChanged = false;
  /** A checkpoint's slots, for the peers of the next plan that hold none (restoreSlots). */
  private restored: ShardSlot[] = [];
  /** This process's shared-memory mailboxes, one file per worker; null when not offered. */
  private mailboxDir: string | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  /** --max-workers, or fewer where the training set has fewer images (fitToImages). */
  private capacity: number;
  /**
   * The stop every peer was sent (dismiss), and its reason ("finished N
   * steps", or what stopped the run): a hello after it gets the same, not a
   * welcome to a run that is over.
   */
  private dismissal: { frame: Buffer; reason: string } | null = null;
  /**
   * Worker processes (WorkerPeer.origin) that left this run without hearing
   * that it is over, and will reconnect to ask: dropped, cut off, or whose
   * link broke. The label names them in the log. A finished run waits a
   * while for them (tellLateWorkers), so that each exits instead of trying
   * for ever.
   */
  private readonly untold = new Map<string, string>();
  /**
   * Worker processes refused as one too many (COORDINATOR_FULL: past
   * --max-workers, or more workers than images) that this run never
   * admitted: spares that retry for ever, as the untold do, unless a
   * finished run tells them to stop. The label names them in the log.
   */
  private readonly spares = new Map<string, string>();
  /**
   * The worker processes (WorkerPeer.origin) admitted by this coordinator
   * that may come back: connected, or gone without leaving on their own. One
   * that left on its own exits, so it is forgotten, and the set does not grow
   * with every process a long, elastic run has seen (a reused pid is a new
   * process, and counts as one).
   */
  private readonly joined = new Set<string>();
  /** Worker processes admitted so far, each counted once however often it rejoined. */
  private processes = 0;
  /** Called as an untold worker hears the dismissal, while tellLateWorkers waits. */
  private toldOne: (() => void) | null = null;
  /** A refused hello can be repeated at will: at most a line a minute per address. */
  private readonly logRefusal: (key: string, msg: string) => void;

  constructor(
    private readonly config: Pick<CoordinatorConfig, 'maxWorkers' | 'heartbeatSeconds' | 'mailbox'>,
    private readonly hooks: GroupHooks,
  ) {
    this.capacity = config.maxWorkers;
    this.logRefusal = throttledLogger(hooks.log);
  }

  /**
   * The fewest workers whose shards of `images` each fit in a frame a worker
   * accepts; throws when --max-workers (or the images, one each) cannot reach it,
   * or `startWorkers` workers would not each get an image.
   */
  fitToImages(images: number, startWorkers: number): number {
    const fewest = Math.ceil(images / MAX_SHARD_IMAGES);
    this.capacity = Math.min(this.config.maxWorkers, images);
    if (fewest > this.capacity) {
      throw new GanfleetError('DATA_NEEDS_WORKERS', `${images} training images need at least ${fewest} workers (a worker takes a shard of at most ${MAX_SHARD_IMAGES}), above --max-workers ${this.config.maxWorkers} (local: --workers)`);
    }
    if (startWorkers > images) throw new GanfleetError('DATA_TOO_SMALL', `${images} training images cannot give each of ${startWorkers} workers a shard`);
    return fewest;
  }

  get(workerId: string): WorkerPeer | undefined {
    return this.peers.get(workerId);
  }

  list(): WorkerPeer[] {
    return [...this.peers.values()];
  }

  /** Peers whose socket is open; a closing one still in the group until its close event cannot take part. */
  openCount(): number {
    let n = 0;
    for (const p of this.peers.values()) if (p.open) n++;
    return n;
  }

  /** The peers a round asks: given a shard by a plan, and still open. */
  participants(): WorkerPeer[] {
    return this.list().filter((p) => p.shard && p.open);
  }

  /** Welcomes a worker that said hello; null where it is told to stop (the run is closing) or refused (the group is full). */
  admit(hello: Hello, socket: WebSocket, address: string): WorkerPeer | null {
    const { log } = this.hooks;
    const label = `${peerString(hello.name)} pid ${hello.pid}, backend ${peerString(hello.backend)}`;
    const origin = originOf(hello);
    if (this.dismissal) {
      // Connected before the listener stopped accepting, or to a finished run waiting for its late workers.
      log(`told ${address} (${label}) to stop: ${this.dismissal.reason}`);
      socket.send(this.dismissal.frame);
      socket.close(1000, 'stopping');
      this.untold.delete(origin);
      this.spares.delete(origin);
      this.toldOne?.();
      return null;
    }
    if (this.peers.size >= this.capacity) {
      const why =
        this.capacity < this.config.maxWorkers
          ? `the training set's ${this.capacity} images give at most ${this.capacity} workers a shard`
          : `the coordinator already has --max-workers ${this.config.maxWorkers} workers`;
      this.logRefusal(hostOf(address), `refused ${address} (${label}): ${why}`);
      if (!this.joined.has(origin)) this.spares.set(origin, peerString(hello.name));
      socket.send(encode(errorMessage('COORDINATOR_FULL', why)));
      socket.close(1013, 'full');
      return null;
    }
    const n = this.nextWorker++;
    const peer = new WorkerPeer(`w${n}`, hello.name, origin, address, hello.backend, socket, (bytes) => this.hooks.countSent(bytes), (why) => {
      log(`w${n}: its mailbox failed (${why}); its frames go over the WebSocket from now on`);
      this.countMailboxes();
    });
    this.peers.set(peer.id, peer);
    const overdue = this.overdue.get(origin);
    if (overdue) {
      this.overdue.delete(origin);
      this.hooks.cameBackOverdue(overdue.round, (performance.now() - overdue.askedAt) / 1000);
    }
    if (!this.joined.has(origin)) {
      this.joined.add(origin);
      this.processes++;
    }
    // Back in the group (not refused as one too many): it hears the run's end with the others.
    this.untold.delete(origin);
    this.spares.delete(origin);
    this.offerMailbox(peer);
    peer.send(this.welcome(peer));
    log(`${peer.id} joined from ${address} (${label}); ${this.peers.size} connected`);
    this.joinedOrLeft();
    return peer;
  }

  /** `leftOnItsOwn`: the worker closed the connection itself, leaving (it exits): it will not ask how the run ended. */
  remove(peer: WorkerPeer, why: string, leftOnItsOwn = false): void {
    if (this.peers.get(peer.id) !== peer) return;
    this.peers.delete(peer.id);
    if (!this.dismissal && !leftOnItsOwn) this.untold.set(peer.origin, `${peer.id} ${peerString(peer.name)}`);
    // It exits: it will not be admitted again.
    if (leftOnItsOwn) this.joined.delete(peer.origin);
    peer.closeMailbox();
    this.countMailboxes();
    this.hooks.left(peer.id);
    this.hooks.metrics.workerComputeSeconds.remove({ worker: peer.id });
    this.hooks.log(`${peer.id} left (${why}); ${this.peers.size} connected`);
    this.joinedOrLeft();
  }

  /** A new peer's welcome: the terms every worker gets, its id, and its mailbox where it has one. */
  private welcome(peer: WorkerPeer): Buffer {
    const mailbox = peer.mailbox ? { mailbox: peer.mailbox.outbox.path, nonce: peer.mailbox.nonce } : {};
    return encode(message<Welcome>({ type: 'welcome', workerId: peer.id, ...this.hooks.terms(), ...mailbox }));
  }

  /** The next step boundary plans shards afresh, and whoever waits for workers hears of the change. */
  private joinedOrLeft(): void {
    this.membershipChanged = true;
    this.hooks.metrics.workers.set(this.peers.size);
    this.hooks.changed();
  }

  /**
   * Cuts a peer off now: it stops being awaited, and is told why. Its socket
   * stays open until the peer answers the close, or for ws's close timeout
   * (30 s), so that a worker that was only frozen (SIGSTOP, a paused VM)
   * reads the reason when it wakes. A socket cut while the worker slept
   * answered the worker's first write after waking with a reset, which could
   * discard the unread reason: the worker logged only that it was closed (1006).
   * What the peer sends meanwhile is discarded (Receiver.discardFromDropped).
   * `overdue`: dropped at a deadline (its heartbeat's or its round's).
   */
  drop(peer: WorkerPeer, why: string, overdue = false): void {
    // Its late answer may never reach this socket (a round longer than ws's close timeout): its return is the sign it lived.
    if (overdue && peer.asked.length > 0) this.overdue.set(peer.origin, { round: peer.asked.at(-1)!, askedAt: peer.lastAskedAt });
    this.remove(peer, why);
    peer.send(encode(errorMessage('COORDINATOR_DROPPED', why)));
    peer.close(4000, 'dropped');
  }

  /** Cuts off a peer whose link takes no writes: nothing sent would reach it, and what is queued for it is freed. */
  cutOff(peer: WorkerPeer, why: string): void {
    this.remove(peer, why);
    peer.socket.terminate();
  }

  /** The plan's slots, in the order of the plan: what a checkpoint keeps. */
  slots(): ShardSlot[] {
    return this.list().flatMap((p) => (p.shard ? [p.shard] : []));
  }

  /**
   * A resumed run's slots: the next plan gives them, in order, to the peers
   * that hold no shard, so that the same number of workers as at the
   * checkpoint draws the same batches from the same images.
   */
  restoreSlots(slots: ShardSlot[]): void {
    this.restored = slots;
  }

  /**
   * At a step boundary, if anyone joined or left since the last plan: every
   * peer gets a shard, and each whose shard changed is sent what it lacks
   * (and how much of its old shard to keep). A slot keeps its seed; a new
   * slot takes a restored one's, or a new seed.
   */
  rebalanceIfChanged(permutation: Uint32Array, images: Uint8Array): void {
    if (!this.membershipChanged) return;
    this.membershipChanged = false;
    this.plan++;
    const peers = this.list();
    const restored = this.restored.splice(0);
    const offered = restored.length;
    const starts = peers.map((p) => p.shard ?? restored.shift());
    const restoredCount = offered - restored.length;
    const startsById = new Map<string, Uint32Array>();
    peers.forEach((p, i) => starts[i] && startsById.set(p.id, starts[i]!.indices));
    const assignments = planShards(permutation, peers.map((p) => p.id), startsById);
    let sent = 0;
    assignments.forEach((a, i) => {
      const peer = peers[i];
      const held = peer.shard;
      if (held && a.kept === held.indices.length && a.kept === a.indices.length) return;
      const seed = starts[i]?.seed ?? this.hooks.newSeed();
      // A restored slot sets where a shard starts, but the peer holds none of it yet.
      const keep = held ? a.kept : 0;
      peer.shard = { indices: a.indices, seed };
      const added = a.indices.subarray(keep);
      sent += added.length;
      const frame = encodeFrame(message<Shard>({ type: 'shard', plan: this.plan, count: a.indices.length, keep, seed, images: gatherImages(images, added) }));
      peer.send(frame, () => (peer.intakeEndsAt = performance.now() + (frame.length / MIN_INTAKE_BYTES_PER_SECOND) * 1000));
    });
    const restoredNote = restoredCount > 0 ? `; ${plural(restoredCount, 'slot')} from the checkpoint` : '';
    this.hooks.log(`shard plan ${this.plan}: ${assignments.map((a) => `${a.workerId}=${a.indices.length}`).join(' ')}; ${plural(sent, 'image')} sent${restoredNote}`);
  }

  startHeartbeats(): void {
    // Pings go out every half interval; a pong is due within one interval of its ping leaving.
    this.heartbeat = setInterval(() => this.checkHeartbeats(), (this.config.heartbeatSeconds * 1000) / 4);
    this.heartbeat.unref();
  }

  stopHeartbeats(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
  }

  receivedPong(peer: WorkerPeer): void {
    peer.pingInFlight = false;
    peer.pingWrittenAt = null;
    peer.lastPongAt = performance.now();
  }

  private checkHeartbeats(): void {
    for (const peer of this.list()) {
      if (heartbeatVerdict(peer, this.config.heartbeatSeconds) === null) continue;
      // A pong, or a write completed, while this process was stopped (a freeze, a long fsync) counts first.
      afterPendingReads(
        () => {
          if (this.list().includes(peer)) this.act(peer, heartbeatVerdict(peer, this.config.heartbeatSeconds));
        },
        () => peer.bytesRead,
      );
    }
  }

  private act(peer: WorkerPeer, verdict: HeartbeatVerdict): void {
    if (verdict === null) return;
    if (verdict === 'ping') {
      peer.pingInFlight = true;
      peer.socket.ping(undefined, undefined, (err) => {
        if (!err && peer.pingInFlight) peer.pingWrittenAt = performance.now();
      });
      return;
    }
    this.hooks.metrics.heartbeatTimeouts.inc();
    if ('cut' in verdict) this.cutOff(peer, verdict.cut);
    else this.drop(peer, verdict.drop, true);
  }

  /** Sends every peer `stop`, and waits up to DISMISS_WAIT_MS for their sockets to close. */
  async dismiss(reason: string, resumable: boolean): Promise<void> {
    // Cut to what a worker accepts: a longer reason (an error naming a long path) would make it refuse the stop.
    const stop = encode(message<Stop>({ type: 'stop', reason: truncate(reason, MAX_STRING_LENGTH), ...(resumable ? { resumable } : {}) }));
    this.dismissal = { frame: stop, reason };
    const peers = this.list();
    for (const peer of peers) peer.send(stop);
    const closed = peers.filter((p) => p.socket.readyState !== WebSocket.CLOSED).map((p) => emitted(p.socket, 'close'));
    await Promise.race([Promise.all(closed), new Promise((r) => setTimeout(r, DISMISS_WAIT_MS).unref())]);
    const open = peers.filter((p) => p.socket.readyState !== WebSocket.CLOSED);
    // The exit waited for them: the log says why, and that they may not have heard the stop.
    if (open.length > 0) {
      this.hooks.log(`${open.map((p) => p.id).join(', ')} did not close ${open.length === 1 ? 'its connection' : 'their connections'} within ${DISMISS_WAIT_MS / 1000} s of being told to stop (frozen, or a link that takes no data): the coordinator closes without waiting longer`);
    }
  }

  /**
   * After dismiss: waits up to `ms` for the workers that left without
   * hearing the run is over to reconnect, and be told (admit). `anyone`:
   * they are not known (the workers of an earlier coordinator that told
   * none of them), so the whole time.
   * Returns the labels of those not told.
   */
  async tellLateWorkers(ms: number, anyone: boolean, abort: AbortSignal): Promise<string[]> {
    const allTold = new AbortController();
    this.toldOne = () => {
      if (!anyone && this.untold.size === 0 && this.spares.size === 0) allTold.abort();
    };
    this.toldOne();
    await sleep(ms, AbortSignal.any([abort, allTold.signal]));
    this.toldOne = null;
    return [...this.untoldWorkers(), ...this.sparesTurnedAway()];
  }

  /** Worker processes admitted so far, each counted once however often it rejoined. */
  processesJoined(): number {
    return this.processes;
  }

  /** The labels of the workers that left without hearing the run is over. */
  untoldWorkers(): string[] {
    return [...this.untold.values()];
  }

  /** The labels of the workers refused as one too many and never admitted: they too retry until told the run is over. */
  sparesTurnedAway(): string[] {
    return [...this.spares.values()];
  }

  /** Makes the directory that new peers' mailboxes go in, unless --no-mailbox; without one, frames use the socket. */
  offerMailboxes(): void {
    if (!this.config.mailbox) return this.hooks.log("no shared-memory mailboxes (--no-mailbox): every worker's frames travel over the WebSocket");
    try {
      this.mailboxDir = makeMailboxDir('coordinator');
    } catch (e) {
      this.hooks.log(`no shared-memory mailboxes; frames travel over the WebSocket (${(e as Error).message})`);
    }
  }

  /**
   * The worker read our mailbox and names its own: use both once it holds
   * the nonce. Null, or why the message is rejected. A file that cannot be
   * used withdraws the offer: the peer's frames go over the socket.
   */
  confirmMailbox(peer: WorkerPeer, msg: MailboxReady): [RejectReason, string] | null {
    const offered = peer.mailbox;
    if (!offered || offered.inbox) return ['unexpected', 'mailbox without an open offer'];
    try {
      offered.inbox = Inbox.open(msg.path, offered.nonce, 'worker');
    } catch (e) {
      peer.closeMailbox();
      // The reason stays in this log: told to the peer, it would say what lies at paths of its choosing here.
      this.hooks.log(`${peer.id}: its mailbox cannot be used here (${(e as Error).message})`);
      return ['bad_field', 'the mailbox named cannot be used by the coordinator (its log says why); frames go over the WebSocket'];
    }
    this.hooks.log(`${peer.id} exchanges frames through ${mailboxMedium()}`);
    this.countMailboxes();
    return null;
  }

  /** Closes every peer's mailbox and removes the directory they were in. */
  closeMailboxes(): void {
    for (const peer of this.peers.values()) peer.closeMailbox();
    if (this.mailboxDir) removeMailboxDir(this.mailboxDir);
    this.mailboxDir = null;
  }

  /** Makes a new peer a mailbox for its frames, unless this coordinator has none to offer (--no-mailbox, no directory). */
  private offerMailbox(peer: WorkerPeer): void {
    if (!this.mailboxDir) return;
    const nonce = mailboxNonce();
    try {
      peer.mailbox = { outbox: Outbox.create(path.join(this.mailboxDir, peer.id), nonce), nonce, inbox: null };
    } catch (e) {
      this.hooks.log(`${peer.id}: no mailbox (${(e as Error).message})`);
    }
  }

  private countMailboxes(): void {
    let n = 0;
    for (const p of this.peers.values()) if (p.mailbox?.inbox) n++;
    this.hooks.metrics.mailboxWorkers.set(n);
  }
}

/** A worker process across its connections: its hello's hostname, pid and instance. */
function originOf(hello: Hello): string {
  return `${hello.hostname}\0${hello.pid}\0${hello.instance ?? ''}`;
}
