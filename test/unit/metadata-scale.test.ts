/** 1,000,000 remaps committed in batches, then open timed (printed; the < 1 s target belongs to bench/metadata.ts). */
import t from 'tap';
import * as path from 'path';
import { MetadataStore } from '../../metadata/store';
import { TestFileBackend, tmpDir } from '../helpers/metadata-util';
import { mainBlock } from '../../units';

t.test('1,000,000 remaps load back', { timeout: 600_000 }, async (t) => {
  const file = path.join(tmpDir(t, 'scale'), 'spare.img');
  const main = { size: 2 ** 40, logicalBlockSize: 512 };
  const spare = await TestFileBackend.open(file, { size: 5 * 2 ** 30 });
  const s = await MetadataStore.create(spare, main, { blockSize: 4096 });
  const N = 1_000_000;
  for (let i = 0; i < N; i += 20_000) {
    const add = [];
    for (let j = i; j < i + 20_000; j++)
      add.push({
        mainBlock: mainBlock(j * 2),
        spareBlock: s.allocateSpareBlock()!,
        reason: 'write-error' as const,
        createdAt: 1_700_000_000_000 + j,
      });
    await s.commit({ add });
  }
  await s.commit({ remove: [mainBlock(0)], pendingAdd: [mainBlock(1)] }); // leave a journal frame to replay
  await s.close();
  const t0 = process.hrtime.bigint();
  const s2 = await MetadataStore.open(spare, main);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  t.comment(`open of ${s2.remapCount} remaps took ${ms.toFixed(0)} ms`);
  t.equal(s2.remapCount, N - 1);
  t.equal(s2.lookup(mainBlock(2 * 777_777))?.createdAt, 1_700_000_000_000 + 777_777);
  t.notOk(s2.lookup(mainBlock(0)));
  t.same([...s2.pending()], [1]);
  t.equal(new Set([...s2.entries()].map((e) => e.spareBlock)).size, N - 1, 'distinct spare blocks');
  await s2.close();
  await spare.close();
});
