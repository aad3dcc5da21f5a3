import http from 'node:http';
import { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { given } from './flags';
import { softLimit } from './process';

/** Extra GET routes by exact path; a handler returns the status, content type and body. */
export type Routes = Record<string, (path: string) => { status: number; type: string; body: string | Buffer } | null>;

/**
 * For every server here: headers within 10 s and a whole request within 30 s,
 * checked every second (Node checks every 30 s by default, which let a
 * client hold a socket for up to 40 s).
 */
export const BOUNDED_REQUESTS: http.ServerOptions = { headersTimeout: 10_000, requestTimeout: 30_000, connectionsCheckingInterval: 1_000 };

/** A TLS handshake within as long as the headers get: the headers' clock starts only after it, and Node's own default is 120 s. */
export const TLS_HANDSHAKE_MS = 10_000;

/** Answers a socket may have waiting at once: a client pipelining more requests than this is cut off. */
export const MAX_WAITING_ANSWERS = 8;

/**
 * A socket that has moved nothing (no byte of a request, none of an answer)
 * for this long is closed. Longer than headersTimeout, which answers a slow
 * request with 408 first. A socket with an answer still queued gets one
 * period more: Node's socket timeout lets a write that moved since it last
 * looked go on once, so a client that stops reading an answer is closed
 * after up to twice this.
 */
export const IDLE_SOCKET_MS = 15_000;

/**
 * At most `maxConnections` sockets at once; new ones beyond are closed at
 * once. A flood of idle connections then takes file descriptors up to the
 * bound, not up to the process limit, where the run's own writes would fail.
 * (It can still delay new connections while it lasts: keep the ports behind
 * a firewall or network policy.) A socket idle for IDLE_SOCKET_MS is closed:
 * the request timeouts cover only receiving a request, and a client that
 * never reads its answer held its socket for ever. Upgraded sockets (the
 * workers' WebSockets) are the upgrade handler's, and keep no such timeout.
 */
export function limitConnections<S extends http.Server>(server: S, maxConnections: number): S {
  server.maxConnections = maxConnections;
  server.setTimeout(IDLE_SOCKET_MS);
  return server;
}

/**
 * `answer`, for a server's requests, with at most MAX_WAITING_ANSWERS of a
 * socket's answers waiting at once. Node parses every request a client
 * pipelines and queues an answer to each, read or not: a client that sent
 * thousands and read none grew the coordinator by gigabytes, and its
 * /metrics renders starved training.
 */
export function answerInTurn(answer: http.RequestListener): http.RequestListener {
  const waiting = new WeakMap<object, number>();
  return (req, res) => {
    const socket = req.socket;
    const count = (waiting.get(socket) ?? 0) + 1;
    if (count > MAX_WAITING_ANSWERS) return void socket.destroy();
    waiting.set(socket, count);
    res.once('close', () => waiting.set(socket, (waiting.get(socket) ?? 1) - 1));
    answer(req, res);
  };
}

/** Sockets the metrics server holds at most: scrapers, probes and status pages. */
export const MAX_HTTP_CONNECTIONS = 128;

/** This process's soft limit on open files (RLIMIT_NOFILE); null where it cannot be read (not Linux). */
export function openFileLimit(): number | null {
  return softLimit('Max open files');
}

/**
 * Sockets the workers' port holds at most: room for every worker, three times
 * as many refused ones and probes, but never so many that a flood of them
 * leaves the process no descriptor for what it opens itself (the metrics
 * port's sockets, the workers' two mailbox files each, checkpoints, data
 * files, Node's own): a flood under `ulimit -n 1024` with --max-workers 200
 * failed the next checkpoint with EMFILE, and the run with it.
 */
export function workerPortConnections(maxWorkers: number, fileLimit: number | null = openFileLimit()): number {
  const wanted = 4 * maxWorkers + 256;
  if (fileLimit === null) return wanted;
  // What is left once the metrics port's sockets and the process's own are set aside. Each admitted worker
  // takes a socket and its two mailbox files, so at most a third of it can be workers: a --max-workers far
  // above that reserves mailbox files for workers that could never connect, and would leave the port 16.
  const budget = fileLimit - (MAX_HTTP_CONNECTIONS + 64);
  const workers = Math.max(0, Math.min(maxWorkers, Math.ceil(budget / 3)));
  return Math.max(16, Math.min(wanted, budget - 2 * workers));
}

/**
 * A listen that failed, named by the flag at fault: the address where it does not resolve or is not this
 * machine's, else the port (in use, out of range). The error's code stays the system's. EINVAL is the
 * address's too: Linux answers it for a link-local IPv6 one without its interface (fe80::1, not fe80::1%eth0),
 * and Node refuses a bad port itself before the system sees it.
 */
export function listenFailure(e: NodeJS.ErrnoException, hostFlag: string, host: string, portFlag: string, port: number): Error {
  const byHost = e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN' || e.code === 'EADDRNOTAVAIL' || e.code === 'EINVAL';
  // `given`: a value from GANFLEET_PORT is named as such, as in a usage error.
  const [flag, value] = byHost ? [hostFlag, host] : [portFlag, port];
  return Object.assign(new Error(`${flag} ${given(flag.slice(2), value)}: ${e.message}`), { code: e.code });
}

/**
 * Serves /metrics and /healthz, plus `routes` (the coordinator's status page
 * and its JSON). A route key ending in '/' matches every path under it.
 * GET and HEAD; a route that throws answers 500, and never takes the process
 * down. Resolves once listening. `hostFlag`: the flag that gave `host` (the
 * worker's --metrics-host; the coordinator serves on its --host).
 */
export async function serveHttp(registry: Registry, host: string, port: number, routes: Routes = {}, hostFlag = '--metrics-host'): Promise<http.Server> {
  const server = http.createServer(BOUNDED_REQUESTS, answerInTurn((req, res) => {
    // The absolute form (GET http://host/metrics, as through a forward proxy) names the same path (RFC 9112 3.2.2).
    const target = req.url ?? '/';
    const path = /^https?:\/\//i.test(target) && URL.canParse(target) ? new URL(target).pathname : target.split('?')[0];
    const send = (status: number, type: string, body: string | Buffer, headers: Record<string, string> = {}) => {
      // nosniff: a browser takes each answer as its declared type only (the JSON carries strings peers chose).
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...headers });
      res.end(body);
    };
    // No request here has a body: a client that sends one is not read further.
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n', { allow: 'GET, HEAD', connection: 'close' });
    if (path === '/metrics') {
      registry.metrics().then(
        (body) => send(200, registry.contentType, body),
        (e: Error) => send(500, 'text/plain', e.message),
      );
      return;
    }
    if (path === '/healthz') return send(200, 'text/plain', 'ok\n');
    const route = routes[path] ?? Object.entries(routes).find(([k]) => k.endsWith('/') && k !== '/' && path.startsWith(k))?.[1];
    let out: ReturnType<Routes[string]> = null;
    try {
      out = route?.(path) ?? null;
    } catch {
      return send(500, 'text/plain', 'internal error\n');
    }
    if (out) return send(out.status, out.type, out.body);
    send(404, 'text/plain', 'not found\n');
  }));
  limitConnections(server, MAX_HTTP_CONNECTIONS);
  await new Promise<void>((resolve, reject) => {
    // Named by its flag: both commands serve this on --metrics-port. A port out of range throws at once, a port in use comes as 'error'.
    const failed = (e: NodeJS.ErrnoException) => reject(listenFailure(e, hostFlag, host, '--metrics-port', port));
    server.once('error', failed);
    try {
      server.listen(port, host, () => resolve());
    } catch (e) {
      failed(e as NodeJS.ErrnoException);
    }
  });
  return server;
}

export function boundPort(server: { address(): AddressInfo | string | null }): number {
  return (server.address() as AddressInfo).port;
}
