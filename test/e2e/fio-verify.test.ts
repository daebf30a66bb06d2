/**
 * fio's nbd engine: 4 jobs (one connection each, own 16 MiB region) of random 64 KiB writes at
 * queue depth 16 with crc32c verification; then a mixed random read/write verify with FUA-less
 * fsyncs (FLUSH), and a random-trim pass that must not fail.
 */
import t from 'tap';
import { withServer, run, describe, MiB, logTail } from '../helpers';

const SIZE = 64 * MiB;

interface FioJob {
  jobname: string;
  error: number;
  write: { io_bytes: number };
  read: { io_bytes: number };
}

function jobs(stdout: string): FioJob[] | null {
  const start = stdout.indexOf('{');
  if (start < 0) return null;
  try {
    return (JSON.parse(stdout.slice(start)) as { jobs: FioJob[] }).jobs;
  } catch {
    return null;
  }
}

t.test('fio randwrite --verify=crc32c, 4 jobs', async (t) => {
  const { server } = await withServer(t, { sizeBytes: SIZE, fill: 'random' });
  const r = await run(
    'fio',
    [
      '--name=verify',
      '--ioengine=nbd',
      `--uri=${server.uri}`,
      '--rw=randwrite',
      '--bs=64k',
      '--numjobs=4',
      '--size=16M',
      '--offset_increment=16M',
      '--iodepth=16',
      '--verify=crc32c',
      '--do_verify=1',
      '--verify_fatal=1',
      '--output-format=json',
    ],
    { timeoutMs: 180_000 },
  );
  t.equal(r.code, 0, 'fio exits 0 (all verifies passed)', { out: describe(r), log: logTail(server) });
  const js = jobs(r.stdout);
  t.ok(js && js.length === 4, 'fio reported 4 jobs', { out: describe(r) });
  for (const j of js ?? []) {
    t.equal(j.error, 0, `job ${j.jobname}: error 0`);
    t.equal(j.write.io_bytes, 16 * MiB, `job ${j.jobname}: wrote 16 MiB`);
    t.equal(j.read.io_bytes, 16 * MiB, `job ${j.jobname}: verified 16 MiB`);
  }
  t.notMatch(r.stdout + r.stderr, /verify: bad|bad magic|crc32c: verify failed/i, 'no verify errors reported');
});

t.test('fio mixed randrw with fsync (FLUSH), verify; randtrim', async (t) => {
  const { server } = await withServer(t, { sizeBytes: SIZE });
  const rw = await run(
    'fio',
    [
      '--name=rw',
      '--ioengine=nbd',
      `--uri=${server.uri}`,
      '--rw=randwrite',
      '--bs=4k',
      '--size=32M',
      '--iodepth=32',
      '--fsync=8',
      '--verify=crc32c',
      '--do_verify=1',
      '--verify_fatal=1',
      '--numjobs=2',
      '--offset_increment=32M',
      '--output-format=json',
    ],
    { timeoutMs: 180_000 },
  );
  t.equal(rw.code, 0, 'fio 4k randwrite + fsync + verify, 2 jobs', { out: describe(rw), log: logTail(server) });
  const trim = await run(
    'fio',
    [
      '--name=trim',
      '--ioengine=nbd',
      `--uri=${server.uri}`,
      '--rw=randtrim',
      '--bs=1M',
      '--size=64M',
      '--iodepth=8',
      '--output-format=json',
    ],
    { timeoutMs: 120_000 },
  );
  t.equal(trim.code, 0, 'fio randtrim', { out: describe(trim) });
  const tj = jobs(trim.stdout);
  t.equal(tj?.[0]?.error, 0, 'trim job error 0');
  t.ok(server.isRunning(), 'server still running');
});
