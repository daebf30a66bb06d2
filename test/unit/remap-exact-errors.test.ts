/**
 * Exact errors (bisection): a failed multi-block read or write on main counts only the sectors that
 * really fail. The hooked main fails any request that overlaps a bad sector with EIO at the *request's*
 * start (as O_DIRECT on a real device does), so an exact offset can only come from the bisection.
 */
import t from 'tap';
import { remapRig, failing, devRead, devWrite } from '../helpers/remap-rig';
import { byteOffset } from '../../units';

const B = 4096;
const S = 512;
const KiB = 1024;
const MiB = 1024 * 1024;

t.test('1 MiB read with one bad sector: only its block pending, EIO at the exact sector, neighbours read', async (t) => {
  const r = await remapRig(t);
  const at = 2 * MiB;
  const badSector = at + 100 * B + 3 * S; // sector 3 of block 100 of the request
  r.main.hook = failing(['read'], [{ offset: badSector, length: S }]);
  const before = r.main.count('read');
  const res = await devRead(r.device, at, MiB);
  const reads = r.main.count('read') - before;
  t.ok(res instanceof Error, 'the read fails');
  t.equal((res as { errno?: string }).errno, 'EIO', 'with EIO');
  t.equal((res as { offset?: number }).offset, badSector, 'at the exact first failing byte (the bad sector)');
  const st = r.device.status();
  t.same(st.pending.offsets, [badSector - 3 * S], 'exactly the block holding the bad sector is pending');
  t.equal(st.remaps.total, 0, 'nothing remapped');
  t.ok(reads <= 40, `I/Os bounded by the bisection (${reads} reads for 256 blocks, not one per block)`);
  // Healthy sectors of the bad block, and its neighbours, read fine.
  const blockStart = badSector - 3 * S;
  for (const [off, len, what] of [
    [blockStart - B, B, 'the block before'],
    [blockStart + B, B, 'the block after'],
    [blockStart, 3 * S, 'the sectors of the bad block before the bad one'],
    [badSector + S, B - 4 * S, 'the sectors of the bad block after the bad one'],
  ] as const) {
    const got = await devRead(r.device, off, len);
    t.ok(Buffer.isBuffer(got) && got.equals(r.original.subarray(off, off + len)), `${what} reads its data`);
  }
  t.same(
    r.device.status().pending.offsets,
    [blockStart],
    'still only that block pending (healthy reads of it do not touch the bad sector)',
  );
});

t.test('read over bad sectors in three blocks: three pending, EIO at the first', async (t) => {
  const r = await remapRig(t);
  const at = 1 * MiB;
  const bad = [at + 7 * B + 5 * S, at + 8 * B, at + 200 * B + 7 * S];
  r.main.hook = failing(
    ['read'],
    bad.map((offset) => ({ offset, length: S })),
  );
  const res = await devRead(r.device, at, MiB);
  t.equal((res as { offset?: number }).offset, bad[0], 'EIO offset = the first bad sector');
  t.same(
    r.device.status().pending.offsets,
    bad.map((o) => Math.floor(o / B) * B),
    'exactly the three blocks pending',
  );
});

t.test('unaligned read inside one block: offset clipped to the request', async (t) => {
  const r = await remapRig(t);
  const blockStart = 3 * MiB;
  r.main.hook = failing(['read'], [{ offset: blockStart + 2 * S, length: 2 * S }]);
  const res = await devRead(r.device, blockStart + 2 * S + 100, 1000);
  t.equal((res as { offset?: number }).offset, blockStart + 2 * S + 100, 'first failing byte of the request');
  t.same(r.device.status().pending.offsets, [blockStart]);
});

t.test('64 KiB write over one failing sector: only that block remapped, the rest written to main', async (t) => {
  const r = await remapRig(t);
  const at = 4 * MiB;
  const badSector = at + 9 * B + 2 * S;
  r.main.hook = failing(['write'], [{ offset: badSector, length: S }]);
  const data = Buffer.alloc(64 * KiB, 0x3c);
  const err = await devWrite(r.device, at, data);
  t.equal(err, undefined, 'the write succeeds');
  const st = r.device.status();
  t.equal(st.remaps.total, 1, 'one block remapped');
  t.same(
    r.device.entries().map((e) => e.offset),
    [at + 9 * B],
    'the block with the failing sector',
  );
  t.equal(st.pending.count, 0, 'nothing pending');
  r.main.hook = undefined;
  const back = await devRead(r.device, at, 64 * KiB);
  t.ok(Buffer.isBuffer(back) && back.equals(data), 'the whole write reads back');
  // Main holds the new data everywhere except the remapped block.
  const onMain = Buffer.alloc(64 * KiB);
  await r.main.inner.read(byteOffset(at), onMain.length, onMain, 0);
  t.ok(
    onMain.subarray(0, 9 * B).equals(data.subarray(0, 9 * B)) && onMain.subarray(10 * B).equals(data.subarray(10 * B)),
    'neighbours were written to main',
  );
  t.ok(
    onMain.subarray(9 * B, 10 * B).equals(r.original.subarray(at + 9 * B, at + 10 * B)),
    'main still holds the old data of the remapped block',
  );
});

t.test('a long failing write region: each failing block remapped, none of the healthy ones', async (t) => {
  const r = await remapRig(t);
  const at = 5 * MiB;
  r.main.hook = failing(['write'], [{ offset: at + 64 * KiB, length: 64 * KiB }]);
  const data = Buffer.alloc(256 * KiB, 0x7e);
  t.equal(await devWrite(r.device, at, data), undefined, 'write succeeds');
  const offs = r.device.entries().map((e) => e.offset);
  t.equal(offs.length, 16, '16 blocks remapped');
  t.equal(offs[0], at + 64 * KiB, 'from the first failing block');
  t.equal(offs[15], at + 128 * KiB - B, 'to the last');
  const back = await devRead(r.device, at, data.length);
  t.ok(Buffer.isBuffer(back) && back.equals(data), 'reads back');
});
