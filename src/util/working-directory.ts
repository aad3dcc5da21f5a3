/**
 * Imported first by the CLI, before yargs, which reads the working directory as it loads: one removed since the
 * shell entered it (`rm -rf` of the directory a terminal sits in, a CI workspace cleaned under a step) would end
 * every command, --help included, with Node's stack trace. Relative paths (the default --out) would mean nothing
 * there, so the command stops with the reason instead.
 */
try {
  process.cwd();
} catch (e) {
  // The code, not Node's message: Node 24's adds a sentence that says what this line says.
  const code = (e as NodeJS.ErrnoException).code ?? 'ENOENT';
  const why = code === 'ENOENT' ? ': it was removed since the shell entered it' : '';
  process.stderr.write(`ganfleet: the working directory cannot be read${why}; cd to one that exists [${code}]\n`);
  process.exit(1);
}

export {};
