/**
 * The engine's view of the remap table: which main blocks live on the spare, why, and which main blocks
 * are pending (unreadable: the next write remaps them).
 *
 * It holds no copy of the table. Everything is read from the metadata store's compact in-memory table
 * (metadata/remap-index.ts), which changes only when a commit is durable, immediately before that commit
 * resolves. That is exactly the moment the engine may switch a block, so a block routes to the spare only
 * once its remap is on disk, and back to main only once its removal is. There is nothing to build at start
 * (1,000,000 remaps used to cost two more Maps and several seconds) and no second copy to keep in sync.
 *
 * So there is nothing to add, remove or mark here: a commit that resolved has already changed what this view
 * shows (remap/mover.ts is the only code that commits such changes).
 */
import type { RemapEntry, RemapReason } from '../metadata/types';
import type { MainBlock, SpareBlock } from '../units';

/** What the table needs from the metadata store (MetadataStore implements it). */
export interface RemapSource {
  readonly remapCount: number;
  readonly pendingCount: number;
  /** Spare block of `mainBlock`, or -1. */
  spareBlockOf(mainBlock: MainBlock): SpareBlock | -1;
  reasonOf(mainBlock: MainBlock): RemapReason | undefined;
  isPending(mainBlock: MainBlock): boolean;
  reasonCounts(): Record<string, number>;
  entries(): IterableIterator<RemapEntry>;
  pending(): IterableIterator<MainBlock>;
}

export class RemapTable {
  private constructor(private readonly src: RemapSource) {}

  /** A view of the store's table (O(1): nothing is copied). */
  static from(store: RemapSource): RemapTable {
    return new RemapTable(store);
  }

  get size(): number {
    return this.src.remapCount;
  }

  get pendingCount(): number {
    return this.src.pendingCount;
  }

  /** True when nothing is remapped or pending: the I/O path can skip all lookups. */
  get isEmpty(): boolean {
    return this.src.remapCount === 0 && this.src.pendingCount === 0;
  }

  lookup(block: MainBlock): SpareBlock | undefined {
    const s = this.src.spareBlockOf(block);
    return s === -1 ? undefined : s;
  }

  reason(block: MainBlock): RemapReason | undefined {
    return this.src.reasonOf(block);
  }

  isPending(block: MainBlock): boolean {
    return this.src.isPending(block);
  }

  pending(): IterableIterator<MainBlock> {
    return this.src.pending();
  }

  /** All remaps sorted by main block (built on demand: status/control commands, not the I/O path). */
  entries(): { mainBlock: MainBlock; spareBlock: SpareBlock; reason: RemapReason }[] {
    const out: { mainBlock: MainBlock; spareBlock: SpareBlock; reason: RemapReason }[] = [];
    for (const e of this.src.entries()) out.push({ mainBlock: e.mainBlock, spareBlock: e.spareBlock, reason: e.reason });
    out.sort((a, b) => a.mainBlock - b.mainBlock);
    return out;
  }

  countsByReason(): Record<string, number> {
    return this.src.reasonCounts();
  }
}
