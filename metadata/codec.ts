/** Little-endian integer helpers for fields that hold non-negative safe integers (< 2^53). */

export function writeU64(buf: Buffer, off: number, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`u64 field value ${v} out of range`);
  buf.writeUInt32LE(v % 0x100000000, off);
  buf.writeUInt32LE(Math.floor(v / 0x100000000), off + 4);
}

export function readU64(buf: Buffer, off: number): number {
  const lo = buf.readUInt32LE(off);
  const hi = buf.readUInt32LE(off + 4);
  if (hi > 0x1fffff) return Number.NaN; // beyond 2^53: never written by us
  return hi * 0x100000000 + lo;
}

export function writeText(buf: Buffer, off: number, len: number, s: string | undefined): void {
  buf.fill(0, off, off + len);
  if (s) {
    const b = Buffer.from(s, 'utf8');
    if (b.length > len) throw new RangeError(`text field longer than ${len} bytes: ${s}`);
    b.copy(buf, off);
  }
}

export function readText(buf: Buffer, off: number, len: number): string | undefined {
  const slice = buf.subarray(off, off + len);
  const end = slice.indexOf(0);
  const s = slice.subarray(0, end < 0 ? len : end).toString('utf8');
  return s.length ? s : undefined;
}
