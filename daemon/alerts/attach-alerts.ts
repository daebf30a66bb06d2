/**
 * Wires the alert program (alert-runner.ts) to what the daemon already emits:
 *
 *   RemapDevice 'remap'            → Remap DETAIL "offset=N reason=R"
 *   RemapDevice 'pending'          → Pending DETAIL "offset=N"
 *   RemapDevice 'spare-low'        → SpareLow DETAIL "used=N total=N"
 *   RemapDevice 'spare-exhausted'  → SpareFull
 *   RemapDevice 'main-failed'      → DeviceFailed DETAIL "main reason=R"
 *   RemapDevice 'spare-failing'    → DeviceFailed DETAIL "spare cause=C"
 *   HealthScanner 'device-failed'  → DeviceFailed DETAIL "main reason=R code=C" (the scanner's view)
 *   HealthScanner 'label'          → HealthChange DETAIL "FROM->TO score=N"
 *   HealthScanner 'pass-end'       → ScanPassDone DETAIL "passes=N"
 *   evacuation finished            → EvacuateDone (daemon/evacuate)
 *
 * Hook point with no emitter yet (named here so the owner can emit it; nothing fires it today):
 *   RemapDevice 'metadata-repaired' {copies?}          → MetadataRepaired (metadata/: a copy rewritten)
 *
 * Environment of every run (read when it starts): REMAPD_EVENT, REMAPD_SETUP, REMAPD_DETAIL,
 * REMAPD_EVENT_COUNT, REMAPD_EVENT_TIME, REMAPD_SETUP_UUID, REMAPD_MAIN, REMAPD_SPARE, REMAPD_REMAPS,
 * REMAPD_PENDING, REMAPD_SPARE_USED, REMAPD_SPARE_FREE, REMAPD_SPARE_BLOCKS, REMAPD_HEALTH_SCORE,
 * REMAPD_HEALTH_LABEL, REMAPD_PID.
 */
import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { RemapDevice } from '../../remap/remap-device';
import { AlertRunner, type AlertEvent } from './alert-runner';

export interface AlertOptions {
  readonly program: string;
  readonly timeoutMs: number;
  readonly setup: string;
  readonly main: string;
  readonly logger: Logger;
  /** The `health` section of `remapd status`, when a scanner runs. */
  readonly health?: () => { score?: number; label?: string } | undefined;
  /** The disk served after `evacuate --switch` (the old main and spare are released): REMAPD_MAIN, no spare. */
  readonly evacuatedTo?: () => string | undefined;
}

/** Something that emits the events listed above (the remap device, the scanner). */
type Emitter = Pick<EventEmitter, 'on'>;

export function attachAlerts(remap: RemapDevice | undefined, o: AlertOptions): AlertRunner {
  const runner = new AlertRunner({
    program: o.program,
    setup: o.setup,
    timeoutMs: o.timeoutMs,
    logger: o.logger,
    environment: () => {
      const to = o.evacuatedTo?.();
      const dev = to === undefined ? remap : undefined;
      const s = dev?.status();
      const h = o.health?.();
      return {
        REMAPD_PID: process.pid,
        REMAPD_MAIN: to ?? o.main,
        REMAPD_SPARE: dev?.spare.path,
        REMAPD_SETUP_UUID: remap?.store.setupUuid,
        REMAPD_REMAPS: s?.remaps.total ?? 0,
        REMAPD_PENDING: s?.pending.count ?? 0,
        REMAPD_SPARE_USED: s?.spare.used,
        REMAPD_SPARE_FREE: s?.spare.free,
        REMAPD_SPARE_BLOCKS: s?.spare.dataBlocks,
        REMAPD_HEALTH_SCORE: h?.score,
        REMAPD_HEALTH_LABEL: h?.label,
      };
    },
  });
  if (remap) subscribeDevice(remap, runner);
  o.logger.info({ program: o.program, timeoutSeconds: o.timeoutMs / 1000 }, 'alert program configured');
  return runner;
}

function on(
  e: Emitter,
  name: string,
  runner: AlertRunner,
  event: AlertEvent,
  detail: (x: Record<string, unknown>) => string | undefined,
): void {
  e.on(name, (x: Record<string, unknown> = {}) => runner.raise(event, detail(x ?? {})));
}

function subscribeDevice(remap: Emitter, runner: AlertRunner): void {
  on(remap, 'remap', runner, 'Remap', (x) => `offset=${x.offset} reason=${x.reason}`);
  on(remap, 'pending', runner, 'Pending', (x) => `offset=${x.offset}`);
  on(remap, 'spare-low', runner, 'SpareLow', (x) => `used=${x.used} total=${x.total}`);
  on(remap, 'spare-exhausted', runner, 'SpareFull', () => undefined);
  on(remap, 'main-failed', runner, 'DeviceFailed', (x) => `main reason=${x.reason}`);
  on(remap, 'spare-failing', runner, 'DeviceFailed', (x) => `spare cause=${x.cause}`);
  on(remap, 'metadata-repaired', runner, 'MetadataRepaired', (x) => (x.copies !== undefined ? `copies=${x.copies}` : undefined));
}

/** The scanner's events: health label changes and completed passes. */
export function subscribeScanner(scanner: Emitter, runner: AlertRunner): void {
  on(scanner, 'label', runner, 'HealthChange', (x) => `${x.from ?? 'unknown'}->${x.to} score=${x.score}`);
  on(scanner, 'pass-end', runner, 'ScanPassDone', (x) => `passes=${x.passesCompleted}`);
  on(scanner, 'device-failed', runner, 'DeviceFailed', (x) => `main reason=${x.reason}${x.code ? ` code=${x.code}` : ''}`);
}
