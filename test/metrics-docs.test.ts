import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Registry } from 'prom-client';
import { CoordinatorMetrics } from '../src/coordinator/metrics';
import { WorkerMetrics } from '../src/worker/metrics';

const README = fs.readFileSync(path.join(__dirname, '..', '..', 'README.md'), 'utf8');

/** "name type {labels}" for each series a README table after `heading` lists, up to the next blank line after it. */
function documented(heading: string): string[] {
  const from = README.indexOf(heading);
  assert.ok(from >= 0, `README has no "${heading}"`);
  const table = README.slice(from).split('\n\n')[1];
  const rows = table.split('\n').filter((l) => l.startsWith('| `ganfleet_'));
  return rows.flatMap((row) => {
    const [names, types] = row.split('|').slice(1, 3).map((c) => c.trim());
    const kinds = types.split(',').map((t) => t.trim());
    return [...names.matchAll(/`([^`]+)`/g)]
      .map((m) => m[1])
      .filter((name) => !name.endsWith('*')) // prom-client's process series
      .map((name, i) => {
        const [, base, labels] = /^([\w]+)(?:\{(.*)\})?$/.exec(name)!;
        return `${base} ${kinds[Math.min(i, kinds.length - 1)]} {${labels ?? ''}}`;
      });
  });
}

function exported(registry: Registry): string[] {
  return registry
    .getMetricsAsArray()
    .filter((m) => !/^ganfleet_(process|nodejs)_/.test(m.name) && !/^ganfleet_(version_info|heap_|external_memory)/.test(m.name))
    .map((m) => `${m.name} ${(m as unknown as { type: string }).type} {${((m as unknown as { labelNames?: string[] }).labelNames ?? []).join(',')}}`);
}

test("README's metric tables list every series the coordinator and a worker export, with its type and labels, and nothing else", () => {
  assert.deepEqual(documented('All series start with `ganfleet_`:').sort(), exported(new CoordinatorMetrics().registry).sort());
  assert.deepEqual(documented("A worker's own series").sort(), exported(new WorkerMetrics().registry).sort());
});
