/** Messages between the scanner (health/scanner.ts, main thread) and its worker (health/scan-worker.ts). */
import type { ByteOffset, MainBlock } from '../units';
import type { SharedFaultRules } from '../storage/faults';
import type { ScanSettings } from './config';
import type { DeviceFailure } from './media-isolator';

export interface WorkerInit {
  readonly mainPath: string;
  readonly blockSize: number;
  readonly faults: SharedFaultRules | null;
  readonly settings: ScanSettings;
  /** Current back-off factor (0 = hold, 1 = full rate). */
  readonly factor: number;
}

/** A suspect region to read before the sequential pass continues (byte range, remap-block aligned). */
export interface SuspectRegion {
  readonly id: number;
  readonly offset: ByteOffset;
  readonly length: number;
}

/** Findings and device failures from suspect visits carry this id instead of a pass id. */
export const SUSPECT_JOB = -1;

export type ToWorker =
  /** Scan [fromOffset, end of device); supersedes any scan in progress. */
  | { readonly type: 'scan'; readonly id: number; readonly fromOffset: ByteOffset }
  /** Stop after the chunk in flight; answered by 'stopped'. */
  | { readonly type: 'stop'; readonly id: number }
  /** Queue suspect regions: read before the next chunk of the pass, or at once when no pass runs. */
  | { readonly type: 'suspects'; readonly regions: readonly SuspectRegion[] }
  /** Forget the queued suspect regions (pause); the parent sends them again when the scan resumes. */
  | { readonly type: 'suspects-clear' }
  | { readonly type: 'config'; readonly settings: ScanSettings; readonly factor: number }
  | { readonly type: 'faults'; readonly faults: SharedFaultRules | null }
  /** Test hook: throw an uncaught exception in the worker. */
  | { readonly type: 'crash' };

export type FindingKind = 'slow' | 'very-slow' | 'flaky' | 'unreadable';

export interface Finding {
  readonly kind: FindingKind;
  readonly block: MainBlock;
  readonly offset: ByteOffset;
  /** Slowest read of the block (slow kinds), ms. */
  readonly latencyMs?: number;
  /** Failed attempts (flaky/unreadable), including the chunk read that hit it. */
  readonly failures?: number;
  readonly error?: string;
  /** Byte offsets of the failing logical sectors inside the block (flaky/unreadable), when isolated. */
  readonly sectors?: readonly ByteOffset[];
}

export type FromWorker =
  /** direct: the worker's reads bypass the page cache (O_DIRECT), so they see the media. */
  | { readonly type: 'ready'; readonly size: number; readonly logicalBlockSize: number; readonly direct: boolean }
  /** cursorOffset: next byte to read; bytes: read since the last progress message. */
  | {
      readonly type: 'progress';
      readonly id: number;
      readonly cursorOffset: ByteOffset;
      readonly bytes: number;
      readonly slowChunks: number;
      readonly failedChunks: number;
      readonly isolateReads: number;
    }
  | { readonly type: 'finding'; readonly id: number; readonly finding: Finding }
  /** Ranges whose failures were not isolated within the read budget: queue them as suspects. */
  | { readonly type: 'unresolved'; readonly ranges: readonly { offset: ByteOffset; length: number }[] }
  /** The device as a whole failed (or a non-media error): the pass or visit stopped, no block blamed. */
  | { readonly type: 'device-failed'; readonly id: number; readonly failure: DeviceFailure }
  | { readonly type: 'suspect-done'; readonly regionId: number; readonly isolateReads: number }
  | { readonly type: 'pass-end'; readonly id: number }
  | { readonly type: 'stopped'; readonly id: number; readonly cursorOffset: ByteOffset | -1 }
  | { readonly type: 'log'; readonly level: 'warn' | 'error' | 'debug'; readonly msg: string; readonly data?: Record<string, unknown> };
