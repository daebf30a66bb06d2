/**
 * How the spare is doing: how full it is (a warning at spareWarnFraction, "exhausted" once a remap found
 * no free block), and whether it still takes writes.
 *
 * "Spare failing": a write, sync or metadata commit on the spare failed. From then on no new remap is
 * started (the write that needed one fails with EIO, logged with the cause), while everything else is
 * served: reads of main, writes to healthy main blocks, reads and writes of remapped blocks as far as the
 * spare still does them. A spare block whose write failed is never handed out again in this run. In the
 * background the spare is probed with back-off (1 s doubling to 60 s): the metadata is reloaded from the
 * spare when its store refused further commits (metadata/store.ts reload()), a metadata round is written
 * and synced, and a free data block is written, synced and read back. When all of that works the spare
 * is healthy again and remaps resume. Events: 'spare-low', 'spare-exhausted', 'spare-failing',
 * 'spare-recovered'.
 */
import { DeviceError } from '../protocol/block-device';
import { MetadataError } from '../metadata/types';
import type { RemapContext } from './context';
import { blockStart, type MainBlock, type SpareBlock } from '../units';

const PROBE_MIN_MS = 1000;
const PROBE_MAX_MS = 60_000;

export interface SpareFailingStatus {
  failing: boolean;
  /** What failed first, when failing. */
  cause: string | null;
  since: number | null;
  probes: number;
}

export class SpareState {
  private lowWarned = false;
  private exhaustedSeen = false;
  private failingSince: number | null = null;
  private cause: string | null = null;
  private probeTimer: NodeJS.Timeout | undefined;
  private probeDelay = PROBE_MIN_MS;
  private probes = 0;
  private closed = false;

  constructor(
    private readonly c: RemapContext,
    private readonly warnFraction: number,
  ) {}

  get used(): number {
    return this.c.store.spareDataBlocks - this.c.store.freeSpareBlocks;
  }

  get low(): boolean {
    const total = this.c.store.spareDataBlocks;
    return total > 0 && this.used >= total * this.warnFraction;
  }

  get exhausted(): boolean {
    return this.exhaustedSeen || this.used >= this.c.store.spareDataBlocks;
  }

  get failing(): boolean {
    return this.failingSince !== null;
  }

  failingStatus(): SpareFailingStatus {
    return { failing: this.failing, cause: this.cause, since: this.failingSince, probes: this.probes };
  }

  /** After a remap: warn once when the spare is filling up. */
  checkLevel(): void {
    const used = this.used;
    const total = this.c.store.spareDataBlocks;
    if (!this.lowWarned && this.low) {
      this.lowWarned = true;
      this.c.log.warn({ used, total, percent: +((100 * used) / total).toFixed(1) }, 'spare device is running out of space');
      this.c.events.emit('spare-low', { used, total });
    }
  }

  /** A remap of block b found no free spare block. */
  onExhausted(b: MainBlock): void {
    if (!this.exhaustedSeen) {
      this.exhaustedSeen = true;
      this.c.events.emit('spare-exhausted', {});
    }
    this.c.log.error(
      { block: b, offset: blockStart(b, this.c.blockSize), spareBlocks: this.c.store.spareDataBlocks },
      'SPARE EXHAUSTED: a failing block cannot be remapped; the write fails',
    );
  }

  /** Refuse a new remap of block b while the spare is failing: the error the write gets. */
  refuseRemap(b: MainBlock): DeviceError | undefined {
    if (!this.failing) return undefined;
    const at = blockStart(b, this.c.blockSize);
    this.c.log.error(
      { block: b, offset: at, cause: this.cause },
      'spare failing: a block that needs a remap cannot get one; the write fails',
    );
    return new DeviceError('EIO', `spare device failing (${this.cause}): cannot remap the block at byte ${at}`, at);
  }

  /** True for errors that say the spare cannot be written (not: table full, read-only, closed). */
  static isSpareFailure(err: unknown): boolean {
    if (err instanceof MetadataError) return err.code === 'FAILED';
    return !(err instanceof DeviceError && err.errno === 'ENOSPC');
  }

  /** A write, sync or commit on the spare failed: `what` names it. One loud line, then the probe. */
  noteFailure(what: string, err: unknown): void {
    if (this.closed) return;
    const msg = `${what}: ${(err as Error)?.message ?? String(err)}`;
    if (this.failingSince !== null) {
      this.c.log.warn({ spare: this.c.spare.path, err: msg }, 'spare still failing');
      return;
    }
    this.failingSince = Date.now();
    this.cause = msg;
    this.c.log.fatal({ spare: this.c.spare.path, cause: msg }, 'SPARE FAILING: no new remaps until it answers again; main is still served');
    this.c.events.emit('spare-failing', { cause: msg });
    this.probeDelay = PROBE_MIN_MS;
    this.scheduleProbe();
  }

  private scheduleProbe(): void {
    if (this.closed || this.failingSince === null || this.probeTimer) return;
    this.probeTimer = setTimeout(() => {
      this.probeTimer = undefined;
      void this.probe().then(
        () => this.recovered(),
        (err: unknown) => {
          this.c.log.warn({ spare: this.c.spare.path, err: (err as Error).message, nextProbeMs: this.probeDelay }, 'spare probe failed');
          this.probeDelay = Math.min(PROBE_MAX_MS, this.probeDelay * 2);
          this.scheduleProbe();
        },
      );
    }, this.probeDelay);
    this.probeTimer.unref();
  }

  /** Does the spare take metadata rounds and data writes again? Throws when not. */
  async probe(): Promise<void> {
    this.probes++;
    const { store, spare } = this.c;
    if (store.hasFailed) await store.reload();
    else await store.commit({ scan: store.scanState() });
    const b: SpareBlock | undefined = store.allocateSpareBlock();
    if (b === undefined) return;
    // A block that fails the probe stays reserved (never handed out in this run); one that works is freed.
    const at = blockStart(b, this.c.blockSize);
    const pattern = Buffer.alloc(this.c.blockSize, 0xa5);
    await spare.write(at, pattern);
    await spare.sync();
    const back = Buffer.alloc(this.c.blockSize);
    await spare.read(at, back.length, back, 0);
    if (!back.equals(pattern)) throw new Error(`spare block ${b} read back different data`);
    store.releaseSpareBlock(b);
  }

  private recovered(): void {
    if (this.failingSince === null) return;
    const downMs = Date.now() - this.failingSince;
    this.failingSince = null;
    this.cause = null;
    this.c.log.warn(
      { spare: this.c.spare.path, downSeconds: Math.round(downMs / 1000), probes: this.probes },
      'spare answers again: remaps resume',
    );
    this.c.events.emit('spare-recovered', {});
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
  }
}
