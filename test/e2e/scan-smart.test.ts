/**
 * SMART through the daemon: main is a real loop device. With the real smartctl, status says
 * "smart: unavailable: … Unable to detect device type" and the daemon carries on. With a smartctl stand-in
 * (REMAPD_SMARTCTL: a script printing an ATA fixture whose self-test log names one LBA, where --faults
 * makes main unreadable), the counts reach `remapd status` and the health score, and the LBA's block is
 * read ahead of the pass and becomes pending; nothing is remapped.
 * Run: npx tap --disable-coverage --allow-incomplete-coverage dist/test/e2e/scan-smart.test.js
 */
import t from 'tap';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { callControl } from '../../daemon/control-client';
import type { ScanStatus } from '../../health/scanner';
import type { SmartStatus } from '../../health/smart';
import { describe, MiB, randomImage, REMAPD_BIN, REPO_ROOT, run, sleep, startServer, tempDir, type Server } from '../helpers';

const B = 4096;
t.setTimeout(300_000);
type Tap = { teardown(fn: () => unknown): void };

async function loopDaemon(
  t: Tap,
  o: { env?: Record<string, string>; faults?: unknown[]; args: string[] },
): Promise<{ dir: string; ctl: string; server: Server }> {
  const dir = tempDir(t, 'remapd-smart-');
  const img = join(dir, 'media.img');
  randomImage(img, 32 * MiB);
  const lo = await run('losetup', ['-f', '--show', img]);
  if (lo.code !== 0) throw new Error(describe(lo));
  const dev = lo.stdout.trim();
  t.teardown(() => run('losetup', ['-d', dev]));
  const spare = join(dir, 'spare.img');
  writeFileSync(spare, '');
  await run('truncate', ['-s', '32M', spare]);
  const c = await run(process.execPath, [REMAPD_BIN, 'create', '--main', dev, '--spare', spare]);
  if (c.code !== 0) throw new Error(describe(c));
  const args = ['--spare', spare, ...o.args];
  if (o.faults) {
    writeFileSync(join(dir, 'faults.json'), JSON.stringify(o.faults));
    args.push('--faults', join(dir, 'faults.json'));
  }
  const saved = { ...process.env };
  Object.assign(process.env, o.env ?? {});
  try {
    const server = await startServer(t, { kind: 'remapd', image: dev, dir, extraArgs: args });
    return { dir, ctl: join(dir, 'nbd.ctl'), server };
  } finally {
    for (const k of Object.keys(o.env ?? {})) if (saved[k] === undefined) delete process.env[k];
  }
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const smartOf = async (ctl: string): Promise<SmartStatus> => ((await callControl(ctl, 'status')) as { smart: SmartStatus }).smart;

t.test('the real smartctl on a loop device: "smart: unavailable", the daemon carries on', async (t) => {
  const s = await loopDaemon(t, { args: ['--scan-rate', '0', '--scan-interval', '1h'] });
  const sm = await waitFor('the SMART check', async () => {
    const x = await smartOf(s.ctl);
    return x.state !== 'not-checked' && x;
  });
  t.equal(sm.state, 'unavailable');
  t.match(sm.reason, /Unable to detect device type/);
  const human = await run(process.execPath, [REMAPD_BIN, 'status', '--control', s.ctl]);
  t.match(human.stdout, /smart\s+unavailable: \/dev\/loop\d+: Unable to detect device type/, describe(human));
  const st = await waitFor('a full pass', async () => {
    const x = (await callControl(s.ctl, 'scan.status')) as ScanStatus;
    return x.passesCompleted >= 1 && x;
  });
  t.equal(st.label, 'healthy', 'no SMART penalty when SMART is unavailable');
});

t.test('a drive that reports SMART: counts in status and score, logged LBA read first and pending', async (t) => {
  const LBA = 56_000; // 512-byte LBA → byte 28672000, block 7000 (~27 MiB): far ahead of a 1 MiB/s pass
  const ata = JSON.parse(readFileSync(join(REPO_ROOT, 'test', 'fixtures', 'smart', 'ata-failing.json'), 'utf8')) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  ata.ata_smart_self_test_log.standard.table[0].lba = LBA;
  ata.ata_smart_error_log.summary.table = [];
  const dir = tempDir(t, 'remapd-smartctl-');
  writeFileSync(join(dir, 'ata.json'), JSON.stringify(ata));
  const script = join(dir, 'smartctl');
  writeFileSync(script, `#!/bin/sh\n# stand-in for smartctl -j -a DEV\ncat '${join(dir, 'ata.json')}'\nexit 196\n`);
  chmodSync(script, 0o755);
  const s = await loopDaemon(t, {
    env: { REMAPD_SMARTCTL: script },
    faults: [{ op: 'read', offset: LBA * 512, length: 512, error: 'EIO' }],
    args: ['--scan-rate', '1M', '--scan-interval', '1h'],
  });
  const sm = await waitFor('SMART read', async () => {
    const x = await smartOf(s.ctl);
    return x.state === 'ok' && x;
  });
  t.match(sm, { protocol: 'ATA', passed: true, counts: { reallocated: 8, pending: 2, offlineUncorrectable: 2 } });
  const st = await waitFor('the logged LBA pending', async () => {
    const x = (await callControl(s.ctl, 'scan.status')) as ScanStatus;
    return x.pendingOffsets.includes(7000 * B) && x;
  });
  t.ok(st.cursorOffset < 7000 * B, `read ahead of the pass (cursor ${st.cursorOffset})`);
  t.same(st.pendingOffsets, [7000 * B], 'exactly that block');
  t.match(st.penalties, { 'smart.badSectors': 10, 'smart.reallocated': 8, unreadable: 15 });
  t.equal(st.suspects.bySource['smart self-test log'], 1);
  const list = (await callControl(s.ctl, 'list')) as { remaps: unknown[] };
  t.same(list.remaps, [], 'nothing remapped');
  const human = await run(process.execPath, [REMAPD_BIN, 'status', '--control', s.ctl]);
  t.match(
    human.stdout,
    /smart\s+ATA passed, reallocated 8, pending 2, offline uncorrectable 2, 1 logged LBAs sent to the scan/,
    describe(human),
  );
  t.match(s.server.log(), /SMART log names bad LBAs on main/);
});
