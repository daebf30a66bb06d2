/**
 * remapd scan status|start|pause|resume|set — talk to the running daemon's health scanner over the
 * control socket. `status --watch` redraws a progress bar in place on a terminal (plain lines otherwise).
 */
import type { CommandModule } from 'yargs';
import { callControl, ControlClientError } from '../control-client';
import { defaultControlPath } from '../control-protocol';
import { parseSize } from '../../remap/units';
import { parseDuration } from '../../health/duration';
import type { ScanStatus } from '../../health/scanner';

interface ScanArgs {
  action: string;
  control?: string;
  export: string;
  json: boolean;
  watch: boolean;
  'watch-interval': number;
  rate?: string;
  interval?: string;
}

function human(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

function bar(pct: number, width: number): string {
  const filled = Math.max(0, Math.min(width, Math.round((pct / 100) * width)));
  return '[' + '#'.repeat(filled) + '-'.repeat(width - filled) + ']';
}

export function formatStatus(s: ScanStatus): string {
  const lines = [
    `state:       ${s.state}${s.state === 'running' && s.throttle !== 'none' ? ` (${s.throttle}: client I/O)` : ''}`,
    `progress:    ${s.progressPercent.toFixed(1)}%  (${human(s.cursorOffset)} of ${human(s.size)})`,
    `rate:        ${s.rate === 0 ? 'unlimited' : `${human(s.rate)}/s`} configured, ${human(s.currentRate)}/s now`,
    `interval:    ${s.interval}${s.nextScanAt ? `  (next pass ${s.nextScanAt})` : ''}`,
    `passes:      ${s.passesCompleted}  (last full scan: ${s.lastFullScanAt ?? 'never'})`,
    `health:      ${s.score}/100 ${s.label}${s.trend !== 'unknown' ? `, trend ${s.trend}` : ''}`,
    `blocks:      slow ${s.blocks.slow}, failed ${s.blocks.failed}, flaky ${s.blocks.flaky}, migrated ${s.blocks.migrated}, pending ${s.blocks.pending}`,
  ];
  if (s.pendingOffsets.length)
    lines.push(`unreadable:  ${s.pendingOffsets.slice(0, 20).join(', ')}${s.pendingOffsets.length > 20 ? ' …' : ''}`);
  if (s.workerRestarts) lines.push(`worker restarts: ${s.workerRestarts}`);
  return lines.join('\n');
}

function progressLine(s: ScanStatus, width: number): string {
  const tail = ` ${s.progressPercent.toFixed(1).padStart(5)}% ${human(s.currentRate)}/s ${s.state}${s.throttle !== 'none' && s.state === 'running' ? `/${s.throttle}` : ''} ${s.label} ${s.score}`;
  const barWidth = Math.max(10, Math.min(50, width - tail.length - 2));
  return bar(s.progressPercent, barWidth) + tail;
}

async function watch(path: string, a: ScanArgs): Promise<void> {
  const tty = process.stdout.isTTY === true && !a.json;
  let stop = false;
  process.once('SIGINT', () => {
    stop = true;
  });
  let lastPrinted = '';
  while (!stop) {
    const s = (await callControl(path, 'scan.status')) as ScanStatus;
    if (a.json) {
      process.stdout.write(JSON.stringify(s) + '\n');
    } else if (tty) {
      // \r + erase line: redraw the bar in place.
      process.stdout.write('\r\x1b[2K' + progressLine(s, process.stdout.columns || 80));
    } else {
      const line = progressLine(s, 80);
      if (line !== lastPrinted) process.stdout.write(line + '\n');
      lastPrinted = line;
    }
    await new Promise((r) => setTimeout(r, a['watch-interval'] * 1000));
  }
  if (tty) process.stdout.write('\n');
}

export const scanCommand: CommandModule<object, ScanArgs> = {
  command: 'scan <action>',
  describe: 'Control the background health scan of the main device',
  builder: (y) =>
    y
      .positional('action', { type: 'string', choices: ['status', 'start', 'pause', 'resume', 'set'], demandOption: true })
      .option('control', { type: 'string', describe: 'Control socket of the daemon [default: /run/remapd/<export>.ctl]' })
      .option('export', { type: 'string', default: 'disk', describe: 'Export name (for the default control socket path)' })
      .option('json', { type: 'boolean', default: false, describe: "Print the daemon's answer as JSON" })
      .option('watch', { type: 'boolean', default: false, describe: 'status: keep showing progress until Ctrl-C' })
      .option('watch-interval', { type: 'number', default: 1, describe: 'status --watch: seconds between updates' })
      .option('rate', { type: 'string', describe: 'set: scan rate, bytes/s with K/M/G suffix (0 = unlimited)' })
      .option('interval', { type: 'string', describe: 'set: time between full passes (30s, 15m, 12h, 7d)' })
      .check((a) => {
        if (a.action === 'set' && a.rate === undefined && a.interval === undefined)
          throw new Error('scan set: give --rate and/or --interval');
        if (a.rate !== undefined) parseSize(a.rate);
        if (a.interval !== undefined) parseDuration(a.interval);
        if (!(a['watch-interval'] > 0)) throw new Error('--watch-interval must be positive');
        return true;
      })
      .example('$0 scan status --watch', 'show a live progress bar')
      .example('$0 scan set --rate 512M --interval 7d', 'scan at up to 512 MiB/s, a full pass every week'),
  handler: async (a) => {
    const path = a.control ?? defaultControlPath(undefined, a.export);
    try {
      if (a.action === 'status' && a.watch) {
        await watch(path, a);
        return;
      }
      const args: Record<string, unknown> = {};
      if (a.action === 'set') {
        if (a.rate !== undefined) args.rate = parseSize(a.rate);
        if (a.interval !== undefined) args.interval = parseDuration(a.interval);
      }
      const s = (await callControl(path, `scan.${a.action}`, args)) as ScanStatus;
      process.stdout.write((a.json ? JSON.stringify(s, null, 2) : formatStatus(s)) + '\n');
    } catch (err) {
      if (!(err instanceof ControlClientError) && !(err instanceof Error)) throw err;
      process.stderr.write(`remapd: ${(err as Error).message}\n`);
      process.exit(1);
    }
  },
};
