import { GanfleetError } from '../util/errors';
import { Logger } from '../util/log';
import { dieWithParent } from '../util/process';

/**
 * The worker's side of single-node mode: what a worker child of `local`
 * tells it over IPC. Apart from local.ts, so that a worker process does not
 * load the coordinator.
 */

/** How often a worker child whose main thread is free tells `local` so, and how often `local` looks. */
export const ALIVE_EVERY_MS = 1_000;

/**
 * What a worker child tells `local` over IPC before it exits on an error that
 * a restart would only repeat (GPU_REQUIRED where the GPU package finds no
 * GPU, say): `local` then stops rather than spend its restarts on it.
 */
export interface WorkerRefusal {
  type: 'worker-refused';
  code: string;
  message: string;
}

export function isWorkerRefusal(m: unknown): m is WorkerRefusal {
  const r = m as Partial<WorkerRefusal> | null;
  return typeof r === 'object' && r !== null && r.type === 'worker-refused' && typeof r.code === 'string' && typeof r.message === 'string';
}

/** What a worker child tells `local` every ALIVE_EVERY_MS while its main thread is free to. */
const ALIVE = { type: 'worker-alive' } as const;

export function isWorkerAlive(m: unknown): boolean {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === ALIVE.type;
}

/**
 * In a worker started by `local`: tells it, every second the main thread is
 * free, that this worker is not hung. A round's compute, or a GPU's first
 * kernels, keep the thread busy as a loop or a stuck native call would;
 * only how long tells them apart (--hang-timeout).
 */
function reportAliveToLocal(): void {
  if (!process.send || !process.connected) return;
  const tell = () => {
    if (process.connected) process.send!(ALIVE, undefined, undefined, () => {});
  };
  // At once: Node's start and loading the CLI (1.5–2 s on a busy machine) have passed by now.
  tell();
  setInterval(tell, ALIVE_EVERY_MS).unref();
}

/**
 * In a worker started by `local`: tells it that `e`, which ends this worker,
 * is a refusal. Only ganfleet's own errors are (they carry a stable code);
 * anything else is a crash, which a restart may cure.
 */
async function reportRefusalToLocal(e: unknown): Promise<void> {
  if (!(e instanceof GanfleetError) || !process.send || !process.connected) return;
  const refusal: WorkerRefusal = { type: 'worker-refused', code: e.code, message: e.message };
  await new Promise<void>((r) => process.send!(refusal, undefined, undefined, () => r()));
}

/**
 * Runs a worker's `work` in this process. Where `local` started it (an IPC
 * channel), the worker never outlives `local`, tells it it is alive, and
 * tells it whether what ended it is a refusal.
 */
export async function runAsLocalChild<T>(log: Logger, work: () => Promise<T>): Promise<T> {
  if (!process.connected) return work();
  const parentGone = () => (log('parent process gone: exiting'), process.exit(1));
  process.once('disconnect', parentGone);
  dieWithParent();
  reportAliveToLocal();
  let result: T;
  try {
    result = await work();
  } catch (e) {
    await reportRefusalToLocal(e);
    throw e;
  }
  // Our own disconnect is no lost parent.
  process.off('disconnect', parentGone);
  if (process.connected) process.disconnect();
  return result;
}
