import fs from 'node:fs';
import { Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { envSwitch, envVariable, warnOfMistypedVariables } from './env';

/** How a switch is written on the command line. */
function switchForms(key: string): string {
  return `--${key} or --no-${key}, or --${key}= with 1/0, true/false, yes/no or on/off`;
}

/** A usage error found outside yargs' own checks (in a middleware), which exits 2 like theirs. */
export class UsageError extends Error {}

/** Refuses a --flag path that is missing or of the other kind (a directory for a certificate), named by its flag. */
export function requirePath(name: string, file: string | undefined, kind: 'file' | 'directory'): void {
  if (file === undefined) return;
  const unreadable = (e: unknown) => new Error(`--${name}: ${given(name, file)} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  let stat: fs.Stats | undefined;
  try {
    stat = fs.statSync(file, { throwIfNoEntry: false });
  } catch (e) {
    // ENOTDIR: a file where the path wants a directory (package.json/x), which is no such path either.
    if ((e as NodeJS.ErrnoException).code !== 'ENOTDIR') throw unreadable(e);
  }
  if (!stat) throw new Error(`--${name}: no such ${kind} ${given(name, file)}`);
  if (kind === 'file' ? !stat.isFile() : !stat.isDirectory()) throw new Error(`--${name}: ${given(name, file)} is not a ${kind}`);
  // A key only root may read (mode 600, mounted into a container) was refused as one holding no key, or an encrypted one.
  if (kind === 'file') {
    try {
      fs.closeSync(fs.openSync(file, 'r'));
    } catch (e) {
      throw unreadable(e);
    }
  }
}

/**
 * Refuses a path that starts with ~ or ~/: a shell expands it only at the start of a word, not after --out= nor in
 * GANFLEET_OUT=~/runs, and taken as it is, the outputs went to a directory named ~ in the working directory while
 * the log's "checkpoint ~/runs/…" read as the home directory.
 */
export function refuseUnexpandedHome(name: string, file: string | undefined): void {
  if (file === undefined || !/^~(\/|$)/.test(file)) return;
  throw new Error(`--${name} ${given(name, file)} starts with ~, which nothing expanded (a shell does only at the start of a word): write $HOME instead, or ./~ for a directory named ~`);
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
  const { value, variable } = rawValue(name, hideBin(process.argv));
  return value !== undefined ? variable : undefined;
}

/**
 * A refused value as the user wrote it, and where: yargs turns a number
 * flag's "abc" into NaN, and a GANFLEET_* value is not on the command line.
 * (buildCli is only ever given process.argv.) `shown` leaves out what must
 * not be printed (a password in --coordinator).
 */
export function given(name: string, v: unknown, shown: (text: string) => string = (text) => text): string {
  const { value, variable } = rawValue(name, hideBin(process.argv));
  if (variable && value !== undefined) return `${JSON.stringify(shown(value))} (from ${variable})`;
  return shown(value !== undefined && Number.isNaN(v) ? JSON.stringify(value) : String(v));
}

export function checkPort(name: string, value: number, allowOff = false): void {
  if (!Number.isInteger(value) || value > 65535 || value < (allowOff ? -1 : 0)) throw new Error(`--${name} must be a port number, got ${given(name, value)}`);
}

/**
 * Refuses an address to bind written as a URL names it: `[::1]`, `0.0.0.0:8787`, `ws://0.0.0.0`. listen() looks each
 * up as a host name (ENOTFOUND, after the backend has loaded), and the loopback check before it took `[::1]` and
 * `127.0.0.1:8787` for public ones, telling the user to pass --insecure. An IPv6 address has two colons or more.
 */
export function checkHost(name: string, value: string, portFlag: string): void {
  if (!/[[\]/]/.test(value) && value.split(':').length !== 2) return;
  throw new Error(`--${name} takes an address or host name alone (0.0.0.0, ::1, coordinator.example), without brackets, scheme or port (that is --${portFlag}), got ${given(name, value)}`);
}

type OptionTable = { key: Record<string, unknown>; alias: Record<string, string[]>; boolean: string[]; default: Record<string, unknown> };

/** The flags yargs holds for `y` so far (its getOptions(), which the typings leave out). */
function optionsOf<T>(y: Argv<T>): OptionTable {
  return (y as unknown as { getOptions(): OptionTable }).getOptions();
}

/** The names of the flags `y` defines, each to whether it is a switch. */
export function flagNames<T>(y: Argv<T>): [string, boolean][] {
  const options = optionsOf(y);
  return Object.keys(options.key).map((k) => [k, options.boolean.includes(k)]);
}

/**
 * yargs' strict mode also rejects GANFLEET_* variables meant for another
 * command (a worker started with GANFLEET_STEPS in its environment), so
 * unknown flags are checked on the command line alone: long ones, and short
 * ones (only -h is known; `-n 4` used to be ignored without a word).
 *
 * yargs reads a boolean variable as true only when it is the word `true`,
 * so GANFLEET_NATIVE=1 turned the native kernels off. Boolean variables are
 * read here instead (util/env.ts), before any check sees them, and a value
 * that is not a switch is refused. A flag on the command line wins.
 *
 * `everyFlag`: every command's flags, which a GANFLEET_* variable may name without a typo.
 */
export function checkCommandLine<T>(y: Argv<T>, raw: readonly string[], everyFlag: Map<string, boolean>) {
  const options = () => optionsOf(y);
  const valued = valueFlags(options());
  return y
    .epilog('Every flag can also be set as GANFLEET_<FLAG> (GANFLEET_BATCH_SIZE=64, GANFLEET_TOKEN=…); the command line wins, and a flag given twice takes its last value.')
    // A value flag at the end of the line, or before another flag, would otherwise quietly keep its default.
    // Exactly one value (not requiresArg's "at least one"): with that count yargs-parser drops the earlier value of a
    // flag given twice, where otherwise a last value of 1 counts as an increment (--steps 1000 --steps 1 was 1001).
    .nargs(Object.fromEntries(valued.map((k) => [k, 1])))
    .middleware((a) => {
      const refusedVariables = applySwitches(a, raw, options());
      // Before the command's checks, which would otherwise judge the value yargs made of it (GANFLEET_INSECURE=2 read
      // as false was refused as "pass --insecure").
      for (const s of refusedVariables) throw new UsageError(`${s.variable} must be 1/0, true/false, yes/no or on/off, got ${JSON.stringify(s.raw)}`);
    }, true)
    // Before validation: a mistyped flag (--coordinater) is named as such, not as the required one it misses.
    .middleware(() => {
      warnOfMistypedVariables(everyFlag);
      refuseUnknownFlags(raw, options(), valued);
    }, true)
    // Before validation too: yargs would call a stray word an unknown command, and check ranges on the 0 it makes of "".
    .middleware((a) => {
      refuseStrayWords(a._.slice(1).map(String), raw, options().boolean);
      refuseEmptyValues(raw, valued, a.resume !== undefined);
    }, true)
    .check(() => {
      // No flag, but a switch all the same (util/native.ts): a typo must not quietly choose the kernel.
      if (envSwitch(process.env.GANFLEET_NATIVE_AVX512) === null) {
        throw new Error(`GANFLEET_NATIVE_AVX512 must be 1/0, true/false, yes/no or on/off, got ${JSON.stringify(process.env.GANFLEET_NATIVE_AVX512)}`);
      }
      return true;
    });
}

/** The flags that take a value. */
function valueFlags(options: OptionTable): string[] {
  return Object.keys(options.key).filter((k) => !options.boolean.includes(k) && k !== 'help' && k !== 'version');
}

/** A switch's GANFLEET_* variable; `value` is null where `raw` is no switch. */
interface SwitchVariable {
  key: string;
  variable: string;
  raw: string | undefined;
  value: boolean | null | undefined;
}

/**
 * Sets each switch as its variable, or the command line, says (where the
 * line gives a value, --mailbox=0, its last form there counts); returns the
 * variables that are no switch.
 */
function applySwitches(a: Record<string, unknown>, raw: readonly string[], options: OptionTable): SwitchVariable[] {
  const onCommandLine = flagsOnCommandLine(raw);
  // Read before GANFLEET_NATIVE is rewritten below, which would make a refused value look valid.
  const variables = options.boolean
    .filter((key) => key !== 'help' && key !== 'version' && !onCommandLine.has(key))
    .map((key): SwitchVariable => {
      const variable = envVariable(key);
      return { key, variable, raw: process.env[variable], value: envSwitch(process.env[variable]) };
    });
  // Empty is as if unset: the default (yargs took it for false).
  for (const s of variables) if (s.value !== null && s.raw !== undefined) a[s.key] = s.value ?? options.default[s.key];
  for (const [key, on] of switchesWrittenWithValues(raw, options.boolean)) a[key] = on;
  // Read where the kernels are loaded (util/native.ts), also in code that never sees these flags.
  if (a.native !== undefined) process.env.GANFLEET_NATIVE = a.native ? '1' : '0';
  return variables.filter((s) => s.value === null);
}

/** The names of the flags on the command line, switches' --no- forms included. */
function flagsOnCommandLine(raw: readonly string[]): Set<string> {
  const names = new Set<string>();
  for (const token of raw) {
    if (token === '--') break;
    const name = /^--(?:no-)?([^=]+)/.exec(token)?.[1];
    if (name) names.add(name);
  }
  return names;
}

/**
 * The switches whose last form on the command line carries a value, each as
 * that value says: yargs took every value but `true` for false (--mailbox=0
 * read as GANFLEET_MAILBOX=0 does not), and --insecure=yes for no. A later
 * bare form (--mailbox, --no-mailbox, --mailbox false) yargs reads right
 * itself. A value that is no switch is refused.
 */
function switchesWrittenWithValues(raw: readonly string[], switches: string[]): Map<string, boolean> {
  const last = new Map<string, boolean>();
  for (let i = 0; i < raw.length && raw[i] !== '--'; i++) {
    const [, no, key, equals, value] = /^--(no-)?([^=]+)(=(.*))?$/s.exec(raw[i]) ?? [];
    if (key === undefined || !switches.includes(key)) continue;
    // A later form without a value: yargs, which takes a flag's last form, has read it right.
    if (equals === undefined) {
      last.delete(key);
      continue;
    }
    if (key === 'help' || key === 'version') throw new UsageError(`--${key} takes no value; got ${JSON.stringify(raw[i])}`);
    const on = envSwitch(value);
    if (no || on === null || on === undefined) throw new UsageError(`--${no ?? ''}${key} is a switch: ${switchForms(key)}; got ${JSON.stringify(raw[i])}`);
    last.set(key, on);
  }
  return last;
}

const TOKEN_STARTS_WITH_DASH = 'Unknown argument: the word after --token starts with - (not shown: a value of --token that starts with - is written --token=<value>)';

/** Refuses what yargs would drop or misread without a word: words after --, unknown flags, --no- on a value flag. */
function refuseUnknownFlags(raw: readonly string[], options: OptionTable, valued: string[]): void {
  const known = new Set(Object.keys(options.key));
  const short = new Set(Object.entries(options.alias).flatMap(([k, names]) => [k, ...names]).filter((n) => n.length === 1));
  const ended = raw.indexOf('--');
  // yargs would drop them without a word: `local -- --workers 1` trained with the default workers.
  if (ended >= 0 && ended < raw.length - 1) throw new UsageError(`Unexpected argument after --: ${raw.slice(ended + 1).join(' ')} (ganfleet takes flags only)`);
  for (const [i, token] of raw.entries()) {
    if (token === '--') break;
    const [, no, name] = /^--(no-)?([^=]+)/.exec(token) ?? [];
    // A secret stays out of the error, which lands in logs that ps never reached (a base64url token may start with - or --).
    const afterToken = raw[i - 1] === '--token' && token.startsWith('-');
    if (name && !known.has(name)) throw new UsageError(afterToken ? TOKEN_STARTS_WITH_DASH : `Unknown argument: --${name}`);
    // yargs reads --no-<flag> as false for any flag: --no-metrics-host bound the metrics to every interface.
    if (no && !options.boolean.includes(name)) throw new UsageError(`--no-${name}: --${name} takes a value, it is not a switch; to leave it unset, leave it out`);
    // Not a negative number given as a value (--lr -0.001).
    const letters = /^-([^-\d][^=]*)/.exec(token)?.[1];
    if (letters && ![...letters].every((l) => short.has(l))) {
      const flag = /^--([^=]+)$/.exec(raw[i - 1] ?? '')?.[1];
      if (afterToken) throw new UsageError(TOKEN_STARTS_WITH_DASH);
      const value = flag && valued.includes(flag) ? `; a value of --${flag} that starts with - is written --${flag}=${token}` : '';
      throw new UsageError(`Unknown argument: ${token} (long options start with --${value})`);
    }
  }
}

/** Refuses words that are no flag's value (`stray`), naming the switch one follows. */
function refuseStrayWords(stray: string[], raw: readonly string[], switches: string[]): void {
  if (stray.length === 0) return;
  const flagBefore = (i: number) => /^--([^=]+)$/.exec(raw[i - 1] ?? '')?.[1];
  // Its own place: not an earlier copy of the word that a value flag took (`--out x --resume x`).
  const at = raw.findIndex((token, i) => {
    const flag = flagBefore(i);
    return token === stray[0] && (flag === undefined || switches.includes(flag) || flag.startsWith('no-'));
  });
  const key = flagBefore(at);
  const hint = key && switches.includes(key) ? ` (--${key} is a switch: ${switchForms(key)})` : '';
  throw new UsageError(`Unexpected argument: ${stray.join(' ')}${hint}`);
}

/**
 * An empty value reads as unset, or as 0: GANFLEET_HOST= put the token-less metrics on every interface,
 * GANFLEET_TOKEN= turned auth off, GANFLEET_PORT= listened on a random port. `outIsRun`: --out is a run's
 * directory (coordinator, local), where empty would put the outputs (and the pruning of checkpoints/) in the working directory.
 */
function refuseEmptyValues(raw: readonly string[], valued: string[], outIsRun: boolean): void {
  for (const key of valued) {
    const { value, variable } = rawValue(key, raw);
    if (value === undefined || value.trim() !== '') continue;
    const from = variable ? ` (from ${variable})` : '';
    if (key === 'out' && outIsRun) throw new UsageError(`--out must name a directory${from}; to take the default (runs/<timestamp>), leave it out`);
    throw new UsageError(`--${key} must not be empty${from}; to leave it unset, leave it out`);
  }
}

/** Whether the user gave value flag `name`, on the command line or as its GANFLEET_* variable (not yargs' default). */
export function isGiven(name: string): boolean {
  return rawValue(name, hideBin(process.argv)).value !== undefined;
}

/** A value flag's text as given (yargs has already made a number of it; its last, which counts), and the variable it came from, if any. */
function rawValue(key: string, raw: readonly string[]): { value: string | undefined; variable?: string } {
  let value: string | undefined;
  let onCommandLine = false;
  for (let i = 0; i < raw.length && raw[i] !== '--'; i++) {
    if (raw[i] === `--${key}`) [value, onCommandLine] = [raw[i + 1], true];
    if (raw[i].startsWith(`--${key}=`)) [value, onCommandLine] = [raw[i].slice(key.length + 3), true];
  }
  if (onCommandLine) return { value };
  const variable = envVariable(key);
  return { value: process.env[variable], variable };
}
