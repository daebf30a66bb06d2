/**
 * Memory that an abandoned I/O may still touch. When an op misses its deadline the caller gets
 * ETIMEDOUT at once, but the kernel can still be reading into (or writing from) the caller's buffer
 * whenever the device wakes up. Recycling such a buffer for another request could hand that request
 * the late bytes, so buffer pools ask isHeldByStuckIo() before reusing one (daemon/ injects it into
 * protocol/buffer-pool.ts). The memory itself stays alive: the addon holds a reference until the
 * thread comes back.
 */

const held = new Map<ArrayBufferLike, number>();

/** Marks the memory of these buffers as still in use by a stuck I/O. */
export function holdBuffers(bufs: readonly Buffer[]): void {
  for (const b of bufs) held.set(b.buffer, (held.get(b.buffer) ?? 0) + 1);
}

/** The stuck I/O came back: the buffers are free again. */
export function releaseBuffers(bufs: readonly Buffer[]): void {
  for (const b of bufs) {
    const n = (held.get(b.buffer) ?? 0) - 1;
    if (n > 0) held.set(b.buffer, n);
    else held.delete(b.buffer);
  }
}

/** True while a stuck I/O may still read or write this buffer's memory. */
export function isHeldByStuckIo(buf: Uint8Array): boolean {
  return held.size > 0 && held.has(buf.buffer);
}
