/**
 * `npm run faults`: injects each fault into a real run and measures what
 * happened, from the coordinator's own log timestamps. Prints one JSON object.
 */
import fs from 'node:fs';
import { GanfleetProcess, freePort, loggedSteps, startCoordinator, startWorker, tempDir } from '../test/harness';

const procs: GanfleetProcess[] = [];
const track = <T extends GanfleetProcess>(p: T) => (procs.push(p), p);

/** Timestamp (ms) of the first log line matching `re` after `after`. */
function at(log: string, re: RegExp, after = 0): number {
  for (const line of log.split('\n')) {
    const t = Date.parse(line.slice(0, 24));
    if (t >= after && re.test(line)) return t;
  }
  throw new Error(`no line matching ${re} after ${new Date(after).toISOString()}`);
}

function gapsAndRepeats(steps: number[], from: number, to: number) {
  const seen = new Map<number, number>();
  for (const s of steps) seen.set(s, (seen.get(s) ?? 0) + 1);
  let missing = 0;
  let repeated = 0;
  for (let s = from; s <= to; s++) {
    const n = seen.get(s) ?? 0;
    if (n === 0) missing++;
    if (n > 1) repeated += n - 1;
  }
  return { missing, repeated };
}

async function workerFault(kind: 'SIGKILL' | 'SIGSTOP' | 'SIGTERM') {
  const dir = tempDir('faults');
  const c = track((await startCoordinator(['--steps', '300', '--log-every', '1', '--checkpoint-every', '0', '--heartbeat', '1', '--round-timeout', '5', '--out', dir])).proc);
  const url = /listening for workers on (\S+)/.exec(c.log)![1];
  const workers = ['a', 'b', 'c'].map((n) => track(startWorker(url, n)));
  await c.waitFor(/step 50\/300/);
  const t0 = Date.now();
  workers[1].kill(kind);
  const code = await c.exited;
  if (kind === 'SIGSTOP') workers[1].kill('SIGKILL');
  const left = at(c.log, /w\d left/, t0);
  const nextStep = at(c.log, /\] step \d+\//, left);
  const steps = loggedSteps(c.log);
  fs.rmSync(dir, { recursive: true, force: true });
  return {
    fault: { SIGKILL: 'worker SIGKILL mid-run (1 of 3)', SIGSTOP: 'worker hangs (SIGSTOP), --heartbeat 1 --round-timeout 5', SIGTERM: 'worker SIGTERM (clean leave)' }[kind],
    outcome: `${/w\d left \(([^)]*)\)/.exec(c.log)?.[1]}; run finished with exit ${code}`,
    detectedAfterMs: left - t0,
    nextStepAfterMs: nextStep - t0,
    ...gapsAndRepeats(steps, 1, 300),
  };
}

async function coordinatorKill(tearNewest: boolean) {
  const dir = tempDir('faults');
  const port = await freePort();
  const args = ['coordinator', '--port', String(port), '--metrics-port', '-1', '--steps', '200', '--log-every', '1', '--checkpoint-every', '25', '--out', dir];
  const first = track(new GanfleetProcess(args));
  await first.waitFor(/listening/);
  const workers = ['a', 'b'].map((n) => track(startWorker(`ws://127.0.0.1:${port}`, n)));
  await first.waitFor(/step 90\/200/);
  first.kill('SIGKILL');
  await first.exited;
  const killedAtStep = Math.max(...loggedSteps(first.log));
  if (tearNewest) {
    const f = `${dir}/checkpoints/${fs.readdirSync(`${dir}/checkpoints`).sort().at(-1)}`;
    fs.truncateSync(f, fs.statSync(f).size - 4096);
  }
  const restart = Date.now();
  // Both workers rejoin before it starts: one still in its reconnect backoff could otherwise
  // miss the whole resumed run and, never told to stop, retry forever.
  const second = track(new GanfleetProcess([...args, '--resume', '--min-workers', '2']));
  const code = await second.exited;
  for (const w of workers) await w.exited;
  const resumedAt = Number(/resumed from .* at step (\d+)/.exec(second.log)![1]);
  const firstStep = at(second.log, /\] step \d+\//, restart);
  const steps = loggedSteps(second.log);
  fs.rmSync(dir, { recursive: true, force: true });
  return {
    fault: tearNewest ? 'coordinator SIGKILL, newest checkpoint torn, restart with --resume' : 'coordinator SIGKILL, restart with --resume (--checkpoint-every 25)',
    outcome: `resumed at step ${resumedAt}; workers reconnected by themselves; run finished with exit ${code}`,
    killedAtStep,
    stepsRecomputed: killedAtStep - resumedAt,
    restartToFirstStepMs: firstStep - restart,
    ...gapsAndRepeats(steps, resumedAt + 1, 200),
  };
}

async function main() {
  const results = [];
  for (const kind of ['SIGKILL', 'SIGSTOP', 'SIGTERM'] as const) results.push(await workerFault(kind));
  results.push(await coordinatorKill(false));
  results.push(await coordinatorKill(true));
  process.stdout.write(JSON.stringify(results, null, 2) + '\n');
}

const USAGE = `npm run faults [-- --help]

Injects each fault into a real run on this machine: a worker's SIGKILL, SIGSTOP and SIGTERM, then the
coordinator's SIGKILL with and without a torn checkpoint, each followed by a --resume. Prints one JSON
array: per fault, what the run did and how long each part took, from the coordinator's own log lines.
Takes a few minutes; it takes no options.`;

const args = process.argv.slice(2);
if (args.length > 0) {
  const help = args.every((a) => a === '--help' || a === '-h');
  (help ? process.stdout : process.stderr).write(`${help ? '' : `unknown arguments: ${args.join(' ')}\n\n`}${USAGE}\n`);
  process.exit(help ? 0 : 2);
}

main()
  .catch((e) => {
    process.stderr.write(`faults failed: ${(e as Error).stack}\n`);
    process.exitCode = 1;
  })
  .finally(() => procs.forEach((p) => p.kill()));
