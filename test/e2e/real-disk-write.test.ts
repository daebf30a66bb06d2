/**
 * Writes on a real failing block device (loop over the failing FUSE file, no --faults):
 * - a 64 KiB write over a sector that fails to write is remapped before the client's ack: the write and
 *   the following flush succeed, exactly the block holding the bad sector is remapped, the healthy
 *   blocks reached the media, and the data reads back, also after a restart with dropped caches;
 * - a whole-device `nbdcopy --flush` of new data over a disk with unwritable and pending (unreadable until
 *   written) sectors succeeds and reads back byte for byte after a restart with dropped caches.
 * With main written through the page cache, the error only shows at the flush, for the whole file, and
 * nothing is remapped (issue 10): these assertions fail on such an engine.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, randomImage, MiB } from '../helpers';
import { realDiskSetup, remapList, nbdPython, nbdcopy, BLOCK as B } from '../helpers/real-disk-setup';
import { readFileRange } from '../helpers/remap-setup';

t.setTimeout(600_000);

for (const sectorSize of [512, 4096] as const)
  t.test(
    `a 64 KiB write over an unwritable sector is remapped; write and flush succeed; data survives a restart (${sectorSize}-byte sectors)`,
    async (t) => {
      const s = await realDiskSetup(t, { sizeBytes: 16 * MiB, sectorSize });
      const start = 256; // blocks 256..271
      const bad = 260;
      await s.disk.failWrite(bad * B + 1024);
      const data = randomBytes(16 * B);
      const dataFile = join(s.dir, 'data.bin');
      writeFileSync(dataFile, data);
      const w = await nbdPython(
        s,
        `
data = open(sys.argv[2], "rb").read()
out = {}
try:
    h.pwrite(data, ${start * B}); out["write"] = "ok"
except nbd.Error as e:
    out["write"] = e.string
try:
    h.flush(); out["flush"] = "ok"
except nbd.Error as e:
    out["flush"] = e.string
try:
    out["readback"] = h.pread(${16 * B}, ${start * B}) == data
except nbd.Error as e:
    out["readback"] = e.string
print(json.dumps(out))
`,
        [dataFile],
      );
      t.equal(w.out.write, 'ok', `the client's 64 KiB write succeeds\n${describe(w.r)}`);
      t.equal(w.out.flush, 'ok', 'the flush after it succeeds');
      t.equal(w.out.readback, true, 'the data reads back');

      const l = await remapList(s);
      t.same(
        l.remaps.map((r) => r.mainBlock),
        [bad],
        'exactly the block with the unwritable sector is remapped',
      );
      t.same(
        l.remaps.map((r) => r.reason),
        ['write-error'],
        'reason write-error',
      );
      const st = await s.disk.stats();
      t.ok(st.write_errors >= 1, `the media refused at least one write (${st.write_errors})`);

      // The healthy blocks of the write are on the media itself (read from the image under the FUSE file).
      for (let b = start; b < start + 16; b++) {
        if (b === bad) continue;
        const onMedia = readFileRange(s.disk.image, b * B, B);
        if (!onMedia.equals(data.subarray((b - start) * B, (b - start + 1) * B))) {
          t.fail(`block ${b} did not reach the media`);
          break;
        }
      }

      await s.restart();
      const r = await nbdPython(
        s,
        `
try:
    print(json.dumps({"same": h.pread(${16 * B}, ${start * B}) == open(sys.argv[2], "rb").read()}))
except nbd.Error as e:
    print(json.dumps({"same": e.string}))
`,
        [dataFile],
      );
      t.equal(r.out.same, true, `after a restart with dropped caches the 64 KiB read back\n${describe(r.r)}`);
      t.same(
        (await remapList(s)).remaps.map((x) => x.mainBlock),
        [bad],
        'the remap survived the restart',
      );
    },
  );

t.test('whole-device nbdcopy --flush over unwritable and pending sectors: no error, byte for byte after a restart', async (t) => {
  const size = 32 * MiB;
  const s = await realDiskSetup(t, { sizeBytes: size });
  const writeBad = [100, 3000, 7000];
  const pending = [1500, 6000];
  for (const b of writeBad) await s.disk.failWrite(b * B + 512);
  for (const b of pending) await s.disk.failPending(b * B);
  const src = randomImage(join(s.dir, 'new.img'), size);
  const copy = await nbdcopy(['--flush', src, s.server.uri]);
  t.equal(copy.code, 0, `nbdcopy --flush onto the export succeeds\n${describe(copy)}`);

  const l = await remapList(s);
  t.same(
    l.remaps.map((r) => r.mainBlock).sort((a, b) => a - b),
    writeBad,
    'exactly the blocks with unwritable sectors are remapped',
  );
  t.same(l.pending.offsets, [], 'nothing pending: the pending sectors were rewritten');

  await s.restart();
  const out = join(s.dir, 'out.img');
  const back = await nbdcopy([s.server.uri, out]);
  t.equal(back.code, 0, `nbdcopy from the export after a restart with dropped caches\n${describe(back)}`);
  const a = readFileSync(src);
  const b = readFileSync(out);
  let firstDiff = -1;
  for (let i = 0; i < a.length && firstDiff < 0; i += B) if (!a.subarray(i, i + B).equals(b.subarray(i, i + B))) firstDiff = i;
  t.equal(firstDiff, -1, firstDiff < 0 ? 'byte for byte identical' : `first differing block at byte ${firstDiff} (block ${firstDiff / B})`);
});
