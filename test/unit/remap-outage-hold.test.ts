/**
 * The outage ride-through (remap/main-state.ts hold(), --outage-hold): while main is failed, requests that
 * need it wait and run again when it answers; a request held for the hold, and any request once the outage
 * is older than the hold, fails with EIO; close() releases held requests; remapped blocks are served
 * throughout; nothing is blamed, pending or remapped. (The real-device version: test/e2e/outage-hold.test.ts.)
 */
import t from 'tap';
import { blockOf, byteOffset } from '../../units';
import { remapRig, failing, devRead, devWrite } from '../helpers/remap-rig';

const B = 4096;
const MiB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, limitMs = 20_000): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

for (const code of ['ENXIO', 'EIO'] as const) {
  t.test(`main failing everywhere with ${code}: requests are held and run when it answers`, async (t) => {
    const r = await remapRig(t, { outageHoldMs: 30_000 });
    r.main.hook = failing(['read', 'write', 'sync'], [{ offset: 0, length: r.device.size }], code);
    const data = Buffer.alloc(64 * 1024, 0x5c);
    const read = devRead(r.device, 1 * MiB, 64 * 1024);
    const write = devWrite(r.device, 3 * MiB, data);
    t.ok(await until(() => r.device.status().main.held === 2), 'both held', { main: r.device.status().main });
    t.equal(r.device.status().main.state, 'failed', 'main failed');
    r.main.hook = undefined; // main answers: the probe (every 250 ms while requests wait) notices
    const got = await read;
    t.ok(Buffer.isBuffer(got) && got.equals(r.original.subarray(1 * MiB, 1 * MiB + 64 * 1024)), 'the read returns the data');
    t.equal(await write, undefined, 'the write succeeds');
    const back = await devRead(r.device, 3 * MiB, 64 * 1024);
    t.ok(Buffer.isBuffer(back) && back.equals(data), 'and reads back');
    const st = r.device.status();
    t.equal(st.main.state, 'ok', 'main ok again');
    t.match(st.main, { held: 0, heldTotal: 2, heldExpired: 0, holdSeconds: 30 }, 'status counts them');
    t.equal(st.pending.count, 0, 'nothing pending');
    t.equal(st.remaps.total, 0, 'nothing remapped');
  });
}

t.test('hold over: EIO after the hold, later requests not held, the spare still served', async (t) => {
  const r = await remapRig(t, { outageHoldMs: 300 });
  const at = 5 * MiB;
  t.equal(await r.device.moveToSpare(blockOf(byteOffset(at), B), 'manual'), 'migrated', 'a block moved to the spare');
  r.main.hook = failing(['read', 'write'], [{ offset: 0, length: r.device.size }], 'ENXIO');
  const first = await devRead(r.device, 1 * MiB, B);
  t.equal((first as { errno?: string }).errno, 'EIO', 'a held read fails with EIO after the hold');
  let st = r.device.status().main;
  t.match(st, { state: 'failed', heldTotal: 1, heldExpired: 1, held: 0 }, 'it waited the whole hold');
  await sleep(350); // the outage is now older than the hold
  const w = await devWrite(r.device, 2 * MiB, Buffer.alloc(B, 1));
  t.equal(w?.errno, 'EIO', 'a later write fails');
  st = r.device.status().main;
  t.equal(st.heldTotal, 1, 'and was not held (no pile-up)');
  const spare = await devRead(r.device, at, B);
  t.ok(Buffer.isBuffer(spare) && spare.equals(r.original.subarray(at, at + B)), 'the remapped block is served from the spare');
  r.main.hook = undefined;
  t.ok(await until(() => r.device.status().main.state === 'ok'), 'main comes back by itself (the probe)');
  t.equal(r.device.status().pending.count, 0, 'nothing pending');
});

t.test('hold 0 (off): requests that need a failed main fail at once', async (t) => {
  const r = await remapRig(t, { outageHoldMs: 0 });
  r.main.hook = failing(['read', 'write'], [{ offset: 0, length: r.device.size }], 'ENXIO');
  const res = await devRead(r.device, 1 * MiB, B);
  t.equal((res as { errno?: string }).errno, 'EIO', 'EIO');
  t.equal(r.device.status().main.heldTotal, 0, 'nothing held');
});

t.test('close() releases held requests: they fail with EIO, not after the hold', async (t) => {
  const r = await remapRig(t, { outageHoldMs: 60_000 });
  r.main.hook = failing(['read', 'write'], [{ offset: 0, length: r.device.size }], 'ENXIO');
  const read = devRead(r.device, 1 * MiB, B);
  t.ok(await until(() => r.device.status().main.held === 1), 'held');
  r.device.close();
  const res = await Promise.race([read, sleep(30_000).then(() => 'still held')]);
  t.equal((res as { errno?: string }).errno, 'EIO', 'fails with EIO at close');
  t.equal(r.device.status().main.held, 0, 'none held');
});
