/**
 * MediaIsolator (health/media-isolator.ts) in-process: a real file behind FaultInjectingBackend, every
 * read counted. A failed 1 MiB read must come down to exactly the bad sectors' blocks, with a bounded
 * number of reads; device-gone, everything-failing and non-media errors blame no block.
 * Run: npx tap --disable-coverage --allow-incomplete-coverage dist/test/unit/health-isolate.test.js
 */
import t from 'tap';
import { randomFillSync } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Backend } from '../../storage/backend';
import { FaultInjectingBackend } from '../../storage/fault-backend';
import { FaultRules } from '../../storage/faults';
import { openBackend } from '../../storage/file-backend';
import { MediaIsolator } from '../../health/media-isolator';
import { byteOffset, mainBlock } from '../../units';

const MiB = 1 << 20;
const B = 4096;
const S = 512;

/** Counts reads that reach the device (after the fault layer decided). */
function counting(inner: Backend): Backend & { reads: number } {
  const c = Object.create(inner) as Backend & { reads: number };
  c.reads = 0;
  c.read = (o, l, buf, bo) => {
    c.reads++;
    return inner.read(o, l, buf, bo);
  };
  return c;
}

async function rig(
  tt: { teardown(fn: () => unknown): void },
  rules: unknown[],
): Promise<{ dev: Backend & { reads: number }; close(): Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'remapd-isolate-'));
  tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'main.img');
  fs.writeFileSync(file, randomFillSync(Buffer.alloc(4 * MiB)));
  const raw = await openBackend(file, { readOnly: true });
  const dev = counting(new FaultInjectingBackend(raw, FaultRules.parse(JSON.stringify(rules), 'test')));
  return { dev, close: () => raw.close() };
}

async function firstFailure(dev: Backend, offset: number, length: number): Promise<unknown> {
  try {
    await dev.read(byteOffset(offset), length, Buffer.alloc(length), 0);
  } catch (err) {
    return err;
  }
  throw new Error('expected the chunk read to fail');
}

t.test('3 unreadable sectors in a 1 MiB chunk: exactly their 3 blocks, exact sectors, bounded reads', async (tt) => {
  const chunk = 1 * MiB;
  // Sectors: in block 300 (2nd sector), block 301 (last sector: a neighbour of the first), block 500.
  const bad = [300 * B + S, 301 * B + 7 * S, 500 * B + 3 * S];
  const r = await rig(
    tt,
    bad.map((o) => ({ op: 'read', offset: o, length: S, error: 'EIO' })),
  );
  const first = await firstFailure(r.dev, chunk, chunk);
  r.dev.reads = 0;
  const iso = new MediaIsolator(r.dev, { blockSize: B, readRetries: 3, maxReads: 1024 });
  const res = await iso.isolate(byteOffset(chunk), chunk, first, 0);
  tt.notOk(res.deviceFailure, 'no device failure');
  tt.same(res.unresolved, []);
  tt.same(
    res.findings.map((f) => [f.kind, f.block, f.sectors]),
    [
      ['unreadable', 300, [300 * B + S]],
      ['unreadable', 301, [301 * B + 7 * S]],
      ['unreadable', 500, [500 * B + 3 * S]],
    ],
    'exactly the 3 blocks, each with its one bad sector',
  );
  tt.equal(res.reads, r.dev.reads, 'reads counted by the isolator = reads that reached the device');
  // One probe + phase 1 (≤ 2 reads per level per bad block, log2(256) = 8 levels) + phase 2 (block
  // re-read, ≤ 2 per level for log2(8) = 3 levels, 3 retries).
  const bound = 1 + 3 * 2 * 8 + 3 * (1 + 2 * 3 + 3);
  tt.ok(res.reads <= bound, `reads ${res.reads} ≤ ${bound} (reading each of the 256 blocks alone would take ≥ 256)`);
  await r.close();
});

t.test('a sector that fails once is flaky, not unreadable', async (tt) => {
  const r = await rig(tt, [{ op: 'read', offset: 10 * B + 2 * S, length: S, error: 'EIO', count: 2 }]);
  const first = await firstFailure(r.dev, 0, MiB);
  const res = await new MediaIsolator(r.dev, { blockSize: B, readRetries: 3, maxReads: 1024 }).isolate(byteOffset(0), MiB, first, -1);
  tt.same(
    res.findings.map((f) => [f.kind, f.block]),
    [['flaky', 10]],
  );
  await r.close();
});

t.test('device gone (ENXIO), everything failing, and non-media errors blame no block', async (tt) => {
  const gone = await rig(tt, [{ op: 'read', offset: 0, length: 4 * MiB, error: 'ENXIO' }]);
  let res = await new MediaIsolator(gone.dev, { blockSize: B, readRetries: 3, maxReads: 1024 }).isolate(
    byteOffset(MiB),
    MiB,
    await firstFailure(gone.dev, MiB, MiB),
    0,
  );
  tt.same(res.findings, []);
  tt.equal(res.deviceFailure?.reason, 'device-gone');
  tt.equal(res.deviceFailure?.code, 'ENXIO');
  await gone.close();

  const all = await rig(tt, [{ op: 'read', offset: 0, length: 4 * MiB, error: 'EIO' }]);
  all.dev.reads = 0;
  res = await new MediaIsolator(all.dev, { blockSize: B, readRetries: 3, maxReads: 1024 }).isolate(
    byteOffset(2 * MiB),
    MiB,
    await firstFailure(all.dev, 2 * MiB, MiB),
    MiB,
  );
  tt.same(res.findings, [], 'no block blamed when a sector read before fails too');
  tt.equal(res.deviceFailure?.reason, 'all-failing');
  tt.equal(res.reads, 1, 'one probe read decided it');
  await all.close();

  const cfg = await rig(tt, [{ op: 'read', offset: 2 * MiB, length: B, error: 'EINVAL' }]);
  res = await new MediaIsolator(cfg.dev, { blockSize: B, readRetries: 3, maxReads: 1024 }).isolate(
    byteOffset(2 * MiB),
    MiB,
    await firstFailure(cfg.dev, 2 * MiB, MiB),
    0,
  );
  tt.same(res.findings, []);
  tt.equal(res.deviceFailure?.reason, 'config');
  tt.equal(res.deviceFailure?.code, 'EINVAL');
  await cfg.close();
});

t.test('read budget: what is not isolated is handed back, nothing is guessed', async (tt) => {
  // 40 bad sectors in 40 blocks of one chunk; a budget far too small for all of them.
  const badBlocks = Array.from({ length: 40 }, (_, i) => 3 + i * 6);
  const r = await rig(
    tt,
    badBlocks.map((b) => ({ op: 'read', offset: b * B, length: S, error: 'EIO' })),
  );
  const first = await firstFailure(r.dev, 0, MiB);
  const res = await new MediaIsolator(r.dev, { blockSize: B, readRetries: 3, maxReads: 120 }).isolate(byteOffset(0), MiB, first, -1);
  tt.notOk(res.deviceFailure);
  tt.ok(res.reads <= 120, `reads ${res.reads} within the budget`);
  const found = res.findings.map((f) => f.block);
  tt.ok(found.length > 0 && found.length < 40, `some blocks isolated (${found.length})`);
  for (const f of res.findings) tt.equal(f.kind, 'unreadable');
  tt.ok(
    found.every((b) => badBlocks.includes(b)),
    'every block reported is a bad one',
  );
  const covered = (b: number): boolean => res.unresolved.some((u) => b * B >= u.offset && b * B < u.offset + u.length);
  tt.ok(
    badBlocks.every((b) => found.includes(mainBlock(b)) || covered(b)),
    'every other bad block is in an unresolved range',
  );
  await r.close();
});
