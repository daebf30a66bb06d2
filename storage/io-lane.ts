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
}

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
}

interface Job {
  readonly start: number;
  readonly bufs: Buffer[];
  readonly done: (timedOut: boolean) => void;
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
    open.add(this);
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
    if (this.deadlineMs > 0 && !this.timer) {
      const every = Math.max(5, Math.min(1000, Math.floor(this.deadlineMs / 4)));
      this.timer = setInterval(this.checkDeadlines, every);
      this.timer.unref();
    }
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
    if (this.jobs.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    const limit = performance.now() - this.deadlineMs;
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
    const oldest = (m: Map<number, Job>): number => {
      for (const j of m.values()) return Math.round(now - j.start);
      return 0;
    };
    const [, stuck] = this.closed ? [0, this.stuckJobs.size] : native.lanes!.stats(this.handle);
    return {
      name: this.name,
      threads: this.threads,
      inFlight: this.jobs.size,
      oldestInFlightMs: oldest(this.jobs),
      stuck,
      oldestStuckMs: oldest(this.stuckJobs),
      timeouts: this.timeouts,
      deadlineMs: this.deadlineMs,
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
  }
}
