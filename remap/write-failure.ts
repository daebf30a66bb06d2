/**
 * Writes to main, and what happens when they fail.
 *
 * A write that fails on main with a media error is bisected (bisect.ts) down to single remap blocks (the
 * unit a write failure can cost: a remap): every block that takes the write keeps it on main, and only
 * the blocks that refuse it are remapped (remapOnWrite), before the client's write succeeds. Each bisection attempt routes
 * its piece again (a block may have moved meanwhile) and waits for moving blocks, so no piece is written
 * behind a mover's back. A device or configuration fault blames no block and remaps nothing: the write
 * fails with its error. While main is failed (main-state.ts) a write is held (MainState.hold: the outage
 * ride-through) and run again through the device (`again`: routed anew) when main answers; when the hold
 * is off or over it is tried once and fails with EIO. Nothing is remapped either way.
 *
 * Writes to pending blocks go to the spare. A partial write into a block whose other bytes must be kept
 * reads them (bisected, retried); when some of them cannot be read, no bytes are invented (docs/HEALTH.md,
 * "Partial writes into unreadable blocks"): a pending block takes the write on main if main accepts it
 * (its unreadable sectors stay unreadable, as on a disk); otherwise the write fails with EIO, as a disk's
 * read-modify-write does.
 */
import { DeviceError } from '../protocol/block-device';
import type { RemapReason } from '../metadata/types';
import { BackendError } from '../storage/backend';
import { isMediaError } from '../storage/error-class';
import { bisect, type Piece } from './bisect';
import { rethrowDeviceError, toDeviceError } from './device-errors';
import { lengthOf, type RemapContext } from './context';
import type { MainState } from './main-state';
import type { Mover } from './mover';
import { firstFailingByte } from './read-recovery';
import { movingIn, route } from './routing';
import type { SpareState } from './spare-state';
import { addBytes, blockOf, blockSpan, blockStart, clipToBlock, spareOffsetOf, type ByteOffset, type MainBlock } from '../units';

/** Wait for every piece; the first failure (in order) is the request's error. */
export async function settleAll(work: Promise<unknown>[]): Promise<void> {
  if (work.length === 1) {
    await work[0];
    return;
  }
  const results = await Promise.allSettled(work);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

export class WritePath {
  constructor(
    private readonly c: RemapContext,
    private readonly mover: Mover,
    private readonly mainState: MainState,
    private readonly spareState: SpareState,
    /** The write again, routed anew (RemapDevice's routed write, no FUA): after a hold, blocks may live elsewhere. */
    private readonly again: (offset: ByteOffset, piece: Buffer) => Promise<void>,
  ) {}

  /** Write to the spare, tracked like main writes so a move of the block waits for it. */
  writeSpare(spareOffset: ByteOffset, piece: Buffer): Promise<void> {
    return this.c.locks.trackWrite(this.c.spare.write(spareOffset, piece)).catch((err: unknown) => this.spareWriteFailed(spareOffset, err));
  }

  private spareWriteFailed(spareOffset: ByteOffset, err: unknown): never {
    // Any OS error on a spare write (media, gone, or full: ENOSPC on a spare file) means it cannot take writes.
    if (err instanceof BackendError) {
      this.spareState.noteFailure(`writing a remapped block at spare byte ${spareOffset}`, err);
    }
    throw toDeviceError(err);
  }

  /** Write to main, tracked until the backend settles; a failure goes to writeMainFailed. */
  writeMain(offset: ByteOffset, piece: Buffer): Promise<void> {
    if (this.mainState.failed) return this.writeWhileFailed(offset, piece);
    const g = this.c.locks.beginWrite();
    const ms = this.mainState;
    return this.c.main.write(offset, piece).then(
      () => {
        g.end();
        ms.ok.write++;
      },
      (err: unknown) => {
        g.end();
        return this.writeMainFailed(offset, piece, err);
      },
    );
  }

  private async writeWhileFailed(offset: ByteOffset, piece: Buffer): Promise<void> {
    if (await this.mainState.hold()) return this.again(offset, piece);
    try {
      await this.c.locks.trackWrite(this.c.main.write(offset, piece));
    } catch (err) {
      if (err instanceof BackendError) this.mainState.noteFailure(err, 'write');
      throw new DeviceError(
        'EIO',
        `main device failed: write at byte ${offset} refused, nothing remapped (${(err as Error).message})`,
        offset,
      );
    }
    this.mainState.noteSuccess('write');
  }

  /** This write found main failed: held until main answers (then run again), else EIO. */
  private async holdOrFail(offset: ByteOffset, piece: Buffer, err: unknown): Promise<void> {
    if (await this.mainState.hold()) return this.again(offset, piece);
    const why = err instanceof Error ? ` (${err.message})` : '';
    throw new DeviceError('EIO', `main device failed: write at byte ${offset} refused, nothing remapped${why}`, offset);
  }

  /** A main segment that may contain pending blocks: those go to the spare now. */
  async writeMainOrPending(offset: ByteOffset, piece: Buffer): Promise<void> {
    if (this.c.table.pendingCount === 0) return this.writeMain(offset, piece);
    await settleAll(this.splitPending(offset, piece, offset, piece.length, (o, p) => this.writeMain(o, p)));
  }

  /**
   * Cut [o, o+len) of `piece` (which starts at `offset`) at pending blocks: those are remapped with their
   * bytes, the runs between them go to `onMain`.
   */
  private splitPending(
    offset: ByteOffset,
    piece: Buffer,
    o: ByteOffset,
    len: number,
    onMain: (at: ByteOffset, p: Buffer) => Promise<void>,
  ): Promise<void>[] {
    const c = this.c;
    const sub = (from: ByteOffset, to: ByteOffset): Buffer => piece.subarray(from - offset, to - offset);
    const end = addBytes(o, len);
    if (c.table.pendingCount === 0) return [onMain(o, sub(o, end))];
    const [first, last] = blockSpan(o, len, c.blockSize);
    const work: Promise<void>[] = [];
    let runStart = o;
    for (let b = first; b <= last; b++) {
      if (!c.table.isPending(b)) continue;
      const [start, stop] = clipToBlock(b, c.blockSize, o, len);
      if (start > runStart) work.push(onMain(runStart, sub(runStart, start)));
      work.push(this.remapOnWrite(b, start, sub(start, stop), 'read-error'));
      runStart = stop;
    }
    if (runStart < end) work.push(onMain(runStart, sub(runStart, end)));
    return work;
  }

  /**
   * One attempt of the bisection: write [o, o+len) of the failed piece where it lives now. Main runs are
   * written (a media failure rejects with the BackendError, for bisect); blocks moved to the spare or
   * pending meanwhile are written there.
   */
  private async attempt(offset: ByteOffset, piece: Buffer, o: ByteOffset, len: number): Promise<void> {
    const c = this.c;
    for (let w = movingIn(c.locks, c.blockSize, o, len); w; w = movingIn(c.locks, c.blockSize, o, len)) await w;
    // Synchronous from the last lock check to the writes' start: no mover slips in between.
    const work: Promise<void>[] = [];
    for (const s of route(c.table, c.blockSize, o, len)) {
      if (s.spareOffset !== -1) work.push(this.writeSpare(s.spareOffset, piece.subarray(s.offset - offset, s.offset - offset + s.length)));
      else work.push(...this.splitPending(offset, piece, s.offset, s.length, (at, p) => c.locks.trackWrite(c.main.write(at, p))));
    }
    await settleAll(work);
  }

  private async writeMainFailed(offset: ByteOffset, piece: Buffer, err: unknown): Promise<void> {
    const c = this.c;
    const ms = this.mainState;
    if (!(err instanceof BackendError)) throw toDeviceError(err);
    const cls = ms.noteFailure(err, 'write');
    if (ms.failed) return this.holdOrFail(offset, piece, err);
    if (cls !== 'media') throw toDeviceError(err);
    c.log.warn({ offset, length: piece.length, code: err.code }, 'write to main failed; isolating the failing sectors');
    let found;
    let stalled = false;
    try {
      // The unit is the remap block: what a write failure costs is a remap of the block, whichever of its
      // sectors refused. A block that fails alone (no retry) is remapped, as before bisection.
      found = await bisect(offset, piece.length, err, (o, len) => this.attempt(offset, piece, o, len), {
        unit: c.blockSize,
        leafRetries: 0,
        keepGoing: () => !ms.failed,
        onStall: () => {
          stalled = true;
          return ms.noteDeadRange(offset, 'write');
        },
      });
    } catch (e) {
      if (e instanceof BackendError) ms.noteFailure(e, 'write');
      if (ms.failed) return this.holdOrFail(offset, piece, e);
      throw toDeviceError(e);
    }
    if (found.successes > 0) ms.noteSuccess('write');
    else if (!stalled) await ms.noteDeadRange(offset, 'write');
    if (ms.failed) return this.holdOrFail(offset, piece, undefined);
    // Blocks holding a sector that refused the write: remapped with the request's bytes for them.
    const bad = new Map<MainBlock, ByteOffset>();
    for (const p of found.bad) {
      const b = blockOf(p.offset, c.blockSize);
      if (!bad.has(b)) bad.set(b, firstFailingByte(p));
    }
    c.counters.writeErrors += bad.size;
    const work: Promise<void>[] = [];
    for (const [b, failAt] of bad) {
      const [start, stop] = clipToBlock(b, c.blockSize, offset, piece.length);
      work.push(this.remapOnWrite(b, start, piece.subarray(start - offset, stop - offset), 'write-error', failAt));
    }
    await settleAll(work);
    const u = found.unresolved[0];
    if (u)
      throw new DeviceError(
        'EIO',
        `write to the main device failed at byte ${u.offset} and could not be isolated (too many failing pieces); nothing remapped there`,
        u.offset,
      );
  }

  /**
   * Write `part` (which starts at byte `start`, inside block b) to the spare, remapping b first if it
   * is not remapped yet. Durable before it resolves: data synced, then the remap committed. `failAt`:
   * the first byte main refused, when the remap is for a write error.
   */
  async remapOnWrite(b: MainBlock, start: ByteOffset, part: Buffer, reason: RemapReason, failAt?: ByteOffset): Promise<void> {
    const c = this.c;
    const B = c.blockSize;
    await c.locks.withLock(b, async () => {
      const existing = c.table.lookup(b);
      if (existing !== undefined) {
        await c.spare
          .write(spareOffsetOf(existing, b, start, B), part)
          .catch((err: unknown) => this.spareWriteFailed(spareOffsetOf(existing, b, start, B), err));
        return;
      }
      const refused = this.spareState.refuseRemap(b);
      if (refused) throw refused;
      const at = blockStart(b, B);
      const len = lengthOf(c, b);
      let full: Buffer = part;
      if (start !== at || part.length !== len) {
        full = Buffer.alloc(len);
        part.copy(full, start - at);
        const missing = await this.readAround(b, full, start, addBytes(start, part.length));
        if (missing !== undefined) {
          await this.partialIntoUnreadable(b, start, part, reason, missing, failAt);
          return;
        }
      }
      await this.mover.commitToSpare(b, full, reason);
      c.counters.remappedOnWrite++;
    });
  }

  /**
   * Read the bytes of block b outside [start, stop) into `full` (bisected, retried). Returns the first
   * byte that cannot be read, or undefined when all of them read.
   */
  private async readAround(b: MainBlock, full: Buffer, start: ByteOffset, stop: ByteOffset): Promise<ByteOffset | undefined> {
    const c = this.c;
    const at = blockStart(b, c.blockSize);
    const gaps: Piece[] = [];
    if (start > at) gaps.push({ offset: at, length: start - at });
    if (stop < at + full.length) gaps.push({ offset: stop, length: at + full.length - stop });
    let firstMissing: ByteOffset | undefined;
    for (const g of gaps) {
      const into = (o: ByteOffset, len: number): Promise<void> => c.main.read(o, len, full, o - at);
      try {
        await into(g.offset, g.length);
        continue;
      } catch (err) {
        if (!(err instanceof BackendError) || !isMediaError(err.code)) throw toDeviceError(err);
        const found = await bisect(g.offset, g.length, err, into, { unit: c.blockSize, leafRetries: c.readRetries }).catch(
          rethrowDeviceError,
        );
        const lost = found.bad[0] ?? found.unresolved[0];
        if (lost && firstMissing === undefined) firstMissing = lost === found.bad[0] ? firstFailingByte(found.bad[0]) : lost.offset;
      }
    }
    return firstMissing;
  }

  /**
   * A partial write into block b whose other bytes at `missing` cannot be read. A pending block (main not
   * known to refuse writes) takes the write on main; otherwise the write fails with EIO. Caller holds b's lock.
   */
  private async partialIntoUnreadable(
    b: MainBlock,
    start: ByteOffset,
    part: Buffer,
    reason: RemapReason,
    missing: ByteOffset,
    failAt?: ByteOffset,
  ): Promise<void> {
    const c = this.c;
    const at = blockStart(b, c.blockSize);
    let refusedAt = failAt;
    if (refusedAt === undefined) {
      try {
        await c.main.write(start, part);
        c.log.warn(
          { block: b, offset: at, written: start, length: part.length, unreadable: missing },
          'partial write into a block with unreadable sectors: written on main, the block stays pending',
        );
        if (!c.table.isPending(b)) await this.mover.markPending([b]);
        return;
      } catch (err) {
        if (!(err instanceof BackendError) || !isMediaError(err.code)) throw toDeviceError(err);
        refusedAt = err.offset >= start && err.offset < start + part.length ? err.offset : start;
      }
    }
    if (!c.table.isPending(b)) await this.mover.markPending([b]).catch(() => undefined);
    c.log.error(
      { block: b, offset: at, refusedAt, unreadable: missing, reason },
      'partial write into a block that main refuses and whose other sectors cannot be read: the write fails (no bytes are invented)',
    );
    throw new DeviceError(
      'EIO',
      `write at byte ${refusedAt} refused by the main device, and the rest of its block cannot be read (byte ${missing}): nothing was invented`,
      refusedAt,
    );
  }
}
