/**
 * Runs the operator's alert program, in the style of mdadm's PROGRAM: `PATH EVENT SETUP [DETAIL]`, with
 * REMAPD_* environment variables (the counts at the time it runs).
 *
 * - Never blocks I/O: the program is spawned asynchronously, one at a time, and nothing waits for it.
 * - Timeout: a program still running after `timeoutMs` gets SIGTERM, then SIGKILL 5 s later; logged.
 * - Failures (cannot start, non-zero exit, killed) are logged with the program's stderr tail.
 * - Shutdown: queued events are dropped (logged); a run already under way is waited for, up to a short
 *   grace, so its output lands before the daemon's files and the service's cgroup go away.
 * - Bursts are bounded: an event whose kind is already queued (not yet started) is merged into that
 *   entry (REMAPD_EVENT_COUNT grows, DETAIL becomes the latest one), so the queue never holds more than
 *   one entry per kind, however many remaps a failing region produces.
 */
import { spawn } from 'node:child_process';
import type { Logger } from 'pino';

export const ALERT_EVENTS = [
  'Remap',
  'Pending',
  'HealthChange',
  'SpareLow',
  'SpareFull',
  'DeviceFailed',
  'MetadataRepaired',
  'ScanPassDone',
  'EvacuateDone',
] as const;
export type AlertEvent = (typeof ALERT_EVENTS)[number];

interface Queued {
  readonly event: AlertEvent;
  detail: string | undefined;
  count: number;
  readonly firstAt: number;
}

export interface AlertRunnerOptions {
  readonly program: string;
  readonly setup: string;
  readonly timeoutMs: number;
  readonly logger: Logger;
  /** REMAPD_* counts, read when the program starts (not when the event happened). */
  readonly environment: () => Record<string, string | number | boolean | null | undefined>;
}

const STDERR_TAIL = 2000;

export class AlertRunner {
  private readonly queue: Queued[] = [];
  private running = false;
  /** The run under way, settled when its program has exited (or failed to start). */
  private current: Promise<void> | undefined;
  private closed = false;
  private idle: (() => void)[] = [];
  /** Runs started, and how they ended (for status and tests). */
  readonly counters = { queued: 0, coalesced: 0, started: 0, failed: 0, timedOut: 0 };

  constructor(private readonly o: AlertRunnerOptions) {}

  raise(event: AlertEvent, detail?: string): void {
    if (this.closed) return;
    this.counters.queued++;
    const same = this.queue.find((q) => q.event === event);
    if (same) {
      same.count++;
      same.detail = detail;
      this.counters.coalesced++;
    } else this.queue.push({ event, detail, count: 1, firstAt: Date.now() });
    this.next();
  }

  /** Resolves when nothing is queued or running. */
  drained(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  /**
   * Stop accepting events (at shutdown). Queued ones are dropped and logged. A run under way is waited for,
   * up to `graceMs` (never longer than the program's own timeout); one still running after that is left to
   * finish alone, and the log says so.
   */
  async close(graceMs = 3000): Promise<void> {
    this.closed = true;
    const dropped = this.queue.splice(0);
    if (dropped.length) this.o.logger.warn({ events: dropped.map((q) => q.event) }, 'shutting down: queued alerts not run');
    if (this.current) {
      const current = this.current;
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(true), Math.min(graceMs, this.o.timeoutMs))));
      const lateRun = await Promise.race([current.then(() => false), late]);
      clearTimeout(timer);
      if (lateRun)
        this.o.logger.warn({ program: this.o.program }, 'shutting down: an alert program is still running; left to finish alone');
    }
    for (const r of this.idle.splice(0)) r();
  }

  private next(): void {
    if (this.running) return;
    const q = this.queue.shift();
    if (!q) {
      for (const r of this.idle.splice(0)) r();
      return;
    }
    this.running = true;
    this.current = this.run(q).finally(() => {
      this.running = false;
      this.current = undefined;
      if (!this.closed) this.next();
    });
  }

  private run(q: Queued): Promise<void> {
    const log = this.o.logger;
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const [k, v] of Object.entries(this.o.environment())) if (v !== undefined && v !== null) env[k] = String(v);
    env.REMAPD_EVENT = q.event;
    env.REMAPD_SETUP = this.o.setup;
    env.REMAPD_EVENT_COUNT = String(q.count);
    env.REMAPD_EVENT_TIME = new Date(q.firstAt).toISOString();
    if (q.detail !== undefined) env.REMAPD_DETAIL = q.detail;
    const args = [q.event, this.o.setup, ...(q.detail !== undefined ? [q.detail] : [])];
    this.counters.started++;
    return new Promise((done) => {
      let stderr = '';
      let timedOut = false;
      let settled = false;
      const child = spawn(this.o.program, args, { env, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
      child.stderr?.on('data', (b: Buffer) => {
        stderr = (stderr + b.toString('utf8')).slice(-STDERR_TAIL);
      });
      let killTimer: NodeJS.Timeout | undefined;
      const timer = setTimeout(() => {
        timedOut = true;
        this.counters.timedOut++;
        log.error(
          { program: this.o.program, event: q.event, timeoutSeconds: this.o.timeoutMs / 1000 },
          'alert program timed out: killing it',
        );
        this.killGroup(child.pid, 'SIGTERM');
        killTimer = setTimeout(() => this.killGroup(child.pid, 'SIGKILL'), 5000);
      }, this.o.timeoutMs);
      const finish = (fields: Record<string, unknown>, ok: boolean) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (killTimer) clearTimeout(killTimer);
        if (ok) log.info({ program: this.o.program, event: q.event, count: q.count }, 'alert program ran');
        else {
          this.counters.failed++;
          log.error(
            { program: this.o.program, event: q.event, count: q.count, ...fields, stderr: stderr.trim() || undefined },
            'alert program failed',
          );
        }
        done();
      };
      child.once('error', (err: NodeJS.ErrnoException) => finish({ error: err.code ?? err.message }, false));
      child.once('close', (code, signal) => finish({ exitCode: code, signal, timedOut }, code === 0 && !timedOut));
    });
  }

  private killGroup(pid: number | undefined, sig: NodeJS.Signals): void {
    if (!pid) return;
    try {
      process.kill(-pid, sig); // the program and whatever it started
    } catch {
      /* gone */
    }
  }
}
