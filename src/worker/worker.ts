import os from 'node:os';
import WebSocket from 'ws';
import { BackendChoice, selectBackend } from '../backend';
import { createModel } from '../model';
import { decodeCoordinatorMessage, encode, ProtocolError } from '../protocol/codec';
import { CoordinatorMessage, Gradients, Hello, message, ErrorMessage } from '../protocol/messages';
import { createLogger, Logger } from '../util/log';
import { ShardCompute } from './compute';

export interface WorkerOptions {
  coordinator: string;
  backend: BackendChoice;
  name?: string;
}

/** The largest frame a worker accepts: a whole 60k-image shard (47 MB) plus headroom. */
const MAX_COORDINATOR_FRAME = 128 * 1024 * 1024;

/**
 * Connects to the coordinator and answers every weights message with the
 * gradients of its shard. Resolves with the process exit code: 0 when the
 * coordinator says stop, 1 when the connection fails or is refused.
 */
export async function runWorker(opts: WorkerOptions, log: Logger = createLogger('worker')): Promise<number> {
  const backend = await selectBackend(opts.backend);
  log(`backend ${backend.name} (${backend.notes.join('; ')})`);
  const name = opts.name ?? `${os.hostname()}:${process.pid}`;

  return new Promise<number>((resolve) => {
    const ws = new WebSocket(opts.coordinator, { maxPayload: MAX_COORDINATOR_FRAME });
    let compute: ShardCompute | null = null;
    let workerId = '?';
    let exitCode = 1;
    let closeReason = 'connection closed by the coordinator';

    const fail = (code: string, text: string) => {
      log(`error ${code}: ${text}`);
      closeReason = text;
      if (ws.readyState === WebSocket.OPEN) ws.send(encode(message<ErrorMessage>({ type: 'error', code, message: text })));
      ws.close(1002);
    };

    const handle = (msg: CoordinatorMessage) => {
      switch (msg.type) {
        case 'welcome': {
          const model = createModel(msg.arch);
          if (model.generatorLayout.size !== msg.generatorSize || model.discriminatorLayout.size !== msg.discriminatorSize) {
            return fail('WORKER_MODEL_MISMATCH', `this worker's ${msg.arch} has ${model.generatorLayout.size}+${model.discriminatorLayout.size} parameters, the coordinator's ${msg.generatorSize}+${msg.discriminatorSize}`);
          }
          compute?.dispose();
          compute = new ShardCompute(model, msg.batchSize, msg.seed);
          workerId = msg.workerId;
          log(`joined as ${workerId}: model ${msg.arch}, batch ${msg.batchSize}`);
          return;
        }
        case 'shard':
          if (!compute) return fail('WORKER_UNEXPECTED', 'shard before welcome');
          compute.setShard(msg.images, msg.count);
          log(`shard plan ${msg.plan}: ${msg.count} images`);
          return;
        case 'weights': {
          if (!compute) return fail('WORKER_UNEXPECTED', 'weights before welcome');
          compute.updateWeights(msg.generator, msg.discriminator);
          const t0 = performance.now();
          const out = compute.step(msg.step, msg.phase);
          const reply = message<Gradients>({
            type: 'gradients',
            step: msg.step,
            phase: msg.phase,
            samples: out.samples,
            gradients: out.gradients,
            loss: out.loss,
            dFake: out.dFake,
            computeSeconds: (performance.now() - t0) / 1000,
          });
          if (out.dReal !== undefined) reply.dReal = out.dReal;
          ws.send(encode(reply));
          return;
        }
        case 'stop':
          log(`stopping: ${msg.reason}`);
          exitCode = 0;
          closeReason = msg.reason;
          ws.close(1000);
          return;
        case 'error':
          log(`coordinator refused us: ${msg.code}: ${msg.message}`);
          closeReason = msg.message;
          return;
      }
    };

    ws.on('open', () => {
      log(`connected to ${opts.coordinator}`);
      ws.send(encode(message<Hello>({ type: 'hello', name, backend: backend.name, pid: process.pid, hostname: os.hostname() })));
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      try {
        if (!isBinary) throw new ProtocolError('bad_frame', 'text frame');
        handle(decodeCoordinatorMessage(data));
      } catch (e) {
        const code = e instanceof ProtocolError ? e.code : ((e as { code?: string }).code ?? 'WORKER_FAILED');
        fail(code, (e as Error).message);
      }
    });
    ws.on('error', (e) => {
      closeReason = e.message;
    });
    ws.on('close', () => {
      compute?.dispose();
      if (exitCode !== 0) log(`disconnected (${workerId}): ${closeReason}`);
      resolve(exitCode);
    });
  });
}
