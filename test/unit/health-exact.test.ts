/**
 * The scanner end to end in-process (real worker thread, real RemapDevice and metadata on files, fault
 * rules shared with the worker): exact pending counts, whole-device failures, suspect regions first.
 * Run: npx tap --disable-coverage --allow-incomplete-coverage dist/test/unit/health-exact.test.js
 */
import t from 'tap';
import { randomFillSync } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { MetadataStore } from '../../metadata/store';
import { identityFromBackend } from '../../metadata/fingerprint';
import { FaultInjectingBackend } from '../../storage/fault-backend';
import { FaultRules } from '../../storage/faults';
import { openBackend } from '../../storage/file-backend';
import { RemapDevice } from '../../remap/remap-device';
import { HealthScanner } from '../../health/scanner';
import { parseSuspectArgs, alignAndMerge } from '../../health/suspects';
import { byteOffset } from '../../units';

const MiB = 1 << 20;
const B = 4096;
const S = 512;
t.setTimeout(300_000);

async function rig(tt: { teardown(fn: () => unknown): void }, faults: unknown[], sizeMiB = 8) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'remapd-exact-'));
  tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const mainPath = path.join(dir, 'main.img');
  const sparePath = path.join(dir, 'spare.img');
  fs.writeFileSync(mainPath, randomFillSync(Buffer.alloc(sizeMiB * MiB)));
  fs.writeFileSync(sparePath, Buffer.alloc(0));
  fs.truncateSync(sparePath, 16 * MiB);
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (l: string) => void logs.push(JSON.parse(l) as Record<string, unknown>) });
  const rawMain = await openBackend(mainPath);
  const spare = await openBackend(sparePath);
  const store = await MetadataStore.create(spare, identityFromBackend(rawMain), { blockSize: B });
  const rules = FaultRules.parse(JSON.stringify(faults), 'test rules');
  const device = new RemapDevice(new FaultInjectingBackend(rawMain, rules), spare, store, { logger: log });
  return {
    mainPath,
    rules,
    device,
    logs,
    log,
    close: async () => {
      await store.close();
      await rawMain.close();
      await spare.close();
    },
  };
}

const once = (s: HealthScanner, ev: string): Promise<unknown> => new Promise((r) => s.once(ev, r));

t.test('3 unreadable sectors: one pass marks exactly their 3 blocks pending, with a bounded read count', async (tt) => {
  // Block 123 (chunk 0), and neighbours 1030 and 1031 (chunk 4): neighbours must not smear.
  const bad = [123 * B + 3 * S, 1030 * B, 1031 * B + 7 * S];
  const r = await rig(
    tt,
    bad.map((o) => ({ op: 'read', offset: o, length: S, error: 'EIO' })),
  );
  const s = new HealthScanner(r.device, { mainPath: r.mainPath, logger: r.log, faults: r.rules.toShared(), settings: { rate: 0 } });
  const end = once(s, 'pass-end');
  s.begin();
  await end;
  await s.idle();
  const st = s.status();
  tt.same(st.pendingOffsets, [123 * B, 1030 * B, 1031 * B], 'exactly the 3 blocks holding the bad sectors');
  tt.equal(st.blocks.pending, 3);
  tt.equal(st.blocks.failed, 3);
  tt.equal(r.device.entries().length, 0, 'nothing remapped blindly');
  tt.ok(
    st.isolateReads > 0 && st.isolateReads <= 2 * 79,
    `isolation reads ${st.isolateReads} (bounded; reading every block of the 2 failed chunks alone would be ≥ 512)`,
  );
  const logged = r.logs.filter((l) => l.msg === 'health scan: unreadable block (pending: the next write remaps it)');
  tt.same(
    logged.map((l) => l.sectors),
    [[bad[0]], [bad[1]], [bad[2]]],
    'the failing sectors are logged',
  );
  tt.equal(st.deviceFailure, null);
  await s.close();
  await r.close();
});

t.test('a device that is gone (ENXIO) stops the pass: device failed, nothing pending', async (tt) => {
  const r = await rig(tt, [{ op: 'read', offset: 3 * MiB, length: 5 * MiB, error: 'ENXIO' }]);
  const s = new HealthScanner(r.device, {
    mainPath: r.mainPath,
    logger: r.log,
    faults: r.rules.toShared(),
    settings: { rate: 0, deviceRetryMs: 3_600_000 },
  });
  const failed = once(s, 'device-failed');
  s.begin();
  await failed;
  await s.idle();
  const st = s.status();
  tt.equal(st.state, 'device-failed');
  tt.equal(st.deviceFailure?.code, 'ENXIO');
  tt.equal(st.deviceFailure?.reason, 'device-gone');
  tt.equal(st.blocks.pending, 0, 'no block pending');
  tt.equal(st.passesCompleted, 0, 'the pass did not complete');
  tt.equal(r.logs.filter((l) => l.event === 'device-failed').length, 1, 'one loud log line');
  await s.close();
  tt.ok(r.device.status().pending.count === 0);
  await r.close();
});

t.test('every read failing after a good first pass: device failed, not thousands of pending blocks', async (tt) => {
  const r = await rig(tt, []);
  const s = new HealthScanner(r.device, {
    mainPath: r.mainPath,
    logger: r.log,
    faults: r.rules.toShared(),
    settings: { rate: 0, intervalMs: 3_600_000, deviceRetryMs: 3_600_000 },
  });
  const end = once(s, 'pass-end');
  s.begin();
  await end;
  s.setFaultRules(FaultRules.parse(JSON.stringify([{ op: 'read', offset: 0, length: 8 * MiB, error: 'EIO' }]), 'all').toShared());
  const failed = once(s, 'device-failed');
  s.start();
  await failed;
  await s.idle();
  const st = s.status();
  tt.equal(st.state, 'device-failed');
  tt.equal(st.deviceFailure?.reason, 'all-failing');
  tt.equal(st.blocks.pending, 0);
  await s.close();
  await r.close();
});

t.test('suspect arguments: integers, inside the device, bounded count; aligned and merged', async (tt) => {
  const size = 8 * MiB;
  const ok = parseSuspectArgs(
    {
      ranges: [
        { offset: 0, length: 512 },
        { offset: size - 1, length: 1 },
      ],
      source: ' ddrescue map ',
    },
    size,
  );
  tt.same(ok, {
    ranges: [
      { offset: 0, length: 512 },
      { offset: size - 1, length: 1 },
    ],
    source: 'ddrescue map',
  });
  const bad: [unknown, RegExp][] = [
    [{ ranges: [{ offset: 1.5, length: 1 }], source: 's' }, /integer/],
    [{ ranges: [{ offset: -1, length: 1 }], source: 's' }, /integer byte offset/],
    [{ ranges: [{ offset: 0, length: 0 }], source: 's' }, /length/],
    [{ ranges: [{ offset: '0', length: 1 }], source: 's' }, /offset/],
    [{ ranges: [{ offset: size - 1, length: 2 }], source: 's' }, /past the device/],
    [{ ranges: [null], source: 's' }, /ranges\[0\]/],
    [{ ranges: 'x', source: 's' }, /array/],
    [{ ranges: [], source: '' }, /source/],
    [{ ranges: [] }, /source/],
    [{ ranges: Array.from({ length: 100_001 }, () => ({ offset: 0, length: 1 })), source: 's' }, /at most 100000/],
  ];
  for (const [args, re] of bad)
    tt.throws(() => parseSuspectArgs(args as Record<string, unknown>, size), re, JSON.stringify(args).slice(0, 80));
  tt.same(
    alignAndMerge(
      [
        { offset: byteOffset(5000), length: 10 },
        { offset: byteOffset(0), length: 1 },
        { offset: byteOffset(4096), length: 1 },
        { offset: byteOffset(20000), length: 1 },
      ],
      B,
      size,
    ),
    [
      { offset: 0, length: 2 * B },
      { offset: 4 * B, length: B },
    ],
    'aligned outward to whole blocks, touching ranges merged',
  );
});

t.test('suspect regions are visited before the pass continues; unreadable ones become pending, nothing is remapped', async (tt) => {
  const BAD = 7 * MiB + 5 * B + 1024; // near the end of the 8 MiB device
  const r = await rig(tt, [{ op: 'read', offset: BAD, length: S, error: 'EIO' }]);
  const s = new HealthScanner(r.device, {
    mainPath: r.mainPath,
    logger: r.log,
    faults: r.rules.toShared(),
    settings: { rate: 512 * 1024, intervalMs: 3_600_000 },
  });
  s.begin();
  // Paused: a hint waits, and is visited once the scan resumes.
  s.pause();
  tt.same(
    s.suspect(
      [
        { offset: byteOffset(7 * MiB), length: 64 * B },
        { offset: byteOffset(7 * MiB + 10), length: 1 },
      ],
      'import-map test',
    ),
    { queued: 1 },
    'one region after merging',
  );
  tt.equal(s.status().suspects.queued, 1);
  const visited = once(s, 'suspects-done');
  s.resume();
  await visited;
  await s.idle();
  const st = s.status();
  tt.ok(st.cursorOffset < 7 * MiB, `the hint was read before the pass got there (cursor ${st.cursorOffset})`);
  tt.same(st.pendingOffsets, [Math.floor(BAD / B) * B], 'exactly the bad block of the region is pending');
  tt.same(st.suspects, { queued: 0, queuedBytes: 0, visited: 1, visitedBytes: 64 * B, bySource: { 'import-map test': 1 } });
  tt.equal(r.device.entries().length, 0, 'nothing remapped');
  tt.equal(st.passesCompleted, 0);
  await s.close();
  await r.close();
});
