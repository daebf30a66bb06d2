/**
 * GNU ddrescue mapfiles (the format of ddrescue(1)'s mapfile, formerly "logfile"), written and read.
 *
 *   # comment lines
 *   0x00000000     +               1        ← current status line: current_pos current_status [current_pass]
 *   #      pos        size  status
 *   0x00000000  0x00100000  +               ← data lines: pos size status, sorted, contiguous
 *
 * Block statuses: '?' non-tried, '*' non-trimmed, '/' non-scraped, '-' bad sector, '+' finished.
 * Written: good and remapped bytes are '+', pending (unreadable) blocks '-'; the status line says the
 * "rescue" is finished ('+'). Read strictly: every malformed line is an error naming the line; regions
 * with '-', '*' or '/' (they hold bad sectors) are returned as suspect, '?' (never read) is counted only.
 */
import { byteOffset } from '../../units';
import { MapFileError, regionsOf, type BlockMap, type ByteRange } from './block-map';

const hex = (n: number) => `0x${n.toString(16).toUpperCase().padStart(8, '0')}`;

function stamp(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function writeDdrescueMapfile(map: BlockMap, o: { commandLine: string; version: string; now?: Date }): string {
  const now = stamp(o.now ?? new Date());
  const lines = [
    `# Mapfile. Created by remapd version ${o.version}`,
    `# Command line: ${o.commandLine}`,
    `# Start time:   ${now}`,
    `# Current time: ${now}`,
    `# remapd: '+' = readable or remapped (data on the spare), '-' = pending (unreadable on main)`,
    '# Finished',
    '# current_pos  current_status  current_pass',
    `${hex(0)}     +               1`,
    '#      pos        size  status',
  ];
  for (const r of regionsOf(map)) lines.push(`${hex(r.offset)}  ${hex(r.length)}  ${r.status}`);
  return lines.join('\n') + '\n';
}

/** A number as ddrescue writes or accepts it: 0x hex, 0-prefixed octal, or decimal. */
function parseNumber(text: string): number | undefined {
  let v: number;
  if (/^0x[0-9a-f]+$/i.test(text)) v = parseInt(text.slice(2), 16);
  else if (/^0[0-7]*$/.test(text)) v = parseInt(text, 8);
  else if (/^[1-9][0-9]*$/.test(text)) v = parseInt(text, 10);
  else return undefined;
  return Number.isSafeInteger(v) ? v : undefined;
}

export interface DdrescueImport {
  /** Byte ranges with status '-', '*' or '/'. */
  readonly suspect: ByteRange[];
  /** Bytes per status character. */
  readonly bytesByStatus: Record<string, number>;
  /** End of the last region (the size the mapfile covers). */
  readonly end: number;
}

const BLOCK_STATUS = new Set(['?', '*', '/', '-', '+']);
const CURRENT_STATUS = new Set(['?', '*', '/', '-', 'F', 'G', '+']);
const SUSPECT = new Set(['-', '*', '/']);

export function parseDdrescueMapfile(text: string, file: string): DdrescueImport {
  const lines = text.split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  let sawStatusLine = false;
  let expected = -1;
  const suspect: ByteRange[] = [];
  const bytesByStatus: Record<string, number> = {};
  let regions = 0;
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    const line = lines[i].replace(/\r$/, '');
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const f = trimmed.split(/\s+/);
    if (!sawStatusLine) {
      if (f.length < 2 || f.length > 3)
        throw new MapFileError(file, n, `expected the current status line "current_pos current_status [current_pass]", got "${trimmed}"`);
      if (parseNumber(f[0]) === undefined) throw new MapFileError(file, n, `current_pos "${f[0]}" is not a number`);
      if (!CURRENT_STATUS.has(f[1])) throw new MapFileError(file, n, `current_status "${f[1]}" is not one of ? * / - F G +`);
      if (f.length === 3 && parseNumber(f[2]) === undefined) throw new MapFileError(file, n, `current_pass "${f[2]}" is not a number`);
      sawStatusLine = true;
      continue;
    }
    if (f.length !== 3) throw new MapFileError(file, n, `expected "pos size status", got "${trimmed}"`);
    const pos = parseNumber(f[0]);
    const size = parseNumber(f[1]);
    if (pos === undefined) throw new MapFileError(file, n, `pos "${f[0]}" is not a number`);
    if (size === undefined) throw new MapFileError(file, n, `size "${f[1]}" is not a number`);
    if (!BLOCK_STATUS.has(f[2])) throw new MapFileError(file, n, `status "${f[2]}" is not one of ? * / - +`);
    if (size === 0) throw new MapFileError(file, n, 'size is zero');
    if (expected >= 0 && pos !== expected) {
      throw new MapFileError(
        file,
        n,
        pos < expected
          ? `region at ${pos} overlaps or is out of order (previous region ends at ${expected})`
          : `gap: previous region ends at ${expected}, this one starts at ${pos}`,
      );
    }
    if (!Number.isSafeInteger(pos + size)) throw new MapFileError(file, n, 'region ends past 2^53');
    expected = pos + size;
    regions++;
    bytesByStatus[f[2]] = (bytesByStatus[f[2]] ?? 0) + size;
    if (SUSPECT.has(f[2])) suspect.push({ offset: byteOffset(pos), length: size });
  }
  if (!sawStatusLine) throw new MapFileError(file, undefined, 'not a ddrescue mapfile: no current status line (is it empty?)');
  if (regions === 0) throw new MapFileError(file, undefined, 'the mapfile lists no regions');
  return { suspect, bytesByStatus, end: expected };
}
