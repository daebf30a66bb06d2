/** Scanner settings and their defaults (rationale in docs/HEALTH.md). */
import { formatDuration, parseDuration } from './duration';

export const MiB = 1024 * 1024;

export interface ScanSettings {
  /** Bytes per second the scan may read when the device is idle (token bucket). */
  rate: number;
  /** Time from the end of one full pass to the start of the next, ms. */
  intervalMs: number;
  /** Bytes per read. */
  chunkBytes: number;
  /** A chunk (or a single block) read taking at least this long is slow. */
  slowMs: number;
  /** … at least this long is very slow (a block confirmed very slow twice is migrated at once). */
  verySlowMs: number;
  /** A block slow in this many consecutive passes is migrated ('scan-slow'). */
  slowPasses: number;
  /** Extra attempts after a failed block read (the I/O path's default). */
  readRetries: number;
  /** How often the parent samples client I/O to decide the back-off, ms. */
  sampleMs: number;
  /** Client requests per second above which the scan pauses (below it, and above 0, it slows to 1/4). */
  busyRequestsPerSec: number;
  /** How often progress is persisted to the metadata, ms. */
  persistEveryMs: number;
  /** Most reads spent isolating the bad sectors of one failed read (the rest is visited again later). */
  maxIsolateReads: number;
  /** After a device failure, the scan tries again after this long, ms. */
  deviceRetryMs: number;
  /** Back off while clients are busy (benchmarks turn it off with REMAPD_SCAN_BACKOFF=0 to see the worst case). */
  backoff: boolean;
}

export const DEFAULT_SCAN_SETTINGS: Readonly<ScanSettings> = Object.freeze({
  rate: 64 * MiB,
  intervalMs: 7 * 86_400_000,
  chunkBytes: 1 * MiB,
  slowMs: 50,
  verySlowMs: 200,
  slowPasses: 2,
  readRetries: 3,
  sampleMs: 250,
  busyRequestsPerSec: 200,
  persistEveryMs: 5000,
  backoff: true,
  maxIsolateReads: 1024,
  deviceRetryMs: 60_000,
});

/** Fraction of `rate` the scan may use given client requests/s seen in the last sample. */
export function backoffFactor(requestsPerSec: number, busyRequestsPerSec: number): number {
  if (requestsPerSec <= 0) return 1;
  if (requestsPerSec < busyRequestsPerSec) return 0.25;
  return 0;
}

export type ReadClass = 'ok' | 'slow' | 'very-slow';

export function classifyLatency(ms: number, s: Pick<ScanSettings, 'slowMs' | 'verySlowMs'>): ReadClass {
  if (ms >= s.verySlowMs) return 'very-slow';
  if (ms >= s.slowMs) return 'slow';
  return 'ok';
}

/** Most a slow threshold may be: a read slower than this fails at the I/O deadline anyway (default 30 s). */
const MAX_THRESHOLD_MS = 600_000;

/**
 * The slow-read thresholds from `--scan-slow` / `--scan-very-slow` (config `scanSlow`, `scanVerySlow`):
 * durations such as "50ms", "2s". Either may be omitted (its default stays); both must be more than 0,
 * at most 10 minutes, and very-slow must be at least slow. Throws an Error naming the flag.
 */
export function slowThresholds(slow?: string, verySlow?: string): Pick<ScanSettings, 'slowMs' | 'verySlowMs'> {
  const parse = (flag: string, text: string): number => {
    let ms: number;
    try {
      ms = parseDuration(text);
    } catch (err) {
      throw new Error(`--${flag}: ${(err as Error).message}`, { cause: err });
    }
    if (!(ms >= 1 && ms <= MAX_THRESHOLD_MS)) throw new Error(`--${flag} must be from 1ms to 10m, not '${text}'`);
    return ms;
  };
  const slowMs = slow === undefined ? DEFAULT_SCAN_SETTINGS.slowMs : parse('scan-slow', slow);
  const verySlowMs = verySlow === undefined ? DEFAULT_SCAN_SETTINGS.verySlowMs : parse('scan-very-slow', verySlow);
  if (verySlowMs < slowMs) {
    throw new Error(
      `--scan-very-slow (${formatDuration(verySlowMs)}) must be at least --scan-slow (${formatDuration(slowMs)})` +
        (verySlow === undefined ? ': set --scan-very-slow too' : ''),
    );
  }
  return { slowMs, verySlowMs };
}
