/**
 * Reading the 5 copies: find headers, verify every level (header CRC, chunk CRCs, whole-table CRC,
 * journal frame CRCs), compute each copy's effective sequence/timestamp and choose the best copy
 * (highest sequence, then newest timestamp, then lowest index).
 */
import type { Backend } from '../remap/backend';
import { decodeHeader, FORMAT_VERSION, HEADER_BYTES, type Header } from './header';
import { scanJournal, type JournalScan } from './journal';
import {
  candidateHeaderOffsets, checkpointOffset, CHUNK_BYTES, computeLayout, COPIES, headerOffsetsFor, alignUnit,
  journalOffset, type Layout,
} from './layout';
import { verifyCheckpoint } from './table';

export interface CopyScan {
  index: number;
  offset: number;
  length: number;
  valid: boolean;
  failedCheck?: string;
  stale?: boolean;
  header?: Header;
  journal?: JournalScan;
  sequence: number;
  timestamp: number;
}

export interface SpareScan {
  layout?: Layout;
  reference?: Header;
  copies: CopyScan[];
  /** Highest sequence number seen in any CRC-valid header or journal frame. */
  maxSequence: number;
  /** A CRC-valid header written by a newer format version, or with unknown incompatible features. */
  newer?: { version: number; features: boolean };
  /** Some candidate position starts with the remapd magic. */
  anyMagic: boolean;
  best?: CopyScan;
  /**
   * Bytes of the first checkpoint that verified, kept so that open() does not read and verify the table
   * again (see takeCheckpointBytes). `key` identifies the checkpoint by its header fields.
   */
  checkpoint?: { key: string; bytes: Buffer };
}

function checkpointKey(h: Header): string {
  return `${h.sequence}/${h.activeSlot}/${h.checkpointChunks}/${h.checkpointEntries}/${h.checkpointCrc}`;
}

/**
 * The verified checkpoint bytes of `copy`, when the scan kept an identical checkpoint (same header fields,
 * and every copy with those fields was verified byte-equal to it). Hands the buffer over (the scan drops it).
 */
export function takeCheckpointBytes(scan: SpareScan, copy: CopyScan): Buffer | undefined {
  const kept = scan.checkpoint;
  if (!kept || !copy.header || kept.key !== checkpointKey(copy.header)) return undefined;
  scan.checkpoint = undefined;
  return kept.bytes;
}

async function readAt(spare: Backend, offset: number, length: number): Promise<Buffer> {
  const b = Buffer.alloc(length);
  await spare.read(offset, length, b, 0);
  return b;
}

function sameLayout(h: Header, ref: Header): boolean {
  return h.blockSize === ref.blockSize && h.spareSize === ref.spareSize && h.spareLogicalBlockSize === ref.spareLogicalBlockSize
    && h.journalBytes === ref.journalBytes && h.regionBytes === ref.regionBytes && h.tableCapacity === ref.tableCapacity
    && h.checkpointSlotBytes === ref.checkpointSlotBytes && h.copyOffsets.every((o, i) => o === ref.copyOffsets[i]);
}

function layoutOf(h: Header, spareSize: number): Layout | undefined {
  if (h.spareSize > spareSize) return undefined;
  try {
    const l = computeLayout(h.spareSize, h.blockSize, h.spareLogicalBlockSize, h.journalBytes);
    if (l.regionBytes !== h.regionBytes || l.tableCapacity !== h.tableCapacity || l.checkpointSlotBytes !== h.checkpointSlotBytes
      || !l.regionOffsets.every((o, i) => o === h.copyOffsets[i])) return undefined;
    return l;
  } catch {
    return undefined;
  }
}

/** Read headers at every candidate position (cheap: a few 512-byte reads). */
export async function findHeaders(spare: Backend): Promise<{ offset: number; buf?: Buffer; header?: Header; failedCheck?: string; version?: number }[]> {
  const out = [];
  for (const offset of candidateHeaderOffsets(spare.size)) {
    try {
      const buf = await readAt(spare, offset, HEADER_BYTES);
      const r = decodeHeader(buf);
      out.push(r.ok ? { offset, buf, header: r.header } : { offset, buf, failedCheck: r.failedCheck, version: r.version });
    } catch {
      out.push({ offset, failedCheck: 'io' });
    }
  }
  return out;
}

const COMPARE_PIECE = 1 << 20;
const JOURNAL_FIRST_PIECE = 256 << 10;

/** Whether the `bytes.length` bytes at `offset` equal `bytes` (read piecewise into `scratch`). */
async function equalsOnDisk(spare: Backend, offset: number, bytes: Buffer, scratch: Buffer): Promise<boolean> {
  for (let o = 0; o < bytes.length; o += scratch.length) {
    const n = Math.min(scratch.length, bytes.length - o);
    await spare.read(offset + o, n, scratch, 0);
    if (!scratch.subarray(0, n).equals(bytes.subarray(o, o + n))) return false;
  }
  return true;
}

async function verifyOnDisk(spare: Backend, offset: number, h: Header): Promise<string | null> {
  const cp = await readAt(spare, offset, h.checkpointChunks * CHUNK_BYTES);
  return verifyCheckpoint(cp, h.checkpointChunks, h.checkpointEntries, h.checkpointCrc, h.sequence);
}

/**
 * Scan one copy's journal, reading only as much as its frame chain needs: a first piece, then 4x longer
 * pieces while the chain runs to the end of what was read. (Most of a journal is old-epoch frames or zeroes.)
 */
async function readJournal(spare: Backend, offset: number, journalBytes: number, h: Header, frameAlign: number): Promise<JournalScan> {
  let n = Math.min(journalBytes, JOURNAL_FIRST_PIECE);
  for (;;) {
    const j = scanJournal(await readAt(spare, offset, n), h.sequence, h.setupUuid, frameAlign);
    if (!j.truncated || n === journalBytes) return { frames: j.frames, end: j.end };
    n = Math.min(journalBytes, n * 4);
  }
}

export async function scanSpare(spare: Backend): Promise<SpareScan> {
  const found = await findHeaders(spare);
  const scan: SpareScan = { copies: [], maxSequence: 0, anyMagic: found.some((f) => f.buf && f.failedCheck !== 'magic') };
  for (const f of found) {
    if ((f.failedCheck === 'version' && (f.version ?? 0) > FORMAT_VERSION) || f.failedCheck === 'features') {
      scan.newer = { version: f.version ?? FORMAT_VERSION, features: f.failedCheck === 'features' };
    }
  }
  // Reference header: the valid one with the highest sequence whose layout is self-consistent.
  const headers = found.filter((f) => f.header).sort((a, b) => b.header!.sequence - a.header!.sequence || a.offset - b.offset);
  for (const f of headers) {
    const l = layoutOf(f.header!, spare.size);
    if (l && l.headerOffsets[f.header!.copyIndex] === f.offset) { scan.layout = l; scan.reference = f.header; break; }
  }
  if (!scan.layout || !scan.reference) {
    const offs = headerOffsetsFor(spare.size, alignUnit(4096));
    scan.copies = offs.map((offset, index) => ({ index, offset, length: 0, valid: false, failedCheck: 'magic', sequence: 0, timestamp: 0 }));
    for (let i = 0; i < COPIES; i++) {
      const f = found.find((x) => x.offset === offs[i]);
      if (f?.failedCheck) scan.copies[i].failedCheck = f.failedCheck;
    }
    return scan;
  }
  const l = scan.layout;
  const ref = scan.reference;
  let scratch: Buffer | undefined;
  for (let k = 0; k < COPIES; k++) {
    const c: CopyScan = { index: k, offset: l.regionOffsets[k], length: l.regionBytes, valid: false, sequence: 0, timestamp: 0 };
    scan.copies.push(c);
    try {
      const r = decodeHeader(await readAt(spare, l.headerOffsets[k], HEADER_BYTES));
      if (!r.ok) { c.failedCheck = r.failedCheck; continue; }
      const h = r.header;
      scan.maxSequence = Math.max(scan.maxSequence, h.sequence);
      if (!h.setupUuid.equals(ref.setupUuid)) { c.failedCheck = 'setup'; continue; }
      if (h.copyIndex !== k || !sameLayout(h, ref) || h.checkpointChunks * CHUNK_BYTES > l.checkpointSlotBytes) { c.failedCheck = 'layout'; continue; }
      c.header = h;
      c.sequence = h.sequence;
      c.timestamp = h.timestamp;
      // Copies normally hold identical checkpoints. The first one is verified in full (chunk CRCs and the
      // whole-table CRC) and kept; a later copy with the same header fields whose bytes are equal to it
      // passes the very same checks, so a memcmp replaces two CRC passes over the table.
      // The comparison reads the copy piecewise into one small buffer that stays in cache.
      const len = h.checkpointChunks * CHUNK_BYTES;
      const at = checkpointOffset(l, k, h.activeSlot);
      const key = checkpointKey(h);
      const kept = scan.checkpoint?.key === key ? scan.checkpoint.bytes : undefined;
      let bad: string | null = 'chunk-crc';
      if (kept) {
        scratch ??= Buffer.alloc(COMPARE_PIECE);
        bad = await equalsOnDisk(spare, at, kept, scratch) ? null : await verifyOnDisk(spare, at, h);
      } else {
        const cp = await readAt(spare, at, len);
        bad = verifyCheckpoint(cp, h.checkpointChunks, h.checkpointEntries, h.checkpointCrc, h.sequence);
        if (!bad && !scan.checkpoint) scan.checkpoint = { key, bytes: cp };
      }
      if (bad) { c.failedCheck = bad; continue; }
      const j = await readJournal(spare, journalOffset(l, k), l.journalBytes, h, l.frameAlign);
      c.journal = j;
      if (j.frames.length) {
        const last = j.frames[j.frames.length - 1];
        c.sequence = last.sequence;
        c.timestamp = last.timestamp;
      }
      scan.maxSequence = Math.max(scan.maxSequence, c.sequence);
      c.valid = true;
    } catch {
      c.failedCheck = 'io';
    }
  }
  chooseBest(scan);
  return scan;
}

/** Pick the best valid copy and flag the valid copies that differ from it as stale. */
export function chooseBest(scan: SpareScan): void {
  let best: CopyScan | undefined;
  for (const c of scan.copies) {
    if (!c.valid) continue;
    if (!best || c.sequence > best.sequence || (c.sequence === best.sequence && c.timestamp > best.timestamp)) best = c;
  }
  scan.best = best;
  for (const c of scan.copies) {
    c.stale = undefined;
    if (c.valid && best && c !== best) {
      if (c.sequence !== best.sequence || c.timestamp !== best.timestamp || c.header!.sequence !== best.header!.sequence
        || c.journal!.end !== best.journal!.end) c.stale = true;
    }
  }
}

export function needsRepair(scan: SpareScan): boolean {
  return scan.copies.some((c) => !c.valid || c.stale);
}
