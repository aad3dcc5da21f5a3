import http from 'node:http';
import { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';

/** Extra GET routes by exact path; a handler returns the status, content type and body. */
export type Routes = Record<string, (path: string) => { status: number; type: string; body: string | Buffer } | null>;

/**
 * Serves /metrics and /healthz, plus `routes` (the coordinator's status page
 * and its JSON). A route key ending in '/' matches every path under it.
 * Resolves once listening.
 */
export async function serveHttp(registry: Registry, host: string, port: number, routes: Routes = {}): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string | Buffer) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET') return send(405, 'text/plain', 'method not allowed\n');
    if (path === '/metrics') {
      registry.metrics().then(
        (body) => send(200, registry.contentType, body),
        (e: Error) => send(500, 'text/plain', e.message),
      );
      return;
    }
    if (path === '/healthz') return send(200, 'text/plain', 'ok\n');
    const route = routes[path] ?? Object.entries(routes).find(([k]) => k.endsWith('/') && k !== '/' && path.startsWith(k))?.[1];
    const out = route?.(path);
    if (out) return send(out.status, out.type, out.body);
    send(404, 'text/plain', 'not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}

export function boundPort(server: { address(): AddressInfo | string | null }): number {
  return (server.address() as AddressInfo).port;
}
