/**
 * Pure parts of the health scanner: duration parser, token bucket (fake clock), latency classes,
 * back-off factor, health score and labels.
 * Run: npx tap --disable-coverage --allow-incomplete-coverage dist/test/unit/health-units.test.js
 */
import t from 'tap';
import { backoffFactor, classifyLatency, DEFAULT_SCAN_SETTINGS, slowThresholds } from '../../health/config';
import { formatDuration, parseDuration } from '../../health/duration';
import { healthScore, labelOf } from '../../health/score';
import { TokenBucket } from '../../health/token-bucket';

t.test('parseDuration / formatDuration', async (t) => {
  t.equal(parseDuration('30s'), 30_000);
  t.equal(parseDuration('15m'), 900_000);
  t.equal(parseDuration('12h'), 43_200_000);
  t.equal(parseDuration('7d'), 604_800_000);
  t.equal(parseDuration('1w'), 604_800_000);
  t.equal(parseDuration('250ms'), 250);
  t.equal(parseDuration('1.5h'), 5_400_000);
  t.equal(parseDuration('90'), 90_000, 'bare number = seconds');
  t.equal(parseDuration(' 2D '), 172_800_000, 'case and blanks');
  for (const bad of ['', 'd', '7x', '-1s', '7 days', '1e3s']) t.throws(() => parseDuration(bad), bad);
  t.equal(formatDuration(604_800_000), '7d');
  t.equal(formatDuration(86_400_000 * 3), '3d');
  t.equal(formatDuration(90_000), '90s');
  t.equal(formatDuration(1500), '1500ms');
  for (const s of ['30s', '15m', '12h', '7d'])
    t.equal(parseDuration(formatDuration(parseDuration(s))), parseDuration(s), `round trip ${s}`);
});

t.test('token bucket keeps the long-run rate and allows one chunk of burst', async (t) => {
  let now = 0;
  const MiB = 1 << 20;
  const b = new TokenBucket(64 * MiB, MiB, () => now);
  t.equal(b.take(MiB), 0, 'full bucket: first chunk at once');
  const w = b.take(MiB);
  t.ok(Math.abs(w - 1000 / 64) < 1e-9, `second chunk waits 1/64 s (${w})`);
  // Simulate a caller that sleeps as told: 640 chunks take 10 s of virtual time.
  now = 0;
  const c = new TokenBucket(64 * MiB, MiB, () => now);
  for (let i = 0; i < 640; i++) now += c.take(MiB);
  t.ok(Math.abs(now - (639 * 1000) / 64) < 1e-6, `640 MiB at 64 MiB/s: ${now} ms`);
  now += 60_000; // idle a minute: the bucket holds only one chunk
  t.equal(c.take(MiB), 0);
  t.ok(c.take(MiB) > 0, 'no burst beyond the capacity after idling');
  c.setRate(128 * MiB);
  t.equal(c.bytesPerSecond, 128 * MiB);
  t.throws(() => new TokenBucket(0, 1));
});

t.test('latency classes and back-off factor', async (t) => {
  const s = DEFAULT_SCAN_SETTINGS;
  t.equal(classifyLatency(0, s), 'ok');
  t.equal(classifyLatency(s.slowMs - 0.1, s), 'ok');
  t.equal(classifyLatency(s.slowMs, s), 'slow');
  t.equal(classifyLatency(s.verySlowMs, s), 'very-slow');
  t.equal(backoffFactor(0, 200), 1, 'idle: full rate');
  t.equal(backoffFactor(10, 200), 0.25, 'some client I/O: a quarter');
  t.equal(backoffFactor(200, 200), 0, 'busy: hold');
});

t.test('health score formula and labels', async (t) => {
  const base = { unreadable: 0, errorRemaps: 0, slow: 0, spareUsedPercent: 0, spareExhausted: false, recentPasses: [] };
  t.same(healthScore(base), { score: 100, label: 'healthy', penalties: {}, trend: 'unknown' });
  t.equal(healthScore({ ...base, errorRemaps: 1 }).score, 97, 'one flaky block remapped: −3');
  t.equal(healthScore({ ...base, unreadable: 1 }).score, 85, 'one unreadable block: −15');
  t.equal(healthScore({ ...base, unreadable: 1 }).label, 'degraded');
  t.equal(healthScore({ ...base, unreadable: 100 }).penalties.unreadable, 60, 'capped');
  t.equal(healthScore({ ...base, slow: 40 }).penalties.slow, 15, 'capped');
  t.equal(healthScore({ ...base, spareUsedPercent: 91 }).penalties.spare, 20);
  t.equal(healthScore({ ...base, spareUsedPercent: 80 }).penalties.spare, 10);
  t.equal(healthScore({ ...base, spareUsedPercent: 50 }).penalties.spare, 5);
  t.equal(healthScore({ ...base, spareExhausted: true, spareUsedPercent: 100 }).penalties.spare, 40);
  t.equal(healthScore({ ...base, recentPasses: [0, 3] }).trend, 'worse');
  t.equal(healthScore({ ...base, recentPasses: [0, 3] }).penalties.trend, 10);
  t.equal(healthScore({ ...base, recentPasses: [3, 1] }).trend, 'better');
  t.same(
    healthScore({ ...base, mainFailed: true }),
    { score: 0, label: 'critical', penalties: { mainFailed: 100 }, trend: 'unknown' },
    'a failed main is critical even with no block blamed',
  );
  t.equal(healthScore({ ...base, mainFailed: false }).score, 100);
  const worst = healthScore({
    unreadable: 99,
    errorRemaps: 99,
    slow: 99,
    spareUsedPercent: 100,
    spareExhausted: true,
    recentPasses: [1, 9],
  });
  t.equal(worst.score, 0, 'never below 0');
  t.equal(worst.label, 'critical');
  t.equal(labelOf(90), 'healthy');
  t.equal(labelOf(89), 'degraded');
  t.equal(labelOf(70), 'degraded');
  t.equal(labelOf(69), 'failing');
  t.equal(labelOf(40), 'failing');
  t.equal(labelOf(39), 'critical');
});

t.test('slowThresholds: --scan-slow / --scan-very-slow parsed and checked', async (t) => {
  t.same(slowThresholds(), { slowMs: 50, verySlowMs: 200 }, 'defaults');
  t.same(slowThresholds('2s', '5s'), { slowMs: 2000, verySlowMs: 5000 });
  t.same(slowThresholds('100ms'), { slowMs: 100, verySlowMs: 200 }, 'one of them: the other default stays');
  t.same(slowThresholds(undefined, '1s'), { slowMs: 50, verySlowMs: 1000 });
  t.same(slowThresholds('300ms', '300ms'), { slowMs: 300, verySlowMs: 300 }, 'equal is allowed');
  t.throws(() => slowThresholds('0'), /--scan-slow must be from 1ms to 10m/);
  t.throws(() => slowThresholds('11m', '12m'), /--scan-slow must be from 1ms to 10m/);
  t.throws(() => slowThresholds(undefined, 'x'), /--scan-very-slow: 'x' is not a duration/);
  t.throws(() => slowThresholds('1s'), /--scan-very-slow \(200ms\) must be at least --scan-slow \(1s\): set --scan-very-slow too/);
  t.throws(() => slowThresholds('2s', '1s'), /--scan-very-slow \(1s\) must be at least --scan-slow \(2s\)$/);
});
