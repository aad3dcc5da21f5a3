import { Logger } from './log';

/** The longest a phase goes without a line, where its tenths take longer. */
export const STALL_SECONDS = 5;

/**
 * Progress of a long batched job (generate, eval): a line at each tenth of a
 * phase (or, once a tenth takes longer than STALL_SECONDS, every
 * STALL_SECONDS), with its time so far and an estimate of the rest. A phase
 * of fewer than 10 batches (the size of its first) says nothing: it is over
 * in moments.
 * Without it, 200,000 samples (a minute for the MLP, several for the DCGAN)
 * ran with no output between the backend line and the result. With
 * `gapSeconds`, lines come at least that far apart, the first that long after
 * the start: a log that shows more (a coordinator's) gets none for a job over
 * in moments. `now`: milliseconds, monotonic as performance.now (a test drives
 * its own): on the wall clock, a step back (NTP, a resumed VM) silenced the
 * rest of a phase, and a step forward added itself to its seconds and ETA.
 */
export function batchProgress(log: Logger, unit: string, gapSeconds = 0, now: () => number = () => performance.now()): (phase: string, done: number, total: number) => void {
  let current = '';
  let start = now();
  let last = start;
  let lineAt = start;
  let shown = 0;
  let quiet = false;
  /** The phase's lines come every STALL_SECONDS, not at tenths. */
  let timed = false;
  return (phase, done, total) => {
    const at = now();
    if (phase !== current) {
      // A phase starts where the one before it ended.
      [current, start, shown, quiet, timed] = [phase, last, 0, total < 10 * done, false];
    }
    last = at;
    const tenth = Math.floor((10 * Math.min(done, total)) / total);
    // A tenth that takes longer than STALL_SECONDS: 200,000 DCGAN samples took 30 s to their first (minutes without
    // the native kernels), after a line that did not say what was coming. From then on the phase's lines come every
    // STALL_SECONDS at their own percent: with tenths of 6 s, each tenth's line came a second after one at 5 s.
    const quietFor = at - Math.max(lineAt, start);
    timed ||= tenth <= shown && quietFor >= 1000 * STALL_SECONDS;
    const due = timed ? quietFor >= 1000 * STALL_SECONDS || done >= total : tenth > shown;
    if (quiet || !due || at - lineAt < 1000 * gapSeconds) return;
    [shown, lineAt] = [tenth, at];
    const seconds = (at - start) / 1000;
    const percent = timed ? Math.floor((100 * Math.min(done, total)) / total) : 10 * tenth;
    const left = done >= total ? '' : `, about ${Math.ceil((seconds * (total - done)) / done)} s left`;
    log(`${phase}: ${percent}% (${Math.min(done, total)}/${total} ${unit}) in ${seconds.toFixed(1)} s${left}`);
  };
}
