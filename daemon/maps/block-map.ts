/**
 * What remapd knows about the export, block by block, for exchanging maps with ddrescue and badblocks:
 * the export size, the remap block size, the remapped blocks (good: their data is on the spare) and the
 * pending blocks (unreadable on main, not yet rewritten). Everything else is good as far as remapd knows.
 *
 * A BlockMap comes from a running daemon (control command `map`) or from a spare read offline; the
 * writers (ddrescue-mapfile.ts, badblocks-list.ts) turn it into files, the parsers turn files into
 * byte ranges (`ByteRange`) for the daemon's `suspect` command.
 */
import { blockStart, byteOffset, type ByteLength, type ByteOffset, type MainBlock } from '../../units';

export interface BlockMap {
  /** Export size in bytes. */
  readonly size: ByteLength;
  /** Remap block size in bytes. */
  readonly blockSize: ByteLength;
  /** Remapped blocks, ascending. */
  readonly remapped: readonly MainBlock[];
  /** Pending (unreadable) blocks, ascending. */
  readonly pending: readonly MainBlock[];
}

/** A byte range on the export. */
export interface ByteRange {
  readonly offset: ByteOffset;
  readonly length: ByteLength;
}

/** Status of a byte range in a ddrescue mapfile: '+' finished (good), '-' bad sector. */
export type RegionStatus = '+' | '-';

export interface Region extends ByteRange {
  readonly status: RegionStatus;
}

/** The whole export as alternating runs of good and bad bytes (bad = pending blocks). */
export function regionsOf(map: BlockMap): Region[] {
  const out: Region[] = [];
  const push = (offset: number, end: number, status: RegionStatus) => {
    if (end <= offset) return;
    const last = out[out.length - 1];
    if (last && last.status === status && last.offset + last.length === offset) {
      out[out.length - 1] = { ...last, length: end - last.offset };
    } else out.push({ offset: byteOffset(offset), length: end - offset, status });
  };
  let at = 0;
  for (const b of map.pending) {
    const start = blockStart(b, map.blockSize);
    if (start >= map.size) continue;
    const end = Math.min(map.size, start + map.blockSize);
    push(at, start, '+');
    push(start, end, '-');
    at = end;
  }
  push(at, map.size, '+');
  return out;
}

/** Sort, merge overlapping and adjacent ranges; drop empty ones. */
export function mergeRanges(ranges: readonly ByteRange[]): ByteRange[] {
  const sorted = ranges.filter((r) => r.length > 0).sort((a, b) => a.offset - b.offset);
  const out: { offset: ByteOffset; length: number }[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, r.offset + r.length - last.offset);
    } else out.push({ offset: r.offset, length: r.length });
  }
  return out;
}

/** An error in an input map file, naming the file and line: the CLI exits with the usage status. */
export class MapFileError extends Error {
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    message: string,
  ) {
    super(`${file}${line !== undefined ? `:${line}` : ''}: ${message}`);
    this.name = 'MapFileError';
  }
}
