import { truncate } from '../util/text';

/**
 * The wire protocol. Every message is a versioned member of a discriminated
 * union; coordinator and worker each accept only their own side's union.
 * Float arrays travel as raw little-endian bytes (msgpack bin), never as
 * arrays of numbers.
 */
export const PROTOCOL_VERSION = 6;

/** The close code of a worker that gave up on a coordinator it heard nothing from (not even a ping) for 3 heartbeats. */
export const CLOSE_COORDINATOR_SILENT = 4001;

/**
 * The largest gradient magnitude a worker may send. No sane gradient of
 * these models comes near it; a larger one is divergence or an attack, and
 * squared in Adam's v it would overflow float32 and freeze those parameters for good.
 */
export const MAX_GRADIENT_ABS = 1e6;

/**
 * The largest batch mean or variance a worker may report for G's BatchNorm
 * layers. The coordinator pools them as Σw·(var + mean²) − mean², which for
 * values up to this stays near 1e30, inside float32 (3.4e38): a larger one
 * would store Infinity in a moving variance, and the momentum would keep it there.
 */
export const MAX_STATISTIC_ABS = 1e15;

/** The largest loss a worker may report: lsgan's squared error at scores of MAX_GRADIENT_ABS. */
export const MAX_LOSS = MAX_GRADIENT_ABS * MAX_GRADIENT_ABS;

/**
 * The largest frame a worker accepts from the coordinator: weights, or a
 * shard of up to about 171,000 images, so the coordinator needs at least
 * two workers for a larger training set.
 */
export const MAX_COORDINATOR_FRAME_BYTES = 128 * 1024 * 1024;

export type Phase = 'discriminator' | 'generator';

/**
 * The step a round belongs to, as logs name it. A round's `step` counts the
 * steps done before it, and the progress line names a step once it is done
 * ("step 65/1000" after 65), so the round of `step` 64 is part of step 65.
 */
export function stepOfRound(step: number): number {
  return step + 1;
}

/** worker → coordinator, first message on a new connection. */
export interface Hello {
  v: number;
  type: 'hello';
  name: string;
  backend: string;
  pid: number;
  hostname: string;
  /**
   * Random per worker process, the same across its connections: with the
   * hostname and pid it tells a process that came back from a new one that
   * got the same pair (a restarted container: same hostname, pid 1).
   * Absent from builds before it, which are known by hostname and pid alone.
   */
  instance?: string;
}

/** coordinator → worker: admitted; what to build, and how its frames travel. */
export interface Welcome {
  v: number;
  type: 'welcome';
  workerId: string;
  arch: string;
  /** The GAN objective the gradients are of ('bce' or 'lsgan'). */
  loss: string;
  /** Flat parameter counts; a worker whose build of `arch` differs refuses to start. */
  generatorSize: number;
  discriminatorSize: number;
  batchSize: number;
  /** The coordinator's --heartbeat (it pings every half of it); a worker that hears nothing for 3 of them reconnects. */
  heartbeatSeconds: number;
  /** How float arrays travel in both directions (wire-dtype.ts); absent = float32. */
  wireDtype?: string;
  /**
   * The coordinator's --d-updates, which sets what a D round's gradient is
   * (discriminatorGradientSize): 2, its two halves; 1, their sum.
   */
  discriminatorUpdates: number;
  /**
   * Offered to a worker that may share this machine (mailbox.ts): the
   * coordinator's file for this worker's frames, which starts with `nonce`.
   */
  mailbox?: string;
  nonce?: string;
}

/**
 * coordinator → worker: this worker's slice of the training set, `count`
 * images: the first `keep` of the shard it holds, then `images` (uint8
 * pixels, (count − keep)×784). A join or a leave sends only what changes hands.
 */
export interface Shard {
  v: number;
  type: 'shard';
  /** Bumped on every rebalance, so logs and metrics can tell plans apart. */
  plan: number;
  count: number;
  keep: number;
  /**
   * Seeds the worker's draws: step t's batch and noise come from stream t
   * of this seed. It stays with the shard's slot in the plan, so a
   * checkpoint can hand a resumed worker the slot's seed.
   */
  seed: number;
  images: Uint8Array;
}

/**
 * coordinator → worker: compute `phase` gradients for `step`. Carries only
 * the networks that changed since this worker last received them (G for a D
 * round, D for a G round); a worker that just joined gets both.
 */
export interface Weights {
  v: number;
  type: 'weights';
  step: number;
  phase: Phase;
  generator?: Float32Array;
  discriminator?: Float32Array;
}

/** worker → coordinator: the mean gradient over its batch, with the batch statistics. */
export interface Gradients {
  v: number;
  type: 'gradients';
  step: number;
  phase: Phase;
  samples: number;
  gradients: Float32Array;
  loss: number;
  /** Mean D(x); discriminator rounds only. */
  dReal?: number;
  /** Mean D(G(z)). */
  dFake: number;
  /** G's BatchNorm batch statistics (generator rounds of a model with BatchNorm); float32 under any wire dtype. */
  statistics?: Float32Array;
  computeSeconds: number;
}

/**
 * worker → coordinator, in answer to a welcome's mailbox: the worker found
 * the nonce there, and its own file for frames to the coordinator is `path`,
 * which starts with the same nonce.
 */
export interface MailboxReady {
  v: number;
  type: 'mailbox';
  path: string;
}

/**
 * Either side, once both mailboxes are confirmed: the sender's next frame,
 * `bytes` long, is in its file. A weights frame that comes by mail is
 * answered by mail.
 */
export interface Mail {
  v: number;
  type: 'mail';
  bytes: number;
}

/** coordinator → worker: training is over (or this worker is dismissed); exit. */
export interface Stop {
  v: number;
  type: 'stop';
  reason: string;
  /**
   * The run has steps left, which a coordinator restarted with --resume
   * would train (it was stopped by a signal, say). Absent: it is over, or
   * the coordinator predates the field.
   */
  resumable?: boolean;
}

/** Either side: the peer sent something unacceptable. */
export interface ErrorMessage {
  v: number;
  type: 'error';
  code: string;
  message: string;
}

export type CoordinatorMessage = Welcome | Shard | Weights | Mail | Stop | ErrorMessage;
export type WorkerMessage = Hello | Gradients | MailboxReady | Mail | ErrorMessage;
export type Message = CoordinatorMessage | WorkerMessage;

/** Builds a message with the current version filled in. */
export function message<M extends Message>(body: Omit<M, 'v'>): M {
  return { v: PROTOCOL_VERSION, ...body } as M;
}

/** A round's answer from what a step computed (a worker's; the coordinator's own, when it checks for divergence). */
export function gradientsMessage(
  step: number,
  phase: Phase,
  out: { samples: number; gradients: Float32Array; loss: number; dReal?: number; dFake: number; statistics?: Float32Array },
  computeSeconds: number,
): Gradients {
  const reply = message<Gradients>({ type: 'gradients', step, phase, samples: out.samples, gradients: out.gradients, loss: out.loss, dFake: out.dFake, computeSeconds });
  if (out.dReal !== undefined) reply.dReal = out.dReal;
  if (out.statistics && phase === 'generator') reply.statistics = out.statistics;
  return reply;
}

/** The longest string field either side accepts (names, paths, reasons). */
export const MAX_STRING_LENGTH = 1024;

/**
 * An error for the peer, its text cut to what the peer accepts: a longer one
 * would be refused there as a bad field, and the reason it carried lost.
 */
export function errorMessage(code: string, text: string): ErrorMessage {
  return message<ErrorMessage>({ type: 'error', code: truncate(code, MAX_STRING_LENGTH), message: truncate(text, MAX_STRING_LENGTH) });
}
