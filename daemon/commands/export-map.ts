/**
 * `remapd export-map`: remapd's view of the export as a GNU ddrescue mapfile or a badblocks list, from a
 * running daemon (--control) or a spare read offline (--spare). Written to stdout or --output.
 */
import { writeFileSync } from 'node:fs';
import type { CommandModule } from 'yargs';
import { DEFAULT_CONTROL } from './control-target';
import { writeDdrescueMapfile } from '../maps/ddrescue-mapfile';
import { BADBLOCKS_DEFAULT_BLOCK_SIZE, checkListBlockSize, writeBadblocksList } from '../maps/badblocks-list';
import { mapFromControl, mapFromSpare } from '../maps/map-source';

interface Args {
  format: 'ddrescue' | 'badblocks';
  control?: string;
  spare?: string;
  'block-size': number;
  output?: string;
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const VERSION: string = (require('../../../package.json') as { version: string }).version;

export const exportMapCommand: CommandModule<object, Args> = {
  command: 'export-map',
  describe: 'Write the bad (pending) blocks as a ddrescue mapfile or a badblocks list',
  builder: (y) =>
    y
      .option('format', {
        choices: ['ddrescue', 'badblocks'] as const,
        demandOption: true,
        describe: 'ddrescue: GNU ddrescue mapfile (+ good or remapped, - pending); badblocks: block numbers, one per line',
      })
      .option('control', { type: 'string', describe: `Control socket of a running daemon [default: ${DEFAULT_CONTROL} unless --spare]` })
      .option('spare', { type: 'string', describe: 'Read the map from this spare instead (offline, read-only)' })
      .option('block-size', {
        alias: 'b',
        type: 'number',
        default: BADBLOCKS_DEFAULT_BLOCK_SIZE,
        describe: 'badblocks: block size of the list (the filesystem block size for e2fsck -l / mke2fs -l)',
      })
      .option('output', { alias: 'o', type: 'string', describe: 'Write to this file instead of stdout' })
      .conflicts('control', 'spare')
      .check((a) => {
        checkListBlockSize(a['block-size']);
        return true;
      })
      .example('$0 export-map --format ddrescue > disk.map', 'then: ddrescue -r3 /dev/sdb new.img disk.map')
      .example('$0 export-map --format badblocks -b 4096 -o bad.txt', 'then: e2fsck -l bad.txt /dev/nbd0'),
  handler: async (a) => {
    const map = a.spare ? await mapFromSpare(a.spare) : await mapFromControl(a.control ?? DEFAULT_CONTROL);
    const text =
      a.format === 'ddrescue'
        ? writeDdrescueMapfile(map, { version: VERSION, commandLine: ['remapd', ...process.argv.slice(2)].join(' ') })
        : writeBadblocksList(map, a['block-size']);
    if (a.output) writeFileSync(a.output, text);
    else process.stdout.write(text);
  },
};
