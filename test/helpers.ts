import assert from 'node:assert/strict';

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
