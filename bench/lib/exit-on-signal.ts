/**
 * Preloaded into remapd (`node --require dist/bench/lib/exit-on-signal.js`) when the bench profiles it.
 * `--cpu-prof` writes its profile only on a normal exit, and a signal's default action is not one; this gives
 * remapd's own SIGTERM/SIGINT handling a second to finish and then exits normally.
 */
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.once(sig, () => {
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
