/**
 * The remapping block device, the thin front the NBD connection calls: the export is the main device's
 * address space; blocks listed in the remap table are read from and written to the spare instead.
 *
 * The work is split by what happens to a block:
 *   routing.ts        where each byte of a request lives (main or spare), and waiting for moving blocks
 *   read-recovery.ts  a read of main failed: retry, rescue blocks that read on retry, mark the rest pending
 *   write-failure.ts  writes to main, and remapping the blocks whose writes fail (or that are pending)
 *   bisect.ts         which sectors of a failed I/O really fail (down to main's logical block size)
 *   mover.ts          the only code that changes where a block lives (to the spare, back, pending)
 *   main-state.ts     whether main is there at all ("failed": gone, or failing everywhere)
 *   spare-state.ts    how full the spare is, and whether it still takes writes ("spare failing")
 * Requests inside one remap block (or on a device with nothing remapped) take a hot path: one lookup,
 * then straight to the backend. A block whose location is changing is locked (BlockLocks) so
 * concurrent I/O to it stays ordered.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { MAX_PAYLOAD, StateFlag } from '../protocol/constants';
import {
  DeviceError,
  type BlockDevice,
  type BlockSizeConstraints,
  type DeviceCapabilities,
  type Extent,
  type ZeroOptions,
} from '../protocol/block-device';
import type { MetadataStore } from '../metadata/store';
import type { RemapReason } from '../metadata/types';
import { BackendError, type Backend } from '../storage/backend';
import { BlockLocks } from './block-locks';
import type { RemapContext } from './context';
import { rethrowDeviceError, toDeviceError } from './device-errors';
import { Mover, type MigrationResult } from './mover';
import { ReadRecovery } from './read-recovery';
import { RemapTable } from './remap-table';
import { flushMain } from './main-flush';
import { MainState, type MainStateStatus } from './main-state';
import { movingIn, onMain, route, type Segment } from './routing';
import { SpareState, type SpareFailingStatus } from './spare-state';
import { addBytes, blockOf, blockStart, spareOffsetOf, type ByteLength, type ByteOffset, type MainBlock, type SpareBlock } from '../units';
import { settleAll, WritePath } from './write-failure';

export type { MigrationResult } from './mover';

export interface RemapDeviceOptions {
  readonly logger: Logger;
  readonly readOnly?: boolean;
  /** Extra attempts after a failed read of a main block (default 3). */
  readonly readRetries?: number;
  /** While main is failed, requests that need it wait this long for it (ms; default 0: fail at once). */
  readonly outageHoldMs?: number;
  /** Warn when this fraction of the spare's data blocks is used (default 0.9). */
  readonly spareWarnFraction?: number;
  readonly description?: string;
}

export interface RemapStatus {
  blockSize: number;
  remaps: { total: number; byReason: Record<string, number> };
  pending: { count: number; offsets: ByteOffset[] };
  spare: { dataBlocks: number; used: number; free: number; usedPercent: number; low: boolean; exhausted: boolean } & SpareFailingStatus;
  /** Is main there at all (main-state.ts)? */
  main: MainStateStatus;
  counters: {
    readErrors: number;
    writeErrors: number;
    rescued: number;
    remappedOnWrite: number;
    migrated: number;
  };
}

/**
 * Events: 'remap' {block, reason}, 'pending' {block}, 'unremap' {block}, 'spare-low', 'spare-exhausted',
 * 'spare-failing' {cause}, 'spare-recovered', 'main-failed' {reason} (also 'device-failed' {error}, the alert
 * hook), 'main-recovered'.
 */
export class RemapDevice extends EventEmitter implements BlockDevice {
  readonly size: number;
  readonly capabilities: DeviceCapabilities;
  readonly blockSize: BlockSizeConstraints;
  readonly description: string;
  readonly remapBlockSize: ByteLength;
  private readonly table: RemapTable;
  private readonly locks = new BlockLocks();
  private readonly ctx: RemapContext;
  private readonly spareState: SpareState;
  private readonly mainState: MainState;
  private readonly mover: Mover;
  private readonly reads: ReadRecovery;
  private readonly writes: WritePath;
  /** Client I/O activity, for the health scanner's back-off. */
  private ioCount = 0;

  constructor(
    readonly main: Backend,
    readonly spare: Backend,
    readonly store: MetadataStore,
    opts: RemapDeviceOptions,
  ) {
    super();
    this.size = main.size;
    this.remapBlockSize = store.blockSize;
    this.table = RemapTable.from(store); // a view of the store's table: nothing copied
    this.ctx = {
      main,
      spare,
      store,
      table: this.table,
      locks: this.locks,
      log: opts.logger,
      blockSize: this.remapBlockSize,
      size: this.size,
      readRetries: opts.readRetries ?? 3,
      events: this,
      counters: { readErrors: 0, writeErrors: 0, rescued: 0, remappedOnWrite: 0, migrated: 0 },
    };
    this.spareState = new SpareState(this.ctx, opts.spareWarnFraction ?? 0.9);
    this.mainState = new MainState(this.ctx, opts.outageHoldMs ?? 0);
    this.mover = new Mover(this.ctx, this.spareState, this.mainState);
    // A request held through an outage runs again from the top: routed anew, as if it had just arrived.
    this.reads = new ReadRecovery(this.ctx, this.mover, this.mainState, (o, l, t, at) => this.readRouted(o, l, t, at));
    this.writes = new WritePath(this.ctx, this.mover, this.mainState, this.spareState, (o, p) => this.writeRouted(o, p, false));
    const writable = !opts.readOnly && !main.readOnly && !spare.readOnly;
    this.capabilities = {
      writable,
      flush: true,
      fua: 'emulate',
      trim: writable,
      zero: writable,
      fastZero: writable && main.canPunchHoles && spare.canPunchHoles,
      cache: true,
      extents: true,
      // One process owns both backends; a flush syncs both, covering every connection's writes.
      multiConn: true,
      rotational: false,
    };
    this.blockSize = { minimum: 1, preferred: Math.max(4096, this.remapBlockSize), maximum: MAX_PAYLOAD };
    this.description = opts.description ?? `${main.path} (spare ${spare.path})`;
    this.spareState.checkLevel();
  }

  /** Client requests served so far (the scanner backs off while this moves). */
  /** Main is gone or fails everywhere (main-state.ts): nothing is blamed on its blocks meanwhile. */
  get mainFailed(): boolean {
    return this.mainState.failed;
  }

  get ioActivity(): number {
    return this.ioCount;
  }

  isRemapped(block: MainBlock): boolean {
    return this.table.lookup(block) !== undefined;
  }

  isPending(block: MainBlock): boolean {
    return this.table.isPending(block);
  }

  /**
   * Resolves once no block of the range is moving; resolves without a tick in between the last check and
   * the caller's next synchronous steps only when written inline, so callers that route and start I/O
   * after it use the loop form themselves (see routing.ts movingIn).
   */
  private async untilNotMoving(offset: ByteOffset, length: ByteLength): Promise<void> {
    for (
      let w = movingIn(this.locks, this.remapBlockSize, offset, length);
      w;
      w = movingIn(this.locks, this.remapBlockSize, offset, length)
    )
      await w;
  }

  private segments(offset: ByteOffset, length: ByteLength, alsoPending = false): Segment[] {
    const empty = this.table.size === 0 && (!alsoPending || this.table.pendingCount === 0);
    return empty ? onMain(offset, length) : route(this.table, this.remapBlockSize, offset, length);
  }

  // ---------------------------------------------------------------- read

  /**
   * The hot path, for a request inside one remap block or a device with nothing remapped, while no block
   * moves and none is pending: one lookup, then straight to the backend, exactly as many promises as the
   * passthrough device. Everything else is routed (readRouted).
   */
  read(offset: ByteOffset, length: ByteLength, target: Buffer, targetOffset: number): Promise<void> {
    this.ioCount++;
    if (!this.locks.anyLocked && this.table.pendingCount === 0) {
      const B = this.remapBlockSize;
      const first = blockOf(offset, B);
      if (this.table.size === 0 || first === blockOf(addBytes(offset, length - 1), B)) {
        const spare = this.table.size === 0 ? undefined : this.table.lookup(first);
        if (spare === undefined) return this.reads.readMain(offset, length, target, targetOffset);
        return this.spare.read(spareOffsetOf(spare, first, offset, B), length, target, targetOffset).catch(rethrowDeviceError);
      }
    }
    return this.readRouted(offset, length, target, targetOffset);
  }

  private async readRouted(offset: ByteOffset, length: ByteLength, target: Buffer, targetOffset: number): Promise<void> {
    await this.untilNotMoving(offset, length);
    const stamp = this.locks.writeStamp();
    if (this.table.isEmpty) {
      return this.reads.readMain(offset, length, target, targetOffset);
    }
    const work = route(this.table, this.remapBlockSize, offset, length).map((s) => {
      const at = targetOffset + (s.offset - offset);
      return s.spareOffset === -1
        ? this.reads.readMain(s.offset, s.length, target, at)
        : this.spare.read(s.spareOffset, s.length, target, at).catch(rethrowDeviceError);
    });
    const results = await Promise.allSettled(work);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    if (this.table.pendingCount > 0) await this.reads.rescuePendingThatRead(offset, length, target, targetOffset, stamp);
  }

  // ---------------------------------------------------------------- write

  /** The hot path, as for read(): one lookup, then straight to the backend. Everything else: writeRouted. */
  write(offset: ByteOffset, data: Buffer, fua: boolean): Promise<void> {
    this.ioCount++;
    if (!fua && !this.locks.anyLocked && this.table.pendingCount === 0) {
      if (this.table.size === 0) return this.writes.writeMain(offset, data);
      const B = this.remapBlockSize;
      const first = blockOf(offset, B);
      if (first === blockOf(addBytes(offset, data.length - 1), B)) {
        const spare = this.table.lookup(first);
        if (spare === undefined) return this.writes.writeMain(offset, data);
        return this.writes.writeSpare(spareOffsetOf(spare, first, offset, B), data);
      }
    }
    return this.writeRouted(offset, data, fua);
  }

  private async writeRouted(offset: ByteOffset, data: Buffer, fua: boolean): Promise<void> {
    const B = this.remapBlockSize;
    for (let w = movingIn(this.locks, B, offset, data.length); w; w = movingIn(this.locks, B, offset, data.length)) await w;
    // From the last check on, synchronous until every piece's write has started.
    if (this.table.isEmpty) {
      await this.writes.writeMain(offset, data);
    } else {
      await settleAll(
        route(this.table, this.remapBlockSize, offset, data.length).map((s) => {
          const piece = data.subarray(s.offset - offset, s.offset - offset + s.length);
          if (s.spareOffset === -1) return this.writes.writeMainOrPending(s.offset, piece);
          return this.writes.writeSpare(s.spareOffset, piece);
        }),
      );
    }
    if (fua) await this.flush();
  }

  // ---------------------------------------------------------------- moves (scanner, manual, rescue)

  /** Copy block b to the spare and remap it, verified (mover.ts). */
  moveToSpare(b: MainBlock, reason: RemapReason, data?: Buffer): Promise<MigrationResult> {
    return this.mover.moveToSpare(b, reason, data);
  }

  /** Copy block b back to main and drop its remap. Refused when main cannot be written there. */
  moveToMain(b: MainBlock): Promise<'unremapped' | 'not-remapped'> {
    return this.mover.moveToMain(b);
  }

  markPending(blocks: MainBlock[]): Promise<void> {
    return this.mover.markPending(blocks);
  }

  // ---------------------------------------------------------------- other commands

  async flush(): Promise<void> {
    try {
      // main's flush is retried (main-flush.ts): with O_DIRECT a later flush covers every completed write
      await Promise.all([flushMain(this.main, this.ctx.log), this.spare.sync()]);
    } catch (err) {
      // main failed (gone) meanwhile: held like any request that needs main, then flushed again
      if (this.mainState.failed && (await this.mainState.hold())) return this.flush();
      throw toDeviceError(err);
    }
  }

  async trim(offset: ByteOffset, length: ByteLength, fua: boolean): Promise<void> {
    this.ioCount++;
    const B = this.remapBlockSize;
    for (let w = movingIn(this.locks, B, offset, length); w; w = movingIn(this.locks, B, offset, length)) await w;
    // Tracked like writes, and started synchronously after the last check: a mover (unremap, spare
    // reuse) drains them before it reads or frees the old location.
    await Promise.all(
      this.segments(offset, length).map(async (s) => {
        try {
          if (s.spareOffset === -1) await this.locks.trackWrite(this.main.trim(s.offset, s.length));
          else await this.locks.trackWrite(this.spare.trim(s.spareOffset, s.length));
        } catch (err) {
          // TRIM is a hint: a failing disk that cannot discard keeps its data, which is allowed.
          this.ctx.log.debug({ offset: s.offset, length: s.length, err: (err as Error).message }, 'trim failed (ignored)');
        }
      }),
    );
    if (fua) await this.flush();
  }

  async zero(offset: ByteOffset, length: ByteLength, o: ZeroOptions): Promise<void> {
    if (o.fastZero && !this.capabilities.fastZero) throw new DeviceError('ENOTSUP', 'fast zeroing is not available');
    this.ioCount++;
    const B = this.remapBlockSize;
    for (let w = movingIn(this.locks, B, offset, length); w; w = movingIn(this.locks, B, offset, length)) await w;
    // As for trim: tracked, started synchronously after the last check.
    await settleAll(
      this.segments(offset, length, true).map(async (s) => {
        if (s.spareOffset !== -1) {
          try {
            await this.locks.trackWrite(this.spare.zero(s.spareOffset, s.length, o.noHole));
          } catch (err) {
            throw toDeviceError(err);
          }
          return;
        }
        try {
          if (this.table.pendingCount > 0) throw new BackendError('EIO', 'range has pending blocks', s.offset);
          await this.locks.trackWrite(this.main.zero(s.offset, s.length, o.noHole));
        } catch (err) {
          if (!(err instanceof BackendError)) throw toDeviceError(err);
          if (o.fastZero) throw new DeviceError('ENOTSUP', 'fast zeroing failed on the main device');
          await this.writeZeroesThroughWritePath(s.offset, s.length);
        }
      }),
    );
    if (o.fua) await this.flush();
  }

  /** Zeroing failed on main: write real zero buffers through the routed write path, which remaps failing blocks. */
  private async writeZeroesThroughWritePath(offset: ByteOffset, length: ByteLength): Promise<void> {
    const chunk = 1024 * 1024;
    const zeroes = Buffer.alloc(Math.min(chunk, length));
    for (let at = offset; at < offset + length; at = addBytes(at, chunk)) {
      const n = Math.min(chunk, offset + length - at);
      await this.writeRouted(at, zeroes.subarray(0, n), false);
    }
  }

  async cache(offset: ByteOffset, length: ByteLength): Promise<void> {
    const n = Math.min(length, 64 * 1024 * 1024);
    const scratch = Buffer.allocUnsafe(Math.min(n, 1024 * 1024));
    for (let at = offset; at < offset + n; at = addBytes(at, scratch.length)) {
      const len = Math.min(scratch.length, offset + n - at);
      try {
        await this.read(at, len, scratch, 0);
      } catch {
        return; // a prefetch hint never fails the request
      }
    }
  }

  async extents(offset: ByteOffset, length: ByteLength): Promise<Extent[]> {
    const out: Extent[] = [];
    try {
      // All pieces asked at once: a 1 MiB read over 10,000 remaps has ~20, one after the other they
      // held its reply for ~20 thread-pool round trips.
      const maps = await Promise.all(
        this.segments(offset, length).map((s) =>
          s.spareOffset === -1 ? this.main.extents(s.offset, s.length) : this.spare.extents(s.spareOffset, s.length),
        ),
      );
      for (const map of maps) {
        for (const e of map) {
          const flags = e.hole ? StateFlag.HOLE | StateFlag.ZERO : 0;
          const last = out[out.length - 1];
          if (last && last.flags === flags) (last as { length: number }).length += e.length;
          else out.push({ length: e.length, flags });
        }
      }
    } catch (err) {
      throw toDeviceError(err);
    }
    return out;
  }

  // ---------------------------------------------------------------- status

  entries(): { mainBlock: MainBlock; spareBlock: SpareBlock; reason: RemapReason; offset: ByteOffset }[] {
    return this.table.entries().map((e) => ({ ...e, offset: blockStart(e.mainBlock, this.remapBlockSize) }));
  }

  status(): RemapStatus {
    const sp = this.spareState;
    const used = sp.used;
    const total = this.store.spareDataBlocks;
    const pending = [...this.table.pending()].sort((a, b) => a - b);
    return {
      blockSize: this.remapBlockSize,
      remaps: { total: this.table.size, byReason: this.table.countsByReason() },
      pending: { count: pending.length, offsets: pending.slice(0, 1000).map((b) => blockStart(b, this.remapBlockSize)) },
      spare: {
        dataBlocks: total,
        used,
        free: total - used,
        usedPercent: total > 0 ? +((100 * used) / total).toFixed(2) : 100,
        low: sp.low,
        exhausted: sp.exhausted,
        ...sp.failingStatus(),
      },
      main: this.mainState.status(),
      counters: { ...this.ctx.counters },
    };
  }

  /** Stop the background probes (main failed, spare failing). */
  close(): void {
    this.mainState.close();
    this.spareState.close();
  }
}
