/**
 * Golden file: a fixed sequence of operations on a 2 MiB spare must produce exactly the bytes of
 * test/fixtures/metadata-v1.img.gz (decompressed); and the fixture must decode to the expected table.
 * Regenerate (only for an intended format change, with a version bump): REMAPD_UPDATE_GOLDEN=1.
 */
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { MetadataStore } from '../../metadata/store';
import { TestFileBackend, tmpDir } from '../helpers/metadata-util';
import { byteOffset, mainBlock } from '../../units';

const FIXTURE = path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'metadata-v1.img.gz');
const UUID = '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9';
const MAIN = { size: 64 << 20, logicalBlockSize: 512, serial: 'GOLDEN-SERIAL', wwn: 'naa.5000000000000001' };

async function build(file: string): Promise<void> {
  let clock = 1_700_000_000_000;
  const now = (): number => (clock += 1000);
  const spare = await TestFileBackend.open(file, { size: 2 << 20 });
  const s = await MetadataStore.create(spare, MAIN, { blockSize: 4096, journalBytes: 65536, setupUuid: UUID, now });
  const a = [10, 20, 30].map((m, i) => ({
    mainBlock: mainBlock(m),
    spareBlock: s.allocateSpareBlock()!,
    reason: 'write-error' as const,
    createdAt: 1_600_000_000_000 + i,
  }));
  await s.commit({ add: a });
  await s.commit({ pendingAdd: [mainBlock(40), mainBlock(41)] });
  await s.saveScanState({ cursorOffset: byteOffset(123 * 4096), passesCompleted: 2, lastFullScanAt: 1_650_000_000_000 });
  await s.checkpoint();
  await s.commit({
    remove: [mainBlock(20)],
    add: [{ mainBlock: mainBlock(50), spareBlock: s.allocateSpareBlock()!, reason: 'scan-slow', createdAt: 1_600_000_000_100 }],
    pendingRemove: [mainBlock(41)],
  });
  await s.close();
  await spare.close();
}

t.test('encoding matches the golden fixture byte for byte', async (t) => {
  const dir = tmpDir(t, 'golden');
  const file = path.join(dir, 'spare.img');
  await build(file);
  const bytes = fs.readFileSync(file);
  if (process.env.REMAPD_UPDATE_GOLDEN === '1') {
    fs.mkdirSync(path.dirname(FIXTURE), { recursive: true });
    fs.writeFileSync(FIXTURE, zlib.gzipSync(bytes, { level: 9 }));
  }
  const golden = zlib.gunzipSync(fs.readFileSync(FIXTURE));
  t.equal(golden.length, bytes.length, 'same size');
  let first = -1;
  for (let i = 0; i < bytes.length; i++)
    if (bytes[i] !== golden[i]) {
      first = i;
      break;
    }
  t.equal(first, -1, 'no differing byte (first difference at the reported offset)');
  // Fixed offsets documented in docs/FORMAT.md.
  t.equal(golden.subarray(0, 8).toString('latin1'), 'RMPDMETA', 'magic at 0');
  t.equal(golden.readUInt16LE(8), 1, 'version 1 at 8');
  t.equal(golden.subarray(512 * 1024, 512 * 1024 + 8).toString('latin1'), 'RMPDMETA', 'copy 1 header at 512 KiB');
  t.equal(golden.subarray((2 << 20) - 4096, (2 << 20) - 4088).toString('latin1'), 'RMPDMETA', 'copy 4 header at end - 4 KiB');
  t.equal(golden.readUInt32LE((2 << 20) - 4096 + 20), 4, 'copy 4 copyIndex');
});

t.test('the golden fixture decodes to the expected table', async (t) => {
  const dir = tmpDir(t, 'golden-dec');
  const file = path.join(dir, 'spare.img');
  fs.writeFileSync(file, zlib.gunzipSync(fs.readFileSync(FIXTURE)));
  const before = fs.readFileSync(file);
  const spare = await TestFileBackend.open(file);
  const s = await MetadataStore.open(spare, MAIN);
  t.equal(s.setupUuid, UUID);
  t.equal(s.blockSize, 4096);
  const e = [...s.entries()].sort((a, b) => a.mainBlock - b.mainBlock);
  t.same(
    e.map((x) => [x.mainBlock, x.reason, x.createdAt]),
    [
      [10, 'write-error', 1_600_000_000_000],
      [30, 'write-error', 1_600_000_000_002],
      [50, 'scan-slow', 1_600_000_000_100],
    ],
  );
  t.equal(new Set(e.map((x) => x.spareBlock)).size, 3, 'distinct spare blocks');
  t.same([...s.pending()], [40]);
  t.same(s.scanState(), { cursorOffset: 123 * 4096, passesCompleted: 2, lastFullScanAt: 1_650_000_000_000 });
  await s.close();
  await spare.close();
  t.ok(fs.readFileSync(file).equals(before), 'opening an intact spare writes nothing');
  const r = await MetadataStore.inspect(await TestFileBackend.open(file, { readOnly: true }));
  t.equal(r.chosen, 0);
  t.ok(
    r.copies.every((c) => c.valid && !c.stale),
    'all 5 copies valid',
  );
  t.same(
    r.copies.map((c) => c.offset),
    [0, 512 << 10, 1 << 20, 1536 << 10, 1792 << 10],
    'documented region offsets',
  );
});
