/**
 * Routing: where each byte of a request lives. A request is cut at remap boundaries into runs on main
 * (at their own offset) and runs on the spare (contiguous spare blocks merge into one run). Nothing
 * here does I/O; the front (remap-device.ts) issues the pieces.
 */
import type { BlockLocks } from './block-locks';
import type { RemapTable } from './remap-table';
import { blockSpan, byteOffset, spareOffsetOf, type ByteLength, type ByteOffset } from '../units';

/** A piece of a request: either on main (at its own offset) or on the spare. */
export interface Segment {
  readonly offset: ByteOffset;
  length: ByteLength;
  /** Byte offset on the spare, or -1 when the piece lives on main. */
  readonly spareOffset: ByteOffset | -1;
}

/** Split [offset, offset+length) into runs on main and runs on the spare. */
export function route(table: RemapTable, blockSize: ByteLength, offset: ByteOffset, length: ByteLength): Segment[] {
  // The hot loop of every request that spans blocks (256 blocks for 1 MiB at 4 KiB): one lookup per
  // block and no allocation per block (clipToBlock's pair, inlined here).
  const end = offset + length;
  const [first, last] = blockSpan(offset, length, blockSize);
  const segs: Segment[] = [];
  let cur: Segment | undefined;
  for (let b = first; b <= last; b++) {
    const blockStart = b * blockSize;
    const start = byteOffset(blockStart > offset ? blockStart : offset);
    const stop = blockStart + blockSize < end ? blockStart + blockSize : end;
    const spare = table.lookup(b);
    const spareOffset = spare === undefined ? -1 : spareOffsetOf(spare, b, start, blockSize);
    if (cur && (spareOffset === -1 ? cur.spareOffset === -1 : cur.spareOffset !== -1 && cur.spareOffset + cur.length === spareOffset)) {
      cur.length += stop - start;
    } else {
      cur = { offset: start, length: stop - start, spareOffset };
      segs.push(cur);
    }
  }
  return segs;
}

/** The whole range as one run on main (nothing remapped). */
export function onMain(offset: ByteOffset, length: ByteLength): Segment[] {
  return [{ offset, length, spareOffset: -1 }];
}

/**
 * The lock of a moving block in [offset, offset+length), or undefined (synchronous). Callers loop
 *   `for (let w = movingIn(...); w; w = movingIn(...)) await w;`
 * inline, then route and start their I/O synchronously: from the last check to the I/O's start no tick
 * passes, so no mover can take a lock in between (a mover taking one later drains the started writes).
 */
export function movingIn(locks: BlockLocks, blockSize: ByteLength, offset: ByteOffset, length: ByteLength): Promise<void> | undefined {
  if (!locks.anyLocked) return undefined;
  const [first, last] = blockSpan(offset, length, blockSize);
  return locks.lockedIn(first, last);
}
