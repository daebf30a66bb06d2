/**
 * How a turn's ops become thread jobs (storage/io-batch.ts runUnits). On a direct lane every op waits
 * for the disk and a job runs its ops in series, so the reads and writes of one turn are spread over the
 * lane's threads (the disk sees them all at once); a turn with a sync in it keeps the old packing, so the
 * sync runs behind the writes queued before it; a buffered lane packs up to BATCH_MAX_OPS ops per job.
 * Counted from the lane's jobs in flight right after the turn's flush, before any completion can run.
 * Threads only (no AIO lane), on a real file.
 */
import t from 'tap';
import { closeSync, constants, openSync } from 'node:fs';
import { join } from 'node:path';
import { BATCH_MAX_OPS, IoBatcher, lanesAvailable } from '../../storage/io-batch';
import { IoLane } from '../../storage/io-lane';
import { MiB, randomImage, tempDir } from '../helpers/tmp';
import { allocAligned } from '../../storage/native';

const THREADS = 16;

async function jobsFor(t: { teardown(fn: () => unknown): void }, align: number, ops: number, withSync: boolean): Promise<number> {
  const dir = tempDir(t, 'remapd-spread-');
  const file = randomImage(join(dir, 'img'), 4 * MiB);
  // The batcher's `align` decides the packing; the fd need not be O_DIRECT for that (a tmpfs /tmp refuses it).
  const fd = openSync(file, constants.O_RDWR);
  const lane = new IoLane(`spread-${align}-${ops}`, { threads: THREADS });
  const batcher = new IoBatcher(lane, fd, align, file, 'file', () => undefined);
  const all: Promise<void>[] = [];
  for (let i = 0; i < ops; i++) all.push(batcher.submit(false, i * 8192, 4096, allocAligned!(4096), 0));
  if (withSync) all.push(batcher.sync());
  await Promise.resolve(); // the flush microtask ran; no completion can have run yet
  const jobs = lane.stats().inFlight;
  await Promise.all(all);
  lane.close();
  closeSync(fd);
  return jobs;
}

t.test('jobs per turn', { skip: !lanesAvailable && 'no native addon' }, async (t) => {
  t.equal(await jobsFor(t, 4096, 32, false), THREADS, 'direct: 32 reads spread over all 16 threads');
  t.equal(await jobsFor(t, 4096, 6, false), 6, 'direct: 6 reads, one job each');
  t.equal(await jobsFor(t, 4096, 16, true), Math.ceil(17 / BATCH_MAX_OPS), 'direct with a sync: packed as before');
  t.equal(await jobsFor(t, 0, 32, false), Math.ceil(32 / BATCH_MAX_OPS), `buffered: ${BATCH_MAX_OPS} ops per job`);
});
