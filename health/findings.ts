/**
 * What the health scan does with what it finds: slow blocks are counted per pass and migrated when slow
 * twice in a row (or confirmed very slow), flaky blocks are migrated at once, unreadable blocks are marked
 * pending (never remapped blindly: the next client write remaps them). All changes go through the
 * RemapDevice, one at a time, in the order found. It also keeps the per-pass history that the health
 * score's trend uses, and computes the score and its label.
 */
import type { Logger } from 'pino';
import type { MigrationResult, RemapStatus } from '../remap/remap-device';
import type { RemapReason, ScanState } from '../metadata/types';
import { blockStart, type ByteOffset, type MainBlock } from '../units';
import type { ScanSettings } from './config';
import type { Finding } from './protocol';
import { healthScore, type HealthLabel, type Score, type ScoreInputs } from './score';

/** What the scanner needs from the remapping device (RemapDevice satisfies it). */
export interface ScanDevice {
  readonly size: number;
  readonly remapBlockSize: number;
  readonly ioActivity: number;
  readonly store: { scanState(): ScanState; saveScanState(s: ScanState): Promise<void> };
  isRemapped(block: MainBlock): boolean;
  isPending(block: MainBlock): boolean;
  moveToSpare(block: MainBlock, reason: RemapReason): Promise<MigrationResult>;
  markPending(blocks: MainBlock[]): Promise<void>;
  status(): RemapStatus;
  /** Main is failed as a whole (remap/main-state.ts): a read that fails now says nothing about its block. */
  readonly mainFailed?: boolean;
}

const ERROR_REASONS = ['read-error', 'write-error', 'scan-flaky', 'scan-error', 'spare-error'];

export interface FindingsContext {
  readonly device: ScanDevice;
  readonly log: Logger;
  settings(): ScanSettings;
  /** Passes completed so far (the pass in progress is this number + 1). */
  passes(): number;
  closed(): boolean;
  /** Extra score inputs from outside the scan (SMART counts). */
  extraScoreInputs(): Partial<ScoreInputs>;
  /** A label change: {from, to, score}. */
  onLabel(e: { from: HealthLabel | undefined; to: HealthLabel; score: number }): void;
}

export class FindingsHandler {
  /** block → {lastPass, consecutive passes slow}. */
  private readonly slowHistory = new Map<MainBlock, { lastPass: number; passes: number }>();
  private readonly failed = new Set<MainBlock>();
  private readonly flaky = new Set<MainBlock>();
  private migrated = 0;
  /** Distinct blocks with new findings in the pass in progress, and per completed pass. */
  private passFindings = new Set<MainBlock>();
  private readonly recentPasses: number[] = [];
  private label: HealthLabel | undefined;
  private migrations: Promise<void> = Promise.resolve();
  /** Findings ignored in a row because main was failed (the log says so once per outage). */
  private droppedWhileFailed = 0;

  constructor(private readonly c: FindingsContext) {}

  /** Resolves when every queued migration and pending mark is done. */
  idle(): Promise<void> {
    return this.migrations;
  }

  passStarted(): void {
    this.passFindings = new Set();
  }

  /** Bookkeeping at the end of a pass; `passes` is the new count of completed passes. */
  passEnded(passes: number): number {
    const found = this.passFindings.size;
    this.recentPasses.push(found);
    if (this.recentPasses.length > 8) this.recentPasses.shift();
    // Slow blocks not seen again in this pass are no longer "consecutive".
    for (const [b, h] of this.slowHistory) if (h.lastPass < passes - 1) this.slowHistory.delete(b);
    this.updateLabel();
    return found;
  }

  handle(f: Finding): void {
    const b = f.block;
    const device = this.c.device;
    if (device.isRemapped(b)) return; // main's copy is no longer used
    if (device.mainFailed) {
      // The device is gone or fails everywhere: its blocks are not to blame (the scan finds them again later).
      if (this.droppedWhileFailed++ === 0)
        this.c.log.warn({ block: b, kind: f.kind }, 'health scan: main is failed; findings ignored until it answers');
      return;
    }
    this.droppedWhileFailed = 0;
    this.passFindings.add(b);
    switch (f.kind) {
      case 'slow':
      case 'very-slow': {
        const h = this.slowHistory.get(b);
        const pass = this.c.passes();
        const passes = !h ? 1 : h.lastPass === pass ? h.passes : h.lastPass === pass - 1 ? h.passes + 1 : 1;
        this.slowHistory.set(b, { lastPass: pass, passes });
        this.c.log.warn({ block: b, offset: f.offset, latencyMs: f.latencyMs, kind: f.kind, passes }, 'health scan: slow block');
        if (f.kind === 'very-slow' || passes >= this.c.settings().slowPasses) this.migrate(b, 'scan-slow');
        break;
      }
      case 'flaky':
        this.flaky.add(b);
        this.c.log.warn({ block: b, offset: f.offset, failures: f.failures, sectors: f.sectors }, 'health scan: block read only on retry');
        this.migrate(b, 'scan-flaky');
        break;
      case 'unreadable':
        this.failed.add(b);
        this.c.log.error(
          { block: b, offset: f.offset, failures: f.failures, error: f.error, sectors: f.sectors },
          'health scan: unreadable block (pending: the next write remaps it)',
        );
        this.migrations = this.migrations.then(async () => {
          if (device.isRemapped(b) || device.isPending(b)) return;
          try {
            await device.markPending([b]);
          } catch (err) {
            this.c.log.error({ err, block: b }, 'health scan: marking a block pending failed');
          }
          this.updateLabel();
        });
        break;
    }
    this.updateLabel();
  }

  private migrate(b: MainBlock, reason: 'scan-slow' | 'scan-flaky'): void {
    const device = this.c.device;
    this.migrations = this.migrations.then(async () => {
      if (this.c.closed() || device.isRemapped(b)) return;
      try {
        const r = await device.moveToSpare(b, reason);
        if (r === 'migrated') {
          this.migrated++;
          this.slowHistory.delete(b);
          this.c.log.warn({ block: b, offset: blockStart(b, device.remapBlockSize), reason }, 'health scan: block migrated to the spare');
        } else {
          this.c.log.warn(
            { block: b, offset: blockStart(b, device.remapBlockSize), reason, result: r },
            'health scan: block could not be migrated',
          );
        }
      } catch (err) {
        this.c.log.error({ err, block: b, reason }, 'health scan: migration failed');
      }
      this.updateLabel();
    });
  }

  counts(pending: number): { slow: number; failed: number; flaky: number; migrated: number; pending: number } {
    return { slow: this.slowNotMigrated(), failed: this.failed.size, flaky: this.flaky.size, migrated: this.migrated, pending };
  }

  /** Byte offsets of slow blocks seen and not (yet) migrated, at most 1000. */
  slowOffsets(): ByteOffset[] {
    const d = this.c.device;
    return [...this.slowHistory.keys()]
      .filter((b) => !d.isRemapped(b))
      .sort((a, b) => a - b)
      .slice(0, 1000)
      .map((b) => blockStart(b, d.remapBlockSize));
  }

  private slowNotMigrated(): number {
    let n = 0;
    for (const b of this.slowHistory.keys()) if (!this.c.device.isRemapped(b)) n++;
    return n;
  }

  score(dev: RemapStatus = this.c.device.status()): Score {
    const by = dev.remaps.byReason;
    const errorRemaps = ERROR_REASONS.reduce((a, r) => a + (by[r] ?? 0), 0);
    const extra = this.c.extraScoreInputs();
    return healthScore({
      unreadable: dev.pending.count,
      errorRemaps,
      slow: (by['scan-slow'] ?? 0) + this.slowNotMigrated(),
      spareUsedPercent: dev.spare.usedPercent,
      spareExhausted: dev.spare.exhausted,
      recentPasses: this.recentPasses,
      ...extra,
      mainFailed: dev.main.state === 'failed' || extra.mainFailed === true,
    });
  }

  /** Recomputes the label and reports a change (the first label, when healthy, is not a change). */
  updateLabel(): void {
    const sc = this.score();
    if (sc.label === this.label) return;
    const from = this.label;
    this.label = sc.label;
    if (from === undefined && sc.label === 'healthy') return;
    this.c.log.warn(
      { event: 'health-label', from: from ?? null, to: sc.label, score: sc.score, penalties: sc.penalties },
      `disk health is now ${sc.label}`,
    );
    this.c.onLabel({ from, to: sc.label, score: sc.score });
  }
}
