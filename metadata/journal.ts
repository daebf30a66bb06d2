/**
 * Journal frames (docs/FORMAT.md §6). One frame per group-commit round, appended at the journal tail of
 * every copy and padded to the spare's logical sector size. A frame belongs to the epoch of the header
 * that started the journal (the header's sequence), carries the next sequence number, and has its own CRC.
 * Replay stops at the first frame that is missing, torn, from another epoch/setup, or out of sequence.
 */
import { crc32 } from './crc';
import { readU64, writeU64 } from './codec';
import { alignUp } from './layout';
import { encodeOp, OP_BYTES, type Op } from './table';

export const FRAME_MAGIC = 0x464a4d52; // "RMJF" little-endian
export const FRAME_HEADER_BYTES = 48;

export function frameBytesFor(opCount: number, frameAlign: number): number {
  return alignUp(FRAME_HEADER_BYTES + opCount * OP_BYTES, frameAlign);
}

export function encodeFrame(ops: Op[], epoch: number, sequence: number, timestamp: number, setupTag: Buffer, frameAlign: number): Buffer {
  const size = frameBytesFor(ops.length, frameAlign);
  const b = Buffer.alloc(size);
  b.writeUInt32LE(FRAME_MAGIC, 0);
  b.writeUInt32LE(ops.length, 4);
  writeU64(b, 8, epoch);
  writeU64(b, 16, sequence);
  writeU64(b, 24, timestamp);
  setupTag.copy(b, 32, 0, 8);
  b.writeUInt32LE(size, 40);
  for (let i = 0; i < ops.length; i++) encodeOp(b, FRAME_HEADER_BYTES + i * OP_BYTES, ops[i]);
  b.writeUInt32LE(frameCrc(b, ops.length), 44);
  return b;
}

function frameCrc(b: Buffer, opCount: number, base = 0): number {
  const head = crc32(b.subarray(base, base + 44));
  return crc32(b.subarray(base + FRAME_HEADER_BYTES, base + FRAME_HEADER_BYTES + opCount * OP_BYTES), head);
}

/**
 * One valid frame of a scanned journal. Its ops stay in the scanned buffer (`JournalScan.buf`, at
 * `opsOffset`, `count` ops of OP_BYTES each) and are applied from there (table.ts applyOpAt): a journal
 * of 100,000s of ops is never turned into objects.
 */
export interface Frame {
  sequence: number;
  timestamp: number;
  opsOffset: number;
  count: number;
}
export interface JournalScan {
  frames: Frame[];
  end: number;
  /** The bytes the frames point into (only their first `end` bytes matter). */
  buf: Buffer;
  /** Total number of ops in the frames. */
  opCount: number;
  /** The chain reached the end of `buf` (the next frame may lie beyond it): scan a longer piece. */
  truncated?: boolean;
}

/** Read the valid frame chain of one copy's journal area. */
export function scanJournal(buf: Buffer, epoch: number, setupTag: Buffer, frameAlign: number): JournalScan {
  const frames: Frame[] = [];
  let pos = 0;
  let expect = epoch + 1;
  let truncated = false;
  let opCount = 0;
  for (;;) {
    if (pos + FRAME_HEADER_BYTES > buf.length) {
      truncated = true;
      break;
    }
    if (buf.readUInt32LE(pos) !== FRAME_MAGIC) break;
    const count = buf.readUInt32LE(pos + 4);
    const size = buf.readUInt32LE(pos + 40);
    if (size !== frameBytesFor(count, frameAlign)) break;
    if (pos + size > buf.length) {
      truncated = true;
      break;
    }
    if (readU64(buf, pos + 8) !== epoch || readU64(buf, pos + 16) !== expect) break;
    if (!buf.subarray(pos + 32, pos + 40).equals(setupTag.subarray(0, 8))) break;
    if (frameCrc(buf, count, pos) !== buf.readUInt32LE(pos + 44)) break;
    frames.push({ sequence: expect, timestamp: readU64(buf, pos + 24), opsOffset: pos + FRAME_HEADER_BYTES, count });
    opCount += count;
    expect++;
    pos += size;
  }
  const out: JournalScan = { frames, end: pos, buf, opCount };
  if (truncated) out.truncated = true;
  return out;
}
