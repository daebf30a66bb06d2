/**
 * `remapd import-map FILE`: what ddrescue or badblocks found, handed to a running daemon as suspect
 * regions (control command `suspect`, built by the health scanner): the scanner reads them first,
 * blocks that do not read become pending, nothing is remapped blindly.
 */
import { readFileSync } from 'node:fs';
import type { CommandModule } from 'yargs';
import { callControl } from '../control-client';
import { EXIT } from '../exit-codes';
import { MapFileError, mergeRanges, type ByteRange } from '../maps/block-map';
import { parseDdrescueMapfile } from '../maps/ddrescue-mapfile';
import { BADBLOCKS_DEFAULT_BLOCK_SIZE, checkListBlockSize, parseBadblocksList } from '../maps/badblocks-list';
import { withControl } from './control-target';

interface Args {
  file: string;
  format: 'ddrescue' | 'badblocks';
  'block-size': number;
  control: string;
  json: boolean;
  'dry-run': boolean;
}

/** Parse FILE into merged suspect ranges; throws MapFileError. */
export function suspectRangesOf(
  text: string,
  file: string,
  format: Args['format'],
  blockSize: number,
): { ranges: ByteRange[]; detail: string } {
  if (format === 'ddrescue') {
    const m = parseDdrescueMapfile(text, file);
    const by = Object.entries(m.bytesByStatus)
      .map(([k, v]) => `'${k}' ${v}`)
      .join(', ');
    return { ranges: mergeRanges(m.suspect), detail: `mapfile covers ${m.end} bytes (${by})` };
  }
  const b = parseBadblocksList(text, file, blockSize);
  return { ranges: mergeRanges(b.suspect), detail: `${b.blocks} block(s) of ${blockSize} bytes` };
}

export const importMapCommand: CommandModule<object, Args> = {
  command: 'import-map <file>',
  describe: 'Mark the bad regions of a ddrescue mapfile or badblocks list as suspect: the scanner reads them first',
  builder: (y) =>
    withControl(y)
      .positional('file', { type: 'string', demandOption: true, describe: 'The mapfile or list ("-" = stdin)' })
      .option('format', {
        choices: ['ddrescue', 'badblocks'] as const,
        demandOption: true,
        describe: 'ddrescue: regions marked - * / are suspect; badblocks: listed block numbers',
      })
      .option('block-size', {
        alias: 'b',
        type: 'number',
        default: BADBLOCKS_DEFAULT_BLOCK_SIZE,
        describe: 'badblocks: the -b the list was made with',
      })
      .option('dry-run', { type: 'boolean', default: false, describe: 'Parse and print the ranges, send nothing' })
      .check((a) => {
        checkListBlockSize(a['block-size']);
        return true;
      })
      .example('$0 import-map disk.map --format ddrescue', 'after: ddrescue /dev/sdb /dev/null disk.map')
      .example('$0 import-map bad.txt --format badblocks -b 4096', 'after: badblocks -b 4096 -o bad.txt /dev/sdb'),
  handler: async (a) => {
    let parsed: ReturnType<typeof suspectRangesOf>;
    try {
      const text = readFileSync(a.file === '-' ? 0 : a.file, 'utf8');
      parsed = suspectRangesOf(text, a.file, a.format, a['block-size']);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      process.stderr.write(`remapd: ${err instanceof MapFileError ? e.message : `cannot read ${a.file}: ${e.code ?? e.message}`}\n`);
      process.exit(err instanceof MapFileError ? EXIT.USAGE : EXIT.FAILED);
    }
    const { ranges, detail } = parsed;
    const bytes = ranges.reduce((s, r) => s + r.length, 0);
    if (a['dry-run']) {
      if (a.json) process.stdout.write(JSON.stringify({ ranges, bytes }, null, 2) + '\n');
      else {
        process.stdout.write(`${a.file}: ${detail}; ${ranges.length} suspect range(s), ${bytes} bytes\n`);
        for (const r of ranges) process.stdout.write(`${r.offset}+${r.length}\n`);
      }
      return;
    }
    if (ranges.length === 0) {
      process.stdout.write(`${a.file}: ${detail}; nothing bad listed, nothing sent\n`);
      return;
    }
    const status = (await callControl(a.control, 'status')) as { size: number };
    const past = ranges.find((r) => r.offset + r.length > status.size);
    if (past) {
      process.stderr.write(
        `remapd: ${a.file}: the range ${past.offset}+${past.length} ends past the export (${status.size} bytes): wrong file or wrong daemon?\n`,
      );
      process.exit(EXIT.USAGE);
    }
    const r = (await callControl(a.control, 'suspect', { ranges, source: `${a.format}:${a.file}` })) as { queued: number };
    if (a.json) process.stdout.write(JSON.stringify({ ranges: ranges.length, bytes, queued: r.queued }) + '\n');
    else
      process.stdout.write(
        `${a.file}: ${detail}; ${ranges.length} suspect range(s), ${bytes} bytes sent; ${r.queued} queued for the scanner\n`,
      );
  },
};
