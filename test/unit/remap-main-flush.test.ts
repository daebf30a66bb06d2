/**
 * remap/main-flush.ts: a flush of main that fails with a media error is tried again when main is
 * O_DIRECT (a later flush covers every completed write), and fails at once when main is buffered (a
 * second fdatasync after a failed writeback can succeed without the data) or the error is not a media
 * error. Through RemapDevice.flush() and FUA writes, as the NBD server calls them.
 * Run: npx tap --disable-coverage --allow-incomplete-coverage dist/test/unit/remap-main-flush.test.js
 */
import t from 'tap';
import { BackendError } from '../../storage/backend';
import { remapRig, type Hook } from '../helpers/remap-rig';
import { byteOffset } from '../../units';

/** A sync hook failing the first `n` syncs with `code`. */
function failingSyncs(n: number, code = 'EIO'): Hook & { syncs: number } {
  const h = Object.assign(
    (op: string): void => {
      if (op !== 'sync') return;
      h.syncs++;
      if (h.syncs <= n) throw new BackendError(code, `sync: ${code} (test hook)`, 0);
    },
    { syncs: 0 },
  );
  return h;
}

t.test('O_DIRECT main: a flush failing twice succeeds on the third attempt; a FUA write too', async (t) => {
  const r = await remapRig(t);
  r.main.directOverride = true;
  let h = failingSyncs(2);
  r.main.hook = h;
  await t.resolves(r.device.flush(), 'flush succeeds');
  t.equal(h.syncs, 3, 'three syncs of main');
  t.equal(r.logs.filter((l) => /flush of the main device failed; trying again/.test(String(l.msg))).length, 2, 'each retry logged');
  h = failingSyncs(1);
  r.main.hook = h;
  await t.resolves(r.device.write(byteOffset(4096), Buffer.alloc(4096, 7), true), 'FUA write succeeds');
  t.equal(h.syncs, 2, 'its flush was tried twice');
  t.equal(r.device.status().remaps.total, 0, 'nothing remapped for a failed flush');
});

t.test('O_DIRECT main: a flush that keeps failing fails after the retries', async (t) => {
  const r = await remapRig(t);
  r.main.directOverride = true;
  const h = failingSyncs(1000);
  r.main.hook = h;
  const err = (await r.device.flush().catch((e: unknown) => e)) as { errno?: string };
  t.equal(err?.errno, 'EIO', 'EIO to the client');
  t.equal(h.syncs, 6, 'the first attempt and 5 retries');
});

t.test('buffered main: the first failure is final', async (t) => {
  const r = await remapRig(t);
  r.main.directOverride = false;
  const h = failingSyncs(1);
  r.main.hook = h;
  const err = (await r.device.flush().catch((e: unknown) => e)) as { errno?: string };
  t.equal(err?.errno, 'EIO', 'EIO at once');
  t.equal(h.syncs, 1, 'not tried again (fsync after a failed writeback proves nothing)');
});

t.test('O_DIRECT main, a device-gone error: not tried again', async (t) => {
  const r = await remapRig(t);
  r.main.directOverride = true;
  const h = failingSyncs(1, 'ENXIO');
  r.main.hook = h;
  t.ok(await r.device.flush().catch((e: unknown) => e), 'fails');
  t.equal(h.syncs, 1, 'one sync');
});
