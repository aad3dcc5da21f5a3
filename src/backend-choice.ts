/**
 * The backends a command can be told to use. Kept apart from backend.ts,
 * which loads TensorFlow.js, so that the command line checks its flags (and
 * answers --help) without loading it.
 */

export const BACKEND_CHOICES = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

/** Why `--require-gpu` cannot go with `--backend choice`, or null. */
export function requireGpuProblem(choice: BackendChoice): string | null {
  return choice === 'wasm' || choice === 'cpu' ? `--require-gpu: --backend ${choice} never uses a GPU; use --backend auto or tensorflow` : null;
}
