/**
 * The remap table in memory, the change operations applied to it (shared by journal replay and live
 * commits, so both produce the same table), and the chunked checkpoint encoding (docs/FORMAT.md §5).
 */
import { byteOffset, type MainBlock } from '../units';
import { crc32 } from './crc';
import { readU64, writeU64 } from './codec';
import { CHUNK_BYTES, CHUNK_HEADER_BYTES, ENTRIES_PER_CHUNK, ENTRY_BYTES } from './layout';
import { RemapIndex, type SlotArrays } from './remap-index';
import { reasonCode, reasonName, type RemapEntry, type ScanState } from './types';

export const CHUNK_MAGIC = 0x43544d52; // "RMTC" little-endian
export const KIND_REMAP = 1;
export const KIND_PENDING = 2;

export const OP_ADD = 1;
export const OP_REMOVE = 2;
export const OP_PENDING_ADD = 3;
export const OP_PENDING_REMOVE = 4;
export const OP_SCAN = 5;
export const OP_BYTES = 32;

/** One change operation: 32 bytes on disk (op u8, reason u8, 6 reserved, a u64, b u64, c u64). */
export interface Op {
  op: number;
  reason: number;
  a: number;
  b: number;
  c: number;
}

export interface TableState {
  /** Main block -> remap, compact (no object per entry); iteration order = insertion order, like a Map. */
  remaps: RemapIndex;
  /** Pending main block -> time it was marked (ms). */
  pending: Map<number, number>;
  scan: ScanState;
}

export function emptyState(): TableState {
  return { remaps: new RemapIndex(), pending: new Map(), scan: { cursorOffset: byteOffset(0), passesCompleted: 0, lastFullScanAt: 0 } };
}

/** A copy of `s` that can be changed without touching `s` (checkpoints encode the table plus a round's ops). */
export function cloneState(s: TableState): TableState {
  return { remaps: s.remaps.clone(), pending: new Map(s.pending), scan: { ...s.scan } };
}

/** Reason code stored for an ADD op: unknown codes become manual (3), as the Map-based table did. */
const MANUAL = reasonCode('manual');

export function opsForChange(
  change: {
    add?: RemapEntry[];
    remove?: number[];
    pendingAdd?: MainBlock[];
    pendingRemove?: MainBlock[];
    scan?: ScanState;
  },
  now: number,
): Op[] {
  const ops: Op[] = [];
  for (const m of change.remove ?? []) ops.push({ op: OP_REMOVE, reason: 0, a: m, b: 0, c: 0 });
  for (const e of change.add ?? []) ops.push({ op: OP_ADD, reason: reasonCode(e.reason), a: e.mainBlock, b: e.spareBlock, c: e.createdAt });
  for (const m of change.pendingRemove ?? []) ops.push({ op: OP_PENDING_REMOVE, reason: 0, a: m, b: 0, c: 0 });
  for (const m of change.pendingAdd ?? []) ops.push({ op: OP_PENDING_ADD, reason: 0, a: m, b: 0, c: now });
  if (change.scan)
    ops.push({ op: OP_SCAN, reason: 0, a: change.scan.cursorOffset, b: change.scan.passesCompleted, c: change.scan.lastFullScanAt });
  return ops;
}

/**
 * Apply one op. Returns the spare block that the op released (a removed or replaced remap), or -1.
 * Rules: ADD replaces any remap of the same main block and clears its pending mark; PENDING_ADD is
 * ignored for a block that is remapped.
 */
export function applyOp(s: TableState, o: Op): number {
  return applyFields(s, o.op, o.reason, o.a, o.b, o.c);
}

/** applyOp for the op encoded at `off` of `buf` (journal replay: no Op object per op). */
export function applyOpAt(s: TableState, buf: Buffer, off: number): number {
  return applyFields(s, buf[off], buf[off + 1], readU64(buf, off + 8), readU64(buf, off + 16), readU64(buf, off + 24));
}

function applyFields(s: TableState, op: number, reason: number, a: number, b: number, c: number): number {
  switch (op) {
    case OP_ADD: {
      const old = s.remaps.set(a, b, reasonName(reason) ? reason : MANUAL, c);
      if (s.pending.size) s.pending.delete(a);
      return old >= 0 && old !== b ? old : -1;
    }
    case OP_REMOVE:
      return s.remaps.delete(a);
    case OP_PENDING_ADD:
      if (!s.remaps.has(a)) s.pending.set(a, c);
      return -1;
    case OP_PENDING_REMOVE:
      s.pending.delete(a);
      return -1;
    case OP_SCAN:
      s.scan = { cursorOffset: byteOffset(a), passesCompleted: b, lastFullScanAt: c };
      return -1;
    default:
      throw new Error(`unknown op ${op}`);
  }
}

export function encodeOp(buf: Buffer, off: number, o: Op): void {
  buf.writeUInt8(o.op, off);
  buf.writeUInt8(o.reason, off + 1);
  buf.fill(0, off + 2, off + 8);
  writeU64(buf, off + 8, o.a);
  writeU64(buf, off + 16, o.b);
  writeU64(buf, off + 24, o.c);
}

export interface EncodedCheckpoint {
  bytes: Buffer;
  chunks: number;
  entries: number;
  crc: number;
  scan: ScanState;
}

/** Encode the table as chunks of 64 KiB: remaps first, then pending blocks, each in map order. */
export function encodeCheckpoint(s: TableState, sequence: number): EncodedCheckpoint {
  const entries = s.remaps.size + s.pending.size;
  const chunks = Math.ceil(entries / ENTRIES_PER_CHUNK);
  const bytes = Buffer.alloc(chunks * CHUNK_BYTES);
  let i = 0;
  const put = (kind: number, reason: number, main: number, spare: number, created: number): void => {
    const chunk = Math.floor(i / ENTRIES_PER_CHUNK);
    const off = chunk * CHUNK_BYTES + CHUNK_HEADER_BYTES + (i % ENTRIES_PER_CHUNK) * ENTRY_BYTES;
    bytes[off] = kind;
    bytes[off + 1] = reason;
    bytes.writeUIntLE(main, off + 2, 6);
    bytes.writeUIntLE(spare, off + 8, 6);
    bytes.writeUIntLE(created, off + 16, 6);
    i++;
  };
  const r = s.remaps;
  for (let k = 0, n = r.slotCount; k < n; k++) {
    const reason = r.reasonAt(k);
    if (reason !== 0) put(KIND_REMAP, reason, r.mainAt(k), r.spareAt(k), r.createdAtOf(k));
  }
  for (const [m, t] of s.pending) put(KIND_PENDING, 0, m, 0, t);
  for (let c = 0; c < chunks; c++) {
    const base = c * CHUNK_BYTES;
    const count = Math.min(ENTRIES_PER_CHUNK, entries - c * ENTRIES_PER_CHUNK);
    bytes.writeUInt32LE(CHUNK_MAGIC, base);
    bytes.writeUInt32LE(c, base + 4);
    writeU64(bytes, base + 8, sequence);
    bytes.writeUInt32LE(count, base + 16);
    bytes.writeUInt32LE(chunkCrc(bytes, base, count), base + 28);
  }
  return { bytes, chunks, entries, crc: crc32(bytes), scan: { ...s.scan } };
}

function chunkCrc(bytes: Buffer, base: number, count: number): number {
  const head = crc32(bytes.subarray(base, base + 28));
  return crc32(bytes.subarray(base + CHUNK_HEADER_BYTES, base + CHUNK_HEADER_BYTES + count * ENTRY_BYTES), head);
}

/** What a header says about its checkpoint. */
export interface CheckpointInfo {
  chunks: number;
  entries: number;
  crc: number;
  sequence: number;
}

/**
 * Verifies a checkpoint read from disk piece by piece (whole chunks, in order): chunk magic, number,
 * sequence and CRC, the entry count and the whole-table CRC (continued chunk by chunk while the chunk is
 * still in cache). Pieces are read into one small reused buffer, so verifying a 20 MB table touches no
 * fresh memory.
 */
export class CheckpointVerifier {
  private next = 0;
  private total = 0;
  private whole = 0;
  private failed: string | null = null;

  constructor(private readonly info: CheckpointInfo) {}

  /** Check `n` chunks at the start of `piece`. Returns the failed check (then and ever after) or null. */
  feed(piece: Buffer, n: number): string | null {
    for (let k = 0; k < n && !this.failed; k++) {
      const base = k * CHUNK_BYTES;
      const count = piece.readUInt32LE(base + 16);
      if (
        piece.readUInt32LE(base) !== CHUNK_MAGIC ||
        piece.readUInt32LE(base + 4) !== this.next ||
        count > ENTRIES_PER_CHUNK ||
        chunkCrc(piece, base, count) !== piece.readUInt32LE(base + 28) ||
        readU64(piece, base + 8) !== this.info.sequence
      ) {
        this.failed = 'chunk-crc';
        break;
      }
      this.total += count;
      this.whole = crc32(piece.subarray(base, base + CHUNK_BYTES), this.whole);
      this.next++;
    }
    return this.failed;
  }

  /** After the last piece: the failed check or null. */
  finish(): string | null {
    if (this.failed) return this.failed;
    if (this.next !== this.info.chunks) return 'chunk-crc';
    if (this.total !== this.info.entries || this.whole !== this.info.crc) return 'table-crc';
    return null;
  }
}

/**
 * Decodes verified checkpoint chunks, piece by piece, straight into the typed arrays of a RemapIndex (built
 * at the end in one pass, which also finds duplicate main blocks). `capacity` sizes the arrays: the
 * checkpoint's entries plus the journal ops that will be replayed on top, so nothing grows during a load.
 * Throws on semantically impossible entries.
 */
export class CheckpointDecoder {
  private readonly slots: SlotArrays;
  private n = 0;
  private readonly pending = new Map<number, number>();

  constructor(capacity: number) {
    this.slots = RemapIndex.allocateSlots(capacity);
  }

  /** Decode `n` (verified) chunks at the start of `piece`. */
  feed(piece: Buffer, n: number): void {
    const { mains, spares, created, reasons } = this.slots;
    let k = this.n;
    for (let c = 0; c < n; c++) {
      const base = c * CHUNK_BYTES;
      const count = piece.readUInt32LE(base + 16);
      for (let i = 0; i < count; i++) {
        const off = base + CHUNK_HEADER_BYTES + i * ENTRY_BYTES;
        const kind = piece[off];
        const main = piece.readUIntLE(off + 2, 6);
        const when = piece.readUIntLE(off + 16, 6);
        if (kind === KIND_REMAP) {
          const reason = piece[off + 1];
          if (!reasonName(reason)) throw new Error(`unknown remap reason ${reason}`);
          if (k === mains.length) throw new Error('checkpoint holds more entries than its header says');
          mains[k] = main;
          spares[k] = piece.readUIntLE(off + 8, 6);
          created[k] = when;
          reasons[k] = reason;
          k++;
        } else if (kind === KIND_PENDING) {
          this.pending.set(main, when);
        } else {
          throw new Error(`unknown table entry kind ${kind}`);
        }
      }
    }
    this.n = k;
  }

  /** The decoded table (throws when a main block appears twice). */
  finish(scan: ScanState): TableState {
    const remaps = RemapIndex.fromSlots(this.slots, this.n);
    return { remaps, pending: this.pending, scan };
  }
}
