/**
 * A network link of a chosen rate between a coordinator and its workers on
 * one machine, for `npm run bench -- --link RATE`: two network namespaces
 * joined by a veth pair, each end shaped by a token bucket (tc tbf) to RATE,
 * so the link carries RATE each way, as a full-duplex NIC does. The
 * coordinator's end carries every worker's traffic: this models the
 * coordinator machine's NIC, which every worker's weights and gradients
 * cross. Needs root and iproute2 (`ip`, `tc`).
 */
import { spawnSync } from 'node:child_process';

const COORDINATOR_ADDRESS = '10.231.0.1';
const WORKERS_ADDRESS = '10.231.0.2';

/** `1gbit`, `100mbit`, `2.5gbit`, `500kbit`: tc's rate syntax, in bits per second. */
export function linkBitsPerSecond(rate: string): number {
  const m = /^(\d+(?:\.\d+)?)(k|m|g)bit$/.exec(rate);
  if (!m || Number(m[1]) <= 0) throw new Error(`--link takes a rate such as 100mbit, 1gbit or 10gbit; got ${JSON.stringify(rate)}`);
  return Number(m[1]) * { k: 1e3, m: 1e6, g: 1e9 }[m[2] as 'k' | 'm' | 'g'];
}

function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.error?.message ?? r.stderr.trim()}`);
}

export class ShapedLink {
  private constructor(
    readonly coordinatorNamespace: string,
    readonly workersNamespace: string,
  ) {}

  readonly coordinatorAddress = COORDINATOR_ADDRESS;

  /** The link, or why this machine cannot make one (not root, no iproute2, no tbf). */
  static open(rate: string): ShapedLink | { reason: string } {
    const bits = linkBitsPerSecond(rate);
    const tag = `gf${process.pid}`;
    const link = new ShapedLink(`${tag}-c`, `${tag}-w`);
    try {
      ip(['netns', 'add', link.coordinatorNamespace]);
      ip(['netns', 'add', link.workersNamespace]);
      ip(['link', 'add', `${tag}c`, 'netns', link.coordinatorNamespace, 'type', 'veth', 'peer', 'name', `${tag}w`, 'netns', link.workersNamespace]);
      // A bucket of 1 ms at the rate (two full frames at least): a larger one would let the first bytes of every
      // frame pass at memory speed, where a real NIC sends none faster than its rate. tbf cuts segmentation-offloaded
      // packets larger than the bucket into frames.
      const burst = String(Math.max(2 * 1514, Math.round(bits / 8 / 1000)));
      for (const [ns, dev, address] of [
        [link.coordinatorNamespace, `${tag}c`, COORDINATOR_ADDRESS],
        [link.workersNamespace, `${tag}w`, WORKERS_ADDRESS],
      ]) {
        ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', dev]);
        ip(['-n', ns, 'link', 'set', dev, 'up']);
        ip(['-n', ns, 'link', 'set', 'lo', 'up']);
        ip(['netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', rate, 'burst', burst, 'latency', '100ms']);
      }
      return link;
    } catch (e) {
      link.close();
      return { reason: `a shaped link needs root, iproute2 and the kernel's tbf qdisc: ${(e as Error).message}` };
    }
  }

  /** `command` run inside `namespace`, as argv for spawn. */
  inside(namespace: string, command: string[]): [string, string[]] {
    return ['ip', ['netns', 'exec', namespace, ...command]];
  }

  /** Deleting a namespace deletes its end of the veth pair, and with it the other end. */
  close(): void {
    for (const ns of [this.coordinatorNamespace, this.workersNamespace]) spawnSync('ip', ['netns', 'del', ns]);
  }
}
