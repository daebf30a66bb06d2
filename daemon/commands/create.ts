/** `remapd create`: write fresh remapd metadata (5 copies) onto a spare, paired with a main device. */
import type { CommandModule } from 'yargs';
import { openBackend } from '../../storage/file-backend';
import { identityFromBackend } from '../../metadata/fingerprint';
import { MetadataStore } from '../../metadata/store';
import { claimSetup, SetupInUseError } from '../owner-lock';

interface CreateArgs {
  main: string;
  spare: string;
  'block-size': number;
  force: boolean;
}

export const createCommand: CommandModule<object, CreateArgs> = {
  command: 'create',
  describe: 'Initialise a spare device for a main device (refuses a spare in use unless --force)',
  builder: (y) =>
    y
      .option('main', { type: 'string', demandOption: true, describe: 'main (failing) device or file' })
      .option('spare', { type: 'string', demandOption: true, describe: 'spare device or file' })
      .option('block-size', { type: 'number', default: 4096, describe: 'remap granularity in bytes (power of two, >= both sector sizes)' })
      .option('force', { type: 'boolean', default: false, describe: 'overwrite existing metadata or data in the metadata regions' }),
  handler: async (a) => {
    // A spare in use by a running setup is never rewritten, --force or not.
    let claim;
    try {
      claim = await claimSetup({ spare: a.spare });
    } catch (err) {
      if (!(err instanceof SetupInUseError)) throw err;
      process.stderr.write(`remapd: create: ${err.message}\n`);
      process.exit(1);
    }
    const main = await openBackend(a.main, { readOnly: true });
    const spare = await openBackend(a.spare, { readOnly: false });
    try {
      const s = await MetadataStore.create(spare, identityFromBackend(main), { blockSize: a['block-size'], force: a.force });
      process.stdout.write(
        `created setup ${s.setupUuid}: block size ${s.blockSize}, ${s.spareDataBlocks} spare data blocks, ` +
          `5 metadata copies at ${s.layout.regionOffsets.join(', ')} (${s.layout.regionBytes} bytes each)\n`,
      );
      await s.close();
    } finally {
      await spare.close();
      await main.close();
      claim.release();
    }
  },
};
