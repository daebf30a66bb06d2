/** Messages between the scanner (health/scanner.ts, main thread) and its worker (health/scan-worker.ts). */
import type { SharedFaultRules } from '../storage/faults';
import type { ScanSettings } from './config';

export interface WorkerInit {
  readonly mainPath: string;
  readonly blockSize: number;
  readonly faults: SharedFaultRules | null;
  readonly settings: ScanSettings;
  /** Current back-off factor (0 = hold, 1 = full rate). */
  readonly factor: number;
}

export type ToWorker =
  /** Scan [fromOffset, end of device); supersedes any scan in progress. */
  | { readonly type: 'scan'; readonly id: number; readonly fromOffset: number }
  /** Stop after the chunk in flight; answered by 'stopped'. */
  | { readonly type: 'stop'; readonly id: number }
  | { readonly type: 'config'; readonly settings: ScanSettings; readonly factor: number }
  | { readonly type: 'faults'; readonly faults: SharedFaultRules | null }
  /** Test hook: throw an uncaught exception in the worker. */
  | { readonly type: 'crash' };

export type FindingKind = 'slow' | 'very-slow' | 'flaky' | 'unreadable';

export interface Finding {
  readonly kind: FindingKind;
  readonly block: number;
  readonly offset: number;
  /** Slowest read of the block (slow kinds), ms. */
  readonly latencyMs?: number;
  /** Failed attempts (flaky/unreadable), including the chunk read that hit it. */
  readonly failures?: number;
  readonly error?: string;
  /** Byte offsets of the failing logical sectors inside the block (flaky/unreadable), when isolated. */
  readonly sectors?: readonly number[];
}

export type FromWorker =
  | { readonly type: 'ready'; readonly size: number }
  /** cursorOffset: next byte to read; bytes: read since the last progress message. */
  | { readonly type: 'progress'; readonly id: number; readonly cursorOffset: number; readonly bytes: number; readonly slowChunks: number; readonly failedChunks: number }
  | { readonly type: 'finding'; readonly id: number; readonly finding: Finding }
  | { readonly type: 'pass-end'; readonly id: number }
  | { readonly type: 'stopped'; readonly id: number; readonly cursorOffset: number }
  | { readonly type: 'log'; readonly level: 'warn' | 'error' | 'debug'; readonly msg: string; readonly data?: Record<string, unknown> };
