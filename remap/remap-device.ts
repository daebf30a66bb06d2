/**
 * The remapping block device: the export is the main device's address space; blocks listed in the
 * remap table are read from and written to the spare instead. This is where failures are handled:
 *
 * - write error on main → the block is remapped: a spare block is allocated, the data (merged with the
 *   block's old readable contents when the write is partial) is written to the spare and synced, the
 *   remap is committed to the metadata (synced), and only then does the write succeed.
 * - read error on main → retried per block; a block that reads on a retry is rescued to the spare; a
 *   block that never reads is reported (EIO, with its exact offset) and marked pending, so the next
 *   write to it lands on the spare.
 *
 * Requests are split at remap boundaries and the pieces run in parallel. A block whose location is
 * changing is locked (BlockLocks) so concurrent I/O to it stays ordered.
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
import { rethrowDeviceError, toDeviceError } from './device-errors';
import { RemapTable } from './remap-table';
import { blockSpan, blockStart, type ByteLength, type ByteOffset, type MainBlock, type SpareBlock } from './units';

export interface RemapDeviceOptions {
  readonly logger: Logger;
  readonly readOnly?: boolean;
  /** Extra attempts after a failed read of a main block (default 3). */
  readonly readRetries?: number;
  /** Warn when this fraction of the spare's data blocks is used (default 0.9). */
  readonly spareWarnFraction?: number;
  readonly description?: string;
}

/** A piece of a request: either on main (at its own offset) or on the spare. */
interface Segment {
  readonly offset: ByteOffset;
  length: ByteLength;
  /** Byte offset on the spare, or -1 when the piece lives on main. */
  readonly spareOffset: ByteOffset;
}

export type MigrationResult = 'migrated' | 'already-remapped' | 'unreadable' | 'spare-full';

export interface RemapStatus {
  blockSize: number;
  remaps: { total: number; byReason: Record<string, number> };
  pending: { count: number; offsets: number[] };
  spare: { dataBlocks: number; used: number; free: number; usedPercent: number; low: boolean; exhausted: boolean };
  counters: {
    readErrors: number;
    writeErrors: number;
    rescued: number;
    remappedOnWrite: number;
    migrated: number;
  };
}

/** Events: 'remap' {block, reason}, 'pending' {block}, 'unremap' {block}, 'spare-low', 'spare-exhausted'. */
export class RemapDevice extends EventEmitter implements BlockDevice {
  readonly size: number;
  readonly capabilities: DeviceCapabilities;
  readonly blockSize: BlockSizeConstraints;
  readonly description: string;
  readonly remapBlockSize: ByteLength;
  private readonly table: RemapTable;
  private readonly locks = new BlockLocks();
  private readonly log: Logger;
  private readonly readRetries: number;
  private readonly spareWarnFraction: number;
  private spareLowWarned = false;
  private spareExhausted = false;
  private readonly counters = { readErrors: 0, writeErrors: 0, rescued: 0, remappedOnWrite: 0, migrated: 0 };
  /** Client I/O activity, for the health scanner's back-off. */
  private ioCount = 0;

  constructor(
    readonly main: Backend,
    readonly spare: Backend,
    readonly store: MetadataStore,
    opts: RemapDeviceOptions,
  ) {
    super();
    this.log = opts.logger;
    this.size = main.size;
    this.remapBlockSize = store.blockSize;
    this.readRetries = opts.readRetries ?? 3;
    this.spareWarnFraction = opts.spareWarnFraction ?? 0.9;
    this.table = RemapTable.from(store); // a view of the store's table: nothing copied
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
    this.checkSpareLevel();
  }

  /** Client requests served so far (the scanner backs off while this moves). */
  get ioActivity(): number {
    return this.ioCount;
  }

  isRemapped(block: MainBlock): boolean {
    return this.table.lookup(block) !== undefined;
  }

  isPending(block: MainBlock): boolean {
    return this.table.isPending(block);
  }

  // ---------------------------------------------------------------- routing

  /** Split [offset, offset+length) into runs on main and runs on the spare. */
  private route(offset: ByteOffset, length: ByteLength): Segment[] {
    const B = this.remapBlockSize;
    const [first, last] = blockSpan(offset, length, B);
    const end = offset + length;
    const segs: Segment[] = [];
    let cur: Segment | undefined;
    for (let b = first; b <= last; b++) {
      const start = Math.max(offset, b * B);
      const stop = Math.min(end, (b + 1) * B);
      const spare = this.table.lookup(b);
      const spareOffset = spare === undefined ? -1 : spare * B + (start - b * B);
      if (cur && (spareOffset === -1 ? cur.spareOffset === -1 : cur.spareOffset !== -1 && cur.spareOffset + cur.length === spareOffset)) {
        cur.length += stop - start;
      } else {
        cur = { offset: start, length: stop - start, spareOffset };
        segs.push(cur);
      }
    }
    return segs;
  }

  private async waitForMovingBlocks(offset: ByteOffset, length: ByteLength): Promise<void> {
    if (!this.locks.anyLocked) return;
    const [first, last] = blockSpan(offset, length, this.remapBlockSize);
    await this.locks.waitUnlocked(first, last);
  }

  /** Bytes of block b that exist on the device (the last block may be short). */
  private blockLength(b: MainBlock): ByteLength {
    return Math.min(this.remapBlockSize, this.size - b * this.remapBlockSize);
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
      const first = Math.floor(offset / B);
      if (this.table.size === 0 || first === Math.floor((offset + length - 1) / B)) {
        const spare = this.table.size === 0 ? undefined : this.table.lookup(first);
        if (spare === undefined) return this.readMain(offset, length, target, targetOffset);
        return this.spare.read(spare * B + (offset - first * B), length, target, targetOffset).catch(rethrowDeviceError);
      }
    }
    return this.readRouted(offset, length, target, targetOffset);
  }

  private async readRouted(offset: ByteOffset, length: ByteLength, target: Buffer, targetOffset: number): Promise<void> {
    if (this.locks.anyLocked) await this.waitForMovingBlocks(offset, length);
    if (this.table.isEmpty) {
      return this.readMain(offset, length, target, targetOffset);
    }
    const segs = this.route(offset, length);
    const work = segs.map((s) => {
      const at = targetOffset + (s.offset - offset);
      return s.spareOffset === -1
        ? this.readMain(s.offset, s.length, target, at)
        : this.spare.read(s.spareOffset, s.length, target, at).catch(rethrowDeviceError);
    });
    const results = await Promise.allSettled(work);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    if (this.table.pendingCount > 0) await this.rescuePendingThatRead(offset, length, target, targetOffset);
  }

  private readMain(offset: ByteOffset, length: ByteLength, target: Buffer, targetOffset: number): Promise<void> {
    return this.main.read(offset, length, target, targetOffset).catch((err: unknown) => {
      if (!(err instanceof BackendError)) throw toDeviceError(err);
      return this.recoverRead(offset, length, target, targetOffset, err);
    });
  }

  /**
   * A read of [offset, offset+length) on main failed. Read block by block with retries. Blocks that
   * read on a retry are rescued to the spare; blocks that never read become pending and the request
   * fails with EIO at the first such block's offset.
   */
  private async recoverRead(offset: ByteOffset, length: ByteLength, target: Buffer, targetOffset: number, first: BackendError): Promise<void> {
    const B = this.remapBlockSize;
    const [firstBlock, lastBlock] = blockSpan(offset, length, B);
    const singleBlock = firstBlock === lastBlock;
    const unreadable: MainBlock[] = [];
    /** The first failing byte the backend reported inside the first unreadable block. */
    let failAt: ByteOffset | undefined;
    const rescue: { block: MainBlock; data: Buffer }[] = [];
    for (let b = firstBlock; b <= lastBlock; b++) {
      const blockBuf = Buffer.allocUnsafe(this.blockLength(b));
      // For a one-block request the failed read was this block's first attempt.
      let failures = singleBlock ? 1 : 0;
      let ok = false;
      let lastErrOffset: ByteOffset | undefined;
      for (let attempt = 0; attempt <= this.readRetries; attempt++) {
        try {
          await this.main.read(blockStart(b, B), blockBuf.length, blockBuf, 0);
          ok = true;
          break;
        } catch (err) {
          if (!(err instanceof BackendError)) throw toDeviceError(err);
          failures++;
          if (failAt === undefined && err.offset >= b * B && err.offset < b * B + blockBuf.length) lastErrOffset = err.offset;
        }
      }
      if (!ok) {
        if (failAt === undefined) failAt = Math.max(offset, lastErrOffset ?? b * B);
        unreadable.push(b);
        continue;
      }
      const from = Math.max(offset, b * B);
      const to = Math.min(offset + length, b * B + blockBuf.length);
      blockBuf.copy(target, targetOffset + (from - offset), from - b * B, to - b * B);
      if (failures > 0) rescue.push({ block: b, data: blockBuf });
    }
    this.counters.readErrors += unreadable.length + rescue.length;
    for (const r of rescue) {
      const result = await this.moveToSpare(r.block, 'read-error', r.data);
      if (result === 'migrated') {
        this.counters.rescued++;
        this.log.warn({ block: r.block, offset: r.block * B }, 'block read only on retry: data rescued to the spare');
      }
    }
    if (unreadable.length === 0) return;
    await this.markPending(unreadable);
    failAt = Math.min(Math.max(failAt ?? offset, offset), offset + length - 1);
    throw new DeviceError('EIO', `unreadable block on the main device at byte ${failAt} (${first.code})`, failAt);
  }

  /** Pending blocks that just read fine from main are rescued (their data copied to the spare). */
  private async rescuePendingThatRead(offset: ByteOffset, length: ByteLength, target: Buffer, targetOffset: number): Promise<void> {
    const B = this.remapBlockSize;
    const [first, last] = blockSpan(offset, length, B);
    for (let b = first; b <= last; b++) {
      if (!this.table.isPending(b)) continue;
      const len = this.blockLength(b);
      const fullyCovered = b * B >= offset && b * B + len <= offset + length;
      let data: Buffer | undefined;
      if (fullyCovered) data = Buffer.from(target.subarray(targetOffset + (b * B - offset), targetOffset + (b * B - offset) + len));
      const result = await this.moveToSpare(b, 'read-error', data);
      if (result === 'migrated') {
        this.counters.rescued++;
        this.log.warn({ block: b, offset: b * B }, 'pending block read again: data rescued to the spare');
      }
    }
  }

  // ---------------------------------------------------------------- write

  /** The hot path, as for read(): one lookup, then straight to the backend. Everything else: writeRouted. */
  write(offset: ByteOffset, data: Buffer, fua: boolean): Promise<void> {
    this.ioCount++;
    if (!fua && !this.locks.anyLocked && this.table.pendingCount === 0) {
      if (this.table.size === 0) return this.writeMain(offset, data);
      const B = this.remapBlockSize;
      const first = Math.floor(offset / B);
      if (first === Math.floor((offset + data.length - 1) / B)) {
        const spare = this.table.lookup(first);
        if (spare === undefined) return this.writeMain(offset, data);
        // Tracked like main writes, so moving the block back to main waits for it.
        return this.locks.trackWrite(this.writeSpare(spare * B + (offset - first * B), data));
      }
    }
    return this.writeRouted(offset, data, fua);
  }

  private async writeRouted(offset: ByteOffset, data: Buffer, fua: boolean): Promise<void> {
    if (this.locks.anyLocked) await this.waitForMovingBlocks(offset, data.length);
    if (this.table.isEmpty) {
      await this.writeMain(offset, data);
    } else {
      const segs = this.route(offset, data.length);
      await this.settleAll(
        segs.map((s) => {
          const piece = data.subarray(s.offset - offset, s.offset - offset + s.length);
          if (s.spareOffset === -1) return this.writeMainOrPending(s.offset, piece);
          // Tracked like main writes, so moving the block back to main waits for it.
          return this.locks.trackWrite(this.writeSpare(s.spareOffset, piece));
        }),
      );
    }
    if (fua) await this.flush();
  }

  private async settleAll(work: Promise<unknown>[]): Promise<void> {
    if (work.length === 1) {
      await work[0];
      return;
    }
    const results = await Promise.allSettled(work);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  private writeSpare(spareOffset: ByteOffset, piece: Buffer): Promise<void> {
    return this.spare.write(spareOffset, piece).catch(rethrowDeviceError);
  }

  /** A main segment that may contain pending blocks: those go to the spare now. */
  private async writeMainOrPending(offset: ByteOffset, piece: Buffer): Promise<void> {
    if (this.table.pendingCount === 0) return this.writeMain(offset, piece);
    const B = this.remapBlockSize;
    const [first, last] = blockSpan(offset, piece.length, B);
    const work: Promise<void>[] = [];
    let runStart = offset;
    const end = offset + piece.length;
    for (let b = first; b <= last; b++) {
      if (!this.table.isPending(b)) continue;
      const start = Math.max(offset, b * B);
      const stop = Math.min(end, (b + 1) * B);
      if (start > runStart) work.push(this.writeMain(runStart, piece.subarray(runStart - offset, start - offset)));
      work.push(this.remapOnWrite(b, start, piece.subarray(start - offset, stop - offset), 'read-error'));
      runStart = stop;
    }
    if (runStart < end) work.push(this.writeMain(runStart, piece.subarray(runStart - offset)));
    await this.settleAll(work);
  }

  /** Write to main, tracked until the backend settles; a failure goes to writeMainFailed. */
  private writeMain(offset: ByteOffset, piece: Buffer): Promise<void> {
    const g = this.locks.beginWrite();
    return this.main.write(offset, piece).then(
      () => g.end(),
      (err: unknown) => {
        g.end();
        return this.writeMainFailed(offset, piece, err);
      },
    );
  }

  private async writeMainFailed(offset: ByteOffset, piece: Buffer, err: unknown): Promise<void> {
    if (!(err instanceof BackendError)) throw toDeviceError(err);
    this.log.warn({ offset, length: piece.length, code: err.code }, 'write to main failed; redirecting to the spare');
    const B = this.remapBlockSize;
    const [first, last] = blockSpan(offset, piece.length, B);
    // Find the failing blocks: write each block alone; the ones that still fail are remapped.
    const end = offset + piece.length;
    const work: Promise<void>[] = [];
    for (let b = first; b <= last; b++) {
      const start = Math.max(offset, b * B);
      const stop = Math.min(end, (b + 1) * B);
      const part = piece.subarray(start - offset, stop - offset);
      work.push(
        (async () => {
          // The block may have been moved (remap, migration, rescue) since the failed write was
          // routed: follow it instead of writing behind its back.
          await this.locks.waitUnlocked(b, b);
          const moved = this.table.lookup(b);
          if (moved !== undefined) return this.locks.trackWrite(this.writeSpare(moved * B + (start - b * B), part));
          if (this.table.isPending(b)) return this.remapOnWrite(b, start, part, 'read-error');
          if (first !== last) {
            try {
              await this.locks.trackWrite(this.main.write(start, part));
              return;
            } catch (err) {
              if (!(err instanceof BackendError)) throw toDeviceError(err);
            }
          }
          this.counters.writeErrors++;
          await this.remapOnWrite(b, start, part, 'write-error');
        })(),
      );
    }
    await this.settleAll(work);
  }

  /**
   * Write `part` (which starts at byte `start`, inside block b) to the spare, remapping b first if it
   * is not remapped yet. Durable before it resolves: data synced, then the remap committed.
   */
  private async remapOnWrite(b: MainBlock, start: ByteOffset, part: Buffer, reason: RemapReason): Promise<void> {
    const B = this.remapBlockSize;
    await this.locks.withLock(b, async () => {
      const existing = this.table.lookup(b);
      if (existing !== undefined) {
        await this.writeSpare(existing * B + (start - b * B), part);
        return;
      }
      const len = this.blockLength(b);
      let full: Buffer;
      if (start === b * B && part.length === len) {
        full = part;
      } else {
        full = Buffer.alloc(len);
        try {
          await this.main.read(b * B, len, full, 0);
        } catch {
          full.fill(0);
          this.log.warn({ block: b, offset: b * B }, 'partial write into an unreadable block: the rest of the block reads as zeroes');
        }
        part.copy(full, start - b * B);
      }
      await this.commitToSpare(b, full, reason);
      this.counters.remappedOnWrite++;
    });
  }

  /** Allocate a spare block, write and sync the data, commit the remap, switch the table. Caller holds b's lock. */
  private async commitToSpare(b: MainBlock, full: Buffer, reason: RemapReason, verify = false): Promise<SpareBlock> {
    const B = this.remapBlockSize;
    const spareBlock = this.store.allocateSpareBlock();
    if (spareBlock === undefined) {
      this.onSpareExhausted(b);
      throw new DeviceError('ENOSPC', `spare device is full: cannot remap the block at byte ${b * B}`, b * B, 'EIO');
    }
    try {
      await this.spare.write(spareBlock * B, full);
      if (verify) {
        const check = Buffer.allocUnsafe(full.length);
        await this.spare.read(spareBlock * B, full.length, check, 0);
        if (!check.equals(full)) throw new DeviceError('EIO', `verification of spare block ${spareBlock} failed`);
      }
      await this.spare.sync();
      await this.store.commit({
        add: [{ mainBlock: b, spareBlock, reason, createdAt: Date.now() }],
        pendingRemove: this.table.isPending(b) ? [b] : undefined,
      });
    } catch (err) {
      this.store.releaseSpareBlock?.(spareBlock);
      throw toDeviceError(err);
    }
    this.table.add(b, spareBlock, reason);
    this.log.warn({ block: b, offset: b * B, spareBlock, reason, remaps: this.table.size }, 'block remapped to the spare');
    this.emit('remap', { block: b, offset: b * B, reason });
    this.checkSpareLevel();
    return spareBlock;
  }

  // ---------------------------------------------------------------- moves (scanner, manual, rescue)

  /**
   * Copy block b to the spare and remap it, verified. `data` is the block's contents when the caller
   * already has them; otherwise main is read (with retries) under the block's lock, so a client write
   * racing the move is applied after it, to the spare.
   */
  async moveToSpare(b: MainBlock, reason: RemapReason, data?: Buffer): Promise<MigrationResult> {
    if (b < 0 || b * this.remapBlockSize >= this.size) throw new DeviceError('EINVAL', `block ${b} is outside the device`);
    return this.locks.withLock(b, async () => {
      if (this.table.lookup(b) !== undefined) return 'already-remapped';
      const len = this.blockLength(b);
      let contents = data;
      // Re-read under the lock: a write may have landed since `data` was read.
      const fresh = Buffer.allocUnsafe(len);
      for (let attempt = 0; attempt <= this.readRetries; attempt++) {
        try {
          await this.main.read(b * this.remapBlockSize, len, fresh, 0);
          contents = fresh;
          break;
        } catch {
          /* retry */
        }
      }
      if (!contents) {
        if (!this.table.isPending(b)) await this.markPending([b]);
        return 'unreadable';
      }
      try {
        await this.commitToSpare(b, contents, reason, true);
      } catch (err) {
        if (err instanceof DeviceError && err.errno === 'ENOSPC') return 'spare-full';
        throw err;
      }
      this.counters.migrated++;
      return 'migrated';
    });
  }

  /** Copy block b back to main and drop its remap. Refused when main cannot be written there. */
  async moveToMain(b: MainBlock): Promise<'unremapped' | 'not-remapped'> {
    const B = this.remapBlockSize;
    return this.locks.withLock(b, async () => {
      const spareBlock = this.table.lookup(b);
      if (spareBlock === undefined) return 'not-remapped';
      const len = this.blockLength(b);
      const data = Buffer.allocUnsafe(len);
      await this.spare.read(spareBlock * B, len, data, 0);
      try {
        await this.main.write(b * B, data);
        await this.main.sync();
        const check = Buffer.allocUnsafe(len);
        await this.main.read(b * B, len, check, 0);
        if (!check.equals(data)) throw new Error('read-back differs');
      } catch (err) {
        throw new DeviceError('EIO', `main device cannot be written at byte ${b * B} (${(err as Error).message}); block stays remapped`, b * B);
      }
      await this.store.commit({ remove: [b] });
      this.table.remove(b);
      this.log.info({ block: b, offset: b * B }, 'block moved back to the main device');
      this.emit('unremap', { block: b, offset: b * B });
      return 'unremapped';
    });
  }

  async markPending(blocks: MainBlock[]): Promise<void> {
    const fresh = blocks.filter((b) => !this.table.isPending(b) && this.table.lookup(b) === undefined);
    if (fresh.length === 0) return;
    await this.store.commit({ pendingAdd: fresh });
    for (const b of fresh) {
      this.table.markPending(b);
      this.log.error({ block: b, offset: b * this.remapBlockSize }, 'unreadable block: pending, the next write remaps it');
      this.emit('pending', { block: b, offset: b * this.remapBlockSize });
    }
  }

  // ---------------------------------------------------------------- other commands

  async flush(): Promise<void> {
    try {
      await Promise.all([this.main.sync(), this.spare.sync()]);
    } catch (err) {
      throw toDeviceError(err);
    }
  }

  async trim(offset: ByteOffset, length: ByteLength, fua: boolean): Promise<void> {
    this.ioCount++;
    if (this.locks.anyLocked) await this.waitForMovingBlocks(offset, length);
    const segs = this.table.size === 0 ? [{ offset, length, spareOffset: -1 }] : this.route(offset, length);
    await Promise.all(
      segs.map(async (s) => {
        try {
          if (s.spareOffset === -1) await this.main.trim(s.offset, s.length);
          else await this.spare.trim(s.spareOffset, s.length);
        } catch (err) {
          // TRIM is a hint: a failing disk that cannot discard keeps its data, which is allowed.
          this.log.debug({ offset: s.offset, length: s.length, err: (err as Error).message }, 'trim failed (ignored)');
        }
      }),
    );
    if (fua) await this.flush();
  }

  async zero(offset: ByteOffset, length: ByteLength, o: ZeroOptions): Promise<void> {
    if (o.fastZero && !this.capabilities.fastZero) throw new DeviceError('ENOTSUP', 'fast zeroing is not available');
    this.ioCount++;
    if (this.locks.anyLocked) await this.waitForMovingBlocks(offset, length);
    const segs = this.table.size === 0 && this.table.pendingCount === 0 ? [{ offset, length, spareOffset: -1 }] : this.route(offset, length);
    await this.settleAll(
      segs.map(async (s) => {
        if (s.spareOffset !== -1) {
          try {
            await this.spare.zero(s.spareOffset, s.length, o.noHole);
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

  /** Zeroing failed on main: write real zero buffers, which remaps failing blocks. */
  private async writeZeroesThroughWritePath(offset: ByteOffset, length: ByteLength): Promise<void> {
    const chunk = 1024 * 1024;
    const zeroes = Buffer.alloc(Math.min(chunk, length));
    for (let at = offset; at < offset + length; at += chunk) {
      const n = Math.min(chunk, offset + length - at);
      await this.writeMainOrPending(at, zeroes.subarray(0, n));
    }
  }

  async cache(offset: ByteOffset, length: ByteLength): Promise<void> {
    const n = Math.min(length, 64 * 1024 * 1024);
    const scratch = Buffer.allocUnsafe(Math.min(n, 1024 * 1024));
    for (let at = offset; at < offset + n; at += scratch.length) {
      const len = Math.min(scratch.length, offset + n - at);
      try {
        await this.read(at, len, scratch, 0);
      } catch {
        return; // a prefetch hint never fails the request
      }
    }
  }

  async extents(offset: ByteOffset, length: ByteLength): Promise<Extent[]> {
    const segs = this.table.size === 0 ? [{ offset, length, spareOffset: -1 }] : this.route(offset, length);
    const out: Extent[] = [];
    try {
      for (const s of segs) {
        const map = s.spareOffset === -1 ? await this.main.extents(s.offset, s.length) : await this.spare.extents(s.spareOffset, s.length);
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

  private usedSpareBlocks(): number {
    return this.store.spareDataBlocks - this.store.freeSpareBlocks;
  }

  private checkSpareLevel(): void {
    const used = this.usedSpareBlocks();
    const total = this.store.spareDataBlocks;
    if (!this.spareLowWarned && total > 0 && used >= total * this.spareWarnFraction) {
      this.spareLowWarned = true;
      this.log.warn({ used, total, percent: +((100 * used) / total).toFixed(1) }, 'spare device is running out of space');
      this.emit('spare-low', { used, total });
    }
  }

  private onSpareExhausted(b: MainBlock): void {
    if (!this.spareExhausted) {
      this.spareExhausted = true;
      this.emit('spare-exhausted', {});
    }
    this.log.error({ block: b, offset: b * this.remapBlockSize, spareBlocks: this.store.spareDataBlocks }, 'SPARE EXHAUSTED: a failing block cannot be remapped; the write fails');
  }

  entries(): { mainBlock: MainBlock; spareBlock: SpareBlock; reason: RemapReason; offset: ByteOffset }[] {
    return this.table.entries().map((e) => ({ ...e, offset: e.mainBlock * this.remapBlockSize }));
  }

  status(): RemapStatus {
    const used = this.usedSpareBlocks();
    const total = this.store.spareDataBlocks;
    const pending = [...this.table.pending()].sort((a, b) => a - b);
    return {
      blockSize: this.remapBlockSize,
      remaps: { total: this.table.size, byReason: this.table.countsByReason() },
      pending: { count: pending.length, offsets: pending.slice(0, 1000).map((b) => b * this.remapBlockSize) },
      spare: {
        dataBlocks: total,
        used,
        free: total - used,
        usedPercent: total > 0 ? +((100 * used) / total).toFixed(2) : 100,
        low: total > 0 && used >= total * this.spareWarnFraction,
        exhausted: this.spareExhausted || used >= total,
      },
      counters: { ...this.counters },
    };
  }
}
