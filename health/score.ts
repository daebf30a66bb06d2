/**
 * Health score 0–100 (higher is better) and its label. Formula (docs/HEALTH.md §Score):
 *
 *   100
 *   − min(60, 15 × unreadable)     blocks pending (unreadable, data lost until rewritten)
 *   − min(30,  3 × errorRemaps)    blocks remapped after read/write errors or flaky reads
 *   − min(15,  1 × slow)           slow blocks (migrated 'scan-slow' + slow ones seen and not migrated)
 *   − spare penalty                40 exhausted, 20 at ≥ 90 % used, 10 at ≥ 75 %, 5 at ≥ 50 %
 *   − 10 when the trend is worse   the last complete pass found more new bad blocks than the one before
 *   SMART, when the drive answers (health/smart.ts):
 *   − 40 smart_status failed        the drive's own verdict
 *   − min(30, 5 × bad sectors)     ATA max(197 pending, 198 offline uncorrectable)
 *   − min(20, 1 × reallocated)     ATA 5 reallocated, SCSI grown defect list
 *   − min(20, 2 × media errors)    NVMe media_errors, SCSI total uncorrected errors
 *   − 20 NVMe available spare at or below its threshold; − 20 NVMe critical warning set
 *   − 100 main failed as a whole     the remap layer or the scanner calls main failed (gone, or nothing
 *                                   reads anywhere): no block is blamed, so without this the score of a
 *                                   vanished disk would stay "healthy"
 *
 * clamped to [0, 100]. Labels: ≥ 90 healthy, ≥ 70 degraded, ≥ 40 failing, else critical.
 */

import type { SmartCounts } from './smart-parse';

export type HealthLabel = 'healthy' | 'degraded' | 'failing' | 'critical';

export interface ScoreInputs {
  /** Pending (unreadable) blocks. */
  unreadable: number;
  /** Remaps with reasons read-error, write-error, scan-flaky, scan-error, spare-error. */
  errorRemaps: number;
  /** Remaps with reason scan-slow plus slow blocks seen and not migrated. */
  slow: number;
  spareUsedPercent: number;
  spareExhausted: boolean;
  /** New bad blocks (failed, flaky, slow) found by each completed pass, oldest first. */
  recentPasses: readonly number[];
  /** The drive's SMART counts and verdict, when available. */
  smart?: SmartCounts & { passed?: boolean | null };
  /** Main is failed as a whole right now (remap/main-state.ts, or the scanner's device-failed state). */
  mainFailed?: boolean;
}

export interface Score {
  score: number;
  label: HealthLabel;
  /** Points taken off, by cause (for status and the log). */
  penalties: Record<string, number>;
  trend: 'better' | 'same' | 'worse' | 'unknown';
}

export function trendOf(recent: readonly number[]): Score['trend'] {
  if (recent.length < 2) return 'unknown';
  const last = recent[recent.length - 1];
  const prev = recent[recent.length - 2];
  return last > prev ? 'worse' : last < prev ? 'better' : 'same';
}

export function labelOf(score: number): HealthLabel {
  if (score >= 90) return 'healthy';
  if (score >= 70) return 'degraded';
  if (score >= 40) return 'failing';
  return 'critical';
}

export function healthScore(i: ScoreInputs): Score {
  const penalties: Record<string, number> = {};
  const add = (name: string, points: number): void => {
    if (points > 0) penalties[name] = points;
  };
  add('unreadable', Math.min(60, 15 * Math.max(0, i.unreadable)));
  add('errorRemaps', Math.min(30, 3 * Math.max(0, i.errorRemaps)));
  add('slow', Math.min(15, Math.max(0, i.slow)));
  add('spare', i.spareExhausted ? 40 : i.spareUsedPercent >= 90 ? 20 : i.spareUsedPercent >= 75 ? 10 : i.spareUsedPercent >= 50 ? 5 : 0);
  const sm = i.smart;
  if (sm) {
    const n = (v: number | undefined): number => Math.max(0, v ?? 0);
    add('smart.failed', sm.passed === false ? 40 : 0);
    add('smart.badSectors', Math.min(30, 5 * Math.max(n(sm.pending), n(sm.offlineUncorrectable))));
    add('smart.reallocated', Math.min(20, n(sm.reallocated) + n(sm.grownDefects)));
    add('smart.mediaErrors', Math.min(20, 2 * (n(sm.mediaErrors) + n(sm.uncorrectedErrors))));
    const spareLow =
      sm.availableSpare !== undefined &&
      sm.availableSpareThreshold !== undefined &&
      sm.availableSpareThreshold > 0 &&
      sm.availableSpare <= sm.availableSpareThreshold;
    add('smart.spare', spareLow ? 20 : 0);
    add('smart.criticalWarning', n(sm.criticalWarning) > 0 ? 20 : 0);
  }
  add('mainFailed', i.mainFailed === true ? 100 : 0);
  const trend = trendOf(i.recentPasses);
  if (trend === 'worse') add('trend', 10);
  let score = 100;
  for (const p of Object.values(penalties)) score -= p;
  score = Math.max(0, Math.min(100, Math.round(score)));
  return { score, label: labelOf(score), penalties, trend };
}
