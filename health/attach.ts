/**
 * Wires the health scanner into a running daemon: creates it on the RemapDevice, registers the
 * scan.* control commands, forwards fault-rule reloads to the worker, stops it before the devices close
 * (at stop, or when the old devices are retired after `evacuate --switch`).
 *
 *   scan.status            → ScanStatus
 *   scan.start / pause / resume
 *   scan.set {rate?: bytes/s | "512M", interval?: ms | "7d"}
 *   scan.loopdelay {reset?} → main-thread event-loop delay (ms percentiles)
 *   suspect {ranges: [{offset, length}], source} → {queued}: regions the scan reads first
 *                          (byte offsets on the export; `remapd import-map` sends them)
 *   scan.crash             → test hook, only with REMAPD_TEST_HOOKS=1
 * and starts the SMART checks of main (smart.ts): counts into the score, logged LBAs as suspects.
 */
import type { Logger } from 'pino';
import { ControlError } from '../daemon/control-server';
import { parseSize } from '../remap/units';
import type { FaultRules } from '../storage/faults';
import type { ScanSettings } from './config';
import { parseDuration } from './duration';
import { LoopDelayMonitor } from './loop-delay';
import { HealthScanner, type ScanDevice } from './scanner';
import { SmartMonitor } from './smart';
import { parseSuspectArgs, SuspectError } from './suspects';

interface ControlLike {
  register(cmd: string, handler: (args: Record<string, unknown>) => unknown): void;
}

/** The parts of daemon/serve.ts's RunningDaemon the scanner uses. */
export interface DaemonHooks {
  readonly control: ControlLike | undefined;
  readonly beforeStop: (() => Promise<void>)[];
  /** The old stack's retirement after `evacuate --switch` (daemon/evacuate/retire-old-stack.ts): stop first. */
  readonly oldStack?: { readonly beforeRetire: (() => Promise<void>)[] };
  faultRules(): FaultRules | undefined;
  onFaultRules(listener: (rules: FaultRules) => void): void;
}

function rateArg(v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number') return v;
  if (typeof v === 'string') return parseSize(v);
  throw new Error('rate: expected bytes/s or a size like 512M');
}

function intervalArg(v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number') return v;
  if (typeof v === 'string') return parseDuration(v);
  throw new Error('interval: expected ms or a duration like 7d');
}

export function attachScanner(
  daemon: DaemonHooks,
  device: ScanDevice,
  o: {
    mainPath: string;
    logger: Logger;
    settings?: Partial<ScanSettings>;
    /** `remapd status` sections (daemon/control-commands.ts statusSections): 'scan', 'health', 'smart'. */
    sections?: Map<string, () => unknown>;
    /** SMART checks of main (default on; REMAPD_SMART=0 turns them off). */
    smart?: { intervalMs?: number; timeoutMs?: number; command?: string } | false;
  },
): HealthScanner {
  const scanner = new HealthScanner(device, {
    mainPath: o.mainPath,
    logger: o.logger,
    settings: { ...o.settings, ...(process.env.REMAPD_SCAN_BACKOFF === '0' ? { backoff: false } : {}) },
    faults: daemon.faultRules()?.toShared() ?? null,
  });
  const loop = new LoopDelayMonitor();
  const smart =
    o.smart === false || process.env.REMAPD_SMART === '0'
      ? undefined
      : new SmartMonitor({
          devicePath: o.mainPath,
          deviceSize: device.size,
          logger: o.logger.child({ component: 'smart' }),
          ...o.smart,
          onReport: (r) => scanner.setSmart(r.available ? { ...r.counts, passed: r.passed } : undefined),
          onHints: (ranges, source) => scanner.suspect(ranges, source),
        });
  daemon.onFaultRules((rules) => scanner.setFaultRules(rules.toShared()));
  // A failed main scores 0 (health/score.ts): re-label when the remap layer calls it failed or back.
  if ('on' in device && typeof device.on === 'function') {
    device.on('main-failed', () => scanner.refreshHealth());
    device.on('main-recovered', () => scanner.mainRecovered());
  }
  const c = daemon.control;
  if (c) {
    c.register('scan.status', () => scanner.status());
    c.register('scan.start', () => scanner.start());
    c.register('scan.pause', () => scanner.pause());
    c.register('scan.resume', () => scanner.resume());
    c.register('scan.set', (args) => scanner.set({ rate: rateArg(args.rate), intervalMs: intervalArg(args.interval) }));
    c.register('scan.loopdelay', (args) => loop.read(args.reset === true));
    // Re-read SMART now instead of at the next hourly check (after a drive event, or to see a change).
    c.register('smart.check', async () => {
      if (!smart) throw new ControlError('SMART checks are turned off (REMAPD_SMART=0)');
      await smart.check();
      return smart.status();
    });
    c.register('suspect', (args) => {
      try {
        const { ranges, source } = parseSuspectArgs(args, device.size);
        return scanner.suspect(ranges, source);
      } catch (err) {
        if (err instanceof SuspectError) throw new ControlError(err.message);
        throw err;
      }
    });
    if (process.env.REMAPD_TEST_HOOKS === '1') {
      c.register('scan.crash', () => {
        scanner.crashWorker();
        return { crashed: true };
      });
    }
  }
  if (o.sections) {
    o.sections.set('scan', () => {
      const s = scanner.status();
      return {
        state: s.state,
        progress: s.progress,
        cursorOffset: s.cursorOffset,
        rate: s.rate,
        interval: s.interval,
        passesCompleted: s.passesCompleted,
        lastFullScanAt: s.lastFullScanAt,
        blocks: s.blocks,
        suspects: {
          queued: s.suspects.queued,
          queuedBytes: s.suspects.queuedBytes,
          visited: s.suspects.visited,
          visitedBytes: s.suspects.visitedBytes,
        },
        deviceFailure: s.deviceFailure,
      };
    });
    o.sections.set(
      'smart',
      () => smart?.status() ?? { state: 'unavailable', reason: 'SMART checks are turned off', hintsQueued: 0, checkedAt: null },
    );
    o.sections.set('health', () => {
      const s = scanner.status();
      return { score: s.score, label: s.label, trend: s.trend, penalties: s.penalties };
    });
  }
  const stop = async () => {
    loop.close();
    await smart?.close();
    await scanner.close(); // ends the worker thread (and its reads of main)
  };
  daemon.beforeStop.push(stop);
  daemon.oldStack?.beforeRetire.push(stop);
  scanner.begin();
  smart?.start();
  const s = scanner.status();
  o.logger.info(
    { rate: s.rate, interval: s.interval, cursorOffset: s.cursorOffset, passesCompleted: s.passesCompleted, state: s.state },
    'health scanner started',
  );
  return scanner;
}
