/**
 * Is the main device still there? Media errors blame a block; a device that has gone (ENXIO/ENODEV …)
 * or fails everywhere blames no block at all, and answering it with thousands of pending marks and
 * remaps would fill the spare with nonsense. This module decides when main is "failed":
 *
 * - an I/O fails with a device-gone code (storage/error-class.ts), or
 * - a bisection found nothing that works at all, and reads of PROBES sectors spread over the whole
 *   device all fail too, or
 * - failed recoveries (bisections with no successful piece) of one kind (reads or writes) in DEAD_REGIONS
 *   distinct regions (1/16 of the device each) within DEAD_WINDOW_MS, with no successful I/O of that kind
 *   in between (the I/O paths count successes in `ok`: an increment, no extra promise); for writes only
 *   when the PROBES reads fail too (a main that reads but refuses writes keeps remapping them, loudly).
 *
 * While failed: one loud log line, the state in status/metrics/STATUS, no bisection, no pending marks, no
 * remaps. Requests that need main are held (hold(): the outage ride-through, --outage-hold, like a SCSI
 * disk's retries or dm-multipath's queue_if_no_path) and run again when main answers; a request held
 * for holdMs, every request once the outage has lasted holdMs, and every request with the hold off, is
 * tried once and fails with EIO. A background probe (every HOLD_PROBE_MS while requests are held, else a
 * back-off 1 s → 60 s) and every main I/O that succeeds bring it back ("main device answers again"). Config faults (EROFS,
 * ENOSPC, EACCES …) are logged here too, at most one line per code every CONFIG_LOG_MS.
 */
import type { BackendError } from '../storage/backend';
import { classifyCode } from '../storage/error-class';
import type { RemapContext } from './context';
import { byteOffset, type ByteOffset } from '../units';

const PROBES = 8;
const DEAD_REGIONS = 4;
const DEAD_WINDOW_MS = 30_000;
const PROBE_MIN_MS = 1000;
const PROBE_MAX_MS = 60_000;
const CONFIG_LOG_MS = 10_000;
/** Probe interval while requests are held: a held request runs at most this long after main answers. */
export const HOLD_PROBE_MS = 250;

export interface MainStateStatus {
  state: 'ok' | 'failed';
  /** Why it is failed (the first error), when failed. */
  reason: string | null;
  since: number | null;
  /** Device or configuration faults seen (not counted against any block), by error code. */
  configErrors: Record<string, number>;
  /** Times main was called failed since the start: an outage that ended before anyone looked stays visible. */
  failures: number;
  /** The last of them (ms since the epoch; endedAt null while it lasts). */
  lastFailure: { reason: string; since: number; endedAt: number | null } | null;
  /** The outage ride-through (--outage-hold), seconds; 0 = off. */
  holdSeconds: number;
  /** Requests waiting for main now. */
  held: number;
  /** Requests held since the start, and how many of them waited the whole hold and failed. */
  heldTotal: number;
  heldExpired: number;
}

interface HeldRequest {
  resolve(runAgain: boolean): void;
  timer: NodeJS.Timeout;
}

export class MainState {
  private failedSince: number | null = null;
  private failReason: string | null = null;
  /** Successful main I/Os, counted by the I/O paths. */
  readonly ok = { read: 0, write: 0 };
  /** Failed recoveries since the last success of their kind: region → time. */
  private readonly dead = { read: new Map<number, number>(), write: new Map<number, number>() };
  private readonly okAtLastDead = { read: 0, write: 0 };
  private readonly configErrors: Record<string, number> = {};
  private readonly configLogged = new Map<string, number>();
  private probeTimer: NodeJS.Timeout | undefined;
  private probeDelay = PROBE_MIN_MS;
  private failures = 0;
  private lastFailure: MainStateStatus['lastFailure'] = null;
  private writesRefusedLoggedAt = -Infinity;
  private closed = false;
  private probing = false;
  private readonly held = new Set<HeldRequest>();
  private heldTotal = 0;
  private heldExpired = 0;

  /** holdMs: how long a request that needs main waits while main is failed (0: fails at once). */
  constructor(
    private readonly c: RemapContext,
    readonly holdMs = 0,
  ) {}

  get failed(): boolean {
    return this.failedSince !== null;
  }

  status(): MainStateStatus {
    return {
      state: this.failed ? 'failed' : 'ok',
      reason: this.failReason,
      since: this.failedSince,
      configErrors: { ...this.configErrors },
      failures: this.failures,
      lastFailure: this.lastFailure && { ...this.lastFailure },
      holdSeconds: this.holdMs / 1000,
      held: this.held.size,
      heldTotal: this.heldTotal,
      heldExpired: this.heldExpired,
    };
  }

  /**
   * Wait while main is failed. Resolves true when main answers (run the request again), false when it
   * should be tried once and fail as without a hold: hold off, the outage already older than the hold
   * (no pile-up of requests that would only time out), this request held for holdMs, or close() (stop).
   * Resolves true at once when main is not failed.
   */
  hold(): Promise<boolean> {
    if (this.failedSince === null) return Promise.resolve(true);
    if (this.closed || this.holdMs <= 0 || Date.now() - this.failedSince >= this.holdMs) return Promise.resolve(false);
    this.heldTotal++;
    return new Promise<boolean>((resolve) => {
      const h: HeldRequest = {
        resolve,
        timer: setTimeout(() => {
          this.held.delete(h);
          this.heldExpired++;
          resolve(false);
        }, this.holdMs),
      };
      this.held.add(h);
      if (this.held.size === 1) this.scheduleProbe(); // now at the short interval
    });
  }

  private releaseHeld(runAgain: boolean): void {
    for (const h of this.held) {
      clearTimeout(h.timer);
      h.resolve(runAgain);
    }
    this.held.clear();
  }

  /** A main I/O of kind `op` completed (outside the hot paths, which count `ok` themselves). */
  noteSuccess(op: 'read' | 'write'): void {
    this.ok[op]++;
    if (this.failedSince !== null) this.recover(`a main ${op} succeeded`);
  }

  /**
   * A main I/O failed with err. Returns its class: 'media' (blame the sectors), 'device-gone' or
   * 'config' (blame no block; the request fails as it is).
   */
  noteFailure(err: BackendError, op: 'read' | 'write'): 'media' | 'device-gone' | 'config' {
    const cls = classifyCode(err.code);
    if (cls === 'device-gone') this.declareFailed(`${op} failed with ${err.code} at byte ${err.offset}: the device is gone`);
    else if (cls === 'config') this.noteConfig(err, op);
    return cls;
  }

  /** A recovery of [offset, …) found no piece that works. May declare the device failed. */
  async noteDeadRange(offset: ByteOffset, op: 'read' | 'write'): Promise<void> {
    if (this.failed) return;
    const now = Date.now();
    const dead = this.dead[op];
    if (this.ok[op] !== this.okAtLastDead[op]) dead.clear(); // a success in between: start over
    this.okAtLastDead[op] = this.ok[op];
    for (const [r, t] of dead) if (now - t > DEAD_WINDOW_MS) dead.delete(r);
    dead.set(this.regionOf(offset), now);
    if (dead.size >= DEAD_REGIONS) {
      const what = `${op} recoveries failed in ${dead.size} distinct regions within ${DEAD_WINDOW_MS / 1000} s with no successful ${op} in between`;
      // A main that refuses writes everywhere but still reads (an SSD gone read-only, a disk whose
      // writes fail for a while: dm-flakey error_writes) is not gone: its failed writes go to the spare,
      // which is what the spare is for. Calling it failed would fail client writes until the next read
      // succeeds (in a second), then start over: EIO bursts that nothing gains from.
      if (op === 'write' && (await this.anyProbeReads())) {
        this.warnWritesRefused(what);
        return;
      }
      this.declareFailed(what);
      return;
    }
    if (!(await this.anyProbeReads())) {
      this.declareFailed(`a ${op} found nothing that works at byte ${offset}, and ${PROBES} reads spread over the device failed too`);
    }
  }

  /** At most one line per DEAD_WINDOW_MS: main refuses writes across the device, its reads work. */
  private warnWritesRefused(what: string): void {
    const now = Date.now();
    if (now - this.writesRefusedLoggedAt < DEAD_WINDOW_MS) return;
    this.writesRefusedLoggedAt = now;
    this.c.log.error(
      { main: this.c.main.path, reason: what },
      'main refuses writes across the device but reads: every failed write is remapped to the spare (watch the spare; evacuate this disk)',
    );
  }

  private regionOf(offset: ByteOffset): number {
    return Math.floor((offset * 16) / Math.max(1, this.c.size));
  }

  /** Reads one sector at PROBES places spread over the device; true when any of them reads. */
  private async anyProbeReads(): Promise<boolean> {
    const S = this.c.main.logicalBlockSize;
    const sectors = Math.floor(this.c.size / S);
    const buf = Buffer.allocUnsafe(S * PROBES);
    const results = await Promise.allSettled(
      Array.from({ length: PROBES }, (_, i) => this.c.main.read(byteOffset(Math.floor(((i + 0.5) * sectors) / PROBES) * S), S, buf, i * S)),
    );
    const ok = results.some((r) => r.status === 'fulfilled');
    if (ok) this.noteSuccess('read');
    return ok;
  }

  private declareFailed(reason: string): void {
    if (this.failedSince !== null || this.closed) return;
    this.failedSince = Date.now();
    this.failReason = reason;
    this.failures++;
    this.lastFailure = { reason, since: this.failedSince, endedAt: null };
    this.dead.read.clear();
    this.dead.write.clear();
    this.c.log.fatal(
      { main: this.c.main.path, reason },
      this.holdMs > 0
        ? `MAIN DEVICE FAILED: no block is blamed, nothing is marked pending or remapped; requests to main wait up to ${this.holdMs / 1000} s for it, then fail with EIO until it answers again`
        : 'MAIN DEVICE FAILED: no block is blamed, nothing is marked pending or remapped; requests to main fail with EIO until it answers again',
    );
    this.c.events.emit('main-failed', { reason });
    this.c.events.emit('device-failed', { error: reason }); // the alert hook (daemon/alerts: DeviceFailed)
    this.probeDelay = PROBE_MIN_MS;
    this.scheduleProbe();
  }

  private recover(how: string): void {
    const downMs = Date.now() - (this.failedSince ?? Date.now());
    if (this.lastFailure) this.lastFailure.endedAt = Date.now();
    this.failedSince = null;
    this.failReason = null;
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    const held = this.held.size;
    this.c.log.warn({ main: this.c.main.path, downSeconds: Math.round(downMs / 1000), how, held }, 'main device answers again');
    this.releaseHeld(true);
    this.c.events.emit('main-recovered', {});
  }

  /** The next probe: HOLD_PROBE_MS from now while requests are held, else after the back-off. */
  private scheduleProbe(): void {
    if (this.closed || this.failedSince === null || this.probing) return;
    clearTimeout(this.probeTimer);
    const delay = this.held.size > 0 ? Math.min(HOLD_PROBE_MS, this.probeDelay) : this.probeDelay;
    this.probeTimer = setTimeout(() => {
      this.probeTimer = undefined;
      this.probing = true;
      void this.anyProbeReads().then((ok) => {
        this.probing = false;
        if (ok || this.failedSince === null) return;
        if (this.held.size === 0) this.probeDelay = Math.min(PROBE_MAX_MS, this.probeDelay * 2);
        this.scheduleProbe();
      });
    }, delay);
    this.probeTimer.unref();
  }

  private noteConfig(err: BackendError, op: 'read' | 'write'): void {
    this.configErrors[err.code] = (this.configErrors[err.code] ?? 0) + 1;
    const now = Date.now();
    const last = this.configLogged.get(err.code);
    if (last !== undefined && now - last < CONFIG_LOG_MS) return;
    this.configLogged.set(err.code, now);
    this.c.log.error(
      { main: this.c.main.path, op, code: err.code, offset: err.offset, seen: this.configErrors[err.code] },
      `${op} on the main device failed with ${err.code}: a device or configuration fault, not a bad block; nothing remapped`,
    );
  }

  /** Stop probing; held requests are released to fail as without a hold (stop: at most holdMs late). */
  close(): void {
    this.closed = true;
    clearTimeout(this.probeTimer);
    this.releaseHeld(false);
  }
}
