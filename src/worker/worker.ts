import fs from 'node:fs';
import os from 'node:os';
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { BackendChoice, backendLabel, selectBackend } from '../backend';
import { GanModel, createModel, maxBatchSize } from '../model';
import { decodeCoordinatorMessage, encode, encodeFrame, ProtocolError } from '../protocol/codec';
import { CoordinatorMessage, Hello, MAX_COORDINATOR_FRAME_BYTES, Mail, MailboxReady, Weights, Welcome, errorMessage, gradientsMessage, message, stepOfRound } from '../protocol/messages';
import { WIRE_DTYPES, WireDtype } from '../protocol/wire-dtype';
import { GanfleetError } from '../util/errors';
import { createLogger, Logger } from '../util/log';
import { truncate, urlHost, withoutCredentials } from '../util/text';
import { boundPort, serveHttp } from '../util/http';
import { onStopSignals } from '../util/signals';
import { ShardCompute } from './compute';
import { WorkerMailbox } from './mailbox';
import { WorkerMetrics } from './metrics';

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

const BACKOFF_BASE_MS = 250;
const HANDSHAKE_TIMEOUT_MS = 15_000;
/** Silence tolerated before the welcome says how often the coordinator pings. */
const SILENCE_BEFORE_WELCOME_MS = 30_000;
const BACKOFF_MAX_MS = 15_000;
/**
 * A coordinator's errors that end nothing are logged this many a connection: a rogue one could fill the disk.
 * One of this build sends at most 4 (three offences, the third of which closes, and a mailbox it could not open).
 */
const ERRORS_LOGGED = 4;
/** How long a leaving worker waits for the coordinator to answer its close. */
const LEAVE_GRACE_MS = 2_000;

/** Node's codes for a certificate the worker does not trust, or one for another host. */
const CERTIFICATE_ERRORS = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID',
]);

/**
 * A connection error, with what to do where the cause is likely a setting:
 * these are still retried (a proxy may show its own certificate while the
 * coordinator starts), but a worker that retries for ever should say why.
 */
function withHint(e: Error & { code?: string }, url: string): string {
  if (e.code && CERTIFICATE_ERRORS.has(e.code)) return `${e.message}: pass --ca with the coordinator's certificate or its CA, or check the host in --coordinator`;
  // Closed before the WebSocket opened: a TLS port spoken to in plain text does this, and so does a proxy with no coordinator behind it.
  if (e.message === 'socket hang up' && url.startsWith('ws://')) return `${e.message}: the other end closed before the WebSocket opened (no coordinator behind a proxy or load balancer, or a coordinator with --tls-cert, whose URL starts with wss://)`;
  // OpenSSL's text for a server that answered the handshake in plain text.
  if (url.startsWith('wss://') && /wrong version number/.test(e.message)) return `TLS handshake failed, the server answered in plain text: if the coordinator has no --tls-cert, its URL starts with ws://`;
  return e.message;
}

/** How one connection ended, which decides whether to reconnect. */
type Outcome =
  | { kind: 'stopped'; reason: string } // the coordinator said stop: done
  | { kind: 'left' } // this process was asked to leave (SIGTERM/SIGINT)
  | { kind: 'fatal'; reason: string } // reconnecting cannot help (bad token, other model)
  | { kind: 'lost'; reason: string; welcomed: boolean; trained: boolean }; // network or coordinator failure: retry

/**
 * Connects to the coordinator and answers every weights message with the
 * gradients of its shard. When the connection is lost it reconnects with
 * exponential backoff and jitter and rejoins as a new worker; the
 * coordinator hands out shards and weights afresh. Resolves with the exit
 * code: 0 after a stop (or a requested leave), 1 on a fatal refusal or when
 * `giveUpAfter` passes without being admitted by a coordinator.
 */
export async function runWorker(opts: WorkerOptions, log: Logger = createLogger('worker')): Promise<number> {
  const backend = await selectBackend(opts.backend, opts.requireGpu);
  log(`backend ${backendLabel(backend)} (${backend.notes.join('; ')})`);
  const name = opts.name ?? `${os.hostname()}:${process.pid}`;
  const ca = opts.ca ? fs.readFileSync(opts.ca) : undefined;
  const metrics = new WorkerMetrics();
  const metricsServer = opts.metricsPort !== undefined && opts.metricsPort >= 0 ? await serveHttp(metrics.registry, opts.metricsHost ?? '127.0.0.1', opts.metricsPort) : null;
  if (metricsServer) log(`metrics on http://${urlHost(opts.metricsHost ?? '127.0.0.1')}:${boundPort(metricsServer)}/metrics`);

  let leaving: (() => void) | null = null;
  let leaveRequested = false;
  // A second signal exits at once (130), as the coordinator and local do.
  const removeSignalHandlers = onStopSignals((signal) => {
    log(`${signal}: leaving (again to exit at once)`);
    leaveRequested = true;
    leaving?.();
  });

  try {
    let attempt = 0;
    let lastContact = performance.now();
    for (;;) {
      // A try's handshake ends no later than --give-up-after does (to the second).
      const handshakeMs = opts.giveUpAfter > 0 ? Math.max(1000, Math.min(HANDSHAKE_TIMEOUT_MS, opts.giveUpAfter * 1000 - (performance.now() - lastContact))) : HANDSHAKE_TIMEOUT_MS;
      const outcome = await connectOnce(opts, { name, backend: backendLabel(backend), ca, handshakeMs }, metrics, log, (leave) => (leaving = leave), () => leaveRequested);
      leaving = null;
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
          if (leaveRequested) return 0;
          // The coordinator was reached: --give-up-after counts from here. The
          // backoff starts over only after a round was answered, so a worker
          // that fails every connection the same way does not rejoin (and make
          // the coordinator re-plan every shard) several times a second.
          if (outcome.welcomed) lastContact = performance.now();
          if (outcome.trained) attempt = 0;
          const silentMs = performance.now() - lastContact;
          if (opts.giveUpAfter > 0 && silentMs > opts.giveUpAfter * 1000) {
            log(`giving up: not admitted by a coordinator for ${(silentMs / 1000).toFixed(1)} s, --give-up-after ${opts.giveUpAfter} (${outcome.reason})`);
            return 1;
          }
          // Full jitter: spread reconnecting workers so they do not arrive as a herd. Never past --give-up-after.
          let delay = Math.random() * Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt++);
          if (opts.giveUpAfter > 0) delay = Math.min(delay, opts.giveUpAfter * 1000 - silentMs);
          log(`connection lost (${outcome.reason}); reconnecting in ${(delay / 1000).toFixed(1)} s`);
          await new Promise<void>((r) => {
            const t = setTimeout(r, delay);
            leaving = () => {
              clearTimeout(t);
              r();
            };
          });
          if (leaveRequested) return 0;
          metrics.reconnects.inc();
      }
    }
  } finally {
    removeSignalHandlers();
    metricsServer?.closeAllConnections();
    metricsServer?.close();
  }
}

function connectOnce(
  opts: WorkerOptions,
  me: { name: string; backend: string; ca?: Buffer; handshakeMs: number },
  metrics: WorkerMetrics,
  log: Logger,
  setLeave: (leave: () => void) => void,
  leaveRequested: () => boolean,
): Promise<Outcome> {
  return new Promise<Outcome>((resolve) => {
    const headers: Record<string, string> = {};
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    const ws = new WebSocket(opts.coordinator, {
      maxPayload: MAX_COORDINATOR_FRAME_BYTES,
      // The coordinator never compresses; offered, a rogue one could send 120 MB of frame as 120 KB.
      perMessageDeflate: false,
      headers,
      ca: me.ca,
      handshakeTimeout: me.handshakeMs,
      // A zero masking key: ws then sends the gradient frame as it is, instead
      // of copying it into a masked buffer (0.45 MB per round), and the
      // coordinator skips unmasking. Masking guards HTTP proxies against
      // payloads a hostile browser script chose; a worker's are its gradients.
      generateMask: (mask: Buffer) => mask.fill(0),
    });
    let compute: ShardCompute | null = null;
    let workerId: string | null = null;
    let wireDtype: WireDtype = 'float32';
    let outcome: Outcome | null = null;
    const end = (o: Outcome) => (outcome ??= o);
    // A coordinator that vanishes without a close (power loss, partition) is
    // noticed by silence: it pings every heartbeat, and training sends more.
    // Monotonic: a step of the wall clock forward is no silence.
    let lastHeard = performance.now();
    let silenceMs = SILENCE_BEFORE_WELCOME_MS;
    let watchdog: NodeJS.Timeout | null = null;
    const heard = () => (lastHeard = performance.now());
    ws.on('ping', heard);
    let trained = false;
    const progress = { since: performance.now(), rounds: 0, computeSeconds: 0 };
    const lost = (reason: string): Outcome => ({ kind: 'lost', reason, welcomed: workerId !== null, trained });
    let mailbox: WorkerMailbox | null = null;
    let errorsHeard = 0;

    // A coordinator that does not answer a close (frozen, partitioned) is not waited for: ws would wait 30 s.
    const closeWithin = (code: number, reason?: string) => {
      ws.close(code, reason); // nothing more while the socket is already closing
      setTimeout(() => ws.terminate(), LEAVE_GRACE_MS).unref();
    };
    setLeave(() => {
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
        case 'welcome': {
          const terms = welcomeTerms(msg);
          if (Array.isArray(terms)) return fail(terms[0], terms[1], true);
          wireDtype = terms.wireDtype;
          compute?.dispose();
          compute = new ShardCompute(terms.model, msg.batchSize);
          workerId = msg.workerId;
          silenceMs = 3 * msg.heartbeatSeconds * 1000;
          metrics.connected.set(1);
          log(`joined as ${workerId}: model ${msg.arch}, loss ${msg.loss}, batch ${msg.batchSize}${wireDtype === 'float32' ? '' : `, ${wireDtype} on the wire`}`);
          if (msg.mailbox !== undefined && msg.nonce !== undefined && opts.mailbox) {
            mailbox?.close();
            mailbox = WorkerMailbox.open(msg, log);
            if (mailbox) ws.send(encode(message<MailboxReady>({ type: 'mailbox', path: mailbox.outboxPath })));
          } else {
            log(`frames travel over the WebSocket (${opts.mailbox ? 'the coordinator offers no mailbox' : '--no-mailbox'})`);
          }
          return;
        }
        case 'shard':
          if (!compute) return fail('WORKER_UNEXPECTED', 'shard before welcome');
          compute.setShard(msg);
          metrics.shardImages.set(msg.count);
          log(`shard plan ${msg.plan}: ${msg.count} images (${msg.keep} kept, ${msg.count - msg.keep} received)`);
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
        case 'error': {
          // Cut as the coordinator cuts what a peer says: the protocol allows 1,024 characters.
          const text = truncate(msg.message, 160);
          const said = `coordinator says ${truncate(msg.code, 64)}: ${text}`;
          if (msg.code === 'COORDINATOR_FULL') end(lost(text));
          if (msg.code === 'COORDINATOR_DROPPED') end(lost(`the coordinator dropped this worker: ${text}`));
          // Another build of ganfleet: reconnecting cannot help.
          if (msg.code === 'PROTOCOL_BAD_VERSION') end({ kind: 'fatal', reason: `the coordinator speaks another protocol version: ${text}` });
          // Before the welcome, a refusal is of this worker's hello, which would be the same next time.
          else if (workerId === null && msg.code.startsWith('PROTOCOL_')) end({ kind: 'fatal', reason: `the coordinator refused this worker's hello: ${text}` });
          if (!outcome) {
            if (++errorsHeard <= ERRORS_LOGGED) log(said);
            return;
          }
          log(said);
          // Not left to the coordinator's close: one that froze after its refusal would hold this worker for ever.
          closeWithin(1000);
          return;
        }
      }
    };

    /** Computes the gradients the weights ask for and sends them back the way the weights came. */
    const answer = (msg: Weights, byMail: boolean) => {
      if (!compute) return fail('WORKER_UNEXPECTED', 'weights before welcome');
      compute.updateWeights(msg.generator, msg.discriminator, byMail);
      const t0 = performance.now();
      const out = compute.step(msg.step, msg.phase);
      const computeSeconds = (performance.now() - t0) / 1000;
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
      heard(); // busy computing is not the coordinator's silence
      metrics.observeRound(msg.phase, computeSeconds);
      progress.rounds++;
      progress.computeSeconds += computeSeconds;
      const everyMs = (opts.progressEverySeconds ?? 0) * 1000;
      const sinceMs = performance.now() - progress.since;
      if (everyMs > 0 && sinceMs >= everyMs) {
        log(`step ${stepOfRound(msg.step)}: ${progress.rounds} rounds in ${(sinceMs / 1000).toFixed(1)} s, ${((progress.computeSeconds / progress.rounds) * 1000).toFixed(1)} ms of compute each`);
        Object.assign(progress, { since: performance.now(), rounds: 0, computeSeconds: 0 });
      }
    };

    let link: Socket | null = null;
    ws.on('upgrade', (res) => (link = res.socket));
    ws.on('open', () => {
      // Any bytes count as hearing from the coordinator, not only whole
      // messages: its pings queue behind a shard, which on a slow link takes
      // longer to arrive than the silence allowed. (Listening from here on,
      // once ws reads the socket itself.)
      link?.on('data', heard);
      if (leaveRequested()) return ws.close(1000, 'worker leaving');
      heard();
      watchdog = setInterval(() => {
        if (performance.now() - lastHeard <= silenceMs) return;
        // The verdict waits for this turn's read of the socket: a process woken from a stop (SIGSTOP, a frozen
        // VM) runs its overdue timers before it reads what arrived meanwhile, such as why it was dropped.
        setImmediate(() => {
          if (outcome || performance.now() - lastHeard <= silenceMs) return;
          end(lost(`nothing from the coordinator for ${(silenceMs / 1000).toFixed(0)} s`));
          ws.terminate();
        });
      }, 1000);
      log(`connected to ${withoutCredentials(opts.coordinator)}`);
      ws.send(encode(message<Hello>({ type: 'hello', name: me.name, backend: me.backend, pid: process.pid, hostname: os.hostname() })));
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      heard();
      // Decided (failed, stopped, leaving): ws still delivers what arrives while the socket closes, and
      // a step computed for it would go nowhere.
      if (outcome) return;
      try {
        if (!isBinary) throw new ProtocolError('bad_frame', 'text frame');
        handle(decodeCoordinatorMessage(data));
      } catch (e) {
        // Only ganfleet's codes go on the wire (an OS or tfjs error's text says the rest).
        const code = e instanceof GanfleetError ? e.code : 'WORKER_FAILED';
        // A coordinator of another protocol version, or one whose first message (its welcome) this build
        // cannot read, will not change by reconnecting. Nor will a trap in the wasm backend (out of its
        // memory, out of bounds): the module's state is unknown after one, so only a new process computes again.
        const trapped = e instanceof WebAssembly.RuntimeError;
        const text = trapped ? `the backend failed (${(e as Error).message}); this process cannot compute again` : (e as Error).message;
        fail(code, text, trapped || (e instanceof ProtocolError && (e.reason === 'bad_version' || workerId === null)));
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
    ws.on('error', (e: Error & { code?: string }) => end(lost(withHint(e, opts.coordinator))));
    ws.on('close', (code, reason) => {
      if (watchdog) clearInterval(watchdog);
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
      resolve(outcome ?? lost(`closed (${code}${reason.length ? ` ${reason}` : ''})`));
    });
  });
}

/**
 * What a welcome asks of this worker: the model and the wire dtype, or
 * [code, why] where this build cannot train as asked, which a reconnect to
 * the same coordinator would not change.
 */
function welcomeTerms(msg: Welcome): { model: GanModel; wireDtype: WireDtype } | [string, string] {
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
  const dtype = msg.wireDtype ?? 'float32';
  if (!(WIRE_DTYPES as readonly string[]).includes(dtype)) return ['WORKER_WIRE_DTYPE', `unknown wire dtype ${dtype}`];
  return { model, wireDtype: dtype as WireDtype };
}
