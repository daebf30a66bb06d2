/**
 * Read recovery: what happens when a read of main fails.
 *
 * A media error is bisected (bisect.ts), reading straight into the client's buffer: first down to remap
 * blocks, each single block retried `readRetries` times (a block is what can be blamed), then inside the
 * first failing block down to main's logical block size, for the exact first failing byte. Every healthy
 * piece of the request is read, and only blocks holding a sector that really fails count:
 *   - a remap block holding a sector that never reads is marked pending (the next write remaps it) and the
 *     request fails with EIO at the first failing byte;
 *   - a remap block in which a failed piece then read completely is flaky: its data is rescued to the
 *     spare (the mover copies it);
 *   - a healthy neighbour is never reported, never marked pending, never remapped.
 * A device or configuration fault (storage/error-class.ts) blames no block: the request fails as it is.
 * While main is failed (main-state.ts) a read is held (MainState.hold: the outage ride-through) and run
 * again through the device (`again`: routed anew) when main answers; when the hold is off or over it is
 * tried once and fails with EIO. No bisection, no marks either way.
 * Pending blocks that a later read covers completely and finds readable are rescued as well.
 */
import { DeviceError } from '../protocol/block-device';
import { BackendError } from '../storage/backend';
import { bisect, type BadPiece, type Piece } from './bisect';
import type { WriteStamp } from './block-locks';
import { toDeviceError } from './device-errors';
import { lengthOf, type RemapContext } from './context';
import type { MainState } from './main-state';
import type { Mover } from './mover';
import { blockOf, blockSpan, blockStart, coversBlock, type ByteLength, type ByteOffset, type MainBlock } from '../units';

/** The first failing byte of a bad piece (the device's own offset when it lies inside the piece). */
export function firstFailingByte(p: BadPiece): ByteOffset {
  const at = p.err.offset;
  return at >= p.offset && at < p.offset + p.length ? at : p.offset;
}

export class ReadRecovery {
  constructor(
    private readonly c: RemapContext,
    private readonly mover: Mover,
    private readonly mainState: MainState,
    /** The whole read again, routed anew (RemapDevice.read): after a hold, blocks may live elsewhere. */
    private readonly again: (offset: ByteOffset, length: ByteLength, target: Buffer, targetOffset: number) => Promise<void>,
  ) {}

  /** Read [offset, offset+length) of main into target; a failure is recovered as described above. */
  readMain(offset: ByteOffset, length: ByteLength, target: Buffer, targetOffset: number): Promise<void> {
    if (this.mainState.failed) return this.readWhileFailed(offset, length, target, targetOffset);
    const stamp = this.c.locks.writeStamp();
    return this.c.main.read(offset, length, target, targetOffset).then(this.countOk, (err: unknown) => {
      if (!(err instanceof BackendError)) throw toDeviceError(err);
      return this.recoverRead(offset, length, target, targetOffset, err, stamp);
    });
  }

  private readonly countOk = (): void => {
    this.mainState.ok.read++;
  };

  private async readWhileFailed(offset: ByteOffset, length: ByteLength, target: Buffer, targetOffset: number): Promise<void> {
    if (await this.mainState.hold()) return this.again(offset, length, target, targetOffset);
    try {
      await this.c.main.read(offset, length, target, targetOffset);
    } catch (err) {
      throw this.failedDeviceError(err, offset);
    }
    this.mainState.noteSuccess('read');
  }

  /** This read found main failed: held until main answers (then run again), else EIO as it stands. */
  private async holdOrFail(offset: ByteOffset, length: ByteLength, target: Buffer, targetOffset: number, err: unknown): Promise<void> {
    if (await this.mainState.hold()) return this.again(offset, length, target, targetOffset);
    throw this.failedDeviceError(err, offset);
  }

  private failedDeviceError(err: unknown, offset: ByteOffset): DeviceError {
    if (err instanceof BackendError) this.mainState.noteFailure(err, 'read');
    return new DeviceError('EIO', `main device failed: read at byte ${offset} not attempted again (${(err as Error).message})`, offset);
  }

  private async recoverRead(
    offset: ByteOffset,
    length: ByteLength,
    target: Buffer,
    targetOffset: number,
    first: BackendError,
    stamp: WriteStamp,
  ): Promise<void> {
    const c = this.c;
    const ms = this.mainState;
    if (ms.noteFailure(first, 'read') !== 'media' || ms.failed) {
      if (ms.failed) return this.holdOrFail(offset, length, target, targetOffset, first);
      throw toDeviceError(first);
    }
    const attempt = (o: ByteOffset, l: ByteLength): Promise<void> => c.main.read(o, l, target, targetOffset + (o - offset));
    let stalled = false;
    const onStall = (): Promise<void> => {
      stalled = true;
      return ms.noteDeadRange(offset, 'read');
    };
    const keepGoing = (): boolean => !ms.failed;
    let found;
    let exact: ByteOffset | undefined;
    try {
      // Which remap blocks fail (each single block retried readRetries times) …
      found = await bisect(offset, length, first, attempt, { unit: c.blockSize, leafRetries: c.readRetries, keepGoing, onStall });
      // … and, inside the first of them, which sector: the exact byte the client is told.
      const fb = found.bad[0];
      if (fb) {
        exact = firstFailingByte(fb);
        if (fb.length > c.main.logicalBlockSize) {
          const sub = await bisect(fb.offset, fb.length, fb.err, attempt, { unit: c.main.logicalBlockSize, leafRetries: 0, keepGoing });
          const s0 = sub.bad[0] ?? sub.unresolved[0];
          if (s0) exact = firstFailingByte(s0);
        }
      }
    } catch (err) {
      if (err instanceof BackendError) ms.noteFailure(err, 'read');
      if (ms.failed) return this.holdOrFail(offset, length, target, targetOffset, err);
      throw toDeviceError(err);
    }
    if (found.successes > 0) ms.noteSuccess('read');
    else if (!stalled) await ms.noteDeadRange(offset, 'read');
    if (ms.failed) return this.holdOrFail(offset, length, target, targetOffset, first);

    const bad = new Set<MainBlock>(found.bad.map((p) => blockOf(p.offset, c.blockSize)));
    const flaky = new Set<MainBlock>();
    for (const p of found.flaky) {
      const b = this.blockOfPiece(p);
      if (b !== undefined && !bad.has(b)) flaky.add(b);
    }
    c.counters.readErrors += bad.size + flaky.size;
    for (const b of flaky)
      await this.rescue(b, offset, length, target, targetOffset, stamp, 'block read only on retry: data rescued to the spare');
    if (bad.size) await this.mover.markPending([...bad]);
    const firstUnresolved = found.unresolved[0];
    if (exact === undefined && !firstUnresolved) return;
    let failAt = Math.min(exact ?? Infinity, firstUnresolved ? firstUnresolved.offset : Infinity);
    failAt = Math.min(Math.max(failAt, offset), offset + length - 1);
    const what = exact !== undefined ? 'unreadable sector' : 'read failure (not isolated: too many failing pieces)';
    throw new DeviceError('EIO', `${what} on the main device at byte ${failAt} (${(found.bad[0] ?? firstUnresolved).err.code})`, failAt);
  }

  /** The remap block a piece lies in, when it lies in just one. */
  private blockOfPiece(p: Piece): MainBlock | undefined {
    const [b, last] = blockSpan(p.offset, p.length, this.c.blockSize);
    return b === last ? b : undefined;
  }

  /**
   * Copy block b to the spare. When the request covered it, its bytes in `target` (read after `stamp`)
   * may stand in for a re-read under the lock, but only if no write could have changed it since.
   */
  private async rescue(
    b: MainBlock,
    offset: ByteOffset,
    length: ByteLength,
    target: Buffer,
    targetOffset: number,
    stamp: WriteStamp,
    msg: string,
  ): Promise<void> {
    const c = this.c;
    const start = blockStart(b, c.blockSize);
    const len = lengthOf(c, b);
    let data: Buffer | undefined;
    if (coversBlock(offset, length, start, len)) {
      const at = targetOffset + (start - offset);
      data = Buffer.from(target.subarray(at, at + len));
    }
    let result;
    try {
      result = await this.mover.moveToSpare(b, 'read-error', data, stamp);
    } catch (err) {
      // The client's data was read: a failed rescue (spare failing, …) is logged, not the request's error.
      c.log.warn({ block: b, offset: start, err: (err as Error).message }, 'rescue of a block that read only on retry failed');
      return;
    }
    if (result === 'migrated') {
      c.counters.rescued++;
      c.log.warn({ block: b, offset: start }, msg);
    }
  }

  /** Pending blocks that a read covered completely and found readable are rescued to the spare. */
  async rescuePendingThatRead(
    offset: ByteOffset,
    length: ByteLength,
    target: Buffer,
    targetOffset: number,
    stamp: WriteStamp,
  ): Promise<void> {
    const c = this.c;
    const [first, last] = blockSpan(offset, length, c.blockSize);
    for (let b = first; b <= last; b++) {
      if (!c.table.isPending(b)) continue;
      if (!coversBlock(offset, length, blockStart(b, c.blockSize), lengthOf(c, b))) continue;
      await this.rescue(b, offset, length, target, targetOffset, stamp, 'pending block read again: data rescued to the spare');
    }
  }
}
