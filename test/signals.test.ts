import test from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { onStopSignals } from '../src/util/signals';

test('one signal delivered twice at once (timeout(1) signals its child, then its process group) is one stop; a second signal later exits', async () => {
  const firsts: NodeJS.Signals[] = [];
  let seconds = 0;
  const release = onStopSignals((signal) => firsts.push(signal), () => seconds++);
  try {
    // As the handlers see a double delivery: back to back. Before, the copy exited at once (130), before the checkpoint.
    process.emit('SIGTERM', 'SIGTERM');
    process.emit('SIGTERM', 'SIGTERM');
    assert.deepEqual(firsts, ['SIGTERM']);
    assert.equal(seconds, 0, 'the copy is not a second signal');
    await sleep(250);
    process.emit('SIGINT', 'SIGINT');
    assert.equal(seconds, 1, 'a second signal still exits at once');
    assert.deepEqual(firsts, ['SIGTERM']);
  } finally {
    release();
  }
});
