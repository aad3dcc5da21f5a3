/**
 * First SIGINT/SIGTERM: `onFirst` (finish the step, write outputs, stop
 * workers). Second: exit at once with 130. Returns a function that removes
 * the handlers.
 */
export function onStopSignals(onFirst: (signal: NodeJS.Signals) => void, onSecond: () => void = () => process.exit(130)): () => void {
  let count = 0;
  const handler = (signal: NodeJS.Signals) => (++count > 1 ? onSecond() : onFirst(signal));
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}
