import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import type { ClientRequest } from 'node:http';
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { backendLabel, selectBackend } from '../backend';
import { BackendChoice } from '../backend-choice';
import { DiscriminatorUpdates, GanModel, createModel, maxBatchSize } from '../model';
import { decodeCoordinatorMessage, encode, encodeFrame, ProtocolError, protocolErrorCode } from '../protocol/codec';
import { CLOSE_COORDINATOR_SILENT, CoordinatorMessage, ErrorMessage, Hello, MAX_COORDINATOR_FRAME_BYTES, Mail, MailboxReady, Weights, Welcome, errorMessage, gradientsMessage, message } from '../protocol/messages';
import { WIRE_DTYPES, WireDtype } from '../protocol/wire-dtype';
import { GanfleetError } from '../util/errors';
import { afterPendingReads } from '../util/events';
import { createLogger, Logger } from '../util/log';
import { plural, truncate, urlHost, withoutCredentials } from '../util/text';
import { boundPort, serveHttp } from '../util/http';
import { onStopSignals } from '../util/signals';
import { ShardCompute } from './compute';
import { withHint } from './connection-hints';
import { WorkerMailbox } from './mailbox';
import { WorkerMetrics } from './metrics';
import { ProgressLine } from './progress';
import { SilenceWatchdog } from './silence';

export interface WorkerOptions {
  coordinator: string;
  backend: BackendChoice;
  /** Refuse to start unless TensorFlow computes on a GPU (the GPU deployments set it). */
  requireGpu?: boolean;
  name?: string;
  /** Shared secret, sent as `Authorization: Bearer …` in the upgrade request. */
  token?: string;
  /** PEM file of a CA to trust for wss:// (a private or self-signed coordinator certificate). */
  ca?: string;
  /** Give up after this many seconds without being admitted (welcomed) by a coordinator; 0 = keep trying forever. */
  giveUpAfter: number;
  /** Serve this worker's /metrics and /healthz here (-1 = off). */
  metricsPort?: number;
  metricsHost?: string;
  /** Take up a coordinator's offer of a shared-memory mailbox (protocol/mailbox.ts). */
  mailbox: boolean;
  /**
   * A stop from a coordinator whose run has steps left is treated as a lost
   * coordinator: wait for it to come back (--resume) instead of exiting. For
   * workers under a supervisor, which would otherwise restart them with its
   * own, growing, backoff.
   */
  rejoinAfterStop?: boolean;
  /** Seconds between progress lines (0 = none): a worker on another machine otherwise says nothing while it trains. */
  progressEverySeconds?: number;
}

/** This process among all that share its hostname and pid, over time (Hello.instance). */
const PROCESS_INSTANCE = crypto.randomBytes(8).toString('hex');

/** The name a worker without --name goes by, in its hello and its own log lines alike. */
export function defaultWorkerName(): string {
  return `${os.hostname()}:${process.pid}`;
}

const BACKOFF_BASE_MS = 250;
/** A try, from the connect to the coordinator's welcome, ends within this (or what --give-up-after leaves). */
const HANDSHAKE_TIMEOUT_MS = 15_000;
const BACKOFF_MAX_MS = 15_000;
/**
 * A coordinator's errors that end nothing are logged this many a connection: a rogue one could fill the disk.
 * One of this build sends at most 4 (three offences, the third of which closes, and a mailbox it could not open).
 */
const ERRORS_LOGGED = 4;
/** How long a leaving worker waits for the coordinator to answer its close. */
const LEAVE_GRACE_MS = 2_000;

/** How one connection ended, which decides whether to reconnect. */
type Outcome =
  | { kind: 'stopped'; reason: string } // the coordinator said stop: done
  | { kind: 'left' } // this process was asked to leave (SIGTERM/SIGINT)
  | { kind: 'fatal'; reason: string } // reconnecting cannot help (bad token, other model)
  | { kind: 'lost'; reason: string; connected: boolean; welcomed: boolean; trained: boolean; refused?: boolean }; // network or coordinator failure, or a refusal that may pass (a full coordinator): retry

/**
 * A request to leave (SIGTERM/SIGINT), and what it interrupts: the
 * connection, or the wait before the next one.
 */
class LeaveRequest {
  requested = false;
  private interrupt: (() => void) | null = null;

  request(): void {
    this.requested = true;
    this.interrupt?.();
  }

  /** What a leave interrupts from now on. */
  interrupts(interrupt: () => void): void {
    this.interrupt = interrupt;
  }

  /** Waits `ms`, or until a leave is requested. */
  sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.interrupts(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

/** A try's handshake timeout, `leftMs` before --give-up-after: it ends no later than that does (to the second). */
function handshakeTimeoutMs(leftMs: number): number {
  return Math.max(1000, Math.min(HANDSHAKE_TIMEOUT_MS, leftMs));
}

/** The wait before reconnect `attempt` (0 first). Full jitter: spread reconnecting workers so they do not arrive as a herd. Never past --give-up-after, `leftMs` away. */
function reconnectDelayMs(attempt: number, leftMs: number): number {
  return Math.min(leftMs, Math.random() * Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt));
}

/**
 * Connects to the coordinator and answers every weights message with the
 * gradients of its shard. When the connection is lost it reconnects with
 * exponential backoff and jitter and rejoins as a new worker; the
 * coordinator hands out shards and weights afresh. Resolves with the exit
 * code: 0 after a stop (or a requested leave), 1 on a fatal refusal or when
 * `giveUpAfter` passes without being admitted by a coordinator. Its
 * SIGINT/SIGTERM handlers stay on: the process ends next.
 */
export async function runWorker(opts: WorkerOptions, log: Logger = createLogger('worker')): Promise<number> {
  const leave = new LeaveRequest();
  // A second signal exits at once (130), as the coordinator and local do. The handlers stay on until the process
  // ends (the CLI's exitWhenWritten): removed, a signal in its last milliseconds took the default action (143).
  // On before the backend loads (seconds for a GPU's): a signal then took the default action too, a silent 143.
  onStopSignals((signal) => {
    log(`${signal}: leaving (again to exit at once)`);
    leave.request();
  });
  const backend = await selectBackend(opts.backend, opts.requireGpu);
  log(`backend ${backendLabel(backend)} (${backend.notes.join('; ')})`);
  const name = opts.name ?? defaultWorkerName();
  const ca = opts.ca ? fs.readFileSync(opts.ca) : undefined;
  const metrics = new WorkerMetrics();
  const metricsServer = opts.metricsPort !== undefined && opts.metricsPort >= 0 ? await serveHttp(metrics.registry, opts.metricsHost ?? '127.0.0.1', opts.metricsPort) : null;
  if (metricsServer) log(`metrics on http://${urlHost(opts.metricsHost ?? '127.0.0.1')}:${boundPort(metricsServer)}/metrics`);
  // Asked to leave while starting: there is nothing to leave yet.
  if (leave.requested) {
    metricsServer?.close();
    return 0;
  }

  const giveUpMs = opts.giveUpAfter > 0 ? opts.giveUpAfter * 1000 : Infinity;
  // Said before the first try: one to a host that takes the connection and never answers waits out the handshake
  // timeout, and the worker said nothing between its backend line and "could not connect" 15 s later. That try's
  // timeout: a --give-up-after under 15 s shortens it.
  log(`connecting to ${withoutCredentials(opts.coordinator)} (a try waits up to ${handshakeTimeoutMs(giveUpMs) / 1000} s for an answer)`);
  try {
    let attempt = 0;
    // Since when --give-up-after counts: the start, or the end of the last connection a coordinator admitted this worker on.
    let waitingSince = performance.now();
    for (;;) {
      const handshakeMs = handshakeTimeoutMs(giveUpMs - (performance.now() - waitingSince));
      const outcome = await connectOnce(opts, { name, backend: backendLabel(backend), ca, handshakeMs }, metrics, log, leave);
      switch (outcome.kind) {
        case 'stopped':
          log(`stopped by the coordinator: ${outcome.reason}`);
          return 0;
        case 'left':
          return 0;
        case 'fatal':
          log(`giving up: ${outcome.reason}`);
          return 1;
        case 'lost':
          // A signal that came while this connection was already failing: leave, do not reconnect.
          if (leave.requested) return 0;
          // The coordinator was reached: --give-up-after counts from here. The
          // backoff starts over only after a round was answered, so a worker
          // that fails every connection the same way does not rejoin (and make
          // the coordinator re-plan every shard) several times a second.
          if (outcome.welcomed) waitingSince = performance.now();
          if (outcome.trained) attempt = 0;
          const silentMs = performance.now() - waitingSince;
          if (silentMs > giveUpMs) {
            log(`giving up: not admitted by a coordinator for ${(silentMs / 1000).toFixed(1)} s, --give-up-after ${opts.giveUpAfter} (${outcome.reason})`);
            return 1;
          }
          const delay = reconnectDelayMs(attempt++, giveUpMs - silentMs);
          // A worker started before its coordinator (compose, Kubernetes) never had a connection to lose.
          // Nor did one the coordinator turned away (full): it had no place to lose.
          const what = outcome.refused ? 'refused by the coordinator' : outcome.connected ? 'connection lost' : `could not connect to ${withoutCredentials(opts.coordinator)}`;
          log(`${what} (${outcome.reason}); reconnecting in ${(delay / 1000).toFixed(1)} s`);
          await leave.sleep(delay);
          if (leave.requested) return 0;
          metrics.reconnects.inc();
      }
    }
  } finally {
    metricsServer?.closeAllConnections();
    metricsServer?.close();
  }
}

/** One connection to the coordinator, from the upgrade to its close: resolves with how it ended. */
function connectOnce(
  opts: WorkerOptions,
  me: { name: string; backend: string; ca?: Buffer; handshakeMs: number },
  metrics: WorkerMetrics,
  log: Logger,
  leave: LeaveRequest,
): Promise<Outcome> {
  return new Promise<Outcome>((resolve) => {
    let upgradeRequest: ClientRequest | null = null;
    const headers: Record<string, string> = {};
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    const ws = new WebSocket(opts.coordinator, {
      maxPayload: MAX_COORDINATOR_FRAME_BYTES,
      // The coordinator never compresses; offered, a rogue one could send 120 MB of frame as 120 KB.
      perMessageDeflate: false,
      headers,
      ca: me.ca,
      // A zero masking key: ws then sends the gradient frame as it is, instead
      // of copying it into a masked buffer (0.45 MB per round), and the
      // coordinator skips unmasking. Masking guards HTTP proxies against
      // payloads a hostile browser script chose; a worker's are its gradients.
      generateMask: (mask: Buffer) => mask.fill(0),
      // Kept so that a handshake that times out can tell a TCP connection never made (a firewall that drops
      // packets, a host that is down) from an upgrade never answered: both leave the WebSocket CONNECTING.
      finishRequest: (req) => {
        upgradeRequest = req;
        req.end();
      },
    });
    /** How this connection ended: the first verdict stands. */
    let outcome: Outcome | null = null;
    /** Set by the welcome, and with it what the welcome asked for: the model, the wire dtype, a mailbox. */
    let workerId: string | null = null;
    let compute: ShardCompute | null = null;
    let wireDtype: WireDtype = 'float32';
    let mailbox: WorkerMailbox | null = null;
    /** A round was answered: the backoff starts over. */
    let trained = false;
    let errorsHeard = 0;
    /** The welcome's heartbeat, and how long this worker's newest round took, and when it ended: a worker answers no ping while it computes. */
    let heartbeatSeconds = 0;
    let lastComputeSeconds = 0;
    /** The CPU this process spent in that round: little where it was stopped (SIGSTOP) mid-round rather than busy. */
    let lastComputeCpuSeconds = 0;
    let lastComputeEndedAt = 0;
    const watchdog = new SilenceWatchdog();
    // Read only once joined, when `link` is set.
    const progress = new ProgressLine(opts.progressEverySeconds ?? 0, log, () => link?.bytesRead ?? 0, () => watchdog.missedPings());
    const end = (o: Outcome) => (outcome ??= o);
    /** The WebSocket opened: there was a connection to lose. */
    let connected = false;
    const lost = (reason: string): Extract<Outcome, { kind: 'lost' }> => ({ kind: 'lost', reason, connected, welcomed: workerId !== null, trained });

    // A coordinator that does not answer a close (frozen, partitioned) is not waited for: ws would wait 30 s.
    const closeWithin = (code: number, reason?: string) => {
      ws.close(code, reason); // nothing more while the socket is already closing
      setTimeout(() => ws.terminate(), LEAVE_GRACE_MS).unref();
    };
    // A coordinator answers the upgrade, and then the hello with a welcome, at once. A peer that does not (a
    // port that takes no WebSocket, another WebSocket service, a frozen coordinator) ends the try within its
    // handshake time, which --give-up-after bounds: a silence limit alone would wait on a service that pings.
    const handshake = setTimeout(() => {
      afterPendingReads(() => {
        if (workerId !== null || outcome) return;
        const within = `within ${(me.handshakeMs / 1000).toFixed(0)} s`;
        const what =
          ws.readyState !== WebSocket.CONNECTING
            ? `no welcome came ${within}`
            : upgradeRequest?.socket?.connecting !== false
              ? `no TCP connection ${within}: a firewall that drops packets to that port, or a host that is down or unreachable`
              : `the WebSocket upgrade was not answered ${within}`;
        end(lost(what));
        ws.terminate();
      }, () => link?.bytesRead ?? 0);
    }, me.handshakeMs);
    leave.interrupts(() => {
      end({ kind: 'left' });
      if (ws.readyState !== WebSocket.CLOSED) closeWithin(1000, 'worker leaving');
    });

    const fail = (code: string, text: string, fatal = false) => {
      log(`error ${code}: ${text}`);
      end(fatal ? { kind: 'fatal', reason: text } : lost(text));
      if (ws.readyState === WebSocket.OPEN) ws.send(encode(errorMessage(code, text)));
      closeWithin(1002);
    };

    const handle = (msg: CoordinatorMessage) => {
      switch (msg.type) {
        case 'welcome':
          // One a connection: a second would leave the first's shard count and mailbox standing beside new terms.
          if (compute) return fail('WORKER_UNEXPECTED', 'a second welcome on one connection');
          return join(msg);
        case 'shard':
          if (!compute) return fail('WORKER_UNEXPECTED', 'shard before welcome');
          compute.setShard(msg);
          metrics.shardImages.set(msg.count);
          log(`shard plan ${msg.plan}: ${plural(msg.count, 'image')} (${msg.keep} kept, ${msg.count - msg.keep} received)`);
          return;
        case 'weights':
          return answer(msg, false);
        case 'mail': {
          if (!mailbox) return fail('WORKER_UNEXPECTED', 'mail without a mailbox');
          // Into reused memory: answer() hands the weights to compute before the next frame can come.
          const inner = decodeCoordinatorMessage(mailbox.inbox.collect(msg.bytes, MAX_COORDINATOR_FRAME_BYTES, true));
          if (inner.type !== 'weights') return fail('WORKER_UNEXPECTED', `a mailed ${inner.type} message`);
          return answer(inner, true);
        }
        case 'stop':
          end(msg.resumable && opts.rejoinAfterStop ? lost(`the coordinator stopped with steps left (${msg.reason}); waiting for it to resume`) : { kind: 'stopped', reason: msg.reason });
          closeWithin(1000);
          return;
        case 'error':
          return heardError(msg);
      }
    };

    const join = (msg: Welcome) => {
      const terms = welcomeTerms(msg);
      if (Array.isArray(terms)) return fail(terms[0], terms[1], true);
      wireDtype = terms.wireDtype;
      compute = new ShardCompute(terms.model, msg.batchSize, terms.discriminatorUpdates);
      workerId = msg.workerId;
      clearTimeout(handshake);
      heartbeatSeconds = msg.heartbeatSeconds;
      watchdog.start(msg.heartbeatSeconds, (silenceMs) => {
        if (outcome) return;
        end(lost(`nothing from the coordinator for ${(silenceMs / 1000).toFixed(0)} s`));
        // The close frame first, though no answer is waited for: a coordinator that was only frozen reads it as it
        // wakes, and says why this worker left rather than taking it for a crash.
        ws.close(CLOSE_COORDINATOR_SILENT, 'no word from the coordinator');
        ws.terminate();
      });
      metrics.connected.set(1);
      progress.start();
      log(`joined as ${workerId}: model ${msg.arch}, loss ${msg.loss}, batch ${msg.batchSize}${wireDtype === 'float32' ? '' : `, ${wireDtype} on the wire`}`);
      if (msg.mailbox !== undefined && msg.nonce !== undefined && opts.mailbox) {
        mailbox = WorkerMailbox.open(msg, log);
        if (mailbox) ws.send(encode(message<MailboxReady>({ type: 'mailbox', path: mailbox.outboxPath })));
      } else {
        log(`frames travel over the WebSocket (${opts.mailbox ? 'the coordinator offers no mailbox' : '--no-mailbox'})`);
      }
    };

    const heardError = (msg: ErrorMessage) => {
      // Cut as the coordinator cuts what a peer says: the protocol allows 1,024 characters.
      const text = truncate(msg.message, 160);
      const said = `coordinator says ${truncate(msg.code, 64)}: ${text}`;
      const ended = endedByError(msg.code, text);
      if (!ended) {
        if (++errorsHeard <= ERRORS_LOGGED) log(said);
        return;
      }
      end(ended);
      // A refusal is said by the retry's line, once a try rather than twice.
      if (!(ended.kind === 'lost' && ended.refused)) log(said);
      // Not left to the coordinator's close: one that froze after its refusal would hold this worker for ever.
      closeWithin(1000);
    };

    /**
     * Why drops will keep coming, where this worker can tell: its rounds take longer than the pings allow. Only for a
     * drop read just after such a round (it waited on the compute), and one the process was busy for: a freeze
     * (SIGSTOP) during or after a round is the drop's cause instead, and the monotonic clock runs through it.
     */
    const outlastedHeartbeat = () =>
      heartbeatSeconds > 0 &&
      lastComputeSeconds > heartbeatSeconds &&
      lastComputeCpuSeconds > lastComputeSeconds / 2 &&
      performance.now() - lastComputeEndedAt < heartbeatSeconds * 1000
        ? `; this worker's last round took ${lastComputeSeconds.toFixed(1)} s to compute, past the coordinator's --heartbeat ${heartbeatSeconds} s, and it answers no ping while it computes: the coordinator needs a --heartbeat and --round-timeout above that`
        : '';

    /** What a coordinator's error ends, or null where it ends nothing. */
    const endedByError = (code: string, text: string): Outcome | null => {
      if (code === 'COORDINATOR_FULL') return { ...lost(`COORDINATOR_FULL: ${text}`), refused: true };
      if (code === 'COORDINATOR_DROPPED') return lost(`the coordinator dropped this worker: ${text}${outlastedHeartbeat()}`);
      // Another build of ganfleet: reconnecting cannot help.
      if (code === protocolErrorCode('bad_version')) return { kind: 'fatal', reason: `the coordinator speaks another protocol version: ${text}` };
      // Before the welcome, a refusal is of this worker's hello, which would be the same next time.
      if (workerId === null && code.startsWith('PROTOCOL_')) return { kind: 'fatal', reason: `the coordinator refused this worker's hello: ${text}` };
      return null;
    };

    /** Computes the gradients the weights ask for and sends them back the way the weights came. */
    const answer = (msg: Weights, byMail: boolean) => {
      if (!compute) return fail('WORKER_UNEXPECTED', 'weights before welcome');
      compute.updateWeights(msg.generator, msg.discriminator, byMail);
      const t0 = performance.now();
      const cpu0 = process.cpuUsage();
      const out = compute.step(msg.step, msg.phase);
      const computeSeconds = (performance.now() - t0) / 1000;
      lastComputeSeconds = computeSeconds;
      const cpu = process.cpuUsage(cpu0);
      lastComputeCpuSeconds = (cpu.user + cpu.system) / 1e6;
      lastComputeEndedAt = performance.now();
      const reply = gradientsMessage(msg.step, msg.phase, out, computeSeconds);
      const frame = encodeFrame(reply, wireDtype);
      if (byMail && mailbox?.post(frame)) {
        ws.send(encode(message<Mail>({ type: 'mail', bytes: frame.length })));
      } else {
        ws.send(frame.whole);
      }
      trained = true;
      // The coordinator now averages and steps Adam: ready the next step meanwhile.
      compute.readyAfter(msg.step, msg.phase);
      watchdog.heard(); // busy computing is not the coordinator's silence
      metrics.observeRound(msg.phase, computeSeconds);
      progress.answered(msg.step, computeSeconds);
    };

    let link: Socket | null = null;
    ws.on('upgrade', (res) => (link = res.socket));
    ws.on('ping', watchdog.heard);
    ws.on('open', () => {
      // Any bytes count as hearing from the coordinator, not only whole
      // messages: its pings queue behind a shard, which on a slow link takes
      // longer to arrive than the silence allowed. (Listening from here on,
      // once ws reads the socket itself.)
      link?.on('data', watchdog.heard);
      connected = true;
      log(`connected to ${withoutCredentials(opts.coordinator)}`);
      ws.send(encode(message<Hello>({ type: 'hello', name: me.name, backend: me.backend, pid: process.pid, hostname: os.hostname(), instance: PROCESS_INSTANCE })));
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      watchdog.heard();
      // Decided (failed, stopped, leaving): ws still delivers what arrives while the socket closes, and
      // a step computed for it would go nowhere.
      if (outcome) return;
      try {
        if (!isBinary) throw new ProtocolError('bad_frame', 'text frame');
        handle(decodeCoordinatorMessage(data));
      } catch (e) {
        const failure = failureOf(e, workerId !== null);
        fail(failure.code, failure.text, failure.fatal);
      }
    });
    ws.on('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 0;
      // 401/403: the token is wrong, and trying again will not change that.
      // 2xx/3xx/404 to an upgrade: a plain HTTP server, most often the coordinator's metrics port; a proxy's 5xx may pass.
      const plainHttp = status < 400 || status === 404;
      const hint = plainHttp ? ": an HTTP server that takes no workers; if it is a coordinator's --metrics-port (9090 by default), workers join at its --port (8787 by default)" : '';
      end(status === 401 || status === 403 ? { kind: 'fatal', reason: `coordinator answered HTTP ${status} (check --token)` } : lost(`HTTP ${status}${hint}`));
      ws.terminate();
    });
    ws.on('error', (e: Error & { code?: string }) => end(lost(withHint(e, opts.coordinator, opts.ca))));
    ws.on('close', (code, reason) => {
      clearTimeout(handshake);
      watchdog.stop();
      progress.stop();
      if (errorsHeard > ERRORS_LOGGED) log(`${errorsHeard - ERRORS_LOGGED} more errors from the coordinator on this connection went unlogged`);
      mailbox?.close();
      try {
        compute?.dispose();
      } catch (e) {
        // After a wasm trap: thrown from here it would end the process past every handler (exit 7).
        log(`could not free this connection's tensors: ${(e as Error).message}`);
      }
      metrics.connected.set(0);
      // The shard went with the connection's compute state: the next one is sent afresh.
      metrics.shardImages.set(0);
      // 1006 is no close frame at all, which ws reports as a code: said in words, as the coordinator says it of a worker.
      const closed = code === 1006 ? '1006, no close frame: the coordinator was killed or crashed, or the connection was cut' : `${code}${reason.length ? ` ${reason}` : ''}`;
      resolve(outcome ?? lost(`closed (${closed})`));
    });
  });
}

/**
 * What to report of an error thrown while handling a coordinator's message,
 * and whether reconnecting cannot help (`fatal`).
 */
function failureOf(e: unknown, welcomed: boolean): { code: string; text: string; fatal: boolean } {
  // Only ganfleet's codes go on the wire (an OS or tfjs error's text says the rest).
  const code = e instanceof GanfleetError ? e.code : 'WORKER_FAILED';
  // A coordinator of another protocol version, or one whose first message (its welcome) this build
  // cannot read, will not change by reconnecting. Nor will a trap in the wasm backend (out of its
  // memory, out of bounds): the module's state is unknown after one, so only a new process computes again.
  const trapped = e instanceof WebAssembly.RuntimeError;
  // Before the welcome, a frame that is no ganfleet message (text, not msgpack) or of a type no coordinator
  // sends (an echo of the hello) comes from another WebSocket service on that address. It is retried, as a
  // port that gives no welcome is: the coordinator may be there later.
  const foreign = !welcomed && e instanceof ProtocolError && (e.reason === 'bad_frame' || e.reason === 'bad_type');
  const said = (e as Error).message;
  // A coordinator older than this worker encodes its refusal in its own version, which lands here (a newer one
  // answers in this worker's version: an error PROTOCOL_BAD_VERSION, for endedByError).
  const skewed = e instanceof ProtocolError && e.reason === 'bad_version';
  const text = trapped
    ? `the backend failed (${said}); this process cannot compute again`
    : foreign
      ? `${said}: not a ganfleet coordinator (another WebSocket service on that address?)`
      : skewed
        ? `the coordinator speaks another protocol version (${said}): run the same ganfleet version on both sides`
        : said;
  return { code, text, fatal: trapped || skewed || (e instanceof ProtocolError && !foreign && !welcomed) };
}

/**
 * What a welcome asks of this worker: the model and the wire dtype, or
 * [code, why] where this build cannot train as asked, which a reconnect to
 * the same coordinator would not change.
 */
function welcomeTerms(msg: Welcome): { model: GanModel; wireDtype: WireDtype; discriminatorUpdates: DiscriminatorUpdates } | [string, string] {
  let model: GanModel;
  try {
    model = createModel(msg.arch, msg.loss);
  } catch (e) {
    return ['WORKER_MODEL_UNKNOWN', (e as Error).message];
  }
  if (model.generatorLayout.size !== msg.generatorSize || model.discriminatorLayout.size !== msg.discriminatorSize) {
    return ['WORKER_MODEL_MISMATCH', `this worker's ${msg.arch} has ${model.generatorLayout.size}+${model.discriminatorLayout.size} parameters, the coordinator's ${msg.generatorSize}+${msg.discriminatorSize}`];
  }
  // Values a coordinator of this build never sends: a batch of none, and a heartbeat that would make
  // the silence watchdog drop every connection at once (≤ 0) or never (not finite).
  const maxBatch = maxBatchSize(msg.arch);
  if (msg.batchSize < 1 || msg.batchSize > maxBatch) return ['WORKER_BAD_WELCOME', `a batch size of ${msg.batchSize} (this build's ${msg.arch} takes 1 to ${maxBatch})`];
  if (!(msg.heartbeatSeconds > 0 && Number.isFinite(msg.heartbeatSeconds))) return ['WORKER_BAD_WELCOME', `a heartbeat of ${msg.heartbeatSeconds} s`];
  const updates = msg.discriminatorUpdates;
  if (updates !== 1 && updates !== 2) return ['WORKER_BAD_WELCOME', `${updates} D updates a step (this build makes 1 or 2)`];
  const dtype = msg.wireDtype ?? 'float32';
  if (!(WIRE_DTYPES as readonly string[]).includes(dtype)) return ['WORKER_WIRE_DTYPE', `unknown wire dtype ${dtype}`];
  return { model, wireDtype: dtype as WireDtype, discriminatorUpdates: updates };
}
