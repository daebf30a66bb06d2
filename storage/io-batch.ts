/**
 * Batched reads and writes through the native addon: the requests one backend receives in one
 * event-loop turn are collected and run as a few native jobs of at most BATCH_MAX_OPS ops /
 * BATCH_MAX_BYTES bytes each (an op at least that large runs alone), instead of one job per request.
 * Jobs still run in parallel, so a real disk keeps seeing several requests at once.
 * REMAPD_IO_BATCH=N sets the ops per job; 0 turns batching off (the backend then uses fs.read/write).
 */
import { BackendError, BackendKind } from './backend';
import { errnoError, toBackendError } from './io-errors';
import * as native from './native';

export const BATCH_MAX_OPS = (() => {
  const v = Number(process.env.REMAPD_IO_BATCH ?? '8');
  return Number.isInteger(v) && v >= 0 ? Math.min(v, 64) : 8;
})();
const BATCH_MAX_BYTES = 256 * 1024;
const OP_SLOTS = native.BATCH_HDR + 3; // one segment per op

/** True when batched native I/O can be used (addon loaded, batching not turned off). */
export const batchingAvailable = native.ioBatch !== undefined && BATCH_MAX_OPS > 0;

interface BatchOp {
  readonly write: boolean;
  readonly offset: number;
  readonly length: number;
  readonly buf: Buffer;
  readonly bufOffset: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/** One backend's batch queue. `onDone` runs once per finished op (the backend's in-flight count). */
export class IoBatcher {
  private queue: BatchOp[] = [];
  private scheduled = false;

  constructor(
    private readonly fd: number,
    private readonly path: string,
    private readonly kind: BackendKind,
    private readonly onDone: () => void,
  ) {}

  /** Queue a read or write for the batch of this event-loop turn. */
  submit(write: boolean, offset: number, length: number, buf: Buffer, bufOffset: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ write, offset, length, buf, bufOffset, resolve, reject });
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
    // Spread the ops evenly over the fewest jobs that respect BATCH_MAX_OPS.
    const perJob = Math.ceil(q.length / Math.ceil(q.length / BATCH_MAX_OPS));
    let start = 0;
    let bytes = 0;
    for (let i = 0; i < q.length; i++) {
      const len = q[i].length;
      if (i > start && (i - start >= perJob || bytes + len > BATCH_MAX_BYTES)) {
        this.run(q, start, i);
        start = i;
        bytes = 0;
      }
      bytes += len;
    }
    if (start < q.length) this.run(q, start, q.length);
  };

  private run(q: BatchOp[], start: number, end: number): void {
    const n = end - start;
    const bufs: Buffer[] = new Array<Buffer>(n);
    const desc = new Float64Array(n * OP_SLOTS);
    for (let i = 0; i < n; i++) {
      const op = q[start + i];
      const d = i * OP_SLOTS;
      bufs[i] = op.buf;
      desc[d] = op.write ? 1 : 0;
      desc[d + 1] = op.offset;
      desc[d + 2] = op.length;
      desc[d + 3] = 1;
      desc[d + native.BATCH_HDR] = i;
      desc[d + native.BATCH_HDR + 1] = op.bufOffset;
      desc[d + native.BATCH_HDR + 2] = op.length;
    }
    try {
      native.ioBatch!(this.fd, bufs, desc, () => this.done(q, start, end, desc));
    } catch (err) {
      for (let i = start; i < end; i++) {
        const op = q[i];
        this.onDone();
        op.reject(toBackendError(err, op.write ? 'write' : 'read', this.path, op.offset));
      }
    }
  }

  private done(q: BatchOp[], start: number, end: number, desc: Float64Array): void {
    for (let i = start; i < end; i++) {
      const op = q[i];
      const d = (i - start) * OP_SLOTS;
      const done = desc[d + 4];
      const errno = desc[d + 5];
      this.onDone();
      const what = op.write ? 'write' : 'read';
      if (errno !== 0) {
        op.reject(toBackendError(errnoError(errno, what), what, this.path, op.offset + done));
      } else if (done < op.length) {
        const at = op.offset + done;
        if (op.write) {
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
}
