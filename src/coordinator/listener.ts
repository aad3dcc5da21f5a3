import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import { BOUNDED_REQUESTS, TLS_HANDSHAKE_MS, answerInTurn, boundPort, limitConnections, listenFailure, openFileLimit, workerPortConnections } from '../util/http';
import { Logger, throttledLogger } from '../util/log';
import { plural, urlHost } from '../util/text';
import { certificateDatesProblem, certificateNamesProblem } from '../util/tls';
import { CoordinatorConfig, isLoopback, publicWithoutToken } from './config';
import { CoordinatorMetrics } from './metrics';

type ListenerConfig = Pick<CoordinatorConfig, 'host' | 'port' | 'tlsCert' | 'tlsKey' | 'token' | 'insecure' | 'maxWorkers'>;

/**
 * The workers' port: HTTP(S), the token check at the WebSocket upgrade, and
 * the bounds that keep a flood of connections from ending the run. What an
 * admitted socket says is the receiver's (`Receiver.accept`, receiver.ts).
 */
export class WorkerListener {
  /** Settles once the server has stopped listening and every connection has ended. */
  private closed: Promise<void> | null = null;

  private constructor(
    private readonly server: http.Server | https.Server,
    /** Every TCP connection open, from its first byte: an HTTPS server tracks one only once its TLS handshake is done. */
    private readonly connections: Set<Duplex>,
    private readonly wss: WebSocketServer,
    /** The port bound, kept: a closed server has none. */
    readonly port: number,
    readonly url: string,
  ) {}

  /** Refuses a public host without a token unless --insecure; resolves once listening. */
  static async open(
    config: ListenerConfig,
    maxPayload: number,
    hooks: { log: Logger; metrics: CoordinatorMetrics },
    onConnection: (socket: WebSocket, address: string) => void,
  ): Promise<WorkerListener> {
    const { host, port, tlsCert, tlsKey, token } = config;
    const refused = publicWithoutToken(config);
    if (refused) throw new Error(refused);
    const server = tlsCert && tlsKey ? https.createServer({ ...BOUNDED_REQUESTS, handshakeTimeout: TLS_HANDSHAKE_MS, cert: fs.readFileSync(tlsCert), key: fs.readFileSync(tlsKey) }) : http.createServer(BOUNDED_REQUESTS);
    // Room for every worker, for three times as many refused ones (full, wrong token) and for probes at a time,
    // within the descriptors the process has (ulimit -n).
    const fileLimit = openFileLimit();
    const maxConnections = workerPortConnections(config.maxWorkers, fileLimit);
    const wanted = workerPortConnections(config.maxWorkers, null);
    limitConnections(server, maxConnections);
    const connections = new Set<Duplex>();
    server.on('connection', (socket: Duplex) => {
      connections.add(socket);
      socket.once('close', () => connections.delete(socket));
    });
    server.on(
      'request',
      answerInTurn((_req, res) => {
        res.writeHead(426, { 'content-type': 'text/plain' });
        res.end('this port speaks the ganfleet WebSocket protocol\n');
      }),
    );
    const wss = new WebSocketServer({ noServer: true, maxPayload });
    // For what a peer can repeat at will before it is anyone: a line a minute per address.
    const logPerPeer = throttledLogger(hooks.log);
    // Node closes a connection beyond maxConnections before reading a byte: its worker sees only `read ECONNRESET`
    // and retries for ever, so the reason (a low ulimit -n, a flood, more workers than it keeps room for) is said here.
    const fullBecause = maxConnections < wanted ? `ulimit -n ${fileLimit}: raise the open-files limit` : `4 per --max-workers and 256 more`;
    server.on('drop', (data?: { remoteAddress?: string }) => {
      const address = data?.remoteAddress ?? 'an unknown address';
      logPerPeer(`${address} full`, `refused a connection from ${address}: the workers' port already holds its ${maxConnections} connections (${fullBecause})`);
    });
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      // A worker's WebSocket may be quiet for longer (pings every half --heartbeat): its liveness is the heartbeat's.
      (socket as Duplex & { setTimeout?: (ms: number) => void }).setTimeout?.(0);
      if (!authorized(req, token)) {
        hooks.metrics.unauthorized.inc();
        const address = req.socket.remoteAddress ?? 'an unknown address';
        logPerPeer(address, `refused a connection from ${address}: missing or wrong token`);
        // The HTTP server stops handling this socket's errors at 'upgrade': a client that resets it now would crash the process.
        socket.on('error', () => socket.destroy());
        socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n', () => socket.destroy());
        return;
      }
      // An IPv6 address in brackets: in ::1:8080 (itself an address) the port could not be told apart.
      wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, `${urlHost(`${req.socket.remoteAddress}`)}:${req.socket.remotePort}`));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(listenFailure(e, '--host', host, '--port', port)));
      server.listen(port, host, () => resolve());
    });
    const bound = boundPort(server);
    const listener = new WorkerListener(server, connections, wss, bound, `${tlsCert ? 'wss' : 'ws'}://${urlHost(host)}:${bound}`);
    // Loopback keeps out other machines, not the other users of this one (README: Security).
    hooks.log(`listening for workers on ${listener.url}${token ? ' (token required)' : ' (no --token: anyone who can reach it can join, on loopback every user of this machine)'}`);
    if (token && !(tlsCert && tlsKey) && !isLoopback(host)) {
      hooks.log(`warning: the token and every frame travel in clear text on ${host}: give --tls-cert and --tls-key, or put a TLS-terminating proxy in front (README: Security)`);
    }
    const dates = tlsCert ? certificateDatesProblem(tlsCert) : null;
    if (dates) hooks.log(`warning: ${dates}`);
    const names = tlsCert ? certificateNamesProblem(tlsCert) : null;
    if (names) hooks.log(`warning: ${names}`);
    if (maxConnections < wanted) {
      hooks.log(`warning: ulimit -n ${fileLimit} leaves the workers' port ${maxConnections} connections, fewer than the ${wanted} it keeps for ${plural(config.maxWorkers, 'worker')} (4 each, and 256 to turn others away): raise the open-files limit`);
    }
    return listener;
  }

  /** Refuses new connections; the open ones go on. */
  stopAccepting(): void {
    // Node calls a close callback only once the connections have ended, and a later close() would wait for ever.
    this.closed ??= new Promise<void>((r) => this.server.close(() => r()));
  }

  /** Cuts whatever is still open (stalled workers, peers that never said hello) and stops listening. */
  async close(): Promise<void> {
    this.stopAccepting();
    for (const socket of this.wss.clients) socket.terminate();
    await new Promise<void>((r) => this.wss.close(() => r()));
    this.server.closeAllConnections();
    // A client that never started its TLS handshake would hold the close until the handshake timeout.
    for (const socket of this.connections) socket.destroy();
    await this.closed;
  }
}

/** Constant-time: both sides are hashed to equal length before comparing. */
function authorized(req: http.IncomingMessage, expected: string | undefined): boolean {
  if (!expected) return true;
  const header = req.headers.authorization ?? '';
  const given = header.startsWith('Bearer ') ? header.slice(7) : '';
  const digest = (s: string) => crypto.createHash('sha256').update(s).digest();
  return crypto.timingSafeEqual(digest(given), digest(expected)) && given.length > 0;
}
