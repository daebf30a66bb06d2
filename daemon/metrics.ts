/**
 * Prometheus metrics (prom-client), served over HTTP at /metrics when `serve --metrics HOST:PORT` is given.
 * Request counters and latency histograms are fed by the protocol layer (request-metrics.ts); device-level values (remaps,
 * spare, health, scan) are read at scrape time from providers.
 */
import http from 'node:http';
import type { Logger } from 'pino';
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { NbdErrnoName } from '../protocol/constants';
import { RequestMetrics, type CommandTotals } from './request-metrics';
import type { LaneStats } from '../storage/io-lane';

/**
 * Expose no sample for an unlabelled gauge (its source is gone: the old devices were released after
 * `evacuate --switch`). prom-client's reset() would expose 0, which reads as "health 0" or "0 free".
 */
function noSample(g: Gauge): void {
  (g as unknown as { hashMap: Record<string, unknown> }).hashMap = {};
}

const RATE_SAMPLE_MS = 5000;
const RATE_SAMPLES = 7;

export interface MetricSources {
  connections(): number;
  remaps?():
    | {
        total: number;
        byReason: Record<string, number>;
        pending: number;
        spareUsed: number;
        spareFree: number;
        spareBlocks: number;
        exhausted: boolean;
        /** The spare refuses writes or metadata commits (remap/spare-state.ts). */
        spareFailing?: boolean;
        /** The main device is gone or fails everywhere (remap/main-state.ts). */
        mainFailed?: boolean;
        /** Requests waiting for a failed main now, and since the start (the outage hold, main-state.ts). */
        mainHeld?: number;
        mainHeldTotal?: number;
      }
    | undefined; // undefined once evacuated: the old devices are released (no samples)
  health?(): { score: number } | undefined;
  scan?(): { progress: number; passesCompleted: number; deviceFailure?: unknown; suspects?: { queued: number } } | undefined;
  /** I/O lanes (storage/io-lane.ts): main, spare, scan. */
  lanes?(): readonly LaneStats[];
  /** `evacuate --switch` done: the new disk is served, the old main and spare are released. */
  evacuated?(): boolean;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly requestMetrics = new RequestMetrics();
  private server: http.Server | undefined;

  constructor(sources: MetricSources) {
    const r = this.registry;
    collectDefaultMetrics({ register: r, prefix: 'remapd_process_' });
    this.requestMetrics.register(r);
    new Gauge({
      name: 'remapd_connections',
      help: 'Open NBD connections',
      registers: [r],
      collect() {
        this.set(sources.connections());
      },
    });
    if (sources.remaps) {
      const get = sources.remaps;
      new Gauge({
        name: 'remapd_remaps',
        help: 'Remapped blocks, by reason',
        labelNames: ['reason'],
        registers: [r],
        collect() {
          this.reset();
          const s = get();
          for (const [reason, n] of Object.entries(s?.byReason ?? {})) this.set({ reason }, n);
        },
      });
      type Remaps = NonNullable<ReturnType<typeof get>>;
      const gauge = (name: string, help: string, pick: (s: Remaps) => number): void => {
        new Gauge({
          name,
          help,
          registers: [r],
          collect() {
            const s = get();
            if (s) this.set(pick(s));
            else noSample(this);
          },
        });
      };
      gauge('remapd_remaps_total', 'Remapped blocks in all', (s) => s.total);
      gauge('remapd_pending_blocks', 'Unreadable blocks waiting for a write', (s) => s.pending);
      gauge('remapd_spare_blocks_used', 'Spare data blocks in use', (s) => s.spareUsed);
      gauge('remapd_spare_blocks_free', 'Spare data blocks free', (s) => s.spareFree);
      gauge('remapd_spare_exhausted', '1 when a remap failed for lack of spare space', (s) => (s.exhausted ? 1 : 0));
      gauge('remapd_spare_failing', '1 while the spare refuses writes or metadata commits (no new remaps)', (s) =>
        s.spareFailing ? 1 : 0,
      );
      gauge('remapd_main_failed', '1 while the main device is gone or fails everywhere (no block is blamed)', (s) =>
        s.mainFailed ? 1 : 0,
      );
      gauge(
        'remapd_main_held_requests',
        'Requests waiting for a failed main device to answer again (--outage-hold)',
        (s) => s.mainHeld ?? 0,
      );
      gauge(
        'remapd_main_held_requests_total',
        'Requests held while the main device was failed, since the start (--outage-hold)',
        (s) => s.mainHeldTotal ?? 0,
      );
    }
    if (sources.evacuated) {
      const get = sources.evacuated;
      new Gauge({
        name: 'remapd_evacuated',
        help: '1 once `evacuate --switch` serves the new disk and the old main and spare are released',
        registers: [r],
        collect() {
          this.set(get() ? 1 : 0);
        },
      });
    }
    if (sources.health) {
      const get = sources.health;
      new Gauge({
        name: 'remapd_health_score',
        help: 'Health score of the main device, 0 (dead) to 100',
        registers: [r],
        collect() {
          const h = get();
          if (h) this.set(h.score);
          else noSample(this);
        },
      });
    }
    if (sources.lanes) {
      const get = sources.lanes;
      const lane = (name: string, help: string, pick: (l: LaneStats) => number): void => {
        new Gauge({
          name,
          help,
          labelNames: ['lane'],
          registers: [r],
          collect() {
            this.reset();
            for (const l of get()) this.set({ lane: l.name }, pick(l));
          },
        });
      };
      lane('remapd_io_in_flight', 'I/O jobs in flight on the lane', (l) => l.inFlight);
      lane('remapd_io_oldest_in_flight_seconds', 'Age of the oldest I/O job in flight on the lane', (l) => l.oldestInFlightMs / 1000);
      lane('remapd_io_stuck_threads', 'Lane threads still blocked in an I/O that missed its deadline', (l) => l.stuck);
      lane('remapd_io_timeouts_total', 'I/O jobs that missed the lane deadline', (l) => l.timeouts);
    }
    if (sources.scan) {
      const get = sources.scan;
      new Gauge({
        name: 'remapd_scan_progress_ratio',
        help: 'Progress of the current scan pass, 0 to 1',
        registers: [r],
        collect() {
          const s = get();
          if (s) this.set(s.progress);
          else noSample(this);
        },
      });
      new Gauge({
        name: 'remapd_scan_passes_completed',
        help: 'Full scan passes completed',
        registers: [r],
        collect() {
          const s = get();
          if (s) this.set(s.passesCompleted);
          else noSample(this);
        },
      });
      new Gauge({
        name: 'remapd_scan_device_failed',
        help: '1 while the scan finds main failed as a whole (device gone or every read failing)',
        registers: [r],
        collect() {
          const s = get();
          if (s) this.set(s.deviceFailure ? 1 : 0);
          else noSample(this);
        },
      });
      new Gauge({
        name: 'remapd_scan_suspect_regions_queued',
        help: 'Suspect regions (import-map, SMART logs) waiting to be read by the scan',
        registers: [r],
        collect() {
          const s = get();
          if (s) this.set(s.suspects?.queued ?? 0);
          else noSample(this);
        },
      });
    }
  }

  /** Hook for the protocol layer: one call per completed request. */
  readonly onRequestDone = (type: number, bytes: number, ms: number, error: NbdErrnoName | undefined): void =>
    this.requestMetrics.record(type, bytes, ms, error);

  /** Totals by command, for `remapd status`. */
  totals(): Record<string, CommandTotals> {
    return this.requestMetrics.totals();
  }

  /** Snapshots of the totals, every RATE_SAMPLE_MS, to turn them into rates. */
  private samples: { at: number; totals: Record<string, CommandTotals> }[] = [];
  private sampler: NodeJS.Timeout | undefined;

  startRates(): void {
    this.samples.push({ at: Date.now(), totals: this.totals() });
    this.sampler = setInterval(() => {
      this.samples.push({ at: Date.now(), totals: this.totals() });
      if (this.samples.length > RATE_SAMPLES) this.samples.shift();
    }, RATE_SAMPLE_MS);
    this.sampler.unref();
  }

  /** Totals plus requests/s and bytes/s per command over the last ~30 s. */
  io(): {
    totals: ReturnType<Metrics['totals']>;
    rates: Record<string, { requestsPerSecond: number; bytesPerSecond: number }>;
    windowSeconds: number;
  } {
    const now = { at: Date.now(), totals: this.totals() };
    const old = this.samples[0] ?? now;
    const dt = Math.max(0.001, (now.at - old.at) / 1000);
    const rates: Record<string, { requestsPerSecond: number; bytesPerSecond: number }> = {};
    for (const [cmd, c] of Object.entries(now.totals)) {
      const before = old.totals[cmd] ?? { requests: 0, errors: 0, bytes: 0 };
      rates[cmd] = {
        requestsPerSecond: +((c.requests - before.requests) / dt).toFixed(1),
        bytesPerSecond: Math.round((c.bytes - before.bytes) / dt),
      };
    }
    return { totals: now.totals, rates, windowSeconds: +dt.toFixed(1) };
  }

  async listen(host: string, port: number, log: Logger): Promise<number> {
    this.server = http.createServer((req, res) => {
      if (req.method !== 'GET' || (req.url !== '/metrics' && req.url !== '/')) {
        res.writeHead(404).end('not found: try /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'Content-Type': this.registry.contentType }).end(text),
        (err: Error) => {
          log.error({ err }, 'metrics collection failed');
          res.writeHead(500).end('error\n');
        },
      );
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen({ host, port }, () => resolve());
    });
    const addr = this.server.address();
    return typeof addr === 'object' && addr ? addr.port : port;
  }

  async close(): Promise<void> {
    clearInterval(this.sampler);
    if (this.server) await new Promise<void>((r) => this.server!.close(() => r()));
  }
}
