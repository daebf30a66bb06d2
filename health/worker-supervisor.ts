/**
 * Worker supervision for the health scan: starts the scan worker thread (scan-worker.ts), passes its
 * messages on, and restarts it with back-off when it dies (1 s, doubling up to a limit; the count resets
 * once a worker has lived 60 s). It knows nothing of passes or findings: the scheduler (scanner.ts)
 * decides what the worker does, and is told when a fresh worker is ready to be given its job again.
 */
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { FromWorker, ToWorker, WorkerInit } from './protocol';

export interface SupervisorOptions {
  readonly logger: Logger;
  /** Worker script; default scan-worker.js beside this file. */
  readonly workerPath?: string;
  /** Longest wait before restarting a dead worker, ms (default 60 s). */
  readonly maxRestartDelayMs?: number;
  /** The worker's start parameters, asked for at each (re)start so they are current. */
  readonly init: () => WorkerInit;
  /** Called with every message of the current worker. */
  readonly onMessage: (m: FromWorker) => void;
  /** Called when a restarted worker is up (the scheduler re-posts its job), not for the first start. */
  readonly onRestarted: () => void;
  /** Called when a worker died unexpectedly (before the restart is scheduled). */
  readonly onDied: (code: number, restarts: number) => void;
}

export class WorkerSupervisor extends EventEmitter {
  private worker: Worker | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private consecutiveCrashes = 0;
  private startedAt = 0;
  private referenced = false;
  private closed = false;
  /** Unexpected exits so far. */
  restarts = 0;

  constructor(private readonly o: SupervisorOptions) {
    super();
  }

  /** True while a worker exists or a restart is scheduled. */
  get active(): boolean {
    return this.worker !== undefined || this.restartTimer !== undefined;
  }

  /** True while a worker thread exists (messages posted now reach it). */
  get hasWorker(): boolean {
    return this.worker !== undefined;
  }

  start(): void {
    if (this.closed || this.active) return;
    this.spawn();
  }

  post(m: ToWorker): void {
    this.worker?.postMessage(m);
  }

  /** Whether the worker keeps the process alive (only while a pass runs). */
  setReferenced(on: boolean): void {
    this.referenced = on;
    if (on) this.worker?.ref();
    else this.worker?.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate().catch(() => undefined);
  }

  private spawn(): void {
    const w = new Worker(this.o.workerPath ?? join(__dirname, 'scan-worker.js'), { workerData: this.o.init() });
    this.worker = w;
    this.startedAt = Date.now();
    if (!this.referenced) w.unref();
    w.on('message', (m: FromWorker) => {
      if (this.worker === w) this.o.onMessage(m);
    });
    w.on('error', (err) => {
      if (this.worker !== w) return;
      this.o.logger.error({ err }, 'health scan worker crashed');
    });
    w.on('exit', (code) => {
      if (this.worker !== w) return;
      this.worker = undefined;
      if (!this.closed) this.died(code);
    });
  }

  private died(code: number): void {
    if (Date.now() - this.startedAt > 60_000) this.consecutiveCrashes = 0;
    this.consecutiveCrashes++;
    this.restarts++;
    const max = this.o.maxRestartDelayMs ?? 60_000;
    const delay = Math.min(max, 1000 * 2 ** (this.consecutiveCrashes - 1));
    this.o.logger.error(
      { exitCode: code, restartInMs: delay, restarts: this.restarts },
      'health scan worker exited unexpectedly; restarting it',
    );
    this.o.onDied(code, this.restarts);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.closed) return;
      this.spawn();
      this.o.logger.warn({ restarts: this.restarts }, 'health scan worker restarted');
      this.o.onRestarted();
    }, delay);
  }
}
