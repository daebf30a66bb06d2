/**
 * The spare failing: when spare writes or metadata commits fail, status says "failing" with the cause,
 * remaps are refused with a clear error (the write that needed one fails with EIO and a log line naming
 * the cause), everything else keeps being served, a background probe retries with back-off, and remaps
 * resume once the spare answers again.
 */
import t from 'tap';
import { identityFromBackend } from '../../metadata/fingerprint';
import { MetadataStore } from '../../metadata/store';
import { BackendError } from '../../storage/backend';
import { remapRig, failing, devRead, devWrite } from '../helpers/remap-rig';

const B = 4096;
const MiB = 1024 * 1024;

/** The probe's timers are unref'd (the daemon's server keeps it alive): hold the loop open while waiting. */
function once(emitter: NodeJS.EventEmitter, ev: string, timeoutMs = 60_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${ev}' within ${timeoutMs} ms`)), timeoutMs);
    emitter.once(ev, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

t.test('spare data writes fail: remaps refused, the rest served, recovery by the probe', async (t) => {
  const r = await remapRig(t);
  // One block already remapped while the spare was fine.
  r.main.hook = failing(
    ['write'],
    [
      { offset: 1 * MiB, length: B },
      { offset: 2 * MiB, length: B },
      { offset: 3 * MiB, length: B },
    ],
  );
  t.equal(await devWrite(r.device, 1 * MiB, Buffer.alloc(B, 1)), undefined, 'first remap works');
  r.spare.hook = failing(['write'], [{ offset: 0, length: r.spare.size }]);
  const failingEv = once(r.device, 'spare-failing');
  const err = await devWrite(r.device, 2 * MiB, Buffer.alloc(B, 2));
  t.equal(err?.errno, 'EIO', 'the write that needed a remap fails with EIO');
  t.match(err?.message, /spare device failing/, 'and says why');
  await failingEv;
  let st = r.device.status();
  t.equal(st.spare.failing, true, 'status: spare failing');
  t.match(st.spare.cause, /writing spare block/, 'status: the cause');
  t.equal(st.remaps.total, 1, 'no new remap');
  t.equal(r.logs.filter((l) => /SPARE FAILING/.test(String(l.msg))).length, 1, 'one loud log line');
  const err2 = await devWrite(r.device, 3 * MiB, Buffer.alloc(B, 3));
  t.equal(err2?.errno, 'EIO', 'another write needing a remap: refused');
  t.ok(
    r.logs.some((l) => /cannot get one/.test(String(l.msg)) && /writing spare block/.test(String(l.cause))),
    'log line naming the cause',
  );
  // What can be served is served.
  t.equal(await devWrite(r.device, 4 * MiB, Buffer.alloc(B, 4)), undefined, 'writes to healthy main blocks work');
  const m = await devRead(r.device, 4 * MiB, B);
  t.ok(Buffer.isBuffer(m) && m.equals(Buffer.alloc(B, 4)), 'reads of main work');
  const rm = await devRead(r.device, 1 * MiB, B);
  t.ok(Buffer.isBuffer(rm) && rm.equals(Buffer.alloc(B, 1)), 'reads of the remapped block work (spare still reads)');
  // The spare answers again: the probe notices, remaps resume.
  const back = once(r.device, 'spare-recovered');
  r.spare.hook = undefined;
  await back;
  st = r.device.status();
  t.equal(st.spare.failing, false, 'status: spare healthy again');
  t.ok(st.spare.probes >= 1, 'after a probe');
  t.equal(await devWrite(r.device, 2 * MiB, Buffer.alloc(B, 2)), undefined, 'the remap that was refused now works');
  t.equal(r.device.status().remaps.total, 2);
});

t.test('metadata commits fail (spare sync fails): failing, the store reloads on recovery, data survives a reopen', async (t) => {
  const r = await remapRig(t);
  r.main.hook = failing(
    ['write'],
    [
      { offset: 1 * MiB, length: B },
      { offset: 2 * MiB, length: B },
    ],
  );
  r.spare.hook = failing(['sync'], [{ offset: 0, length: 1 }]);
  const err = await devWrite(r.device, 1 * MiB, Buffer.alloc(B, 7));
  t.equal(err?.errno, 'EIO', 'the write needing a remap fails (the remap could not be made durable)');
  let st = r.device.status();
  t.equal(st.spare.failing, true, 'spare failing');
  t.match(st.spare.cause, /syncing the spare|committing/, 'cause names the step');
  t.equal(st.remaps.total, 0, 'no remap in the table');
  t.equal(r.store.hasFailed, false, 'the store itself has not failed (the sync before the commit failed)');
  const back = once(r.device, 'spare-recovered');
  r.spare.hook = undefined;
  await back;
  st = r.device.status();
  t.equal(st.spare.failing, false, 'recovered');
  t.equal(await devWrite(r.device, 1 * MiB, Buffer.alloc(B, 7)), undefined, 'the remap works now');
  t.equal(r.device.status().remaps.total, 1);
  // Durable: a fresh open of the spare sees it.
  const raw = r.spare.inner;
  await r.store.close();
  const again = await MetadataStore.open(raw, identityFromBackend(r.main.inner));
  t.equal(again.remapCount, 1, 'the remap is on disk');
  await again.close();
});

t.test('store FAILED after a journal write failure: reload() brings it back', async (t) => {
  const r = await remapRig(t);
  r.main.hook = failing(
    ['write'],
    [
      { offset: 1 * MiB, length: B },
      { offset: 2 * MiB, length: B },
    ],
  );
  // Fail every spare write except data blocks far from the metadata: the journal round fails on all copies.
  // The data block write and sync pass; every metadata write (journal frames, all copies) fails.
  let failAll = true;
  let dataWritten = false;
  r.spare.hook = (op, offset, length) => {
    if (!failAll || op !== 'write') return;
    if (!dataWritten && length === B) {
      dataWritten = true;
      return;
    }
    throw new BackendError('EIO', `injected at ${offset}`, offset);
  };
  const err = await devWrite(r.device, 1 * MiB, Buffer.alloc(B, 5));
  t.equal(err?.errno, 'EIO', 'fails');
  t.equal(r.device.status().spare.failing, true, 'failing');
  failAll = false;
  t.equal(r.store.hasFailed, true, 'the store refuses commits (FAILED)');
  t.match(r.device.status().spare.cause, /committing the remap/, 'cause: the commit');
  await once(r.device, 'spare-recovered');
  t.equal(r.store.hasFailed, false, 'reloaded: the store accepts commits again');
  t.equal(await devWrite(r.device, 2 * MiB, Buffer.alloc(B, 6)), undefined, 'a remap works');
  const got = await devRead(r.device, 2 * MiB, B);
  t.ok(Buffer.isBuffer(got) && got.equals(Buffer.alloc(B, 6)), 'and reads back');
});
