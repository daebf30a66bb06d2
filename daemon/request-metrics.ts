/**
 * The per-request metrics: remapd_requests_total{cmd,result}, remapd_bytes_total{cmd} and the
 * remapd_request_duration_seconds{cmd} histogram, plus the totals `remapd status` shows.
 *
 * Every completed request lands here, so recording is plain arithmetic on a per-command slot (a
 * counter, a sum and one bucket increment): no label hashing, no objects, nothing for the GC. Through
 * prom-client's Counter and Histogram this was about 6 % of the daemon's busy time at 4 KiB QD32.
 * prom-client sees the numbers only when it is scraped: the three metrics are registered as
 * collector objects whose get() builds the samples from the slots, in prom-client's own shapes, so
 * the exposition is what Counter and Histogram would print.
 */
import type { Metric, Registry } from 'prom-client';
import { CMD_NAMES, type NbdErrnoName } from '../protocol/constants';

/** Upper bounds of the latency buckets, in seconds (`le`); +Inf is implied. */
export const LATENCY_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** The same bounds in milliseconds, compared against each request's latency. */
const BOUNDS_MS = LATENCY_BUCKETS.map((s) => s * 1000);

interface Slot {
  readonly cmd: string;
  ok: number;
  errors: number;
  bytes: number;
  /** Failed requests by errno (rare: a Map is fine). */
  readonly byErrno: Map<string, number>;
  /** Latency sum in seconds, and the count per bucket (last = above every bound). */
  sumMs: number;
  readonly buckets: Float64Array;
}

export interface CommandTotals {
  requests: number;
  errors: number;
  bytes: number;
}

interface Sample {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

export class RequestMetrics {
  /** Indexed by NBD command type (small integers). */
  private readonly slots: (Slot | undefined)[] = [];

  /** One completed request; `ms` from dispatch to reply. */
  record(type: number, bytes: number, ms: number, error: NbdErrnoName | undefined): void {
    let s = this.slots[type];
    if (s === undefined) {
      s = {
        cmd: CMD_NAMES[type] ?? String(type),
        ok: 0,
        errors: 0,
        bytes: 0,
        byErrno: new Map(),
        sumMs: 0,
        buckets: new Float64Array(BOUNDS_MS.length + 1),
      };
      this.slots[type] = s;
    }
    if (error === undefined) s.ok++;
    else {
      s.errors++;
      s.byErrno.set(error, (s.byErrno.get(error) ?? 0) + 1);
    }
    s.bytes += bytes;
    s.sumMs += ms;
    let i = 0;
    while (i < BOUNDS_MS.length && ms > BOUNDS_MS[i]) i++;
    s.buckets[i]++;
  }

  /** Totals by command name, for `remapd status`. */
  totals(): Record<string, CommandTotals> {
    const out: Record<string, CommandTotals> = {};
    for (const s of this.slots) if (s) out[s.cmd] = { requests: s.ok + s.errors, errors: s.errors, bytes: s.bytes };
    return out;
  }

  /** Register the three metrics with `registry`. */
  register(registry: Registry): void {
    const slots = () => this.slots.filter((s): s is Slot => s !== undefined);
    registry.registerMetric(
      collector('remapd_requests_total', 'NBD requests completed, by command and result (ok or errno)', 'counter', () => {
        const values: Sample[] = [];
        for (const s of slots()) {
          values.push({ labels: { cmd: s.cmd, result: 'ok' }, value: s.ok });
          for (const [errno, n] of s.byErrno) values.push({ labels: { cmd: s.cmd, result: errno }, value: n });
        }
        return values;
      }),
    );
    registry.registerMetric(
      collector('remapd_bytes_total', 'Payload bytes of completed READ and WRITE requests', 'counter', () =>
        slots()
          .filter((s) => s.bytes > 0)
          .map((s) => ({ labels: { cmd: s.cmd }, value: s.bytes })),
      ),
    );
    const name = 'remapd_request_duration_seconds';
    registry.registerMetric(
      collector(name, 'Time from dispatch to reply, by command', 'histogram', () => {
        const values: Sample[] = [];
        for (const s of slots()) {
          let acc = 0;
          LATENCY_BUCKETS.forEach((le, i) => {
            acc += s.buckets[i];
            values.push({ labels: { le, cmd: s.cmd }, value: acc, metricName: `${name}_bucket` });
          });
          const count = acc + s.buckets[LATENCY_BUCKETS.length];
          values.push({ labels: { le: '+Inf', cmd: s.cmd }, value: count, metricName: `${name}_bucket` });
          values.push({ labels: { cmd: s.cmd }, value: s.sumMs / 1000, metricName: `${name}_sum` });
          values.push({ labels: { cmd: s.cmd }, value: count, metricName: `${name}_count` });
        }
        return values;
      }),
    );
  }
}

/**
 * A metric in the shape prom-client's Registry reads: name, help, type, get() and reset(). Its typings
 * only name its own classes, hence the one cast; the metrics e2e test reads the exposition back.
 */
function collector(name: string, help: string, type: 'counter' | 'histogram', values: () => Sample[]): Metric {
  const metric = {
    name,
    help,
    type,
    aggregator: 'sum',
    get: () => Promise.resolve({ name, help, type, aggregator: 'sum', values: values() }),
    reset: () => undefined,
  };
  return metric as unknown as Metric;
}
