import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Adam, KERAS_ADAM_DEFAULTS } from '../src/coordinator/adam';
import { listCheckpoints, writeCheckpoint } from '../src/coordinator/checkpoint';
import { createModel } from '../src/model';
import { Rng } from '../src/util/rng';
import { blankMnistDir, tempDir } from './harness';
import { CLI } from './helpers';

test('timeouts beyond what a Node timer holds are refused (a longer one would fire at once and drop every worker)', () => {
  for (const [flag, value] of [['--round-timeout', '1e9'], ['--heartbeat', '2147484']]) {
    const r = spawnSync(process.execPath, [CLI, 'coordinator', flag, value, '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
    assert.notEqual(r.status, 0, `${flag} ${value} was accepted`);
    assert.match(r.stderr, new RegExp(`${flag} must be a positive number of seconds up to 2147483`));
  }
});

/** An --out holding one MLP checkpoint at step 1000, as a run of 1000 steps leaves it. */
function outWithCheckpoint(name: string): string {
  const out = tempDir(name);
  const model = createModel('mlp');
  const p = model.init(new Rng(1));
  const adam = (n: number) => new Adam(n, KERAS_ADAM_DEFAULTS).state();
  const checkpoint = {
    step: 1000, imagesTotal: 256000, config: { arch: 'mlp' }, seedRng: new Rng(2).state(), nextWorker: 3,
    generator: p.generator, discriminator: p.discriminator, adamGenerator: adam(p.generator.length), adamDiscriminator: adam(p.discriminator.length),
  };
  writeCheckpoint(path.join(out, 'checkpoints'), checkpoint, 3);
  return out;
}

test("the deploy Secret's placeholder token is refused: it is public, so it would guard nothing", () => {
  const secret = fs.readFileSync(path.join(__dirname, '..', '..', 'deploy', 'k8s', 'base', 'secret.yaml'), 'utf8');
  const placeholder = /token: (\S+)/.exec(secret)![1];
  const r = spawnSync(process.execPath, [CLI, 'coordinator', '--host', '0.0.0.0', '--port', '0', '--metrics-port', '-1'], {
    encoding: 'utf8', timeout: 30_000, env: { ...process.env, GANFLEET_TOKEN: placeholder },
  });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /the token is the placeholder from deploy\/k8s\/base\/secret\.yaml: put a secret one there first/);
});

test('a fresh run refuses an --out that holds checkpoints of another run: --resume continues it, another --out starts anew', () => {
  const out = outWithCheckpoint('reused-out');
  const r = spawnSync(process.execPath, [CLI, 'coordinator', '--out', out, '--port', '0', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /checkpoints already holds checkpoints of a run \(newest ckpt-000001000\.bin\): pass --resume to continue it, or choose another --out/);
  assert.deepEqual(listCheckpoints(path.join(out, 'checkpoints')), ['ckpt-000001000.bin'], 'nothing was pruned or written');
  fs.rmSync(out, { recursive: true, force: true });
});

test('--resume on a finished run trains nothing, exits 0 and leaves its summary and generator as they were (a restarted pod does this)', () => {
  const out = outWithCheckpoint('finished-out');
  const summary = path.join(out, 'summary.json');
  const generator = path.join(out, 'generator');
  fs.writeFileSync(summary, '{"steps": 1000, "stepsThisRun": 1000}\n');
  fs.mkdirSync(generator);
  fs.writeFileSync(path.join(generator, 'weights.bin'), 'trained');
  const r = spawnSync(process.execPath, [CLI, 'coordinator', '--out', out, '--resume', '--steps', '1000', '--port', '0', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr + r.stdout, /finished 1000 steps: the run is at step 1000 of --steps 1000 \(raise --steps to train on\); the outputs in .* are left as they were/);
  assert.equal(fs.readFileSync(summary, 'utf8'), '{"steps": 1000, "stepsThisRun": 1000}\n');
  assert.deepEqual(fs.readdirSync(generator), ['weights.bin']);
  assert.equal(fs.readFileSync(path.join(generator, 'weights.bin'), 'utf8'), 'trained');
  fs.rmSync(out, { recursive: true, force: true });
  // Killed after its last checkpoint, before its outputs: resuming writes them.
  const unfinished = outWithCheckpoint('no-outputs');
  const again = spawnSync(process.execPath, [CLI, 'coordinator', '--out', unfinished, '--resume', '--steps', '1000', '--port', '0', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(again.status, 0, again.stderr);
  assert.equal(JSON.parse(fs.readFileSync(path.join(unfinished, 'summary.json'), 'utf8')).steps, 1000);
  assert.ok(fs.existsSync(path.join(unfinished, 'generator', 'weights.bin')));
  fs.rmSync(unfinished, { recursive: true, force: true });
});

test('usage errors are one whole line: an invalid choice names the value and the choices; short flags other than -h, and --resume without --out, are refused', () => {
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env } });
  const choice = cli(['coordinator', '--model', 'foo']);
  assert.equal(choice.status, 2);
  assert.match(choice.stderr, /^ganfleet: Invalid values: Argument: model, Given: "foo", Choices: "mlp", "dcgan"\n/);
  const short = cli(['local', '-n', '4']);
  assert.equal(short.status, 2);
  assert.match(short.stderr, /Unknown argument: -n \(long options start with --\)/);
  const help = cli(['coordinator', '-h']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /ganfleet coordinator/);
  // A negative number is a value, not a flag.
  assert.match(cli(['coordinator', '--lr', '-0.001', '--steps', '0']).stderr, /--steps must be an integer >= 1/);
  // The default --out is a new directory: --resume there would quietly start afresh.
  for (const [args, env] of [[['coordinator', '--resume'], {}], [['local'], { GANFLEET_RESUME: '1' }]] as const) {
    const resume = cli([...args], env);
    assert.equal(resume.status, 2, `${args.join(' ')} ${JSON.stringify(env)}`);
    assert.match(resume.stderr, /--resume continues the run in --out: name its directory/);
  }
  const bad = cli(['local', '--steps', '1'], { GANFLEET_MAILBOX: 'maybe' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /GANFLEET_MAILBOX must be 1\/0, true\/false, yes\/no or on\/off, got "maybe"/);
});

test('boolean GANFLEET_* variables read 1/yes/on as true and 0/no/off as false (yargs alone took 1 for false)', () => {
  const run = (value: string) => {
    const out = tempDir('env-bool');
    const r = spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--steps', '2', '--metrics-port', '-1', '--out', out], {
      encoding: 'utf8', timeout: 60_000, env: { ...process.env, GANFLEET_MAILBOX: value },
    });
    fs.rmSync(out, { recursive: true, force: true });
    assert.equal(r.status, 0, r.stderr);
    return /exchanges frames through shared memory/.test(r.stdout + r.stderr);
  };
  for (const on of ['1', 'yes', 'ON', 'true', '']) assert.equal(run(on), true, `GANFLEET_MAILBOX=${on} (empty: the default)`);
  for (const off of ['0', 'no', 'off']) assert.equal(run(off), false, `GANFLEET_MAILBOX=${off}`);
  // The command line wins, in the coordinator's own process too (where util/native.ts reads the variable).
  const out = tempDir('env-native');
  const r = spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--steps', '2', '--native', '--metrics-port', '-1', '--out', out], {
    encoding: 'utf8', timeout: 60_000, env: { ...process.env, GANFLEET_NATIVE: 'false' },
  });
  fs.rmSync(out, { recursive: true, force: true });
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stdout + r.stderr, /off \(--no-native\)/);
});

test('a training set with no images, or fewer images than workers, stops the run at once with the reason (workers were refused their shard and rejoined for ever)', () => {
  for (const [images, workers, reason] of [
    [0, 1, /train-images-idx3-ubyte holds no images/],
    [1, 2, /1 training images cannot give each of 2 workers a shard/],
  ] as const) {
    const data = blankMnistDir(images);
    const out = tempDir('tiny-out');
    const r = spawnSync(process.execPath, [CLI, 'local', '--workers', String(workers), '--steps', '2', '--data-dir', data, '--metrics-port', '-1', '--out', out], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, reason);
    for (const d of [data, out]) fs.rmSync(d, { recursive: true, force: true });
  }
});
