/**
 * The main device served as it is, with no spare: the baseline the remap layer is measured against.
 */
import { StateFlag, MAX_PAYLOAD } from '../protocol/constants';
import {
  DeviceError,
  type BlockDevice,
  type BlockSizeConstraints,
  type DeviceCapabilities,
  type Extent,
  type ZeroOptions,
} from '../protocol/block-device';
import type { Backend } from '../storage/backend';
import { addBytes, type ByteOffset } from '../units';
import { rethrowDeviceError, toDeviceError } from './device-errors';

/** CACHE reads at most this much per request into a scratch buffer to warm the page cache. */
const CACHE_CHUNK = 1024 * 1024;
const CACHE_LIMIT = 64 * 1024 * 1024;

export class PassthroughDevice implements BlockDevice {
  readonly size: number;
  readonly capabilities: DeviceCapabilities;
  readonly blockSize: BlockSizeConstraints;
  readonly description: string;

  constructor(
    private readonly main: Backend,
    opts: { readOnly?: boolean; description?: string } = {},
  ) {
    this.size = main.size;
    const writable = !opts.readOnly && !main.readOnly;
    this.capabilities = {
      writable,
      flush: true,
      fua: 'emulate',
      trim: writable,
      zero: writable,
      fastZero: writable && main.canPunchHoles,
      cache: true,
      extents: true,
      multiConn: true,
      rotational: false,
    };
    this.blockSize = { minimum: 1, preferred: 4096, maximum: MAX_PAYLOAD };
    this.description = opts.description ?? `${main.path} (passthrough)`;
  }

  // read and write (the hot path) without an async wrapper: one promise per request fewer.
  read(offset: ByteOffset, length: number, target: Buffer, targetOffset: number): Promise<void> {
    try {
      return this.main.read(offset, length, target, targetOffset).catch(rethrowDeviceError);
    } catch (err) {
      return Promise.reject(toDeviceError(err));
    }
  }

  write(offset: ByteOffset, data: Buffer, fua: boolean): Promise<void> {
    if (fua) return this.writeFua(offset, data);
    try {
      return this.main.write(offset, data).catch(rethrowDeviceError);
    } catch (err) {
      return Promise.reject(toDeviceError(err));
    }
  }

  private async writeFua(offset: ByteOffset, data: Buffer): Promise<void> {
    try {
      await this.main.write(offset, data);
      await this.main.sync();
    } catch (err) {
      throw toDeviceError(err);
    }
  }

  async flush(): Promise<void> {
    try {
      await this.main.sync();
    } catch (err) {
      throw toDeviceError(err);
    }
  }

  async trim(offset: ByteOffset, length: number, fua: boolean): Promise<void> {
    try {
      await this.main.trim(offset, length);
      if (fua) await this.main.sync();
    } catch (err) {
      throw toDeviceError(err);
    }
  }

  async zero(offset: ByteOffset, length: number, o: ZeroOptions): Promise<void> {
    if (o.fastZero && !this.main.canPunchHoles) {
      throw new DeviceError('ENOTSUP', 'fast zeroing is not available on this backend');
    }
    try {
      await this.main.zero(offset, length, o.noHole);
      if (o.fua) await this.main.sync();
    } catch (err) {
      throw toDeviceError(err);
    }
  }

  async cache(offset: ByteOffset, length: number): Promise<void> {
    const scratch = Buffer.allocUnsafe(Math.min(CACHE_CHUNK, length));
    const end = offset + Math.min(length, CACHE_LIMIT);
    try {
      for (let at = offset; at < end; at = addBytes(at, CACHE_CHUNK)) {
        const n = Math.min(CACHE_CHUNK, end - at);
        await this.main.read(at, n, scratch, 0);
      }
    } catch (err) {
      throw toDeviceError(err);
    }
  }

  async extents(offset: ByteOffset, length: number): Promise<Extent[]> {
    try {
      const map = await this.main.extents(offset, length);
      return map.map((e) => ({ length: e.length, flags: e.hole ? StateFlag.HOLE | StateFlag.ZERO : 0 }));
    } catch (err) {
      throw toDeviceError(err);
    }
  }
}
