/**
 * The remap table in memory, the change operations applied to it (shared by journal replay and live
 * commits, so both produce the same table), and the chunked checkpoint encoding (docs/FORMAT.md §5).
 */
import { crc32 } from './crc';
import { readU64, writeU64 } from './codec';
import { CHUNK_BYTES, CHUNK_HEADER_BYTES, ENTRIES_PER_CHUNK, ENTRY_BYTES } from './layout';
import { RemapIndex } from './remap-index';
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
export interface Op { op: number; reason: number; a: number; b: number; c: number }

export interface TableState {
  /** Main block -> remap, compact (no object per entry); iteration order = insertion order, like a Map. */
  remaps: RemapIndex;
  /** Pending main block -> time it was marked (ms). */
  pending: Map<number, number>;
  scan: ScanState;
}

export function emptyState(): TableState {
  return { remaps: new RemapIndex(), pending: new Map(), scan: { cursorOffset: 0, passesCompleted: 0, lastFullScanAt: 0 } };
}

/** A copy of `s` that can be changed without touching `s` (checkpoints encode the table plus a round's ops). */
export function cloneState(s: TableState): TableState {
  return { remaps: s.remaps.clone(), pending: new Map(s.pending), scan: { ...s.scan } };
}

/** Reason code stored for an ADD op: unknown codes become manual (3), as the Map-based table did. */
const MANUAL = reasonCode('manual');

export function opsForChange(change: {
  add?: RemapEntry[]; remove?: number[]; pendingAdd?: number[]; pendingRemove?: number[]; scan?: ScanState;
}, now: number): Op[] {
  const ops: Op[] = [];
  for (const m of change.remove ?? []) ops.push({ op: OP_REMOVE, reason: 0, a: m, b: 0, c: 0 });
  for (const e of change.add ?? []) ops.push({ op: OP_ADD, reason: reasonCode(e.reason), a: e.mainBlock, b: e.spareBlock, c: e.createdAt });
  for (const m of change.pendingRemove ?? []) ops.push({ op: OP_PENDING_REMOVE, reason: 0, a: m, b: 0, c: 0 });
  for (const m of change.pendingAdd ?? []) ops.push({ op: OP_PENDING_ADD, reason: 0, a: m, b: 0, c: now });
  if (change.scan) ops.push({ op: OP_SCAN, reason: 0, a: change.scan.cursorOffset, b: change.scan.passesCompleted, c: change.scan.lastFullScanAt });
  return ops;
}

/**
 * Apply one op. Returns the spare block that the op released (a removed or replaced remap), or -1.
 * Rules: ADD replaces any remap of the same main block and clears its pending mark; PENDING_ADD is
 * ignored for a block that is remapped.
 */
export function applyOp(s: TableState, o: Op): number {
  switch (o.op) {
    case OP_ADD: {
      const old = s.remaps.set(o.a, o.b, reasonName(o.reason) ? o.reason : MANUAL, o.c);
      if (s.pending.size) s.pending.delete(o.a);
      return old >= 0 && old !== o.b ? old : -1;
    }
    case OP_REMOVE:
      return s.remaps.delete(o.a);
    case OP_PENDING_ADD:
      if (!s.remaps.has(o.a)) s.pending.set(o.a, o.c);
      return -1;
    case OP_PENDING_REMOVE:
      s.pending.delete(o.a);
      return -1;
    case OP_SCAN:
      s.scan = { cursorOffset: o.a, passesCompleted: o.b, lastFullScanAt: o.c };
      return -1;
    default:
      throw new Error(`unknown op ${o.op}`);
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

export function decodeOp(buf: Buffer, off: number): Op {
  return { op: buf[off], reason: buf[off + 1], a: readU64(buf, off + 8), b: readU64(buf, off + 16), c: readU64(buf, off + 24) };
}

export interface EncodedCheckpoint { bytes: Buffer; chunks: number; entries: number; crc: number; scan: ScanState }

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

/**
 * Verify a checkpoint read from disk (chunk CRCs, chunk numbering/sequence, entry count, whole-table CRC).
 * Returns the failed check name or null.
 */
export function verifyCheckpoint(bytes: Buffer, chunks: number, entries: number, crc: number, sequence: number): string | null {
  let total = 0;
  let whole = 0;
  for (let c = 0; c < chunks; c++) {
    const base = c * CHUNK_BYTES;
    const count = bytes.readUInt32LE(base + 16);
    if (bytes.readUInt32LE(base) !== CHUNK_MAGIC || bytes.readUInt32LE(base + 4) !== c || count > ENTRIES_PER_CHUNK) return 'chunk-crc';
    if (chunkCrc(bytes, base, count) !== bytes.readUInt32LE(base + 28)) return 'chunk-crc';
    if (readU64(bytes, base + 8) !== sequence) return 'chunk-crc';
    total += count;
    // Whole-table CRC, continued chunk by chunk while the chunk is still in cache.
    whole = crc32(bytes.subarray(base, base + CHUNK_BYTES), whole);
  }
  if (total !== entries) return 'table-crc';
  if (whole !== crc) return 'table-crc';
  return null;
}

/** u48 little-endian at `off` (no bounds checks: callers stay inside verified chunks). */
function u48(b: Buffer, off: number): number {
  return b[off] + b[off + 1] * 0x100 + b[off + 2] * 0x10000 + b[off + 3] * 0x1000000 + (b[off + 4] + b[off + 5] * 0x100) * 0x100000000;
}

/**
 * Decode a verified checkpoint into a fresh state. Throws on semantically impossible entries.
 * `entries` (the header's count) only sizes the table up front.
 */
export function decodeCheckpoint(bytes: Buffer, chunks: number, scan: ScanState, entries = 0): TableState {
  const s = emptyState();
  s.remaps = new RemapIndex(entries + (entries >>> 4));
  s.scan = scan;
  const remaps = s.remaps;
  for (let c = 0; c < chunks; c++) {
    const base = c * CHUNK_BYTES;
    const count = bytes.readUInt32LE(base + 16);
    for (let i = 0; i < count; i++) {
      const off = base + CHUNK_HEADER_BYTES + i * ENTRY_BYTES;
      const kind = bytes[off];
      const main = u48(bytes, off + 2);
      const created = u48(bytes, off + 16);
      if (kind === KIND_REMAP) {
        const reason = bytes[off + 1];
        if (!reasonName(reason)) throw new Error(`unknown remap reason ${reason}`);
        if (remaps.set(main, u48(bytes, off + 8), reason, created) >= 0) throw new Error(`main block ${main} appears twice`);
      } else if (kind === KIND_PENDING) {
        s.pending.set(main, created);
      } else {
        throw new Error(`unknown table entry kind ${kind}`);
      }
    }
  }
  return s;
}
