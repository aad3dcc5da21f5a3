/**
 * A network link of a chosen rate between a coordinator and its workers on
 * one machine, for `npm run bench -- --link RATE`: two network namespaces
 * joined by a veth pair, each end shaped by a token bucket (tc tbf) to RATE,
 * so the link carries RATE each way, as a full-duplex NIC does. The
 * coordinator's end carries every worker's traffic: this models the
 * coordinator machine's NIC, which every worker's weights and gradients
 * cross. Needs root and iproute2 (`ip`, `tc`).
 *
 * Namespaces outlive the process that made them, so a link removes itself on
 * close, on SIGINT and SIGTERM (killing what runs in it first), and a new one
 * removes those that a killed bench left.
 */
import { ChildProcess, spawn, SpawnOptions, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { processAlive } from '../src/util/process';

const COORDINATOR_ADDRESS = '10.231.0.1';
const WORKERS_ADDRESS = '10.231.0.2';
const NAMESPACE = /^gf(\d+)-[cw]$/;

/** `1gbit`, `100mbit`, `2.5gbit`, `500kbit`: tc's rate syntax, in bits per second. */
export function linkBitsPerSecond(rate: string): number {
  const m = /^(\d+(?:\.\d+)?)(k|m|g)bit$/.exec(rate);
  if (!m || Number(m[1]) <= 0) throw new Error(`--link takes a rate such as 100mbit, 1gbit or 10gbit; got ${JSON.stringify(rate)}`);
  return Number(m[1]) * { k: 1e3, m: 1e6, g: 1e9 }[m[2] as 'k' | 'm' | 'g'];
}

/**
 * The least time the link lets a step take, compute aside, for networks of
 * `g` and `d` bytes on the wire. A D round sends G's weights down to each
 * worker and brings D's gradients up (its two halves, 2·d); a G round sends
 * D's weights and brings G's gradients. In a
 * round with weights of w bytes and gradients of u bytes, the last worker's
 * gradients go up only after all N workers' weights are down (N·w + u), and
 * the up link carries all N gradients, the first only after one worker's
 * weights (w + N·u): a round takes at least w + u + (N − 1)·max(w, u).
 */
export function linkLeastMs(g: number, d: number, workers: number, bitsPerSecond: number): number {
  const round = (w: number, u: number) => w + u + (workers - 1) * Math.max(w, u);
  return ((round(g, 2 * d) + round(d, g)) * 8 * 1000) / bitsPerSecond;
}

/** An `ip` command that failed; `signal` is set where a Ctrl-C or SIGTERM meant for the bench ended it. */
class IpError extends Error {
  constructor(
    message: string,
    readonly signal: NodeJS.Signals | null,
  ) {
    super(message);
  }
}

function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new IpError(`ip ${args.join(' ')}: ${r.error?.message ?? (r.stderr.trim() || `killed by ${r.signal}`)}`, r.signal);
}

/** What benches killed before they could clean up left: their namespaces, what still runs in them, their scratch directories. */
function removeLeftovers(): void {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  for (const line of (r.stdout ?? '').split('\n')) {
    const name = line.split(' ')[0];
    const m = NAMESPACE.exec(name);
    if (!m || processAlive(Number(m[1]))) continue;
    const pids = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).stdout ?? '';
    for (const pid of pids.split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone already */
      }
    }
    spawnSync('ip', ['netns', 'del', name]);
  }
  for (const dir of fs.readdirSync(os.tmpdir())) {
    const pid = /^ganfleet-bench-link-(\d+)-/.exec(dir)?.[1];
    if (pid !== undefined && !processAlive(Number(pid))) fs.rmSync(path.join(os.tmpdir(), dir), { recursive: true, force: true });
  }
}

export class ShapedLink {
  readonly coordinatorAddress = COORDINATOR_ADDRESS;
  /** A directory for the runs' outputs, removed with the link. */
  readonly scratch = fs.mkdtempSync(path.join(os.tmpdir(), `ganfleet-bench-link-${process.pid}-`));
  private readonly children = new Set<ChildProcess>();
  private readonly onSignal = (signal: NodeJS.Signals) => {
    this.close();
    process.exit(128 + os.constants.signals[signal]);
  };

  private constructor(
    readonly coordinatorNamespace: string,
    readonly workersNamespace: string,
  ) {
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  /** The link, or why this machine cannot make one: `failedStep` names the command that failed. */
  static open(rate: string): ShapedLink | { reason: string; failedStep: string } {
    const bits = linkBitsPerSecond(rate);
    removeLeftovers();
    const tag = `gf${process.pid}`;
    const link = new ShapedLink(`${tag}-c`, `${tag}-w`);
    let step = 'ip netns add';
    try {
      ip(['netns', 'add', link.coordinatorNamespace]);
      ip(['netns', 'add', link.workersNamespace]);
      step = 'ip link add (veth)';
      ip(['link', 'add', `${tag}c`, 'netns', link.coordinatorNamespace, 'type', 'veth', 'peer', 'name', `${tag}w`, 'netns', link.workersNamespace]);
      // A bucket of 1 ms at the rate, two full frames at least. It lets the first bytes of each frame pass faster
      // than a NIC would: 0.86 MB crossed 1 Gbit/s in 6.7-7.0 ms, against the 7.3 ms Ethernet needs. A smaller one
      // loses time to late timers once the cores are busy, as they are in a run (500 µs: 10.7 ms with both busy).
      // tbf cuts segmentation-offloaded packets larger than the bucket into frames, and charges `overhead 24`
      // (Ethernet's preamble, gap and checksum) per packet it sees: per frame where it cuts them (100 Mbit/s),
      // per 64 KB packet where the bucket holds one (1 Gbit/s and up), where it is lost in the rounding.
      const burst = String(Math.max(2 * 1514, Math.round(bits / 8 / 1000)));
      for (const [ns, dev, address] of [
        [link.coordinatorNamespace, `${tag}c`, COORDINATOR_ADDRESS],
        [link.workersNamespace, `${tag}w`, WORKERS_ADDRESS],
      ]) {
        step = 'ip addr/link';
        ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', dev]);
        ip(['-n', ns, 'link', 'set', dev, 'up']);
        ip(['-n', ns, 'link', 'set', 'lo', 'up']);
        step = 'tc qdisc add (tbf)';
        ip(['netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', rate, 'burst', burst, 'latency', '100ms', 'overhead', '24']);
      }
      return link;
    } catch (e) {
      link.close();
      // A Ctrl-C reaches the ip command too: the bench stops, it does not report a machine without namespaces.
      const signal = e instanceof IpError ? e.signal : null;
      if (signal === 'SIGINT' || signal === 'SIGTERM') process.exit(128 + os.constants.signals[signal]);
      return { reason: `a shaped link needs root, iproute2 and the kernel's tbf qdisc: ${(e as Error).message}`, failedStep: step };
    }
  }

  /** `command` started inside `namespace`; killed by close() if it still runs then. */
  spawn(namespace: string, command: string[], options: SpawnOptions): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', namespace, ...command], options);
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  /** Deleting a namespace deletes its end of the veth pair, and with it the other end. */
  close(): void {
    for (const child of this.children) child.kill('SIGKILL');
    for (const ns of [this.coordinatorNamespace, this.workersNamespace]) spawnSync('ip', ['netns', 'del', ns]);
    fs.rmSync(this.scratch, { recursive: true, force: true });
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }
}
