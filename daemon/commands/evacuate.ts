/**
 * `remapd evacuate`: start, watch, switch to or cancel the copy of the export onto a new disk
 * (daemon/evacuate/). Progress: a bar on a terminal, one JSON object per line for scripts (--json).
 */
import type { CommandModule } from 'yargs';
import { resolve } from 'node:path';
import { parseSize } from '../../remap/units';
import { callControl } from '../control-client';
import { printError, withControl } from './control-target';

interface Args {
  rate?: string;
  control: string;
  json: boolean;
  to?: string;
  switch: boolean;
  cancel: boolean;
  watch: boolean;
  interval: number;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
function human(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function eta(s: number | null): string {
  if (s === null || s === undefined) return '--';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(s % 60).padStart(2, '0')}s`;
}

export function formatEvacuation(s: Record<string, any>, width = 40): string {
  if (s.phase === 'none') return 'no evacuation\n';
  if (s.phase === 'switched' && s.size === undefined) return `switched: serving ${s.target}\n`;
  const filled = Math.round((s.progress ?? 0) * width);
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
  const lines = [
    `${s.phase.padEnd(9)} ${bar} ${((s.progress ?? 0) * 100).toFixed(1)}%  ${human(s.bytesCopied)} of ${human(s.size)}  ${human(s.bytesPerSecond)}/s  ETA ${eta(s.etaSeconds)}  unreadable ${s.unreadable}`,
    `target    ${s.target}`,
  ];
  if (s.sha256)
    lines.push(
      `sha256    ${s.sha256} (target, verified against the export${s.unreadable ? `, except ${s.unreadable} unreadable block(s)` : ''})`,
    );
  if (s.mapfile) lines.push(`mapfile   ${s.mapfile} (ddrescue format: the blocks still unreadable)`);
  if (s.error) lines.push(`error     ${s.error}`);
  if (s.phase === 'done') lines.push('next      remapd evacuate --switch   (serve the new disk; clients stay connected)');
  return lines.join('\n') + '\n';
}

const FINAL = new Set(['done', 'failed', 'switched', 'none']);

export const evacuateCommand: CommandModule<object, Args> = {
  command: 'evacuate',
  describe: 'Copy the export onto a new disk while serving, verify it, then switch to it',
  builder: (y) =>
    withControl(y)
      .option('to', { type: 'string', describe: 'Start copying onto this device or file (at least the export size)' })
      .option('rate', {
        type: 'string',
        describe: 'Copy at most this many bytes/s (K/M/G suffix) so clients keep the disk [default: unlimited]',
      })
      .option('switch', {
        type: 'boolean',
        default: false,
        describe: 'Serve the new disk (after the copy is verified); connections stay, the old main and spare are released',
      })
      .option('cancel', { type: 'boolean', default: false, describe: 'Stop the copy and forget it' })
      .option('watch', { type: 'boolean', default: false, describe: 'Show progress until the copy is done or failed' })
      .option('interval', { type: 'number', default: 1, describe: 'Seconds between updates with --watch' })
      .check((a) => {
        if ([a.to !== undefined, a.switch, a.cancel].filter(Boolean).length > 1)
          throw new Error('give only one of --to, --switch, --cancel');
        if (a.rate !== undefined) parseSize(a.rate);
        return true;
      })
      .example('$0 evacuate --to /dev/disk/by-id/ata-NEW --watch', 'start and follow the copy')
      .example('$0 evacuate --switch', 'serve the new disk'),
  handler: async (a) => {
    try {
      let s: Record<string, any>;
      if (a.to)
        s = (await callControl(a.control, 'evacuate.start', {
          to: resolve(a.to),
          ...(a.rate !== undefined ? { rate: parseSize(a.rate) } : {}),
        })) as Record<string, any>;
      else if (a.switch) s = (await callControl(a.control, 'evacuate.switch', {}, 600_000)) as Record<string, any>;
      else if (a.cancel) s = (await callControl(a.control, 'evacuate.cancel')) as Record<string, any>;
      else s = (await callControl(a.control, 'evacuate.status')) as Record<string, any>;
      const tty = process.stdout.isTTY && !a.json;
      const show = (st: Record<string, any>, redraw: boolean) => {
        if (a.json) process.stdout.write(JSON.stringify(st) + '\n');
        else {
          const text = formatEvacuation(st);
          if (redraw && tty) process.stdout.write(`\x1b[${text.split('\n').length - 1}F\x1b[J`);
          process.stdout.write(text);
        }
      };
      show(s, false);
      if (a.watch) {
        while (!FINAL.has(s.phase)) {
          await new Promise((r) => setTimeout(r, a.interval * 1000));
          s = (await callControl(a.control, 'evacuate.status')) as Record<string, any>;
          show(s, true);
        }
      }
      if (s.phase === 'failed') process.exitCode = 1;
    } catch (err) {
      printError(err);
    }
  },
};
