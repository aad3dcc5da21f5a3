import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { REJECT_REASONS, RejectReason } from '../protocol/codec';
import { Phase } from '../protocol/messages';

/** Where a round's time goes; the `part` label of ganfleet_round_part_seconds_total. */
export type RoundPart = 'encode' | 'compute' | 'transfer' | 'aggregate' | 'optimizer';

/**
 * The coordinator's Prometheus series. Labels stay bounded: round, part,
 * reason and worker id, never a step.
 */
export class CoordinatorMetrics {
  readonly registry = new Registry();
  // Counters count this process's work from 0, as Prometheus expects of a counter after a restart (a resumed
  // run's counters starting at the checkpoint's totals made rate() and increase() count that history again);
  // the run's position is the ganfleet_step gauge.
  readonly steps = this.counter('ganfleet_steps_total', 'Training steps completed by this process (one D and one G update each).');
  readonly images = this.counter('ganfleet_images_total', 'Real images consumed by discriminator rounds in this process.');
  readonly step = this.gauge('ganfleet_step', 'The step the run has reached (a resumed run counts from its checkpoint).');
  readonly targetSteps = this.gauge('ganfleet_target_steps', 'The step the run trains to (--steps).');
  readonly lastCheckpointStep = this.gauge('ganfleet_last_checkpoint_step', 'Step of the newest checkpoint written or resumed from; -1 before there is one.');
  readonly lastCheckpointTime = this.gauge('ganfleet_last_checkpoint_timestamp_seconds', 'Unix time of the newest checkpoint written, or of the resume from one (what a crash would lose counts from there); 0 before there is one.');
  readonly unsavedTrainingSeconds = this.gauge(
    'ganfleet_unsaved_training_seconds',
    'Training time since the newest checkpoint written (or since the start or the resume): what a crash now would lose. Pauses and evaluations are left out, so it holds still while nothing trains.',
  );
  readonly dLoss = this.gauge('ganfleet_d_loss', 'Discriminator loss of the last step (bce: mean of the real and fake BCE; lsgan: least squares).');
  readonly gLoss = this.gauge('ganfleet_g_loss', 'Generator loss of the last step (bce: non-saturating BCE; lsgan: least squares).');
  readonly dReal = this.gauge('ganfleet_d_real', 'Mean D(x) on real images in the last step: a probability with bce, a raw score with lsgan.');
  readonly dFake = this.gauge('ganfleet_d_fake', 'Mean D(G(z)) on generated images in the last step: a probability with bce, a raw score with lsgan.');
  readonly fid = this.gauge('ganfleet_fid', 'FID of the last --eval-every evaluation: ganfleet classifier features of G samples vs the MNIST test set (lower is better; comparable between ganfleet runs only).');
  readonly mnistScore = this.gauge('ganfleet_mnist_score', 'MNIST score (the Inception score formula with ganfleet\'s classifier) of the last evaluation; 1 to 10, higher is better.');
  readonly evalSeconds = this.counter('ganfleet_eval_seconds_total', 'Time spent in --eval-every evaluations (training waits meanwhile).');
  readonly workers = this.gauge('ganfleet_workers_connected', 'Workers connected to the coordinator.');
  readonly mailboxWorkers = this.gauge('ganfleet_mailbox_workers', 'Connected workers whose frames go through a shared-memory mailbox.');
  readonly paused = this.gauge('ganfleet_paused', '1 while training waits for workers: for the start count before the first step, for --min-workers after it.');
  readonly pauses = this.counter('ganfleet_pauses_total', 'Times training paused for lack of workers after it started.');
  readonly lateGradients = this.counter('ganfleet_late_gradients_total', 'Gradients discarded because their round had already closed.');
  readonly roundTimeouts = this.counter('ganfleet_round_timeouts_total', 'Workers dropped for missing a round deadline (--round-timeout).');
  readonly heartbeatTimeouts = this.counter('ganfleet_heartbeat_timeouts_total', 'Workers dropped for missing a heartbeat, or for a link that took no data for as long.');
  readonly unauthorized = this.counter('ganfleet_unauthorized_connections_total', 'WebSocket upgrades refused for a missing or wrong token.');
  readonly sentBytes = this.counter('ganfleet_sent_bytes_total', 'Bytes sent to workers.');
  readonly receivedBytes = this.counter('ganfleet_received_bytes_total', 'Bytes received from workers.');
  readonly roundDuration = new Histogram({
    name: 'ganfleet_round_duration_seconds',
    help: 'Wall time of one round, from broadcast to the optimizer update, by phase (discriminator or generator).',
    // `phase` as on the workers' series: discriminator or generator.
    labelNames: ['phase'] as const,
    // Up to past the default --round-timeout (30 s), which a round waiting for a lost worker runs into.
    buckets: [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly roundPartSeconds = this.counter('ganfleet_round_part_seconds_total', 'Round time by part: encode, compute (slowest worker), transfer (wait minus compute), aggregate, optimizer.', ['part'] as const);
  readonly rejected = this.counter('ganfleet_rejected_messages_total', 'Messages from workers rejected, by reason.', ['reason'] as const);
  readonly workerComputeSeconds = this.counter('ganfleet_worker_compute_seconds_total', 'Gradient compute time reported by each worker.', ['worker'] as const);

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'ganfleet_' });
    // NaN, not 0, until there is a value: a FID of 0 would read as perfect, a D(x) of 0 as D rejecting everything.
    for (const g of [this.fid, this.mnistScore, this.dLoss, this.gLoss, this.dReal, this.dFake]) g.set(NaN);
    this.lastCheckpointStep.set(-1);
    // Every reason's series exists from the start, so rate() and alerts see 0 rather than nothing.
    for (const reason of REJECT_REASONS) this.rejected.inc({ reason }, 0);
  }

  observeRound(phase: Phase, seconds: number, parts: Record<RoundPart, number>): void {
    this.roundDuration.observe({ phase }, seconds);
    for (const [part, s] of Object.entries(parts)) this.roundPartSeconds.inc({ part }, s);
  }

  reject(reason: RejectReason): void {
    this.rejected.inc({ reason });
  }

  private counter<L extends string = string>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  private gauge(name: string, help: string): Gauge {
    return new Gauge({ name, help, registers: [this.registry] });
  }
}

