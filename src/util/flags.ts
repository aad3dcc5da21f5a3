import fs from 'node:fs';
import { hideBin } from 'yargs/helpers';

/** The GANFLEET_* variable that sets `--flag`. */
export function envVariable(flag: string): string {
  return `GANFLEET_${flag.toUpperCase().replace(/-/g, '_')}`;
}

/**
 * A GANFLEET_* variable one letter or two off a flag (GANFLEET_STEP) is a typo that would quietly keep the
 * default. Warned of, not refused. `flags` are every command's: one environment may serve several commands.
 */
export function warnOfMistypedVariables(flags: Set<string>): void {
  for (const variable of Object.keys(process.env)) {
    if (!variable.startsWith('GANFLEET_')) continue;
    const name = variable.slice('GANFLEET_'.length).toLowerCase().replace(/_/g, '-');
    if (flags.has(name) || name === 'expect-native') continue;
    const [nearest, distance] = [...flags].map((f) => [f, editDistance(name, f)] as const).sort((a, b) => a[1] - b[1])[0] ?? ['', Infinity];
    if (distance <= (name.length < 5 ? 1 : 2)) {
      process.stderr.write(`ganfleet: warning: ${variable} sets nothing (ignored); did you mean ${envVariable(nearest)}?\n`);
    }
  }
}

function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length];
}

/** How a switch is written on the command line. */
export function switchForms(key: string): string {
  return `--${key} or --no-${key}, or --${key}= with 1/0, true/false, yes/no or on/off`;
}

/** A usage error found outside yargs' own checks (in a middleware), which exits 2 like theirs. */
export class UsageError extends Error {}

/** Refuses a --flag path that is missing or of the other kind (a directory for a certificate), named by its flag. */
export function requirePath(name: string, file: string | undefined, kind: 'file' | 'directory'): void {
  if (file === undefined) return;
  let stat: fs.Stats | undefined;
  try {
    stat = fs.statSync(file, { throwIfNoEntry: false });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // ENOTDIR: a file where the path wants a directory (package.json/x), which is no such path either.
    if (code !== 'ENOTDIR') throw new Error(`--${name}: ${given(name, file)} cannot be read (${code ?? (e as Error).message})`);
  }
  if (!stat) throw new Error(`--${name}: no such ${kind} ${given(name, file)}`);
  if (kind === 'file' ? !stat.isFile() : !stat.isDirectory()) throw new Error(`--${name}: ${given(name, file)} is not a ${kind}`);
}

/** `bound`: what sets the range, where another flag does (`--model dcgan`). */
export function integerInRange(name: string, v: unknown, min = 1, max = Infinity, bound?: string): void {
  if (Number.isInteger(v) && (v as number) >= min && (v as number) <= max) return;
  throw new Error(`--${name} must be an integer ${max === Infinity ? `>= ${min}` : `from ${min} to ${max}`}${bound ? ` with ${bound}` : ''}, got ${given(name, v)}`);
}

/** Seeds are 32-bit (util/rng.ts): a larger one would silently draw what its low 32 bits draw. */
export const MAX_SEED = 2 ** 32 - 1;

/** The GANFLEET_* variable a flag's value came from, when the command line does not give it. */
export function environmentSource(name: string): string | undefined {
  const onCommandLine = hideBin(process.argv).some((t) => t === `--${name}` || t.startsWith(`--${name}=`));
  const variable = envVariable(name);
  return !onCommandLine && process.env[variable] !== undefined ? variable : undefined;
}

/**
 * A refused value as the user wrote it, and where: yargs turns a number
 * flag's "abc" into NaN, and a GANFLEET_* value is not on the command line.
 * (buildCli is only ever given process.argv.)
 */
export function given(name: string, v: unknown): string {
  const variable = environmentSource(name);
  if (variable) return `${JSON.stringify(process.env[variable])} (from ${variable})`;
  const args = hideBin(process.argv);
  const at = args.findLastIndex((t) => t === `--${name}` || t.startsWith(`--${name}=`));
  if (at >= 0 && Number.isNaN(v)) return JSON.stringify(args[at].includes('=') ? args[at].slice(args[at].indexOf('=') + 1) : args[at + 1]);
  return String(v);
}

export function checkPort(name: string, value: number, allowOff = false): void {
  if (!Number.isInteger(value) || value > 65535 || value < (allowOff ? -1 : 0)) throw new Error(`--${name} must be a port number, got ${given(name, value)}`);
}
