/**
 * The in-memory remap table: which main blocks live on the spare, why, and which main blocks are
 * pending (unreadable: the next write remaps them). The durable copy is the metadata store; this is
 * the lookup structure of the I/O path, rebuilt from the store at start.
 */
import type { RemapEntry, RemapReason } from '../metadata/types';
import type { MainBlock, SpareBlock } from './units';

export class RemapTable {
  private readonly spareOf = new Map<MainBlock, SpareBlock>();
  private readonly reasonOf = new Map<MainBlock, RemapReason>();
  private readonly pendingBlocks = new Set<MainBlock>();
  private readonly byReason = new Map<RemapReason, number>();

  static from(entries: Iterable<RemapEntry>, pending: Iterable<MainBlock>): RemapTable {
    const t = new RemapTable();
    for (const e of entries) t.add(e.mainBlock, e.spareBlock, e.reason);
    for (const b of pending) t.pendingBlocks.add(b);
    return t;
  }

  get size(): number {
    return this.spareOf.size;
  }

  get pendingCount(): number {
    return this.pendingBlocks.size;
  }

  /** True when nothing is remapped or pending: the I/O path can skip all lookups. */
  get isEmpty(): boolean {
    return this.spareOf.size === 0 && this.pendingBlocks.size === 0;
  }

  lookup(block: MainBlock): SpareBlock | undefined {
    return this.spareOf.get(block);
  }

  reason(block: MainBlock): RemapReason | undefined {
    return this.reasonOf.get(block);
  }

  isPending(block: MainBlock): boolean {
    return this.pendingBlocks.has(block);
  }

  add(block: MainBlock, spare: SpareBlock, reason: RemapReason): void {
    const old = this.reasonOf.get(block);
    if (old !== undefined) this.byReason.set(old, (this.byReason.get(old) ?? 1) - 1);
    this.spareOf.set(block, spare);
    this.reasonOf.set(block, reason);
    this.byReason.set(reason, (this.byReason.get(reason) ?? 0) + 1);
    this.pendingBlocks.delete(block);
  }

  remove(block: MainBlock): SpareBlock | undefined {
    const spare = this.spareOf.get(block);
    if (spare === undefined) return undefined;
    const reason = this.reasonOf.get(block)!;
    this.byReason.set(reason, (this.byReason.get(reason) ?? 1) - 1);
    this.spareOf.delete(block);
    this.reasonOf.delete(block);
    return spare;
  }

  markPending(block: MainBlock): void {
    this.pendingBlocks.add(block);
  }

  clearPending(block: MainBlock): void {
    this.pendingBlocks.delete(block);
  }

  pending(): IterableIterator<MainBlock> {
    return this.pendingBlocks.values();
  }

  entries(): { mainBlock: MainBlock; spareBlock: SpareBlock; reason: RemapReason }[] {
    const out: { mainBlock: MainBlock; spareBlock: SpareBlock; reason: RemapReason }[] = [];
    for (const [mainBlock, spareBlock] of this.spareOf) out.push({ mainBlock, spareBlock, reason: this.reasonOf.get(mainBlock)! });
    out.sort((a, b) => a.mainBlock - b.mainBlock);
    return out;
  }

  countsByReason(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [r, n] of this.byReason) if (n > 0) out[r] = n;
    return out;
  }
}
