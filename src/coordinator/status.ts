import { Routes } from '../util/http';
import { peerText } from '../util/log';
import type { CoordinatorConfig } from './config';
import type { Evaluation } from './evaluation';
import type { History } from './history';
import type { WorkerPeer } from './peer';
import type { StepStats } from './progress';
import type { Round } from './round';
import { STATUS_PAGE } from './status-page';

/** What the status page shows; served as /api/status. */
export interface CoordinatorStatus {
  /** `evaluating`: scoring G (--eval-every), which training waits for. */
  state: 'waiting' | 'training' | 'paused' | 'evaluating' | 'finished';
  step: number;
  steps: number;
  resumedFrom: number | null;
  /** The settings that decide what is trained. */
  run: { model: string; loss: string; batchSize: number; lr: number; beta1: number; beta2: number; dUpdates: number; seed: number; wireDtype: string };
  /** Of recent steps; 0 unless training (waiting, paused, finished). */
  imagesPerSecond: number;
  etaSeconds: number | null;
  last: StepStats | null;
  /**
   * `awaitedMs`: how long the open round has waited for this worker's gradients; null when no round is open,
   * or the worker has answered it or is no participant. A frozen or slow worker shows here long before it is dropped.
   */
  workers: { id: string; name: string; address: string; backend: string; state: string; shardSize: number; lastComputeMs: number; awaitedMs: number | null; frames: 'shared memory' | 'websocket' }[];
  /** The grids, oldest first: at most LISTED_GRIDS, spread over the run (summary.json lists every one). */
  samples: string[];
  /** Every --eval-every result so far, oldest first. */
  evaluations: Evaluation[];
}

export function runSettings(config: CoordinatorConfig): CoordinatorStatus['run'] {
  return {
    model: config.arch,
    loss: config.loss,
    batchSize: config.batchSize,
    lr: config.adam.learningRate,
    beta1: config.adam.beta1,
    beta2: config.adam.beta2,
    dUpdates: config.discriminatorUpdates,
    seed: config.seed,
    wireDtype: config.wireDtype,
  };
}

/** The rows of the workers; `round`, the open round (or null), read only here: nothing is tracked for it while training. */
export function workerRows(peers: readonly WorkerPeer[], round: Round | null = null, now = performance.now()): CoordinatorStatus['workers'] {
  return peers.map((p) => ({
    id: p.id,
    // What the peer chose, shown as its log lines show it: no row that runs backwards or over the page.
    name: peerText(p.name),
    address: p.address,
    backend: peerText(p.backend),
    state: p.shard ? 'active' : 'joined',
    shardSize: p.shard?.indices.length ?? 0,
    lastComputeMs: p.lastComputeSeconds * 1000,
    awaitedMs: round?.isAwaiting(p.id) ? now - round.startedAt : null,
    frames: p.mailbox?.inbox ? ('shared memory' as const) : ('websocket' as const),
  }));
}

/** The status page and its JSON, served beside /metrics. */
export function statusRoutes(run: { status(): CoordinatorStatus; history: History; readGrid(name: string): Buffer | null }): Routes {
  const json = (x: unknown) => ({ status: 200, type: 'application/json', body: JSON.stringify(x) });
  return {
    '/': () => ({ status: 200, type: 'text/html; charset=utf-8', body: STATUS_PAGE }),
    '/api/status': () => json(run.status()),
    '/api/history': () => json(run.history),
    '/samples/': (p) => {
      const png = run.readGrid(p.slice('/samples/'.length));
      return png && { status: 200, type: 'image/png', body: png };
    },
  };
}
