/**
 * Reusable large buffers for READ replies and WRITE payloads. A fresh 1 MiB Buffer per request costs
 * page faults and garbage collection; recycling a few slabs of each power-of-two size avoids both.
 * Small requests (< MIN_POOLED) use plain allocations, except with an aligned allocator (below).
 *
 * Alignment for direct I/O: the daemon may give the pool an allocator of page-aligned slabs
 * (configure()). A lease then *ends* on a page boundary, so whatever sits at the tail of the buffer
 * (the payload, after a reply header or at offset 0 of a WRITE payload) is page-aligned whenever its
 * length is a multiple of 4 KiB, and reaches an O_DIRECT disk without a bounce copy. `mayReuse` lets
 * the daemon keep a slab out of the pool while an abandoned I/O may still touch it. The pool itself
 * knows nothing of storage: both are injected. With an aligned allocator small requests are pooled
 * too: a fresh ArrayBuffer for every 4 KiB READ reply cost an allocation, a bounce copy on the way to
 * the disk and, at tens of thousands per second, frequent full garbage collections (external memory).
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

/** What the daemon can plug into the pool (see the header comment). */
export interface PoolHooks {
  /** Allocates a slab on page-aligned memory. */
  readonly allocate?: (size: number) => Buffer;
  /** False while the slab must not be handed out again. */
  readonly mayReuse?: (slab: Buffer) => boolean;
}

const PAGE = 4096;

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private retained = 0;
  private allocate: ((size: number) => Buffer) | undefined;
  private mayReuse: ((slab: Buffer) => boolean) | undefined;

  /** @param maxRetainedBytes slabs kept for reuse beyond this are dropped to the GC. */
  constructor(private readonly maxRetainedBytes = 128 * 1024 * 1024) {}

  /** Sets the aligned allocator and the reuse check. Slabs allocated before are dropped. */
  configure(hooks: PoolHooks): void {
    this.allocate = hooks.allocate;
    this.mayReuse = hooks.mayReuse;
    this.free.clear();
    this.retained = 0;
  }

  acquire(length: number): Lease {
    const aligned = this.allocate !== undefined;
    if (length < MIN_POOLED && !aligned) return { buf: Buffer.allocUnsafe(length), release: NO_RELEASE };
    const span = aligned ? Math.ceil(length / PAGE) * PAGE : length;
    const size = 2 ** Math.ceil(Math.log2(span));
    const list = this.free.get(size);
    let slab = list?.pop();
    if (slab) this.retained -= size;
    else slab = aligned ? this.allocate!(size) : Buffer.allocUnsafeSlow(size);
    let released = false;
    const s = slab;
    const start = span - length; // the lease ends on a page boundary when aligned
    return {
      buf: s.subarray(start, start + length),
      release: () => {
        if (released) return;
        released = true;
        if (this.retained + size > this.maxRetainedBytes) return;
        if (this.mayReuse && !this.mayReuse(s)) return;
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
