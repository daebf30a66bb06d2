/** `remapd dump`: print the remap table (and pending blocks, scan state) stored on a spare. */
import type { CommandModule } from 'yargs';
import { openBackend } from '../../storage/file-backend';
import { MetadataStore } from '../../metadata/store';

interface DumpArgs {
  spare: string;
  json: boolean;
}

export const dumpCommand: CommandModule<object, DumpArgs> = {
  command: 'dump',
  describe: 'Print the remap table stored on a spare (read-only)',
  builder: (y) =>
    y
      .option('spare', { type: 'string', demandOption: true, describe: 'spare device or file holding the metadata' })
      .option('json', { type: 'boolean', default: false, describe: 'Print JSON for scripts' }),
  handler: async (a) => {
    const spare = await openBackend(a.spare, { readOnly: true });
    try {
      const s = await MetadataStore.open(spare);
      const remaps = [...s.entries()].sort((x, y) => x.mainBlock - y.mainBlock);
      const pending = [...s.pending()].sort((x, y) => x - y);
      if (a.json) {
        process.stdout.write(
          `${JSON.stringify({ setupUuid: s.setupUuid, blockSize: s.blockSize, main: s.mainIdentity, spareDataBlocks: s.spareDataBlocks, remaps, pending, scan: s.scanState() }, null, 2)}\n`,
        );
      } else {
        process.stdout.write(`setup ${s.setupUuid} block size ${s.blockSize}: ${remaps.length} remaps, ${pending.length} pending\n`);
        process.stdout.write('main_block\tspare_block\treason\tcreated\n');
        for (const e of remaps)
          process.stdout.write(`${e.mainBlock}\t${e.spareBlock}\t${e.reason}\t${new Date(e.createdAt).toISOString()}\n`);
        if (pending.length) process.stdout.write(`pending: ${pending.join(' ')}\n`);
      }
      await s.close();
    } finally {
      await spare.close();
    }
  },
};
