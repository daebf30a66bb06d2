/**
 * The storage layer on a real kernel block device whose media fails (a loop device over
 * test/tools/failing-fuse.c; no --faults, the errors come from the kernel):
 * - with O_DIRECT a write over an unwritable sector fails *that* request with a media error, at once;
 *   buffered, the same write is acknowledged and the error surfaces only at the next sync (the check
 *   can fail);
 * - with O_DIRECT the 4 KiB block right after an unreadable one reads;
 * - a 512-byte write on a 4096-sector device is a read-modify-write, and an unreadable neighbour sector
 *   in that 4 KiB block fails it with a media error (per-block EIO, as a 4Kn disk does);
 * - the pieces of a split read merged into one vectored read (remapped holes discarded): an unreadable
 *   sector in a hole does not fail the pieces, and one inside a piece fails only that piece, at its offset;
 * - a slow sector past the deadline fails with ETIMEDOUT while another backend's lane keeps working.
 */
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { BackendError } from '../../storage/backend';
import { openFileBackend } from '../../storage/file-backend';
import { classifyCode } from '../../storage/error-class';
import * as native from '../../storage/native';
import { failingDisk } from '../helpers/failing-disk';
import { tempDir } from '../helpers/tmp';
import { byteOffset } from '../../units';

const KiB = 1024;
const MiB = 1024 * 1024;
const skip = native.lanes ? false : `native addon not built (${native.nativeStatus})`;

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return (err as BackendError).code;
  }
}

t.test('direct: an unwritable sector fails the write itself; buffered only at sync', { skip }, async (tt) => {
  const d = await failingDisk(tt, { sizeBytes: 16 * MiB, fill: 'random' });
  const bad = 2 * MiB + 1024;
  await d.failWrite(bad);
  const direct = await openFileBackend(d.device, { direct: true });
  tt.teardown(() => direct.close());
  tt.equal(direct.direct, true, 'O_DIRECT on the loop device');
  const data = Buffer.alloc(64 * KiB, 0x5a);
  const c = await code(direct.write(byteOffset(2 * MiB), data));
  tt.ok(classifyCode(c) === 'media', `the 64 KiB write over the bad sector fails with a media error (${c})`);
  tt.equal(await code(direct.write(byteOffset(3 * MiB), data)), 'ok', 'a write elsewhere succeeds');
  tt.equal(await code(direct.sync()), 'ok', 'and the next sync is clean: the error was reported once, on its request');

  const buffered = await openFileBackend(d.device, {});
  tt.teardown(() => buffered.close());
  tt.equal(buffered.direct, false);
  tt.equal(await code(buffered.write(byteOffset(2 * MiB), data)), 'ok', 'buffered: the same write is acknowledged from the page cache');
  tt.not(await code(buffered.sync()), 'ok', 'buffered: the error surfaces at the next sync, with no offset');
});

t.test('direct: the block after an unreadable one reads', { skip }, async (tt) => {
  const d = await failingDisk(tt, { sizeBytes: 16 * MiB, fill: 'random' });
  const bad = 4 * MiB;
  await d.failRead(bad);
  const b = await openFileBackend(d.device, { direct: true, readOnly: true });
  tt.teardown(() => b.close());
  const buf = Buffer.alloc(4 * KiB);
  tt.equal(classifyCode(await code(b.read(byteOffset(bad), 4 * KiB, buf, 0))), 'media', 'the unreadable block fails');
  tt.equal(await code(b.read(byteOffset(bad + 4 * KiB), 4 * KiB, buf, 0)), 'ok', 'the next 4 KiB block reads');
  tt.equal(await code(b.read(byteOffset(bad - 4 * KiB), 4 * KiB, buf, 0)), 'ok', 'the previous one too');
  const img = Buffer.alloc(4 * KiB);
  const fd = fs.openSync(d.image, 'r');
  fs.readSync(fd, img, 0, 4 * KiB, bad - 4 * KiB);
  fs.closeSync(fd);
  tt.ok(buf.equals(img), 'with the bytes of the image');
});

t.test('4096-byte sectors: a partial-sector write is a read-modify-write of the whole block', { skip }, async (tt) => {
  const d = await failingDisk(tt, { sizeBytes: 16 * MiB, fill: 'random', sectorSize: 4096 });
  const b = await openFileBackend(d.device, { direct: true });
  tt.teardown(() => b.close());
  tt.equal(b.logicalBlockSize, 4096);
  tt.equal(b.directAlign, 4096);
  const piece = Buffer.alloc(512, 0x33);
  tt.equal(await code(b.write(byteOffset(1 * MiB + 1024), piece)), 'ok', '512-byte write into a healthy 4 KiB block');
  const back = Buffer.alloc(4 * KiB);
  await b.read(byteOffset(1 * MiB), 4 * KiB, back, 0);
  const img = Buffer.alloc(4 * KiB);
  const fd = fs.openSync(d.image, 'r');
  fs.readSync(fd, img, 0, 4 * KiB, 1 * MiB);
  fs.closeSync(fd);
  tt.ok(back.equals(img), 'device and image agree');
  tt.ok(back.subarray(1024, 1536).equals(piece), 'the new bytes are there');
  // An unreadable sector elsewhere in the same 4 KiB block: the read half of the RMW fails.
  await d.failRead(2 * MiB + 3072);
  const c = await code(b.write(byteOffset(2 * MiB), piece));
  tt.equal(classifyCode(c), 'media', `a partial write into a block with an unreadable sector fails (${c})`);
});

t.test('a slow sector misses the deadline; another backend is not held up', { skip }, async (tt) => {
  const d = await failingDisk(tt, { sizeBytes: 16 * MiB, fill: 'random' });
  const slow = 5 * MiB;
  await d.delay(4000, slow, 4096);
  const main = await openFileBackend(d.device, { direct: true, readOnly: true, deadlineMs: 500, laneName: 'fd-main' });
  tt.teardown(() => main.close());
  const spareFile = path.join(tempDir(tt, 'remapd-fd-spare-'), 'spare.img');
  fs.writeFileSync(spareFile, Buffer.alloc(1 * MiB));
  const spare = await openFileBackend(spareFile, { laneName: 'fd-spare' });
  tt.teardown(() => spare.close());
  const buf = Buffer.alloc(4 * KiB);
  const slowRead = code(main.read(byteOffset(slow), 4 * KiB, buf, 0));
  // The spare works while main's read hangs in the kernel.
  const data = Buffer.alloc(64 * KiB, 7);
  await spare.write(byteOffset(0), data);
  await spare.sync();
  tt.ok(main.ioStats()!.inFlight + main.ioStats()!.stuck >= 1, 'main is still busy with the slow read');
  const c = await slowRead;
  tt.equal(c, 'ETIMEDOUT', 'the slow read fails with ETIMEDOUT');
  tt.equal(classifyCode(c), 'media');
  tt.equal(main.ioStats()!.timeouts, 1);
  tt.equal(await code(main.read(byteOffset(1 * MiB), 4 * KiB, Buffer.alloc(4 * KiB), 0)), 'ok', 'main serves other blocks meanwhile');
});

t.test('merged split reads: a bad hole costs nothing, a bad piece fails alone at its offset', { skip }, async (tt) => {
  const d = await failingDisk(tt, { sizeBytes: 16 * MiB, fill: 'random' });
  const b = await openFileBackend(d.device, { direct: true, readOnly: true });
  tt.teardown(() => b.close());
  const img = fs.readFileSync(d.image);
  const base = 6 * MiB;
  await d.failRead(base + 20 * 4096 + 512); // inside the hole (block 20)
  await d.failRead(base + 50 * 4096); // inside the second piece
  const buf = native.allocAligned!(256 * KiB);
  const [p1, p2, p3] = await Promise.allSettled([
    b.read(byteOffset(base), 20 * 4096, buf, 0),
    b.read(byteOffset(base + 21 * 4096), 9 * 4096 + 29 * 4096, buf, 21 * 4096),
    b.read(byteOffset(base + 60 * 4096), 4 * 4096, buf, 60 * 4096),
  ]);
  tt.equal(p1.status, 'fulfilled', 'piece before the bad hole reads');
  tt.ok(buf.subarray(0, 20 * 4096).equals(img.subarray(base, base + 20 * 4096)), 'with the right bytes');
  tt.equal(p3.status, 'fulfilled', 'piece after the bad one reads', { reason: String((p3 as PromiseRejectedResult).reason) });
  tt.ok(buf.subarray(60 * 4096, 64 * 4096).equals(img.subarray(base + 60 * 4096, base + 64 * 4096)), 'with the right bytes');
  tt.equal(p2.status, 'rejected', 'the piece holding the bad sector fails');
  const e = (p2 as PromiseRejectedResult).reason as BackendError;
  tt.equal(classifyCode(e.code), 'media');
  tt.equal(e.offset, base + 21 * 4096, 'at its own offset (the start of the failed request)');
});
