/** The --control option shared by the commands that talk to a running daemon. */
import type { Argv } from 'yargs';

export const DEFAULT_CONTROL = process.env.REMAPD_CONTROL ?? '/run/remapd/disk.ctl';

export function withControl<T>(y: Argv<T>) {
  return y
    .option('control', { type: 'string', default: DEFAULT_CONTROL, describe: 'Control socket of the running daemon (env REMAPD_CONTROL)' })
    .option('json', { type: 'boolean', default: false, describe: 'Print JSON for scripts' });
}

/** Print a control answer, or the error, and set the exit code. */
export function printError(err: unknown): void {
  process.stderr.write(`remapd: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
