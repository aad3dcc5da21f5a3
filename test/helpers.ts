import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { Adam } from '../src/coordinator/adam';

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

/**
 * A frame of a few hundred bytes that killed the coordinator before the
 * shape check refused extension types: msgpackr's record extension (0x72)
 * makes it read on from inside a bin8 that a walk skipping extension bytes
 * takes as opaque, and there `nesting` array32 headers each claim 16M
 * elements, which msgpackr allocates before reading any.
 */
export function recordExtensionBomb(nesting: number): Buffer {
  const hidden = [0x05];
  for (let i = 0; i < nesting; i++) hidden.push(0xdd, 0x00, 0xff, 0xff, 0xff);
  return Buffer.from([0x97, 0xd5, 0x72, 0x20, 0x00, 0x91, 0xa1, 0x61, 0x01, 0xd5, 0x72, 0x20, 0xc4, 0x90, 0x60, 0xc4, hidden.length, ...hidden]);
}

/**
 * Why `ids` (another user) cannot run this Node, or null. Node out of their reach (npx's copy under root's
 * 0700 home, as in test:node24) is no fault of the checkout's, and tests that run a command as them skip saying so.
 */
export function nodeUnrunnableBy(ids: { uid: number; gid: number }): string | null {
  return spawnSync(process.execPath, ['-e', '0'], ids).status === 0 ? null : `${process.execPath} cannot be run by uid ${ids.uid}`;
}

/**
 * Makes `performance.now()` read the training steps done so far, 1 ms each (a step applies Adam three times: twice to D,
 * the seed's two updates, and then to G): a clock on which a timing's arithmetic, its warm-up left out, comes out exact.
 */
export function stepCountingClock(t: TestContext): void {
  let applied = 0;
  const apply = Adam.prototype.apply;
  t.mock.method(Adam.prototype, 'apply', function (this: Adam, params: Float32Array, gradients: Float32Array) {
    applied++;
    return apply.call(this, params, gradients);
  });
  t.mock.method(performance, 'now', () => applied / 3);
}
