/** Refusals: wrong main device, newer format, no valid copy, non-empty spare; sector sizes. */
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { MetadataStore } from '../../metadata/store';
import { crc32 } from '../../metadata/crc';
import { MAIN, TestFileBackend, addRemaps, sha, tmpDir } from '../helpers/metadata-util';
import { mainBlock } from '../../units';

async function setup(dir: string, name = 'spare.img'): Promise<string> {
  const file = path.join(dir, name);
  const spare = await TestFileBackend.open(file, { size: 32 << 20 });
  const s = await MetadataStore.create(spare, MAIN, { blockSize: 4096 });
  await addRemaps(s, [1, 2, 3]);
  await s.close();
  await spare.close();
  return file;
}

async function refused(t: tap.Test, file: string, code: string, main?: typeof MAIN): Promise<void> {
  const before = sha(file);
  const spare = await TestFileBackend.open(file);
  await t.rejects(MetadataStore.open(spare, main), { code }, `refused with ${code}`);
  await spare.close();
  t.equal(sha(file), before, 'spare bytes unchanged');
}

t.test('fingerprint mismatch is refused and the spare is untouched', async (t) => {
  const dir = tmpDir(t, 'refuse');
  const file = await setup(dir);
  // Damage copy 3 so that an accepted open would have to repair (write).
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.from([0xff]), 0, 1, 24 << 20);
  fs.closeSync(fd);
  await refused(t, file, 'FINGERPRINT_MISMATCH', { ...MAIN, size: MAIN.size + 4096 });
  await refused(t, file, 'FINGERPRINT_MISMATCH', { ...MAIN, logicalBlockSize: 4096 });
  await refused(t, file, 'FINGERPRINT_MISMATCH', { ...MAIN, serial: 'OTHER' });
  await refused(t, file, 'FINGERPRINT_MISMATCH', { ...MAIN, wwn: undefined as unknown as string });
  const ok = await MetadataStore.open(await TestFileBackend.open(file), MAIN);
  t.equal(ok.remapCount, 3, 'the right main opens');
  await ok.close();
});

t.test('newer format version is refused', async (t) => {
  const dir = tmpDir(t, 'newer');
  const file = await setup(dir);
  const fd = fs.openSync(file, 'r+');
  const h = Buffer.alloc(512);
  fs.readSync(fd, h, 0, 512, 0);
  h.writeUInt16LE(2, 8);
  h.writeUInt32LE(crc32(h.subarray(0, 508)), 508);
  fs.writeSync(fd, h, 0, 512, 0);
  fs.closeSync(fd);
  await refused(t, file, 'NEWER_VERSION', MAIN);
  const r = await MetadataStore.inspect(await TestFileBackend.open(file, { readOnly: true }));
  t.equal(r.chosen, null, 'check does not choose a copy it cannot understand');
});

t.test('unknown incompatible feature is refused', async (t) => {
  const dir = tmpDir(t, 'feat');
  const file = await setup(dir);
  const fd = fs.openSync(file, 'r+');
  const h = Buffer.alloc(512);
  fs.readSync(fd, h, 0, 512, 0);
  h.writeUInt32LE(1, 12);
  h.writeUInt32LE(crc32(h.subarray(0, 508)), 508);
  fs.writeSync(fd, h, 0, 512, 0);
  fs.closeSync(fd);
  await refused(t, file, 'UNSUPPORTED_FEATURES', MAIN);
});

t.test('no valid copy is refused', async (t) => {
  const dir = tmpDir(t, 'novalid');
  const file = await setup(dir);
  const spare = await TestFileBackend.open(file);
  const s = await MetadataStore.open(spare);
  const offs = s.layout.headerOffsets;
  await s.close();
  await spare.close();
  const fd = fs.openSync(file, 'r+');
  for (const o of offs) fs.writeSync(fd, Buffer.from([0x55]), 0, 1, o + 100); // header CRC fails everywhere
  fs.closeSync(fd);
  await refused(t, file, 'NO_VALID_COPY', MAIN);
  const r = await MetadataStore.inspect(await TestFileBackend.open(file, { readOnly: true }));
  t.equal(r.chosen, null);
  t.ok(r.copies.every((c) => !c.valid && c.failedCheck === 'header-crc'));
  const empty = path.join(dir, 'empty.img');
  await TestFileBackend.open(empty, { size: 32 << 20 }).then((b) => b.close());
  await refused(t, empty, 'NO_VALID_COPY', MAIN);
});

t.test('create refuses a spare in use unless forced', async (t) => {
  const dir = tmpDir(t, 'create');
  const file = await setup(dir);
  const before = sha(file);
  const spare = await TestFileBackend.open(file);
  await t.rejects(MetadataStore.create(spare, MAIN, { blockSize: 4096 }), { code: 'NOT_EMPTY' });
  t.equal(sha(file), before, 'unchanged');
  // Forced with another block size: old headers at other offsets must not survive.
  const s = await MetadataStore.create(spare, { size: 1 << 20, logicalBlockSize: 512 }, { blockSize: 65536, force: true });
  await s.close();
  const s2 = await MetadataStore.open(spare, { size: 1 << 20, logicalBlockSize: 512 });
  t.equal(s2.blockSize, 65536);
  t.equal(s2.remapCount, 0, 'fresh table');
  await s2.close();
  await spare.close();

  const dirty = path.join(dir, 'dirty.img');
  const d = await TestFileBackend.open(dirty, { size: 32 << 20 });
  await d.write(8 << 20, Buffer.from('filesystem data'));
  await t.rejects(MetadataStore.create(d, MAIN, {}), { code: 'NOT_EMPTY' }, 'non-zero data in a metadata region');
  await d.write(8 << 20, Buffer.alloc(16));
  await d.write(10 << 20, Buffer.from('data outside regions is fine'));
  const ok = await MetadataStore.create(d, MAIN, {});
  await ok.close();
  await d.close();
});

t.test('512-byte and 4Kn devices', async (t) => {
  const dir = tmpDir(t, '4kn');
  const f = path.join(dir, 'a.img');
  const spare4k = await TestFileBackend.open(f, { size: 32 << 20, logicalBlockSize: 4096 });
  await t.rejects(MetadataStore.create(spare4k, MAIN, { blockSize: 2048 }), { code: 'LAYOUT' }, 'block smaller than spare sector');
  await t.rejects(
    MetadataStore.create(spare4k, { ...MAIN, logicalBlockSize: 8192 }, { blockSize: 4096 }),
    { code: 'LAYOUT' },
    'block smaller than main sector',
  );
  const s = await MetadataStore.create(spare4k, { ...MAIN, logicalBlockSize: 4096 }, { blockSize: 4096 });
  t.equal(s.layout.frameAlign, 4096, 'journal frames padded to 4 KiB on 4Kn');
  await addRemaps(s, [9]);
  await s.commit({ pendingAdd: [mainBlock(10)] });
  await s.close();
  const s2 = await MetadataStore.open(spare4k, { ...MAIN, logicalBlockSize: 4096 });
  t.ok(s2.lookup(mainBlock(9)));
  t.same([...s2.pending()], [10]);
  await s2.close();
  await spare4k.close();
  const g = path.join(dir, 'b.img');
  const spare512 = await TestFileBackend.open(g, { size: 128 << 20 });
  const s3 = await MetadataStore.create(spare512, MAIN, { blockSize: 512 });
  t.equal(s3.layout.frameAlign, 512);
  await addRemaps(s3, [1, 2]);
  await s3.close();
  const s4 = await MetadataStore.open(spare512, MAIN);
  t.equal(s4.remapCount, 2);
  t.equal(s4.blockSize, 512);
  await s4.close();
  await spare512.close();
});
