/**
 * The health scanner's worker thread: reads the main device through its own read-only file descriptor,
 * rate-limited by a token bucket scaled by the parent's back-off factor. Suspect regions (hints from
 * import-map, SMART logs, or failures not yet isolated) are read first; then the sequential pass goes
 * on. Each chunk is classified; slow chunks are narrowed to remap blocks, failed ones are isolated down
 * to the failing sectors (media-isolator.ts). A device that fails as a whole stops the pass with one
 * 'device-failed' message and no block blamed. The worker never changes anything: migrations and
 * pending marks are done by the parent through the RemapDevice.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { type Backend } from '../storage/backend';
import { openBackend } from '../storage/file-backend';
import { FaultInjectingBackend } from '../storage/fault-backend';
import { FaultRules } from '../storage/faults';
import { blockOf, byteOffset, type ByteOffset, type MainBlock } from '../units';
import { classifyLatency, type ScanSettings } from './config';
import { MediaIsolator } from './media-isolator';
import { SUSPECT_JOB, type Finding, type FromWorker, type SuspectRegion, type ToWorker, type WorkerInit } from './protocol';
import { TokenBucket } from './token-bucket';

const PROGRESS_EVERY_MS = 100;

type Job = { id: number; stop: boolean };

class ScanWorker {
  private settings: ScanSettings;
  private factor: number;
  private readonly bucket: TokenBucket;
  private job: Job | undefined;
  private running: Promise<void> = Promise.resolve();
  private faultWrapper: FaultInjectingBackend | undefined;
  private wake: (() => void) | undefined;
  private suspects: SuspectRegion[] = [];
  /** Bumped by 'suspects-clear': a visit in progress notices and stops. */
  private suspectGen = 0;
  private visiting = false;
  /** Offset of a sector read successfully (the start of the last good chunk), or -1. */
  private lastGood = -1;
  /** Reads spent isolating failures since the last message that reported them. */
  private isolateReads = 0;

  constructor(
    private readonly raw: Backend,
    private readonly init: WorkerInit,
    private readonly post: (m: FromWorker) => void,
  ) {
    this.settings = init.settings;
    this.factor = init.factor;
    this.bucket = new TokenBucket(this.effectiveRate() || 1, init.settings.chunkBytes);
    if (init.faults) this.faultWrapper = new FaultInjectingBackend(raw, FaultRules.fromShared(init.faults));
  }

  private get dev(): Backend {
    return this.faultWrapper ?? this.raw;
  }

  private effectiveRate(): number {
    return this.settings.rate * this.factor;
  }

  handle(m: ToWorker): void {
    switch (m.type) {
      case 'scan': {
        if (this.job) this.job.stop = true;
        const job = { id: m.id, stop: false };
        this.job = job;
        this.running = this.running.then(() => this.scan(job, m.fromOffset));
        this.poke();
        break;
      }
      case 'stop':
        if (this.job && this.job.id === m.id) this.job.stop = true;
        else this.post({ type: 'stopped', id: m.id, cursorOffset: -1 });
        this.poke();
        break;
      case 'suspects':
        this.suspects.push(...m.regions);
        // No pass running: visit them now (a pass visits them before its next chunk).
        if (!this.job) this.running = this.running.then(() => this.visitSuspects(undefined)).then(() => undefined);
        this.poke();
        break;
      case 'suspects-clear':
        this.suspects = [];
        this.suspectGen++;
        this.poke();
        break;
      case 'config':
        this.settings = m.settings;
        this.factor = m.factor;
        if (this.effectiveRate() > 0) this.bucket.setRate(this.effectiveRate(), this.settings.chunkBytes);
        this.poke();
        break;
      case 'faults':
        if (m.faults === null) this.faultWrapper = undefined;
        else if (this.faultWrapper) this.faultWrapper.setRules(FaultRules.fromShared(m.faults));
        else this.faultWrapper = new FaultInjectingBackend(this.raw, FaultRules.fromShared(m.faults));
        break;
      case 'crash':
        setImmediate(() => {
          throw new Error('scan worker crash requested (test hook)');
        });
        break;
    }
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Waits up to ms, returning early when a message changes something. */
  private nap(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  /** Back-off and rate limit before a read of len bytes; false: not now (held, or told to stop). */
  private async pace(len: number, stopped: () => boolean): Promise<boolean> {
    // Back-off: factor 0 holds the scan until the parent says client I/O has calmed down.
    if (this.factor === 0) {
      await this.nap(1000);
      return false;
    }
    if (this.settings.rate > 0) {
      const wait = this.bucket.take(len);
      if (wait > 0) {
        await this.nap(wait);
        if (stopped()) return false;
      }
    }
    return true;
  }

  private async scan(job: Job, fromOffset: number): Promise<void> {
    const size = this.raw.size;
    const chunk = this.settings.chunkBytes;
    const buf = Buffer.allocUnsafe(chunk);
    let cursor = Math.max(0, Math.min(fromOffset, size));
    const stats = { bytes: 0, slowChunks: 0, failedChunks: 0 };
    let lastPost = performance.now();
    let failed = false;
    const progress = (): void => {
      this.post({ type: 'progress', id: job.id, cursorOffset: byteOffset(cursor), ...stats, isolateReads: this.takeIsolateReads() });
      stats.bytes = stats.slowChunks = stats.failedChunks = 0;
      lastPost = performance.now();
    };
    while (cursor < size) {
      if (job.stop) break;
      if (this.suspects.length && !(await this.visitSuspects(job))) {
        failed = true;
        break;
      }
      if (job.stop) break;
      const len = Math.min(chunk, size - cursor);
      if (!(await this.pace(len, () => job.stop))) continue;
      if (this.suspects.length) continue; // a hint arrived while waiting: it goes first
      if (!(await this.readChunk(job.id, byteOffset(cursor), len, buf, stats))) {
        failed = true;
        break;
      }
      cursor += len;
      stats.bytes += len;
      if (performance.now() - lastPost >= PROGRESS_EVERY_MS) progress();
    }
    progress();
    if (job.stop || failed) this.post({ type: 'stopped', id: job.id, cursorOffset: byteOffset(cursor) });
    else this.post({ type: 'pass-end', id: job.id });
    if (this.job === job) this.job = undefined;
  }

  /** Reads the queued suspect regions in order; false when the device failed. */
  private async visitSuspects(job: Job | undefined): Promise<boolean> {
    if (this.visiting) return true;
    this.visiting = true;
    try {
      const buf = Buffer.allocUnsafe(this.settings.chunkBytes);
      const stats = { bytes: 0, slowChunks: 0, failedChunks: 0 };
      while (this.suspects.length) {
        const gen = this.suspectGen;
        const stopped = (): boolean => gen !== this.suspectGen || (job?.stop ?? false);
        const r = this.suspects[0];
        const end = Math.min(r.offset + r.length, this.raw.size);
        let at: number = r.offset;
        while (at < end) {
          if (stopped()) return true; // cleared or paused: the parent sends the region again
          const len = Math.min(this.settings.chunkBytes, end - at);
          if (!(await this.pace(len, stopped))) continue;
          if (stopped()) return true;
          if (!(await this.readChunk(SUSPECT_JOB, byteOffset(at), len, buf, stats))) {
            this.suspects = [];
            return false;
          }
          at += len;
        }
        if (gen !== this.suspectGen) return true;
        this.suspects.shift();
        this.post({ type: 'suspect-done', regionId: r.id, isolateReads: this.takeIsolateReads() });
      }
      return true;
    } finally {
      this.visiting = false;
    }
  }

  private takeIsolateReads(): number {
    const n = this.isolateReads;
    this.isolateReads = 0;
    return n;
  }

  /**
   * Reads one chunk, classifies it, narrows slow blocks and isolates failures; findings are posted
   * under `id`. False when the device failed as a whole (already reported).
   */
  private async readChunk(
    id: number,
    offset: ByteOffset,
    len: number,
    buf: Buffer,
    stats: { slowChunks: number; failedChunks: number },
  ): Promise<boolean> {
    const t0 = performance.now();
    try {
      await this.dev.read(offset, len, buf, 0);
      this.lastGood = offset;
      const ms = performance.now() - t0;
      if (classifyLatency(ms, this.settings) !== 'ok') {
        stats.slowChunks++;
        return await this.narrowSlow(id, offset, len);
      }
      return true;
    } catch (err) {
      stats.failedChunks++;
      return this.isolate(id, offset, len, err);
    }
  }

  private blocksOf(offset: ByteOffset, len: number): { block: MainBlock; start: ByteOffset; length: number }[] {
    const B = this.init.blockSize;
    const out = [];
    for (let b = blockOf(offset, B); b * B < offset + len; b++) {
      const start = byteOffset(Math.max(offset, b * B));
      out.push({ block: b, start, length: Math.min((b + 1) * B, offset + len, this.raw.size) - start });
    }
    return out;
  }

  private finding(id: number, f: Finding): void {
    this.post({ type: 'finding', id, finding: f });
  }

  /** A failed read: find exactly which blocks fail (or that the device failed). */
  private async isolate(id: number, offset: ByteOffset, len: number, first: unknown): Promise<boolean> {
    const iso = new MediaIsolator(this.dev, {
      blockSize: this.init.blockSize,
      readRetries: this.settings.readRetries,
      maxReads: this.settings.maxIsolateReads,
    });
    const r = await iso.isolate(offset, len, first, this.lastGood);
    this.isolateReads += r.reads;
    if (r.deviceFailure) {
      this.post({ type: 'device-failed', id, failure: r.deviceFailure });
      return false;
    }
    for (const f of r.findings) this.finding(id, f);
    if (r.unresolved.length) this.post({ type: 'unresolved', ranges: r.unresolved });
    return true;
  }

  /** A slow chunk: time each block alone; very slow ones are read once more to confirm. */
  private async narrowSlow(id: number, offset: ByteOffset, len: number): Promise<boolean> {
    const buf = Buffer.allocUnsafe(this.init.blockSize);
    for (const blk of this.blocksOf(offset, len)) {
      const timed = async (): Promise<number> => {
        const t0 = performance.now();
        await this.dev.read(blk.start, blk.length, buf, 0);
        return performance.now() - t0;
      };
      let ms: number;
      try {
        ms = await timed();
      } catch (err) {
        if (!(await this.isolate(id, blk.start, blk.length, err))) return false;
        continue;
      }
      const cls = classifyLatency(ms, this.settings);
      if (cls === 'ok') continue;
      if (cls === 'very-slow') {
        let again: number;
        try {
          again = await timed();
        } catch {
          again = ms;
        }
        const confirmed = classifyLatency(again, this.settings);
        this.finding(id, {
          kind: confirmed === 'very-slow' ? 'very-slow' : 'slow',
          block: blk.block,
          offset: blk.start,
          latencyMs: Math.round(Math.max(ms, again)),
        });
        continue;
      }
      this.finding(id, { kind: 'slow', block: blk.block, offset: blk.start, latencyMs: Math.round(ms) });
    }
    return true;
  }
}

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error('scan-worker must run in a worker thread');
  const init = workerData as WorkerInit;
  const queued: ToWorker[] = [];
  const up: { worker?: ScanWorker } = {};
  port.on('message', (m: ToWorker) => (up.worker ? up.worker.handle(m) : queued.push(m)));
  // O_DIRECT: the scan reads the media, not the page cache, and does not evict the clients' cache.
  const raw = await openBackend(init.mainPath, { readOnly: true, direct: true, laneName: 'scan', ioThreads: 2 });
  const post = (m: FromWorker): void => port.postMessage(m);
  const worker = new ScanWorker(raw, init, post);
  up.worker = worker;
  post({ type: 'ready', size: raw.size, logicalBlockSize: raw.logicalBlockSize, direct: raw.direct === true });
  for (const m of queued.splice(0)) worker.handle(m);
}

void main().catch((err) => {
  // Reported to the parent as the worker's 'error' event.
  setImmediate(() => {
    throw err;
  });
});
