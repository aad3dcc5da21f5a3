/** One line per event, prefixed with time and component, so interleaved worker logs stay readable. */
export type Logger = (msg: string) => void;

export function createLogger(component: string, stream: NodeJS.WriteStream = process.stdout): Logger {
  return (msg) => stream.write(`${new Date().toISOString()} [${component}] ${msg}\n`);
}
