import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Adam, KERAS_ADAM_DEFAULTS } from '../src/coordinator/adam';
import { writeCheckpoint } from '../src/coordinator/checkpoint';
import { GanModel, GanParameters, createModel } from '../src/model';
import { Rng } from '../src/util/rng';
import { CLI } from './helpers';

/** A real `ganfleet` child process whose output the test can wait on. */
export class GanfleetProcess {
  readonly child: ChildProcess;
  private output = '';
  readonly exited: Promise<number | null>;

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    this.child.stdout!.on('data', (d) => (this.output += d));
    this.child.stderr!.on('data', (d) => (this.output += d));
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
  }

  get log(): string {
    return this.output;
  }

  get pid(): number {
    return this.child.pid!;
  }

  /**
   * Resolves with the first match of `re` in the output after character
   * `from` (e.g. `proc.log.length` before an action), waiting for it if needed.
   */
  async waitFor(re: RegExp, ms = 30_000, from = 0): Promise<RegExpExecArray> {
    const end = Date.now() + ms;
    for (;;) {
      const m = re.exec(this.output.slice(from));
      if (m) return m;
      if (Date.now() > end) throw new Error(`timed out waiting for ${re}; output so far:\n${this.output.slice(-3000)}`);
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`process exited (${this.child.exitCode ?? this.child.signalCode}) before ${re}:\n${this.output.slice(-3000)}`);
      }
      await sleep(25);
    }
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * The real tfjs-node(-gpu) installed here, if any (a GPU box): tests that
 * stand in for an absent one, or expect none, would test it instead.
 */
export const installedNativePackage: string | undefined = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'].find((p) => {
  try {
    return Boolean(require.resolve(`${p}/package.json`));
  } catch {
    return false;
  }
});

/** Removed when this test file's process exits, whether or not its test passed or cleaned up. */
const tempDirs: string[] = [];
process.on('exit', () => {
  for (const dir of tempDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // A child still writing into it; the OS's tmp cleaner gets the rest.
    }
  }
});

export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `ganfleet-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

/** `ganfleet coordinator` on a free port; resolves once it listens, with its URL and metrics URL. */
export async function startCoordinator(args: string[], env: NodeJS.ProcessEnv = {}) {
  const proc = new GanfleetProcess(['coordinator', '--port', '0', '--metrics-port', '0', ...args], env);
  const url = (await proc.waitFor(/listening for workers on (wss?:\/\/\S+)/))[1];
  const metrics = (await proc.waitFor(/metrics on (http:\/\/\S+\/metrics)/))[1];
  return { proc, url, metrics };
}

export function startWorker(url: string, name: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}): GanfleetProcess {
  return new GanfleetProcess(['worker', '--coordinator', url, '--name', name, '--backend', 'wasm', ...extra], env);
}

/** The step numbers of every progress line, in order (run with --log-every 1). */
export function loggedSteps(log: string): number[] {
  return [...log.matchAll(/\] step (\d+)\/\d+ /g)].map((m) => Number(m[1]));
}

export async function scrape(url: string): Promise<string> {
  return (await fetch(url)).text();
}

/** Sum of every sample of a series, over all label sets. */
export function metricTotal(text: string, name: string): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

/** When `worker` logged its backend: its start-up, which a loaded machine stretches, is over, and it connects (and --give-up-after counts). */
export function startedUpAt(worker: GanfleetProcess): number {
  return Date.parse(/^(\S+) \[worker [^\]]*\] backend /m.exec(worker.log)![1]);
}

/**
 * A free TCP port on loopback, for a process that must come back on the same one. Below the
 * ephemeral range: a port from there, left unbound while the process starts or restarts, could be
 * handed to a port-0 listen of the test file running beside this one (npm test runs two at once).
 */
export async function freePort(): Promise<number> {
  let ephemeralFrom = 32768; // below every system's range: Linux's default, the BSDs' and macOS's 49152
  try {
    ephemeralFrom = Math.max(2048, Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0]) || 0);
  } catch {
    // not Linux
  }
  for (;;) {
    const port = 1024 + Math.floor(Math.random() * (ephemeralFrom - 1024));
    const s = net.createServer();
    const bound = await new Promise<boolean>((r) => s.once('error', () => r(false)).listen(port, '127.0.0.1', () => r(true)));
    if (!bound) continue;
    await new Promise((r) => s.close(r));
    return port;
  }
}

/** A data directory whose train split holds `n` blank images (raw IDX files). */
export function blankMnistDir(n: number, withTestSet = false): string {
  const dir = tempDir('blank-mnist');
  const header = (magic: number, dims: number[]) => {
    const b = Buffer.alloc(4 + 4 * dims.length);
    b.writeUInt32BE(magic, 0);
    dims.forEach((d, i) => b.writeUInt32BE(d, 4 + 4 * i));
    return b;
  };
  fs.writeFileSync(path.join(dir, 'train-images-idx3-ubyte'), Buffer.concat([header(0x803, [n, 28, 28]), Buffer.alloc(n * 784)]));
  fs.writeFileSync(path.join(dir, 'train-labels-idx1-ubyte'), Buffer.concat([header(0x801, [n]), Buffer.alloc(n)]));
  // The same images as the test set too: an evaluation's reference statistics then take no time.
  if (withTestSet) for (const name of ['images-idx3', 'labels-idx1']) fs.copyFileSync(path.join(dir, `train-${name}-ubyte`), path.join(dir, `t10k-${name}-ubyte`));
  return dir;
}

/** An environment whose processes step Date.now by `ms` on SIGUSR2, and say so; the monotonic clock does not move. */
export function clockStepOnSignal(dir: string, ms: number): NodeJS.ProcessEnv {
  const preload = path.join(dir, 'clock-step.js');
  fs.writeFileSync(preload, `const real = Date.now; let step = 0;
Date.now = () => real() + step;
process.on('SIGUSR2', () => { step = ${ms}; process.stdout.write('wall clock stepped by ${ms} ms\\n'); });
`);
  return { NODE_OPTIONS: `--require ${preload}` };
}

/** A step-5 checkpoint of an untrained MLP (seed 11) under `dir`: its path, and the model and weights it holds. */
export function untrainedCheckpoint(dir: string): { ckpt: string; model: GanModel; p: GanParameters } {
  const model = createModel('mlp');
  const p = model.init(new Rng(11));
  const adam = (n: number) => new Adam(n, KERAS_ADAM_DEFAULTS).state();
  const ckpt = writeCheckpoint(
    path.join(dir, 'checkpoints'),
    { step: 5, imagesTotal: 0, config: { arch: 'mlp' }, seedRng: new Rng(1).state(), nextWorker: 1, shards: [], generator: p.generator, discriminator: p.discriminator, adamGenerator: adam(p.generator.length), adamDiscriminator: adam(p.discriminator.length) },
    3,
  );
  return { ckpt, model, p };
}
