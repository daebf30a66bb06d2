/**
 * What the protocol layer needs from the thing it serves. The protocol knows nothing of files,
 * spares or remaps: it sees a byte-addressed device with capabilities, and errors with an errno.
 *
 * Every offset and length here is in bytes.
 */
import type { ByteOffset } from '../units';
import type { NbdErrnoName } from './constants';

/** How FUA is provided: natively by the device, emulated by the server with a flush, or not at all. */
export type FuaMode = 'none' | 'emulate' | 'native';

export interface DeviceCapabilities {
  readonly writable: boolean;
  readonly flush: boolean;
  readonly fua: FuaMode;
  readonly trim: boolean;
  readonly zero: boolean;
  /** WRITE_ZEROES with FAST_ZERO can be answered fast (or fail fast with ENOTSUP). */
  readonly fastZero: boolean;
  readonly cache: boolean;
  /** base:allocation is meaningful (holes and zeroes are known). */
  readonly extents: boolean;
  /** A flush on any connection covers writes completed on every connection. */
  readonly multiConn: boolean;
  readonly rotational: boolean;
}

export interface BlockSizeConstraints {
  readonly minimum: number;
  readonly preferred: number;
  readonly maximum: number;
}

/** One base:allocation extent. */
export interface Extent {
  readonly length: number;
  /** NBD_STATE_HOLE | NBD_STATE_ZERO */
  readonly flags: number;
}

/** A failed operation: the errno to report and, when known, the first failing byte offset. */
export class DeviceError extends Error {
  constructor(
    readonly errno: NbdErrnoName,
    message: string,
    /** Absolute byte offset of the first byte that failed, when the device knows it. */
    readonly offset?: number,
    /** The errno to use instead when only simple replies were negotiated (e.g. EIO for ENOSPC). */
    readonly simpleErrno?: NbdErrnoName,
  ) {
    super(message);
    this.name = 'DeviceError';
  }
}

export interface ZeroOptions {
  /** Must write real zeroes, not punch a hole. */
  readonly noHole: boolean;
  /** Fail with ENOTSUP unless zeroing is fast. */
  readonly fastZero: boolean;
  readonly fua: boolean;
}

export interface BlockDevice {
  /** Export size in bytes. */
  readonly size: number;
  readonly capabilities: DeviceCapabilities;
  readonly blockSize: BlockSizeConstraints;
  /** Human description for NBD_INFO_DESCRIPTION. */
  readonly description?: string;

  /** Read `length` bytes at `offset` into `target` starting at `targetOffset`. */
  read(offset: ByteOffset, length: number, target: Buffer, targetOffset: number): Promise<void>;
  write(offset: ByteOffset, data: Buffer, fua: boolean): Promise<void>;
  flush(): Promise<void>;
  trim(offset: ByteOffset, length: number, fua: boolean): Promise<void>;
  zero(offset: ByteOffset, length: number, options: ZeroOptions): Promise<void>;
  cache(offset: ByteOffset, length: number): Promise<void>;
  /** Allocation extents covering at least [offset, offset+1). May cover more than asked. */
  extents(offset: ByteOffset, length: number): Promise<Extent[]>;
}

/** Where a connection finds exports by name. */
export interface ExportCatalog {
  /** The export for a name; '' is the default export. undefined when unknown. */
  lookup(name: string): ExportEntry | undefined;
  list(): ExportEntry[];
}

export interface ExportEntry {
  readonly name: string;
  readonly description: string;
  readonly device: BlockDevice;
  readonly readOnly: boolean;
}
