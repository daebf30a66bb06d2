/**
 * A storage backend: one file or block device (the main disk or the spare), addressed in bytes.
 * Backends report failures as BackendError with the OS error code, so the I/O path can tell a
 * media error (EIO) from a programming error.
 */

import { byteOffset, type ByteOffset } from '../units';
import type { LaneStats } from './io-lane';

export type BackendKind = 'file' | 'block';

export class BackendError extends Error {
  /** Absolute byte offset where the failing operation started. */
  readonly offset: ByteOffset;

  constructor(
    /** OS error code, e.g. 'EIO', 'ENOSPC'. */
    readonly code: string,
    message: string,
    /** Where the failing system call started, as the OS or the caller computed it. */
    offset: number,
  ) {
    super(message);
    this.name = 'BackendError';
    this.offset = byteOffset(offset);
  }
}

export interface Backend {
  readonly path: string;
  readonly kind: BackendKind;
  /** Size in bytes. */
  readonly size: number;
  /** Logical sector size in bytes (512 for files; from sysfs for block devices). */
  readonly logicalBlockSize: number;
  /** Stable identifiers of a block device (serial, WWN), empty for files. */
  readonly stableIds: { readonly serial?: string; readonly wwn?: string };
  readonly readOnly: boolean;
  /** True when trim() really deallocates (hole punch / BLKDISCARD), false when it writes zeroes. */
  readonly canPunchHoles: boolean;
  /** True when extents() reports real holes (SEEK_DATA/SEEK_HOLE). */
  readonly canReportHoles: boolean;
  /** True when the page cache is bypassed (O_DIRECT); absent means buffered. */
  readonly direct?: boolean;
  /** Counters of the backend's I/O lane (storage/io-lane.ts), when it has one. */
  ioStats?(): LaneStats | undefined;

  read(offset: ByteOffset, length: number, target: Buffer, targetOffset: number): Promise<void>;
  write(offset: ByteOffset, source: Buffer, sourceOffset?: number, length?: number): Promise<void>;
  /** fdatasync. */
  sync(): Promise<void>;
  /** Deallocate the range; it reads back as zeroes afterwards. Size is kept. */
  trim(offset: ByteOffset, length: number): Promise<void>;
  /** Make the range read back as zeroes; allocated (written) when noHole. */
  zero(offset: ByteOffset, length: number, noHole: boolean): Promise<void>;
  /** Data/hole map of the range: consecutive extents covering [offset, offset+length). */
  extents(offset: ByteOffset, length: number): Promise<{ length: number; hole: boolean }[]>;
  close(): Promise<void>;
}
