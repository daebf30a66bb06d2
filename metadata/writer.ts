/**
 * Writing the copies: the headers of a fresh setup (create), the emptiness check create() makes before
 * writing, header writes to all 5 copies, and the checkpoint write itself (table into the inactive slot of
 * every copy, sync, headers with a new sequence pointing at it, sync). The store (metadata/store.ts) owns the
 * state and decides when to checkpoint; these functions only write. Failures go through the store's `fail`.
 */
import { randomBytes } from 'crypto';
import { byteOffset, type ByteOffset } from '../units';
import type { Backend } from '../storage/backend';
import { encodeHeader, FORMAT_VERSION, uuidFromString, type Header } from './header';
import { checkpointOffset, COPIES, type Layout } from './layout';
import { applyOp, cloneState, encodeCheckpoint, type Op, type TableState } from './table';
import { MetadataError, type MainIdentity } from './types';

/** The header of a fresh setup (sequence 1, empty table, checkpoint slot 0). */
export function freshHeader(spare: Backend, main: MainIdentity, layout: Layout, blockSize: number, t: number, setupUuid?: string): Header {
  const base: Header = {
    version: FORMAT_VERSION,
    incompatFeatures: 0,
    compatFeatures: 0,
    copyIndex: 0,
    sequence: 1,
    timestamp: t,
    setupUuid: setupUuid ? uuidFromString(setupUuid) : randomBytes(16),
    mainSize: main.size,
    mainLogicalBlockSize: main.logicalBlockSize,
    blockSize,
    spareSize: spare.size,
    spareLogicalBlockSize: spare.logicalBlockSize,
    activeSlot: 0,
    regionBytes: layout.regionBytes,
    journalBytes: layout.journalBytes,
    checkpointSlotBytes: layout.checkpointSlotBytes,
    tableCapacity: layout.tableCapacity,
    copyOffsets: layout.regionOffsets,
    checkpointEntries: 0,
    checkpointChunks: 0,
    checkpointCrc: 0,
    scanCursor: 0,
    scanPasses: 0,
    lastFullScanAt: 0,
    createdAt: t,
    mainSerial: main.serial,
    mainWwn: main.wwn,
  };
  if (!setupUuid) {
    base.setupUuid[6] = (base.setupUuid[6] & 0x0f) | 0x40;
    base.setupUuid[8] = (base.setupUuid[8] & 0x3f) | 0x80;
  }
  return base;
}

/** Refuse (NOT_EMPTY) a spare holding remapd headers (`stray`) or non-zero bytes in the metadata regions. */
export async function assertEmpty(spare: Backend, layout: Layout, stray: { offset: number }[]): Promise<void> {
  if (stray.length) {
    throw new MetadataError(
      'NOT_EMPTY',
      `spare ${spare.path} already holds remapd metadata (at byte ${stray[0].offset}); use --force to overwrite it`,
    );
  }
  for (const r of layout.regionOffsets) {
    const at = await firstNonZero(spare, r, layout.regionBytes);
    if (at >= 0) {
      throw new MetadataError(
        'NOT_EMPTY',
        `spare ${spare.path} has non-zero data at byte ${at}, inside a metadata region; use --force to overwrite it`,
      );
    }
  }
}

/**
 * Write the table as it will be after `ops` into checkpoint slot `slot` of every copy, sync, then the
 * headers (sequence `seq`, pointing at that slot) of the copies whose slot write succeeded, sync.
 * Returns the number of headers written (at least 1; otherwise `fail` is called). Changes no memory but `base`'s
 * copies: the caller applies `ops` once this resolves.
 */
export async function writeCheckpoint(
  spare: Backend,
  l: Layout,
  base: Header,
  state: TableState,
  ops: Op[],
  seq: number,
  slot: number,
  now: () => number,
  fail: (e: unknown) => never,
): Promise<number> {
  // Encode the table as it will be after `ops`, but change memory (and free spare blocks) only once the
  // checkpoint is durable, exactly like a journal round: lookups must not see a commit before it resolves.
  let next = state;
  if (ops.length) {
    next = cloneState(state);
    for (const o of ops) applyOp(next, o);
  }
  const cp = encodeCheckpoint(next, seq);
  next = state; // let the clone go before the writes
  if (cp.bytes.length > l.checkpointSlotBytes) fail(new Error('checkpoint larger than its slot'));
  const wr = await Promise.allSettled(Array.from({ length: COPIES }, (_, k) => spare.write(checkpointOffset(l, k, slot), cp.bytes)));
  const okCopies = wr.map((r) => r.status === 'fulfilled');
  if (!okCopies.some(Boolean)) fail((wr[0] as PromiseRejectedResult).reason);
  try {
    await spare.sync();
  } catch (e) {
    fail(e);
  }
  const h: Header = {
    ...base,
    sequence: seq,
    timestamp: now(),
    activeSlot: slot,
    checkpointEntries: cp.entries,
    checkpointChunks: cp.chunks,
    checkpointCrc: cp.crc,
    scanCursor: cp.scan.cursorOffset,
    scanPasses: cp.scan.passesCompleted,
    lastFullScanAt: cp.scan.lastFullScanAt,
  };
  let written = 0;
  try {
    written = await writeHeaders(spare, l, h, okCopies);
  } catch (e) {
    fail(e);
  }
  if (written === 0) fail(new Error('no header could be written'));
  try {
    await spare.sync();
  } catch (e) {
    fail(e);
  }
  return written;
}

/** Write `h` (with each copy's index) as the header of every copy (or of those `which` marks). Returns how many succeeded. */
export async function writeHeaders(spare: Backend, l: Layout, h: Header, which?: boolean[]): Promise<number> {
  const res = await Promise.allSettled(
    Array.from({ length: COPIES }, (_, k) =>
      which && !which[k] ? Promise.reject(new Error('skipped')) : spare.write(l.headerOffsets[k], encodeHeader({ ...h, copyIndex: k })),
    ),
  );
  return res.filter((r) => r.status === 'fulfilled').length;
}

/** Byte offset of the first non-zero byte in [offset, offset+length), or -1 (holes are skipped). */
async function firstNonZero(spare: Backend, offset: ByteOffset, length: number): Promise<number> {
  const piece = 1 << 20;
  const buf = Buffer.alloc(piece);
  let pos: number = offset;
  for (const ext of await spare.extents(offset, length)) {
    if (!ext.hole) {
      for (let o = pos; o < pos + ext.length; o += piece) {
        const n = Math.min(piece, pos + ext.length - o);
        await spare.read(byteOffset(o), n, buf, 0);
        for (let i = 0; i < n; i += 8) {
          if (i + 8 <= n ? buf.readBigUInt64LE(i) !== 0n : buf.subarray(i, n).some((x) => x !== 0)) {
            for (let j = i; j < n; j++) if (buf[j] !== 0) return o + j;
          }
        }
      }
    }
    pos += ext.length;
  }
  return -1;
}
