/**
 * The health scanner on real files: a real RemapDevice + MetadataStore, the real worker thread,
 * fault rules shared between this thread and the worker.
 * Run: npx tap --disable-coverage --allow-incomplete-coverage dist/test/unit/health-scanner.test.js
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
import { byteOffset, mainBlock } from '../../units';

const MiB = 1 << 20;
// Real worker threads and real reads: slow on a loaded 2-core machine (no timing is asserted).
t.setTimeout(300_000);
const B = 4096;

interface Rig {
  dir: string;
  mainPath: string;
  original: Buffer;
  rules: FaultRules;
  device: RemapDevice;
  store: MetadataStore;
  logs: Record<string, unknown>[];
  log: pino.Logger;
  close(): Promise<void>;
}

async function rig(tt: { teardown(fn: () => unknown): void }, faults: unknown[], reuse?: { dir: string; original: Buffer }): Promise<Rig> {
  const dir = reuse?.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'remapd-scan-'));
  if (!reuse) tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const mainPath = path.join(dir, 'main.img');
  const sparePath = path.join(dir, 'spare.img');
  let original = reuse?.original;
  if (!original) {
    original = randomFillSync(Buffer.alloc(8 * MiB));
    fs.writeFileSync(mainPath, original);
    fs.writeFileSync(sparePath, Buffer.alloc(0));
    fs.truncateSync(sparePath, 16 * MiB);
  }
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (l: string) => void logs.push(JSON.parse(l) as Record<string, unknown>) });
  const rawMain = await openBackend(mainPath);
  const spare = await openBackend(sparePath);
  const store = reuse
    ? await MetadataStore.open(spare, identityFromBackend(rawMain))
    : await MetadataStore.create(spare, identityFromBackend(rawMain), { blockSize: B });
  const rules = FaultRules.parse(JSON.stringify(faults), 'test rules');
  const main = new FaultInjectingBackend(rawMain, rules);
  const device = new RemapDevice(main, spare, store, { logger: log });
  return {
    dir,
    mainPath,
    original,
    rules,
    device,
    store,
    logs,
    log,
    close: async () => {
      await store.close();
      await rawMain.close();
      await spare.close();
    },
  };
}

function onceEvent(s: HealthScanner, ev: string): Promise<unknown> {
  return new Promise((r) => s.once(ev, r));
}

async function spareCopy(r: Rig, block: number): Promise<Buffer> {
  const e = r.device.entries().find((x) => x.mainBlock === block);
  if (!e) throw new Error(`block ${block} is not remapped`);
  const buf = Buffer.alloc(B);
  await r.device.read(byteOffset(block * B), B, buf, 0);
  return buf;
}

t.test('one pass finds flaky, very slow and unreadable blocks; migrates with identical data', async (tt) => {
  const FLAKY = 100,
    SLOW = 600,
    BAD = 1500,
    CLEAN_SLOW = 1200;
  const r = await rig(tt, [
    { op: 'read', offset: FLAKY * B + 512, length: 512, error: 'EIO', count: 2 },
    { op: 'read', offset: SLOW * B, length: B, delayMs: 250 },
    { op: 'read', offset: CLEAN_SLOW * B, length: B, delayMs: 80 },
    { op: 'read', offset: BAD * B, length: B, error: 'EIO' },
  ]);
  const s = new HealthScanner(r.device, { mainPath: r.mainPath, logger: r.log, faults: r.rules.toShared(), settings: { rate: 0 } });
  const passEnd = onceEvent(s, 'pass-end');
  s.begin();
  await passEnd;
  await s.idle();
  tt.equal(r.rules.remainingCount(0), 0, "the worker consumed the flaky rule's shared count");
  tt.ok(r.device.isRemapped(mainBlock(FLAKY)), 'flaky block migrated');
  tt.ok(r.device.isRemapped(mainBlock(SLOW)), 'very slow block migrated at once');
  tt.notOk(r.device.isRemapped(mainBlock(CLEAN_SLOW)), 'a merely slow block waits for a second pass');
  tt.ok(r.device.isPending(mainBlock(BAD)), 'unreadable block pending');
  tt.notOk(r.device.isRemapped(mainBlock(BAD)));
  const reasons = Object.fromEntries(r.device.entries().map((e) => [e.mainBlock, e.reason]));
  tt.same(reasons, { [FLAKY]: 'scan-flaky', [SLOW]: 'scan-slow' });
  tt.ok((await spareCopy(r, FLAKY)).equals(r.original.subarray(FLAKY * B, (FLAKY + 1) * B)), 'flaky block data identical on the spare');
  tt.ok((await spareCopy(r, SLOW)).equals(r.original.subarray(SLOW * B, (SLOW + 1) * B)), 'slow block data identical on the spare');
  let st = s.status();
  tt.equal(st.passesCompleted, 1);
  tt.equal(st.blocks.flaky, 1);
  tt.equal(st.blocks.failed, 1);
  tt.equal(st.blocks.pending, 1);
  tt.equal(st.blocks.migrated, 2);
  tt.ok(st.slowOffsets.includes(byteOffset(CLEAN_SLOW * B)), 'the slow block is listed, not yet migrated');
  tt.ok(st.blocks.slow >= 1);
  tt.same(st.pendingOffsets, [BAD * B]);
  tt.not(st.label, 'healthy', `score ${st.score} ${JSON.stringify(st.penalties)}`);
  tt.ok(
    r.logs.some((l) => l.event === 'health-label' && l.to === 'degraded' && l.level === 40),
    'label change logged as a warning',
  );
  tt.ok(
    r.logs.some((l) => typeof l.msg === 'string' && l.msg.includes('unreadable block') && l.offset === BAD * B),
    'unreadable block logged with its offset',
  );

  // Second pass (interval 0): the slow block is slow again → migrated.
  const pass2 = onceEvent(s, 'pass-end');
  s.set({ intervalMs: 0 });
  s.start();
  await pass2;
  await s.idle();
  s.pause();
  tt.ok(r.device.isRemapped(mainBlock(CLEAN_SLOW)), 'slow in 2 consecutive passes → migrated');
  tt.ok((await spareCopy(r, CLEAN_SLOW)).equals(r.original.subarray(CLEAN_SLOW * B, (CLEAN_SLOW + 1) * B)));
  st = s.status();
  tt.ok(st.passesCompleted >= 2);
  await s.close();
  tt.ok(r.store.scanState().passesCompleted >= 2, 'passes persisted in the metadata');
  tt.ok(r.store.scanState().lastFullScanAt > 0);
  await r.close();
});

t.test('resumes from the persisted cursor; pause holds it; crash restarts the worker', async (tt) => {
  // Rule 0 sits in the first half, rule 1 in the second: a count left on rule 0 proves it was not read.
  const r = await rig(tt, [
    { op: 'read', offset: 1 * MiB, length: 4096, delayMs: 1, count: 1 },
    { op: 'read', offset: 6 * MiB, length: 4096, delayMs: 1, count: 1 },
  ]);
  await r.store.saveScanState({ cursorOffset: byteOffset(4 * MiB), passesCompleted: 3, lastFullScanAt: Date.now() - 1000 });
  const s = new HealthScanner(r.device, {
    mainPath: r.mainPath,
    logger: r.log,
    faults: r.rules.toShared(),
    settings: { rate: 0, intervalMs: 3_600_000 },
    maxRestartDelayMs: 50,
  });
  tt.equal(s.status().cursorOffset, 4 * MiB, 'cursor loaded from the metadata');
  const passEnd = onceEvent(s, 'pass-end');
  s.begin();
  tt.equal(s.status().state, 'running', 'an interrupted pass resumes at start-up');
  await passEnd;
  tt.equal(r.rules.remainingCount(0), 1, 'the first half was not scanned again');
  tt.equal(r.rules.remainingCount(1), 0, 'the second half was scanned');
  let st = s.status();
  tt.equal(st.passesCompleted, 4);
  tt.equal(st.state, 'waiting', 'next pass waits for the interval');
  tt.ok(st.nextScanAt);

  // Pause while waiting, then start: paused → running.
  tt.equal(s.pause().state, 'paused');
  tt.equal(s.resume().state, 'waiting', 'resume between passes goes back to waiting');

  // Crash the worker in the middle of a pass: it is restarted and the pass still finishes.
  s.set({ rate: 1 * MiB }); // slow enough that the crash lands mid-pass
  const exited = onceEvent(s, 'worker-exit');
  s.start();
  s.crashWorker();
  await exited;
  st = s.status();
  tt.equal(st.workerRestarts, 1);
  tt.ok(
    r.logs.some((l) => l.msg === 'health scan worker exited unexpectedly; restarting it'),
    'crash logged',
  );
  s.set({ rate: 0 });
  const pass2 = onceEvent(s, 'pass-end');
  await pass2;
  tt.equal(s.status().passesCompleted, 5, 'the restarted worker completed the pass');
  await s.close();
  tt.equal(r.store.scanState().passesCompleted, 5);
  await r.close();

  // Reopen: state survives.
  const r2 = await rig(tt, [], { dir: r.dir, original: r.original });
  const s2 = new HealthScanner(r2.device, { mainPath: r2.mainPath, logger: r2.log, settings: { intervalMs: 3_600_000 } });
  tt.equal(s2.status().passesCompleted, 5, 'passes survive a reopen');
  s2.begin();
  tt.equal(s2.status().state, 'waiting', 'a finished pass is not redone before the interval');
  await s2.close();
  await r2.close();
});
