/**
 * Spare device layout: where the 5 metadata copies live, how big each part is, and which spare blocks
 * are free for remapped data. Everything is derived deterministically from
 * (spare size, block size, spare logical sector size, journal size); see docs/FORMAT.md §2.
 *
 * Each copy k has a 4 KiB header at a position that depends only on the spare size and the alignment
 * unit U = max(64 KiB, blockSize), so a reader can find any surviving header without knowing anything else:
 *   copy 0: 0;  copy k=1..3: alignDown(k*S/4, U);  copy 4: alignDown(S, U) - 4096.
 * Copies 0..3 are regions [H_k, H_k + R) with the header first; copy 4 is [alignDown(S,U) - R, alignDown(S,U))
 * with the header last. The body of a region (R - 4096 bytes) is: journal (J bytes), checkpoint slot 0
 * (C bytes), checkpoint slot 1 (C bytes). R is a multiple of U, so regions cover whole spare blocks.
 */
import { addBytes, byteOffset, type ByteOffset } from '../units';

export const HEADER_AREA_BYTES = 4096;
export const MIN_ALIGN_BYTES = 65536;
export const CHUNK_BYTES = 65536;
export const CHUNK_HEADER_BYTES = 32;
export const ENTRY_BYTES = 24;
export const ENTRIES_PER_CHUNK = Math.floor((CHUNK_BYTES - CHUNK_HEADER_BYTES) / ENTRY_BYTES); // 2729
export const COPIES = 5;
export const MIN_BLOCK_BYTES = 512;
export const MAX_BLOCK_BYTES = 1 << 20;
export const MIN_JOURNAL_BYTES = 1 << 20;
export const MAX_JOURNAL_BYTES = 8 << 20;
/** Remap granularities a reader tries when it must find headers without knowing the block size. */
export const CANDIDATE_BLOCK_SIZES = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576];

export interface Layout {
  spareBytes: number;
  blockSize: number;
  /** Journal frames are padded to this (max(512, spare logical sector size)). */
  frameAlign: number;
  alignBytes: number;
  journalBytes: number;
  checkpointSlotBytes: number;
  /** Max number of table entries (remaps + pending) a checkpoint can hold. */
  tableCapacity: number;
  regionBytes: number;
  /** Absolute byte offsets. */
  regionOffsets: ByteOffset[];
  headerOffsets: ByteOffset[];
  bodyOffsets: ByteOffset[];
  /** floor(spareBytes / blockSize): spare blocks are numbered 0..totalBlocks-1, block b at b*blockSize. */
  totalBlocks: number;
  /** Spare blocks outside the metadata regions. */
  spareDataBlocks: number;
}

export class LayoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LayoutError';
  }
}

export const alignDown = (v: number, a: number): number => Math.floor(v / a) * a;
export const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;
const isPow2 = (v: number): boolean => Number.isInteger(v) && v > 0 && (v & (v - 1)) === 0;

export function alignUnit(blockSize: number): number {
  return Math.max(MIN_ALIGN_BYTES, blockSize);
}

/** Header positions for a given alignment unit (they need nothing else). */
export function headerOffsetsFor(spareBytes: number, alignBytes: number): ByteOffset[] {
  const out = [byteOffset(0)];
  for (let k = 1; k <= 3; k++) out.push(byteOffset(alignDown((k * spareBytes) / 4, alignBytes)));
  out.push(byteOffset(alignDown(spareBytes, alignBytes) - HEADER_AREA_BYTES));
  return out;
}

/** Every offset where a header of any valid layout of this spare could be. */
export function candidateHeaderOffsets(spareBytes: number): ByteOffset[] {
  const set = new Set<ByteOffset>();
  for (const b of CANDIDATE_BLOCK_SIZES) {
    for (const o of headerOffsetsFor(spareBytes, alignUnit(b))) if (o >= 0 && o + 512 <= spareBytes) set.add(o);
  }
  return [...set].sort((a, b) => a - b);
}

export function defaultJournalBytes(spareBytes: number): number {
  return Math.min(MAX_JOURNAL_BYTES, Math.max(MIN_JOURNAL_BYTES, alignDown(spareBytes / 1024, MIN_ALIGN_BYTES)));
}

export function validateBlockSize(blockSize: number, ...logicalSectorSizes: number[]): void {
  if (!isPow2(blockSize) || blockSize < MIN_BLOCK_BYTES || blockSize > MAX_BLOCK_BYTES) {
    throw new LayoutError(`block size ${blockSize} must be a power of two between ${MIN_BLOCK_BYTES} and ${MAX_BLOCK_BYTES}`);
  }
  for (const s of logicalSectorSizes) {
    if (blockSize < s) throw new LayoutError(`block size ${blockSize} is smaller than a device's logical sector size ${s}`);
  }
}

export function computeLayout(spareBytes: number, blockSize: number, spareLogicalBlockSize: number, journalBytes?: number): Layout {
  validateBlockSize(blockSize, spareLogicalBlockSize);
  if (spareLogicalBlockSize > HEADER_AREA_BYTES || !isPow2(spareLogicalBlockSize)) {
    throw new LayoutError(`spare logical sector size ${spareLogicalBlockSize} is not supported (max ${HEADER_AREA_BYTES})`);
  }
  const alignBytes = alignUnit(blockSize);
  const frameAlign = Math.max(512, spareLogicalBlockSize);
  const j = journalBytes ?? defaultJournalBytes(spareBytes);
  if (j % MIN_ALIGN_BYTES !== 0 || j < MIN_ALIGN_BYTES) throw new LayoutError(`journal size ${j} must be a positive multiple of 64 KiB`);
  const totalBlocks = Math.floor(spareBytes / blockSize);
  // Table sized for every spare block plus 1/16 as much again for pending entries: no cap below capacity.
  const tableCapacity = totalBlocks + Math.ceil(totalBlocks / 16);
  const checkpointSlotBytes = Math.max(1, Math.ceil(tableCapacity / ENTRIES_PER_CHUNK)) * CHUNK_BYTES;
  const regionBytes = alignUp(HEADER_AREA_BYTES + j + 2 * checkpointSlotBytes, alignBytes);
  const headerOffsets = headerOffsetsFor(spareBytes, alignBytes);
  const end = alignDown(spareBytes, alignBytes);
  const regionOffsets = [headerOffsets[0], headerOffsets[1], headerOffsets[2], headerOffsets[3], byteOffset(end - regionBytes)];
  for (let k = 0; k < 4; k++) {
    if (regionOffsets[k] + regionBytes > regionOffsets[k + 1]) {
      throw new LayoutError(
        `spare of ${spareBytes} bytes is too small: each of the 5 metadata regions needs ${regionBytes} bytes and they would overlap`,
      );
    }
  }
  const bodyOffsets = regionOffsets.map((r, k) => (k < 4 ? addBytes(r, HEADER_AREA_BYTES) : r));
  let metaBlocks = 0;
  for (const r of regionOffsets) metaBlocks += Math.min(totalBlocks, (r + regionBytes) / blockSize) - r / blockSize;
  const spareDataBlocks = totalBlocks - metaBlocks;
  if (spareDataBlocks < 1) throw new LayoutError(`spare of ${spareBytes} bytes leaves no room for data`);
  return {
    spareBytes,
    blockSize,
    frameAlign,
    alignBytes,
    journalBytes: j,
    checkpointSlotBytes,
    tableCapacity,
    regionBytes,
    regionOffsets,
    headerOffsets,
    bodyOffsets,
    totalBlocks,
    spareDataBlocks,
  };
}

/** True when spare block `b` lies (partly) inside a metadata region. */
export function isMetadataBlock(l: Layout, b: number): boolean {
  const start = b * l.blockSize;
  const end = start + l.blockSize;
  for (const r of l.regionOffsets) if (start < r + l.regionBytes && end > r) return true;
  return false;
}

export function journalOffset(l: Layout, copy: number): ByteOffset {
  return l.bodyOffsets[copy];
}

export function checkpointOffset(l: Layout, copy: number, slot: number): ByteOffset {
  return addBytes(l.bodyOffsets[copy], l.journalBytes + slot * l.checkpointSlotBytes);
}
