import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { GanfleetProcess, freePort, sleep, startCoordinator, startWorker, tempDir } from './harness';

const PROMETHEUS = '/usr/bin/prometheus';
const DEPLOY = path.join(__dirname, '..', '..', 'deploy');
// .ci/run installs Debian's prometheus; elsewhere the test says why it did not run.
const skip = !fs.existsSync(PROMETHEUS) && !process.env.CI ? `${PROMETHEUS} not found (apt-get install prometheus)` : false;

const procs: GanfleetProcess[] = [];
let prometheus: ChildProcess | null = null;
const dirs: string[] = [];
after(() => {
  prometheus?.kill('SIGKILL');
  for (const p of procs) p.kill();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

interface QueryResult {
  status: string;
  error?: string;
  data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}

/** Every PromQL expression in a Grafana dashboard, panels nested in rows included. */
function dashboardExprs(dashboard: { panels?: unknown[] }): string[] {
  const exprs: string[] = [];
  const walk = (panels: unknown[] = []) => {
    for (const p of panels as { targets?: { expr?: string }[]; panels?: unknown[] }[]) {
      for (const t of p.targets ?? []) if (t.expr) exprs.push(t.expr);
      walk(p.panels);
    }
  };
  walk(dashboard.panels);
  return exprs;
}

/** Grafana's built-in interval variables, as Grafana would fill them for a 1 s scrape. */
function fillGrafanaVariables(expr: string): string {
  return expr.replace(/\$__rate_interval|\$\{__rate_interval\}/g, '1m').replace(/\$__interval|\$\{__interval\}/g, '5s').replace(/\$__range|\$\{__range\}/g, '5m');
}

test('a real Prometheus scrapes a run with deploy/prometheus/prometheus.yml, and every dashboard query returns data', { skip, timeout: 180_000 }, async () => {
  const dir = tempDir('prom');
  dirs.push(dir);
  const c = await startCoordinator(['--steps', '100000', '--log-every', '1000', '--sample-every', '1000', '--checkpoint-every', '300', '--out', path.join(dir, 'run')]);
  procs.push(c.proc);
  const workers = ['a', 'b'].map((n) => startWorker(c.url, n, ['--metrics-port', '0']));
  procs.push(...workers);
  const target = (url: string) => new URL(url).host;
  const workerTargets = await Promise.all(workers.map(async (w) => target((await w.waitFor(/metrics on (http:\/\/\S+\/metrics)/))[1])));

  // The shipped config, pointed at this run: same jobs and paths, local targets instead of DNS discovery.
  const config = YAML.parse(fs.readFileSync(path.join(DEPLOY, 'prometheus', 'prometheus.yml'), 'utf8'));
  config.global = { ...config.global, scrape_interval: '1s', evaluation_interval: '1s' };
  const jobs = config.scrape_configs as Record<string, unknown>[];
  assert.ok(jobs.length >= 2, 'the config scrapes the coordinator and the workers');
  for (const job of jobs) {
    const name = String(job.job_name);
    for (const k of Object.keys(job)) if (k.endsWith('_sd_configs')) delete job[k];
    const targets = /worker/.test(name) ? workerTargets : [target(c.metrics)];
    job.static_configs = [{ targets }];
    job.scrape_interval = '1s';
  }
  const configFile = path.join(dir, 'prometheus.yml');
  fs.writeFileSync(configFile, YAML.stringify(config));
  // Its rule files, beside it as in the deployments.
  for (const rules of config.rule_files as string[]) fs.copyFileSync(path.join(DEPLOY, 'prometheus', rules), path.join(dir, rules));
  const port = await freePort();
  prometheus = spawn(PROMETHEUS, [`--config.file=${configFile}`, `--storage.tsdb.path=${path.join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let promLog = '';
  prometheus.stderr!.on('data', (d) => (promLog += d));
  const api = `http://127.0.0.1:${port}`;
  const query = async (q: string): Promise<QueryResult> => (await fetch(`${api}/api/v1/query?query=${encodeURIComponent(q)}`)).json() as Promise<QueryResult>;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${api}/-/ready`)).ok) break;
    } catch {
      // not listening yet
    }
    assert.ok(i < 100, `prometheus did not become ready:\n${promLog}`);
    await sleep(200);
  }

  // Every target up, and the step counter rising between scrapes.
  const steps: number[] = [];
  for (let i = 0; i < 60 && new Set(steps).size < 3; i++) {
    const r = await query('ganfleet_steps_total');
    if (r.data?.result.length) steps.push(Number(r.data.result[0].value[1]));
    await sleep(1000);
  }
  assert.ok(new Set(steps).size >= 3 && steps.at(-1)! > steps[0], `ganfleet_steps_total rising: ${steps.join(', ')}`);
  const up = await query('up');
  assert.equal(up.data?.result.length, 1 + workers.length);
  for (const r of up.data!.result) assert.equal(r.value[1], '1', `${r.metric.job} ${r.metric.instance} is up`);

  const dashboard = JSON.parse(fs.readFileSync(path.join(DEPLOY, 'grafana', 'dashboards', 'ganfleet.json'), 'utf8'));
  const exprs = dashboardExprs(dashboard);
  assert.ok(exprs.length >= 10, `the dashboard has ${exprs.length} queries`);
  const failures: string[] = [];
  for (const expr of exprs) {
    let r: QueryResult = { status: 'unasked' };
    // Rates need two samples in their window: allow a little time after start.
    for (let i = 0; i < 15; i++) {
      r = await query(fillGrafanaVariables(expr));
      if (r.status !== 'success' || (r.data?.result.length ?? 0) > 0) break;
      await sleep(1000);
    }
    if (r.status !== 'success') failures.push(`${expr}: ${r.error}`);
    else if (!r.data?.result.length) failures.push(`${expr}: no data`);
  }
  assert.deepEqual(failures, [], 'every dashboard query parses and returns data');

  // The workers' compute histogram times what they report to the coordinator, so the two panels agree
  // (it used to take in sending the answer and readying the next step: 60% more for the MLP).
  const total = async (q: string) => Number((await query(q)).data?.result[0]?.value[1]);
  const [histogram, reported] = [await total('sum(ganfleet_worker_round_compute_seconds_sum)'), await total('sum(ganfleet_worker_compute_seconds_total)')];
  assert.ok(histogram / reported > 0.8 && histogram / reported < 1.25, `worker histogram ${histogram} s against ${reported} s reported to the coordinator`);

  // A worker's own series carry its state, not only a name: each holds half of the 60,000 training images,
  // is connected, and has answered both round kinds, one G round after each D round.
  const byWorker = async (q: string) => Object.fromEntries((await query(q)).data!.result.map((r) => [`${r.metric.instance} ${r.metric.phase ?? ''}`.trim(), Number(r.value[1])]));
  assert.deepEqual(Object.values(await byWorker('ganfleet_worker_shard_images')), [30000, 30000], 'ganfleet_worker_shard_images');
  assert.deepEqual(Object.values(await byWorker('ganfleet_worker_connected')), [1, 1], 'ganfleet_worker_connected');
  const rounds = await byWorker('ganfleet_worker_rounds_total');
  for (const w of workerTargets) {
    const [d, g] = [rounds[`${w} discriminator`], rounds[`${w} generator`]];
    assert.ok(d > 0 && g >= d - 1 && g <= d, `ganfleet_worker_rounds_total of ${w}: ${JSON.stringify(rounds)}`);
  }

  // The alerts load and evaluate against the live series; none fires on a healthy run.
  type Rule = { name: string; health: string; state: string; lastError?: string };
  let rules: Rule[] = [];
  for (let i = 0; i < 15; i++) {
    const r = (await (await fetch(`${api}/api/v1/rules?type=alert`)).json()) as { data: { groups: { rules: Rule[] }[] } };
    rules = r.data.groups.flatMap((g) => g.rules);
    if (rules.length > 0 && rules.every((x) => x.health === 'ok')) break;
    await sleep(1000);
  }
  assert.deepEqual(rules.map((x) => x.name), ['GanfleetWorkersWithoutCoordinator', 'GanfleetPaused', 'GanfleetNoProgress', 'GanfleetStalled', 'GanfleetRestarting', 'GanfleetCheckpointStale', 'GanfleetRejectedMessages']);
  for (const x of rules) assert.deepEqual([x.name, x.health, x.state, x.lastError ?? ''], [x.name, 'ok', 'inactive', ''], `alert ${x.name}`);
});
