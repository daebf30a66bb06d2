/**
 * Batched reads, writes and syncs on a backend's I/O lane (storage/io-lane.ts): the requests one
 * backend receives in one event-loop turn are collected and run as a few native jobs of at most
 * BATCH_MAX_OPS ops / BATCH_MAX_BYTES bytes each (an op at least that large runs alone), instead of
 * one job per request. Jobs still run in parallel, so a real disk keeps seeing several requests at
 * once. REMAPD_IO_BATCH=N sets the ops per job (default 8). The pieces of a split request become one
 * vectored op first (storage/io-merge.ts).
 *
 * On a direct lane with Linux AIO (storage/io-lane.ts), the turn's aligned reads and writes go to the
 * kernel instead, one op each, in one system call; the threads get the rest.
 *
 * A job that misses the lane's deadline fails all its ops with ETIMEDOUT.
 */
import { BackendError, BackendKind } from './backend';
import { errnoError, toBackendError } from './io-errors';
import type { IoLane } from './io-lane';
import { mergeOps, scratch, type Unit } from './io-merge';
import * as native from './native';

export const BATCH_MAX_OPS = (() => {
  const v = Number(process.env.REMAPD_IO_BATCH ?? '8');
  return Number.isInteger(v) && v >= 1 ? Math.min(v, 64) : 8;
})();
const BATCH_MAX_BYTES = 256 * 1024;

/** True when lanes (and so batched native I/O) can be used. */
export const lanesAvailable = native.lanes !== undefined;

interface BatchOp {
  readonly kind: number;
  readonly offset: number;
  readonly length: number;
  readonly buf: Buffer;
  readonly bufOffset: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

const NO_BUF = Buffer.alloc(0);
const EAGAIN = 11;
const EOPNOTSUPP = 95;
const WHAT = ['read', 'write', 'fdatasync', 'stall', 'fallocate(PUNCH_HOLE)', 'fallocate(ZERO_RANGE)', 'ioctl(BLKZEROOUT)'];

/** Only reads and writes (no sync, trim, zero or stall). */
function onlyData(units: readonly Unit<BatchOp>[]): boolean {
  for (const u of units) if (u.kind > native.OP_WRITE) return false;
  return true;
}

/**
 * One backend's batch queue. `onDone` runs once per finished op (the backend's in-flight count).
 * `align` > 0: the fd is O_DIRECT with that alignment (the addon bounces unaligned ops).
 */
export class IoBatcher {
  private queue: BatchOp[] = [];
  private scheduled = false;

  constructor(
    private readonly lane: IoLane,
    private readonly fd: number,
    private readonly align: number,
    private readonly path: string,
    private readonly kind: BackendKind,
    private readonly onDone: () => void,
  ) {}

  /** Queue a read or write for the batch of this event-loop turn. */
  submit(write: boolean, offset: number, length: number, buf: Buffer, bufOffset: number): Promise<void> {
    return this.push(write ? native.OP_WRITE : native.OP_READ, offset, length, buf, bufOffset);
  }

  /** fdatasync on the lane (a hung device then holds a lane thread, not one of libuv's). */
  sync(): Promise<void> {
    return this.push(native.OP_SYNC, 0, 0, NO_BUF, 0);
  }

  /** Occupies a lane thread for `ms` like a hung device (tests of deadlines and lane independence). */
  stall(ms: number): Promise<void> {
    return this.push(native.OP_STALL, 0, ms, NO_BUF, 0);
  }

  /** Punch hole / zero range / BLKZEROOUT (native.OP_PUNCH …) on the lane, under its deadline. */
  range(kind: number, offset: number, length: number): Promise<void> {
    return this.push(kind, offset, length, NO_BUF, 0);
  }

  private push(kind: number, offset: number, length: number, buf: Buffer, bufOffset: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ kind, offset, length, buf, bufOffset, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(this.flush);
      }
    });
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const q = this.queue;
    this.queue = [];
    const units = mergeOps(q, true);
    this.runUnits(this.align > 0 && this.lane.aioReady ? this.runAio(units) : units);
  };

  /**
   * Packs units into jobs: the fewest jobs that respect BATCH_MAX_OPS, spread evenly. On a direct lane
   * every op waits for the disk and a job runs its ops one after the other, so there the units are spread
   * over as many jobs as the lane has threads first: 32 ops in 4 jobs of 8 would leave the disk a queue
   * of 4 (what the thread fallback did when AIO was refused). A turn with a sync, trim or stall in it is
   * packed as before, so the sync stays in the job behind the writes queued before it.
   */
  private runUnits(units: Unit<BatchOp>[]): void {
    if (units.length === 0) return;
    const jobs = Math.max(
      Math.ceil(units.length / BATCH_MAX_OPS),
      this.align > 0 && onlyData(units) ? Math.min(units.length, this.lane.threads) : 1,
    );
    const perJob = Math.ceil(units.length / jobs);
    let start = 0;
    let bytes = 0;
    for (let i = 0; i < units.length; i++) {
      const len = units[i].length;
      if (i > start && (i - start >= perJob || bytes + len > BATCH_MAX_BYTES)) {
        this.run(units.slice(start, i));
        start = i;
        bytes = 0;
      }
      bytes += len;
    }
    if (start < units.length) this.run(start === 0 ? units : units.slice(start));
  }

  /** The lane's wire format for these units: buffers, descriptors, and where each unit's header is. */
  private encode(units: Unit<BatchOp>[]): { bufs: Buffer[]; desc: Float64Array; at: number[] } {
    const bufs: Buffer[] = [];
    // A few buffers (a turn of random I/O): a linear search, no Map to allocate per batch.
    const index = units.length > 32 ? new Map<Buffer, number>() : undefined;
    const bufIndex = (b: Buffer): number => {
      let k = index ? index.get(b) : bufs.indexOf(b);
      if (k === undefined || k === -1) {
        k = bufs.length;
        bufs.push(b);
        index?.set(b, k);
      }
      return k;
    };
    let slots = 0;
    for (const u of units) slots += native.BATCH_HDR + 3 * u.segs.length;
    const desc = new Float64Array(slots);
    const at: number[] = [];
    let d = 0;
    for (const u of units) {
      at.push(d);
      desc[d] = u.kind;
      desc[d + 1] = u.offset;
      desc[d + 2] = u.length;
      desc[d + 3] = u.segs.length; // a sync or stall carries one empty segment
      let s = d + native.BATCH_HDR;
      for (let i = 0; i < u.segs.length; i++, s += 3) {
        const o = u.segs[i];
        if (o === -1) {
          desc[s] = bufIndex(scratch);
          desc[s + 1] = 0;
          desc[s + 2] = u.holes[i];
        } else {
          const op = u.ops[o];
          desc[s] = bufIndex(op.buf);
          desc[s + 1] = op.bufOffset;
          desc[s + 2] = op.kind <= native.OP_WRITE ? op.length : 0;
        }
      }
      d = s;
    }
    return { bufs, desc, at };
  }

  private fail(units: Unit<BatchOp>[], err: unknown): void {
    for (const u of units) {
      for (const op of u.ops) {
        this.onDone();
        op.reject(toBackendError(err, WHAT[op.kind], this.path, op.offset));
      }
    }
  }

  private run(units: Unit<BatchOp>[]): void {
    const { bufs, desc, at } = this.encode(units);
    try {
      this.lane.submit(this.fd, this.align, bufs, desc, (timedOut) => this.done(units, at, desc, timedOut));
    } catch (err) {
      this.fail(units, err);
    }
  }

  /**
   * Direct lanes: the turn's reads and writes go to Linux AIO in one system call; returns the units
   * left for the threads (not aligned, or the kernel did not take them). A turn with a sync, trim or
   * stall in it goes to the threads whole, so a sync stays behind the writes queued before it.
   */
  private runAio(units: Unit<BatchOp>[]): Unit<BatchOp>[] {
    if (!onlyData(units)) return units;
    const { bufs, desc, at } = this.encode(units);
    try {
      this.lane.submitAio(this.fd, this.align, bufs, desc, at, (k, timedOut) => this.aioDone(units[k], at[k], desc, timedOut));
    } catch (err) {
      this.fail(units, err);
      return [];
    }
    const rest: Unit<BatchOp>[] = [];
    for (let k = 0; k < units.length; k++) if (desc[at[k] + 5] === -1) rest.push(units[k]);
    return rest;
  }

  private aioDone(u: Unit<BatchOp>, d: number, desc: Float64Array, timedOut: boolean): void {
    const errno = desc[d + 5];
    // RWF_NOWAIT: the kernel would have blocked (EAGAIN) or cannot tell (EOPNOTSUPP); a short transfer
    // (end of file, a partial write): the threads run it to the end and say exactly what happened.
    if (!timedOut && (errno === EAGAIN || errno === EOPNOTSUPP || (errno === 0 && desc[d + 4] !== u.length))) {
      if (errno === EOPNOTSUPP) this.lane.disableAio(); // it would refuse every op: do not pay twice
      this.runUnits([u]);
      return;
    }
    const retry: Unit<BatchOp>[] = [];
    this.finish(u, d, desc, timedOut, retry);
    if (retry.length) this.runUnits(retry);
  }

  private done(units: Unit<BatchOp>[], at: number[], desc: Float64Array, timedOut: boolean): void {
    const retry: Unit<BatchOp>[] = [];
    for (let k = 0; k < units.length; k++) this.finish(units[k], at[k], desc, timedOut, retry);
    if (retry.length) this.runUnits(retry);
  }

  /** Settles one unit's ops from its result at desc[d]; the pieces of a failed merged unit go to `retry`. */
  private finish(u: Unit<BatchOp>, d: number, desc: Float64Array, timedOut: boolean, retry: Unit<BatchOp>[]): void {
    if (u.ops.length > 1) {
      // A merged unit: all done, or run the pieces again one by one for exact results.
      if (timedOut) for (const op of u.ops) this.settle(op, 0, 0, true);
      else if (desc[d + 5] === 0 && desc[d + 4] === u.length) for (const op of u.ops) this.settle(op, op.length, 0, false);
      else for (const op of u.ops) retry.push(mergeOps([op], false)[0]);
      return;
    }
    this.settle(u.ops[0], desc[d + 4], desc[d + 5], timedOut);
  }

  private settle(op: BatchOp, done: number, errno: number, timedOut: boolean): void {
    this.onDone();
    const what = WHAT[op.kind];
    if (timedOut) {
      op.reject(
        new BackendError(
          'ETIMEDOUT',
          `${what} ${this.path} at offset ${op.offset}: no answer within ${this.lane.deadlineMs} ms`,
          op.offset,
        ),
      );
    } else if (errno !== 0) {
      op.reject(toBackendError(errnoError(errno, what), what, this.path, op.offset + done));
    } else if (done < op.length && op.kind <= native.OP_WRITE) {
      const at = op.offset + done;
      if (op.kind === native.OP_WRITE) {
        op.reject(new BackendError('ENOSPC', `write ${this.path} at offset ${at}: no progress`, at));
      } else if (this.kind === 'file') {
        // A regular file shorter than `size` (sparse tail): the rest reads as zeroes.
        op.buf.fill(0, op.bufOffset + done, op.bufOffset + op.length);
        op.resolve();
      } else {
        op.reject(new BackendError('EIO', `read ${this.path} at offset ${at}: unexpected end of device`, at));
      }
    } else {
      op.resolve();
    }
  }
}
