/**
 * HealthScanner: the main-thread side of the background scan. It owns the scan's state (cursor,
 * passes, schedule, pause), runs the reading in a worker thread (scan-worker.ts) and only exchanges
 * messages with it, so the NBD event loop never waits on a scan read. It samples the device's client
 * I/O counter to back the worker off, persists progress in the metadata, turns the worker's findings
 * into migrations (device.moveToSpare) and pending marks (device.markPending), computes the health
 * score, and restarts the worker with back-off when it dies.
 */
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { ScanState } from '../metadata/types';
import type { SharedFaultRules } from '../storage/faults';
import type { MigrationResult, RemapStatus } from '../remap/remap-device';
import type { RemapReason } from '../metadata/types';
import { backoffFactor, DEFAULT_SCAN_SETTINGS, type ScanSettings } from './config';
import { formatDuration } from './duration';
import type { Finding, FromWorker, ToWorker, WorkerInit } from './protocol';
import { healthScore, type HealthLabel, type Score } from './score';

/** What the scanner needs from the remapping device (RemapDevice satisfies it). */
export interface ScanDevice {
  readonly size: number;
  readonly remapBlockSize: number;
  readonly ioActivity: number;
  readonly store: { scanState(): ScanState; saveScanState(s: ScanState): Promise<void> };
  isRemapped(block: number): boolean;
  isPending(block: number): boolean;
  moveToSpare(block: number, reason: RemapReason): Promise<MigrationResult>;
  markPending(blocks: number[]): Promise<void>;
  status(): RemapStatus;
}

export interface ScannerOptions {
  readonly mainPath: string;
  readonly logger: Logger;
  readonly settings?: Partial<ScanSettings>;
  readonly faults?: SharedFaultRules | null;
  /** Worker script (tests may pass another); default: scan-worker.js beside this file. */
  readonly workerPath?: string;
  /** Longest wait before restarting a dead worker, ms (default 60 s; the first wait is 1 s). */
  readonly maxRestartDelayMs?: number;
}

export type ScanStateName = 'running' | 'paused' | 'idle' | 'waiting';

export interface ScanStatus {
  state: ScanStateName;
  /** While running: 'none', 'slowed' (client I/O, 1/4 rate) or 'held' (busy clients, no scan reads). */
  throttle: 'none' | 'slowed' | 'held';
  /** Fraction of the current pass done, 0 to 1. */
  progress: number;
  /** The same in percent, for people. */
  progressPercent: number;
  cursorOffset: number;
  size: number;
  /** Configured rate, bytes/s (0 = unlimited). */
  rate: number;
  /** Measured scan rate over the last few seconds, bytes/s. */
  currentRate: number;
  intervalMs: number;
  interval: string;
  passesCompleted: number;
  /** ISO time of the end of the last full pass, or null. */
  lastFullScanAt: string | null;
  /** ISO time the next pass starts (state waiting), or null. */
  nextScanAt: string | null;
  score: number;
  label: HealthLabel;
  trend: Score['trend'];
  penalties: Record<string, number>;
  blocks: { slow: number; failed: number; flaky: number; migrated: number; pending: number };
  /** Byte offsets of blocks the scan could not read (still pending), at most 1000. */
  pendingOffsets: number[];
  /** Byte offsets of slow blocks seen and not (yet) migrated, at most 1000. */
  slowOffsets: number[];
  workerRestarts: number;
  blockSize: number;
}

const ERROR_REASONS = ['read-error', 'write-error', 'scan-flaky', 'scan-error', 'spare-error'];
const RATE_WINDOW_MS = 5000;

export class HealthScanner extends EventEmitter {
  private settings: ScanSettings;
  private readonly log: Logger;
  private worker: Worker | undefined;
  private workerReady = false;
  private state: ScanStateName = 'idle';
  private closed = false;
  private scanId = 0;
  private cursor: number;
  private passes: number;
  private lastFullScanAt: number;
  private savedCursor: number;
  private nextScanAt = 0;
  private waitTimer: NodeJS.Timeout | undefined;
  private sampleTimer: NodeJS.Timeout | undefined;
  private persistTimer: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private restarts = 0;
  private consecutiveCrashes = 0;
  private workerStartedAt = 0;
  private factor = 1;
  private lastIo: number;
  private lastSampleAt = Date.now();
  private faults: SharedFaultRules | null;
  private readonly rateSamples: { at: number; bytes: number }[] = [];
  /** block → {lastPass, consecutive passes slow}. */
  private readonly slowHistory = new Map<number, { lastPass: number; passes: number }>();
  private readonly failed = new Set<number>();
  private readonly flaky = new Set<number>();
  private migrated = 0;
  /** Distinct blocks with new findings in the pass in progress, and per completed pass. */
  private passFindings = new Set<number>();
  private readonly recentPasses: number[] = [];
  private label: HealthLabel | undefined;
  private migrations: Promise<void> = Promise.resolve();
  private saving: Promise<void> = Promise.resolve();

  constructor(
    private readonly device: ScanDevice,
    private readonly opts: ScannerOptions,
  ) {
    super();
    this.log = opts.logger.child({ component: 'scanner' });
    this.settings = { ...DEFAULT_SCAN_SETTINGS, ...opts.settings };
    this.faults = opts.faults ?? null;
    const st = device.store.scanState();
    this.cursor = st.cursorOffset >= 0 && st.cursorOffset < device.size ? st.cursorOffset : 0;
    this.savedCursor = this.cursor;
    this.passes = st.passesCompleted;
    this.lastFullScanAt = st.lastFullScanAt;
    this.lastIo = device.ioActivity;
  }

  // ---------------------------------------------------------------- public API

  /** Starts the worker and the schedule: resumes an interrupted pass, else waits for the next one. */
  begin(): void {
    if (this.closed || this.worker) return;
    this.spawnWorker();
    this.sampleTimer = setInterval(() => this.sample(), this.settings.sampleMs).unref();
    this.persistTimer = setInterval(() => void this.persist(), this.settings.persistEveryMs).unref();
    const due = this.lastFullScanAt + this.settings.intervalMs;
    if (this.cursor > 0 || this.lastFullScanAt === 0 || due <= Date.now()) {
      if (this.cursor > 0) this.log.info({ cursorOffset: this.cursor, passesCompleted: this.passes }, 'resuming the health scan where it stopped');
      this.run();
    } else {
      this.wait();
    }
    this.updateLabel();
  }

  /** Starts a pass now (or resumes a paused one). */
  start(): ScanStatus {
    if (this.closed) throw new Error('the scanner is closed');
    if (!this.worker && !this.restartTimer) this.begin();
    if (this.state !== 'running') {
      this.log.info({ cursorOffset: this.cursor }, 'health scan started by the operator');
      this.run();
    }
    return this.status();
  }

  pause(): ScanStatus {
    if (this.state === 'running' || this.state === 'waiting') {
      this.clearWait();
      this.post({ type: 'stop', id: this.scanId });
      this.state = 'paused';
      this.worker?.unref();
      this.log.info({ cursorOffset: this.cursor }, 'health scan paused');
      void this.persist();
    }
    return this.status();
  }

  resume(): ScanStatus {
    if (this.state === 'paused') {
      this.log.info({ cursorOffset: this.cursor }, 'health scan resumed');
      // A pass in progress continues; between passes the schedule decides.
      if (this.cursor > 0 || this.lastFullScanAt + this.settings.intervalMs <= Date.now()) this.run();
      else this.wait();
    }
    return this.status();
  }

  set(o: { rate?: number; intervalMs?: number }): ScanStatus {
    if (o.rate !== undefined) {
      if (!(o.rate >= 0) || !Number.isFinite(o.rate)) throw new Error('rate must be a non-negative number of bytes/s');
      this.settings.rate = o.rate;
    }
    if (o.intervalMs !== undefined) {
      if (!(o.intervalMs >= 0) || !Number.isFinite(o.intervalMs)) throw new Error('interval must be a non-negative duration');
      this.settings.intervalMs = o.intervalMs;
      if (this.state === 'waiting') this.wait();
    }
    this.sendConfig();
    this.log.info({ rate: this.settings.rate, interval: formatDuration(this.settings.intervalMs) }, 'health scan settings changed');
    return this.status();
  }

  setFaultRules(shared: SharedFaultRules | null): void {
    this.faults = shared;
    this.post({ type: 'faults', faults: shared });
  }

  /** Test hook: make the worker throw. */
  crashWorker(): void {
    this.post({ type: 'crash' });
  }

  status(): ScanStatus {
    const dev = this.device.status();
    const sc = this.computeScore(dev);
    const now = Date.now();
    while (this.rateSamples.length && this.rateSamples[0].at < now - RATE_WINDOW_MS) this.rateSamples.shift();
    const recent = this.rateSamples.reduce((a, s) => a + s.bytes, 0);
    const span = this.rateSamples.length ? Math.max(1000, now - this.rateSamples[0].at) : RATE_WINDOW_MS;
    const pendingOffsets = dev.pending.offsets;
    return {
      state: this.state,
      throttle: this.factor === 1 ? 'none' : this.factor === 0 ? 'held' : 'slowed',
      progress: this.device.size > 0 ? +(this.cursor / this.device.size).toFixed(4) : 1,
      progressPercent: this.device.size > 0 ? +((100 * this.cursor) / this.device.size).toFixed(2) : 100,
      cursorOffset: this.cursor,
      size: this.device.size,
      rate: this.settings.rate,
      currentRate: Math.round((recent * 1000) / span),
      intervalMs: this.settings.intervalMs,
      interval: formatDuration(this.settings.intervalMs),
      passesCompleted: this.passes,
      lastFullScanAt: this.lastFullScanAt ? new Date(this.lastFullScanAt).toISOString() : null,
      nextScanAt: this.state === 'waiting' ? new Date(this.nextScanAt).toISOString() : null,
      score: sc.score,
      label: sc.label,
      trend: sc.trend,
      penalties: sc.penalties,
      blocks: {
        slow: this.slowNotMigrated(),
        failed: this.failed.size,
        flaky: this.flaky.size,
        migrated: this.migrated,
        pending: dev.pending.count,
      },
      pendingOffsets,
      slowOffsets: [...this.slowHistory.keys()].filter((b) => !this.device.isRemapped(b)).sort((a, b) => a - b).slice(0, 1000).map((b) => b * this.device.remapBlockSize),
      workerRestarts: this.restarts,
      blockSize: this.device.remapBlockSize,
    };
  }

  /** Waits for queued migrations (tests, shutdown). */
  idle(): Promise<void> {
    return this.migrations;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.clearWait();
    for (const t of [this.sampleTimer, this.persistTimer, this.restartTimer]) if (t) clearInterval(t);
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate().catch(() => undefined);
    await this.migrations;
    await this.persist();
    await this.saving;
    this.state = 'idle';
  }

  // ---------------------------------------------------------------- schedule

  private run(): void {
    this.clearWait();
    this.state = 'running';
    this.worker?.ref();
    this.scanId++;
    if (this.cursor === 0) this.passFindings = new Set();
    this.post({ type: 'scan', id: this.scanId, fromOffset: this.cursor });
  }

  private wait(): void {
    this.clearWait();
    this.state = 'waiting';
    this.worker?.unref();
    this.nextScanAt = this.lastFullScanAt + this.settings.intervalMs;
    const delay = Math.max(0, this.nextScanAt - Date.now());
    // setTimeout holds at most ~24.8 days; re-arm in steps.
    this.waitTimer = setTimeout(() => (Date.now() >= this.nextScanAt ? this.run() : this.wait()), Math.min(delay, 2 ** 31 - 1));
    this.waitTimer.unref();
  }

  private clearWait(): void {
    if (this.waitTimer) clearTimeout(this.waitTimer);
    this.waitTimer = undefined;
  }

  // ---------------------------------------------------------------- worker

  private spawnWorker(): void {
    const init: WorkerInit = {
      mainPath: this.opts.mainPath,
      blockSize: this.device.remapBlockSize,
      faults: this.faults,
      settings: this.settings,
      factor: this.factor,
    };
    const w = new Worker(this.opts.workerPath ?? join(__dirname, 'scan-worker.js'), { workerData: init });
    this.worker = w;
    this.workerReady = false;
    this.workerStartedAt = Date.now();
    // Referenced only while a pass runs: a waiting or paused scanner never keeps the process alive.
    if (this.state !== 'running') w.unref();
    w.on('message', (m: FromWorker) => this.onMessage(m));
    w.on('error', (err) => {
      if (this.worker !== w) return;
      this.log.error({ err }, 'health scan worker crashed');
    });
    w.on('exit', (code) => {
      if (this.worker !== w) return;
      this.worker = undefined;
      if (this.closed) return;
      this.onWorkerDied(code);
    });
  }

  private onWorkerDied(code: number): void {
    if (Date.now() - this.workerStartedAt > 60_000) this.consecutiveCrashes = 0;
    this.consecutiveCrashes++;
    this.restarts++;
    const max = this.opts.maxRestartDelayMs ?? 60_000;
    const delay = Math.min(max, 1000 * 2 ** (this.consecutiveCrashes - 1));
    this.log.error({ exitCode: code, restartInMs: delay, restarts: this.restarts, cursorOffset: this.cursor }, 'health scan worker exited unexpectedly; restarting it');
    this.emit('worker-exit', { code, restarts: this.restarts });
    void this.persist();
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.closed) return;
      this.spawnWorker();
      this.log.warn({ restarts: this.restarts }, 'health scan worker restarted');
      if (this.state === 'running') this.run();
    }, delay);
  }

  private post(m: ToWorker): void {
    this.worker?.postMessage(m);
  }

  private sendConfig(): void {
    this.post({ type: 'config', settings: this.settings, factor: this.factor });
  }

  /** Client I/O back-off: requests/s since the last sample decide the worker's rate factor. */
  private sample(): void {
    const now = Date.now();
    const io = this.device.ioActivity;
    const rps = ((io - this.lastIo) * 1000) / Math.max(1, now - this.lastSampleAt);
    this.lastIo = io;
    this.lastSampleAt = now;
    const f = this.settings.backoff ? backoffFactor(rps, this.settings.busyRequestsPerSec) : 1;
    if (f !== this.factor) {
      this.factor = f;
      this.sendConfig();
    }
  }

  private onMessage(m: FromWorker): void {
    switch (m.type) {
      case 'ready':
        this.workerReady = true;
        return;
      case 'log':
        this.log[m.level](m.data ?? {}, m.msg);
        return;
      case 'progress':
        if (m.id !== this.scanId) return;
        this.cursor = m.cursorOffset;
        if (m.bytes > 0) this.rateSamples.push({ at: Date.now(), bytes: m.bytes });
        if (this.rateSamples.length > 1000) this.rateSamples.splice(0, 500);
        return;
      case 'stopped':
        if (m.id === this.scanId && m.cursorOffset >= 0) this.cursor = m.cursorOffset;
        return;
      case 'finding':
        if (m.id !== this.scanId) return;
        this.onFinding(m.finding);
        return;
      case 'pass-end':
        if (m.id !== this.scanId) return;
        this.onPassEnd();
        return;
    }
  }

  // ---------------------------------------------------------------- findings

  private onFinding(f: Finding): void {
    const b = f.block;
    if (this.device.isRemapped(b)) return; // main's copy is no longer used
    this.passFindings.add(b);
    switch (f.kind) {
      case 'slow':
      case 'very-slow': {
        const h = this.slowHistory.get(b);
        const pass = this.passes;
        const passes = !h ? 1 : h.lastPass === pass ? h.passes : h.lastPass === pass - 1 ? h.passes + 1 : 1;
        this.slowHistory.set(b, { lastPass: pass, passes });
        this.log.warn({ block: b, offset: f.offset, latencyMs: f.latencyMs, kind: f.kind, passes }, 'health scan: slow block');
        if (f.kind === 'very-slow' || passes >= this.settings.slowPasses) this.migrate(b, 'scan-slow');
        break;
      }
      case 'flaky':
        this.flaky.add(b);
        this.log.warn({ block: b, offset: f.offset, failures: f.failures }, 'health scan: block read only on retry');
        this.migrate(b, 'scan-flaky');
        break;
      case 'unreadable':
        this.failed.add(b);
        this.log.error({ block: b, offset: f.offset, failures: f.failures, error: f.error }, 'health scan: unreadable block (pending: the next write remaps it)');
        this.migrations = this.migrations.then(async () => {
          if (this.device.isRemapped(b) || this.device.isPending(b)) return;
          try {
            await this.device.markPending([b]);
          } catch (err) {
            this.log.error({ err, block: b }, 'health scan: marking a block pending failed');
          }
          this.updateLabel();
        });
        break;
    }
    this.updateLabel();
  }

  private migrate(b: number, reason: 'scan-slow' | 'scan-flaky'): void {
    this.migrations = this.migrations.then(async () => {
      if (this.closed || this.device.isRemapped(b)) return;
      try {
        const r = await this.device.moveToSpare(b, reason);
        if (r === 'migrated') {
          this.migrated++;
          this.slowHistory.delete(b);
          this.log.warn({ block: b, offset: b * this.device.remapBlockSize, reason }, 'health scan: block migrated to the spare');
        } else {
          this.log.warn({ block: b, offset: b * this.device.remapBlockSize, reason, result: r }, 'health scan: block could not be migrated');
        }
      } catch (err) {
        this.log.error({ err, block: b, reason }, 'health scan: migration failed');
      }
      this.updateLabel();
    });
  }

  private onPassEnd(): void {
    this.passes++;
    this.lastFullScanAt = Date.now();
    this.cursor = 0;
    this.recentPasses.push(this.passFindings.size);
    if (this.recentPasses.length > 8) this.recentPasses.shift();
    // Slow blocks not seen again in this pass are no longer "consecutive".
    for (const [b, h] of this.slowHistory) if (h.lastPass < this.passes - 1) this.slowHistory.delete(b);
    this.log.info({ passesCompleted: this.passes, newBadBlocks: this.passFindings.size, ...this.status().blocks }, 'health scan: full pass complete');
    this.emit('pass-end', { passesCompleted: this.passes });
    void this.persist(true);
    if (this.state === 'running') {
      if (this.settings.intervalMs === 0) this.run();
      else this.wait();
    }
    this.updateLabel();
  }

  private slowNotMigrated(): number {
    let n = 0;
    for (const b of this.slowHistory.keys()) if (!this.device.isRemapped(b)) n++;
    return n;
  }

  private computeScore(dev: RemapStatus): Score {
    const by = dev.remaps.byReason;
    const errorRemaps = ERROR_REASONS.reduce((a, r) => a + (by[r] ?? 0), 0);
    return healthScore({
      unreadable: dev.pending.count,
      errorRemaps,
      slow: (by['scan-slow'] ?? 0) + this.slowNotMigrated(),
      spareUsedPercent: dev.spare.usedPercent,
      spareExhausted: dev.spare.exhausted,
      recentPasses: this.recentPasses,
    });
  }

  private updateLabel(): void {
    const sc = this.computeScore(this.device.status());
    if (sc.label === this.label) return;
    const from = this.label;
    this.label = sc.label;
    if (from === undefined && sc.label === 'healthy') return;
    this.log.warn({ event: 'health-label', from: from ?? null, to: sc.label, score: sc.score, penalties: sc.penalties }, `disk health is now ${sc.label}`);
    this.emit('label', { from, to: sc.label, score: sc.score });
  }

  // ---------------------------------------------------------------- persistence

  private persist(force = false): Promise<void> {
    if (!force && this.cursor === this.savedCursor) return this.saving;
    const s: ScanState = { cursorOffset: this.cursor, passesCompleted: this.passes, lastFullScanAt: this.lastFullScanAt };
    this.savedCursor = this.cursor;
    this.saving = this.saving.then(() =>
      this.device.store.saveScanState(s).catch((err) => {
        this.log.error({ err }, 'saving the health scan progress failed');
      }),
    );
    return this.saving;
  }
}
