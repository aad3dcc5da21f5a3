import fs from 'node:fs';
import { spawnSync } from 'node:child_process';

/**
 * The OpenBLAS kernel the PyTorch anchor should run. Debian's OpenBLAS 0.3.21
 * does not know CPUs newer than it, this project's Xeon (model 207) among
 * them, and falls back to its generic Prescott (SSE3) kernel: a
 * 256×784·784×128 product there took 3.4 ms on one thread, against 0.63 ms
 * with the SkylakeX (AVX-512) kernel and 1.0 with Haswell (AVX2). Comparing
 * ganfleet with that would flatter it by a factor of two. So where OpenBLAS
 * detects Prescott on a CPU with AVX-512 or AVX2, the anchor is given the best
 * kernel the CPU runs; a kernel OpenBLAS detected itself is kept.
 */
export function openblasCoreFor(detected: string | null, cpuFlags: ReadonlySet<string>): string | null {
  if (detected !== 'Prescott') return null;
  if (['avx512f', 'avx512cd', 'avx512bw', 'avx512dq', 'avx512vl'].every((f) => cpuFlags.has(f))) return 'SkylakeX';
  if (cpuFlags.has('avx2') && cpuFlags.has('fma')) return 'Haswell';
  return null;
}

function cpuFlags(): Set<string> {
  try {
    const line = /^flags\s*:(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
    return new Set(line.trim().split(/\s+/));
  } catch {
    return new Set();
  }
}

export interface OpenblasChoice {
  /** The kernel OpenBLAS picked by itself (`OPENBLAS_VERBOSE=2`), null where it did not say. */
  detected: string | null;
  /** The kernel the anchor runs with: `OPENBLAS_CORETYPE` as set by the user or chosen here, else the detected one. */
  used: string | null;
  /** What the anchor's environment gains. */
  env: Record<string, string>;
}

/** Which kernel `python`'s OpenBLAS picks, and which the anchor should run with. */
export function openblasChoice(python: string): OpenblasChoice {
  const { OPENBLAS_CORETYPE: preset, ...rest } = process.env;
  const probe = spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8', env: { ...rest, OPENBLAS_VERBOSE: '2', OPENBLAS_NUM_THREADS: '1' } });
  const detected = /Core: (\S+)/.exec(`${probe.stdout ?? ''}${probe.stderr ?? ''}`)?.[1] ?? null;
  if (preset) return { detected, used: preset, env: { OPENBLAS_CORETYPE: preset } };
  const chosen = openblasCoreFor(detected, cpuFlags());
  return chosen ? { detected, used: chosen, env: { OPENBLAS_CORETYPE: chosen } } : { detected, used: detected, env: {} };
}
