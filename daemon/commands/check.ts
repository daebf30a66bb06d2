/** `remapd check`: verify the 5 metadata copies on a spare; optionally repair. Exit 0 iff a valid copy exists. */
import type { CommandModule } from 'yargs';
import { openBackend } from '../../storage/file-backend';
import { identityFromBackend, pairingMismatches } from '../../metadata/fingerprint';
import { MetadataStore } from '../../metadata/store';
import { claimSetup, SetupInUseError, type SetupClaim } from '../owner-lock';

interface CheckArgs {
  spare: string;
  main?: string;
  repair: boolean;
  json: boolean;
}

export const checkCommand: CommandModule<object, CheckArgs> = {
  command: 'check',
  describe: 'Verify the metadata copies on a spare (and its pairing with --main)',
  builder: (y) =>
    y
      .option('spare', { type: 'string', demandOption: true, describe: 'spare device or file holding the metadata' })
      .option('main', { type: 'string', describe: 'also check that the spare belongs to this main device' })
      .option('repair', { type: 'boolean', default: false, describe: 'rewrite damaged or stale copies' })
      .option('json', { type: 'boolean', default: false, describe: 'Print JSON for scripts' }),
  handler: async (a) => {
    let claim: SetupClaim | undefined;
    if (a.repair) {
      // repairing writes the metadata: never under a running daemon
      try {
        claim = await claimSetup({ spare: a.spare });
      } catch (err) {
        if (!(err instanceof SetupInUseError)) throw err;
        process.stderr.write(`remapd: check --repair: ${err.message}\n`);
        process.exit(1);
      }
    }
    const spare = await openBackend(a.spare, { readOnly: !a.repair });
    const main = a.main ? await openBackend(a.main, { readOnly: true }) : undefined;
    try {
      const mainId = main ? identityFromBackend(main) : undefined;
      const report = await MetadataStore.inspect(spare, { repair: a.repair, main: mainId });
      const mismatch = mainId && report.main ? pairingMismatches(report.main, mainId) : [];
      const out = { ...report, ...(mainId ? { pairing: mismatch.length ? mismatch : 'ok' } : {}) };
      if (a.json) {
        process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      } else {
        for (const c of report.copies) {
          process.stdout.write(
            `copy ${c.index} @${c.offset} (+${c.length}): ${c.valid ? (c.stale ? 'valid, stale' : 'valid') : `INVALID (${c.failedCheck})`} seq ${c.sequence} time ${c.timestamp ? new Date(c.timestamp).toISOString() : '-'}\n`,
          );
        }
        process.stdout.write(
          report.chosen === null
            ? 'no valid copy\n'
            : `chosen copy ${report.chosen}; setup ${report.setupUuid}; ${report.table?.remaps} remaps, ${report.table?.pending} pending, ${report.table?.freeSpareBlocks} free spare blocks${report.repaired ? '; repaired' : ''}\n`,
        );
        if (mismatch.length) process.stdout.write(`pairing with ${a.main}: MISMATCH: ${mismatch.join('; ')}\n`);
      }
      process.exitCode = report.chosen === null || mismatch.length ? 1 : 0;
    } finally {
      await spare.close();
      await main?.close();
      claim?.release();
    }
  },
};
