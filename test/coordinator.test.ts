import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import WebSocket from 'ws';
import { pack, unpack } from 'msgpackr';
import { Adam, KERAS_ADAM_DEFAULTS, applyDiscriminatorUpdates } from '../src/coordinator/adam';
import { Checkpoint, loadLatestCheckpoint, writeCheckpoint } from '../src/coordinator/checkpoint';
import { Coordinator, TrainingSummary } from '../src/coordinator/coordinator';
import { ownAnswerProblem } from '../src/coordinator/divergence';
import { HELLO_TIMING } from '../src/coordinator/receiver';
import { History } from '../src/coordinator/history';
import { gridName, gridsAround } from '../src/coordinator/samples';
import { FIRST_LINE_NOTICE_SECONDS } from '../src/coordinator/progress';
import { CoordinatorConfig } from '../src/coordinator/config';
import { runSettings } from '../src/coordinator/status';
import { LEASE_FILE } from '../src/coordinator/output-claim';
import { WorkerGroup } from '../src/coordinator/membership';
import { CoordinatorMetrics } from '../src/coordinator/metrics';
import { MIN_INTAKE_BYTES_PER_SECOND, PeerMailbox } from '../src/coordinator/peer';
import { gatherImages } from '../src/data/shards';
import { imagesFingerprint, loadMnist } from '../src/data/mnist';
import { IMAGE_SIZE } from '../src/data/image';
import { blankMnistDir, sleep, tempDir } from './harness';
import { REJECT_REASONS, decodeCoordinatorMessage, encode, encodeFrame } from '../src/protocol/codec';
import { Inbox, Outbox, makeMailboxDir, removeMailboxDir } from '../src/protocol/mailbox';
import { CoordinatorMessage, Gradients, Hello, MAX_STRING_LENGTH, Mail, MailboxReady, PROTOCOL_VERSION, Phase, Weights, Welcome, errorMessage, message } from '../src/protocol/messages';
import { createModel } from '../src/model';
import { Rng } from '../src/util/rng';
import { GanfleetError } from '../src/util/errors';
import { metricValue, recordExtensionBomb } from './helpers';

const G_SIZE = 114064;
const D_SIZE = 100609;
/** A D round's answer: D's gradient in two halves, the real batch's share and the generated batch's. */
const D_GRADIENTS = 2 * D_SIZE;

/** A hand-driven worker on a real socket: it answers only what the test tells it to. */
class ScriptedPeer {
  readonly ws: WebSocket;
  private readonly inbox: CoordinatorMessage[] = [];
  private waiter: (() => void) | null = null;
  closed: Promise<number>;

  constructor(url: string, private readonly closeOnStop = true, options?: WebSocket.ClientOptions) {
    this.ws = new WebSocket(url, options);
    this.ws.on('message', (d: Buffer) => {
      const m = decodeCoordinatorMessage(d);
      this.inbox.push(m);
      // As a worker does: a stop ends the connection (unless the test keeps it open to watch the coordinator wait).
      if (m.type === 'stop' && this.closeOnStop) this.ws.close();
      this.waiter?.();
    });
    this.closed = new Promise((r) => this.ws.on('close', (code) => r(code)));
  }

  async open(): Promise<void> {
    await new Promise((r) => this.ws.once('open', r));
  }

  /** The next message already received, if any. */
  take(): CoordinatorMessage | undefined {
    return this.inbox.shift();
  }

  async next(): Promise<CoordinatorMessage> {
    while (this.inbox.length === 0) await new Promise<void>((r) => (this.waiter = r));
    return this.inbox.shift()!;
  }

  send(x: Buffer | Uint8Array): void {
    this.ws.send(x);
  }

  /** `pid`: another worker process, as the coordinator tells them apart. */
  hello(pid = process.pid): void {
    this.send(encode(message<Hello>({ type: 'hello', name: 'scripted', backend: 'none', pid, hostname: 'test' })));
  }

  /** `figures`: the loss, D(x) and D(G(z)) to report, where a test tells them apart (0.7, 0.5 and 0.5 otherwise). */
  gradients(step: number, phase: Phase, values: Float32Array, outbox?: Outbox, figures: { loss?: number; dReal?: number; dFake?: number } = {}): void {
    const body: Omit<Gradients, 'v'> = { type: 'gradients', step, phase, samples: 128, gradients: values, loss: figures.loss ?? 0.7, dFake: figures.dFake ?? 0.5, computeSeconds: 0.001 };
    if (phase === 'discriminator') body.dReal = figures.dReal ?? 0.5;
    const frame = encodeFrame(message<Gradients>(body));
    if (!outbox) return this.send(frame.whole);
    outbox.post(frame);
    this.send(encode(message<Mail>({ type: 'mail', bytes: frame.length })));
  }
}

test("the status page's run settings are this run's, each one that differs from its default shown as given", () => {
  const given: CoordinatorConfig = {
    ...config('unused', 1), arch: 'dcgan', loss: 'lsgan', batchSize: 48, seed: 7, wireDtype: 'bfloat16', discriminatorUpdates: 1, adam: { learningRate: 3e-4, beta1: 0.6, beta2: 0.95, epsilon: 1e-8 },
  };
  assert.deepEqual(runSettings(given), { model: 'dcgan', loss: 'lsgan', batchSize: 48, lr: 3e-4, beta1: 0.6, beta2: 0.95, dUpdates: 1, seed: 7, wireDtype: 'bfloat16' });
});

function config(out: string, steps: number): CoordinatorConfig {
  return {
    host: '127.0.0.1', port: 0, metricsPort: -1, arch: 'mlp', loss: 'bce', steps, batchSize: 128, seed: 1, out,
    sampleEvery: 1000, logEvery: 1000, startWorkers: 1, minWorkers: 1, maxWorkers: 8, roundTimeoutSeconds: 30,
    heartbeatSeconds: 5, checkpointEvery: 0, wireDtype: 'float32', mailbox: true, evalEvery: 0, evalSamples: 10000, keepCheckpoints: 2, resume: false, insecure: false, adam: KERAS_ADAM_DEFAULTS, discriminatorUpdates: 2, backend: 'cpu',
  };
}

/** A coordinator training a 2-step run for the enclosing describe block, closed after it. */
function trainingCoordinator() {
  const ctx = {} as { out: string; coordinator: Coordinator; run: Promise<TrainingSummary> };
  before(async () => {
    ctx.out = tempDir('coord');
    ctx.coordinator = await Coordinator.start(config(ctx.out, 2), () => {});
    ctx.run = ctx.coordinator.run();
  });
  after(async () => {
    await ctx.coordinator.close();
    fs.rmSync(ctx.out, { recursive: true, force: true });
  });
  return ctx;
}

describe('coordinator validates what workers send', () => {
  const ctx = trainingCoordinator();

  test('a NaN gradient and a wrong-step gradient are rejected, counted, and never applied', async () => {
    const { out, coordinator, run } = ctx;
    const peer = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
    await peer.open();
    peer.hello();
    assert.equal((await peer.next()).type, 'welcome');
    const shard = await peer.next();
    assert.equal(shard.type, 'shard');
    if (shard.type === 'shard') assert.equal(shard.count, 60000);
    const first = await peer.next();
    assert.ok(first.type === 'weights' && first.step === 0 && first.phase === 'discriminator');
    assert.equal(first.generator?.length, G_SIZE, 'a new worker gets both networks');
    assert.equal(first.discriminator?.length, D_SIZE);
    const initialD = Float32Array.from(first.discriminator!);

    const poisoned = new Float32Array(D_GRADIENTS).fill(0.01);
    poisoned[123] = NaN;
    peer.gradients(0, 'discriminator', poisoned);
    const err = await peer.next();
    assert.ok(err.type === 'error' && err.code === 'PROTOCOL_NOT_FINITE', JSON.stringify(err));
    // The round closed without a usable gradient, so the same step is asked again.
    const retry = await peer.next();
    assert.ok(retry.type === 'weights' && retry.step === 0 && retry.phase === 'discriminator');
    assert.equal(retry.generator, undefined, 'networks the worker already holds are not resent');

    peer.gradients(7, 'discriminator', new Float32Array(D_GRADIENTS));
    const ahead = await peer.next();
    assert.ok(ahead.type === 'error' && ahead.code === 'PROTOCOL_WRONG_STEP');
    // A rejected message costs the peer its answer to the open round: asked again.
    const again = await peer.next();
    assert.ok(again.type === 'weights' && again.step === 0 && again.phase === 'discriminator');

    // Zero gradients: Adam's first update is exactly zero, so D must come back unchanged.
    peer.gradients(0, 'discriminator', new Float32Array(D_GRADIENTS));
    const gRound = await peer.next();
    assert.ok(gRound.type === 'weights' && gRound.step === 0 && gRound.phase === 'generator');
    assert.deepEqual(gRound.discriminator, initialD, 'the poisoned gradient never reached Adam');
    peer.gradients(0, 'generator', new Float32Array(G_SIZE).fill(1e-3));
    for (const phase of ['discriminator', 'generator'] as const) {
      const w = await peer.next();
      assert.ok(w.type === 'weights' && w.step === 1 && w.phase === phase);
      peer.gradients(1, phase, new Float32Array(phase === 'generator' ? G_SIZE : D_GRADIENTS).fill(1e-3));
    }
    const summary = await run;
    assert.equal(summary.steps, 2);
    const rejected = await coordinator.metrics.rejected.get();
    const count = (reason: string) => rejected.values.find((v) => v.labels.reason === reason)?.value ?? 0;
    assert.equal(count('not_finite'), 1);
    assert.equal(count('wrong_step'), 1);
    const weights = new Float32Array(fs.readFileSync(path.join(out, 'generator', 'weights.bin')).buffer.slice(0));
    assert.ok(weights.every(Number.isFinite));
  });
});

/** A scripted worker that takes up the coordinator's mailbox offer: its own file goes in `dir`. */
async function mailboxPeer(coordinator: Coordinator, dir: string, name: string) {
  const peer = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
  await peer.open();
  peer.hello();
  const welcome = await peer.next();
  assert.ok(welcome.type === 'welcome' && welcome.mailbox && welcome.nonce, JSON.stringify(welcome));
  const inbox = Inbox.open(welcome.mailbox, welcome.nonce, 'coordinator');
  const outbox = Outbox.create(path.join(dir, name), welcome.nonce);
  peer.send(encode(message<MailboxReady>({ type: 'mailbox', path: outbox.path })));
  return { peer, welcome, inbox, outbox };
}

/** The next weights the peer is asked to answer, whichever way they came. */
async function nextWeights(peer: ScriptedPeer, inbox: Inbox): Promise<{ weights: Weights; mailed: boolean }> {
  for (;;) {
    const m = await peer.next();
    if (m.type === 'shard') continue;
    if (m.type === 'mail') return { weights: decodeCoordinatorMessage(Buffer.from(inbox.collect(m.bytes, 1 << 20))) as Weights, mailed: true };
    assert.equal(m.type, 'weights', JSON.stringify(m));
    return { weights: m as Weights, mailed: false };
  }
}

describe('coordinator and a worker on one machine', () => {
  const ctx = trainingCoordinator();

  test('once the worker shows it reads the offered mailbox, weights and gradients travel through shared memory', async () => {
    const { coordinator, run } = ctx;
    const dir = makeMailboxDir('worker');
    const { peer, welcome, inbox, outbox } = await mailboxPeer(coordinator, dir, 'to-coordinator');
    assert.equal(fs.statSync(welcome.mailbox!).mode & 0o777, 0o600);

    let mailed = 0;
    let socketed = 0;
    for (let rounds = 0; rounds < 4; rounds++) {
      const asked = await nextWeights(peer, inbox);
      const weights = asked.weights;
      if (asked.mailed) {
        mailed++;
        assert.equal(coordinator.status().workers[0].frames, 'shared memory');
        assert.equal((await coordinator.metrics.mailboxWorkers.get()).values[0].value, 1);
      } else {
        socketed++;
      }
      if (weights.step === 0 && weights.phase === 'discriminator') assert.equal(weights.generator?.length, G_SIZE);
      // Answered the way the weights came, as a worker does.
      const size = weights.phase === 'generator' ? G_SIZE : D_GRADIENTS;
      peer.gradients(weights.step, weights.phase, new Float32Array(size).fill(1e-3), asked.mailed ? outbox : undefined);
    }
    // The coordinator may have sent the first round before it read the confirmation.
    assert.ok(mailed >= 3 && socketed <= 1, `${mailed} rounds by mail, ${socketed} over the socket`);
    const summary = await run;
    assert.equal(summary.steps, 2);
    // Frame bytes count as sent and received, whichever way they travel.
    assert.ok(summary.bytesReceivedPerStep > 4 * (G_SIZE + D_GRADIENTS), `${summary.bytesReceivedPerStep} bytes received per step`);
    await coordinator.close();
    assert.ok(!fs.existsSync(path.dirname(welcome.mailbox!)), "the coordinator's mailbox directory is gone after close");
    inbox.close();
    outbox.close();
    removeMailboxDir(dir);
  });
});

/**
 * A scripted mailbox worker through a 3-step run in which `breakMailbox`, at the first mailed round, makes the
 * coordinator's side of that worker's mailbox fail; every round after must come over the socket. The log's lines.
 */
async function runWithFailingMailbox(breakMailbox: (mailbox: PeerMailbox, dir: string) => () => void): Promise<{ lines: string[]; coordinator: Coordinator }> {
  const out = tempDir('coord');
  const lines: string[] = [];
  const coordinator = await Coordinator.start(config(out, 3), (line) => lines.push(line));
  const run = coordinator.run();
  const dir = makeMailboxDir('worker');
  const { peer, welcome, inbox, outbox } = await mailboxPeer(coordinator, dir, 'to-coordinator');
  const ways: string[] = [];
  let mend = () => {};
  for (;;) {
    const { weights, mailed } = await nextWeights(peer, inbox);
    ways.push(mailed ? 'mail' : 'weights');
    if (mailed && ways.indexOf('mail') === ways.length - 1) mend = breakMailbox((coordinator as unknown as { workers: WorkerGroup }).workers.get(welcome.workerId)!.mailbox!, dir);
    peer.gradients(weights.step, weights.phase, new Float32Array(weights.phase === 'generator' ? G_SIZE : D_GRADIENTS), mailed ? outbox : undefined);
    if (weights.step === 2 && weights.phase === 'generator') break;
  }
  const firstMail = ways.indexOf('mail');
  assert.ok(firstMail >= 0 && firstMail <= 1, ways.join(' '));
  assert.deepEqual(ways.slice(firstMail + 1), ways.slice(firstMail + 1).map(() => 'weights'), `after the failure: ${ways.join(' ')}`);
  assert.equal((await run).steps, 3);
  assert.equal(coordinator.status().workers[0].frames, 'websocket');
  assert.equal((await coordinator.metrics.mailboxWorkers.get()).values[0].value, 0);
  await coordinator.close();
  mend();
  inbox.close();
  outbox.close();
  removeMailboxDir(dir);
  fs.rmSync(out, { recursive: true, force: true });
  return { lines, coordinator };
}

test('when its mailbox fails, the coordinator says so and sends that worker its weights over the socket', { timeout: 30_000 }, async () => {
  const { lines } = await runWithFailingMailbox((mailbox) => {
    // As a full /dev/shm would: the coordinator's next write into this worker's file fails.
    mailbox.outbox.close();
    return () => {};
  });
  assert.ok(lines.some((l) => /w\d+: its mailbox failed \(.*\); its frames go over the WebSocket from now on/.test(l)), lines.join('\n'));
});

test("when the coordinator's own read of a worker's mailbox fails, that is no offence of the worker's: the round is asked again over the socket", { timeout: 30_000 }, async () => {
  const { lines, coordinator } = await runWithFailingMailbox((mailbox, dir) => {
    // As an I/O error would: the coordinator's descriptor for the worker's file now fails every read (EISDIR).
    const fd = fs.openSync(dir, 'r');
    Object.assign(mailbox.inbox!, { file: { open: true, number: fd, close() {} } });
    return () => fs.closeSync(fd);
  });
  assert.ok(lines.some((l) => /w\d+: its mailbox failed \(reading the mailbox failed: EISDIR.*\); its frames go over the WebSocket from now on/.test(l)), lines.join('\n'));
  assert.ok(lines.some((l) => /no worker answered the \w+ round of step \d; asking again/.test(l)), lines.join('\n'));
  assert.ok(!lines.some((l) => /rejected a message/.test(l)), lines.join('\n'));
  assert.deepEqual((await coordinator.metrics.rejected.get()).values.filter((v) => v.value > 0), []);
});

test('a worker whose hello comes while the coordinator closes (connected just before) is told to stop, as the others are, not welcomed and cut off', async () => {
  const out = tempDir('coord');
  const lines: string[] = [];
  const coordinator = await Coordinator.start(config(out, 5), (line) => lines.push(line));
  const url = `ws://127.0.0.1:${coordinator.port}`;
  const joined = new ScriptedPeer(url, false);
  await joined.open();
  joined.hello();
  assert.equal((await joined.next()).type, 'welcome');
  const late = new ScriptedPeer(url, false);
  await late.open();
  const closing = coordinator.close('SIGTERM received');
  // The joined peer has been told to stop; it has not left, so the coordinator still waits (up to 5 s).
  assert.equal((await joined.next()).type, 'stop');
  late.hello();
  const told = await late.next();
  assert.ok(told.type === 'stop' && told.reason === 'SIGTERM received' && told.resumable === true, JSON.stringify(told));
  assert.equal(await late.closed, 1000);
  joined.ws.close();
  await closing;
  assert.ok(lines.some((l) => /told \S+ \("scripted" pid \d+, backend "none"\) to stop: SIGTERM received$/.test(l)), lines.join('\n'));
  assert.ok(!lines.some((l) => /w2 joined/.test(l)), lines.join('\n'));
  fs.rmSync(out, { recursive: true, force: true });
});

test('a round asked again while its mailed request may be unread goes over the socket: the file under that notice is not rewritten', async () => {
  const out = tempDir('coord');
  const coordinator = await Coordinator.start(config(out, 3), () => {});
  const run = coordinator.run();
  const dir = makeMailboxDir('worker');
  const { peer, inbox, outbox } = await mailboxPeer(coordinator, dir, 'to-coordinator');
  // Rounds answered until one comes by mail (the first may come over the socket, before the confirmation).
  let notice: Mail | null = null;
  while (!notice) {
    const m = await peer.next();
    if (m.type === 'mail') notice = m;
    else if (m.type === 'weights') peer.gradients(m.step, m.phase, new Float32Array(m.phase === 'generator' ? G_SIZE : D_GRADIENTS), undefined);
  }
  // Before reading it, an offence: the peer loses its answer, the round has none and is asked again.
  peer.send(Buffer.from([0xc1]));
  let again: CoordinatorMessage;
  do again = await peer.next();
  while (again.type === 'error');
  assert.equal(again.type, 'weights', JSON.stringify(again.type));
  const unread = decodeCoordinatorMessage(Buffer.from(inbox.collect(notice.bytes, 1 << 20)));
  assert.ok(unread.type === 'weights' && again.type === 'weights' && unread.step === again.step && unread.phase === again.phase, 'the first notice still reads its own frame');
  coordinator.requestStop('test over');
  peer.ws.close();
  await run;
  await coordinator.close();
  inbox.close();
  outbox.close();
  removeMailboxDir(dir);
  fs.rmSync(out, { recursive: true, force: true });
});

test("a peer's second mail in an open round cannot change the gradients already accepted from it", async () => {
  const out = tempDir('coord');
  const coordinator = await Coordinator.start({ ...config(out, 3), startWorkers: 2 }, () => {});
  const run = coordinator.run();
  const dir = makeMailboxDir('worker');
  const peers = await Promise.all(
    ['a', 'b'].map(async (name) => {
      const { peer, welcome, inbox, outbox } = await mailboxPeer(coordinator, dir, name);
      return { peer, inbox, outbox, id: welcome.workerId };
    }),
  );
  const openRound = () => (coordinator as unknown as { round: { isAwaiting(id: string): boolean } | null }).round;
  // Every gradient is zero, so Adam never moves D: any change is the second mail leaking in.
  let initialD: Float32Array | null = null;
  let doubled = 0;
  for (let round = 0; round < 6; round++) {
    const asked = await Promise.all(peers.map(({ peer, inbox }) => nextWeights(peer, inbox)));
    for (const { weights } of asked) {
      if (weights.discriminator) {
        initialD ??= Float32Array.from(weights.discriminator);
        assert.deepEqual(weights.discriminator, initialD, `D after round ${round}`);
      }
    }
    const { step, phase } = asked[0].weights;
    const size = phase === 'generator' ? G_SIZE : D_GRADIENTS;
    const [a, b] = peers;
    a.peer.gradients(step, phase, new Float32Array(size), asked[0].mailed ? a.outbox : undefined);
    // Twice: a third offence would cost a its connection.
    if (asked[0].mailed && asked[1].mailed && doubled < 2) {
      // While the round still awaits b, once a's first frame is read and accepted: a second one.
      while (openRound()?.isAwaiting(a.id)) await new Promise((r) => setTimeout(r, 1));
      a.peer.gradients(step, phase, new Float32Array(size).fill(0.25), a.outbox);
      const refused = await a.peer.next();
      assert.ok(refused.type === 'error' && refused.code === 'PROTOCOL_WRONG_STEP', JSON.stringify(refused));
      doubled++;
    }
    b.peer.gradients(step, phase, new Float32Array(size), asked[1].mailed ? b.outbox : undefined);
  }
  assert.equal(doubled, 2, 'rounds with both peers on mail');
  const summary = await run;
  assert.equal(summary.steps, 3);
  await coordinator.close();
  for (const { inbox, outbox } of peers) {
    inbox.close();
    outbox.close();
  }
  removeMailboxDir(dir);
  fs.rmSync(out, { recursive: true, force: true });
});

describe('coordinator disconnects bad peers', () => {
  let out: string;
  let coordinator: Coordinator;
  const lines: string[] = [];

  before(async () => {
    out = tempDir('coord');
    coordinator = await Coordinator.start(config(out, 1), (line) => lines.push(line));
  });
  after(async () => {
    coordinator.requestStop('test over');
    await coordinator.close();
    fs.rmSync(out, { recursive: true, force: true });
  });

  test('garbage before hello closes the socket at once, counted every time but logged once a minute per address; a frame built to exhaust the heap is garbage too', async () => {
    const logged = lines.length;
    const badFrames = async () => (await coordinator.metrics.rejected.get()).values.find((v) => v.labels.reason === 'bad_frame')!.value;
    const before = await badFrames();
    const garbage = [Buffer.from('not msgpack at all'), recordExtensionBomb(50), ...Array.from({ length: 20 }, () => Buffer.from([0xc1]))];
    for (const frame of garbage) {
      const peer = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
      await peer.open();
      peer.send(frame);
      const refused = await peer.next();
      assert.ok(refused.type === 'error' && refused.code === 'PROTOCOL_BAD_FRAME', JSON.stringify(refused));
      assert.equal(await peer.closed, 1008);
    }
    assert.equal((await badFrames()) - before, garbage.length);
    // Any local process can open connections at will: one line for all of them, not one each.
    const said = lines.slice(logged).filter((l) => /rejected a message from an unidentified peer at 127\.0\.0\.1:\d+ \(bad_frame\)/.test(l));
    assert.equal(said.length, 1, lines.slice(logged).join('\n'));
    assert.equal((await joinedPeer(coordinator)).welcome.type, 'welcome', 'the coordinator still admits workers');
  });

  test("an older ganfleet's worker is refused in its own protocol version, which it reads, told to upgrade", async () => {
    const older = PROTOCOL_VERSION - 1;
    const ws = new WebSocket(`ws://127.0.0.1:${coordinator.port}`);
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    const reply = new Promise<Buffer>((resolve) => ws.once('message', (d: Buffer) => resolve(d)));
    const closed = new Promise<number>((resolve) => ws.once('close', resolve));
    ws.send(pack({ v: older, type: 'hello', name: 'old' }));
    const refusal = unpack(await reply) as Record<string, unknown>;
    assert.equal(refusal.v, older);
    assert.equal(refusal.type, 'error');
    assert.equal(refusal.code, 'PROTOCOL_BAD_VERSION');
    assert.match(String(refusal.message), new RegExp(`older ganfleet than the coordinator \\(protocol version ${older}, the coordinator's ${PROTOCOL_VERSION}\\): upgrade the worker`));
    assert.equal(await closed, 1008);
  });

  test('connections that never say hello are closed after the hello timeout (10 s; 1 s here), logged once a minute per address', async (t) => {
    const logged = lines.length;
    assert.equal(HELLO_TIMING.timeoutMs, 10_000);
    HELLO_TIMING.timeoutMs = 1_000;
    t.after(() => void (HELLO_TIMING.timeoutMs = 10_000));
    // Before the connections: the coordinator starts each one's timer when it accepts it, before the peer sees it open.
    const opened = Date.now();
    const silent = await Promise.all(
      [0, 1, 2].map(async () => {
        const peer = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
        await peer.open();
        return peer;
      }),
    );
    // terminate(): no close frame, since a peer that says nothing may read nothing either.
    assert.deepEqual(await Promise.all(silent.map((p) => p.closed)), [1006, 1006, 1006]);
    assert.ok(Date.now() - opened > 900, `closed after ${Date.now() - opened} ms`);
    const said = lines.slice(logged).filter((l) => /^closing 127\.0\.0\.1:\d+: no hello within 1 s$/.test(l));
    assert.equal(said.length, 1, lines.slice(logged).join('\n'));
  });

  test('a hello that came while the coordinator was frozen past the hello timeout is read before the timeout judges: welcomed', async (t) => {
    HELLO_TIMING.timeoutMs = 1_000;
    t.after(() => void (HELLO_TIMING.timeoutMs = 10_000));
    const peer = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
    await peer.open();
    peer.hello();
    freezeThisProcess(1_500);
    const cut = peer.closed.then((code) => `closed (${code})`);
    assert.equal(await Promise.race([peer.next().then((m) => m.type), cut]), 'welcome');
    peer.ws.close(1000);
  });

  test('broken WebSocket framing before hello closes the socket, logged once a minute per address', async () => {
    const logged = lines.length;
    for (let i = 0; i < 3; i++) {
      const peer = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
      await peer.open();
      // A client's frame must be masked (RFC 6455 5.1): an unmasked one is a protocol error the server's ws reports.
      (peer.ws as unknown as { _socket: { write(b: Buffer): void } })._socket.write(Buffer.from([0x82, 0x01, 0x00]));
      assert.equal(await peer.closed, 1002);
    }
    const said = lines.slice(logged).filter((l) => /^socket 127\.0\.0\.1:\d+: .*MASK must be set/.test(l));
    assert.equal(said.length, 1, lines.slice(logged).join('\n'));
  });

  test("a peer's name, backend and reported error are cut to 160 characters in log lines (the protocol allows 1,024)", async () => {
    const logged = lines.length;
    const peer = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
    await peer.open();
    const long = (c: string) => c.repeat(1024);
    peer.send(encode(message<Hello>({ type: 'hello', name: long('n'), backend: long('b'), pid: 1, hostname: 'test' })));
    const welcome = await peer.next();
    assert.equal(welcome.type, 'welcome');
    peer.send(encode(errorMessage(long('C'), long('m'))));
    for (let i = 0; i < 200 && !lines.slice(logged).some((l) => l.includes(' reported ')); i++) await new Promise((r) => setTimeout(r, 5));
    const said = lines.slice(logged).filter((l) => l.includes(' joined from ') || l.includes(' reported '));
    assert.equal(said.length, 2, lines.slice(logged).join('\n'));
    assert.ok(said[0].includes(`("${'n'.repeat(159)}…" pid 1, backend "${'b'.repeat(159)}…")`), said[0]);
    assert.ok(said[1].endsWith(`reported "${'C'.repeat(159)}…": "${'m'.repeat(159)}…"`), said[1]);
    peer.ws.close();
  });

  test('a peer that keeps reporting errors is dropped at the third, so that a connection cannot flood the log with them', async () => {
    const peer = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
    await peer.open();
    peer.send(encode(message<Hello>({ type: 'hello', name: 'error-flood', backend: 'wasm', pid: 1, hostname: 'test' })));
    assert.equal((await peer.next()).type, 'welcome');
    for (let i = 0; i < 3; i++) peer.send(encode(errorMessage('FLOOD', `report ${i}`)));
    const code = await Promise.race([peer.closed, new Promise<string>((r) => setTimeout(() => r('still open after 10 s'), 10_000).unref())]);
    assert.equal(code, 4000);
    const told: CoordinatorMessage[] = [];
    for (let m = peer.take(); m; m = peer.take()) told.push(m);
    assert.deepEqual(told.filter((m) => m.type === 'error').map((m) => [m.code, m.message]), [['COORDINATOR_DROPPED', 'too many errors']]);
  });

  test('mail before a confirmed mailbox, and a mailbox without the nonce, are rejected', async () => {
    const { peer, welcome } = await joinedPeer(coordinator);
    assert.ok(welcome.mailbox);
    // Numbers, not prom-client's value objects, which the counter goes on updating.
    const counts = async () => Object.fromEntries((await coordinator.metrics.rejected.get()).values.map((v) => [v.labels.reason, v.value]));
    const before = await counts();
    peer.send(encode(message<Mail>({ type: 'mail', bytes: 100 })));
    const refusedMail = await peer.next();
    assert.ok(refusedMail.type === 'error' && refusedMail.code === 'PROTOCOL_UNEXPECTED', JSON.stringify(refusedMail));
    // A file in a worker's mailbox directory, but without this connection's nonce.
    const dir = makeMailboxDir('worker');
    const planted = path.join(dir, 'to-coordinator');
    fs.writeFileSync(planted, 'not the nonce');
    peer.send(encode(message<MailboxReady>({ type: 'mailbox', path: planted })));
    const refusedBox = await peer.next();
    // Why stays in the coordinator's log: the peer learns nothing about paths of its choosing.
    assert.ok(refusedBox.type === 'error' && refusedBox.code === 'PROTOCOL_BAD_FIELD' && !/nonce|planted|to-coordinator/.test(refusedBox.message), JSON.stringify(refusedBox));
    assert.ok(lines.some((l) => l.includes(`${welcome.workerId}: its mailbox cannot be used here`) && l.includes("does not hold this connection's nonce")), lines.join('\n'));
    removeMailboxDir(dir);
    // The offer is withdrawn with its file: a second try is a protocol violation.
    assert.ok(!fs.existsSync(welcome.mailbox), 'a withdrawn offer takes its file with it');
    peer.send(encode(message<MailboxReady>({ type: 'mailbox', path: planted })));
    const again = await peer.next();
    assert.ok(again.type === 'error' && again.code === 'PROTOCOL_UNEXPECTED', JSON.stringify(again));
    const after = await counts();
    assert.equal(after.unexpected - before.unexpected, 2);
    assert.equal(after.bad_field - before.bad_field, 1);
    assert.equal(coordinator.status().workers.find((w) => w.id === welcome.workerId)?.frames, 'websocket');
    peer.ws.close();
    await peer.closed;
  });

  test('a second mailbox message after the first was taken is rejected: the inbox in use is not opened again', async () => {
    const dir = makeMailboxDir('worker');
    const { peer, welcome, inbox, outbox } = await mailboxPeer(coordinator, dir, 'to-coordinator');
    const frames = () => coordinator.status().workers.find((w) => w.id === welcome.workerId)?.frames;
    for (let i = 0; i < 1000 && frames() !== 'shared memory'; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(frames(), 'shared memory');
    peer.send(encode(message<MailboxReady>({ type: 'mailbox', path: outbox.path })));
    const again = await Promise.race([peer.next(), new Promise<null>((r) => setTimeout(() => r(null), 5000))]);
    assert.ok(again?.type === 'error' && again.code === 'PROTOCOL_UNEXPECTED' && /mailbox without an open offer/.test(again.message), JSON.stringify(again));
    peer.ws.close();
    await peer.closed;
    inbox.close();
    outbox.close();
    removeMailboxDir(dir);
  });

  test("a peer that leaves takes its mailbox file with it", async () => {
    const { peer, welcome } = await joinedPeer(coordinator);
    assert.ok(welcome.mailbox);
    assert.ok(fs.existsSync(welcome.mailbox));
    peer.ws.close();
    await peer.closed;
    for (let i = 0; i < 200 && fs.existsSync(welcome.mailbox); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(!fs.existsSync(welcome.mailbox), "the departed peer's file is removed");
  });

  test('a welcomed peer is dropped after repeated offences', async () => {
    const badFrames = async () => (await coordinator.metrics.rejected.get()).values.find((v) => v.labels.reason === 'bad_frame')!.value;
    const before = await badFrames();
    const peer = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
    await peer.open();
    peer.hello();
    assert.equal((await peer.next()).type, 'welcome');
    for (let i = 0; i < 3; i++) peer.send(Buffer.from([0x92, 0x01])); // an array cut short
    assert.equal(await peer.closed, 1008);
    assert.equal((await badFrames()) - before, 3);
  });

  test("a peer dropped for its offences leaves once: its connection's close after the drop removes it no second time (no second 'left' line, no second re-plan)", async () => {
    const logged = lines.length;
    const { peer, workerId } = await joinedPeer(coordinator);
    for (let i = 0; i < 3; i++) peer.send(Buffer.from([0x92, 0x01])); // an array cut short
    assert.equal(await peer.closed, 1008);
    // The coordinator's side of the connection closes too, just after: its close event comes then.
    await new Promise((r) => setTimeout(r, 300));
    const left = lines.slice(logged).filter((l) => l.startsWith(`${workerId} left `));
    assert.deepEqual(left.map((l) => l.replace(/; \d+ connected$/, '')), [`${workerId} left (3 rejected messages)`], lines.slice(logged).join('\n'));
  });
});

/** A checkpoint at `step` of a fresh MLP in `dir`/checkpoints, as a run that stopped there leaves it. */
function plantCheckpoint(dir: string, step: number, more: Partial<Checkpoint> = {}): void {
  const p = createModel('mlp').init(new Rng(1));
  const adam = (n: number) => new Adam(n, KERAS_ADAM_DEFAULTS).state();
  writeCheckpoint(path.join(dir, 'checkpoints'), {
    step, imagesTotal: step * 128, config: { arch: 'mlp' }, seedRng: new Rng(2).state(), nextWorker: 1, shards: [],
    generator: p.generator, discriminator: p.discriminator, adamGenerator: adam(p.generator.length), adamDiscriminator: adam(p.discriminator.length),
    ...more,
  }, 2);
}

/** A scripted peer joins and answers both rounds of `step`, with zero gradients. */
async function answerOneStep(coordinator: Coordinator, step: number): Promise<void> {
  const { peer } = await joinedPeer(coordinator);
  await weightsOrDrop(peer);
  peer.gradients(step, 'discriminator', new Float32Array(D_GRADIENTS));
  await weightsOrDrop(peer);
  peer.gradients(step, 'generator', new Float32Array(G_SIZE));
}

/** Another coordinator's lease on `out` in place of this one's. */
function takeLeaseOver(out: string): void {
  const theirs = { pid: 1, hostname: 'another-host', processTable: null, token: 'theirs', since: '2026-11-29T00:00:00.000Z' };
  fs.writeFileSync(path.join(out, LEASE_FILE), JSON.stringify(theirs));
}

/**
 * As when this run froze (a hung fsync, a paused VM) past the lease's stale time and another coordinator took
 * --out over: the takeover lands when a file whose path matches `opened` is opened. Returns the undo.
 */
function takeLeaseOverWhenOpening(opened: RegExp | ((file: string) => boolean), out: string): () => void {
  const openSync = fs.openSync;
  const matches = typeof opened === 'function' ? opened : (file: string) => opened.test(file);
  fs.openSync = ((file: fs.PathLike, ...rest: unknown[]) => {
    if (matches(String(file))) takeLeaseOver(out);
    return (openSync as (...a: unknown[]) => number)(file, ...rest);
  }) as typeof fs.openSync;
  return () => {
    fs.openSync = openSync;
  };
}

/** A scripted peer, welcomed by `coordinator`. */
async function joinedPeer(coordinator: Coordinator, closeOnStop = true, pid?: number): Promise<{ peer: ScriptedPeer; workerId: string; welcome: Welcome }> {
  const peer = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`, closeOnStop);
  await peer.open();
  peer.hello(pid);
  const welcome = await peer.next();
  assert.ok(welcome.type === 'welcome', JSON.stringify(welcome));
  return { peer, workerId: welcome.workerId, welcome };
}

/** The next weights, past shards and `skipped` (collected); fails at once if the coordinator drops the peer instead. */
async function weightsOrDrop(peer: ScriptedPeer, skipped: CoordinatorMessage[] = []): Promise<Weights> {
  const dropped = peer.closed.then((code) => {
    throw new Error(`the coordinator closed the connection (${code})`);
  });
  for (;;) {
    const m = await Promise.race([peer.next(), dropped]);
    if (m.type === 'weights') return m;
    skipped.push(m);
  }
}

/** Blocks this process's event loop, the coordinator's included, as SIGSTOP or a frozen VM would. */
function freezeThisProcess(ms: number): void {
  for (const until = performance.now() + ms; performance.now() < until; );
}

/** Step `step` answered with zero gradients: each round by every peer in turn, as it is asked. */
/** Once `run` has ended, and `ms` after: no more of what `found` lists than when the run ended. */
async function assertNoneAfter(run: Promise<unknown>, found: () => string[], ms: number, lines: string[]): Promise<void> {
  await run;
  const count = found().length;
  await new Promise((r) => setTimeout(r, ms));
  assert.equal(found().length, count, lines.join('\n'));
}

async function answerStepWithZeros(step: number, ...peers: ScriptedPeer[]): Promise<void> {
  for (const phase of ['discriminator', 'generator'] as const) {
    for (const peer of peers) {
      await weightsOrDrop(peer);
      peer.gradients(step, phase, new Float32Array(phase === 'generator' ? G_SIZE : D_GRADIENTS));
    }
  }
}

/**
 * A coordinator training one step with one worker, its log lines (with when
 * each was logged), and a scripted peer connected to it whose raw socket the
 * test may pause, to play a worker that does not read.
 */
async function coordinatorAndRawPeer(out: string, overrides: Partial<CoordinatorConfig>, peerOptions?: WebSocket.ClientOptions) {
  const lines: { at: number; line: string }[] = [];
  const coordinator = await Coordinator.start({ ...config(out, 1), ...overrides }, (line) => lines.push({ at: Date.now(), line }));
  const run = coordinator.run();
  const peer = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`, true, peerOptions);
  await peer.open();
  const raw = (peer.ws as unknown as { _socket: import('node:net').Socket })._socket;
  /** The first log line that matches, once there is one. */
  const logged = async (re: RegExp) => {
    for (;;) {
      const found = lines.find((l) => re.test(l.line));
      if (found) return found;
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { coordinator, run, peer, raw, lines, logged };
}

describe('a finished run tells the workers that left it without hearing it is over (--linger)', () => {
  let out: string;
  let dataDir: string;
  before(() => {
    out = tempDir('coord');
    dataDir = blankMnistDir(256);
  });
  after(() => {
    fs.rmSync(out, { recursive: true, force: true });
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  const zeros = (phase: Phase) => new Float32Array(phase === 'generator' ? G_SIZE : D_GRADIENTS);

  /**
   * A 2-step run in which worker process 101 never answers and is dropped, and process 103 joins and leaves on its
   * own (a close with 1000, as a worker leaving does); process 102 trains it to the end.
   */
  async function finishedWithADroppedWorker(name: string, lingerSeconds: number): Promise<{ coordinator: Coordinator; lines: string[] }> {
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(path.join(out, name), 2), dataDir, startWorkers: 2, roundTimeoutSeconds: 1, lingerSeconds }, (l) => lines.push(l));
    const run = coordinator.run();
    const silent = await joinedPeer(coordinator, true, 101);
    const trainer = await joinedPeer(coordinator, true, 102);
    await weightsOrDrop(trainer.peer);
    trainer.peer.gradients(0, 'discriminator', zeros('discriminator'));
    assert.equal(await silent.peer.closed, 4000);
    const leaving = await joinedPeer(coordinator, true, 103);
    leaving.peer.ws.close(1000, 'worker leaving');
    for (let round = 1; round < 4; round++) {
      const w = await weightsOrDrop(trainer.peer);
      trainer.peer.gradients(w.step, w.phase, zeros(w.phase));
    }
    assert.equal((await run).steps, 2, lines.join('\n'));
    assert.ok(lines.some((l) => l.startsWith(`${silent.workerId} left (no discriminator gradients`)), lines.join('\n'));
    assert.ok(lines.some((l) => l.startsWith(`${leaving.workerId} left (disconnected)`)), lines.join('\n'));
    return { coordinator, lines };
  }

  /** Resolves once `lines` has a line matching `pattern`. */
  async function logged(lines: string[], pattern: RegExp): Promise<void> {
    for (let i = 0; i < 1000 && !lines.some((l) => pattern.test(l)); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(lines.some((l) => pattern.test(l)), `${pattern} in\n${lines.join('\n')}`);
  }

  test('a worker dropped before the end hears, when it reconnects, that the run is over, and close() ends then; one that left on its own is not waited for', async () => {
    const { coordinator, lines } = await finishedWithADroppedWorker('dropped', 60);
    let closed = false;
    const closing = coordinator.close().then(() => (closed = true));
    await logged(lines, /^waiting up to 60 s \(--linger; a signal ends this\) to tell workers that reconnect that the run is over: 1 worker left without hearing it \(w1 "scripted"\)$/);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(closed, false, 'close() waits for the dropped worker');
    const back = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
    await back.open();
    back.hello(101);
    const stop = await back.next();
    assert.ok(stop.type === 'stop' && stop.reason === 'finished 2 steps' && !stop.resumable, JSON.stringify(stop));
    await closing;
    assert.ok(lines.includes('every worker that left has been told the run is over'), lines.join('\n'));
    // The log says what the worker was told (that the run is over), not that the coordinator is closing.
    assert.ok(lines.some((l) => /^told \S+ \("scripted" pid 101, backend "none"\) to stop: finished 2 steps$/.test(l)), lines.join('\n'));
  });

  test('the --linger lines name ten of the workers that left without hearing the end, and count the rest', async () => {
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'many-untold'), 1), dataDir, lingerSeconds: 1 }, (l) => lines.push(l));
    const run = coordinator.run();
    // Twelve worker processes (pods replaced over a long run, say) whose links broke: each is waited for at the end.
    for (let pid = 201; pid <= 212; pid++) {
      const { peer, workerId } = await joinedPeer(coordinator, true, pid);
      peer.ws.terminate();
      await logged(lines, new RegExp(`^${workerId} left `));
    }
    const trainer = await joinedPeer(coordinator, true, 102);
    for (const phase of ['discriminator', 'generator'] as const) {
      const w = await weightsOrDrop(trainer.peer);
      trainer.peer.gradients(w.step, phase, zeros(phase));
    }
    assert.equal((await run).steps, 1, lines.join('\n'));
    await coordinator.close();
    const named = Array.from({ length: 10 }, (_, i) => `w${i + 1} "scripted"`).join(', ');
    assert.ok(lines.includes(`waiting up to 1 s (--linger; a signal ends this) to tell workers that reconnect that the run is over: 12 workers left without hearing it (${named} and 2 more)`), lines.join('\n'));
    assert.ok(lines.includes(`not back within --linger 1 s: ${named} and 2 more (gone, or still trying: a worker retries until its --give-up-after)`), lines.join('\n'));
  });

  test('a stop during the last step, with a worker dropped before it: the run is finished, the signal ends the wait at once, and the log names the worker left untold', async () => {
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'stopped-last-step'), 2), dataDir, startWorkers: 2, roundTimeoutSeconds: 1, lingerSeconds: 60 }, (l) => lines.push(l));
    const run = coordinator.run();
    const silent = await joinedPeer(coordinator, true, 101);
    const trainer = await joinedPeer(coordinator, true, 102);
    for (let round = 0; round < 4; round++) {
      const w = await weightsOrDrop(trainer.peer);
      // The stop comes during the last step (a SIGTERM while its G round is out): that step finishes.
      if (round === 3) coordinator.requestStop('SIGTERM received');
      trainer.peer.gradients(w.step, w.phase, zeros(w.phase));
      if (round === 0) assert.equal(await silent.peer.closed, 4000);
    }
    const summary = await run;
    assert.equal(summary.stopReason, 'finished 2 steps', lines.join('\n'));
    await coordinator.close();
    assert.ok(lines.includes('waiting up to 60 s (--linger; a signal ends this) to tell workers that reconnect that the run is over: 1 worker left without hearing it (w1 "scripted")'), lines.join('\n'));
    assert.ok(lines.includes('stopped waiting for late workers: SIGTERM received'), lines.join('\n'));
  });

  test('a signal while a finished run waits for its late workers ends the wait; --linger 0 does not wait', async () => {
    const { coordinator, lines } = await finishedWithADroppedWorker('signalled', 60);
    const closing = coordinator.close();
    await logged(lines, /^waiting up to 60 s/);
    coordinator.requestStop('SIGTERM received');
    await closing;
    assert.ok(lines.includes('stopped waiting for late workers: SIGTERM received'), lines.join('\n'));
    const off = await finishedWithADroppedWorker('no-linger', 0);
    await off.coordinator.close();
    assert.ok(!off.lines.some((l) => /--linger/.test(l)), off.lines.join('\n'));
  });

  /** A process (`pid`) says hello to a full coordinator, and is refused as one too many. */
  async function refusedAsFull(coordinator: Coordinator, pid: number): Promise<void> {
    const peer = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
    await peer.open();
    peer.hello(pid);
    const full = await peer.next();
    assert.ok(full.type === 'error' && full.code === 'COORDINATOR_FULL', JSON.stringify(full));
  }

  /** A 2-step run in out/`name` that takes one worker (--max-workers 1) and lingers up to 60 s, started. */
  async function startedFull(name: string, more: Partial<CoordinatorConfig> = {}) {
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(path.join(out, name), 2), dataDir, maxWorkers: 1, lingerSeconds: 60, ...more }, (l) => lines.push(l));
    return { lines, coordinator, run: coordinator.run() };
  }

  /** `peer` answers every round of a 2-step run, with zeros. */
  async function answerTwoSteps(peer: ScriptedPeer): Promise<void> {
    for (;;) {
      const w = await weightsOrDrop(peer);
      peer.gradients(w.step, w.phase, zeros(w.phase));
      if (w.step === 1 && w.phase === 'generator') return;
    }
  }

  /** `trainer` answers every round of a 2-step run; then its end waits (logging `waiting`) and tells process `pid`, come back, to stop. */
  async function finishAndTellOnReturn(coordinator: Coordinator, run: Promise<TrainingSummary>, trainer: ScriptedPeer, lines: string[], pid: number, waiting: RegExp): Promise<void> {
    await answerTwoSteps(trainer);
    assert.equal((await run).steps, 2, lines.join('\n'));
    const closing = coordinator.close();
    await logged(lines, waiting);
    const back = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
    await back.open();
    back.hello(pid);
    assert.equal((await back.next()).type, 'stop');
    await closing;
    assert.ok(lines.includes('every worker that left has been told the run is over'), lines.join('\n'));
  }

  test('a dropped worker refused as one too many when it comes back is still waited for, and told at the end', async () => {
    const { lines, coordinator, run } = await startedFull('refused', { roundTimeoutSeconds: 1 });
    const silent = await joinedPeer(coordinator, true, 101);
    assert.equal(await silent.peer.closed, 4000);
    const trainer = await joinedPeer(coordinator, true, 102);
    await refusedAsFull(coordinator, 101);
    await finishAndTellOnReturn(coordinator, run, trainer.peer, lines, 101, /: 1 worker left without hearing it \(w1 "scripted"\)$/);
  });

  test('a spare refused as one too many, never admitted, is waited for and told at the end, so that it stops retrying', async () => {
    const { lines, coordinator, run } = await startedFull('spare');
    const trainer = await joinedPeer(coordinator, true, 102);
    await refusedAsFull(coordinator, 103);
    await finishAndTellOnReturn(coordinator, run, trainer.peer, lines, 103, /: 1 worker refused as one too many \(COORDINATOR_FULL\), perhaps still retrying \("scripted"\)$/);
  });

  test('a spare admitted once a place frees is one of the workers: told with them at the end, and not waited for', async () => {
    const { lines, coordinator, run } = await startedFull('spare-admitted');
    const first = await joinedPeer(coordinator, true, 102);
    await refusedAsFull(coordinator, 103);
    first.peer.ws.close(1000, 'worker leaving');
    await logged(lines, /^w1 left \(disconnected\)/);
    await answerTwoSteps((await joinedPeer(coordinator, true, 103)).peer);
    assert.equal((await run).steps, 2, lines.join('\n'));
    const t0 = performance.now();
    await Promise.race([coordinator.close(), new Promise((r) => setTimeout(r, 10_000).unref())]);
    assert.ok(performance.now() - t0 < 10_000, `close() still lingering after 10 s:\n${lines.join('\n')}`);
    assert.ok(!lines.some((l) => /--linger/.test(l)), lines.join('\n'));
  });

  test('a resumed run that fewer worker processes came back to than trained at its checkpoint waits the whole --linger for the others', async () => {
    const dir = path.join(out, 'fewer-back');
    const first = await Coordinator.start({ ...config(dir, 1), dataDir, startWorkers: 2 }, () => {});
    const firstRun = first.run();
    await answerStepWithZeros(0, (await joinedPeer(first, true, 101)).peer, (await joinedPeer(first, true, 102)).peer);
    assert.equal((await firstRun).steps, 1);
    await first.close();
    // Killed at step 1, say, and restarted: one worker is back at once; the other is still in its backoff when the
    // short rest of the run is over.
    const lines: string[] = [];
    const resumed = await Coordinator.start({ ...config(dir, 2), dataDir, resume: true, lingerSeconds: 2 }, (l) => lines.push(l));
    const resumedRun = resumed.run();
    await answerStepWithZeros(1, (await joinedPeer(resumed, true, 102)).peer);
    assert.equal((await resumedRun).steps, 2);
    const t0 = performance.now();
    await resumed.close();
    assert.ok(lines.some((l) => l.endsWith(': the run resumed from a checkpoint that 2 workers trained, and 1 came back')), lines.join('\n'));
    assert.ok(performance.now() - t0 >= 1900, 'the whole --linger');
  });

  test('a resumed run found finished, unsummarised, from a checkpoint without a count of its workers (format 1) lingers too: none came back', async () => {
    const dir = path.join(out, 'unsummarised-format-1');
    plantCheckpoint(dir, 1);
    const lines: string[] = [];
    const resumed = await Coordinator.start({ ...config(dir, 1), dataDir, resume: true, lingerSeconds: 1 }, (l) => lines.push(l));
    assert.equal((await resumed.run()).steps, 1);
    const t0 = performance.now();
    await resumed.close();
    assert.ok(lines.includes('waiting up to 1 s (--linger; a signal ends this) to tell workers that reconnect that the run is over: the run resumed from a checkpoint without a count of its workers, and 0 came back'), lines.join('\n'));
    assert.ok(performance.now() - t0 >= 900, 'the whole --linger');
  });

  test("a resumed run found finished whose summary.json is of an earlier step (killed after its last checkpoint) writes the outputs of the checkpoint's step", async () => {
    const dir = path.join(out, 'summary-of-an-earlier-step');
    plantCheckpoint(dir, 3);
    const generatorDir = path.join(dir, 'generator');
    fs.mkdirSync(generatorDir, { recursive: true });
    fs.writeFileSync(path.join(generatorDir, 'weights.bin'), 'step 2');
    fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify({ steps: 2, generator: generatorDir, ok: true }));
    const resumed = await Coordinator.start({ ...config(dir, 3), dataDir, resume: true }, () => {});
    assert.equal((await resumed.run()).steps, 3);
    await resumed.close();
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')).steps, 3);
    const weights = fs.readFileSync(path.join(generatorDir, 'weights.bin'));
    assert.ok(weights.equals(Buffer.from(createModel('mlp').init(new Rng(1)).generator.buffer)), "the generator is the checkpoint's");
  });

  test('a resumed run found finished with its summary unwritten tells whoever connects for the whole --linger: its earlier coordinator told no worker', async () => {
    const dir = path.join(out, 'unsummarised');
    const first = await Coordinator.start({ ...config(dir, 1), dataDir }, () => {});
    const firstRun = first.run();
    await answerStepWithZeros(0, (await joinedPeer(first)).peer);
    assert.equal((await firstRun).steps, 1);
    await first.close();
    // Killed after its last checkpoint, before its summary (and before it told its workers).
    fs.rmSync(path.join(dir, 'summary.json'));
    const lines: string[] = [];
    const resumed = await Coordinator.start({ ...config(dir, 1), dataDir, resume: true, lingerSeconds: 2 }, (l) => lines.push(l));
    assert.equal((await resumed.run()).steps, 1);
    const t0 = performance.now();
    const closing = resumed.close();
    await logged(lines, /^waiting up to 2 s \(--linger; a signal ends this\) to tell workers that reconnect that the run is over: the run resumed from a checkpoint that 1 worker trained, and 0 came back$/);
    const late = new ScriptedPeer(`ws://127.0.0.1:${resumed.port}`);
    await late.open();
    late.hello(104);
    assert.equal((await late.next()).type, 'stop');
    await closing;
    assert.ok(performance.now() - t0 >= 1900, 'the whole --linger: who else may come is not known');
    // Its summary is written now: a resume after it does not wait.
    const lines2: string[] = [];
    const again = await Coordinator.start({ ...config(dir, 1), dataDir, resume: true, lingerSeconds: 60 }, (l) => lines2.push(l));
    await again.run();
    await again.close();
    assert.ok(!lines2.some((l) => /--linger/.test(l)), lines2.join('\n'));
  });
});

describe('coordinator edge cases found by review', () => {
  let out: string;

  /** A coordinator of `steps` steps at `logEvery` with one joined scripted peer, its log lines collected. */
  async function loggingRun(name: string, steps: number, logEvery: number) {
    const dataDir = blankMnistDir(256);
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(path.join(out, name), steps), dataDir, logEvery }, (l) => lines.push(l));
    const run = coordinator.run();
    const { peer } = await joinedPeer(coordinator);
    const end = async () => {
      await coordinator.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    };
    return { lines, run, peer, end };
  }
  before(() => {
    out = tempDir('coord');
  });
  after(() => fs.rmSync(out, { recursive: true, force: true }));
  const zeros = (phase: Phase) => new Float32Array(phase === 'generator' ? G_SIZE : D_GRADIENTS);

  test('a stop ends a step whose round went unanswered instead of asking it again of a worker that joined meanwhile: rounds that outlast --heartbeat (a DCGAN on the cpu backend) held a SIGTERM for an hour', async () => {
    const dataDir = blankMnistDir(256);
    const dir = path.join(out, 'stop-unanswered');
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(dir, 10), dataDir, roundTimeoutSeconds: 1, checkpointEvery: 1 }, (l) => lines.push(l));
    const run = coordinator.run();
    const first = (await joinedPeer(coordinator)).peer;
    for (const phase of ['discriminator', 'generator'] as const) {
      await weightsOrDrop(first);
      first.gradients(0, phase, zeros(phase));
    }
    // Step 2's D round: the first worker never answers, and is dropped at --round-timeout.
    await weightsOrDrop(first);
    coordinator.requestStop('SIGTERM received');
    const second = (await joinedPeer(coordinator)).peer;
    const summary = await run;
    await coordinator.close();
    const log = lines.join('\n');
    assert.doesNotMatch(log, /asking again/);
    assert.equal(summary.ok, true, log);
    assert.equal(summary.steps, 1);
    assert.equal(summary.stopReason, 'SIGTERM received');
    assert.match(path.basename(summary.checkpoint ?? ''), /ckpt-000000001\.bin$/);
    await second.closed; // told to stop, as a worker at any stop is
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('weights that diverge stop the run as a failure, with the reason, even after a signal; no step of them is applied and none of their outputs written; it is not asked again for ever', async () => {
    const dataDir = blankMnistDir(256);
    const dir = path.join(out, 'diverged');
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(dir, 10), dataDir, startWorkers: 2, checkpointEvery: 1, sampleEvery: 1, adam: { ...KERAS_ADAM_DEFAULTS, learningRate: 1e30 } }, (l) => lines.push(l));
    const run = coordinator.run();
    const peers = [(await joinedPeer(coordinator)).peer, (await joinedPeer(coordinator)).peer];
    const answer = async (step: number, phase: Phase, values: (i: number) => Float32Array) => {
      for (const [i, peer] of peers.entries()) {
        await weightsOrDrop(peer);
        peer.gradients(step, phase, values(i));
      }
    };
    // Step 1 with zero gradients (Adam's first update is then 0): healthy, and checkpointed.
    for (const phase of ['discriminator', 'generator'] as const) await answer(0, phase, () => zeros(phase));
    // Step 2: Adam turns a small D gradient into a step of --lr, 1e30, on every weight of D; from that D, G's gradients are NaN.
    await answer(1, 'discriminator', () => new Float32Array(D_GRADIENTS).fill(1e-3));
    // A signal first: the divergence still decides how the run ends.
    coordinator.requestStop('SIGTERM received');
    // One worker's NaN; the other's zeros are accepted, but the step is not applied.
    await answer(1, 'generator', (i) => {
      const g = zeros('generator');
      if (i === 0) g[0] = NaN;
      return g;
    });
    const summary = await run;
    await coordinator.close();
    const log = lines.join('\n');
    assert.equal(summary.ok, false);
    assert.match(summary.stopReason, /^training diverged at step 2: the coordinator's own generator gradients from the current weights are refused too \(gradients\.gradients\[\d+\] is (NaN|-?Infinity)\); resume from a checkpoint before step 2 \(the newest is \S+ckpt-000000001\.bin\) with a lower --lr$/);
    assert.equal(lines.filter((l) => l.startsWith('rejected a message')).length, 1, log);
    assert.doesNotMatch(log, /asking again/);
    assert.match(log, /step 2 could not finish; its discriminator update was rolled back, and the run stays at step 1/);
    // Only step 1's checkpoint and grid; no generator.
    assert.equal(summary.steps, 1);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'checkpoints')).filter((f) => f.endsWith('.bin')), ['ckpt-000000001.bin']);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'samples')), ['step-000001.png']);
    assert.equal(summary.generator, null);
    assert.ok(!fs.existsSync(path.join(dir, 'generator')));
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')).ok, false);
    // A resume at that step with nothing to train writes what the diverged run did not: the checkpoint's generator.
    const resumed = await Coordinator.start({ ...config(dir, 1), dataDir, resume: true }, () => {});
    const again = await resumed.run();
    await resumed.close();
    assert.equal(again.ok, true);
    assert.ok(fs.existsSync(path.join(dir, 'generator', 'model.json')));
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')).generator, path.join(dir, 'generator'));
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("the coordinator's own answer is refused as a worker's is when it is finite but out of range (a loss past MAX_LOSS), not only when it is NaN", () => {
    const model = createModel('mlp');
    const params = model.init(new Rng(1));
    const train = loadMnist('test');
    assert.equal(ownAnswerProblem(model, params, train, { batchSize: 128, discriminatorUpdates: 2 }, 1, 0, 'discriminator'), null);
    // D's output bias at 1e13: every logit is about as large, so BCE on the fakes is too, while its gradients stay finite.
    const bias = model.discriminatorLayout.entries.find((e) => e.name === 'd/dense2/bias')!;
    params.discriminator[bias.offset] = 1e13;
    assert.match(ownAnswerProblem(model, params, train, { batchSize: 128, discriminatorUpdates: 2 }, 1, 0, 'discriminator') ?? 'accepted', /^loss \S+ is outside 0\.\.1000000000000$/);
  });

  test('an answer refused as out of range (finite: a loss past MAX_LOSS), not only a NaN one, has the coordinator check its own answer for divergence', async () => {
    const dataDir = blankMnistDir(256);
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'out-of-range-checked'), 1), dataDir }, () => {});
    // Where training diverged, every answer is refused so: unchecked, the round would be asked again for ever.
    const checked: string[] = [];
    const spied = coordinator as unknown as { checkDivergence(round: { step: number; phase: Phase }): void };
    const check = spied.checkDivergence.bind(coordinator);
    spied.checkDivergence = (round) => {
      checked.push(`${round.step} ${round.phase}`);
      check(round);
    };
    const run = coordinator.run();
    const { peer } = await joinedPeer(coordinator);
    await weightsOrDrop(peer);
    peer.gradients(0, 'discriminator', zeros('discriminator'), undefined, { loss: 2e12 });
    // Refused; the coordinator's own answer passes (the weights are healthy), so the round is asked again.
    await weightsOrDrop(peer);
    assert.deepEqual(checked, ['0 discriminator']);
    peer.gradients(0, 'discriminator', zeros('discriminator'));
    await weightsOrDrop(peer);
    peer.gradients(0, 'generator', zeros('generator'));
    const summary = await run;
    assert.deepEqual([summary.ok, summary.steps], [true, 1]);
    await coordinator.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("the status page's history keeps at most its capacity of points, spread over the whole run: every 2nd step once full, then every 4th, …", () => {
    const history = new History(4);
    for (let step = 1; step <= 16; step++) history.add({ step, dLoss: step / 10, gLoss: 0, dReal: 0, dFake: 0 });
    const { stride, points } = history.toJSON();
    assert.equal(stride, 4);
    assert.deepEqual(points.map((p) => [p.step, p.dLoss]), [[4, 0.4], [8, 0.8], [12, 1.2], [16, 1.6]]);
  });

  /** A 10-step run in out/`name` on 256 blank images at Adam's learning rate `lr`, with one scripted peer joined. */
  async function runAtLearningRate(name: string, lr: number) {
    const dataDir = blankMnistDir(256);
    const dir = path.join(out, name);
    const coordinator = await Coordinator.start({ ...config(dir, 10), dataDir, adam: { ...KERAS_ADAM_DEFAULTS, learningRate: lr } }, () => {});
    const run = coordinator.run();
    const { peer } = await joinedPeer(coordinator);
    return { dataDir, dir, coordinator, run, peer };
  }

  test('a run that diverges after training a step writes none of the final outputs due at its end: no grid, checkpoint or generator, as its advice to start again says', async () => {
    const { dataDir, dir, coordinator, run, peer } = await runAtLearningRate('diverged-no-final', 1e30);
    // Step 1 with zero gradients: applied, and no --*-every output due at it.
    await answerStepWithZeros(0, peer);
    await weightsOrDrop(peer);
    peer.gradients(1, 'discriminator', new Float32Array(D_GRADIENTS).fill(1e-3));
    await weightsOrDrop(peer);
    const g = zeros('generator');
    g[0] = NaN;
    peer.gradients(1, 'generator', g);
    const summary = await run;
    await coordinator.close();
    assert.equal(summary.ok, false);
    assert.match(summary.stopReason, /^training diverged at step 2: .*there is no checkpoint yet: start again with a lower --lr$/);
    assert.deepEqual([summary.steps, summary.checkpoint, summary.generator, summary.samples], [1, null, null, []]);
    for (const d of ['checkpoints', 'samples', 'generator']) assert.deepEqual(fs.existsSync(path.join(dir, d)) ? fs.readdirSync(path.join(dir, d)) : [], [], d);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('an Adam update past float32 (--lr 1e38) stops the run as diverged: its weights, which every worker refuses, are never sent, so workers do not rejoin for ever', async () => {
    const { dataDir, coordinator, run, peer } = await runAtLearningRate('diverged-weights', 1e38);
    await weightsOrDrop(peer);
    // Adam's step size lr / (1 - β1) = 1e39 is Infinity in float32: every weight of D goes to ±Infinity.
    peer.gradients(0, 'discriminator', new Float32Array(D_GRADIENTS).fill(1e-3));
    const summary = await run;
    await coordinator.close();
    await peer.closed;
    const after: string[] = [];
    for (let m = peer.take(); m; m = peer.take()) after.push(m.type);
    assert.deepEqual(after, ['stop']);
    assert.equal(summary.ok, false);
    assert.match(summary.stopReason, /^training diverged at step 1: Adam's discriminator update left weight \d+ -?Infinity; there is no checkpoint yet: start again with a lower --lr$/);
    assert.equal(summary.steps, 0);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("a step cut short in its G round is undone whole: the stop's checkpoint holds D and D's Adam state as the step before left them", async () => {
    const dataDir = blankMnistDir(256);
    const dir = path.join(out, 'rollback');
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(dir, 10), dataDir }, (l) => lines.push(l));
    const run = coordinator.run();
    const { peer } = await joinedPeer(coordinator);
    let heldD: Float32Array | null = null;
    const nextWeights = async () => {
      const w = await weightsOrDrop(peer);
      if (w.discriminator) heldD = w.discriminator.slice();
      return w;
    };
    const small = (phase: Phase) => new Float32Array(phase === 'generator' ? G_SIZE : D_GRADIENTS).fill(1e-3);
    // Step 1, whole: D and G move.
    for (const phase of ['discriminator', 'generator'] as const) {
      await nextWeights();
      peer.gradients(0, phase, small(phase));
    }
    // Step 2's D round: the D the worker holds now is D after step 1.
    assert.equal((await nextWeights()).phase, 'discriminator');
    const dAfterStep1 = heldD!;
    peer.gradients(1, 'discriminator', small('discriminator'));
    // Its G round is sent the moved D; then the worker leaves, and a stop ends the run before the round is answered.
    const gRound = await nextWeights();
    assert.equal(gRound.phase, 'generator');
    assert.notDeepEqual(heldD, dAfterStep1);
    coordinator.requestStop('SIGTERM received');
    peer.ws.close();
    const summary = await run;
    await coordinator.close();
    const log = lines.join('\n');
    assert.equal(summary.steps, 1, log);
    // Stopping with no worker left, the round is not asked again, and the log does not say it is.
    assert.doesNotMatch(log, /asking again/);
    assert.match(log, /step 2 could not finish; its discriminator update was rolled back, and the run stays at step 1/);
    const found = loadLatestCheckpoint(path.join(dir, 'checkpoints'), () => {}, false);
    assert.ok(found, log);
    assert.equal(found.checkpoint.step, 1);
    assert.deepEqual(found.checkpoint.discriminator, dAfterStep1);
    // D's optimizer as after step 1's two updates: its step count and moments, not step 2's.
    const reference = new Adam(D_SIZE, KERAS_ADAM_DEFAULTS);
    applyDiscriminatorUpdates(reference, new Float32Array(D_SIZE), small('discriminator'), 2, new Float32Array(D_SIZE));
    assert.deepEqual(found.checkpoint.adamDiscriminator, reference.state());
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a resume from below the step summary.json holds removes it at start, so a later resume cannot keep it as the retrained run\'s result', async () => {
    const dataDir = blankMnistDir(256);
    const dir = path.join(out, 'rewound');
    const finished = await Coordinator.start({ ...config(dir, 2), dataDir, checkpointEvery: 1 }, () => {});
    const finishedRun = finished.run();
    const { peer } = await joinedPeer(finished);
    for (const step of [0, 1]) {
      for (const phase of ['discriminator', 'generator'] as const) {
        await weightsOrDrop(peer);
        peer.gradients(step, phase, zeros(phase));
      }
    }
    assert.equal((await finishedRun).steps, 2);
    await finished.close();
    // Rewound (or the newest checkpoint set aside as torn): the resume retrains step 2 from step 1.
    fs.rmSync(path.join(dir, 'checkpoints', 'ckpt-000000002.bin'));
    const lines: string[] = [];
    const resumed = await Coordinator.start({ ...config(dir, 2), dataDir, resume: true }, (l) => lines.push(l));
    assert.ok(!fs.existsSync(path.join(dir, 'summary.json')));
    assert.ok(lines.some((l) => /^removed \S+summary\.json: it summarised step 2, after this checkpoint's step 1$/.test(l)), lines.join('\n'));
    resumed.requestStop('test over');
    await resumed.run();
    await resumed.close();
    // A resume at the step it holds leaves it alone.
    const again = await Coordinator.start({ ...config(dir, 1), dataDir, resume: true }, () => {});
    assert.equal((await again.run()).ok, true);
    await again.close();
    const kept = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8'));
    const restarted = await Coordinator.start({ ...config(dir, 1), dataDir, resume: true }, () => {});
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')), kept);
    await restarted.run();
    await restarted.close();
    // A summary.json that cannot be read is not a missing one: taken for missing (older than the checkpoint), it
    // was written over with a resume's zeros. Here EISDIR, as root reads past permissions.
    fs.renameSync(path.join(dir, 'summary.json'), path.join(dir, 'summary.kept'));
    fs.mkdirSync(path.join(dir, 'summary.json'));
    await assert.rejects(
      Coordinator.start({ ...config(dir, 1), dataDir, resume: true }, () => {}),
      (e: unknown) => e instanceof GanfleetError && e.code === 'OUT_UNUSABLE' && /summary\.json cannot be read \(EISDIR.*\); this run would write over it/.test(e.message),
    );
    fs.rmdirSync(path.join(dir, 'summary.json'));
    fs.renameSync(path.join(dir, 'summary.kept'), path.join(dir, 'summary.json'));
    // A write that fails during a resumed run (a full disk, EIO; here the checkpoint directory gone) ends it with
    // the error, and the earlier run's summary.json says ok: false: a script reading it would otherwise see success.
    const failing = await Coordinator.start({ ...config(dir, 2), dataDir, resume: true, checkpointEvery: 1 }, () => {});
    fs.rmSync(path.join(dir, 'checkpoints'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'checkpoints'), 'not a directory');
    const failingRun = failing.run();
    await answerOneStep(failing, 1);
    await assert.rejects(failingRun, /EEXIST: file already exists, mkdir '\S+checkpoints'/);
    await failing.close();
    const marked = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8'));
    assert.deepEqual({ ...marked, ok: kept.ok, stopReason: kept.stopReason }, kept, 'only ok and stopReason change');
    assert.equal(marked.ok, false);
    assert.match(marked.stopReason, /^failed: EEXIST: file already exists, mkdir '\S+checkpoints'$/);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a run that diverges before its first checkpoint says to start again; a resume that diverges at once marks summary.json ok: false', async () => {
    const dataDir = blankMnistDir(256);
    const dir = path.join(out, 'diverged-at-once');
    // As in the test above: a D gradient that Adam turns into a step of 1e30, then G's gradients from that D are NaN.
    const diverge = async (coordinator: Coordinator, step: number) => {
      const { peer } = await joinedPeer(coordinator);
      await weightsOrDrop(peer);
      peer.gradients(step, 'discriminator', new Float32Array(D_GRADIENTS).fill(1e-3));
      await weightsOrDrop(peer);
      const g = zeros('generator');
      g[0] = NaN;
      peer.gradients(step, 'generator', g);
    };
    const lr = { ...KERAS_ADAM_DEFAULTS, learningRate: 1e30 };
    const lines: string[] = [];
    const fresh = await Coordinator.start({ ...config(dir, 10), dataDir, adam: lr }, (l) => lines.push(l));
    const freshRun = fresh.run();
    await diverge(fresh, 0);
    const first = await freshRun;
    await fresh.close();
    assert.equal(first.ok, false);
    assert.match(first.stopReason, /^training diverged at step 1: .*; there is no checkpoint yet: start again with a lower --lr$/);
    assert.ok(lines.includes(`${first.stopReason}; no outputs written`), lines.join('\n'));
    assert.ok(!fs.existsSync(path.join(dir, 'summary.json')));
    // A healthy step, finished and summarised; then a resume whose first step diverges trains nothing.
    const healthy = await Coordinator.start({ ...config(dir, 1), dataDir }, () => {});
    const healthyRun = healthy.run();
    await answerOneStep(healthy, 0);
    assert.equal((await healthyRun).ok, true);
    await healthy.close();
    const resumed = await Coordinator.start({ ...config(dir, 10), dataDir, resume: true, adam: lr }, () => {});
    const resumedRun = resumed.run();
    await diverge(resumed, 1);
    const summary = await resumedRun;
    await resumed.close();
    assert.equal(summary.stepsThisRun, 0);
    assert.match(summary.stopReason, /^training diverged at step 2: .*; resume from a checkpoint before step 2 \(the newest is \S+ckpt-000000001\.bin\) with a lower --lr$/);
    const written = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8'));
    assert.deepEqual({ ok: written.ok, stopReason: written.stopReason, steps: written.steps }, { ok: false, stopReason: summary.stopReason, steps: 1 });
    assert.equal(written.generator, path.join(dir, 'generator'), "step 1's generator is still there, and good");
    // A restart that finds the training finished (its --steps reached) says so again.
    const lines2: string[] = [];
    const restarted = await Coordinator.start({ ...config(dir, 1), dataDir, resume: true }, (l) => lines2.push(l));
    assert.equal((await restarted.run()).ok, true);
    await restarted.close();
    const rewritten = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8'));
    assert.deepEqual({ ok: rewritten.ok, stopReason: rewritten.stopReason, seconds: rewritten.seconds }, { ok: true, stopReason: 'finished 1 step', seconds: written.seconds });
    assert.ok(lines2.some((l) => /^finished 1 step: the run is at step 1 of --steps 1 .*left as they were \(\S+summary\.json says ok: true again\)$/.test(l)), lines2.join('\n'));
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a resumed run that fails on a disk that takes no rewrite of summary.json leaves none that says ok: true', async () => {
    const dataDir = blankMnistDir(256);
    const dir = path.join(out, 'full-disk-summary');
    const finished = await Coordinator.start({ ...config(dir, 1), dataDir }, () => {});
    const finishedRun = finished.run();
    await answerOneStep(finished, 0);
    assert.equal((await finishedRun).ok, true);
    await finished.close();
    const summaryFile = path.join(dir, 'summary.json');
    const kept = JSON.parse(fs.readFileSync(summaryFile, 'utf8'));
    // The resume's checkpoint fails (here its directory is a file), and so does the rewrite that would mark the
    // earlier summary failed (here its temporary file's name is taken by a directory; on a full disk: ENOSPC).
    const lines: string[] = [];
    const failing = await Coordinator.start({ ...config(dir, 2), dataDir, resume: true, checkpointEvery: 1 }, (l) => lines.push(l));
    fs.rmSync(path.join(dir, 'checkpoints'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'checkpoints'), 'not a directory');
    fs.mkdirSync(`${summaryFile}.tmp-${process.pid}`);
    const failingRun = failing.run();
    await answerOneStep(failing, 1);
    await assert.rejects(failingRun, /EEXIST/);
    await failing.close();
    const left = fs.existsSync(summaryFile) ? JSON.parse(fs.readFileSync(summaryFile, 'utf8')) : null;
    assert.notEqual(left?.ok, true, `summary.json still says ok: true for a run that failed:\n${lines.join('\n')}`);
    assert.deepEqual(JSON.parse(fs.readFileSync(`${summaryFile}.invalid`, 'utf8')), kept, 'the earlier figures are kept aside');
    assert.ok(lines.some((l) => /summary\.json could not be marked ok: false \(.*\); set aside as summary\.json\.invalid/.test(l)), lines.join('\n'));
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a worker whose own mailbox file cannot be used keeps its answer to the open round; its frames go over the socket', async () => {
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'refused-box'), 1) }, () => {});
    const run = coordinator.run();
    const { peer } = await joinedPeer(coordinator);
    // As a worker whose file belongs to another user would: its confirmation fails while the first round awaits it.
    const planted = path.join(out, 'not-a-mailbox');
    fs.writeFileSync(planted, 'not the nonce');
    peer.send(encode(message<MailboxReady>({ type: 'mailbox', path: planted })));
    const told: CoordinatorMessage[] = [];
    for (const phase of ['discriminator', 'generator'] as const) {
      const w = await weightsOrDrop(peer, told);
      assert.equal(w.phase, phase);
      peer.gradients(0, phase, zeros(phase));
    }
    assert.equal((await run).steps, 1);
    assert.ok(told.some((m) => m.type === 'error' && m.code === 'PROTOCOL_BAD_FIELD'), told.map((m) => m.type).join());
    const rejected = await coordinator.metrics.rejected.get();
    assert.equal(rejected.values.find((v) => v.labels.reason === 'unexpected')?.value ?? 0, 0, 'its gradients were refused');
    await coordinator.close();
  });

  test('at the largest --round-timeout, a worker whose weights wait behind its shard is not dropped', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'long-timeout'), 1), roundTimeoutSeconds: 2147483 }, (l) => lines.push(l));
    const run = coordinator.run();
    await answerStepWithZeros(0, (await joinedPeer(coordinator)).peer);
    assert.equal((await run).steps, 1);
    assert.ok(!lines.some((l) => / left /.test(l)), lines.join('\n'));
    await coordinator.close();
    process.off('warning', onWarning);
    assert.deepEqual(warnings.filter((w) => w.name === 'TimeoutOverflowWarning').map((w) => w.message), []);
  });

  test('a worker that stops reading before its shard has arrived is dropped a heartbeat after its link stops taking data', { timeout: 30_000 }, async () => {
    // The round timeout is long, so that only the link's stall can drop the worker in time.
    const { coordinator, run, peer, raw, logged } = await coordinatorAndRawPeer(path.join(out, 'frozen-before-shard'), { heartbeatSeconds: 1, roundTimeoutSeconds: 60 });
    // Frozen from its hello on, as a stopped process or a vanished machine: nothing it is sent is read.
    raw.pause();
    peer.hello();
    const plan = await logged(/shard plan 1: w1=60000/);
    const drop = await logged(/ left \(/);
    assert.match(drop.line, /w1 left \(its link took no write for \d+\.\d s \(dead, or slower than 1 MiB in --heartbeat \+ 1 s\)\)/);
    const afterMs = drop.at - plan.at;
    // The heartbeat (1 s), a fragment at 1 MB/s (1.05 s), a check every quarter heartbeat, and the time the 47 MB
    // shard takes to fill the socket's buffers; without the stall check this was 60 s plus 47 s at 1 MB/s.
    assert.ok(afterMs < 5000, `dropped ${afterMs} ms after its shard was planned`);
    assert.equal((await coordinator.metrics.heartbeatTimeouts.get()).values[0].value, 1);
    coordinator.requestStop('test over');
    assert.equal((await run).steps, 0);
    await coordinator.close();
    peer.ws.terminate();
  });

  test('a worker whose connection ends with no close frame (killed, crashed, cut off) is logged as lost, not as having left', async () => {
    const { coordinator, run, peer, logged } = await coordinatorAndRawPeer(path.join(out, 'killed-peer'), {});
    peer.hello();
    await logged(/w1 joined/);
    // What SIGKILL leaves: the socket closes with no close frame (1006).
    peer.ws.terminate();
    const drop = await logged(/ left \(/);
    assert.match(drop.line, /^w1 left \(connection lost, no close: crashed, killed or cut off\); 0 connected$/);
    coordinator.requestStop('test over');
    assert.equal((await run).steps, 0);
    await coordinator.close();
  });

  /**
   * A peer on a 1 s heartbeat that answers pings until `beforeSilence` is done, then none: the time from its
   * silence to its drop for a missed heartbeat.
   */
  async function droppedAfterSilence(name: string, beforeSilence: (peer: ScriptedPeer) => Promise<void>): Promise<number> {
    const { coordinator, run, peer, logged } = await coordinatorAndRawPeer(path.join(out, name), { heartbeatSeconds: 1, roundTimeoutSeconds: 60 }, { autoPong: false });
    let silent = false;
    peer.ws.on('ping', () => silent || peer.ws.pong());
    peer.hello();
    await beforeSilence(peer);
    silent = true;
    const silentAt = Date.now();
    const drop = await logged(/ left \(/);
    assert.match(drop.line, /w1 left \(no heartbeat for \d+\.\d s \(--heartbeat 1\)\)/);
    coordinator.requestStop('test over');
    assert.equal((await run).steps, 0, 'the only worker was dropped before a step was done');
    await coordinator.close();
    peer.ws.terminate();
    return drop.at - silentAt;
  }

  test('a worker taking in its shard, answering no ping meanwhile, has time for it beyond the heartbeat; silent past that, it is dropped', { timeout: 60_000 }, async () => {
    // Silent once its shard has come, as a worker busy taking it in is.
    const afterMs = await droppedAfterSilence('slow-intake', async (peer) => {
      while ((await peer.next()).type !== 'shard');
    });
    // MNIST's 60,000 images are allowed 5.9 s, and a heartbeat after that; the heartbeat alone dropped it after 1.5 to 2 s.
    const allowedMs = ((60_000 * IMAGE_SIZE) / MIN_INTAKE_BYTES_PER_SECOND) * 1000;
    assert.ok(afterMs > allowedMs && afterMs < allowedMs + 10_000, `dropped ${afterMs} ms after its shard came (allowed ${allowedMs} ms and a heartbeat)`);
  });

  test('a worker that has answered a round since its shard has taken it in: silent from then on, it is dropped within the heartbeat', { timeout: 60_000 }, async () => {
    const afterMs = await droppedAfterSilence('intake-over', async (peer) => {
      const w = await weightsOrDrop(peer);
      peer.gradients(w.step, w.phase, new Float32Array(D_GRADIENTS));
      await weightsOrDrop(peer);
    });
    // A ping goes every half heartbeat, its pong is due a heartbeat later, and heartbeats are checked every quarter: under 2 s.
    assert.ok(afterMs < 4000, `dropped ${afterMs} ms after it went silent; its shard's allowance would be 5.9 s`);
  });

  test('a worker whose link takes no data is cut off at its round\'s backstop, not kept open for a closing handshake that could not pass', { timeout: 60_000 }, async () => {
    // 12.5 MB of images: more than the loopback socket buffers take, so the weights behind them are never
    // written. The heartbeat is long, so only the round's backstop can drop the worker.
    const dataDir = blankMnistDir(16000);
    const { coordinator, run, peer, raw, logged } = await coordinatorAndRawPeer(path.join(out, 'backstop'), { heartbeatSeconds: 60, roundTimeoutSeconds: 1, dataDir });
    const told: CoordinatorMessage[] = [];
    raw.pause();
    peer.hello();
    const drop = await logged(/ left \(/);
    assert.match(drop.line, /w1 left \(its link took no data for \d+ s\)/);
    // Cut at once: what was queued behind the stall (the rest of the shard, the weights) is gone, and no reason
    // follows. A socket left to its closing handshake would deliver all of it, the reason, and close 4000.
    raw.resume();
    const closed = await peer.closed;
    for (let m = peer.take(); m; m = peer.take()) told.push(m);
    assert.equal(closed, 1006);
    assert.ok(!told.some((m) => m.type === 'error'), JSON.stringify(told.map((m) => m.type)));
    coordinator.requestStop('test over');
    assert.equal((await run).steps, 0);
    await coordinator.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a shard crossing a slow link goes in fragments: heartbeat pings reach the worker between them, and the link is not taken for dead', { timeout: 30_000 }, async (t) => {
    // A write that waits over 3.05 s (heartbeat 2 s) marks a dead link; the 47 MB shard as one write would take about 9 s here.
    const { coordinator, run, peer, raw, lines } = await coordinatorAndRawPeer(path.join(out, 'slow-shard'), { heartbeatSeconds: 2 });
    // The peer reads at most 256 KB every 50 ms (5 MB/s): its socket pauses when a tick's budget is spent.
    const TICK_BYTES = 256 * 1024;
    let budget = TICK_BYTES;
    const throttle = (chunk: Buffer) => {
      budget -= chunk.length;
      if (budget <= 0) raw.pause();
    };
    raw.on('data', throttle);
    const tick = setInterval(() => {
      budget = TICK_BYTES;
      raw.resume();
    }, 50);
    let pingsBeforeShard = 0;
    let shardArrived = false;
    peer.ws.on('ping', () => {
      if (!shardArrived) pingsBeforeShard++;
    });
    peer.hello();
    const told: CoordinatorMessage[] = [];
    const w = await weightsOrDrop(peer, told);
    clearInterval(tick);
    raw.off('data', throttle);
    raw.resume();
    shardArrived = true;
    t.diagnostic(`${pingsBeforeShard} pings before the shard was through`);
    const shard = told.find((m) => m.type === 'shard');
    assert.ok(shard?.type === 'shard' && shard.count === 60000 && shard.images.length === 60000 * 784, 'the whole shard arrived');
    // One ping may leave before the shard is planned; without fragments, none follows it until the shard is through.
    assert.ok(pingsBeforeShard >= 3, `${pingsBeforeShard} pings reached the worker while its shard crossed`);
    assert.ok(!lines.some((l) => / left /.test(l.line)), lines.map((l) => l.line).join('\n'));
    peer.gradients(0, 'discriminator', zeros('discriminator'));
    assert.equal((await weightsOrDrop(peer)).phase, 'generator');
    assert.equal(w.phase, 'discriminator');
    peer.gradients(0, 'generator', zeros('generator'));
    assert.equal((await run).steps, 1);
    peer.ws.close();
    await coordinator.close();
  });

  test('a peer cut off while its shard is on its way gets the shard, its answers and then 1008; nothing it sends after the third offence is read', { timeout: 30_000 }, async () => {
    const { coordinator, run, peer, raw, logged } = await coordinatorAndRawPeer(path.join(out, 'cut-off-mid-shard'), { roundTimeoutSeconds: 60 });
    // Not reading yet: the 47 MB shard stays on its way, and what follows it is held.
    raw.pause();
    peer.hello();
    await logged(/shard plan 1: w1=60000/);
    const rejected = async () => (await coordinator.metrics.rejected.get()).values.reduce((sum, v) => sum + v.value, 0);
    for (let i = 0; i < 3; i++) peer.send(Buffer.from([0xc1]));
    while ((await rejected()) < 3) await new Promise((r) => setTimeout(r, 20));
    await logged(/w1 left \(3 rejected messages\)/);
    for (let i = 0; i < 5; i++) peer.send(Buffer.from([0xc1]));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await rejected(), 3, 'frames after the third offence were read');
    raw.resume();
    assert.equal(await peer.closed, 1008);
    const received = [];
    for (;;) {
      const m = await Promise.race([peer.next(), new Promise<null>((r) => setTimeout(() => r(null), 100))]);
      if (!m) break;
      received.push(m.type === 'error' ? m.code : m.type);
    }
    // The first round's weights were sent before the offences, so they come first too.
    assert.deepEqual(received, ['welcome', 'shard', 'weights', 'PROTOCOL_BAD_FRAME', 'PROTOCOL_BAD_FRAME', 'PROTOCOL_BAD_FRAME']);
    coordinator.requestStop('test over');
    await run;
    await coordinator.close();
  });

  test('a worker that answers and leaves before the round closes leaves no compute-time series behind', async () => {
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'left-series'), 3), startWorkers: 2 }, () => {});
    const run = coordinator.run();
    const a = await joinedPeer(coordinator);
    const b = await joinedPeer(coordinator);
    await Promise.all([weightsOrDrop(a.peer), weightsOrDrop(b.peer)]);
    a.peer.gradients(0, 'discriminator', zeros('discriminator'));
    // Once a's answer is in, a leaves while the round still awaits b.
    const round = () => (coordinator as unknown as { round: { received: Map<string, unknown> } | null }).round;
    while (!round()?.received.has(a.workerId)) await new Promise((r) => setTimeout(r, 1));
    a.peer.ws.terminate();
    while (coordinator.status().workers.some((w) => w.id === a.workerId)) await new Promise((r) => setTimeout(r, 1));
    b.peer.gradients(0, 'discriminator', zeros('discriminator'));
    await weightsOrDrop(b.peer);
    const series = (await coordinator.metrics.workerComputeSeconds.get()).values.map((v) => v.labels.worker);
    assert.deepEqual(series, [b.workerId]);
    coordinator.requestStop('test over');
    b.peer.gradients(0, 'generator', zeros('generator'));
    await run;
    await coordinator.close();
  });

  test('every worker gone mid-step: the round waits for --min-workers, not the first back, and they share one new plan', { timeout: 30_000 }, async () => {
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'min-workers-mid-step'), 2), startWorkers: 2, minWorkers: 2 }, (l) => lines.push(l));
    const run = coordinator.run();
    const first = [await joinedPeer(coordinator), await joinedPeer(coordinator)];
    for (const p of first) await weightsOrDrop(p.peer);
    for (const p of first) p.peer.gradients(0, 'discriminator', zeros('discriminator'));
    for (const p of first) await weightsOrDrop(p.peer);
    // Both leave before answering the G round.
    for (const p of first) p.peer.ws.terminate();
    while (!lines.some((l) => /^paused during step 1 \(0 done\): 0\/2 workers connected/.test(l))) await new Promise((r) => setTimeout(r, 5));
    const paused = async () => (await coordinator.metrics.paused.get()).values[0].value;
    assert.equal(await paused(), 1, 'ganfleet_paused while waiting for --min-workers');
    assert.equal(coordinator.status().state, 'paused');
    const a = await joinedPeer(coordinator);
    while (!lines.some((l) => /^paused during step 1 \(0 done\): 1\/2 workers connected/.test(l))) await new Promise((r) => setTimeout(r, 5));
    const b = await joinedPeer(coordinator);
    for (const p of [a, b]) {
      const g = await weightsOrDrop(p.peer);
      assert.ok(g.step === 0 && g.phase === 'generator', JSON.stringify({ step: g.step, phase: g.phase }));
      p.peer.gradients(0, 'generator', zeros('generator'));
    }
    for (const p of [a, b]) await weightsOrDrop(p.peer);
    assert.equal(await paused(), 0, 'ganfleet_paused once training goes on');
    coordinator.requestStop('test over');
    for (const p of [a, b]) p.peer.gradients(1, 'discriminator', zeros('discriminator'));
    for (const p of [a, b]) await weightsOrDrop(p.peer);
    for (const p of [a, b]) p.peer.gradients(1, 'generator', zeros('generator'));
    assert.equal((await run).steps, 2);
    assert.ok(!lines.some((l) => /^resuming/.test(l) && !/^resuming step 1 with 2 workers$/.test(l)), lines.join('\n'));
    assert.ok(lines.includes('resuming step 1 with 2 workers'), lines.join('\n'));
    const plans = lines.filter((l) => /^shard plan/.test(l));
    assert.equal(plans.length, 2, plans.join('\n'));
    assert.match(plans[1], new RegExp(`^shard plan 2: ${a.workerId}=30000 ${b.workerId}=30000; `));
    assert.equal((await coordinator.metrics.pauses.get()).values[0].value, 1);
    await coordinator.close();
  });

  test('a long wait for workers is reminded of, further apart each time, with where the coordinator listens; it ends with the wait', { timeout: 30_000 }, async () => {
    const lines: string[] = [];
    const remindedAt: number[] = [];
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'wait-reminders'), 1), startWorkers: 2, minWorkers: 2, waitReminderSeconds: 0.25 }, (l) => {
      lines.push(l);
      if (/^still /.test(l)) remindedAt.push(performance.now());
    });
    const run = coordinator.run();
    const reminders = () => lines.filter((l) => /^still /.test(l));
    // At 0.25 s and 0.75 s: the second interval is twice the first (a timer is late, never early; at a steady 0.25 s it is 250 ms).
    while (reminders().length < 2) await new Promise((r) => setTimeout(r, 5));
    assert.ok(remindedAt[1] - remindedAt[0] >= 450, `${(remindedAt[1] - remindedAt[0]).toFixed(0)} ms between the first two reminders`);
    const url = coordinator.url.replace(/[.]/g, '\\.');
    for (const l of reminders()) assert.match(l, new RegExp(`^still waiting for workers at step 0 after \\d+ s: 0/2 workers connected; listening on ${url}$`));
    const a = await joinedPeer(coordinator);
    while (reminders().length < 3) await new Promise((r) => setTimeout(r, 5));
    assert.match(reminders()[2], /: 1\/2 workers connected;/);
    const b = await joinedPeer(coordinator);
    await answerStepWithZeros(0, a.peer, b.peer);
    // Training ran: no reminder after the wait, whose timer would also have kept the process up.
    await assertNoneAfter(run, reminders, 2000, lines);
    await coordinator.close();
  });

  test('a round that waits on a worker that does not answer says so, naming it, how long, and what ends the wait; not once the round closes', { timeout: 30_000 }, async () => {
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'round-reminders'), 1), startWorkers: 2, minWorkers: 2, roundReminderSeconds: 0.25 }, (l) => lines.push(l));
    const run = coordinator.run();
    const a = await joinedPeer(coordinator);
    const b = await joinedPeer(coordinator);
    await weightsOrDrop(a.peer);
    a.peer.gradients(0, 'discriminator', zeros('discriminator'));
    // b is asked, answers pings (its socket is live), and computes nothing: the round waits for it, up to --round-timeout 30 s.
    await weightsOrDrop(b.peer);
    const reminders = () => lines.filter((l) => /^still waiting after /.test(l));
    while (reminders().length < 2) await new Promise((r) => setTimeout(r, 5));
    for (const l of reminders()) {
      assert.match(l, new RegExp(`^still waiting after \\d+ s for the discriminator gradients of step 1 from ${b.workerId} "scripted" \\(1/2 answered\\); a worker that does not answer is dropped --round-timeout 30 s after its request was sent \\(after any shard ahead of it\\), or once its pong is --heartbeat 5 s late$`), lines.join('\n'));
    }
    b.peer.gradients(0, 'discriminator', zeros('discriminator'));
    for (const peer of [a.peer, b.peer]) {
      await weightsOrDrop(peer);
      peer.gradients(0, 'generator', zeros('generator'));
    }
    await assertNoneAfter(run, reminders, 1000, lines);
    await coordinator.close();
  });

  test('a worker that does not close its connection when told to stop (frozen) is named once the close stops waiting for it', { timeout: 30_000 }, async () => {
    const lines: string[] = [];
    // A long heartbeat: the frozen peer must not be dropped (and its socket closed) while the close waits.
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'dismiss-frozen'), 1), heartbeatSeconds: 30 }, (l) => lines.push(l));
    const run = coordinator.run();
    const { peer, workerId } = await joinedPeer(coordinator);
    await weightsOrDrop(peer);
    peer.gradients(0, 'discriminator', zeros('discriminator'));
    await weightsOrDrop(peer);
    // Frozen as a stopped process is: it answers the last round, then reads nothing, the stop included.
    (peer.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    peer.gradients(0, 'generator', zeros('generator'));
    assert.equal((await run).steps, 1);
    const t = performance.now();
    await coordinator.close();
    assert.ok(performance.now() - t >= 4900, 'the close waited for it');
    assert.ok(lines.includes(`${workerId} did not close its connection within 5 s of being told to stop (frozen, or a link that takes no data): the coordinator closes without waiting longer`), lines.join('\n'));
    peer.ws.terminate();
  });

  test('a pause mid-step (every worker gone) is logged as one and left out of the ETA', async (t) => {
    const lines: string[] = [];
    // A small training set: two 47 MB MNIST shards (one per joining peer, both in this process) would
    // otherwise be training time of their own, seconds of it on a busy machine, and swamp what the ETA is checked for.
    const dataDir = blankMnistDir(256);
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'mid-step-pause'), 3), dataDir }, (l) => lines.push(l));
    const run = coordinator.run();
    const first = await joinedPeer(coordinator);
    await weightsOrDrop(first.peer);
    first.peer.gradients(0, 'discriminator', zeros('discriminator'));
    // The only worker leaves after the D round: the G round has no one until a new worker comes, 1.5 s later.
    await weightsOrDrop(first.peer);
    first.peer.ws.terminate();
    await new Promise((r) => setTimeout(r, 1500));
    const second = await joinedPeer(coordinator);
    const g = await weightsOrDrop(second.peer);
    assert.ok(g.step === 0 && g.phase === 'generator', JSON.stringify({ step: g.step, phase: g.phase }));
    second.peer.gradients(0, 'generator', zeros('generator'));
    await weightsOrDrop(second.peer);
    // Inside step 1, whose D update is applied: the line says so, once, and not "at step 0" as at a boundary.
    assert.equal(lines.filter((l) => /^paused /.test(l)).join('\n'), 'paused during step 1 (0 done): 0/1 workers connected', lines.join('\n'));
    assert.ok(lines.includes('resuming step 1 with 1 worker'), lines.join('\n'));
    assert.ok(lines.some((l) => /^waiting for workers at step 0: 0\/1/.test(l)), 'the first wait is not a pause');
    const eta = coordinator.status().etaSeconds!;
    t.diagnostic(`ETA ${eta.toFixed(3)} s for two steps`);
    // Two steps are left; at 1.5 s a step (the pause counted in) the ETA would be 3 s or more.
    assert.ok(eta < 2, `ETA ${eta} s for two steps`);
    coordinator.requestStop('test over');
    second.peer.gradients(1, 'discriminator', zeros('discriminator'));
    await weightsOrDrop(second.peer);
    second.peer.gradients(1, 'generator', zeros('generator'));
    const summary = await run;
    // The summary's pace leaves the pause out too, and says how long it was.
    assert.ok(summary.pausedSeconds >= 1.4 && summary.pausedSeconds < summary.seconds, JSON.stringify(summary));
    assert.equal(summary.evaluationSeconds, 0);
    // The steps' time is the wall time less the pause (and less the final grid and checkpoint, which no step waited for).
    const stepsSeconds = (summary.msPerStep * summary.stepsThisRun) / 1000;
    assert.ok(stepsSeconds > 0 && stepsSeconds <= summary.seconds - summary.pausedSeconds + 1e-9, JSON.stringify(summary));
    await coordinator.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a run ends with its checkpoint written before the final evaluation, which may outlast a stop\'s grace period, and once; the summary\'s times include that evaluation', async () => {
    // --eval-every 5 scores the last step as the run ends; 1 scores it as a step it is due at, as --checkpoint-every is not.
    for (const evalEvery of [5, 1]) {
      const lines: string[] = [];
      const dataDir = blankMnistDir(100, true);
      const coordinator = await Coordinator.start({ ...config(path.join(out, `checkpoint-then-eval-${evalEvery}`), 1), dataDir, evalEvery, evalSamples: 100 }, (l) => lines.push(l));
      const run = coordinator.run();
      await answerOneStep(coordinator, 0);
      const summary = await run;
      const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
      assert.ok(at(/^checkpoint /) >= 0 && at(/^eval step 1:/) > at(/^checkpoint /), lines.join('\n'));
      assert.equal(lines.filter((l) => /^checkpoint /.test(l)).length, 1, lines.join('\n'));
      // They were read before it: 0 s evaluating, whenever --eval-every does not divide --steps.
      assert.ok(summary.evaluationSeconds > 0 && summary.seconds > summary.evaluationSeconds, JSON.stringify(summary));
      await coordinator.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  /** A one-step run with a SIGTERM as its checkpoint is written, which is just before the step's or the run's final evaluation. */
  async function signalledAtCheckpoint(name: string, every: { evalEvery: number; checkpointEvery?: number }) {
    const lines: string[] = [];
    const dataDir = blankMnistDir(100, true);
    const coordinator: Coordinator = await Coordinator.start({ ...config(path.join(out, name), 1), dataDir, ...every, evalSamples: 100 }, (l) => {
      lines.push(l);
      if (/^checkpoint /.test(l)) coordinator.requestStop('SIGTERM received');
    });
    const run = coordinator.run();
    await answerOneStep(coordinator, 0);
    const summary = await run;
    await coordinator.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
    return { lines, outcome: { ok: summary.ok, stopReason: summary.stopReason, evaluated: summary.evaluations.map((e) => e.step) } };
  }

  test('a signal during the final outputs, every step trained, leaves a finished run: the evaluation finishes and the summary says so', async () => {
    const { lines, outcome } = await signalledAtCheckpoint('signal-in-final-eval', { evalEvery: 5 });
    assert.ok(lines.includes('stop requested: SIGTERM received'), lines.join('\n'));
    assert.deepEqual(outcome, { ok: true, stopReason: 'finished 1 step', evaluated: [1] });
  });

  test('a signal during an evaluation due at the last step itself cuts it short, and the summary names the signal', async () => {
    const { lines, outcome } = await signalledAtCheckpoint('signal-in-due-final-eval', { evalEvery: 1, checkpointEvery: 1 });
    assert.ok(lines.some((l) => l.startsWith('eval step 1: left unfinished')), lines.join('\n'));
    assert.deepEqual(outcome, { ok: true, stopReason: 'SIGTERM received', evaluated: [] });
  });

  test('an evaluation, which training waits for, is logged as it starts and shown as the state on the status page, at no images/s', async () => {
    const lines: string[] = [];
    const dataDir = blankMnistDir(100, true);
    const during: ReturnType<Coordinator['status']>[] = [];
    const coordinator: Coordinator = await Coordinator.start({ ...config(path.join(out, 'evaluating-state'), 2), dataDir, evalEvery: 1, evalSamples: 100 }, (l) => {
      lines.push(l);
      if (/^evaluating G at step 1 /.test(l)) during.push(coordinator.status());
    });
    const run = coordinator.run();
    const { peer } = await joinedPeer(coordinator);
    await answerStepWithZeros(0, peer);
    // Step 2's weights come once step 1's evaluation is over: training again.
    await weightsOrDrop(peer);
    const after = coordinator.status();
    peer.gradients(1, 'discriminator', new Float32Array(D_GRADIENTS));
    await weightsOrDrop(peer);
    peer.gradients(1, 'generator', new Float32Array(G_SIZE));
    await run;
    assert.ok(lines.includes('evaluating G at step 1 (100 samples): training waits meanwhile'), lines.join('\n'));
    assert.ok(lines.findIndex((l) => l.startsWith('evaluating G at step 1 ')) < lines.findIndex((l) => l.startsWith('eval step 1: fid=')), lines.join('\n'));
    assert.deepEqual(during.map((st) => [st.state, st.imagesPerSecond]), [['evaluating', 0]]);
    assert.equal(after.state, 'training');
    await coordinator.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a stop during a mid-run evaluation leaves it unfinished, so the stop\'s checkpoint does not wait for it', async () => {
    const lines: string[] = [];
    const dataDir = blankMnistDir(100, true);
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'stop-mid-eval'), 5), dataDir, evalEvery: 1, evalSamples: 2000, metricsPort: 0 }, (l) => lines.push(l));
    const run = coordinator.run();
    const { peer } = await joinedPeer(coordinator);
    await weightsOrDrop(peer);
    peer.gradients(0, 'discriminator', new Float32Array(D_GRADIENTS));
    await weightsOrDrop(peer);
    // The step finishes, its evaluation starts, and the stop overtakes it after its first batch.
    coordinator.requestStop('SIGTERM received');
    peer.gradients(0, 'generator', new Float32Array(G_SIZE));
    const summary = await run;
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    assert.ok(at(/^eval step 1: left unfinished after \d+\.\d s, so that the stop's checkpoint need not wait for it$/) >= 0, lines.join('\n'));
    assert.ok(at(/^checkpoint \S+ckpt-000000001\.bin$/) > at(/^eval step 1: left unfinished/), lines.join('\n'));
    assert.equal(at(/fid=/), -1, lines.join('\n'));
    assert.deepEqual(summary.evaluations, []);
    // The unfinished evaluation's time is counted on /metrics as in summary.json: training waited for it all the same.
    const metrics = await (await fetch(`http://127.0.0.1:${coordinator.metricsPort}/metrics`)).text();
    const evalSeconds = Number(/^ganfleet_eval_seconds_total (\S+)$/m.exec(metrics)?.[1]);
    assert.ok(summary.evaluationSeconds > 0, JSON.stringify(summary));
    assert.ok(Math.abs(evalSeconds - summary.evaluationSeconds) < 1e-6, `${evalSeconds} against ${summary.evaluationSeconds}`);
    await coordinator.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a resumed run keeps the evaluations from before its checkpoint, in summary.json and on the status page', async () => {
    const dir = path.join(out, 'resumed-evaluations');
    const dataDir = blankMnistDir(100, true);
    plantCheckpoint(dir, 2);
    // Steps 1 and 2, and a step 3 that a killed run scored after its checkpoint: the resumed run scores its own.
    const earlier = [1, 2, 3].map((step) => ({ step, fid: 100 + step, mnistScore: 1.5, classShares: Array(10).fill(0.1), samples: 100 }));
    fs.writeFileSync(path.join(dir, 'evaluations.json'), JSON.stringify(earlier));
    const coordinator = await Coordinator.start({ ...config(dir, 3), resume: true, dataDir, evalEvery: 1, evalSamples: 100, metricsPort: 0 }, () => {});
    // Before a worker joins, /metrics has step 2's scores, and no losses: this process has trained no step.
    const metrics = await (await fetch(`http://127.0.0.1:${coordinator.metricsPort}/metrics`)).text();
    assert.match(metrics, /^ganfleet_fid 102$/m);
    assert.match(metrics, /^ganfleet_mnist_score 1\.5$/m);
    for (const name of ['d_loss', 'g_loss', 'd_real', 'd_fake']) assert.match(metrics, new RegExp(`^ganfleet_${name} Nan$`, 'm'));
    const run = coordinator.run();
    await answerOneStep(coordinator, 2);
    const summary = await run;
    assert.deepEqual(summary.evaluations.slice(0, 2), earlier.slice(0, 2));
    assert.equal(summary.evaluations.length, 3);
    assert.equal(summary.evaluations[2].step, 3);
    assert.notEqual(summary.evaluations[2].fid, 103, 'step 3 scored anew');
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')).evaluations, summary.evaluations);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'evaluations.json'), 'utf8')), summary.evaluations);
    const status = await (await fetch(`http://127.0.0.1:${coordinator.metricsPort}/api/status`)).json();
    assert.deepEqual(status.evaluations, summary.evaluations);
    await coordinator.close();
    // A run from step 0 (no checkpoint to resume) does not take an earlier run's evaluations as its own.
    const fresh = path.join(out, 'evaluations-without-checkpoint');
    fs.mkdirSync(fresh, { recursive: true });
    fs.writeFileSync(path.join(fresh, 'evaluations.json'), JSON.stringify(earlier));
    // Nor its grids, which a later resume of this run would list as its own.
    fs.mkdirSync(path.join(fresh, 'samples'));
    fs.writeFileSync(path.join(fresh, 'samples', 'step-000002.png'), 'grid');
    const freshLines: string[] = [];
    const fromZero = await Coordinator.start({ ...config(fresh, 3), resume: true, dataDir, evalEvery: 1, evalSamples: 100 }, (l) => freshLines.push(l));
    assert.equal(fs.existsSync(path.join(fresh, 'evaluations.json')), false);
    assert.ok(freshLines.some((l) => /^removed \S+evaluations\.json: the evaluations of an earlier run that left no checkpoint$/.test(l)), freshLines.join('\n'));
    assert.deepEqual(fs.readdirSync(path.join(fresh, 'samples')), []);
    assert.ok(freshLines.some((l) => /^removed step-000002\.png from \S+samples: an earlier run that left no checkpoint drew them$/.test(l)), freshLines.join('\n'));
    // Only once started: a start that fails (its port taken) leaves them.
    const failedStart = path.join(out, 'evaluations-port-taken');
    fs.mkdirSync(path.join(failedStart, 'samples'), { recursive: true });
    fs.writeFileSync(path.join(failedStart, 'evaluations.json'), JSON.stringify(earlier));
    fs.writeFileSync(path.join(failedStart, 'samples', 'step-000002.png'), 'grid');
    await assert.rejects(Coordinator.start({ ...config(failedStart, 3), port: fromZero.port, dataDir, evalEvery: 1, evalSamples: 100 }, () => {}), /EADDRINUSE/);
    assert.ok(fs.existsSync(path.join(failedStart, 'evaluations.json')));
    assert.deepEqual(fs.readdirSync(path.join(failedStart, 'samples')), ['step-000002.png']);
    await fromZero.close();
    // A history that is no list of evaluations costs the history, with a warning, not the resume; it is set aside, not written over.
    fs.writeFileSync(path.join(dir, 'evaluations.json'), '{"step": 1');
    const lines: string[] = [];
    const again = await Coordinator.start({ ...config(dir, 3), resume: true, dataDir, evalEvery: 1, evalSamples: 100 }, (l) => lines.push(l));
    assert.ok(lines.some((l) => /^warning: \S+evaluations\.json does not hold a list of evaluations; set aside as evaluations\.json\.invalid, and the evaluations before step 3 are left out of this run's summary$/.test(l)), lines.join('\n'));
    assert.equal(fs.readFileSync(path.join(dir, 'evaluations.json.invalid'), 'utf8'), '{"step": 1');
    await again.close();
    // One that cannot be read (EACCES, EIO; here EISDIR, since root reads past permissions) stops the resume: taken for
    // missing, it was written over with this run's evaluations alone, and the earlier scores were lost.
    fs.mkdirSync(path.join(dir, 'evaluations.json'));
    await assert.rejects(
      Coordinator.start({ ...config(dir, 3), resume: true, dataDir, evalEvery: 1, evalSamples: 100 }, () => {}),
      (e: unknown) => e instanceof GanfleetError && e.code === 'OUT_UNUSABLE' && /evaluations\.json cannot be read \(EISDIR.*\); this run would write over it/.test(e.message),
    );
    assert.ok(fs.statSync(path.join(dir, 'evaluations.json')).isDirectory());
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a resume of a run written before evaluations.json keeps the evaluations its summary.json holds', async () => {
    const dataDir = blankMnistDir(100, true);
    const score = (step: number) => ({ step, fid: 100 + step, mnistScore: 1.5, classShares: Array(10).fill(0.1), samples: 100 });
    // Such a ganfleet kept the --eval-every history in summary.json alone.
    const earlierRun = (name: string) => {
      const dir = path.join(out, name);
      plantCheckpoint(dir, 2);
      const earlier = { steps: 2, stepsThisRun: 2, resumedFrom: null, ok: true, generator: path.join(dir, 'generator'), evaluations: [1, 2].map(score), stopReason: 'finished 2 steps' };
      fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify(earlier));
      return dir;
    };
    // Restarted at the same --steps (an upgraded pod): nothing to score, and summary.json keeps its history.
    const finished = earlierRun('pre-evaluations-json-finished');
    const lines: string[] = [];
    const again = await Coordinator.start({ ...config(finished, 2), resume: true, dataDir, evalEvery: 1, evalSamples: 100 }, (l) => lines.push(l));
    await again.run();
    await again.close();
    assert.doesNotMatch(lines.join('\n'), /eval step/);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(finished, 'summary.json'), 'utf8')).evaluations, [1, 2].map(score));
    // Trained on: the earlier scores stay in the history, beside this run's.
    const trained = earlierRun('pre-evaluations-json-trained');
    const coordinator = await Coordinator.start({ ...config(trained, 3), resume: true, dataDir, evalEvery: 1, evalSamples: 100 }, () => {});
    const run = coordinator.run();
    await answerOneStep(coordinator, 2);
    const summary = await run;
    await coordinator.close();
    assert.deepEqual(summary.evaluations.slice(0, 2), [1, 2].map(score));
    assert.deepEqual(summary.evaluations.map((e) => e.step), [1, 2, 3]);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(trained, 'evaluations.json'), 'utf8')), summary.evaluations);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("a start from step 0 removes the summary.json of a run that diverged before its first checkpoint: a resume of the new run took that run's evaluations for its own", async () => {
    const dataDir = blankMnistDir(100);
    const score = (step: number) => ({ step, fid: 100 + step, mnistScore: 1.5, classShares: Array(10).fill(0.1), samples: 100 });
    // Diverged at step 2 with no checkpoint yet ("start again with a lower --lr"): no generator, its evaluations in summary.json.
    const dir = path.join(out, 'after-a-diverged-run');
    fs.mkdirSync(dir, { recursive: true });
    const diverged = { steps: 2, stepsThisRun: 2, resumedFrom: null, ok: false, generator: null, evaluations: [1, 2].map(score), stopReason: 'training diverged at step 2' };
    fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify(diverged));
    const lines: string[] = [];
    const fresh = await Coordinator.start({ ...config(dir, 3), dataDir }, (l) => lines.push(l));
    await fresh.close();
    assert.ok(!fs.existsSync(path.join(dir, 'summary.json')));
    assert.ok(lines.some((l) => /^removed \S+summary\.json: the summary of an earlier run that left no checkpoint$/.test(l)), lines.join('\n'));
    // The new run, killed after its checkpoint at step 2 and before any evaluation of its own, resumed.
    plantCheckpoint(dir, 2);
    const resumed = await Coordinator.start({ ...config(dir, 3), resume: true, dataDir }, () => {});
    const run = resumed.run();
    await answerOneStep(resumed, 2);
    const summary = await run;
    await resumed.close();
    assert.deepEqual(summary.evaluations, []);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("a resume scores its checkpoint's step when a kill or a stop cut that evaluation short, and drops from evaluations.json the scores of weights after its checkpoint", async () => {
    const dataDir = blankMnistDir(100, true);
    const score = (step: number) => ({ step, fid: 100 + step, mnistScore: 1.5, classShares: Array(10).fill(0.1), samples: 100 });
    // Killed while scoring the last step, after its checkpoint: the run's end was never scored.
    const cut = path.join(out, 'killed-in-final-eval');
    plantCheckpoint(cut, 4);
    fs.writeFileSync(path.join(cut, 'evaluations.json'), JSON.stringify([score(2)]));
    const steps = (file: string) => JSON.parse(fs.readFileSync(path.join(cut, file), 'utf8')).map((e: { step: number }) => e.step);
    const resume = async (stopAtOnce: boolean) => {
      const lines: string[] = [];
      const c = await Coordinator.start({ ...config(cut, 4), resume: true, dataDir, evalEvery: 2, evalSamples: 200 }, (l) => lines.push(l));
      const run = c.run();
      if (stopAtOnce) c.requestStop('SIGTERM received');
      const summary = await run;
      await c.close();
      return { summary, lines: lines.join('\n') };
    };
    // A stop cuts the catch-up short too; the summary written then does not make the run finished for good.
    const stopped = await resume(true);
    assert.match(stopped.lines, /eval step 4: left unfinished/);
    assert.deepEqual(stopped.summary.evaluations.map((e) => e.step), [2]);
    // The summary is the run's: what it says of the training stays, and the evaluation joins it.
    const summaryFile = path.join(cut, 'summary.json');
    const before = { ...JSON.parse(fs.readFileSync(summaryFile, 'utf8')), stepsThisRun: 4, msPerStep: 12.5, last: { dLoss: 0.5 } };
    fs.writeFileSync(summaryFile, JSON.stringify(before));
    const resumed = await resume(false);
    assert.match(resumed.lines, /^eval step 4: due, and not in \S+evaluations\.json; scoring it now$/m);
    assert.deepEqual(resumed.summary.evaluations.map((e) => e.step), [2, 4]);
    assert.deepEqual(steps('evaluations.json'), [2, 4]);
    const after = JSON.parse(fs.readFileSync(summaryFile, 'utf8'));
    assert.deepEqual(after.evaluations.map((e: { step: number }) => e.step), [2, 4]);
    assert.deepEqual({ ...after, evaluations: null }, { ...before, evaluations: null });
    // Resumed again, finished: nothing is scored twice, and the outputs stay as they were (ok was true: not rewritten).
    const again = await resume(false);
    assert.doesNotMatch(again.lines, /eval step/);
    assert.match(again.lines, /the outputs in \S+ are left as they were$/m);
    assert.deepEqual(JSON.parse(fs.readFileSync(summaryFile, 'utf8')), after);
    // Killed after scoring step 3, whose checkpoint it never wrote: a resume without --eval-every does not keep that score.
    const ahead = path.join(out, 'scored-after-checkpoint');
    plantCheckpoint(ahead, 2);
    fs.writeFileSync(path.join(ahead, 'evaluations.json'), JSON.stringify([1, 2, 3].map(score)));
    const aheadLines: string[] = [];
    const dropping = await Coordinator.start({ ...config(ahead, 3), resume: true, dataDir }, (l) => aheadLines.push(l));
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(ahead, 'evaluations.json'), 'utf8')), [1, 2].map(score));
    assert.ok(aheadLines.some((l) => /^evaluations at step 3 scored weights after this checkpoint; removed from \S+evaluations\.json$/.test(l)), aheadLines.join('\n'));
    await dropping.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a resume of a finished run whose last step --eval-every does not divide, killed while scoring that step, scores it: the end of a run is owed an evaluation too', async () => {
    const dataDir = blankMnistDir(100, true);
    const score = (step: number) => ({ step, fid: 100 + step, mnistScore: 1.5, classShares: Array(10).fill(0.1), samples: 100 });
    // --steps 5, --eval-every 2: scored at 2 and 4, then killed while scoring the final step 5, after its checkpoint.
    const dir = path.join(out, 'killed-in-odd-final-eval');
    plantCheckpoint(dir, 5);
    fs.writeFileSync(path.join(dir, 'evaluations.json'), JSON.stringify([2, 4].map(score)));
    const lines: string[] = [];
    const c = await Coordinator.start({ ...config(dir, 5), resume: true, dataDir, evalEvery: 2, evalSamples: 200 }, (l) => lines.push(l));
    const summary = await c.run();
    await c.close();
    assert.match(lines.join('\n'), /^eval step 5: due, and not in \S+evaluations\.json; scoring it now$/m);
    assert.deepEqual(summary.evaluations.map((e) => e.step), [2, 4, 5]);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'evaluations.json'), 'utf8')).map((e: { step: number }) => e.step), [2, 4, 5]);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')).evaluations.map((e: { step: number }) => e.step), [2, 4, 5]);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('the time spent evaluating is reported, and left out of ms/step and images/s as pauses are (test/progress.test.ts has the arithmetic); the test set is the one read at start', async () => {
    const dataDir = blankMnistDir(100, true);
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'eval-not-pace'), 1), dataDir, evalEvery: 1, evalSamples: 100 }, () => {});
    // Removed after the start: the evaluation still has the set it checked then (it stopped the run at step 1 when it read the files again).
    for (const name of ['t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']) fs.rmSync(path.join(dataDir, name));
    const run = coordinator.run();
    await answerOneStep(coordinator, 0);
    const summary = await run;
    assert.ok(summary.evaluationSeconds > 0, JSON.stringify(summary));
    // The steps' time: the wall time less the pauses and evaluations, and less the final grid and checkpoint, which no step waited for.
    const stepsSeconds = (summary.msPerStep * summary.stepsThisRun) / 1000;
    assert.ok(stepsSeconds > 0 && stepsSeconds <= summary.seconds - summary.pausedSeconds - summary.evaluationSeconds + 1e-9, JSON.stringify(summary));
    // The same time on /metrics (README: ganfleet_eval_seconds_total).
    const evalSeconds = metricValue(await coordinator.metrics.registry.metrics(), 'ganfleet_eval_seconds_total')!;
    assert.ok(Math.abs(evalSeconds - summary.evaluationSeconds) < 1e-6, `${evalSeconds} s on /metrics, ${summary.evaluationSeconds} s in summary.json`);
    await coordinator.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('the stop tells workers whether the run has steps left, for workers that wait for a resumed coordinator', async () => {
    for (const stoppedEarly of [true, false]) {
      const coordinator = await Coordinator.start(config(path.join(out, `stop-${stoppedEarly}`), stoppedEarly ? 5 : 1), () => {});
      const run = coordinator.run();
      const { peer } = await joinedPeer(coordinator);
      await weightsOrDrop(peer);
      peer.gradients(0, 'discriminator', zeros('discriminator'));
      await weightsOrDrop(peer);
      // Before the G answer can arrive: the run stops at the end of step 0.
      if (stoppedEarly) coordinator.requestStop('SIGTERM received');
      peer.gradients(0, 'generator', zeros('generator'));
      assert.equal((await run).steps, 1);
      const closing = coordinator.close();
      let m = await peer.next();
      while (m.type !== 'stop') m = await peer.next();
      assert.deepEqual({ reason: m.reason, resumable: m.resumable }, stoppedEarly ? { reason: 'SIGTERM received', resumable: true } : { reason: 'finished 1 step', resumable: undefined });
      peer.ws.close();
      await closing;
    }
  });

  test('a run that fails writing its last step\'s checkpoint (a full disk) tells workers that steps are left (a resume starts from an earlier one) and why', async () => {
    // Deep enough that the error naming it is longer than a worker takes a reason to be.
    const dir = path.join(out, 'last-checkpoint-failed', ...Array.from({ length: 6 }, (_, i) => `${i}`.repeat(200)));
    const coordinator = await Coordinator.start({ ...config(dir, 2), checkpointEvery: 1 }, () => {});
    const run = coordinator.run();
    const { peer } = await joinedPeer(coordinator, false);
    for (const step of [0, 1]) {
      await weightsOrDrop(peer);
      peer.gradients(step, 'discriminator', zeros('discriminator'));
      await weightsOrDrop(peer);
      // The first step's checkpoint was written; the last step's fails (its directory made a file here; a full disk: ENOSPC).
      if (step === 1) {
        fs.rmSync(path.join(dir, 'checkpoints'), { recursive: true });
        fs.writeFileSync(path.join(dir, 'checkpoints'), 'not a directory');
      }
      peer.gradients(step, 'generator', zeros('generator'));
    }
    await assert.rejects(run, /EEXIST: file already exists, mkdir '\S+checkpoints'/);
    const closing = coordinator.close();
    let m = await peer.next();
    while (m.type !== 'stop') m = await peer.next();
    assert.equal(m.resumable, true, JSON.stringify(m));
    // Why, for the workers' logs (it was "coordinator closing"), cut to what they accept.
    assert.match(m.reason, /^the coordinator failed: EEXIST: file already exists, mkdir '\/\S+…$/);
    assert.equal(m.reason.length, MAX_STRING_LENGTH);
    peer.ws.close();
    await closing;
  });

  test('a closing coordinator takes no new connections while it waits for its workers to close, and tells them every step is left', async () => {
    const coordinator = await Coordinator.start(config(path.join(out, 'closing'), 5), () => {});
    const { peer } = await joinedPeer(coordinator, false);
    const closing = coordinator.close('SIGTERM received');
    let m = await peer.next();
    while (m.type !== 'stop') m = await peer.next();
    assert.deepEqual({ reason: m.reason, resumable: m.resumable }, { reason: 'SIGTERM received', resumable: true });
    // The peer has not closed, so the coordinator still waits for it; a worker that rejoins at once (--rejoin-after-stop) is refused.
    const late = new WebSocket(`ws://127.0.0.1:${coordinator.port}`);
    const outcome = await new Promise((r) => {
      late.once('open', () => r('admitted'));
      late.once('error', (e: NodeJS.ErrnoException) => r(e.code));
    });
    assert.equal(outcome, 'ECONNREFUSED');
    peer.ws.close();
    await closing;
  });

  test('while paused the status shows no throughput, not that of the last step', async () => {
    const coordinator = await Coordinator.start(config(path.join(out, 'paused-rate'), 3), () => {});
    const run = coordinator.run();
    const { peer } = await joinedPeer(coordinator);
    await weightsOrDrop(peer);
    peer.gradients(0, 'discriminator', zeros('discriminator'));
    await weightsOrDrop(peer);
    peer.gradients(0, 'generator', zeros('generator'));
    await weightsOrDrop(peer);
    assert.ok(coordinator.status().imagesPerSecond > 0, 'a trained step has a rate');
    peer.ws.terminate();
    while (coordinator.status().state !== 'paused') await new Promise((r) => setTimeout(r, 5));
    assert.equal(coordinator.status().imagesPerSecond, 0);
    coordinator.requestStop('test over');
    assert.equal((await run).steps, 1);
    await coordinator.close();
  });

  test('the status lists a worker that joined mid-step as joined, without a shard, until the next step plans it in; each worker\'s last compute in ms; how long the open round has waited for each; no ETA once finished', async () => {
    const dataDir = blankMnistDir(256);
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'status-workers'), 2), dataDir }, () => {});
    const run = coordinator.run();
    const row = (id: string) => coordinator.status().workers.find((w) => w.id === id)!;
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const a = await joinedPeer(coordinator);
    await weightsOrDrop(a.peer);
    // Step 0's D round is open, waiting for a: b joins in the middle of the step.
    const b = await joinedPeer(coordinator);
    assert.deepEqual([row(a.workerId).state, row(a.workerId).shardSize, row(b.workerId).state, row(b.workerId).shardSize], ['active', 256, 'joined', 0]);
    // The round waits for a, not for b, which is no participant; a's wait grows while a does not answer.
    const waited = row(a.workerId).awaitedMs;
    assert.equal(typeof waited, 'number');
    assert.equal(row(b.workerId).awaitedMs, null);
    await sleep(60);
    assert.ok(row(a.workerId).awaitedMs! >= waited! + 50, `${row(a.workerId).awaitedMs} ms waited, 60 ms after ${waited}`);
    a.peer.gradients(0, 'discriminator', zeros('discriminator'));
    await weightsOrDrop(a.peer);
    a.peer.gradients(0, 'generator', zeros('generator'));
    // Step 1's D round: both planned in, half the images each; a's gradients reported 1 ms of compute.
    await weightsOrDrop(a.peer);
    assert.deepEqual([row(a.workerId).state, row(a.workerId).shardSize, row(b.workerId).state, row(b.workerId).shardSize], ['active', 128, 'active', 128]);
    assert.equal(row(a.workerId).lastComputeMs, 1);
    assert.equal(row(b.workerId).lastComputeMs, 0);
    assert.notEqual(coordinator.status().etaSeconds, null);
    a.peer.gradients(1, 'discriminator', zeros('discriminator'));
    await weightsOrDrop(b.peer);
    // a has answered step 1's D round, b has not: only b is waited for.
    for (let i = 0; i < 200 && row(a.workerId).awaitedMs !== null; i++) await sleep(5);
    assert.equal(row(a.workerId).awaitedMs, null);
    const bWaited = row(b.workerId).awaitedMs;
    assert.equal(typeof bWaited, 'number');
    await sleep(60);
    assert.ok(row(b.workerId).awaitedMs! >= bWaited! + 50, `${row(b.workerId).awaitedMs} ms waited, 60 ms after ${bWaited}`);
    b.peer.gradients(1, 'discriminator', zeros('discriminator'));
    for (const p of [a, b]) {
      await weightsOrDrop(p.peer);
      p.peer.gradients(1, 'generator', zeros('generator'));
    }
    assert.equal((await run).steps, 2);
    assert.deepEqual([coordinator.status().state, coordinator.status().etaSeconds], ['finished', null]);
    assert.deepEqual(coordinator.status().workers.map((w) => w.awaitedMs), [null, null], 'no round is open');
    await coordinator.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a progress line every --log-every steps and one at the last step, whatever --log-every (README: the progress line)', async () => {
    const { lines, run, peer, end } = await loggingRun('log-every', 3, 2);
    for (let step = 0; step < 3; step++) await answerStepWithZeros(step, peer);
    assert.equal((await run).steps, 3);
    assert.deepEqual(lines.filter((l) => /^step \d+\//.test(l)).map((l) => l.split(' d_loss=')[0]), ['step 2/3', 'step 3/3'], lines.join('\n'));
    await end();
  });

  test('a run that trains for seconds without a progress line says when the first comes, before it does: once, and not where steps are quick', async () => {
    const { lines, run, peer, end } = await loggingRun('first-line', 4, 1000);
    await answerStepWithZeros(0, peer);
    assert.deepEqual(lines.filter((l) => /^(?:no progress line yet at )?step \d+\//.test(l)), [], 'a quick first step: nothing yet');
    // A slow step, as the DCGAN's: the run has gone on past the notice's seconds with no line.
    await sleep(FIRST_LINE_NOTICE_SECONDS * 1000 + 200);
    for (let step = 1; step < 4; step++) await answerStepWithZeros(step, peer);
    assert.equal((await run).steps, 4);
    const said = lines.filter((l) => /^(?:no progress line yet at )?step \d+\//.test(l)).map((l) => l.split(' d_loss=')[0].replace(/\d+m\d+s$/, 'ETA'));
    assert.deepEqual(said, ['no progress line yet at step 2/4: the first comes at step 4 (--log-every 1000), in about ETA', 'step 4/4'], lines.join('\n'));
    await end();
  });

  test("a slow first step (the start-up: shards sent, kernels compiled) does not set the notice's time to the first line: the notice waits for a step after it", async () => {
    const { lines, run, peer, end } = await loggingRun('first-line-slow-start', 5, 1000);
    await sleep(FIRST_LINE_NOTICE_SECONDS * 1000 + 200);
    for (let step = 0; step < 5; step++) await answerStepWithZeros(step, peer);
    assert.equal((await run).steps, 5);
    // The steps after the first take moments: 4 more at the first step's pace would be 20 s.
    assert.deepEqual(lines.filter((l) => l.startsWith('no progress line yet')), ['no progress line yet at step 2/5: the first comes at step 5 (--log-every 1000), in about 0m00s'], lines.join('\n'));
    await end();
  });

  test('a coordinator whose lease on --out another has taken stops without writing there: no grid, checkpoint, generator or summary', async () => {
    const dir = path.join(out, 'lease-lost');
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(dir, 3), sampleEvery: 1, checkpointEvery: 1 }, (l) => lines.push(l));
    const run = coordinator.run();
    // As after this one froze for longer than the stale time.
    takeLeaseOver(dir);
    await answerOneStep(coordinator, 0);
    const summary = await run;
    assert.equal(summary.ok, false);
    for (const sub of ['samples', 'checkpoints', 'generator']) assert.deepEqual(fs.readdirSync(path.join(dir, sub)), [], sub);
    assert.ok(!fs.existsSync(path.join(dir, 'summary.json')));
    assert.ok(lines.some((l) => /another coordinator \(pid 1 on another-host, .*\) took over the lease on --out .*; this run stops without writing there/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /no outputs written after step 1$/.test(l)), lines.join('\n'));
    await coordinator.close();
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, LEASE_FILE), 'utf8')).token, 'theirs', 'the new holder keeps its lease');
  });

  test('a lease taken while a checkpoint is being written: the checkpoint never takes its name, and nothing is pruned', async () => {
    const dir = path.join(out, 'lease-lost-mid-write');
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(dir, 3), checkpointEvery: 1, keepCheckpoints: 1 }, (l) => lines.push(l));
    const run = coordinator.run();
    const undo = takeLeaseOverWhenOpening(/ckpt-000000002\.bin\.tmp-/, dir);
    try {
      const { peer } = await joinedPeer(coordinator);
      for (const step of [0, 1]) {
        for (const phase of ['discriminator', 'generator'] as const) {
          await weightsOrDrop(peer);
          peer.gradients(step, phase, zeros(phase));
        }
      }
      assert.equal((await run).ok, false);
    } finally {
      undo();
    }
    // Step 1's checkpoint stays: --keep-checkpoints 1 would have pruned it for step 2's.
    assert.deepEqual(fs.readdirSync(path.join(dir, 'checkpoints')), ['ckpt-000000001.bin']);
    assert.ok(!lines.some((l) => /^checkpoint .*ckpt-000000002/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /took over the lease on --out .*; this run stops without writing there/.test(l)), lines.join('\n'));
    await coordinator.close();
  });

  test('a lease taken while a grid, the generator or summary.json is being written: that file never takes its name, and nothing after it is written', async () => {
    // Each write is guarded as the checkpoint's is: a fsync that stalls on a network volume past a takeover would
    // otherwise put this run's file into the new holder's outputs (its finished run's generator, replaced).
    for (const [target, written] of [
      [/samples\/step-000001\.png\.tmp-/, []],
      [/generator\/weights\.bin\.tmp-/, ['samples', 'checkpoints']],
      [/summary\.json\.tmp-/, ['samples', 'checkpoints', 'generator']],
    ] as const) {
      const dir = path.join(out, `lease-lost-mid-${String(target).slice(1, 8)}`);
      const lines: string[] = [];
      const coordinator = await Coordinator.start({ ...config(dir, 1), sampleEvery: 1 }, (l) => lines.push(l));
      const run = coordinator.run();
      const undo = takeLeaseOverWhenOpening(target, dir);
      try {
        await answerOneStep(coordinator, 0);
        assert.equal((await run).ok, false);
      } finally {
        undo();
      }
      await coordinator.close();
      // (A directory left empty is removed with the lease's release.)
      const held = ['samples', 'checkpoints', 'generator'].filter((sub) => fs.existsSync(path.join(dir, sub)) && fs.readdirSync(path.join(dir, sub)).length > 0);
      assert.deepEqual(held, written, `${target}: ${lines.join('\n')}`);
      assert.ok(!fs.existsSync(path.join(dir, 'summary.json')), String(target));
      assert.deepEqual(fs.readdirSync(dir).filter((n) => n.includes('.tmp-')), [], 'no temporary file left');
      assert.ok(lines.some((l) => /no outputs written after step 1$/.test(l)), lines.join('\n'));
      assert.equal(JSON.parse(fs.readFileSync(path.join(dir, LEASE_FILE), 'utf8')).token, 'theirs', 'the new holder keeps its lease');
    }
  });

  test('a resumed finished run whose lease is taken while it rewrites summary.json fails, and says the file was not rewritten', async () => {
    const dir = path.join(out, 'lease-lost-kept-outputs');
    const dataDir = blankMnistDir(256);
    const finished = await Coordinator.start({ ...config(dir, 1), dataDir, checkpointEvery: 1 }, () => {});
    const finishedRun = finished.run();
    await answerOneStep(finished, 0);
    assert.equal((await finishedRun).ok, true);
    await finished.close();
    // An earlier resume failed: this one, finding the training finished, would mark it ok: true again.
    const file = path.join(dir, 'summary.json');
    fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), ok: false }));
    const lines: string[] = [];
    const again = await Coordinator.start({ ...config(dir, 1), dataDir, resume: true }, (l) => lines.push(l));
    const undo = takeLeaseOverWhenOpening(/summary\.json\.tmp-/, dir);
    try {
      assert.equal((await again.run()).ok, false);
    } finally {
      undo();
    }
    await again.close();
    assert.equal(JSON.parse(fs.readFileSync(file, 'utf8')).ok, false, 'the file as it was');
    assert.ok(lines.some((l) => /took over the lease on --out .*: \S+summary\.json was not rewritten$/.test(l)), lines.join('\n'));
    assert.ok(!lines.some((l) => /says ok: true again/.test(l)), lines.join('\n'));
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a lease taken while the coordinator starts (frozen there past the stale time): the start fails with OUT_IN_USE and removes nothing', async () => {
    // An earlier run that left no checkpoint: a start from step 0 removes its grids, evaluations and summary.
    const dir = path.join(out, 'lease-lost-at-start');
    fs.mkdirSync(path.join(dir, 'samples'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'samples', 'step-000002.png'), 'grid');
    fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify({ steps: 2, ok: true }));
    const dataDir = blankMnistDir(100);
    const refused = (e: unknown) => e instanceof GanfleetError && e.code === 'OUT_IN_USE' && /took over the lease on --out .* while this coordinator started; it stopped before removing anything there/.test(e.message);
    // While it loads MNIST, before it listens.
    const undo = takeLeaseOverWhenOpening((file) => file.startsWith(dataDir), dir);
    try {
      await assert.rejects(Coordinator.start({ ...config(dir, 3), dataDir }, () => {}), refused);
    } finally {
      undo();
    }
    const kept = () => {
      assert.deepEqual(fs.readdirSync(path.join(dir, 'samples')), ['step-000002.png']);
      assert.ok(fs.existsSync(path.join(dir, 'summary.json')));
      assert.equal(JSON.parse(fs.readFileSync(path.join(dir, LEASE_FILE), 'utf8')).token, 'theirs');
    };
    kept();
    // While it binds its ports: those it bound are closed again, and a worker that joined is told to stop.
    fs.rmSync(path.join(dir, LEASE_FILE));
    const proto = Coordinator.prototype as unknown as { listen(): Promise<void> };
    const listen = proto.listen;
    let port = 0;
    proto.listen = async function (this: Coordinator) {
      await listen.call(this);
      port = this.port;
      takeLeaseOver(dir);
    };
    try {
      await assert.rejects(Coordinator.start({ ...config(dir, 3), dataDir }, () => {}), refused);
    } finally {
      proto.listen = listen;
    }
    kept();
    assert.ok(port > 0);
    const connected = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => (socket.destroy(), resolve(true)));
      socket.on('error', () => resolve(false));
    });
    assert.equal(connected, false, `port ${port} still takes connections`);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('--sample-every N writes a grid every N steps and at the end; 0 writes only the final one', async () => {
    for (const [sampleEvery, grids] of [
      [2, ['step-000002.png', 'step-000003.png']],
      [0, ['step-000003.png']],
    ] as const) {
      const dir = path.join(out, `sample-every-${sampleEvery}`);
      const coordinator = await Coordinator.start({ ...config(dir, 3), sampleEvery }, () => {});
      const run = coordinator.run();
      const { peer } = await joinedPeer(coordinator);
      for (let step = 0; step < 3; step++) {
        await weightsOrDrop(peer);
        peer.gradients(step, 'discriminator', new Float32Array(D_GRADIENTS));
        await weightsOrDrop(peer);
        peer.gradients(step, 'generator', new Float32Array(G_SIZE));
      }
      const summary = await run;
      assert.deepEqual(summary.samples.map((f) => path.basename(f)), grids);
      assert.deepEqual(fs.readdirSync(path.join(dir, 'samples')).sort(), grids);
      await coordinator.close();
    }
  });

  test('a resumed run lists the grids from before its checkpoint with its own, in summary.json and on the status page; those after it are removed', async () => {
    const dir = path.join(out, 'resumed-grids');
    plantCheckpoint(dir, 2);
    // Grids of steps 1 and 2, and of steps 3 and 5 that a killed run wrote after its checkpoint: the resumed run
    // writes its own step 3, and step 5, which it does not reach, would be listed by a later resume as its own.
    fs.mkdirSync(path.join(dir, 'samples'), { recursive: true });
    for (const step of [1, 2, 3, 5]) fs.writeFileSync(path.join(dir, 'samples', `step-00000${step}.png`), 'grid');
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(dir, 3), resume: true, sampleEvery: 1, metricsPort: 0 }, (l) => lines.push(l));
    assert.ok(lines.some((l) => /^removed step-000003\.png, step-000005\.png from \S+samples: they show weights after this checkpoint$/.test(l)), lines.join('\n'));
    assert.ok(!fs.existsSync(path.join(dir, 'samples', 'step-000005.png')));
    const run = coordinator.run();
    await answerOneStep(coordinator, 2);
    const summary = await run;
    const grids = ['step-000001.png', 'step-000002.png', 'step-000003.png'];
    assert.deepEqual(fs.readdirSync(path.join(dir, 'samples')).sort(), grids);
    assert.deepEqual(summary.samples.map((f) => path.basename(f)), grids);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')).samples.map((f: string) => path.basename(f)), grids);
    const status = await (await fetch(`http://127.0.0.1:${coordinator.metricsPort}/api/status`)).json();
    assert.deepEqual(status.samples, grids);
    assert.deepEqual(status.run, { model: 'mlp', loss: 'bce', batchSize: 128, lr: 0.001, beta1: 0.9, beta2: 0.999, dUpdates: 2, seed: 1, wireDtype: 'float32' });
    assert.notEqual(fs.readFileSync(path.join(dir, 'samples', 'step-000003.png'), 'utf8'), 'grid', 'step 3 drawn anew');
    await coordinator.close();
  });

  test('/api/status lists at most 500 grids however long the run, spread over it from the first to the newest', async () => {
    const dir = path.join(out, 'many-grids');
    plantCheckpoint(dir, 3000);
    fs.mkdirSync(path.join(dir, 'samples'), { recursive: true });
    const all = Array.from({ length: 3000 }, (_, i) => `step-${String(i + 1).padStart(6, '0')}.png`);
    for (const name of all) fs.writeFileSync(path.join(dir, 'samples', name), 'grid');
    const coordinator = await Coordinator.start({ ...config(dir, 3001), resume: true, metricsPort: 0 }, () => {});
    try {
      const status = await (await fetch(`http://127.0.0.1:${coordinator.metricsPort}/api/status`)).json();
      assert.equal(status.samples.length, 500, `${status.samples.length} grids listed`);
      assert.equal(status.samples[0], all[0]);
      assert.equal(status.samples.at(-1), all.at(-1));
      assert.deepEqual([...status.samples].sort(), status.samples, 'oldest first');
      // Spread evenly: 3,000 grids in 500 are about 6 steps apart everywhere, not bunched at either end.
      const steps: number[] = status.samples.map((name: string) => Number(/\d+/.exec(name)![0]));
      for (let i = 1; i < steps.length; i++) assert.ok(steps[i] - steps[i - 1] >= 5 && steps[i] - steps[i - 1] <= 7, `${status.samples[i - 1]} then ${status.samples[i]}`);
    } finally {
      await coordinator.close();
    }
  });

  test('a resumed run\'s images/s in summary.json counts the images it trained, not those its checkpoint holds', async () => {
    const dir = path.join(out, 'resumed-rate');
    const dataDir = blankMnistDir(256);
    // 50 steps, 6,400 images, before the checkpoint: counted in, they would make the rate 51 times what it is.
    plantCheckpoint(dir, 50);
    const coordinator = await Coordinator.start({ ...config(dir, 51), dataDir, resume: true }, () => {});
    const run = coordinator.run();
    await answerOneStep(coordinator, 50);
    const summary = await run;
    assert.deepEqual([summary.steps, summary.stepsThisRun, summary.resumedFrom], [51, 1, 50]);
    // images/s is over the steps' own time, which msPerStep is too: one step of 128 images.
    const images = (summary.imagesPerSecond * summary.msPerStep * summary.stepsThisRun) / 1000;
    assert.ok(Math.abs(images - 128) < 1e-6, JSON.stringify(summary));
    await coordinator.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a resume that trains nothing (the run was finished) names the checkpoint it resumed in summary.json, as an absolute path under a relative --out, and draws the final grid that was missing', async () => {
    const dir = path.join(out, 'resumed-finished');
    plantCheckpoint(dir, 3);
    const lines: string[] = [];
    // Another batch size and fewer workers than the checkpoint's: what would warn, were there steps to train.
    const coordinator = await Coordinator.start({ ...config(path.relative(process.cwd(), dir), 3), resume: true, batchSize: 64 }, (l) => lines.push(l));
    assert.ok(lines.some((l) => /^resumed from \S+ckpt-000000003\.bin at step 3, which --steps 3 does not pass$/.test(l)), lines.join('\n'));
    assert.ok(!lines.some((l) => /warning|bit for bit|planned afresh/.test(l)), lines.join('\n'));
    const summary = await coordinator.run();
    assert.equal(summary.steps, 3);
    assert.equal(summary.stepsThisRun, 0);
    const file = path.join(dir, 'checkpoints', 'ckpt-000000003.bin');
    assert.equal(summary.checkpoint, file);
    assert.equal(summary.generator, path.join(dir, 'generator'));
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')).checkpoint, file);
    // The final grid too: the checkpoint of the last step is written before it, and a kill between them left none.
    const grid = path.join(dir, 'samples', 'step-000003.png');
    assert.deepEqual(summary.samples, [grid]);
    const drawn = fs.readFileSync(grid);
    await coordinator.close();
    // Its outputs now show the checkpoint's step, and a resume after it leaves them as they are.
    const again = await Coordinator.start({ ...config(dir, 3), resume: true }, () => {});
    assert.deepEqual((await again.run()).samples, [grid]);
    assert.deepEqual(fs.readFileSync(grid), drawn);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'samples')), ['step-000003.png']);
    await again.close();
  });

  test('a sample grid removed from disk (an operator cleaning up) is a 404 on the status page, not a crash', async () => {
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'removed-grid'), 1), metricsPort: 0, sampleEvery: 1 }, () => {});
    const run = coordinator.run();
    await answerOneStep(coordinator, 0);
    const summary = await run;
    const url = `http://127.0.0.1:${coordinator.metricsPort}/samples/step-000001.png`;
    assert.equal((await fetch(url)).status, 200);
    fs.rmSync(summary.samples[0]);
    assert.equal((await fetch(url)).status, 404);
    assert.equal((await fetch(`http://127.0.0.1:${coordinator.metricsPort}/healthz`)).status, 200);
    await coordinator.close();
  });

  test('metrics before there is a value (README: Metrics): no checkpoint is step -1 at time 0, and the last step\'s figures and the evaluation are NaN, not 0', async () => {
    const text = await new CoordinatorMetrics().registry.metrics();
    assert.equal(metricValue(text, 'ganfleet_last_checkpoint_step'), -1);
    assert.equal(metricValue(text, 'ganfleet_last_checkpoint_timestamp_seconds'), 0);
    for (const k of ['d_loss', 'g_loss', 'd_real', 'd_fake', 'fid', 'mnist_score']) assert.ok(Number.isNaN(metricValue(text, `ganfleet_${k}`)), k);
  });

  test("metrics: counters count this process's work from 0, gauges give the run's step, its target, its newest checkpoint and the training since; every rejection reason has a series from the start", async () => {
    const dir = path.join(out, 'resumed-metrics');
    plantCheckpoint(dir, 7);
    // Written in 1970, as far as the file system knows.
    fs.utimesSync(path.join(dir, 'checkpoints', 'ckpt-000000007.bin'), 0, 0);
    const coordinator = await Coordinator.start({ ...config(dir, 9), resume: true }, () => {});
    const scrape = async () => coordinator.metrics.registry.metrics();
    let text = await scrape();
    // A resumed process has done no work yet: a counter that started at the checkpoint's 7 would make rate() count those 7 steps again.
    assert.equal(metricValue(text, 'ganfleet_steps_total'), 0);
    assert.equal(metricValue(text, 'ganfleet_images_total'), 0);
    assert.equal(metricValue(text, 'ganfleet_step'), 7);
    assert.equal(metricValue(text, 'ganfleet_target_steps'), 9);
    assert.equal(metricValue(text, 'ganfleet_last_checkpoint_step'), 7);
    // The resume's time, not the file's: a checkpoint from last week is not a week of work at risk.
    assert.ok(Math.abs(metricValue(text, 'ganfleet_last_checkpoint_timestamp_seconds')! - Date.now() / 1000) < 60);
    assert.equal(metricValue(text, 'ganfleet_unsaved_training_seconds'), 0);
    for (const reason of REJECT_REASONS) assert.match(text, new RegExp(`^ganfleet_rejected_messages_total\\{reason="${reason}"\\} 0$`, 'm'));
    // Before the run, so before its first step starts (waiting for the worker is a pause, not training).
    const started = performance.now();
    const run = coordinator.run();
    const { peer } = await joinedPeer(coordinator);
    await weightsOrDrop(peer);
    peer.gradients(7, 'discriminator', new Float32Array(D_GRADIENTS));
    await weightsOrDrop(peer);
    await new Promise((r) => setTimeout(r, 300));
    peer.gradients(7, 'generator', new Float32Array(G_SIZE));
    await weightsOrDrop(peer);
    // Step 8 done, no checkpoint since the resume (--checkpoint-every 0): its training time is at risk.
    const unsaved = metricValue(await scrape(), 'ganfleet_unsaved_training_seconds')!;
    assert.ok(unsaved >= 0.3 && unsaved <= (performance.now() - started) / 1000, `${unsaved} s unsaved`);
    // Each figure of the last step from where it comes: D's loss and D(x) from the D round, G's loss and D(G(z)) from the G round.
    peer.gradients(8, 'discriminator', new Float32Array(D_GRADIENTS), undefined, { loss: 0.25, dReal: 0.875, dFake: 0.125 });
    await weightsOrDrop(peer);
    peer.gradients(8, 'generator', new Float32Array(G_SIZE), undefined, { loss: 3.5, dFake: 0.375 });
    const summary = await run;
    text = await scrape();
    const last = { dLoss: 0.25, gLoss: 3.5, dReal: 0.875, dFake: 0.375 };
    assert.deepEqual({ dLoss: summary.last?.dLoss, gLoss: summary.last?.gLoss, dReal: summary.last?.dReal, dFake: summary.last?.dFake }, last);
    assert.deepEqual(['d_loss', 'g_loss', 'd_real', 'd_fake'].map((k) => metricValue(text, `ganfleet_${k}`)), Object.values(last));
    // The status page's curves: each step's figures at the step they end (9 is the last), not the step before.
    const history = (coordinator as unknown as { history: History }).history.toJSON();
    assert.deepEqual(history.points.map((p) => p.step), [8, 9]);
    assert.deepEqual(history.points[1], { step: 9, ...last });
    // summary.json's per-step figures are this process's counters over its steps (README: Metrics).
    assert.equal(summary.stepsThisRun, 2);
    assert.ok(summary.bytesSentPerStep > 0 && summary.bytesReceivedPerStep > 0, JSON.stringify(summary));
    assert.equal(summary.bytesSentPerStep * 2, metricValue(text, 'ganfleet_sent_bytes_total'));
    assert.equal(summary.bytesReceivedPerStep * 2, metricValue(text, 'ganfleet_received_bytes_total'));
    for (const part of ['encode', 'compute', 'transfer', 'aggregate', 'optimizer'] as const) {
      const seconds = metricValue(text, `ganfleet_round_part_seconds_total{part="${part}"}`)!;
      assert.ok(Math.abs(summary.msPerStepByPhase[part] - (seconds * 1000) / 2) < 1e-6, `${part}: ${summary.msPerStepByPhase[part]} ms/step, ${seconds} s in all`);
    }
    // Each phase's rounds in their own series, in seconds: step 8's G round waited 300 ms for its gradients.
    for (const phase of ['discriminator', 'generator']) assert.equal(metricValue(text, `ganfleet_round_duration_seconds_count{phase="${phase}"}`), 2, phase);
    const gRoundSeconds = metricValue(text, 'ganfleet_round_duration_seconds_sum{phase="generator"}')!;
    assert.ok(gRoundSeconds >= 0.3 && gRoundSeconds <= (performance.now() - started) / 1000, `${gRoundSeconds} s in G rounds`);
    // Each gradient reports a compute time of 1 ms: the slowest worker's, per round.
    assert.ok(Math.abs(summary.msPerStepByPhase.compute - 2) < 1e-6, JSON.stringify(summary.msPerStepByPhase));
    assert.equal(metricValue(text, 'ganfleet_steps_total'), 2);
    assert.equal(metricValue(text, 'ganfleet_images_total'), 256);
    assert.equal(metricValue(text, 'ganfleet_step'), 9);
    assert.equal(metricValue(text, 'ganfleet_last_checkpoint_step'), 9);
    // The final checkpoint holds it all.
    assert.equal(metricValue(text, 'ganfleet_unsaved_training_seconds'), 0);
    assert.ok(Math.abs(metricValue(text, 'ganfleet_last_checkpoint_timestamp_seconds')! - Date.now() / 1000) < 60);
    await coordinator.close();
  });

  test('a resumed coordinator hands the checkpoint slots, images and seed, to the first workers to join; a worker beyond them gets the images left and a new seed', { timeout: 60_000 }, async () => {
    const dir = path.join(out, 'restored-slots');
    const train = loadMnist('train');
    const even = Uint32Array.from({ length: 30000 }, (_, i) => 2 * i);
    const odd = Uint32Array.from({ length: 30000 }, (_, i) => 2 * i + 1);
    plantCheckpoint(dir, 7, {
      imagesTotal: 7 * 256, config: { ...config(dir, 8), trainingSet: imagesFingerprint(train) }, nextWorker: 3,
      shards: [{ indices: even, seed: 111 }, { indices: odd, seed: 222 }],
    });
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(dir, 8), resume: true, startWorkers: 3 }, (l) => lines.push(l));
    assert.ok(!lines.some((l) => /warning/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /at step 7; the checkpoint's 2 shard slots \(images and seed\) go to the first workers to join$/.test(l)), lines.join('\n'));
    const run = coordinator.run();
    const peers = [];
    for (let i = 0; i < 3; i++) peers.push(await joinedPeer(coordinator));
    const skipped: CoordinatorMessage[][] = [[], [], []];
    await Promise.all(peers.map((x, i) => weightsOrDrop(x.peer, skipped[i])));
    const shards = skipped.map((ms) => ms.find((m) => m.type === 'shard')!).map((m) => (m.type === 'shard' ? m : assert.fail('no shard')));
    assert.deepEqual(shards.map((m) => [m.count, m.keep]), [[20000, 0], [20000, 0], [20000, 0]]);
    assert.deepEqual(shards.slice(0, 2).map((m) => m.seed), [111, 222]);
    assert.ok(![111, 222].includes(shards[2].seed));
    // Each restored slot keeps the start of its images, in its order; the third worker gets images neither kept.
    assert.ok(Buffer.from(shards[0].images).equals(gatherImages(train.images, even.subarray(0, 20000))), 'slot 1 images');
    assert.ok(Buffer.from(shards[1].images).equals(gatherImages(train.images, odd.subarray(0, 20000))), 'slot 2 images');
    assert.ok(lines.some((l) => /shard plan 1: w3=20000 w4=20000 w5=20000; 60000 images sent; 2 slots from the checkpoint$/.test(l)), lines.join('\n'));
    for (const x of peers) x.peer.gradients(7, 'discriminator', new Float32Array(D_GRADIENTS));
    await Promise.all(peers.map((x) => weightsOrDrop(x.peer)));
    for (const x of peers) x.peer.gradients(7, 'generator', new Float32Array(G_SIZE));
    assert.equal((await run).steps, 8);
    await coordinator.close();
  });

  test('a training set larger than one shard a worker accepts waits for a second worker, then splits it', { timeout: 60_000 }, async () => {
    // One image more than a 128 MB frame holds in one shard.
    const data = blankMnistDir(171_113);
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'big-set'), 1), dataDir: data }, (l) => lines.push(l));
    assert.ok(lines.some((l) => /the 171113 training images need at least 2 workers/.test(l)), lines.join('\n'));
    const run = coordinator.run();
    const a = await joinedPeer(coordinator);
    // Alone, it is sent nothing: a shard of all 171,113 images would be refused by it.
    const early = await Promise.race([a.peer.next(), new Promise<null>((r) => setTimeout(() => r(null), 1000))]);
    assert.equal(early, null, `a lone worker was sent ${early?.type}`);
    const b = await joinedPeer(coordinator);
    const skipped: CoordinatorMessage[][] = [[], []];
    await Promise.all([weightsOrDrop(a.peer, skipped[0]), weightsOrDrop(b.peer, skipped[1])]);
    const counts = skipped.map((ms) => ms.filter((m) => m.type === 'shard').map((m) => (m.type === 'shard' ? m.count : 0)));
    assert.deepEqual(counts, [[85557], [85556]]);
    for (const p of [a, b]) p.peer.gradients(0, 'discriminator', zeros('discriminator'));
    await Promise.all([weightsOrDrop(a.peer), weightsOrDrop(b.peer)]);
    for (const p of [a, b]) p.peer.gradients(0, 'generator', zeros('generator'));
    assert.equal((await run).steps, 1);
    await coordinator.close();
    fs.rmSync(data, { recursive: true, force: true });
  });

  test('a straggler is discarded once per request; a copy, or a round never asked of the worker, is an offence', async () => {
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'late'), 2), startWorkers: 2 }, (l) => lines.push(l));
    const run = coordinator.run();
    const a = await joinedPeer(coordinator);
    const b = await joinedPeer(coordinator);
    await Promise.all([weightsOrDrop(a.peer), weightsOrDrop(b.peer)]);
    // An offence costs a its answer to the open D round, which closes on b's alone.
    a.peer.send(encode(message<Mail>({ type: 'mail', bytes: 100 })));
    const mailRefused = await a.peer.next();
    assert.ok(mailRefused.type === 'error' && mailRefused.code === 'PROTOCOL_UNEXPECTED', JSON.stringify(mailRefused));
    b.peer.gradients(0, 'discriminator', zeros('discriminator'));
    assert.equal((await weightsOrDrop(a.peer)).phase, 'generator');
    const late = async () => (await coordinator.metrics.lateGradients.get()).values[0]?.value ?? 0;
    a.peer.gradients(0, 'discriminator', zeros('discriminator'));
    while ((await late()) === 0) await new Promise((r) => setTimeout(r, 5));
    assert.ok(lines.some((l) => l === `discarded late discriminator gradients for step 1 from ${a.workerId}`), lines.join('\n'));
    a.peer.gradients(0, 'discriminator', zeros('discriminator'));
    const copy = await a.peer.next();
    assert.ok(copy.type === 'error' && copy.code === 'PROTOCOL_WRONG_STEP' && /step 1 \(discriminator\) answer no open request to w/.test(copy.message), JSON.stringify(copy));
    // The copy cost a its answer to step 0's G round, as any offence does; with two offences it still takes part in step 1.
    b.peer.gradients(0, 'generator', zeros('generator'));
    await Promise.all([weightsOrDrop(a.peer), weightsOrDrop(b.peer)]);
    for (const p of [a, b]) p.peer.gradients(1, 'discriminator', zeros('discriminator'));
    await Promise.all([weightsOrDrop(a.peer), weightsOrDrop(b.peer)]);
    // Step 1's G round is open. A newcomer, asked nothing yet, replays rounds that closed.
    const c = await joinedPeer(coordinator);
    for (const [step, phase] of [[0, 'generator'], [1, 'discriminator']] as const) {
      c.peer.gradients(step, phase, zeros(phase));
      const replay = await c.peer.next();
      assert.ok(replay.type === 'error' && replay.code === 'PROTOCOL_WRONG_STEP' && /answer no open request/.test(replay.message), JSON.stringify(replay));
    }
    assert.equal(await late(), 1, 'only the one straggler counts as late');
    for (const p of [a, b]) p.peer.gradients(1, 'generator', zeros('generator'));
    const summary = await run;
    assert.equal(summary.steps, 2);
    await coordinator.close();
  });

  test('hellos refused because the coordinator is full are answered every time and logged once a minute per address', async () => {
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'full'), 1), maxWorkers: 1, startWorkers: 2 }, (l) => lines.push(l));
    await joinedPeer(coordinator);
    for (let i = 0; i < 5; i++) {
      const extra = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
      await extra.open();
      extra.hello();
      const refused = await extra.next();
      assert.ok(refused.type === 'error' && refused.code === 'COORDINATOR_FULL', JSON.stringify(refused));
      assert.equal(await extra.closed, 1013);
    }
    assert.equal(lines.filter((l) => /^refused 127\.0\.0\.1:\d+ \("scripted"/.test(l)).length, 1, lines.join('\n'));
    coordinator.requestStop('test over');
    await coordinator.close();
  });

  test("a training set of fewer images than --max-workers admits a worker per image: the next hello is refused as full, and told why", async () => {
    const dataDir = blankMnistDir(2);
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'few-images'), 1), maxWorkers: 8, startWorkers: 2, dataDir }, () => {});
    await joinedPeer(coordinator);
    await joinedPeer(coordinator);
    const extra = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
    await extra.open();
    extra.hello();
    const refused = await extra.next();
    assert.ok(refused.type === 'error' && refused.code === 'COORDINATOR_FULL' && refused.message === "the training set's 2 images give at most 2 workers a shard", JSON.stringify(refused));
    assert.equal(await extra.closed, 1013);
    coordinator.requestStop('test over');
    await coordinator.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("a worker that leaves hands its images on: at the next step the one left keeps its shard and is sent the other's", async () => {
    const dataDir = blankMnistDir(512);
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'handover'), 2), startWorkers: 2, dataDir }, () => {});
    const run = coordinator.run();
    const a = await joinedPeer(coordinator);
    const b = await joinedPeer(coordinator);
    const first: CoordinatorMessage[] = [];
    await Promise.all([weightsOrDrop(a.peer, first), weightsOrDrop(b.peer)]);
    assert.ok(first.some((m) => m.type === 'shard' && m.count === 256 && m.keep === 0), JSON.stringify(first.map((m) => m.type)));
    b.peer.ws.close();
    await b.peer.closed;
    a.peer.gradients(0, 'discriminator', zeros('discriminator'));
    assert.equal((await weightsOrDrop(a.peer)).phase, 'generator');
    a.peer.gradients(0, 'generator', zeros('generator'));
    const between: CoordinatorMessage[] = [];
    const next = await weightsOrDrop(a.peer, between);
    assert.ok(next.step === 1 && next.phase === 'discriminator');
    const shard = between.find((m) => m.type === 'shard');
    assert.ok(shard?.type === 'shard' && shard.count === 512 && shard.keep === 256 && shard.images.length === 256 * IMAGE_SIZE, JSON.stringify(between.map((m) => (m.type === 'shard' ? { count: m.count, keep: m.keep } : m.type))));
    a.peer.gradients(1, 'discriminator', zeros('discriminator'));
    assert.equal((await weightsOrDrop(a.peer)).phase, 'generator');
    a.peer.gradients(1, 'generator', zeros('generator'));
    assert.equal((await run).steps, 2);
    await coordinator.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  /**
   * A worker process (pid 4242) that computes longer than --round-timeout 1 s: `peer` is asked `step`'s D round,
   * dropped, and the same process comes back, three times. Its last return.
   */
  async function droppedAndBack(coordinator: Coordinator, lines: string[], step: number, peer: ScriptedPeer): Promise<ScriptedPeer> {
    const dropped = () => lines.filter((l) => l.includes(` left (no discriminator gradients for step ${step} within --round-timeout 1 s)`)).length;
    for (let i = 1; i <= 3; i++) {
      await weightsOrDrop(peer);
      for (let j = 0; j < 400 && dropped() < i; j++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(dropped(), i, lines.join('\n'));
      await peer.closed;
      ({ peer } = await joinedPeer(coordinator, true, 4242));
    }
    return peer;
  }

  test('a round asked again whose workers keep coming back alive after its deadline dropped them ends the run as failed, saying what to raise; workers that crash are asked again for as long as they come back', { timeout: 60_000 }, async () => {
    const lines: string[] = [];
    const dataDir = blankMnistDir(256);
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'outlasted'), 10), roundTimeoutSeconds: 1, dataDir }, (l) => lines.push(l));
    const run = coordinator.run();
    // Three tries whose worker crashes: nothing says it lived, so it is asked again each time.
    for (let i = 0; i < 3; i++) {
      const { peer } = await joinedPeer(coordinator, true, 4242);
      await weightsOrDrop(peer);
      peer.ws.terminate();
      await peer.closed;
    }
    // Then three whose worker is alive but slower than --round-timeout: dropped, the same process comes back.
    // Its third return ends the run: it is told so.
    const peer = await droppedAndBack(coordinator, lines, 1, (await joinedPeer(coordinator, true, 4242)).peer);
    const summary = await run;
    await coordinator.close();
    await peer.closed;
    const log = lines.join('\n');
    assert.equal(lines.filter((l) => l === 'no worker answered the discriminator round of step 1; asking again').length, 6, log);
    assert.equal(summary.ok, false, log);
    assert.equal(summary.steps, 0);
    assert.match(
      summary.stopReason,
      /^6 tries of step 1's discriminator round went unanswered, and 3 times a worker dropped at --heartbeat 5 s or --round-timeout 1 s while asked it came back alive \(the slowest 1\.\d s after it was asked\): rounds outlast those deadlines on this machine, so asking again would never end; start again with --round-timeout [34] or more$/,
    );
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a run that fails for a round outlasting its deadlines names the checkpoint it leaves, written at the end (none was due before): --resume continues from it', { timeout: 60_000 }, async () => {
    const lines: string[] = [];
    const dataDir = blankMnistDir(256);
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'outlasted-checkpoint'), 10), roundTimeoutSeconds: 1, dataDir }, (l) => lines.push(l));
    const run = coordinator.run();
    let { peer } = await joinedPeer(coordinator, true, 4242);
    for (const phase of ['discriminator', 'generator'] as const) {
      await weightsOrDrop(peer);
      peer.gradients(0, phase, zeros(phase));
    }
    // Step 2's D round: the same process is dropped at --round-timeout and comes back, three times.
    peer = await droppedAndBack(coordinator, lines, 2, peer);
    const summary = await run;
    await coordinator.close();
    await peer.closed;
    const log = lines.join('\n');
    assert.equal(summary.ok, false, log);
    assert.equal(summary.steps, 1);
    assert.match(path.basename(summary.checkpoint ?? ''), /^ckpt-000000001\.bin$/, log);
    const named = / --resume continues from (\S+)$/.exec(summary.stopReason);
    assert.ok(named, summary.stopReason);
    assert.equal(path.resolve(named[1]), summary.checkpoint);
    assert.ok(fs.existsSync(named[1]));
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("a straggler's answer that comes after its deadline dropped it is counted late and not acted on", async () => {
    const lines: string[] = [];
    // A small training set: with MNIST's two 23.5 MB shards, b's arriving in this same process holds up a's
    // answer (the Promise.all below) past a's 1 s deadline on a busy machine, and a is dropped instead.
    const dataDir = blankMnistDir(512);
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'dropped-late'), 1), startWorkers: 2, roundTimeoutSeconds: 1, dataDir }, (l) => lines.push(l));
    const run = coordinator.run();
    const a = await joinedPeer(coordinator);
    const b = await joinedPeer(coordinator);
    await Promise.all([weightsOrDrop(a.peer), weightsOrDrop(b.peer)]);
    a.peer.gradients(0, 'discriminator', zeros('discriminator'));
    // b misses the deadline, frozen as a stopped process is: it reads nothing, so it answers before it hears of its drop.
    (b.peer.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const dropped = `${b.workerId} left (no discriminator gradients for step 1 within --round-timeout 1 s)`;
    const wasDropped = () => lines.some((l) => l.startsWith(dropped));
    for (let i = 0; i < 400 && !wasDropped(); i++) await new Promise((r) => setTimeout(r, 5));
    assert.ok(wasDropped(), lines.join('\n'));
    b.peer.gradients(0, 'discriminator', zeros('discriminator'));
    // A copy of it answers no request left: no second count or line (a dropped peer adds no more lines than it had requests).
    b.peer.gradients(0, 'discriminator', zeros('discriminator'));
    const late = async () => (await coordinator.metrics.lateGradients.get()).values[0]?.value ?? 0;
    for (let i = 0; i < 400 && (await late()) === 0; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(await late(), 1);
    assert.ok(lines.includes(`discarded late discriminator gradients for step 1 from ${b.workerId}, which was dropped before they came`), lines.join('\n'));
    // Alive, only slow: what to change is said once a run.
    assert.equal(lines.filter((l) => l.startsWith(`${b.workerId} was alive when dropped: only slow, or its link stalled for a while;`) && l.includes('a larger --heartbeat and --round-timeout')).length, 1, lines.join('\n'));
    const g = await weightsOrDrop(a.peer);
    assert.equal(g.phase, 'generator');
    a.peer.gradients(0, 'generator', zeros('generator'));
    assert.equal((await run).steps, 1);
    assert.equal(await late(), 1);
    assert.equal(lines.filter((l) => l.startsWith('discarded late')).length, 1, lines.join('\n'));
    await coordinator.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("a dropped straggler's mailed answer is logged late with the round it answers", async () => {
    const lines: string[] = [];
    // A small training set, as above: a's 1 s deadline must not run while a shard crosses this process.
    const dataDir = blankMnistDir(512);
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'dropped-late-mail'), 4), startWorkers: 2, roundTimeoutSeconds: 1, dataDir }, (l) => lines.push(l));
    const run = coordinator.run();
    const dir = makeMailboxDir('worker');
    const [a, b] = await Promise.all(['a', 'b'].map((name) => mailboxPeer(coordinator, dir, name)));
    // Both answer until b is asked by mail; then b freezes past its deadline.
    let asked: Weights;
    for (;;) {
      const [forA, forB] = await Promise.all([nextWeights(a.peer, a.inbox), nextWeights(b.peer, b.inbox)]);
      a.peer.gradients(forA.weights.step, forA.weights.phase, zeros(forA.weights.phase), forA.mailed ? a.outbox : undefined);
      if (forB.mailed) {
        asked = forB.weights;
        break;
      }
      b.peer.gradients(forB.weights.step, forB.weights.phase, zeros(forB.weights.phase));
    }
    (b.peer.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const wasDropped = () => lines.some((l) => l.startsWith(`${b.welcome.workerId} left (no ${asked.phase} gradients`));
    for (let i = 0; i < 400 && !wasDropped(); i++) await new Promise((r) => setTimeout(r, 5));
    assert.ok(wasDropped(), lines.join('\n'));
    b.peer.gradients(asked.step, asked.phase, zeros(asked.phase), b.outbox);
    const late = `discarded late ${asked.phase} gradients for step ${asked.step + 1} (by mail) from ${b.welcome.workerId}, which was dropped before they came`;
    for (let i = 0; i < 400 && !lines.includes(late); i++) await new Promise((r) => setTimeout(r, 5));
    assert.ok(lines.includes(late), lines.join('\n'));
    assert.equal((await coordinator.metrics.lateGradients.get()).values[0]?.value, 1);
    coordinator.requestStop('test over');
    a.peer.ws.close();
    await run;
    await coordinator.close();
    for (const p of [a, b]) {
      p.inbox.close();
      p.outbox.close();
    }
    removeMailboxDir(dir);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('the status page shows a peer\'s name and backend as its log lines do: cut, with control and bidirectional characters escaped', async () => {
    const dataDir = blankMnistDir(256);
    // The peer never answers: a short --round-timeout lets the stop at the end drop it instead of waiting 30 s.
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'status-names'), 1), roundTimeoutSeconds: 1, dataDir }, () => {});
    const run = coordinator.run();
    const peer = new ScriptedPeer(`ws://127.0.0.1:${coordinator.port}`);
    await peer.open();
    // U+202E turns the rest of a row around in a browser; the protocol lets a name be 1,024 characters.
    peer.send(encode(message<Hello>({ type: 'hello', name: `evil\u202e${'x'.repeat(1000)}`, backend: 'wasm\u0007\n', pid: 1, hostname: 'h' })));
    assert.equal((await peer.next()).type, 'welcome');
    const [shown] = coordinator.status().workers;
    assert.ok(shown.name.startsWith('evil\\u202exxx'), shown.name);
    assert.ok(shown.name.length <= 170, `${shown.name.length} characters`);
    assert.equal(shown.backend, 'wasm\\u0007\\n');
    coordinator.requestStop('test over');
    await run;
    await coordinator.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a dropped worker that wakes seconds later still answers into an open socket: its late answer is discarded, and it reads why it was dropped', async () => {
    const lines: string[] = [];
    const dataDir = blankMnistDir(512);
    const coordinator = await Coordinator.start({ ...config(path.join(out, 'woken-late'), 1), roundTimeoutSeconds: 1, dataDir }, (l) => lines.push(l));
    const run = coordinator.run();
    const { peer, workerId } = await joinedPeer(coordinator);
    await weightsOrDrop(peer);
    // Frozen as a stopped process is, past its deadline and well past the moment in which a dropped
    // socket was once cut: the answer it computed before it stopped goes out first when it wakes.
    const raw = (peer.ws as unknown as { _socket: import('node:net').Socket })._socket;
    raw.pause();
    const dropped = `${workerId} left (no discriminator gradients for step 1 within --round-timeout 1 s)`;
    for (let i = 0; i < 400 && !lines.some((l) => l.startsWith(dropped)); i++) await new Promise((r) => setTimeout(r, 5));
    assert.ok(lines.some((l) => l.startsWith(dropped)), lines.join('\n'));
    await new Promise((r) => setTimeout(r, 2500));
    peer.gradients(0, 'discriminator', zeros('discriminator'));
    const late = `discarded late discriminator gradients for step 1 from ${workerId}, which was dropped before they came`;
    for (let i = 0; i < 400 && !lines.includes(late); i++) await new Promise((r) => setTimeout(r, 5));
    assert.ok(lines.includes(late), lines.join('\n'));
    raw.resume();
    const told: CoordinatorMessage[] = [];
    for (let m = await peer.next(); ; m = await peer.next()) {
      told.push(m);
      if (m.type === 'error') break;
    }
    const why = told.at(-1);
    assert.ok(why?.type === 'error' && why.code === 'COORDINATOR_DROPPED' && why.message === 'no discriminator gradients for step 1 within --round-timeout 1 s', JSON.stringify(told));
    assert.equal(await peer.closed, 4000);
    coordinator.requestStop('test over');
    assert.equal((await run).steps, 0);
    await coordinator.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  /**
   * A 2-step run with one mailbox peer, in which this process freezes for 1.5 s once: after the peer's first
   * mailed answer, or as the peer answers the first ping (ws pongs before it tells its listeners, so the pong is
   * on its way). The coordinator's log.
   */
  async function frozenCoordinatorRun(name: string, settings: Partial<CoordinatorConfig>, freezeAt: 'answer' | 'ping'): Promise<string[]> {
    const lines: string[] = [];
    const coordinator = await Coordinator.start({ ...config(path.join(out, name), 2), ...settings }, (l) => lines.push(l));
    const run = coordinator.run();
    const dir = makeMailboxDir('worker');
    const { peer, inbox, outbox } = await mailboxPeer(coordinator, dir, 'to-coordinator');
    let froze = false;
    const freeze = () => {
      froze = true;
      freezeThisProcess(1500);
    };
    const pinged = new Promise<void>((resolve) => peer.ws.once('ping', () => resolve(freeze())));
    for (;;) {
      const { weights, mailed } = await nextWeights(peer, inbox);
      // Mid-round, as a worker computing is.
      if (freezeAt === 'ping') await pinged;
      peer.gradients(weights.step, weights.phase, new Float32Array(weights.phase === 'generator' ? G_SIZE : D_GRADIENTS), mailed ? outbox : undefined);
      if (freezeAt === 'answer' && mailed && !froze) freeze();
      if (weights.step === 1 && weights.phase === 'generator') break;
    }
    assert.equal((await run).steps, 2, lines.join('\n'));
    assert.ok(froze);
    await coordinator.close();
    inbox.close();
    outbox.close();
    removeMailboxDir(dir);
    return lines;
  }

  test('a coordinator woken from a freeze reads the answer that came meanwhile before it judges the round: no missed deadline', async () => {
    const lines = await frozenCoordinatorRun('frozen-deadline', { roundTimeoutSeconds: 1 }, 'answer');
    assert.ok(!lines.some((l) => / left \((no |its link)|late /.test(l)), lines.join('\n'));
  });

  test('a coordinator woken from a freeze reads the answer that came meanwhile before it reminds of a slow round: no "still waiting" for an answer already there', async () => {
    const lines = await frozenCoordinatorRun('frozen-reminder', { roundReminderSeconds: 1 }, 'answer');
    assert.ok(!lines.some((l) => /^still waiting after /.test(l)), lines.join('\n'));
  });

  test('a coordinator woken from a freeze reads the pong that came meanwhile before it judges the heartbeat: no drop', async () => {
    const lines = await frozenCoordinatorRun('frozen-heartbeat', { heartbeatSeconds: 1 }, 'ping');
    assert.ok(!lines.some((l) => / left \((no |its link)|late /.test(l)), lines.join('\n'));
  });

  test("an offender's answer after its third offence is not counted late, whatever the offences were", async () => {
    for (const offence of [Buffer.from([0x92, 0x01]), encode(errorMessage('WORKER_FAILED', 'boom'))]) {
      const lines: string[] = [];
      const coordinator = await Coordinator.start({ ...config(path.join(out, `offender-${offence.length}`), 1), startWorkers: 2 }, (l) => lines.push(l));
      const run = coordinator.run();
      const a = await joinedPeer(coordinator);
      const b = await joinedPeer(coordinator);
      await Promise.all([weightsOrDrop(a.peer), weightsOrDrop(b.peer)]);
      // Three offences, then the answer it was asked for, all sent before it reads anything back.
      for (let i = 0; i < 3; i++) b.peer.send(offence);
      b.peer.gradients(0, 'discriminator', zeros('discriminator'));
      a.peer.gradients(0, 'discriminator', zeros('discriminator'));
      await weightsOrDrop(a.peer);
      a.peer.gradients(0, 'generator', zeros('generator'));
      assert.equal((await run).steps, 1);
      assert.ok(lines.some((l) => l.startsWith(`${b.workerId} left`)), lines.join('\n'));
      assert.equal((await coordinator.metrics.lateGradients.get()).values[0]?.value ?? 0, 0, lines.join('\n'));
      await coordinator.close();
    }
  });

  test('a worker asked twice for one round (the round was retried after its offence) may answer both requests', async () => {
    const lines: string[] = [];
    const coordinator = await Coordinator.start(config(path.join(out, 'retried'), 2), (l) => lines.push(l));
    const run = coordinator.run();
    const { peer } = await joinedPeer(coordinator);
    await weightsOrDrop(peer);
    // The offence drops it from the only round, which closes unanswered and is asked again: two requests for one round.
    peer.send(encode(message<Mail>({ type: 'mail', bytes: 100 })));
    const asked = [await weightsOrDrop(peer)];
    assert.ok(asked[0].step === 0 && asked[0].phase === 'discriminator', JSON.stringify({ step: asked[0].step, phase: asked[0].phase }));
    // Answered in order, as a worker does: the first answer serves the retried round, the second is late.
    for (let i = 0; i < 2; i++) peer.gradients(0, 'discriminator', zeros('discriminator'));
    for (const phase of ['generator', 'discriminator', 'generator'] as const) {
      const w = await weightsOrDrop(peer);
      assert.equal(w.phase, phase);
      peer.gradients(w.step, phase, zeros(phase));
    }
    assert.equal((await run).steps, 2);
    assert.ok(lines.some((l) => /discarded late discriminator gradients for step 1/.test(l)), lines.join('\n'));
    assert.deepEqual(lines.filter((l) => /rejected a message/.test(l)), ['rejected a message from w1 (unexpected): mail without a confirmed mailbox']);
    await coordinator.close();
  });

  test('a worker that errs on its way out does not fail the close of a finished run', async () => {
    const coordinator = await Coordinator.start(config(path.join(out, 'erring-exit'), 1), () => {});
    const run = coordinator.run();
    const { peer } = await joinedPeer(coordinator, false);
    for (const phase of ['discriminator', 'generator'] as const) {
      await weightsOrDrop(peer);
      peer.gradients(0, phase, zeros(phase));
    }
    assert.ok((await run).ok);
    // Answers the stop with a frame of a reserved opcode, which ws reports as an error before the close.
    peer.ws.on('message', () => (peer.ws as unknown as { _socket: import('node:net').Socket })._socket.write(Buffer.from([0x83, 0x80, 0, 0, 0, 0])));
    await coordinator.close();
    assert.equal(coordinator.status().workers.length, 0);
  });
});

test('grids from step 10⁶ on (7 digits) are ordered and split by step: by name, step-1000000.png sorts before step-999999.png', () => {
  const dir = tempDir('grids-million');
  for (const step of [1_000_001, 999_999, 1_000_000, 999_998]) fs.writeFileSync(path.join(dir, gridName(step)), 'grid');
  assert.deepEqual(gridsAround(dir, 1_000_000), { upTo: ['step-999998.png', 'step-999999.png', 'step-1000000.png'], after: ['step-1000001.png'] });
  fs.rmSync(dir, { recursive: true, force: true });
});
