/**
 * Spare block allocation. Derived at load from the table: blocks inside metadata regions and blocks
 * of committed remaps are taken; everything else is free. allocate() reserves a block in memory (it is
 * never handed out twice, committed or not); a reservation that is never committed is forgotten at restart.
 */
import { spareBlock, type SpareBlock } from '../units';
import { isMetadataBlock, type Layout } from './layout';

class Bits {
  readonly words: Uint32Array;
  constructor(readonly size: number) {
    this.words = new Uint32Array(Math.ceil(size / 32));
  }
  get(i: number): boolean {
    return (this.words[i >>> 5] & (1 << (i & 31))) !== 0;
  }
  set(i: number): void {
    this.words[i >>> 5] |= 1 << (i & 31);
  }
  clear(i: number): void {
    this.words[i >>> 5] &= ~(1 << (i & 31));
  }
}

export class SpareAllocator {
  private readonly used: Bits;
  private readonly committed: Bits;
  private readonly meta: Bits;
  private cursor = 0;
  private freeCount: number;

  constructor(private readonly layout: Layout) {
    const n = layout.totalBlocks;
    this.used = new Bits(n);
    this.committed = new Bits(n);
    this.meta = new Bits(n);
    for (const r of layout.regionOffsets) {
      const first = Math.floor(r / layout.blockSize);
      const last = Math.min(n, Math.ceil((r + layout.regionBytes) / layout.blockSize));
      for (let b = first; b < last; b++) {
        this.meta.set(b);
        this.used.set(b);
      }
    }
    this.freeCount = layout.spareDataBlocks;
  }

  get free(): number {
    return this.freeCount;
  }

  isDataBlock(b: number): boolean {
    return Number.isSafeInteger(b) && b >= 0 && b < this.layout.totalBlocks && !this.meta.get(b);
  }
  isCommitted(b: number): boolean {
    return this.committed.get(b);
  }
  isReserved(b: number): boolean {
    return this.used.get(b) && !this.committed.get(b) && !this.meta.get(b);
  }

  /** Mark a block as holding a committed remap (load or commit). Returns false if it already was. */
  markCommitted(b: number): boolean {
    if (this.committed.get(b)) return false;
    if (!this.used.get(b)) this.freeCount--;
    this.used.set(b);
    this.committed.set(b);
    return true;
  }

  allocate(): SpareBlock | undefined {
    if (this.freeCount === 0) return undefined;
    const n = this.layout.totalBlocks;
    for (let i = 0; i < n; i++) {
      const b = this.cursor;
      this.cursor = this.cursor + 1 === n ? 0 : this.cursor + 1;
      if (!this.used.get(b)) {
        this.used.set(b);
        this.freeCount--;
        return spareBlock(b);
      }
    }
    return undefined;
  }

  /** Release a reservation or (after a durable remove) a committed block. */
  release(b: SpareBlock): void {
    if (!this.isDataBlock(b) || !this.used.get(b)) return;
    this.used.clear(b);
    this.committed.clear(b);
    this.freeCount++;
  }
}

export { isMetadataBlock };
