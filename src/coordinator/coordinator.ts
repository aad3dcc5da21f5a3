import { EventEmitter, once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import WebSocket, { WebSocketServer } from 'ws';
import { selectBackend } from '../backend';
import { MnistSet, loadMnist } from '../data/mnist';
import { gatherImages, planShards, shardChanged } from '../data/shards';
import { GanModel, GanParameters, createModel } from '../model';
import { exportGenerator } from '../model/export';
import { ProtocolError, RejectReason, decodeWorkerMessage, encode, firstNonFinite } from '../protocol/codec';
import { ErrorMessage, Gradients, Hello, Phase, Shard, Stop, Weights, Welcome, message } from '../protocol/messages';
import { Logger, createLogger } from '../util/log';
import { Rng } from '../util/rng';
import { Adam } from './adam';
import { averageGradients } from './aggregate';
import { CoordinatorConfig } from './config';
import { CoordinatorMetrics, RoundPart, boundPort, serveMetrics } from './metrics';
import { WorkerPeer } from './peer';
import { Round } from './round';
import { SampleWriter } from './samples';

/** A peer that sends this many rejected messages is disconnected. */
const MAX_OFFENCES = 3;

export interface StepStats {
  dLoss: number;
  gLoss: number;
  dReal: number;
  dFake: number;
  /** Real images consumed this step, summed over workers. */
  images: number;
  workers: number;
}

export interface TrainingSummary {
  steps: number;
  seconds: number;
  msPerStep: number;
  imagesPerSecond: number;
  /** Mean milliseconds per step spent in each part of the two rounds. */
  msPerStepByPhase: Record<RoundPart, number>;
  bytesSentPerStep: number;
  bytesReceivedPerStep: number;
  last: StepStats | null;
  samples: string[];
  generator: string;
  stopReason: string;
}

interface RoundResult {
  loss: number;
  dReal: number;
  dFake: number;
  samples: number;
  contributors: number;
}

/**
 * Owns the weights and the two Adam states. Each step runs a D round then a
 * G round: broadcast the networks a worker lacks, wait for every
 * participant's gradient (or its departure), average by sample count, and
 * apply Adam. Membership changes take effect only at step boundaries.
 */
export class Coordinator {
  readonly metrics = new CoordinatorMetrics();
  private readonly model: GanModel;
  private readonly params: GanParameters;
  private readonly adam: Record<Phase, Adam>;
  private readonly averaged: Record<Phase, Float32Array>;
  private readonly versions: Record<Phase, number> = { generator: 0, discriminator: 0 };
  private readonly peers = new Map<string, WorkerPeer>();
  private readonly events = new EventEmitter();
  private readonly samples: SampleWriter;
  private readonly permutation: Uint32Array;
  private readonly partTotals: Record<RoundPart, number> = { encode: 0, compute: 0, transfer: 0, aggregate: 0, optimizer: 0 };
  private train: MnistSet | null = null;
  private wss!: WebSocketServer;
  private metricsServer: http.Server | null = null;
  private round: Round | null = null;
  private membershipChanged = false;
  private plan = 0;
  private nextWorker = 1;
  private stopReason: string | null = null;
  private bytesSent = 0;
  private bytesReceived = 0;
  private imagesTotal = 0;

  private constructor(
    readonly config: CoordinatorConfig,
    private readonly log: Logger,
  ) {
    this.model = createModel(config.arch);
    this.params = this.model.init(new Rng(config.seed));
    const sizes = { generator: this.model.generatorLayout.size, discriminator: this.model.discriminatorLayout.size };
    this.adam = { generator: new Adam(sizes.generator, config.adam), discriminator: new Adam(sizes.discriminator, config.adam) };
    this.averaged = { generator: new Float32Array(sizes.generator), discriminator: new Float32Array(sizes.discriminator) };
    this.permutation = new Rng(config.seed + 1).permutation(60000);
    this.samples = new SampleWriter(this.model, path.join(config.out, 'samples'), config.seed + 2);
  }

  /** Loads the data, selects a backend and binds both ports. */
  static async start(config: CoordinatorConfig, log: Logger = createLogger('coordinator')): Promise<Coordinator> {
    const c = new Coordinator(config, log);
    const backend = await selectBackend(config.backend);
    log(`backend ${backend.name} (${backend.notes.join('; ')})`);
    c.train = loadMnist('train', config.dataDir);
    if (c.train.count !== c.permutation.length) throw new Error(`expected 60000 training images, found ${c.train.count}`);
    await c.listen();
    return c;
  }

  get port(): number {
    return boundPort(this.wss);
  }

  get metricsPort(): number | null {
    return this.metricsServer ? boundPort(this.metricsServer) : null;
  }

  /** Ends training at the next step boundary; outputs are still written. */
  requestStop(reason: string): void {
    if (this.stopReason) return;
    this.stopReason = reason;
    this.log(`stop requested: ${reason}`);
    this.events.emit('peers');
  }

  async run(): Promise<TrainingSummary> {
    const { steps, sampleEvery, logEvery } = this.config;
    const written: string[] = [];
    // The clock starts at the first round, not while waiting for workers to connect.
    let t0 = 0;
    let windowStart = 0;
    let windowImages = 0;
    let last: StepStats | null = null;
    let step = 0;
    while (step < steps && !this.stopReason) {
      if (!(await this.admitWorkers())) break;
      if (t0 === 0) t0 = windowStart = performance.now();
      const d = await this.runRound(step, 'discriminator');
      if (!d) continue; // every participant left mid-round: redo the step with whoever is there next
      let g: RoundResult | null = null;
      while (!g && !this.stopReason) {
        g = await this.runRound(step, 'generator');
        if (!g && !(await this.admitWorkers())) break;
      }
      if (!g) break;
      step++;
      last = { dLoss: d.loss, gLoss: g.loss, dReal: d.dReal, dFake: g.dFake, images: d.samples, workers: d.contributors };
      this.recordStep(last);
      windowImages += d.samples;
      if (step % sampleEvery === 0) written.push(this.samples.write(step, this.params.generator));
      if (step % logEvery === 0 || step === steps) {
        const now = performance.now();
        const rate = windowImages / ((now - windowStart) / 1000);
        const eta = ((steps - step) * (now - t0)) / step / 1000;
        this.log(progressLine(step, steps, last, rate, eta));
        windowStart = now;
        windowImages = 0;
      }
    }
    const seconds = t0 === 0 ? 0 : (performance.now() - t0) / 1000;
    if (step > 0 && step % sampleEvery !== 0) written.push(this.samples.write(step, this.params.generator));
    const generatorDir = path.join(this.config.out, 'generator');
    exportGenerator(this.model, this.params.generator, generatorDir);
    const stopReason = this.stopReason ?? `finished ${step} steps`;
    const perStep = (x: number) => (step > 0 ? x / step : 0);
    const summary: TrainingSummary = {
      steps: step,
      seconds,
      msPerStep: perStep(seconds * 1000),
      imagesPerSecond: seconds > 0 ? this.imagesTotal / seconds : 0,
      msPerStepByPhase: Object.fromEntries(Object.entries(this.partTotals).map(([k, v]) => [k, perStep(v * 1000)])) as Record<RoundPart, number>,
      bytesSentPerStep: perStep(this.bytesSent),
      bytesReceivedPerStep: perStep(this.bytesReceived),
      last,
      samples: written,
      generator: generatorDir,
      stopReason,
    };
    fs.writeFileSync(path.join(this.config.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
    this.log(`${stopReason}: ${step} steps in ${seconds.toFixed(1)} s; samples in ${this.samples.dir}, generator in ${generatorDir}`);
    return summary;
  }

  /** Stops the workers, then closes both servers. */
  async close(reason = this.stopReason ?? 'coordinator closing'): Promise<void> {
    const stop = encode(message<Stop>({ type: 'stop', reason }));
    for (const peer of this.peers.values()) peer.send(stop);
    const closing = [...this.peers.values()].map((p) => once(p.socket, 'close'));
    await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 5000).unref())]);
    for (const peer of this.peers.values()) peer.socket.terminate();
    await new Promise<void>((r) => this.wss.close(() => r()));
    if (this.metricsServer) {
      this.metricsServer.closeAllConnections();
      await new Promise<void>((r) => this.metricsServer!.close(() => r()));
    }
  }

  private async listen(): Promise<void> {
    const { host, port, metricsPort } = this.config;
    // Workers send only gradients: the larger network's floats plus envelope.
    const maxPayload = 4 * Math.max(this.model.generatorLayout.size, this.model.discriminatorLayout.size) + 64 * 1024;
    this.wss = new WebSocketServer({ host, port, maxPayload });
    this.wss.on('connection', (socket, req) => this.onConnection(socket, `${req.socket.remoteAddress}:${req.socket.remotePort}`));
    await once(this.wss, 'listening');
    this.log(`listening for workers on ws://${host}:${this.port}`);
    if (metricsPort >= 0) {
      this.metricsServer = await serveMetrics(this.metrics.registry, host, metricsPort);
      this.log(`metrics on http://${host}:${this.metricsPort}/metrics`);
    }
  }

  private onConnection(socket: WebSocket, address: string): void {
    let peer: WorkerPeer | null = null;
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      this.bytesReceived += data.length;
      this.metrics.receivedBytes.inc(data.length);
      let msg;
      try {
        if (!isBinary) throw new ProtocolError('bad_frame', 'text frames are not part of the protocol');
        msg = decodeWorkerMessage(data);
      } catch (e) {
        const err = e instanceof ProtocolError ? e : new ProtocolError('bad_frame', (e as Error).message);
        return this.reject(socket, peer, err.reason, err.message);
      }
      if (!peer) {
        if (msg.type !== 'hello') return this.reject(socket, null, 'unexpected', `expected hello, got ${msg.type}`);
        peer = this.welcome(msg, socket, address);
        return;
      }
      switch (msg.type) {
        case 'gradients':
          return this.onGradients(peer, msg);
        case 'error':
          return this.log(`${peer.id} reported ${msg.code}: ${msg.message}`);
        case 'hello':
          return this.reject(socket, peer, 'unexpected', 'hello sent twice');
      }
    });
    socket.on('close', () => {
      if (peer) this.removePeer(peer);
    });
    socket.on('error', (e) => this.log(`socket ${peer?.id ?? address}: ${e.message}`));
  }

  private welcome(hello: Hello, socket: WebSocket, address: string): WorkerPeer {
    const n = this.nextWorker++;
    const peer = new WorkerPeer(`w${n}`, hello.name, address, hello.backend, socket, (bytes) => {
      this.bytesSent += bytes;
      this.metrics.sentBytes.inc(bytes);
    });
    this.peers.set(peer.id, peer);
    peer.send(
      encode(
        message<Welcome>({
          type: 'welcome',
          workerId: peer.id,
          arch: this.model.arch,
          generatorSize: this.model.generatorLayout.size,
          discriminatorSize: this.model.discriminatorLayout.size,
          batchSize: this.config.batchSize,
          seed: (this.config.seed * 7919 + n) >>> 0,
        }),
      ),
    );
    this.log(`${peer.id} joined from ${address} (${hello.name}, pid ${hello.pid}, backend ${hello.backend}); ${this.peers.size} connected`);
    this.membershipChanged = true;
    this.metrics.workers.set(this.peers.size);
    this.events.emit('peers');
    return peer;
  }

  private removePeer(peer: WorkerPeer): void {
    if (!this.peers.delete(peer.id)) return;
    this.round?.drop(peer.id);
    this.membershipChanged = true;
    this.metrics.workers.set(this.peers.size);
    this.metrics.workerComputeSeconds.remove({ worker: peer.id });
    if (!this.stopReason) this.log(`${peer.id} left; ${this.peers.size} connected`);
    this.events.emit('peers');
  }

  /**
   * At a step boundary: wait until enough workers are connected, then give
   * every worker its shard of a fresh plan if membership changed. Returns
   * false when a stop was requested while waiting.
   */
  private async admitWorkers(): Promise<boolean> {
    while (this.peers.size < this.config.minWorkers && !this.stopReason) {
      this.log(`waiting for workers: ${this.peers.size}/${this.config.minWorkers} connected`);
      await once(this.events, 'peers');
    }
    if (this.stopReason) return false;
    if (this.membershipChanged) this.rebalance();
    return true;
  }

  private rebalance(): void {
    this.membershipChanged = false;
    this.plan++;
    const peers = [...this.peers.values()];
    const assignments = planShards(this.permutation, peers.map((p) => p.id));
    assignments.forEach((a, i) => {
      const peer = peers[i];
      peer.state = 'active';
      if (!shardChanged(peer.shard, a)) return;
      peer.shard = a;
      const images = gatherImages(this.train!.images, a.indices);
      peer.send(encode(message<Shard>({ type: 'shard', plan: this.plan, count: a.indices.length, images })));
    });
    this.log(`shard plan ${this.plan}: ${assignments.map((a) => `${a.workerId}=${a.indices.length}`).join(' ')}`);
  }

  /** One round; null when no participant answered (all left), so the caller retries it. */
  private async runRound(step: number, phase: Phase): Promise<RoundResult | null> {
    const participants = [...this.peers.values()].filter((p) => p.state === 'active');
    const round = new Round(step, phase, participants.map((p) => p.id));
    this.round = round;

    let t = performance.now();
    const frames = new Map<string, Buffer>();
    for (const peer of participants) {
      const sendG = peer.generatorVersion !== this.versions.generator;
      const sendD = peer.discriminatorVersion !== this.versions.discriminator;
      const key = `${sendG}/${sendD}`;
      let frame = frames.get(key);
      if (!frame) {
        const body: Omit<Weights, 'v'> = { type: 'weights', step, phase };
        if (sendG) body.generator = this.params.generator;
        if (sendD) body.discriminator = this.params.discriminator;
        frame = encode(message<Weights>(body));
        frames.set(key, frame);
      }
      peer.send(frame);
      peer.generatorVersion = this.versions.generator;
      peer.discriminatorVersion = this.versions.discriminator;
    }
    const encodeSeconds = (performance.now() - t) / 1000;
    t = performance.now();
    await round.done;
    this.round = null;
    const waitSeconds = (performance.now() - t) / 1000;

    const replies = [...round.received.values()];
    if (replies.length === 0) return null;
    t = performance.now();
    const averaged = averageGradients(replies, this.averaged[phase]);
    const result = weightedStats(replies);
    const aggregateSeconds = (performance.now() - t) / 1000;
    t = performance.now();
    this.adam[phase].apply(this.params[phase], averaged);
    this.versions[phase]++;
    const optimizerSeconds = (performance.now() - t) / 1000;

    let computeSeconds = 0;
    for (const [id, g] of round.received) {
      computeSeconds = Math.max(computeSeconds, g.computeSeconds);
      this.metrics.workerComputeSeconds.inc({ worker: id }, g.computeSeconds);
      const peer = this.peers.get(id);
      if (peer) peer.lastComputeSeconds = g.computeSeconds;
    }
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

  private onGradients(peer: WorkerPeer, msg: Gradients): void {
    const round = this.round;
    if (!round || msg.step !== round.step || msg.phase !== round.phase) {
      return this.reject(peer.socket, peer, 'wrong_step', `gradients for step ${msg.step} (${msg.phase}) do not belong to the open round`);
    }
    if (!round.isAwaiting(peer.id)) {
      return this.reject(peer.socket, peer, 'unexpected', `${peer.id} is not awaited in step ${msg.step} (${msg.phase})`);
    }
    const problem = this.checkGradients(msg);
    if (problem) {
      round.drop(peer.id);
      return this.reject(peer.socket, peer, problem[0], problem[1]);
    }
    round.accept(peer.id, msg);
  }

  private checkGradients(msg: Gradients): [RejectReason, string] | null {
    const expected = (msg.phase === 'generator' ? this.model.generatorLayout : this.model.discriminatorLayout).size;
    if (msg.gradients.length !== expected) return ['bad_size', `${msg.phase} gradients have ${msg.gradients.length} values, expected ${expected}`];
    if (msg.samples < 1 || msg.samples > this.config.batchSize) return ['bad_field', `samples ${msg.samples} is outside 1..${this.config.batchSize}`];
    if (msg.phase === 'discriminator' && msg.dReal === undefined) return ['bad_field', 'discriminator gradients need dReal'];
    const bad = firstNonFinite(msg.gradients);
    if (bad >= 0) return ['not_finite', `gradient value ${bad} is ${msg.gradients[bad]}`];
    return null;
  }

  /** Counts a rejection, tells the peer why, and disconnects repeat offenders and unidentified peers. */
  private reject(socket: WebSocket, peer: WorkerPeer | null, reason: RejectReason, text: string): void {
    this.metrics.reject(reason);
    this.log(`rejected a message from ${peer?.id ?? 'an unidentified peer'} (${reason}): ${text}`);
    const frame = encode(message<ErrorMessage>({ type: 'error', code: `PROTOCOL_${reason.toUpperCase()}`, message: text }));
    if (socket.readyState === WebSocket.OPEN) socket.send(frame);
    if (!peer || ++peer.offences >= MAX_OFFENCES) socket.close(1008, 'protocol violation');
  }

  private recordStep(s: StepStats): void {
    this.imagesTotal += s.images;
    this.metrics.steps.inc();
    this.metrics.images.inc(s.images);
    this.metrics.dLoss.set(s.dLoss);
    this.metrics.gLoss.set(s.gLoss);
    this.metrics.dReal.set(s.dReal);
    this.metrics.dFake.set(s.dFake);
  }
}

function weightedStats(replies: Gradients[]): RoundResult {
  let samples = 0;
  let loss = 0;
  let dReal = 0;
  let dFake = 0;
  for (const r of replies) {
    samples += r.samples;
    loss += r.loss * r.samples;
    dReal += (r.dReal ?? 0) * r.samples;
    dFake += r.dFake * r.samples;
  }
  return { loss: loss / samples, dReal: dReal / samples, dFake: dFake / samples, samples, contributors: replies.length };
}

function progressLine(step: number, steps: number, s: StepStats, imagesPerSecond: number, etaSeconds: number): string {
  const f = (x: number) => x.toFixed(4);
  return (
    `step ${step}/${steps} d_loss=${f(s.dLoss)} g_loss=${f(s.gLoss)} D(x)=${f(s.dReal)} D(G(z))=${f(s.dFake)} ` +
    `images/s=${imagesPerSecond.toFixed(0)} workers=${s.workers} eta=${formatDuration(etaSeconds)}`
  );
}

function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(s % 60).padStart(2, '0')}s`;
}
