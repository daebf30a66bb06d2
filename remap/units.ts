/**
 * Sizes and ranges given as text (CLI options, control commands), parsed into byte counts and
 * ByteOffsets. The units themselves live in units/ and are re-exported here only for code that still
 * imports them from remap/units; import them from units/ (a re-export compiles to property getters,
 * which the I/O path should not pay for).
 */
import { byteOffset, type ByteLength, type ByteOffset } from '../units';

export * from '../units';

/** Parse "OFFSET[+LENGTH]" with optional K/M/G/T suffixes (powers of 1024). */
export function parseRange(text: string): { offset: ByteOffset; length: ByteLength } {
  const m = /^\s*([0-9]+[kmgtKMGT]?i?[bB]?)\s*(?:\+\s*([0-9]+[kmgtKMGT]?i?[bB]?))?\s*$/.exec(text);
  if (!m) throw new Error(`'${text}' is not OFFSET[+LENGTH] (e.g. 1048576+4096 or 1M+4K)`);
  const offset = parseSize(m[1]);
  const length = m[2] !== undefined ? parseSize(m[2]) : 1;
  if (length <= 0) throw new Error(`'${text}': length must be positive`);
  return { offset: byteOffset(offset), length };
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
