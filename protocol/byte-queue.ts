/**
 * A FIFO of received bytes. Chunks are kept as they arrived; take() returns a view into a chunk when
 * the bytes are contiguous and copies only when a message straddles chunks. discard() drops bytes that
 * have not arrived yet (used to skip payloads we refuse to buffer).
 */
import { sharedPool, type Lease } from './buffer-pool';

export class ByteQueue {
  private chunks: Buffer[] = [];
  /** Read position inside chunks[0]. */
  private head = 0;
  private total = 0;
  private toDiscard = 0;

  get length(): number {
    return this.total;
  }

  /** Bytes still to be skipped as they arrive. */
  get discarding(): number {
    return this.toDiscard;
  }

  push(chunk: Buffer): void {
    if (this.toDiscard > 0) {
      if (chunk.length <= this.toDiscard) {
        this.toDiscard -= chunk.length;
        return;
      }
      chunk = chunk.subarray(this.toDiscard);
      this.toDiscard = 0;
    }
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /** Drop the next n bytes, including ones that have not arrived yet. */
  discard(n: number): void {
    const now = Math.min(n, this.total);
    this.consume(now);
    this.toDiscard += n - now;
  }

  /** Read a big-endian u32 at position `at` without consuming. Caller ensures at+4 <= length. */
  peekUInt32(at: number): number {
    const first = this.chunks[0];
    const pos = this.head + at;
    if (pos + 4 <= first.length) return first.readUInt32BE(pos);
    return this.copyOut(at, 4).readUInt32BE(0);
  }

  /** Remove and return the next n bytes (caller ensures n <= length). */
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0];
    if (this.head + n <= first.length) {
      const out = first.subarray(this.head, this.head + n);
      this.consume(n);
      return out;
    }
    const out = this.copyOut(0, n);
    this.consume(n);
    return out;
  }

  /**
   * Like take(), but a straddling message is copied into a pooled buffer; the caller releases the
   * lease once it is done with the bytes (a contiguous view needs no release).
   */
  takeLease(n: number): Lease {
    const first = this.chunks[0];
    if (n === 0 || this.head + n <= first.length) return { buf: this.take(n), release: () => undefined };
    const lease = sharedPool.acquire(n);
    this.copyOut(0, n, lease.buf);
    this.consume(n);
    return lease;
  }

  /** Move the next n bytes (caller ensures n <= length) into `into` at `at`. */
  takeInto(n: number, into: Buffer, at: number): void {
    if (n === 0) return;
    this.copyOut(0, n, at === 0 ? into : into.subarray(at));
    this.consume(n);
  }

  private copyOut(at: number, n: number, into?: Buffer): Buffer {
    const out = into ?? Buffer.allocUnsafe(n);
    let written = 0;
    let skip = at;
    let pos = this.head;
    for (const c of this.chunks) {
      let start = pos;
      pos = 0;
      if (skip >= c.length - start) {
        skip -= c.length - start;
        continue;
      }
      start += skip;
      skip = 0;
      const count = Math.min(c.length - start, n - written);
      c.copy(out, written, start, start + count);
      written += count;
      if (written === n) break;
    }
    return out;
  }

  private consume(n: number): void {
    this.total -= n;
    while (n > 0) {
      const first = this.chunks[0];
      const avail = first.length - this.head;
      if (n < avail) {
        this.head += n;
        return;
      }
      n -= avail;
      this.chunks.shift();
      this.head = 0;
    }
  }
}
