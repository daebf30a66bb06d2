/**
 * bisect() and its stall question (remap/bisect.ts onStall): the answer (is the device dead?) must be in
 * before the bisection returns, since the caller decides on it whether to blame the bad units. Found by
 * test/e2e/outage-hold.test.ts: a 64 KiB write caught by an outage remapped its 16 blocks while the probe
 * reads that then called main failed were still running.
 */
import t from 'tap';
import { BackendError } from '../../storage/backend';
import { bisect } from '../../remap/bisect';
import { byteOffset } from '../../units';

const B = 4096;

for (const leafRetries of [0, 3]) {
  t.test(`everything fails (leafRetries ${leafRetries}): bisect returns after the stall's answer`, async (t) => {
    let dead = false;
    let stalls = 0;
    const fail = (o: number): Promise<void> => Promise.reject(new BackendError('EIO', 'outage', byteOffset(o)));
    const found = await bisect(byteOffset(1 << 20), 64 * 1024, new BackendError('EIO', 'outage', byteOffset(1 << 20)), fail, {
      unit: B,
      leafRetries,
      keepGoing: () => !dead,
      onStall: async () => {
        stalls++;
        await new Promise((r) => setTimeout(r, 50)); // the probe reads
        dead = true;
      },
    });
    t.equal(stalls, 1, 'the stall was asked once');
    t.ok(dead, 'its answer was in when bisect returned');
    t.equal(found.successes, 0, 'nothing worked');
    t.ok(found.unresolved.length > 0, 'units after the answer are unresolved, not bad');
  });
}
