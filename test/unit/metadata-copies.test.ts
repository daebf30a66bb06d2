/**
 * Damage 1 to 4 of the 5 copies in different ways; open must choose the right copy, return the full
 * table, and repair the others (afterwards all 5 copies verify and agree). A repair is reported: at open in
 * repairedAtOpen, at run time (a copy write failed, a later checkpoint rewrote it) through onRepaired.
 */
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { MetadataStore } from '../../metadata/store';
import { decodeHeader } from '../../metadata/header';
import { checkpointOffset, journalOffset, type Layout } from '../../metadata/layout';
import { MAIN, TestFileBackend, addRemaps, snapshot, tmpDir } from '../helpers/metadata-util';
import { mainBlock } from '../../units';

interface Pristine {
  file: string;
  layout: Layout;
  slot: number;
  oldRegion2: Buffer;
  expected: ReturnType<typeof snapshot>;
}

async function makePristine(dir: string): Promise<Pristine> {
  const file = path.join(dir, 'pristine.img');
  const spare = await TestFileBackend.open(file, { size: 64 << 20 });
  const s = await MetadataStore.create(spare, MAIN, { blockSize: 4096, journalBytes: 128 << 10 });
  await addRemaps(
    s,
    Array.from({ length: 3000 }, (_, i) => i * 7),
  ); // > 1 chunk
  await s.commit({ pendingAdd: [mainBlock(5), mainBlock(6)] });
  await s.checkpoint();
  const l = s.layout;
  // Keep an old but valid image of copy 2 (for the stale-sequence case).
  const fd = fs.openSync(file, 'r');
  const oldRegion2 = Buffer.alloc(l.regionBytes);
  fs.readSync(fd, oldRegion2, 0, l.regionBytes, l.regionOffsets[2]);
  fs.closeSync(fd);
  for (let i = 0; i < 5; i++) await addRemaps(s, [100_000 + i]); // journal frames after the checkpoint
  await s.commit({ remove: [mainBlock(7)], pendingRemove: [mainBlock(6)] });
  const expected = snapshot(s);
  await s.close();
  await spare.close();
  const h = decodeHeader(fs.readFileSync(file).subarray(0, 512));
  if (!h.ok) throw new Error('bad pristine header');
  return { file, layout: l, slot: h.header.activeSlot, oldRegion2, expected };
}

function patch(file: string, offset: number, fn: (b: Buffer) => void, length = 1): void {
  const fd = fs.openSync(file, 'r+');
  const b = Buffer.alloc(length);
  fs.readSync(fd, b, 0, length, offset);
  fn(b);
  fs.writeSync(fd, b, 0, length, offset);
  fs.closeSync(fd);
}
const flip = (file: string, off: number): void =>
  patch(file, off, (b) => {
    b[0] ^= 0x10;
  });
const zeroRange = (file: string, off: number, len: number): void => patch(file, off, (b) => b.fill(0), len);

t.test('damaged copies', async (t) => {
  const dir = tmpDir(t, 'copies');
  const p = await makePristine(dir);
  const l = p.layout;
  type Damage = (f: string) => void;
  const hdrFlip =
    (k: number): Damage =>
    (f) =>
      flip(f, l.headerOffsets[k] + 30); // inside sequence/timestamp
  const chunkFlip =
    (k: number): Damage =>
    (f) =>
      flip(f, checkpointOffset(l, k, p.slot) + 65536 + 32 + 5); // 2nd chunk entry
  const journalFlip =
    (k: number): Damage =>
    (f) =>
      flip(f, journalOffset(l, k) + 48 + 9); // first frame after checkpoint
  const zeroCopy =
    (k: number): Damage =>
    (f) =>
      zeroRange(f, l.regionOffsets[k], l.regionBytes);
  const truncCopy =
    (k: number): Damage =>
    (f) => {
      // torn tail: second half of the checkpoint slot missing
      const start = checkpointOffset(l, k, p.slot) + 65536;
      zeroRange(f, start, l.regionOffsets[k] + l.regionBytes - start); // copy 4 loses its header (it is last)
    };
  const stale2: Damage = (f) => patch(f, l.regionOffsets[2], (b) => p.oldRegion2.copy(b), l.regionBytes);

  const cases: { name: string; damage: Damage[]; chosen: number; failed: Record<number, string>; stale?: number[] }[] = [
    { name: 'bit flip in header of copy 0', damage: [hdrFlip(0)], chosen: 1, failed: { 0: 'header-crc' } },
    {
      name: 'bit flip in a table chunk of copies 0 and 1',
      damage: [chunkFlip(0), chunkFlip(1)],
      chosen: 2,
      failed: { 0: 'chunk-crc', 1: 'chunk-crc' },
    },
    {
      name: 'bit flip in a journal record of copies 0,1,2',
      damage: [journalFlip(0), journalFlip(1), journalFlip(2)],
      chosen: 3,
      failed: {},
      stale: [0, 1, 2],
    },
    {
      name: 'copies 1-4 zeroed',
      damage: [zeroCopy(1), zeroCopy(2), zeroCopy(3), zeroCopy(4)],
      chosen: 0,
      failed: { 1: 'magic', 2: 'magic', 3: 'magic', 4: 'magic' },
    },
    { name: 'copies 0 and 4 truncated', damage: [truncCopy(0), truncCopy(4)], chosen: 1, failed: { 0: 'chunk-crc', 4: 'magic' } },
    { name: 'copy 2 holds a stale sequence', damage: [stale2], chosen: 0, failed: {}, stale: [2] },
    {
      name: 'four copies damaged four ways',
      damage: [hdrFlip(0), zeroCopy(1), stale2, chunkFlip(3)],
      chosen: 4,
      failed: { 0: 'header-crc', 1: 'magic', 3: 'chunk-crc' },
      stale: [2],
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const file = path.join(dir, 'case.img');
      fs.copyFileSync(p.file, file);
      for (const d of c.damage) d(file);
      const ro = await TestFileBackend.open(file, { readOnly: true });
      const before = await MetadataStore.inspect(ro);
      await ro.close();
      t.equal(before.chosen, c.chosen, 'chosen copy');
      for (const cp of before.copies) {
        if (c.failed[cp.index]) {
          t.notOk(cp.valid, `copy ${cp.index} invalid`);
          t.equal(cp.failedCheck, c.failed[cp.index], `copy ${cp.index} failed check`);
        } else {
          t.ok(cp.valid, `copy ${cp.index} valid`);
          t.equal(!!cp.stale, (c.stale ?? []).includes(cp.index), `copy ${cp.index} stale flag`);
        }
      }
      const spare = await TestFileBackend.open(file);
      const s = await MetadataStore.open(spare, MAIN);
      t.same(snapshot(s), p.expected, 'full table recovered');
      const damaged = Object.keys(c.failed).length + (c.stale?.length ?? 0);
      t.equal(s.repairs, 1, 'one repair counted');
      t.equal(s.repairedAtOpen, damaged, `repairedAtOpen: ${damaged} copies`);
      const seqAfterOpen = s.sequence;
      await addRemaps(s, [200_000]);
      await s.close();
      await spare.close();
      const after = await MetadataStore.inspect(await TestFileBackend.open(file, { readOnly: true }));
      t.equal(after.chosen, 0, 'after repair copy 0 is chosen');
      t.ok(
        after.copies.every((x) => x.valid && !x.stale),
        'after repair all 5 copies valid and current',
      );
      t.ok(
        after.copies.every((x) => x.sequence === seqAfterOpen + 1),
        'all copies carry the new sequence',
      );
      const s2 = await MetadataStore.open(await TestFileBackend.open(file), MAIN);
      t.ok(s2.lookup(mainBlock(200_000)), 'commit after repair persisted');
      await s2.close();
    });
  }
});

t.test('a repair at run time is reported through onRepaired; a clean open reports none', async (t) => {
  const dir = tmpDir(t, 'mdrepair');
  const file = path.join(dir, 'spare.img');
  const raw = await TestFileBackend.open(file, { size: 64 << 20 });
  let failAt = -1;
  // The same backend, but a write at `failAt` fails once (copy 2's journal tail, below).
  const spare = new Proxy(raw, {
    get(target, prop, recv) {
      if (prop === 'write') {
        return (offset: number, ...rest: [Buffer]) => {
          if (offset === failAt) {
            failAt = -1;
            return Promise.reject(new Error('EIO (test)'));
          }
          return target.write(offset, ...rest);
        };
      }
      const v = Reflect.get(target, prop, recv) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  const created = await MetadataStore.create(spare, MAIN, { blockSize: 4096, journalBytes: 128 << 10 });
  await created.close();
  const s = await MetadataStore.open(spare, MAIN);
  t.equal(s.repairs, 0, 'clean open: no repair');
  t.equal(s.repairedAtOpen, undefined, 'clean open: repairedAtOpen undefined');
  const seen: number[] = [];
  s.onRepaired = (copies) => seen.push(copies);
  failAt = journalOffset(s.layout, 2);
  await addRemaps(s, [1]);
  t.same(seen, [], 'a failed copy write alone is no repair');
  await s.checkpoint();
  t.same(seen, [1], 'the checkpoint that rewrote the copy reports 1 copy repaired');
  t.equal(s.repairs, 1, 'repairs counter');
  await s.checkpoint();
  t.same(seen, [1], 'a later checkpoint reports nothing');
  await s.close();
  await raw.close();
});
