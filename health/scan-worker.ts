/**
 * The health scanner's worker thread: reads the main device sequentially through its own read-only
 * file descriptor, rate-limited by a token bucket scaled by the parent's back-off factor, classifies
 * each chunk, narrows slow and failed chunks down to remap blocks, and reports findings. It never
 * changes anything: migrations and pending marks are done by the parent through the RemapDevice.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { BackendError, type Backend } from '../storage/backend';
import { openBackend } from '../storage/file-backend';
import { FaultInjectingBackend } from '../storage/fault-backend';
import { FaultRules } from '../storage/faults';
import { classifyLatency, type ScanSettings } from './config';
import type { Finding, FromWorker, ToWorker, WorkerInit } from './protocol';
import { TokenBucket } from './token-bucket';

const PROGRESS_EVERY_MS = 100;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

class ScanWorker {
  private settings: ScanSettings;
  private factor: number;
  private readonly bucket: TokenBucket;
  private job: { id: number; stop: boolean } | undefined;
  private running: Promise<void> = Promise.resolve();
  private faultWrapper: FaultInjectingBackend | undefined;
  private wake: (() => void) | undefined;

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
        const prev = this.running;
        this.running = prev.then(() => this.scan(job, m.fromOffset));
        this.poke();
        break;
      }
      case 'stop':
        if (this.job && this.job.id === m.id) this.job.stop = true;
        else this.post({ type: 'stopped', id: m.id, cursorOffset: -1 });
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

  private async scan(job: { id: number; stop: boolean }, fromOffset: number): Promise<void> {
    const size = this.raw.size;
    const chunk = this.settings.chunkBytes;
    const buf = Buffer.allocUnsafe(chunk);
    let cursor = Math.max(0, Math.min(fromOffset, size));
    let bytes = 0;
    let slowChunks = 0;
    let failedChunks = 0;
    let lastPost = performance.now();
    const progress = (): void => {
      this.post({ type: 'progress', id: job.id, cursorOffset: cursor, bytes, slowChunks, failedChunks });
      bytes = 0;
      slowChunks = 0;
      failedChunks = 0;
      lastPost = performance.now();
    };
    while (cursor < size) {
      if (job.stop) break;
      // Back-off: factor 0 holds the scan until the parent says client I/O has calmed down.
      if (this.factor === 0) {
        await this.nap(1000);
        continue;
      }
      const len = Math.min(chunk, size - cursor);
      if (this.settings.rate > 0) {
        const wait = this.bucket.take(len);
        if (wait > 0) {
          await this.nap(wait);
          if (job.stop) break;
        }
      }
      const t0 = performance.now();
      try {
        await this.dev.read(cursor, len, buf, 0);
        const ms = performance.now() - t0;
        if (classifyLatency(ms, this.settings) !== 'ok') {
          slowChunks++;
          await this.narrowSlow(job.id, cursor, len);
        }
      } catch (err) {
        failedChunks++;
        await this.narrowFailed(job.id, cursor, len, err);
      }
      cursor += len;
      bytes += len;
      if (performance.now() - lastPost >= PROGRESS_EVERY_MS) progress();
    }
    progress();
    if (job.stop) this.post({ type: 'stopped', id: job.id, cursorOffset: cursor });
    else this.post({ type: 'pass-end', id: job.id });
    if (this.job === job) this.job = undefined;
  }

  private blocksOf(offset: number, len: number): { block: number; start: number; length: number }[] {
    const B = this.init.blockSize;
    const out = [];
    for (let b = Math.floor(offset / B); b * B < offset + len; b++) {
      const start = Math.max(offset, b * B);
      out.push({ block: b, start, length: Math.min((b + 1) * B, offset + len, this.raw.size) - start });
    }
    return out;
  }

  private finding(id: number, f: Finding): void {
    this.post({ type: 'finding', id, finding: f });
  }

  /** A slow chunk: time each block alone; very slow ones are read once more to confirm. */
  private async narrowSlow(id: number, offset: number, len: number): Promise<void> {
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
        await this.narrowFailed(id, blk.start, blk.length, err);
        continue;
      }
      const cls = classifyLatency(ms, this.settings);
      if (cls === 'ok') continue;
      if (cls === 'very-slow') {
        let again = 0;
        try {
          again = await timed();
        } catch {
          again = ms;
        }
        const confirmed = classifyLatency(again, this.settings);
        this.finding(id, { kind: confirmed === 'very-slow' ? 'very-slow' : 'slow', block: blk.block, offset: blk.start, latencyMs: Math.round(Math.max(ms, again)) });
        continue;
      }
      this.finding(id, { kind: 'slow', block: blk.block, offset: blk.start, latencyMs: Math.round(ms) });
    }
  }

  /**
   * A failed chunk: read each block alone with retries, as the I/O path does. The block holding the
   * chunk's failing offset starts with one failure (that read was its first attempt).
   */
  private async narrowFailed(id: number, offset: number, len: number, first: unknown): Promise<void> {
    const failAt = first instanceof BackendError ? first.offset : -1;
    const buf = Buffer.allocUnsafe(this.init.blockSize);
    for (const blk of this.blocksOf(offset, len)) {
      let failures = failAt >= blk.start && failAt < blk.start + blk.length ? 1 : 0;
      let ok = false;
      let lastError = first instanceof Error ? first.message : String(first);
      for (let attempt = 0; attempt <= this.settings.readRetries; attempt++) {
        try {
          await this.dev.read(blk.start, blk.length, buf, 0);
          ok = true;
          break;
        } catch (err) {
          failures++;
          lastError = err instanceof Error ? err.message : String(err);
        }
      }
      if (ok && failures === 0) continue;
      this.finding(id, ok
        ? { kind: 'flaky', block: blk.block, offset: blk.start, failures }
        : { kind: 'unreadable', block: blk.block, offset: blk.start, failures, error: lastError });
    }
  }
}

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error('scan-worker must run in a worker thread');
  const init = workerData as WorkerInit;
  const queued: ToWorker[] = [];
  let worker: ScanWorker | undefined;
  port.on('message', (m: ToWorker) => (worker ? worker.handle(m) : queued.push(m)));
  // O_DIRECT: the scan reads the media, not the page cache, and does not evict the clients' cache.
  const raw = await openBackend(init.mainPath, { readOnly: true, direct: true, laneName: 'scan', ioThreads: 2 });
  const post = (m: FromWorker): void => port.postMessage(m);
  worker = new ScanWorker(raw, init, post);
  post({ type: 'ready', size: raw.size });
  for (const m of queued.splice(0)) worker.handle(m);
}

void main().catch((err) => {
  // Reported to the parent as the worker's 'error' event.
  setImmediate(() => {
    throw err;
  });
});
