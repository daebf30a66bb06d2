/**
 * The CLI's exit statuses, in one place (documented in docs/OPERATIONS.md §Exit status and remapd(8)),
 * and the guard that turns a closed output pipe into a quiet exit instead of an EPIPE stack trace
 * (`remapd list | head -1`).
 */

export const EXIT = {
  /** The command did what was asked. */
  OK: 0,
  /** The command ran and failed: the daemon refused or is unreachable, a device error, a check found damage. */
  FAILED: 1,
  /** Usage error: an unknown or bad flag, a bad config file or input file. Retrying the same command cannot help. */
  USAGE: 2,
  /** The reader of stdout went away (a closed pipe): 128 + SIGPIPE, what a shell reports for `yes | head -1`. */
  OUTPUT_CLOSED: 141,
} as const;

/** One line per status, for --help epilogue, the man page and docs. */
export const EXIT_STATUS_TEXT: readonly [number, string][] = [
  [EXIT.OK, 'success'],
  [
    EXIT.FAILED,
    'the operation failed: the daemon answered with an error or cannot be reached (no control socket, permission), a device error, `check` found no valid metadata copy',
  ],
  [EXIT.USAGE, 'usage error: unknown or bad flag, bad config file, malformed input file (import-map names the line)'],
  [EXIT.OUTPUT_CLOSED, 'standard output was closed by its reader (e.g. `| head`); nothing is printed'],
];

let guarded = false;

/**
 * A write to a closed pipe fails asynchronously with EPIPE on the stream; unhandled, Node prints a
 * stack trace. Exit quietly with OUTPUT_CLOSED instead. Other stream errors print one line.
 */
export function guardOutputStreams(): void {
  if (guarded) return;
  guarded = true;
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(EXIT.OUTPUT_CLOSED);
      try {
        if (stream !== process.stderr) process.stderr.write(`remapd: cannot write output: ${err.code ?? err.message}\n`);
      } finally {
        process.exit(EXIT.FAILED);
      }
    });
  }
}
