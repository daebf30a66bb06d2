import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { callControl } from '../control-client';
import { printError, withControl } from './control-target';

interface RangeArgs {
  control: string;
  json: boolean;
  range: string;
}

function printResult(a: { json: boolean }, r: unknown): void {
  if (a.json) {
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    return;
  }
  const res = r as { results: Record<string, number[]> };
  for (const [what, offsets] of Object.entries(res.results)) {
    process.stdout.write(`${what}: ${offsets.length} block(s)${offsets.length <= 16 ? ` at ${offsets.join(', ')}` : ''}\n`);
  }
  if (res.results.unreadable) process.exitCode = 1;
}

export const remapCommand: CommandModule<object, RangeArgs> = {
  command: 'remap <range>',
  describe: 'Move blocks to the spare by hand (their data is copied)',
  builder: (y) =>
    withControl(y)
      .positional('range', { type: 'string', demandOption: true, describe: 'OFFSET[+LENGTH] in bytes (K/M/G suffixes)' })
      .example('$0 remap 1048576+8192', 'remap the two 4 KiB blocks at 1 MiB'),
  handler: async (a) => {
    try {
      printResult(a, await callControl(a.control, 'remap', { range: a.range }));
    } catch (err) {
      printError(err);
    }
  },
};

export const unremapCommand: CommandModule<object, RangeArgs> = {
  command: 'unremap <range>',
  describe: 'Move remapped blocks back to the main device (refused where main cannot be written)',
  builder: (y) =>
    withControl(y)
      .positional('range', { type: 'string', demandOption: true, describe: 'OFFSET[+LENGTH] in bytes' })
      .example('$0 unremap 1M+4K', 'copy the block at 1 MiB back to main'),
  handler: async (a) => {
    try {
      printResult(a, await callControl(a.control, 'unremap', { range: a.range }));
    } catch (err) {
      printError(err);
    }
  },
};

export const listCommand: CommandModule<object, { control: string; json: boolean }> = {
  command: 'list',
  describe: 'List the remapped blocks of a running daemon',
  builder: (y) => withControl(y).example('$0 list --json', 'the remap table as JSON'),
  handler: async (a) => {
    try {
      const r = (await callControl(a.control, 'list')) as {
        blockSize: number;
        remaps: { offset: number; mainBlock: number; spareBlock: number; reason: string }[];
        pending: { count: number; offsets: number[] };
      };
      if (a.json) {
        process.stdout.write(JSON.stringify(r, null, 2) + '\n');
        return;
      }
      process.stdout.write(`${r.remaps.length} remapped block(s) of ${r.blockSize} bytes, ${r.pending.count} pending\n`);
      for (const e of r.remaps) process.stdout.write(`${e.offset}\tblock ${e.mainBlock} -> spare block ${e.spareBlock}\t${e.reason}\n`);
      for (const o of r.pending.offsets) process.stdout.write(`${o}\tpending\n`);
    } catch (err) {
      printError(err);
    }
  },
};

export const faultsCommand: CommandModule<object, { control: string; json: boolean; file: string }> = {
  command: 'faults <file>',
  describe: 'Replace the fault-injection rules of a running daemon (started with --faults)',
  builder: (y) =>
    withControl(y)
      .positional('file', { type: 'string', demandOption: true, describe: 'JSON rule file (see docs/FAULTS.md)' })
      .example('$0 faults bad-sectors.json', 'load new rules'),
  handler: async (a) => {
    try {
      const text = readFileSync(a.file, 'utf8');
      const r = (await callControl(a.control, 'faults', { text, source: resolve(a.file) })) as { rules: number };
      process.stdout.write(a.json ? JSON.stringify(r) + '\n' : `loaded ${r.rules} rule(s)\n`);
    } catch (err) {
      printError(err);
    }
  },
};
