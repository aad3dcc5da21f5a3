import { truncate } from './text';

/** One line per event, prefixed with time and component, so interleaved worker logs stay readable. */
export type Logger = (msg: string) => void;

/**
 * Messages carry strings from peers (a worker's mailbox path in an error, a
 * coordinator's stop reason): control characters are escaped, so no peer can
 * end a line early and forge one, or send terminal escapes.
 */
export function createLogger(component: string, stream: NodeJS.WriteStream = process.stdout): Logger {
  dropLinesOnFailure(stream);
  // The component holds a worker's --name, as free as a peer's string.
  const prefix = `[${escapeControls(component)}]`;
  return (msg) => {
    if (!failed.has(stream)) stream.write(`${new Date().toISOString()} ${prefix} ${escapeControls(msg)}\n`);
  };
}

const guarded = new WeakSet<NodeJS.WriteStream>();
const failed = new WeakSet<NodeJS.WriteStream>();

/**
 * A log that cannot be written drops the lines that follow; it does not end
 * the process. A reader that went away (`ganfleet worker | head`) is said
 * nothing about; any other failure (a full disk under `> run.log`) is said
 * once on stderr. Training, its checkpoints and its metrics go on.
 */
function dropLinesOnFailure(stream: NodeJS.WriteStream): void {
  if (guarded.has(stream)) return;
  guarded.add(stream);
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (failed.has(stream)) return;
    failed.add(stream);
    if (e.code === 'EPIPE' || stream === process.stderr) return;
    dropLinesOnFailure(process.stderr);
    if (!failed.has(process.stderr)) process.stderr.write(`ganfleet: the log cannot be written (${e.message}); the command goes on without its lines\n`);
  });
}

/**
 * Writes a command's result (`ganfleet eval --json > scores.json`) and
 * resolves once it is written; a write that fails rejects, so the command
 * exits 1 with the reason rather than with a result lost.
 */
export function writeResult(stream: NodeJS.WriteStream, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    // Kept on a failure: the stream's 'error' follows the write's callback, and unheard it would crash the process.
    stream.once('error', reject);
    stream.write(text, (e) => {
      if (e) return reject(e);
      stream.off('error', reject);
      resolve();
    });
  });
}

/**
 * Control characters (but tab) as escapes: \n, \r, \u001b, ...; also the
 * bidirectional embeddings, overrides and isolates (U+202E reverses the rest
 * of a line in a viewer that handles bidirectional text). Joiners and marks,
 * which Persian or Indic names and paths hold, stay as they are.
 */
export function escapeControls(text: string): string {
  return text.replace(/[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028-\u202e\u2066-\u2069]/g, (c) =>
    c === '\n' ? '\\n' : c === '\r' ? '\\r' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/**
 * A string a peer chose (its name, backend, an error it reports), quoted and
 * cut to `max` characters for a log line: the protocol lets it be 1,024, and
 * a peer that rejoins in a loop should not write kilobytes a line.
 */
export function peerString(text: string, max = 160): string {
  return JSON.stringify(truncate(text, max));
}

/** A string a peer chose, as the status page shows it: cut as in a log line, its control and bidirectional characters escaped. */
export function peerText(text: string, max = 160): string {
  return escapeControls(truncate(text, max));
}

/**
 * At most one line per key (a peer's address) per `intervalMs`, saying how
 * many events it stands for: a peer that repeats an offence thousands of
 * times a second must not fill the disk with the same line.
 */
export function throttledLogger(log: Logger, intervalMs = 60_000, clock: () => number = () => performance.now()): (key: string, msg: string) => void {
  // A monotonic clock: on the wall clock, a step back (NTP, a resumed VM) would silence a key for as long as the step.
  const last = new Map<string, { at: number; unsaid: number }>();
  let swept = clock();
  return (key, msg) => {
    const now = clock();
    // A key silent for a whole interval past its window is forgotten, once an interval: the map holds the keys
    // of the last two intervals. (What it had not said is in the metric that counts the events.)
    if (now - swept >= intervalMs) {
      for (const [k, v] of last) if (now - v.at >= 2 * intervalMs) last.delete(k);
      swept = now;
    }
    const seen = last.get(key);
    if (seen && now - seen.at < intervalMs) {
      seen.unsaid++;
      return;
    }
    log(seen?.unsaid ? `${msg} (and ${seen.unsaid} more like it in the last ${Math.round((now - seen.at) / 1000)} s)` : msg);
    last.set(key, { at: now, unsaid: 0 });
  };
}

/** The host part of a peer's `host:port` address (IPv6 hosts keep their colons): the key a peer's lines are throttled by. */
export function hostOf(address: string): string {
  const colon = address.lastIndexOf(':');
  return colon < 0 ? address : address.slice(0, colon);
}
