/**
 * fio's nbd engine with --verify=crc32c and 4 jobs over a device with many failing write ranges:
 * every failing block is remapped on the fly and verification passes.
 */
import t from 'tap';
import { createRemapSetup, startRemapd, statusJson, type FaultRuleSpec } from '../helpers/remap-setup';
import { describe, logTail, run, MiB } from '../helpers';

t.test('fio randwrite --verify=crc32c, 4 jobs, 200 failing write ranges', async (t) => {
  const size = 64 * MiB;
  const faults: FaultRuleSpec[] = [];
  // 200 ranges of 1..3 blocks (some unaligned) spread over the device
  for (let i = 0; i < 200; i++) {
    const off = Math.floor((i * size) / 200) + (i % 7) * 4096 + (i % 3 === 0 ? 777 : 0);
    faults.push({ op: 'write', offset: off, length: 4096 * (1 + (i % 3)), error: 'EIO' });
  }
  const s = await createRemapSetup(t, { mainBytes: size, spareBytes: 64 * MiB, fill: 'random', faults });
  const srv = await startRemapd(t, s);
  const r = await run(
    'fio',
    [
      '--name=verify',
      '--ioengine=nbd',
      `--uri=${srv.uri}`,
      '--rw=randwrite',
      '--bs=16k',
      '--numjobs=4',
      '--size=16M',
      '--offset_increment=16M',
      '--iodepth=16',
      '--verify=crc32c',
      '--do_verify=1',
      '--verify_fatal=1',
      '--output-format=json',
    ],
    { timeoutMs: 400_000, cwd: s.dir },
  );
  t.equal(r.code, 0, 'fio exits 0 (all verifies passed)', { out: describe(r), log: logTail(srv) });
  const start = r.stdout.indexOf('{');
  const jobs =
    start >= 0
      ? (JSON.parse(r.stdout.slice(start)) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] }).jobs
      : [];
  t.equal(jobs.length, 4, '4 jobs');
  for (const j of jobs) {
    t.equal(j.error, 0, 'job error 0');
    t.equal(j.read.io_bytes, 16 * MiB, 'job verified 16 MiB');
  }
  t.notMatch(r.stdout + r.stderr, /verify: bad|bad magic|crc32c: verify failed/i, 'no verify errors');
  const st = await statusJson(s);
  // fio writes every block of each 16 MiB region, so every failing block was hit
  const blocks = new Set<number>();
  for (const f of faults) for (let b = Math.floor(f.offset / 4096); b <= Math.floor((f.offset + f.length - 1) / 4096); b++) blocks.add(b);
  t.equal(st.remaps.byReason['write-error'], blocks.size, `all ${blocks.size} failing blocks remapped`);
  t.ok(srv.isRunning(), 'server running');
});
