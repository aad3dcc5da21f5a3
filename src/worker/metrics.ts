import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { Phase } from '../protocol/messages';

/** A worker's own series, for `worker --metrics-port`; the same prefix as the coordinator's. */
export class WorkerMetrics {
  readonly registry = new Registry();
  readonly rounds = new Counter({ name: 'ganfleet_worker_rounds_total', help: 'Rounds this worker computed gradients for.', labelNames: ['phase'] as const, registers: [this.registry] });
  readonly roundSeconds = new Histogram({
    name: 'ganfleet_worker_round_compute_seconds',
    help: "Time to compute one round of gradients (forward, backward, read back), after the weights are uploaded: the computeSeconds the coordinator is told.",
    labelNames: ['phase'] as const,
    // DCGAN rounds on wasm take 1-2.5 s, and a GPU's first ones longer.
    buckets: [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly connected = new Gauge({ name: 'ganfleet_worker_connected', help: '1 while joined to a coordinator.', registers: [this.registry] });
  readonly shardImages = new Gauge({ name: 'ganfleet_worker_shard_images', help: 'Images in the shard this worker holds (0 while it has no connection, which takes its shard with it).', registers: [this.registry] });
  readonly reconnects = new Counter({ name: 'ganfleet_worker_reconnects_total', help: 'Connection attempts after the first: after a lost connection, or one that was refused or never opened.', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'ganfleet_' });
  }

  observeRound(phase: Phase, seconds: number): void {
    this.rounds.inc({ phase });
    this.roundSeconds.observe({ phase }, seconds);
  }
}
