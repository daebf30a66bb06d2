/**
 * HealthScanner: the main-thread side of the background scan, and its scheduler. It owns the scan's
 * state (cursor, passes, schedule, pause), decides when a pass runs and at what rate (client I/O
 * back-off), persists progress in the metadata and answers status. The reading happens in a worker
 * thread (scan-worker.ts) started and restarted by worker-supervisor.ts, so the NBD event loop never
 * waits on a scan read; what the worker finds is handled by findings.ts (migrations, pending marks,
 * score).
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { ScanState } from '../metadata/types';
import { byteOffset, type ByteOffset } from '../units';
import type { ScannerOptions, ScanStateName, ScanStatus } from './scan-status';
import type { SharedFaultRules } from '../storage/faults';
import { backoffFactor, DEFAULT_SCAN_SETTINGS, type ScanSettings } from './config';
import { formatDuration } from './duration';
import { FindingsHandler, type ScanDevice } from './findings';
import type { DeviceFailure } from './media-isolator';
import { SUSPECT_JOB, type FromWorker, type ToWorker } from './protocol';
import type { ScoreInputs } from './score';
import { SuspectQueue, type ByteRange } from './suspects';
import { WorkerSupervisor } from './worker-supervisor';

export type { ScanDevice } from './findings';

export type { ScannerOptions, ScanStateName, ScanStatus } from './scan-status';

const RATE_WINDOW_MS = 5000;

export class HealthScanner extends EventEmitter {
  private settings: ScanSettings;
  private readonly log: Logger;
  private readonly supervisor: WorkerSupervisor;
  private readonly findings: FindingsHandler;
  private state: ScanStateName = 'idle';
  private closed = false;
  private begun = false;
  private scanId = 0;
  private cursor: ByteOffset;
  private passes: number;
  private lastFullScanAt: number;
  private savedCursor: number;
  private nextScanAt = 0;
  private waitTimer: NodeJS.Timeout | undefined;
  private sampleTimer: NodeJS.Timeout | undefined;
  private persistTimer: NodeJS.Timeout | undefined;
  private factor = 1;
  private lastIo: number;
  private lastSampleAt = Date.now();
  private faults: SharedFaultRules | null;
  private readonly rateSamples: { at: number; bytes: number }[] = [];
  private readonly suspects: SuspectQueue;
  private isolateReads = 0;
  private deviceFailure: (DeviceFailure & { at: string }) | null = null;
  private worker: { direct: boolean; sectorSize: number } | null = null;
  private smart: ScoreInputs['smart'];
  private saving: Promise<void> = Promise.resolve();

  constructor(
    private readonly device: ScanDevice,
    opts: ScannerOptions,
  ) {
    super();
    this.log = opts.logger.child({ component: 'scanner' });
    this.settings = { ...DEFAULT_SCAN_SETTINGS, ...opts.settings };
    this.faults = opts.faults ?? null;
    const st = device.store.scanState();
    this.cursor = st.cursorOffset >= 0 && st.cursorOffset < device.size ? st.cursorOffset : byteOffset(0);
    this.savedCursor = this.cursor;
    this.passes = st.passesCompleted;
    this.lastFullScanAt = st.lastFullScanAt;
    this.lastIo = device.ioActivity;
    this.suspects = new SuspectQueue(device.remapBlockSize, device.size);
    this.findings = new FindingsHandler({
      device,
      log: this.log,
      settings: () => this.settings,
      passes: () => this.passes,
      closed: () => this.closed,
      extraScoreInputs: () => ({ ...(this.smart ? { smart: this.smart } : {}), mainFailed: this.deviceFailure !== null }),
      onLabel: (e) => this.emit('label', e),
    });
    this.supervisor = new WorkerSupervisor({
      logger: this.log,
      workerPath: opts.workerPath,
      maxRestartDelayMs: opts.maxRestartDelayMs,
      init: () => ({
        mainPath: opts.mainPath,
        blockSize: device.remapBlockSize,
        faults: this.faults,
        settings: this.settings,
        factor: this.factor,
      }),
      onMessage: (m) => this.onMessage(m),
      onDied: (code, restarts) => {
        this.emit('worker-exit', { code, restarts });
        void this.persist();
      },
      onRestarted: () => {
        this.suspects.unsendAll();
        if (this.state === 'running') this.run();
        else this.flushSuspects();
      },
    });
  }

  // ---------------------------------------------------------------- public API

  /** Starts the worker and the schedule: resumes an interrupted pass, else waits for the next one. */
  begin(): void {
    if (this.closed || this.begun) return;
    this.begun = true;
    this.supervisor.start();
    this.sampleTimer = setInterval(() => this.sample(), this.settings.sampleMs).unref();
    this.persistTimer = setInterval(() => void this.persist(), this.settings.persistEveryMs).unref();
    const due = this.lastFullScanAt + this.settings.intervalMs;
    if (this.cursor > 0 || this.lastFullScanAt === 0 || due <= Date.now()) {
      if (this.cursor > 0)
        this.log.info({ cursorOffset: this.cursor, passesCompleted: this.passes }, 'resuming the health scan where it stopped');
      this.run();
    } else {
      this.wait();
    }
    this.findings.updateLabel();
  }

  /** Starts a pass now (or resumes a paused one). */
  start(): ScanStatus {
    if (this.closed) throw new Error('the scanner is closed');
    if (!this.begun) this.begin();
    if (this.state !== 'running') {
      this.log.info({ cursorOffset: this.cursor }, 'health scan started by the operator');
      this.run();
    }
    return this.status();
  }

  pause(): ScanStatus {
    if (this.state === 'running' || this.state === 'waiting' || this.state === 'device-failed') {
      this.clearWait();
      this.post({ type: 'stop', id: this.scanId });
      this.post({ type: 'suspects-clear' });
      this.suspects.unsendAll();
      this.state = 'paused';
      this.supervisor.setReferenced(false);
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

  /**
   * Queues suspect regions (byte ranges on the export, already validated by parseSuspectArgs): read
   * before the pass continues. Returns the number of regions queued after aligning and merging.
   */
  suspect(ranges: readonly ByteRange[], source: string): { queued: number } {
    if (this.closed) throw new Error('the scanner is closed');
    const queued = this.suspects.add(ranges, source);
    const st = this.suspects.status();
    this.log.info(
      { source, queued, queuedRegions: st.queued, queuedBytes: st.queuedBytes },
      'health scan: suspect regions queued (read before the pass continues)',
    );
    this.flushSuspects();
    return { queued };
  }

  /** The drive's SMART counts for the score (undefined: SMART not available). */
  setSmart(smart: ScoreInputs['smart']): void {
    this.smart = smart;
    this.findings.updateLabel();
  }

  /** Something the score reads changed outside the scanner (main failed or recovered): re-label now. */
  refreshHealth(): void {
    this.findings.updateLabel();
  }

  /**
   * The remap device saw main answer again after an outage: a scan stopped by a device failure resumes
   * now (not at its retry timer), and the failure no longer weighs on the score. If the scan still finds
   * main failing, it says so again.
   */
  mainRecovered(): void {
    if (this.state === 'device-failed' && !this.closed) {
      this.log.warn({ cursorOffset: this.cursor }, 'health scan: main answers again; resuming after the device failure');
      this.deviceFailure = null;
      this.clearWait();
      this.run();
    }
    this.findings.updateLabel();
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
    const sc = this.findings.score(dev);
    const now = Date.now();
    while (this.rateSamples.length && this.rateSamples[0].at < now - RATE_WINDOW_MS) this.rateSamples.shift();
    const recent = this.rateSamples.reduce((a, s) => a + s.bytes, 0);
    const span = this.rateSamples.length ? Math.max(1000, now - this.rateSamples[0].at) : RATE_WINDOW_MS;
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
      slowMs: this.settings.slowMs,
      verySlowMs: this.settings.verySlowMs,
      passesCompleted: this.passes,
      lastFullScanAt: this.lastFullScanAt ? new Date(this.lastFullScanAt).toISOString() : null,
      nextScanAt: this.state === 'waiting' ? new Date(this.nextScanAt).toISOString() : null,
      score: sc.score,
      label: sc.label,
      trend: sc.trend,
      penalties: sc.penalties,
      blocks: this.findings.counts(dev.pending.count),
      pendingOffsets: dev.pending.offsets,
      slowOffsets: this.findings.slowOffsets(),
      workerRestarts: this.supervisor.restarts,
      blockSize: this.device.remapBlockSize,
      suspects: this.suspects.status(),
      isolateReads: this.isolateReads,
      deviceFailure: this.deviceFailure,
      readsDirect: this.worker?.direct ?? null,
      sectorSize: this.worker?.sectorSize ?? null,
    };
  }

  /** Waits for queued migrations (tests, shutdown). */
  idle(): Promise<void> {
    return this.findings.idle();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.clearWait();
    for (const t of [this.sampleTimer, this.persistTimer]) if (t) clearInterval(t);
    await this.supervisor.close();
    await this.findings.idle();
    await this.persist();
    await this.saving;
    this.state = 'idle';
  }

  // ---------------------------------------------------------------- schedule

  private run(): void {
    this.clearWait();
    this.state = 'running';
    this.supervisor.setReferenced(true);
    this.scanId++;
    if (this.cursor === 0) this.findings.passStarted();
    this.post({ type: 'scan', id: this.scanId, fromOffset: this.cursor });
    this.flushSuspects();
  }

  /** Hands the queued suspect regions to the worker, unless paused or the device failed. */
  private flushSuspects(): void {
    if (this.closed || this.state === 'paused' || this.state === 'device-failed' || !this.supervisor.hasWorker) return;
    const regions = this.suspects.takeUnsent().map((q) => ({ id: q.id, offset: q.offset, length: q.length }));
    if (regions.length) this.post({ type: 'suspects', regions });
  }

  /** Main failed as a whole: stop, blame no block, say so loudly once, try again later. */
  private onDeviceFailed(f: DeviceFailure): void {
    if (this.state === 'device-failed' || this.state === 'paused' || this.closed) return;
    this.post({ type: 'stop', id: this.scanId });
    this.post({ type: 'suspects-clear' });
    this.suspects.unsendAll();
    this.clearWait();
    this.state = 'device-failed';
    this.supervisor.setReferenced(false);
    this.deviceFailure = { ...f, at: new Date().toISOString() };
    const what =
      f.reason === 'config'
        ? `main cannot be read (${f.code}, not a media error)`
        : `main device failed (${f.reason === 'device-gone' ? f.code : 'every read fails'})`;
    this.log.error(
      { event: 'device-failed', ...f, retryInMs: this.settings.deviceRetryMs },
      `${what}: health scan stopped, no block marked pending`,
    );
    this.emit('device-failed', this.deviceFailure);
    this.findings.updateLabel();
    this.waitTimer = setTimeout(() => {
      if (this.state !== 'device-failed') return;
      this.log.warn({ cursorOffset: this.cursor }, 'health scan: trying main again after a device failure');
      this.run();
    }, this.settings.deviceRetryMs);
    this.waitTimer.unref();
    void this.persist();
  }

  private wait(): void {
    this.clearWait();
    this.state = 'waiting';
    this.supervisor.setReferenced(false);
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

  private post(m: ToWorker): void {
    this.supervisor.post(m);
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
        this.worker = { direct: m.direct, sectorSize: m.logicalBlockSize };
        if (!m.direct)
          this.log.warn(
            { sectorSize: m.logicalBlockSize },
            'health scan reads main through the page cache (no O_DIRECT): cached blocks are not checked on the media, and errors may spread to neighbouring blocks',
          );
        return;
      case 'log':
        this.log[m.level](m.data ?? {}, m.msg);
        return;
      case 'progress':
        this.isolateReads += m.isolateReads;
        if (m.id !== this.scanId) return;
        this.cursor = m.cursorOffset;
        if (m.bytes > 0) this.rateSamples.push({ at: Date.now(), bytes: m.bytes });
        if (m.bytes > 0 && this.deviceFailure && this.state === 'running') {
          this.log.warn({ failedAt: this.deviceFailure.at }, 'health scan: main reads again after a device failure');
          this.deviceFailure = null;
          this.emit('device-recovered');
          this.findings.updateLabel();
        }
        if (this.rateSamples.length > 1000) this.rateSamples.splice(0, 500);
        return;
      case 'stopped':
        if (m.id === this.scanId && m.cursorOffset !== -1) this.cursor = m.cursorOffset;
        return;
      case 'finding':
        if (m.id === this.scanId || m.id === SUSPECT_JOB) this.findings.handle(m.finding);
        return;
      case 'unresolved':
        this.suspect(m.ranges, 'scan: failures not isolated within the read budget');
        return;
      case 'suspect-done': {
        this.isolateReads += m.isolateReads;
        const q = this.suspects.done(m.regionId);
        if (q)
          this.log.info(
            { offset: q.offset, length: q.length, source: q.source, left: this.suspects.size },
            'health scan: suspect region read',
          );
        if (this.suspects.size === 0) this.emit('suspects-done');
        return;
      }
      case 'device-failed':
        if (m.id === this.scanId || m.id === SUSPECT_JOB) this.onDeviceFailed(m.failure);
        return;
      case 'pass-end':
        if (m.id === this.scanId) this.onPassEnd();
        return;
    }
  }

  /**
   * A pass counts as complete once what it found is recorded: the pending marks and migrations of its
   * last chunks commit after the worker's pass-end message, and status, export-map and the ScanPassDone
   * alert must not report the pass without them.
   */
  private onPassEnd(): void {
    void this.findings.idle().then(() => {
      if (!this.closed) this.passComplete();
    });
  }

  private passComplete(): void {
    this.passes++;
    this.lastFullScanAt = Date.now();
    this.cursor = byteOffset(0);
    const found = this.findings.passEnded(this.passes);
    this.log.info({ passesCompleted: this.passes, newBadBlocks: found, ...this.status().blocks }, 'health scan: full pass complete');
    this.emit('pass-end', { passesCompleted: this.passes });
    void this.persist(true);
    if (this.state === 'running') {
      if (this.settings.intervalMs === 0) this.run();
      else this.wait();
    }
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
