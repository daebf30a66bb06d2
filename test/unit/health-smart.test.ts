/**
 * SMART: the smartctl -j parser on the fixtures of test/fixtures/smart (see its README: the loop-device
 * and qemu-NVMe outputs are real, recorded with smartmontools 7.3, the NVMe ones in the kernel lab's
 * smart-nvme scenario; the ATA, NVMe-worn and SCSI ones are constructed from
 * smartmontools' own JSON writers, src/ataprint.cpp, nvmeprint.cpp and scsiprint.cpp, since the project
 * ships no recorded outputs and no SMART-capable disk was available), the score weights, and SmartMonitor
 * running the real smartctl on a real loop device (unavailable path), a missing binary, a hanging one,
 * and a script that prints a fixture (hints to the scan).
 * Run: npx tap --disable-coverage --allow-incomplete-coverage dist/test/unit/health-smart.test.js
 */
import t from 'tap';
import { chmodSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { parseSmartctlJson } from '../../health/smart-parse';
import { SmartMonitor } from '../../health/smart';
import { healthScore } from '../../health/score';
import type { ByteRange } from '../../health/suspects';
import { run } from '../helpers/exec';
import { REPO_ROOT } from '../helpers/server';

const FIX = join(REPO_ROOT, 'test', 'fixtures', 'smart');
const fixture = (name: string): string => readFileSync(join(FIX, name), 'utf8');
const quiet = pino({ level: 'silent' });

t.test(
  'ATA: attributes 5/197/198, self-test LBA, UNC error-log LBA (LBA28 high bits from the device register), ICRC ignored',
  async (tt) => {
    const r = parseSmartctlJson(fixture('ata-failing.json'));
    if (!r.available) throw new Error(r.reason);
    tt.equal(r.protocol, 'ATA');
    tt.equal(r.passed, true);
    tt.same(r.counts, { reallocated: 8, pending: 2, offlineUncorrectable: 2 });
    tt.same(r.lbas, [
      { lba: 22777412, source: 'self-test log' },
      { lba: 22777408, source: 'error log' },
    ]);
    tt.equal(r.logicalBlockSize, 512);
    tt.equal(r.model, 'EXAMPLE HD1000');
  },
);

t.test('NVMe: media errors, spare below threshold, critical warning, LBAs of both logs', async (tt) => {
  const r = parseSmartctlJson(fixture('nvme-worn.json'));
  if (!r.available) throw new Error(r.reason);
  tt.equal(r.protocol, 'NVMe');
  tt.equal(r.passed, false);
  tt.same(r.counts, { mediaErrors: 3, availableSpare: 5, availableSpareThreshold: 10, percentageUsed: 97, criticalWarning: 1 });
  tt.same(r.lbas, [
    { lba: 1000963, source: 'self-test log' },
    { lba: 1000960, source: 'error log' },
  ]);
});

t.test("NVMe, recorded: smartctl 7.3 on the kernel lab's qemu NVMe disk, healthy and with a critical warning", async (tt) => {
  const base = { unreadable: 0, errorRemaps: 0, slow: 0, spareUsedPercent: 0, spareExhausted: false, recentPasses: [] };
  const ok = parseSmartctlJson(fixture('qemu-nvme-smartctl-7.3.json'));
  if (!ok.available) throw new Error(ok.reason);
  tt.same(
    { protocol: ok.protocol, passed: ok.passed, model: ok.model, logicalBlockSize: ok.logicalBlockSize, exitStatus: ok.exitStatus },
    { protocol: 'NVMe', passed: true, model: 'QEMU NVMe Ctrl', logicalBlockSize: 512, exitStatus: 0 },
  );
  // qemu 7.2's health log: spare and threshold 0 (a threshold of 0 is "not reported": no spare penalty)
  tt.same(ok.counts, { mediaErrors: 0, availableSpare: 0, availableSpareThreshold: 0, percentageUsed: 0, criticalWarning: 0 });
  tt.same(ok.lbas, [], 'qemu keeps no self-test or error log entries');
  tt.same(healthScore({ ...base, smart: { ...ok.counts, passed: ok.passed } }).penalties, {}, 'a healthy drive costs nothing');
  const warn = parseSmartctlJson(fixture('qemu-nvme-warning-smartctl-7.3.json'));
  if (!warn.available) throw new Error(warn.reason);
  tt.equal(warn.exitStatus, 8, 'smartctl exit bit 3: "DISK FAILING"');
  tt.equal(warn.passed, false);
  tt.equal(warn.counts.criticalWarning, 1, 'bit 0: available spare below threshold');
  const sc = healthScore({ ...base, smart: { ...warn.counts, passed: warn.passed } });
  tt.same(sc.penalties, { 'smart.failed': 40, 'smart.criticalWarning': 20 });
  tt.equal(sc.score, 40);
  tt.equal(sc.label, 'failing');
});

t.test('SCSI: grown defects, uncorrected errors summed, self-test first failure', async (tt) => {
  const r = parseSmartctlJson(fixture('scsi-defects.json'));
  if (!r.available) throw new Error(r.reason);
  tt.equal(r.protocol, 'SCSI');
  tt.same(r.counts, { grownDefects: 12, uncorrectedErrors: 3 });
  tt.same(r.lbas, [{ lba: 109273, source: 'self-test log' }]);
});

t.test('unavailable: the real loop-device output, garbage, no device', async (tt) => {
  const r = parseSmartctlJson(fixture('loop-device-smartctl-7.3.json'));
  tt.same(r, { available: false, reason: '/dev/loop5: Unable to detect device type' });
  tt.same(parseSmartctlJson('smartctl 6.6 usage: ...'), {
    available: false,
    reason: 'smartctl printed no JSON (smartmontools older than 7?)',
  });
  tt.equal(parseSmartctlJson('[]').available, false);
  tt.match(parseSmartctlJson('{"smartctl":{"exit_status":2}}'), { available: false });
});

t.test('score weights (docs/HEALTH.md)', async (tt) => {
  const base = { unreadable: 0, errorRemaps: 0, slow: 0, spareUsedPercent: 0, spareExhausted: false, recentPasses: [] };
  const ata = parseSmartctlJson(fixture('ata-failing.json'));
  const nvme = parseSmartctlJson(fixture('nvme-worn.json'));
  const scsi = parseSmartctlJson(fixture('scsi-defects.json'));
  if (!ata.available || !nvme.available || !scsi.available) throw new Error('fixtures');
  const a = healthScore({ ...base, smart: { ...ata.counts, passed: ata.passed } });
  tt.same(a.penalties, { 'smart.badSectors': 10, 'smart.reallocated': 8 });
  tt.equal(a.score, 82);
  tt.equal(a.label, 'degraded');
  const n = healthScore({ ...base, smart: { ...nvme.counts, passed: nvme.passed } });
  tt.same(n.penalties, { 'smart.failed': 40, 'smart.mediaErrors': 6, 'smart.spare': 20, 'smart.criticalWarning': 20 });
  tt.equal(n.label, 'critical');
  const s = healthScore({ ...base, smart: { ...scsi.counts, passed: scsi.passed } });
  tt.same(s.penalties, { 'smart.reallocated': 12, 'smart.mediaErrors': 6 });
  tt.same(healthScore(base).penalties, {}, 'no SMART, no SMART penalty');
});

t.test('SmartMonitor: real smartctl on a real loop device says unavailable; files, missing and hanging smartctl too', async (tt) => {
  const dir = mkdtempSync(join(tmpdir(), 'remapd-smart-'));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const img = join(dir, 'main.img');
  writeFileSync(img, '');
  truncateSync(img, 8 << 20);
  const lo = await run('losetup', ['-f', '--show', img]);
  tt.equal(lo.code, 0, lo.stderr);
  const dev = lo.stdout.trim();
  tt.teardown(() => run('losetup', ['-d', dev]));

  const reports: unknown[] = [];
  const m = new SmartMonitor({
    devicePath: dev,
    deviceSize: 8 << 20,
    logger: quiet,
    command: 'smartctl',
    onReport: (r) => reports.push(r),
  });
  await m.check();
  tt.match(m.status(), { state: 'unavailable', reason: `${dev}: Unable to detect device type` }, 'the real smartctl 7 on a loop device');
  tt.equal(reports.length, 1);

  const f = new SmartMonitor({ devicePath: img, deviceSize: 8 << 20, logger: quiet });
  await f.check();
  tt.match(f.status(), { state: 'unavailable', reason: 'main is an image file, not a disk' });

  const missing = new SmartMonitor({ devicePath: dev, deviceSize: 8 << 20, logger: quiet, command: join(dir, 'no-such-smartctl') });
  await missing.check();
  tt.match(missing.status(), { state: 'unavailable', reason: /not found/ });

  const hang = join(dir, 'hang.sh');
  writeFileSync(hang, '#!/bin/sh\nexec sleep 30\n');
  chmodSync(hang, 0o755);
  const slow = new SmartMonitor({ devicePath: dev, deviceSize: 8 << 20, logger: quiet, command: hang, timeoutMs: 300 });
  await slow.check();
  tt.match(slow.status(), { state: 'unavailable', reason: /took longer than 300 ms/ });

  // A drive that answers (a script printing a fixture with LBAs inside this 8 MiB device): counts, and
  // each logged LBA handed to the scan once, as a byte range of one logical block.
  const ata = JSON.parse(fixture('ata-failing.json')) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  ata.ata_smart_self_test_log.standard.table[0].lba = 4100;
  for (const e of ata.ata_smart_error_log.summary.table) if (e.completion_registers.error === 64) e.completion_registers.device = 0xe0;
  writeFileSync(join(dir, 'ata.json'), JSON.stringify(ata));
  const script = join(dir, 'smartctl.sh');
  writeFileSync(script, `#!/bin/sh\ncat '${join(dir, 'ata.json')}'\nexit 196\n`);
  chmodSync(script, 0o755);
  const hints: [ByteRange[], string][] = [];
  const ok = new SmartMonitor({
    devicePath: dev,
    deviceSize: 8 << 20,
    logger: quiet,
    command: script,
    onHints: (r, s) => hints.push([r, s]),
  });
  await ok.check();
  await ok.check();
  tt.match(ok.status(), {
    state: 'ok',
    protocol: 'ATA',
    passed: true,
    counts: { reallocated: 8, pending: 2, offlineUncorrectable: 2 },
    hintsQueued: 1,
  });
  // 0x5b8e40 (error log, device 0xe0) = 5999168 × 512 is past 8 MiB: ignored.
  tt.same(hints, [[[{ offset: 4100 * 512, length: 512 }], 'smart self-test log']], 'one hint, sent once over two checks');
});
