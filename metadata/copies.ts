/**
 * Reading the 5 copies: find headers, verify every level (header CRC, chunk CRCs, whole-table CRC,
 * journal frame CRCs), compute each copy's effective sequence/timestamp and choose the best copy
 * (highest sequence, then newest timestamp, then lowest index).
 */
import { addBytes, byteOffset, type ByteOffset } from '../units';
import type { Backend } from '../storage/backend';
import { decodeHeader, FORMAT_VERSION, HEADER_BYTES, type Header } from './header';
import { scanJournal, type JournalScan } from './journal';
import {
  candidateHeaderOffsets,
  checkpointOffset,
  CHUNK_BYTES,
  computeLayout,
  COPIES,
  headerOffsetsFor,
  alignUnit,
  journalOffset,
  type Layout,
} from './layout';
import { CheckpointDecoder, CheckpointVerifier, type TableState } from './table';
import type { ScanState } from './types';

export interface CopyScan {
  index: number;
  offset: number;
  length: number;
  valid: boolean;
  failedCheck?: string;
  stale?: boolean;
  header?: Header;
  /** The journal's valid frame chain (the bytes are not kept: loadJournal reads them again). */
  journal?: Pick<JournalScan, 'frames' | 'end' | 'opCount'>;
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
  /** Reused read buffers (see ScanBuffers); loadCheckpoint and loadJournal reuse them after the scan. */
  buffers: ScanBuffers;
}

/**
 * Read buffers shared by every copy of one scan. Fresh memory is expensive (page faults, and on VMs a fault in
 * the host as well), so checkpoints are streamed through one 1 MiB piece and journals through one buffer
 * of the journal's size, touched only as far as the reads go.
 */
export interface ScanBuffers {
  piece?: Buffer;
  journal?: Buffer;
}

const PIECE_BYTES = 16 * CHUNK_BYTES;

function pieceBuffer(b: ScanBuffers): Buffer {
  b.piece ??= Buffer.allocUnsafe(PIECE_BYTES);
  return b.piece;
}

async function readAt(spare: Backend, offset: ByteOffset, length: number): Promise<Buffer> {
  const b = Buffer.alloc(length);
  await spare.read(offset, length, b, 0);
  return b;
}

function sameLayout(h: Header, ref: Header): boolean {
  return (
    h.blockSize === ref.blockSize &&
    h.spareSize === ref.spareSize &&
    h.spareLogicalBlockSize === ref.spareLogicalBlockSize &&
    h.journalBytes === ref.journalBytes &&
    h.regionBytes === ref.regionBytes &&
    h.tableCapacity === ref.tableCapacity &&
    h.checkpointSlotBytes === ref.checkpointSlotBytes &&
    h.copyOffsets.every((o, i) => o === ref.copyOffsets[i])
  );
}

function layoutOf(h: Header, spareSize: number): Layout | undefined {
  if (h.spareSize > spareSize) return undefined;
  try {
    const l = computeLayout(h.spareSize, h.blockSize, h.spareLogicalBlockSize, h.journalBytes);
    if (
      l.regionBytes !== h.regionBytes ||
      l.tableCapacity !== h.tableCapacity ||
      l.checkpointSlotBytes !== h.checkpointSlotBytes ||
      !l.regionOffsets.every((o, i) => o === h.copyOffsets[i])
    )
      return undefined;
    return l;
  } catch {
    return undefined;
  }
}

/** Read headers at every candidate position (cheap: a few 512-byte reads). */
export async function findHeaders(
  spare: Backend,
): Promise<{ offset: ByteOffset; buf?: Buffer; header?: Header; failedCheck?: string; version?: number }[]> {
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

/**
 * Stream the checkpoint of header `h` at `offset` through the piece buffer: verify every check, and decode it
 * into a table when `decoder` is given. Returns the failed check, or null.
 */
async function streamCheckpoint(
  spare: Backend,
  offset: ByteOffset,
  h: Header,
  buffers: ScanBuffers,
  decoder?: CheckpointDecoder,
): Promise<string | null> {
  const v = new CheckpointVerifier({
    chunks: h.checkpointChunks,
    entries: h.checkpointEntries,
    crc: h.checkpointCrc,
    sequence: h.sequence,
  });
  const piece = pieceBuffer(buffers);
  const per = PIECE_BYTES / CHUNK_BYTES;
  for (let c = 0; c < h.checkpointChunks; c += per) {
    const n = Math.min(per, h.checkpointChunks - c);
    await spare.read(addBytes(offset, c * CHUNK_BYTES), n * CHUNK_BYTES, piece, 0);
    const bad = v.feed(piece, n);
    if (bad) return bad;
    decoder?.feed(piece, n);
  }
  return v.finish();
}

/**
 * Verify and decode the checkpoint of `copy` into a table sized for `extra` more entries (the journal ops
 * replayed on top). Throws when a check fails or an entry is impossible.
 */
export async function loadCheckpoint(
  spare: Backend,
  layout: Layout,
  copy: CopyScan,
  buffers: ScanBuffers,
  extra: number,
): Promise<TableState> {
  const h = copy.header!;
  const decoder = new CheckpointDecoder(h.checkpointEntries + extra);
  const bad = await streamCheckpoint(spare, checkpointOffset(layout, copy.index, h.activeSlot), h, buffers, decoder);
  if (bad) throw new Error(`checkpoint of copy ${copy.index} failed its ${bad} check`);
  const scan: ScanState = { cursorOffset: byteOffset(h.scanCursor), passesCompleted: h.scanPasses, lastFullScanAt: h.lastFullScanAt };
  return decoder.finish(scan);
}

const JOURNAL_FIRST_PIECE = 256 << 10;

/**
 * Scan one copy's journal into the shared journal buffer, reading only as much as its frame chain needs:
 * 256 KiB first, and the rest of the area only when the chain runs to the end of that. (Most of a journal
 * is old-epoch frames or zeroes.) The result's `buf` is the shared buffer: valid until the next read.
 */
async function readJournal(
  spare: Backend,
  offset: ByteOffset,
  journalBytes: number,
  h: Header,
  frameAlign: number,
  buffers: ScanBuffers,
): Promise<JournalScan> {
  buffers.journal ??= Buffer.allocUnsafe(journalBytes);
  const buf = buffers.journal.subarray(0, journalBytes);
  let n = Math.min(journalBytes, JOURNAL_FIRST_PIECE);
  await spare.read(offset, n, buf, 0);
  for (;;) {
    const j = scanJournal(buf.subarray(0, n), h.sequence, h.setupUuid, frameAlign);
    if (!j.truncated || n === journalBytes) return { frames: j.frames, end: j.end, buf, opCount: j.opCount };
    await spare.read(addBytes(offset, n), journalBytes - n, buf, n);
    n = journalBytes;
  }
}

/** The journal of a valid copy read again into the shared buffer, to replay it (scans keep no bytes). */
export async function loadJournal(spare: Backend, layout: Layout, copy: CopyScan, buffers: ScanBuffers): Promise<JournalScan> {
  const j = await readJournal(spare, journalOffset(layout, copy.index), layout.journalBytes, copy.header!, layout.frameAlign, buffers);
  if (j.end !== copy.journal!.end) throw new Error(`journal of copy ${copy.index} changed while loading`);
  return j;
}

export async function scanSpare(spare: Backend): Promise<SpareScan> {
  const found = await findHeaders(spare);
  const scan: SpareScan = { copies: [], maxSequence: 0, buffers: {}, anyMagic: found.some((f) => f.buf && f.failedCheck !== 'magic') };
  for (const f of found) {
    if ((f.failedCheck === 'version' && (f.version ?? 0) > FORMAT_VERSION) || f.failedCheck === 'features') {
      scan.newer = { version: f.version ?? FORMAT_VERSION, features: f.failedCheck === 'features' };
    }
  }
  // Reference header: the valid one with the highest sequence whose layout is self-consistent.
  const headers = found.filter((f) => f.header).sort((a, b) => b.header!.sequence - a.header!.sequence || a.offset - b.offset);
  for (const f of headers) {
    const l = layoutOf(f.header!, spare.size);
    if (l && l.headerOffsets[f.header!.copyIndex] === f.offset) {
      scan.layout = l;
      scan.reference = f.header;
      break;
    }
  }
  if (!scan.layout || !scan.reference) {
    const offs = headerOffsetsFor(spare.size, alignUnit(4096));
    scan.copies = offs.map((offset, index) => ({
      index,
      offset,
      length: 0,
      valid: false,
      failedCheck: 'magic',
      sequence: 0,
      timestamp: 0,
    }));
    for (let i = 0; i < COPIES; i++) {
      const f = found.find((x) => x.offset === offs[i]);
      if (f?.failedCheck) scan.copies[i].failedCheck = f.failedCheck;
    }
    return scan;
  }
  const l = scan.layout;
  const ref = scan.reference;
  for (let k = 0; k < COPIES; k++) {
    const c: CopyScan = { index: k, offset: l.regionOffsets[k], length: l.regionBytes, valid: false, sequence: 0, timestamp: 0 };
    scan.copies.push(c);
    try {
      const r = decodeHeader(await readAt(spare, l.headerOffsets[k], HEADER_BYTES));
      if (!r.ok) {
        c.failedCheck = r.failedCheck;
        continue;
      }
      const h = r.header;
      scan.maxSequence = Math.max(scan.maxSequence, h.sequence);
      if (!h.setupUuid.equals(ref.setupUuid)) {
        c.failedCheck = 'setup';
        continue;
      }
      if (h.copyIndex !== k || !sameLayout(h, ref) || h.checkpointChunks * CHUNK_BYTES > l.checkpointSlotBytes) {
        c.failedCheck = 'layout';
        continue;
      }
      c.header = h;
      c.sequence = h.sequence;
      c.timestamp = h.timestamp;
      const bad = await streamCheckpoint(spare, checkpointOffset(l, k, h.activeSlot), h, scan.buffers);
      if (bad) {
        c.failedCheck = bad;
        continue;
      }
      const j = await readJournal(spare, journalOffset(l, k), l.journalBytes, h, l.frameAlign, scan.buffers);
      c.journal = { frames: j.frames, end: j.end, opCount: j.opCount };
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
      if (
        c.sequence !== best.sequence ||
        c.timestamp !== best.timestamp ||
        c.header!.sequence !== best.header!.sequence ||
        c.journal!.end !== best.journal!.end
      )
        c.stale = true;
    }
  }
}

export function needsRepair(scan: SpareScan): boolean {
  return scan.copies.some((c) => !c.valid || c.stale);
}
