/**
 * Races a review found, each forced deterministically with hooked backends (test/helpers/remap-rig.ts):
 * - moveToSpare must not fall back to data read before a write that was acknowledged since;
 * - TRIM and WRITE_ZEROES on a remapped block must be drained by a move of that block (unremap);
 * - a partial write into a block whose other sectors cannot be read invents no bytes.
 * Each of these tests fails on the code before the fix.
 */
import t from 'tap';
import { BackendError } from '../../storage/backend';
import { remapRig, failing, deferred, devRead, devWrite } from '../helpers/remap-rig';
import { byteOffset, mainBlock } from '../../units';

const B = 4096;
const S = 512;
const MiB = 1024 * 1024;
const overlaps = (o: number, l: number, at: number, len: number): boolean => o < at + len && at < o + l;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('a write acknowledged between a rescue read and the move is not undone', async (t) => {
  const r = await remapRig(t);
  const X = 1 * MiB;
  const W = Buffer.alloc(B, 0xee);
  let readsOfX = 0;
  let written = false;
  // Reads of X: the first fails (a flaky block), the second (the retry) reads the old data, all later
  // ones fail (the block turns unreadable while the mover holds its lock).
  r.main.hook = (op, o, l) => {
    if (op !== 'read' || !overlaps(o, l, X, B)) return;
    readsOfX++;
    if (readsOfX !== 2) throw new BackendError('EIO', 'flaky', o);
  };
  // Right after the retry read the old data, a client write to X is acknowledged.
  r.main.after = async (op, o, l) => {
    if (op === 'read' && overlaps(o, l, X, B) && readsOfX === 2 && !written) {
      written = true;
      t.equal(await devWrite(r.device, X, W), undefined, 'the client write is acknowledged');
    }
  };
  const res = await devRead(r.device, X, B);
  t.ok(Buffer.isBuffer(res), 'the client read succeeds (it read on retry)');
  t.ok(written, 'the write happened in between');
  r.main.hook = r.main.after = undefined;
  const now = await devRead(r.device, X, B);
  t.ok(Buffer.isBuffer(now) && now.equals(W), 'X holds the acknowledged write, not the data read before it');
});

for (const op of ['zero', 'trim'] as const) {
  t.test(`${op === 'zero' ? 'WRITE_ZEROES' : 'TRIM'} on a remapped block is drained by its unremap`, async (t) => {
    const r = await remapRig(t);
    const Y = 2 * MiB;
    r.main.hook = failing(['write'], [{ offset: Y, length: B }]);
    t.equal(await devWrite(r.device, Y, Buffer.alloc(B, 0x11)), undefined, 'Y remapped by a failing write');
    r.main.hook = undefined;
    t.equal(r.device.status().remaps.total, 1);
    const gate = deferred();
    let spareReadDuringPause = false;
    let paused = false;
    r.spare.hook = async (o) => {
      if (o === op) {
        paused = true;
        await gate.promise;
        paused = false;
      } else if (o === 'read' && paused) spareReadDuringPause = true;
    };
    const cleared =
      op === 'zero'
        ? r.device.zero(byteOffset(Y), B, { noHole: false, fastZero: false, fua: false })
        : r.device.trim(byteOffset(Y), B, false);
    await sleep(10);
    t.ok(paused, `the ${op} reached the spare and waits there`);
    const moved = r.device.moveToMain(mainBlock(Y / B));
    await Promise.race([moved, sleep(300)]);
    t.notOk(spareReadDuringPause, `the unremap did not copy the block while the ${op} was in flight`);
    gate.resolve();
    await cleared;
    t.equal(await moved, 'unremapped');
    const got = await devRead(r.device, Y, B);
    t.ok(Buffer.isBuffer(got) && got.equals(Buffer.alloc(B)), `Y reads as zeroes after the acknowledged ${op}`);
  });
}

t.test('partial write into a pending block with an unreadable sector: written on main, nothing invented', async (t) => {
  const r = await remapRig(t);
  const Z = 3 * MiB;
  r.main.hook = failing(['read'], [{ offset: Z + S, length: S }]);
  const first = await devRead(r.device, Z, B);
  t.equal((first as { offset?: number }).offset, Z + S, 'the read fails at the bad sector');
  t.same(r.device.status().pending.offsets, [Z], 'Z pending');
  const data = Buffer.alloc(S, 0x42);
  t.equal(await devWrite(r.device, Z + 5 * S, data), undefined, 'a 512-byte write into Z succeeds (main takes it)');
  t.equal(r.device.status().remaps.total, 0, 'not remapped: its other sectors have no known contents');
  t.same(r.device.status().pending.offsets, [Z], 'Z stays pending');
  const w = await devRead(r.device, Z + 5 * S, S);
  t.ok(Buffer.isBuffer(w) && w.equals(data), 'the written sector reads the new data');
  const old = await devRead(r.device, Z + 3 * S, S);
  t.ok(
    Buffer.isBuffer(old) && old.equals(r.original.subarray(Z + 3 * S, Z + 4 * S)),
    'an unwritten readable sector keeps its old data (not zeroes)',
  );
  const bad = await devRead(r.device, Z + S, S);
  t.equal((bad as { errno?: string }).errno, 'EIO', 'the unreadable sector still fails with EIO (not zeroes)');
  // A write over the whole block remaps it.
  t.equal(await devWrite(r.device, Z, Buffer.alloc(B, 0x43)), undefined, 'a whole-block write');
  t.equal(r.device.status().remaps.total, 1, 'remaps it');
  const all = await devRead(r.device, Z, B);
  t.ok(Buffer.isBuffer(all) && all.equals(Buffer.alloc(B, 0x43)), 'which reads back');
});

t.test('partial write that main refuses into a block with an unreadable sector: EIO, nothing invented', async (t) => {
  const r = await remapRig(t);
  const Z = 4 * MiB;
  const readFail = failing(['read'], [{ offset: Z + S, length: S }]);
  const writeFail = failing(['write'], [{ offset: Z + 5 * S, length: S }]);
  r.main.hook = async (op, o, l) => {
    await readFail(op, o, l);
    await writeFail(op, o, l);
  };
  const err = await devWrite(r.device, Z + 5 * S, Buffer.alloc(S, 0x55));
  t.equal(err?.errno, 'EIO', 'the write fails with EIO (as a disk whose read-modify-write fails)');
  t.equal(err?.offset, Z + 5 * S, 'at the refused byte');
  t.equal(r.device.status().remaps.total, 0, 'no remap with invented bytes');
  t.same(r.device.status().pending.offsets, [Z], 'the block is pending');
  const old = await devRead(r.device, Z + 3 * S, S);
  t.ok(Buffer.isBuffer(old) && old.equals(r.original.subarray(Z + 3 * S, Z + 4 * S)), 'other sectors keep their data');
  const bad = await devRead(r.device, Z + S, S);
  t.equal((bad as { errno?: string }).errno, 'EIO', 'the unreadable sector still fails');
  r.main.hook = readFail;
  t.equal(await devWrite(r.device, Z, Buffer.alloc(B, 0x56)), undefined, 'a whole-block write still remaps it');
});

t.test('partial write into a write-failing block whose rest reads: read-modify-written to the spare', async (t) => {
  const r = await remapRig(t);
  const Z = 5 * MiB;
  r.main.hook = failing(['write'], [{ offset: Z, length: B }]);
  t.equal(await devWrite(r.device, Z + 2 * S, Buffer.alloc(S, 0x66)), undefined, 'write succeeds');
  const all = await devRead(r.device, Z, B);
  const want = Buffer.from(r.original.subarray(Z, Z + B));
  want.fill(0x66, 2 * S, 3 * S);
  t.ok(Buffer.isBuffer(all) && all.equals(want), 'the block holds the old bytes around the new ones');
  t.equal(r.device.status().remaps.total, 1);
});
