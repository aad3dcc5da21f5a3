import net from 'node:net';

/** Bytes a throttled pipe holds before it stops reading its source, as a real link's window would. */
const WINDOW = 256 * 1024;

/** One direction of a proxied connection: chunks wait in order until their due time. */
class Pipe {
  private readonly queue: { due: number; chunk: Buffer | null }[] = [];
  private timer: NodeJS.Timeout | null = null;
  private queuedBytes = 0;
  /** The socket this pipe reads from; paused while the queue is over WINDOW (TCP backpressure). */
  src: net.Socket | null = null;
  bytes = 0;

  private lastDue = 0;

  constructor(
    private readonly dst: net.Socket,
    private readonly latency: () => number,
    private readonly bytesPerSecond: () => number,
  ) {}

  /** `null` is the end of the stream, delivered after everything queued before it. */
  push(chunk: Buffer | null): void {
    // A later chunk never overtakes an earlier one, even if the latency was lowered in between.
    let due = Math.max(Date.now() + this.latency(), this.lastDue);
    const rate = this.bytesPerSecond();
    if (chunk && rate > 0) due += (chunk.length * 1000) / rate;
    this.lastDue = due;
    this.queue.push({ due, chunk });
    this.queuedBytes += chunk?.length ?? 0;
    if (this.queuedBytes > WINDOW) this.src?.pause();
    this.schedule();
  }

  /** Forgets whatever is queued (a black hole loses what was in flight). */
  clear(): void {
    this.queue.length = 0;
    this.queuedBytes = 0;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(): void {
    if (this.timer || this.queue.length === 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pump();
    }, Math.max(0, this.queue[0].due - Date.now()));
  }

  private pump(): void {
    const now = Date.now();
    while (this.queue.length && this.queue[0].due <= now) {
      const { chunk } = this.queue.shift()!;
      if (this.dst.destroyed) continue;
      if (chunk === null) {
        if (!this.dst.writableEnded) this.dst.end();
      } else {
        this.bytes += chunk.length;
        this.queuedBytes -= chunk.length;
        this.dst.write(chunk);
      }
    }
    if (this.queuedBytes <= WINDOW) this.src?.resume();
    this.schedule();
  }
}

/** A client connection and its upstream connection to the target. */
class Link {
  blackholed = false;
  readonly up: Pipe;
  readonly down: Pipe;

  constructor(
    readonly client: net.Socket,
    readonly upstream: net.Socket,
    latency: () => number,
    bytesPerSecond: () => number,
  ) {
    this.up = new Pipe(upstream, latency, bytesPerSecond);
    this.down = new Pipe(client, latency, bytesPerSecond);
  }

  get open(): boolean {
    return !this.client.destroyed && !this.upstream.destroyed;
  }

  blackhole(): void {
    this.blackholed = true;
    this.up.clear();
    this.down.clear();
  }

  cut(): void {
    this.client.destroy();
    this.upstream.destroy();
  }
}

/**
 * A TCP proxy on 127.0.0.1 that injects faults between a client and a target:
 * - `latencyMs`: every chunk, in both directions, is held this long (order kept);
 * - `bytesPerSecond`: each direction of each connection is throttled to this rate (0 = unlimited);
 * - `blackhole()`: the current connections stop forwarding anything in either
 *   direction, and neither side is closed, not even when the other side closes
 *   (a stuck peer: no FIN, no RST, no data);
 * - `cut()`: the current connections are destroyed on both sides;
 * - `refuse(true)`: new connections are reset as soon as they are accepted.
 */
export class FaultProxy {
  latencyMs = 0;
  bytesPerSecond = 0;
  accepted = 0;
  refused = 0;
  readonly events: string[] = [];
  private refusing = false;
  private readonly links = new Set<Link>();

  private constructor(
    private readonly server: net.Server,
    readonly targetPort: number,
    readonly targetHost: string,
  ) {}

  static async start(targetPort: number, targetHost = '127.0.0.1'): Promise<FaultProxy> {
    const server = net.createServer({ allowHalfOpen: true });
    const proxy = new FaultProxy(server, targetPort, targetHost);
    server.on('connection', (client) => proxy.onConnection(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return proxy;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  /** Connections currently forwarded or black-holed (both sockets not yet destroyed). */
  get openLinks(): number {
    return [...this.links].filter((l) => l.open).length;
  }

  /** Black-holed connections whose client socket is still open. */
  get stuckClients(): number {
    return [...this.links].filter((l) => l.blackholed && !l.client.destroyed).length;
  }

  url(scheme = 'ws'): string {
    return `${scheme}://127.0.0.1:${this.port}`;
  }

  setLatency(ms: number): void {
    this.latencyMs = ms;
    this.note(`latency ${ms} ms`);
  }

  /** Black-holes every current connection; returns how many. */
  blackhole(): number {
    const links = [...this.links].filter((l) => l.open);
    for (const l of links) l.blackhole();
    this.note(`black-holed ${links.length} connection(s)`);
    return links.length;
  }

  /** Destroys every current connection on both sides; returns how many. */
  cut(): number {
    const links = [...this.links];
    for (const l of links) l.cut();
    this.links.clear();
    this.note(`cut ${links.length} connection(s)`);
    return links.length;
  }

  refuse(on: boolean): void {
    this.refusing = on;
    this.note(on ? 'refusing new connections' : 'accepting new connections');
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private note(what: string): void {
    this.events.push(`${new Date().toISOString()} ${what}`);
  }

  private onConnection(client: net.Socket): void {
    client.on('error', () => {});
    if (this.refusing) {
      this.refused++;
      this.note('refused a connection');
      client.resetAndDestroy();
      return;
    }
    this.accepted++;
    client.pause();
    const upstream = net.connect({ port: this.targetPort, host: this.targetHost, allowHalfOpen: true });
    upstream.on('error', () => {});
    const link = new Link(client, upstream, () => this.latencyMs, () => this.bytesPerSecond);
    this.links.add(link);
    this.note(`accepted connection ${this.accepted}`);
    upstream.once('connect', () => client.resume());

    const wire = (src: net.Socket, dst: net.Socket, pipe: Pipe) => {
      pipe.src = src;
      src.on('data', (chunk: Buffer) => {
        if (!link.blackholed) pipe.push(chunk);
      });
      src.on('end', () => {
        if (!link.blackholed) pipe.push(null);
      });
      // An abrupt close (RST, destroy) is passed on as one, unless black-holed.
      src.on('close', (hadError) => {
        if (link.blackholed) return;
        if (hadError) dst.destroy();
        else pipe.push(null);
        if (client.destroyed && upstream.destroyed) this.links.delete(link);
      });
    };
    wire(client, upstream, link.up);
    wire(upstream, client, link.down);
  }
}
