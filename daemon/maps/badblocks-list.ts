/**
 * badblocks(8) lists: one decimal block number per line, in units of a block size (`badblocks -b N`,
 * default 1024). This is the list `e2fsck -l FILE` and `mke2fs -l FILE` read, in the filesystem's block
 * size. Written from the pending blocks (every list block touching one); read strictly, one number per
 * line, errors naming the line.
 */
import { byteOffset } from '../../units';
import { MapFileError, type BlockMap, type ByteRange } from './block-map';

export const BADBLOCKS_DEFAULT_BLOCK_SIZE = 1024;

export function checkListBlockSize(n: number): void {
  if (!(Number.isSafeInteger(n) && n >= 512 && (n & (n - 1)) === 0))
    throw new Error(`--block-size must be a power of two, at least 512 (got ${n})`);
}

/** List blocks (of `listBlockSize` bytes) touching a pending block, ascending, without duplicates. */
export function badblocksNumbers(map: BlockMap, listBlockSize: number): number[] {
  const out: number[] = [];
  for (const b of map.pending) {
    const start = b * map.blockSize;
    if (start >= map.size) continue;
    const end = Math.min(map.size, start + map.blockSize);
    const first = Math.floor(start / listBlockSize);
    const last = Math.floor((end - 1) / listBlockSize);
    for (let n = Math.max(first, out.length ? out[out.length - 1] + 1 : 0); n <= last; n++) out.push(n);
  }
  return out;
}

export function writeBadblocksList(map: BlockMap, listBlockSize: number): string {
  return badblocksNumbers(map, listBlockSize)
    .map((n) => `${n}\n`)
    .join('');
}

export function parseBadblocksList(text: string, file: string, listBlockSize: number): { suspect: ByteRange[]; blocks: number } {
  const lines = text.split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  const suspect: ByteRange[] = [];
  for (let i = 0; i < lines.length; i++) {
    const t = lines[i].replace(/\r$/, '').trim();
    if (t === '') continue;
    if (!/^[0-9]+$/.test(t)) throw new MapFileError(file, i + 1, `expected one block number per line (badblocks output), got "${t}"`);
    const n = Number(t);
    if (!Number.isSafeInteger(n * listBlockSize + listBlockSize)) throw new MapFileError(file, i + 1, `block ${t} is too large`);
    suspect.push({ offset: byteOffset(n * listBlockSize), length: listBlockSize });
  }
  return { suspect, blocks: suspect.length };
}
