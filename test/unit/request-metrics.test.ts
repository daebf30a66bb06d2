/**
 * The per-request metrics (daemon/request-metrics.ts) print what prom-client's own Counter and
 * Histogram would: the same requests recorded both ways give the same exposition, line for line
 * (sums compared as numbers: the order of float additions differs). Also the status totals.
 */
import t from 'tap';
import { Counter, Histogram, Registry } from 'prom-client';
import { Cmd } from '../../protocol/constants';
import { LATENCY_BUCKETS, RequestMetrics } from '../../daemon/request-metrics';

const REQUESTS: [number, number, number, 'EIO' | 'ENOSPC' | undefined][] = [
  [Cmd.WRITE, 4096, 0.03, undefined],
  [Cmd.WRITE, 4096, 0.1, undefined], // exactly on a bound: counted in that bucket (le)
  [Cmd.WRITE, 4096, 7, 'EIO'],
  [Cmd.WRITE, 65536, 0.7, 'ENOSPC'],
  [Cmd.READ, 1 << 20, 2.2, undefined],
  [Cmd.FLUSH, 0, 3000, undefined], // above every bound: +Inf only
  [Cmd.WRITE, 4096, 0.25, undefined],
];

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.length > 0);
}

t.test('same exposition as prom-client Counter and Histogram', async (t) => {
  const ours = new Registry();
  const m = new RequestMetrics();
  m.register(ours);
  const ref = new Registry();
  const requests = new Counter({
    name: 'remapd_requests_total',
    help: 'NBD requests completed, by command and result (ok or errno)',
    labelNames: ['cmd', 'result'],
    registers: [ref],
  });
  const bytes = new Counter({
    name: 'remapd_bytes_total',
    help: 'Payload bytes of completed READ and WRITE requests',
    labelNames: ['cmd'],
    registers: [ref],
  });
  const latency = new Histogram({
    name: 'remapd_request_duration_seconds',
    help: 'Time from dispatch to reply, by command',
    labelNames: ['cmd'],
    buckets: LATENCY_BUCKETS,
    registers: [ref],
  });
  const names: Record<number, string> = { [Cmd.READ]: 'READ', [Cmd.WRITE]: 'WRITE', [Cmd.FLUSH]: 'FLUSH' };
  for (const [type, n, ms, errno] of REQUESTS) {
    m.record(type, n, ms, errno);
    const cmd = names[type];
    requests.inc({ cmd, result: 'ok' }, 0); // the old code bound the ok child at a command's first request
    requests.inc({ cmd, result: errno ?? 'ok' });
    if (n) bytes.inc({ cmd }, n);
    latency.observe({ cmd }, ms / 1000);
  }
  const a = lines(await ours.metrics());
  const b = lines(await ref.metrics());
  t.equal(a.length, b.length, `${a.length} lines`);
  const norm = (l: string) => l.replace(/ [\d.e+-]+$/, '');
  t.same(a.map(norm).sort(), b.map(norm).sort(), 'same series');
  const value = (ls: string[]) => new Map(ls.map((l) => [norm(l), Number(l.slice(l.lastIndexOf(' ') + 1))]));
  const va = value(a);
  for (const [k, v] of value(b)) {
    const got = va.get(k)!;
    if (Math.abs(got - v) > 1e-12 * Math.max(1, Math.abs(v))) t.fail(`${k}: ${got} vs ${v}`);
  }
  t.ok(a.includes('remapd_request_duration_seconds_bucket{le="0.0001",cmd="WRITE"} 2'), 'a latency on a bound is counted in it');
  t.ok(a.includes('remapd_request_duration_seconds_bucket{le="2.5",cmd="FLUSH"} 0'), '3 s is above every bound');
  t.ok(a.includes('remapd_request_duration_seconds_bucket{le="+Inf",cmd="FLUSH"} 1'), '... and in +Inf');
});

t.test('status totals', async (t) => {
  const m = new RequestMetrics();
  for (const [type, n, ms, errno] of REQUESTS) m.record(type, n, ms, errno);
  t.same(m.totals(), {
    READ: { requests: 1, errors: 0, bytes: 1 << 20 },
    WRITE: { requests: 5, errors: 2, bytes: 4096 * 4 + 65536 },
    FLUSH: { requests: 1, errors: 0, bytes: 0 },
  });
});
