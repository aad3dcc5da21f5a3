import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { AddressInfo } from 'node:net';
import path from 'node:path';
import { chromium, Browser } from 'playwright-core';
import { GanfleetProcess, tempDir, startCoordinator, startWorker } from './harness';
import { STATUS_PAGE } from '../src/coordinator/status-page';

const CHROMIUM = '/usr/bin/chromium';
/** Where CI keeps the screenshot (ignored by git). */
export const ARTIFACTS = path.join(__dirname, '..', '..', 'artifacts');
// .ci/run installs Debian's chromium; elsewhere the test says why it did not run.
const skip = !fs.existsSync(CHROMIUM) && !process.env.CI ? `${CHROMIUM} not found (apt-get install chromium)` : false;

let browser: Browser | null = null;
let run: GanfleetProcess | null = null;
after(async () => {
  await browser?.close();
  run?.kill();
});

test('the status page shows a decoded sample grid, loss curves and the workers during a run', { skip, timeout: 120_000 }, async () => {
  const out = tempDir('browser');
  run = new GanfleetProcess(['local', '--workers', '2', '--steps', '3000', '--sample-every', '40', '--log-every', '100', '--out', out]);
  const url = (await run.waitFor(/status page on (http:\/\/\S+\/)/))[1];
  await run.waitFor(/step 100\/3000/);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1200, height: 820 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);

  await page.waitForFunction(() => {
    const img = document.getElementById('grid') as HTMLImageElement;
    return img.complete && img.naturalWidth > 0;
  });
  const grid = await page.$eval('#grid', (img) => ({ w: (img as HTMLImageElement).naturalWidth, h: (img as HTMLImageElement).naturalHeight, src: img.getAttribute('src') }));
  assert.deepEqual([grid.w, grid.h], [152, 152], 'a 5×5 grid of 28px digits decoded');
  assert.match(grid.src ?? '', /^samples\/step-\d{6}\.png$/);
  // Following the run: the newest grid, not the first (step 40) of the two or more written by step 100.
  assert.ok(Number(/step-(\d{6})/.exec(grid.src ?? '')?.[1]) >= 80, `${grid.src} shown`);

  await page.waitForFunction(() => Number((document.getElementById('losses') as unknown as SVGElement).dataset.points ?? 0) > 50);
  const curves = await page.$$eval('#losses polyline, #probs polyline', (ls) => ls.map((l) => l.getAttribute('points')!.split(' ').length));
  assert.equal(curves.length, 4, 'D and G loss, D(x) and D(G(z))');
  for (const n of curves) assert.ok(n > 50, `a curve with ${n} points`);

  const rows = await page.$$eval('#workers tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)));
  assert.equal(rows.length, 2);
  for (const r of rows) {
    assert.match(r[0]!, /^w\d+$/);
    assert.equal(r[4], 'active');
    assert.equal(r[5], '30000');
  }
  assert.equal(await page.textContent('#state'), 'training');
  assert.equal(await page.textContent('#run'), 'mlp · bce · batch 128 a worker · Adam 0.001, 0.9, 0.999 · seed 1');
  assert.ok(Number(await page.textContent('#rate')) > 0, 'throughput shown');
  assert.match((await page.textContent('#eta')) ?? '', /^\d+m\d{2}s$/);

  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'status-page.png') });
  assert.deepEqual(errors, [], 'no script errors');
  run.kill('SIGINT');
  assert.equal(await run.exited, 0);
  fs.rmSync(out, { recursive: true, force: true });
});

test('a worker name of 160 unbroken characters stays inside the page, escaped', { skip, timeout: 120_000 }, async () => {
  const out = tempDir('browser-name');
  const { proc, url, metrics } = await startCoordinator(['--min-workers', '1', '--steps', '100000', '--batch-size', '8', '--log-every', '1000', '--out', out]);
  const worker = startWorker(url, '<img src=x onerror=alert(1)>' + 'שלום'.repeat(20) + 'A'.repeat(200));
  try {
    await proc.waitFor(/shard plan/);
    browser ??= await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
    const page = await browser.newPage({ viewport: { width: 1200, height: 820 } });
    const dialogs: string[] = [];
    page.on('dialog', (d) => { dialogs.push(d.message()); void d.dismiss(); });
    await page.goto(metrics.replace(/metrics$/, ''));
    await page.waitForFunction(() => document.querySelectorAll('#workers tr').length === 1);
    const name = await page.textContent('#workers td:nth-child(2)');
    assert.match(name ?? '', /^<img src=x onerror=alert\(1\)>שלום/);
    assert.equal(await page.$$eval('#workers img', (x) => x.length), 0);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 1200, `the page is ${width}px wide in a 1200px window`);
    assert.deepEqual(dialogs, []);
    await page.close();
  } finally {
    worker.kill();
    proc.kill();
    await proc.exited;
    fs.rmSync(out, { recursive: true, force: true });
  }
});

/** What /api/status says while the coordinator scores G. */
const EVALUATING_STATUS = {
  state: 'evaluating', step: 100, steps: 200, resumedFrom: null,
  run: { model: 'mlp', loss: 'bce', batchSize: 16, lr: 0.001, beta1: 0.9, beta2: 0.999, dUpdates: 2, seed: 1, wireDtype: 'float32' },
  imagesPerSecond: 0, etaSeconds: null, last: null, workers: [], samples: [], evaluations: [],
};

test('the status page asks again only once an answer came: a coordinator slow to answer gets no pile of requests', { skip, timeout: 60_000 }, async () => {
  // A coordinator busy scoring G (--eval-every) answers /api/status seconds late; this one takes 8 s.
  let asked = 0;
  const waiting = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    if (req.url === '/') return void res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(STATUS_PAGE);
    if (req.url === '/api/history') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"points":[]}');
    if (req.url === '/api/status') {
      asked++;
      waiting.add(res);
      setTimeout(() => { waiting.delete(res); res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(EVALUATING_STATUS)); }, 8000);
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  browser ??= await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
  const page = await browser.newPage();
  try {
    // Counted in the browser: Chrome holds a repeat of a URL still being fetched back until the first answer
    // (its cache lock), so the server alone sees them only one after another, every one of them in the end.
    let pending = 0, most = 0;
    const isStatus = (r: { url(): string }) => r.url().endsWith('/api/status');
    page.on('request', (r) => { if (isStatus(r)) most = Math.max(most, ++pending); });
    page.on('requestfinished', (r) => { if (isStatus(r)) pending--; });
    page.on('requestfailed', (r) => { if (isStatus(r)) pending--; });
    await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    await page.waitForTimeout(7000);
    assert.equal(asked, 1, `${asked} requests for /api/status reached the server within 7 s`);
    assert.equal(most, 1, `${most} requests for /api/status waiting at once within 7 s, while the first had no answer`);
    await page.waitForFunction(() => document.getElementById('state')!.textContent === 'evaluating', undefined, { timeout: 10_000 });
  } finally {
    await page.close();
    for (const res of waiting) res.destroy();
    server.closeAllConnections();
    server.close();
  }
});

test('the status page shows what /api/status says: the newest evaluation, an ETA past an hour, the wire dtype, a slow worker, the newest grid', { skip, timeout: 60_000 }, async () => {
  const status = {
    ...EVALUATING_STATUS,
    state: 'training', step: 1234, steps: 5000, imagesPerSecond: 2345.6, etaSeconds: 3725,
    run: { ...EVALUATING_STATUS.run, wireDtype: 'bfloat16' },
    workers: [
      { id: 'w1', name: 'a', address: '10.0.0.1', backend: 'wasm', state: 'active', shardSize: 100, lastComputeMs: 12.34, awaitedMs: 2500, frames: 'websocket' },
      { id: 'w2', name: 'b', address: '10.0.0.2', backend: 'wasm', state: 'active', shardSize: 100, lastComputeMs: 3, awaitedMs: 400, frames: 'websocket' },
    ],
    samples: ['step-000010.png', 'step-000020.png'],
    evaluations: [{ step: 10, fid: 40.1234, mnistScore: 3.2111 }, { step: 20, fid: 12.3456, mnistScore: 8.7612 }],
  };
  // D's outputs between 0.2 and 0.8: their axis still spans [0, 1].
  const history = { stride: 1, points: [{ step: 1, dLoss: 0.7, gLoss: 0.9, dReal: 0.6, dFake: 0.2 }, { step: 2, dLoss: 0.5, gLoss: 1.5, dReal: 0.8, dFake: 0.3 }] };
  const server = http.createServer((req, res) => {
    if (req.url === '/') return void res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(STATUS_PAGE);
    if (req.url === '/api/history') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(history));
    if (req.url === '/api/status') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(status));
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  browser ??= await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
  const page = await browser.newPage();
  try {
    await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    await page.waitForFunction(() => document.getElementById('state')!.textContent === 'training');
    assert.equal(await page.textContent('#step'), '1234 / 5000');
    assert.equal(await page.textContent('#rate'), '2346');
    assert.equal(await page.textContent('#eta'), '1h02m');
    assert.equal(await page.textContent('#run'), 'mlp · bce · batch 16 a worker · Adam 0.001, 0.9, 0.999 · seed 1 · bfloat16');
    assert.equal(await page.textContent('#nworkers'), '2');
    assert.equal(await page.textContent('#fid'), '12.35', 'the newest evaluation');
    assert.equal(await page.textContent('#score'), '8.76');
    assert.equal(await page.$eval('#quality', (q) => (q as HTMLElement).hidden), false, 'two evaluations draw a FID curve');
    assert.equal(await page.$eval('#fids polyline', (l) => l.getAttribute('points')!.split(' ').length), 2);
    const rows = await page.$$eval('#workers tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)));
    assert.deepEqual(rows.map((r) => [r[6], r[7]]), [['12.3 ms', '2.5 s'], ['3.0 ms', '']], 'a wait is shown past 1 s only');
    assert.equal(await page.getAttribute('#grid', 'src'), 'samples/step-000020.png');
    assert.equal(await page.textContent('#gridname'), 'step-000020');
    assert.equal(await page.$eval('#strip', (s) => (s as HTMLInputElement).max), '1');
    assert.deepEqual(await page.$$eval('#probs text', (ts) => ts.map((t) => t.textContent)), ['1.00'], 'the top of [0, 1], no negative bottom');
    assert.deepEqual(await page.$$eval('#losses text', (ts) => ts.map((t) => t.textContent)), ['1.50']);
  } finally {
    await page.close();
    server.closeAllConnections();
    server.close();
  }
});
