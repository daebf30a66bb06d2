/**
 * Direct I/O (O_DIRECT) in FileBackend on a real filesystem and on loop devices with 512- and
 * 4096-byte sectors: aligned and unaligned requests, buffers Node placed anywhere, read-modify-write
 * of partial sectors under concurrency, the page cache left alone, the buffered fallback; and the I/O
 * lanes: deadlines (ETIMEDOUT), stuck threads, and a hung lane that does not stall another one.
 * Run: npx tap --disable-coverage --allow-incomplete-coverage dist/test/unit/direct-io.test.js
 */
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { execFileSync } from 'child_process';
import { BackendError } from '../../storage/backend';
import { openFileBackend } from '../../storage/file-backend';
import { classifyCode } from '../../storage/error-class';
import { openLanes } from '../../storage/io-lane';
import { isHeldByStuckIo } from '../../storage/stuck-buffers';
import * as native from '../../storage/native';
import { byteOffset } from '../../units';

const KiB = 1024;
const MiB = 1024 * 1024;
const noLanes = native.lanes ? false : `native addon not built (${native.nativeStatus})`;

/** A directory on a real (non-tmpfs) filesystem: O_DIRECT means something there. */
function realDir(tt: { teardown(fn: () => unknown): void }): string {
  for (const base of ['/var/tmp', '/work', process.cwd()]) {
    try {
      const type = execFileSync('df', ['--output=fstype', base], { encoding: 'utf8' }).split('\n')[1]?.trim();
      if (!type || type === 'tmpfs') continue;
      const dir = fs.mkdtempSync(path.join(base, 'remapd-dio-'));
      tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
      return dir;
    } catch {
      /* try the next one */
    }
  }
  throw new Error('no real filesystem found for the direct I/O tests');
}

function imageFile(file: string, size: number): string {
  fs.closeSync(fs.openSync(file, 'w'));
  fs.truncateSync(file, size);
  return file;
}

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed * 7 + 1) & 0xff || 1;
  return b;
}

/** Pages of `file` in the page cache (fincore, util-linux). */
function cachedPages(file: string): number {
  const out = execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'PAGES', file], { encoding: 'utf8' });
  return Number(out.trim());
}

function dropCache(file: string): void {
  // dd with iflag=nocache asks the kernel to drop the file's cached pages (POSIX_FADV_DONTNEED).
  execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
}

function attachLoop(tt: { teardown(fn: () => unknown): void }, image: string, sectorSize: number): string {
  const dev = execFileSync('losetup', ['--find', '--show', '--sector-size', String(sectorSize), image], { encoding: 'utf8' }).trim();
  tt.teardown(() => {
    try {
      execFileSync('losetup', ['--detach', dev]);
    } catch {
      /* gone */
    }
  });
  return dev;
}

function loopSkip(): string | false {
  if (process.getuid?.() !== 0) return 'needs root for losetup';
  try {
    execFileSync('losetup', ['--version'], { stdio: 'ignore' });
    return false;
  } catch {
    return 'losetup not available';
  }
}

t.test('direct I/O on a regular file: aligned, unaligned, odd buffers, page cache untouched', { skip: noLanes }, async (tt) => {
  const dir = realDir(tt);
  const file = imageFile(path.join(dir, 'main.img'), 16 * MiB);
  const b = await openFileBackend(file, { direct: true });
  tt.teardown(() => b.close());
  tt.equal(b.direct, true, 'O_DIRECT in effect');
  tt.equal(b.directAlign, 4096);
  tt.equal(b.directNotice, undefined);
  tt.ok(fs.readFileSync(`/proc/self/fdinfo/${b.fd}`, 'utf8').match(/flags:\s+(\d+)/)![1].length > 0);
  const flags = parseInt(fs.readFileSync(`/proc/self/fdinfo/${b.fd}`, 'utf8').match(/flags:\s+(\d+)/)![1], 8);
  tt.ok(flags & fs.constants.O_DIRECT, 'the fd carries O_DIRECT');

  // Aligned request on aligned memory, and the same bytes from plain Node buffers at odd offsets.
  const data = pattern(1 * MiB, 1);
  const aligned = native.allocAligned!(1 * MiB);
  data.copy(aligned);
  await b.write(byteOffset(2 * MiB), aligned);
  const odd = Buffer.alloc(1 * MiB + 3);
  await b.read(byteOffset(2 * MiB), 1 * MiB, odd, 3);
  tt.ok(odd.subarray(3).equals(data), 'aligned write, read into an unaligned buffer');

  // Unaligned offsets and lengths: read-modify-write keeps the neighbours.
  const small = pattern(1000, 2);
  await b.write(byteOffset(2 * MiB + 100), small);
  const expect = Buffer.from(data);
  small.copy(expect, 100);
  const back = Buffer.alloc(1 * MiB);
  await b.read(byteOffset(2 * MiB), 1 * MiB, back, 0);
  tt.ok(back.equals(expect), 'a 1000-byte write at +100 changed exactly those bytes');
  const piece = Buffer.alloc(777);
  await b.read(byteOffset(2 * MiB + 50), 777, piece, 0);
  tt.ok(piece.equals(expect.subarray(50, 827)), 'unaligned read');
  // A write across a sector boundary with partial head and tail sectors.
  const cross = pattern(9000, 3);
  await b.write(byteOffset(2 * MiB + 4000), cross);
  cross.copy(expect, 4000);
  await b.read(byteOffset(2 * MiB), 1 * MiB, back, 0);
  tt.ok(back.equals(expect), 'partial head and tail sectors merged');
  await b.sync();
  const onDisk = Buffer.alloc(1 * MiB);
  const fd = fs.openSync(file, 'r');
  fs.readSync(fd, onDisk, 0, 1 * MiB, 2 * MiB);
  fs.closeSync(fd);
  tt.ok(onDisk.equals(expect), 'the file holds the same bytes');

  // Reads and writes do not go through the page cache.
  dropCache(file);
  tt.equal(cachedPages(file), 0, 'cache dropped');
  const big = Buffer.alloc(4 * MiB);
  await b.read(byteOffset(8 * MiB), 4 * MiB, big, 0);
  await b.write(byteOffset(12 * MiB), pattern(256 * KiB, 4));
  await b.write(byteOffset(13 * MiB + 5), pattern(3000, 5));
  tt.equal(cachedPages(file), 0, 'direct reads and writes left nothing in the page cache');

  // The same reads buffered fill the cache: the check above can fail.
  const buffered = await openFileBackend(file, {});
  tt.teardown(() => buffered.close());
  tt.equal(buffered.direct, false);
  await buffered.read(byteOffset(8 * MiB), 4 * MiB, big, 0);
  tt.ok(cachedPages(file) > 0, 'buffered reads do fill the page cache');
});

t.test('concurrent read-modify-writes of the same sectors lose nothing', { skip: noLanes }, async (tt) => {
  const dir = realDir(tt);
  const file = imageFile(path.join(dir, 'rmw.img'), 1 * MiB);
  const b = await openFileBackend(file, { direct: true, ioThreads: 4 });
  tt.teardown(() => b.close());
  tt.equal(b.direct, true);
  // 8 sectors of 4 KiB, each written as 64 adjacent 64-byte pieces, all at once, several rounds.
  for (let round = 0; round < 5; round++) {
    const expect = Buffer.alloc(32 * KiB);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 512; i++) {
      const piece = Buffer.alloc(64, (i * 7 + round * 13) & 0xff || 1);
      piece.copy(expect, i * 64);
      writes.push(b.write(byteOffset(64 * KiB + i * 64), piece));
    }
    // Aligned whole-sector writes into the same region interleave with them (to another range).
    writes.push(b.write(byteOffset(128 * KiB), native.allocAligned!(8 * KiB).fill(round + 1)));
    await Promise.all(writes);
    const back = Buffer.alloc(32 * KiB);
    await b.read(byteOffset(64 * KiB), 32 * KiB, back, 0);
    tt.ok(back.equals(expect), `round ${round}: every 64-byte piece is there`);
  }
});

t.test('buffered fallback, with a notice, when O_DIRECT cannot be used', { skip: noLanes }, async (tt) => {
  const dir = realDir(tt);
  const file = imageFile(path.join(dir, 'odd.img'), 1 * MiB + 512);
  const b = await openFileBackend(file, { direct: true });
  tt.teardown(() => b.close());
  tt.equal(b.direct, false, 'size not a multiple of 4096: buffered');
  tt.match(b.directNotice ?? '', /not a multiple of 4096; using the page cache/);
  await b.write(byteOffset(1 * MiB), pattern(512, 6));
  const r = Buffer.alloc(512);
  await b.read(byteOffset(1 * MiB), 512, r, 0);
  tt.ok(r.equals(pattern(512, 6)), 'still reads and writes');
  const nat = await openFileBackend(imageFile(path.join(dir, 'even.img'), 1 * MiB), { direct: true, useNative: false });
  tt.teardown(() => nat.close());
  tt.equal(nat.direct, false, 'no addon: buffered');
  tt.match(nat.directNotice ?? '', /needs the native addon/);
});

for (const sectorSize of [512, 4096]) {
  t.test(`direct I/O on a loop device with ${sectorSize}-byte sectors`, { skip: noLanes || loopSkip() }, async (tt) => {
    const dir = realDir(tt);
    const image = imageFile(path.join(dir, 'loop.img'), 8 * MiB);
    const dev = attachLoop(tt, image, sectorSize);
    const b = await openFileBackend(dev, { direct: true });
    tt.teardown(() => b.close());
    tt.equal(b.direct, true);
    tt.equal(b.logicalBlockSize, sectorSize);
    tt.equal(b.directAlign, sectorSize);
    const data = pattern(64 * KiB, 7);
    await b.write(byteOffset(1 * MiB), data);
    const expect = Buffer.from(data);
    // 512-byte write at a 512-aligned offset: aligned on a 512 device, read-modify-write on a 4K one.
    const s = pattern(512, 8);
    await b.write(byteOffset(1 * MiB + 1536), s);
    s.copy(expect, 1536);
    const t3 = pattern(3, 9);
    await b.write(byteOffset(1 * MiB + 4095), t3);
    t3.copy(expect, 4095);
    await b.sync();
    const back = Buffer.alloc(64 * KiB);
    await b.read(byteOffset(1 * MiB), 64 * KiB, back, 0);
    tt.ok(back.equals(expect), 'read back through the device');
    const fd = fs.openSync(image, 'r');
    const onDisk = Buffer.alloc(64 * KiB);
    fs.readSync(fd, onDisk, 0, 64 * KiB, 1 * MiB);
    fs.closeSync(fd);
    tt.ok(onDisk.equals(expect), 'the backing file holds the bytes');
    // Zeroing a range with partial sectors goes through the same path.
    await b.zero(byteOffset(1 * MiB + 100), 5000, true);
    expect.fill(0, 100, 5100);
    await b.read(byteOffset(1 * MiB), 64 * KiB, back, 0);
    tt.ok(back.equals(expect), 'zero() with unaligned head and tail');
  });
}

t.test('deadline: a hung op fails with ETIMEDOUT, the lane keeps serving, its thread is counted', { skip: noLanes }, async (tt) => {
  const dir = realDir(tt);
  const file = imageFile(path.join(dir, 'slow.img'), 1 * MiB);
  const b = await openFileBackend(file, { direct: true, deadlineMs: 300, ioThreads: 2, laneName: 'test-main' });
  const data = pattern(4096, 10);
  await b.write(byteOffset(0), data);
  // The stall and a read submitted in the same tick share a job: both miss the deadline.
  const stalled = b.stallLane(4000);
  const caught = Buffer.alloc(4096);
  const sameJob = b.read(byteOffset(0), 4096, caught, 0);
  const errs = await Promise.allSettled([stalled, sameJob]);
  for (const r of errs) {
    tt.equal(r.status, 'rejected');
    const e = (r as PromiseRejectedResult).reason as BackendError;
    tt.ok(e instanceof BackendError);
    tt.equal(e.code, 'ETIMEDOUT');
    tt.equal(classifyCode(e.code), 'media', 'a deadline miss is a media error');
  }
  tt.ok(isHeldByStuckIo(caught), "the stuck job's buffer is held (no pool may reuse it)");
  let st = b.ioStats()!;
  tt.equal(st.name, 'test-main');
  tt.equal(st.stuck, 1, 'one stuck thread');
  tt.equal(st.timeouts, 1, 'one job timed out');
  // The lane still serves, with its other thread and a replacement.
  const r = Buffer.alloc(4096);
  await b.read(byteOffset(0), 4096, r, 0);
  tt.ok(r.equals(data), 'a later read is served while the stuck thread sleeps');
  tt.ok(
    openLanes().some((l) => l.name === 'test-main'),
    'listed in openLanes()',
  );
  // The stuck thread comes back: stuck count goes to 0 and the buffer is released.
  for (let i = 0; i < 200 && (b.ioStats()!.stuck > 0 || isHeldByStuckIo(caught)); i++) await new Promise((res) => setTimeout(res, 50));
  st = b.ioStats()!;
  tt.equal(st.stuck, 0, 'the thread came back');
  tt.notOk(isHeldByStuckIo(caught), 'buffer released');
  await b.close();
  tt.notOk(
    openLanes().some((l) => l.name === 'test-main'),
    'closed lanes are not listed',
  );
});

t.test('stuck threads are bounded; a hung lane does not stall another backend', { skip: noLanes }, async (tt) => {
  const dir = realDir(tt);
  const main = await openFileBackend(imageFile(path.join(dir, 'main.img'), 1 * MiB), {
    direct: true,
    deadlineMs: 200,
    ioThreads: 1,
    laneName: 'hung-main',
  });
  const spare = await openFileBackend(imageFile(path.join(dir, 'spare.img'), 1 * MiB), { laneName: 'test-spare', ioThreads: 1 });
  tt.teardown(() => spare.close());
  // Hang main's threads one after the other (separate ticks: separate jobs), far past the cap of 16.
  const hangs: Promise<unknown>[] = [];
  for (let i = 0; i < 20; i++) {
    hangs.push(main.stallLane(5000).catch((e: BackendError) => e.code));
    await new Promise((res) => setImmediate(res));
  }
  // Meanwhile the spare, on its own lane, writes, syncs and reads.
  const data = pattern(64 * KiB, 11);
  await spare.write(byteOffset(0), data);
  await spare.sync();
  const back = Buffer.alloc(64 * KiB);
  await spare.read(byteOffset(0), 64 * KiB, back, 0);
  tt.ok(back.equals(data), 'spare I/O completes while main is hung');
  tt.ok(main.ioStats()!.inFlight + main.ioStats()!.stuck > 0, 'main is still hung at that point');
  const codes = await Promise.all(hangs);
  tt.same(new Set(codes), new Set(['ETIMEDOUT']), 'every hung op timed out');
  const st = main.ioStats()!;
  tt.ok(st.stuck <= 17, `stuck threads bounded (${st.stuck})`);
  tt.equal(st.timeouts, 20);
  // With every thread stuck, a new read cannot run: it times out in the queue instead of hanging.
  const r = Buffer.alloc(4096);
  await main.read(byteOffset(0), 4096, r, 0).then(
    () => tt.pass('read served (a thread came back)'),
    (e: BackendError) => tt.equal(e.code, 'ETIMEDOUT', 'read timed out in the queue'),
  );
  await main.close();
});

t.test(
  'direct lanes: reads and writes through Linux AIO, each completed exactly once, bounced where Node placed the memory',
  { skip: noLanes || (native.aio ? false : 'no AIO in this addon build') },
  async (tt) => {
    const dir = realDir(tt);
    const file = imageFile(path.join(dir, 'aio.img'), 8 * MiB);
    const content = pattern(8 * MiB, 21);
    fs.writeFileSync(file, content);
    const b = await openFileBackend(file, { direct: true, laneName: 'aio-test' });
    tt.teardown(() => b.close());
    const before = b.ioStats()!;
    tt.equal(before.aio, true, 'the direct lane uses AIO');
    const blocks = Array.from({ length: 96 }, (_, i) => (i * 37) % 2048); // distinct 4 KiB blocks
    // 96 reads at once: a third into aligned memory, the rest into Node buffers at odd places (bounced).
    const alignedBuf = native.allocAligned!(32 * 4096);
    const plain = Buffer.alloc(64 * 4096 + 5);
    const settled: number[] = new Array(blocks.length).fill(0);
    await Promise.all(
      blocks.map((blk, i) =>
        (i < 32
          ? b.read(byteOffset(blk * 4096), 4096, alignedBuf, i * 4096)
          : b.read(byteOffset(blk * 4096), 4096, plain, 5 + (i - 32) * 4096)
        ).then(() => settled[i]++),
      ),
    );
    tt.ok(
      settled.every((n) => n === 1),
      'every read settled once',
    );
    let ok = true;
    blocks.forEach((blk, i) => {
      const got = i < 32 ? alignedBuf.subarray(i * 4096, (i + 1) * 4096) : plain.subarray(5 + (i - 32) * 4096, 5 + (i - 31) * 4096);
      if (!got.equals(content.subarray(blk * 4096, (blk + 1) * 4096))) ok = false;
    });
    tt.ok(ok, 'aligned and bounced reads return the file bytes');
    // 96 writes at once from slices of one unaligned receive-like slab (as small WRITE payloads arrive).
    const slab = Buffer.concat([Buffer.alloc(3), pattern(96 * 4096, 22)]);
    await Promise.all(blocks.map((blk, i) => b.write(byteOffset(blk * 4096), slab, 3 + i * 4096, 4096)));
    await b.sync();
    const onDisk = fs.readFileSync(file);
    ok = blocks.every((blk, i) => onDisk.subarray(blk * 4096, (blk + 1) * 4096).equals(slab.subarray(3 + i * 4096, 3 + (i + 1) * 4096)));
    tt.ok(ok, 'bounced writes landed');
    const after = b.ioStats()!;
    tt.ok(after.aioOps - before.aioOps >= 150, `the kernel took the ops through AIO (${after.aioOps - before.aioOps} of 192)`);
    tt.equal(after.inFlight, 0, 'nothing left in flight');
    // An unaligned request still works (the threads bounce it with read-modify-write).
    await b.write(byteOffset(4096 * 3 + 100), pattern(500, 23));
    const piece = Buffer.alloc(500);
    await b.read(byteOffset(4096 * 3 + 100), 500, piece, 0);
    tt.ok(piece.equals(pattern(500, 23)), 'unaligned request through the threads');
  },
);

t.test('the pieces of a split request run as one vectored op, with exact results', { skip: noLanes }, async (tt) => {
  const dir = realDir(tt);
  const file = imageFile(path.join(dir, 'split.img'), 4 * MiB);
  const content = pattern(4 * MiB, 12);
  fs.writeFileSync(file, content);
  for (const direct of [true, false]) {
    const b = await openFileBackend(file, { direct });
    // A 1 MiB "request" split around every 26th 4 KiB block, as the remap layer does: the main pieces
    // in one tick into one buffer, the holes left alone.
    const buf = native.allocAligned!(1 * MiB).fill(0xee);
    const reads: Promise<void>[] = [];
    const holes: number[] = [];
    let pos = 0;
    for (let blk = 0; blk < 256; blk++) {
      if (blk % 26 === 13) {
        if (blk * 4096 > pos) reads.push(b.read(byteOffset(1 * MiB + pos), blk * 4096 - pos, buf, pos));
        holes.push(blk);
        pos = (blk + 1) * 4096;
      }
    }
    reads.push(b.read(byteOffset(1 * MiB + pos), 1 * MiB - pos, buf, pos));
    await Promise.all(reads);
    let ok = true;
    for (let blk = 0; blk < 256; blk++) {
      const got = buf.subarray(blk * 4096, (blk + 1) * 4096);
      const want = holes.includes(blk) ? Buffer.alloc(4096, 0xee) : content.subarray(1 * MiB + blk * 4096, 1 * MiB + (blk + 1) * 4096);
      if (!got.equals(want)) ok = false;
    }
    tt.ok(ok, `${direct ? 'direct' : 'buffered'}: pieces read, holes untouched`);
    // Contiguous writes from scattered buffer positions (spare pieces of one request): one pwritev.
    const src = pattern(64 * KiB, 13);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 8; i++) writes.push(b.write(byteOffset(3 * MiB + i * 4096), src, (7 - i) * 8192, 4096));
    await Promise.all(writes);
    const back = Buffer.alloc(32 * KiB);
    await b.read(byteOffset(3 * MiB), 32 * KiB, back, 0);
    let wok = true;
    for (let i = 0; i < 8; i++)
      if (!back.subarray(i * 4096, (i + 1) * 4096).equals(src.subarray((7 - i) * 8192, (7 - i) * 8192 + 4096))) wok = false;
    tt.ok(wok, `${direct ? 'direct' : 'buffered'}: contiguous writes from scattered buffer positions`);
    await b.close();
  }
});
