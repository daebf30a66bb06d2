/**
 * The evacuation layer: a BlockDevice wrapping the served device (like an nbdkit filter), installed at
 * start so it is always there. Idle, it forwards every request. While an evacuation runs it also
 *
 * - mirrors every write, zero and trim to the target disk once the served device has done it (a trim
 *   is mirrored as a copy of the range, since a trimmed range need not read back as zeroes), and
 * - lets the copier take a range lock: writes overlapping the chunk being copied wait until it is on the
 *   target, and the copier first waits for overlapping writes already in flight. So the target never
 *   gets a stale chunk after a newer write.
 *
 * `switchTo(device)` replaces the served device without dropping connections: new requests wait at a
 * gate, requests in flight drain, the new device takes over, the gate opens.
 *
 * Idle (no gate, no target, no range lock), every request goes straight through with one counter
 * around it: this layer sits on every request, and an async wrapper per request cost measurable CPU.
 * Writes that start while idle are only counted; a range lock first waits for all of them to end
 * (they cannot be told apart by range), and writes starting after that are tracked one by one.
 */
import {
  DeviceError,
  type BlockDevice,
  type BlockSizeConstraints,
  type DeviceCapabilities,
  type Extent,
  type ZeroOptions,
} from '../../protocol/block-device';
import { addBytes, type ByteOffset } from '../../units';
import type { Backend } from '../../storage/backend';

interface Span {
  readonly start: number;
  readonly end: number;
}

interface Waitable extends Span {
  readonly done: Promise<void>;
}

const overlaps = (a: Span, start: number, end: number) => a.start < end && start < a.end;

export class MirrorDevice implements BlockDevice {
  readonly size: number;
  readonly capabilities: DeviceCapabilities;
  readonly blockSize: BlockSizeConstraints;
  readonly description?: string;
  private target: Backend | undefined;
  private onTargetError: ((err: Error) => void) | undefined;
  private readonly writes = new Set<Waitable>();
  private lock: Waitable | undefined;
  private gate: Promise<void> | undefined;
  private inFlight = 0;
  private drainWaiters: (() => void)[] = [];
  /** Writes, zeroes and trims that started while idle (not in `writes`), and who waits for them to end. */
  private untracked = 0;
  private untrackedWaiters: (() => void)[] = [];

  constructor(private inner: BlockDevice) {
    this.size = inner.size;
    this.capabilities = inner.capabilities;
    this.blockSize = inner.blockSize;
    this.description = inner.description;
  }

  get served(): BlockDevice {
    return this.inner;
  }

  /** Start mirroring writes to `target`; a failed mirror write calls `onError` (the client's write still succeeds). */
  mirrorTo(target: Backend, onError: (err: Error) => void): void {
    this.target = target;
    this.onTargetError = onError;
  }

  stopMirroring(): void {
    this.target = undefined;
    this.onTargetError = undefined;
  }

  /** Run `fn` with [offset, offset+length) locked against writes, after overlapping writes in flight finished. */
  async withRangeLock<T>(offset: number, length: number, fn: () => Promise<T>): Promise<T> {
    while (this.lock) await this.lock.done;
    let release!: () => void;
    const lock: Waitable = { start: offset, end: offset + length, done: new Promise<void>((r) => (release = r)) };
    this.lock = lock;
    try {
      // From here every new write is tracked; those that started while idle can only be waited for together.
      if (this.untracked > 0) await new Promise<void>((r) => this.untrackedWaiters.push(r));
      for (const w of [...this.writes]) if (overlaps(w, lock.start, lock.end)) await w.done.catch(() => undefined);
      return await fn();
    } finally {
      this.lock = undefined;
      release();
    }
  }

  /** Serve `next` instead, without dropping connections. Resolves once it serves every request. */
  async switchTo(next: BlockDevice): Promise<BlockDevice> {
    let open!: () => void;
    this.gate = new Promise<void>((r) => (open = r));
    try {
      if (this.inFlight > 0) await new Promise<void>((r) => this.drainWaiters.push(r));
      await this.inner.flush();
      const old = this.inner;
      this.inner = next;
      return old;
    } finally {
      this.gate = undefined;
      open();
    }
  }

  private async enter(): Promise<void> {
    while (this.gate) await this.gate;
    this.inFlight++;
  }

  private leave(): void {
    if (--this.inFlight === 0) for (const r of this.drainWaiters.splice(0)) r();
  }

  /** Nothing to mirror, lock or wait for: requests go straight through (see the header). */
  private get idle(): boolean {
    return this.gate === undefined && this.target === undefined && this.lock === undefined;
  }

  private readonly leaveOk = (): void => this.leave();
  private readonly leaveErr = (err: unknown): never => {
    this.leave();
    throw err;
  };

  private untrackedEnd(): void {
    if (--this.untracked === 0) for (const r of this.untrackedWaiters.splice(0)) r();
    this.leave();
  }

  private readonly untrackedOk = (): void => this.untrackedEnd();
  private readonly untrackedErr = (err: unknown): never => {
    this.untrackedEnd();
    throw err;
  };

  /** An idle write, zero or trim: counted, not tracked. */
  private passMutation(run: () => Promise<void>): Promise<void> {
    this.inFlight++;
    this.untracked++;
    let p: Promise<void>;
    try {
      p = run();
    } catch (err) {
      p = Promise.reject(err);
    }
    return p.then(this.untrackedOk, this.untrackedErr);
  }

  private async mutate(
    offset: number,
    length: number,
    onInner: () => Promise<void>,
    onTarget: (t: Backend) => Promise<void>,
  ): Promise<void> {
    await this.enter();
    try {
      const end = offset + length;
      while (this.lock && overlaps(this.lock, offset, end)) await this.lock.done;
      let finish!: () => void;
      const w: Waitable = { start: offset, end, done: new Promise<void>((r) => (finish = r)) };
      this.writes.add(w);
      try {
        await onInner();
        const t = this.target;
        if (t) {
          try {
            await onTarget(t);
          } catch (err) {
            this.onTargetError?.(err as Error);
          }
        }
      } finally {
        this.writes.delete(w);
        finish();
      }
    } finally {
      this.leave();
    }
  }

  read(offset: ByteOffset, length: number, target: Buffer, targetOffset: number): Promise<void> {
    if (this.gate === undefined) {
      this.inFlight++;
      let p: Promise<void>;
      try {
        p = this.inner.read(offset, length, target, targetOffset);
      } catch (err) {
        p = Promise.reject(err);
      }
      return p.then(this.leaveOk, this.leaveErr);
    }
    return this.readGated(offset, length, target, targetOffset);
  }

  private async readGated(offset: ByteOffset, length: number, target: Buffer, targetOffset: number): Promise<void> {
    await this.enter();
    try {
      await this.inner.read(offset, length, target, targetOffset);
    } finally {
      this.leave();
    }
  }

  write(offset: ByteOffset, data: Buffer, fua: boolean): Promise<void> {
    if (this.idle) return this.passMutation(() => this.inner.write(offset, data, fua));
    return this.mutate(
      offset,
      data.length,
      () => this.inner.write(offset, data, fua),
      async (t) => {
        await t.write(offset, data);
        if (fua) await t.sync();
      },
    );
  }

  zero(offset: ByteOffset, length: number, o: ZeroOptions): Promise<void> {
    if (this.idle) return this.passMutation(() => this.inner.zero(offset, length, o));
    return this.mutate(
      offset,
      length,
      () => this.inner.zero(offset, length, o),
      (t) => t.zero(offset, length, true),
    );
  }

  trim(offset: ByteOffset, length: number, fua: boolean): Promise<void> {
    if (this.idle) return this.passMutation(() => this.inner.trim(offset, length, fua));
    return this.mutate(
      offset,
      length,
      () => this.inner.trim(offset, length, fua),
      (t) => this.copyRange(offset, length, t),
    );
  }

  /** What the served device now holds in the range, onto the target (mirrors a trim). */
  private async copyRange(offset: ByteOffset, length: number, t: Backend): Promise<void> {
    const chunk = Buffer.allocUnsafe(Math.min(length, 1024 * 1024));
    for (let at = offset; at < offset + length; at = addBytes(at, chunk.length)) {
      const n = Math.min(chunk.length, offset + length - at);
      try {
        await this.inner.read(at, n, chunk, 0);
      } catch (err) {
        if (err instanceof DeviceError) continue; // unreadable: the copier lists it
        throw err;
      }
      await t.write(at, chunk.subarray(0, n));
    }
  }

  async flush(): Promise<void> {
    await this.enter();
    try {
      await this.inner.flush();
      const t = this.target;
      if (t) await t.sync().catch((err) => this.onTargetError?.(err as Error));
    } finally {
      this.leave();
    }
  }

  async cache(offset: ByteOffset, length: number): Promise<void> {
    await this.enter();
    try {
      await this.inner.cache(offset, length);
    } finally {
      this.leave();
    }
  }

  async extents(offset: ByteOffset, length: number): Promise<Extent[]> {
    await this.enter();
    try {
      return await this.inner.extents(offset, length);
    } finally {
      this.leave();
    }
  }
}
