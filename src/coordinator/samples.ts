import path from 'node:path';
import { GanModel } from '../model';
import { scoped, tf } from '../model/tf';
import { Rng } from '../util/rng';
import { makeDirectory, namesIn, writeFileAtomic } from '../util/write';
import { encodePng, imageGrid } from '../data/png';

const GRID = 5;

export const SAMPLE_FILE = /^step-\d{6,}\.png$/;

/** The name of step `step`'s grid in samples/. */
export function gridName(step: number): string {
  return `step-${String(step).padStart(6, '0')}.png`;
}

/**
 * The grids in `dir`, oldest first, split at `step`, the checkpoint a resume
 * starts from: those up to it are the run's history, those after it show
 * weights the resume throws away.
 */
export function gridsAround(dir: string, step: number): { upTo: string[]; after: string[] } {
  const stepOf = (name: string) => Number(name.slice(5, -4));
  const grids = namesIn(dir)
    .filter((name) => SAMPLE_FILE.test(name))
    .sort((a, b) => stepOf(a) - stepOf(b));
  return { upTo: grids.filter((name) => stepOf(name) <= step), after: grids.filter((name) => stepOf(name) > step) };
}

/** The most grids /api/status lists (the status page's slider positions): one a grid would grow without bound. */
const LISTED_GRIDS = 500;

/** `names` (oldest first) thinned to at most `max`, evenly spread over them, the first and the newest always kept. */
export function spreadGrids(names: readonly string[], max = LISTED_GRIDS): string[] {
  if (names.length <= max) return [...names];
  return Array.from({ length: max }, (_, i) => names[Math.round((i * (names.length - 1)) / (max - 1))]);
}

/**
 * Writes 5×5 sample grids from one fixed noise batch, so grids from
 * different steps (and resumed runs) show the same 25 latent points.
 */
export class SampleWriter {
  private readonly noise: Float32Array;

  constructor(
    private readonly model: GanModel,
    readonly dir: string,
    seed: number,
  ) {
    this.noise = new Rng(seed).fillNormal(new Float32Array(GRID * GRID * model.zDim));
  }

  /** Renders the grid as PNG bytes. */
  private render(generator: Float32Array): Buffer {
    const images = scoped(() => {
      const g = this.model.generatorLayout.toTensors(generator);
      const z = tf.tensor2d(this.noise, [GRID * GRID, this.model.zDim]);
      return this.model.generate(g, z).dataSync() as Float32Array;
    });
    const grid = imageGrid(images, GRID * GRID, GRID, GRID);
    return encodePng(grid.width, grid.height, grid.pixels, 1);
  }

  /** The grid's file, or null where `mayCommit` (asked before it takes its name) said no. */
  write(step: number, generator: Float32Array, mayCommit?: () => boolean): string | null {
    const file = path.join(this.dir, gridName(step));
    // The run made it at start (OutputClaim); this brings back one removed since, rather than lose the grid.
    makeDirectory(this.dir);
    return writeFileAtomic(file, [this.render(generator)], mayCommit) ? file : null;
  }
}
