import { ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { BackendChoice } from './backend';
import { Coordinator, TrainingSummary } from './coordinator/coordinator';
import { CoordinatorConfig } from './coordinator/config';
import { Logger, createLogger } from './util/log';

export interface LocalOptions {
  workers: number;
  /** CUDA device ids, handed out round-robin, one per worker child. */
  gpus: string[];
  workerBackend: BackendChoice;
}

/**
 * Single-node mode: the same Coordinator as `ganfleet coordinator`, on an
 * ephemeral loopback port, and N child processes running `ganfleet worker`.
 * Children exit when the coordinator says stop or their socket closes, so
 * none outlive this process even if it is killed.
 */
export async function runLocal(
  config: CoordinatorConfig,
  opts: LocalOptions,
  log: Logger = createLogger('local'),
): Promise<TrainingSummary> {
  const coordinator = await Coordinator.start({ ...config, host: '127.0.0.1', port: 0, minWorkers: opts.workers });
  const url = `ws://127.0.0.1:${coordinator.port}`;
  const children: ChildProcess[] = [];
  const killAll = () => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL'));
  process.on('exit', killAll);

  let interrupts = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (++interrupts > 1) {
      log(`${signal} again: killing workers`);
      killAll();
      process.exit(130);
    }
    coordinator.requestStop(`${signal} received`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  for (let i = 0; i < opts.workers; i++) {
    const env = { ...process.env };
    if (opts.gpus.length > 0) env.CUDA_VISIBLE_DEVICES = opts.gpus[i % opts.gpus.length];
    const args = [require.resolve('./cli'), 'worker', '--coordinator', url, '--backend', opts.workerBackend, '--name', `local-${i + 1}`];
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'inherit', 'inherit'] });
    children.push(child);
    child.on('exit', (code, signal) => {
      if (code === 0) return;
      log(`worker child ${i + 1} (pid ${child.pid}) exited with ${signal ?? `code ${code}`}`);
      if (children.every((c) => c.exitCode !== null || c.signalCode !== null)) coordinator.requestStop('every worker process exited');
    });
  }
  log(`started ${opts.workers} worker process(es) against ${url}`);

  try {
    return await coordinator.run();
  } finally {
    await coordinator.close();
    const deadline = setTimeout(killAll, 10_000);
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? once(c, 'exit') : null)));
    clearTimeout(deadline);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('exit', killAll);
  }
}
