import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { Writable } from 'node:stream';
import { Registry } from 'prom-client';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { IDLE_SOCKET_MS, MAX_HTTP_CONNECTIONS, MAX_WAITING_ANSWERS, boundPort, serveHttp, workerPortConnections } from '../src/util/http';
import { CLI } from './helpers';
import { tempDir } from './harness';
import { WorkerListener } from '../src/coordinator/listener';
import { CoordinatorMetrics } from '../src/coordinator/metrics';
import { createLogger, throttledLogger } from '../src/util/log';

test('the metrics server answers GET and HEAD, refuses other methods with Allow, and a route that throws is a 500, not a crash', async () => {
  const server = await serveHttp(new Registry(), '127.0.0.1', 0, {
    '/ok': () => ({ status: 200, type: 'text/plain', body: 'fine\n' }),
    '/broken/': () => {
      throw new Error('EMFILE: too many open files');
    },
  });
  const url = `http://127.0.0.1:${boundPort(server)}`;
  try {
    const head = await fetch(`${url}/healthz`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
    assert.equal(await (await fetch(`${url}/ok`)).text(), 'fine\n');
    const post = await fetch(`${url}/healthz`, { method: 'POST', body: 'x' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    const broken = await fetch(`${url}/broken/thing`);
    assert.equal(broken.status, 500);
    assert.equal(await broken.text(), 'internal error\n', 'the error itself stays inside');
    assert.equal((await fetch(`${url}/healthz`)).status, 200, 'still serving');
    // The absolute form, as a forward proxy sends it (RFC 9112 3.2.2), names the same paths; a broken one is not found.
    const absolute = (target: string) =>
      new Promise<[number, string]>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port: boundPort(server), path: target }, (res) => {
          let body = '';
          res.on('data', (d) => (body += d)).on('end', () => resolve([res.statusCode!, body]));
        }).on('error', reject);
      });
    assert.deepEqual(await absolute(`${url}/ok?fresh=1`), [200, 'fine\n']);
    assert.deepEqual(await absolute(`HTTP://127.0.0.1:${boundPort(server)}/healthz`), [200, 'ok\n']);
    assert.equal((await absolute('http://[::1')).at(0), 404);
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

test('idle connections are bounded: beyond MAX_HTTP_CONNECTIONS a new socket is closed at once, and scrapes work again when they go', { timeout: 30_000 }, async () => {
  const server = await serveHttp(new Registry(), '127.0.0.1', 0);
  const port = boundPort(server);
  const sockets: net.Socket[] = [];
  try {
    const open = () =>
      new Promise<net.Socket>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => resolve(s));
        s.on('error', () => {});
        sockets.push(s);
      });
    for (let i = 0; i < MAX_HTTP_CONNECTIONS; i++) await open();
    // Accepted, then closed by the server: it ends without an answer.
    const extra = await open();
    await new Promise((r) => extra.once('close', r));
    for (const s of sockets) s.destroy();
    for (let i = 0; ; i++) {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => null);
      if (r?.status === 200) break;
      assert.ok(i < 50, 'the server did not serve again after the idle sockets closed');
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    for (const s of sockets) s.destroy();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

/** A stream for a logger that keeps what is written to it. */
function capturedLog(component: string): { log: (msg: string) => void; written: () => string; clear: () => void } {
  let text = '';
  const sink = new Writable({
    write(chunk, _encoding, done) {
      text += chunk;
      done();
    },
  });
  return { log: createLogger(component, sink as unknown as NodeJS.WriteStream), written: () => text, clear: () => void (text = '') };
}

test('a log line cannot be split, coloured or turned around by a string from a peer', () => {
  const { log, written: text, clear } = capturedLog('coordinator');
  log('w1: its mailbox cannot be used here (ENOENT: /x\n2030-01-01T00:00:00.000Z [coordinator] w1 left (FORGED)\u001b[31m)');
  let written = text();
  assert.equal(written.split('\n').length, 2, written);
  assert.match(written, /\(ENOENT: \/x\\n2030-01-01T00:00:00\.000Z \[coordinator\] w1 left \(FORGED\)\\u001b\[31m\)\n$/);
  // Nor turned around or hidden in a viewer that handles bidirectional text.
  clear();
  log('w2 joined ("\u202edesrever" \u2066x\u2069 /data/\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645)');
  written = text();
  assert.equal(written.slice(written.indexOf(' w2 ')), ' w2 joined ("\\u202edesrever" \\u2066x\\u2069 /data/\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645)\n', 'a joiner in a Persian name stays');
});

test("a worker's own --name in its lines' prefix cannot split them either", () => {
  const { log, written: text } = capturedLog('worker a\n2030-01-01T00:00:00.000Z [coordinator] forged\u001b[31m');
  log('joined');
  const written = text();
  assert.equal(written.split('\n').length, 2, written);
  assert.match(written, /^\S+ \[worker a\\n2030-01-01T00:00:00\.000Z \[coordinator\] forged\\u001b\[31m\] joined\n$/);
});

test('a peer that repeats an offence is logged once a minute per address, with how many more it stands for', () => {
  let now = 0;
  const lines: string[] = [];
  const log = throttledLogger((m) => lines.push(m), 60_000, () => now);
  for (let i = 0; i < 5000; i++) log('10.0.0.1', 'refused 10.0.0.1');
  log('10.0.0.2', 'refused 10.0.0.2');
  assert.deepEqual(lines, ['refused 10.0.0.1', 'refused 10.0.0.2']);
  now += 60_000;
  log('10.0.0.1', 'refused 10.0.0.1');
  assert.equal(lines[2], 'refused 10.0.0.1 (and 4999 more like it in the last 60 s)');
});

test("a throttled key's window is a whole interval from its last line, and its next line counts the events since and the seconds they span", () => {
  let now = 0;
  const lines: string[] = [];
  const log = throttledLogger((m) => lines.push(m), 60_000, () => now);
  log('10.0.0.1', 'refused');
  for (now of [30_000, 45_000]) log('10.0.0.1', 'refused');
  now = 90_000;
  log('10.0.0.1', 'refused');
  now = 149_999;
  log('10.0.0.1', 'refused');
  now = 150_000;
  log('10.0.0.1', 'refused');
  now = 210_000; // none unsaid since: no count
  log('10.0.0.1', 'refused');
  assert.deepEqual(lines, ['refused', 'refused (and 2 more like it in the last 90 s)', 'refused (and 1 more like it in the last 60 s)', 'refused']);
});

test('a throttled key silent for two intervals is forgotten (the map holds two intervals of keys), one silent for less is not', () => {
  const linesAfter = (silentMs: number) => {
    let now = 0;
    const lines: string[] = [];
    const log = throttledLogger((m) => lines.push(m), 60_000, () => now);
    log('10.0.0.1', 'refused');
    now = 1;
    log('10.0.0.1', 'refused');
    now = silentMs;
    log('10.0.0.1', 'refused');
    return lines;
  };
  assert.deepEqual(linesAfter(100_000), ['refused', 'refused (and 1 more like it in the last 100 s)']);
  // Its count goes with it: the metric of the events has it.
  assert.deepEqual(linesAfter(120_000), ['refused', 'refused']);
});

test('a step of the wall clock back (NTP, a resumed VM) does not silence a peer for as long as the step: the interval is timed on the monotonic clock', async (t) => {
  t.mock.timers.enable({ apis: ['Date'], now: 3_600_000 });
  const lines: string[] = [];
  const log = throttledLogger((m) => lines.push(m), 200);
  log('10.0.0.1', 'refused 10.0.0.1');
  t.mock.timers.setTime(0); // the wall clock steps an hour back
  await new Promise((r) => setImmediate(r));
  const t0 = performance.now();
  while (performance.now() - t0 < 300) await new Promise((r) => setImmediate(r));
  log('10.0.0.1', 'refused 10.0.0.1');
  assert.deepEqual(lines, ['refused 10.0.0.1', 'refused 10.0.0.1']);
});

test('a client that never finishes its headers is cut off (Node alone would hold it up to 40 s), so idle floods drain', { timeout: 30_000 }, async () => {
  const server = await serveHttp(new Registry(), '127.0.0.1', 0);
  try {
    const socket = net.connect(boundPort(server), '127.0.0.1');
    socket.on('error', () => {});
    let answer = '';
    socket.on('data', (d) => (answer += d));
    await new Promise((r) => socket.once('connect', r));
    socket.write('GET /metrics HTTP/1.1\r\nHost: x\r\n'); // and never the blank line
    const closed = await Promise.race([new Promise((r) => socket.once('close', () => r('closed'))), new Promise((r) => setTimeout(() => r('still open'), 20_000))]);
    socket.destroy();
    assert.equal(closed, 'closed');
    assert.match(answer, /^HTTP\/1\.1 408/);
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

test('a metrics port that cannot be listened on is named by its flag, whether Node refuses it at once (out of range) or later (in use); an address that cannot be, by its own', async () => {
  await assert.rejects(serveHttp(new Registry(), '127.0.0.1', 70000), (e: NodeJS.ErrnoException) => /^--metrics-port 70000: /.test(e.message) && e.code === 'ERR_SOCKET_BAD_PORT');
  // A name that does not resolve (.invalid never does, RFC 6761) and an address not on this machine (TEST-NET-3).
  await assert.rejects(serveHttp(new Registry(), 'nosuch.invalid', 0), (e: NodeJS.ErrnoException) => /^--metrics-host nosuch\.invalid: /.test(e.message) && ['ENOTFOUND', 'EAI_AGAIN'].includes(e.code!));
  await assert.rejects(serveHttp(new Registry(), '203.0.113.7', 0, {}, '--host'), (e: NodeJS.ErrnoException) => /^--host 203\.0\.113\.7: /.test(e.message) && e.code === 'EADDRNOTAVAIL');
  // A link-local IPv6 address without its interface: Linux answers EINVAL, which named the port (--port 8787: listen EINVAL).
  await assert.rejects(serveHttp(new Registry(), 'fe80::1234', 0, {}, '--host'), (e: NodeJS.ErrnoException) => e.code !== 'EINVAL' || /^--host fe80::1234: /.test(e.message));
  const taken = await serveHttp(new Registry(), '127.0.0.1', 0);
  try {
    const port = boundPort(taken);
    await assert.rejects(serveHttp(new Registry(), '127.0.0.1', port), (e: NodeJS.ErrnoException) => e.message.startsWith(`--metrics-port ${port}: `) && e.code === 'EADDRINUSE');
  } finally {
    await new Promise((r) => taken.close(r));
  }
});

/** Sends `count` pipelined requests for `target` in one write; resolves with how many answers came before the server closed the socket. */
async function pipelined(port: number, target: string, count: number): Promise<number> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  let answers = '';
  socket.on('data', (d) => (answers += d));
  await new Promise((r) => socket.once('connect', r));
  socket.write(`GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`.repeat(count));
  const closed = await Promise.race([new Promise((r) => socket.once('close', () => r(true))), new Promise((r) => setTimeout(() => r(false), 20_000))]);
  socket.destroy();
  assert.ok(closed, 'the server closed the socket');
  return answers.match(/^HTTP\/1\.1 /gm)?.length ?? 0;
}

test('a client that pipelines thousands of requests is cut off after a few answers, on the metrics port and the workers\' port', { timeout: 60_000 }, async () => {
  // Node queues an answer to each, read or not: without the bound, a few such clients took the coordinator to gigabytes.
  const server = await serveHttp(new Registry(), '127.0.0.1', 0);
  const lines: string[] = [];
  const workers = await WorkerListener.open({ host: '127.0.0.1', port: 0, maxWorkers: 4, insecure: false }, 1 << 20, { log: (l) => lines.push(l), metrics: new CoordinatorMetrics() }, () => {});
  try {
    for (const port of [boundPort(server), Number(new URL(workers.url).port)]) {
      const answered = await pipelined(port, '/metrics', 5000);
      assert.ok(answered <= MAX_WAITING_ANSWERS, `${answered} answers`);
    }
    // Within the bound, each is answered, in order.
    const socket = net.connect(boundPort(server), '127.0.0.1');
    let answers = '';
    socket.on('data', (d) => (answers += d));
    await new Promise((r) => socket.once('connect', r));
    socket.end(`GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n`.repeat(MAX_WAITING_ANSWERS));
    await new Promise((r) => socket.once('close', r));
    assert.equal(answers.match(/^HTTP\/1\.1 200/gm)?.length, MAX_WAITING_ANSWERS);
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await workers.close();
  }
});

test('a client that never reads its answer is cut off within twice IDLE_SOCKET_MS: Node lets a queued answer go on one period more', { timeout: 60_000 }, async () => {
  // An answer far larger than the socket buffers, so that it waits on the client.
  const big = Buffer.alloc(64 << 20, 'x');
  const server = await serveHttp(new Registry(), '127.0.0.1', 0, { '/big': () => ({ status: 200, type: 'text/plain', body: big }) });
  try {
    const socket = net.connect(boundPort(server), '127.0.0.1');
    socket.on('error', () => {});
    await new Promise((r) => socket.once('connect', r));
    socket.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
    socket.pause();
    const t0 = Date.now();
    // Paused, the client notices the close only once it reads: poll the server's side.
    // Node's first timeout finds the queued write moved since the answer began, and lets it go on once.
    const limit = 2 * IDLE_SOCKET_MS + 5_000;
    while ((await new Promise<number>((r) => server.getConnections((_e, n) => r(n)))) > 0) {
      assert.ok(Date.now() - t0 < limit, `still held after ${limit} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(Date.now() - t0 >= IDLE_SOCKET_MS - 1000, 'not before the idle time');
    socket.destroy();
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

test("the workers' port holds no more sockets than the open-files limit leaves room for", () => {
  assert.equal(workerPortConnections(64, null), 512);
  assert.equal(workerPortConnections(64, 1 << 20), 512);
  // ulimit -n 1024 with --max-workers 200: 1,056 sockets wanted, beyond the limit itself.
  const cap = workerPortConnections(200, 1024);
  assert.ok(cap + MAX_HTTP_CONNECTIONS + 2 * 200 + 64 <= 1024, `cap ${cap}`);
  // A limit that leaves nothing after the metrics port and the process's own descriptors still gets the port its floor of 16.
  assert.equal(workerPortConnections(64, 100), 16);
});

test('the open-files and address-space limits are read as `ulimit` set them, and unlimited as none', { skip: process.platform !== 'linux' && '/proc/self/limits is Linux' }, () => {
  const processModule = path.join(__dirname, '..', 'src', 'util', 'process');
  const script = `const { softLimit } = require(${JSON.stringify(processModule)}); console.log(JSON.stringify([softLimit('Max open files'), softLimit('Max address space')]))`;
  const read = (limits: string) => JSON.parse(spawnSync('bash', ['-c', `${limits} && exec "$0" -e "$1"`, process.execPath, script], { encoding: 'utf8', timeout: 30_000 }).stdout);
  assert.deepEqual(read('ulimit -n 300 -v 8000000'), [300, 8000000 * 1024]);
  assert.equal(read('ulimit -v unlimited')[1], null);
});

test("a --max-workers far above what the open-files limit can serve leaves the workers' port room for as many workers as it can serve", () => {
  // ulimit -n 1024: --max-workers 200 seats 200 workers; a higher --max-workers must not seat fewer (it gave 16).
  for (const maxWorkers of [300, 1000, 100_000]) {
    const cap = workerPortConnections(maxWorkers, 1024);
    assert.ok(cap >= 200, `--max-workers ${maxWorkers}: cap ${cap}`);
    // Every admitted worker holds its socket and two mailbox files, within the limit.
    assert.ok(cap + 2 * Math.min(maxWorkers, cap) + MAX_HTTP_CONNECTIONS + 64 <= 1024, `--max-workers ${maxWorkers}: cap ${cap}`);
  }
  assert.equal(workerPortConnections(1000, 1 << 20), 4256);
});

test('a flood of idle TCP connections (no token, no bytes) leaves the coordinator descriptors of its own under a low ulimit -n', { skip: process.platform !== 'linux', timeout: 60_000 }, async () => {
  const out = tempDir('fd-flood');
  const limit = 300;
  // ulimit -n sets the hard limit too, which Node raises its soft limit to at start.
  const child = spawn('sh', ['-c', `ulimit -n ${limit} && exec "$0" "$@"`, process.execPath, CLI, 'coordinator', '--port', '0', '--metrics-port', '-1', '--backend', 'cpu', '--out', path.join(out, 'run')], {
    env: { ...process.env, GANFLEET_TOKEN: 'flood-test-token' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const sockets: net.Socket[] = [];
  try {
    let log = '';
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout.on('data', (d) => {
        log += d;
        const m = /listening for workers on ws:\/\/127\.0\.0\.1:(\d+)/.exec(log);
        if (m && /warning: ulimit/.test(log)) resolve(Number(m[1]));
      });
      child.once('exit', () => reject(new Error(`coordinator exited: ${log}`)));
    });
    assert.match(log, /warning: ulimit -n 300 leaves the workers' port \d+ connections, fewer than the 512 it keeps for 64 workers \(4 each, and 256 to turn others away\): raise the open-files limit/);
    await Promise.all(
      Array.from({ length: 2 * limit }, () => new Promise<void>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => resolve());
        s.on('error', () => resolve());
        s.on('close', () => resolve());
        sockets.push(s);
      })),
    );
    await new Promise((r) => setTimeout(r, 500));
    const open = fs.readdirSync(`/proc/${child.pid}/fd`).length;
    // What the coordinator opens itself (a checkpoint, a mailbox, the metrics port) needs descriptors left over.
    assert.ok(open <= limit - 64, `${open} of ${limit} descriptors in use during the flood`);
    assert.equal(child.exitCode, null);
  } finally {
    for (const s of sockets) s.destroy();
    child.kill('SIGKILL');
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('a connection the workers\' port turns away for being full is logged with why, not only reset: the worker sees just ECONNRESET', async () => {
  const lines: string[] = [];
  const workers = await WorkerListener.open({ host: '127.0.0.1', port: 0, maxWorkers: 1, insecure: false }, 1 << 20, { log: (m) => lines.push(m), metrics: new CoordinatorMetrics() }, () => {});
  const held = workerPortConnections(1);
  const sockets: net.Socket[] = [];
  try {
    const port = Number(new URL(workers.url).port);
    for (let i = 0; i < held + 2; i++) {
      await new Promise<void>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => resolve());
        s.on('error', () => resolve());
        s.on('close', () => resolve());
        sockets.push(s);
      });
    }
    await new Promise((r) => setTimeout(r, 200));
    const refused = lines.filter((l) => /refused a connection from/.test(l));
    assert.equal(refused.length, 1, `one line a minute per address: ${lines.join('\n')}`);
    assert.match(refused[0], new RegExp(`the workers' port already holds its ${held} connections`));
    // And why it holds no more: the open-files limit only where that is what cut it below what one worker is given.
    const why = held < workerPortConnections(1, null) ? /\(ulimit -n \d+: raise the open-files limit\)$/ : /\(4 per --max-workers and 256 more\)$/;
    assert.match(refused[0], why);
  } finally {
    for (const s of sockets) s.destroy();
    await workers.close();
  }
});

test('a token on loopback without TLS draws no clear-text warning: the frames never leave the machine', async () => {
  const lines: string[] = [];
  const workers = await WorkerListener.open({ host: '127.0.0.1', port: 0, maxWorkers: 1, insecure: false, token: 's3cret' }, 1 << 20, { log: (m) => lines.push(m), metrics: new CoordinatorMetrics() }, () => {});
  await workers.close();
  assert.match(lines[0], /^listening for workers on ws:\/\/127\.0\.0\.1:\d+ \(token required\)$/);
  assert.deepEqual(lines.filter((l) => /clear text/.test(l)), [], lines.join('\n'));
});

test('a plain HTTP request to the workers\' port (a browser, a probe) is answered 426, saying what the port speaks', async () => {
  const workers = await WorkerListener.open({ host: '127.0.0.1', port: 0, maxWorkers: 4, insecure: false }, 1 << 20, { log: () => {}, metrics: new CoordinatorMetrics() }, () => {});
  try {
    const res = await fetch(workers.url.replace(/^ws:/, 'http:') + '/');
    assert.equal(res.status, 426);
    assert.equal(await res.text(), 'this port speaks the ganfleet WebSocket protocol\n');
  } finally {
    await workers.close();
  }
});

test('every answer of the metrics port says nosniff: the status page, its JSON, /metrics, errors', async () => {
  const routes = {
    '/': () => ({ status: 200, type: 'text/html; charset=utf-8', body: '<!doctype html>' }),
    '/api/status': () => ({ status: 200, type: 'application/json', body: '{"name":"<img src=x onerror=alert(1)>"}' }),
  };
  const server = await serveHttp(new Registry(), '127.0.0.1', 0, routes);
  try {
    const base = `http://127.0.0.1:${boundPort(server)}`;
    for (const [path, method] of [['/', 'GET'], ['/api/status', 'GET'], ['/metrics', 'GET'], ['/healthz', 'HEAD'], ['/nope', 'GET'], ['/', 'POST']]) {
      const res = await fetch(base + path, { method });
      await res.arrayBuffer();
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', `${method} ${path}`);
    }
  } finally {
    server.closeAllConnections();
    server.close();
  }
});
