/**
 * An I/O lane: one backend's own threads in the native addon (storage/native/io_lane.c), with an
 * optional deadline. Main and spare each get a lane, so a hung main device cannot take the threads
 * the spare, the metadata commits or libuv's shared pool need.
 *
 * Deadline: a job still unfinished after deadlineMs is abandoned and its ops fail with ETIMEDOUT (a
 * media error: storage/error-class.ts). A queued job is simply dropped. A running one cannot be
 * interrupted (the thread sits in the kernel): its thread is counted as stuck, a replacement thread
 * keeps the lane serving, and the job's buffers are held (storage/stuck-buffers.ts) until it
 * returns. The addon caps stuck threads per lane (maxStuck); past the cap the lane runs on what is
 * left, and once every thread is stuck, new jobs time out in the queue.
 *
 * Direct lanes (`aio: true`, O_DIRECT fds) send aligned reads and writes through Linux AIO instead
 * (storage/native/aio_lane.c: one io_submit per event-loop turn from the JS thread, completions through
 * an eventfd on the event loop), which costs far less CPU per request than a thread hand-off; the
 * threads keep everything else (syncs, trims, bounced unaligned ops, whatever the kernel would have
 * blocked on). Deadlines work the same: an AIO op past its deadline fails with ETIMEDOUT at once and
 * its buffers are held until the kernel returns it.
 *
 * Every lane is listed in openLanes() for status, metrics and the systemd watchdog.
 */
import { holdBuffers, releaseBuffers } from './stuck-buffers';
import * as native from './native';

export interface LaneOptions {
  /** Threads serving the lane (default 4). */
  readonly threads?: number;
  /** Abandon jobs older than this; 0 = never. */
  readonly deadlineMs?: number;
  /** At most this many threads may be stuck at once (default 16). */
  readonly maxStuck?: number;
  /** Use Linux AIO for aligned reads and writes where the kernel offers it (O_DIRECT fds only). */
  readonly aio?: boolean;
}

/** Ops a lane keeps in Linux AIO at once; more wait for the thread lane. */
const AIO_DEPTH = 256;

export interface LaneStats {
  readonly name: string;
  readonly threads: number;
  /** Jobs submitted and not finished (stuck ones excluded). */
  readonly inFlight: number;
  /** Age of the oldest job in flight, ms (0 when idle). */
  readonly oldestInFlightMs: number;
  /** Threads still blocked in an abandoned job. */
  readonly stuck: number;
  /** Age of the oldest stuck job, ms (0 when none). */
  readonly oldestStuckMs: number;
  /** Jobs that missed the deadline since the lane opened. */
  readonly timeouts: number;
  readonly deadlineMs: number;
  /** Reads and writes go through Linux AIO (a direct lane where the kernel offers it). */
  readonly aio: boolean;
  /** Ops the kernel took through AIO since the lane opened. */
  readonly aioOps: number;
}

interface Job {
  readonly start: number;
  readonly bufs: Buffer[];
  readonly done: (timedOut: boolean) => void;
}

/** One op in Linux AIO: op `k` of the submit call whose callback is `done`. */
interface AioJob {
  readonly start: number;
  readonly bufs: Buffer[];
  readonly k: number;
  readonly done: (k: number, timedOut: boolean) => void;
}

const open = new Set<IoLane>();

/** Every open lane (status, metrics, watchdog). */
export function openLanes(): IoLane[] {
  return [...open];
}

export class IoLane {
  private readonly handle: native.LaneHandle;
  private readonly jobs = new Map<number, Job>();
  private readonly stuckJobs = new Map<number, Job>();
  private readonly aioH: native.AioHandle | undefined;
  private readonly aioList: Float64Array | undefined;
  private readonly aioJobs = new Map<number, AioJob>();
  private readonly aioStuck = new Map<number, AioJob>();
  private aioOff = false;
  private aioOps = 0;
  private timer: NodeJS.Timeout | undefined;
  private timeouts = 0;
  private closed = false;
  readonly deadlineMs: number;
  readonly threads: number;

  constructor(
    readonly name: string,
    opts: LaneOptions = {},
  ) {
    if (!native.lanes) throw new Error('I/O lanes need the native addon');
    this.threads = opts.threads ?? 4;
    this.deadlineMs = opts.deadlineMs ?? 0;
    this.handle = native.lanes.create(this.threads, opts.maxStuck ?? 16, `remapd:lane:${name}`);
    if (opts.aio && native.aio) {
      this.aioList = new Float64Array(AIO_DEPTH);
      this.aioH = native.aio.create(AIO_DEPTH, this.aioList, this.aioFinished);
    }
    open.add(this);
  }

  /** True when aligned reads and writes can go through Linux AIO (submitAio). */
  get aioReady(): boolean {
    return this.aioH !== undefined && !this.closed && !this.aioOff;
  }

  /** The kernel cannot do non-blocking AIO on this fd (EOPNOTSUPP): the threads take everything. */
  disableAio(): void {
    this.aioOff = true;
  }

  /**
   * Sends the reads and writes of `desc` (headers at `at`) to Linux AIO in one system call. Ops the
   * kernel did not take have errno -1 in desc when this returns: the caller runs them on the threads.
   * For every op taken, `done(k, timedOut)` runs once: with its result in desc, or at the deadline.
   */
  submitAio(fd: number, align: number, bufs: Buffer[], desc: Float64Array, at: readonly number[], done: AioJob['done']): void {
    if (this.closed || !this.aioH) throw Object.assign(new Error(`I/O lane ${this.name} is closed`), { code: 'EBADF' });
    const first = native.aio!.submit(this.aioH, fd, align, bufs, desc);
    const start = performance.now();
    for (let k = 0; k < at.length; k++) {
      if (desc[at[k] + 5] === -1) continue;
      this.aioJobs.set((first + k) >>> 0, { start, bufs, k, done });
      this.aioOps++;
    }
    this.armDeadlines();
  }

  private readonly aioFinished = (n: number): void => {
    const list = this.aioList!;
    for (let i = 0; i < n; i++) {
      const id = list[i];
      const job = this.aioJobs.get(id);
      if (job) {
        this.aioJobs.delete(id);
        job.done(job.k, false);
        continue;
      }
      const stuck = this.aioStuck.get(id);
      if (stuck) {
        this.aioStuck.delete(id);
        releaseBuffers(stuck.bufs);
      }
    }
  };

  private armDeadlines(): void {
    if (this.deadlineMs > 0 && !this.timer) {
      const every = Math.max(5, Math.min(1000, Math.floor(this.deadlineMs / 4)));
      this.timer = setInterval(this.checkDeadlines, every);
      this.timer.unref();
    }
  }

  /**
   * Runs one job (see native.LaneApi.submit). `done(false)`: desc holds the results; `done(true)`:
   * the deadline passed and the results must be ignored.
   */
  submit(fd: number, align: number, bufs: Buffer[], desc: Float64Array, done: (timedOut: boolean) => void): void {
    if (this.closed) throw Object.assign(new Error(`I/O lane ${this.name} is closed`), { code: 'EBADF' });
    const job: Job = { start: performance.now(), bufs, done };
    const id = native.lanes!.submit(this.handle, fd, align, bufs, desc, (abandoned) => this.finished(id, abandoned));
    this.jobs.set(id, job);
    this.armDeadlines();
  }

  private finished(id: number, abandoned: boolean): void {
    if (abandoned) {
      const job = this.stuckJobs.get(id);
      this.stuckJobs.delete(id);
      if (job) releaseBuffers(job.bufs);
      return;
    }
    const job = this.jobs.get(id);
    if (!job) return; // dropped by the deadline just before it finished
    this.jobs.delete(id);
    job.done(false);
  }

  private readonly checkDeadlines = (): void => {
    if (this.jobs.size === 0 && this.aioJobs.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    const limit = performance.now() - this.deadlineMs;
    for (const [id, job] of this.aioJobs) {
      if (job.start > limit) break; // insertion order is start order
      this.aioJobs.delete(id);
      this.timeouts++;
      // Still in the kernel: its memory stays busy until it comes back (aioFinished releases it).
      if (native.aio!.abandon(this.aioH!, id)) {
        this.aioStuck.set(id, job);
        holdBuffers(job.bufs);
      }
      job.done(job.k, true);
    }
    for (const [id, job] of this.jobs) {
      if (job.start > limit) break; // insertion order is start order
      const outcome = native.lanes!.abandon(this.handle, id);
      if (outcome === 0) continue; // finished; its completion is on its way
      this.jobs.delete(id);
      this.timeouts++;
      if (outcome === 2) {
        this.stuckJobs.set(id, job);
        holdBuffers(job.bufs);
      }
      job.done(true);
    }
  };

  stats(): LaneStats {
    const now = performance.now();
    const oldest = (m: Map<number, { start: number }>): number => {
      for (const j of m.values()) return Math.round(now - j.start);
      return 0;
    };
    const [, stuck] = this.closed ? [0, this.stuckJobs.size] : native.lanes!.stats(this.handle);
    return {
      name: this.name,
      threads: this.threads,
      inFlight: this.jobs.size + this.aioJobs.size,
      oldestInFlightMs: Math.max(oldest(this.jobs), oldest(this.aioJobs)),
      stuck: stuck + this.aioStuck.size,
      oldestStuckMs: Math.max(oldest(this.stuckJobs), oldest(this.aioStuck)),
      timeouts: this.timeouts,
      deadlineMs: this.deadlineMs,
      aio: this.aioH !== undefined && !this.aioOff,
      aioOps: this.aioOps,
    };
  }

  /** Stops the threads once their queue is empty (the backend drains its I/O first). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.timer = undefined;
    open.delete(this);
    native.lanes!.close(this.handle);
    if (this.aioH) native.aio!.close(this.aioH);
  }
}
