/**
 * Opening a regular file or a block device as a FileBackend: type checks, O_EXCL, the race between
 * stat and open, sysfs discovery, and the I/O mode (O_DIRECT when asked for and possible, else
 * buffered with a notice saying why).
 */
import * as fs from 'fs';
import { Backend, BackendError } from './backend';
import { blockDeviceInfo } from './block-device-info';
import { FileBackend, IoMode } from './file-backend';
import { lanesAvailable } from './io-batch';
import { toBackendError } from './io-errors';
import * as native from './native';

export interface OpenBackendOptions {
  readonly readOnly?: boolean;
  /** Block devices only: open with O_EXCL (fails with EBUSY if mounted or held by someone else). */
  readonly exclusive?: boolean;
  /**
   * Bypass the page cache (O_DIRECT): a media error fails the very request that met it, and reads see
   * the disk, not RAM. Unaligned requests are handled inside the backend. Falls back to buffered I/O
   * (with `directNotice` saying why) where O_DIRECT is impossible.
   */
  readonly direct?: boolean;
  /** A main I/O slower than this (ms) fails with ETIMEDOUT, counted as a media error. 0 = no deadline. */
  readonly deadlineMs?: number;
  /** Name of the backend's I/O lane in status and metrics ('main', 'spare', 'scan'); default the path. */
  readonly laneName?: string;
  /** Threads of the backend's I/O lane (default 4). */
  readonly ioThreads?: number;
  /** Set false to ignore the native addon even when it is built (tests of the fallback paths). */
  readonly useNative?: boolean;
}

/** O_DIRECT alignment on regular files: covers every filesystem block and sector size up to 4 KiB. */
export const FILE_DIRECT_ALIGN = 4096;

function describeNonStorage(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

function openFd(file: string, flags: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.open(file, flags, (err, fd) => (err ? reject(err) : resolve(fd)));
  });
}

/** Opens a regular file or a block device as a Backend. */
export async function openBackend(file: string, opts: OpenBackendOptions = {}): Promise<Backend> {
  return openFileBackend(file, opts);
}

/** Like openBackend, typed as the concrete class (fd, rotational, physicalBlockSize, direct). */
export async function openFileBackend(file: string, opts: OpenBackendOptions = {}): Promise<FileBackend> {
  const readOnly = opts.readOnly ?? false;
  const useNative = (opts.useNative ?? true) && native.nativeAvailable;
  let st: fs.BigIntStats;
  try {
    st = await fs.promises.stat(file, { bigint: true });
  } catch (err) {
    throw toBackendError(err, 'open', file, 0);
  }
  const isFile = st.isFile();
  const isBlock = st.isBlockDevice();
  if (!isFile && !isBlock) {
    const what = describeNonStorage(st as unknown as fs.Stats);
    throw new BackendError('EINVAL', `${file} is ${what}, not a regular file or a block device`, 0);
  }
  let flags = readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR;
  if (isBlock && opts.exclusive) flags |= fs.constants.O_EXCL;
  let notice: string | undefined;
  let direct = false;
  if (opts.direct) {
    if (!useNative || !lanesAvailable) {
      notice = `${file}: direct I/O needs the native addon (${native.nativeStatus}); using the page cache`;
    } else if (isFile && st.size % BigInt(FILE_DIRECT_ALIGN) !== 0n) {
      notice = `${file}: size ${st.size} is not a multiple of ${FILE_DIRECT_ALIGN}; using the page cache`;
    } else {
      direct = true;
    }
  }
  let fd: number;
  try {
    try {
      fd = await openFd(file, direct ? flags | fs.constants.O_DIRECT : flags);
    } catch (err) {
      if (!direct || (err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
      direct = false;
      notice = `${file}: the filesystem refuses O_DIRECT (EINVAL); using the page cache`;
      fd = await openFd(file, flags);
    }
  } catch (err) {
    throw toBackendError(err, 'open', file, 0);
  }
  try {
    // Re-check on the fd: the path may have been replaced between stat and open.
    const fst = fs.fstatSync(fd, { bigint: true });
    if (fst.dev !== st.dev || fst.ino !== st.ino) {
      throw new BackendError('EAGAIN', `${file} changed while it was being opened`, 0);
    }
    const mode = (align: number): IoMode => ({
      direct,
      align: direct ? align : 0,
      notice,
      laneName: opts.laneName ?? file,
      threads: opts.ioThreads,
      deadlineMs: opts.deadlineMs ?? 0,
    });
    if (isFile) {
      return new FileBackend(file, 'file', fd, Number(fst.size), 512, readOnly, useNative, {
        punchHoles: useNative && !readOnly,
        io: mode(FILE_DIRECT_ALIGN),
      });
    }
    const info = blockDeviceInfo(file, fst.rdev);
    return new FileBackend(file, 'block', fd, info.size, info.logicalBlockSize, readOnly, useNative, {
      stableIds: info.stableIds,
      rotational: info.rotational,
      physicalBlockSize: info.physicalBlockSize,
      punchHoles: useNative && !readOnly && info.writeZeroesMaxBytes > 0,
      io: mode(Math.max(512, info.logicalBlockSize)),
    });
  } catch (err) {
    fs.closeSync(fd);
    throw err instanceof BackendError ? err : toBackendError(err, 'open', file, 0);
  }
}
