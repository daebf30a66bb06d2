/**
 * The shapes the health scanner shows to the outside: its options, its states and what `scan.status`
 * answers (also read by `remapd status`, the metrics and the tests).
 */
import type { Logger } from 'pino';
import type { SharedFaultRules } from '../storage/faults';
import type { ByteOffset } from '../units';
import type { ScanSettings } from './config';
import type { DeviceFailure } from './media-isolator';
import type { HealthLabel, Score } from './score';
import type { SuspectStatus } from './suspects';

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

/** 'device-failed': main failed as a whole (ENXIO/ENODEV, or everything failing); retried after a while. */
export type ScanStateName = 'running' | 'paused' | 'idle' | 'waiting' | 'device-failed';

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
  /** Slow-read thresholds in effect, ms (--scan-slow, --scan-very-slow). */
  slowMs: number;
  verySlowMs: number;
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
  slowOffsets: ByteOffset[];
  workerRestarts: number;
  blockSize: number;
  /** Suspect regions (import-map, SMART hints, failures not yet isolated): queued and visited. */
  suspects: SuspectStatus;
  /** Reads spent isolating failed reads down to sectors, since start. */
  isolateReads: number;
  /** The last whole-device failure, while it lasts (cleared once a retried pass reads again). */
  deviceFailure: (DeviceFailure & { at: string }) | null;
  /** The worker reads main with the page cache bypassed (O_DIRECT); null until the worker is up. */
  readsDirect: boolean | null;
  /** Logical sector size of main as the worker sees it (the unit failures are isolated to). */
  sectorSize: number | null;
}
