import { escapeControls } from './log';

/**
 * A switch read from the environment: 1/true/yes/on or 0/false/no/off, in any
 * case. Unset or empty is undefined (as if not given); anything else is null,
 * which the caller refuses.
 */
export function envSwitch(value: string | undefined): boolean | null | undefined {
  if (value === undefined || value === '') return undefined;
  if (/^(?:1|true|yes|on)$/i.test(value)) return true;
  if (/^(?:0|false|no|off)$/i.test(value)) return false;
  return null;
}

/** The GANFLEET_* variable that sets `--flag`. */
export function envVariable(flag: string): string {
  return `GANFLEET_${flag.toUpperCase().replace(/-/g, '_')}`;
}

/**
 * A GANFLEET_* variable one letter or two off a flag (GANFLEET_STEP) is a typo that would quietly keep the
 * default. Warned of, not refused. `flags` are every command's (each name to whether it is a switch): one
 * environment may serve several commands. So is a switch's --no- form (GANFLEET_NO_MAILBOX=1 left the
 * mailboxes on; GANFLEET_MAILBOX=0 turns them off). Another case than upper: dropVariablesThatSetNothing.
 */
export function warnOfMistypedVariables(flags: Map<string, boolean>): void {
  for (const variable of Object.keys(process.env)) {
    const name = flagOfVariable(variable);
    if (name === null || flags.has(name) || name === 'expect-native') continue;
    const negated = /^no-(.+)$/.exec(name)?.[1];
    if (negated !== undefined && flags.get(negated) === true && negated !== 'help' && negated !== 'version') {
      process.stderr.write(`ganfleet: warning: ${escapeControls(variable)} sets nothing (ignored); to turn --${negated} off, set ${envVariable(negated)}=0\n`);
      continue;
    }
    const [nearest, distance] = [...flags.keys()].map((f) => [f, editDistance(name, f)] as const).sort((a, b) => a[1] - b[1])[0] ?? ['', Infinity];
    if (distance <= (name.length < 5 ? 1 : 2)) {
      process.stderr.write(`ganfleet: warning: ${escapeControls(variable)} sets nothing (ignored); did you mean ${envVariable(nearest)}?\n`);
    }
  }
}

/** The flag a GANFLEET_* variable's name spells, whatever its case (GANFLEET_BATCH_SIZE: batch-size); null for any other variable. */
function flagOfVariable(variable: string): string | null {
  return variable.startsWith('GANFLEET_') ? variable.slice('GANFLEET_'.length).toLowerCase().replace(/_/g, '-') : null;
}

/**
 * Removes, with a warning, the GANFLEET_* variables that name a flag but must set nothing, before yargs parses:
 * --help and --version in any case (yargs read them, and one left set ran no command at all), and any other
 * flag in another case than upper (yargs reads some, GANFLEET_steps, and a switch's GANFLEET_mailbox=1 as false,
 * but not others, GANFLEET_Steps; the switches' and values' own checks read the upper-case name only).
 */
export function dropVariablesThatSetNothing(flags: Map<string, boolean>): void {
  for (const variable of Object.keys(process.env)) {
    const name = flagOfVariable(variable);
    if (name === null || !flags.has(name)) continue;
    const commandLineOnly = name === 'help' || name === 'version';
    if (!commandLineOnly && variable === envVariable(name)) continue;
    const hint = commandLineOnly ? `--${name} is for the command line only` : `did you mean ${envVariable(name)}?`;
    process.stderr.write(`ganfleet: warning: ${escapeControls(variable)} sets nothing (ignored); ${hint}\n`);
    delete process.env[variable];
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
