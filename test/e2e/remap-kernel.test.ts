/**
 * The real Linux kernel (nbd.ko in a qemu guest, test/kernel/kernel-nbd-check) on a 256 MiB device with
 * failing write ranges: raw I/O, FUA, flush, discard, mkfs.ext4, mount, write, fsck all pass, and the
 * kernel's writes really hit the bad blocks (status shows write-error remaps in those ranges only).
 */
import t from 'tap';
import { join } from 'node:path';
import { createRemapSetup, startRemapd, statusJson, listJson, type FaultRuleSpec } from '../helpers/remap-setup';
import { describe, logTail, run, REPO_ROOT, MiB } from '../helpers';

t.test('kernel-nbd-check over a device with failing write ranges', async (t) => {
  const size = 256 * MiB;
  const faults: FaultRuleSpec[] = [
    { op: 'write', offset: 0, length: 8192, error: 'EIO' }, // superblock area
    { op: 'write', offset: 10 * MiB, length: 64 * 1024, error: 'EIO' }, // inside raw-io's 16 MiB at 8 MiB
    { op: 'write', offset: 20 * MiB + 1000, length: 3000, error: 'EIO' },
    { op: 'write', offset: 128 * MiB, length: 1 * MiB, error: 'EIO' },
    { op: 'write', offset: size - 64 * 1024, length: 64 * 1024, error: 'EIO' }, // end-of-device step
  ];
  const s = await createRemapSetup(t, { mainBytes: size, spareBytes: 64 * MiB, faults });
  const srv = await startRemapd(t, s);
  const r = await run(join(REPO_ROOT, 'test', 'kernel', 'kernel-nbd-check'), ['--socket', s.socket, '--timeout', '900'], {
    timeoutMs: 960_000,
  });
  t.equal(r.code, 0, 'kernel-nbd-check PASS', { out: describe(r, 6000), log: logTail(srv) });
  t.match(r.stdout + r.stderr, /kernel-nbd-check: PASS/, 'PASS line');
  const st = await statusJson(s);
  t.ok((st.remaps.byReason['write-error'] ?? 0) > 0, `status shows write-error remaps (${st.remaps.byReason['write-error']})`);
  const list = await listJson(s);
  const inFault = (o: number): boolean => faults.some((f) => o + 4096 > f.offset && o < f.offset + f.length);
  t.ok(
    list.remaps.every((e) => inFault(e.offset)),
    'every remap lies in a failing range',
  );
  for (const f of [faults[1], faults[4]]) {
    t.ok(
      list.remaps.some((e) => e.offset >= f.offset && e.offset < f.offset + f.length),
      `the kernel's writes hit the failing range at ${f.offset}`,
    );
  }
  t.equal(st.spare.exhausted, false, 'spare not exhausted');
  t.ok(srv.isRunning(), 'server still running');
});
