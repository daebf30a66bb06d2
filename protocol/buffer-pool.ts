/**
 * Reusable large buffers for READ replies and WRITE payloads. A fresh 1 MiB Buffer per request costs
 * page faults and garbage collection; recycling a few slabs of each power-of-two size avoids both.
 * Small requests (< MIN_POOLED) use plain allocations.
 */

export const MIN_POOLED = 64 * 1024;

export interface Lease {
  /** Exactly the requested length. */
  readonly buf: Buffer;
  /** Return the slab; the lease must not be used afterwards. Calling it twice is harmless. */
  release(): void;
}

const NO_RELEASE = (): void => undefined;

/** True when the lease holds a pooled slab (its release() matters); false for small plain buffers. */
export function isPooled(lease: Lease): boolean {
  return lease.release !== NO_RELEASE;
}

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private retained = 0;

  /** @param maxRetainedBytes slabs kept for reuse beyond this are dropped to the GC. */
  constructor(private readonly maxRetainedBytes = 128 * 1024 * 1024) {}

  acquire(length: number): Lease {
    if (length < MIN_POOLED) return { buf: Buffer.allocUnsafe(length), release: NO_RELEASE };
    const size = 2 ** Math.ceil(Math.log2(length));
    const list = this.free.get(size);
    let slab = list?.pop();
    if (slab) this.retained -= size;
    else slab = Buffer.allocUnsafeSlow(size);
    let released = false;
    const s = slab;
    return {
      buf: s.subarray(0, length),
      release: () => {
        if (released) return;
        released = true;
        if (this.retained + size > this.maxRetainedBytes) return;
        this.retained += size;
        let l = this.free.get(size);
        if (!l) this.free.set(size, (l = []));
        l.push(s);
      },
    };
  }

  get retainedBytes(): number {
    return this.retained;
  }
}

/** One pool per process: every connection shares it. */
export const sharedPool = new BufferPool();
