import { EventEmitter, once } from 'node:events';
import http from 'node:http';
import path from 'node:path';
import v8 from 'node:v8';
import { selectBackend } from '../backend';
import { MnistSet, imagesFingerprint, loadMnist } from '../data/mnist';
import { GanModel, GanParameters, createModel, discriminatorGradientSize } from '../model';
import { BN_MOMENTUM, updateMovingStatistics } from '../model/batchnorm';
import { EncodedFrame, FLOAT32_MAX, encodeFrame, firstOutside } from '../protocol/codec';
import { Gradients, Phase, Weights, message, stepOfRound } from '../protocol/messages';
import { Logger, createLogger, peerString } from '../util/log';
import { plural, someOf, urlHost } from '../util/text';
import { Rng } from '../util/rng';
import { afterPendingReads } from '../util/events';
import { Adam, AdamState, applyDiscriminatorUpdates } from './adam';
import { averageGradients } from './aggregate';
import { Checkpoint, checkpointName } from './checkpoint';
import { ImagesFingerprint, checkpointConfig, checkpointToResume, resumeWarnings, shardsToResume } from './resume';
import { RunOutputs } from './run-outputs';
import { CoordinatorConfig, MAX_TIMER_MS } from './config';
import { History } from './history';
import { boundPort, serveHttp } from '../util/http';
import { WorkerListener } from './listener';
import { CoordinatorMetrics, RoundPart } from './metrics';
import { MAX_SHARD_IMAGES, WorkerGroup } from './membership';
import { CoordinatorStatus, runSettings, statusRoutes, workerRows } from './status';
import { MIN_LINK_BYTES_PER_SECOND, WorkerPeer } from './peer';
import { Round, RoundResult, RoundRetries, roundIndex, weightedStats } from './round';
import { Receiver } from './receiver';
import { ownAnswerProblem } from './divergence';
import { spreadGrids } from './samples';
import { Elapsed, FIRST_LINE_NOTICE_SECONDS, RunClock, StepStats, firstLineNotice, progressLine } from './progress';
import { Evaluation, Evaluator, showEvaluation } from './evaluation';

const EMPTY = new Float32Array(0);

/** Whether a `--*-every N` output falls at `step`; N = 0 means only the one at the end. */
function due(step: number, every: number): boolean {
  return every > 0 && step % every === 0;
}

export interface TrainingSummary {
  /** The step reached (a resumed run counts from the checkpoint's step). */
  steps: number;
  /** Steps run by this process. */
  stepsThisRun: number;
  resumedFrom: number | null;
  /** False when training stopped early for a failure (not a requested stop). */
  ok: boolean;
  /** Wall time from the first step to the last. */
  seconds: number;
  /** The part of `seconds` spent waiting for workers, which msPerStep and imagesPerSecond leave out. */
  pausedSeconds: number;
  /** The part of `seconds` spent scoring G (--eval-every), which msPerStep and imagesPerSecond leave out too. */
  evaluationSeconds: number;
  msPerStep: number;
  imagesPerSecond: number;
  /** Mean milliseconds per step spent in each part of the two rounds. */
  msPerStepByPhase: Record<RoundPart, number>;
  bytesSentPerStep: number;
  bytesReceivedPerStep: number;
  last: StepStats | null;
  samples: string[];
  /** Null where the run diverged: its weights are not exported. */
  generator: string | null;
  checkpoint: string | null;
  /** The --eval-every results of this run. */
  evaluations: Evaluation[];
  stopReason: string;
}

export type { CoordinatorStatus } from './status';

export type { Evaluation } from './evaluation';

/** Why training stops; `failed` marks a stop the run did not ask for. */
export interface Stop {
  reason: string;
  failed: boolean;
}

/**
 * Turns off V8's incremental marking in this process. Left on, it settled a
 * coordinator whose workers' frames come over the WebSocket into a major GC
 * every 6 or 7 steps, for the whole run, in 6 of 11 runs of `local --workers
 * 2 --no-mailbox` (2,000 steps: 294–324 mark-compacts against 2–4 in the
 * other runs, and about 10% more time; never through the mailboxes, nor in a
 * worker). Without it, 12 of 12 such runs took 3–5 (docs/performance.md,
 * session 39). A major GC is then one pause of 5–26 ms, taken when the heap
 * reaches its limit (22–23 MB survive it).
 */
function fewerMajorCollections(): void {
  v8.setFlagsFromString('--no-incremental-marking');
}

/**
 * Owns the weights and the two Adam states. Each step runs a D round then a
 * G round: broadcast the networks a worker lacks, wait for every
 * participant's gradient (or its departure, or the round timeout), average
 * by sample count, and apply Adam. Membership changes take effect at step
 * boundaries (or mid-step, where a round lost every worker), and a step is
 * applied whole or not at all.
 */
export class Coordinator {
  readonly metrics = new CoordinatorMetrics();
  private readonly model: GanModel;
  private readonly params: GanParameters;
  private readonly adam: Record<Phase, Adam>;
  /** The round's averaged gradients: D's once per D update (discriminatorGradientSize). */
  private readonly averaged: Record<Phase, Float32Array>;
  /** One of D's updates, from those halves (applyDiscriminatorUpdates). */
  private readonly discriminatorUpdate: Float32Array;
  private readonly versions: Record<Phase, number> = { generator: 0, discriminator: 0 };
  /** D before this step's D update, restored if the step cannot finish. */
  private readonly rollback: { discriminator: Float32Array; adam: AdamState };
  private readonly workers: WorkerGroup;
  private readonly receiver: Receiver;
  private readonly events = new EventEmitter();
  private readonly outputs: RunOutputs;
  private readonly partTotals: Record<RoundPart, number> = { encode: 0, compute: 0, transfer: 0, aggregate: 0, optimizer: 0 };
  private seedRng: Rng;
  private train!: MnistSet;
  /** Kept in checkpoints, so that a resume on other images is reported whatever their path. */
  private trainFingerprint!: ImagesFingerprint;
  /** The fewest workers whose shards each fit in a frame a worker accepts: 1 for MNIST. */
  private fewestWorkers = 1;
  private permutation!: Uint32Array;
  private listener!: WorkerListener;
  private metricsServer: http.Server | null = null;
  private round: Round | null = null;
  private step = 0;
  private resumedFrom: number | null = null;
  private stop: Stop | null = null;
  /**
   * Set as the run ends: whom close() waits for to tell that the run is over
   * (where a stop was asked for, only names: its signal ended the wait).
   * `anyone`: a resumed run whose earlier coordinator stopped without
   * telling its workers, and not all of them came back (a finished run found
   * without its summary, or a short rest of a run over before a worker's
   * backoff): who is still out there is not known.
   */
  private lateWorkers: { anyone: boolean } | null = null;
  /** Workers that trained at the checkpoint this run resumed from (its slots; 0 before format 2 or without a resume). */
  private checkpointWorkers = 0;
  /** A stop asked for once the run is over ends close()'s wait for late workers. */
  private readonly lateWorkersWait = new AbortController();
  private bytesSent = 0;
  private bytesReceived = 0;
  private imagesTotal = 0;
  private imagesThisRun = 0;
  /** roundIndex of the newest round that has closed: gradients up to it are late, beyond it premature. */
  private lastClosedRound = -1;
  /** Null without --eval-every. */
  private evaluator: Evaluator | null = null;
  /** Training seconds since the newest checkpoint (or the start, or the resume): the work a crash would lose. */
  private unsavedSeconds = 0;
  /** The step of the checkpoint this process wrote last (null before one), so that the end does not write one twice. */
  private checkpointedStep: number | null = null;
  /** Why run() failed, if it did. */
  private failure: string | null = null;
  private readonly history = new History();
  private state: Exclude<CoordinatorStatus['state'], 'evaluating'> = 'waiting';
  private last: StepStats | null = null;
  /** Why training diverged (the coordinator's own answer to a round was refused as the workers' were), or null. */
  private diverged: string | null = null;
  /** The round asked again, and its workers dropped at a deadline that came back: when asking again is hopeless. */
  private readonly retries = new RoundRetries();
  /** The last round whose refused answers were checked against the coordinator's own: once a round. */
  private checkedRound = -1;
  /** The resumed checkpoint's step is due an evaluation that was never recorded (cut short by a kill or a stop): done before training. */
  private evaluationMissed = false;
  private readonly clock = new RunClock();

  private constructor(
    readonly config: CoordinatorConfig,
    private readonly log: Logger,
  ) {
    this.model = createModel(config.arch, config.loss);
    this.params = this.model.init(new Rng(config.seed));
    this.metrics.targetSteps.set(config.steps);
    const size = { generator: this.model.generatorLayout.size, discriminator: this.model.discriminatorLayout.size };
    this.adam = { generator: new Adam(size.generator, config.adam), discriminator: new Adam(size.discriminator, config.adam) };
    this.averaged = { generator: new Float32Array(size.generator), discriminator: new Float32Array(discriminatorGradientSize(this.model, config.discriminatorUpdates)) };
    this.discriminatorUpdate = new Float32Array(size.discriminator);
    this.rollback = {
      discriminator: new Float32Array(size.discriminator),
      adam: { step: 0, m: new Float32Array(size.discriminator), v: new Float32Array(size.discriminator) },
    };
    this.seedRng = new Rng(config.seed + 3);
    this.outputs = new RunOutputs(config, this.model, log);
    this.workers = new WorkerGroup(config, {
      log,
      metrics: this.metrics,
      terms: () => ({
        arch: this.model.arch,
        loss: this.model.loss,
        generatorSize: this.model.generatorLayout.size,
        discriminatorSize: this.model.discriminatorLayout.size,
        batchSize: config.batchSize,
        heartbeatSeconds: config.heartbeatSeconds,
        wireDtype: config.wireDtype,
        discriminatorUpdates: config.discriminatorUpdates,
      }),
      newSeed: () => this.seedRng.nextUint32(),
      countSent: (bytes) => {
        this.bytesSent += bytes;
        this.metrics.sentBytes.inc(bytes);
      },
      left: (workerId) => this.round?.drop(workerId),
      changed: () => this.events.emit('peers'),
      cameBackOverdue: (round, seconds) => this.retries.overdueCameBack(round, seconds),
    });
    this.receiver = new Receiver(this.model, config, {
      log,
      metrics: this.metrics,
      workers: this.workers,
      openRound: () => this.round,
      lastClosedRound: () => this.lastClosedRound,
      countReceived: (bytes) => {
        this.bytesReceived += bytes;
        this.metrics.receivedBytes.inc(bytes);
      },
      refusedAsImplausible: (round) => this.checkDivergence(round),
    });
  }

  /**
   * Takes --out, loads the data (and a checkpoint with --resume), selects a
   * backend and binds both ports. `abort` (a signal) ends a wait for another
   * machine's lease on --out.
   */
  static async start(config: CoordinatorConfig, log: Logger = createLogger('coordinator'), abort?: AbortSignal): Promise<Coordinator> {
    fewerMajorCollections();
    const c = new Coordinator(config, log);
    await c.outputs.claimLease((why) => c.requestStop(`${why}; this run stops without writing there`, true), abort);
    let listening = false;
    try {
      c.outputs.prepare();
      const backend = await selectBackend(config.backend);
      log(`backend ${backend.name} (${backend.notes.join('; ')})`);
      c.train = loadMnist('train', config.dataDir);
      if (config.evalEvery > 0) c.evaluator = new Evaluator(c.model, config, { log, metrics: c.metrics, clock: c.clock, outputs: c.outputs, stopping: () => c.stop !== null });
      c.trainFingerprint = imagesFingerprint(c.train);
      c.fewestWorkers = c.workers.fitToImages(c.train.count, config.startWorkers);
      if (c.fewestWorkers > Math.min(config.startWorkers, config.minWorkers)) {
        log(`the ${c.train.count} training images need at least ${c.fewestWorkers} workers (a worker takes a shard of at most ${MAX_SHARD_IMAGES}): training waits for them`);
      }
      c.permutation = new Rng(config.seed + 1).permutation(c.train.count);
      // Resuming sets bad files aside and starting removes later outputs: not once a takeover (of a coordinator
      // frozen while it started) has made them another run's.
      c.outputs.assertStillHeld();
      if (config.resume) c.resume();
      await c.listen();
      listening = true;
      // Once started: a start that fails (a port in use) leaves the outputs as they were.
      c.outputs.assertStillHeld();
      c.outputs.forgetLaterOutputs(c.resumedFrom);
    } catch (e) {
      // A worker may have joined meanwhile: it is told why, as at any stop.
      if (listening) await c.close(`the coordinator could not start: ${(e as Error).message}`).catch(() => {}); // the start's error is the one to report
      else c.outputs.releaseLease();
      throw e;
    }
    return c;
  }

  get port(): number {
    return this.listener.port;
  }

  get url(): string {
    return this.listener.url;
  }

  get metricsPort(): number | null {
    return this.metricsServer ? boundPort(this.metricsServer) : null;
  }

  /**
   * Ends training at the next step boundary (a step in progress finishes);
   * outputs and a checkpoint are still written. `failed` marks a stop that
   * the run did not ask for, which makes the process exit non-zero.
   */
  requestStop(reason: string, failed = false): void {
    if (this.stop) return this.lateWorkersWait.abort(reason);
    this.stop = { reason, failed };
    this.log(`stop requested: ${reason}`);
    this.events.emit('peers');
  }

  /** Training is over: every step done, or a stop asked for. A worker lost now is not replaced. */
  get trainingOver(): boolean {
    return this.stop !== null || this.step >= this.config.steps;
  }

  /** No step has started: training waits for its first workers (or scores a resumed checkpoint's step first). */
  get waitingToStart(): boolean {
    return this.state === 'waiting';
  }

  /** A stop was asked for: the run ends at the next step boundary, so a worker lost now is not replaced. */
  get stopping(): boolean {
    return this.stop !== null;
  }

  private resume(): void {
    const found = checkpointToResume(this.config, this.log);
    if (!found) return;
    const c = found.checkpoint;
    this.restoreTraining(c);
    this.evaluationMissed = this.outputs.resumeFrom(found.file, c.step).missedEvaluation;
    const lastEvaluation = this.outputs.evaluations.at(-1);
    if (lastEvaluation) showEvaluation(this.metrics, lastEvaluation);
    // Nothing to train (a restarted pod of a finished run): how training would go is beside the point.
    if (c.step >= this.config.steps) return this.log(`resumed from ${found.file} at step ${c.step}, which --steps ${this.config.steps} does not pass`);
    const now = checkpointConfig(this.config, this.trainFingerprint);
    for (const warning of resumeWarnings(now, c.config)) this.log(`warning: ${warning}`);
    const shards = shardsToResume(c, now);
    this.workers.restoreSlots(shards.slots);
    this.log(`resumed from ${found.file} at step ${c.step}; ${shards.note}`);
    const slots = shards.slots.length;
    if (slots > this.config.maxWorkers) {
      this.log(`this run takes at most ${plural(this.config.maxWorkers, 'worker')} (--max-workers; local: --workers), the checkpoint's had ${slots}: the run continues the same training with new draws`);
    } else if (slots > this.config.startWorkers) {
      this.log(`training starts once ${this.config.startWorkers} worker${this.config.startWorkers === 1 ? ' has' : 's have'} joined; to continue bit for bit, resume with --min-workers ${slots}, so that it waits for all ${slots}`);
    }
  }

  /** The weights, both Adam states, the seed generator and the counters, as checkpoint `c` holds them. */
  private restoreTraining(c: Checkpoint): void {
    this.model.generatorLayout.checkLength(c.generator);
    this.model.discriminatorLayout.checkLength(c.discriminator);
    this.params.generator.set(c.generator);
    this.params.discriminator.set(c.discriminator);
    this.adam.generator.restoreState(c.adamGenerator);
    this.adam.discriminator.restoreState(c.adamDiscriminator);
    this.seedRng = Rng.fromState(c.seedRng);
    this.workers.nextWorker = c.nextWorker;
    this.step = c.step;
    this.resumedFrom = c.step;
    this.checkpointWorkers = c.shards.length;
    this.imagesTotal = c.imagesTotal;
    this.metrics.step.set(c.step);
    this.metrics.lastCheckpointStep.set(c.step);
    // What a crash would lose counts from here: the steps before are in the checkpoint, however old it is.
    this.metrics.lastCheckpointTime.set(Date.now() / 1000);
    this.lastClosedRound = roundIndex(c.step, 'discriminator') - 1;
  }

  private async listen(): Promise<void> {
    this.listener = await WorkerListener.open(this.config, this.receiver.maxPayload, { log: this.log, metrics: this.metrics }, (socket, address) => this.receiver.accept(socket, address));
    this.workers.startHeartbeats();
    this.workers.offerMailboxes();
    const { host, metricsPort } = this.config;
    if (metricsPort >= 0) {
      const routes = statusRoutes({ status: () => this.status(), history: this.history, readGrid: (name) => this.outputs.readGrid(name) });
      try {
        this.metricsServer = await serveHttp(this.metrics.registry, host, metricsPort, routes, '--host');
      } catch (e) {
        this.workers.stopHeartbeats();
        await this.listener.close();
        this.workers.closeMailboxes();
        throw e;
      }
      this.log(`metrics on http://${urlHost(host)}:${this.metricsPort}/metrics, status page on http://${urlHost(host)}:${this.metricsPort}/`);
    }
  }

  async run(): Promise<TrainingSummary> {
    try {
      return await this.trainSteps();
    } catch (e) {
      this.outputs.markSummaryFailed(e);
      // What close() tells the workers, whose logs said only "coordinator closing" for a run that failed.
      this.failure ??= `the coordinator failed: ${(e as Error).message}`;
      throw e;
    }
  }

  private async trainSteps(): Promise<TrainingSummary> {
    const { steps, logEvery } = this.config;
    const firstStep = this.step;
    if (this.evaluationMissed && !this.outputs.forfeited) {
      this.log(`eval step ${this.step}: due, and not in ${this.outputs.layout.evaluations}; scoring it now`);
      await this.evaluate(true);
    }
    // Until the first progress line: since when training has gone on without one (null before the first step). Its
    // notice waits for a second step: the first carries the start-up (shards sent, kernels compiled), and a pace of
    // it alone put the first line minutes later than it came.
    let quietSince: number | null = null;
    while (this.step < steps && !this.stop) {
      const needed = this.step === firstStep ? this.config.startWorkers : this.config.minWorkers;
      if (!(await this.admitWorkers(Math.max(needed, this.fewestWorkers)))) break;
      if (this.step === firstStep) quietSince = performance.now();
      const stats = await this.trainStep();
      if (!stats) break;
      await this.writeOutputs(false);
      this.clock.paceAfter(this.step - firstStep);
      if (this.step % logEvery === 0 || this.step === steps) {
        this.log(progressLine(this.step, steps, stats, this.clock.windowRate(), this.etaSeconds() ?? 0));
        quietSince = null;
      } else if (quietSince !== null && this.step - firstStep > 1 && performance.now() - quietSince > FIRST_LINE_NOTICE_SECONDS * 1000) {
        this.log(firstLineNotice(this.step, steps, logEvery, (n) => this.clock.etaSeconds(n)));
        quietSince = null;
      }
    }
    return this.finish(firstStep);
  }

  /**
   * At a step boundary: wait for `needed` workers, then give every worker
   * its shard of a fresh plan if membership changed. False when stopping.
   */
  private async admitWorkers(needed: number): Promise<boolean> {
    await this.waitForWorkers(needed);
    if (this.stop) return false;
    this.workers.rebalanceIfChanged(this.permutation, this.train.images);
    return true;
  }

  /**
   * Waits, paused and visible in metrics, until `needed` workers are connected or a stop is requested.
   * `midStep`: a round of the next step lost every worker, so that step is under way, not done.
   */
  private async waitForWorkers(needed: number, midStep = false): Promise<void> {
    if (this.workers.openCount() >= needed || this.stop) return;
    this.metrics.paused.set(1);
    const started = this.state !== 'waiting';
    if (started) {
      this.state = 'paused';
      this.metrics.pauses.inc();
    }
    // Progress lines count the steps done; a pause inside a step names that step too.
    const where = midStep ? `during step ${this.step + 1} (${this.step} done)` : `at step ${this.step}`;
    const t = performance.now();
    const what = started ? 'paused' : 'waiting for workers';
    // A wait with no end in sight must still show that the coordinator is alive, and where it listens.
    const reminders = remindWhileWaiting(this.config.waitReminderSeconds ?? 30, (seconds) =>
      this.log(`still ${what} ${where} after ${seconds} s: ${this.workers.openCount()}/${needed} workers connected; listening on ${this.url}`),
    );
    try {
      // A worker that leaves can wake this loop before its socket is gone from the group: one line per count.
      let shown = -1;
      while (this.workers.openCount() < needed && !this.stop) {
        const n = this.workers.openCount();
        if (n !== shown) this.log(`${what} ${where}: ${n}/${needed} workers connected`);
        shown = n;
        await once(this.events, 'peers');
      }
    } finally {
      reminders.stop();
    }
    this.clock.addPause((performance.now() - t) / 1000);
    this.metrics.paused.set(0);
    if (started) this.state = 'training';
    const n = this.workers.openCount();
    if (n >= needed) this.log(`${started ? 'resuming' : 'starting'} ${midStep ? `step ${this.step + 1}` : `at step ${this.step}`} with ${plural(n, 'worker')}`);
  }

  /** A D round, then a G round: the step is applied whole, or not at all (null, its D update rolled back). */
  private async trainStep(): Promise<StepStats | null> {
    this.state = 'training';
    this.clock.stepStarted();
    const dRound = this.roundUntilAnswered(this.step, 'discriminator');
    // While the workers compute: D cannot change before their gradients arrive, in a later turn of the event loop.
    this.saveRollback();
    const d = await dRound;
    if (!d) return null;
    const g = await this.roundUntilAnswered(this.step, 'generator');
    if (!g) {
      this.restoreRollback();
      return null;
    }
    this.step++;
    const stats: StepStats = { dLoss: d.loss, gLoss: g.loss, dReal: d.dReal, dFake: g.dFake, images: d.samples, workers: d.contributors };
    this.unsavedSeconds += this.clock.stepFinished(d.samples);
    this.metrics.unsavedTrainingSeconds.set(this.unsavedSeconds);
    this.recordStep(stats);
    return stats;
  }

  private saveRollback(): void {
    this.rollback.discriminator.set(this.params.discriminator);
    this.adam.discriminator.copyStateInto(this.rollback.adam);
  }

  /** The step's D update is undone, so the step is redone whole on resume. */
  private restoreRollback(): void {
    this.params.discriminator.set(this.rollback.discriminator);
    this.adam.discriminator.restoreState(this.rollback.adam);
    this.versions.discriminator++;
    this.log(`step ${stepOfRound(this.step)} could not finish; its discriminator update was rolled back, and the run stays at step ${this.step}`);
  }

  private recordStep(s: StepStats): void {
    this.last = s;
    this.history.add({ step: this.step, dLoss: s.dLoss, gLoss: s.gLoss, dReal: s.dReal, dFake: s.dFake });
    this.imagesTotal += s.images;
    this.imagesThisRun += s.images;
    this.metrics.steps.inc();
    this.metrics.images.inc(s.images);
    this.metrics.step.set(this.step);
    this.metrics.dLoss.set(s.dLoss);
    this.metrics.gLoss.set(s.gLoss);
    this.metrics.dReal.set(s.dReal);
    this.metrics.dFake.set(s.dFake);
  }

  /**
   * Runs the round until some worker answers: when every participant left,
   * wait (paused) for --min-workers, as at a step boundary, and ask again,
   * under one plan for all of them. Null where the weights diverged, a stop
   * was asked for by the time a round went unanswered, or its workers were
   * alive but each time slower than their deadlines.
   */
  private async roundUntilAnswered(step: number, phase: Phase): Promise<RoundResult | null> {
    for (;;) {
      const result = await this.runRound(step, phase);
      if (result) return result;
      // No worker's answer can be accepted from these weights: asking again would loop for ever.
      if (this.diverged) return null;
      // Stopping: the step is rolled back, not asked again. A stop lets a step finish with the workers it asked, but
      // asking again whoever is left or comes back can take for ever: a DCGAN on the cpu backend, whose rounds outlast
      // --heartbeat, had each worker dropped in turn and rejoin, and held a SIGTERM for an hour.
      if (this.stop) return null;
      this.retries.unanswered(roundIndex(step, phase));
      this.log(`no worker answered the ${phase} round of step ${stepOfRound(step)}; asking again`);
      // Not the first to come back: one plan for it alone (the whole training set) would be re-planned at the
      // step's end. A stop still lets the step finish with whoever is there.
      await this.waitForWorkers(Math.max(this.config.minWorkers, this.fewestWorkers), true);
      if (this.workers.openCount() < this.fewestWorkers) return null;
      // The dropped workers' late answers came meanwhile, before they rejoined.
      if (this.retries.hopeless) return this.outlastedDeadlines(step, phase);
      this.workers.rebalanceIfChanged(this.permutation, this.train.images);
    }
  }

  /** One round; null when no participant answered (all left or missed the deadline). */
  private async runRound(step: number, phase: Phase): Promise<RoundResult | null> {
    const participants = this.workers.participants();
    const round = new Round(step, phase, participants.map((p) => p.id));
    this.round = round;
    let t = performance.now();
    this.askForGradients(round, participants);
    const encodeSeconds = (performance.now() - t) / 1000;
    t = performance.now();
    const reminders = this.remindOfSlowAnswers(round);
    try {
      await round.done;
    } finally {
      reminders.stop();
    }
    this.round = null;
    this.lastClosedRound = Math.max(this.lastClosedRound, roundIndex(step, phase));
    const waitSeconds = (performance.now() - t) / 1000;

    const replies = round.answers();
    // Other workers' answers accepted in a round found diverged would only move the weights further: the step is
    // not applied (a G round's D update is rolled back).
    if (replies.length === 0 || this.diverged) return null;
    t = performance.now();
    const averaged = averageGradients(replies, this.averaged[phase]);
    const result = weightedStats(replies);
    const aggregateSeconds = (performance.now() - t) / 1000;
    t = performance.now();
    this.applyUpdate(phase, averaged, replies);
    const optimizerSeconds = (performance.now() - t) / 1000;
    // An update past float32's range (an --lr near 1e38) leaves weights every worker refuses, rejoining for ever.
    // The codec's scan: 0.01 ms a round on the native addon, where findIndex took 0.8.
    const notFinite = firstOutside(this.params[phase], FLOAT32_MAX);
    if (notFinite >= 0) {
      this.divergedAt(step, `Adam's ${phase} update left weight ${notFinite} ${this.params[phase][notFinite]}`);
      return null;
    }

    const computeSeconds = this.recordComputeTimes(round);
    const parts: Record<RoundPart, number> = {
      encode: encodeSeconds,
      compute: computeSeconds,
      transfer: Math.max(0, waitSeconds - computeSeconds),
      aggregate: aggregateSeconds,
      optimizer: optimizerSeconds,
    };
    for (const k of Object.keys(parts) as RoundPart[]) this.partTotals[k] += parts[k];
    this.metrics.observeRound(phase, (performance.now() - round.startedAt) / 1000, parts);
    return result;
  }

  /**
   * A round takes milliseconds; one that waits on a slow or frozen worker (up
   * to --round-timeout, or a missed heartbeat, both raised for GPUs) says so:
   * the other workers' "no round" lines point here.
   */
  private remindOfSlowAnswers(round: Round): { stop(): void } {
    return remindWhileWaiting(this.config.roundReminderSeconds ?? 10, (seconds) => {
      // Woken from a freeze, this timer runs before the answers that came meanwhile are read: they count first.
      const bytesRead = () => round.awaited().reduce((n, id) => n + (this.workers.get(id)?.bytesRead ?? 0), 0);
      afterPendingReads(() => {
        if (round.awaited().length === 0) return; // answered meanwhile: the round has closed
        const awaited = round.awaited().map((id) => `${id} ${peerString(this.workers.get(id)?.name ?? '')}`);
        this.log(
          `still waiting after ${seconds} s for the ${round.phase} gradients of step ${stepOfRound(round.step)} from ${awaited.join(', ')} (${round.received.size}/${round.size} answered); ` +
            `a worker that does not answer is dropped --round-timeout ${this.config.roundTimeoutSeconds} s after its request was sent (after any shard ahead of it), or once its pong is --heartbeat ${this.config.heartbeatSeconds} s late` +
            (this.stop ? `; the stop (${this.stop.reason}) waits for this step` : ''),
        );
      }, bytesRead);
    });
  }

  /**
   * Sends each participant the round's weights message, with only the
   * networks it lacks (one frame per combination), and starts its deadline.
   * A participant that cannot be sent to leaves the round.
   */
  private askForGradients(round: Round, participants: WorkerPeer[]): void {
    const { step, phase } = round;
    const deadlineMs = this.config.roundTimeoutSeconds * 1000;
    const frames = new Map<string, EncodedFrame>();
    for (const peer of participants) {
      const sendG = peer.holds.generator !== this.versions.generator;
      const sendD = peer.holds.discriminator !== this.versions.discriminator;
      const key = `${sendG}/${sendD}`;
      let frame = frames.get(key);
      if (!frame) {
        const body: Omit<Weights, 'v'> = { type: 'weights', step, phase };
        if (sendG) body.generator = this.params.generator;
        if (sendD) body.discriminator = this.params.discriminator;
        frame = encodeFrame(message<Weights>(body), this.config.wireDtype);
        frames.set(key, frame);
      }
      // The deadline runs from when the request has left this process, so a shard queued ahead of it on a slow
      // link counts against the worker only by what still waits in the kernel's send buffer (a few MB).
      let written = false;
      const sent = peer.deliver(frame, () => {
        written = true;
        // An answer that came while this process was stopped (a freeze, a long fsync) counts first.
        round.after(deadlineMs, () => afterPendingReads(() => this.missedDeadline(round, peer), () => peer.bytesRead));
      });
      if (!sent) {
        round.drop(peer.id);
        continue;
      }
      peer.asked.push(roundIndex(step, phase));
      peer.lastAskedAt = performance.now();
      // Backstop for a peer that stops reading: the write never completes, so the deadline above never starts.
      const backstopMs = Math.min(deadlineMs + (peer.queuedBytes / MIN_LINK_BYTES_PER_SECOND) * 1000, MAX_TIMER_MS);
      const stalled = () => {
        if (!written) this.missedDeadline(round, peer, `its link took no data for ${(backstopMs / 1000).toFixed(0)} s`);
      };
      round.after(backstopMs, () => afterPendingReads(stalled, () => peer.bytesRead));
      peer.holds.generator = this.versions.generator;
      peer.holds.discriminator = this.versions.discriminator;
    }
  }

  /** Adam on the averaged gradients (and, for G, the workers' BatchNorm statistics pooled into G's): a new version of that network. */
  private applyUpdate(phase: Phase, averaged: Float32Array, replies: Gradients[]): void {
    if (phase === 'discriminator') {
      applyDiscriminatorUpdates(this.adam.discriminator, this.params.discriminator, averaged, this.config.discriminatorUpdates, this.discriminatorUpdate);
    } else {
      this.adam.generator.apply(this.params.generator, averaged);
      const stats = replies.map((r) => ({ statistics: r.statistics ?? EMPTY, samples: r.samples }));
      updateMovingStatistics(this.model.generatorLayout, this.params.generator, stats, BN_MOMENTUM);
    }
    this.versions[phase]++;
  }

  /** Each answer's compute time into its worker's metrics and status row; returns the slowest, the round's compute part. */
  private recordComputeTimes(round: Round): number {
    let computeSeconds = 0;
    for (const [id, g] of round.received) {
      computeSeconds = Math.max(computeSeconds, g.computeSeconds);
      const peer = this.workers.get(id);
      if (!peer) continue; // left since it answered: its series is gone, and labels stay bounded
      this.metrics.workerComputeSeconds.inc({ worker: id }, g.computeSeconds);
      peer.lastComputeSeconds = g.computeSeconds;
    }
    return computeSeconds;
  }

  /** `linkStalled`: why the request never left (the backstop), when it did not. */
  private missedDeadline(round: Round, peer: WorkerPeer, linkStalled?: string): void {
    if (!round.isAwaiting(peer.id)) return;
    this.metrics.roundTimeouts.inc();
    if (linkStalled) this.workers.cutOff(peer, linkStalled);
    else this.workers.drop(peer, `no ${round.phase} gradients for step ${stepOfRound(round.step)} within --round-timeout ${this.config.roundTimeoutSeconds} s`, true);
  }

  /**
   * An answer refused as not finite or out of range is a faulty or hostile
   * worker's, or the sign that training has diverged (too high an --lr, say):
   * then every honest answer is refused, and the round would be asked again
   * for ever. The coordinator tells the two apart by computing an answer
   * itself, with the round's weights on a batch of its own, and putting it
   * through the checks a worker's answer gets. Once a round: a worker that
   * keeps sending bad answers costs it one step's compute a round at most.
   */
  private checkDivergence(round: Round): void {
    const index = roundIndex(round.step, round.phase);
    if (this.diverged || index === this.checkedRound) return;
    this.checkedRound = index;
    const problem = ownAnswerProblem(this.model, this.params, this.train, this.config, this.config.seed, round.step, round.phase);
    if (problem) this.divergedAt(round.step, `the coordinator's own ${round.phase} gradients from the current weights are refused too (${problem})`);
  }

  /**
   * Stops the run as failed where a round's workers are alive but slower than
   * --heartbeat or --round-timeout, try after try, saying what to raise.
   * Null, for roundUntilAnswered: the step is rolled back.
   */
  private outlastedDeadlines(roundStep: number, phase: Phase): null {
    const { tries, cameBack, slowestSeconds } = this.retries;
    const { heartbeatSeconds, roundTimeoutSeconds } = this.config;
    // Twice the slowest: a round's time varies with the batch's draw and what else the machine runs.
    const enough = Math.ceil(slowestSeconds * 2);
    const below = [['--heartbeat', heartbeatSeconds], ['--round-timeout', roundTimeoutSeconds]].filter(([, seconds]) => Number(seconds) < enough);
    const raise = below.length > 0 ? below.map(([flag]) => `${flag} ${enough}`).join(' ') + ' or more' : 'a larger --heartbeat and --round-timeout';
    // Not lastCheckpoint: finish() checkpoints the step before this one, where --checkpoint-every had not (and
    // --keep-checkpoints may remove the older file). Step 0 leaves no checkpoint; a resumed run's is that step's.
    const resume = this.step > 0 ? `; --resume continues from ${path.join(this.outputs.layout.checkpoints, checkpointName(this.step))}` : '';
    const reason =
      `${plural(tries, 'try', 'tries')} of step ${stepOfRound(roundStep)}'s ${phase} round went unanswered, and ${plural(cameBack, 'time')} a worker dropped at ` +
      `--heartbeat ${heartbeatSeconds} s or --round-timeout ${roundTimeoutSeconds} s while asked it came back alive (the slowest ${slowestSeconds.toFixed(1)} s after it was asked): ` +
      `rounds outlast those deadlines on this machine, so asking again would never end; start again with ${raise}${resume}`;
    this.requestStop(reason, true);
    return null;
  }

  /** Stops the run as diverged in the round of `roundStep`, saying why and from where to start again. */
  private divergedAt(roundStep: number, why: string): void {
    const step = stepOfRound(roundStep);
    const advice = this.outputs.lastCheckpoint
      ? `resume from a checkpoint before step ${step} (the newest is ${this.outputs.lastCheckpoint}) with a lower --lr`
      : 'there is no checkpoint yet: start again with a lower --lr';
    this.diverged = `training diverged at step ${step}: ${why}; ${advice}`;
    // It decides how the run ends even where a stop (a signal) was asked for before; it comes in a round, so no wait needs waking.
    this.stop = { reason: this.diverged, failed: true };
    this.log(`stop requested: ${this.diverged}`);
  }

  /**
   * The grid, checkpoint and evaluation due at this step. Each --*-every output is written at the end too:
   * `atEnd` writes those the step itself was not due.
   */
  private async writeOutputs(atEnd: boolean): Promise<void> {
    const { sampleEvery, checkpointEvery, evalEvery } = this.config;
    const wanted = (every: number) => due(this.step, every) !== atEnd;
    if (wanted(sampleEvery)) this.outputs.writeGrid(this.step, this.params.generator);
    // The checkpoint before the evaluation, which can take longer than a stop's grace period leaves. The last step's
    // too: its final checkpoint came only in finish(), after that step's evaluation, so a kill meanwhile lost the
    // steps since the last --checkpoint-every one. finish() does not write it twice.
    const last = !atEnd && this.step >= this.config.steps && evalEvery > 0 && due(this.step, evalEvery);
    if ((wanted(checkpointEvery) || last) && this.checkpointedStep !== this.step) this.checkpoint();
    // During training a stop cuts an evaluation short, one due at the last step too; the final one (atEnd) finishes.
    if (evalEvery > 0 && wanted(evalEvery) && !this.outputs.forfeited) await this.evaluate(!atEnd);
  }

  /** The checkpoint's file, or null where this run may not write it (or lost --out while writing it). */
  private checkpoint(): string | null {
    const file = this.outputs.writeCheckpoint({
      step: this.step,
      imagesTotal: this.imagesTotal,
      config: checkpointConfig(this.config, this.trainFingerprint),
      seedRng: this.seedRng.state(),
      nextWorker: this.workers.nextWorker,
      shards: this.workers.slots(),
      generator: this.params.generator,
      discriminator: this.params.discriminator,
      adamGenerator: this.adam.generator.state(),
      adamDiscriminator: this.adam.discriminator.state(),
    });
    if (file === null) return null;
    this.checkpointedStep = this.step;
    this.metrics.lastCheckpointStep.set(this.step);
    this.metrics.lastCheckpointTime.set(Date.now() / 1000);
    this.unsavedSeconds = 0;
    this.metrics.unsavedTrainingSeconds.set(0);
    return file;
  }

  /** --eval-every's scoring of G at this step; `cutByStop`: a stop asked for meanwhile ends it unrecorded. */
  private evaluate(cutByStop: boolean): Promise<void> {
    return this.evaluator!.score(this.step, this.params.generator, cutByStop);
  }

  /** After the last step: the final sample grid, checkpoint and evaluation, then the generator and summary.json. */
  private async finish(firstStep: number): Promise<TrainingSummary> {
    const ran = this.step - firstStep;
    // The pace is the training's: read before the final grid and checkpoint, which no timed step waited for.
    const trained = this.clock.elapsed();
    const trainingSeconds = trained.seconds - trained.pausedSeconds - trained.evaluationSeconds;
    // A resumed run that trained nothing (already at --steps, as a restarted pod is) leaves the finished run's
    // outputs as they were. Where they are missing or older than the checkpoint (killed after its last
    // checkpoint, or while exporting), it writes them: summary.json, written last, says which step they hold.
    const keepOutputs = ran === 0 && this.resumedFrom !== null && this.outputs.summarisedStep() === this.step;
    // Stopped before its first step, a run has only G's initial draw: nothing worth an output directory.
    const untrained = this.step === 0;
    // Diverged weights are not worth a grid, a checkpoint a resume would take up, or a generator.
    const writesOutputs = !keepOutputs && !untrained && !this.diverged;
    if (ran > 0 && !this.diverged) await this.writeOutputs(true);
    // The grid is one of the outputs such a resume writes: a checkpoint due at the last step is written before
    // the final grid, and a kill between them leaves none.
    else if (writesOutputs && !this.outputs.hasGrid(this.step)) this.outputs.writeGrid(this.step, this.params.generator);
    // After the final evaluation, which the wall time and the time evaluating include.
    const elapsed = this.clock.elapsed();
    this.state = 'finished';
    if (writesOutputs) this.outputs.writeGenerator(this.params.generator);
    // Resumed, with fewer worker processes than the checkpoint's back (none where it trained nothing), and no
    // summary of a finished run: the earlier coordinator's workers, told nothing, may still be reconnecting.
    this.lateWorkers = { anyone: !this.stop && this.resumedFrom !== null && !keepOutputs && this.workers.processesJoined() < Math.max(1, this.checkpointWorkers) };
    // A stop asked for (a signal during the last step or its evaluation) has already ended that wait: close() still
    // names whoever left untold (dropped while frozen), since with no steps left no coordinator will ever tell them.
    if (this.stop) this.lateWorkersWait.abort(this.stop.reason);
    // Not stopped, the run stops here: close() tells the workers this reason, and a later requestStop only ends its wait for late workers.
    // Every step trained, a stop asked for during the final outputs leaves the run finished, unless it cut short
    // the last step's evaluation (due at that step itself, so written as a mid-run one is: cut by a stop).
    const evaluated = this.config.evalEvery === 0 || this.outputs.evaluations.some((e) => e.step === this.step);
    if (!this.stop || (ran > 0 && this.step >= this.config.steps && !this.stop.failed && evaluated)) {
      this.stop = { reason: `finished ${plural(this.step, 'step')}`, failed: false };
    }
    const { reason } = this.stop;
    const summary = this.summarise(ran, trainingSeconds, elapsed, this.stop);
    if (untrained) {
      this.log(this.diverged ? `${reason}; no outputs written` : `${reason} before the first step: no outputs written`);
    } else if (keepOutputs) {
      this.outputs.leaveAsTheyWere(this.step, this.stop, this.evaluationMissed && this.outputs.evaluations.some((e) => e.step === this.step));
    } else if (!this.outputs.writeSummary(summary)) {
      this.log(`${this.outputs.forfeited}: no outputs written after step ${this.step}`);
    } else {
      const outputs = this.diverged ? 'no final grid, checkpoint or generator, since the weights diverged' : `samples in ${this.outputs.samples.dir}, generator in ${this.outputs.layout.generator}`;
      this.log(`${reason}: step ${this.step} (${ran} this run) in ${elapsed.seconds.toFixed(1)} s; ${outputs}`);
    }
    // Lost after the run's own stop (at its summary, say), the outputs are still not delivered: a failure too.
    if (this.outputs.forfeited) summary.ok = false;
    return summary;
  }

  /**
   * What summary.json says. `trainingSeconds`: the steps' own time (neither paused nor evaluating), behind
   * msPerStep and imagesPerSecond; `elapsed`: the wall time, read after the final outputs.
   */
  private summarise(ran: number, trainingSeconds: number, elapsed: Elapsed, stop: Stop): TrainingSummary {
    const perStep = (x: number) => (ran > 0 ? x / ran : 0);
    return {
      steps: this.step,
      stepsThisRun: ran,
      resumedFrom: this.resumedFrom,
      ok: !stop.failed,
      seconds: elapsed.seconds,
      pausedSeconds: elapsed.pausedSeconds,
      evaluationSeconds: elapsed.evaluationSeconds,
      msPerStep: perStep(trainingSeconds * 1000),
      imagesPerSecond: trainingSeconds > 0 ? this.imagesThisRun / trainingSeconds : 0,
      msPerStepByPhase: Object.fromEntries(Object.entries(this.partTotals).map(([k, v]) => [k, perStep(v * 1000)])) as Record<RoundPart, number>,
      bytesSentPerStep: perStep(this.bytesSent),
      bytesReceivedPerStep: perStep(this.bytesReceived),
      last: this.last,
      samples: this.outputs.gridPaths(),
      generator: this.diverged ? null : path.resolve(this.outputs.layout.generator),
      checkpoint: this.outputs.lastCheckpoint && path.resolve(this.outputs.lastCheckpoint),
      evaluations: this.outputs.evaluations,
      stopReason: stop.reason,
    };
  }

  /** Stops the workers, then closes every socket and both servers. */
  async close(reason = this.stop?.reason ?? this.failure ?? 'coordinator closing'): Promise<void> {
    this.workers.stopHeartbeats();
    // Steps left: a coordinator restarted with --resume trains them, and workers told so may wait for it. Counted from
    // the newest checkpoint, not this step: a run that failed writing its last step's checkpoint (a full disk) resumes
    // from an earlier one, and needs its workers back.
    const resumable = (this.checkpointedStep ?? this.resumedFrom ?? 0) < this.config.steps;
    // Workers told to stop may rejoin at once (--rejoin-after-stop): not here, but at the coordinator that resumes.
    const lateWorkers = resumable || !this.config.lingerSeconds ? null : this.lateWorkers;
    if (!lateWorkers) this.listener.stopAccepting();
    await this.workers.dismiss(reason, resumable);
    if (lateWorkers) await this.tellLateWorkers(this.config.lingerSeconds!, lateWorkers.anyone);
    await this.listener.close();
    if (this.metricsServer) {
      this.metricsServer.closeAllConnections();
      await new Promise<void>((r) => this.metricsServer!.close(() => r()));
    }
    this.workers.closeMailboxes();
    this.outputs.releaseLease();
  }

  /**
   * A finished run stays reachable for up to --linger seconds for the
   * workers that left it without hearing it is over (dropped while frozen, a
   * broken link): they reconnect, are told, and exit 0, instead of trying for
   * ever (a Compose service or a Job that never ends).
   */
  private async tellLateWorkers(seconds: number, anyone: boolean): Promise<void> {
    const untold = this.workers.untoldWorkers();
    const spares = this.workers.sparesTurnedAway();
    if (!anyone && untold.length === 0 && spares.length === 0) return;
    // A checkpoint of format 1 holds no shards, so no count of its workers.
    const checkpoint = this.checkpointWorkers > 0 ? `a checkpoint that ${plural(this.checkpointWorkers, 'worker')} trained` : 'a checkpoint without a count of its workers';
    const who = [
      ...(untold.length > 0 ? [`${plural(untold.length, 'worker')} left without hearing it (${someOf(untold)})`] : []),
      ...(spares.length > 0 ? [`${plural(spares.length, 'worker')} refused as one too many (COORDINATOR_FULL), perhaps still retrying (${someOf(spares)})`] : []),
      ...(anyone ? [`the run resumed from ${checkpoint}, and ${this.workers.processesJoined()} came back`] : []),
    ];
    this.log(`waiting up to ${seconds} s (--linger; a signal ends this) to tell workers that reconnect that the run is over: ${who.join('; ')}`);
    const left = await this.workers.tellLateWorkers(seconds * 1000, anyone, this.lateWorkersWait.signal);
    if (this.lateWorkersWait.signal.aborted) this.log(`stopped waiting for late workers: ${String(this.lateWorkersWait.signal.reason)}`);
    else if (left.length > 0) this.log(`not back within --linger ${seconds} s: ${someOf(left)} (gone, or still trying: a worker retries until its --give-up-after)`);
    else if (!anyone) this.log('every worker that left has been told the run is over');
  }

  /** From this run's average pace, so evaluations and checkpoints are in it; null before the first step. */
  private etaSeconds(): number | null {
    return this.clock.etaSeconds(this.config.steps - this.step);
  }

  status(): CoordinatorStatus {
    return {
      state: this.evaluator?.running ? 'evaluating' : this.state,
      step: this.step,
      steps: this.config.steps,
      resumedFrom: this.resumedFrom,
      run: runSettings(this.config),
      // Paused or waiting, nothing is trained: the last step's rate would show a stall as healthy.
      imagesPerSecond: this.state === 'training' && !this.evaluator?.running && this.last ? this.clock.imagesPerSecond(this.last.images) : 0,
      etaSeconds: this.state === 'finished' ? null : this.etaSeconds(),
      last: this.last,
      workers: workerRows(this.workers.list(), this.round),
      samples: spreadGrids(this.outputs.gridNames),
      evaluations: this.outputs.evaluations,
    };
  }
}

/** Calls `remind` with the seconds waited, first after `firstSeconds`, then at twice each interval, up to 10 minutes apart. */
function remindWhileWaiting(firstSeconds: number, remind: (seconds: number) => void): { stop(): void } {
  const start = performance.now();
  let timer: NodeJS.Timeout;
  const schedule = (seconds: number): void => {
    timer = setTimeout(() => {
      remind(Math.round((performance.now() - start) / 1000));
      schedule(Math.min(seconds * 2, 600));
    }, seconds * 1000);
  };
  schedule(firstSeconds);
  return { stop: () => clearTimeout(timer) };
}
