/**
 * Error classes: only media errors count against a block. Device/config faults (EROFS, ENOSPC, EACCES,
 * EBADF …) fail the request clearly and remap nothing; a device that is gone (ENXIO) or fails everywhere
 * is "main failed": one loud log line, the state in status(), no pending marks, and recovery once
 * main answers again.
 */
import t from 'tap';
import { BackendError } from '../../storage/backend';
import { remapRig, failing, devRead, devWrite, type Hook } from '../helpers/remap-rig';

const B = 4096;
const MiB = 1024 * 1024;

for (const [code, errno] of [
  ['EROFS', 'EPERM'],
  ['ENOSPC', 'ENOSPC'],
  ['EACCES', 'EPERM'],
  ['EBADF', 'EIO'],
] as const) {
  t.test(`write failing with ${code}: the request fails (${errno}), nothing remapped, no spare block used, a log line`, async (t) => {
    const r = await remapRig(t);
    r.main.hook = failing(['write'], [{ offset: 0, length: r.device.size }], code);
    const free = r.device.status().spare.free;
    const err = await devWrite(r.device, 1 * MiB, Buffer.alloc(16 * 1024, 1));
    t.ok(err, 'write fails');
    t.equal(err?.errno, errno, `errno ${errno}`);
    const st = r.device.status();
    t.equal(st.remaps.total, 0, 'nothing remapped');
    t.equal(st.pending.count, 0, 'nothing pending');
    t.equal(st.spare.free, free, 'no spare block used');
    t.equal(st.main.state, 'ok', 'main is not "failed" for a config fault');
    t.equal(st.main.configErrors[code], 1, `status counts the ${code}`);
    t.equal(r.logs.filter((l) => l.code === code && /configuration fault/.test(String(l.msg))).length, 1, 'one log line naming the fault');
    // Reads are unaffected.
    const got = await devRead(r.device, 1 * MiB, B);
    t.ok(Buffer.isBuffer(got), 'reads still work');
  });
}

t.test('read failing with EACCES: the request fails, nothing pending', async (t) => {
  const r = await remapRig(t);
  r.main.hook = failing(['read'], [{ offset: 2 * MiB, length: B }], 'EACCES');
  const res = await devRead(r.device, 2 * MiB - B, 3 * B);
  t.ok(res instanceof Error, 'fails');
  t.equal(r.device.status().pending.count, 0, 'no pending mark');
  t.equal(r.main.count('read'), 1, 'no retries or bisection for a config fault');
});

t.test('ENXIO: main failed at once, one loud line, no marks; recovers when main answers', async (t) => {
  const r = await remapRig(t);
  const events: string[] = [];
  r.device.on('main-failed', () => events.push('failed'));
  r.device.on('device-failed', () => events.push('alert'));
  r.device.on('main-recovered', () => events.push('recovered'));
  r.main.hook = failing(['read', 'write'], [{ offset: 0, length: r.device.size }], 'ENXIO');
  for (let i = 0; i < 20; i++) {
    const res = await devRead(r.device, i * 300 * 1024, 64 * 1024);
    t.equal((res as { errno?: string }).errno, 'EIO', `read ${i} fails with EIO`);
  }
  const w = await devWrite(r.device, 5 * MiB, Buffer.alloc(B, 9));
  t.equal(w?.errno, 'EIO', 'a write fails with EIO');
  let st = r.device.status();
  t.equal(st.main.state, 'failed', 'status: main failed');
  t.match(st.main.reason, /ENXIO/, 'with the reason');
  t.equal(st.pending.count, 0, 'no pending marks');
  t.equal(st.remaps.total, 0, 'no remaps');
  t.equal(r.logs.filter((l) => /MAIN DEVICE FAILED/.test(String(l.msg))).length, 1, 'exactly one loud log line');
  r.main.hook = undefined;
  const ok = await devRead(r.device, 1 * MiB, B);
  t.ok(Buffer.isBuffer(ok), 'main answers again: the read succeeds');
  st = r.device.status();
  t.equal(st.main.state, 'ok', 'status: main ok again');
  t.equal(st.main.failures, 1, 'status: failed once since start');
  t.match(st.main.lastFailure, { reason: /ENXIO/, since: Number }, 'status: the last failure, with its reason');
  t.ok(
    st.main.lastFailure && st.main.lastFailure.endedAt !== null && st.main.lastFailure.endedAt >= st.main.lastFailure.since,
    'and its end',
  );
  t.same(events, ['failed', 'alert', 'recovered'], 'events: main-failed, device-failed (the alert hook), main-recovered');
  t.ok(
    r.logs.some((l) => /main device answers again/.test(String(l.msg))),
    'recovery logged',
  );
});

t.test('EIO everywhere (a dead disk): main failed after the spread probe, no pending marks', async (t) => {
  const r = await remapRig(t);
  r.main.hook = failing(['read', 'write'], [{ offset: 0, length: r.device.size }], 'EIO');
  const res = await devRead(r.device, 3 * MiB, 256 * 1024);
  t.equal((res as { errno?: string }).errno, 'EIO', 'the read fails with EIO');
  let st = r.device.status();
  t.equal(st.main.state, 'failed', 'main failed after one request (nothing readable, nor anywhere else)');
  t.equal(st.pending.count, 0, 'not one block marked pending');
  for (let i = 0; i < 10; i++) await devRead(r.device, i * 700 * 1024, 8192);
  const w = await devWrite(r.device, 6 * MiB, Buffer.alloc(64 * 1024, 1));
  t.equal(w?.errno, 'EIO', 'writes fail with EIO');
  st = r.device.status();
  t.equal(st.pending.count, 0, 'still no pending marks');
  t.equal(st.remaps.total, 0, 'no remaps: the spare is not filled with a dead disk');
  t.ok(r.main.count('read') < 120, `I/Os bounded (${r.main.count('read')} reads in all)`);
  t.equal(r.logs.filter((l) => /MAIN DEVICE FAILED/.test(String(l.msg))).length, 1, 'one loud log line, not one per block');
});

t.test('dead writes in four far-apart regions while reads work: not failed, every write remapped, one loud line', async (t) => {
  const r = await remapRig(t);
  // Writes fail everywhere (an SSD gone read-only); reads work.
  r.main.hook = failing(['write'], [{ offset: 0, length: r.device.size }], 'EIO');
  for (let i = 0; i < 8; i++) {
    const err = await devWrite(r.device, Math.floor((i * r.device.size) / 8 / B) * B, Buffer.alloc(B, i + 1));
    t.equal(err, undefined, `write ${i} (region ${i * 2} of 16) succeeds on the spare`);
  }
  const st = r.device.status();
  t.equal(st.main.state, 'ok', 'main not failed: it reads');
  t.equal(st.remaps.total, 8, 'every failed write remapped');
  for (let i = 0; i < 8; i++) {
    const got = await devRead(r.device, Math.floor((i * r.device.size) / 8 / B) * B, B);
    t.same(got, Buffer.alloc(B, i + 1), `write ${i} reads back`);
  }
  t.equal(r.logs.filter((l) => /main refuses writes across the device but reads/.test(String(l.msg))).length, 1, 'one loud line');
});

t.test('dead writes in four far-apart regions, reads failing too: main failed', async (t) => {
  const r = await remapRig(t);
  r.main.hook = failing(['write'], [{ offset: 0, length: r.device.size }], 'EIO');
  const at = (i: number): number => Math.floor((i * r.device.size) / 6 / B) * B;
  for (let i = 0; i < 3; i++) t.equal(await devWrite(r.device, at(i), Buffer.alloc(B, 1)), undefined, `write ${i} remapped`);
  // Now reads fail too: the fourth dead region and the spread probe reads agree.
  r.main.hook = failing(['read', 'write'], [{ offset: 0, length: r.device.size }], 'EIO');
  await devWrite(r.device, at(4), Buffer.alloc(B, 1));
  t.equal(r.device.status().main.state, 'failed', 'failed');
  t.ok(r.device.status().remaps.total <= 3, `at most the first three writes remapped (${r.device.status().remaps.total})`);
});

t.test('a bad patch is not a dead device: healthy reads elsewhere keep main ok', async (t) => {
  const r = await remapRig(t);
  const hook: Hook = failing(['read'], [{ offset: 1 * MiB, length: 256 * 1024 }], 'EIO');
  r.main.hook = hook;
  await devRead(r.device, 1 * MiB, 256 * 1024);
  const st = r.device.status();
  t.equal(st.main.state, 'ok', 'main ok (the probe read elsewhere)');
  t.equal(st.pending.count, 64, 'the 64 unreadable blocks are pending');
  t.ok(new BackendError('EIO', 'x', 0), 'sanity');
});

t.test('isolated bad blocks in many regions, with healthy writes between: not a dead device', async (t) => {
  const r = await remapRig(t);
  const bad = [0, 1, 2, 3, 4, 5].map((i) => Math.floor((i * r.device.size) / 6 / B) * B + B);
  r.main.hook = failing(
    ['write'],
    bad.map((offset) => ({ offset, length: B })),
  );
  for (const off of bad) {
    t.equal(await devWrite(r.device, off, Buffer.alloc(B, 2)), undefined, `write to the bad block at ${off} remapped`);
    t.equal(await devWrite(r.device, off + 8 * B, Buffer.alloc(B, 3)), undefined, 'a healthy write nearby');
  }
  t.equal(r.device.status().main.state, 'ok', 'main ok');
  t.equal(r.device.status().remaps.total, 6, 'six remaps');
});

t.test('a hung device (every I/O misses its deadline): failed after two misses and the probe', async (t) => {
  const r = await remapRig(t);
  r.main.hook = failing(['read', 'write'], [{ offset: 0, length: r.device.size }], 'ETIMEDOUT');
  const res = await devRead(r.device, 2 * MiB, 64 * 1024);
  t.equal((res as { errno?: string }).errno, 'EIO', 'the read fails with EIO');
  t.equal(r.device.status().main.state, 'failed', 'main failed');
  t.ok(r.main.count('read') <= 16, `few deadline-long attempts before that (${r.main.count('read')} reads, 8 of them the probe)`);
  t.equal(r.device.status().pending.count, 0, 'no pending marks');
});
