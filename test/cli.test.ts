import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Adam, KERAS_ADAM_DEFAULTS } from '../src/coordinator/adam';
import { listCheckpoints, writeCheckpoint } from '../src/coordinator/checkpoint';
import { createModel } from '../src/model';
import { Rng } from '../src/util/rng';
import { tempDir } from './harness';
import { CLI } from './helpers';

test('timeouts beyond what a Node timer holds are refused (a longer one would fire at once and drop every worker)', () => {
  for (const [flag, value] of [['--round-timeout', '1e9'], ['--heartbeat', '2147484']]) {
    const r = spawnSync(process.execPath, [CLI, 'coordinator', flag, value, '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
    assert.notEqual(r.status, 0, `${flag} ${value} was accepted`);
    assert.match(r.stderr, new RegExp(`${flag} must be a positive number of seconds up to 2147483`));
  }
});

test('a fresh run refuses an --out that holds checkpoints of another run: --resume continues it, another --out starts anew', () => {
  const out = tempDir('reused-out');
  const model = createModel('mlp');
  const p = model.init(new Rng(1));
  const adam = (n: number) => new Adam(n, KERAS_ADAM_DEFAULTS).state();
  const checkpoint = {
    step: 1000, imagesTotal: 256000, config: { arch: 'mlp' }, seedRng: new Rng(2).state(), nextWorker: 3,
    generator: p.generator, discriminator: p.discriminator, adamGenerator: adam(p.generator.length), adamDiscriminator: adam(p.discriminator.length),
  };
  writeCheckpoint(path.join(out, 'checkpoints'), checkpoint, 3);
  const r = spawnSync(process.execPath, [CLI, 'coordinator', '--out', out, '--port', '0', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /checkpoints already holds checkpoints of a run \(newest ckpt-000001000\.bin\): pass --resume to continue it, or choose another --out/);
  assert.deepEqual(listCheckpoints(path.join(out, 'checkpoints')), ['ckpt-000001000.bin'], 'nothing was pruned or written');
  fs.rmSync(out, { recursive: true, force: true });
});
