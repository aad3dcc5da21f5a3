/**
 * `npm run bench`: one JSON object with every throughput figure, all
 * measured in this one run on this machine, so the ratios are comparable
 * even where absolute numbers are noisy.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { selectBackend } from '../src/backend';
import { Adam, KERAS_ADAM_DEFAULTS, applyDiscriminatorUpdates } from '../src/coordinator/adam';
import { TrainingSummary } from '../src/coordinator/coordinator';
import { defaultMnistDir, loadMnist } from '../src/data/mnist';
import { createModel } from '../src/model';
import { WIRE_DTYPES, WireDtype, wireDtypeBytes } from '../src/protocol/wire-dtype';
import { nativeAddon } from '../src/util/native';
import { Rng } from '../src/util/rng';
import { ShardCompute } from '../src/worker/compute';
import { sharedMemoryCeiling } from './ceiling';
import { ChildRun, childFailure, lostWorkerLine, removeScratch, runDeadlineMs, scratchDir, startChild, stopChildrenOnSignals } from './children';
import { linkBitsPerSecond, linkLeastMs, ShapedLink } from './link';
import { OpenblasChoice, openblasChoice } from './openblas';

const BATCH = 128;
/**
 * Untimed steps before the timed ones, in process and in `local` alike (the
 * PyTorch anchor skips its own 10): JIT compilation and first-touch page
 * faults slow a run's first 50 or so steps, in every process it has.
 */
const WARMUP = 50;
const CLI = path.join(__dirname, '..', 'src', 'cli.js');
const ANCHOR = path.join(__dirname, '..', '..', '..', 'shared', 'anchors', 'torch_gan.py');
/** bench/torch_matched.py: the anchor's network timed on ganfleet's step. */
const MATCHED_STEP = path.join(__dirname, '..', '..', 'bench', 'torch_matched.py');

const USAGE = `Usage: npm run bench -- [options]   (or node dist/bench/bench.js [options])

Prints one JSON object with every throughput figure of #6, measured in this run.

Options:
  --steps N          timed steps of each run, after a 50-step warm-up; a multiple of 50 (default 1000)
  --repeats N        interleaved repeats of the figures behind the ratios; each ratio is the median of its
                     value within each repeat (default 3)
  --memory-steps N   steps of each memory and CPU run of local --workers 2; a multiple of 20 (default 10000)
  --memory           instead of the full report: the memory and CPU runs alone (target 5), with and
                     without the mailboxes
  --scaling LIST     instead of the full report: local, the shared-memory ceiling and PyTorch DDP for each
                     worker count in LIST (comma-separated, starting with 1: 1,2,4,8), for machines with
                     more cores; each figure is also printed to stderr as it comes
  --link RATE        instead of the full report: the coordinator and its workers on either side of a link
                     shaped to RATE each way (100mbit, 1gbit, 10gbit; bench/link.ts), 1 and 2 workers with
                     each --wire-dtype, every frame on the WebSocket; needs root and iproute2
  --python PATH      the python3 that has torch, for the PyTorch anchor (default /usr/bin/python3)
  --anchor PATH      the anchor script (default ../shared/anchors/torch_gan.py beside the checkout)
  -h, --help         this text
`;

const OPTIONS = {
  steps: { type: 'string' },
  repeats: { type: 'string' },
  'memory-steps': { type: 'string' },
  memory: { type: 'boolean' },
  scaling: { type: 'string' },
  link: { type: 'string' },
  python: { type: 'string' },
  anchor: { type: 'string' },
  // Internal: the child that measures the in-process step without the native addon, or two at once.
  'in-process-only': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;


function options() {
  const { values } = parseArgs({ options: OPTIONS, strict: true, allowPositionals: false });
  // Each of these replaces the full report with its own: given two, one would be dropped without a word.
  const modes = [values.memory && '--memory', values.scaling !== undefined && '--scaling', values.link !== undefined && '--link'].filter(Boolean);
  if (modes.length > 1) throw new Error(`${modes.join(' and ')} each print a report of their own: give one of them`);
  const count = (name: 'steps' | 'repeats' | 'memory-steps', fallback: number, multipleOf = 1): number => {
    const text = values[name];
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1 || n % multipleOf !== 0) {
      throw new Error(`--${name} takes a whole number of at least 1${multipleOf > 1 ? `, a multiple of ${multipleOf}` : ''}; got ${JSON.stringify(text)}`);
    }
    return n;
  };
  return {
    help: values.help ?? false,
    inProcessOnly: values['in-process-only'] ?? false,
    steps: count('steps', 1000, WARMUP),
    repeats: count('repeats', 3),
    memorySteps: count('memory-steps', 10_000, 20),
    memoryOnly: values.memory ?? false,
    scaling: values.scaling === undefined ? null : workerCounts(values.scaling),
    link: values.link === undefined ? null : (linkBitsPerSecond(values.link), values.link),
    python: values.python ?? '/usr/bin/python3',
    anchor: values.anchor ?? ANCHOR,
  };
}

/** `--scaling 1,2,4,8`: worker counts to measure, increasing from 1 (the ratios divide by it; each count is a key of the report). */
function workerCounts(list: string): number[] {
  const counts = list.split(',').map(Number);
  const valid = counts[0] === 1 && counts.every((n, i) => Number.isInteger(n) && (i === 0 || n > counts[i - 1]));
  if (!valid) throw new Error(`--scaling takes increasing worker counts that start with 1, such as 1,2,4,8; got ${list}`);
  return counts;
}

type InProcessResult = Awaited<ReturnType<typeof inProcess>>;
type LocalResult = Exclude<Awaited<ReturnType<typeof localRun>>, Failed>;

/** A run that gave no figures, and why: the figures built on it are null, as the anchor's are without torch. */
type Failed = { reason: string };

function failed<T extends object>(x: T | Failed): x is Failed {
  return 'reason' in x;
}

/** Every run that failed, in the report's `failedRuns`: a failed repeat leaves the median of the others, and says so there. */
const failedRuns: string[] = [];

function failedRun(reason: string): Failed {
  failedRuns.push(reason);
  process.stderr.write(`bench: ${reason}\n`);
  return { reason };
}

/** The median run of those that gave figures; where none did, the first one's failure. */
function medianRun<T extends object>(xs: (T | Failed)[], key: (x: T) => number): T | Failed {
  const ok = xs.filter((x): x is T => !failed(x));
  return ok.length ? median(ok, key) : (xs.find((x) => failed(x)) as Failed);
}

/** a's images/s over `k` times b's; null where either run failed. */
function throughputRatio(a: { imagesPerSecond: number } | Failed, b: { imagesPerSecond: number } | Failed, k = 1): number | null {
  return failed(a) || failed(b) ? null : a.imagesPerSecond / (k * b.imagesPerSecond);
}

function msPerStepOf(x: { msPerStep: number } | Failed): number | null {
  return failed(x) ? null : x.msPerStep;
}

/** The seed's full step in one process: D gradients, Adam on D, G gradients, Adam on G. */
export async function inProcess(steps: number, warmup: number) {
  const backend = await selectBackend('wasm');
  const model = createModel('mlp');
  const train = loadMnist('train');
  const params = model.init(new Rng(1));
  const adamD = new Adam(params.discriminator.length, KERAS_ADAM_DEFAULTS);
  const adamG = new Adam(params.generator.length, KERAS_ADAM_DEFAULTS);
  const dUpdate = new Float32Array(params.discriminator.length);
  const compute = new ShardCompute(model, BATCH, 2);
  compute.setShard({ images: train.images, count: train.count, seed: 1 });
  let computeMs = 0;
  const step = (i: number) => {
    compute.updateWeights(params.generator, params.discriminator);
    let t = performance.now();
    const d = compute.step(i, 'discriminator');
    computeMs += performance.now() - t;
    applyDiscriminatorUpdates(adamD, params.discriminator, d.gradients, 2, dUpdate);
    compute.updateWeights(undefined, params.discriminator);
    t = performance.now();
    const g = compute.step(i, 'generator');
    computeMs += performance.now() - t;
    adamG.apply(params.generator, g.gradients);
  };
  for (let i = 0; i < warmup; i++) step(i);
  computeMs = 0;
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) step(warmup + i);
  const ms = (performance.now() - t0) / steps;
  compute.dispose();
  return { backend: backend.notes.join('; '), steps, msPerStep: round(ms), computeMsPerStep: round(computeMs / steps), imagesPerSecond: round((BATCH * 1000) / ms) };
}

/** inProcess in a child without the native addon: the wasm backend's own XNNPACK and the JavaScript Adam. */
async function inProcessWithoutNative(steps: number): Promise<InProcessResult | Failed> {
  const deadlineMs = runDeadlineMs(WARMUP + steps);
  const r = await startChild(process.execPath, [__filename, '--in-process-only', '--steps', String(steps)], deadlineMs, { ...process.env, GANFLEET_NATIVE: '0' }).finished;
  const failure = childFailure('the in-process run without the native addon', r, deadlineMs);
  return failure ? failedRun(failure) : JSON.parse(r.stdout);
}

/** The sample grid and the checkpoint are written once, after the last step: the timed steps train and nothing else. */
function localArgs(workers: number, steps: number, out: string, extra: string[] = [], logEvery = steps): string[] {
  return [
    CLI, 'local', '--workers', String(workers), '--steps', String(steps), '--batch-size', String(BATCH), '--log-every', String(logEvery), '--sample-every', String(steps + 1),
    '--checkpoint-every', '0', '--metrics-port', '-1', '--backend', 'wasm', '--out', out, ...extra,
  ];
}

/**
 * `local --workers N` for `warmup` + `steps` steps. The time per step counts
 * the last `steps` only, from the progress lines (one every `warmup` steps,
 * each with its window's images/s); the phase split and the bytes are the
 * summary's, over the whole run. With no warm-up, everything is the summary's.
 */
async function localRun(workers: number, steps: number, extra: string[] = [], warmup = WARMUP) {
  const total = warmup + steps;
  if (warmup > 0 && steps % warmup !== 0) throw new Error(`the timed steps (${steps}) must be a multiple of the warm-up (${warmup})`);
  const what = `local --workers ${workers}${extra.map((x) => ` ${x}`).join('')} (${total} steps)`;
  const deadlineMs = runDeadlineMs(total);
  const out = scratchDir('ganfleet-bench-');
  let r: ChildRun;
  let s: TrainingSummary;
  try {
    r = await startChild(process.execPath, localArgs(workers, total, out, extra, warmup > 0 ? warmup : total), deadlineMs).finished;
    const failure = childFailure(what, r, deadlineMs);
    if (failure) return failedRun(failure);
    // Exit 0 after a restart: the timed steps took in the restart, the join and a new shard plan.
    const lost = lostWorkerLine(r.output);
    if (lost) return failedRun(`${what} lost a worker while it trained: ${lost}`);
    s = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  } finally {
    removeScratch(out);
  }
  const msPerStep = warmup > 0 ? timedMsPerStep(r.output, warmup, total, BATCH * workers) : s.msPerStep;
  return {
    workers,
    steps,
    msPerStep: round(msPerStep),
    imagesPerSecond: round((BATCH * workers * 1000) / msPerStep),
    wholeRunMsPerStep: round(s.msPerStep),
    msPerStepByPhase: Object.fromEntries(Object.entries(s.msPerStepByPhase).map(([k, v]) => [k, round(v)])),
    wireBytesPerStepPerWorker: wireBytesPerStepPerWorker(s, workers),
    // The whole run's, shards included (steadyWireBytes takes them apart).
    wireBytesPerWorker: { toWorker: Math.round((s.bytesSentPerStep * s.stepsThisRun) / workers), fromWorker: Math.round((s.bytesReceivedPerStep * s.stepsThisRun) / workers) },
  };
}

/**
 * Target 4's figure: one worker's bytes per step each way once its shard is
 * across, from two runs whose totals differ only by their last `steps` steps
 * (the 47 MB shard, the join's both networks and the start-up cancel out),
 * and that one-off part on its own.
 */
async function steadyWireBytes(dtype: WireDtype, steps: number) {
  const extra = ['--wire-dtype', dtype];
  const [shortRun, longRun] = [await localRun(1, steps, extra, 0), await localRun(1, 2 * steps, extra, 0)];
  if (failed(shortRun)) return shortRun;
  if (failed(longRun)) return longRun;
  const [short, long] = [shortRun.wireBytesPerWorker, longRun.wireBytesPerWorker];
  const toWorker = (long.toWorker - short.toWorker) / steps;
  const fromWorker = (long.fromWorker - short.fromWorker) / steps;
  return { toWorker: Math.round(toWorker), fromWorker: Math.round(fromWorker), atJoinToWorker: Math.round(short.toWorker - steps * toWorker) };
}

/** A run's frame bytes per step (by socket or mailbox, notices included), each way, per worker (toward the workers, shards included). */
function wireBytesPerStepPerWorker(s: TrainingSummary, workers: number) {
  return { toWorker: Math.round(s.bytesSentPerStep / workers), fromWorker: Math.round(s.bytesReceivedPerStep / workers) };
}

/** ms per step after `warmup` steps, from the images/s of each progress window (one every `warmup` steps) after it. */
export function timedMsPerStep(log: string, warmup: number, total: number, imagesPerStep: number): number {
  let seconds = 0;
  let windows = 0;
  for (const m of log.matchAll(/step (\d+)\/\d+ .*images\/s=(\d+)/g)) {
    if (Number(m[1]) <= warmup) continue;
    seconds += (warmup * imagesPerStep) / Number(m[2]);
    windows++;
  }
  if (windows !== (total - warmup) / warmup) throw new Error(`expected ${(total - warmup) / warmup} progress lines after the warm-up, found ${windows}`);
  return (seconds * 1000) / (total - warmup);
}

interface TorchRun {
  ms_per_step: number;
  images_per_s: number;
}
type TorchRuns = { single: TorchRun; matched: TorchRun; ddp: Map<number, TorchRun>; ddpReason?: string; openblas: OpenblasChoice };
type TorchResult = TorchRuns | { reason: string };

/** What the anchor's python said before it failed: the last of its stderr, on one line. */
function anchorFailure(e: unknown): string {
  const err = e as Error & { stderr?: string; signal?: string };
  const said = (err.stderr ?? '').trim().split('\n').slice(-3).join(' | ').slice(-400);
  return `${err.message.split('\n')[0]}${err.signal ? ` (${err.signal})` : ''}${said ? `: ${said}` : ''}`;
}

/**
 * The PyTorch anchor: one process on one thread, then DDP over each of
 * `worlds` processes. `--python` and `--anchor` point elsewhere than Debian's
 * python3 and ../shared (a machine whose torch lives in a virtual env). A DDP
 * run that fails (its fixed port taken, say) costs only the DDP figures.
 */
async function torchAnchor(steps: number, worlds: number[]): Promise<TorchResult> {
  const { python, anchor } = OPTS;
  if (!fs.existsSync(anchor)) return { reason: `anchor script not found at ${anchor}` };
  const probe = await startChild(python, ['-c', 'import torch'], 120_000).finished;
  if (probe.status !== 0) {
    // One that never started (a mistyped --python: ENOENT) is not helped by installing torch.
    const started = probe.status !== null || probe.signal !== null || probe.timedOut;
    return { reason: started ? `${python} has no torch (apt-get install -y python3-torch libopenblas0-pthread)` : `${python} could not be run: ${probe.stderr.trim()}` };
  }
  const openblas = openblasChoice(python);
  // A few hundred steps take seconds; a DDP rendezvous that never completes would otherwise hang the bench.
  const deadlineMs = 600_000;
  const run = async (extra: string[], script = anchor): Promise<TorchRun> => {
    // --threads 1 sets torch's own threads; Debian's OpenBLAS (pthreads) takes its count from the environment.
    const args = [script, '--mnist', defaultMnistDir(), '--steps', String(steps), '--threads', '1', ...extra];
    const r = await startChild(python, args, deadlineMs, { ...process.env, OPENBLAS_NUM_THREADS: '1', OMP_NUM_THREADS: '1', ...openblas.env }).finished;
    if (r.status !== 0) {
      const late = r.timedOut ? ` (no result in ${deadlineMs / 1000} s)` : '';
      throw Object.assign(new Error(`Command failed: ${[python, ...args].join(' ')}${late}`), { stderr: r.stderr, signal: r.signal ?? undefined });
    }
    return JSON.parse(r.stdout.trim().split('\n').pop()!);
  };
  let single: TorchRun;
  let matched: TorchRun;
  try {
    single = await run([]);
    // The anchor's network doing ganfleet's step (one D update, one G forward pass), for ratio 1 like for like.
    matched = await run(['--anchor', anchor], MATCHED_STEP);
  } catch (e) {
    return { reason: `the anchor failed: ${anchorFailure(e)}` };
  }
  const ddp = new Map<number, TorchRun>();
  let ddpReason: string | undefined;
  for (const w of worlds) {
    try {
      ddp.set(w, await run(['--mode', 'ddp', '--world', String(w)]));
    } catch (e) {
      ddpReason ??= `the anchor's DDP over ${w} failed: ${anchorFailure(e)}`;
    }
  }
  return { single, matched, ddp, ...(ddpReason && { ddpReason }), openblas };
}

/** DDP's images/s over `world` times one process's: the anchor's ratio 3. */
function torchDdpScaling(single: TorchRun, ddp: TorchRun, world: number): number {
  return round(ddp.images_per_s / (world * ((BATCH * 1000) / single.ms_per_step)));
}

/** What every report starts with: where it ran, and what. */
function reportHeader() {
  return { machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version }, model: 'mlp', batchPerWorker: BATCH, native: nativeAddon().why };
}

/** The element whose key is the median: for an even count the lower middle, so of two ms/step figures the faster. */
export function median<T>(xs: T[], key: (x: T) => number): T {
  return [...xs].sort((a, b) => key(a) - key(b))[Math.floor((xs.length - 1) / 2)];
}

/** The median of numbers; for an even count the mean of the middle two. */
function medianOf(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length / 2;
  return Number.isInteger(mid) ? (sorted[mid - 1] + sorted[mid]) / 2 : sorted[Math.floor(mid)];
}

/**
 * A ratio taken within each repeat, and its median: both sides of a ratio ran
 * back to back, under the same drift, which medians picked from different
 * repeats would undo. The repeats where it has no value (no anchor) are left out.
 */
export function ratioAcrossRepeats<R>(runs: R[], ratio: (r: R) => number | null): { median: number | null; each: (number | null)[] } {
  const each = runs.map((r) => roundOrNull(ratio(r)));
  const known = each.filter((x): x is number => x !== null);
  return { median: known.length ? round(medianOf(known)) : null, each };
}

/** Resident set size and its peak (VmRSS, VmHWM) of a process, in MiB, from /proc. */
function memoryOf(pid: number): Memory | null {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    const [rss, peak] = [kb('VmRSS'), kb('VmHWM')];
    // An exiting process (a zombie) still has a status file, without its memory lines.
    if (!Number.isFinite(rss) || !Number.isFinite(peak)) return null;
    return { rss: round(rss / 1024), peak: round(peak / 1024) };
  } catch {
    return null;
  }
}

function childrenOf(pid: number): number[] {
  return fs
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return Number(fs.readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1].split(' ')[1]) === pid;
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** CPU time (user + system) a process has used so far, in ms, from /proc. */
function cpuMsOf(pid: number): number | null {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    // utime and stime, the stat file's 14th and 15th fields, in clock ticks.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return null;
  }
}

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** Target 5's "does not grow": RSS may rise by less than this per 1,000 steps (the slope over the run's second half). */
const MEMORY_GROWTH_LIMIT_MIB = 2;

/**
 * The Theil-Sen slope of `y` over `x`: the median of the slopes between every
 * two points. A leak raises every pair; one allocation that stays (an arena
 * or heap page taken once) raises only the pairs that straddle it, which a
 * least-squares line would spread over the whole run.
 */
function slope(points: { x: number; y: number }[]): number {
  const slopes: number[] = [];
  for (let i = 0; i < points.length; i++) {
    for (let j = i + 1; j < points.length; j++) slopes.push((points[j].y - points[i].y) / (points[j].x - points[i].x));
  }
  return medianOf(slopes);
}

type Memory = { rss: number; peak: number };
/** One progress line's reading of the coordinator and each worker (null: the process had gone). */
export type MemoryReading = { step: number; coordinator: Memory | null; workers: (Memory | null)[] };

/**
 * Target 5's verdict: the Theil-Sen slope of each process's RSS over the
 * run's second half, in MiB per 1,000 steps.
 *
 * The first half holds start-up, the JIT and the heap's first growth: the
 * coordinator over the WebSocket rose 12 MiB over its first 2,300 steps in
 * session 39, which a 2,000-step run read as growth of 4–6 MiB per 1,000
 * steps (session 38). After 95% come the final outputs (grid, checkpoint,
 * generator), which may begin before the last line is read. What is left
 * without a leak is V8's saw: its heap grows for thousands of steps, then is
 * collected, rising by 0.7–1.1 MiB per 1,000 steps in session 39's runs.
 */
export function memoryGrowth(readings: MemoryReading[], steps: number) {
  const secondHalf = readings.filter((x) => x.step >= steps / 2 && x.step <= 0.95 * steps);
  const growth = (memory: (Memory | null | undefined)[]) =>
    memory.every((m) => m) && memory.length > 2 ? round(1000 * slope(memory.map((m, i) => ({ x: secondHalf[i].step, y: m!.rss })))) : null;
  const rssGrowthMiBPer1000Steps = {
    coordinator: growth(secondHalf.map((x) => x.coordinator)),
    workers: (secondHalf[0]?.workers ?? []).map((_, w) => growth(secondHalf.map((x) => x.workers[w]))),
  };
  const growths = [rssGrowthMiBPer1000Steps.coordinator, ...rssGrowthMiBPer1000Steps.workers];
  return {
    rssGrowthMiBPer1000Steps,
    // A leak of one 0.43 MB frame or one step's tensors a step would be hundreds of MiB per 1,000 steps. A process
    // with no figure (gone at a reading, or fewer than 3 readings in the window) leaves no verdict, unless another grew.
    flat: growths.some((g) => g !== null && g >= MEMORY_GROWTH_LIMIT_MIB) ? false : growths.length > 0 && growths.every((g) => g !== null) ? true : null,
  };
}

/**
 * `local --workers 2` for `steps` steps, reading each process's RSS, its
 * peak (VmHWM) and CPU time from /proc at every progress line (20 in the
 * run): the coordinator (the local process) and each worker. CPU per step is
 * taken between the first and the last line, so start-up (loading MNIST,
 * joining) does not count.
 */
async function processRun(steps: number, extra: string[] = []) {
  const what = `local --workers 2${extra.map((x) => ` ${x}`).join('')} (${steps} steps, memory and CPU)`;
  const deadlineMs = runDeadlineMs(steps);
  const out = scratchDir('ganfleet-bench-proc-');
  const { child, finished } = startChild(process.execPath, localArgs(2, steps, out, extra, steps / 20), deadlineMs);
  const samples: (MemoryReading & { cpu: Map<number, number | null> })[] = [];
  // Each process's highest VmHWM seen, by the progress lines and by the poll below.
  const peaks = new Map<number, number>();
  const sampleMemory = (pid: number) => {
    const m = memoryOf(pid);
    if (m) peaks.set(pid, Math.max(peaks.get(pid) ?? 0, m.peak));
    return m;
  };
  let buffered = '';
  child.stdout!.on('data', (d: string) => {
    buffered += d;
    for (const m of buffered.matchAll(/step (\d+)\/\d+ d_loss/g)) {
      const workers = childrenOf(child.pid!);
      const cpu = new Map([child.pid!, ...workers].map((pid) => [pid, cpuMsOf(pid)]));
      samples.push({ step: Number(m[1]), coordinator: sampleMemory(child.pid!), workers: workers.map(sampleMemory), cpu });
    }
    buffered = buffered.slice(buffered.lastIndexOf('\n') + 1);
  });
  // Peaks to the end: the final grid, checkpoint and generator come after the last progress line.
  const poll = setInterval(() => {
    for (const pid of [child.pid!, ...childrenOf(child.pid!)]) sampleMemory(pid);
  }, 250);
  const r = await finished;
  clearInterval(poll);
  removeScratch(out);
  const failure = childFailure(what, r, deadlineMs);
  if (failure) return failedRun(failure);
  // A restarted worker is a new process, whose memory starts again.
  const lost = lostWorkerLine(r.output);
  if (lost) return failedRun(`${what} lost a worker while it trained: ${lost}`);
  const [first, last] = [samples[0], samples[samples.length - 1]];
  const perStep = (pid: number) => {
    const [a, b] = [first.cpu.get(pid), last.cpu.get(pid)];
    return a == null || b == null ? null : round((b - a) / (last.step - first.step));
  };
  const workerPids = [...first.cpu.keys()].filter((pid) => pid !== child.pid);
  return {
    memory: {
      workers: 2,
      steps,
      mib: samples.map(({ step, coordinator, workers }) => ({ step, coordinator, workers })),
      peakMiB: { coordinator: peaks.get(child.pid!) ?? null, workers: workerPids.map((pid) => peaks.get(pid) ?? null) },
      ...memoryGrowth(samples, steps),
    },
    cpuMsPerStep: { coordinator: perStep(child.pid!), workers: workerPids.map(perStep) },
  };
}

type ProcessRun = Exclude<Awaited<ReturnType<typeof processRun>>, Failed>;

/**
 * Target 5 over both transports: the mailboxes `local` uses and the
 * WebSocket alone (--no-mailbox), which workers on other machines use.
 * `flat` needs both runs flat; a leak in either is false; a run that gave no
 * figures, or no verdict, leaves it null.
 */
export function memoryReport(mailbox: ProcessRun | Failed, noMailbox: ProcessRun | Failed) {
  const [withMailbox, withoutMailbox] = [failed(mailbox) ? mailbox : mailbox.memory, failed(noMailbox) ? noMailbox : noMailbox.memory];
  const measured = [withMailbox, withoutMailbox].filter((m): m is ProcessRun['memory'] => !failed(m));
  const flat = measured.some((m) => m.flat === false) ? false : measured.length === 2 && measured.every((m) => m.flat === true) ? true : null;
  return { flat, mailbox: withMailbox, noMailbox: withoutMailbox };
}

/** Target 5 and the CPU per step: `local --workers 2` with the mailboxes, then over the WebSocket alone. */
async function processRuns(steps: number) {
  if (!fs.existsSync('/proc/self/stat')) return { memory: { reason: 'needs /proc (Linux)' }, cpuMsPerStepLocal2: { reason: 'needs /proc (Linux)' } };
  const mailed = await processRun(steps);
  // The transport of workers on other machines: a leak there must show as much as one in the mailboxes.
  const socketed = await processRun(steps, ['--no-mailbox']);
  return {
    memory: memoryReport(mailed, socketed),
    cpuMsPerStepLocal2: { mailbox: failed(mailed) ? mailed : mailed.cpuMsPerStep, noMailbox: failed(socketed) ? socketed : socketed.cpuMsPerStep },
  };
}

/**
 * The in-process step in two processes at once: what two cores of this
 * machine give two workers that never wait for each other or for a
 * coordinator (shared caches, memory bandwidth, clock), the ceiling for
 * `local --workers 2`.
 */
async function inProcessPair(steps: number): Promise<number[] | Failed> {
  const deadlineMs = runDeadlineMs(WARMUP + steps);
  const args = [__filename, '--in-process-only', '--steps', String(steps)];
  const runs = await Promise.all([startChild(process.execPath, args, deadlineMs).finished, startChild(process.execPath, args, deadlineMs).finished]);
  const failure = runs.map((r) => childFailure('an in-process run of two at once', r, deadlineMs)).find((f) => f !== null);
  return failure ? failedRun(failure) : runs.map((r) => JSON.parse(r.stdout).msPerStep);
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function roundOrNull(x: number | null): number | null {
  return x === null ? null : round(x);
}

/**
 * `--scaling 1,2,4,8`: ratios 2 and 3 of #6 for each worker count, with the
 * shared-memory ceiling and PyTorch DDP beside them, for a machine with
 * cores enough to give each worker its own (this project's have two). The
 * runs repeat `repeats` times, interleaved, and each ratio is the median of
 * that ratio within each repeat.
 */
async function scalingReport(counts: number[], steps: number, repeats: number) {
  type CeilingResult = Awaited<ReturnType<typeof sharedMemoryCeiling>>;
  const runs: { single: InProcessResult; local: (LocalResult | Failed)[]; ceiling: CeilingResult[]; torch: TorchResult }[] = [];
  // Each figure as it comes, on stderr: a run cut short still leaves its numbers. A failure has said why already (failedRun).
  const progress = <T extends { msPerStep: number } | Failed>(what: string, x: T): T => {
    if ('msPerStep' in x) process.stderr.write(`bench: ${what}: ${x.msPerStep} ms/step\n`);
    return x;
  };
  for (let r = 0; r < repeats; r++) {
    const single = progress('in-process', await inProcess(steps, WARMUP));
    const local: (LocalResult | Failed)[] = [];
    for (const n of counts) local.push(progress(`local --workers ${n}`, await localRun(n, steps)));
    const ceiling: CeilingResult[] = [];
    for (const n of counts) ceiling.push(progress(`shared-memory ceiling, ${n} workers`, await sharedMemoryCeiling(n, steps, WARMUP, BATCH)));
    const torch = await torchAnchor(Math.min(steps, 500), counts.slice(1));
    process.stderr.write(`bench: torch: ${JSON.stringify('single' in torch ? [torch.single, ...torch.ddp.values()] : torch)}\n`);
    runs.push({ single, local, ceiling, torch });
  }
  const single = median(runs.map((r) => r.single), (x) => x.msPerStep);
  const local = counts.map((_, i) => medianRun(runs.map((r) => r.local[i]), (x) => x.msPerStep));
  const ceiling = counts.map((_, i) => median(runs.map((r) => r.ceiling[i]), (x) => x.msPerStep));
  const torchRuns = runs.map((r) => r.torch).filter((t): t is TorchRuns => 'single' in t);
  const torchReason = runs.map((r) => r.torch).find((t): t is { reason: string } => 'reason' in t)?.reason;
  const torchSingle = torchRuns.length ? median(torchRuns.map((t) => t.single), (x) => x.ms_per_step) : null;
  const ddpOf = (n: number) => torchRuns.flatMap((t) => t.ddp.get(n) ?? []);
  const torchDdp = counts.slice(1).map((n) => (ddpOf(n).length ? median(ddpOf(n), (x) => x.ms_per_step) : null));
  const torchDdpReason = torchRuns.find((t) => t.ddpReason)?.ddpReason;
  const byWorkers = <T>(xs: T[]) => Object.fromEntries(xs.map((x, i) => [`workers${counts[i]}`, x]));
  const byWorld = <T>(xs: T[]) => Object.fromEntries(xs.map((x, i) => [`world${counts[i + 1]}`, x]));
  return {
    ...reportHeader(),
    repeats: {
      runs: repeats,
      inProcessMsPerStep: runs.map((r) => r.single.msPerStep),
      localMsPerStep: byWorkers(counts.map((_, i) => runs.map((r) => msPerStepOf(r.local[i])))),
      sharedMemoryCeilingMsPerStep: byWorkers(counts.map((_, i) => runs.map((r) => r.ceiling[i].msPerStep))),
      torchMsPerStep: torchRuns.map((t) => t.single.ms_per_step),
      torchDdpMsPerStep: byWorld(counts.slice(1).map((n) => torchRuns.map((t) => t.ddp.get(n)?.ms_per_step ?? null))),
    },
    inProcess: single,
    local: byWorkers(local),
    sharedMemoryCeiling: byWorkers(ceiling),
    torch: torchSingle ? { single: torchSingle, ddp: byWorld(torchDdp), openblasCore: torchRuns[0].openblas } : null,
    torchReason,
    torchDdpReason,
    failedRuns,
    // Each within its repeat, then the median (ratioAcrossRepeats).
    ratios: {
      distributedOverhead: ratioAcrossRepeats(runs, (r) => throughputRatio(r.local[0], r.single)).median,
      distributedOverheadCeiling: ratioAcrossRepeats(runs, (r) => r.ceiling[0].imagesPerSecond / r.single.imagesPerSecond).median,
      scaling: byWorkers(counts.map((n, i) => ratioAcrossRepeats(runs, (r) => throughputRatio(r.local[i], r.local[0], n)).median)),
      scalingCeiling: byWorkers(counts.map((n, i) => ratioAcrossRepeats(runs, (r) => r.ceiling[i].imagesPerSecond / (n * r.ceiling[0].imagesPerSecond)).median)),
      torchDdpScaling: torchSingle
        ? byWorld(counts.slice(1).map((n) => ratioAcrossRepeats(runs, (r) => ('single' in r.torch && r.torch.ddp.has(n) ? torchDdpScaling(r.torch.single, r.torch.ddp.get(n)!, n) : null)).median))
        : null,
    },
  };
}

/**
 * `--link RATE`: the coordinator and its workers in two network namespaces
 * joined by a link of RATE each way (bench/link.ts). Machines apart share no
 * /dev/shm, so every frame goes on the WebSocket. For 1 and 2 workers and each
 * --wire-dtype: what 16-bit frames buy where the wire, not the CPU, is short,
 * and how the coordinator's one link bounds the step.
 */
async function linkReport(rate: string, steps: number) {
  const link = ShapedLink.open(rate);
  if ('reason' in link) return { ...reportHeader(), link: rate, steps, results: null, reason: link.reason, failedStep: link.failedStep };
  try {
    const model = createModel('mlp');
    const results = [];
    for (const workers of [1, 2]) {
      for (const wireDtype of WIRE_DTYPES) {
        const bytes = wireDtypeBytes(wireDtype);
        const ms = linkLeastMs(model.generatorLayout.size * bytes, model.discriminatorLayout.size * bytes, workers, linkBitsPerSecond(rate));
        const r = await linkRun(link, workers, wireDtype, steps, ms);
        process.stderr.write(`bench: --link ${rate}, ${workers} worker(s), ${wireDtype}: ${failed(r) ? r.reason : `${r.msPerStep} ms/step`}\n`);
        // A failed run is null with its reason; the next may still run.
        results.push(failed(r) ? { workers, wireDtype, msPerStep: null, reason: r.reason, linkMsPerStep: round(ms) } : { ...r, linkMsPerStep: round(ms) });
      }
    }
    return { ...reportHeader(), link: rate, steps, results };
  } finally {
    link.close();
  }
}

/**
 * One run across the link: a real coordinator in one namespace, `workers`
 * real workers in the other. `linkMsPerStep`, the least the link lets a step
 * take, sets the deadline: a coordinator whose worker died waits for another
 * for ever.
 */
async function linkRun(link: ShapedLink, workers: number, wireDtype: WireDtype, steps: number, linkMsPerStep: number) {
  const out = fs.mkdtempSync(path.join(link.scratch, 'run-'));
  const total = WARMUP + steps;
  const what = `coordinator across --link, ${workers} worker(s), ${wireDtype}`;
  const deadlineMs = runDeadlineMs(total, 10 * linkMsPerStep);
  const env = { ...process.env, GANFLEET_TOKEN: crypto.randomBytes(16).toString('hex') };
  const coordinator = link.spawn(link.coordinatorNamespace, [
    process.execPath, CLI, 'coordinator', '--host', link.coordinatorAddress, '--port', '8787', '--min-workers', String(workers),
    '--steps', String(total), '--batch-size', String(BATCH), '--log-every', String(WARMUP), '--sample-every', String(total + 1), '--checkpoint-every', '0',
    '--metrics-port', '-1', '--backend', 'wasm', '--no-mailbox', '--wire-dtype', wireDtype, '--out', out,
  ], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const listening = new Promise<void>((resolve) => {
    const take = (d: Buffer) => {
      log += d;
      if (log.includes('listening for workers')) resolve();
    };
    coordinator.stdout!.on('data', take);
    coordinator.stderr!.on('data', take);
  });
  const exited = new Promise<number | null>((resolve) => coordinator.on('exit', resolve));
  let timedOut = false;
  const deadline = setTimeout(() => {
    timedOut = true;
    coordinator.kill('SIGKILL');
  }, deadlineMs);
  await Promise.race([listening, exited]);
  const children = Array.from({ length: workers }, () =>
    link.spawn(link.workersNamespace, [process.execPath, CLI, 'worker', '--coordinator', `ws://${link.coordinatorAddress}:8787`, '--backend', 'wasm', '--no-mailbox', '--give-up-after', '30'], { env, stdio: 'ignore' }),
  );
  const status = await exited;
  clearTimeout(deadline);
  // A finished run tells its workers to stop; they are killed only if the run failed.
  for (const c of children) if (status !== 0) c.kill('SIGKILL');
  await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.on('exit', r)) : null)));
  const said = log.trim().split('\n').slice(-3).join(' | ').slice(-400);
  if (timedOut) return { reason: `${what} did not finish in ${Math.round(deadlineMs / 1000)} s: ${said}` };
  if (status !== 0) return { reason: `${what} exited ${status}: ${said}` };
  const lost = lostWorkerLine(log);
  if (lost) return { reason: `${what} lost a worker while it trained: ${lost}` };
  const s: TrainingSummary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  const msPerStep = timedMsPerStep(log, WARMUP, total, BATCH * workers);
  return {
    workers,
    wireDtype,
    msPerStep: round(msPerStep),
    imagesPerSecond: round((BATCH * workers * 1000) / msPerStep),
    wireBytesPerStepPerWorker: wireBytesPerStepPerWorker(s, workers),
  };
}

/** Set by main from the command line; read by the runs. */
let OPTS: ReturnType<typeof options>;

async function main() {
  try {
    OPTS = options();
  } catch (e) {
    process.stderr.write(`bench: ${(e as Error).message}\n\n${USAGE}`);
    process.exit(2);
  }
  if (OPTS.help) {
    process.stdout.write(USAGE);
    return;
  }
  const { steps, repeats } = OPTS;
  if (!OPTS.inProcessOnly) {
    // The runs' settings are the bench's: a GANFLEET_BATCH_SIZE=64 left in the shell halved local's batch under a
    // report that said 128. The in-process children get theirs explicitly. The kernel choice, which the report's
    // `native` names, stays: it is how to bench the AVX2 kernel on an AVX-512 CPU.
    const dropped = Object.keys(process.env).filter((k) => k.startsWith('GANFLEET_') && k !== 'GANFLEET_NATIVE_AVX512');
    for (const k of dropped) delete process.env[k];
    if (dropped.length > 0) process.stderr.write(`bench: ignoring ${dropped.join(', ')}: every run takes its settings from the bench\n`);
  }
  if (OPTS.inProcessOnly) {
    process.stdout.write(JSON.stringify(await inProcess(steps, WARMUP)));
    return;
  }
  if (OPTS.link) {
    process.stdout.write(JSON.stringify(await linkReport(OPTS.link, steps), null, 2) + '\n');
    return;
  }
  // After --link's return: its ShapedLink removes its namespaces on these signals, before any exit.
  stopChildrenOnSignals();
  if (OPTS.memoryOnly) {
    const report = { ...reportHeader(), ...(await processRuns(OPTS.memorySteps)), failedRuns };
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    return;
  }
  if (OPTS.scaling) {
    const report = await scalingReport(OPTS.scaling, steps, repeats);
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    return;
  }
  // This machine's speed drifts by ±25% within minutes (other tenants): the
  // figures behind the ratios run `repeats` times, interleaved, and the
  // median run counts; the spread is reported.
  type CeilingResult = Awaited<ReturnType<typeof sharedMemoryCeiling>>;
  const runs: {
    single: InProcessResult;
    pair: number[] | Failed;
    local1: LocalResult | Failed;
    local2: LocalResult | Failed;
    socket1: LocalResult | Failed;
    socket2: LocalResult | Failed;
    ceiling1: CeilingResult;
    ceiling2: CeilingResult;
    torch: TorchResult;
  }[] = [];
  for (let r = 0; r < repeats; r++) {
    runs.push({
      single: await inProcess(steps, WARMUP),
      pair: await inProcessPair(steps),
      local1: await localRun(1, steps),
      local2: await localRun(2, steps),
      // The same runs with every frame on the WebSocket, for the mailboxes' share.
      socket1: await localRun(1, steps, ['--no-mailbox']),
      socket2: await localRun(2, steps, ['--no-mailbox']),
      ceiling1: await sharedMemoryCeiling(1, steps, WARMUP, BATCH),
      ceiling2: await sharedMemoryCeiling(2, steps, WARMUP, BATCH),
      // DDP over 2 once, in the last repeat, beside that repeat's single process.
      torch: await torchAnchor(Math.min(steps, 500), r === repeats - 1 ? [2] : []),
    });
  }
  const single = median(runs.map((r) => r.single), (x) => x.msPerStep);
  const local1 = medianRun(runs.map((r) => r.local1), (x) => x.msPerStep);
  const local2 = medianRun(runs.map((r) => r.local2), (x) => x.msPerStep);
  const socket1 = medianRun(runs.map((r) => r.socket1), (x) => x.msPerStep);
  const socket2 = medianRun(runs.map((r) => r.socket2), (x) => x.msPerStep);
  const ceiling1 = median(runs.map((r) => r.ceiling1), (x) => x.msPerStep);
  const ceiling2 = median(runs.map((r) => r.ceiling2), (x) => x.msPerStep);
  const withoutNative = await inProcessWithoutNative(steps);
  // 3 and 4 workers oversubscribe a 2-core machine: they show how throughput degrades.
  const local = [local1, local2, await localRun(3, steps), await localRun(4, steps)];
  const wire: Record<string, Awaited<ReturnType<typeof steadyWireBytes>>> = {};
  for (const d of WIRE_DTYPES) wire[d] = await steadyWireBytes(d, Math.min(steps, 100));
  const processes = await processRuns(OPTS.memorySteps);
  const pair = median(runs, (r) => r.single.msPerStep).pair;
  const torchRuns = runs.map((r) => r.torch).filter((t): t is TorchRuns => 'single' in t);
  const torchReason = runs.map((r) => r.torch).find((t): t is { reason: string } => 'reason' in t)?.reason;
  const torchSingle = torchRuns.length ? median(torchRuns.map((t) => t.single), (x) => x.ms_per_step) : null;
  const torchDdp = torchRuns.find((t) => t.ddp.has(2))?.ddp.get(2) ?? null;
  const torchDdpReason = torchRuns.find((t) => t.ddpReason)?.ddpReason;
  const anchorOf = (r: (typeof runs)[number]) => ('single' in r.torch ? r.torch : null);
  const ips = (msPerStep: number) => (BATCH * 1000) / msPerStep;
  // Every ratio whose two sides ran in each repeat is taken within the repeat (ratioAcrossRepeats).
  const perRepeat = Object.fromEntries(
    Object.entries({
      perWorkerMsVsTorch: (r) => (anchorOf(r) ? r.single.msPerStep / anchorOf(r)!.single.ms_per_step : null),
      perWorkerMsVsTorchMatchedWork: (r) => (anchorOf(r) ? r.single.msPerStep / anchorOf(r)!.matched.ms_per_step : null),
      distributedOverhead: (r) => throughputRatio(r.local1, r.single),
      scaling2Workers: (r) => throughputRatio(r.local2, r.local1, 2),
      distributedOverheadNoMailbox: (r) => throughputRatio(r.socket1, r.single),
      scaling2WorkersNoMailbox: (r) => throughputRatio(r.socket2, r.socket1, 2),
      // Two independent in-process runs against one: how far two workers could scale here with no coordinator at all.
      scalingCeilingTwoProcesses: (r) => (failed(r.pair) ? null : r.pair.reduce((n, ms) => n + ips(ms), 0) / (2 * ips(r.single.msPerStep))),
      // Ratios 2 and 3 of the protocol-free run (bench/ceiling.ts): the most `local` could reach on this machine.
      distributedOverheadCeiling: (r) => r.ceiling1.imagesPerSecond / r.single.imagesPerSecond,
      scaling2WorkersCeiling: (r) => r.ceiling2.imagesPerSecond / (2 * r.ceiling1.imagesPerSecond),
      torchDdpScaling2: (r) => {
        const t = anchorOf(r);
        return t?.ddp.has(2) ? torchDdpScaling(t.single, t.ddp.get(2)!, 2) : null;
      },
    } satisfies Record<string, (r: (typeof runs)[number]) => number | null>).map(([name, ratio]) => [name, ratioAcrossRepeats(runs, ratio)]),
  );
  const report = {
    ...reportHeader(),
    repeats: {
      runs: repeats,
      inProcessMsPerStep: runs.map((r) => r.single.msPerStep),
      local1MsPerStep: runs.map((r) => msPerStepOf(r.local1)),
      local2MsPerStep: runs.map((r) => msPerStepOf(r.local2)),
      local1NoMailboxMsPerStep: runs.map((r) => msPerStepOf(r.socket1)),
      local2NoMailboxMsPerStep: runs.map((r) => msPerStepOf(r.socket2)),
      inProcessTwoAtOnceMsPerStep: runs.map((r) => (failed(r.pair) ? null : r.pair)),
      sharedMemoryCeiling1MsPerStep: runs.map((r) => r.ceiling1.msPerStep),
      sharedMemoryCeiling2MsPerStep: runs.map((r) => r.ceiling2.msPerStep),
      torchMsPerStep: runs.map((r) => ('single' in r.torch ? r.torch.single.ms_per_step : null)),
      torchMatchedWorkMsPerStep: runs.map((r) => ('single' in r.torch ? r.torch.matched.ms_per_step : null)),
      // Each ratio within each repeat; `ratios` gives their medians.
      ratios: Object.fromEntries(Object.entries(perRepeat).map(([name, r]) => [name, r.each])),
    },
    inProcess: single,
    inProcessWithoutNative: withoutNative,
    inProcessTwoAtOnce: failed(pair) ? pair : { msPerStep: pair, imagesPerSecond: round(pair.reduce((n, ms) => n + (BATCH * 1000) / ms, 0)) },
    local: Object.fromEntries(local.map((l, i) => [`workers${i + 1}`, l])),
    localNoMailbox: { workers1: socket1, workers2: socket2 },
    // bench/ceiling.ts: the same training with no protocol at all, what this machine allows `local`.
    sharedMemoryCeiling: { workers1: ceiling1, workers2: ceiling2 },
    wireBytesPerStepPerWorker: wire,
    ...processes,
    torch: torchSingle
      ? { single: torchSingle, matchedWork: median(torchRuns.map((t) => t.matched), (x) => x.ms_per_step), ddp2: torchDdp, openblasCore: torchRuns[0].openblas }
      : null,
    torchReason,
    torchDdpReason,
    failedRuns,
    ratios: {
      ...Object.fromEntries(Object.entries(perRepeat).map(([name, r]) => [name, r.median])),
      // Run once, outside the repeats: against the median of the other side.
      perWorkerMsVsTorchWithoutNative: torchSingle && !failed(withoutNative) ? round(withoutNative.msPerStep / torchSingle.ms_per_step) : null,
      scaling3Workers: roundOrNull(throughputRatio(local[2], local[0], 3)),
      scaling4Workers: roundOrNull(throughputRatio(local[3], local[0], 4)),
    },
  };
  process.stdout.write(JSON.stringify(report, null, 2) + '\n');
}

// Imported by the tests for memoryReport, the ratios' arithmetic and the in-process step, it runs nothing.
if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`bench failed: ${(e as Error).stack}\n`);
    process.exit(1);
  });
}
