/** Round trips, allocation, group commit, sequence seeding, journal-full checkpoints, layout invariants. */
import t from 'tap';
import * as path from 'path';
import { MetadataStore } from '../../metadata/store';
import { computeLayout, isMetadataBlock } from '../../metadata/layout';
import { MAIN, TestFileBackend, addRemaps, snapshot, tmpDir } from '../helpers/metadata-util';
import { byteOffset, mainBlock, spareBlock } from '../../units';

t.test('layout: regions never overlap each other or data blocks', async (t) => {
  for (const [size, bs, j] of [
    [2 << 20, 4096, 65536],
    [64 << 20, 512, undefined],
    [1 << 30, 4096, undefined],
    [5 * 2 ** 40, 4096, undefined],
    [10 * 2 ** 30, 1 << 20, undefined],
  ] as const) {
    const l = computeLayout(size, bs, 512, j);
    for (let k = 0; k < 4; k++)
      t.ok(l.regionOffsets[k] + l.regionBytes <= l.regionOffsets[k + 1], `${size}/${bs}: region ${k} before ${k + 1}`);
    t.ok(l.regionOffsets[4] + l.regionBytes <= size, 'last region inside the spare');
    t.ok(l.tableCapacity >= l.spareDataBlocks, 'table can hold a remap for every data block');
    t.ok(
      l.headerOffsets.every((h, k) => h >= l.regionOffsets[k] && h + 4096 <= l.regionOffsets[k] + l.regionBytes),
      'headers inside regions',
    );
  }
  const l = computeLayout(64 << 20, 4096, 512);
  let data = 0;
  for (let b = 0; b < l.totalBlocks; b++) if (!isMetadataBlock(l, b)) data++;
  t.equal(data, l.spareDataBlocks, 'spareDataBlocks counts exactly the non-metadata blocks');
});

t.test('round trip, allocation across restart, removal, pending, scan state', async (t) => {
  const file = path.join(tmpDir(t, 'rt'), 'spare.img');
  let spare = await TestFileBackend.open(file, { size: 64 << 20 });
  let s = await MetadataStore.create(spare, MAIN, { blockSize: 4096, journalBytes: 64 << 10 });
  const dataBlocks = s.spareDataBlocks;
  await addRemaps(s, [1, 2, 3, 4]);
  const reserved = s.allocateSpareBlock()!; // reserved, never committed
  await s.commit({ remove: [mainBlock(2)], pendingAdd: [mainBlock(77), mainBlock(78), mainBlock(3)] });
  await s.saveScanState({ cursorOffset: byteOffset(1 << 20), passesCompleted: 1, lastFullScanAt: 42 });
  t.same([...s.pending()].sort(), [77, 78], 'pending add of a remapped block is ignored');
  const snap = snapshot(s);
  const seq = s.sequence;
  await s.close();
  await spare.close();
  spare = await TestFileBackend.open(file);
  s = await MetadataStore.open(spare, MAIN);
  t.same(snapshot(s), snap, 'same table after restart');
  t.same(s.scanState(), { cursorOffset: 1 << 20, passesCompleted: 1, lastFullScanAt: 42 });
  t.equal(s.freeSpareBlocks, dataBlocks - 3, 'free count derived from the table');
  const used = new Set([...s.entries()].map((e) => e.spareBlock));
  const handed = new Set<number>();
  let bad = 0;
  for (let b = s.allocateSpareBlock(); b !== undefined; b = s.allocateSpareBlock()) {
    if (used.has(b) || handed.has(b) || isMetadataBlock(s.layout, b)) bad++;
    handed.add(b);
  }
  t.equal(bad, 0, 'no block handed out twice, in use, or in a metadata region');
  t.equal(handed.size, dataBlocks - 3, 'every free block exactly once (the uncommitted reservation came back)');
  t.ok(handed.has(reserved), 'reservation not committed before restart is free again');
  await addRemaps(s, [5]).then(
    () => t.fail('no block'),
    () => t.pass('exhausted spare rejects'),
  );
  for (const b of handed) s.releaseSpareBlock(spareBlock(b));
  await addRemaps(s, [6]);
  t.ok(s.sequence > seq, 'sequence keeps increasing across restarts');
  // Replacing and removing: blocks are freed only once durable.
  const old = s.lookup(mainBlock(1))!.spareBlock;
  const nb = s.allocateSpareBlock()!;
  const p = s.commit({ add: [{ mainBlock: mainBlock(1), spareBlock: nb, reason: 'spare-error', createdAt: 1 }] });
  t.ok(s.lookup(mainBlock(1))!.spareBlock === old, 'old mapping visible until durable');
  await p;
  t.equal(s.lookup(mainBlock(1))!.spareBlock, nb);
  await t.rejects(
    s.commit({ add: [{ mainBlock: mainBlock(9), spareBlock: nb, reason: 'manual', createdAt: 1 }] }),
    { code: 'INVALID_CHANGE' },
    'spare block of another remap refused',
  );
  await t.rejects(
    s.commit({ add: [{ mainBlock: mainBlock(s.mainBlocks), spareBlock: s.allocateSpareBlock()!, reason: 'manual', createdAt: 1 }] }),
    { code: 'INVALID_CHANGE' },
    'main block beyond the device refused',
  );
  await t.rejects(
    s.commit({ add: [{ mainBlock: mainBlock(9), spareBlock: spareBlock(0), reason: 'manual', createdAt: 1 }] }),
    { code: 'INVALID_CHANGE' },
    'metadata block refused',
  );
  await s.close();
});

t.test('group commit batches concurrent commits; journal-full checkpoints keep everything', async (t) => {
  const file = path.join(tmpDir(t, 'gc'), 'spare.img');
  const spare = await TestFileBackend.open(file, { size: 64 << 20 });
  const s = await MetadataStore.create(spare, MAIN, { blockSize: 4096, journalBytes: 64 << 10 });
  const r0 = s.rounds;
  const syncs0 = spare.syncs;
  await Promise.all(Array.from({ length: 200 }, (_, i) => addRemaps(s, [1000 + i])));
  t.ok(s.rounds - r0 < 20, `200 concurrent commits took ${s.rounds - r0} write rounds`);
  t.ok(spare.syncs - syncs0 < 40, `and ${spare.syncs - syncs0} syncs`);
  for (let i = 0; i < 400; i++) await addRemaps(s, [5000 + i]); // 400 frames of 512 B > 64 KiB journal
  t.ok(s.checkpoints >= 2, `journal filled and checkpointed ${s.checkpoints} times`);
  const snap = snapshot(s);
  await s.close();
  const s2 = await MetadataStore.open(spare, MAIN);
  t.equal(s2.remapCount, 600);
  t.same(snapshot(s2), snap);
  await s2.close();
  await spare.close();
});
