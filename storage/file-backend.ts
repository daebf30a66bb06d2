/**
 * Backend on a regular file or a block device.
 *
 * Data path: with the native addon, reads, writes and syncs run batched on the backend's own I/O lane
 * (storage/io-batch.ts, storage/io-lane.ts: own threads, optional deadline). Without it, the callback
 * fs.read/fs.write API on a raw fd, one Promise per request however many syscalls it takes.
 *
 * Direct I/O (`direct: true`, O_DIRECT): requests reach the device, so a media error fails the very
 * request that met it (no write-back error surfacing at the next fsync), and reads see the disk, not
 * RAM. Aligned requests on aligned memory go straight to the kernel; anything else is bounced through
 * aligned memory by the addon, and a write that covers partial sectors is a read-modify-write kept in
 * order by storage/write-order.ts. Alignment: the logical block size on block devices, 4096 on files.
 * When O_DIRECT is impossible (no addon, a filesystem that refuses it, a file whose size is not a
 * multiple of 4096) the backend runs buffered: `direct` says which, `directNotice` says why.
 *
 * Trim/zero/extents use the optional native addon (storage/native.ts; trim and zero on the lane, so a
 * hung device holds the lane's threads and meets the deadline, not libuv's pool). Without it, trim and zero
 * write zeroes (canPunchHoles=false) and extents report everything as data (canReportHoles=false).
 *
 *               regular file                          block device
 *  trim         fallocate(PUNCH_HOLE|KEEP_SIZE)       fallocate(PUNCH_HOLE) = write-zeroes with
 *                                                     unmap, no fallback; if the device cannot,
 *                                                     BLKZEROOUT; then plain zero writes
 *  zero noHole  fallocate(ZERO_RANGE|KEEP_SIZE)       BLKZEROOUT (never unmaps)
 *  zero         as trim                               as trim
 *  extents      SEEK_DATA/SEEK_HOLE                   everything is data
 *
 * On block devices the sector-aligned middle of a range goes to the kernel; unaligned head and tail
 * bytes are written as zeroes. Every failure is a BackendError with the OS error code and the byte
 * offset of the failing system call (for a read or write split into several syscalls, that is the
 * first byte not yet transferred).
 */
import * as fs from 'fs';
import type { ByteOffset } from '../units';
import { Backend, BackendError, BackendKind } from './backend';
import * as native from './native';
import { IoBatcher, lanesAvailable } from './io-batch';
import { NodeErr, isUnsupported, toBackendError } from './io-errors';
import { IoLane, type LaneStats } from './io-lane';
import { WriteOrder } from './write-order';

export { blockDeviceInfo, devMajorMinor, type BlockDeviceInfo } from './block-device-info';
export { openBackend, openFileBackend, type OpenBackendOptions } from './open-backend';

const ZERO_CHUNK = 1024 * 1024;
let zeroBuffer: Buffer | undefined;
function zeroes(): Buffer {
  // Shared and never written into: writes only read from it. Page-aligned so O_DIRECT needs no bounce.
  if (!zeroBuffer) zeroBuffer = native.allocAligned?.(ZERO_CHUNK).fill(0) ?? Buffer.alloc(ZERO_CHUNK);
  return zeroBuffer;
}

/** How a backend does its reads and writes (decided at open). */
export interface IoMode {
  /** O_DIRECT in effect. */
  readonly direct: boolean;
  /** Alignment O_DIRECT needs (0 when buffered). */
  readonly align: number;
  /** Why direct I/O was asked for and is not in effect. */
  readonly notice?: string;
  readonly laneName: string;
  readonly threads?: number;
  readonly deadlineMs: number;
}

export class FileBackend implements Backend {
  readonly stableIds: { readonly serial?: string; readonly wwn?: string };
  /** From sysfs for block devices; false for files. */
  readonly rotational: boolean;
  readonly physicalBlockSize: number;
  private punchOk: boolean;
  private holesOk: boolean;
  private closed = false;
  private inFlight = 0;
  private drained: (() => void) | undefined;
  private readonly batcher: IoBatcher | undefined;
  private readonly lane: IoLane | undefined;
  private readonly order: WriteOrder | undefined;
  /** O_DIRECT in effect (see the header comment). */
  readonly direct: boolean;
  /** Why direct I/O was asked for and is not in effect (log it once). */
  readonly directNotice: string | undefined;
  /** Alignment of offsets, lengths and memory that O_DIRECT needs (0 when buffered). */
  readonly directAlign: number;

  constructor(
    readonly path: string,
    readonly kind: BackendKind,
    /** The open file descriptor (exposed for diagnostics and tests; do not close it). */
    readonly fd: number,
    readonly size: number,
    readonly logicalBlockSize: number,
    readonly readOnly: boolean,
    private readonly useNative: boolean,
    extra: {
      stableIds?: { serial?: string; wwn?: string };
      rotational?: boolean;
      physicalBlockSize?: number;
      punchHoles: boolean;
      io?: IoMode;
    },
  ) {
    this.stableIds = Object.freeze({ ...(extra.stableIds ?? {}) });
    this.rotational = extra.rotational ?? false;
    this.physicalBlockSize = extra.physicalBlockSize ?? logicalBlockSize;
    this.punchOk = extra.punchHoles;
    this.holesOk = useNative && kind === 'file';
    const io = extra.io ?? { direct: false, align: 0, laneName: path, deadlineMs: 0 };
    this.direct = io.direct;
    this.directAlign = io.direct ? io.align : 0;
    this.directNotice = io.notice;
    if (useNative && lanesAvailable) {
      this.lane = new IoLane(io.laneName, { threads: io.threads, deadlineMs: io.deadlineMs, aio: io.direct });
      this.batcher = new IoBatcher(this.lane, fd, this.directAlign, path, kind, () => this.end());
    }
    if (this.direct) this.order = new WriteOrder();
  }

  /**
   * Occupies one thread of this backend's lane for `ms`, as a hung device would; resolves when it
   * comes back or rejects with ETIMEDOUT at the deadline. For tests of deadlines and lanes.
   */
  stallLane(ms: number): Promise<void> {
    if (!this.batcher) return Promise.reject(new BackendError('ENOSYS', `${this.path}: no I/O lane`, 0));
    this.begin();
    return this.batcher.stall(ms);
  }

  /** The I/O lane's counters (undefined without the addon). */
  ioStats(): LaneStats | undefined {
    return this.lane?.stats();
  }

  get canPunchHoles(): boolean {
    return this.punchOk;
  }

  get canReportHoles(): boolean {
    return this.holesOk;
  }

  private check(what: string, offset: number, length: number, write: boolean): BackendError | undefined {
    if (this.closed) return new BackendError('EBADF', `${what} ${this.path}: backend is closed`, offset);
    if (write && this.readOnly) {
      return new BackendError('EROFS', `${what} ${this.path}: opened read-only`, offset);
    }
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      return new BackendError(
        'EINVAL',
        `${what} ${this.path}: range ${offset}+${length} is outside the device (size ${this.size})`,
        offset,
      );
    }
    return undefined;
  }

  private begin(): void {
    this.inFlight++;
  }

  private end(): void {
    if (--this.inFlight === 0 && this.drained) {
      const d = this.drained;
      this.drained = undefined;
      d();
    }
  }

  read(offset: ByteOffset, length: number, target: Buffer, targetOffset: number): Promise<void> {
    const bad = this.check('read', offset, length, false);
    if (bad) return Promise.reject(bad);
    if (targetOffset < 0 || targetOffset + length > target.length) {
      return Promise.reject(new BackendError('EINVAL', `read ${this.path}: target buffer too small`, offset));
    }
    if (length === 0) return Promise.resolve();
    this.begin();
    if (this.batcher) return this.batcher.submit(false, offset, length, target, targetOffset);
    return new Promise<void>((resolve, reject) => {
      const fd = this.fd;
      let done = 0;
      const onRead = (err: NodeErr | null, n: number): void => {
        if (err) {
          this.end();
          reject(toBackendError(err, 'read', this.path, offset + done));
          return;
        }
        if (n === 0) {
          if (this.kind === 'file') {
            // A regular file shorter than `size` (sparse tail): the rest reads as zeroes.
            target.fill(0, targetOffset + done, targetOffset + length);
            this.end();
            resolve();
            return;
          }
          this.end();
          reject(new BackendError('EIO', `read ${this.path} at offset ${offset + done}: unexpected end of device`, offset + done));
          return;
        }
        done += n;
        if (done < length) {
          fs.read(fd, target, targetOffset + done, length - done, offset + done, onRead);
        } else {
          this.end();
          resolve();
        }
      };
      fs.read(fd, target, targetOffset, length, offset, onRead);
    });
  }

  write(offset: ByteOffset, source: Buffer, sourceOffset = 0, length?: number): Promise<void> {
    const len = length ?? source.length - sourceOffset;
    const bad = this.check('write', offset, len, true);
    if (bad) return Promise.reject(bad);
    if (sourceOffset < 0 || sourceOffset + len > source.length) {
      return Promise.reject(new BackendError('EINVAL', `write ${this.path}: source buffer too small`, offset));
    }
    if (len === 0) return Promise.resolve();
    this.begin();
    if (this.batcher) return this.lanedWrite(offset, source, sourceOffset, len);
    return this.writeRaw(offset, source, sourceOffset, len).finally(() => this.end());
  }

  /** A write on the lane (begin() already called); in direct mode ordered around read-modify-writes. */
  private lanedWrite(offset: number, source: Buffer, sourceOffset: number, length: number): Promise<void> {
    const batcher = this.batcher!;
    if (!this.order) return batcher.submit(true, offset, length, source, sourceOffset);
    const a = this.directAlign;
    const lo = offset - (offset % a);
    const hi = Math.ceil((offset + length) / a) * a;
    const rmw = offset % a !== 0 || length % a !== 0;
    return this.order.run(lo, hi, rmw, () => batcher.submit(true, offset, length, source, sourceOffset));
  }

  private writeRaw(offset: number, source: Buffer, sourceOffset: number, length: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const fd = this.fd;
      let done = 0;
      const onWrite = (err: NodeErr | null, n: number): void => {
        if (err) {
          reject(toBackendError(err, 'write', this.path, offset + done));
          return;
        }
        if (n === 0) {
          reject(new BackendError('ENOSPC', `write ${this.path} at offset ${offset + done}: no progress`, offset + done));
          return;
        }
        done += n;
        if (done < length) {
          fs.write(fd, source, sourceOffset + done, length - done, offset + done, onWrite);
        } else {
          resolve();
        }
      };
      fs.write(fd, source, sourceOffset, length, offset, onWrite);
    });
  }

  private async writeZeroes(offset: number, length: number): Promise<void> {
    const z = zeroes();
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const n = Math.min(ZERO_CHUNK, end - pos);
      if (this.batcher) {
        this.begin();
        await this.lanedWrite(pos, z, 0, n);
      } else {
        await this.writeRaw(pos, z, 0, n);
      }
      pos += n;
    }
  }

  sync(): Promise<void> {
    if (this.closed) return Promise.reject(new BackendError('EBADF', `sync ${this.path}: backend is closed`, 0));
    this.begin();
    if (this.batcher) return this.batcher.sync();
    return new Promise<void>((resolve, reject) => {
      fs.fdatasync(this.fd, (err) => {
        this.end();
        if (err) reject(toBackendError(err, 'fdatasync', this.path, 0));
        else resolve();
      });
    });
  }

  /**
   * Runs `op` on the sector-aligned middle of the range (the whole range for files) and writes
   * zeroes to the unaligned head and tail of a block device range.
   */
  private async aligned(offset: number, length: number, op: (offset: number, length: number) => Promise<void>): Promise<void> {
    if (this.kind === 'file') return op(offset, length);
    const bs = this.logicalBlockSize;
    const end = offset + length;
    const midStart = Math.min(end, Math.ceil(offset / bs) * bs);
    const midEnd = Math.max(midStart, Math.floor(end / bs) * bs);
    if (midStart > offset) await this.writeZeroes(offset, midStart - offset);
    if (midEnd > midStart) await op(midStart, midEnd - midStart);
    if (end > midEnd) await this.writeZeroes(midEnd, end - midEnd);
  }

  /** Deallocate and zero: punch hole; on "unsupported" remember it and fall back. */
  private async punch(offset: number, length: number): Promise<void> {
    if (this.punchOk) {
      try {
        if (this.batcher) {
          this.begin();
          await this.batcher.range(native.OP_PUNCH, offset, length);
        } else {
          await native.punchHole(this.fd, offset, length);
        }
        return;
      } catch (err) {
        if (!isUnsupported(err)) throw toBackendError(err, 'punch hole in', this.path, offset);
        this.punchOk = false;
      }
    }
    await this.zeroNoHole(offset, length);
  }

  /** Zero and keep allocated. */
  private async zeroNoHole(offset: number, length: number): Promise<void> {
    if (this.useNative) {
      try {
        if (this.batcher) {
          this.begin();
          await this.batcher.range(this.kind === 'block' ? native.OP_ZEROOUT : native.OP_ZERO_RANGE, offset, length);
        } else if (this.kind === 'block') {
          await native.blkZeroout(this.fd, offset, length);
        } else {
          await native.zeroRange(this.fd, offset, length);
        }
        return;
      } catch (err) {
        if (!isUnsupported(err)) {
          throw toBackendError(err, this.kind === 'block' ? 'BLKZEROOUT on' : 'zero range of', this.path, offset);
        }
      }
    }
    await this.writeZeroes(offset, length);
  }

  async trim(offset: ByteOffset, length: number): Promise<void> {
    const bad = this.check('trim', offset, length, true);
    if (bad) throw bad;
    if (length === 0) return;
    this.begin();
    try {
      await this.aligned(offset, length, (o, l) => this.punch(o, l));
    } finally {
      this.end();
    }
  }

  async zero(offset: ByteOffset, length: number, noHole: boolean): Promise<void> {
    const bad = this.check('zero', offset, length, true);
    if (bad) throw bad;
    if (length === 0) return;
    this.begin();
    try {
      await this.aligned(offset, length, (o, l) => (noHole ? this.zeroNoHole(o, l) : this.punch(o, l)));
    } finally {
      this.end();
    }
  }

  async extents(offset: ByteOffset, length: number): Promise<{ length: number; hole: boolean }[]> {
    const bad = this.check('extents', offset, length, false);
    if (bad) throw bad;
    if (length === 0) return [];
    if (!this.holesOk) return [{ length, hole: false }];
    this.begin();
    try {
      return await native.mapExtents(this.fd, offset, length);
    } catch (err) {
      if (isUnsupported(err)) {
        this.holesOk = false;
        return [{ length, hole: false }];
      }
      throw toBackendError(err, 'map extents of', this.path, offset);
    } finally {
      this.end();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.inFlight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    this.lane?.close();
    await new Promise<void>((resolve, reject) => {
      fs.close(this.fd, (err) => (err ? reject(toBackendError(err, 'close', this.path, 0)) : resolve()));
    });
  }
}
