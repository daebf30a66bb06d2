/** Public types of the metadata store. */
import type { ByteOffset, MainBlock, SpareBlock } from '../units';

export interface MainIdentity {
  /** Main device size in bytes. */
  size: number;
  logicalBlockSize: number;
  serial?: string;
  wwn?: string;
}

export const REMAP_REASONS = [
  'write-error',
  'read-error',
  'manual',
  'scan-slow',
  'scan-flaky',
  'scan-error',
  'spare-error',
  'migrate',
] as const;
export type RemapReason = (typeof REMAP_REASONS)[number];

export function reasonCode(r: RemapReason): number {
  const i = REMAP_REASONS.indexOf(r);
  if (i < 0) throw new Error(`unknown remap reason ${String(r)}`);
  return i + 1;
}

export function reasonName(code: number): RemapReason | undefined {
  return REMAP_REASONS[code - 1];
}

export interface RemapEntry {
  mainBlock: MainBlock;
  spareBlock: SpareBlock;
  reason: RemapReason;
  /** Wall clock, ms since the epoch. */
  createdAt: number;
}

export interface ScanState {
  /** Next main-device byte offset the health scanner will read. */
  cursorOffset: ByteOffset;
  passesCompleted: number;
  /** ms since the epoch; 0 = never. */
  lastFullScanAt: number;
}

export interface MetadataChange {
  add?: RemapEntry[];
  /** Main blocks whose remap is dropped; their spare blocks become free once the change is durable. */
  remove?: MainBlock[];
  pendingAdd?: MainBlock[];
  pendingRemove?: MainBlock[];
  scan?: ScanState;
}

export type MetadataErrorCode =
  | 'NO_VALID_COPY'
  | 'FINGERPRINT_MISMATCH'
  | 'NEWER_VERSION'
  | 'UNSUPPORTED_FEATURES'
  | 'NOT_EMPTY'
  | 'LAYOUT'
  | 'INVALID_CHANGE'
  | 'TABLE_FULL'
  | 'READ_ONLY'
  | 'FAILED'
  | 'CLOSED';

export class MetadataError extends Error {
  constructor(
    readonly code: MetadataErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'MetadataError';
  }
}

export interface CopyReport {
  index: number;
  /** Absolute byte offset and length of the copy's region on the spare. */
  offset: number;
  length: number;
  valid: boolean;
  /** Which check failed, when !valid: io, magic, header-crc, version, features, layout, setup, chunk-crc, table-crc, table. */
  failedCheck?: string;
  /** Valid but older than the chosen copy (lower sequence or shorter journal). */
  stale?: boolean;
  sequence: number;
  timestamp: number;
}

export interface CheckReport {
  copies: CopyReport[];
  /** Index of the chosen copy, or null when no copy is valid. */
  chosen: number | null;
  repaired: boolean;
  formatVersion?: number;
  setupUuid?: string;
  blockSize?: number;
  spareDataBlocks?: number;
  main?: MainIdentity;
  table?: { remaps: number; pending: number; freeSpareBlocks: number; scan: ScanState };
}
