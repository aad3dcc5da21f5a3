/**
 * Errors that cross a module boundary carry a stable `code` (like `ws`'s
 * WS_ERR_* codes) so callers and tests branch on the code, never on the text.
 */
export class GanfleetError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'GanfleetError';
  }
}
