/**
 * The systemd watchdog notices a stuck I/O path: a lane without deadline (the spare) with an op in
 * flight past the limit stops the WATCHDOG=1 pings (and says why in STATUS); a main lane with a
 * deadline does not (its slow I/O fails with ETIMEDOUT and is remapped). Real lanes, real stalls.
 * Run: npx tap --disable-coverage --allow-incomplete-coverage dist/test/unit/io-watchdog.test.js
 */
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { openFileBackend } from '../../storage/file-backend';
import { openLanes } from '../../storage/io-lane';
import * as native from '../../storage/native';
import { ioPathStuck } from '../../daemon/io-watchdog';
import { Systemd } from '../../daemon/systemd';

const noLanes = native.lanes ? false : `native addon not built (${native.nativeStatus})`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function image(tt: { teardown(fn: () => unknown): void }, name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'remapd-wd-'));
  tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, name);
  fs.writeFileSync(file, Buffer.alloc(1024 * 1024));
  return file;
}

t.test('a stalled spare lane stops the pings; a stalled main with a deadline does not', { skip: noLanes }, async (tt) => {
  const spare = await openFileBackend(image(tt, 'spare.img'), { laneName: 'spare' });
  const main = await openFileBackend(image(tt, 'main.img'), { laneName: 'main', deadlineMs: 100, direct: true });
  tt.teardown(() => Promise.all([spare.close(), main.close()]));
  const lanes = () => openLanes().filter((l) => l.name === 'spare' || l.name === 'main');
  tt.equal(ioPathStuck(lanes(), 200), undefined, 'idle lanes: not stuck');

  const sent: string[] = [];
  const systemd = new Systemd(pino({ level: 'silent' }), {
    env: { NOTIFY_SOCKET: '/nonexistent', WATCHDOG_USEC: '100000' },
    transport: { name: 'test', send: async (_s, m) => void sent.push(m) },
  });
  systemd.startWatchdog(() => ioPathStuck(lanes(), 300));
  tt.teardown(() => systemd.stopWatchdog());
  await sleep(200);
  tt.ok(sent.filter((m) => m === 'WATCHDOG=1\n').length >= 2, 'pings while the I/O answers');

  // main hangs: its deadline turns that into ETIMEDOUT, the watchdog keeps pinging.
  const mainHang = main.stallLane(1500).catch((e: { code: string }) => e.code);
  tt.equal(await mainHang, 'ETIMEDOUT');
  await sleep(500);
  tt.equal(ioPathStuck(lanes(), 300), undefined, 'a main with a deadline is never "stuck" for the watchdog');

  // spare hangs: no deadline; past the limit the pings stop and STATUS says why.
  const spareHang = spare.stallLane(2500);
  for (let i = 0; i < 100 && ioPathStuck(lanes(), 300) === undefined; i++) await sleep(50);
  tt.match(ioPathStuck(lanes(), 300), /spare I\/O has not answered/);
  await sleep(150);
  const before = sent.length;
  await sleep(400);
  tt.equal(sent.slice(before).filter((m) => m === 'WATCHDOG=1\n').length, 0, 'no ping while the spare is stuck');
  tt.ok(
    sent.some((m) => /STATUS=I\/O stuck: spare/.test(m)),
    'STATUS names the stuck lane',
  );
  await spareHang;
  await sleep(300);
  tt.ok(sent.slice(before).filter((m) => m === 'WATCHDOG=1\n').length >= 1, 'pings resume once the spare answers');
});
