/**
 * In-process rig for the remap layer's unit tests: a real RemapDevice over real files (main, spare with
 * fresh metadata), where main and spare are wrapped in a HookedBackend. A hook runs before each
 * operation reaches the file and may wait (to force an interleaving deterministically) or throw a
 * BackendError (to fail it the way a device does: the error's offset is where the request started, as
 * O_DIRECT reports it, not the exact failing byte).
 */
import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { MetadataStore } from '../../metadata/store';
import { identityFromBackend } from '../../metadata/fingerprint';
import { BackendError, type Backend, type BackendKind } from '../../storage/backend';
import { openBackend } from '../../storage/file-backend';
import { RemapDevice } from '../../remap/remap-device';
import { byteOffset } from '../../units';

export type Op = 'read' | 'write' | 'sync' | 'trim' | 'zero';
export type Hook = (op: Op, offset: number, length: number) => void | Promise<void>;

export class HookedBackend implements Backend {
  hook: Hook | undefined;
  /** Runs after an operation reached the file, before it resolves (reads: the data is already read). */
  after: Hook | undefined;
  /** Every operation that reached the hook, in order. */
  readonly ops: { op: Op; offset: number; length: number }[] = [];

  constructor(readonly inner: Backend) {}

  get path(): string {
    return this.inner.path;
  }
  get kind(): BackendKind {
    return this.inner.kind;
  }
  get size(): number {
    return this.inner.size;
  }
  get logicalBlockSize(): number {
    return this.inner.logicalBlockSize;
  }
  get stableIds(): { readonly serial?: string; readonly wwn?: string } {
    return this.inner.stableIds;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  /** Tests may pretend main is (not) opened with O_DIRECT (remap/main-flush.ts retries only then). */
  directOverride: boolean | undefined;
  get direct(): boolean | undefined {
    return this.directOverride ?? this.inner.direct;
  }
  get canPunchHoles(): boolean {
    return this.inner.canPunchHoles;
  }
  get canReportHoles(): boolean {
    return this.inner.canReportHoles;
  }

  private async gate(op: Op, offset: number, length: number): Promise<void> {
    this.ops.push({ op, offset, length });
    if (this.hook) await this.hook(op, offset, length);
  }

  count(op: Op): number {
    return this.ops.filter((o) => o.op === op).length;
  }

  async read(offset: number, length: number, target: Buffer, targetOffset: number): Promise<void> {
    await this.gate('read', offset, length);
    await this.inner.read(byteOffset(offset), length, target, targetOffset);
    if (this.after) await this.after('read', offset, length);
  }
  async write(offset: number, source: Buffer, sourceOffset = 0, length?: number): Promise<void> {
    const len = length ?? source.length - sourceOffset;
    await this.gate('write', offset, len);
    await this.inner.write(byteOffset(offset), source, sourceOffset, len);
    if (this.after) await this.after('write', offset, len);
  }
  async sync(): Promise<void> {
    await this.gate('sync', 0, 0);
    return this.inner.sync();
  }
  async trim(offset: number, length: number): Promise<void> {
    await this.gate('trim', offset, length);
    return this.inner.trim(byteOffset(offset), length);
  }
  async zero(offset: number, length: number, noHole: boolean): Promise<void> {
    await this.gate('zero', offset, length);
    return this.inner.zero(byteOffset(offset), length, noHole);
  }
  extents(offset: number, length: number): Promise<{ length: number; hole: boolean }[]> {
    return this.inner.extents(byteOffset(offset), length);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** A hook failing `ops` that overlap any of the byte ranges, with `code`, offset = the request's start. */
export function failing(ops: Op[], ranges: { offset: number; length: number }[], code = 'EIO'): Hook {
  return (op, offset, length) => {
    if (!ops.includes(op)) return;
    if (op === 'sync' ? ranges.length > 0 : ranges.some((r) => offset < r.offset + r.length && r.offset < offset + length)) {
      throw new BackendError(code, `${op} at ${offset}+${length}: ${code} (test hook)`, offset);
    }
  };
}

export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

export interface Rig {
  dir: string;
  device: RemapDevice;
  main: HookedBackend;
  spare: HookedBackend;
  store: MetadataStore;
  /** The main image's initial contents. */
  original: Buffer;
  logs: Record<string, unknown>[];
  blockSize: number;
  close(): Promise<void>;
}

export async function remapRig(
  t: { teardown(fn: () => unknown): void },
  o: { mainBytes?: number; spareBytes?: number; blockSize?: number; readRetries?: number; outageHoldMs?: number } = {},
): Promise<Rig> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'remapd-rig-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const blockSize = o.blockSize ?? 4096;
  const original = randomFillSync(Buffer.alloc(o.mainBytes ?? 8 << 20));
  fs.writeFileSync(path.join(dir, 'main.img'), original);
  fs.writeFileSync(path.join(dir, 'spare.img'), Buffer.alloc(0));
  fs.truncateSync(path.join(dir, 'spare.img'), o.spareBytes ?? 16 << 20);
  const logs: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (l: string) => void logs.push(JSON.parse(l) as Record<string, unknown>) });
  const rawMain = await openBackend(path.join(dir, 'main.img'));
  const rawSpare = await openBackend(path.join(dir, 'spare.img'));
  const store = await MetadataStore.create(rawSpare, identityFromBackend(rawMain), { blockSize });
  await store.close();
  const main = new HookedBackend(rawMain);
  const spare = new HookedBackend(rawSpare);
  const opened = await MetadataStore.open(spare, identityFromBackend(rawMain));
  const device = new RemapDevice(main, spare, opened, { logger, readRetries: o.readRetries ?? 3, outageHoldMs: o.outageHoldMs });
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    (device as { close?: () => void }).close?.();
    main.hook = main.after = undefined;
    spare.hook = spare.after = undefined;
    await opened.close().catch(() => undefined);
    await rawMain.close();
    await rawSpare.close();
  };
  t.teardown(close);
  return { dir, device, main, spare, store: opened, original, logs, blockSize, close };
}

/** Read through the device; resolves to the bytes or the DeviceError. */
export async function devRead(
  dev: RemapDevice,
  offset: number,
  length: number,
): Promise<Buffer | (Error & { errno?: string; offset?: number })> {
  const buf = Buffer.alloc(length);
  try {
    await dev.read(byteOffset(offset), length, buf, 0);
    return buf;
  } catch (err) {
    return err as Error;
  }
}

export async function devWrite(
  dev: RemapDevice,
  offset: number,
  data: Buffer,
): Promise<undefined | (Error & { errno?: string; offset?: number })> {
  try {
    await dev.write(byteOffset(offset), data, false);
    return undefined;
  } catch (err) {
    return err as Error;
  }
}
