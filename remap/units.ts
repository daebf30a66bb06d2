/**
 * Units of the remap layer. Byte offsets address the exported device (which is the main device's
 * address space); block numbers count remap blocks of `blockSize` bytes. The two never mix: convert
 * with these helpers.
 */

/** A byte offset on the exported (= main) device. */
export type ByteOffset = number;
/** A count of bytes. */
export type ByteLength = number;
/** Index of a remap block on the main device: bytes [n*blockSize, (n+1)*blockSize). */
export type MainBlock = number;
/** Index of a block on the spare device: bytes [n*blockSize, (n+1)*blockSize) of the spare. */
export type SpareBlock = number;

export function blockOf(offset: ByteOffset, blockSize: ByteLength): MainBlock {
  return Math.floor(offset / blockSize);
}

export function blockStart(block: MainBlock | SpareBlock, blockSize: ByteLength): ByteOffset {
  return block * blockSize;
}

/** First byte after the block (not clipped to the device). */
export function blockEnd(block: MainBlock | SpareBlock, blockSize: ByteLength): ByteOffset {
  return (block + 1) * blockSize;
}

/** First and last block touched by [offset, offset+length). length > 0. */
export function blockSpan(offset: ByteOffset, length: ByteLength, blockSize: ByteLength): [MainBlock, MainBlock] {
  return [Math.floor(offset / blockSize), Math.floor((offset + length - 1) / blockSize)];
}

/** Bytes of block `block` that exist on a device of `deviceSize` bytes (the last block may be short). */
export function blockLength(block: MainBlock, blockSize: ByteLength, deviceSize: ByteLength): ByteLength {
  return Math.min(blockSize, deviceSize - block * blockSize);
}

/** The part of [offset, offset+length) that lies in block `block`: [start, stop). */
export function clipToBlock(block: MainBlock, blockSize: ByteLength, offset: ByteOffset, length: ByteLength): [ByteOffset, ByteOffset] {
  return [Math.max(offset, block * blockSize), Math.min(offset + length, (block + 1) * blockSize)];
}

/** Where byte `offset` of main block `block` lives on the spare when the block is remapped to `spare`. */
export function spareOffsetOf(spare: SpareBlock, block: MainBlock, offset: ByteOffset, blockSize: ByteLength): ByteOffset {
  return spare * blockSize + (offset - block * blockSize);
}

/** True when [offset, offset+length) covers all `len` bytes of the block starting at `start`. */
export function coversBlock(offset: ByteOffset, length: ByteLength, start: ByteOffset, len: ByteLength): boolean {
  return start >= offset && start + len <= offset + length;
}

/** Parse "OFFSET[+LENGTH]" with optional K/M/G/T suffixes (powers of 1024). */
export function parseRange(text: string): { offset: ByteOffset; length: ByteLength } {
  const m = /^\s*([0-9]+[kmgtKMGT]?i?[bB]?)\s*(?:\+\s*([0-9]+[kmgtKMGT]?i?[bB]?))?\s*$/.exec(text);
  if (!m) throw new Error(`'${text}' is not OFFSET[+LENGTH] (e.g. 1048576+4096 or 1M+4K)`);
  const offset = parseSize(m[1]);
  const length = m[2] !== undefined ? parseSize(m[2]) : 1;
  if (length <= 0) throw new Error(`'${text}': length must be positive`);
  return { offset, length };
}

const SUFFIX: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** Parse a size like 4096, 4K, 512M, 1GiB. */
export function parseSize(text: string): ByteLength {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*$/.exec(text);
  if (!m) throw new Error(`'${text}' is not a size (e.g. 4096, 4K, 512M, 1G)`);
  const v = Number(m[1]) * SUFFIX[m[2].toLowerCase()];
  if (!Number.isSafeInteger(Math.round(v))) throw new Error(`'${text}' is too large`);
  return Math.round(v);
}
