/**
 * The evacuation layer (daemon/evacuate/mirror-device.ts) lets requests through uncounted-by-range while
 * idle. A write that started while idle and is still in flight when an evacuation begins must still hold
 * off the copier: withRangeLock waits for it, so the copier never reads the range before that write
 * landed. Real files under the devices; the slow write is a 400 ms delay rule of the fault backend.
 */
import t from 'tap';
import { join } from 'node:path';
import { MirrorDevice } from '../../daemon/evacuate/mirror-device';
import { PassthroughDevice } from '../../remap/passthrough-device';
import { FaultInjectingBackend } from '../../storage/fault-backend';
import { FaultRules } from '../../storage/faults';
import { openBackend } from '../../storage/open-backend';
import { byteOffset } from '../../units';
import { MiB, sparseImage, tempDir } from '../helpers/tmp';

t.test('a write from before the evacuation holds off the copier; one after it is mirrored', async (t) => {
  const dir = tempDir(t, 'remapd-mirror-');
  const main = await openBackend(sparseImage(join(dir, 'main.img'), 4 * MiB), { direct: false });
  const target = await openBackend(sparseImage(join(dir, 'target.img'), 4 * MiB), { direct: false });
  t.teardown(async () => {
    await main.close();
    await target.close();
  });
  const slow = new FaultInjectingBackend(
    main,
    FaultRules.parse(JSON.stringify([{ op: 'write', offset: MiB, length: 4096, delayMs: 400 }])),
  );
  const mirror = new MirrorDevice(new PassthroughDevice(slow));

  const data = Buffer.alloc(4096, 0x5a);
  const write = mirror.write(byteOffset(MiB), data, false);
  await new Promise((r) => setTimeout(r, 50)); // the write is in the delay now
  mirror.mirrorTo(target, (err) => t.fail(`mirror write failed: ${err.message}`));
  const copied = Buffer.alloc(4096);
  await mirror.withRangeLock(MiB, 4096, async () => {
    await mirror.served.read(byteOffset(MiB), 4096, copied, 0);
  });
  t.ok(copied.equals(data), 'the copier waited for the write that started while idle, and read what it wrote');
  await write;

  // While mirroring, a write goes to both.
  const later = Buffer.alloc(4096, 0xa5);
  await mirror.write(byteOffset(2 * MiB), later, false);
  const onTarget = Buffer.alloc(4096);
  await target.read(byteOffset(2 * MiB), 4096, onTarget, 0);
  t.ok(onTarget.equals(later), 'a write while mirroring reaches the target');

  // Idle again: writes go through, the lock has nothing to wait for.
  mirror.stopMirroring();
  await mirror.write(byteOffset(3 * MiB), later, false);
  let ran = false;
  await mirror.withRangeLock(3 * MiB, 4096, async () => {
    ran = true;
  });
  t.ok(ran, 'no write in flight: the lock is taken at once');
});
