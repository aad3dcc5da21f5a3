import WebSocket from 'ws';
import { DiscriminatorUpdates, GanModel, discriminatorGradientSize } from '../model';
import { ProtocolError, RejectReason, decodeWorkerMessage, encode, protocolErrorCode } from '../protocol/codec';
import { CLOSE_COORDINATOR_SILENT, Gradients, WorkerMessage, errorMessage, stepOfRound } from '../protocol/messages';
import { GanfleetError } from '../util/errors';
import { afterPendingReads } from '../util/events';
import { Logger, hostOf, peerString, throttledLogger } from '../util/log';
import { CoordinatorMetrics } from './metrics';
import { WorkerGroup } from './membership';
import { WorkerPeer, bytesReadOf } from './peer';
import { AnswerTerms, Round, implausibleGradients, roundIndex, roundName } from './round';

/** A peer that sends this many rejected messages is disconnected. */
const MAX_OFFENCES = 3;
/** A socket that has not said hello within `timeoutMs` is closed (an object, so that a test may wait less). */
export const HELLO_TIMING = { timeoutMs: 10_000 };

/** The largest frame a worker may send: the larger round's gradients (D's once per D update) plus envelope. */
function maxWorkerFrame(model: GanModel, updates: DiscriminatorUpdates): number {
  return 4 * Math.max(model.generatorLayout.size, discriminatorGradientSize(model, updates)) + 64 * 1024;
}

/** What the receiver needs from the coordinator whose rounds it feeds. */
export interface ReceiverHooks {
  log: Logger;
  metrics: CoordinatorMetrics;
  workers: WorkerGroup;
  /** The round now open, or null between rounds. */
  openRound(): Round | null;
  /** roundIndex of the newest round that has closed: gradients up to it are late, beyond it premature. */
  lastClosedRound(): number;
  /** Bytes read from a socket or a mailbox. */
  countReceived(bytes: number): void;
  /** An answer to `round` was refused as not finite or out of range: training may have diverged. */
  refusedAsImplausible(round: Round): void;
}

/**
 * What an admitted socket says: a hello first, then gradients, mailbox
 * confirmations and errors. Every message is checked before it reaches a
 * round; what fails a check is rejected, and repeat offenders are cut off.
 */
export class Receiver {
  readonly maxPayload: number;
  /**
   * For what a peer that is not yet anyone (no accepted hello) can repeat at
   * will: at most a line a minute per address and kind, as for a wrong token.
   */
  private readonly logUnidentified: (key: string, msg: string) => void;
  /** Whether the log has said, once, what a dropped worker's late answer means. */
  private saidAliveWhenDropped = false;

  constructor(
    private readonly model: GanModel,
    private readonly terms: AnswerTerms,
    private readonly hooks: ReceiverHooks,
  ) {
    this.maxPayload = maxWorkerFrame(model, terms.discriminatorUpdates);
    this.logUnidentified = throttledLogger(hooks.log);
  }

  accept(socket: WebSocket, address: string): void {
    const { log, metrics, workers } = this.hooks;
    let peer: WorkerPeer | null = null;
    const { timeoutMs } = HELLO_TIMING;
    const silent = () => {
      // Said meanwhile (read once this process, woken from a stop, reads its sockets): admitted, or refused and closing.
      if (peer || socket.readyState !== WebSocket.OPEN) return;
      this.logUnidentified(`${hostOf(address)} silent`, `closing ${address}: no hello within ${timeoutMs / 1000} s`);
      socket.terminate();
    };
    const helloTimer = setTimeout(() => afterPendingReads(silent, () => bytesReadOf(socket)), timeoutMs);
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      this.hooks.countReceived(data.length);
      // Frames already in flight when we closed this socket are not acted on (a hello would welcome a ghost).
      if (peer ? !peer.open : socket.readyState !== WebSocket.OPEN) {
        if (peer) this.discardFromDropped(peer, data);
        return;
      }
      let msg: WorkerMessage;
      try {
        if (!isBinary) throw new ProtocolError('bad_frame', 'text frames are not part of the protocol');
        msg = decodeWorkerMessage(data);
        if (msg.type === 'mail') msg = this.collectMail(peer, msg.bytes);
      } catch (e) {
        if (e instanceof GanfleetError && e.code === 'MAILBOX_READ_FAILED' && peer) {
          // Our read failed, not the worker: its answer is lost, and a worker answers the way it was asked,
          // so from now on over the socket. A round left with no answer is asked again.
          peer.loseMailbox(e.message);
          this.hooks.openRound()?.drop(peer.id);
          return;
        }
        const err = e instanceof ProtocolError ? e : new ProtocolError('bad_frame', (e as Error).message);
        // Before its hello, a frame of an older version is an older ganfleet's worker: answered in that version.
        return this.reject(socket, peer ?? address, err.reason, err.message, true, peer ? undefined : err.olderVersion);
      }
      if (!peer) {
        if (msg.type !== 'hello') return this.reject(socket, address, 'unexpected', `expected hello, got ${msg.type}`);
        clearTimeout(helloTimer);
        peer = workers.admit(msg, socket, address);
        return;
      }
      switch (msg.type) {
        case 'gradients':
          return this.onGradients(peer, msg);
        case 'error':
          // Healthy workers send an error only just before leaving; it counts, so a connection cannot flood the log.
          log(`${peer.id} reported ${peerString(msg.code)}: ${peerString(msg.message)}`);
          if (++peer.offences >= MAX_OFFENCES) {
            peer.asked.length = 0; // an offender's answers to come are not a straggler's (discardFromDropped)
            workers.drop(peer, 'too many errors');
          }
          return;
        case 'mailbox': {
          const problem = workers.confirmMailbox(peer, msg);
          // A worker's file that cannot be used here (another user's, say) is no offence, and costs the worker no answer.
          if (problem) this.reject(peer.socket, peer, problem[0], problem[1], problem[0] === 'unexpected');
          return;
        }
        case 'hello':
          return this.reject(socket, peer, 'unexpected', 'hello sent twice');
      }
    });
    socket.on('pong', () => {
      if (peer) workers.receivedPong(peer);
    });
    socket.on('close', (code) => {
      clearTimeout(helloTimer);
      // 1000 from a worker: it is leaving (a signal, a stop), and will not ask how the run ended. 1006 (no close
      // frame) is a worker lost, which the log must not word as one that left on its own.
      const leftOnItsOwn = code === 1000;
      const why = leftOnItsOwn
        ? 'disconnected'
        : code === 1006
          ? 'connection lost, no close: crashed, killed or cut off'
          : // This process was frozen (stopped, a paused VM, a long synchronous write) or the link was down: the worker lived.
            code === CLOSE_COORDINATOR_SILENT
            ? 'it heard nothing from this coordinator for 3 heartbeats: this process was stopped or frozen, or the link was down; the worker reconnects by itself'
            : `closed with code ${code}`;
      if (peer) workers.remove(peer, why, leftOnItsOwn);
    });
    socket.on('error', (e: Error & { code?: string }) => {
      // ws closes the socket (1009) on a frame above maxPayload and reports it here.
      if (e.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') metrics.reject('too_large');
      if (peer) log(`socket ${peer.id}: ${e.message}`);
      else this.logUnidentified(`${hostOf(address)} socket`, `socket ${address}: ${e.message}`);
    });
  }

  /**
   * What a dropped peer sent before it heard (a straggler past its deadline,
   * a frozen one past its heartbeat): an answer to a request it was sent is
   * counted late, as any answer after its round closed is, and nothing is
   * acted on. Anything else it sends is ignored, so it can add no more lines
   * than it had requests. A mail notice answers the oldest request (a worker
   * answers in order) and is not read.
   */
  private discardFromDropped(peer: WorkerPeer, data: Buffer): void {
    // Nothing it sends can answer a request any more: not even worth decoding, for up to ws's 30 s close timeout.
    if (peer.asked.length === 0) return;
    let msg: WorkerMessage;
    try {
      msg = decodeWorkerMessage(data);
    } catch {
      return;
    }
    let what: string;
    if (msg.type === 'gradients') {
      const request = peer.asked.indexOf(roundIndex(msg.step, msg.phase));
      if (request < 0) return;
      peer.asked.splice(0, request + 1);
      what = roundName(roundIndex(msg.step, msg.phase));
    } else if (msg.type === 'mail') {
      what = `${roundName(peer.asked.shift()!)} (by mail)`;
    } else {
      return;
    }
    this.hooks.metrics.lateGradients.inc();
    this.hooks.log(`discarded late ${what} from ${peer.id}, which was dropped before they came`);
    if (!this.saidAliveWhenDropped) {
      this.saidAliveWhenDropped = true;
      // A heartbeat or deadline shorter than a round on this machine drops live workers, and the log said only "dropped".
      this.hooks.log(`${peer.id} was alive when dropped: only slow, or its link stalled for a while; where this machine is busy (or its first rounds compile kernels), a larger --heartbeat and --round-timeout keep such workers`);
    }
  }

  /** The frame a `mail` notice announces, decoded; only gradients travel by mail. */
  private collectMail(peer: WorkerPeer | null, bytes: number): WorkerMessage {
    const inbox = peer?.mailbox?.inbox;
    if (!inbox) throw new ProtocolError('unexpected', 'mail without a confirmed mailbox');
    // While the open round awaits this peer, into the peer's reused memory: the
    // gradients are averaged when the round closes, before the next round can
    // await the peer again, and nothing the peer sends in between is read there.
    const frame = inbox.collect(bytes, this.maxPayload, this.hooks.openRound()?.isAwaiting(peer!.id) ?? false);
    this.hooks.countReceived(frame.length);
    const inner = decodeWorkerMessage(frame);
    if (inner.type !== 'gradients') throw new ProtocolError('unexpected', `a mailed ${inner.type} message`);
    return inner;
  }

  /**
   * An answer is taken only against a request: the peer's queue of rounds it
   * was sent weights for. A worker answers its requests in order, so the
   * answer must be for one of them, and it settles that one and any skipped
   * before it. So a worker asked twice for one round (a retried round) may
   * answer twice, a straggler is discarded once per request, and a copy, a
   * replay or a round never asked is an offence that cannot flood the log.
   */
  private onGradients(peer: WorkerPeer, msg: Gradients): void {
    const round = this.hooks.openRound();
    const sent = roundIndex(msg.step, msg.phase);
    const forOpenRound = round !== null && sent === roundIndex(round.step, round.phase);
    if (!forOpenRound && sent > this.hooks.lastClosedRound()) {
      return this.reject(peer.socket, peer, 'wrong_step', `gradients for step ${stepOfRound(msg.step)} (${msg.phase}) do not belong to any round so far`);
    }
    const request = peer.asked.indexOf(sent);
    if (request < 0) return this.reject(peer.socket, peer, 'wrong_step', `gradients for step ${stepOfRound(msg.step)} (${msg.phase}) answer no open request to ${peer.id}`);
    peer.asked.splice(0, request + 1);
    // Answering, the worker has taken in any shard sent before the request: pongs are due within the heartbeat again.
    peer.intakeEndsAt = 0;
    const problem = implausibleGradients(msg, this.model, this.terms);
    if (problem) return this.reject(peer.socket, peer, problem[0], problem[1]);
    if (forOpenRound && round.isAwaiting(peer.id)) return round.accept(peer.id, msg);
    // Its round closed without it (or dropped it for an offence): never applied to newer weights; no offence.
    this.hooks.metrics.lateGradients.inc();
    this.hooks.log(`discarded late ${roundName(roundIndex(msg.step, msg.phase))} from ${peer.id}`);
  }

  /**
   * Counts a rejection, tells the peer why, and cuts off unidentified peers
   * (`from` their address). An `offence` also costs a welcomed peer its
   * answer to the open round, and repeat offenders their connection.
   * `olderVersion` is the protocol version of a worker of an older ganfleet (before its hello), which cannot read this one's frames:
   * its refusal goes out in that version (whose error message has always been {code, message}), saying to upgrade it.
   */
  private reject(socket: WebSocket, from: WorkerPeer | string, reason: RejectReason, text: string, offence = true, olderVersion?: number): void {
    this.hooks.metrics.reject(reason);
    const peer = typeof from === 'string' ? null : from;
    if (peer) this.hooks.log(`rejected a message from ${peer.id} (${reason}): ${text}`);
    else this.logUnidentified(`${hostOf(from as string)} rejected`, `rejected a message from an unidentified peer at ${from as string} (${reason}): ${text}`);
    const refusal = errorMessage(protocolErrorCode(reason), text);
    const error =
      olderVersion === undefined
        ? encode(refusal)
        : encode({
            ...refusal,
            v: olderVersion,
            message: `this worker runs an older ganfleet than the coordinator (protocol version ${olderVersion}, the coordinator's ${refusal.v}): upgrade the worker to the coordinator's ganfleet version`,
          });
    // A peer's own send keeps the error out of the middle of a fragmented shard.
    if (peer) peer.send(error);
    else if (socket.readyState === WebSocket.OPEN) socket.send(error);
    if (!peer) return socket.close(1008, 'protocol violation');
    const round = this.hooks.openRound();
    if ((reason === 'not_finite' || reason === 'out_of_range') && round?.isAwaiting(peer.id)) this.hooks.refusedAsImplausible(round);
    if (!offence) return;
    // Whatever the bad message was meant to be, this peer has no usable answer for the open round.
    round?.drop(peer.id);
    if (++peer.offences >= MAX_OFFENCES) {
      // What it sends from here on is an offender's, not a straggler's answer (discardFromDropped).
      peer.asked.length = 0;
      peer.close(1008, 'protocol violation');
      this.hooks.workers.remove(peer, `${MAX_OFFENCES} rejected messages`);
    }
  }
}
