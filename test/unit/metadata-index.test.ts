/** RemapIndex (compact in-memory table) against a Map model; store semantics of the in-memory table. */
import t, { type Test } from 'tap';
import * as path from 'path';
import { RemapIndex } from '../../metadata/remap-index';
import { MetadataStore } from '../../metadata/store';
import { REMAP_REASONS } from '../../metadata/types';
import { MAIN, TestFileBackend, addRemaps, tmpDir } from '../helpers/metadata-util';
import { mainBlock } from '../../units';

type Row = { spare: number; reason: number; created: number };

function rng(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
}

function sameAsModel(t: Test, ix: RemapIndex, model: Map<number, Row>, what: string): void {
  t.equal(ix.size, model.size, `${what}: size`);
  const got = [...ix.entries()].map((e) => [e.mainBlock, e.spareBlock, e.reason, e.createdAt]);
  const want = [...model].map(([m, r]) => [m, r.spare, REMAP_REASONS[r.reason - 1], r.created]);
  t.same(got, want, `${what}: same entries in Map insertion order`);
  const counts: Record<string, number> = {};
  for (const r of model.values()) counts[REMAP_REASONS[r.reason - 1]] = (counts[REMAP_REASONS[r.reason - 1]] ?? 0) + 1;
  t.same(ix.reasonCounts(), counts, `${what}: reason counts`);
}

t.test('random set/delete sequences behave like a Map (order, values, counts)', async (t) => {
  for (const [seed, keySpace, big] of [
    [1, 50, false],
    [2, 5000, false],
    [3, 200_000, false],
    [4, 3000, true],
  ] as const) {
    const r = rng(seed);
    const ix = new RemapIndex();
    const model = new Map<number, Row>();
    const key = (): number => {
      const k = Math.floor(r() * keySpace);
      return big ? k * 2 ** 36 + (k % 7) : k; // keys beyond 2^32 (u48 main blocks)
    };
    let mismatches = 0;
    for (let i = 0; i < 60_000; i++) {
      const k = key();
      if (r() < 0.6) {
        const row = { spare: Math.floor(r() * 2 ** 40), reason: 1 + Math.floor(r() * 8), created: Math.floor(r() * 2 ** 48) };
        const old = model.get(k);
        if (ix.set(k, row.spare, row.reason, row.created) !== (old ? old.spare : -1)) mismatches++;
        model.set(k, row);
      } else {
        const old = model.get(k);
        if (ix.delete(k) !== (old ? old.spare : -1)) mismatches++;
        model.delete(k);
      }
      const q = key();
      if (ix.spareOf(q) !== (model.get(q)?.spare ?? -1) || ix.has(q) !== model.has(q)) mismatches++;
    }
    t.equal(mismatches, 0, `seed ${seed}: return values and lookups agree with the model`);
    sameAsModel(t, ix, model, `seed ${seed}`);
    const c = ix.clone();
    ix.set(keySpace + 1, 1, 1, 1);
    ix.delete([...model.keys()][0]);
    sameAsModel(t, c, model, `seed ${seed} clone is independent`);
    for (const k of [...model.keys()]) {
      ix.delete(k);
      model.delete(k);
    }
    ix.delete(keySpace + 1);
    sameAsModel(t, ix, model, `seed ${seed} emptied`);
    t.equal(ix.spareOf(0), -1);
  }
});

t.test('entries and lookups from a presized index; replace keeps position, re-add goes last', async (t) => {
  const ix = new RemapIndex(4);
  for (let m = 0; m < 100; m++) ix.set(m, 1000 + m, 1, m);
  t.equal(ix.set(5, 7, 3, 9), 1005, 'replace returns the old spare block');
  t.same(ix.get(5), { mainBlock: 5, spareBlock: 7, reason: 'manual', createdAt: 9 });
  t.equal(ix.delete(6), 1006);
  t.equal(ix.delete(6), -1);
  ix.set(6, 1, 2, 3);
  const order = [...ix.entries()].map((e) => e.mainBlock);
  t.equal(order[5], 5, 'replaced entry kept its position');
  t.equal(order[order.length - 1], 6, 're-added entry is last');
  t.same(ix.reasonCounts(), { 'write-error': 98, manual: 1, 'read-error': 1 });
});

t.test('the in-memory table changes only when a commit resolves, also when the round is a checkpoint', async (t) => {
  const file = path.join(tmpDir(t, 'ix'), 'spare.img');
  const spare = await TestFileBackend.open(file, { size: 64 << 20 });
  const s = await MetadataStore.create(spare, MAIN, { blockSize: 4096, journalBytes: 64 << 10 });
  await addRemaps(s, [1, 2, 3]);
  const old2 = s.spareBlockOf(mainBlock(2));
  let checkpointRounds = 0;
  for (let i = 0; i < 300; i++) {
    const cps = s.checkpoints;
    const nb = s.allocateSpareBlock()!;
    const p = s.commit({
      add: [{ mainBlock: mainBlock(1000 + i), spareBlock: nb, reason: 'scan-slow', createdAt: i }],
      remove: i === 150 ? [mainBlock(2)] : [],
    });
    // Let the round run up to its I/O; memory must not show the change yet.
    await new Promise((r) => setImmediate(r));
    if (s.spareBlockOf(mainBlock(1000 + i)) !== -1) t.fail(`remap ${1000 + i} visible before its commit resolved`);
    if (i === 150 && s.spareBlockOf(mainBlock(2)) !== old2) t.fail('removal visible before its commit resolved');
    await p;
    if (s.checkpoints > cps) checkpointRounds++;
    if (s.spareBlockOf(mainBlock(1000 + i)) !== nb) t.fail(`remap ${1000 + i} missing after its commit resolved`);
  }
  t.ok(checkpointRounds > 0, `${checkpointRounds} commits were written by a journal-full checkpoint`);
  t.equal(s.spareBlockOf(mainBlock(2)), -1);
  t.equal(s.reasonOf(mainBlock(1000)), 'scan-slow');
  t.same(s.reasonCounts(), { 'write-error': 2, 'scan-slow': 300 });
  await s.close();
  const s2 = await MetadataStore.open(spare, MAIN);
  t.same([...s2.entries()], [...s.entries()], 'same table and order after reopen');
  await s2.close();
  await spare.close();
});
