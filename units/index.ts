/**
 * Units shared by every layer: byte offsets and block numbers. Byte offsets address a device (the
 * exported device is main's address space; the spare has its own); block numbers count remap blocks
 * of `blockSize` bytes on main (MainBlock) or on the spare (SpareBlock).
 *
 * The three are branded numbers: a MainBlock is not a SpareBlock, neither is a ByteOffset, and the
 * result of arithmetic is a plain `number` that must go through one of the conversions below before
 * it is used as one of them again. The brand exists only for the compiler: at run time each is a
 * plain number and every conversion here is an identity or one multiplication, so hot paths pay
 * nothing. These functions are the only places that make branded values (eslint forbids
 * `as ByteOffset` and friends elsewhere); test/unit/units-brand.test.ts proves mixing fails to
 * compile.
 *
 * This module imports nothing, so storage/ (the bottom layer), protocol/, metadata/, remap/,
 * health/ and daemon/ can all use it.
 */

declare const unit: unique symbol;

/** A byte offset on one device (the exported device = main, or the spare). */
export type ByteOffset = number & { readonly [unit]: 'ByteOffset' };
/** A count of bytes (plain number: buffer lengths and sizes are counts). */
export type ByteLength = number;
/** Index of a remap block on the main device: bytes [n*blockSize, (n+1)*blockSize). */
export type MainBlock = number & { readonly [unit]: 'MainBlock' };
/** Index of a block on the spare device: bytes [n*blockSize, (n+1)*blockSize) of the spare. */
export type SpareBlock = number & { readonly [unit]: 'SpareBlock' };

/** A number from outside (the wire, a CLI argument, a stored record) or from arithmetic, taken as a byte offset. */
export function byteOffset(n: number): ByteOffset {
  return n as ByteOffset;
}

/** A number taken as a main block number (a stored record, a count, a loop bound). */
export function mainBlock(n: number): MainBlock {
  return n as MainBlock;
}

/** A number taken as a spare block number (a stored record, the allocator's counter). */
export function spareBlock(n: number): SpareBlock {
  return n as SpareBlock;
}

/** `offset + length`: the byte offset `length` bytes after `offset`. */
export function addBytes(offset: ByteOffset, length: ByteLength): ByteOffset {
  return (offset + length) as ByteOffset;
}

/** The main block that holds byte `offset`. */
export function blockOf(offset: ByteOffset, blockSize: ByteLength): MainBlock {
  return Math.floor(offset / blockSize) as MainBlock;
}

/** First byte of the block (on main for a MainBlock, on the spare for a SpareBlock). */
export function blockStart(block: MainBlock | SpareBlock, blockSize: ByteLength): ByteOffset {
  return (block * blockSize) as ByteOffset;
}

/** First byte after the block (not clipped to the device). */
export function blockEnd(block: MainBlock | SpareBlock, blockSize: ByteLength): ByteOffset {
  return ((block + 1) * blockSize) as ByteOffset;
}

/** First and last block touched by [offset, offset+length). length > 0. */
export function blockSpan(offset: ByteOffset, length: ByteLength, blockSize: ByteLength): [MainBlock, MainBlock] {
  return [Math.floor(offset / blockSize) as MainBlock, Math.floor((offset + length - 1) / blockSize) as MainBlock];
}

/** Bytes of block `block` that exist on a device of `deviceSize` bytes (the last block may be short). */
export function blockLength(block: MainBlock, blockSize: ByteLength, deviceSize: ByteLength): ByteLength {
  return Math.min(blockSize, deviceSize - block * blockSize);
}

/** The part of [offset, offset+length) that lies in block `block`: [start, stop). */
export function clipToBlock(block: MainBlock, blockSize: ByteLength, offset: ByteOffset, length: ByteLength): [ByteOffset, ByteOffset] {
  return [Math.max(offset, block * blockSize) as ByteOffset, Math.min(offset + length, (block + 1) * blockSize) as ByteOffset];
}

/** Where byte `offset` of main block `block` lives on the spare when the block is remapped to `spare`. */
export function spareOffsetOf(spare: SpareBlock, block: MainBlock, offset: ByteOffset, blockSize: ByteLength): ByteOffset {
  return (spare * blockSize + (offset - block * blockSize)) as ByteOffset;
}

/** True when [offset, offset+length) covers all `len` bytes of the block starting at `start`. */
export function coversBlock(offset: ByteOffset, length: ByteLength, start: ByteOffset, len: ByteLength): boolean {
  return start >= offset && start + len <= offset + length;
}
