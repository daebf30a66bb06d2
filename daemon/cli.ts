/**
 * remapd command line. Each command lives in daemon/commands/<name>.ts and exports a yargs CommandModule.
 * To add a command: import it here and append it to `commands`.
 */
import yargs from 'yargs';
import type { CommandModule } from 'yargs';
import { serveCommand } from './commands/serve';
import { scanCommand } from './commands/scan';
import { createCommand } from './commands/create';
import { checkCommand } from './commands/check';
import { dumpCommand } from './commands/dump';
import { statusCommand } from './commands/status';
import { demoCommand } from './commands/demo';
import { assembleCommand } from './commands/assemble';
import { evacuateCommand } from './commands/evacuate';
import { exportMapCommand } from './commands/export-map';
import { importMapCommand } from './commands/import-map';
import { EXIT, EXIT_STATUS_TEXT, guardOutputStreams } from './exit-codes';
import { attachCommand } from './commands/attach';
import { detachCommand } from './commands/detach';
import { faultsCommand, listCommand, remapCommand, unremapCommand } from './commands/remap';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [
  serveCommand,
  scanCommand,
  createCommand,
  checkCommand,
  dumpCommand,
  statusCommand,
  remapCommand,
  unremapCommand,
  listCommand,
  faultsCommand,
  demoCommand,
  assembleCommand,
  exportMapCommand,
  importMapCommand,
  evacuateCommand,
  attachCommand,
  detachCommand,
];

/** The yargs parser with every command: also what the man page generator reads (daemon/man-page.ts). */
export function buildParser(argv: string[]) {
  let parser = yargs(argv)
    .scriptName('remapd')
    .usage('$0 <command> [options]\n\nServe a failing disk over NBD, remapping bad blocks to a spare device.')
    .strict()
    .demandCommand(1, 'Name a command; see remapd --help.')
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .epilogue(`Exit status:\n${EXIT_STATUS_TEXT.map(([n, what]) => `  ${n}  ${what}`).join('\n')}`)
    .fail((msg, err) => {
      // A failed validation (unknown flag, a .check() that threw) comes with msg: a usage error. A handler
      // that threw comes without: bin/remapd prints its message (no stack) and exits FAILED.
      if (!msg && err) throw err;
      process.stderr.write(`remapd: ${msg ?? 'invalid usage'}\n\n`);
      process.stderr.write("Run 'remapd --help' for usage.\n");
      process.exit(EXIT.USAGE);
    });
  for (const c of commands) parser = parser.command(c);
  return parser;
}

export async function main(argv: string[]): Promise<void> {
  guardOutputStreams();
  await buildParser(argv).parseAsync();
}
