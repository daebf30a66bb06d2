/**
 * MetadataStore: the crash-safe, redundant remap metadata on the spare device (docs/FORMAT.md).
 *
 * API
 *   MetadataStore.create(spare, main, { blockSize = 4096, force, journalBytes }) -> store
 *       Writes a fresh setup. Refuses (NOT_EMPTY) when the spare holds remapd headers or non-zero bytes in
 *       the metadata regions, unless force.
 *   MetadataStore.open(spare, main?) -> store
 *       Reads and verifies all 5 copies, chooses one (highest sequence, then newest timestamp, then lowest
 *       index), checks the pairing with `main` (FINGERPRINT_MISMATCH), refuses NEWER_VERSION and
 *       NO_VALID_COPY without writing anything, and repairs damaged or stale copies by a checkpoint.
 *   MetadataStore.inspect(spare, { repair?, main? }) -> CheckReport (for `remapd check`).
 *   store.entries(), pending(), lookup(mainBlock), isPending(mainBlock), scanState()
 *   store.spareBlockOf(mainBlock) -> spare block or -1 (allocation-free; the I/O path's lookup),
 *       reasonOf(mainBlock), reasonCounts(). The table is compact (metadata/remap-index.ts): entries() and
 *       lookup() build RemapEntry objects on demand.
 *   The in-memory table changes only when a commit's round is durable (journal frame or checkpoint synced),
 *       immediately before that commit resolves; the engine routes I/O by it (remap/remap-table.ts).
 *   store.allocateSpareBlock() -> a spare block number (offset = block * blockSize), reserved in memory so it
 *       is never handed out twice; releaseSpareBlock(b) gives back a reservation that will not be committed.
 *   store.commit(change) -> resolves once the change is on disk in every writable copy (fdatasync done).
 *       Changes queued while a round is in flight are written together in the next round (group commit).
 *       Spare blocks of removed/replaced remaps become allocatable only after the change is durable.
 *   store.saveScanState(s), store.checkpoint(), store.close()
 *   Repairs: a checkpoint that rewrites copies found damaged or stale (at open, at reload, or after a copy
 *       write failed) counts in store.repairs and calls store.onRepaired(copies); open()'s own repair, made
 *       before anyone could subscribe, is kept in store.repairedAtOpen.
 *   store.claim(owner): write the owner marker into every header (a checkpoint); call it right after open,
 *       before any commit, while holding the setup's lock (daemon/owner-lock.ts). readOwner(spare) reads it.
 * Errors are MetadataError with a code (see types.ts). After a failed metadata write the store refuses
 * further commits (FAILED; hasFailed is true): the disk may hold a half-written round. store.reload()
 * reads the spare again exactly as open() does (the disk is the truth), replaces the in-memory table,
 * writes a checkpoint (a fresh journal epoch, past anything half-written) and accepts commits again.
 * This file holds the state and the commit path; loading (open/reload/inspect, readOwner) is in
 * metadata/loader.ts, the header and checkpoint writes in metadata/writer.ts.
 */
import { addBytes, blockStart, mainBlock, spareBlock, type ByteOffset, type MainBlock, type SpareBlock } from '../units';
import type { Backend } from '../storage/backend';
import { SpareAllocator } from './allocator';
import { findHeaders, needsRepair, scanSpare, type SpareScan } from './copies';
import { identityFromHeader } from './fingerprint';
import { HEADER_BYTES, uuidToString, type Header, type OwnerMarker } from './header';
import { encodeFrame } from './journal';
import { computeLayout, COPIES, journalOffset, LayoutError, validateBlockSize, type Layout } from './layout';
import { inspectSpare, loadBest } from './loader';
import { applyOp, emptyState, OP_ADD, opsForChange, type Op, type TableState } from './table';
import {
  MetadataError,
  REMAP_REASONS,
  type CheckReport,
  type MainIdentity,
  type MetadataChange,
  type RemapEntry,
  type RemapReason,
  type ScanState,
} from './types';
import { assertEmpty, freshHeader, writeCheckpoint, writeHeaders } from './writer';

export * from './types';
export { readOwner } from './loader';

export interface StoreOptions {
  /** Clock in ms (tests pass a fixed clock for golden files). */
  now?: () => number;
}

export interface CreateOptions extends StoreOptions {
  blockSize?: number;
  force?: boolean;
  /** Journal area per copy, multiple of 64 KiB (default: spare/1024 clamped to 1..8 MiB). */
  journalBytes?: number;
  /** Fixed setup UUID (tests); random otherwise. */
  setupUuid?: string;
}

interface Queued {
  ops: Op[];
  spares: number[];
  resolve: () => void;
  reject: (e: Error) => void;
}

const REPAIR_RETRY_MS = 60_000;

export class MetadataStore {
  private state: TableState;
  private seq: number;
  private epoch: number;
  private activeSlot: number;
  private journalPos: number;
  private queue: Queued[] = [];
  private inFlight: Promise<void> | null = null;
  private queuedSpares = new Set<number>();
  private queuedAdds = 0;
  private failed: Error | null = null;
  private reloading = false;
  private closed = false;
  private repairWanted = false;
  private lastRepairAttempt = 0;
  private readonly now: () => number;
  /** Number of write rounds (journal appends + checkpoints) so far; for tests and metrics. */
  rounds = 0;
  checkpoints = 0;
  /** Checkpoints that rewrote copies found damaged or stale (at open, reload, or after a failed copy write). */
  repairs = 0;
  /** Copies repaired by open()'s checkpoint (undefined: none), for whoever subscribes after open. */
  repairedAtOpen: number | undefined;
  /** Called after a checkpoint repaired `copies` damaged or stale copies (not for open()'s repair: see repairedAtOpen). */
  onRepaired: ((copies: number) => void) | undefined;
  /** Copies known damaged or stale that the next full checkpoint repairs (0: none). */
  private repairCopies = 0;

  private constructor(
    private readonly spare: Backend,
    readonly layout: Layout,
    private readonly base: Header,
    state: TableState,
    private alloc: SpareAllocator,
    pos: { seq: number; epoch: number; slot: number; journalPos: number },
    opts: StoreOptions,
  ) {
    this.state = state;
    this.seq = pos.seq;
    this.epoch = pos.epoch;
    this.activeSlot = pos.slot;
    this.journalPos = pos.journalPos;
    this.now = opts.now ?? Date.now;
  }

  get setupUuid(): string {
    return uuidToString(this.base.setupUuid);
  }
  get blockSize(): number {
    return this.layout.blockSize;
  }
  get spareDataBlocks(): number {
    return this.layout.spareDataBlocks;
  }
  get freeSpareBlocks(): number {
    return this.alloc.free;
  }
  get mainIdentity(): MainIdentity {
    return identityFromHeader(this.base);
  }
  get mainBlocks(): number {
    return Math.ceil(this.base.mainSize / this.layout.blockSize);
  }
  get sequence(): number {
    return this.seq;
  }
  get remapCount(): number {
    return this.state.remaps.size;
  }
  get pendingCount(): number {
    return this.state.pending.size;
  }
  /** A metadata write failed: commits are refused until reload() succeeds. */
  get hasFailed(): boolean {
    return this.failed !== null || this.reloading;
  }

  /** Remaps as fresh objects, built lazily (insertion order). */
  entries(): IterableIterator<RemapEntry> {
    return this.state.remaps.entries();
  }
  *pending(): IterableIterator<MainBlock> {
    for (const m of this.state.pending.keys()) yield mainBlock(m);
  }
  /** A fresh RemapEntry object; on hot paths use spareBlockOf(). */
  lookup(mainBlock: MainBlock): RemapEntry | undefined {
    return this.state.remaps.get(mainBlock);
  }
  /** Spare block holding `mainBlock`, or -1 when it is not remapped. No allocation. */
  spareBlockOf(mainBlock: MainBlock): SpareBlock | -1 {
    return this.state.remaps.spareOf(mainBlock);
  }
  reasonOf(mainBlock: MainBlock): RemapReason | undefined {
    return REMAP_REASONS[this.state.remaps.reasonCodeOf(mainBlock) - 1];
  }
  /** Remaps per reason (reasons without remaps left out). */
  reasonCounts(): Record<string, number> {
    return this.state.remaps.reasonCounts();
  }
  isPending(mainBlock: MainBlock): boolean {
    return this.state.pending.size !== 0 && this.state.pending.has(mainBlock);
  }
  scanState(): ScanState {
    return { ...this.state.scan };
  }
  spareBlockOffset(spareBlock: SpareBlock): ByteOffset {
    return blockStart(spareBlock, this.layout.blockSize);
  }

  allocateSpareBlock(): SpareBlock | undefined {
    return this.alloc.allocate();
  }
  releaseSpareBlock(b: SpareBlock): void {
    if (this.alloc.isReserved(b) && !this.queuedSpares.has(b)) this.alloc.release(b);
  }

  // ---------------------------------------------------------------- create

  static async create(spare: Backend, main: MainIdentity, opts: CreateOptions = {}): Promise<MetadataStore> {
    if (spare.readOnly) throw new MetadataError('READ_ONLY', `spare ${spare.path} is open read-only`);
    const blockSize = opts.blockSize ?? 4096;
    let layout: Layout;
    try {
      validateBlockSize(blockSize, spare.logicalBlockSize, main.logicalBlockSize);
      layout = computeLayout(spare.size, blockSize, spare.logicalBlockSize, opts.journalBytes);
    } catch (e) {
      if (e instanceof LayoutError) throw new MetadataError('LAYOUT', e.message);
      throw e;
    }
    const found = await findHeaders(spare);
    const stray = found.filter((f) => f.buf && f.failedCheck !== 'magic');
    if (!opts.force) await assertEmpty(spare, layout, stray);
    const now = opts.now ?? Date.now;
    const base = freshHeader(spare, main, layout, blockSize, now(), opts.setupUuid);
    const zero = Buffer.alloc(HEADER_BYTES);
    for (const f of stray) await spare.write(f.offset, zero);
    for (let k = 0; k < COPIES; k++) await spare.zero(journalOffset(layout, k), layout.journalBytes, false);
    await spare.sync();
    await writeHeaders(spare, layout, base);
    await spare.sync();
    return new MetadataStore(
      spare,
      layout,
      base,
      emptyState(),
      new SpareAllocator(layout),
      { seq: 1, epoch: 1, slot: 0, journalPos: 0 },
      opts,
    );
  }

  // ---------------------------------------------------------------- open

  static async open(spare: Backend, main?: MainIdentity, opts: StoreOptions = {}): Promise<MetadataStore> {
    const scan = await scanSpare(spare);
    const loaded = loadBest(scan, spare, main);
    const l = await loaded;
    const store = new MetadataStore(
      spare,
      scan.layout!,
      l.best.header!,
      l.state,
      l.alloc,
      {
        seq: Math.max(scan.maxSequence, l.best.sequence),
        epoch: l.best.header!.sequence,
        slot: l.best.header!.activeSlot,
        journalPos: l.best.journal!.end,
      },
      opts,
    );
    if (!spare.readOnly && (needsRepair(scan) || scan.maxSequence !== l.best.sequence)) {
      store.repairCopies = damagedCopies(scan);
      await store.checkpoint();
      if (store.repairs) store.repairedAtOpen = damagedCopies(scan);
    }
    return store;
  }

  // ---------------------------------------------------------------- inspect

  static async inspect(spare: Backend, opts: { repair?: boolean; main?: MainIdentity } = {}): Promise<CheckReport> {
    return inspectSpare(spare, opts, async (sp, main) => {
      const s = await MetadataStore.open(sp, main);
      await s.close();
    });
  }

  // ---------------------------------------------------------------- commit

  commit(change: MetadataChange): Promise<void> {
    if (this.closed) return Promise.reject(new MetadataError('CLOSED', 'metadata store is closed'));
    if (this.failed) return Promise.reject(new MetadataError('FAILED', `metadata store failed earlier: ${this.failed.message}`));
    if (this.reloading) return Promise.reject(new MetadataError('FAILED', 'metadata store is being reloaded after a failure'));
    if (this.spare.readOnly) return Promise.reject(new MetadataError('READ_ONLY', 'spare is open read-only'));
    let ops: Op[];
    const spares: number[] = [];
    try {
      const mainBlocks = this.mainBlocks;
      const checkMain = (m: number): void => {
        if (!Number.isSafeInteger(m) || m < 0 || m >= mainBlocks)
          throw new MetadataError('INVALID_CHANGE', `main block ${m} out of range 0..${mainBlocks - 1}`);
      };
      const seen = new Set<number>();
      for (const e of change.add ?? []) {
        checkMain(e.mainBlock);
        const b = e.spareBlock;
        if (!this.alloc.isDataBlock(b)) throw new MetadataError('INVALID_CHANGE', `spare block ${b} is not a data block`);
        const mine = this.state.remaps.spareOf(e.mainBlock) === b;
        if (!mine && (this.alloc.isCommitted(b) || this.queuedSpares.has(b) || seen.has(b))) {
          throw new MetadataError('INVALID_CHANGE', `spare block ${b} is already in use`);
        }
        if (!Number.isSafeInteger(e.createdAt) || e.createdAt < 0 || e.createdAt >= 2 ** 48)
          throw new MetadataError('INVALID_CHANGE', `bad createdAt ${e.createdAt}`);
        seen.add(b);
        spares.push(b);
      }
      for (const m of [...(change.remove ?? []), ...(change.pendingAdd ?? []), ...(change.pendingRemove ?? [])]) checkMain(m);
      const adds = (change.add?.length ?? 0) + (change.pendingAdd?.length ?? 0);
      if (this.state.remaps.size + this.state.pending.size + this.queuedAdds + adds > this.layout.tableCapacity) {
        throw new MetadataError('TABLE_FULL', `table capacity ${this.layout.tableCapacity} entries reached`);
      }
      ops = opsForChange(change, this.now());
      if (change.scan) {
        const s = change.scan;
        for (const v of [s.cursorOffset, s.passesCompleted, s.lastFullScanAt]) {
          if (!Number.isSafeInteger(v) || v < 0) throw new MetadataError('INVALID_CHANGE', `bad scan state value ${v}`);
        }
      }
      this.queuedAdds += adds;
    } catch (e) {
      return Promise.reject(e);
    }
    for (const b of spares) {
      this.queuedSpares.add(b);
      if (!this.alloc.isReserved(b) && !this.alloc.isCommitted(b)) this.alloc.markCommitted(b); // never allocated: take it now
    }
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ ops, spares, resolve, reject });
      if (!this.inFlight) this.inFlight = this.drain();
    });
  }

  saveScanState(s: ScanState): Promise<void> {
    return this.commit({ scan: s });
  }

  private async drain(): Promise<void> {
    while (this.queue.length) {
      const batch = this.queue.splice(0);
      const ops = batch.flatMap((q) => q.ops);
      let err: Error | null = null;
      try {
        if (this.failed) throw new MetadataError('FAILED', `metadata store failed earlier: ${this.failed.message}`);
        await this.writeRound(ops);
      } catch (e) {
        err = e instanceof Error ? e : new Error(String(e));
      }
      for (const q of batch) for (const b of q.spares) this.queuedSpares.delete(b);
      this.queuedAdds = 0;
      for (const q of this.queue) this.queuedAdds += q.ops.filter((o) => o.op === OP_ADD).length;
      for (const q of batch) err ? q.reject(err) : q.resolve();
    }
    this.inFlight = null;
  }

  private applyOps(ops: Op[]): void {
    for (const o of ops) {
      const freed = applyOp(this.state, o);
      if (o.op === OP_ADD) this.alloc.markCommitted(o.b);
      if (freed >= 0) this.alloc.release(spareBlock(freed));
    }
  }

  private async writeRound(ops: Op[]): Promise<void> {
    this.rounds++;
    const l = this.layout;
    const seq = this.seq + 1;
    const t = this.now();
    const frame = encodeFrame(ops, this.epoch, seq, t, this.base.setupUuid, l.frameAlign);
    const repairDue = this.repairWanted && t - this.lastRepairAttempt >= REPAIR_RETRY_MS;
    if (repairDue || this.journalPos + frame.length > l.journalBytes || frame.length > l.journalBytes / 2) {
      await this.checkpoint(ops);
      return;
    }
    const results = await Promise.allSettled(
      Array.from({ length: COPIES }, (_, k) => this.spare.write(addBytes(journalOffset(l, k), this.journalPos), frame)),
    );
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    if (ok === 0) this.fail((results[0] as PromiseRejectedResult).reason);
    if (ok < COPIES) {
      this.repairWanted = true;
      this.repairCopies = Math.max(this.repairCopies, COPIES - ok);
    }
    try {
      await this.spare.sync();
    } catch (e) {
      this.fail(e);
    }
    this.seq = seq;
    this.journalPos += frame.length;
    this.applyOps(ops);
  }

  private fail(e: unknown): never {
    const err = e instanceof Error ? e : new Error(String(e));
    this.failed = err;
    throw new MetadataError('FAILED', `metadata write failed: ${err.message}`);
  }

  /**
   * Write the whole table (plus `ops`) into the inactive checkpoint slot of every copy, sync, then write
   * all headers pointing at it with a new sequence (which also starts a fresh journal epoch), sync.
   * Used when the journal is full, to repair copies, and on demand (compaction).
   */
  async checkpoint(ops: Op[] = []): Promise<void> {
    if (this.failed) throw new MetadataError('FAILED', `metadata store failed earlier: ${this.failed.message}`);
    const l = this.layout;
    this.checkpoints++;
    this.lastRepairAttempt = this.now();
    const seq = this.seq + 1;
    const slot = 1 - this.activeSlot;
    const written = await writeCheckpoint(this.spare, l, this.base, this.state, ops, seq, slot, this.now, (e) => this.fail(e));
    const repaired = written === COPIES ? this.repairCopies : 0;
    this.repairWanted = written < COPIES;
    this.repairCopies = COPIES - written;
    this.seq = seq;
    this.epoch = seq;
    this.activeSlot = slot;
    this.journalPos = 0;
    Object.assign(this.base, { sequence: seq, activeSlot: slot });
    this.applyOps(ops);
    if (repaired > 0) {
      this.repairs++;
      this.onRepaired?.(repaired);
    }
  }

  /**
   * After a failure: re-read the metadata from the spare as open() does, replace the in-memory table and
   * allocator with what is on disk, write a checkpoint, and accept commits again. Throws (and stays
   * failed) when the spare still cannot be read or written. No format change: this is open() in place.
   */
  async reload(): Promise<void> {
    if (this.closed) throw new MetadataError('CLOSED', 'metadata store is closed');
    if (this.reloading) throw new MetadataError('FAILED', 'metadata store is already being reloaded');
    this.reloading = true;
    try {
      while (this.inFlight) await this.inFlight.catch(() => undefined);
      const scan = await scanSpare(this.spare);
      const l = await loadBest(scan, this.spare, this.mainIdentity);
      const h = l.best.header!;
      if (uuidToString(h.setupUuid) !== this.setupUuid)
        throw new MetadataError('FINGERPRINT_MISMATCH', 'the spare now holds another setup');
      this.state = l.state;
      this.alloc = l.alloc;
      Object.assign(this.base, h);
      this.seq = Math.max(scan.maxSequence, l.best.sequence);
      this.epoch = h.sequence;
      this.activeSlot = h.activeSlot;
      this.journalPos = l.best.journal!.end;
      this.failed = null;
      this.repairCopies = Math.max(this.repairCopies, damagedCopies(scan));
      await this.checkpoint(); // sets failed again when the spare still cannot be written
    } catch (e) {
      this.failed ??= e instanceof Error ? e : new Error(String(e));
      throw e;
    } finally {
      this.reloading = false;
    }
  }

  /** The owner marker as last written (undefined: none). */
  get owner(): OwnerMarker | undefined {
    return this.base.owner ? { ...this.base.owner } : undefined;
  }

  /**
   * Record who serves this setup: a checkpoint whose headers carry the marker. Call right after open(),
   * before any commit, while holding the setup's lock. Not cleared at stop: the lock is the truth.
   */
  async claim(owner: OwnerMarker): Promise<void> {
    if (this.spare.readOnly) throw new MetadataError('READ_ONLY', 'spare is open read-only');
    if (this.inFlight || this.queue.length) throw new MetadataError('INVALID_CHANGE', 'claim() must run before any commit');
    this.base.owner = { ...owner };
    await this.checkpoint();
  }

  /** Wait for queued commits, then stop accepting new ones. Does not close the spare backend. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.inFlight) await this.inFlight.catch(() => undefined);
  }
}

/** Copies of a scan that are damaged (failed a check) or stale. */
function damagedCopies(scan: SpareScan): number {
  return scan.copies.filter((c) => !c.valid || c.stale).length;
}
