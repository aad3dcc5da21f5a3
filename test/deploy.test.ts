/**
 * The deployment files under deploy/ against the code they deploy. No
 * container runtime runs here, so nothing is built or started in a
 * container: every file is parsed, and every flag, GANFLEET_* variable,
 * port, probe path, Secret key, Kustomize resource and Dockerfile step is
 * checked against the real CLI (its --help, and a real coordinator and
 * worker started with the Kubernetes arguments).
 */
import assert from 'node:assert/strict';
import { ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { tempDir } from './harness';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = any;

const ROOT = path.join(__dirname, '..', '..');
const DEPLOY = path.join(ROOT, 'deploy');
const CLI = path.join(__dirname, '..', 'src', 'cli.js');
const rel = (p: string) => path.relative(ROOT, p);

/** The environment without GANFLEET_* variables: the CLI reads every one of them. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('GANFLEET_')) env[k] = v;
  return { ...env, ...extra };
}

// ---------------------------------------------------------------- files

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : [p];
  });
}

const parsed = new Map<string, Obj[]>();
const parseErrors: string[] = [];

function loadAll(): void {
  for (const file of walk(DEPLOY)) {
    const text = fs.readFileSync(file, 'utf8');
    if (file.endsWith('.json')) {
      try {
        parsed.set(file, [JSON.parse(text)]);
      } catch (e) {
        parseErrors.push(`${rel(file)}: ${(e as Error).message}`);
      }
    } else if (/\.ya?ml$/.test(file)) {
      const docs = YAML.parseAllDocuments(text);
      const list = Array.isArray(docs) ? docs : [];
      const errors = list.flatMap((d) => [...d.errors, ...d.warnings].map((e) => e.message));
      if (!Array.isArray(docs)) errors.push('not a YAML stream');
      if (errors.length) parseErrors.push(`${rel(file)}: ${errors.join('; ')}`);
      else parsed.set(file, list.map((d) => d.toJS()).filter((d) => d !== null && d !== undefined));
    }
  }
}

function docs(relPath: string): Obj[] {
  const file = path.join(DEPLOY, relPath);
  const d = parsed.get(file);
  assert.ok(d, `deploy/${relPath} is missing or did not parse`);
  return d;
}

// ---------------------------------------------------------------- the CLI's flags

interface Flag {
  type: 'boolean' | 'number' | 'string' | 'choices';
  choices?: string[];
  default?: string;
}

const help = new Map<string, Map<string, Flag>>();

/** Parses yargs' help: an entry starts with "  -h, --name" or "      --name" and may wrap onto more lines. */
function parseHelp(text: string): Map<string, Flag> {
  const flags = new Map<string, Flag>();
  const entries: string[] = [];
  for (const line of text.split('\n')) {
    if (/^\s{2}(?:-[a-z], |\s{4})?--[a-z]/.test(line)) entries.push(line);
    else if (/^\s{3,}\S/.test(line) && entries.length) entries[entries.length - 1] += ' ' + line.trim();
  }
  for (const e of entries) {
    const name = /^\s*(?:-[a-z], )?--([a-z0-9-]+)/.exec(e)![1];
    const choices = /\[choices: ([^\]]+)\]/.exec(e);
    const def = /\[default: ([^\]]+)\]/.exec(e)?.[1].replace(/^"(.*)"$/, '$1');
    if (choices) flags.set(name, { type: 'choices', choices: [...choices[1].matchAll(/"([^"]*)"/g)].map((m) => m[1]), default: def });
    else if (/\[boolean\]/.test(e)) flags.set(name, { type: 'boolean', default: def });
    else if (/\[number\]/.test(e)) flags.set(name, { type: 'number', default: def });
    else flags.set(name, { type: 'string', default: def });
  }
  return flags;
}

function flagsOf(cmd: string, where: string): Map<string, Flag> {
  const f = help.get(cmd);
  assert.ok(f, `${where}: "${cmd}" is not a ganfleet command (${[...help.keys()].join(', ')})`);
  return f;
}

/** Checks an argument vector against the command's --help; returns flag → value ('true' for booleans). */
function parseArgs(args: unknown[], where: string): { cmd: string; values: Map<string, string> } {
  assert.ok(Array.isArray(args) && args.length > 0, `${where}: no command`);
  const words = args.map((a) => {
    assert.ok(typeof a === 'string', `${where}: argument ${JSON.stringify(a)} is not a string (quote numbers in YAML)`);
    return a;
  });
  const cmd = words[0];
  const flags = flagsOf(cmd, where);
  const values = new Map<string, string>();
  for (let i = 1; i < words.length; i++) {
    const m = /^--(?:no-)?([a-z0-9-]+)(?:=(.*))?$/.exec(words[i]);
    assert.ok(m, `${where}: unexpected argument ${JSON.stringify(words[i])}`);
    const name = m[1];
    const flag = flags.get(name);
    assert.ok(flag, `${where}: --${name} is not a flag of "ganfleet ${cmd}" (see ganfleet ${cmd} --help)`);
    assert.ok(!values.has(name), `${where}: --${name} given twice`);
    let value: string;
    if (flag.type === 'boolean') {
      assert.equal(m[2], undefined, `${where}: --${name} is a boolean flag`);
      value = words[i].startsWith('--no-') ? 'false' : 'true';
    } else {
      value = m[2] ?? words[++i];
      assert.ok(value !== undefined && !value.startsWith('--'), `${where}: --${name} needs a value`);
    }
    if (flag.type === 'number') assert.ok(Number.isFinite(Number(value)), `${where}: --${name} ${value} is not a number`);
    if (flag.type === 'choices') assert.ok(flag.choices!.includes(value), `${where}: --${name} ${value} is not one of ${flag.choices!.join(', ')}`);
    values.set(name, value);
  }
  return { cmd, values };
}

/** A flag's value as given, or its --help default. */
function valueOf(cmd: string, values: Map<string, string>, name: string): string | undefined {
  return values.get(name) ?? help.get(cmd)!.get(name)?.default;
}

function checkEnvName(cmd: string, name: string, where: string): void {
  if (!name.startsWith('GANFLEET_')) return;
  const flag = name.slice('GANFLEET_'.length).toLowerCase().replace(/_/g, '-');
  assert.ok(flagsOf(cmd, where).has(flag), `${where}: ${name} would set --${flag}, which "ganfleet ${cmd}" does not have`);
}

const LOOPBACK = /^(127\.|localhost$|::1$)/;

/** What a ganfleet process listens on, from its arguments. */
function listening(cmd: string, values: Map<string, string>): { port?: number; metricsPort?: number; host?: string; metricsHost?: string } {
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  if (cmd === 'coordinator') {
    const host = valueOf(cmd, values, 'host');
    return { port: num(valueOf(cmd, values, 'port')), metricsPort: num(valueOf(cmd, values, 'metrics-port')), host, metricsHost: host };
  }
  if (cmd === 'worker') return { metricsPort: num(valueOf(cmd, values, 'metrics-port')), metricsHost: valueOf(cmd, values, 'metrics-host') };
  return {};
}

// ---------------------------------------------------------------- Kustomize

/** Applies RFC 6902 add/replace/remove operations. */
function applyJsonPatch(target: Obj, ops: Obj[], where: string): void {
  for (const op of ops) {
    const tokens = String(op.path)
      .split('/')
      .slice(1)
      .map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = tokens.pop()!;
    let parent = target;
    for (const t of tokens) {
      parent = parent?.[Array.isArray(parent) ? Number(t) : t];
      assert.ok(parent !== undefined && parent !== null, `${where}: patch path ${op.path}: ${t} does not exist`);
    }
    const value = structuredClone(op.value);
    if (Array.isArray(parent)) {
      const i = last === '-' ? parent.length : Number(last);
      assert.ok(Number.isInteger(i) && i >= 0 && i <= parent.length, `${where}: patch path ${op.path}: bad index`);
      if (op.op === 'add') parent.splice(i, 0, value);
      else if (op.op === 'replace') parent[i] = value;
      else if (op.op === 'remove') parent.splice(i, 1);
      else assert.fail(`${where}: patch op ${op.op} is not modelled by this test`);
    } else {
      if (op.op !== 'add') assert.ok(last in parent, `${where}: patch path ${op.path} does not exist`);
      if (op.op === 'add' || op.op === 'replace') parent[last] = value;
      else if (op.op === 'remove') delete parent[last];
      else assert.fail(`${where}: patch op ${op.op} is not modelled by this test`);
    }
  }
}

function podSpecs(objs: Obj[]): Obj[] {
  return objs.filter((o) => o.spec?.template?.spec).map((o) => o.spec.template.spec);
}

const MODELLED_KEYS = new Set(['apiVersion', 'kind', 'resources', 'images', 'patches', 'secretGenerator']);

/**
 * What a user writes into a generator's env file (the token): these tests stand in for it, and never read
 * a real one. The env files themselves must stay ignored by git, or a real token could be committed.
 */
const USER_ENV_FILE = 'token=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n';

/** The path of each generator env file of `dir`'s kustomization tree that the user provides. */
function userEnvFiles(dir: string): string[] {
  const k = docs(path.relative(DEPLOY, path.join(dir, 'kustomization.yaml')))[0];
  const mine = (k.secretGenerator ?? []).flatMap((g: Obj) => (g.envs ?? []).map((e: string) => path.join(dir, e)));
  const below = (k.resources ?? []).map((r: string) => path.join(dir, r)).filter((p: string) => fs.statSync(p).isDirectory());
  return [...mine, ...below.flatMap(userEnvFiles)];
}

/** Kustomize's generated Secret, without the hash suffix of its name (see the kubectl agreement test). */
function generateSecret(dir: string, g: Obj, where: string): Obj {
  for (const key of Object.keys(g)) assert.ok(['name', 'envs', 'type', 'options'].includes(key), `${where}: secretGenerator ${key} is not modelled by this test`);
  const data: Record<string, string> = {};
  for (const e of g.envs ?? []) {
    const p = path.join(dir, e);
    const ignored = spawnSync('git', ['check-ignore', '-q', p], { cwd: ROOT }).status === 0;
    assert.ok(ignored, `${where}: ${e} holds the token and must be ignored by git (.gitignore)`);
    for (const line of USER_ENV_FILE.split('\n').filter((l) => l.trim() && !l.startsWith('#'))) {
      const eq = line.indexOf('=');
      data[line.slice(0, eq)] = Buffer.from(line.slice(eq + 1)).toString('base64');
    }
  }
  return { apiVersion: 'v1', kind: 'Secret', metadata: { name: g.name, labels: g.options?.labels }, type: g.type ?? 'Opaque', data };
}

/** A small Kustomize: resources (files and directories), Secret generators from env files, JSON 6902 patches, images. */
function kustomize(dir: string): Obj[] {
  const kfile = path.join(dir, 'kustomization.yaml');
  assert.ok(fs.existsSync(kfile), `${rel(dir)} has no kustomization.yaml`);
  const k = docs(path.relative(DEPLOY, kfile))[0];
  const where = rel(kfile);
  for (const key of Object.keys(k)) assert.ok(MODELLED_KEYS.has(key), `${where}: ${key} is not modelled by test/deploy.test.ts; extend it`);
  const objs: Obj[] = (k.secretGenerator ?? []).map((g: Obj) => generateSecret(dir, g, where));
  for (const r of k.resources ?? []) {
    const p = path.join(dir, r);
    assert.ok(fs.existsSync(p), `${where}: resource ${r} does not exist`);
    if (fs.statSync(p).isDirectory()) objs.push(...kustomize(p));
    else objs.push(...structuredClone(docs(path.relative(DEPLOY, p))));
  }
  for (const patch of k.patches ?? []) {
    let ops: Obj;
    if (patch.path) {
      const p = path.join(dir, patch.path);
      assert.ok(fs.existsSync(p), `${where}: patch file ${patch.path} does not exist`);
      ops = docs(path.relative(DEPLOY, p))[0];
    } else ops = YAML.parse(patch.patch);
    assert.ok(Array.isArray(ops), `${where}: only JSON 6902 patches are modelled by this test`);
    const t = patch.target ?? {};
    const targets = objs.filter((o) => (!t.kind || o.kind === t.kind) && (!t.name || o.metadata?.name === t.name));
    assert.ok(targets.length > 0, `${where}: patch target ${JSON.stringify(t)} matches nothing`);
    for (const o of targets) applyJsonPatch(o, ops, where);
  }
  for (const img of k.images ?? []) {
    for (const spec of podSpecs(objs)) {
      for (const c of [...(spec.containers ?? []), ...(spec.initContainers ?? [])]) {
        const [name, tag] = String(c.image).split(':');
        if (name !== img.name) continue;
        c.image = `${img.newName ?? name}${img.newTag ? `:${img.newTag}` : tag ? `:${tag}` : ''}`;
      }
    }
  }
  return objs;
}

const K8S = path.join(DEPLOY, 'k8s');
const builds = new Map<string, Obj[]>();

function kubernetesBuilds(): Map<string, Obj[]> {
  if (builds.size) return builds;
  const overlays = path.join(K8S, 'overlays');
  const dirs = [path.join(K8S, 'base'), ...fs.readdirSync(overlays).map((d) => path.join(overlays, d))];
  for (const d of dirs) builds.set(rel(d), kustomize(d));
  return builds;
}

function labelsMatch(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  return !!selector && Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

// ---------------------------------------------------------------- Compose

function composeFiles(): string[] {
  return fs.readdirSync(DEPLOY).filter((f) => /^docker-compose.*\.ya?ml$/.test(f));
}

/** The merged services of docker-compose.yml plus each override (as `-f a -f b` would). */
function composeServices(): Map<string, Record<string, Obj>> {
  const base = docs('docker-compose.yml')[0];
  const out = new Map<string, Record<string, Obj>>([['docker-compose.yml', base.services]]);
  for (const f of composeFiles().filter((f) => f !== 'docker-compose.yml')) {
    const merged = structuredClone(base.services);
    for (const [name, svc] of Object.entries<Obj>(docs(f)[0].services ?? {})) {
      assert.ok(merged[name], `${f}: overrides unknown service ${name}`);
      // Compose merges these mappings key by key; other keys (command, image) are replaced.
      const mergeMap = (key: string) => (svc[key] ? { ...merged[name][key], ...svc[key] } : merged[name][key]);
      merged[name] = { ...merged[name], ...svc, build: mergeMap('build'), environment: mergeMap('environment'), healthcheck: mergeMap('healthcheck') };
    }
    out.set(`docker-compose.yml + ${f}`, merged);
  }
  return out;
}

function commandOf(svc: Obj): string[] | undefined {
  if (svc.command === undefined) return undefined;
  return Array.isArray(svc.command) ? svc.command.map(String) : String(svc.command).trim().split(/\s+/);
}

function composeEnv(svc: Obj): Record<string, string> {
  if (Array.isArray(svc.environment)) {
    return Object.fromEntries(svc.environment.map((e: string) => [e.split('=')[0], e.slice(e.indexOf('=') + 1)]));
  }
  return svc.environment ?? {};
}

// ---------------------------------------------------------------- Dockerfiles

interface Instr {
  op: string;
  args: string;
}

function dockerfile(file: string): { globalArgs: Map<string, string>; stages: { from: string; name?: string; instrs: Instr[] }[] } {
  const text = fs.readFileSync(file, 'utf8').replace(/\\\r?\n(\s*#[^\n]*\n)*/g, ' ');
  const stages: { from: string; name?: string; instrs: Instr[] }[] = [];
  const globalArgs = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m || line.trim().startsWith('#')) continue;
    const op = m[1].toUpperCase();
    const args = m[2].trim();
    if (op === 'FROM') {
      const f = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args)!;
      stages.push({ from: f[1], name: f[2], instrs: [] });
    } else if (stages.length === 0 && op === 'ARG') {
      const [k, v] = args.split('=');
      globalArgs.set(k, v ?? '');
    } else if (stages.length) stages[stages.length - 1].instrs.push({ op, args });
  }
  return { globalArgs, stages };
}

function expand(s: string, vars: Map<string, string>): string {
  return s.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (all, a, b) => vars.get(a ?? b) ?? all);
}

/** dockerignore semantics, enough for these files: the last matching pattern wins; a match on a directory covers its contents. */
function dockerIgnored(patterns: string[], file: string): boolean {
  let ignored = false;
  for (const raw of patterns) {
    const negate = raw.startsWith('!');
    const p = (negate ? raw.slice(1) : raw).replace(/^\/+|\/+$/g, '');
    const re = new RegExp(
      '^' +
        p
          .split('**')
          .map((part) => part.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]'))
          .join('.*') +
        '(/.*)?$',
    );
    if (re.test(file)) ignored = !negate;
  }
  return ignored;
}

// ---------------------------------------------------------------- a live coordinator and worker

/**
 * HTTP paths the deploy files expect each process to serve (probes,
 * healthchecks, scrape paths), collected by the tests below and requested
 * from the live processes by the last test. The coordinator's status page
 * and JSON are linked from deploy/README.md.
 */
const servedPaths: Record<string, Set<string>> = { coordinator: new Set(['/', '/api/status']), worker: new Set() };

function dashboardExprs(): string[] {
  const exprs: string[] = [];
  const visit = (o: Obj): void => {
    if (Array.isArray(o)) o.forEach(visit);
    else if (o && typeof o === 'object') for (const [k, v] of Object.entries(o)) k === 'expr' ? exprs.push(v as string) : visit(v);
  };
  visit(docs('grafana/dashboards/ganfleet.json')[0]);
  return exprs;
}

interface Live {
  proc: ChildProcess;
  log: () => string;
  httpPort: number;
}

let coordinator: Live | undefined;
let worker: Live | undefined;
const tmp = tempDir('deploy');

function start(args: string[], env: NodeJS.ProcessEnv): { proc: ChildProcess; log: () => string } {
  const proc = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  return { proc, log: () => out };
}

async function waitFor(what: string, p: { proc: ChildProcess; log: () => string }, re: RegExp, ms = 15000): Promise<RegExpExecArray> {
  const until = Date.now() + ms;
  for (;;) {
    const m = re.exec(p.log());
    if (m) return m;
    if (p.proc.exitCode !== null || Date.now() > until) assert.fail(`${what}: no ${re} (exit ${p.proc.exitCode}):\n${p.log()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function stop(p: Live | undefined): Promise<void> {
  if (!p || p.proc.exitCode !== null || p.proc.signalCode !== null) return;
  const exited = new Promise((r) => p.proc.once('exit', r));
  p.proc.kill('SIGTERM');
  const t = setTimeout(() => p.proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

/** Replaces (or adds) a flag's value in an argument vector. */
function withFlag(args: string[], name: string, value: string): string[] {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? [...args.slice(0, i + 1), value, ...args.slice(i + 2)] : [...args, `--${name}`, value];
}

// ----------------------------------------------------------------

before(async () => {
  loadAll();
  const run = promisify(execFile);
  await Promise.all(
    ['coordinator', 'worker', 'local'].map(async (cmd) => {
      const { stdout } = await run(process.execPath, [CLI, cmd, '--help'], { env: cleanEnv() });
      help.set(cmd, parseHelp(stdout));
    }),
  );
  assert.ok(help.get('coordinator')!.has('metrics-port') && help.get('worker')!.has('coordinator'), 'could not read the flags from --help');
});

after(async () => {
  await Promise.all([stop(worker), stop(coordinator)]);
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('every YAML and JSON file under deploy/ parses', () => {
  assert.deepEqual(parseErrors, []);
  const names = [...parsed.keys()].map((f) => path.relative(DEPLOY, f));
  for (const expected of ['docker-compose.yml', 'prometheus/prometheus.yml', 'grafana/dashboards/ganfleet.json', 'k8s/base/kustomization.yaml']) {
    assert.ok(names.includes(expected), `deploy/${expected} is missing`);
  }
});

test('Kubernetes: every object has apiVersion, kind and metadata.name; every kustomization resource exists', () => {
  for (const [file, list] of parsed) {
    if (!rel(file).startsWith(path.join('deploy', 'k8s'))) continue;
    for (const o of list) {
      assert.ok(o.apiVersion && o.kind, `${rel(file)}: a document without apiVersion/kind`);
      if (o.kind !== 'Kustomization') assert.ok(o.metadata?.name, `${rel(file)}: ${o.kind} without metadata.name`);
    }
  }
  // Every manifest file is used by some kustomization, and every resource listed exists (kustomize() asserts it).
  const used = new Set<string>();
  for (const [file, list] of parsed) {
    if (list[0]?.kind !== 'Kustomization') continue;
    for (const r of list[0].resources ?? []) used.add(path.join(path.dirname(file), r));
  }
  for (const file of parsed.keys()) {
    if (rel(file).startsWith(path.join('deploy', 'k8s')) && !file.endsWith('kustomization.yaml')) {
      assert.ok(used.has(file), `${rel(file)} is not listed in any kustomization.yaml`);
    }
  }
  const b = kubernetesBuilds();
  assert.ok(b.has(path.join('deploy', 'k8s', 'overlays', 'cpu')) && b.has(path.join('deploy', 'k8s', 'overlays', 'gpu')));
});

test('Kubernetes: the test model of Kustomize agrees with kubectl kustomize', (t) => {
  const probe = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) return t.skip('kubectl is not installed');
  // A copy of deploy/k8s, with the user's token files as the model assumes them.
  const copy = path.join(tempDir('kustomize'), 'k8s');
  t.after(() => fs.rmSync(path.dirname(copy), { recursive: true, force: true }));
  fs.cpSync(K8S, copy, { recursive: true });
  const inCopy = (p: string) => path.join(copy, path.relative(K8S, path.resolve(ROOT, p)));
  for (const dir of kubernetesBuilds().keys()) for (const f of userEnvFiles(path.join(ROOT, dir))) fs.writeFileSync(inCopy(f), USER_ENV_FILE);
  for (const [dir, mine] of kubernetesBuilds()) {
    const r = spawnSync('kubectl', ['kustomize', inCopy(dir)], { encoding: 'utf8' });
    assert.equal(r.status, 0, `kubectl kustomize ${dir}: ${r.stderr}`);
    // Every reference names a Secret of the build, under its hashed name: one left unrewritten would point at
    // nothing on a cluster.
    const built = YAML.parseAllDocuments(r.stdout).map((d) => d.toJS());
    const secretNames = new Set(built.filter((o: Obj) => o.kind === 'Secret').map((o: Obj) => o.metadata.name));
    const refs: string[] = [];
    const collect = (x: Obj): void => {
      if (Array.isArray(x)) x.forEach(collect);
      else if (x && typeof x === 'object') for (const [k, v] of Object.entries(x)) k === 'secretKeyRef' ? refs.push((v as Obj).name) : collect(v);
    };
    collect(built);
    assert.ok(refs.length > 0, `${dir}: no secretKeyRef found in kubectl's output`);
    for (const ref of refs) assert.ok(secretNames.has(ref), `${dir}: secretKeyRef ${ref} names no Secret of the build (${[...secretNames]})`);
    // The model leaves out the hash that Kustomize appends to a generated Secret's name (and to every reference).
    let out = r.stdout;
    for (const s of mine.filter((o) => o.kind === 'Secret')) out = out.replace(new RegExp(`\\b${s.metadata.name}-[a-z0-9]{10}\\b`, 'g'), s.metadata.name);
    const theirs = YAML.parseAllDocuments(out).map((d) => d.toJS());
    const key = (o: Obj) => `${o.kind}/${o.metadata.name}`;
    assert.deepEqual(theirs.map(key).sort(), mine.map(key).sort(), dir);
    for (const o of theirs.filter((o: Obj) => o.kind === 'Secret')) {
      // kubectl folds long base64 values over lines.
      for (const k of Object.keys(o.data ?? {})) o.data[k] = o.data[k].replace(/\s/g, '');
      assert.deepEqual(o, mine.find((x) => key(x) === key(o)), `${dir}: ${key(o)}`);
    }
    for (const o of theirs.filter((o: Obj) => o.kind === 'Deployment')) {
      const m = mine.find((x) => key(x) === key(o));
      const pick = (c: Obj) => ({ image: c.image, args: c.args, env: c.env, ports: c.ports, resources: c.resources });
      assert.deepEqual(o.spec.template.spec.containers.map(pick), m.spec.template.spec.containers.map(pick), `${dir}: ${key(o)}`);
      assert.deepEqual(o.spec.template.spec.tolerations, m.spec.template.spec.tolerations, `${dir}: ${key(o)} tolerations`);
    }
  }
});

test('Kubernetes: args, GANFLEET_* variables, ports, Services, monitors, Secret and volume agree with the CLI', () => {
  for (const [dir, objs] of kubernetesBuilds()) {
    const deployments = objs.filter((o) => o.kind === 'Deployment');
    const services = objs.filter((o) => o.kind === 'Service');
    const secrets = objs.filter((o) => o.kind === 'Secret');
    const byCmd = new Map<string, { dep: Obj; c: Obj; cmd: string; values: Map<string, string> }>();
    for (const dep of deployments) {
      const where = `${dir}: Deployment ${dep.metadata.name}`;
      const pod = dep.spec.template;
      assert.ok(labelsMatch(dep.spec.selector?.matchLabels, pod.metadata?.labels), `${where}: selector does not match the pod labels`);
      for (const c of pod.spec.containers) {
        const w = `${where} container ${c.name}`;
        const { cmd, values } = parseArgs(c.args, `${w} args`);
        byCmd.set(cmd, { dep, c, cmd, values });
        const env = new Map<string, Obj>((c.env ?? []).map((e: Obj) => [e.name, e]));
        for (const name of env.keys()) checkEnvName(cmd, name, `${w} env`);
        // The token: from the Secret, under the key the Secret has.
        const tokenEnv = env.get('GANFLEET_TOKEN');
        assert.ok(tokenEnv, `${w}: no GANFLEET_TOKEN`);
        const ref = tokenEnv.valueFrom?.secretKeyRef;
        assert.ok(ref, `${w}: GANFLEET_TOKEN should come from a Secret (secretKeyRef)`);
        const secret = secrets.find((s) => s.metadata.name === ref.name);
        assert.ok(secret, `${w}: Secret ${ref.name} is not in ${dir}`);
        assert.ok(ref.key in { ...secret.data, ...secret.stringData }, `${w}: Secret ${ref.name} has no key ${ref.key}`);
        // What it listens on is what the pod declares and probes.
        const l = listening(cmd, values);
        const declared = new Map<string, number>((c.ports ?? []).map((p: Obj) => [p.name, p.containerPort]));
        const listens = [l.port, l.metricsPort].filter((p): p is number => p !== undefined && p > 0);
        for (const [name, p] of declared) assert.ok(listens.includes(p), `${w}: containerPort ${name}=${p} is not a port it listens on (${listens})`);
        for (const p of listens) assert.ok([...declared.values()].includes(p), `${w}: listens on ${p} but declares no containerPort for it`);
        if (l.host !== undefined) assert.ok(!LOOPBACK.test(l.host), `${w}: --host ${l.host} is unreachable from other pods`);
        if (l.metricsPort !== undefined && l.metricsPort > 0) assert.ok(!LOOPBACK.test(l.metricsHost ?? ''), `${w}: metrics bound to ${l.metricsHost}: Prometheus cannot scrape it`);
        for (const kind of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
          const probe = c[kind]?.httpGet;
          if (!probe) continue;
          const port = typeof probe.port === 'string' ? declared.get(probe.port) : probe.port;
          assert.equal(port, l.metricsPort, `${w}: ${kind} port ${probe.port} is not the HTTP (--metrics-port) port`);
          servedPaths[cmd].add(probe.path);
        }
        const ann = pod.metadata.annotations ?? {};
        if (ann['prometheus.io/scrape'] === 'true') {
          assert.equal(Number(ann['prometheus.io/port']), l.metricsPort, `${w}: prometheus.io/port`);
          servedPaths[cmd].add(ann['prometheus.io/path'] ?? '/metrics');
        }
        // Service links would inject <SERVICE>_PORT=tcp://… variables; none may land on a flag.
        if (pod.spec.enableServiceLinks !== false) {
          for (const s of services) {
            const prefix = s.metadata.name.toUpperCase().replace(/-/g, '_');
            const injected = [`${prefix}_SERVICE_HOST`, `${prefix}_SERVICE_PORT`, `${prefix}_PORT`];
            for (const p of s.spec.ports ?? []) {
              if (p.name) injected.push(`${prefix}_SERVICE_PORT_${p.name.toUpperCase().replace(/-/g, '_')}`);
              injected.push(...['', '_PROTO', '_PORT', '_ADDR'].map((x) => `${prefix}_PORT_${p.port}_TCP${x}`));
            }
            for (const v of injected.filter((v) => v.startsWith('GANFLEET_'))) {
              const flag = v.slice(9).toLowerCase().replace(/_/g, '-');
              assert.ok(!help.get(cmd)!.has(flag), `${w}: Service ${s.metadata.name} injects ${v}, which sets --${flag}; set enableServiceLinks: false`);
            }
          }
        }
        // The output directory is on the mounted volume, which is a PVC of this build.
        if (cmd === 'coordinator') {
          const out = values.get('out');
          assert.ok(out, `${w}: no --out`);
          const mount = (c.volumeMounts ?? []).find((m: Obj) => out === m.mountPath || out.startsWith(m.mountPath + '/'));
          assert.ok(mount, `${w}: --out ${out} is not on a mounted volume`);
          const vol = pod.spec.volumes.find((v: Obj) => v.name === mount.name);
          const claim = vol?.persistentVolumeClaim?.claimName;
          assert.ok(claim && objs.some((o) => o.kind === 'PersistentVolumeClaim' && o.metadata.name === claim), `${w}: --out is not on a PVC of ${dir}`);
          assert.equal(values.get('resume'), 'true', `${w}: a rescheduled coordinator must --resume`);
          assert.equal(dep.spec.replicas, 1, `${w}: one coordinator`);
          assert.equal(dep.spec.strategy?.type, 'Recreate', `${w}: two coordinators must never share the volume`);
        }
      }
    }
    const coord = byCmd.get('coordinator');
    const work = byCmd.get('worker');
    assert.ok(coord && work, `${dir}: needs a coordinator and a worker Deployment`);
    const coordPorts = new Map<string, number>((coord.c.ports ?? []).map((p: Obj) => [p.name, p.containerPort]));
    const workPorts = new Map<string, number>((work.c.ports ?? []).map((p: Obj) => [p.name, p.containerPort]));
    const cl = listening('coordinator', coord.values);
    // Services point at declared container ports of the pods they select.
    for (const s of services) {
      const target = deployments.find((d) => labelsMatch(s.spec.selector, d.spec.template.metadata.labels));
      assert.ok(target, `${dir}: Service ${s.metadata.name} selects no Deployment`);
      const ports = new Map<string, number>(target.spec.template.spec.containers.flatMap((c: Obj) => (c.ports ?? []).map((p: Obj) => [p.name, p.containerPort])));
      for (const p of s.spec.ports) {
        const tp = p.targetPort ?? p.port;
        assert.ok(typeof tp === 'string' ? ports.has(tp) : [...ports.values()].includes(tp), `${dir}: Service ${s.metadata.name} port ${p.name} targets ${tp}, not a container port`);
      }
    }
    // The worker's --coordinator is a Service port that reaches the coordinator's --port.
    const url = new URL(work.values.get('coordinator')!);
    assert.equal(url.protocol, 'ws:');
    const svc = services.find((s) => s.metadata.name === url.hostname.split('.')[0]);
    assert.ok(svc, `${dir}: --coordinator ${url} names no Service`);
    const sp = svc.spec.ports.find((p: Obj) => p.port === Number(url.port));
    assert.ok(sp, `${dir}: Service ${svc.metadata.name} has no port ${url.port}`);
    const tp = sp.targetPort ?? sp.port;
    assert.equal(typeof tp === 'string' ? coordPorts.get(tp) : tp, cl.port, `${dir}: --coordinator ${url} does not reach the coordinator's --port ${cl.port}`);
    // Prometheus Operator monitors.
    for (const m of objs.filter((o) => o.kind === 'ServiceMonitor')) {
      const s = services.find((s) => labelsMatch(m.spec.selector?.matchLabels, s.metadata.labels));
      assert.ok(s, `${dir}: ServiceMonitor ${m.metadata.name} selects no Service`);
      for (const e of m.spec.endpoints) {
        const p = s.spec.ports.find((p: Obj) => p.name === e.port);
        assert.ok(p, `${dir}: ServiceMonitor ${m.metadata.name}: Service ${s.metadata.name} has no port ${e.port}`);
        assert.equal(coordPorts.get(p.targetPort) ?? p.targetPort, cl.metricsPort, `${dir}: ServiceMonitor ${m.metadata.name} does not reach --metrics-port`);
        servedPaths.coordinator.add(e.path ?? '/metrics');
      }
    }
    for (const m of objs.filter((o) => o.kind === 'PodMonitor')) {
      assert.ok(labelsMatch(m.spec.selector?.matchLabels, work.dep.spec.template.metadata.labels), `${dir}: PodMonitor ${m.metadata.name} does not select the workers`);
      for (const e of m.spec.podMetricsEndpoints) {
        assert.equal(workPorts.get(e.port), listening('worker', work.values).metricsPort, `${dir}: PodMonitor ${m.metadata.name} port ${e.port}`);
        servedPaths.worker.add(e.path ?? '/metrics');
      }
    }
    // Network policies: each selects a Deployment's pods and admits every port they serve; the workers reach --port.
    for (const np of objs.filter((o) => o.kind === 'NetworkPolicy')) {
      const where = `${dir}: NetworkPolicy ${np.metadata.name}`;
      const target = deployments.find((d) => labelsMatch(np.spec.podSelector?.matchLabels, d.spec.template.metadata.labels));
      assert.ok(target, `${where} selects no Deployment`);
      const rules: Obj[] = np.spec.ingress ?? [];
      const admits = (port: Obj, from: Obj | null) =>
        rules.some(
          (r) =>
            (r.ports === undefined || r.ports.some((p: Obj) => p.port === port.name || p.port === port.containerPort)) &&
            (r.from === undefined || (from !== null && r.from.some((f: Obj) => f.podSelector && labelsMatch(f.podSelector.matchLabels, from.spec.template.metadata.labels)))),
        );
      // The workers' port takes the worker pods only: every rule that admits it names them, and only them.
      if (target === coord.dep) {
        // A ports entry without a port opens every port; one with an endPort, a range.
        const reaches = (p: Obj) => p.port === undefined || p.port === 'ws' || p.port === cl.port || (typeof p.port === 'number' && p.endPort !== undefined && p.port <= cl.port! && cl.port! <= p.endPort);
        for (const r of rules.filter((r) => r.ports === undefined || r.ports.some(reaches))) {
          const onlyWorkers = r.from?.length > 0 && r.from.every((f: Obj) => !f.namespaceSelector && !f.ipBlock && f.podSelector && labelsMatch(f.podSelector.matchLabels, work.dep.spec.template.metadata.labels) && !labelsMatch(f.podSelector.matchLabels, coord.dep.spec.template.metadata.labels));
          assert.ok(onlyWorkers, `${where}: a rule admits others than the worker pods to the workers' port: ${JSON.stringify(r)}`);
        }
      }
      for (const c of target.spec.template.spec.containers) {
        for (const port of c.ports ?? []) {
          const byWorkers = target === coord.dep && port.containerPort === cl.port;
          assert.ok(admits(port, byWorkers ? work.dep : null), `${where}: blocks port ${port.name} (${port.containerPort})${byWorkers ? ' from the workers' : ' from Prometheus'}`);
        }
      }
    }
    // A worker answers /healthz between rounds, as it answers pings: its liveness probe allows what --heartbeat does.
    const heartbeat = Number(coord.values.get('heartbeat') ?? 5);
    assertRoundFits(dir, Number(coord.values.get('round-timeout') ?? 30), heartbeat);
    assertStopFits(`${dir}: Deployment ${coord.dep.metadata.name}`, coord.dep.spec.template.spec.terminationGracePeriodSeconds ?? 30, Number(coord.values.get('round-timeout') ?? 30));
    // A rollout starts no extra worker first: on a GPU pool sized to the replicas it would wait for a GPU, and hold up the rest.
    assert.equal(work.dep.spec.strategy?.rollingUpdate?.maxSurge, 0, `${dir}: the worker Deployment's rollout surges`);
    const probe = work.c.livenessProbe;
    if (probe) {
      // The earliest kill: the first failing probe starts as the round does, the last fails after its timeout.
      const allowed = (probe.periodSeconds ?? 10) * ((probe.failureThreshold ?? 3) - 1) + (probe.timeoutSeconds ?? 1);
      assert.ok(allowed > heartbeat, `${dir}: the worker's liveness probe kills a round after ${allowed} s, the coordinator's --heartbeat allows ${heartbeat} s`);
      // Each probe waits for the round in progress, and rounds follow one another: a timeout under a
      // round's length (up to the default --heartbeat, 5 s) fails probe after probe, not once.
      assert.ok((probe.timeoutSeconds ?? 1) >= Math.min(heartbeat, 5), `${dir}: the worker's liveness probe times out after ${probe.timeoutSeconds ?? 1} s, shorter than a round may take`);
    }
    // Overlays: the image and backend they promise.
    const overlay = path.basename(dir);
    if (overlay === 'cpu' || overlay === 'gpu') {
      for (const { c } of byCmd.values()) assert.equal(c.image, `ganfleet:${overlay}`, `${dir}: image of ${c.name}`);
      assert.equal(work.values.get('backend'), overlay === 'gpu' ? 'tensorflow' : 'wasm', `${dir}: worker --backend`);
      assert.equal(work.values.get('require-gpu'), overlay === 'gpu' ? 'true' : undefined, `${dir}: worker --require-gpu`);
      const gpus = work.c.resources?.limits?.['nvidia.com/gpu'];
      assert.equal(gpus, overlay === 'gpu' ? 1 : undefined, `${dir}: worker nvidia.com/gpu limit`);
    }
  }
});

/** A round may last as long as --heartbeat lets a worker go silent (a GPU's first rounds): --round-timeout must let it too. */
function assertRoundFits(where: string, roundTimeout: number, heartbeat: number): void {
  assert.ok(roundTimeout >= heartbeat, `${where}: --heartbeat ${heartbeat} allows a round that --round-timeout ${roundTimeout} drops`);
}

/**
 * On SIGTERM the coordinator finishes the step in progress, whose two rounds may each wait --round-timeout
 * (a GPU worker compiles the D round's kernels, then the G round's), and only then writes its checkpoint:
 * the grace period before SIGKILL must hold both rounds and leave time for that write.
 */
function assertStopFits(where: string, graceSeconds: number, roundTimeout: number): void {
  const needed = 2 * roundTimeout + 30;
  assert.ok(graceSeconds >= needed, `${where}: a stop's grace of ${graceSeconds} s ends before two rounds of --round-timeout ${roundTimeout} s and the checkpoint (${needed} s)`);
}

/** A Compose duration ("120s", "2m", "1m30s") in seconds; Compose's default is 10 s. */
function composeSeconds(d: string | undefined): number {
  if (d === undefined) return 10;
  const m = /^(?:(\d+)m)?(?:(\d+)s)?$/.exec(String(d));
  assert.ok(m && (m[1] || m[2]), `a duration "${d}" this test does not read`);
  return Number(m[1] ?? 0) * 60 + Number(m[2] ?? 0);
}

/** A Kubernetes memory quantity ("512Mi", "2Gi", "1G") in bytes. */
function memoryBytes(q: string, where: string): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(q));
  assert.ok(m, `${where}: a memory quantity "${q}" this test does not read`);
  const units: Record<string, number> = { '': 1, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(m[1]) * units[m[2] ?? ''];
}

/** The largest peak RSS that deploy/README.md's Memory table gives for each process, with its row. */
function measuredPeaks(): Map<string, { mib: number; row: string }> {
  const text = fs.readFileSync(path.join(DEPLOY, 'README.md'), 'utf8');
  const peaks = new Map<string, { mib: number; row: string }>();
  for (const m of text.matchAll(/^\| (.+?) \| (worker|coordinator) \| ([\d,]+) MiB \|$/gm)) {
    const mib = Number(m[3].replace(/,/g, ''));
    if (mib > (peaks.get(m[2])?.mib ?? 0)) peaks.set(m[2], { mib, row: m[1] });
  }
  return peaks;
}

test('Kubernetes: each wasm container\'s memory limit holds the peak deploy/README.md measured for its process at any batch size the CLI allows', () => {
  const peaks = measuredPeaks();
  assert.deepEqual([...peaks.keys()].sort(), ['coordinator', 'worker'], 'deploy/README.md: no Memory table with worker and coordinator rows');
  for (const [dir, objs] of kubernetesBuilds()) {
    for (const dep of objs.filter((o) => o.kind === 'Deployment')) {
      for (const c of dep.spec.template.spec.containers) {
        const w = `${dir}: Deployment ${dep.metadata.name} container ${c.name}`;
        const { cmd, values } = parseArgs(c.args, `${w} args`);
        // The table is wasm's (auto is wasm in the CPU image); TensorFlow's GPU workers hold CUDA's libraries besides.
        if (valueOf(cmd, values, 'backend') === 'tensorflow') continue;
        const peak = peaks.get(cmd)!;
        const limit = c.resources?.limits?.memory;
        assert.ok(limit, `${w}: no memory limit`);
        assert.ok(
          memoryBytes(limit, w) >= peak.mib * 2 ** 20,
          `${w}: its memory limit ${limit} is below the ${peak.mib} MiB deploy/README.md measured for ${peak.row}: the kernel would kill it (OOMKilled) at every restart`,
        );
      }
    }
  }
});

test('Compose and Prometheus: commands, GANFLEET_* variables, ports, healthchecks, mounts', () => {
  const top = docs('docker-compose.yml')[0];
  for (const [name, services] of composeServices()) {
    const ganfleet = new Map<string, { cmd: string; values: Map<string, string>; svc: Obj }>();
    for (const [sname, svc] of Object.entries<Obj>(services)) {
      const where = `${name}: service ${sname}`;
      if (svc.build) {
        const context = path.join(DEPLOY, svc.build.context ?? '.');
        assert.ok(fs.existsSync(path.join(context, svc.build.dockerfile ?? 'Dockerfile')), `${where}: ${svc.build.dockerfile} not found in context ${svc.build.context}`);
      }
      for (const v of svc.volumes ?? []) {
        const src = String(typeof v === 'string' ? v.split(':')[0] : v.source);
        if (src.startsWith('.')) assert.ok(fs.existsSync(path.join(DEPLOY, src)), `${where}: mounts ${src}, which does not exist`);
        else assert.ok(src in (top.volumes ?? {}), `${where}: named volume ${src} is not declared`);
      }
      // Docker's published ports bypass host firewalls (ufw): only the workers' port, which needs the token, leaves the host.
      const workersPort = sname === 'coordinator' ? Number(parseArgs(commandOf(svc)!, where).values.get('port')) : NaN;
      for (const p of svc.ports ?? []) {
        const spec = String(p);
        assert.ok(spec.startsWith('127.0.0.1:') || Number(spec.split(':').pop()) === workersPort, `${where}: publishes ${spec} beyond this host`);
      }
      const command = commandOf(svc);
      if (!String(svc.image ?? '').startsWith('ganfleet') || !command) continue;
      const { cmd, values } = parseArgs(command, `${where} command`);
      ganfleet.set(sname, { cmd, values, svc });
      const env = composeEnv(svc);
      for (const k of Object.keys(env)) checkEnvName(cmd, k, `${where} environment`);
      const l = listening(cmd, values);
      if (l.host && !LOOPBACK.test(l.host)) {
        assert.match(String(env.GANFLEET_TOKEN ?? ''), /^\$\{GANFLEET_TOKEN:\?[^}]+\}$/, `${where}: binds ${l.host}, so GANFLEET_TOKEN must be required (\${GANFLEET_TOKEN:?…})`);
      }
      if (cmd === 'worker') {
        assert.match(String(env.GANFLEET_TOKEN ?? ''), /^\$\{GANFLEET_TOKEN:\?[^}]+\}$/, `${where}: GANFLEET_TOKEN`);
        assert.equal(svc.container_name, undefined, `${where}: container_name prevents --scale`);
        assert.equal(svc.ports, undefined, `${where}: published ports prevent --scale`);
        // It exits 0 only when the run is finished (--rejoin-after-stop waits out a restarted coordinator). Restarted
        // then, it waits for a coordinator that never comes, and GanfleetWorkersWithoutCoordinator fires after every run.
        assert.equal(values.get('rejoin-after-stop'), 'true', `${where}: --rejoin-after-stop`);
        assert.equal(svc.restart, 'on-failure', `${where}: restart`);
      }
      for (const p of svc.ports ?? []) {
        const container = Number(String(typeof p === 'object' ? p.target : p).split(':').pop()!.split('/')[0]);
        assert.ok([l.port, l.metricsPort].includes(container), `${where}: publishes ${container}, which it does not listen on`);
      }
      if (svc.healthcheck) {
        const text = ([] as string[]).concat(svc.healthcheck.test).join(' ');
        const m = /https?:\/\/[^/:'"\s]+:(\d+)(\/[^'"\s)]*)/.exec(text);
        assert.ok(m, `${where}: healthcheck has no URL`);
        assert.equal(Number(m[1]), l.metricsPort, `${where}: healthcheck port`);
        servedPaths[cmd].add(m[2]);
      }
      if (cmd === 'coordinator') {
        const out = values.get('out')!;
        assert.ok(
          (svc.volumes ?? []).some((v: Obj) => {
            const target = typeof v === 'string' ? v.split(':')[1] : v.target;
            return out === target || out.startsWith(target + '/');
          }),
          `${where}: --out ${out} is not on a volume`,
        );
        assert.equal(values.get('resume'), 'true', `${where}: --resume`);
        const setting = (flag: string, fallback: number) => Number(env[`GANFLEET_${flag.toUpperCase().replace('-', '_')}`] ?? values.get(flag) ?? fallback);
        assertRoundFits(where, setting('round-timeout', 30), setting('heartbeat', 5));
        assertStopFits(where, composeSeconds(svc.stop_grace_period), setting('round-timeout', 30));
      }
    }
    const coord = [...ganfleet.entries()].find(([, g]) => g.cmd === 'coordinator');
    const work = [...ganfleet.entries()].find(([, g]) => g.cmd === 'worker');
    assert.ok(coord && work, `${name}: needs a coordinator and a worker service`);
    // A GPU worker that found no usable GPU exits instead of training on the CPU.
    assert.equal(work[1].values.get('require-gpu'), work[1].svc.image === 'ganfleet:gpu' ? 'true' : undefined, `${name}: worker --require-gpu`);
    const url = new URL(work[1].values.get('coordinator')!);
    assert.equal(url.hostname, coord[0], `${name}: worker --coordinator host`);
    assert.equal(Number(url.port), listening('coordinator', coord[1].values).port, `${name}: worker --coordinator port`);

    // Prometheus scrapes the metrics ports of these services.
    const prom = docs('prometheus/prometheus.yml')[0];
    const promSvc = Object.values<Obj>(services).find((s) => String(s.image).startsWith('prom/prometheus'));
    assert.ok(
      promSvc.volumes.some((v: string) => path.normalize(path.join(DEPLOY, v.split(':')[0])) === path.join(DEPLOY, 'prometheus', 'prometheus.yml') && v.split(':')[1] === '/etc/prometheus/prometheus.yml'),
      `${name}: prometheus does not mount prometheus/prometheus.yml at /etc/prometheus/prometheus.yml`,
    );
    // Its rule files, mounted beside the config, where rule_files (relative to the config) looks.
    for (const rules of prom.rule_files ?? []) {
      assert.ok(
        promSvc.volumes.some((v: string) => path.normalize(path.join(DEPLOY, v.split(':')[0])) === path.join(DEPLOY, 'prometheus', rules) && v.split(':')[1] === path.posix.join('/etc/prometheus', rules)),
        `${name}: prometheus does not mount prometheus/${rules} at /etc/prometheus/${rules}`,
      );
    }
    const jobs = new Map<string, Obj>(prom.scrape_configs.map((j: Obj) => [j.job_name, j]));
    const metricsPortOf = (host: string) => {
      const g = ganfleet.get(host);
      assert.ok(g, `prometheus.yml: ${host} is not a ganfleet service`);
      return listening(g.cmd, g.values).metricsPort;
    };
    for (const j of jobs.values()) {
      for (const sc of j.static_configs ?? []) {
        for (const t of sc.targets) {
          const [host, port] = t.split(':');
          assert.equal(Number(port), metricsPortOf(host), `prometheus.yml ${j.job_name}: target ${t}`);
          servedPaths[ganfleet.get(host)!.cmd].add(j.metrics_path ?? '/metrics');
        }
      }
      for (const dns of j.dns_sd_configs ?? []) {
        assert.equal(dns.type, 'A', `prometheus.yml ${j.job_name}: one A record per replica`);
        for (const n of dns.names) {
          assert.equal(dns.port, metricsPortOf(n), `prometheus.yml ${j.job_name}: ${n}:${dns.port}`);
          servedPaths[ganfleet.get(n)!.cmd].add(j.metrics_path ?? '/metrics');
        }
      }
    }
    assert.ok(jobs.has('ganfleet-coordinator') && jobs.has('ganfleet-workers'), 'prometheus.yml: jobs ganfleet-coordinator and ganfleet-workers');
    assert.equal(jobs.get('ganfleet-workers').dns_sd_configs?.[0]?.names?.[0], work[0], 'prometheus.yml: workers are found by DNS');

    // Grafana: provisioning and dashboards where the provider looks.
    const grafana = Object.values<Obj>(services).find((s) => String(s.image).startsWith('grafana/grafana'));
    const mounts = new Map<string, string>(grafana.volumes.map((v: string) => [v.split(':')[1], path.normalize(path.join(DEPLOY, v.split(':')[0]))]));
    assert.equal(mounts.get('/etc/grafana/provisioning'), path.join(DEPLOY, 'grafana', 'provisioning'));
    const provider = docs('grafana/provisioning/dashboards/ganfleet.yml')[0].providers[0];
    assert.equal(mounts.get(provider.options.path), path.join(DEPLOY, 'grafana', 'dashboards'), 'grafana: dashboards are not mounted at the provider path');
    const ds = docs('grafana/provisioning/datasources/prometheus.yml')[0].datasources[0];
    const dsUrl = new URL(ds.url);
    assert.ok(dsUrl.hostname in services && dsUrl.port === '9090', `grafana datasource ${ds.url} is not the prometheus service`);
  }
});

test('Grafana dashboard: every target uses the provisioned datasource and valid PromQL', (t) => {
  const ds = docs('grafana/provisioning/datasources/prometheus.yml')[0].datasources[0];
  const dash = docs('grafana/dashboards/ganfleet.json')[0];
  const exprs = dashboardExprs();
  assert.ok(exprs.length > 0, 'the dashboard has no queries');
  for (const p of dash.panels) {
    if (p.type === 'row') continue;
    assert.equal(p.datasource?.uid, ds.uid, `panel ${p.title}: datasource`);
    assert.ok(p.targets?.length, `panel ${p.title}: no targets`);
    for (const tg of p.targets) {
      assert.equal(tg.datasource?.uid ?? p.datasource.uid, ds.uid, `panel ${p.title}: target datasource`);
      assert.ok(typeof tg.expr === 'string' && tg.expr.includes('ganfleet_'), `panel ${p.title}: target without a ganfleet expr`);
    }
  }
  const probe = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) return t.skip('promtool is not installed: PromQL syntax not checked');
  const rules = path.join(tmp, 'dashboard-rules.yml');
  fs.writeFileSync(rules, YAML.stringify({ groups: [{ name: 'dashboard', rules: exprs.map((expr, i) => ({ record: `dashboard:expr_${i}`, expr })) }] }));
  const r = spawnSync('promtool', ['check', 'rules', rules], { encoding: 'utf8' });
  assert.equal(r.status, 0, `promtool check rules: ${r.stdout}${r.stderr}`);
  const c = spawnSync('promtool', ['check', 'config', path.join(DEPLOY, 'prometheus', 'prometheus.yml')], { encoding: 'utf8' });
  assert.equal(c.status, 0, `promtool check config: ${c.stdout}${c.stderr}`);
});

/** The alerting rules of deploy/prometheus/alerts.yml. */
function alertRules(): { alert: string; expr: string }[] {
  return docs('prometheus/alerts.yml')[0].groups.flatMap((g: Obj) => g.rules);
}

test('alerts: Prometheus loads them, each fires where it should and stays silent where it should not (promtool test rules), and Kubernetes gets the same ones', (t) => {
  assert.deepEqual(docs('prometheus/prometheus.yml')[0].rule_files, ['alerts.yml']);
  assert.deepEqual(alertRules().map((r) => r.alert), ['GanfleetWorkersWithoutCoordinator', 'GanfleetPaused', 'GanfleetNoProgress', 'GanfleetStalled', 'GanfleetRestarting', 'GanfleetCheckpointStale', 'GanfleetRejectedMessages']);
  // The PrometheusRule is the same groups, so the two never drift apart.
  for (const [dir, objs] of kubernetesBuilds()) {
    if (!dir.includes('overlays')) continue;
    const rule = objs.find((o) => o.kind === 'PrometheusRule');
    assert.ok(rule, `${dir}: no PrometheusRule`);
    assert.deepEqual(rule.spec.groups, docs('prometheus/alerts.yml')[0].groups, `${dir}: the PrometheusRule differs from prometheus/alerts.yml`);
  }
  // Every alert is exercised by the unit tests beside it.
  const tested = new Set(docs('prometheus/alerts.test.yml')[0].tests.flatMap((u: Obj) => u.alert_rule_test.map((a: Obj) => a.alertname)));
  for (const r of alertRules()) assert.ok(tested.has(r.alert), `alerts.test.yml does not test ${r.alert}`);
  const probe = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) return t.skip('promtool is not installed: the alerts were not run');
  const dir = path.join(DEPLOY, 'prometheus');
  const check = spawnSync('promtool', ['check', 'rules', 'alerts.yml'], { encoding: 'utf8', cwd: dir });
  assert.equal(check.status, 0, `promtool check rules: ${check.stdout}${check.stderr}`);
  const unit = spawnSync('promtool', ['test', 'rules', 'alerts.test.yml'], { encoding: 'utf8', cwd: dir });
  assert.equal(unit.status, 0, `promtool test rules: ${unit.stdout}${unit.stderr}`);
});

test('Dockerfiles: non-root, runtime npm ci --omit=dev --ignore-scripts, entrypoint dist/src/cli.js', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  const tfjsCore = pkg.dependencies['@tensorflow/tfjs-core'];
  const files = fs.readdirSync(path.join(DEPLOY, 'docker')).filter((f) => /^Dockerfile(\.[a-z0-9]+)?$/.test(f) && !f.endsWith('.dockerignore'));
  assert.deepEqual(files.sort(), ['Dockerfile', 'Dockerfile.gpu']);
  for (const f of files) {
    const file = path.join(DEPLOY, 'docker', f);
    const { globalArgs, stages } = dockerfile(file);
    const names = new Set(stages.map((s) => s.name).filter(Boolean));
    const final = stages[stages.length - 1];
    const ignore = fs.existsSync(`${file}.dockerignore`) ? fs.readFileSync(`${file}.dockerignore`, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')) : [];
    let prodDeps: string | undefined;
    let built: string | undefined;
    for (const s of stages) {
      const from = expand(s.from, globalArgs);
      assert.ok(!from.includes('$'), `${f}: FROM ${s.from} does not resolve`);
      const node = /^node:(\d+)/.exec(from);
      if (node) assert.ok(Number(node[1]) >= Number(/\d+/.exec(pkg.engines.node)![0]), `${f}: ${from} is older than engines.node ${pkg.engines.node}`);
      const vars = new Map(globalArgs);
      for (const i of s.instrs) {
        if (i.op === 'ARG') {
          const [k, v] = i.args.split('=');
          if (v !== undefined) vars.set(k, v);
        }
        if (i.op === 'RUN') {
          const run = expand(i.args, vars);
          for (const ci of run.matchAll(/npm ci\b[^&;|]*/g)) {
            if (/--omit=dev/.test(ci[0])) {
              assert.match(ci[0], /--ignore-scripts/, `${f}: "${ci[0].trim()}" would run "prepare" (tsc) without TypeScript`);
              prodDeps = s.name;
            }
          }
          if (/npm run build|\btsc\b/.test(run)) built = s.name;
          const gpu = /@tensorflow\/tfjs-node(?:-gpu)?@(\S+)/.exec(run);
          if (gpu) {
            assert.equal(gpu[1], tfjsCore, `${f}: ${gpu[0]} must match @tensorflow/tfjs-core ${tfjsCore}`);
            // package.json declares it an optional peer, and npm 11 answers a plain `npm install` of a root's optional peer "up to date".
            assert.match(run, /--save-optional/, `${f}: ${gpu[0]} is installed only with --save-optional on npm 11`);
          }
        }
        if (i.op === 'COPY' || i.op === 'ADD') {
          const words = i.args.startsWith('[') ? JSON.parse(i.args) : i.args.split(/\s+/);
          const from = words.find((w: string) => w.startsWith('--from='))?.slice(7);
          const srcs = words.filter((w: string) => !w.startsWith('--')).slice(0, -1);
          if (from) {
            if (names.has(from)) assert.ok(stages.findIndex((x) => x.name === from) < stages.indexOf(s), `${f}: COPY --from=${from} before that stage`);
          } else {
            for (const src of srcs) {
              assert.ok(fs.existsSync(path.join(ROOT, src)), `${f}: COPY ${src}: not in the build context (the repository root)`);
              assert.ok(!dockerIgnored(ignore, src), `${f}: COPY ${src} is excluded by ${f}.dockerignore`);
            }
          }
        }
      }
    }
    assert.ok(prodDeps, `${f}: no "npm ci --omit=dev" stage`);
    const copies = final.instrs.filter((i) => i.op === 'COPY').map((i) => i.args);
    assert.ok(prodDeps === final.name || copies.some((c) => c.includes(`--from=${prodDeps}`) && c.includes('node_modules')), `${f}: the runtime's node_modules do not come from the --omit=dev stage`);
    assert.ok(copies.some((c) => c.includes(`--from=${built}`) && /dist\/src/.test(c)), `${f}: the runtime does not copy dist/src from the build stage`);
    assert.ok(!final.instrs.some((i) => i.op === 'RUN' && /npm (ci|install|i)\b(?![^&;]*--omit=dev)/.test(i.args)), `${f}: the runtime installs dev dependencies`);
    const entry = final.instrs.filter((i) => i.op === 'ENTRYPOINT').pop();
    assert.ok(entry, `${f}: no ENTRYPOINT`);
    assert.deepEqual(JSON.parse(entry.args), ['node', 'dist/src/cli.js'], `${f}: ENTRYPOINT`);
    const workdir = final.instrs.filter((i) => i.op === 'WORKDIR').pop()?.args;
    assert.ok(copies.some((c) => /dist\/src\s+\.\/dist\/src$/.test(c) || c.endsWith(`${workdir}/dist/src`)), `${f}: dist/src is not at ./dist/src of the WORKDIR`);
    const user = final.instrs.filter((i) => i.op === 'USER').pop()?.args;
    assert.ok(user && !/^(root|0)(:|$)/.test(user), `${f}: the runtime runs as root (USER ${user})`);
    if (user === 'node' && !/^node:/.test(expand(final.from, globalArgs))) {
      assert.ok(final.instrs.some((i) => i.op === 'RUN' && /useradd[^&]*\bnode\b/.test(i.args)), `${f}: USER node, but the base image has no such user`);
    }
  }
});

test('"prepare" without TypeScript (npm ci --omit=dev of a checkout): keeps a built dist/, and says why it cannot run without one', () => {
  // A checkout's package.json and scripts/, with no node_modules: npm runs "prepare" there as `npm ci --omit=dev` would.
  const dir = tempDir('omit-dev');
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  fs.cpSync(path.join(ROOT, 'scripts'), path.join(dir, 'scripts'), { recursive: true });
  const prepare = () => spawnSync('npm', ['run', 'prepare'], { cwd: dir, encoding: 'utf8', env: cleanEnv({ npm_config_update_notifier: 'false' }) });
  fs.mkdirSync(path.join(dir, 'dist', 'src'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'dist', 'src', 'cli.js'), '');
  const kept = prepare();
  assert.equal(kept.status, 0, kept.stdout + kept.stderr);
  assert.match(kept.stdout, /TypeScript is not installed \(--omit=dev\): dist\/ is kept/);
  fs.rmSync(path.join(dir, 'dist'), { recursive: true });
  const none = prepare();
  assert.equal(none.status, 1, none.stdout + none.stderr);
  assert.match(none.stderr, /TypeScript is not installed \(--omit=dev\) and there is no dist\/ to run: install with devDependencies \(npm ci\)/);
});

test('probe, healthcheck and scrape paths are served by a coordinator and a worker started with the Kubernetes arguments', async () => {
  // The other tests collect the paths; run them first (node:test runs tests in order).
  assert.ok(servedPaths.coordinator.has('/healthz'), 'no /healthz probe was found for the coordinator');
  const objs = kubernetesBuilds().get(path.join('deploy', 'k8s', 'overlays', 'cpu'))!;
  const container = (name: string) => objs.find((o) => o.kind === 'Deployment' && o.metadata.name === name).spec.template.spec.containers[0];
  const token = crypto.randomBytes(16).toString('hex');
  const env = cleanEnv({ GANFLEET_TOKEN: token });

  // Exactly the deployed arguments (host 0.0.0.0, token from the environment, --resume),
  // on ephemeral ports and a temporary --out; two workers needed so that nothing trains.
  let args: string[] = container('ganfleet-coordinator').args;
  for (const [k, v] of [['port', '0'], ['metrics-port', '0'], ['out', path.join(tmp, 'run')], ['steps', '1'], ['min-workers', '2']]) args = withFlag(args, k, v);
  const c = start(args, env);
  const wsPort = Number((await waitFor('coordinator', c, /listening for workers on wss?:\/\/[^\s]+:(\d+) \(token required\)/))[1]);
  const httpPort = Number((await waitFor('coordinator', c, /metrics on http:\/\/[^\s]+:(\d+)\/metrics/))[1]);
  coordinator = { ...c, httpPort };

  args = withFlag(withFlag(container('ganfleet-worker').args, 'coordinator', `ws://127.0.0.1:${wsPort}`), 'metrics-port', '0');
  const w = start(args, env);
  // After its backend is loaded: a worker's start-up with other test files' workers starting beside it took up to 17 s.
  worker = { ...w, httpPort: Number((await waitFor('worker', w, /metrics on http:\/\/[^\s]+:(\d+)\/metrics/, 60_000))[1]) };
  // The worker authenticates with the same GANFLEET_TOKEN.
  await waitFor('coordinator', c, / joined from /, 30_000);

  const bodies: Record<string, string> = {};
  for (const [who, live] of [['coordinator', coordinator], ['worker', worker]] as [string, Live][]) {
    for (const p of servedPaths[who]) {
      const res = await fetch(`http://127.0.0.1:${live.httpPort}${p}`);
      assert.equal(res.status, 200, `${who} GET ${p}`);
      const body = await res.text();
      if (p === '/metrics') bodies[who] = body;
      if (p === '/api/status') assert.equal(JSON.parse(body).workers.length, 1, 'the worker did not join');
    }
  }
  assert.ok(bodies.coordinator && bodies.worker, 'Prometheus scrapes /metrics of both');

  // The dashboard queries only series that these processes expose.
  const exposed = new Set<string>();
  for (const body of Object.values(bodies)) {
    for (const m of body.matchAll(/^# TYPE (\S+) (\S+)/gm)) {
      exposed.add(m[1]);
      if (m[2] === 'histogram' || m[2] === 'summary') for (const s of ['_bucket', '_sum', '_count']) exposed.add(m[1] + s);
    }
  }
  for (const expr of dashboardExprs()) {
    for (const name of expr.match(/\bganfleet_[a-z0-9_]+/g) ?? []) {
      assert.ok(exposed.has(name), `dashboard: ${name} is not exposed by the coordinator or a worker`);
    }
  }
  for (const rule of alertRules()) {
    for (const name of rule.expr.match(/\bganfleet_[a-z0-9_]+/g) ?? []) {
      assert.ok(exposed.has(name), `alert ${rule.alert}: ${name} is not exposed by the coordinator or a worker`);
    }
  }
});
