import assert from 'node:assert/strict';
import path from 'node:path';

/** The compiled CLI, run as a real child process. */
export const CLI = path.join(__dirname, '..', 'src', 'cli.js');

/** Value of an unlabelled series in a Prometheus text exposition. */
export function metricValue(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

/** Element-wise |a - e| <= atol + rtol·|e|, reporting the worst index. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol = atol, what = ''): void {
  assert.equal(actual.length, expected.length, `${what} length`);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const excess = Math.abs(actual[i] - expected[i]) - (atol + rtol * Math.abs(expected[i]));
    if (!(excess <= worstExcess)) {
      worst = i;
      worstExcess = Number.isNaN(excess) ? Infinity : excess;
    }
  }
  assert.ok(worst < 0, `${what} index ${worst}: ${actual[worst]} vs ${expected[worst]}`);
}
