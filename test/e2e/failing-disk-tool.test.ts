/**
 * The failing-disk test tool itself (test/tools/failing-fuse.c + test/helpers/failing-disk.ts), on real
 * loop devices with plain `dd`:
 * - a planted unreadable sector fails exactly the requests that touch it (EIO), its neighbours read
 *   with O_DIRECT, and the per-sector counters see every request;
 * - a pending sector is unreadable until written;
 * - a planted unwritable sector fails the write request and nothing of it reaches the image;
 * - the chosen errno (ENODATA) reaches the reader through a direct-I/O loop device;
 * - a 4096-byte-sector loop device fails exactly the 4 KiB block holding the bad sector;
 * - a buffered loop device still fails per request;
 * - delay (slow range), vanish (every I/O fails, then recovers), bad control commands refused;
 * - teardown detaches the loop device and unmounts.
 */
import t from 'tap';
import { readFileSync, existsSync, openSync, readSync, closeSync } from 'node:fs';
import { run, describe, type RunResult } from '../helpers/exec';
import { failingDisk } from '../helpers/failing-disk';

const MiB = 1024 * 1024;

function ddRead(dev: string, bs: number, block: number, count = 1): Promise<RunResult> {
  return run('dd', [`if=${dev}`, 'of=/dev/null', `bs=${bs}`, `skip=${block}`, `count=${count}`, 'iflag=direct', 'status=none'], {
    timeoutMs: 60_000,
  });
}

function ddWrite(dev: string, bs: number, block: number, count = 1, src = '/dev/urandom'): Promise<RunResult> {
  return run(
    'dd',
    [`if=${src}`, `of=${dev}`, `bs=${bs}`, `seek=${block}`, `count=${count}`, 'oflag=direct', 'conv=notrunc', 'status=none'],
    { timeoutMs: 60_000 },
  );
}

function imageBytes(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

t.test('512-byte loop device (direct-io): a bad sector fails exactly its requests', async (t) => {
  const d = await failingDisk(t, { sizeBytes: 16 * MiB, fill: 'random' });
  t.ok(d.device.startsWith('/dev/loop'), `loop device ${d.device}`);
  t.ok(d.loopDirectIo, 'the loop device uses direct I/O (sysfs loop/dio = 1)');
  t.equal(readFileSync(`/sys/block/${d.device.slice(5)}/queue/logical_block_size`, 'utf8').trim(), '512');

  const bad = 4096; // sector number
  await d.failRead(bad * 512);
  await d.resetCounters();
  const r = await ddRead(d.device, 512, bad);
  t.not(r.code, 0, 'reading the bad sector fails');
  t.match(r.stderr, /Input\/output error/, 'with EIO');
  for (const s of [bad - 1, bad + 1]) {
    const n = await ddRead(d.device, 512, s);
    t.equal(n.code, 0, `neighbour sector ${s} reads with O_DIRECT\n${describe(n)}`);
  }
  const big = await ddRead(d.device, 65536, (bad * 512) / 65536);
  t.not(big.code, 0, 'a 64 KiB read spanning the bad sector fails');
  const after = await ddRead(d.device, 4096, (bad * 512) / 4096 + 1);
  t.equal(after.code, 0, 'the 4 KiB block right after the bad one reads with O_DIRECT');

  const hits = await d.hits((bad - 1) * 512, 3 * 512);
  // 4095: its own read; 4096 and 4097: their own read and the 64 KiB read (sectors 4096..4223)
  t.same(
    hits.map((h) => h.reads),
    [1, 2, 2],
    'sector counters: each sector was read by exactly the requests touching it',
  );
  t.same(
    hits.map((h) => h.writes),
    [0, 0, 0],
    'no writes',
  );
  const st = await d.stats();
  t.equal(st.read_errors, 2, 'two read requests failed (the single sector and the 64 KiB read)');

  await d.heal('read', bad * 512);
  t.equal((await ddRead(d.device, 512, bad)).code, 0, 'healed sector reads again');
  t.same(await d.faults(), [], 'fault list empty after heal');
});

t.test('a bad sector for writes: the request fails and writes nothing', async (t) => {
  const d = await failingDisk(t, { sizeBytes: 16 * MiB, fill: 'random' });
  const badByte = 3 * MiB + 512;
  await d.failWrite(badByte);
  const before = imageBytes(d.image, 3 * MiB, 4096);
  const w = await ddWrite(d.device, 4096, (3 * MiB) / 4096);
  t.not(w.code, 0, 'writing the 4 KiB block holding the bad sector fails');
  t.match(w.stderr, /Input\/output error/);
  t.ok(imageBytes(d.image, 3 * MiB, 4096).equals(before), 'nothing of the failed request reached the image');
  const ok = await ddWrite(d.device, 4096, (3 * MiB) / 4096 + 1, 1, '/dev/zero');
  t.equal(ok.code, 0, `the next block writes\n${describe(ok)}`);
  t.ok(imageBytes(d.image, 3 * MiB + 4096, 4096).equals(Buffer.alloc(4096)), 'and reaches the image');
  t.equal((await ddRead(d.device, 4096, (3 * MiB) / 4096)).code, 0, 'a write-bad sector still reads');
  t.equal((await d.stats()).write_errors, 1);
});

t.test('a pending sector: unreadable until written, then readable (as a drive reallocates it)', async (t) => {
  const d = await failingDisk(t, { sizeBytes: 8 * MiB, fill: 'random' });
  await d.failPending(MiB + 512);
  t.not((await ddRead(d.device, 4096, MiB / 4096)).code, 0, 'unreadable');
  t.equal((await ddWrite(d.device, 512, MiB / 512)).code, 0, 'writing another sector of the block succeeds and does not heal it');
  t.not((await ddRead(d.device, 4096, MiB / 4096)).code, 0, 'still unreadable');
  const w = await ddWrite(d.device, 4096, MiB / 4096, 1, '/dev/zero');
  t.equal(w.code, 0, `writing the block succeeds\n${describe(w)}`);
  t.equal((await ddRead(d.device, 4096, MiB / 4096)).code, 0, 'readable after the write');
  t.same(await d.faults(), [], 'no fault left');
});

t.test('the chosen errno reaches the reader: ENODATA (as a SCSI medium error)', async (t) => {
  const d = await failingDisk(t, { sizeBytes: 8 * MiB });
  await d.failRead(MiB, 512, 'ENODATA');
  const r = await ddRead(d.device, 512, MiB / 512);
  t.not(r.code, 0);
  t.match(r.stderr, /No data available/, 'ENODATA, not EIO');
});

t.test('4096-byte-sector loop device: exactly the 4 KiB block with the bad sector fails', async (t) => {
  const d = await failingDisk(t, { sizeBytes: 16 * MiB, sectorSize: 4096, fill: 'random' });
  t.equal(readFileSync(`/sys/block/${d.device.slice(5)}/queue/logical_block_size`, 'utf8').trim(), '4096');
  t.ok(d.loopDirectIo, 'direct I/O with 4096-byte sectors');
  const block = 700;
  await d.failRead(block * 4096 + 3 * 512); // one 512-byte sector inside block 700
  t.not((await ddRead(d.device, 4096, block)).code, 0, 'block 700 fails');
  t.equal((await ddRead(d.device, 4096, block - 1)).code, 0, 'block 699 reads');
  t.equal((await ddRead(d.device, 4096, block + 1)).code, 0, 'block 701 reads');
  const small = await run('dd', [`if=${d.device}`, 'of=/dev/null', 'bs=512', 'count=1', 'iflag=direct', 'status=none'], {
    timeoutMs: 30_000,
  });
  t.not(small.code, 0, 'a 512-byte O_DIRECT read is refused by a 4096-byte device (EINVAL)');
  t.match(small.stderr, /Invalid argument/);
});

t.test('buffered loop device: errors still per request', async (t) => {
  const d = await failingDisk(t, { sizeBytes: 8 * MiB, directIo: false });
  t.notOk(d.loopDirectIo, 'loop/dio = 0');
  await d.failRead(2 * MiB, 512, 'ENODATA');
  const r = await ddRead(d.device, 512, (2 * MiB) / 512);
  t.not(r.code, 0);
  // Linux 6.1's loop driver turns any error of a buffered backing file into EIO; newer kernels pass the errno
  t.match(r.stderr, /Input\/output error|No data available/, 'EIO or the chosen errno, depending on the kernel');
  t.equal((await ddRead(d.device, 512, (2 * MiB) / 512 + 1)).code, 0, 'the next sector reads');
});

t.test('delay, vanish, control errors', async (t) => {
  const d = await failingDisk(t, { sizeBytes: 8 * MiB });
  await d.delay(300, MiB, 4096);
  const slow = await ddRead(d.device, 4096, MiB / 4096);
  t.equal(slow.code, 0, 'a slow range still reads');
  t.ok(slow.ms >= 300, `and takes at least the delay (${slow.ms} ms)`);
  await d.delay(0, MiB, 4096);
  t.same(await d.faults(), [], 'delay 0 removes it');

  await d.vanish(true);
  for (const blk of [0, 100, 2000]) t.not((await ddRead(d.device, 4096, blk)).code, 0, `vanished: block ${blk} fails`);
  t.not((await ddWrite(d.device, 4096, 5)).code, 0, 'vanished: writes fail');
  await d.vanish(false);
  t.equal((await ddRead(d.device, 4096, 100)).code, 0, 'back after vanish off');

  await t.rejects(d.command('fail sideways 1 1'), /usage/, 'bad kind refused');
  await t.rejects(d.command('frobnicate'), /unknown command/, 'unknown command refused');
  await t.rejects(d.command('fail read 1 1 EWHATEVER'), /usage/, 'unknown errno refused');
  await t.rejects(d.failRead(100), /multiples of 512/, 'unaligned offsets refused by the helper');
});

t.test('teardown detaches the loop device and unmounts, also with the device still open', async (t) => {
  const d = await failingDisk(t, { sizeBytes: 4 * MiB });
  const holder = openSync(d.device, 'r'); // a user that outlives the teardown: losetup -d is deferred
  await d.teardown();
  closeSync(holder);
  const mounts = readFileSync('/proc/self/mounts', 'utf8');
  t.notOk(
    mounts.split('\n').some((l) => l.split(' ')[1] === d.mountpoint),
    'FUSE mount gone',
  );
  let gone = false;
  for (let i = 0; i < 40 && !gone; i++) {
    const l = await run('losetup', ['-n', '-O', 'BACK-FILE', d.device], { timeoutMs: 10_000 });
    gone = l.code !== 0 || !l.stdout.includes(d.file);
    if (!gone) await new Promise((r) => setTimeout(r, 250));
  }
  t.ok(gone, `loop device ${d.device} detached after the last close`);
  t.notOk(existsSync(d.file), 'the FUSE file is gone');
});
