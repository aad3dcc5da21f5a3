/**
 * Imported first by the CLI, before yargs, which reads the working directory as it loads: one removed since the
 * shell entered it (`rm -rf` of the directory a terminal sits in, a CI workspace cleaned under a step) would end
 * every command, --help included, with Node's stack trace. Relative paths (the default --out) would mean nothing
 * there, so the command stops with the reason instead.
 */
try {
  process.cwd();
} catch (e) {
  process.stderr.write(`ganfleet: the working directory cannot be read (${(e as Error).message}): it was removed since the shell entered it; cd to one that exists [${(e as NodeJS.ErrnoException).code ?? 'ENOENT'}]\n`);
  process.exit(1);
}

export {};
