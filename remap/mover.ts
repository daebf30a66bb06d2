/**
 * The mover: the only code that changes where a block lives. A block goes to the spare (a remap on a
 * write error, a rescue of a block that read only on retry, a migration by the scanner or the `remap`
 * command), back to main (`unremap`), or becomes pending (unreadable: the next write remaps it).
 *
 * Durability order of a remap: data written to the spare → spare synced → metadata record committed to
 * every copy (synced) → the table view switches (the store's memory changes as the commit resolves) →
 * the caller acknowledges. Every move runs under the block's lock (BlockLocks), which first drains the
 * writes already in flight, so no write lands on the old location after the switch.
 *
 * No remap starts while the spare is failing (spare-state.ts); a failed spare write or commit puts it in
 * that state, and its spare block is not handed out again. No block is marked pending while main is
 * failed (main-state.ts): a dead device blames no block.
 */
import { DeviceError } from '../protocol/block-device';
import type { RemapReason } from '../metadata/types';
import { BackendError } from '../storage/backend';
import { isMediaError } from '../storage/error-class';
import type { WriteStamp } from './block-locks';
import { toDeviceError } from './device-errors';
import { lengthOf, type RemapContext } from './context';
import type { MainState } from './main-state';
import { SpareState } from './spare-state';
import { blockStart, type MainBlock, type SpareBlock } from '../units';

export type MigrationResult = 'migrated' | 'already-remapped' | 'unreadable' | 'spare-full';

export class Mover {
  constructor(
    private readonly c: RemapContext,
    private readonly spareState: SpareState,
    private readonly mainState: MainState,
  ) {}

  /** Allocate a spare block, write and sync the data, commit the remap. Caller holds b's lock. */
  async commitToSpare(b: MainBlock, full: Buffer, reason: RemapReason, verify = false): Promise<SpareBlock> {
    const c = this.c;
    const at = blockStart(b, c.blockSize);
    const refused = this.spareState.refuseRemap(b);
    if (refused) throw refused;
    const spareBlock = c.store.allocateSpareBlock();
    if (spareBlock === undefined) {
      this.spareState.onExhausted(b);
      throw new DeviceError('ENOSPC', `spare device is full: cannot remap the block at byte ${at}`, at, 'EIO');
    }
    const spareAt = blockStart(spareBlock, c.blockSize);
    let step = `writing spare block ${spareBlock}`;
    try {
      await c.spare.write(spareAt, full);
      if (verify) {
        step = `verifying spare block ${spareBlock}`;
        const check = Buffer.allocUnsafe(full.length);
        await c.spare.read(spareAt, full.length, check, 0);
        if (!check.equals(full)) throw new DeviceError('EIO', `verification of spare block ${spareBlock} failed`);
      }
      step = 'syncing the spare';
      await c.spare.sync();
      step = 'committing the remap to the metadata';
      await c.store.commit({
        add: [{ mainBlock: b, spareBlock, reason, createdAt: Date.now() }],
        pendingRemove: c.table.isPending(b) ? [b] : undefined,
      });
    } catch (err) {
      if (!SpareState.isSpareFailure(err)) {
        c.store.releaseSpareBlock(spareBlock);
        throw toDeviceError(err);
      }
      // The spare block stays reserved: it may be bad, or a half-written commit may name it.
      this.spareState.noteFailure(step, err);
      c.log.error(
        { block: b, offset: at, spareBlock, step, err: (err as Error).message },
        'remap failed: the spare cannot be written; the write fails',
      );
      throw new DeviceError('EIO', `spare device failing (${step}: ${(err as Error).message}): cannot remap the block at byte ${at}`, at);
    }
    c.log.warn({ block: b, offset: at, spareBlock, reason, remaps: c.table.size }, 'block remapped to the spare');
    c.events.emit('remap', { block: b, offset: at, reason });
    this.spareState.checkLevel();
    return spareBlock;
  }

  /**
   * Copy block b to the spare and remap it, verified. Main is read (with retries) under the block's lock,
   * so a client write racing the move is applied after it, to the spare. `data` (the block's contents,
   * read after `stamp` was taken) stands in when that read fails, but only if no write has begun since
   * the stamp (BlockLocks.unchangedSince): otherwise it may be older than a write already acknowledged.
   */
  async moveToSpare(b: MainBlock, reason: RemapReason, data?: Buffer, stamp?: WriteStamp): Promise<MigrationResult> {
    const c = this.c;
    if (!Number.isSafeInteger(b) || b < 0 || blockStart(b, c.blockSize) >= c.size)
      throw new DeviceError('EINVAL', `block ${b} is outside the device`);
    return c.locks.withLock(b, async () => {
      if (c.table.lookup(b) !== undefined) return 'already-remapped';
      const len = lengthOf(c, b);
      let contents: Buffer | undefined;
      let mediaOnly = true;
      const fresh = Buffer.allocUnsafe(len);
      for (let attempt = 0; attempt <= c.readRetries && !this.mainState.failed; attempt++) {
        try {
          await c.main.read(blockStart(b, c.blockSize), len, fresh, 0);
          contents = fresh;
          break;
        } catch (err) {
          if (err instanceof BackendError && !isMediaError(err.code)) {
            this.mainState.noteFailure(err, 'read');
            mediaOnly = false;
            break;
          }
        }
      }
      if (!contents && data && c.locks.unchangedSince(stamp)) contents = data;
      if (!contents) {
        if (mediaOnly && !this.mainState.failed && !c.table.isPending(b)) await this.markPending([b]);
        return 'unreadable';
      }
      try {
        await this.commitToSpare(b, contents, reason, true);
      } catch (err) {
        if (err instanceof DeviceError && err.errno === 'ENOSPC') return 'spare-full';
        throw err;
      }
      c.counters.migrated++;
      return 'migrated';
    });
  }

  /** Copy block b back to main and drop its remap. Refused when main cannot be written there. */
  async moveToMain(b: MainBlock): Promise<'unremapped' | 'not-remapped'> {
    const c = this.c;
    const at = blockStart(b, c.blockSize);
    return c.locks.withLock(b, async () => {
      const spareBlock = c.table.lookup(b);
      if (spareBlock === undefined) return 'not-remapped';
      const len = lengthOf(c, b);
      const data = Buffer.allocUnsafe(len);
      await c.spare.read(blockStart(spareBlock, c.blockSize), len, data, 0);
      try {
        await c.main.write(at, data);
        await c.main.sync();
        const check = Buffer.allocUnsafe(len);
        await c.main.read(at, len, check, 0);
        if (!check.equals(data)) throw new Error('read-back differs');
      } catch (err) {
        throw new DeviceError('EIO', `main device cannot be written at byte ${at} (${(err as Error).message}); block stays remapped`, at);
      }
      try {
        await c.store.commit({ remove: [b] });
      } catch (err) {
        if (SpareState.isSpareFailure(err)) this.spareState.noteFailure('committing an unremap to the metadata', err);
        throw toDeviceError(err);
      }
      c.log.info({ block: b, offset: at }, 'block moved back to the main device');
      c.events.emit('unremap', { block: b, offset: at });
      return 'unremapped';
    });
  }

  /** Record blocks as unreadable (pending): the next write to each remaps it. */
  async markPending(blocks: MainBlock[]): Promise<void> {
    const c = this.c;
    if (this.mainState.failed) return; // a dead device blames no block
    const fresh = blocks.filter((b) => !c.table.isPending(b) && c.table.lookup(b) === undefined);
    if (fresh.length === 0) return;
    try {
      await c.store.commit({ pendingAdd: fresh });
    } catch (err) {
      if (SpareState.isSpareFailure(err)) this.spareState.noteFailure('committing pending marks to the metadata', err);
      throw toDeviceError(err);
    }
    for (const b of fresh) {
      const at = blockStart(b, c.blockSize);
      c.log.error({ block: b, offset: at }, 'unreadable block: pending, the next write remaps it');
      c.events.emit('pending', { block: b, offset: at });
    }
  }
}
