/**
 * Loader and typed wrappers for the optional native addon (storage/native/remapd_native.c, built by
 * node-gyp at install time into build/Release/remapd_native.node).
 *
 * When the addon is missing (no compiler at install time) or disabled with REMAPD_NATIVE=0,
 * `nativeAvailable` is false and every wrapper rejects with ENOSYS; callers check the flag and fall
 * back (trim/zero write zeroes, extents report everything as data).
 *
 * Errors from the addon carry the OS error as `code` (e.g. 'EOPNOTSUPP'), `errno` (positive number)
 * and `syscall`, like Node's own fs errors.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

interface RawAddon {
  punchHole(fd: number, offset: number, length: number): Promise<void>;
  zeroRange(fd: number, offset: number, length: number): Promise<void>;
  seek(fd: number, offset: number, whence: 'data' | 'hole'): Promise<number>;
  mapExtents(fd: number, offset: number, length: number, maxExtents: number): Promise<number[]>;
  blkDiscard(fd: number, offset: number, length: number): Promise<void>;
  blkZeroout(fd: number, offset: number, length: number): Promise<void>;
  sendDatagram(socketPath: string, message: Buffer | string): Promise<void>;
  laneCreate?(threads: number, maxStuck: number, name: string): LaneHandle;
  laneSubmit?(lane: LaneHandle, fd: number, align: number, bufs: Buffer[], desc: Float64Array, done: (abandoned: boolean) => void): number;
  laneAbandon?(lane: LaneHandle, id: number): 0 | 1 | 2;
  laneStats?(lane: LaneHandle): [number, number, number, number, number];
  laneClose?(lane: LaneHandle): void;
  allocAligned?(size: number): Buffer;
  aioCreate?(maxEvents: number, list: Float64Array, onDone: (n: number) => void): AioHandle | undefined;
  aioSubmit?(h: AioHandle, fd: number, align: number, bufs: Buffer[], desc: Float64Array): number;
  aioAbandon?(h: AioHandle, id: number): boolean;
  aioClose?(h: AioHandle): void;
  flockNb?(fd: number, exclusive: boolean): boolean;
}

/** A lane of I/O threads in the addon (storage/native/io_lane.c); opaque. */
export type LaneHandle = { readonly __lane: unique symbol };
export type AioHandle = { readonly __aio: unique symbol };

/** An error from the addon, shaped like a Node fs error. */
export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

const errnoNames = new Map<number, string>();
for (const [name, num] of Object.entries(os.constants.errno)) {
  // Several names share a number (EAGAIN/EWOULDBLOCK, EOPNOTSUPP/ENOTSUP): keep the first.
  if (!errnoNames.has(num)) errnoNames.set(num, name);
}

/** The errno name for a positive OS error number ('EIO' for 5). */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

function candidates(): string[] {
  const file = 'remapd_native.node';
  const out: string[] = [];
  if (process.env.REMAPD_NATIVE_PATH) out.push(process.env.REMAPD_NATIVE_PATH);
  // dist/storage/native.js -> repo root is two levels up; storage/native.ts (ts-node) one level up.
  for (const up of ['../..', '..']) {
    out.push(path.resolve(__dirname, up, 'build', 'Release', file));
    out.push(path.resolve(__dirname, up, 'build', 'Debug', file));
  }
  return out;
}

function load(): { addon?: RawAddon; reason: string } {
  const env = process.env.REMAPD_NATIVE;
  if (env === '0' || env === 'off' || env === 'false') {
    return { reason: 'disabled by REMAPD_NATIVE' };
  }
  const tried: string[] = [];
  for (const file of candidates()) {
    if (!fs.existsSync(file)) {
      tried.push(file);
      continue;
    }
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const addon = require(file) as RawAddon;
      return { addon, reason: `loaded ${file}` };
    } catch (err) {
      return { reason: `cannot load ${file}: ${(err as Error).message}` };
    }
  }
  return { reason: `not built (looked for ${tried.join(', ')})` };
}

const loaded = load();
const addon = loaded.addon;

/** True when the native addon is loaded. */
export const nativeAvailable: boolean = addon !== undefined;
/** Why the addon is or is not available (for logs and `remapd --version`-style diagnostics). */
export const nativeStatus: string = loaded.reason;

function wrapError(err: unknown): never {
  const e = err as Partial<NativeError> & Error;
  if (typeof e.errno === 'number' && e.errno > 0) {
    e.code = errnoName(e.errno);
  }
  throw e;
}

function unavailable(what: string): Promise<never> {
  const err = new Error(`${what}: native addon not available (${nativeStatus})`) as NativeError;
  err.code = 'ENOSYS';
  err.errno = os.constants.errno.ENOSYS;
  err.syscall = what;
  return Promise.reject(err);
}

/** fallocate(PUNCH_HOLE | KEEP_SIZE). On a block device: zero with unmap, no fallback (kernel). */
export function punchHole(fd: number, offset: number, length: number): Promise<void> {
  if (!addon) return unavailable('punchHole');
  return addon.punchHole(fd, offset, length).catch(wrapError);
}

/** fallocate(ZERO_RANGE | KEEP_SIZE): the range reads as zeroes and stays allocated. */
export function zeroRange(fd: number, offset: number, length: number): Promise<void> {
  if (!addon) return unavailable('zeroRange');
  return addon.zeroRange(fd, offset, length).catch(wrapError);
}

/** lseek(SEEK_DATA) / lseek(SEEK_HOLE). Resolves -1 when the kernel answers ENXIO. */
export function seek(fd: number, offset: number, whence: 'data' | 'hole'): Promise<number> {
  if (!addon) return unavailable('seek');
  return addon.seek(fd, offset, whence).catch(wrapError);
}

/**
 * Walks [offset, offset+length) with SEEK_DATA/SEEK_HOLE in one thread-pool job. The extents cover
 * the range exactly; past `maxExtents` the remainder is reported as data.
 */
export async function mapExtents(
  fd: number,
  offset: number,
  length: number,
  maxExtents = 65536,
): Promise<{ length: number; hole: boolean }[]> {
  if (!addon) return unavailable('mapExtents');
  const flat = await addon.mapExtents(fd, offset, length, maxExtents).catch(wrapError);
  const out: { length: number; hole: boolean }[] = [];
  for (let i = 0; i < flat.length; i += 2) out.push({ length: flat[i], hole: flat[i + 1] !== 0 });
  return out;
}

/** ioctl(BLKDISCARD). Offset and length must be multiples of the logical block size. */
export function blkDiscard(fd: number, offset: number, length: number): Promise<void> {
  if (!addon) return unavailable('blkDiscard');
  return addon.blkDiscard(fd, offset, length).catch(wrapError);
}

/** ioctl(BLKZEROOUT): writes zeroes (never unmaps). Offset and length sector-aligned. */
export function blkZeroout(fd: number, offset: number, length: number): Promise<void> {
  if (!addon) return unavailable('blkZeroout');
  return addon.blkZeroout(fd, offset, length).catch(wrapError);
}

/**
 * Sends one datagram to a Unix datagram socket (systemd's NOTIFY_SOCKET). A path starting with
 * '@' names an abstract socket.
 */
export function sendDatagram(socketPath: string, message: Buffer | string): Promise<void> {
  if (!addon) return unavailable('sendDatagram');
  return addon.sendDatagram(socketPath, message).catch(wrapError);
}

/** Op header slots in a lane job descriptor (see storage/native/io_lane.c). */
export const BATCH_HDR = 6;
/** Op kinds in a lane job descriptor. */
export const OP_READ = 0;
export const OP_WRITE = 1;
export const OP_SYNC = 2;
/** Sleeps `length` ms on a lane thread, like a hung device (tests). */
export const OP_STALL = 3;
/** fallocate(PUNCH_HOLE | KEEP_SIZE), fallocate(ZERO_RANGE | KEEP_SIZE), ioctl(BLKZEROOUT) on a lane. */
export const OP_PUNCH = 4;
export const OP_ZERO_RANGE = 5;
export const OP_ZEROOUT = 6;

/** The lane functions of the addon; undefined when the addon (or an older build) is not loaded. */
export interface LaneApi {
  /** Starts `threads` I/O threads; at most `maxStuck` more may be started to replace stuck ones. */
  create(threads: number, maxStuck: number, name: string): LaneHandle;
  /**
   * Queues one job: ops back to back in `desc`:
   * [kind, fileOffset, length, nseg, done(out), errno(out), (bufIndex, bufOffset, segLength) x nseg].
   * `align` > 0: the fd is O_DIRECT with that alignment (unaligned ops are bounced inside).
   * `done(abandoned)` runs on the JS thread once the ops ran and desc holds the results.
   */
  submit(lane: LaneHandle, fd: number, align: number, bufs: Buffer[], desc: Float64Array, done: (abandoned: boolean) => void): number;
  /** 0: already finished; 1: dropped from the queue (done never runs); 2: running, now stuck. */
  abandon(lane: LaneHandle, id: number): 0 | 1 | 2;
  /** [live threads, stuck threads, queued jobs, running jobs, target threads]. */
  stats(lane: LaneHandle): [number, number, number, number, number];
  close(lane: LaneHandle): void;
}

export const lanes: LaneApi | undefined =
  addon && typeof addon.laneCreate === 'function'
    ? {
        create: addon.laneCreate.bind(addon),
        submit: addon.laneSubmit!.bind(addon),
        abandon: addon.laneAbandon!.bind(addon),
        stats: addon.laneStats!.bind(addon),
        close: addon.laneClose!.bind(addon),
      }
    : undefined;

/**
 * Linux AIO for O_DIRECT reads and writes (storage/native/aio_lane.c); undefined without the addon.
 * create() gives undefined where the kernel has no AIO context to spare.
 */
export interface AioApi {
  /** `list` receives the ids of finished ops; onDone(n) runs on the JS thread with their count. */
  create(maxEvents: number, list: Float64Array, onDone: (n: number) => void): AioHandle | undefined;
  /**
   * Sends desc's aligned reads and writes (lane format) to the kernel in one io_submit; returns the id
   * of desc's first op (op k: id + k). Ops left for the thread lane get errno -1 in desc; a finished
   * op's done/errno are in desc when its id is listed.
   */
  submit(h: AioHandle, fd: number, align: number, bufs: Buffer[], desc: Float64Array): number;
  /** The op stays in the kernel but no longer keeps the process alive; false if it is not in flight. */
  abandon(h: AioHandle, id: number): boolean;
  /** Destroys the context once nothing is in flight. */
  close(h: AioHandle): void;
}

export const aio: AioApi | undefined =
  addon && typeof addon.aioCreate === 'function' && process.env.REMAPD_AIO !== '0'
    ? {
        create: addon.aioCreate.bind(addon),
        submit: addon.aioSubmit!.bind(addon),
        abandon: addon.aioAbandon!.bind(addon),
        close: addon.aioClose!.bind(addon),
      }
    : undefined;

/** A Buffer on page-aligned (4096) memory, freed when collected; undefined without the addon. */
export const allocAligned: ((size: number) => Buffer) | undefined =
  addon && typeof addon.allocAligned === 'function' ? addon.allocAligned.bind(addon) : undefined;

/**
 * flock(LOCK_EX | LOCK_NB) (exclusive) or flock(LOCK_UN) on an open fd, synchronously: true when done,
 * false when another open file description holds the lock. Undefined when the addon (or an addon built
 * before flockNb existed) is not loaded; callers fall back (daemon/owner-lock.ts).
 */
export const flockNb: ((fd: number, exclusive: boolean) => boolean) | undefined =
  addon && typeof addon.flockNb === 'function'
    ? (fd: number, exclusive: boolean): boolean => {
        try {
          return addon.flockNb!(fd, exclusive);
        } catch (err) {
          return wrapError(err);
        }
      }
    : undefined;

/** The loaded addon's raw exports, for helpers kept beside their users (daemon/restart-native.ts). */
export const addonExports: Record<string, unknown> | undefined = addon as unknown as Record<string, unknown> | undefined;
